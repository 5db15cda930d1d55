/* See registry_records.h. */
#include <stdio.h>

#include "registry_records.h"

ad_err registry_record_get(store *st, store_table t, const char *key,
                           json_t **rec)
{
    store_txn *tx = NULL;
    ad_err e;

    *rec = NULL;
    e = store_read_begin(st, &tx);
    if (e == AD_OK)
        e = store_get(tx, t, key, rec);
    store_read_end(tx);
    return e;
}

void registry_list_set(registry_list *out, json_t *items, int more,
                       const char *cursor_field)
{
    json_t *next = json_null();
    size_t n = json_array_size(items);

    if (more && n > 0) {
        json_t *last = json_array_get(items, n - 1);
        json_t *c = json_is_string(last) ? last
                                         : json_object_get(last, cursor_field);
        if (json_is_integer(c)) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(c));
            next = json_string(buf);
        } else if (json_is_string(c)) {
            next = json_copy(c);
        }
    }
    out->items = items;
    out->next = next;
}

ad_err registry_records_list(store *st, store_table t, const registry_page *pg,
                             json_t *(*view)(const json_t *rec),
                             const char *cursor_field, registry_list *out)
{
    store_txn *tx = NULL;
    json_t *items = NULL, *views, *v;
    size_t i;
    int more = 0;
    ad_err e;

    out->items = out->next = NULL;
    e = store_read_begin(st, &tx);
    if (e == AD_OK)
        e = store_list(tx, t, pg->prefix ? pg->prefix : "", pg->after,
                       pg->limit, &items, &more);
    store_read_end(tx);
    if (e != AD_OK)
        return e;
    if (view) {
        views = json_array();
        json_array_foreach(items, i, v)
            json_array_append_new(views, view(v));
        json_decref(items);
        items = views;
    }
    registry_list_set(out, items, more, cursor_field);
    return AD_OK;
}

json_t *registry_view_without(const json_t *rec, const char *field)
{
    json_t *v = json_deep_copy(rec);

    if (v)
        json_object_del(v, field);
    return v;
}

struct hashed_write {
    const registry_hashed_kind *k;
    const char *actor;
    const char *id;
    const json_t *rec;
};

static ad_err hashed_create_write(store_txn *tx, void *arg)
{
    const struct hashed_write *w = arg;
    const char *hash =
        json_string_value(json_object_get(w->rec, w->k->hash_field));
    ad_err e = w->k->follow ? w->k->follow(tx, w->id, NULL, w->rec) : AD_OK;

    if (e == AD_OK)
        e = store_put(tx, w->k->table, w->id, w->rec, STORE_NOOVERWRITE);
    if (e == AD_OK)
        e = store_index_add(tx, w->k->ix, hash ? hash : "", w->id);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, w->k->create_action, w->id, NULL);
    return e;
}

ad_err registry_hashed_create(store *st, const registry_hashed_kind *k,
                              const char *actor, const char *id,
                              const json_t *rec, const char *secret,
                              json_t **view)
{
    struct hashed_write w = {k, actor, id, rec};
    ad_err e;

    *view = NULL;
    if ((e = store_write(st, hashed_create_write, &w)) != AD_OK)
        return e;
    if ((*view = k->view(rec)) == NULL ||
        json_object_set_new(*view, k->secret_field, json_string(secret)) != 0) {
        json_decref(*view);
        *view = NULL;
        return AD_ENOMEM; /* written, but the secret is lost */
    }
    return AD_OK;
}

static ad_err hashed_delete_write(store_txn *tx, void *arg)
{
    const struct hashed_write *w = arg;
    json_t *rec = NULL;
    const char *hash;
    ad_err e;

    if ((e = store_get(tx, w->k->table, w->id, &rec)) != AD_OK)
        return e;
    hash = json_string_value(json_object_get(rec, w->k->hash_field));
    if (hash)
        e = store_index_del(tx, w->k->ix, hash, w->id);
    if (e == AD_OK)
        e = store_del(tx, w->k->table, w->id);
    if (e == AD_OK && w->k->follow)
        e = w->k->follow(tx, w->id, rec, NULL);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, w->k->delete_action, w->id, NULL);
    json_decref(rec);
    return e;
}

ad_err registry_hashed_delete(store *st, const registry_hashed_kind *k,
                              const char *actor, const char *id)
{
    struct hashed_write w = {k, actor, id, NULL};

    return store_write(st, hashed_delete_write, &w);
}

ad_err registry_hashed_get(store *st, const registry_hashed_kind *k,
                           const char *id, json_t **view)
{
    json_t *rec = NULL;
    ad_err e = registry_record_get(st, k->table, id, &rec);

    *view = e == AD_OK ? k->view(rec) : NULL;
    json_decref(rec);
    return e != AD_OK ? e : *view ? AD_OK : AD_ENOMEM;
}

ad_err registry_hashed_list(store *st, const registry_hashed_kind *k,
                            const registry_page *pg, registry_list *out)
{
    return registry_records_list(st, k->table, pg, k->view, "id", out);
}
