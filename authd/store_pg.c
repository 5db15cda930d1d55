/* PostgreSQL behind store.h, for several authd nodes sharing one
 * registry. The schema is authd's own, created and migrated on open under
 * an advisory lock. Reads use pooled connections, each read transaction a
 * REPEATABLE READ snapshot like an LMDB read. Writes keep group commit:
 * one writer thread per node runs every pending write in one
 * transaction, each write under a savepoint, numbers the batch's audit
 * and event entries from a counters row locked until the commit (so ids
 * follow commit order across nodes), and NOTIFYs the changed records in
 * the same transaction. A listener thread turns other nodes'
 * notifications into change-feed calls. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "../common/buf.h"
#include "../common/codec.h"
#include "store_int.h"
#include "util.h"

#define PG_CHANNEL "authd_changes"
/* NOTIFY payloads must stay below 8000 bytes. */
#define PG_PAYLOAD_MAX 7800
/* Whole-batch retries after a deadlock or serialization failure. */
#define PG_RETRIES 10
/* How long store_read_begin waits for a pooled connection. */
#define PG_POOL_WAIT_S 10
/* Bounds what one batch buffers for the audit, events and NOTIFY. */
#define PG_BATCH_BUF_MAX ((size_t)256 << 20)
/* The advisory lock that serialises schema migrations of all nodes. */
#define PG_MIGRATE_LOCK "7262115001"
/* Blind writes one write function may have in flight before they are
 * answered: what the client and the server buffer stays bounded. */
#define PG_QUEUE_MAX 256
/* Pipeline entries: each queued statement may need its PREPARE, and the
 * statement that flushes the queue (with its PREPARE) or a savepoint
 * pair comes last. */
#define PG_ITEMS_MAX (2 * PG_QUEUE_MAX + 8)

/* ---- statements ------------------------------------------------------ *
 * One prepared statement per query kind, prepared on a connection the
 * first time it is used there. Per-table kinds are numbered
 * kind * STORE_TABLE__COUNT + table; the rest follow. */
enum {
    TK_GET, TK_GET_LOCK, TK_PUT, TK_PUT_NEW, TK_DEL, TK_LIST_B, TK_LIST_U,
    TK_SCAN, TK__COUNT
};
enum {
    G_IX_LIST = TK__COUNT * STORE_TABLE__COUNT,
    G_IX_LIST_LOCK, G_IX_FIRST, G_IX_FIRST_LOCK, G_IX_ADD, G_IX_DEL1,
    G_IX_DELALL, G_IX_SCAN, G_AUDIT_LIST, G_EVENT_LIST, G_AUDIT_INS,
    G_EVENT_INS, G_NOTIFY, G_AUDIT_PUT, G_EVENT_PUT, G_AUDIT_LOCK,
    G_AUDIT_HEAD, G_AUDIT_RLIST, STMT__COUNT
};
#define STMT_WORDS ((STMT__COUNT + 63) / 64)

static const char *const table_sql[TK__COUNT] = {
    "SELECT doc FROM t_%s WHERE key = $1",
    "SELECT doc FROM t_%s WHERE key = $1 FOR UPDATE",
    "INSERT INTO t_%s (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE "
    "SET doc = EXCLUDED.doc",
    "INSERT INTO t_%s (key, doc) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    "DELETE FROM t_%s WHERE key = $1",
    "SELECT doc FROM t_%s WHERE key >= $1 AND key <> $2 AND key < $3 "
    "ORDER BY key LIMIT $4::bigint",
    "SELECT doc FROM t_%s WHERE key >= $1 AND key <> $2 ORDER BY key "
    "LIMIT $3::bigint",
    "SELECT key, doc FROM t_%s WHERE key > $1 ORDER BY key LIMIT $2::bigint",
};

static const char *const global_sql[STMT__COUNT - G_IX_LIST] = {
    "SELECT val FROM ix WHERE ix = $1::smallint AND key = $2 AND val > $3 "
    "ORDER BY val LIMIT $4::bigint",
    "SELECT val FROM ix WHERE ix = $1::smallint AND key = $2 AND val > $3 "
    "ORDER BY val LIMIT $4::bigint FOR UPDATE",
    "SELECT val FROM ix WHERE ix = $1::smallint AND key = $2 ORDER BY val "
    "LIMIT 1",
    "SELECT val FROM ix WHERE ix = $1::smallint AND key = $2 ORDER BY val "
    "LIMIT 1 FOR UPDATE",
    "INSERT INTO ix (ix, key, val) VALUES ($1::smallint, $2, $3) "
    "ON CONFLICT DO NOTHING",
    "DELETE FROM ix WHERE ix = $1::smallint AND key = $2 AND val = $3",
    "DELETE FROM ix WHERE ix = $1::smallint AND key = $2",
    "SELECT key, val FROM ix WHERE ix = $1::smallint AND (key, val) > "
    "($2::text, $3::text) ORDER BY key, val LIMIT $4::bigint",
    "SELECT doc FROM audit WHERE seq > $1::bigint ORDER BY seq "
    "LIMIT $2::bigint",
    "SELECT doc FROM events WHERE id > $1::bigint ORDER BY id "
    "LIMIT $2::bigint",
    /* Entries numbered and chained already (see audit_chain). */
    "INSERT INTO audit (seq, doc) SELECT $1::bigint + u.o - 1, u.d FROM "
    "unnest($2::text[]) WITH ORDINALITY AS u(d, o)",
    "WITH c AS (UPDATE counters SET v = v + $1::bigint WHERE name = 'events' "
    "RETURNING v), i AS (INSERT INTO events (id, doc) SELECT "
    "c.v - $1::bigint + u.o, '{\"id\":' || (c.v - $1::bigint + u.o) || ',' "
    "|| substr(u.d, 2) FROM c, unnest($2::text[]) WITH ORDINALITY AS u(d, o)), "
    "p AS (DELETE FROM events WHERE id <= (SELECT v FROM c) - $3::bigint) "
    "SELECT v FROM c",
    "SELECT pg_notify('" PG_CHANNEL "', x) FROM unnest($1::text[]) AS x",
    "WITH i AS (INSERT INTO audit (seq, doc) VALUES ($1::bigint, $2) "
    "ON CONFLICT (seq) DO NOTHING) UPDATE counters SET v = greatest(v, "
    "$1::bigint) WHERE name = 'audit'",
    "WITH i AS (INSERT INTO events (id, doc) VALUES ($1::bigint, $2) "
    "ON CONFLICT (id) DO NOTHING) UPDATE counters SET v = greatest(v, "
    "$1::bigint) WHERE name = 'events'",
    /* The counter row stays locked until COMMIT: numbers follow commit
     * order across nodes, and so does the chain: the next statement (a
     * new snapshot, read committed) sees the newest entry, which stays
     * newest until this transaction ends. */
    "UPDATE counters SET v = v + $1::bigint WHERE name = 'audit'",
    "SELECT (SELECT v FROM counters WHERE name = 'audit'), "
    "(SELECT doc FROM audit ORDER BY seq DESC LIMIT 1)",
    "SELECT doc FROM audit WHERE seq < $1::bigint ORDER BY seq DESC "
    "LIMIT $2::bigint",
};

/* ---- schema ---------------------------------------------------------- *
 * Migration steps in order; step i brings the schema to version i + 1.
 * Never edit a released step: add one. Index tables keep the store_index
 * number in `ix`, so that enum only ever grows at its end. Every key is
 * COLLATE "C": lists come in byte order, as from LMDB. */
