/* Unit tests of the store: records, indexes, pages, the audit and event
 * logs, the change feed, store_copy, and the group-commit writer (atomic
 * writes, durability across reopen, many concurrent writes sharing
 * commits). Every case runs against LMDB and, when AUTHD_TEST_PG_URL names
 * a PostgreSQL server, again against a fresh PostgreSQL database, where
 * two handles on one database also stand for two nodes. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../authd/store.h"
#include "pg_fixture.h"
#include "tap.h"

static char dir[256];

static uint64_t util_now_ns_for_test(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
static char pg_url[512]; /* set while the PostgreSQL run is going */

static store *open_store(void)
{
    store *s = NULL;
    char err[256] = "";

    if (pg_url[0]) {
        if (store_open_url(pg_url, NULL, &s, err, sizeof(err)) != AD_OK)
            tap_diag("store_open_url: %s", err);
    } else if (store_open(dir, 64, &s, err, sizeof(err)) != AD_OK) {
        tap_diag("store_open: %s", err);
    }
    return s;
}

struct put_arg {
    const char *key;
    json_t *val;
    int flags;
    int fail_after_put; /* write, then return an error */
};

static ad_err put_write(store_txn *tx, void *arg)
{
    struct put_arg *p = arg;
    ad_err e = store_put(tx, STORE_DEVICES, p->key, p->val, p->flags);

    if (e == AD_OK)
        e = store_index_add(tx, STORE_IX_CERTS_BY_DEVICE, p->key, "serial-1");
    if (e == AD_OK && p->fail_after_put)
        return AD_ECONFLICT;
    return e;
}

static void test_store_put_then_get_returns_the_record(void)
{
    store *s = open_store();
    store_txn *tx = NULL;
    json_t *v = json_pack("{s:s}", "id", "dev-1"), *got = NULL;
    struct put_arg p = {"dev-1", v, 0, 0};

    ok(s != NULL, "the store opens in an empty directory");
    ok(store_write(s, put_write, &p) == AD_OK, "a write commits");
    ok(store_read_begin(s, &tx) == AD_OK, "a read transaction begins");
    ok(store_get(tx, STORE_DEVICES, "dev-1", &got) == AD_OK &&
           json_equal(got, v),
       "a committed record reads back equal");
    json_decref(got);
    got = NULL;
    ok(store_get(tx, STORE_DEVICES, "nope", &got) == AD_ENOTFOUND && !got,
       "a missing key is AD_ENOTFOUND with no record");
    store_read_end(tx);
    json_decref(v);
    store_close(s);
}

static void test_store_nooverwrite_refuses_an_existing_key(void)
{
    store *s = open_store();
    json_t *v = json_pack("{s:s}", "id", "dev-1");
    struct put_arg p = {"dev-1", v, STORE_NOOVERWRITE, 0};

    ok(store_write(s, put_write, &p) == AD_EEXISTS,
       "creating a record that exists is a conflict, not an overwrite");
    json_decref(v);
    store_close(s);
}

static void test_store_failed_write_leaves_nothing_behind(void)
{
    store *s = open_store();
    store_txn *tx = NULL;
    json_t *v = json_pack("{s:s}", "id", "half"), *got = NULL, *ix = NULL;
    struct put_arg p = {"half", v, 0, 1};
    int more = 0;

    ok(store_write(s, put_write, &p) == AD_ECONFLICT,
       "the write's own error is returned");
    store_read_begin(s, &tx);
    ok(store_get(tx, STORE_DEVICES, "half", &got) == AD_ENOTFOUND,
       "a write that failed after its put leaves no record (no half state)");
    store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, "half", NULL, 10, &ix,
                     &more);
    ok(json_array_size(ix) == 0, "nor its index entry");
    store_read_end(tx);
    json_decref(ix);
    json_decref(v);
    store_close(s);
}

static ad_err put_many_write(store_txn *tx, void *arg)
{
    const char **keys = arg;
    ad_err e = AD_OK;
    size_t i;

    for (i = 0; keys[i] && e == AD_OK; i++) {
        json_t *v = json_pack("{s:s}", "id", keys[i]);
        e = store_put(tx, STORE_DEVICES, keys[i], v, 0);
        json_decref(v);
    }
    return e;
}

static void test_store_list_pages_by_prefix_and_cursor(void)
{
    static const char *keys[] = {"SN-1", "SN-2", "SN-3", "SN-4", "TX-1", NULL};
    store *s = open_store();
    store_txn *tx = NULL;
    json_t *items = NULL;
    int more = 0;

    ok(store_write(s, put_many_write, keys) == AD_OK, "five records commit");
    store_read_begin(s, &tx);
    store_list(tx, STORE_DEVICES, "SN-", NULL, 2, &items, &more);
    ok(json_array_size(items) == 2 && more,
       "a page holds limit items and says more follow");
    ok(strcmp(json_string_value(json_object_get(json_array_get(items, 1),
                                                "id")),
              "SN-2") == 0,
       "pages are in key order");
    json_decref(items);
    store_list(tx, STORE_DEVICES, "SN-", "SN-2", 10, &items, &more);
    ok(json_array_size(items) == 2 && !more,
       "the next page starts after the cursor and stops at the prefix");
    json_decref(items);
    store_list(tx, STORE_DEVICES, "", NULL, 100, &items, &more);
    ok(json_array_size(items) >= 5, "an empty prefix lists everything");
    json_decref(items);
    store_read_end(tx);
    store_close(s);
}

