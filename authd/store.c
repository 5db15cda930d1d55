/* LMDB behind store.h: named databases for records and indexes, read
 * transactions on demand, and one writer thread doing group commit. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>

#include "store.h"
#include "util.h"

/* A JSON record may not exceed this; inputs are bounded far below it. */
#define STORE_RECORD_MAX (256 * 1024)
/* Writes grouped into one transaction at most; bounds commit latency. */
#define STORE_BATCH_MAX 512
#define STORE_READ_POOLS 8
#define STORE_READ_POOL_DEPTH 16

static const char *const table_names[STORE_TABLE__COUNT] = {
    "devices", "certs", "enrollments", "apikeys", "meta", "policies", "groups",
    "revoked_jtis", "device_secrets", "revoked_certs",
};
static const char *const index_names[STORE_IX__COUNT] = {
    "ix_certs_by_device", "ix_certs_by_enrollment", "ix_certs_by_fpr",
    "ix_enrollment_tokens", "ix_apikey_hashes",
};

/* One queued write; lives on the caller's stack until it is answered. */
struct pending {
    store_write_fn fn;
    void *arg;
    ad_err result;
    int done;
    uint64_t batch; /* the commit that carried it; durable at sync */
    pthread_cond_t answered; /* only this caller waits on it */
    struct pending *next;
};

struct store {
    MDB_env *env;
    MDB_dbi tables[STORE_TABLE__COUNT];
    MDB_dbi indexes[STORE_IX__COUNT];
    MDB_dbi audit;

    pthread_mutex_t lock;
    pthread_cond_t queued;  /* the writer waits here for work */
    pthread_cond_t synced;  /* the flusher waits here for commits */
    struct pending *head, *tail;       /* waiting for the writer */
    struct pending *unsynced, *unsynced_tail; /* committed, not durable */
    uint64_t committed; /* batches whose commit has returned */
    uint64_t durable;   /* batches covered by a completed flush */
    ad_err sync_failed; /* sticky: after a failed flush nothing is acked */
    int stopping, flusher_stop;
    pthread_t writer, flusher;
    int writer_started, flusher_started;
    int (*sync_hook)(void *);
    void *sync_hook_arg;

    atomic_uint_fast64_t commits, writes, syncs;
    atomic_uint_fast64_t apply_ns, commit_ns, sync_ns; /* for /metrics */

    /* Read transactions kept reset for reuse: renewing one costs no trip
     * through LMDB's reader table and its process-shared lock, which
     * every check that misses a cache would otherwise take. A pool per
     * few threads, so threads rarely share one lock. */
    struct read_pool {
        pthread_mutex_t lock;
        size_t n;
        store_txn *txns[STORE_READ_POOL_DEPTH];
    } pools[STORE_READ_POOLS];
};

struct store_txn {
    store *s;
    MDB_txn *txn;
    int writable;
};

static void read_pools_close(store *s);

static atomic_uint next_pool;
static _Thread_local unsigned my_pool = UINT_MAX;

static struct read_pool *pool_of(store *s)
{
    if (my_pool == UINT_MAX)
        my_pool = atomic_fetch_add(&next_pool, 1) % STORE_READ_POOLS;
    return &s->pools[my_pool];
}

static ad_err map_mdb(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return AD_OK;
    case MDB_NOTFOUND:
        return AD_ENOTFOUND;
    case MDB_KEYEXIST:
        return AD_EEXISTS;
    case ENOMEM:
        return AD_ENOMEM;
    default:
        return AD_ESTORE;
    }
}

static MDB_val val_of_str(const char *s)
{
    MDB_val v = {strlen(s), (void *)s};
    return v;
}

/* LMDB rejects empty keys; every key we store is non-empty and bounded. */
static int key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    return n > 0 && n <= 400;
}

