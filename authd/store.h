/* The LMDB store: the only code that touches the disk database. Records
 * are JSON objects keyed by string; a few index tables map one key to
 * many. Reads run in their own cheap read-only transaction. Writes are
 * functions run by a single writer thread that groups every pending write
 * into one LMDB transaction (group commit), and a flusher thread makes
 * commits durable while the writer goes on with the next batch: a caller
 * of store_write returns only after its change is durably committed, yet
 * a hundred concurrent issuances cost a flush or two, not a hundred.
 *
 * What the records mean (devices, certificates...) is not known here; see
 * registry.h for the rules. */
#ifndef AUTHD_STORE_H
#define AUTHD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/err.h"

typedef struct store store;
typedef struct store_txn store_txn; /* a read or a write transaction */

/* Tables holding JSON records by a string key. */
typedef enum {
    STORE_DEVICES,
    STORE_CERTS,       /* by lowercase serial hex */
    STORE_ENROLLMENTS,
    STORE_APIKEYS,
    STORE_META,
    STORE_POLICIES,    /* by name: the policy document */
    STORE_GROUPS,      /* by name: {"name","policies"} */
    STORE_REVOKED_JTIS, /* by jti: {"jti","revoked_at","keep_until"} */
    STORE_DEVICE_SECRETS, /* by device id: {"argon2id": encoded hash} */
    STORE_REVOKED_CERTS, /* by serial: {"revoked_at","reason"}: the CRL */
    STORE_TABLE__COUNT
} store_table;

/* Index tables: one key to many string values, kept sorted. */
typedef enum {
    STORE_IX_CERTS_BY_DEVICE,     /* device id -> serial */
    STORE_IX_CERTS_BY_ENROLLMENT, /* enrollment id -> serial */
    STORE_IX_CERTS_BY_FPR,        /* sha256 hex of DER -> serial */
    STORE_IX_ENROLLMENT_TOKENS,   /* sha256 hex of token -> enrollment id */
    STORE_IX_APIKEY_HASHES,       /* sha256 hex of key -> api key id */
    STORE_IX_CHILDREN_BY_GATEWAY, /* gateway device id -> child device id */
    STORE_IX_ACTIVE_CHILDREN,     /* gateway device id -> child device id,
                                   * only while the child is active: what
                                   * ${child.id} binds, read without
                                   * touching each child's record */
    STORE_IX_DEVICES_BY_POLICY,   /* policy name -> device id */
    STORE_IX_DEVICES_BY_GROUP,    /* group name -> device id */
    STORE_IX_GROUPS_BY_POLICY,    /* policy name -> group name */
    STORE_IX_ENROLLMENTS_BY_GROUP, /* group name -> enrollment id */
    STORE_IX__COUNT
} store_index;

/* ---- opening ------------------------------------------------------ */

/* Which backend holds the data: the embedded LMDB of one node, or a
 * PostgreSQL database that many nodes share. */
typedef enum { STORE_BACKEND_LMDB, STORE_BACKEND_POSTGRES } store_backend;

typedef struct {
    const char *data_dir; /* "lmdb:" with no path means data_dir/store */
    size_t map_mb;        /* LMDB: bound on the database size */
    unsigned read_conns;  /* PostgreSQL: pooled read connections (0: 8) */
} store_options;

/* Opens the store a URL names: "lmdb:" (DATA/store), "lmdb:/path", or
 * "postgres://..." / "postgresql://..." (a libpq connection URI; the
 * schema is created or migrated to this build's version on open). The
 * URL never appears in an error message or log line whole, as it may
 * carry a password. On error *out is NULL. */
ad_err store_open_url(const char *url, const store_options *opt, store **out,
                      char *err, size_t errlen);
store_backend store_backend_of(store *s);

/* Nonzero while the store can serve: always for LMDB; for PostgreSQL,
 * while the database answers and the change feed (below) is connected.
 * For /readyz. */
int store_ready(store *s);

/* Opens (creating if needed) the store in directory dir, which must
 * exist, and starts the writer thread. map_mb bounds the database size.
 * On error *out is NULL. */
ad_err store_open(const char *dir, size_t map_mb, store **out, char *err,
                  size_t errlen);
/* Drains pending writes, stops the writer and closes LMDB. NULL-safe. */
void store_close(store *s);

/* ---- reads -------------------------------------------------------- */

/* Begins a read-only transaction (cheap; never blocks writers). */
ad_err store_read_begin(store *s, store_txn **out);
/* Ends a read transaction; NULL-safe. Never call on a write txn. */
void store_read_end(store_txn *tx);

/* ---- writes ------------------------------------------------------- */

