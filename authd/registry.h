/* The registry's rules on top of the store: what it means to issue a
 * certificate under an enrollment, which certificates identify an active
 * device, and how records are shown to API clients; certificates, API
 * keys and the audit log. Devices, enrollments and policies have modules
 * of their own (registry_devices.h, registry_enrollments.h,
 * registry_policies.h). Every write is one store_write, so its checks and
 * its changes commit together; nothing above the registry names a table
 * or a field of a record. */
#ifndef AUTHD_REGISTRY_H
#define AUTHD_REGISTRY_H

#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "../ca/ca.h"
#include "store.h"

/* The states of records, as the registry's C types: the JSON text of a
 * state is written and read only by the functions below. */
typedef enum {
    DEVICE_ACTIVE,
    DEVICE_SUSPENDED,
    DEVICE_REVOKED,  /* final */
    DEVICE_STATUS_BAD /* a record we did not write */
} registry_device_status;

typedef enum {
    CERT_VALID,
    CERT_REVOKED,
    CERT_EXPIRED,    /* only in views: stored records say valid */
    CERT_STATUS_BAD
} registry_cert_status;

registry_device_status registry_device_status_parse(const char *text);
const char *registry_device_status_name(registry_device_status s);
registry_cert_status registry_cert_status_parse(const char *text);
const char *registry_cert_status_name(registry_cert_status s);
/* The status field of a device or certificate record. */
registry_device_status registry_device_status_of(const json_t *device);
registry_cert_status registry_cert_status_of(const json_t *cert);

/* A certificate to record. Exactly the fields that apply are set. */
typedef struct {
    const char *actor;          /* for the audit log */
    const char *kind;           /* "device" or "server" */
    const char *enrollment_id;  /* consume one use of it, or NULL */
    const char *device_id;      /* device certs: the device, or NULL */
    int create_device;          /* enroll: create the device if absent */
    const ca_issued *cert;
    const char *audit_action;   /* "cert.enroll", "cert.renew", ... */
    time_t now;
    /* Enrollment only, may be NULL: if the device already holds a valid,
     * unexpired certificate from the same enrollment for the same public
     * key as cert, nothing is recorded, no use is spent, and its serial
     * is copied here (otherwise it is set to ""). */
    char *reused_serial; /* CA_SERIAL_HEX_MAX bytes */
    char **reused_pem;   /* that certificate's PEM, malloc()ed */
} registry_issue;

/* Records the certificate (and the enrollment use, and the device if
 * created) in one durable transaction. Errors: AD_EENRUSED,
 * AD_EENREXPIRED, AD_ENOTFOUND (enrollment or device gone),
 * AD_ESUSPENDED, AD_EREVOKED, AD_ESTORE. On error nothing is written and
 * the certificate must not be handed out. */
ad_err registry_commit_issue(store *st, const registry_issue *is);

/* Whose a presented client certificate is. */
enum { REGISTRY_ID_MAX = 129 };
typedef struct {
    char device_id[REGISTRY_ID_MAX];
    char enrollment_id[REGISTRY_ID_MAX]; /* "" if issued without one */
} registry_cert_owner;

/* What a caller is told when registry_device_by_cert answers AD_EBADCRED
 * (HTTP, EST and CoAP alike). */
#define REGISTRY_CERT_REFUSED \
    "the client certificate is unknown, revoked or expired"

/* Resolves a presented client certificate to its device: the record must
 * exist with the same fingerprint, not be revoked or expired, and its
 * device must be active. On success fills *owner (if non-NULL); on error
 * it is zeroed. Errors: AD_EBADCRED, AD_ESUSPENDED, AD_EREVOKED. */
ad_err registry_device_by_cert(store *st, const uint8_t *der, size_t len,
                               time_t now, registry_cert_owner *owner);

enum {
    /* Children read for one gateway at most: what the checker binds to
     * ${child.id} and what a bundle carries. A gateway beyond it is
     * refused (AD_ETOOBIG) rather than judged on part of its children. */
    REGISTRY_CHILDREN_MAX = 1000000
};

/* Device status before issuing: AD_OK if absent or active, else
 * AD_ESUSPENDED / AD_EREVOKED. */
ad_err registry_device_issuable(store *st, const char *device_id);

/* Creates an API key with a role ("admin", "provisioner", "broker").
 * Only the key's SHA-256 is stored; *view (new reference) is the public
 * record plus "key", shown this once. Errors: AD_EFIELD (bad name or
 * role, with a message), AD_ESTORE. */
ad_err registry_apikey_create(store *st, const char *actor, const char *name,
                              const char *role, json_t **view, char *err,
                              size_t errlen);

/* Finds the API key a bearer secret ("ak_...") belongs to: its id, name
 * and role name. AD_EBADCRED if it is no key of ours. */
enum {
    REGISTRY_APIKEY_ID_MAX = 64,
    REGISTRY_APIKEY_NAME_MAX = 129,
    REGISTRY_ROLE_MAX = 16
};
ad_err registry_apikey_authenticate(store *st, const char *key,
                                    char id[REGISTRY_APIKEY_ID_MAX],
                                    char name[REGISTRY_APIKEY_NAME_MAX],
                                    char role[REGISTRY_ROLE_MAX]);