/* ---- durability -------------------------------------------------------
 *
 * The environment runs with MDB_NOMETASYNC: a commit writes its pages,
 * flushes them (one fdatasync) and only then writes its meta page, without
 * flushing that. The order keeps the database intact whatever reaches the
 * disk; the commit becomes durable at the next flush of the file, made by
 * the next commit or by the flusher thread (mdb_env_sync). A batch is
 * answered only once such a flush, started after its commit returned, has
 * completed. So the writer never waits for a second flush: while the
 * flusher makes batch k durable, batch k+1 is already being applied, and
 * one flush covers every commit before it.
 *
 * MDB_NOSYNC with only the flusher's sync would save the data flush as
 * well, but then a meta page may reach the disk before the pages it
 * points to, and a power cut could corrupt the database, not merely lose
 * unanswered writes. */

/* Answers every unsynced write whose batch is now durable (or fails them
 * all after a failed flush). Called with the lock held. */
static void answer_durable(store *s)
{
    struct pending *p;

    while ((p = s->unsynced) != NULL &&
           (p->batch <= s->durable || s->sync_failed != AD_OK)) {
        s->unsynced = p->next;
        if (s->unsynced == NULL)
            s->unsynced_tail = NULL;
        if (s->sync_failed != AD_OK && p->batch > s->durable)
            p->result = AD_ESTORE;
        /* Wake exactly this caller; p may be gone once we unlock. */
        p->done = 1;
        pthread_cond_signal(&p->answered);
    }
}

/* Marks batches up to upto durable (flush ok) or the store failed. Called
 * with the lock held. */
static void note_flush(store *s, uint64_t upto, int rc)
{
    if (rc != 0) {
        /* After a failed fsync the kernel may have dropped the dirty
         * pages and a later fsync may succeed without them: nothing
         * written from here on can be promised durable. */
        s->sync_failed = AD_ESTORE;
    } else if (upto > s->durable) {
        s->durable = upto;
    }
    answer_durable(s);
}

static int do_sync(store *s, int (*hook)(void *), void *hook_arg)
{
    int rc = 0;

    if (hook)
        rc = hook(hook_arg);
    if (rc == 0)
        rc = mdb_env_sync(s->env, 1);
    return rc;
}

/* The flusher: whenever commits are waiting for durability, one flush
 * for all of them. */