static ad_err index_write(store_txn *tx, void *arg)
{
    (void)arg;
    ad_err e = store_index_add(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", "b");
    if (e == AD_OK)
        e = store_index_add(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", "a");
    if (e == AD_OK)
        e = store_index_add(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", "c");
    if (e == AD_OK) /* adding twice is not an error and not a duplicate */
        e = store_index_add(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", "a");
    if (e == AD_OK)
        e = store_index_del(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", "c");
    return e;
}

static void test_store_index_keeps_sorted_unique_values(void)
{
    store *s = open_store();
    store_txn *tx = NULL;
    json_t *vals = NULL;
    char first[8];
    int more = 0;

    ok(store_write(s, index_write, NULL) == AD_OK, "index writes commit");
    store_read_begin(s, &tx);
    store_index_list(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", NULL, 10, &vals,
                     &more);
    ok(json_array_size(vals) == 2 &&
           strcmp(json_string_value(json_array_get(vals, 0)), "a") == 0 &&
           strcmp(json_string_value(json_array_get(vals, 1)), "b") == 0,
       "values are sorted, unique, and deleted ones are gone");
    json_decref(vals);
    store_index_list(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", "a", 10, &vals,
                     &more);
    ok(json_array_size(vals) == 1, "an index page resumes after its cursor");
    json_decref(vals);
    ok(store_index_first(tx, STORE_IX_CERTS_BY_ENROLLMENT, "e1", first,
                         sizeof(first)) == AD_OK &&
           strcmp(first, "a") == 0,
       "index_first gives the smallest value");
    store_read_end(tx);
    store_close(s);
}

static ad_err audit_write(store_txn *tx, void *arg)
{
    (void)arg;
    ad_err e = store_audit(tx, "apikey:k1", "device.create", "d1", NULL);
    if (e == AD_OK)
        e = store_audit(tx, "apikey:k1", "device.delete", "d1", NULL);
    return e;
}

static void test_store_audit_is_numbered_in_order(void)
{
    store *s = open_store();
    store_txn *tx = NULL;
    json_t *items = NULL;
    json_int_t s0, s1;
    int more = 0;

    ok(store_write(s, audit_write, NULL) == AD_OK, "audit entries commit");
    store_read_begin(s, &tx);
    store_audit_list(tx, 0, 100, &items, &more);
    ok(json_array_size(items) == 2, "both entries are listed");
    s0 = json_integer_value(json_object_get(json_array_get(items, 0), "seq"));
    s1 = json_integer_value(json_object_get(json_array_get(items, 1), "seq"));
    ok(s0 == 1 && s1 == 2, "sequence numbers start at 1 and increase");
    ok(strcmp(json_string_value(json_object_get(json_array_get(items, 0),
                                                "actor")),
              "apikey:k1") == 0,
       "entries carry their actor");
    json_decref(items);
    store_audit_list(tx, 1, 100, &items, &more);
    ok(json_array_size(items) == 1, "after=1 resumes at seq 2");
    json_decref(items);
    store_read_end(tx);
    store_close(s);
}

/* Writers on one or more handles (nodes), each write one audit entry;
 * every FAIL_EVERY-th write fails after appending its entry, which must
 * then not be in the log (nor in the chain). */
enum { CHAIN_THREADS = 8, CHAIN_EACH = 25, CHAIN_FAIL_EVERY = 5 };

struct chain_ctx {
    store *s;
    int thread, ok, failed_as_asked;
};

static ad_err chain_write(store_txn *tx, void *arg)
{
    int *n = arg;
    char target[32];
    ad_err e;

    snprintf(target, sizeof(target), "t%d", *n);
    e = store_audit(tx, "apikey:chain/k_1", "device.update", target, NULL);
    if (e == AD_OK && *n % CHAIN_FAIL_EVERY == 0)
        return AD_ECONFLICT;
    return e;
}

static void *chain_main(void *arg)
{
    struct chain_ctx *c = arg;
    int i, n;

    for (i = 0; i < CHAIN_EACH; i++) {
        ad_err e;

        n = c->thread * CHAIN_EACH + i + 1;
        e = store_write(c->s, chain_write, &n);
        if (e == AD_OK)
            c->ok++;
        else if (e == AD_ECONFLICT && n % CHAIN_FAIL_EVERY == 0)
            c->failed_as_asked++;
    }
    return NULL;
}

/* Runs the writers over nodes[0..nnodes-1], then checks the chain. */
static void audit_chain_under_writers(store **nodes, int nnodes)
{
    pthread_t th[CHAIN_THREADS];
    struct chain_ctx c[CHAIN_THREADS];
    store_audit_check before, after;
    store_txn *tx = NULL;
    json_t *items = NULL, *it;
    int i, oks = 0, fails = 0, more = 0, prev_ok = 1;
    size_t k;
    char h[STORE_AUDIT_HASH_HEX];
    ad_err e;

    ok(store_audit_verify(nodes[0], &before) == AD_OK && before.ok,
       "the chain holds before");
    for (i = 0; i < CHAIN_THREADS; i++) {
        c[i] = (struct chain_ctx){nodes[i % nnodes], i, 0, 0};
        pthread_create(&th[i], NULL, chain_main, &c[i]);
    }
    for (i = 0; i < CHAIN_THREADS; i++) {
        pthread_join(th[i], NULL);
        oks += c[i].ok;
        fails += c[i].failed_as_asked;
    }
    ok(oks + fails == CHAIN_THREADS * CHAIN_EACH &&
           fails == CHAIN_THREADS * CHAIN_EACH / CHAIN_FAIL_EVERY,
       "every write committed or failed as asked (%d, %d)", oks, fails);
    e = store_audit_verify(nodes[nnodes - 1], &after);
    ok(e == AD_OK && after.ok,
       "the chain holds after %d concurrent writers on %d node(s) (first "
       "bad %llu)",
       CHAIN_THREADS, nnodes, (unsigned long long)after.first_bad);
    ok(after.entries == before.entries + (uint64_t)oks,
       "one entry per committed write, none of a failed one: %llu + %d = "
       "%llu",
       (unsigned long long)before.entries, oks,
       (unsigned long long)after.entries);
    store_read_begin(nodes[0], &tx);
    store_audit_rlist(tx, 0, 3, &items, &more);
    it = json_array_get(items, 0);
    ok(json_array_size(items) == 3 && more &&
           (uint64_t)json_integer_value(json_object_get(it, "seq")) ==
               after.entries,
       "newest first starts at the newest entry");
    ok(store_audit_hash(it, h) == AD_OK && strcmp(h, after.head) == 0,
       "head is the newest entry's hash");
    json_array_foreach(items, k, it) {
        json_t *older = json_array_get(items, k + 1);

        if (older && (json_integer_value(json_object_get(older, "seq")) !=
                          json_integer_value(json_object_get(it, "seq")) - 1 ||
                      store_audit_hash(older, h) != AD_OK ||
                      strcmp(h, json_string_value(json_object_get(
                                    it, "prev_hash"))) != 0))
            prev_ok = 0;
    }
    ok(prev_ok, "each entry's prev_hash is the hash of the one before");
    json_decref(items);
    store_audit_rlist(tx, 3, 10, &items, &more);
    ok(json_array_size(items) == 2 &&
           json_integer_value(json_object_get(json_array_get(items, 0),
                                              "seq")) == 2 &&
           !more,
       "before=3 gives 2 and 1");
    json_decref(items);
    store_audit_rlist(tx, 1, 10, &items, &more);
    ok(json_array_size(items) == 0 && !more, "nothing is before 1");
    json_decref(items);
    store_read_end(tx);
}

static void test_store_audit_chain_holds_under_concurrent_writers(void)
{
    store *s = open_store();

    audit_chain_under_writers(&s, 1);
    store_close(s);
}

/* ---- group commit ------------------------------------------------------ */

enum { WRITERS = 16, WRITES_EACH = 50 };

struct counter_arg {
    int thread;
    int i;
};

static ad_err counter_write(store_txn *tx, void *arg)
{
    struct counter_arg *c = arg;
    json_t *meta = NULL, *v;
    char key[32];
    ad_err e;

    /* A shared counter makes lost updates visible. */
    e = store_get(tx, STORE_META, "counter", &meta);
    if (e == AD_ENOTFOUND)
        meta = json_pack("{s:I}", "n", (json_int_t)0);
    else if (e != AD_OK)
        return e;
    json_object_set_new(meta, "n",
                        json_integer(json_integer_value(
                                         json_object_get(meta, "n")) +
                                     1));
    e = store_put(tx, STORE_META, "counter", meta, 0);
    json_decref(meta);
    if (e != AD_OK)
        return e;
    snprintf(key, sizeof(key), "w-%02d-%03d", c->thread, c->i);
    v = json_pack("{s:s}", "id", key);
    e = store_put(tx, STORE_CERTS, key, v, STORE_NOOVERWRITE);
    json_decref(v);
    return e;
}

struct writer_ctx {
    store *s;
    int thread;
    int failures;
};

static void *writer_thread(void *arg)
{
    struct writer_ctx *w = arg;
    int i;

    for (i = 0; i < WRITES_EACH; i++) {
        struct counter_arg c = {w->thread, i};
        if (store_write(w->s, counter_write, &c) != AD_OK)
            w->failures++;
    }
    return NULL;
}

static void test_store_concurrent_writes_share_commits_and_lose_nothing(void)
{
    store *s = open_store();
    pthread_t th[WRITERS];
    struct writer_ctx ctx[WRITERS];
    store_stats st0, st1;
    store_txn *tx = NULL;
    json_t *meta = NULL, *items = NULL;
    int t, failures = 0, more = 0;

    store_commit_stats(s, &st0);
    for (t = 0; t < WRITERS; t++) {
        ctx[t] = (struct writer_ctx){s, t, 0};
        pthread_create(&th[t], NULL, writer_thread, &ctx[t]);
    }
    for (t = 0; t < WRITERS; t++) {
        pthread_join(th[t], NULL);
        failures += ctx[t].failures;
    }
    ok(failures == 0, "every concurrent write commits");
    store_commit_stats(s, &st1);
    ok(st1.writes - st0.writes == WRITERS * WRITES_EACH,
       "the writer counted every write");
    tap_diag("%llu writes in %llu commits",
             (unsigned long long)(st1.writes - st0.writes),
             (unsigned long long)(st1.commits - st0.commits));
    ok(st1.commits - st0.commits < st1.writes - st0.writes,
       "concurrent writes are grouped: fewer commits (fsyncs) than writes");
    store_close(s);

    /* Reopen: durability, and no lost update on the shared counter. */
    s = open_store();
    store_read_begin(s, &tx);
    store_get(tx, STORE_META, "counter", &meta);
    ok(json_integer_value(json_object_get(meta, "n")) == WRITERS * WRITES_EACH,
       "the shared counter saw every write exactly once, after reopen");
    store_list(tx, STORE_CERTS, "w-", NULL, 1000, &items, &more);
    ok(json_array_size(items) == WRITERS * WRITES_EACH,
       "every record written is there after reopen");
    json_decref(items);
    json_decref(meta);
    store_read_end(tx);
    store_close(s);
}

/* A flush the test holds back, then lets fail or succeed. */
struct held_flush {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int entered;  /* flushes that reached the hook */
    int release;  /* 0: hold; otherwise the errno to return (-1: ok) */
};

static int held_flush_hook(void *arg)
{
    struct held_flush *h = arg;
    int rc;

    pthread_mutex_lock(&h->lock);
    h->entered++;
    pthread_cond_broadcast(&h->cond);
    while (h->release == 0)
        pthread_cond_wait(&h->cond, &h->lock);
    rc = h->release < 0 ? 0 : h->release;
    pthread_mutex_unlock(&h->lock);
    return rc;
}

struct bg_write {
    store *s;
    struct put_arg p;
    ad_err result;
    int returned;
    pthread_mutex_t *lock;
};

static void *bg_write_main(void *arg)
{
    struct bg_write *w = arg;
    ad_err e = store_write(w->s, put_write, &w->p);

    pthread_mutex_lock(w->lock);
    w->result = e;
    w->returned = 1;
    pthread_mutex_unlock(w->lock);
    return NULL;
}

static int bg_returned(struct bg_write *w)
{
    int r;

    pthread_mutex_lock(w->lock);
    r = w->returned;
    pthread_mutex_unlock(w->lock);
    return r;
}

/* Waits up to ~2 s for the hook to be entered n times. */
static int wait_entered(struct held_flush *h, int n)
{
    int i, got = 0;

    for (i = 0; i < 400 && !got; i++) {
        pthread_mutex_lock(&h->lock);
        got = h->entered >= n;
        pthread_mutex_unlock(&h->lock);
        if (!got)
            usleep(5000);
    }
    return got;
}

static void hold_release(struct held_flush *h, int rc)
{
    pthread_mutex_lock(&h->lock);
    h->release = rc;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void test_store_write_returns_only_after_the_flush_covering_it(void)
{
    store *s = open_store();
    struct held_flush h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                           0, 0};
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    json_t *v = json_pack("{s:s}", "id", "flush-ok"), *got = NULL;
    struct bg_write w = {s, {"flush-ok", v, 0, 0}, AD_EINTERNAL, 0, &lock};
    store_txn *tx = NULL;
    pthread_t th;

    store_test_sync_hook(s, held_flush_hook, &h);
    pthread_create(&th, NULL, bg_write_main, &w);
    ok(wait_entered(&h, 1), "the flusher starts a flush after the commit");
    usleep(50000);
    ok(!bg_returned(&w),
       "store_write has not returned while the flush that makes its "
       "commit durable is still running: nothing is acknowledged early");
    store_read_begin(s, &tx);
    ok(store_get(tx, STORE_DEVICES, "flush-ok", &got) == AD_OK,
       "the commit itself is done (readers see it) before it is durable");
    json_decref(got);
    store_read_end(tx);
    hold_release(&h, -1);
    pthread_join(th, NULL);
    ok(w.result == AD_OK, "the write is acknowledged once the flush succeeds");
    store_test_sync_hook(s, NULL, NULL);
    store_close(s);
    json_decref(v);
}

static void test_store_failed_flush_fails_its_waiters_and_later_writes(void)
{
    store *s = open_store();
    struct held_flush h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                           0, 0};
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    json_t *v = json_pack("{s:s}", "id", "flush-eio");
    struct bg_write w = {s, {"flush-eio", v, 0, 0}, AD_EINTERNAL, 0, &lock};
    struct put_arg later = {"flush-later", v, 0, 0};
    pthread_t th;

    store_test_sync_hook(s, held_flush_hook, &h);
    pthread_create(&th, NULL, bg_write_main, &w);
    ok(wait_entered(&h, 1), "the flusher starts a flush after the commit");
    hold_release(&h, 5 /* EIO */);
    pthread_join(th, NULL);
    ok(w.result == AD_ESTORE,
       "a write whose flush failed is not acknowledged: AD_ESTORE");
    ok(store_write(s, put_write, &later) == AD_ESTORE,
       "after a failed flush no later write is acknowledged either (the "
       "kernel may have dropped pages a later flush would not write)");
    store_test_sync_hook(s, NULL, NULL);
    store_close(s);

    /* A reopened store works again from what is on disk. */
    s = open_store();
    later.key = "flush-after-reopen";
    ok(store_write(s, put_write, &later) == AD_OK,
       "a reopened store accepts writes again");
    store_close(s);
    json_decref(v);
}

static void test_store_close_accepts_null(void)
{
    store_close(NULL);
    store_read_end(NULL);
    ok(1, "closing NULL handles is a no-op");
}

/* ---- the change feed --------------------------------------------------- */

/* A watcher that records what it is told. */
struct seen {
    pthread_mutex_t lock;
    char keys[64][64];
    int tables[64];
    int n;
    uint64_t event_id;
    int unknown;
};

static void seen_watch(void *arg, const store_change *c)
{
    struct seen *w = arg;

    pthread_mutex_lock(&w->lock);
    if (c->kind == STORE_CHANGE_RECORD && w->n < 64) {
        snprintf(w->keys[w->n], sizeof(w->keys[0]), "%s", c->key);
        w->tables[w->n++] = (int)c->table;
    } else if (c->kind == STORE_CHANGE_EVENTS) {
        if (c->event_id > w->event_id)
            w->event_id = c->event_id;
    } else if (c->kind == STORE_CHANGE_UNKNOWN) {
        w->unknown++;
    }
    pthread_mutex_unlock(&w->lock);
}

static int seen_has(struct seen *w, store_table t, const char *key)
{
    int i, found = 0;

    pthread_mutex_lock(&w->lock);
    for (i = 0; i < w->n; i++)
        if (w->tables[i] == (int)t && strcmp(w->keys[i], key) == 0)
            found++;
    pthread_mutex_unlock(&w->lock);
    return found;
}

static uint64_t seen_event(struct seen *w)
{
    uint64_t id;

    pthread_mutex_lock(&w->lock);
    id = w->event_id;
    pthread_mutex_unlock(&w->lock);
    return id;
}

static ad_err feed_write(store_txn *tx, void *arg)
{
    json_t *v = json_pack("{s:s}", "id", "cf-1"), *d;
    ad_err e;

    (void)arg;
    e = store_put(tx, STORE_DEVICES, "cf-1", v, 0);
    if (e == AD_OK) /* twice: reported once */
        e = store_put(tx, STORE_DEVICES, "cf-1", v, 0);
    if (e == AD_OK)
        e = store_put(tx, STORE_GROUPS, "cf-g", v, 0);
    if (e == AD_OK)
        e = store_del(tx, STORE_GROUPS, "cf-g");
    json_decref(v);
    d = json_pack("{s:s}", "device", "cf-1");
    if (e == AD_OK)
        e = store_event_append(tx, "device.created", d);
    if (e == AD_OK)
        e = store_event_append(tx, "device.updated", d);
    json_decref(d);
    return e;
}

static ad_err failing_feed_write(store_txn *tx, void *arg)
{
    json_t *v = json_pack("{s:s}", "id", "cf-failed");

    (void)arg;
    store_put(tx, STORE_DEVICES, "cf-failed", v, 0);
    json_decref(v);
    return AD_ECONFLICT;
}

/* Newest event id in the log, 0 if none. */
static uint64_t last_event_id(store *s)
{
    store_txn *tx = NULL;
    json_t *items = NULL;
    uint64_t last = 0, after = 0;
    int more = 1;

    if (store_read_begin(s, &tx) != AD_OK)
        return 0;
    while (more && store_event_list(tx, after, 1000, &items, &more) == AD_OK) {
        json_t *l = json_array_get(items, json_array_size(items) - 1);

        if (l)
            last = after = (uint64_t)json_integer_value(json_object_get(l, "id"));
        json_decref(items);
        items = NULL;
        if (l == NULL)
            break;
    }
    store_read_end(tx);
    return last;
}

static void test_store_watcher_hears_each_change_before_write_returns(void)
{
    store *s = open_store();
    struct seen w;
    uint64_t last;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);
    store_watch(s, seen_watch, &w);
    ok(store_ready(s), "an open store is ready");
    ok(store_write(s, feed_write, NULL) == AD_OK, "the write commits");
    ok(seen_has(&w, STORE_DEVICES, "cf-1") == 1,
       "the watcher heard the put of cf-1 once, before store_write returned");
    ok(seen_has(&w, STORE_GROUPS, "cf-g") == 1,
       "a put then delete in one batch is reported (as one change)");
    last = last_event_id(s);
    ok(last > 0 && seen_event(&w) == last,
       "the watcher heard STORE_CHANGE_EVENTS with the newest event id "
       "(%llu, log says %llu)",
       (unsigned long long)seen_event(&w), (unsigned long long)last);
    ok(store_write(s, failing_feed_write, NULL) == AD_ECONFLICT &&
           seen_has(&w, STORE_DEVICES, "cf-failed") == 0,
       "a failed write reports nothing: nothing of it was committed");
    store_watch(s, NULL, NULL);
    store_close(s);
    pthread_mutex_destroy(&w.lock);
}

/* A revocation's shape: the CRL number advanced before and after the
 * CRL entry is put (two revocations in one batch). */
static ad_err ordered_write(store_txn *tx, void *arg)
{
    json_t *v = json_pack("{s:i}", "number", 1);
    ad_err e;

    (void)arg;
    e = store_put(tx, STORE_META, "crl", v, 0);
    if (e == AD_OK)
        e = store_put(tx, STORE_REVOKED_CERTS, "0abc", v, 0);
    if (e == AD_OK)
        e = store_put(tx, STORE_META, "crl", v, 0);
    json_decref(v);
    return e;
}

/* Where (table, key) was heard, -1 if not. */
static int seen_place(struct seen *w, store_table t, const char *key)
{
    int i, at = -1;

    pthread_mutex_lock(&w->lock);
    for (i = 0; i < w->n && at < 0; i++)
        if (w->tables[i] == (int)t && strcmp(w->keys[i], key) == 0)
            at = i;
    pthread_mutex_unlock(&w->lock);
    return at;
}

/* Sorting a batch's changes by table (the first feed did) told a CRL
 * watcher of the new number before the entry it numbers. */
static void test_store_changes_are_heard_in_the_order_of_their_last_change(void)
{
    store *s = open_store();
    struct seen w;
    int entry, number;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);
    store_watch(s, seen_watch, &w);
    ok(store_write(s, ordered_write, NULL) == AD_OK, "the write commits");
    entry = seen_place(&w, STORE_REVOKED_CERTS, "0abc");
    number = seen_place(&w, STORE_META, "crl");
    ok(entry >= 0 && number > entry && seen_has(&w, STORE_META, "crl") == 1,
       "the CRL entry is heard before the number's last change, once each "
       "(entry at %d, number at %d)", entry, number);
    store_watch(s, NULL, NULL);
    store_close(s);
    pthread_mutex_destroy(&w.lock);
}

static store *open_node(void);
static int wait_for(int (*cond)(struct seen *), struct seen *w, int ms);

static int heard_crl(struct seen *w)
{
    return seen_has(w, STORE_META, "crl") > 0;
}

static void test_store_pg_second_node_hears_changes_in_their_order(void)
{
    store *a = open_node(), *b = open_node();
    struct seen w;
    int entry, number;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);
    store_watch(b, seen_watch, &w);
    ok(a && b && store_write(a, ordered_write, NULL) == AD_OK,
       "node A writes");
    ok(wait_for(heard_crl, &w, 1000), "node B hears it");
    entry = seen_place(&w, STORE_REVOKED_CERTS, "0abc");
    number = seen_place(&w, STORE_META, "crl");
    ok(entry >= 0 && number > entry,
       "in the order of the last changes (entry at %d, number at %d)", entry,
       number);
    store_close(a);
    store_close(b);
    pthread_mutex_destroy(&w.lock);
}

/* A watcher that takes its time, and says when it is in and done. */
struct slow_watch {
    atomic_int entered, finished;
};

static void slow_watch(void *arg, const store_change *c)
{
    struct slow_watch *w = arg;

    (void)c;
    atomic_store(&w->entered, 1);
    usleep(200000);
    atomic_store(&w->finished, 1);
}

struct write_job {
    store *s;
    ad_err result;
};

static void *write_job_main(void *arg)
{
    struct write_job *j = arg;

    j->result = store_write(j->s, feed_write, NULL);
    return NULL;
}

/* The daemon removes its watcher before it closes the caches the watcher
 * uses: a call still running then would use freed memory. */
static void test_store_removing_the_watcher_waits_for_a_running_call(void)
{
    store *s = open_store();
    struct slow_watch w;
    struct write_job j = {s, AD_EINTERNAL};
    pthread_t t;
    int i;

    atomic_init(&w.entered, 0);
    atomic_init(&w.finished, 0);
    store_watch(s, slow_watch, &w);
    pthread_create(&t, NULL, write_job_main, &j);
    for (i = 0; i < 500 && !atomic_load(&w.entered); i++)
        usleep(2000);
    ok(atomic_load(&w.entered), "the watcher is running a call");
    store_watch(s, NULL, NULL);
    ok(atomic_load(&w.finished),
       "store_watch(NULL) returned only after that call finished");
    pthread_join(t, NULL);
    ok(j.result == AD_OK, "the write itself succeeded");
    store_close(s);
}

/* ---- the event log ------------------------------------------------------ */

static ad_err events_write(store_txn *tx, void *arg)
{
    const char *type = arg;
    json_t *d = json_pack("{s:s}", "t", type);
    ad_err e = store_event_append(tx, type, d);

    json_decref(d);
    return e;
}

static void test_store_event_log_keeps_order_and_ids(void)
{
    store *s = open_store();
    store_txn *tx = NULL;
    json_t *items = NULL;
    uint64_t before = last_event_id(s), id0, id1, id2;
    int more = 0;

    ok(store_write(s, events_write, "a.one") == AD_OK &&
           store_write(s, events_write, "a.two") == AD_OK &&
           store_write(s, events_write, "a.three") == AD_OK,
       "three events commit");
    store_read_begin(s, &tx);
    ok(store_event_list(tx, before, 2, &items, &more) == AD_OK &&
           json_array_size(items) == 2 && more,
       "a page of two says more follow");
    id0 = (uint64_t)json_integer_value(json_object_get(json_array_get(items, 0), "id"));
    id1 = (uint64_t)json_integer_value(json_object_get(json_array_get(items, 1), "id"));
    ok(id0 == before + 1 && id1 == before + 2,
       "ids continue the log one by one (%llu, %llu after %llu)",
       (unsigned long long)id0, (unsigned long long)id1,
       (unsigned long long)before);
    ok(strcmp(json_string_value(json_object_get(json_array_get(items, 0),
                                                "type")),
              "a.one") == 0 &&
           json_object_get(json_array_get(items, 0), "time") != NULL &&
           strcmp(json_string_value(json_object_get(
                      json_object_get(json_array_get(items, 0), "data"), "t")),
                  "a.one") == 0,
       "an event carries its type, time and data");
    json_decref(items);
    ok(store_event_list(tx, id1, 10, &items, &more) == AD_OK &&
           json_array_size(items) == 1 && !more,
       "listing after the last id seen gives exactly the rest");
    id2 = (uint64_t)json_integer_value(json_object_get(json_array_get(items, 0), "id"));
    ok(id2 == id1 + 1, "the third event follows the second");
    json_decref(items);
    store_read_end(tx);
    store_close(s);
}

/* ---- store_copy ------------------------------------------------------------ */

static ad_err copy_fill(store_txn *tx, void *arg)
{
    ad_err e = AD_OK;
    int i;

    (void)arg;
    /* Text with spacing jansson would not produce: copied as is. */
    e = store_put_text(tx, STORE_META, "raw", "{ \"a\" : 1 }", 11, 0);
    for (i = 0; i < 700 && e == AD_OK; i++) {
        char key[32];
        json_t *v;

        snprintf(key, sizeof(key), "copy-%04d", i);
        v = json_pack("{s:s}", "id", key);
        e = store_put(tx, STORE_CERTS, key, v, 0);
        json_decref(v);
        if (e == AD_OK)
            e = store_index_add(tx, STORE_IX_CERTS_BY_FPR,
                                i % 2 ? "fa" : "fb", key);
    }
    if (e == AD_OK)
        e = store_audit(tx, "copy", "copy.fill", "x", NULL);
    if (e == AD_OK)
        e = store_event_append(tx, "copy.fill", NULL);
    return e;
}

/* Every entry of every table, index and log of s, counted by reading. */
static void count_all(store *s, store_copy_counts *c)
{
    store_txn *tx = NULL;
    json_t *items = NULL;
    int i, more;

    memset(c, 0, sizeof(*c));
    store_read_begin(s, &tx);
    for (i = 0; i < STORE_TABLE__COUNT; i++) {
        store_list(tx, (store_table)i, "", NULL, 100000, &items, &more);
        c->records[i] = json_array_size(items);
        json_decref(items);
    }
    for (i = 0; i < STORE_IX__COUNT; i++) {
        const char *keys[] = {"fa", "fb", "e1", "w0", "serial-1", "dev-1", NULL};
        int k;

        for (k = 0; keys[k]; k++) {
            store_index_list(tx, (store_index)i, keys[k], NULL, 100000, &items,
                             &more);
            c->index_entries[i] += json_array_size(items);
            json_decref(items);
        }
    }
    store_audit_list(tx, 0, 100000, &items, &more);
    c->audit = json_array_size(items);
    json_decref(items);
    store_event_list(tx, 0, 100000, &items, &more);
    c->events = json_array_size(items);
    json_decref(items);
    store_read_end(tx);
}

static void test_store_copy_moves_everything_and_refuses_a_used_target(void)
{
    char cdir[300], curl[512], err[256] = "", cmd[1024];
    store *src = NULL, *dst = NULL;
    store_copy_counts got, want, have;
    store_txn *tx = NULL;
    const char *text = NULL;
    size_t len = 0;
    int i, same = 1;

    /* The source is always LMDB (what `authd migrate` reads). */
    snprintf(cdir, sizeof(cdir), "%s-copysrc", dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", cdir);
    if (system(cmd) != 0 || store_open(cdir, 64, &src, err, sizeof(err)) != AD_OK) {
        ok(0, "the copy source opens (%s)", err);
        return;
    }
    ok(store_write(src, copy_fill, NULL) == AD_OK, "the source is filled");
    if (pg_url[0]) {
        if (pgfx_fresh("copy", curl, sizeof(curl)) != 0 ||
            store_open_url(curl, NULL, &dst, err, sizeof(err)) != AD_OK) {
            ok(0, "a fresh PostgreSQL destination opens (%s)", err);
            store_close(src);
            return;
        }
    } else {
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s-copydst'", dir);
        snprintf(curl, sizeof(curl), "lmdb:%s-copydst", dir);
        if (system(cmd) != 0 ||
            store_open_url(curl, NULL, &dst, err, sizeof(err)) != AD_OK) {
            ok(0, "a fresh LMDB destination opens (%s)", err);
            store_close(src);
            return;
        }
    }
    ok(store_copy(src, dst, &got, err, sizeof(err)) == AD_OK,
       "the copy succeeds (%s)", err);
    count_all(src, &want);
    count_all(dst, &have);
    for (i = 0; i < STORE_TABLE__COUNT; i++)
        same = same && got.records[i] == want.records[i] &&
               have.records[i] == want.records[i];
    for (i = 0; i < STORE_IX__COUNT; i++)
        same = same && got.index_entries[i] == want.index_entries[i] &&
               have.index_entries[i] == want.index_entries[i];
    ok(same && got.records[STORE_CERTS] == 700 &&
           got.index_entries[STORE_IX_CERTS_BY_FPR] == 700,
       "the counts match the source, table by table and index by index "
       "(%llu certs, %llu fpr entries)",
       (unsigned long long)got.records[STORE_CERTS],
       (unsigned long long)got.index_entries[STORE_IX_CERTS_BY_FPR]);
    ok(got.audit == 1 && have.audit == 1 && got.events == 1 && have.events == 1,
       "the audit and the event log are copied");
    store_read_begin(dst, &tx);
    ok(store_get_raw(tx, STORE_META, "raw", &text, &len) == AD_OK &&
           len == 11 && memcmp(text, "{ \"a\" : 1 }", 11) == 0,
       "a record's stored text is copied byte for byte");
    store_read_end(tx);
    ok(store_write(dst, events_write, "after.copy") == AD_OK &&
           last_event_id(dst) == last_event_id(src) + 1,
       "the destination's event counter continues after the copied ids");
    ok(store_copy(src, dst, &got, err, sizeof(err)) == AD_ECONFLICT,
       "a second copy into a store holding certificates is refused");
    store_close(dst);
    store_close(src);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s-copydst'", cdir, dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", cdir);
}

/* ---- throughput ------------------------------------------------------------ */

enum { TP_THREADS = 32, TP_EACH = 40 };

static ad_err tp_write(store_txn *tx, void *arg)
{
    const char *key = arg;
    json_t *v = json_pack("{s:s}", "id", key);
    ad_err e = store_put(tx, STORE_CERTS, key, v, 0);

    json_decref(v);
    if (e == AD_OK)
        e = store_audit(tx, "tp", "tp.write", key, NULL);
    return e;
}

struct tp_ctx {
    store *s;
    int thread, failures;
};

static void *tp_thread(void *arg)
{
    struct tp_ctx *c = arg;
    int i;

    for (i = 0; i < TP_EACH; i++) {
        char key[32];

        snprintf(key, sizeof(key), "tp-%02d-%03d", c->thread, i);
        if (store_write(c->s, tp_write, key) != AD_OK)
            c->failures++;
    }
    return NULL;
}

static void test_store_32_concurrent_writers_throughput(void)
{
    store *s = open_store();
    pthread_t th[TP_THREADS];
    struct tp_ctx c[TP_THREADS];
    uint64_t t0, t1;
    struct timespec ts;
    int i, failures = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    t0 = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    for (i = 0; i < TP_THREADS; i++) {
        c[i] = (struct tp_ctx){s, i, 0};
        pthread_create(&th[i], NULL, tp_thread, &c[i]);
    }
    for (i = 0; i < TP_THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += c[i].failures;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t1 = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    ok(failures == 0, "every one of %d writes commits", TP_THREADS * TP_EACH);
    tap_diag("THROUGHPUT %s: %d writers, %.0f writes/s",
             pg_url[0] ? "postgresql" : "lmdb", TP_THREADS,
             (double)(TP_THREADS * TP_EACH) * 1e9 / (double)(t1 - t0));
    store_close(s);
}

/* Writes 200 records of about 1 KiB each, so the store must grow. */
static ad_err bulk_write(store_txn *tx, void *arg)
{
    char key[32], pad[1025];
    ad_err e = AD_OK;
    int i;

    (void)arg;
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (i = 0; i < 200 && e == AD_OK; i++) {
        json_t *v = json_pack("{s:s}", "pad", pad);

        snprintf(key, sizeof(key), "bulk-%03d", i);
        e = store_put(tx, STORE_DEVICES, key, v, 0);
        json_decref(v);
    }
    return e;
}

static void test_store_says_how_full_it_is(void)
{
    store *s = open_store();
    store_stats st0, st1;
    int waited = 0;

    store_commit_stats(s, &st0);
    ok(store_write(s, bulk_write, NULL) == AD_OK, "200 KiB of records commit");
    store_commit_stats(s, &st1);
    if (pg_url[0]) {
        /* pg_database_size comes with the listener's probe, about a
         * second after connecting, then every 10 s. */
        while (st1.used_bytes == 0 && waited++ < 50) {
            usleep(100000);
            store_commit_stats(s, &st1);
        }
        ok(st1.used_bytes > 1024 * 1024,
           "PostgreSQL: used is the database's size (%llu bytes)",
           (unsigned long long)st1.used_bytes);
        ok(st1.limit_bytes == 0, "PostgreSQL: authd sets no limit");
    } else {
        ok(st1.limit_bytes == 64u << 20, "LMDB: the limit is the map size");
        /* Strictly more: free pages of earlier tests may absorb part. */
        ok(st1.used_bytes > st0.used_bytes && st1.used_bytes >= 200 * 1024,
           "LMDB: used grows with what was written (%llu -> %llu)",
           (unsigned long long)st0.used_bytes,
           (unsigned long long)st1.used_bytes);
        ok(st1.used_bytes < st1.limit_bytes, "LMDB: used is within the map");
    }
    store_close(s);
}

/* The cases every backend must pass alike. */
static void run_common(void)
{
    TAP_RUN(test_store_put_then_get_returns_the_record);
    TAP_RUN(test_store_nooverwrite_refuses_an_existing_key);
    TAP_RUN(test_store_failed_write_leaves_nothing_behind);
    TAP_RUN(test_store_list_pages_by_prefix_and_cursor);
    TAP_RUN(test_store_index_keeps_sorted_unique_values);
    TAP_RUN(test_store_audit_is_numbered_in_order);
    TAP_RUN(test_store_audit_chain_holds_under_concurrent_writers);
    TAP_RUN(test_store_concurrent_writes_share_commits_and_lose_nothing);
    TAP_RUN(test_store_watcher_hears_each_change_before_write_returns);
    TAP_RUN(test_store_changes_are_heard_in_the_order_of_their_last_change);
    TAP_RUN(test_store_removing_the_watcher_waits_for_a_running_call);
    TAP_RUN(test_store_event_log_keeps_order_and_ids);
    TAP_RUN(test_store_copy_moves_everything_and_refuses_a_used_target);
    TAP_RUN(test_store_32_concurrent_writers_throughput);
    TAP_RUN(test_store_says_how_full_it_is);
    TAP_RUN(test_store_close_accepts_null);
}

/* ---- PostgreSQL only: two handles on one database are two nodes ------- */

static store *open_node(void)
{
    return open_store();
}

/* Waits up to ms for cond(w) to hold. */
static int wait_for(int (*cond)(struct seen *), struct seen *w, int ms)
{
    int i;

    for (i = 0; i < ms / 10; i++) {
        if (cond(w))
            return 1;
        usleep(10000);
    }
    return cond(w);
}

static int heard_cf1(struct seen *w)
{
    return seen_has(w, STORE_DEVICES, "cf-1") > 0 && w->event_id > 0;
}

static void test_store_pg_second_node_hears_the_first_within_a_second(void)
{
    store *a = open_node(), *b = open_node();
    struct seen w;
    int heard;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);
    store_watch(b, seen_watch, &w);
    ok(a && b, "two handles (nodes) open on one database");
    ok(store_write(a, feed_write, NULL) == AD_OK, "node A writes");
    heard = wait_for(heard_cf1, &w, 1000);
    ok(heard, "node B's watcher hears A's put within 1 s");
    ok(seen_event(&w) == last_event_id(a),
       "and the newest event id A appended (%llu)",
       (unsigned long long)seen_event(&w));
    ok(seen_has(&w, STORE_GROUPS, "cf-g") == 1,
       "each changed record once");
    store_close(a);
    store_close(b);
    pthread_mutex_destroy(&w.lock);
}

struct race {
    store *s;
    const char *key;
    ad_err result;
};

static ad_err race_write(store_txn *tx, void *arg)
{
    struct race *r = arg;
    json_t *v = json_pack("{s:s}", "id", r->key);
    ad_err e = store_put(tx, STORE_DEVICES, r->key, v, STORE_NOOVERWRITE);

    json_decref(v);
    return e;
}

static void *race_main(void *arg)
{
    struct race *r = arg;

    r->result = store_write(r->s, race_write, r);
    return NULL;
}

static void test_store_pg_nooverwrite_holds_across_nodes(void)
{
    store *a = open_node(), *b = open_node();
    int i, good = 0;

    for (i = 0; i < 20; i++) {
        char key[32];
        struct race ra, rb;
        pthread_t ta, tb;

        snprintf(key, sizeof(key), "race-%02d", i);
        ra = (struct race){a, key, AD_EINTERNAL};
        rb = (struct race){b, key, AD_EINTERNAL};
        pthread_create(&ta, NULL, race_main, &ra);
        pthread_create(&tb, NULL, race_main, &rb);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        if ((ra.result == AD_OK && rb.result == AD_EEXISTS) ||
            (rb.result == AD_OK && ra.result == AD_EEXISTS))
            good++;
    }
    ok(good == 20,
       "two nodes creating one key at once: exactly one wins, the other "
       "gets AD_EEXISTS (%d of 20 races)", good);
    store_close(a);
    store_close(b);
}

enum { RMW_THREADS = 4, RMW_EACH = 200 };

static ad_err rmw_write(store_txn *tx, void *arg)
{
    json_t *meta = NULL;
    ad_err e;

    (void)arg;
    if ((e = store_get(tx, STORE_META, "rmw", &meta)) != AD_OK)
        return e;
    json_object_set_new(meta, "n",
                        json_integer(json_integer_value(
                                         json_object_get(meta, "n")) + 1));
    e = store_put(tx, STORE_META, "rmw", meta, 0);
    json_decref(meta);
    return e;
}

static ad_err rmw_init(store_txn *tx, void *arg)
{
    json_t *v = json_pack("{s:i}", "n", 0);
    ad_err e = store_put(tx, STORE_META, "rmw", v, 0);

    (void)arg;
    json_decref(v);
    return e;
}

static void *rmw_main(void *arg)
{
    struct tp_ctx *c = arg;
    int i;

    for (i = 0; i < RMW_EACH; i++)
        if (store_write(c->s, rmw_write, NULL) != AD_OK)
            c->failures++;
    return NULL;
}

static void test_store_pg_read_modify_write_is_exact_across_nodes(void)
{
    store *nodes[2] = {open_node(), open_node()};
    pthread_t th[RMW_THREADS];
    struct tp_ctx c[RMW_THREADS];
    store_txn *tx = NULL;
    json_t *meta = NULL;
    int i, failures = 0;

    ok(store_write(nodes[0], rmw_init, NULL) == AD_OK, "the counter exists");
    for (i = 0; i < RMW_THREADS; i++) {
        c[i] = (struct tp_ctx){nodes[i % 2], i, 0};
        pthread_create(&th[i], NULL, rmw_main, &c[i]);
    }
    for (i = 0; i < RMW_THREADS; i++) {
        pthread_join(th[i], NULL);
        failures += c[i].failures;
    }
    store_read_begin(nodes[1], &tx);
    store_get(tx, STORE_META, "rmw", &meta);
    ok(failures == 0 &&
           json_integer_value(json_object_get(meta, "n")) ==
               RMW_THREADS * RMW_EACH,
       "%d increments through two nodes end exact: %lld (%d failed): reads "
       "in a write lock the row until commit",
       RMW_THREADS * RMW_EACH,
       (long long)json_integer_value(json_object_get(meta, "n")), failures);
    json_decref(meta);
    store_read_end(tx);
    store_close(nodes[0]);
    store_close(nodes[1]);
}

/* Two writes locking two rows in opposite orders: PostgreSQL breaks the
 * deadlock by failing one, whose batch is re-run. */
struct deadlock {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int locked;
    int runs;
};

struct dl_arg {
    store *s;
    struct deadlock *d;
    const char *first, *second;
    int my_runs;
    ad_err result;
};

static ad_err dl_write(store_txn *tx, void *arg)
{
    struct dl_arg *a = arg;
    struct deadlock *d = a->d;
    json_t *v = NULL;
    ad_err e;
    int first_run;

    pthread_mutex_lock(&d->lock);
    d->runs++;
    first_run = ++a->my_runs == 1;
    pthread_mutex_unlock(&d->lock);
    if ((e = store_get(tx, STORE_META, a->first, &v)) != AD_OK)
        return e;
    json_decref(v);
    if (first_run) {
        struct timespec until;

        /* Hold the first row until the other write holds its own. */
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3;
        pthread_mutex_lock(&d->lock);
        d->locked++;
        pthread_cond_broadcast(&d->cond);
        while (d->locked < 2 &&
               pthread_cond_timedwait(&d->cond, &d->lock, &until) == 0)
            ;
        pthread_mutex_unlock(&d->lock);
    }
    if ((e = store_get(tx, STORE_META, a->second, &v)) != AD_OK)
        return e;
    e = store_put(tx, STORE_META, a->second, v, 0);
    json_decref(v);
    return e;
}

static void *dl_main(void *arg)
{
    struct dl_arg *a = arg;

    a->result = store_write(a->s, dl_write, a);
    return NULL;
}

static ad_err dl_init(store_txn *tx, void *arg)
{
    json_t *v = json_pack("{s:i}", "n", 0);
    ad_err e = store_put(tx, STORE_META, "dl-a", v, 0);

    (void)arg;
    if (e == AD_OK)
        e = store_put(tx, STORE_META, "dl-b", v, 0);
    json_decref(v);
    return e;
}

static void test_store_pg_write_is_rerun_after_a_deadlock(void)
{
    store *a = open_node(), *b = open_node();
    struct deadlock d = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                         0, 0};
    struct dl_arg x = {a, &d, "dl-a", "dl-b", 0, AD_EINTERNAL};
    struct dl_arg y = {b, &d, "dl-b", "dl-a", 0, AD_EINTERNAL};
    pthread_t tx_, ty;

    ok(store_write(a, dl_init, NULL) == AD_OK, "two rows exist");
    pthread_create(&tx_, NULL, dl_main, &x);
    pthread_create(&ty, NULL, dl_main, &y);
    pthread_join(tx_, NULL);
    pthread_join(ty, NULL);
    ok(x.result == AD_OK && y.result == AD_OK,
       "both deadlocked writes end committed (%d, %d)", (int)x.result,
       (int)y.result);
    ok(d.runs == 3 && (x.my_runs == 2 || y.my_runs == 2),
       "the deadlock victim's write function ran again (%d runs)", d.runs);
    store_close(a);
    store_close(b);
}

/* Two writes that lock two rows in opposite orders, the second lock
 * taken by an upsert (answered only when the write function returns):
 * the deadlock found on it still re-runs the batch. */
static ad_err dlq_write(store_txn *tx, void *arg)
{
    struct dl_arg *a = arg;
    struct deadlock *d = a->d;
    json_t *v = NULL;
    struct timespec until;
    ad_err e;
    int first_run;

    pthread_mutex_lock(&d->lock);
    d->runs++;
    first_run = ++a->my_runs == 1;
    pthread_mutex_unlock(&d->lock);
    if ((e = store_get(tx, STORE_META, a->first, &v)) != AD_OK)
        return e;
    if (first_run) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3;
        pthread_mutex_lock(&d->lock);
        d->locked++;
        pthread_cond_broadcast(&d->cond);
        while (d->locked < 2 &&
               pthread_cond_timedwait(&d->cond, &d->lock, &until) == 0)
            ;
        pthread_mutex_unlock(&d->lock);
    }
    e = store_put(tx, STORE_META, a->second, v, 0);
    json_decref(v);
    return e;
}