static const char *const migrations[] = {
    "CREATE TABLE t_devices (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_certs (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_enrollments (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_apikeys (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_meta (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_policies (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_groups (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_revoked_jtis (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_device_secrets (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE t_revoked_certs (key text COLLATE \"C\" PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE ix (ix smallint NOT NULL, key text COLLATE \"C\" NOT NULL,"
    " val text COLLATE \"C\" NOT NULL, PRIMARY KEY (ix, key, val));"
    "CREATE TABLE audit (seq bigint PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE events (id bigint PRIMARY KEY, doc text NOT NULL);"
    "CREATE TABLE counters (name text PRIMARY KEY, v bigint NOT NULL);"
    "INSERT INTO counters (name, v) VALUES ('audit', 0), ('events', 0);",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- handles ---------------------------------------------------------- */

typedef struct pconn {
    PGconn *c;
    uint64_t prepared[STMT_WORDS];
    int pending; /* a "ROLLBACK; BEGIN ..." was sent, its results unread */
    struct pconn *next;
} pconn;



typedef struct pstore {
    struct store base;
    char *url;      /* the connection URI: never printed */
    char *password; /* from the URI, to strip from libpq's messages */
    char node[17];  /* this node's random id, in its own notifications */

    /* Reads: a bounded pool of connections. */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_free;
    pconn *idle;
    unsigned conns, max_conns;

    /* Writes. */
    pthread_mutex_t lock;
    pthread_cond_t queued;
    store_pending *head, *tail;
    int stopping;
    pthread_t writer, listener;
    int writer_started, listener_started;
    pconn wc; /* the writer's connection */
    int (*sync_hook)(void *);
    void *sync_hook_arg;
    store_watcher watcher;

    /* The writer's batch (writer thread only). */
    store_chg *chg;
    size_t nchg, capchg;
    int chg_lost;
    buf_t audit_arr, event_arr; /* PG array literals "{...}" */
    json_t *audit_pending;      /* the batch's audit entries, unnumbered */
    size_t naudit, nevent;
    int batch_retry, batch_lost; /* a statement hit 40001/40P01, or EOF */

    /* Statements sent in pipeline mode on the writer's connection whose
     * results are unread, in order: a blind write (a put that may
     * overwrite, an index change) is sent without waiting and answered
     * together with the next statement whose result is needed. */
    struct pitem {
        int prep;  /* a PREPARE of this statement id, or -1 */
        int blind; /* a queued write, not the statement that flushes */
    } items[PG_ITEMS_MAX];
    size_t nitems, nq; /* entries; queued writes among them */

    /* The change feed and readiness. */
    atomic_int stop_listener;
    atomic_int feed_ok;   /* the listener is connected and listening */
    atomic_int db_failed; /* the last use of the database failed */

    atomic_uint_fast64_t commits, writes, apply_ns, commit_ns, retries;
    atomic_uint_fast64_t db_bytes; /* pg_database_size, for /metrics */
} pstore;

typedef struct {
    struct store_txn base;
    pstore *s;
    pconn *pc;
    PGresult **res; /* results kept until the transaction ends */
    size_t nres, capres;
    int failed; /* a statement failed: PostgreSQL aborted the txn */
} ptxn;

/* ---- errors ------------------------------------------------------------ */

/* Copies msg into out with every occurrence of the URL and the password
 * replaced, and without the trailing newline libpq adds. */
static void redact(const pstore *s, const char *url, const char *pw,
                   const char *msg, char *out, size_t outlen)
{
    size_t o = 0;
    const char *m = msg ? msg : "";

    (void)s;
    if (outlen == 0)
        return;
    while (*m && o + 1 < outlen) {
        size_t ul = url ? strlen(url) : 0, pl = pw ? strlen(pw) : 0;

        if (ul && strncmp(m, url, ul) == 0) {
            m += ul;
            o += (size_t)snprintf(out + o, outlen - o, "<url>");
        } else if (pl && strncmp(m, pw, pl) == 0) {
            m += pl;
            o += (size_t)snprintf(out + o, outlen - o, "***");
        } else {
            /* libpq's messages run over lines: keep one. */
            out[o++] = *m == '\n' ? ' ' : *m;
            m++;
        }
        if (o >= outlen)
            o = outlen - 1;
    }
    while (o > 0 && (out[o - 1] == '\n' || out[o - 1] == ' '))
        o--;
    out[o] = '\0';
}

static ad_err pg_errf(const pstore *s, char *err, size_t errlen,
                      const char *what, const char *msg)
{
    char clean[512];

    redact(s, s ? s->url : NULL, s ? s->password : NULL, msg, clean,
           sizeof(clean));
    return ad_errf(AD_ESTORE, err, errlen, "postgresql: %s: %s", what, clean);
}

/* ---- connections ------------------------------------------------------- */

/* NOTICEs (e.g. "already exists, skipping") are not for stderr. */
static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static PGconn *pg_connect(const pstore *s)
{
    /* Ours first: the URL's own settings override them. */
    const char *const keys[] = {"connect_timeout", "application_name",
                                "dbname", NULL};
    const char *const vals[] = {"5", "authd", s->url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);

    if (c != NULL)
        PQsetNoticeProcessor(c, quiet, NULL);
    return c;
}

static int conn_ok(const pconn *pc)
{
    return pc->c != NULL && PQstatus(pc->c) == CONNECTION_OK;
}

static void conn_drop(pconn *pc)
{
    if (pc->c)
        PQfinish(pc->c);
    pc->c = NULL;
    pc->pending = 0;
    memset(pc->prepared, 0, sizeof(pc->prepared));
}

/* (Re)connects pc: one attempt. */
static int conn_open(pstore *s, pconn *pc)
{
    conn_drop(pc);
    pc->c = pg_connect(s);
    if (!conn_ok(pc)) {
        conn_drop(pc);
        atomic_store(&s->db_failed, 1);
        return -1;
    }
    return 0;
}

enum { R_OK, R_SQL, R_RETRY, R_LOST };

static int classify(PGconn *c, const PGresult *r)
{
    const char *state;
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return R_OK;
    if (PQstatus(c) != CONNECTION_OK)
        return R_LOST;
    state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
        return R_RETRY;
    /* Class 08: connection exceptions; 57P0x: the server shuts down. */
    if (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))
        return R_LOST;
    return R_SQL;
}

static void stmt_sql(int id, char *out, size_t outlen)
{
    if (id < G_IX_LIST)
        snprintf(out, outlen, table_sql[id / STORE_TABLE__COUNT],
                 store_table_names[id % STORE_TABLE__COUNT]);
    else
        snprintf(out, outlen, "%s", global_sql[id - G_IX_LIST]);
}

/* Runs prepared statement id with params (text, or binary when len is
 * given, which for text is the raw bytes). Returns the result, or NULL
 * with *why set. */
static PGresult *run(pconn *pc, int id, int n, const char *const *vals,
                     const int *lens, int *why)
{
    char name[16];
    int fmts[4] = {0, 0, 0, 0}, i;
    PGresult *r;

    *why = R_LOST;
    if (pc->c == NULL)
        return NULL;
    snprintf(name, sizeof(name), "s%d", id);
    if (!(pc->prepared[id / 64] & ((uint64_t)1 << (id % 64)))) {
        char sql[1024];

        stmt_sql(id, sql, sizeof(sql));
        r = PQprepare(pc->c, name, sql, 0, NULL);
        if ((*why = classify(pc->c, r)) != R_OK) {
            PQclear(r);
            return NULL;
        }
        PQclear(r);
        pc->prepared[id / 64] |= (uint64_t)1 << (id % 64);
    }
    for (i = 0; lens && i < n && i < 4; i++)
        fmts[i] = lens[i] >= 0 ? 1 : 0;
    r = PQexecPrepared(pc->c, name, n, vals, lens, lens ? fmts : NULL, 0);
    if ((*why = classify(pc->c, r)) != R_OK) {
        PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- the writer's pipeline ---------------------------------------------- *
 * Sends statement id (or sql, unprepared and without parameters) in
 * pipeline mode, entering it when nothing is in flight, preceded by its
 * PREPARE the first time on this connection. The prepared bit is set as
 * the PREPARE leaves and cleared again if it is not answered with
 * success. Returns -1 when libpq would not take it: the caller abandons
 * the connection (pipe_abandon). */
static int pipe_send(pstore *s, pconn *pc, int id, const char *sql, int n,
                     const char *const *vals, const int *lens, int blind)
{
    char name[16];
    int fmts[4] = {0, 0, 0, 0}, i;

    if (pc->c == NULL || s->nitems + 2 > PG_ITEMS_MAX)
        return -1;
    if (PQpipelineStatus(pc->c) == PQ_PIPELINE_OFF &&
        PQenterPipelineMode(pc->c) != 1)
        return -1;
    if (sql != NULL) {
        if (PQsendQueryParams(pc->c, sql, 0, NULL, NULL, NULL, NULL, 0) != 1)
            return -1;
        s->items[s->nitems].prep = -1;
        s->items[s->nitems++].blind = blind;
        return 0;
    }
    snprintf(name, sizeof(name), "s%d", id);
    if (!(pc->prepared[id / 64] & ((uint64_t)1 << (id % 64)))) {
        char text[1024];

        stmt_sql(id, text, sizeof(text));
        if (PQsendPrepare(pc->c, name, text, 0, NULL) != 1)
            return -1;
        pc->prepared[id / 64] |= (uint64_t)1 << (id % 64);
        s->items[s->nitems].prep = id;
        s->items[s->nitems++].blind = blind;
    }
    for (i = 0; lens && i < n && i < 4; i++)
        fmts[i] = lens[i] >= 0 ? 1 : 0;
    if (PQsendQueryPrepared(pc->c, name, n, vals, lens, lens ? fmts : NULL,
                            0) != 1)
        return -1;
    s->items[s->nitems].prep = -1;
    s->items[s->nitems++].blind = blind;
    if (blind)
        s->nq++;
    return 0;
}

/* A pipeline that cannot be completed: its results are lost with the
 * connection. */
static void pipe_abandon(pstore *s, pconn *pc)
{
    conn_drop(pc);
    s->nitems = s->nq = 0;
}

/* Ends the pipeline with a sync and reads every answer: one round trip.
 * Returns how the first failing entry failed (R_OK if none did; the
 * server skips the rest up to the sync), with *blind_failed set if that
 * entry was a queued write. If want is given and the last entry is not
 * blind and succeeded, its result is handed over. Leaves pipeline mode,
 * or drops the connection (R_LOST). */
static int pipe_collect(pstore *s, pconn *pc, PGresult **want,
                        int *blind_failed)
{
    int why = R_OK, lost = 0;
    size_t i;
    PGresult *r;

    if (want)
        *want = NULL;
    *blind_failed = 0;
    if (s->nitems == 0)
        return R_OK;
    if (pc->c == NULL || PQpipelineSync(pc->c) != 1)
        lost = 1;
    for (i = 0; !lost && i < s->nitems; i++) {
        const struct pitem *it = &s->items[i];
        ExecStatusType st;

        if ((r = PQgetResult(pc->c)) == NULL) {
            lost = 1;
            break;
        }
        st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (want && i + 1 == s->nitems && !it->blind && it->prep < 0) {
                *want = r;
                r = NULL;
            }
        } else {
            if (it->prep >= 0)
                pc->prepared[it->prep / 64] &= ~((uint64_t)1 << (it->prep % 64));
            if (st != PGRES_PIPELINE_ABORTED && why == R_OK) {
                why = classify(pc->c, r);
                *blind_failed = it->blind;
            }
        }
        PQclear(r);
        /* Each entry's answer ends with a NULL. */
        if ((r = PQgetResult(pc->c)) != NULL) {
            PQclear(r);
            lost = 1;
        }
    }
    if (!lost) {
        r = PQgetResult(pc->c);
        if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC)
            lost = 1;
        PQclear(r);
    }
    if (!lost && PQexitPipelineMode(pc->c) != 1)
        lost = 1;
    s->nitems = s->nq = 0;
    if (lost) {
        if (want && *want) {
            PQclear(*want);
            *want = NULL;
        }
        pipe_abandon(s, pc);
        return R_LOST;
    }
    return why;
}

