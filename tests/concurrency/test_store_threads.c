/* The store's group commit under contention: writers from several
 * threads (some of whose writes fail and must leave nothing) against
 * readers that check, in their own read transactions, that what they see
 * is always a consistent committed state. Run under the `tsan` setup any
 * unsynchronised access between callers and the writer thread fails the
 * test; in every build the counts prove that no write was lost. Runs
 * against LMDB and, when AUTHD_TEST_PG_URL names a server, against a
 * fresh PostgreSQL database. */
#include <stdatomic.h>

#include "../../authd/store.h"
#include "../unit/pg_fixture.h"
#include "harness.h"

enum {
    WRITERS = 8,
    READERS = 3,
    WRITES_MAX = 3000, /* per writer, whatever the time budget */
    FAIL_EVERY = 5     /* every 5th write of a writer is made to fail */
};

static char dir[256];
static char pg_url[512]; /* set for the PostgreSQL run */
static store *st;

static ad_err open_st(char *err, size_t errlen)
{
    if (pg_url[0])
        return store_open_url(pg_url, NULL, &st, err, errlen);
    return store_open(dir, 64, &st, err, errlen);
}
static conc_deadline deadline;
static atomic_int writers_left;

struct worker {
    int id;
    int committed;  /* writers: writes that returned AD_OK */
    int failed_ok;  /* writers: failing writes answered with their error */
    int errors;     /* anything unexpected; reported by main */
    long reads;     /* readers: consistent snapshots checked */
};

struct write_arg {
    int writer, seq, fail;
};

/* One write: bump the shared counter, add a record, an index value and
 * an audit entry; or (fail) do the same and then refuse, so the nested
 * transaction must drop all of it. */
static ad_err counted_write(store_txn *tx, void *arg)
{
    struct write_arg *w = arg;
    json_t *meta = NULL, *rec;
    json_int_t n = 0;
    char key[64], ix[16], val[16];
    ad_err e;

    if (store_get(tx, STORE_META, "counter", &meta) == AD_OK)
        n = json_integer_value(json_object_get(meta, "n"));
    json_decref(meta);
    meta = json_pack("{s:I}", "n", n + 1);
    e = store_put(tx, STORE_META, "counter", meta, 0);
    json_decref(meta);
    snprintf(key, sizeof(key), "%s%d-%06d", w->fail ? "fail-" : "w", w->writer,
             w->seq);
    rec = json_pack("{s:i, s:i}", "writer", w->writer, "seq", w->seq);
    if (e == AD_OK)
        e = store_put(tx, STORE_CERTS, key, rec, STORE_NOOVERWRITE);
    json_decref(rec);
    snprintf(ix, sizeof(ix), "w%d", w->writer);
    snprintf(val, sizeof(val), "%06d", w->seq);
    if (e == AD_OK)
        e = store_index_add(tx, STORE_IX_CERTS_BY_DEVICE, ix, val);
    if (e == AD_OK)
        e = store_audit(tx, "conc", "test.write", key, NULL);
    if (e == AD_OK && w->fail)
        return AD_ECONFLICT;
    return e;
}

static void *writer_main(void *arg)
{
    struct worker *me = arg;
    int seq;

    for (seq = 0; seq < WRITES_MAX && !conc_expired(&deadline); seq++) {
        struct write_arg w = {me->id, seq, seq % FAIL_EVERY == FAIL_EVERY - 1};
        ad_err e = store_write(st, counted_write, &w);

        if (w.fail) {
            if (e == AD_ECONFLICT)
                me->failed_ok++;
            else
                me->errors++;
        } else if (e == AD_OK) {
            me->committed++;
        } else {
            me->errors++;
        }
    }
    atomic_fetch_sub(&writers_left, 1);
    return NULL;
}

/* One snapshot: the counter equals the number of committed records, no
 * failed write shows, and each writer's index values are sorted and as
 * many as its records. */
