/* LMDB behind store.h: named databases for records, indexes, the audit
 * and the event log, read transactions on demand, and one writer thread
 * doing group commit. The change feed reports each batch's changed
 * records once a flush has made the batch durable. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>

#include "store_int.h"
#include "util.h"

#define STORE_READ_POOLS 8
#define STORE_READ_POOL_DEPTH 16

typedef struct ltxn ltxn;

/* The records one batch changed and the newest event it appended: the
 * change feed's report once the batch is durable. */
struct chg_batch {
    uint64_t seq; /* the batch (commit) number */
    store_chg *v;
    size_t n, cap;
    uint64_t event_id;
    int lost; /* out of memory while recording: report UNKNOWN */
    struct chg_batch *next;
};


typedef struct lstore {
    struct store base;
    MDB_env *env;
    MDB_dbi tables[STORE_TABLE__COUNT];
    MDB_dbi indexes[STORE_IX__COUNT];
    MDB_dbi audit;
    MDB_dbi events;

    pthread_mutex_t lock;
    pthread_cond_t queued;  /* the writer waits here for work */
    pthread_cond_t synced;  /* the flusher waits here for commits */
    store_pending *head, *tail;       /* waiting for the writer */
    store_pending *unsynced, *unsynced_tail; /* committed, not durable */
    uint64_t committed; /* batches whose commit has returned */
    uint64_t durable;   /* batches covered by a completed flush */
    ad_err sync_failed; /* sticky: after a failed flush nothing is acked */
    int stopping, flusher_stop;
    pthread_t writer, flusher;
    int writer_started, flusher_started;
    int (*sync_hook)(void *);
    void *sync_hook_arg;

    /* The change feed: batches committed and not yet reported, oldest
     * first; one thread reports at a time (delivering), so callers are
     * answered only after their batch's report. */
    store_watcher watcher;
    struct chg_batch *chg_head, *chg_tail;
    int delivering;
    struct chg_batch *cur; /* the writer's batch being applied */
    int chg_lost; /* a batch went unrecorded (no memory): report UNKNOWN */

    atomic_uint_fast64_t commits, writes, syncs;
    atomic_uint_fast64_t apply_ns, commit_ns, sync_ns; /* for /metrics */

    /* Read transactions kept reset for reuse: renewing one costs no trip
     * through LMDB's reader table and its process-shared lock, which
     * every check that misses a cache would otherwise take. A pool per
     * few threads, so threads rarely share one lock. */
    struct read_pool {
        pthread_mutex_t lock;
        size_t n;
        ltxn *txns[STORE_READ_POOL_DEPTH];
    } pools[STORE_READ_POOLS];
} lstore;

struct ltxn {
    struct store_txn base; /* base.s is the lstore */
    MDB_txn *txn;
};

#define LS(tx) ((lstore *)(tx)->base.s)

static void read_pools_close(lstore *s);

static atomic_uint next_pool;
static _Thread_local unsigned my_pool = UINT_MAX;

