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

/* How many users an AD_EINUSE message names. */
#define INUSE_LIST_MAX 20

struct named_write {
    registry_named_kind kind;
    const char *actor;
    const char *name;
    json_t *rec; /* put: the record; NULL: delete */
    int created;
    int force;
    char *why;
    size_t whylen;
};

/* Appends "what a, b, c" (up to INUSE_LIST_MAX values of ix under name,
 * "and more" past them) to why at *len. *any is set if there is one. */
static ad_err users_append(store_txn *tx, store_index ix, const char *name,
                           const char *what, char *why, size_t whylen,
                           size_t *len, int *any)
{
    json_t *vals = NULL, *v;
    int more = 0, n;
    size_t i;
    ad_err e = store_index_list(tx, ix, name, NULL, INUSE_LIST_MAX, &vals,
                                &more);

    if (e != AD_OK || json_array_size(vals) == 0) {
        json_decref(vals);
        return e;
    }
    n = snprintf(why + *len, whylen - *len, "%s%s", *any ? "; " : "", what);
    *len += n > 0 && (size_t)n < whylen - *len ? (size_t)n : 0;
    json_array_foreach(vals, i, v) {
        n = snprintf(why + *len, whylen - *len, "%s%s", i ? ", " : " ",
                     json_string_value(v));
        if (n < 0 || (size_t)n >= whylen - *len)
            break;
        *len += (size_t)n;
    }
    if (more && *len < whylen)
        snprintf(why + *len, whylen - *len, " and more");
    *len = strlen(why);
    *any = 1;
    json_decref(vals);
    return AD_OK;
}

/* Inside the delete: AD_EINUSE (with the users in w->why) while a device
 * or group refers to w->name. The record itself was read first, which
 * in PostgreSQL locks it against writes that add a reference. */
static ad_err named_in_use(store_txn *tx, struct named_write *w)
{
    size_t len = 0;
    int any = 0;
    ad_err e;

    if (w->whylen)
        w->why[0] = '\0';
    e = users_append(tx, w->kind == REGISTRY_POLICY
                             ? STORE_IX_DEVICES_BY_POLICY
                             : STORE_IX_DEVICES_BY_GROUP,
                     w->name, "used by devices", w->why, w->whylen, &len,
                     &any);
    if (e == AD_OK && w->kind == REGISTRY_POLICY)
        e = users_append(tx, STORE_IX_GROUPS_BY_POLICY, w->name,
                         "used by groups", w->why, w->whylen, &len, &any);
    if (e == AD_OK && w->kind == REGISTRY_GROUP)
        e = users_append(tx, STORE_IX_ENROLLMENTS_BY_GROUP, w->name,
                         "used by enrollments", w->why, w->whylen, &len,
                         &any);
    if (e == AD_OK && any)
        e = AD_EINUSE;
    return e;
}

static ad_err named_write(store_txn *tx, void *arg)
{
    struct named_write *w = arg;
    store_table t = kinds[w->kind].table;
    json_t *old = NULL;
    ad_err e;

    if (w->rec == NULL) {
        e = store_get(tx, t, w->name, &old);
        if (e == AD_OK && !w->force)
            e = named_in_use(tx, w);
        if (e == AD_OK)
            e = store_del(tx, t, w->name);
        if (e == AD_OK && w->kind == REGISTRY_GROUP)
            e = registry_refs_follow(tx, REGISTRY_REFS_GROUP, w->name, old,
                                     NULL);
    } else {
        e = w->kind == REGISTRY_GROUP
                ? registry_refs_check(tx, json_object_get(w->rec, "policies"),
                                      NULL, w->why, w->whylen)
                : AD_OK;
        if (e == AD_OK) {
            e = store_get(tx, t, w->name, &old);
            w->created = e == AD_ENOTFOUND;
            e = e == AD_ENOTFOUND ? AD_OK : e;
        }
        if (e == AD_OK)
            e = store_put(tx, t, w->name, w->rec, 0);
        if (e == AD_OK && w->kind == REGISTRY_GROUP)
            e = registry_refs_follow(tx, REGISTRY_REFS_GROUP, w->name, old,
                                     w->rec);
    }
    json_decref(old);
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
                          const json_t *value, json_t **view, int *created,
                          char *why, size_t whylen)
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
    w.why = why;
    w.whylen = whylen;
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
                             const char *actor, const char *name, int force,
                             char *why, size_t whylen)
{
    struct named_write w;

    memset(&w, 0, sizeof(w));
    w.kind = kind;
    w.actor = actor;
    w.name = name;
    w.force = force;
    w.why = why;
    w.whylen = whylen;
    return store_write(st, named_write, &w);
}

/* ---- references ---------------------------------------------------------- */

static ad_err names_exist(store_txn *tx, const json_t *names, store_table t,
                          ad_err missing, const char *what, char *why,
                          size_t whylen)
{
    json_t *v, *rec = NULL;
    size_t i;
    ad_err e;

    json_array_foreach(names, i, v) {
        const char *name = json_string_value(v);

        if (name == NULL)
            continue;
        e = store_get(tx, t, name, &rec);
        json_decref(rec);
        rec = NULL;
        if (e == AD_ENOTFOUND)
            return ad_errf(missing, why, whylen, "no %s named \"%s\"", what,
                           name);
        if (e != AD_OK)
            return e;
    }
    return AD_OK;
}

