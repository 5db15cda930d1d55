/* store_copy: a whole store into another, backend to backend, through
 * the backends' enumeration operations (store_int.h), for `authd
 * migrate`. */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* Rows per write: big enough to amortise a commit, small enough to keep
 * one transaction's size modest. */
#define COPY_BATCH 500

enum { C_TABLE, C_INDEX, C_AUDIT, C_EVENTS };

struct copy_arg {
    int kind;
    int which;    /* the table or index */
    json_t *rows; /* pairs, or audit/event entries */
};

/* One batch of rows into the destination. Runs again whole on a retry:
 * it only writes what rows says. */
static ad_err copy_write(store_txn *tx, void *arg)
{
    struct copy_arg *c = arg;
    size_t i;
    json_t *row;
    ad_err e = AD_OK;

    json_array_foreach(c->rows, i, row) {
        const char *a = json_string_value(json_array_get(row, 0));
        const char *b = json_string_value(json_array_get(row, 1));
        char *text;

        switch (c->kind) {
        case C_TABLE:
            if (a == NULL || b == NULL)
                return AD_EINTERNAL;
            e = store_put_text(tx, (store_table)c->which, a, b,
                               json_string_length(json_array_get(row, 1)), 0);
            break;
        case C_INDEX:
            if (a == NULL || b == NULL)
                return AD_EINTERNAL;
            e = store_index_add(tx, (store_index)c->which, a, b);
            break;
        default:
            text = json_dumps(row, JSON_COMPACT);
            if (text == NULL)
                return AD_ENOMEM;
            if (c->kind == C_AUDIT)
                e = tx->s->ops->audit_put(
                    tx,
                    (uint64_t)json_integer_value(json_object_get(row, "seq")),
                    text, strlen(text));
            else
                e = tx->s->ops->event_put(
                    tx,
                    (uint64_t)json_integer_value(json_object_get(row, "id")),
                    text, strlen(text));
            free(text);
            break;
        }
        if (e != AD_OK)
            return e;
    }
    return AD_OK;
}

static ad_err dest_empty(store *to, char *err, size_t errlen)
{
    static const store_table guarded[] = {STORE_DEVICES, STORE_CERTS};
    store_txn *tx = NULL;
    json_t *items = NULL;
    ad_err e;
    size_t i;
    int more = 0;

    if ((e = store_read_begin(to, &tx)) != AD_OK)
        return ad_errf(e, err, errlen, "copy: cannot read the destination");
    for (i = 0; i < sizeof(guarded) / sizeof(guarded[0]); i++) {
        e = store_list(tx, guarded[i], "", NULL, 1, &items, &more);
        if (e == AD_OK && json_array_size(items) > 0)
            e = ad_errf(AD_ECONFLICT, err, errlen,
                        "copy: the destination already holds %s",
                        store_table_names[guarded[i]]);
        json_decref(items);
        items = NULL;
        if (e != AD_OK)
            break;
    }
    store_read_end(tx);
    return e;
}

/* Writes one batch and counts it. */
static ad_err copy_batch(store *to, struct copy_arg *c, uint64_t *count,
                         char *err, size_t errlen)
{
    ad_err e = store_write(to, copy_write, c);

    if (e != AD_OK)
        return ad_errf(e, err, errlen, "copy: writing the destination failed");
    *count += json_array_size(c->rows);
    return AD_OK;
}

ad_err store_copy(store *from, store *to, store_copy_counts *counts,
                  char *err, size_t errlen)
{
    store_txn *rx = NULL;
    struct copy_arg c = {0, 0, NULL};
    ad_err e;
    int i, more;

    memset(counts, 0, sizeof(*counts));
    if (err && errlen)
        err[0] = '\0';
    if ((e = dest_empty(to, err, errlen)) != AD_OK)
        return e;
    /* One snapshot of the source for the whole copy. */
    if ((e = store_read_begin(from, &rx)) != AD_OK)
        return ad_errf(e, err, errlen, "copy: cannot read the source");
    for (i = 0; i < STORE_TABLE__COUNT && e == AD_OK; i++) {
        char after[512] = "";

        c.kind = C_TABLE;
        c.which = i;
        do {
            more = 0;
            e = from->ops->table_scan(rx, (store_table)i, after, COPY_BATCH,
                                      &c.rows, &more);
            if (e == AD_OK && json_array_size(c.rows) > 0) {
                json_t *last = json_array_get(c.rows,
                                              json_array_size(c.rows) - 1);

                snprintf(after, sizeof(after), "%s",
                         json_string_value(json_array_get(last, 0)));
                e = copy_batch(to, &c, &counts->records[i], err, errlen);
            }
            json_decref(c.rows);
            c.rows = NULL;
        } while (e == AD_OK && more);
    }
    for (i = 0; i < STORE_IX__COUNT && e == AD_OK; i++) {
        char ak[512] = "", av[512] = "";

        c.kind = C_INDEX;
        c.which = i;
        do {
            more = 0;
            e = from->ops->index_scan(rx, (store_index)i, ak, av, COPY_BATCH,
                                      &c.rows, &more);
            if (e == AD_OK && json_array_size(c.rows) > 0) {
                json_t *last = json_array_get(c.rows,
                                              json_array_size(c.rows) - 1);

                snprintf(ak, sizeof(ak), "%s",
                         json_string_value(json_array_get(last, 0)));
                snprintf(av, sizeof(av), "%s",
                         json_string_value(json_array_get(last, 1)));
                e = copy_batch(to, &c, &counts->index_entries[i], err, errlen);
            }
            json_decref(c.rows);
            c.rows = NULL;
        } while (e == AD_OK && more);
    }
    for (i = 0; i < 2 && e == AD_OK; i++) {
        uint64_t after = 0;

        c.kind = i == 0 ? C_AUDIT : C_EVENTS;
        do {
            e = i == 0 ? store_audit_list(rx, after, COPY_BATCH, &c.rows, &more)
                       : store_event_list(rx, after, COPY_BATCH, &c.rows,
                                          &more);
            if (e == AD_OK && json_array_size(c.rows) > 0) {
                json_t *last = json_array_get(c.rows,
                                              json_array_size(c.rows) - 1);

                after = (uint64_t)json_integer_value(
                    json_object_get(last, i == 0 ? "seq" : "id"));
                e = copy_batch(to, &c, i == 0 ? &counts->audit
                                              : &counts->events,
                               err, errlen);
            }
            json_decref(c.rows);
            c.rows = NULL;
        } while (e == AD_OK && more);
    }
    if (e != AD_OK && err && errlen && err[0] == '\0')
        ad_errf(e, err, errlen, "copy: reading the source failed");
    store_read_end(rx);
    return e;
}
