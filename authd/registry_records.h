/* What every registry module does to a table: read one record, list a
 * page of them, and create or delete a record whose secret is found by
 * its hash. Only the registry's modules include this; nothing above the
 * registry names a table. */
#ifndef AUTHD_REGISTRY_RECORDS_H
#define AUTHD_REGISTRY_RECORDS_H

#include <jansson.h>

#include "registry.h"
#include "registry_enrollments.h"
#include "store.h"

/* Reads record key of table t. On success *rec is a new reference; else
 * NULL (AD_ENOTFOUND if there is none). */
ad_err registry_record_get(store *st, store_table t, const char *key,
                           json_t **rec);

/* A page of table t (keys starting with pg->prefix, after pg->after),
 * each record shown through view (NULL: as stored); out->next is the
 * last item's cursor_field when more follow. On error out is empty. */
ad_err registry_records_list(store *st, store_table t, const registry_page *pg,
                             json_t *(*view)(const json_t *rec),
                             const char *cursor_field, registry_list *out);

/* Fills out from a page of items (stolen) of which more follow: next is
 * the last item itself if a string, else its cursor_field (an integer
 * printed in decimal). */
void registry_list_set(registry_list *out, json_t *items, int more,
                       const char *cursor_field);

/* Public view of a certificate record: its status says expired once
 * not_after has passed. A new reference, or NULL. */
json_t *registry_cert_view(const json_t *cert, time_t now);

/* The typed enrollment of a stored record (see registry_enrollments.h). */
ad_err registry_enrollment_decode(const json_t *rec, registry_enrollment *out);

/* A copy of rec without field (a secret's hash), or NULL. */
json_t *registry_view_without(const json_t *rec, const char *field);

/* A kind of record whose secret (an API key, an enrollment token) is
 * kept only as a hash, found through index ix. */
typedef struct {
    store_table table;
    store_index ix;
    const char *hash_field;   /* the record's field holding the hash */
    const char *secret_field; /* the view's field showing it, once */
    const char *create_action, *delete_action; /* for the audit log */
    json_t *(*view)(const json_t *rec);        /* without the hash */
    /* NULL, or what else the write does when a record goes from old to
     * new (either NULL: created or deleted), in the same transaction. */
    ad_err (*follow)(store_txn *tx, const char *id, const json_t *old_rec,
                     const json_t *new_rec);
} registry_hashed_kind;

/* Stores rec (never over another of the same id) with its index entry
 * and an audit entry. *view (new reference) is k->view of it plus the
 * secret, shown this once. On error nothing is written and *view is
 * NULL. */
ad_err registry_hashed_create(store *st, const registry_hashed_kind *k,
                              const char *actor, const char *id,
                              const json_t *rec, const char *secret,
                              json_t **view);

/* Deletes the record with its index entry, and audits it. AD_ENOTFOUND
 * if there is none. */
ad_err registry_hashed_delete(store *st, const registry_hashed_kind *k,
                              const char *actor, const char *id);

/* The view of record id (AD_ENOTFOUND), and pages of views. */
ad_err registry_hashed_get(store *st, const registry_hashed_kind *k,
                           const char *id, json_t **view);
ad_err registry_hashed_list(store *st, const registry_hashed_kind *k,
                            const registry_page *pg, registry_list *out);

/* ---- gateways (inside a write) ------------------------------------------- *
 * The change feed reports records, not index entries: so whenever a
 * gateway's set of children or a child's status changes, the write also
 * rewrites the gateway's own record (a "children_rev" counter), and
 * every node's caches of that gateway (its bound children) drop it. */

/* Reads the gateway's record for update (locking it, across nodes),
 * bumps its children_rev and records "policy_changed" for it, so broker
 * plugins re-check its sessions. AD_EGATEWAY if there is no such
 * device. */
ad_err registry_gateway_touch(store_txn *tx, const char *gateway_id);

/* Puts child under gateway in the children index (and in the active
 * children index if active), or takes it out of both. */
ad_err registry_child_link(store_txn *tx, const char *gateway_id,
                           const char *child_id, int active);
ad_err registry_child_unlink(store_txn *tx, const char *gateway_id,
                             const char *child_id);

#endif