static void *dlq_main(void *arg)
{
    struct dl_arg *a = arg;

    a->result = store_write(a->s, dlq_write, a);
    return NULL;
}

static void test_store_pg_deadlock_on_a_queued_write_reruns_the_batch(void)
{
    store *a = open_node(), *b = open_node();
    struct deadlock d = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                         0, 0};
    struct dl_arg x = {a, &d, "dl-a", "dl-b", 0, AD_EINTERNAL};
    struct dl_arg y = {b, &d, "dl-b", "dl-a", 0, AD_EINTERNAL};
    pthread_t tx_, ty;

    ok(store_write(a, dl_init, NULL) == AD_OK, "two rows exist");
    pthread_create(&tx_, NULL, dlq_main, &x);
    pthread_create(&ty, NULL, dlq_main, &y);
    pthread_join(tx_, NULL);
    pthread_join(ty, NULL);
    ok(x.result == AD_OK && y.result == AD_OK,
       "both writes deadlocked on their upserts end committed (%d, %d)",
       (int)x.result, (int)y.result);
    /* Both backends may find the cycle at once and both be re-run. */
    ok(d.runs >= 3 && (x.my_runs >= 2 || y.my_runs >= 2),
       "the victim's write function ran again (%d runs)", d.runs);
    store_close(a);
    store_close(b);
}