static struct read_pool *pool_of(lstore *s)
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
static void answer_durable(lstore *s)
{
    store_pending *p;

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

static void chg_free(struct chg_batch *b)
{
    size_t i;

    if (b == NULL)
        return;
    for (i = 0; i < b->n; i++)
        free(b->v[i].key);
    free(b->v);
    free(b);
}

/* Tells the watcher what one batch changed: each (table, key) once, at
 * its last change, in the order of the changes (store_chg_settle). */
static void chg_report(store_watch_fn fn, void *arg, struct chg_batch *b)
{
    store_change c;
    size_t i;

    memset(&c, 0, sizeof(c));
    if (b->lost) {
        c.kind = STORE_CHANGE_UNKNOWN;
        fn(arg, &c);
        return;
    }
    b->n = store_chg_settle(b->v, b->n);
    for (i = 0; i < b->n; i++) {
        c.kind = STORE_CHANGE_RECORD;
        c.table = b->v[i].t;
        c.key = b->v[i].key;
        fn(arg, &c);
    }
    if (b->event_id != 0) {
        memset(&c, 0, sizeof(c));
        c.kind = STORE_CHANGE_EVENTS;
        c.event_id = b->event_id;
        fn(arg, &c);
    }
}

/* Reports every durable batch (every committed one, once a flush failed:
 * readers see them either way) to the watcher, then answers the callers
 * whose batches are durable: a caller returns only after its changes
 * were reported. One thread reports at a time, so a batch's report never
 * overtakes the answer of another thread's. Called with the lock held;
 * unlocks while the watcher runs. */
static void deliver_and_answer(lstore *s)
{
    if (s->delivering)
        return; /* that thread sees our progress before it answers */
    s->delivering = 1;
    while (s->chg_head != NULL &&
           (s->chg_head->seq <= s->durable || s->sync_failed != AD_OK)) {
        struct chg_batch *b = s->chg_head;
        store_watch_fn fn;
        void *arg;

        s->chg_head = b->next;
        if (s->chg_head == NULL)
            s->chg_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        fn = store_watcher_hold(&s->watcher, &arg);
        if (fn != NULL)
            chg_report(fn, arg, b);
        store_watcher_release(&s->watcher);
        chg_free(b);
        pthread_mutex_lock(&s->lock);
    }
    s->delivering = 0;
    answer_durable(s);
}

/* Marks batches up to upto durable (flush ok) or the store failed. Called
 * with the lock held. */
static void note_flush(lstore *s, uint64_t upto, int rc)
{
    if (rc != 0) {
        /* After a failed fsync the kernel may have dropped the dirty
         * pages and a later fsync may succeed without them: nothing
         * written from here on can be promised durable. */
        s->sync_failed = AD_ESTORE;
    } else if (upto > s->durable) {
        s->durable = upto;
    }
    deliver_and_answer(s);
}

static int do_sync(lstore *s, int (*hook)(void *), void *hook_arg)
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
    lstore *s = arg;

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
            deliver_and_answer(s);
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

/* Records that the batch being applied put or deleted (t, key). */
static void chg_note(lstore *s, store_table t, const char *key)
{
    struct chg_batch *b = s->cur;

    if (b != NULL && !b->lost &&
        store_chg_append(&b->v, &b->n, &b->cap, t, key) != 0)
        b->lost = 1;
}

/* Forgets what a failed write recorded (its child transaction is gone). */
static void chg_truncate(struct chg_batch *b, size_t n, uint64_t event_id)
{
    if (b == NULL)
        return;
    while (b->n > n)
        free(b->v[--b->n].key);
    b->event_id = event_id;
}

static void *writer_main(void *arg)
{
    lstore *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        store_pending *batch, *p, *last;
        MDB_txn *parent = NULL;
        uint64_t t0, t1, id0, seq;
        int rc, n = 0, flushed;

        batch = store_queue_take(&s->lock, &s->queued, &s->head, &s->tail,
                                 &s->stopping, &n);
        if (batch == NULL)
            break;
        for (last = batch; last->next != NULL; last = last->next)
            ;
        seq = s->committed + 1;
        pthread_mutex_unlock(&s->lock);

        t0 = util_now_ns();
        id0 = last_txnid(s->env);
        s->cur = calloc(1, sizeof(*s->cur));
        if (s->cur == NULL) {
            s->chg_lost = 1;
        } else if (s->chg_lost) {
            s->cur->lost = 1;
            s->chg_lost = 0;
        }
        rc = mdb_txn_begin(s->env, NULL, 0, &parent);
        for (p = batch; p != NULL; p = p->next) {
            MDB_txn *child = NULL;
            ltxn tx;
            size_t mark = s->cur ? s->cur->n : 0;
            uint64_t ev_mark = s->cur ? s->cur->event_id : 0;

            p->batch = seq;
            if (rc != MDB_SUCCESS) {
                p->result = AD_ESTORE;
                continue;
            }
            if (mdb_txn_begin(s->env, parent, 0, &child) != MDB_SUCCESS) {
                p->result = AD_ESTORE;
                continue;
            }
            tx.base.s = &s->base;
            tx.base.writable = 1;
            tx.txn = child;
            p->result = p->fn(&tx.base, p->arg);
            if (p->result == AD_OK) {
                if (mdb_txn_commit(child) != MDB_SUCCESS) {
                    p->result = AD_ESTORE;
                    chg_truncate(s->cur, mark, ev_mark);
                }
            } else {
                mdb_txn_abort(child);
                chg_truncate(s->cur, mark, ev_mark);
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
        if (s->cur != NULL && rc == MDB_SUCCESS &&
            (s->cur->n > 0 || s->cur->event_id != 0 || s->cur->lost)) {
            s->cur->seq = seq;
            if (s->chg_tail)
                s->chg_tail->next = s->cur;
            else
                s->chg_head = s->cur;
            s->chg_tail = s->cur;
        } else {
            if (s->cur != NULL && s->cur->lost)
                s->chg_lost = 1;
            chg_free(s->cur);
        }
        s->cur = NULL;
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

/* Why a write is turned away before it is queued (under s->lock). */
static ad_err l_refused(store *base)
{
    lstore *s = (lstore *)base;

    return s->stopping ? AD_ENOTREADY : s->sync_failed;
}

static ad_err l_write(store *base, store_write_fn fn, void *arg)
{
    lstore *s = (lstore *)base;

    return store_queue_and_wait(base, &s->lock, &s->queued, &s->head, &s->tail,
                                l_refused, fn, arg);
}

static void l_test_sync_hook(store *base, int (*hook)(void *arg), void *arg)
{
    lstore *s = (lstore *)base;

    pthread_mutex_lock(&s->lock);
    s->sync_hook = hook;
    s->sync_hook_arg = arg;
    pthread_mutex_unlock(&s->lock);
}

/* ---- open / close ---------------------------------------------------- */

static const store_ops lmdb_ops;

static void l_close(store *base)
{
    lstore *s = (lstore *)base;

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
    while (s->chg_head != NULL) {
        struct chg_batch *b = s->chg_head;

        s->chg_head = b->next;
        chg_free(b);
    }
    read_pools_close(s);
    if (s->env)
        mdb_env_close(s->env);
    pthread_cond_destroy(&s->synced);
    pthread_cond_destroy(&s->queued);
    pthread_mutex_destroy(&s->lock);
    store_watcher_destroy(&s->watcher);
    free(s);
}

ad_err store_lmdb_open(const char *dir, size_t map_mb, store **out, char *err,
                       size_t errlen)
{
    lstore *s = NULL;
    MDB_txn *txn = NULL;
    ad_err e = AD_ESTORE;
    int rc, i;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return AD_ENOMEM;
    s->base.ops = &lmdb_ops;
    pthread_mutex_init(&s->lock, NULL);
    store_watcher_init(&s->watcher);
    for (i = 0; i < STORE_READ_POOLS; i++)
        pthread_mutex_init(&s->pools[i].lock, NULL);
    pthread_cond_init(&s->queued, NULL);
    pthread_cond_init(&s->synced, NULL);

    if ((rc = mdb_env_create(&s->env)) != MDB_SUCCESS)
        goto fail;
    mdb_env_set_maxdbs(s->env, 32);
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
        if ((rc = mdb_dbi_open(txn, store_table_names[i], MDB_CREATE,
                               &s->tables[i])) != MDB_SUCCESS)
            goto fail;
    for (i = 0; i < STORE_IX__COUNT; i++)
        if ((rc = mdb_dbi_open(txn, store_index_names[i],
                               MDB_CREATE | MDB_DUPSORT, &s->indexes[i])) !=
            MDB_SUCCESS)
            goto fail;
    if ((rc = mdb_dbi_open(txn, "audit", MDB_CREATE, &s->audit)) !=
        MDB_SUCCESS)
        goto fail;
    if ((rc = mdb_dbi_open(txn, "events", MDB_CREATE, &s->events)) !=
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
    *out = &s->base;
    return AD_OK;

fail:
    ad_errf(e, err, errlen, "lmdb: %s", mdb_strerror(rc));
    if (txn)
        mdb_txn_abort(txn);
    l_close(&s->base);
    return e;
}

static int l_ready(store *s)
{
    (void)s;
    return 1;
}

static void l_watch(store *base, store_watch_fn fn, void *arg)
{
    store_watcher_set(&((lstore *)base)->watcher, fn, arg);
}

static void l_commit_stats(store *base, store_stats *out)
{
    lstore *s = (lstore *)base;
    MDB_envinfo info;
    MDB_stat st;

    out->commits = atomic_load(&s->commits);
    out->writes = atomic_load(&s->writes);
    out->apply_ns = atomic_load(&s->apply_ns);
    out->commit_ns = atomic_load(&s->commit_ns);
    out->syncs = atomic_load(&s->syncs);
    out->sync_ns = atomic_load(&s->sync_ns);
    /* The last committed transaction's highest page: what the map holds,
     * free pages inside it included (LMDB reuses them before growing). */
    if (mdb_env_info(s->env, &info) == MDB_SUCCESS &&
        mdb_env_stat(s->env, &st) == MDB_SUCCESS) {
        out->used_bytes = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
        out->limit_bytes = (uint64_t)info.me_mapsize;
    }
}

/* ---- transactions ---------------------------------------------------- */

static ad_err l_read_begin(store *base, store_txn **out)
{
    lstore *s = (lstore *)base;
    struct read_pool *pool = pool_of(s);
    ltxn *tx;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&pool->lock);
    tx = pool->n > 0 ? pool->txns[--pool->n] : NULL;
    pthread_mutex_unlock(&pool->lock);
    if (tx != NULL) {
        if (mdb_txn_renew(tx->txn) == MDB_SUCCESS) {
            *out = &tx->base;
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
    tx->base.s = base;
    *out = &tx->base;
    return AD_OK;
}

static void l_read_end(store_txn *btx)
{
    ltxn *tx = (ltxn *)btx;
    struct read_pool *pool;

    /* Reset, a transaction pins no snapshot: the writer may reuse every
     * page it read. */
    mdb_txn_reset(tx->txn);
    pool = pool_of(LS(tx));
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

static void read_pools_close(lstore *s)
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

static ad_err l_get_raw(store_txn *btx, store_table t, const char *key,
                        const char **text, size_t *len)
{
    ltxn *tx = (ltxn *)btx;
    MDB_val k, v;
    int rc;

    k = val_of_str(key);
    rc = mdb_get(tx->txn, LS(tx)->tables[t], &k, &v);
    if (rc != MDB_SUCCESS)
        return map_mdb(rc);
    *text = v.mv_data;
    *len = v.mv_size;
    return AD_OK;
}

static ad_err l_put_text(store_txn *btx, store_table t, const char *key,
                         const char *text, size_t len, int flags)
{
    ltxn *tx = (ltxn *)btx;
    MDB_val k, v;
    ad_err e;

    k = val_of_str(key);
    v.mv_size = len;
    v.mv_data = (void *)text;
    e = map_mdb(mdb_put(tx->txn, LS(tx)->tables[t], &k, &v,
                        (flags & STORE_NOOVERWRITE) ? MDB_NOOVERWRITE : 0));
    if (e == AD_OK)
        chg_note(LS(tx), t, key);
    return e;
}

static ad_err l_del(store_txn *btx, store_table t, const char *key)
{
    ltxn *tx = (ltxn *)btx;
    MDB_val k;
    ad_err e;

    k = val_of_str(key);
    e = map_mdb(mdb_del(tx->txn, LS(tx)->tables[t], &k, NULL));
    if (e == AD_OK)
        chg_note(LS(tx), t, key);
    return e;
}

static int has_prefix(const MDB_val *k, const char *prefix, size_t plen)
{
    return k->mv_size >= plen && memcmp(k->mv_data, prefix, plen) == 0;
}

/* Walks t in key order from the first key after `after` (or the first
 * key with prefix), appending decoded records (pairs: [key, text]) while
 * keys keep the prefix. */
static ad_err walk_table(ltxn *tx, store_table t, const char *prefix,
                         const char *after, size_t limit, int pairs,
                         json_t **items, int *more)
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
    if ((rc = mdb_cursor_open(tx->txn, LS(tx)->tables[t], &cur)) != 0) {
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
        if (pairs) {
            rec = json_pack("[s#, s#]", (const char *)k.mv_data,
                            (int)k.mv_size, (const char *)v.mv_data,
                            (int)v.mv_size);
            if (rec == NULL) {
                e = AD_ENOMEM;
                goto out;
            }
        } else if ((e = decode(&v, &rec)) != AD_OK) {
            goto out;
        }
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

static ad_err l_list(store_txn *tx, store_table t, const char *prefix,
                     const char *after, size_t limit, json_t **items,
                     int *more)
{
    return walk_table((ltxn *)tx, t, prefix, after, limit, 0, items, more);
}

static ad_err l_table_scan(store_txn *tx, store_table t, const char *after,
                           size_t limit, json_t **pairs, int *more)
{
    return walk_table((ltxn *)tx, t, "", after, limit, 1, pairs, more);
}

/* ---- indexes --------------------------------------------------------- */

static ad_err l_index_add(store_txn *btx, store_index ix, const char *key,
                          const char *val)
{
    ltxn *tx = (ltxn *)btx;
    MDB_val k, v;
    int rc;

    k = val_of_str(key);
    v = val_of_str(val);
    rc = mdb_put(tx->txn, LS(tx)->indexes[ix], &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? AD_OK : map_mdb(rc);
}

static ad_err l_index_del(store_txn *btx, store_index ix, const char *key,
                          const char *val)
{
    ltxn *tx = (ltxn *)btx;
    MDB_val k, v;
    int rc;

    k = val_of_str(key);
    if (val)
        v = val_of_str(val);
    rc = mdb_del(tx->txn, LS(tx)->indexes[ix], &k, val ? &v : NULL);
    return rc == MDB_NOTFOUND ? AD_OK : map_mdb(rc);
}

static ad_err l_index_list(store_txn *btx, store_index ix, const char *key,
                           const char *after, size_t limit, json_t **values,
                           int *more)
{
    ltxn *tx = (ltxn *)btx;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    json_t *arr;
    ad_err e = AD_OK;
    int rc;

    arr = json_array();
    if (arr == NULL)
        return AD_ENOMEM;
    if ((rc = mdb_cursor_open(tx->txn, LS(tx)->indexes[ix], &cur)) != 0) {
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

static ad_err l_index_first(store_txn *btx, store_index ix, const char *key,
                            char *out, size_t outlen)
{
    ltxn *tx = (ltxn *)btx;
    MDB_val k, v;
    int rc;

    k = val_of_str(key);
    rc = mdb_get(tx->txn, LS(tx)->indexes[ix], &k, &v);
    if (rc != MDB_SUCCESS)
        return map_mdb(rc);
    if (v.mv_size >= outlen)
        return AD_EINTERNAL;
    memcpy(out, v.mv_data, v.mv_size);
    out[v.mv_size] = '\0';
    return AD_OK;
}

/* Every (key, value) pair of an index after (after_key, after_val). */
static ad_err l_index_scan(store_txn *btx, store_index ix,
                           const char *after_key, const char *after_val,
                           size_t limit, json_t **pairs, int *more)
{
    ltxn *tx = (ltxn *)btx;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    json_t *arr;
    ad_err e = AD_OK;
    int rc;

    arr = json_array();
    if (arr == NULL)
        return AD_ENOMEM;
    if ((rc = mdb_cursor_open(tx->txn, LS(tx)->indexes[ix], &cur)) != 0) {
        e = map_mdb(rc);
        goto out;
    }
    if (after_key && *after_key) {
        k = val_of_str(after_key);
        v = val_of_str(after_val ? after_val : "");
        rc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE);
        if (rc == 0 && v.mv_size == strlen(after_val) &&
            memcmp(v.mv_data, after_val, v.mv_size) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        else if (rc == MDB_NOTFOUND) {
            /* No value of after_key at or past after_val: next key. */
            k = val_of_str(after_key);
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
            if (rc == 0 && k.mv_size == strlen(after_key) &&
                memcmp(k.mv_data, after_key, k.mv_size) == 0)
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_NODUP);
        }
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        json_t *pair;

        if (json_array_size(arr) >= limit) {
            *more = 1;
            break;
        }
        pair = json_pack("[s#, s#]", (const char *)k.mv_data, (int)k.mv_size,
                         (const char *)v.mv_data, (int)v.mv_size);
        if (pair == NULL) {
            e = AD_ENOMEM;
            goto out;
        }
        json_array_append_new(arr, pair);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        e = map_mdb(rc);
out:
    if (cur)
        mdb_cursor_close(cur);
    if (e == AD_OK)
        *pairs = arr;
    else
        json_decref(arr);
    return e;
}

/* ---- audit and events ------------------------------------------------ */

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

/* The number after the last one in a log (1 when empty). */
static ad_err log_next(ltxn *tx, MDB_dbi dbi, uint64_t *next)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    *next = 1;
    if ((rc = mdb_cursor_open(tx->txn, dbi, &cur)) != 0)
        return map_mdb(rc);
    if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0)
        *next = seq_of(&k) + 1;
    mdb_cursor_close(cur);
    return AD_OK;
}

static ad_err log_put(ltxn *tx, MDB_dbi dbi, uint64_t seq, const char *text,
                      size_t len, unsigned flags)
{
    unsigned char kb[8];
    MDB_val k, v;

    seq_key(seq, kb);
    k.mv_size = sizeof(kb);
    k.mv_data = kb;
    v.mv_size = len;
    v.mv_data = (void *)text;
    return map_mdb(mdb_put(tx->txn, dbi, &k, &v, flags));
}

/* A page of a log: with newest_first = 0 the entries numbered > bound,
 * oldest first; with newest_first = 1 those numbered < bound (0: every
 * entry), newest first. At most limit, *more = 1 if there were more. */
static ad_err log_list(ltxn *tx, MDB_dbi dbi, int newest_first, uint64_t bound,
                       size_t limit, json_t **items, int *more)
{
    MDB_cursor_op step = newest_first ? MDB_PREV : MDB_NEXT;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    unsigned char kb[8];
    json_t *arr;
    ad_err e = AD_OK;
    int rc;

    arr = json_array();
    if (arr == NULL)
        return AD_ENOMEM;
    if (newest_first ? bound == 1 : bound == UINT64_MAX)
        goto out;
    if ((rc = mdb_cursor_open(tx->txn, dbi, &cur)) != 0) {
        e = map_mdb(rc);
        goto out;
    }
    seq_key(newest_first ? bound : bound + 1, kb);
    k.mv_size = sizeof(kb);
    k.mv_data = kb;
    if (newest_first && bound == 0) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    } else {
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        /* Newest first: one back from the first key >= bound; none >=
         * bound means the last one is below it. */
        if (newest_first)
            rc = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_PREV)
                 : rc == MDB_NOTFOUND ? mdb_cursor_get(cur, &k, &v, MDB_LAST)
                                      : rc;
    }
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, step)) {
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

/* prev := the hash of the newest audit entry (the chain's zeros if
 * there is none), read in the writer's own transaction. */
static ad_err audit_prev_hash(ltxn *tx, char prev[STORE_AUDIT_HASH_HEX])
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    json_t *last = NULL;
    ad_err e = AD_OK;
    int rc;

    memcpy(prev, STORE_AUDIT_ZERO_HASH, STORE_AUDIT_HASH_HEX);
    if ((rc = mdb_cursor_open(tx->txn, LS(tx)->audit, &cur)) != 0)
        return map_mdb(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && (e = decode(&v, &last)) == AD_OK)
        e = store_audit_hash(last, prev);
    else if (rc != 0 && rc != MDB_NOTFOUND)
        e = map_mdb(rc);
    json_decref(last);
    mdb_cursor_close(cur);
    return e;
}

static ad_err l_audit(store_txn *btx, const char *actor, const char *action,
                      const char *target, const json_t *detail)
{
    ltxn *tx = (ltxn *)btx;
    uint64_t seq;
    json_t *entry = NULL;
    char *text = NULL, when[32], prev[STORE_AUDIT_HASH_HEX];
    ad_err e;

    if ((e = log_next(tx, LS(tx)->audit, &seq)) != AD_OK)
        return e;
    /* The single writer holds the log: the newest entry stays newest
     * until this transaction commits. */
    if ((e = audit_prev_hash(tx, prev)) != AD_OK)
        return e;
    util_time_rfc3339(time(NULL), when, sizeof(when));
    entry = json_pack("{s:I, s:s, s:s, s:s, s:s?, s:O?, s:s}", "seq",
                      (json_int_t)seq, "time", when, "actor",
                      actor ? actor : "system", "action", action, "target",
                      target, "detail", detail, "prev_hash", prev);
    if (entry == NULL)
        return AD_ENOMEM;
    text = store_audit_canonical(entry);
    json_decref(entry);
    if (text == NULL)
        return AD_ENOMEM;
    e = log_put(tx, LS(tx)->audit, seq, text, strlen(text), MDB_APPEND);
    free(text);
    return e;
}

static ad_err l_audit_list(store_txn *tx, uint64_t after, size_t limit,
                           json_t **items, int *more)
{
    return log_list((ltxn *)tx, LS((ltxn *)tx)->audit, 0, after, limit, items,
                    more);
}

/* Entries with numbers < before (0: all), newest first. */
static ad_err l_audit_rlist(store_txn *btx, uint64_t before, size_t limit,
                            json_t **items, int *more)
{
    return log_list((ltxn *)btx, LS((ltxn *)btx)->audit, 1, before, limit,
                    items, more);
}

static ad_err l_audit_put(store_txn *btx, uint64_t seq, const char *text,
                          size_t len)
{
    ltxn *tx = (ltxn *)btx;

    return log_put(tx, LS(tx)->audit, seq, text, len, 0);
}

/* Drops the events that fell out of the newest STORE_EVENTS_KEPT once
 * event `newest` is in: usually one, the oldest. */
static ad_err events_prune(ltxn *tx, uint64_t newest)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;

    if (newest <= STORE_EVENTS_KEPT)
        return AD_OK;
    if ((rc = mdb_cursor_open(tx->txn, LS(tx)->events, &cur)) != 0)
        return map_mdb(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
         rc == 0 && seq_of(&k) <= newest - STORE_EVENTS_KEPT;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? AD_OK : map_mdb(rc);
}

static ad_err l_event_append(store_txn *btx, const char *type,
                             const json_t *data)
{
    ltxn *tx = (ltxn *)btx;
    uint64_t id;
    json_t *entry;
    char *text, when[32];
    ad_err e;

    if ((e = log_next(tx, LS(tx)->events, &id)) != AD_OK)
        return e;
    util_time_rfc3339(time(NULL), when, sizeof(when));
    entry = json_pack("{s:I, s:s, s:s, s:O?}", "id", (json_int_t)id, "time",
                      when, "type", type, "data", data);
    if (entry == NULL)
        return AD_ENOMEM;
    text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    if (text == NULL)
        return AD_ENOMEM;
    e = log_put(tx, LS(tx)->events, id, text, strlen(text), MDB_APPEND);
    free(text);
    if (e == AD_OK)
        e = events_prune(tx, id);
    if (e == AD_OK && LS(tx)->cur != NULL && id > LS(tx)->cur->event_id)
        LS(tx)->cur->event_id = id;
    return e;
}

static ad_err l_event_list(store_txn *tx, uint64_t after, size_t limit,
                           json_t **items, int *more)
{
    return log_list((ltxn *)tx, LS((ltxn *)tx)->events, 0, after, limit, items,
                    more);
}

/* The LMDB event counter is the last key of the log itself: an event put
 * with its id is all it takes to move it. */
static ad_err l_event_put(store_txn *btx, uint64_t id, const char *text,
                          size_t len)
{
    ltxn *tx = (ltxn *)btx;
    ad_err e = log_put(tx, LS(tx)->events, id, text, len, 0);

    if (e == AD_OK && LS(tx)->cur != NULL && id > LS(tx)->cur->event_id)
        LS(tx)->cur->event_id = id;
    return e;
}

static const store_ops lmdb_ops = {
    .backend = STORE_BACKEND_LMDB,
    .close = l_close,
    .ready = l_ready,
    .write = l_write,
    .watch = l_watch,
    .test_sync_hook = l_test_sync_hook,
    .commit_stats = l_commit_stats,
    .read_begin = l_read_begin,
    .read_end = l_read_end,
    .get_raw = l_get_raw,
    .list = l_list,
    .index_list = l_index_list,
    .index_first = l_index_first,
    .put_text = l_put_text,
    .del = l_del,
    .index_add = l_index_add,
    .index_del = l_index_del,
    .audit = l_audit,
    .audit_list = l_audit_list,
    .audit_rlist = l_audit_rlist,
    .event_append = l_event_append,
    .event_list = l_event_list,
    .table_scan = l_table_scan,
    .index_scan = l_index_scan,
    .audit_put = l_audit_put,
    .event_put = l_event_put,
};