static void *flusher_main(void *arg)
{
    store *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        int (*hook)(void *);
        void *hook_arg;
        uint64_t upto, t0;
        int rc;

        while (s->durable >= s->committed && !s->flusher_stop &&
               s->sync_failed == AD_OK)
            pthread_cond_wait(&s->synced, &s->lock);
        if (s->flusher_stop && s->durable >= s->committed)
            break;
        if (s->sync_failed != AD_OK) {
            /* Nothing more to make durable: answer and wait to stop. */
            answer_durable(s);
            if (s->flusher_stop)
                break;
            pthread_cond_wait(&s->synced, &s->lock);
            continue;
        }
        /* Every commit counted in committed has written its meta page:
         * the flush that starts now covers all of them. */
        upto = s->committed;
        hook = s->sync_hook;
        hook_arg = s->sync_hook_arg;
        pthread_mutex_unlock(&s->lock);
        t0 = util_now_ns();
        rc = do_sync(s, hook, hook_arg);
        atomic_fetch_add(&s->syncs, 1);
        atomic_fetch_add(&s->sync_ns, util_now_ns() - t0);
        pthread_mutex_lock(&s->lock);
        note_flush(s, upto, rc);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static uint64_t last_txnid(MDB_env *env)
{
    MDB_envinfo info;

    return mdb_env_info(env, &info) == MDB_SUCCESS ? (uint64_t)info.me_last_txnid
                                                   : 0;
}

/* ---- the writer thread --------------------------------------------- */

static void *writer_main(void *arg)
{
    store *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct pending *batch, *p, *last;
        MDB_txn *parent = NULL;
        uint64_t t0, t1, id0, seq;
        int rc, n = 0, flushed;

        while (s->head == NULL && !s->stopping)
            pthread_cond_wait(&s->queued, &s->lock);
        if (s->head == NULL && s->stopping)
            break;
        /* Take up to STORE_BATCH_MAX writes; later ones wait a round. */
        batch = s->head;
        p = batch;
        for (n = 1; n < STORE_BATCH_MAX && p->next != NULL; n++)
            p = p->next;
        s->head = p->next;
        if (s->head == NULL)
            s->tail = NULL;
        p->next = NULL;
        last = p;
        seq = s->committed + 1;
        pthread_mutex_unlock(&s->lock);

        t0 = util_now_ns();
        id0 = last_txnid(s->env);
        rc = mdb_txn_begin(s->env, NULL, 0, &parent);
        for (p = batch; p != NULL; p = p->next) {
            MDB_txn *child = NULL;
            store_txn tx;

            p->batch = seq;
            if (rc != MDB_SUCCESS) {
                p->result = AD_ESTORE;
                continue;
            }
            if (mdb_txn_begin(s->env, parent, 0, &child) != MDB_SUCCESS) {
                p->result = AD_ESTORE;
                continue;
            }
            tx.s = s;
            tx.txn = child;
            tx.writable = 1;
            p->result = p->fn(&tx, p->arg);
            if (p->result == AD_OK) {
                if (mdb_txn_commit(child) != MDB_SUCCESS)
                    p->result = AD_ESTORE;
            } else {
                mdb_txn_abort(child);
            }
        }
        t1 = util_now_ns();
        if (rc == MDB_SUCCESS) {
            /* Writes the pages, flushes them, writes the meta page. */
            rc = mdb_txn_commit(parent);
            if (rc != MDB_SUCCESS)
                for (p = batch; p != NULL; p = p->next)
                    p->result = AD_ESTORE;
        }
        /* A commit that wrote something flushed the file after every
         * earlier meta page was written: earlier batches are durable.
         * (A commit with nothing to write does not touch the disk.) */
        flushed = rc == MDB_SUCCESS && last_txnid(s->env) != id0;
        atomic_fetch_add(&s->commits, 1);
        atomic_fetch_add(&s->writes, (uint_fast64_t)n);
        atomic_fetch_add(&s->apply_ns, t1 - t0);
        atomic_fetch_add(&s->commit_ns, util_now_ns() - t1);

        pthread_mutex_lock(&s->lock);
        s->committed = seq;
        if (s->unsynced_tail)
            s->unsynced_tail->next = batch;
        else
            s->unsynced = batch;
        s->unsynced_tail = last;
        if (rc == EIO)
            note_flush(s, 0, rc);
        else if (flushed)
            note_flush(s, seq - 1, 0);
        /* Even a failed or empty batch is answered only after a flush
         * covering what it may have read. */
        pthread_cond_signal(&s->synced);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

ad_err store_write(store *s, store_write_fn fn, void *arg)
{
    struct pending p;

    p.fn = fn;
    p.arg = arg;
    p.result = AD_OK;
    p.done = 0;
    p.batch = 0;
    p.next = NULL;
    pthread_cond_init(&p.answered, NULL);
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        pthread_cond_destroy(&p.answered);
        return AD_ENOTREADY;
    }
    if (s->sync_failed != AD_OK) {
        pthread_mutex_unlock(&s->lock);
        pthread_cond_destroy(&p.answered);
        return s->sync_failed;
    }
    if (s->tail)
        s->tail->next = &p;
    else
        s->head = &p;
    s->tail = &p;
    pthread_cond_signal(&s->queued);
    while (!p.done)
        pthread_cond_wait(&p.answered, &s->lock);
    pthread_mutex_unlock(&s->lock);
    pthread_cond_destroy(&p.answered);
    return p.result;
}

void store_test_sync_hook(store *s, int (*hook)(void *arg), void *arg)
{
    pthread_mutex_lock(&s->lock);
    s->sync_hook = hook;
    s->sync_hook_arg = arg;
    pthread_mutex_unlock(&s->lock);
}

/* ---- open / close ---------------------------------------------------- */

ad_err store_open(const char *dir, size_t map_mb, store **out, char *err,
                  size_t errlen)
{
    store *s = NULL;
    MDB_txn *txn = NULL;
    ad_err e = AD_ESTORE;
    int rc, i;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return AD_ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    for (i = 0; i < STORE_READ_POOLS; i++)
        pthread_mutex_init(&s->pools[i].lock, NULL);
    pthread_cond_init(&s->queued, NULL);
    pthread_cond_init(&s->synced, NULL);

    if ((rc = mdb_env_create(&s->env)) != MDB_SUCCESS)
        goto fail;
    mdb_env_set_maxdbs(s->env, 16);
    /* Thread-per-connection listeners may hold many readers at once. */
    mdb_env_set_maxreaders(s->env, 1024);
    mdb_env_set_mapsize(s->env, (size_t)(map_mb ? map_mb : 4096) << 20);
    /* MDB_NOTLS: read transactions are not tied to threads, so any
     * thread may end one. MDB_NOMETASYNC: the meta page is made durable
     * by the next flush, not by its own (see "durability" above); never
     * MDB_NOSYNC. */
    rc = mdb_env_open(s->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0600);
    if (rc != MDB_SUCCESS)
        goto fail;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != MDB_SUCCESS)
        goto fail;
    for (i = 0; i < STORE_TABLE__COUNT; i++)
        if ((rc = mdb_dbi_open(txn, table_names[i], MDB_CREATE,
                               &s->tables[i])) != MDB_SUCCESS)
            goto fail;
    for (i = 0; i < STORE_IX__COUNT; i++)
        if ((rc = mdb_dbi_open(txn, index_names[i], MDB_CREATE | MDB_DUPSORT,
                               &s->indexes[i])) != MDB_SUCCESS)
            goto fail;
    if ((rc = mdb_dbi_open(txn, "audit", MDB_CREATE, &s->audit)) !=
        MDB_SUCCESS)
        goto fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc == MDB_SUCCESS)
        rc = mdb_env_sync(s->env, 1);
    if (rc != MDB_SUCCESS)
        goto fail;
    if (pthread_create(&s->flusher, NULL, flusher_main, s) != 0) {
        rc = EAGAIN;
        goto fail;
    }
    s->flusher_started = 1;
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
        rc = EAGAIN;
        goto fail;
    }
    s->writer_started = 1;
    *out = s;
    return AD_OK;