/* A write whose upsert the server refuses (text that is not UTF-8): the
 * put itself may return before the answer, but the write fails as a
 * whole, and only it. */
struct bad_arg {
    const char *key;
    int bad;
};

static ad_err bad_put_write(store_txn *tx, void *arg)
{
    struct bad_arg *b = arg;
    static const char bad_text[] = "{\"x\":\"\xff\xfe\"}";
    char good_text[64];
    ad_err e;

    snprintf(good_text, sizeof(good_text), "{\"id\":\"%s\"}", b->key);
    e = store_put_text(tx, STORE_DEVICES, b->key, good_text, strlen(good_text),
                       0);
    if (e == AD_OK && b->bad)
        e = store_put_text(tx, STORE_META, b->key, bad_text,
                           sizeof(bad_text) - 1, 0);
    if (e == AD_OK)
        e = store_index_add(tx, STORE_IX_CERTS_BY_DEVICE, b->key, "serial-q");
    return e;
}

struct bad_bg {
    store *s;
    struct bad_arg a;
    ad_err result;
};

static void *bad_bg_main(void *arg)
{
    struct bad_bg *w = arg;

    w->result = store_write(w->s, bad_put_write, &w->a);
    return NULL;
}

static int has_device(store *s, const char *key)
{
    store_txn *tx = NULL;
    json_t *got = NULL, *ix = NULL;
    int more = 0, n;

    if (store_read_begin(s, &tx) != AD_OK)
        return -1;
    n = store_get(tx, STORE_DEVICES, key, &got) == AD_OK;
    store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, key, NULL, 10, &ix, &more);
    n += (int)json_array_size(ix);
    store_read_end(tx);
    json_decref(got);
    json_decref(ix);
    return n;
}