/* Marks the transaction failed as statement failure why demands: the
 * writer (or the read pool) will see it. */
static void tx_fail(ptxn *tx, int why, ad_err *e)
{
    tx->failed = 1;
    *e = AD_ESTORE;
    if (why == R_LOST) {
        *e = AD_EUNAVAIL;
        tx->failed = 2; /* the connection, not the statement */
        atomic_store(&tx->s->db_failed, 1);
        if (tx->base.writable)
            tx->s->batch_lost = 1;
    } else if (why == R_RETRY && tx->base.writable) {
        tx->s->batch_retry = 1;
    }
}

static int conn_begin_read(pstore *s, pconn *pc);

/* run() inside a transaction: notes failures where the writer (or the
 * read pool) will see them, and keeps the result until the txn ends.
 * With writes queued, it goes last in their pipeline: they are answered
 * in the same round trip, before it runs (read-your-writes), and if one
 * of them failed, so does it. */
static PGresult *tx_run(ptxn *tx, int id, int n, const char *const *vals,
                        const int *lens, ad_err *e)
{
    pstore *s = tx->s;
    PGresult *r;
    int why, blind_failed;

    *e = AD_OK;
    if (tx->failed) {
        *e = tx->failed == 2 ? AD_EUNAVAIL : AD_ESTORE;
        return NULL;
    }
    if (tx->nres == tx->capres) {
        size_t cap = tx->capres ? tx->capres * 2 : 8;
        PGresult **v = realloc(tx->res, cap * sizeof(*v));

        if (v == NULL) {
            *e = AD_ENOMEM;
            return NULL;
        }
        tx->res = v;
        tx->capres = cap;
    }
    if (tx->base.writable && s->nitems > 0) {
        if (pipe_send(s, tx->pc, id, NULL, n, vals, lens, 0) != 0) {
            pipe_abandon(s, tx->pc);
            r = NULL;
            why = R_LOST;
        } else {
            why = pipe_collect(s, tx->pc, &r, &blind_failed);
        }
    } else {
        r = run(tx->pc, id, n, vals, lens, &why);
        /* A pooled connection that the server dropped while it sat idle
         * (a restart, a failover, a cut) looks fine until its first
         * query. Before that query a read has taken no snapshot, so a
         * fresh connection asked the same answers exactly as this read
         * would have: one reconnect, not a 503. */
        if (r == NULL && why == R_LOST && !tx->base.writable &&
            tx->nres == 0 && conn_begin_read(s, tx->pc) == 0)
            r = run(tx->pc, id, n, vals, lens, &why);
    }
    if (r == NULL) {
        tx_fail(tx, why, e);
        return NULL;
    }
    tx->res[tx->nres++] = r;
    return r;
}

/* A blind write in the writer's transaction: sent without waiting for
 * its answer (see tx_run). AD_OK means queued; its failure shows at the
 * next statement that is answered, or when the write function returns,
 * and fails the write then as if it had been synchronous. */
static ad_err tx_queue(ptxn *tx, int id, int n, const char *const *vals,
                       const int *lens)
{
    pstore *s = tx->s;
    int why, blind_failed;
    ad_err e;

    if (!tx->base.writable)
        return tx_run(tx, id, n, vals, lens, &e) ? AD_OK : e;
    if (tx->failed)
        return tx->failed == 2 ? AD_EUNAVAIL : AD_ESTORE;
    if (s->nq >= PG_QUEUE_MAX &&
        (why = pipe_collect(s, tx->pc, NULL, &blind_failed)) != R_OK) {
        tx_fail(tx, why, &e);
        return e;
    }
    if (pipe_send(s, tx->pc, id, NULL, n, vals, lens, 1) != 0) {
        pipe_abandon(s, tx->pc);
        tx_fail(tx, R_LOST, &e);
        return e;
    }
    return AD_OK;
}

static void tx_clear(ptxn *tx)
{
    while (tx->nres > 0)
        PQclear(tx->res[--tx->nres]);
}

/* ---- reads ------------------------------------------------------------- */

/* Each pooled connection sits in a fresh REPEATABLE READ READ ONLY
 * transaction: its snapshot is taken by the first query of the next
 * read, so a read costs its queries only. Ending a read sends the
 * ROLLBACK and the next BEGIN without waiting for them. */
#define READ_RESET "ROLLBACK; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
#define READ_BEGIN "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