fail:
    ad_errf(e, err, errlen, "lmdb: %s", mdb_strerror(rc));
    if (txn)
        mdb_txn_abort(txn);
    store_close(s);
    return e;
}

void store_close(store *s)
{
    if (s == NULL)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = 1;
        pthread_cond_signal(&s->queued);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->writer, NULL);
    }
    /* The writer is done: the flusher makes its last commits durable and
     * answers their callers before it stops. */
    if (s->flusher_started) {
        pthread_mutex_lock(&s->lock);
        s->flusher_stop = 1;
        pthread_cond_signal(&s->synced);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->flusher, NULL);
    }
    read_pools_close(s);
    if (s->env)
        mdb_env_close(s->env);
    pthread_cond_destroy(&s->synced);
    pthread_cond_destroy(&s->queued);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void store_commit_stats(store *s, store_stats *out)
{
    out->commits = atomic_load(&s->commits);
    out->writes = atomic_load(&s->writes);
    out->apply_ns = atomic_load(&s->apply_ns);
    out->commit_ns = atomic_load(&s->commit_ns);
    out->syncs = atomic_load(&s->syncs);
    out->sync_ns = atomic_load(&s->sync_ns);
}

/* ---- transactions ---------------------------------------------------- */

ad_err store_read_begin(store *s, store_txn **out)
{
    store_txn *tx;
    int rc;

    struct read_pool *pool = pool_of(s);

    *out = NULL;
    pthread_mutex_lock(&pool->lock);
    tx = pool->n > 0 ? pool->txns[--pool->n] : NULL;
    pthread_mutex_unlock(&pool->lock);
    if (tx != NULL) {
        if (mdb_txn_renew(tx->txn) == MDB_SUCCESS) {
            *out = tx;
            return AD_OK;
        }
        mdb_txn_abort(tx->txn);
        free(tx);
    }
    tx = calloc(1, sizeof(*tx));
    if (tx == NULL)
        return AD_ENOMEM;
    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &tx->txn);
    if (rc != MDB_SUCCESS) {
        free(tx);
        return map_mdb(rc);
    }
    tx->s = s;
    *out = tx;
    return AD_OK;
}

