/* Policies and groups: named records that devices refer to. A policy
 * holds a policy document; a group, the names of its policies. Each
 * change records a "policy_changed" event in its own write. */
#ifndef AUTHD_REGISTRY_POLICIES_H
#define AUTHD_REGISTRY_POLICIES_H

#include <jansson.h>

#include "registry.h"

typedef enum { REGISTRY_POLICY, REGISTRY_GROUP } registry_named_kind;

/* Puts (creates or replaces) the policy or group name. value is the
 * policy document (checked by the caller with pol_doc_validate) or the
 * group's array of policy names (registry_names_valid). *view (new
 * reference) is the record as stored; *created says whether it is new.
 * On error *view is NULL and nothing is written. */
ad_err registry_named_put(store *st, registry_named_kind kind,
                          const char *actor, const char *name,
                          const json_t *value, json_t **view, int *created,
                          char *why, size_t whylen);

/* Deletes it: AD_ENOTFOUND if there is none; AD_EINUSE (naming the
 * first users in why) while a device or group still refers to it,
 * unless force. A group's policies that do not exist are
 * AD_EUNKPOLICY on put. */
ad_err registry_named_delete(store *st, registry_named_kind kind,
                             const char *actor, const char *name, int force,
                             char *why, size_t whylen);

/* ---- references: inside a write transaction -------------------------- */

/* Each name in policies and groups (arrays of strings, either NULL) is
 * an existing policy or group: AD_EUNKPOLICY / AD_EUNKGROUP naming the
 * first missing one in why. The records are read with store_get, which
 * in a PostgreSQL write locks them: a delete of one of them either
 * waits for this write (and then sees its reference in the index) or
 * has committed (and this read finds nothing). */
ad_err registry_refs_check(store_txn *tx, const json_t *policies,
                           const json_t *groups, char *why, size_t whylen);

/* What refers to policies and groups by name, and through which fields. */
typedef enum {
    REGISTRY_REFS_DEVICE,     /* "policies", "groups" */
    REGISTRY_REFS_GROUP,      /* "policies" */
    REGISTRY_REFS_ENROLLMENT, /* "groups" (of the devices it creates) */
} registry_referrer;

/* Keeps the reference indexes of the referrer id (a device:
 * STORE_IX_DEVICES_BY_POLICY and _BY_GROUP; a group:
 * STORE_IX_GROUPS_BY_POLICY; an enrollment: STORE_IX_ENROLLMENTS_BY_GROUP)
 * true when its record goes from old to new (either NULL: created or
 * deleted). */
ad_err registry_refs_follow(store_txn *tx, registry_referrer who,
                            const char *id, const json_t *old_rec,
                            const json_t *new_rec);

/* Builds the reference indexes from every device, group and enrollment
 * once, for a store made before they existed (a META marker says it was
 * done). */
ad_err registry_refs_build(store *st);

/* A policy's document as it was put, or a group's record (a new
 * reference). AD_ENOTFOUND if there is none. */
ad_err registry_named_get(store *st, registry_named_kind kind,
                          const char *name, json_t **view);

/* A page of them: policies as {"name", "statement_count", "updated_at"},
 * groups as stored. */
ad_err registry_named_list(store *st, registry_named_kind kind,
                           const registry_page *pg, registry_list *out);

#endif
