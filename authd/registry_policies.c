/* See registry_policies.h. */
#include <string.h>
#include <time.h>

#include "registry_policies.h"
#include "registry_records.h"
#include "util.h"

/* Each kind's table, its action names and the field holding the value. */
static const struct {
    store_table table;
    const char *put, *del, *field, *event_key;
} kinds[] = {
    [REGISTRY_POLICY] = {STORE_POLICIES, "policy.put", "policy.delete",
                         "document", "policy"},
    [REGISTRY_GROUP] = {STORE_GROUPS, "group.put", "group.delete",
                        "policies", "group"},
};

struct named_write {
    registry_named_kind kind;
    const char *actor;
    const char *name;
    json_t *rec; /* put: the record; NULL: delete */
    int created;
};

static ad_err named_write(store_txn *tx, void *arg)
{
    struct named_write *w = arg;
    store_table t = kinds[w->kind].table;
    json_t *old = NULL;
    ad_err e;

    if (w->rec == NULL) {
        e = store_del(tx, t, w->name);
    } else {
        w->created = store_get(tx, t, w->name, &old) == AD_ENOTFOUND;
        json_decref(old);
        e = store_put(tx, t, w->name, w->rec, 0);
    }
    if (e == AD_OK)
        e = store_audit(tx, w->actor,
                        w->rec ? kinds[w->kind].put : kinds[w->kind].del,
                        w->name, NULL);
    if (e == AD_OK)
        e = registry_event(tx, "policy_changed", kinds[w->kind].event_key,
                           w->name);
    return e;
}

ad_err registry_named_put(store *st, registry_named_kind kind,
                          const char *actor, const char *name,
                          const json_t *value, json_t **view, int *created)
{
    struct named_write w;
    char now[32];
    ad_err e;

    *view = NULL;
    *created = 0;
    util_time_rfc3339(time(NULL), now, sizeof(now));
    memset(&w, 0, sizeof(w));
    w.kind = kind;
    w.actor = actor;
    w.name = name;
    w.rec = json_pack("{s:s, s:O, s:s}", "name", name, kinds[kind].field,
                      value, "updated_at", now);
    if (w.rec == NULL)
        return AD_ENOMEM;
    e = store_write(st, named_write, &w);
    if (e == AD_OK) {
        *view = w.rec;
        *created = w.created;
    } else {
        json_decref(w.rec);
    }
    return e;
}

ad_err registry_named_delete(store *st, registry_named_kind kind,
                             const char *actor, const char *name)
{
    struct named_write w;

    memset(&w, 0, sizeof(w));
    w.kind = kind;
    w.actor = actor;
    w.name = name;
    return store_write(st, named_write, &w);
}

ad_err registry_named_get(store *st, registry_named_kind kind,
                          const char *name, json_t **view)
{
    json_t *rec = NULL;
    ad_err e = registry_record_get(st, kinds[kind].table, name, &rec);

    *view = NULL;
    if (e != AD_OK)
        return e;
    if (kind == REGISTRY_GROUP) {
        *view = rec;
        return AD_OK;
    }
    /* The document as it was put, so GET and PUT round-trip. */
    *view = json_incref(json_object_get(rec, "document"));
    json_decref(rec);
    return AD_OK;
}

/* Policy lists show names and sizes, not whole documents. */
static json_t *policy_summary(const json_t *rec)
{
    return json_pack("{s:O?, s:I, s:O?}", "name", json_object_get(rec, "name"),
                     "statement_count",
                     (json_int_t)json_array_size(json_object_get(
                         json_object_get(rec, "document"), "statements")),
                     "updated_at", json_object_get(rec, "updated_at"));
}

ad_err registry_named_list(store *st, registry_named_kind kind,
                           const registry_page *pg, registry_list *out)
{
    return registry_records_list(st, kinds[kind].table, pg,
                                 kind == REGISTRY_POLICY ? policy_summary
                                                         : NULL,
                                 "name", out);
}