static void test_store_pg_failed_queued_write_fails_only_its_write(void)
{
    store *s = open_store();
    struct held_flush h = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                           0, 0};
    struct bad_bg w0 = {s, {"q-first", 0}, AD_EINTERNAL};
    struct bad_bg w1 = {s, {"q-bad", 1}, AD_EINTERNAL};
    struct bad_bg w2 = {s, {"q-good", 0}, AD_EINTERNAL};
    struct bad_arg alone = {"q-alone", 1}, after = {"q-after", 0};
    pthread_t t0, t1, t2;

    ok(store_write(s, bad_put_write, &alone) == AD_ESTORE,
       "a write whose queued put fails returns AD_ESTORE");
    ok(has_device(s, "q-alone") == 0,
       "and leaves nothing behind, neither its other put nor its index");
    ok(store_write(s, bad_put_write, &after) == AD_OK &&
           has_device(s, "q-after") == 2,
       "the next write commits on the same connection");

    /* Hold a batch at its commit while two more writes queue behind it:
     * they form the next batch, the failing one first. */
    store_test_sync_hook(s, held_flush_hook, &h);
    pthread_create(&t0, NULL, bad_bg_main, &w0);
    ok(wait_entered(&h, 1), "the first batch reaches its commit");
    pthread_create(&t1, NULL, bad_bg_main, &w1);
    usleep(50000);
    pthread_create(&t2, NULL, bad_bg_main, &w2);
    usleep(50000);
    hold_release(&h, -1);
    pthread_join(t0, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    store_test_sync_hook(s, NULL, NULL);
    ok(w0.result == AD_OK && w2.result == AD_OK && w1.result == AD_ESTORE,
       "in one batch, only the write with the failed queued put fails "
       "(%d, %d, %d)", (int)w0.result, (int)w1.result, (int)w2.result);
    ok(has_device(s, "q-bad") == 0 && has_device(s, "q-good") == 2 &&
           has_device(s, "q-first") == 2,
       "its writes are rolled back, the others' committed");
    store_close(s);
}

