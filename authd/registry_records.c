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

static ad_err hashed_create_write(store_txn *tx, void *arg)
{
    const registry_hashed *h = arg;
    ad_err e = store_put(tx, h->table, h->id, h->rec, STORE_NOOVERWRITE);

    if (e == AD_OK)
        e = store_index_add(tx, h->ix, h->hash, h->id);
    if (e == AD_OK)
        e = store_audit(tx, h->actor, h->action, h->id, NULL);
    return e;
}

ad_err registry_hashed_create(store *st, const registry_hashed *h)
{
    return store_write(st, hashed_create_write, (void *)h);
}

static ad_err hashed_delete_write(store_txn *tx, void *arg)
{
    const registry_hashed *h = arg;
    json_t *rec = NULL;
    const char *hash;
    ad_err e;

    if ((e = store_get(tx, h->table, h->id, &rec)) != AD_OK)
        return e;
    hash = json_string_value(json_object_get(rec, h->hash_field));
    if (hash)
        e = store_index_del(tx, h->ix, hash, h->id);
    if (e == AD_OK)
        e = store_del(tx, h->table, h->id);
    if (e == AD_OK)
        e = store_audit(tx, h->actor, h->action, h->id, NULL);
    json_decref(rec);
    return e;
}

ad_err registry_hashed_delete(store *st, const registry_hashed *h)
{
    return store_write(st, hashed_delete_write, (void *)h);
}