/* A write: runs inside the writer's transaction (in a nested child
 * transaction, so a failed write leaves nothing behind). Return AD_OK to
 * keep the changes, anything else to discard them.
 *
 * A write function may run more than once: PostgreSQL rolls back and
 * retries a transaction that lost a deadlock or serialization race with
 * another node. It must therefore set everything it reports in arg
 * afresh on each run, never accumulate across runs. Reads inside a
 * write lock what they read (PostgreSQL: SELECT ... FOR UPDATE) until the
 * commit, so a read-modify-write (an enrollment's `used`) is exact across
 * nodes. */
typedef ad_err (*store_write_fn)(store_txn *tx, void *arg);

/* Runs fn(tx, arg) on the writer thread and blocks until the transaction
 * holding it is durably committed: a flush of the disk that completed
 * after the commit. Returns fn's result, or AD_ESTORE if the commit failed
 * (then nothing fn did persisted) or the flush failed (then what fn did
 * may or may not have persisted; it was not acknowledged, and after a
 * failed flush every further write fails with AD_ESTORE until the store
 * is reopened, as the kernel may have dropped the unwritten pages).
 *
 * Readers may see a committed write up to one flush before it is
 * durable (and before its store_write returns); only the return of
 * store_write promises durability. */
ad_err store_write(store *s, store_write_fn fn, void *arg);

/* ---- the change feed ---------------------------------------------- *
 * Caches above the store learn of every committed change here, whichever
 * node made it: the one rule for keeping them exact. A watcher is called
 *  - for a local write: after its transaction is durable and before its
 *    store_write returns (so a writer has invalidated before it answers);
 *  - for another node's write (PostgreSQL): when its notification arrives,
 *    sent by LISTEN/NOTIFY in the same transaction as the change.
 * STORE_CHANGE_RECORD names a record of a table that was put or deleted;
 * a batch's records are reported once each, at the place of their last
 * change, in the order the changes were made (so a watcher that acts on
 * a record written last, like a counter, has heard what came before it);
 * STORE_CHANGE_EVENTS says the event log grew to event_id;
 * STORE_CHANGE_UNKNOWN says changes may have been missed (the feed was
 * down): forget everything cached and catch up from the store.
 * Watchers run on a store thread and must not call store_write. */
typedef enum {
    STORE_CHANGE_RECORD,
    STORE_CHANGE_EVENTS,
    STORE_CHANGE_UNKNOWN
} store_change_kind;

typedef struct {
    store_change_kind kind;
    store_table table;  /* RECORD */
    const char *key;    /* RECORD */
    uint64_t event_id;  /* EVENTS */
} store_change;

typedef void (*store_watch_fn)(void *arg, const store_change *c);
/* Registers the one watcher; call before the first write. */
void store_watch(store *s, store_watch_fn fn, void *arg);

/* For tests: hook(arg) runs before each flush of the flusher thread;
 * a nonzero return (an errno) fails that flush as the disk would. NULL
 * removes the hook. */
void store_test_sync_hook(store *s, int (*hook)(void *arg), void *arg);

/* ---- operations on a transaction (read or write) ------------------ */

/* Looks up a record. AD_ENOTFOUND if absent; *out is a new reference. */
ad_err store_get(store_txn *tx, store_table t, const char *key,
                 json_t **out);

/* A record's stored JSON text, without parsing it: valid until the
 * transaction ends. For hot paths that read a few fields themselves. */
ad_err store_get_raw(store_txn *tx, store_table t, const char *key,
                     const char **text, size_t *len);

/* Lists up to limit records of t in key order whose key starts with
 * prefix ("" for all) and sorts after `after` (NULL/"" for the start).
 * *items is a new JSON array; *more is set when further records match. */
ad_err store_list(store_txn *tx, store_table t, const char *prefix,
                  const char *after, size_t limit, json_t **items,
                  int *more);

/* How many records t holds (by a walk through them: for offline
 * commands, not request paths). */
ad_err store_count(store_txn *tx, store_table t, uint64_t *n);
/* The table's name ("devices", ...), for messages. */
const char *store_table_name(store_table t);

/* Index values under key, in order, after `after`, up to limit. *values
 * is a new JSON array of strings; *more as in store_list. */
ad_err store_index_list(store_txn *tx, store_index ix, const char *key,
                        const char *after, size_t limit, json_t **values,
                        int *more);
/* The first value under key, copied into out (outlen bytes). */
ad_err store_index_first(store_txn *tx, store_index ix, const char *key,
                         char *out, size_t outlen);

/* Write-only operations (AD_EINTERNAL on a read transaction). */
enum { STORE_NOOVERWRITE = 1 };
ad_err store_put(store_txn *tx, store_table t, const char *key,
                 const json_t *val, int flags); /* AD_EEXISTS if NOOVERWRITE */
/* As store_put, for a record already serialised as compact JSON text
 * (so that hot writes can serialise outside the single writer thread). */
ad_err store_put_text(store_txn *tx, store_table t, const char *key,
                      const char *text, size_t len, int flags);