static int snapshot_consistent(struct worker *me, json_int_t *counter)
{
    store_txn *tx = NULL;
    json_t *meta = NULL, *items = NULL, *vals = NULL;
    size_t total = 0, i;
    int more = 0, good = 0, w;
    char after[64] = "";

    if (store_read_begin(st, &tx) != AD_OK)
        return 0;
    *counter = 0;
    if (store_get(tx, STORE_META, "counter", &meta) == AD_OK)
        *counter = json_integer_value(json_object_get(meta, "n"));
    /* Count the committed records page by page, in this one snapshot. */
    do {
        json_t *last;

        if (store_list(tx, STORE_CERTS, "w", after, 500, &items, &more) !=
            AD_OK)
            goto out;
        total += json_array_size(items);
        last = json_array_get(items, json_array_size(items) - 1);
        if (last != NULL)
            snprintf(after, sizeof(after), "w%d-%06d",
                     (int)json_integer_value(json_object_get(last, "writer")),
                     (int)json_integer_value(json_object_get(last, "seq")));
        json_decref(items);
        items = NULL;
    } while (more);
    if ((json_int_t)total != *counter)
        goto out;
    if (store_list(tx, STORE_CERTS, "fail-", NULL, 1, &items, &more) != AD_OK ||
        json_array_size(items) != 0)
        goto out;
    w = me->id % WRITERS;
    {
        char ix[16];
        size_t n = 0;
        const char *prev = "";

        snprintf(ix, sizeof(ix), "w%d", w);
        do {
            if (store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, ix,
                                 n ? prev : NULL, 1000, &vals, &more) != AD_OK)
                goto out;
            for (i = 0; i < json_array_size(vals); i++) {
                const char *v = json_string_value(json_array_get(vals, i));
                if (v == NULL || strcmp(prev, v) >= 0)
                    goto out;
                snprintf(after, sizeof(after), "%s", v);
                prev = after;
            }
            n += json_array_size(vals);
            json_decref(vals);
            vals = NULL;
        } while (more);
    }
    good = 1;
out:
    json_decref(meta);
    json_decref(items);
    json_decref(vals);
    store_read_end(tx);
    return good;
}

static void *reader_main(void *arg)
{
    struct worker *me = arg;
    json_int_t last = 0, now = 0;
    store_stats prev = {0}, cur;

    while (atomic_load(&writers_left) > 0) {
        if (!snapshot_consistent(me, &now) || now < last)
            me->errors++;
        last = now;
        store_commit_stats(st, &cur);
        if (cur.commits < prev.commits || cur.writes < prev.writes)
            me->errors++;
        prev = cur;
        me->reads++;
    }
    return NULL;
}

/* Writer and reader threads share one array so they start together. */
static void *role_main(void *arg)
{
    struct worker *me = arg;

    return me->id < WRITERS ? writer_main(me) : reader_main(me);
}

static void test_store_group_commit_loses_nothing_under_concurrent_readers(void)
{
    struct worker w[WRITERS + READERS];
    char err[256] = "";
    json_int_t counter = 0;
    int committed = 0, failed_ok = 0, errors = 0, i;
    long reads = 0;
    store_stats stats;

    memset(w, 0, sizeof(w));
    for (i = 0; i < WRITERS + READERS; i++)
        w[i].id = i;
    ok(open_st(err, sizeof(err)) == AD_OK,
       "the store opens fresh (%s)", err);
    if (st == NULL)
        return;
    atomic_init(&writers_left, WRITERS);
    deadline = conc_deadline_in(conc_budget());
    ok(conc_run(WRITERS + READERS, role_main, w, sizeof(w[0])) == 0,
       "every writer and reader thread starts");
    for (i = 0; i < WRITERS + READERS; i++) {
        committed += w[i].committed;
        failed_ok += w[i].failed_ok;
        errors += w[i].errors;
        reads += w[i].reads;
    }
    tap_diag("%d writes committed, %d refused on purpose, %ld snapshots read",
             committed, failed_ok, reads);
    ok(errors == 0,
       "no write got a wrong answer and every snapshot was consistent "
       "(%d errors)", errors);
    ok(committed > 0 && failed_ok > 0 && reads > 0,
       "the phase did real work on both sides");
    store_commit_stats(st, &stats);
    tap_diag("%llu writes in %llu commits", (unsigned long long)stats.writes,
             (unsigned long long)stats.commits);
    ok(stats.writes == (uint64_t)(committed + failed_ok),
       "the writer counted every write, failed ones included");
    store_close(st);
    st = NULL;

    /* After reopening: every acknowledged write is durable, and the
     * shared counter lost no increment. */
    ok(open_st(err, sizeof(err)) == AD_OK, "the store reopens");
    if (st == NULL)
        return;
    w[0].id = 0;
    ok(snapshot_consistent(&w[0], &counter) && counter == committed,
       "after reopen the counter is the number of committed writes (%lld)",
       (long long)counter);
    store_close(st);
    st = NULL;
}

int main(void)
{
    int rc;

    if (conc_tmpdir("store", dir, sizeof(dir)) != 0)
        return 1;
    tap_diag("backend: lmdb");
    TAP_RUN(test_store_group_commit_loses_nothing_under_concurrent_readers);
    if (pgfx_fresh("threads", pg_url, sizeof(pg_url)) == 0) {
        tap_diag("backend: postgresql");
        TAP_RUN(test_store_group_commit_loses_nothing_under_concurrent_readers);
        pg_url[0] = '\0';
        pgfx_drop_all();
    }
    rc = tap_done();
    conc_rmdir(dir);
    return rc;
}