void store_read_end(store_txn *tx)
{
    struct read_pool *pool;

    if (tx == NULL)
        return;
    /* Reset, a transaction pins no snapshot: the writer may reuse every
     * page it read. */
    mdb_txn_reset(tx->txn);
    pool = pool_of(tx->s);
    pthread_mutex_lock(&pool->lock);
    if (pool->n < STORE_READ_POOL_DEPTH) {
        pool->txns[pool->n++] = tx;
        tx = NULL;
    }
    pthread_mutex_unlock(&pool->lock);
    if (tx != NULL) {
        mdb_txn_abort(tx->txn);
        free(tx);
    }
}

static void read_pools_close(store *s)
{
    size_t i, k;

    for (i = 0; i < STORE_READ_POOLS; i++) {
        for (k = 0; k < s->pools[i].n; k++) {
            mdb_txn_abort(s->pools[i].txns[k]->txn);
            free(s->pools[i].txns[k]);
        }
        s->pools[i].n = 0;
        pthread_mutex_destroy(&s->pools[i].lock);
    }
}

/* ---- records --------------------------------------------------------- */

static ad_err decode(const MDB_val *v, json_t **out)
{
    json_error_t jerr;

    *out = json_loadb(v->mv_data, v->mv_size, 0, &jerr);
    return *out ? AD_OK : AD_ESTORE;
}

ad_err store_get_raw(store_txn *tx, store_table t, const char *key,
                     const char **text, size_t *len)
{
    MDB_val k, v;
    int rc;

    *text = NULL;
    *len = 0;
    if (!key_ok(key))
        return AD_ENOTFOUND;
    k = val_of_str(key);
    rc = mdb_get(tx->txn, tx->s->tables[t], &k, &v);
    if (rc != MDB_SUCCESS)
        return map_mdb(rc);
    *text = v.mv_data;
    *len = v.mv_size;
    return AD_OK;
}

ad_err store_get(store_txn *tx, store_table t, const char *key, json_t **out)
{
    MDB_val v;
    const char *text;
    ad_err e;

    *out = NULL;
    if ((e = store_get_raw(tx, t, key, &text, &v.mv_size)) != AD_OK)
        return e;
    v.mv_data = (void *)text;
    return decode(&v, out);
}

ad_err store_put_text(store_txn *tx, store_table t, const char *key,
                      const char *text, size_t len, int flags)
{
    MDB_val k, v;

    if (!tx->writable)
        return AD_EINTERNAL;
    if (!key_ok(key))
        return AD_EFIELD;
    if (len > STORE_RECORD_MAX)
        return AD_ETOOBIG;
    k = val_of_str(key);
    v.mv_size = len;
    v.mv_data = (void *)text;
    return map_mdb(mdb_put(tx->txn, tx->s->tables[t], &k, &v,
                           (flags & STORE_NOOVERWRITE) ? MDB_NOOVERWRITE
                                                       : 0));
}

ad_err store_put(store_txn *tx, store_table t, const char *key,
                 const json_t *val, int flags)
{
    char *text;
    ad_err e;

    if (!tx->writable)
        return AD_EINTERNAL;
    text = json_dumps(val, JSON_COMPACT);
    if (text == NULL)
        return AD_ENOMEM;
    e = store_put_text(tx, t, key, text, strlen(text), flags);
    free(text);
    return e;
}