ad_err store_del(store_txn *tx, store_table t, const char *key);
ad_err store_index_add(store_txn *tx, store_index ix, const char *key,
                       const char *val);
ad_err store_index_del(store_txn *tx, store_index ix, const char *key,
                       const char *val); /* val NULL: all values of key */

/* Appends an audit entry {seq,time,actor,action,target,detail}. detail
 * may be NULL; a reference to it is taken, not stolen. */
ad_err store_audit(store_txn *tx, const char *actor, const char *action,
                   const char *target, const json_t *detail);
/* Audit entries with seq > after, up to limit, oldest first. */
ad_err store_audit_list(store_txn *tx, uint64_t after, size_t limit,
                        json_t **items, int *more);
/* Audit entries with seq < before (0: from the newest), up to limit,
 * newest first: a "newest N" question reads only N entries. */
ad_err store_audit_rlist(store_txn *tx, uint64_t before, size_t limit,
                         json_t **items, int *more);

/* The hash chain (docs/audit.md): every entry the writer appends carries
 * prev_hash, the hex SHA-256 of the previous entry's canonical form (the
 * entry object with all its members, keys sorted, compact, UTF-8); the
 * first entry's is 64 zeros. Entries written before the chain existed
 * have none: the chain starts at the first entry that has one, whose
 * prev_hash covers the entry before it. */
enum { STORE_AUDIT_HASH_HEX = 65 };
#define STORE_AUDIT_ZERO_HASH \
    "0000000000000000000000000000000000000000000000000000000000000000"
/* The canonical text of entry (malloc'd, NULL on failure). */
char *store_audit_canonical(const json_t *entry);
/* hex := SHA-256 of entry's canonical form. */
ad_err store_audit_hash(const json_t *entry, char hex[STORE_AUDIT_HASH_HEX]);
/* Checks the whole chain from one read snapshot, oldest first, entry by
 * entry: seq numbers must run 1, 2, 3, ... without a gap, and from the
 * first entry that carries prev_hash on every entry must carry the hash
 * of the one before it. *ok = 1 and *entries = how many there are (and
 * head = the hash of the newest, which an operator may write down: the
 * newest entry is proven by no successor), or *ok = 0 and *first_bad =
 * the seq of the first entry not proven: missing, or changed (its
 * successor's prev_hash does not match it), or without prev_hash after
 * the chain started. */
typedef struct {
    int ok;
    uint64_t entries, first_bad, unchained;
    char head[STORE_AUDIT_HASH_HEX];
} store_audit_check;
ad_err store_audit_verify(store *st, store_audit_check *out);

/* Appends an event {id,time,type,data} to the event log behind
 * GET /v1/events, in the same transaction as the change it reports. Ids
 * come from one counter shared by every node, in commit order: a reader
 * who has seen id N and lists after N misses nothing committed. The log
 * keeps the newest STORE_EVENTS_KEPT events. data: a reference is taken. */
enum { STORE_EVENTS_KEPT = 100000 };
ad_err store_event_append(store_txn *tx, const char *type, const json_t *data);
/* Events with id > after, oldest first, up to limit. */
ad_err store_event_list(store_txn *tx, uint64_t after, size_t limit,
                        json_t **items, int *more);

/* Copies a whole store into another (for `authd migrate`, e.g. LMDB to
 * PostgreSQL): every record as its stored text, every index entry, the
 * audit (keeping seq) and the event log (keeping ids; the destination's
 * counters move past them), in batches of writes on `to`, from one read
 * snapshot of `from`. Refuses with AD_ECONFLICT, copying nothing, if `to`
 * already holds devices or certificates. *counts (zeroed first) says how
 * many of each were copied, so the caller can compare with the source;
 * on error part of the data may have been copied. */
typedef struct {
    uint64_t records[STORE_TABLE__COUNT];
    uint64_t index_entries[STORE_IX__COUNT];
    uint64_t audit, events;
} store_copy_counts;
ad_err store_copy(store *from, store *to, store_copy_counts *counts,
                  char *err, size_t errlen);

/* What the writer has done, for /metrics: how well group commit batches
 * (writes per commit) and where its time goes (running writes versus
 * committing, which includes the flush of the pages); and the flusher's
 * flushes, which make commits durable. used_bytes / limit_bytes say how
 * full the store is: LMDB, the pages of the map in use and the map size
 * (map_mb), past which writes fail; PostgreSQL, pg_database_size as of
 * the last probe (at most ~10 s old; 0 before the first) and 0 for the
 * limit, which the database server sets, not authd. */
typedef struct {
    uint64_t commits, writes;
    uint64_t apply_ns, commit_ns;
    uint64_t syncs, sync_ns;
    uint64_t used_bytes, limit_bytes;
} store_stats;
void store_commit_stats(store *s, store_stats *out);

#endif