/* The certificates of a device or an enrollment are indexed by values
 * "<16 hex digits of the issue time in µs><serial>": new certificates
 * append after their key's last value (the same page for a whole batch,
 * not a random page each, which is what an fsync pays for), and lists
 * come out in issue order. This returns the serial inside such a value. */
const char *registry_ix_serial(const char *value);

/* Inside a write: revokes one certificate (status, revoked_at, reason,
 * the CRL table, an audit entry). AD_ENOTFOUND if there is no such
 * certificate, AD_ECONFLICT if it is already revoked. Appends
 * {"serial","fingerprint","device_id"} to revoked if non-NULL. */
ad_err registry_revoke_cert(store_txn *tx, const char *actor,
                            const char *serial, const char *reason,
                            json_t *revoked);

/* Inside a write: revokes every still-valid certificate of the device
 * with an RFC 5280 reason name, as registry_revoke_cert. */
ad_err registry_revoke_device_certs(store_txn *tx, const char *actor,
                                    const char *device_id, const char *reason,
                                    json_t *revoked);

/* The CRL number lives in the store, one sequence for every node: a
 * revocation advances it in its own transaction (registry_revoke_cert
 * does), and every node builds its CRL with the number it reads, so the
 * CRLs of all nodes agree and numbers only grow. Inside a write:
 * advances it (*number, if non-NULL, gets the new value). */
ad_err registry_crl_advance(store_txn *tx, uint64_t *number);
/* The current CRL number (0 before the first). */
ad_err registry_crl_number(store *st, uint64_t *number);

/* Events for GET /v1/events, written inside the write that makes the
 * change. "revoked": {"device","serials","reason"} from the entries
 * registry_revoke_cert appended to revoked (device NULL: the first
 * entry's). Others: {key: value}, e.g. ("suspended", "device", id). */
ad_err registry_event_revoked(store_txn *tx, const json_t *revoked,
                              const char *device, const char *reason);
ad_err registry_event(store_txn *tx, const char *type, const char *key,
                      const char *value);

/* Every device record gets a random incarnation when it is created.
 * Credentials minted for a device (tokens) carry it, so they do not
 * outlive the device: deleting it and creating another of the same id
 * makes a new incarnation. */
enum { REGISTRY_INCARNATION_MAX = 17 };
ad_err registry_set_incarnation(json_t *device);

/* ---- lists ---------------------------------------------------------- */

/* Which page of a list to read. */
typedef struct {
    const char *prefix; /* keys that start with it; NULL for all */
    const char *after;  /* the previous page's next, or NULL */
    size_t limit;
} registry_page;

/* A page of public views: items (an array) and next (the cursor of the
 * following page, a string, or JSON null at the end). The caller owns
 * both references (json_pack "o" steals them). */
typedef struct {
    json_t *items;
    json_t *next;
} registry_list;

/* Whether names is an array of at most 64 names (groups, policies). */
int registry_names_valid(const json_t *names);

/* ---- certificates ---------------------------------------------------- */

/* The view of certificate serial (normalised lowercase hex). AD_ENOTFOUND
 * if there is none. */
ad_err registry_cert_get(store *st, const char *serial, json_t **view);

/* Which certificates to list: every field NULL (CERT_STATUS_BAD) for
 * all. */
typedef struct {
    const char *device;
    const char *enrollment;
    registry_cert_status status;
} registry_cert_filter;

/* A page of certificate views that pass f, in serial order (issue order
 * for a device's or an enrollment's). */
ad_err registry_certs_list(store *st, const registry_cert_filter *f,
                           const registry_page *pg, registry_list *out);

/* Revokes certificate serial with an RFC 5280 reason name and records the
 * "revoked" event, in one write. *view (new reference) is the certificate
 * afterwards. AD_ENOTFOUND, AD_ECONFLICT (already revoked), AD_ESTORE; on
 * error *view is NULL. */
ad_err registry_cert_revoke(store *st, const char *actor, const char *serial,
                            const char *reason, json_t **view);

/* ---- API keys and the audit log -------------------------------------- */

/* A page of API keys, without their hashes. */
ad_err registry_apikeys_list(store *st, const registry_page *pg,
                             registry_list *out);
/* AD_ENOTFOUND if there is no such key. */
ad_err registry_apikey_delete(store *st, const char *actor, const char *id);

/* Which audit entries to list (docs/audit.md). action, actor, target:
 * equal to it (action "device.*": every verb of an object; actor
 * "apikey:NAME": every key of that name); since,
 * until: RFC 3339 UTC or Unix seconds, since <= time < until; NULL for
 * any. desc: newest first. */
typedef struct {
    const char *action, *actor, *target, *since, *until;
    int desc;
} registry_audit_filter;
/* Entries one request examines at most: a filter that matches little
 * answers fewer than limit items (maybe none) and a next cursor to go
 * on from; a client pages until next is null. */
enum { REGISTRY_AUDIT_SCAN_MAX = 10000 };
/* A page of the audit log in f's order after sequence number pg->after
 * (decimal, the previous page's next; NULL for the start: the oldest, or
 * with desc the newest). AD_EBADREQ (with a message) if after, since or
 * until is not valid. */
ad_err registry_audit_list(store *st, const registry_page *pg,
                           const registry_audit_filter *f,
                           registry_list *out, char *err, size_t errlen);

#endif