ad_err store_del(store_txn *tx, store_table t, const char *key)
{
    MDB_val k;

    if (!tx->writable)
        return AD_EINTERNAL;
    if (!key_ok(key))
        return AD_ENOTFOUND;
    k = val_of_str(key);
    return map_mdb(mdb_del(tx->txn, tx->s->tables[t], &k, NULL));
}

static int has_prefix(const MDB_val *k, const char *prefix, size_t plen)
{
    return k->mv_size >= plen && memcmp(k->mv_data, prefix, plen) == 0;
}

ad_err store_list(store_txn *tx, store_table t, const char *prefix,
                  const char *after, size_t limit, json_t **items, int *more)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    json_t *arr = NULL;
    size_t plen = prefix ? strlen(prefix) : 0;
    ad_err e = AD_OK;
    int rc;

    *items = NULL;
    *more = 0;
    arr = json_array();
    if (arr == NULL)
        return AD_ENOMEM;
    if ((rc = mdb_cursor_open(tx->txn, tx->s->tables[t], &cur)) != 0) {
        e = map_mdb(rc);
        goto out;
    }
    if (after && *after) {
        k = val_of_str(after);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        /* Skip the cursor key itself: pages start after it. */
        if (rc == 0 && k.mv_size == strlen(after) &&
            memcmp(k.mv_data, after, k.mv_size) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else if (plen) {
        k = val_of_str(prefix);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *rec;

        if (plen && !has_prefix(&k, prefix, plen)) {
            /* Keys are sorted: once past the prefix, nothing follows. */
            if (memcmp(k.mv_data, prefix,
                       k.mv_size < plen ? k.mv_size : plen) > 0)
                break;
            continue;
        }
        if (json_array_size(arr) >= limit) {
            *more = 1;
            break;
        }
        if ((e = decode(&v, &rec)) != AD_OK)
            goto out;
        json_array_append_new(arr, rec);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        e = map_mdb(rc);
out:
    if (cur)
        mdb_cursor_close(cur);
    if (e == AD_OK)
        *items = arr;
    else
        json_decref(arr);
    return e;
}

/* ---- indexes --------------------------------------------------------- */

ad_err store_index_add(store_txn *tx, store_index ix, const char *key,
                       const char *val)
{
    MDB_val k, v;
    int rc;

    if (!tx->writable)
        return AD_EINTERNAL;
    if (!key_ok(key) || !key_ok(val))
        return AD_EFIELD;
    k = val_of_str(key);
    v = val_of_str(val);
    rc = mdb_put(tx->txn, tx->s->indexes[ix], &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? AD_OK : map_mdb(rc);
}

ad_err store_index_del(store_txn *tx, store_index ix, const char *key,
                       const char *val)
{
    MDB_val k, v;
    int rc;

    if (!tx->writable)
        return AD_EINTERNAL;
    if (!key_ok(key))
        return AD_ENOTFOUND;
    k = val_of_str(key);
    if (val)
        v = val_of_str(val);
    rc = mdb_del(tx->txn, tx->s->indexes[ix], &k, val ? &v : NULL);
    return rc == MDB_NOTFOUND ? AD_OK : map_mdb(rc);
}

ad_err store_index_list(store_txn *tx, store_index ix, const char *key,
                        const char *after, size_t limit, json_t **values,
                        int *more)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    json_t *arr;
    ad_err e = AD_OK;
    int rc;

    *values = NULL;
    *more = 0;
    arr = json_array();
    if (arr == NULL)
        return AD_ENOMEM;
    if (!key_ok(key))
        goto out;
    if ((rc = mdb_cursor_open(tx->txn, tx->s->indexes[ix], &cur)) != 0) {
        e = map_mdb(rc);
        goto out;
    }
    k = val_of_str(key);
    if (after && *after) {
        v = val_of_str(after);
        rc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE);
        if (rc == 0 && v.mv_size == strlen(after) &&
            memcmp(v.mv_data, after, v.mv_size) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
        if (rc == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST_DUP);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (json_array_size(arr) >= limit) {
            *more = 1;
            break;
        }
        json_array_append_new(arr, json_stringn(v.mv_data, v.mv_size));
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        e = map_mdb(rc);
out:
    if (cur)
        mdb_cursor_close(cur);
    if (e == AD_OK)
        *values = arr;
    else
        json_decref(arr);
    return e;
}

ad_err store_index_first(store_txn *tx, store_index ix, const char *key,
                         char *out, size_t outlen)
{
    MDB_val k, v;
    int rc;

    if (outlen)
        out[0] = '\0';
    if (!key_ok(key))
        return AD_ENOTFOUND;
    k = val_of_str(key);
    rc = mdb_get(tx->txn, tx->s->indexes[ix], &k, &v);
    if (rc != MDB_SUCCESS)
        return map_mdb(rc);
    if (v.mv_size >= outlen)
        return AD_EINTERNAL;
    memcpy(out, v.mv_data, v.mv_size);
    out[v.mv_size] = '\0';
    return AD_OK;
}

/* ---- audit ----------------------------------------------------------- */

static void seq_key(uint64_t seq, unsigned char buf[8])
{
    int i;

    /* Big-endian so LMDB's byte order is numeric order. */
    for (i = 7; i >= 0; i--) {
        buf[i] = (unsigned char)(seq & 0xff);
        seq >>= 8;
    }
}

static uint64_t seq_of(const MDB_val *k)
{
    const unsigned char *p = k->mv_data;
    uint64_t seq = 0;
    size_t i;

    for (i = 0; i < 8 && i < k->mv_size; i++)
        seq = (seq << 8) | p[i];
    return seq;
}

ad_err store_audit(store_txn *tx, const char *actor, const char *action,
                   const char *target, const json_t *detail)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    unsigned char kb[8];
    uint64_t seq = 1;
    json_t *entry = NULL;
    char *text = NULL, when[32];
    ad_err e;
    int rc;

    if (!tx->writable)
        return AD_EINTERNAL;
    if ((rc = mdb_cursor_open(tx->txn, tx->s->audit, &cur)) != 0)
        return map_mdb(rc);
    if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0)
        seq = seq_of(&k) + 1;
    mdb_cursor_close(cur);

    util_time_rfc3339(time(NULL), when, sizeof(when));
    entry = json_pack("{s:I, s:s, s:s, s:s, s:s?, s:O?}", "seq",
                      (json_int_t)seq, "time", when, "actor",
                      actor ? actor : "system", "action", action, "target",
                      target, "detail", detail);
    if (entry == NULL)
        return AD_ENOMEM;
    text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    if (text == NULL)
        return AD_ENOMEM;
    seq_key(seq, kb);
    k.mv_size = sizeof(kb);
    k.mv_data = kb;
    v = val_of_str(text);
    e = map_mdb(mdb_put(tx->txn, tx->s->audit, &k, &v, MDB_APPEND));
    free(text);
    return e;
}

ad_err store_audit_list(store_txn *tx, uint64_t after, size_t limit,
                        json_t **items, int *more)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    unsigned char kb[8];
    json_t *arr;
    ad_err e = AD_OK;
    int rc;

    *items = NULL;
    *more = 0;
    arr = json_array();
    if (arr == NULL)
        return AD_ENOMEM;
    if ((rc = mdb_cursor_open(tx->txn, tx->s->audit, &cur)) != 0) {
        e = map_mdb(rc);
        goto out;
    }
    seq_key(after + 1, kb);
    k.mv_size = sizeof(kb);
    k.mv_data = kb;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *rec;

        if (json_array_size(arr) >= limit) {
            *more = 1;
            break;
        }
        if ((e = decode(&v, &rec)) != AD_OK)
            goto out;
        json_array_append_new(arr, rec);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        e = map_mdb(rc);
out:
    if (cur)
        mdb_cursor_close(cur);
    if (e == AD_OK)
        *items = arr;
    else
        json_decref(arr);
    return e;
}
