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
                          const json_t *value, json_t **view, int *created);

/* Deletes it: AD_ENOTFOUND if there is none. */
ad_err registry_named_delete(store *st, registry_named_kind kind,
                             const char *actor, const char *name);

/* A policy's document as it was put, or a group's record (a new
 * reference). AD_ENOTFOUND if there is none. */
ad_err registry_named_get(store *st, registry_named_kind kind,
                          const char *name, json_t **view);

/* A page of them: policies as {"name", "statement_count", "updated_at"},
 * groups as stored. */
ad_err registry_named_list(store *st, registry_named_kind kind,
                           const registry_page *pg, registry_list *out);

#endif