static int conn_settle(pconn *pc)
{
    PGresult *r;
    int good = 1;

    if (!pc->pending)
        return conn_ok(pc) ? 0 : -1;
    pc->pending = 0;
    while ((r = PQgetResult(pc->c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            good = 0;
        PQclear(r);
    }
    return good && conn_ok(pc) ? 0 : -1;
}

static int conn_begin_read(pstore *s, pconn *pc)
{
    PGresult *r;
    int good;

    if (conn_open(s, pc) != 0)
        return -1;
    r = PQexec(pc->c, READ_BEGIN);
    good = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return good ? 0 : -1;
}

static ad_err p_read_begin(store *base, store_txn **out)
{
    pstore *s = (pstore *)base;
    pconn *pc = NULL;
    ptxn *tx;
    struct timespec until;

    tx = calloc(1, sizeof(*tx));
    if (tx == NULL)
        return AD_ENOMEM;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PG_POOL_WAIT_S;
    pthread_mutex_lock(&s->pool_lock);
    while (s->idle == NULL && s->conns >= s->max_conns)
        if (pthread_cond_timedwait(&s->pool_free, &s->pool_lock, &until) ==
            ETIMEDOUT)
            break;
    if (s->idle != NULL) {
        pc = s->idle;
        s->idle = pc->next;
    } else if (s->conns < s->max_conns) {
        s->conns++; /* ours: opened below, outside the lock */
        pc = calloc(1, sizeof(*pc));
        if (pc == NULL)
            s->conns--;
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (pc == NULL) {
        free(tx);
        return AD_ESTORE;
    }
    pc->next = NULL;
    if (conn_settle(pc) != 0 && conn_begin_read(s, pc) != 0) {
        conn_drop(pc);
        /* Back to the pool unconnected: the next read reconnects. */
        pthread_mutex_lock(&s->pool_lock);
        pc->next = s->idle;
        s->idle = pc;
        pthread_cond_signal(&s->pool_free);
        pthread_mutex_unlock(&s->pool_lock);
        free(tx);
        return AD_EUNAVAIL;
    }
    tx->base.s = base;
    tx->s = s;
    tx->pc = pc;
    *out = &tx->base;
    return AD_OK;
}

static void p_read_end(store_txn *btx)
{
    ptxn *tx = (ptxn *)btx;
    pstore *s = tx->s;
    pconn *pc = tx->pc;

    tx_clear(tx);
    free(tx->res);
    if (conn_ok(pc) && PQsendQuery(pc->c, READ_RESET) == 1)
        pc->pending = 1;
    else
        conn_drop(pc);
    pthread_mutex_lock(&s->pool_lock);
    pc->next = s->idle;
    s->idle = pc;
    pthread_cond_signal(&s->pool_free);
    pthread_mutex_unlock(&s->pool_lock);
    free(tx);
}

/* ---- operations --------------------------------------------------------- */

static ad_err p_get_raw(store_txn *btx, store_table t, const char *key,
                        const char **text, size_t *len)
{
    ptxn *tx = (ptxn *)btx;
    const char *v[1] = {key};
    PGresult *r;
    ad_err e;

    r = tx_run(tx, (btx->writable ? TK_GET_LOCK : TK_GET) * STORE_TABLE__COUNT +
                       (int)t,
               1, v, NULL, &e);
    if (r == NULL)
        return e;
    if (PQntuples(r) == 0)
        return AD_ENOTFOUND;
    *text = PQgetvalue(r, 0, 0);
    *len = (size_t)PQgetlength(r, 0, 0);
    return AD_OK;
}

/* Records a put or delete of the writer's batch. */
static void chg_note(pstore *s, store_table t, const char *key)
{
    if (!s->chg_lost &&
        store_chg_append(&s->chg, &s->nchg, &s->capchg, t, key) != 0)
        s->chg_lost = 1;
}

static ad_err p_put_text(store_txn *btx, store_table t, const char *key,
                         const char *text, size_t len, int flags)
{
    ptxn *tx = (ptxn *)btx;
    const char *v[2] = {key, text};
    int lens[2] = {-1, (int)len};
    int id = ((flags & STORE_NOOVERWRITE) ? TK_PUT_NEW : TK_PUT) *
                 STORE_TABLE__COUNT +
             (int)t;
    PGresult *r;
    ad_err e;

    /* Text goes as binary: the bytes as they are, no NUL needed. */
    if (memchr(text, '\0', len) != NULL)
        return AD_EFIELD;
    if (!(flags & STORE_NOOVERWRITE)) {
        /* An upsert answers nothing the caller needs: queued. */
        if ((e = tx_queue(tx, id, 2, v, lens)) != AD_OK)
            return e;
        chg_note(tx->s, t, key);
        return AD_OK;
    }
    r = tx_run(tx, id, 2, v, lens, &e);
    if (r == NULL)
        return e;
    if (strcmp(PQcmdTuples(r), "0") == 0)
        return AD_EEXISTS;
    chg_note(tx->s, t, key);
    return AD_OK;
}

static ad_err p_del(store_txn *btx, store_table t, const char *key)
{
    ptxn *tx = (ptxn *)btx;
    const char *v[1] = {key};
    PGresult *r;
    ad_err e;

    r = tx_run(tx, TK_DEL * STORE_TABLE__COUNT + (int)t, 1, v, NULL, &e);
    if (r == NULL)
        return e;
    if (strcmp(PQcmdTuples(r), "0") == 0)
        return AD_ENOTFOUND;
    chg_note(tx->s, t, key);
    return AD_OK;
}

static void limit_text(size_t limit, char *out, size_t outlen)
{
    /* One more than asked, to learn whether more follow. */
    if (limit > 1000000000)
        limit = 1000000000;
    snprintf(out, outlen, "%zu", limit + 1);
}

/* Appends the column-0 JSON documents of r to a new array; the row past
 * limit sets *more. */
static ad_err docs_of(PGresult *r, size_t limit, json_t **items, int *more)
{
    json_t *arr = json_array();
    int i, n = PQntuples(r);

    if (arr == NULL)
        return AD_ENOMEM;
    for (i = 0; i < n; i++) {
        json_error_t jerr;
        json_t *rec;

        if ((size_t)i >= limit) {
            *more = 1;
            break;
        }
        rec = json_loadb(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0), 0,
                         &jerr);
        if (rec == NULL) {
            json_decref(arr);
            return AD_ESTORE;
        }
        json_array_append_new(arr, rec);
    }
    *items = arr;
    return AD_OK;
}

/* The smallest string above every string with this prefix, in byte
 * order; 0 if there is none (empty, or only 0xff bytes). */
static int prefix_end(const char *prefix, char *out, size_t outlen)
{
    size_t n = strlen(prefix);

    if (n + 1 > outlen)
        return 0;
    memcpy(out, prefix, n + 1);
    while (n > 0 && (unsigned char)out[n - 1] == 0xff)
        out[--n] = '\0';
    if (n == 0)
        return 0;
    out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
    out[n] = '\0';
    return 1;
}

static ad_err p_list(store_txn *btx, store_table t, const char *prefix,
                     const char *after, size_t limit, json_t **items,
                     int *more)
{
    ptxn *tx = (ptxn *)btx;
    char end[512], lim[32];
    const char *lo = prefix, *skip = "";
    const char *v[4];
    PGresult *r;
    ad_err e;
    int bounded;

    if (strlen(prefix) >= sizeof(end)) {
        *items = json_array();
        return *items ? AD_OK : AD_ENOMEM;
    }
    /* Start at the prefix, or just after the cursor if that is later. */
    if (after && *after && strcmp(after, prefix) >= 0) {
        lo = after;
        skip = after;
    }
    limit_text(limit, lim, sizeof(lim));
    bounded = prefix_end(prefix, end, sizeof(end));
    v[0] = lo;
    v[1] = skip;
    if (bounded) {
        v[2] = end;
        v[3] = lim;
        r = tx_run(tx, TK_LIST_B * STORE_TABLE__COUNT + (int)t, 4, v, NULL, &e);
    } else {
        v[2] = lim;
        r = tx_run(tx, TK_LIST_U * STORE_TABLE__COUNT + (int)t, 3, v, NULL, &e);
    }
    if (r == NULL)
        return e;
    return docs_of(r, limit, items, more);
}

static ad_err p_table_scan(store_txn *btx, store_table t, const char *after,
                           size_t limit, json_t **pairs, int *more)
{
    ptxn *tx = (ptxn *)btx;
    char lim[32];
    const char *v[2];
    json_t *arr;
    PGresult *r;
    ad_err e;
    int i, n;

    limit_text(limit, lim, sizeof(lim));
    v[0] = after ? after : "";
    v[1] = lim;
    r = tx_run(tx, TK_SCAN * STORE_TABLE__COUNT + (int)t, 2, v, NULL, &e);
    if (r == NULL)
        return e;
    if ((arr = json_array()) == NULL)
        return AD_ENOMEM;
    n = PQntuples(r);
    for (i = 0; i < n; i++) {
        if ((size_t)i >= limit) {
            *more = 1;
            break;
        }
        if (json_array_append_new(
                arr, json_pack("[s#, s#]", PQgetvalue(r, i, 0),
                               PQgetlength(r, i, 0), PQgetvalue(r, i, 1),
                               PQgetlength(r, i, 1))) != 0) {
            json_decref(arr);
            return AD_ENOMEM;
        }
    }
    *pairs = arr;
    return AD_OK;
}

static ad_err p_index_add(store_txn *btx, store_index ix, const char *key,
                          const char *val)
{
    ptxn *tx = (ptxn *)btx;
    char ixs[8];
    const char *v[3] = {ixs, key, val};

    snprintf(ixs, sizeof(ixs), "%d", (int)ix);
    return tx_queue(tx, G_IX_ADD, 3, v, NULL);
}

static ad_err p_index_del(store_txn *btx, store_index ix, const char *key,
                          const char *val)
{
    ptxn *tx = (ptxn *)btx;
    char ixs[8];
    const char *v[3] = {ixs, key, val};

    snprintf(ixs, sizeof(ixs), "%d", (int)ix);
    return tx_queue(tx, val ? G_IX_DEL1 : G_IX_DELALL, val ? 3 : 2, v, NULL);
}

static ad_err p_index_list(store_txn *btx, store_index ix, const char *key,
                           const char *after, size_t limit, json_t **values,
                           int *more)
{
    ptxn *tx = (ptxn *)btx;
    char ixs[8], lim[32];
    const char *v[4] = {ixs, key, after ? after : "", lim};
    json_t *arr;
    PGresult *r;
    ad_err e;
    int i, n;

    snprintf(ixs, sizeof(ixs), "%d", (int)ix);
    limit_text(limit, lim, sizeof(lim));
    r = tx_run(tx, btx->writable ? G_IX_LIST_LOCK : G_IX_LIST, 4, v, NULL, &e);
    if (r == NULL)
        return e;
    if ((arr = json_array()) == NULL)
        return AD_ENOMEM;
    n = PQntuples(r);
    for (i = 0; i < n; i++) {
        if ((size_t)i >= limit) {
            *more = 1;
            break;
        }
        json_array_append_new(arr, json_stringn(PQgetvalue(r, i, 0),
                                                (size_t)PQgetlength(r, i, 0)));
    }
    *values = arr;
    return AD_OK;
}

static ad_err p_index_first(store_txn *btx, store_index ix, const char *key,
                            char *out, size_t outlen)
{
    ptxn *tx = (ptxn *)btx;
    char ixs[8];
    const char *v[2] = {ixs, key};
    PGresult *r;
    ad_err e;
    size_t len;

    snprintf(ixs, sizeof(ixs), "%d", (int)ix);
    r = tx_run(tx, btx->writable ? G_IX_FIRST_LOCK : G_IX_FIRST, 2, v, NULL,
               &e);
    if (r == NULL)
        return e;
    if (PQntuples(r) == 0)
        return AD_ENOTFOUND;
    len = (size_t)PQgetlength(r, 0, 0);
    if (len >= outlen)
        return AD_EINTERNAL;
    memcpy(out, PQgetvalue(r, 0, 0), len);
    out[len] = '\0';
    return AD_OK;
}

static ad_err p_index_scan(store_txn *btx, store_index ix,
                           const char *after_key, const char *after_val,
                           size_t limit, json_t **pairs, int *more)
{
    ptxn *tx = (ptxn *)btx;
    char ixs[8], lim[32];
    const char *v[4] = {ixs, after_key ? after_key : "",
                        after_val ? after_val : "", lim};
    json_t *arr;
    PGresult *r;
    ad_err e;
    int i, n;

    snprintf(ixs, sizeof(ixs), "%d", (int)ix);
    limit_text(limit, lim, sizeof(lim));
    r = tx_run(tx, G_IX_SCAN, 4, v, NULL, &e);
    if (r == NULL)
        return e;
    if ((arr = json_array()) == NULL)
        return AD_ENOMEM;
    n = PQntuples(r);
    for (i = 0; i < n; i++) {
        if ((size_t)i >= limit) {
            *more = 1;
            break;
        }
        json_array_append_new(
            arr, json_pack("[s#, s#]", PQgetvalue(r, i, 0),
                           PQgetlength(r, i, 0), PQgetvalue(r, i, 1),
                           PQgetlength(r, i, 1)));
    }
    *pairs = arr;
    return AD_OK;
}

/* ---- audit and events ----------------------------------------------------- */

/* Appends text as one element of a PostgreSQL array literal. */
static void arr_append(buf_t *b, size_t count, const char *text)
{
    const char *p;

    buf_append_str(b, count ? ",\"" : "\"");
    for (p = text; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_append_byte(b, '\\');
        buf_append_byte(b, (unsigned char)*p);
    }
    buf_append_byte(b, '"');
}

/* Buffers an entry (its number is given at COMMIT, see G_AUDIT_INS). */
static ad_err buffer_entry(buf_t *b, size_t *count, json_t *entry)
{
    char *text;

    if (entry == NULL)
        return AD_ENOMEM;
    text = json_dumps(entry, JSON_COMPACT);
    json_decref(entry);
    if (text == NULL)
        return AD_ENOMEM;
    arr_append(b, *count, text);
    free(text);
    if (buf_failed(b))
        return AD_ENOMEM;
    (*count)++;
    return AD_OK;
}

static ad_err p_audit(store_txn *btx, const char *actor, const char *action,
                      const char *target, const json_t *detail)
{
    ptxn *tx = (ptxn *)btx;
    char when[32];

    json_t *entry;
    ad_err e;

    util_time_rfc3339(time(NULL), when, sizeof(when));
    entry = json_pack("{s:s, s:s, s:s, s:s?, s:O?}", "time", when, "actor",
                      actor ? actor : "system", "action", action, "target",
                      target, "detail", detail);
    if (entry == NULL || json_array_append(tx->s->audit_pending, entry) != 0) {
        json_decref(entry);
        return AD_ENOMEM;
    }
    /* Buffered as text too: it bounds what a batch holds. */
    e = buffer_entry(&tx->s->audit_arr, &tx->s->naudit, entry);
    if (e != AD_OK)
        json_array_remove(tx->s->audit_pending,
                          json_array_size(tx->s->audit_pending) - 1);
    return e;
}

static ad_err p_event_append(store_txn *btx, const char *type,
                             const json_t *data)
{
    ptxn *tx = (ptxn *)btx;
    char when[32];

    util_time_rfc3339(time(NULL), when, sizeof(when));
    return buffer_entry(&tx->s->event_arr, &tx->s->nevent,
                        json_pack("{s:s, s:s, s:O?}", "time", when, "type",
                                  type, "data", data));
}

static ad_err log_list(ptxn *tx, int id, uint64_t after, size_t limit,
                       json_t **items, int *more)
{
    char a[32], lim[32];
    const char *v[2] = {a, lim};
    PGresult *r;
    ad_err e;

    if (after > (uint64_t)INT64_MAX)
        after = (uint64_t)INT64_MAX;
    snprintf(a, sizeof(a), "%llu", (unsigned long long)after);
    limit_text(limit, lim, sizeof(lim));
    r = tx_run(tx, id, 2, v, NULL, &e);
    if (r == NULL)
        return e;
    return docs_of(r, limit, items, more);
}

static ad_err p_audit_list(store_txn *tx, uint64_t after, size_t limit,
                           json_t **items, int *more)
{
    return log_list((ptxn *)tx, G_AUDIT_LIST, after, limit, items, more);
}

static ad_err p_audit_rlist(store_txn *tx, uint64_t before, size_t limit,
                            json_t **items, int *more)
{
    /* before 0 (from the newest) as a bound above every seq. */
    return log_list((ptxn *)tx, G_AUDIT_RLIST,
                    before == 0 ? (uint64_t)INT64_MAX : before, limit, items,
                    more);
}

static ad_err p_event_list(store_txn *tx, uint64_t after, size_t limit,
                           json_t **items, int *more)
{
    return log_list((ptxn *)tx, G_EVENT_LIST, after, limit, items, more);
}

static ad_err log_put(ptxn *tx, int id, uint64_t n, const char *text,
                      size_t len)
{
    char a[32];
    const char *v[2] = {a, text};
    int lens[2] = {-1, (int)len};
    ad_err e;

    snprintf(a, sizeof(a), "%llu", (unsigned long long)n);
    return tx_run(tx, id, 2, v, lens, &e) ? AD_OK : e;
}

static ad_err p_audit_put(store_txn *tx, uint64_t seq, const char *text,
                          size_t len)
{
    return log_put((ptxn *)tx, G_AUDIT_PUT, seq, text, len);
}

static ad_err p_event_put(store_txn *tx, uint64_t id, const char *text,
                          size_t len)
{
    return log_put((ptxn *)tx, G_EVENT_PUT, id, text, len);
}

/* ---- the change feed ------------------------------------------------------ */

/* Keys travel percent-encoded, so that lines and array quoting hold. */
static void key_encode(buf_t *b, const char *key)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p;

    for (p = (const unsigned char *)key; *p; p++) {
        if (*p <= 0x20 || *p == '%' || *p == '"' || *p == '\\' || *p >= 0x7f) {
            buf_append_byte(b, '%');
            buf_append_byte(b, (unsigned char)hex[*p >> 4]);
            buf_append_byte(b, (unsigned char)hex[*p & 15]);
        } else {
            buf_append_byte(b, *p);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Builds the NOTIFY payloads of the batch as a PostgreSQL array literal:
 * each "<node>\n" then lines "r<table> <key>" and "e <id>", below the
 * payload limit, in the order store_chg_settle left them. */
static void build_payloads(pstore *s, uint64_t event_id, buf_t *out)
{
    buf_t line;
    size_t i, start = 0, count = 0;

    buf_init(&line, 4096);
    buf_append_byte(out, '{');
    for (i = 0; i <= s->nchg; i++) {
        buf_truncate(&line, 0);
        if (i < s->nchg) {
            buf_printf(&line, "r%d ", (int)s->chg[i].t);
            key_encode(&line, s->chg[i].key);
        } else if (event_id != 0) {
            buf_printf(&line, "e %llu", (unsigned long long)event_id);
        } else if (s->chg_lost) {
            buf_printf(&line, "u");
        } else {
            break;
        }
        buf_append_byte(&line, '\n');
        if (count == 0 || buf_len(out) - start + buf_len(&line) > PG_PAYLOAD_MAX) {
            if (count > 0)
                buf_append_str(out, "\",");
            start = buf_len(out);
            buf_printf(out, "\"%s\n", s->node);
            count++;
        }
        buf_append(out, buf_str(&line), buf_len(&line));
    }
    if (count > 0)
        buf_append_byte(out, '"');
    buf_append_byte(out, '}');
    buf_free(&line);
}

/* Tells the local watcher what the committed batch changed. */
static void report_local(pstore *s, uint64_t event_id)
{
    store_watch_fn fn;
    store_change c;
    void *arg;
    size_t i;

    fn = store_watcher_hold(&s->watcher, &arg);
    if (fn == NULL)
        goto out;
    memset(&c, 0, sizeof(c));
    if (s->chg_lost) {
        c.kind = STORE_CHANGE_UNKNOWN;
        fn(arg, &c);
    }
    for (i = 0; i < s->nchg; i++) {
        c.kind = STORE_CHANGE_RECORD;
        c.table = s->chg[i].t;
        c.key = s->chg[i].key;
        fn(arg, &c);
    }
    if (event_id != 0) {
        memset(&c, 0, sizeof(c));
        c.kind = STORE_CHANGE_EVENTS;
        c.event_id = event_id;
        fn(arg, &c);
    }
out:
    store_watcher_release(&s->watcher);
}

/* Calls the watcher for one notification of another node. */
static void report_remote(pstore *s, const char *payload)
{
    store_watch_fn fn;
    store_change c;
    void *arg;
    const char *p = payload, *nl;
    char key[512];

    nl = strchr(p, '\n');
    if (nl == NULL || (size_t)(nl - p) != strlen(s->node) ||
        memcmp(p, s->node, strlen(s->node)) == 0)
        return; /* ours (reported before our write returned), or junk */
    fn = store_watcher_hold(&s->watcher, &arg);
    if (fn == NULL)
        goto out;
    for (p = nl + 1; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (nl == NULL)
            break;
        memset(&c, 0, sizeof(c));
        if (*p == 'r') {
            char *end;
            long t = strtol(p + 1, &end, 10);
            size_t k = 0;

            if (end == p + 1 || *end != ' ' || t < 0 || t >= STORE_TABLE__COUNT)
                continue;
            for (p = end + 1; p < nl && k + 1 < sizeof(key); p++) {
                if (*p == '%' && nl - p >= 3 && hexval(p[1]) >= 0 &&
                    hexval(p[2]) >= 0) {
                    key[k++] = (char)(hexval(p[1]) * 16 + hexval(p[2]));
                    p += 2;
                } else {
                    key[k++] = *p;
                }
            }
            key[k] = '\0';
            c.kind = STORE_CHANGE_RECORD;
            c.table = (store_table)t;
            c.key = key;
        } else if (*p == 'e') {
            c.kind = STORE_CHANGE_EVENTS;
            c.event_id = strtoull(p + 2, NULL, 10);
        } else if (*p == 'u') {
            c.kind = STORE_CHANGE_UNKNOWN;
        } else {
            continue;
        }
        fn(arg, &c);
    }
out:
    store_watcher_release(&s->watcher);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static PGconn *listen_connect(pstore *s)
{
    PGconn *c = pg_connect(s);
    PGresult *r;

    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    r = PQexec(c, "LISTEN " PG_CHANNEL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        PQclear(r);
        PQfinish(c);
        return NULL;
    }
    PQclear(r);
    return c;
}

/* The listener: LISTENs on its own connection, reports other nodes'
 * changes, probes the database every second, and reconnects every
 * 250 ms when the connection is gone (then reports UNKNOWN: changes may
 * have been missed). */
static void *listener_main(void *arg)
{
    pstore *s = arg;
    PGconn *c = NULL;
    uint64_t last_probe = util_now_ns();
    unsigned probes = 0;
    int lost = 0;

    while (!atomic_load(&s->stop_listener)) {
        struct pollfd pfd;
        PGnotify *n;
        int rc;

        if (c == NULL) {
            c = listen_connect(s);
            if (c == NULL) {
                sleep_ms(250);
                continue;
            }
            if (lost) {
                store_watch_fn fn;
                void *warg;
                store_change u;

                memset(&u, 0, sizeof(u));
                u.kind = STORE_CHANGE_UNKNOWN;
                fn = store_watcher_hold(&s->watcher, &warg);
                if (fn)
                    fn(warg, &u);
                store_watcher_release(&s->watcher);
            }
            lost = 0;
            atomic_store(&s->db_failed, 0);
            atomic_store(&s->feed_ok, 1);
            last_probe = util_now_ns();
        }
        pfd.fd = PQsocket(c);
        pfd.events = POLLIN;
        pfd.revents = 0;
        rc = poll(&pfd, 1, 200);
        if (rc > 0 && PQconsumeInput(c) == 0)
            goto drop;
        while ((n = PQnotifies(c)) != NULL) {
            report_remote(s, n->extra);
            PQfreemem(n);
        }
        if (util_now_ns() - last_probe > 1000000000ULL) {
            /* Every tenth probe also measures the database, for
             * /metrics: pg_database_size walks the database's files, too
             * much to do each second or per scrape. */
            int sized = probes++ % 10 == 0;
            PGresult *r = PQexec(c, sized ? "SELECT pg_database_size("
                                            "current_database())"
                                          : "SELECT 1");
            int good = PQresultStatus(r) == PGRES_TUPLES_OK;
            uint64_t bytes;

            if (good && sized && PQntuples(r) == 1 &&
                codec_parse_u64(PQgetvalue(r, 0, 0), UINT64_MAX, &bytes) == 0)
                atomic_store(&s->db_bytes, bytes);
            PQclear(r);
            last_probe = util_now_ns();
            if (!good)
                goto drop;
            atomic_store(&s->db_failed, 0);
            /* Notifications read while waiting for the probe. */
            while ((n = PQnotifies(c)) != NULL) {
                report_remote(s, n->extra);
                PQfreemem(n);
            }
        }
        if (PQstatus(c) == CONNECTION_OK)
            continue;
drop:
        atomic_store(&s->feed_ok, 0);
        PQfinish(c);
        c = NULL;
        lost = 1;
    }
    if (c)
        PQfinish(c);
    return NULL;
}

/* ---- the writer ------------------------------------------------------------ */

enum { B_OK, B_RETRY, B_LOST, B_FAILED, B_UNKNOWN };

static int simple(pconn *pc, const char *sql)
{
    PGresult *r = PQexec(pc->c, sql);
    int why = classify(pc->c, r);

    PQclear(r);
    return why;
}

static int why_batch(int why)
{
    return why == R_RETRY ? B_RETRY : why == R_LOST ? B_LOST : B_FAILED;
}

static void batch_reset(pstore *s)
{
    while (s->nchg > 0)
        free(s->chg[--s->nchg].key);
    s->chg_lost = 0;
    buf_truncate(&s->audit_arr, 0);
    buf_truncate(&s->event_arr, 0);
    s->audit_arr.failed = 0;
    s->event_arr.failed = 0;
    buf_append_byte(&s->audit_arr, '{');
    buf_append_byte(&s->event_arr, '{');
    s->naudit = s->nevent = 0;
    json_array_clear(s->audit_pending);
    s->batch_retry = s->batch_lost = 0;
}

/* Queues the insert that numbers the batch's buffered audit or event
 * entries (see G_AUDIT_INS), if there are any; arr is closed already. */
static int log_send(pstore *s, int id, buf_t *arr, size_t count, int blind)
{
    char n[32], kept[32];
    const char *v[3] = {n, NULL, kept};

    if (count == 0)
        return 0;
    snprintf(n, sizeof(n), "%zu", count);
    snprintf(kept, sizeof(kept), "%d", (int)STORE_EVENTS_KEPT);
    v[1] = buf_str(arr);
    return pipe_send(s, &s->wc, id, NULL, id == G_EVENT_INS ? 3 : 2, v, NULL,
                     blind);
}

/* Numbers and chains the batch's audit entries and queues their insert:
 * takes the audit counter's row lock (held until COMMIT), reads the
 * counter and the newest entry in a new statement, which sees every
 * entry committed before the lock was ours, then hashes on from there.
 * Returns B_OK or how the batch fails. */
static int audit_chain(pstore *s)
{
    char n[32], first[32], prev[STORE_AUDIT_HASH_HEX];
    const char *v[2] = {n, NULL};
    PGresult *r = NULL;
    json_t *last = NULL, *entry;
    uint64_t top;
    size_t i;
    int why, blind_failed, rc = B_FAILED;

    snprintf(n, sizeof(n), "%zu", s->naudit);
    if (pipe_send(s, &s->wc, G_AUDIT_LOCK, NULL, 1, v, NULL, 1) != 0 ||
        pipe_send(s, &s->wc, G_AUDIT_HEAD, NULL, 0, NULL, NULL, 0) != 0) {
        pipe_abandon(s, &s->wc);
        return B_LOST;
    }
    if ((why = pipe_collect(s, &s->wc, &r, &blind_failed)) != R_OK)
        return why_batch(why);
    if (r == NULL || PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
        goto out;
    top = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    if (top < s->naudit)
        goto out;
    memcpy(prev, STORE_AUDIT_ZERO_HASH, sizeof(prev));
    if (!PQgetisnull(r, 0, 1)) {
        last = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
        if (last == NULL || store_audit_hash(last, prev) != AD_OK)
            goto out;
    }
    buf_truncate(&s->audit_arr, 0);
    buf_append_byte(&s->audit_arr, '{');
    json_array_foreach(s->audit_pending, i, entry) {
        char *text;

        if (json_object_set_new(entry, "seq",
                                json_integer((json_int_t)(top - s->naudit +
                                                          1 + i))) != 0 ||
            json_object_set_new(entry, "prev_hash", json_string(prev)) != 0)
            goto out;
        if ((text = store_audit_canonical(entry)) == NULL)
            goto out;
        arr_append(&s->audit_arr, i, text);
        free(text);
        if (store_audit_hash(entry, prev) != AD_OK)
            goto out;
    }
    if (buf_append_byte(&s->audit_arr, '}') != 0 || buf_failed(&s->audit_arr))
        goto out;
    snprintf(first, sizeof(first), "%llu",
             (unsigned long long)(top - s->naudit + 1));
    v[0] = first;
    v[1] = buf_str(&s->audit_arr);
    if (pipe_send(s, &s->wc, G_AUDIT_INS, NULL, 2, v, NULL, 1) != 0) {
        pipe_abandon(s, &s->wc);
        rc = B_LOST;
        goto out;
    }
    rc = B_OK;
out:
    json_decref(last);
    PQclear(r);
    return rc;
}

/* Runs the batch once in one transaction. *commit_sent is set once the
 * COMMIT left for the server (after which its fate may be unknown). */
static int run_batch(pstore *s, store_pending *batch, int n,
                     uint64_t *event_id, int *commit_sent)
{
    ptxn tx;
    store_pending *p;
    int why, rc = B_OK, savepoints = n > 1, blind_failed;
    int (*hook)(void *);
    void *hook_arg;

    *commit_sent = 0;
    *event_id = 0;
    batch_reset(s);
    if (!conn_ok(&s->wc) && conn_open(s, &s->wc) != 0)
        return B_LOST;
    /* Answered with the first write's first statement: a failure then
     * is the connection's, and fails the batch (B_LOST, retried). */
    if (pipe_send(s, &s->wc, -1, "BEGIN", 0, NULL, NULL, 1) != 0 ||
        (savepoints &&
         pipe_send(s, &s->wc, -1, "SAVEPOINT w", 0, NULL, NULL, 1) != 0)) {
        pipe_abandon(s, &s->wc);
        return B_LOST;
    }
    memset(&tx, 0, sizeof(tx));
    tx.base.s = &s->base;
    tx.base.writable = 1;
    tx.s = s;
    tx.pc = &s->wc;
    for (p = batch; p != NULL; p = p->next) {
        size_t mchg = s->nchg, mal = buf_len(&s->audit_arr),
               mel = buf_len(&s->event_arr), ma = s->naudit, me = s->nevent;
        int moved = 0;

        tx.failed = 0;
        p->result = p->fn(&tx.base, p->arg);
        if (s->nitems > 0 && !s->batch_retry && !s->batch_lost) {
            /* The write's queued statements are answered now: their
             * failure is its failure. When it succeeded and another
             * write follows, the savepoint moves in the same round
             * trip (skipped by the server if a queued one failed). */
            int more = p->result == AD_OK && !tx.failed && savepoints &&
                       p->next != NULL;
            ad_err e;

            if (more && (pipe_send(s, &s->wc, -1, "RELEASE SAVEPOINT w", 0,
                                   NULL, NULL, 0) != 0 ||
                         pipe_send(s, &s->wc, -1, "SAVEPOINT w", 0, NULL,
                                   NULL, 0) != 0)) {
                pipe_abandon(s, &s->wc);
                why = R_LOST;
            } else {
                why = pipe_collect(s, &s->wc, NULL, &blind_failed);
            }
            moved = more && why == R_OK;
            if (why == R_SQL && more && !blind_failed) {
                rc = B_FAILED; /* the savepoint, not the write */
                tx_clear(&tx);
                break;
            }
            if (why != R_OK) {
                tx_fail(&tx, why, &e);
                if (p->result == AD_OK)
                    p->result = e;
            }
        }
        tx_clear(&tx);
        if (s->batch_retry || s->batch_lost)
            break;
        if (p->result == AD_OK && tx.failed)
            p->result = AD_ESTORE; /* it ignored a failed statement */
        if (p->result == AD_OK) {
            if (savepoints && p->next != NULL && !moved &&
                (why = simple(&s->wc, "RELEASE SAVEPOINT w; SAVEPOINT w")) !=
                    R_OK) {
                rc = why_batch(why);
                break;
            }
            continue;
        }
        /* Drop what this write did, and what it buffered. */
        while (s->nchg > mchg)
            free(s->chg[--s->nchg].key);
        buf_truncate(&s->audit_arr, mal);
        buf_truncate(&s->event_arr, mel);
        s->naudit = ma;
        while (json_array_size(s->audit_pending) > ma)
            json_array_remove(s->audit_pending,
                              json_array_size(s->audit_pending) - 1);
        s->nevent = me;
        if (savepoints) {
            if ((why = simple(&s->wc, "ROLLBACK TO SAVEPOINT w")) != R_OK) {
                rc = why_batch(why);
                break;
            }
        } else {
            /* The only write failed: nothing to commit. */
            why = simple(&s->wc, "ROLLBACK");
            free(tx.res);
            return why == R_OK ? B_OK : why_batch(why);
        }
    }
    free(tx.res);
    if (s->batch_lost)
        return B_LOST;
    if (s->batch_retry)
        return B_RETRY;
    if (rc != B_OK)
        return rc;
    if (buf_append_byte(&s->audit_arr, '}') != 0 ||
        buf_append_byte(&s->event_arr, '}') != 0)
        return B_FAILED;
    if (s->nitems > 0 &&
        (why = pipe_collect(s, &s->wc, NULL, &blind_failed)) != R_OK)
        return why_batch(why); /* not reached: each write's were answered */
    pthread_mutex_lock(&s->lock);
    hook = s->sync_hook;
    hook_arg = s->sync_hook_arg;
    pthread_mutex_unlock(&s->lock);
    if (hook && hook(hook_arg) != 0)
        return B_FAILED;
    /* The audit insert's answer is not needed: it goes with the events
     * insert, whose last id the notification carries, or else with the
     * NOTIFY and the COMMIT. Either way in the order audit, events, so
     * that nodes lock the two counters in one order. */
    if (s->naudit > 0 && (why = audit_chain(s)) != B_OK)
        return why;
    if (s->nevent > 0) {
        PGresult *r;

        if (log_send(s, G_EVENT_INS, &s->event_arr, s->nevent, 0) != 0)
            goto lost;
        if ((why = pipe_collect(s, &s->wc, &r, &blind_failed)) != R_OK)
            return why_batch(why);
        if (PQntuples(r) == 1)
            *event_id = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    s->nchg = store_chg_settle(s->chg, s->nchg);
    if (s->nchg > 0 || *event_id != 0 || s->chg_lost) {
        buf_t payloads;
        const char *v[1];
        int sent;

        buf_init(&payloads, PG_BATCH_BUF_MAX);
        build_payloads(s, *event_id, &payloads);
        if (buf_failed(&payloads)) {
            buf_free(&payloads);
            return B_FAILED;
        }
        v[0] = buf_str(&payloads);
        sent = pipe_send(s, &s->wc, G_NOTIFY, NULL, 1, v, NULL, 1);
        buf_free(&payloads);
        if (sent != 0)
            goto lost;
    }
    if (pipe_send(s, &s->wc, -1, "COMMIT", 0, NULL, NULL, 0) != 0)
        goto lost;
    *commit_sent = 1;
    why = pipe_collect(s, &s->wc, NULL, &blind_failed);
    if (why == R_OK)
        return B_OK;
    /* A statement before the COMMIT that failed with an answer made the
     * server skip the COMMIT, and so did a COMMIT that failed with one;
     * without an answer (connection gone) nobody knows. */
    if (blind_failed || why != R_LOST)
        return why_batch(why);
    return B_UNKNOWN;
lost:
    pipe_abandon(s, &s->wc);
    return B_LOST;
}

static void rollback_quietly(pstore *s)
{
    int blind_failed;

    /* A batch given up with statements in flight: answer them first. */
    if (s->nitems > 0)
        (void)pipe_collect(s, &s->wc, NULL, &blind_failed);
    if (conn_ok(&s->wc) &&
        PQtransactionStatus(s->wc.c) != PQTRANS_IDLE) {
        PGresult *r = PQexec(s->wc.c, "ROLLBACK");

        PQclear(r);
    }
}

static void *writer_main(void *arg)
{
    pstore *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        store_pending *batch, *p;
        uint64_t t0, t1, event_id = 0;
        int n, rc, attempt, reconnected = 0, commit_sent = 0;

        batch = store_queue_take(&s->lock, &s->queued, &s->head, &s->tail,
                                 &s->stopping, &n);
        if (batch == NULL)
            break;
        pthread_mutex_unlock(&s->lock);

        t0 = util_now_ns();
        for (attempt = 0;; attempt++) {
            rc = run_batch(s, batch, n, &event_id, &commit_sent);
            if (rc == B_OK)
                break;
            rollback_quietly(s);
            if (rc == B_RETRY && attempt < PG_RETRIES) {
                unsigned char r = 0;

                /* Another node won the race: let it finish, retry. */
                util_random_bytes(&r, 1);
                atomic_fetch_add(&s->retries, 1);
                sleep_ms(1 + (long)(r % 8) * (attempt + 1));
                continue;
            }
            if (rc == B_LOST && !commit_sent && !reconnected) {
                reconnected = 1;
                if (conn_open(s, &s->wc) == 0)
                    continue;
            }
            break;
        }
        t1 = util_now_ns();
        if (rc == B_OK) {
            atomic_store(&s->db_failed, 0);
            report_local(s, event_id);
        } else {
            if (rc == B_LOST || rc == B_UNKNOWN) {
                atomic_store(&s->db_failed, 1);
                conn_drop(&s->wc);
            }
            /* Nothing any write of it is known to persist, and none is
             * acknowledged. When the connection went, that is "the
             * database is unreachable" (503): with the COMMIT unsent
             * nothing was done; with it sent, the outcome is unknown,
             * and what the client was not handed (a certificate) is of
             * no use to anyone. */
            for (p = batch; p != NULL; p = p->next)
                p->result = rc == B_LOST || rc == B_UNKNOWN ? AD_EUNAVAIL
                                                             : AD_ESTORE;
        }
        atomic_fetch_add(&s->commits, 1);
        atomic_fetch_add(&s->writes, (uint_fast64_t)n);
        atomic_fetch_add(&s->apply_ns, t1 - t0);

        pthread_mutex_lock(&s->lock);
        while ((p = batch) != NULL) {
            batch = p->next;
            p->done = 1;
            pthread_cond_signal(&p->answered);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Why a write is turned away before it is queued (under s->lock). */
static ad_err p_refused(store *base)
{
    return ((pstore *)base)->stopping ? AD_ENOTREADY : AD_OK;
}

static ad_err p_write(store *base, store_write_fn fn, void *arg)
{
    pstore *s = (pstore *)base;

    return store_queue_and_wait(base, &s->lock, &s->queued, &s->head, &s->tail,
                                p_refused, fn, arg);
}

static void p_test_sync_hook(store *base, int (*hook)(void *), void *arg)
{
    pstore *s = (pstore *)base;

    pthread_mutex_lock(&s->lock);
    s->sync_hook = hook;
    s->sync_hook_arg = arg;
    pthread_mutex_unlock(&s->lock);
}

static void p_watch(store *base, store_watch_fn fn, void *arg)
{
    store_watcher_set(&((pstore *)base)->watcher, fn, arg);
}

static int p_ready(store *base)
{
    pstore *s = (pstore *)base;

    return atomic_load(&s->feed_ok) && !atomic_load(&s->db_failed);
}

static void p_commit_stats(store *base, store_stats *out)
{
    pstore *s = (pstore *)base;

    out->commits = atomic_load(&s->commits);
    out->writes = atomic_load(&s->writes);
    out->apply_ns = atomic_load(&s->apply_ns);
    /* The COMMIT's WAL flush is the sync: counted as one per commit. */
    out->commit_ns = 0;
    out->syncs = out->commits;
    out->sync_ns = 0;
    out->used_bytes = atomic_load(&s->db_bytes);
    out->limit_bytes = 0; /* the database server's to set, not ours */
}

/* ---- open / close ------------------------------------------------------ */

/* Brings the schema to this build's version, in one transaction under
 * an advisory lock so that nodes starting together do not race. */
static ad_err migrate(pstore *s, PGconn *c, char *err, size_t errlen)
{
    PGresult *r = NULL;
    ad_err e = AD_OK;
    int version, i;

    r = PQexec(c, "BEGIN; SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK ");"
                  "CREATE TABLE IF NOT EXISTS schema_version (version integer "
                  "NOT NULL);"
                  "SELECT coalesce(max(version), 0) FROM schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        e = pg_errf(s, err, errlen, "schema", PQerrorMessage(c));
        goto out;
    }
    version = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    r = NULL;
    if (version > SCHEMA_VERSION) {
        e = ad_errf(AD_ESTORE, err, errlen,
                    "postgresql: the schema (version %d) is newer than this "
                    "authd (version %d)",
                    version, SCHEMA_VERSION);
        goto out;
    }
    for (i = version; i < SCHEMA_VERSION; i++) {
        r = PQexec(c, migrations[i]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            e = pg_errf(s, err, errlen, "schema migration", PQerrorMessage(c));
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    if (version < SCHEMA_VERSION) {
        char sql[96];

        snprintf(sql, sizeof(sql),
                 "DELETE FROM schema_version; INSERT INTO schema_version "
                 "VALUES (%d)",
                 SCHEMA_VERSION);
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            e = pg_errf(s, err, errlen, "schema", PQerrorMessage(c));
            goto out;
        }
        PQclear(r);
        r = NULL;
    }
    r = PQexec(c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        e = pg_errf(s, err, errlen, "schema", PQerrorMessage(c));
out:
    PQclear(r);
    if (e != AD_OK) {
        r = PQexec(c, "ROLLBACK");
        PQclear(r);
    }
    return e;
}

static void p_close(store *base)
{
    pstore *s = (pstore *)base;

    if (s->writer_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = 1;
        pthread_cond_signal(&s->queued);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->writer, NULL);
    }
    if (s->listener_started) {
        atomic_store(&s->stop_listener, 1);
        pthread_join(s->listener, NULL);
    }
    while (s->idle != NULL) {
        pconn *pc = s->idle;

        s->idle = pc->next;
        conn_drop(pc);
        free(pc);
    }
    conn_drop(&s->wc);
    batch_reset(s);
    free(s->chg);
    buf_free(&s->audit_arr);
    json_decref(s->audit_pending);
    buf_free(&s->event_arr);
    pthread_cond_destroy(&s->pool_free);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_cond_destroy(&s->queued);
    pthread_mutex_destroy(&s->lock);
    store_watcher_destroy(&s->watcher);
    if (s->password) {
        memset(s->password, 0, strlen(s->password));
        free(s->password);
    }
    if (s->url) {
        memset(s->url, 0, strlen(s->url));
        free(s->url);
    }
    free(s);
}

static const store_ops pg_ops;

ad_err store_pg_open(const char *url, const store_options *opt, store **out,
                     char *err, size_t errlen)
{
    pstore *s = NULL;
    PQconninfoOption *info = NULL, *o;
    char *perr = NULL;
    unsigned char rnd[8];
    ad_err e = AD_ESTORE;
    size_t i;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return AD_ENOMEM;
    s->base.ops = &pg_ops;
    pthread_mutex_init(&s->lock, NULL);
    store_watcher_init(&s->watcher);
    pthread_cond_init(&s->queued, NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_cond_init(&s->pool_free, NULL);
    buf_init(&s->audit_arr, PG_BATCH_BUF_MAX);
    s->audit_pending = json_array();
    buf_init(&s->event_arr, PG_BATCH_BUF_MAX);
    s->max_conns = opt && opt->read_conns ? opt->read_conns : 8;
    if (s->audit_pending == NULL || (s->url = strdup(url)) == NULL) {
        e = AD_ENOMEM;
        goto fail;
    }
    info = PQconninfoParse(url, &perr);
    if (info == NULL) {
        e = pg_errf(s, err, errlen, "connection URL", perr ? perr : "invalid");
        goto fail;
    }
    for (o = info; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val && *o->val &&
            (s->password = strdup(o->val)) == NULL) {
            e = AD_ENOMEM;
            goto fail;
        }
    if (util_random_bytes(rnd, sizeof(rnd)) != 0) {
        e = ad_errf(AD_ESTORE, err, errlen, "no randomness for the node id");
        goto fail;
    }
    for (i = 0; i < sizeof(rnd); i++)
        snprintf(s->node + 2 * i, 3, "%02x", rnd[i]);

    s->wc.c = pg_connect(s);
    if (PQstatus(s->wc.c) != CONNECTION_OK) {
        e = pg_errf(s, err, errlen, "connect", PQerrorMessage(s->wc.c));
        goto fail;
    }
    if ((e = migrate(s, s->wc.c, err, errlen)) != AD_OK)
        goto fail;
    e = AD_ESTORE;
    /* The feed is up before open returns: store_ready is 1 at once. */
    {
        PGconn *probe = listen_connect(s);

        if (probe == NULL) {
            e = ad_errf(AD_ESTORE, err, errlen,
                        "postgresql: LISTEN connection failed");
            goto fail;
        }
        PQfinish(probe);
    }
    if (pthread_create(&s->listener, NULL, listener_main, s) != 0)
        goto fail;
    s->listener_started = 1;
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0)
        goto fail;
    s->writer_started = 1;
    /* Ready once the listener is listening (it connects at once). */
    for (i = 0; i < 200 && !atomic_load(&s->feed_ok); i++)
        sleep_ms(10);
    PQconninfoFree(info);
    PQfreemem(perr);
    *out = &s->base;
    return AD_OK;

fail:
    PQconninfoFree(info);
    PQfreemem(perr);
    p_close(&s->base);
    return e;
}

static const store_ops pg_ops = {
    .backend = STORE_BACKEND_POSTGRES,
    .close = p_close,
    .ready = p_ready,
    .write = p_write,
    .watch = p_watch,
    .test_sync_hook = p_test_sync_hook,
    .commit_stats = p_commit_stats,
    .read_begin = p_read_begin,
    .read_end = p_read_end,
    .get_raw = p_get_raw,
    .list = p_list,
    .index_list = p_index_list,
    .index_first = p_index_first,
    .put_text = p_put_text,
    .del = p_del,
    .index_add = p_index_add,
    .index_del = p_index_del,
    .audit = p_audit,
    .audit_list = p_audit_list,
    .audit_rlist = p_audit_rlist,
    .event_append = p_event_append,
    .event_list = p_event_list,
    .table_scan = p_table_scan,
    .index_scan = p_index_scan,
    .audit_put = p_audit_put,
    .event_put = p_event_put,
};