/* ---- a database that goes away and comes back ---------------------------- */

static int pg_script(const char *args, char *out, size_t outlen)
{
    const char *script = getenv("AUTHD_PG_SCRIPT");
    char cmd[600];
    FILE *f;
    int rc;

    if (script == NULL)
        return -1;
    snprintf(cmd, sizeof(cmd), "'%s' %s", script, args);
    if ((f = popen(cmd, "r")) == NULL)
        return -1;
    if (out && fgets(out, (int)outlen, f) != NULL)
        out[strcspn(out, "\n")] = '\0';
    while (fgetc(f) != EOF)
        ;
    rc = pclose(f);
    return rc == 0 ? 0 : -1;
}

static int ready_is(store *s, int want, int ms)
{
    int i;

    for (i = 0; i < ms / 20; i++) {
        if (!!store_ready(s) == want)
            return 1;
        usleep(20000);
    }
    return !!store_ready(s) == want;
}

static int heard_unknown(struct seen *w)
{
    int u;

    pthread_mutex_lock(&w->lock);
    u = w->unknown;
    pthread_mutex_unlock(&w->lock);
    return u > 0;
}

static void test_store_pg_down_fails_writes_and_recovers(void)
{
    char pdir[64] = "/tmp/authd-pgdown-XXXXXX", args[200], url[300] = "";
    char err[256] = "";
    json_t *v = json_pack("{s:s}", "id", "down");
    struct put_arg p = {"down-1", v, 0, 0};
    struct seen w;
    store *s = NULL;
    uint64_t t0;
    ad_err e;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);
    if (getenv("AUTHD_PG_SCRIPT") == NULL || mkdtemp(pdir) == NULL ||
        chmod(pdir, 0755) != 0) { /* the server may run as postgres */
        tap_diag("AUTHD_PG_SCRIPT not set: the restart case is skipped");
        json_decref(v);
        return;
    }
    /* A server of its own: stopping the shared one would fail others. */
    snprintf(args, sizeof(args), "start %s/pg", pdir);
    if (pg_script(args, url, sizeof(url)) != 0 ||
        store_open_url(url, NULL, &s, err, sizeof(err)) != AD_OK) {
        ok(0, "a private PostgreSQL starts and the store opens (%s)", err);
        goto out;
    }
    store_watch(s, seen_watch, &w);
    ok(store_write(s, put_write, &p) == AD_OK && store_ready(s),
       "the store writes and is ready");
    snprintf(args, sizeof(args), "halt %s/pg", pdir);
    ok(pg_script(args, NULL, 0) == 0, "the server stops");
    p.key = "down-2";
    t0 = util_now_ns_for_test();
    e = store_write(s, put_write, &p);
    ok(e == AD_EUNAVAIL && util_now_ns_for_test() - t0 < 15000000000ULL,
       "a write while the database is down answers AD_EUNAVAIL (503), not a hang "
       "(%d)", (int)e);
    ok(ready_is(s, 0, 3000), "store_ready goes 0");
    snprintf(args, sizeof(args), "resume %s/pg", pdir);
    ok(pg_script(args, NULL, 0) == 0, "the server starts again");
    ok(ready_is(s, 1, 10000), "store_ready comes back to 1");
    ok(heard_unknown(&w),
       "the watcher was told changes may have been missed (UNKNOWN)");
    p.key = "down-3";
    ok(store_write(s, put_write, &p) == AD_OK, "writes work again");
