/* Unit tests of the LMDB store: records, indexes, pages, the audit log,
 * and the group-commit writer (atomic writes, durability across reopen,
 * many concurrent writes sharing commits). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../authd/store.h"
#include "tap.h"

static char dir[256];

static store *open_store(void)
{
    store *s = NULL;
    char err[256] = "";

    if (store_open(dir, 64, &s, err, sizeof(err)) != AD_OK)
        tap_diag("store_open: %s", err);
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

int main(void)
{
    char cmd[300];
    int rc;

    snprintf(dir, sizeof(dir), "/tmp/authd-test-store-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    TAP_RUN(test_store_put_then_get_returns_the_record);
    TAP_RUN(test_store_nooverwrite_refuses_an_existing_key);
    TAP_RUN(test_store_failed_write_leaves_nothing_behind);
    TAP_RUN(test_store_list_pages_by_prefix_and_cursor);
    TAP_RUN(test_store_index_keeps_sorted_unique_values);
    TAP_RUN(test_store_audit_is_numbered_in_order);
    TAP_RUN(test_store_concurrent_writes_share_commits_and_lose_nothing);
    TAP_RUN(test_store_write_returns_only_after_the_flush_covering_it);
    TAP_RUN(test_store_failed_flush_fails_its_waiters_and_later_writes);
    TAP_RUN(test_store_close_accepts_null);
    rc = tap_done();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
    return rc;
}
