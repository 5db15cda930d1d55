/* See migrate.h. */
#include <inttypes.h>
#include <string.h>

#include "datadir.h"
#include "migrate.h"
#include "store.h"

enum { COUNT_PAGE = 1000 };

/* How many records a table holds. */
static ad_err count_records(store *st, store_table t, uint64_t *n)
{
    store_txn *tx = NULL;
    ad_err e;

    *n = 0;
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_count(tx, t, n);
    store_read_end(tx);
    return e;
}

/* How many audit entries (event_log 0) or events (1) a store holds. */
static ad_err count_log(store *st, int event_log, uint64_t *n)
{
    store_txn *tx = NULL;
    json_t *items = NULL;
    uint64_t after = 0;
    int more = 1;
    ad_err e = AD_OK;

    *n = 0;
    while (more && e == AD_OK) {
        size_t len;
        json_t *last;

        if ((e = store_read_begin(st, &tx)) != AD_OK)
            break;
        e = event_log ? store_event_list(tx, after, COUNT_PAGE, &items, &more)
                   : store_audit_list(tx, after, COUNT_PAGE, &items, &more);
        store_read_end(tx);
        len = json_array_size(items);
        if (e == AD_OK && len > 0) {
            *n += len;
            last = json_array_get(items, len - 1);
            after = (uint64_t)json_integer_value(
                json_object_get(last, event_log ? "id" : "seq"));
        }
        json_decref(items);
        items = NULL;
    }
    return e;
}

/* Counts of every table and both logs of one store. */
struct tally {
    uint64_t records[STORE_TABLE__COUNT];
    uint64_t audit, events;
};

static ad_err tally_of(store *st, struct tally *t)
{
    int i;
    ad_err e = AD_OK;

    memset(t, 0, sizeof(*t));
    for (i = 0; i < STORE_TABLE__COUNT && e == AD_OK; i++)
        e = count_records(st, (store_table)i, &t->records[i]);
    if (e == AD_OK)
        e = count_log(st, 0, &t->audit);
    if (e == AD_OK)
        e = count_log(st, 1, &t->events);
    return e;
}

ad_err migrate_store(const config *cfg, FILE *out, char *err, size_t errlen)
{
    store_options o;
    store *from = NULL, *to = NULL;
    store_copy_counts copied;
    struct tally src, dst;
    int i, same = 1;
    ad_err e;

    if (cfg->to[0] == '\0')
        return ad_errf(AD_EBADREQ, err, errlen,
                       "--to URL names the store to move the registry into");
    if ((e = datadir_open_store(cfg, &from, err, errlen)) != AD_OK)
        return e;
    memset(&o, 0, sizeof(o));
    o.data_dir = cfg->data;
    o.map_mb = (size_t)cfg->map_mb;
    if ((e = store_open_url(cfg->to, &o, &to, err, errlen)) != AD_OK)
        goto out;
    if ((e = store_copy(from, to, &copied, err, errlen)) != AD_OK)
        goto out;
    /* The proof does not trust the copy's own counts: both sides are
     * counted afresh. */
    if ((e = tally_of(from, &src)) != AD_OK ||
        (e = tally_of(to, &dst)) != AD_OK) {
        ad_errf(e, err, errlen, "cannot count the records to verify the copy");
        goto out;
    }
    fprintf(out, "%-16s %12s %12s\n", "table", "source", "destination");
    for (i = 0; i < STORE_TABLE__COUNT; i++) {
        fprintf(out, "%-16s %12" PRIu64 " %12" PRIu64 "\n",
                store_table_name((store_table)i), src.records[i],
                dst.records[i]);
        same &= src.records[i] == dst.records[i];
    }
    fprintf(out, "%-16s %12" PRIu64 " %12" PRIu64 "\n", "audit", src.audit,
            dst.audit);
    fprintf(out, "%-16s %12" PRIu64 " %12" PRIu64 "\n", "events", src.events,
            dst.events);
    same &= src.audit == dst.audit && src.events == dst.events;
    if (!same) {
        e = ad_errf(AD_ESTORE, err, errlen,
                    "the counts differ: the data dir still uses its old store");
        goto out;
    }
    e = datadir_remember_store(cfg->data, cfg->to, err, errlen);
out:
    store_close(to);
    store_close(from);
    return e;
}