out:
    store_close(s);
    snprintf(args, sizeof(args), "stop %s/pg", pdir);
    pg_script(args, NULL, 0);
    rmdir(pdir);
    json_decref(v);
    pthread_mutex_destroy(&w.lock);
}

static void test_store_pg_url_password_never_in_errors(void)
{
    char err[512] = "";
    store *s = NULL;

    ok(store_open_url("postgresql://authd:s3cr3t-pw@127.0.0.1:1/x?bogus=%zz",
                      NULL, &s, err, sizeof(err)) == AD_ESTORE &&
           s == NULL,
       "a bad URL fails to open");
    ok(strstr(err, "s3cr3t-pw") == NULL,
       "the error does not carry the password: %s", err);
    ok(store_open_url("postgresql://authd:s3cr3t-pw@127.0.0.1:1/x", NULL, &s,
                      err, sizeof(err)) == AD_ESTORE &&
           strstr(err, "s3cr3t-pw") == NULL,
       "nor does a refused connection's: %s", err);
}

static void test_store_pg_audit_chain_holds_across_nodes(void)
{
    store *nodes[2] = {open_node(), open_node()};

    audit_chain_under_writers(nodes, 2);
    store_close(nodes[0]);
    store_close(nodes[1]);
}

static void run_pg_only(void)
{
    TAP_RUN(test_store_pg_audit_chain_holds_across_nodes);
    TAP_RUN(test_store_pg_second_node_hears_changes_in_their_order);
    TAP_RUN(test_store_pg_second_node_hears_the_first_within_a_second);
    TAP_RUN(test_store_pg_nooverwrite_holds_across_nodes);
    TAP_RUN(test_store_pg_read_modify_write_is_exact_across_nodes);
    TAP_RUN(test_store_pg_write_is_rerun_after_a_deadlock);
    TAP_RUN(test_store_pg_deadlock_on_a_queued_write_reruns_the_batch);
    TAP_RUN(test_store_pg_failed_queued_write_fails_only_its_write);
    TAP_RUN(test_store_pg_url_password_never_in_errors);
    TAP_RUN(test_store_pg_down_fails_writes_and_recovers);
}

int main(void)
{
    char cmd[300];
    int rc;

    snprintf(dir, sizeof(dir), "/tmp/authd-test-store-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    tap_diag("backend: lmdb");
    run_common();
    TAP_RUN(test_store_write_returns_only_after_the_flush_covering_it);
    TAP_RUN(test_store_failed_flush_fails_its_waiters_and_later_writes);
    if (pgfx_fresh("store", pg_url, sizeof(pg_url)) == 0) {
        tap_diag("backend: postgresql");
        run_common();
        run_pg_only();
        pg_url[0] = '\0';
    } else {
        tap_diag("AUTHD_TEST_PG_URL not set: PostgreSQL cases skipped");
    }
    pgfx_drop_all();
    rc = tap_done();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
    return rc;
}
