/* Private to the store: the table of operations each backend (LMDB in
 * store_lmdb.c, PostgreSQL in store_pg.c) provides, and the parts of the
 * handles that store.c's dispatch reads. Nothing outside authd/store*.c
 * includes this. */
#ifndef AUTHD_STORE_INT_H
#define AUTHD_STORE_INT_H

#include <pthread.h>

#include "store.h"

/* A JSON record may not exceed this; inputs are bounded far below it. */
#define STORE_RECORD_MAX (256 * 1024)
/* Writes grouped into one transaction at most; bounds commit latency. */
#define STORE_BATCH_MAX 512

typedef struct {
    store_backend backend;
    void (*close)(store *s);
    int (*ready)(store *s);
    ad_err (*write)(store *s, store_write_fn fn, void *arg);
    void (*watch)(store *s, store_watch_fn fn, void *arg);
    void (*test_sync_hook)(store *s, int (*hook)(void *), void *arg);
    void (*commit_stats)(store *s, store_stats *out);

    ad_err (*read_begin)(store *s, store_txn **out);
    void (*read_end)(store_txn *tx);

    ad_err (*get_raw)(store_txn *tx, store_table t, const char *key,
                      const char **text, size_t *len);
    ad_err (*list)(store_txn *tx, store_table t, const char *prefix,
                   const char *after, size_t limit, json_t **items,
                   int *more);
    ad_err (*index_list)(store_txn *tx, store_index ix, const char *key,
                         const char *after, size_t limit, json_t **values,
                         int *more);
    ad_err (*index_first)(store_txn *tx, store_index ix, const char *key,
                          char *out, size_t outlen);
    ad_err (*put_text)(store_txn *tx, store_table t, const char *key,
                       const char *text, size_t len, int flags);
    ad_err (*del)(store_txn *tx, store_table t, const char *key);
    ad_err (*index_add)(store_txn *tx, store_index ix, const char *key,
                        const char *val);
    ad_err (*index_del)(store_txn *tx, store_index ix, const char *key,
                        const char *val);
    ad_err (*audit)(store_txn *tx, const char *actor, const char *action,
                    const char *target, const json_t *detail);
    ad_err (*audit_list)(store_txn *tx, uint64_t after, size_t limit,
                         json_t **items, int *more);
    ad_err (*audit_rlist)(store_txn *tx, uint64_t before, size_t limit,
                          json_t **items, int *more);
    ad_err (*event_append)(store_txn *tx, const char *type,
                           const json_t *data);
    ad_err (*event_list)(store_txn *tx, uint64_t after, size_t limit,
                         json_t **items, int *more);

    /* For store_copy. table_scan: up to limit [key, text] pairs of t after
     * `after` ("" for the start), in key order. index_scan: up to limit
     * [key, value] pairs after the pair (after_key, after_val) ("" for the
     * start). audit_put / event_put (write only): an entry whose number
     * and text are given, as read from another store; event_put also
     * moves the event counter past id. */
    ad_err (*table_scan)(store_txn *tx, store_table t, const char *after,
                         size_t limit, json_t **pairs, int *more);
    ad_err (*index_scan)(store_txn *tx, store_index ix, const char *after_key,
                         const char *after_val, size_t limit, json_t **pairs,
                         int *more);
    ad_err (*audit_put)(store_txn *tx, uint64_t seq, const char *text,
                        size_t len);
    ad_err (*event_put)(store_txn *tx, uint64_t id, const char *text,
                        size_t len);
} store_ops;

/* The first member of each backend's handle. */
struct store {
    const store_ops *ops;
};

/* The first member of each backend's transaction. */
struct store_txn {
    store *s;
    int writable;
};

/* Names shared by both backends (LMDB databases, PostgreSQL tables). */
extern const char *const store_table_names[STORE_TABLE__COUNT];
extern const char *const store_index_names[STORE_IX__COUNT];

/* One queued write of a backend's writer thread; lives on the caller's
 * stack until it is answered. */
typedef struct store_pending {
    store_write_fn fn;
    void *arg;
    ad_err result;
    int done;
    uint64_t batch;          /* LMDB: the commit that carried it */
    pthread_cond_t answered; /* only this caller waits on it */
    struct store_pending *next;
} store_pending;

/* store_write for a backend whose writer thread takes writes from the
 * list (*head, *tail) under lock, woken by queued: queues fn(arg) and
 * waits for its answer. refused(s), called under the lock first, may turn
 * the write away (stopping, a failed store) with its error. */
ad_err store_queue_and_wait(store *s, pthread_mutex_t *lock,
                            pthread_cond_t *queued, store_pending **head,
                            store_pending **tail, ad_err (*refused)(store *s),
                            store_write_fn fn, void *arg);

/* The writer's side of that queue, called with lock held: waits until a
 * write is queued, then takes up to STORE_BATCH_MAX of them (later ones
 * wait a round) as a NULL-ended list; NULL once *stopping is set and the
 * queue is empty. */
store_pending *store_queue_take(pthread_mutex_t *lock, pthread_cond_t *queued,
                                store_pending **head, store_pending **tail,
                                const int *stopping, int *n);

/* One change a write batch made, for the change feed. */
typedef struct {
    store_table t;
    char *key; /* malloc()ed */
} store_chg;

/* The one watcher of a store, called from its threads. store_watcher_set
 * may change it at any time and returns only once no call of the old one
 * is running, so that whoever removes a watcher may free what it uses
 * (the daemon removes it before closing its caches). A reporting thread
 * holds the watcher for the calls of one report. */
typedef struct {
    pthread_rwlock_t lock;
    store_watch_fn fn;
    void *arg;
} store_watcher;
void store_watcher_init(store_watcher *w);
void store_watcher_destroy(store_watcher *w);
void store_watcher_set(store_watcher *w, store_watch_fn fn, void *arg);
/* Holds w and returns its function (NULL: none; release all the same). */
store_watch_fn store_watcher_hold(store_watcher *w, void **arg);
void store_watcher_release(store_watcher *w);

/* Appends (t, a copy of key) to the growing array (*v, *n, *cap): 0, or
 * -1 out of memory (the caller then reports STORE_CHANGE_UNKNOWN). */
int store_chg_append(store_chg **v, size_t *n, size_t *cap, store_table t,
                     const char *key);

/* Leaves each (table, key) of v[0..n) once, at the place of its last
 * change, in the order the changes were made, and frees the keys it
 * drops; returns the new count. The order is part of the feed's promise:
 * a revocation puts its CRL entry before it advances the CRL number, so a
 * watcher that rebuilds the CRL on the number has the entry already. */
size_t store_chg_settle(store_chg *v, size_t n);

/* Every key we store is non-empty and at most this long (LMDB's bound). */
int store_key_ok(const char *key);

/* The backends' openers. */
ad_err store_lmdb_open(const char *dir, size_t map_mb, store **out,
                       char *err, size_t errlen);
ad_err store_pg_open(const char *url, const store_options *opt, store **out,
                     char *err, size_t errlen);

#endif