ad_err registry_refs_check(store_txn *tx, const json_t *policies,
                           const json_t *groups, char *why, size_t whylen)
{
    ad_err e = names_exist(tx, policies, STORE_POLICIES, AD_EUNKPOLICY,
                           "policy", why, whylen);

    if (e == AD_OK)
        e = names_exist(tx, groups, STORE_GROUPS, AD_EUNKGROUP, "group", why,
                        whylen);
    return e;
}

/* Whether the array names holds name. */
static int names_have(const json_t *names, const char *name)
{
    json_t *v;
    size_t i;

    json_array_foreach(names, i, v)
        if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
            return 1;
    return 0;
}

/* The index entries name -> id for names in old but not new are dropped,
 * those in new but not old added. */
static ad_err refs_diff(store_txn *tx, store_index ix, const char *id,
                        const json_t *old_names, const json_t *new_names)
{
    json_t *v;
    size_t i;
    ad_err e;

    json_array_foreach(old_names, i, v) {
        if (!json_is_string(v) || names_have(new_names, json_string_value(v)))
            continue;
        e = store_index_del(tx, ix, json_string_value(v), id);
        if (e != AD_OK && e != AD_ENOTFOUND)
            return e;
    }
    json_array_foreach(new_names, i, v) {
        if (!json_is_string(v) || names_have(old_names, json_string_value(v)))
            continue;
        if ((e = store_index_add(tx, ix, json_string_value(v), id)) != AD_OK)
            return e;
    }
    return AD_OK;
}

ad_err registry_refs_follow(store_txn *tx, registry_referrer who,
                            const char *id, const json_t *old_rec,
                            const json_t *new_rec)
{
    static const store_index by_policy[] = {
        [REGISTRY_REFS_DEVICE] = STORE_IX_DEVICES_BY_POLICY,
        [REGISTRY_REFS_GROUP] = STORE_IX_GROUPS_BY_POLICY,
        [REGISTRY_REFS_ENROLLMENT] = STORE_IX__COUNT, /* none */
    };
    static const store_index by_group[] = {
        [REGISTRY_REFS_DEVICE] = STORE_IX_DEVICES_BY_GROUP,
        [REGISTRY_REFS_GROUP] = STORE_IX__COUNT, /* none */
        [REGISTRY_REFS_ENROLLMENT] = STORE_IX_ENROLLMENTS_BY_GROUP,
    };
    ad_err e = AD_OK;

    if (by_policy[who] != STORE_IX__COUNT)
        e = refs_diff(tx, by_policy[who], id,
                      old_rec ? json_object_get(old_rec, "policies") : NULL,
                      new_rec ? json_object_get(new_rec, "policies") : NULL);
    if (e == AD_OK && by_group[who] != STORE_IX__COUNT)
        e = refs_diff(tx, by_group[who], id,
                      old_rec ? json_object_get(old_rec, "groups") : NULL,
                      new_rec ? json_object_get(new_rec, "groups") : NULL);
    return e;
}

/* The META key saying the indexes were built. Version 2 added the
 * enrollments' groups: a store marked by version 1 is indexed again
 * (adding entries that exist is harmless). */
#define REFS_MARKER "refs_index_2"
#define REFS_BATCH 500

/* What is indexed, in order: the marker goes in with the last batch of
 * the last table. */
static const struct {
    store_table table;
    registry_referrer who;
    const char *key_field;
} refs_tables[] = {
    {STORE_DEVICES, REGISTRY_REFS_DEVICE, "id"},
    {STORE_GROUPS, REGISTRY_REFS_GROUP, "name"},
    {STORE_ENROLLMENTS, REGISTRY_REFS_ENROLLMENT, "id"},
};
#define REFS_TABLES (sizeof(refs_tables) / sizeof(refs_tables[0]))

/* One batch of the build: the records of refs_tables[t] after *after. */
struct refs_build {
    size_t t;
    char after[REGISTRY_ID_MAX];
    int more;
};

static ad_err refs_build_write(store_txn *tx, void *arg)
{
    struct refs_build *b = arg;
    json_t *items = NULL, *rec, *marker = NULL;
    size_t i;
    ad_err e;

    b->more = 0;
    e = store_list(tx, refs_tables[b->t].table, "", b->after, REFS_BATCH,
                   &items, &b->more);
    json_array_foreach(items, i, rec) {
        const char *key = json_string_value(
            json_object_get(rec, refs_tables[b->t].key_field));

        if (e != AD_OK || key == NULL)
            continue;
        e = registry_refs_follow(tx, refs_tables[b->t].who, key, NULL, rec);
        util_strlcpy(b->after, key, sizeof(b->after));
    }
    json_decref(items);
    if (e == AD_OK && !b->more && b->t == REFS_TABLES - 1 &&
        (marker = json_pack("{s:b}", "built", 1)) == NULL)
        e = AD_ENOMEM;
    if (marker != NULL)
        e = store_put(tx, STORE_META, REFS_MARKER, marker, 0);
    json_decref(marker);
    return e;
}

ad_err registry_refs_build(store *st)
{
    struct refs_build b;
    json_t *marker = NULL;
    ad_err e = registry_record_get(st, STORE_META, REFS_MARKER, &marker);

    json_decref(marker);
    if (e != AD_ENOTFOUND)
        return e;
    /* Adding an entry that exists is harmless, so a build cut short and
     * run again ends with the same indexes. */
    for (size_t t = 0; t < REFS_TABLES; t++) {
        memset(&b, 0, sizeof(b));
        b.t = t;
        do {
            if ((e = store_write(st, refs_build_write, &b)) != AD_OK)
                return e;
        } while (b.more);
    }
    return AD_OK;
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
