/* Devices: create (one or a batch of an import), read, change, suspend,
 * revoke, delete, and the device secret. Every change is one write with
 * its audit entry and, where brokers must act, its event. */
#ifndef AUTHD_REGISTRY_DEVICES_H
#define AUTHD_REGISTRY_DEVICES_H

#include <time.h>

#include <jansson.h>

#include "registry.h"

enum { REGISTRY_WHY_MAX = 160 };

/* A new device: its id (already checked by util_device_id_valid), and
 * optional names of groups and policies, string attributes and the id
 * of the gateway it sits behind. */
typedef struct {
    const char *id;
    const char *gateway;      /* a device id, or NULL */
    const json_t *groups;     /* an array of names, or NULL */
    const json_t *policies;   /* an array of names, or NULL */
    const json_t *attributes; /* an object of strings, or NULL */
} registry_device_new;

/* Creates an active device with a new incarnation. *view (new reference)
 * is its record with "certs": []. Errors: AD_EDEVID, AD_EFIELD (with a
 * message in why), AD_EGATEWAY (no such gateway), AD_EEXISTS, AD_ESTORE; then *view is NULL and nothing
 * is written. */
ad_err registry_device_create(store *st, const char *actor,
                              const registry_device_new *d, json_t **view,
                              char *why, size_t whylen);

/* One device of an import: prepared (checked and encoded) before the
 * write by registry_import_prepare, then written by
 * registry_devices_import. e and why are its outcome; a caller may set
 * them itself for an item it refuses before preparing. */
typedef struct {
    char id[REGISTRY_ID_MAX]; /* the caller's: its device id, or "" */
    char *record;             /* the registry's; NULL when refused */
    char gateway[REGISTRY_ID_MAX]; /* the registry's: "" for none */
    ad_err e;
    char why[REGISTRY_WHY_MAX]; /* "" for the code's own message */
} registry_import_item;

/* Checks d by the rules of registry_device_create as of now. */
void registry_import_prepare(registry_import_item *it,
                             const registry_device_new *d, time_t now);

/* Writes every prepared item of items[0..n) in one transaction, each with
 * its audit entry (detail {"via": "import"}). An id that exists already
 * (in the registry or earlier in the import) is that item's AD_EEXISTS,
 * a gateway that does not exist (in the registry or earlier in the
 * import) its AD_EGATEWAY; the others go on. Each gateway that gained
 * children is touched once (see registry_gateway_touch). Any other error is returned and nothing is written. */
ad_err registry_devices_import(store *st, const char *actor,
                               registry_import_item *items, size_t n);

/* Frees what prepare kept and zeroes the item. */
void registry_import_item_clear(registry_import_item *it);

/* Device id with its certificates (without their PEM). AD_ENOTFOUND. */
ad_err registry_device_get(store *st, const char *id, json_t **view);

/* A page of devices as stored, keys starting with pg->prefix. */
ad_err registry_devices_list(store *st, const registry_page *pg,
                             registry_list *out);

/* A change to a device: what is NULL (or not set_status, set_gateway)
 * stays. Only active and suspended may be asked for as status. */
typedef struct {
    int set_status;
    registry_device_status status;
    const json_t *groups, *policies, *attributes;
    int set_gateway;
    const char *gateway; /* with set_gateway: the new gateway, NULL: none */
} registry_device_patch;

/* Applies p; *view (new reference) is the record afterwards. Suspending
 * and resuming record their events, and so does any change to what the
 * device may do. A change of gateway or of status touches the old and
 * the new gateway (registry_gateway_touch) in the same write. Errors:
 * AD_EFIELD (why says which field), AD_EGATEWAY, AD_ENOTFOUND,
 * AD_ECONFLICT (a revoked device stays revoked, in why), AD_ESTORE. */
ad_err registry_device_update(store *st, const char *actor, const char *id,
                              const registry_device_patch *p, json_t **view,
                              char *why, size_t whylen);

/* Deletes the device and its secret and revokes its certificates
 * (cessationOfOperation), which stay on record. *revoked: how many.
 * AD_ENOTFOUND if there is no such device, AD_ECONFLICT if it is the
 * gateway of other devices (move or delete them first: a child must
 * never point at a gateway that is gone, or at a new device that takes
 * the id later). */
ad_err registry_device_delete(store *st, const char *actor, const char *id,
                              size_t *revoked);

/* Revokes the device (final) and every certificate of it with an RFC
 * 5280 reason name. *serials (new reference) lists the certificates
 * revoked now. AD_ENOTFOUND if there is no such device. */
ad_err registry_device_revoke(store *st, const char *actor, const char *id,
                              const char *reason, json_t **serials);

/* Sets the device's secret to an argon2id encoded hash. AD_ENOTFOUND if
 * there is no such device. */
ad_err registry_device_secret_set(store *st, const char *actor,
                                  const char *id, const char *argon2id);

/* ---- gateways ------------------------------------------------------------ */

/* A child of a gateway, as the bundle and the children list show it. */
typedef struct {
    char id[REGISTRY_ID_MAX];
    registry_device_status status;
} registry_child;

/* Every child of gateway_id, sorted by id (strcmp), with its status,
 * read in one read transaction. *out (free() it) has *n entries; both
 * are zeroed first and left so on error. Errors: AD_ENOTFOUND (no such
 * device), AD_ETOOBIG (over REGISTRY_CHILDREN_MAX children), AD_ESTORE,
 * AD_ENOMEM. */
ad_err registry_gateway_children(store *st, const char *gateway_id,
                                 registry_child **out, size_t *n);

/* A page of a gateway's children as {"id","status"} items, in id order
 * (GET /v1/devices/{id}/children). AD_ENOTFOUND if the gateway is no
 * device. */
ad_err registry_device_children(store *st, const char *gateway_id,
                                const registry_page *pg, registry_list *out);

#endif
