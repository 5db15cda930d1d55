/* libmicrohttpd behind http.h. The main listeners (HTTP, HTTPS) run a
 * thread per connection because writes block until their group commit;
 * the check listener never blocks and runs an epoll thread pool. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "checker.h"
#include "events.h"
#include "form.h"
#include "http.h"
#include "../common/buf.h"
#include "../common/codec.h"
#include "log.h"
#include "ratelimit.h"
#include "registry.h"
#include "revocation.h"
#include "route_match.h"
#include "util.h"
#include "version.h"

#define STATUS_SLOTS 16
/* How much of an oversized body is read (and dropped) to answer 413. */
#define HTTP_DISCARD_MAX (1u << 20)
#define LAT_BUCKETS 12
/* How often the watchdog looks for requests past their deadline. */
#define WATCHDOG_TICK_MS 200
/* A kept-alive connection may sit idle (or dribble the next request
 * line) this long after an answer before it is closed. */
#define IDLE_MIN_S 60
/* Requests that may wait for the secret lane at once; past this a
 * device-secret check is refused (rate_limited) rather than queued. At
 * ~20 ms an argon2id run, a full queue drains in about a second per
 * worker. */
#define LANE_QUEUE_MAX 64

static const unsigned status_codes[STATUS_SLOTS] = {
    200, 201, 204, 400, 401, 403, 404, 405, 409, 413, 415, 429, 500, 503, 0,
    0};
/* Latency bucket bounds in microseconds (Prometheus "le" in seconds). */
static const unsigned lat_bounds_us[LAT_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000, 1000000};

struct route_metrics {
    atomic_uint_fast64_t by_status[STATUS_SLOTS]; /* last slot: other */
    atomic_uint_fast64_t lat[LAT_BUCKETS];
    atomic_uint_fast64_t lat_sum_us;
};

/* The check reasons of docs/api.md §10.3 (and the policy engine's), the
 * only values the reason label takes; "other" (last) counts the rest, so
 * a reason added later cannot grow the series without bound. */
static const char *const check_reasons[] = {
    "allowed", "explicit_deny", "no_matching_allow", "no_policy",
    "denied", "invalid_topic", "invalid_filter", "invalid_client_id",
    "invalid_action", "unknown_action", "invalid_acc",
    "outside_token_scope", "unknown_device", "device_suspended",
    "device_revoked", "unknown_certificate", "invalid_certificate_id",
    "invalid_certificate", "certificate_mismatch", "certificate_required",
    "certificate_revoked", "certificate_expired",
    "not_a_device_certificate", "no_valid_certificate", "invalid_token",
    "token_expired", "token_revoked", "token_for_another_device",
    "token_certificate_mismatch", "token_certificate_revoked",
    "no_credential", "invalid_credential", "no_identity", "policy_error",
    "store_error", "internal_error", "not_gateway", "gateway_suspended",
    "gateway_revoked", "username_mismatch", "rate_limited", "other"};
#define N_REASONS (sizeof(check_reasons) / sizeof(check_reasons[0]))

struct metrics {
    const http_route *routes;
    size_t nroutes;
    struct route_metrics *per_route; /* nroutes + 1 (unrouted) */
    atomic_uint_fast64_t counters[METRIC__COUNT];
    atomic_uint_fast64_t decisions[2][N_REASONS]; /* [allow][reason] */
    atomic_uint_fast64_t request_timeouts;
    rl *limits;
};

struct listener {
    http_server *server;
    listen_kind kind;
    struct MHD_Daemon *mhd;
    int unix_fd;
};

/* Where a connection is in its life, for the request deadline. */
enum conn_phase {
    CONN_FIRST,   /* connected, first request not yet answered */
    CONN_REQUEST, /* a later request's line arrived, not yet answered */
    CONN_IDLE,    /* answered; waiting for the next request */
    CONN_STREAM   /* an event stream answered: no deadline */
};

/* One tracked connection (MHD's socket context). */
struct conn_track {
    struct conn_track *prev, *next;
    int fd;
    enum conn_phase phase;
    uint64_t since_ms;
    int cut;
};

/* A request waiting for the secret lane. */
struct lane_job {
    struct listener *l;
    struct MHD_Connection *conn;
    struct req_state *st;
};

struct http_server {
    app *app;
    rl *limits;
    const http_route *routes;
    size_t nroutes;
    struct listener listeners[3];
    size_t nlisteners;
    atomic_int in_flight;
    char unix_path[CONFIG_STR_MAX];

    /* Every open connection, for the watchdog that cuts requests past
     * their deadline: MHD's own timeout restarts with every byte, so a
     * client sending one byte a second would hold a connection forever. */
    pthread_mutex_t conns_lock;
    pthread_cond_t conns_wake;
    struct conn_track *conns;
    pthread_t watchdog;
    int watchdog_running;
    int stopping;
    uint64_t request_ms, idle_ms;

    /* The secret lane: argon2_parallel workers and a bounded queue of
     * suspended connections. A flood of wrong secrets waits here (or is
     * refused when the queue is full), never on the connection threads. */
    pthread_mutex_t lane_lock;
    pthread_cond_t lane_wake;
    struct lane_job lane_q[LANE_QUEUE_MAX];
    size_t lane_head, lane_len;
    pthread_t *lane_threads;
    size_t lane_nthreads;
    int lane_stopping;
};

/* Per-request state kept by MHD between calls of the access handler. */
struct req_state {
    buf_t body;      /* bounded by body_max */
    size_t body_max; /* this route's limit */
    int too_big;
    int bad_length;  /* conflicting or malformed Content-Length */
    int replied;
    size_t discarded;
    uint64_t start_ns;
    /* On the secret lane: the request's own copies of its line (the
     * connection sleeps meanwhile), and the reply it left. */
    char *url, *method;
    http_req lane_reply;
    int lane_done;   /* under the lane lock */
};

static void stream_free(void *cls);

/* ---- replies --------------------------------------------------------- */

static void reply_set(http_req *r, unsigned status, const char *ctype,
                      char *data, size_t len)
{
    if (r->stream) {
        /* A stream replaced by an error: let it go. */
        stream_free(r->stream);
        r->stream = NULL;
    }
    free(r->resp);
    r->status = status;
    r->content_type = ctype;
    r->resp = data;
    r->resp_len = len;
}

void http_reply_json(http_req *r, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

    json_decref(body);
    if (text == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    reply_set(r, status, "application/json", text, strlen(text));
}

void http_reply_error(http_req *r, ad_err e, const char *detail)
{
    json_t *body;
    char *text;

    if (e == AD_OK)
        e = AD_EINTERNAL;
    r->error = e;
    body = json_pack("{s:{s:s, s:s}}", "error", "code", ad_err_code(e),
                     "message", detail && *detail ? detail : ad_err_message(e));
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL) {
        /* Out of memory: a static body still tells the client. */
        static const char oom[] =
            "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"out of "
            "memory\"}}";
        text = malloc(sizeof(oom));
        if (text)
            memcpy(text, oom, sizeof(oom));
        e = AD_ENOMEM;
    }
    reply_set(r, ad_err_status(e), "application/json", text,
              text ? strlen(text) : 0);
}

void http_reply_bytes(http_req *r, unsigned status, const char *ctype,
                      const void *data, size_t len)
{
    char *copy = malloc(len ? len : 1);

    if (copy == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    if (len)
        memcpy(copy, data, len);
    reply_set(r, status, ctype, copy, len);
}

void http_reply_empty(http_req *r, unsigned status)
{
    reply_set(r, status, NULL, NULL, 0);
}

const char *http_query(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(http_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

json_t *http_body_object(http_req *r)
{
    json_error_t jerr;
    json_t *obj;
    char msg[256];

    if (r->body_len == 0) {
        http_reply_error(r, AD_EJSON, "the body must be a JSON object");
        return NULL;
    }
    obj = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL) {
        snprintf(msg, sizeof(msg), "invalid JSON at line %d column %d: %s",
                 jerr.line, jerr.column, jerr.text);
        http_reply_error(r, AD_EJSON, msg);
        return NULL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        http_reply_error(r, AD_EJSON, "the body must be a JSON object");
        return NULL;
    }
    return obj;
}

static enum MHD_Result add_query_param(void *cls, enum MHD_ValueKind kind,
                                       const char *key, size_t key_size,
                                       const char *value, size_t value_size)
{
    json_t *obj = cls;

    (void)kind;
    /* The same bounds as form bodies. */
    if (json_object_size(obj) >= FORM_FIELDS_MAX)
        return MHD_NO;
    /* MHD has decoded %00 into the text: a pair with a NUL inside would
     * be read as a shorter value (two spellings of one secret), so it is
     * dropped, as a form body drops it. */
    if (key == NULL || value == NULL || strlen(key) != key_size ||
        strlen(value) != value_size ||
        key_size + value_size >= FORM_PAIR_MAX)
        return MHD_YES;
    json_object_set_new(obj, key, json_string(value));
    return MHD_YES;
}

json_t *http_body_params(http_req *r)
{
    char msg[256];
    json_t *obj;
    ad_err e;

    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0) {
        /* MHD has already decoded the query string (%xx and '+'). */
        obj = json_object();
        if (obj == NULL) {
            http_reply_error(r, AD_ENOMEM, NULL);
            return NULL;
        }
        MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND,
                                    add_query_param, obj);
        return obj;
    }
    if ((e = form_params(r->body, r->body_len, &obj, msg, sizeof(msg))) !=
        AD_OK)
        http_reply_error(r, e, e == AD_ENOMEM ? NULL : msg);
    return obj;
}

int http_paging(http_req *r, size_t *limit, const char **after)
{
    const char *l = http_query(r, "limit");
    uint64_t v = 100;

    if (l && (codec_parse_u64(l, 1000, &v) != 0 || v == 0)) {
        http_reply_error(r, AD_EBADREQ, "limit must be an integer 1..1000");
        return -1;
    }
    *limit = (size_t)v;
    *after = http_query(r, "after");
    if (*after && **after == '\0')
        *after = NULL;
    return 0;
}

/* ---- streams ---------------------------------------------------------- */

struct http_stream {
    pthread_mutex_t lock;
    pthread_cond_t wakeup;
    struct MHD_Connection *conn;
    http_stream_read_fn read;
    void *arg;
    void (*release)(void *arg);
    int blocking;  /* thread-per-connection: wait here, don't suspend */
    int suspended; /* the connection sleeps until woken */
    int woken;     /* a wake arrived while read was running */
};

void http_reply_stream(http_req *r, const char *ctype,
                       http_stream_read_fn read, void *arg,
                       void (*release)(void *arg), http_stream **handle)
{
    http_stream *s = calloc(1, sizeof(*s));

    *handle = NULL;
    if (s == NULL) {
        release(arg);
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wakeup, NULL);
    s->conn = r->conn;
    /* MHD cannot suspend connections that own a thread; those wait. */
    s->blocking = r->listener != LISTEN_CHECK;
    s->read = read;
    s->arg = arg;
    s->release = release;
    reply_set(r, 200, ctype, NULL, 0);
    r->stream = s;
    *handle = s;
}

void http_stream_wake(http_stream *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    } else {
        s->woken = 1;
        pthread_cond_signal(&s->wakeup);
    }
    pthread_mutex_unlock(&s->lock);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    http_stream *s = cls;
    ssize_t n;

    (void)pos;
    for (;;) {
        /* read takes the producer's lock: never call it under ours, or a
         * wake (producer lock, then ours) could deadlock with it. */
        n = s->read(s->arg, buf, max);
        if (n != 0)
            return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
        pthread_mutex_lock(&s->lock);
        if (s->blocking) {
            while (!s->woken)
                pthread_cond_wait(&s->wakeup, &s->lock);
        }
        if (s->woken) {
            s->woken = 0;
            pthread_mutex_unlock(&s->lock);
            continue;
        }
        /* Nothing to send: park the connection instead of letting MHD
         * call us again in a busy loop. */
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
}

static void stream_free(void *cls)
{
    http_stream *s = cls;

    s->release(s->arg);
    pthread_cond_destroy(&s->wakeup);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ---- credentials ----------------------------------------------------- */

static const char *bearer_of(http_req *r)
{
    const char *h = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);

    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static api_role role_of(const char *s)
{
    if (s == NULL)
        return ROLE_NONE;
    if (strcmp(s, "admin") == 0)
        return ROLE_ADMIN;
    if (strcmp(s, "provisioner") == 0)
        return ROLE_PROVISIONER;
    if (strcmp(s, "broker") == 0)
        return ROLE_BROKER;
    return ROLE_NONE;
}

api_role http_bearer_role(http_req *r)
{
    const char *key = bearer_of(r);
    char id[REGISTRY_APIKEY_ID_MAX], name[REGISTRY_APIKEY_NAME_MAX],
        role[REGISTRY_ROLE_MAX];
    api_role out;

    r->bearer_err = AD_EBADCRED;
    if (key == NULL)
        return ROLE_NONE;
    if ((r->bearer_err = registry_apikey_authenticate(r->app->st, key, id,
                                                      name, role)) != AD_OK)
        return ROLE_NONE;
    r->bearer_err = AD_EBADCRED; /* if the role is none of ours */
    out = role_of(role);
    /* The name says who, the id which key (names may repeat): the actor
     * form of docs/audit.md. Names and ids are bounded to fit. */
    if (out != ROLE_NONE &&
        snprintf(r->actor, sizeof(r->actor), "apikey:%s/%s", name, id) >=
            (int)sizeof(r->actor))
        out = ROLE_NONE;
    return out;
}

/* 1: a client certificate that GnuTLS verified against our CA (set in
 * r); 0: none presented (or not HTTPS); -1: presented but not valid. */
static int client_cert_state(http_req *r)
{
    const union MHD_ConnectionInfo *ci;
    const gnutls_datum_t *peers;
    gnutls_session_t tls;
    unsigned n = 0, status = 0;

    if (r->listener != LISTEN_HTTPS)
        return 0;
    ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    tls = ci ? (gnutls_session_t)ci->tls_session : NULL;
    peers = tls ? gnutls_certificate_get_peers(tls, &n) : NULL;
    if (peers == NULL || n == 0)
        return 0;
    /* GnuTLS only asked for the certificate; verifying it (chain to our
     * CA, validity dates) is ours to do. */
    if (gnutls_certificate_verify_peers2(tls, &status) != 0 || status != 0)
        return -1;
    r->client_cert = peers[0].data;
    r->client_cert_len = peers[0].size;
    return 1;
}

int http_client_cert(http_req *r)
{
    return client_cert_state(r) == 1;
}

/* Checks the route's access rule; on refusal sets the reply, returns 0. */
static int authorize(http_req *r, const http_route *rt)
{
    api_role role;

    switch (rt->access) {
    case ACCESS_PUBLIC:
    case ACCESS_HANDLER:
        return 1;
    case ACCESS_DEVICE:
        switch (client_cert_state(r)) {
        case 1:
            return 1;
        case -1:
            http_reply_error(r, AD_EBADCRED,
                             "the client certificate is not valid for this CA");
            return 0;
        default:
            http_reply_error(r, AD_ECLIENTCERT, NULL);
            return 0;
        }
    case ACCESS_BROKER:
        if (r->listener == LISTEN_CHECK) {
            util_strlcpy(r->actor, "check-listener", sizeof(r->actor));
            return 1;
        }
        /* fall through */
    case ACCESS_ADMIN:
    case ACCESS_PROVISIONER:
        if (bearer_of(r) == NULL) {
            r->www_authenticate = "Bearer";
            http_reply_error(r, AD_EUNAUTH, "an API key is required");
            return 0;
        }
        role = http_bearer_role(r);
        if (role == ROLE_NONE && r->bearer_err != AD_EBADCRED) {
            /* The store could not say (unreachable: 503): not a bad key. */
            http_reply_error(r, r->bearer_err, NULL);
            return 0;
        }
        if (role == ROLE_NONE) {
            r->www_authenticate = "Bearer error=\"invalid_token\"";
            http_reply_error(r, AD_EBADCRED, "the API key is not valid");
            return 0;
        }
        r->role = role;
        if (role == ROLE_ADMIN ||
            (rt->access == ACCESS_PROVISIONER && role == ROLE_PROVISIONER) ||
            (rt->access == ACCESS_BROKER && role == ROLE_BROKER))
            return 1;
        http_reply_error(r, AD_EFORBIDDEN,
                         "this API key's role may not call this endpoint");
        return 0;
    }
    return 0;
}

/* ---- routing --------------------------------------------------------- */

/* route_match fills at most ROUTE_PARAMS_MAX captures into r->param. */
_Static_assert((int)ROUTE_PARAMS_MAX == (int)HTTP_PARAMS_MAX,
               "route_match and http_req agree on the number of captures");

/* ---- metrics --------------------------------------------------------- */

static void metrics_record(app *a, size_t route_ix, unsigned status,
                           uint64_t dur_ns)
{
    struct route_metrics *m;
    uint64_t us = dur_ns / 1000;
    size_t i;

    if (a->metrics == NULL)
        return;
    m = &a->metrics->per_route[route_ix];
    for (i = 0; i < STATUS_SLOTS - 1 && status_codes[i]; i++)
        if (status_codes[i] == status)
            break;
    if (status_codes[i] != status)
        i = STATUS_SLOTS - 1;
    atomic_fetch_add_explicit(&m->by_status[i], 1, memory_order_relaxed);
    for (i = 0; i < LAT_BUCKETS - 1; i++)
        if (us <= lat_bounds_us[i])
            break;
    atomic_fetch_add_explicit(&m->lat[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->lat_sum_us, us, memory_order_relaxed);
}

void http_metric_inc(app *a, metric_counter c)
{
    if (a->metrics)
        atomic_fetch_add_explicit(&a->metrics->counters[c], 1,
                                  memory_order_relaxed);
}

void http_metric_decision(app *a, int allow, const char *reason)
{
    size_t i = N_REASONS - 1;

    if (a->metrics == NULL)
        return;
    /* A linear scan of ~40 short strings, most failing on the first
     * byte: small next to the check itself. */
    for (size_t k = 0; reason && k < N_REASONS - 1; k++)
        if (strcmp(reason, check_reasons[k]) == 0) {
            i = k;
            break;
        }
    atomic_fetch_add_explicit(&a->metrics->decisions[allow ? 1 : 0][i], 1,
                              memory_order_relaxed);
}

/* Check decisions by result and reason. A pair appears once counted;
 * allow/allowed and deny/no_matching_allow always, so the series exists
 * (at 0) before the first check. */
static void metrics_decisions(buf_t *tb, metrics *mt)
{
    size_t res, i;

    buf_printf(tb, "# HELP authd_check_decisions_total Broker check "
                   "decisions (all check and compat endpoints) by result "
                   "and reason.\n"
                   "# TYPE authd_check_decisions_total counter\n");
    for (res = 0; res < 2; res++)
        for (i = 0; i < N_REASONS; i++) {
            uint64_t v = atomic_load(&mt->decisions[res][i]);
            /* check_reasons[0] is "allowed", [2] "no_matching_allow". */
            int always = res ? i == 0 : i == 2;

            if (v == 0 && !always)
                continue;
            buf_printf(tb,
                       "authd_check_decisions_total{result=\"%s\","
                       "reason=\"%s\"} %llu\n",
                       res ? "allow" : "deny", check_reasons[i],
                       (unsigned long long)v);
        }
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static void put_label_value(buf_t *tb, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_printf(tb, "\\%c", *v);
        else if (*v == '\n')
            buf_printf(tb, "\\n");
        else
            buf_append_byte(tb, (unsigned char)*v);
    }
}

/* Gauges read at scrape time: how full the store is, when the CA
 * certificates expire, how old the CRL is, open event streams, and the
 * build. */
static void metrics_gauges(buf_t *tb, app *a, const store_stats *ss)
{
    time_t now = time(NULL);
    size_t i;

    buf_printf(tb,
               "# HELP authd_store_used_bytes Bytes the store uses (LMDB: "
               "map pages in use; PostgreSQL: pg_database_size).\n"
               "# TYPE authd_store_used_bytes gauge\n"
               "authd_store_used_bytes %llu\n"
               "# HELP authd_store_limit_bytes The most the store may use "
               "(LMDB: the map size; PostgreSQL: 0, no limit of authd's).\n"
               "# TYPE authd_store_limit_bytes gauge\n"
               "authd_store_limit_bytes %llu\n",
               (unsigned long long)ss->used_bytes,
               (unsigned long long)ss->limit_bytes);
    /* The chain is issuing CA first, then (if given) the root last. */
    buf_printf(tb, "# HELP authd_ca_not_after_seconds When the CA "
                   "certificate expires, Unix seconds.\n"
                   "# TYPE authd_ca_not_after_seconds gauge\n");
    for (i = 0; i < a->chain_n; i++) {
        ca_cert_info ci;

        if (i != 0 && i != a->chain_n - 1)
            continue;
        if (ca_cert_inspect(a->chain_der[i], a->chain_len[i], &ci) != AD_OK)
            continue;
        buf_printf(tb, "authd_ca_not_after_seconds{ca=\"%s\"} %lld\n",
                   i == 0 ? "issuing" : "root", (long long)ci.not_after);
    }
    if (a->revocation) {
        time_t built = revocation_crl_built(a->revocation);

        buf_printf(tb,
                   "# HELP authd_crl_age_seconds Seconds since the current "
                   "CRL was built (its thisUpdate).\n"
                   "# TYPE authd_crl_age_seconds gauge\n"
                   "authd_crl_age_seconds %lld\n",
                   (long long)(now > built ? now - built : 0));
    }
    if (a->events)
        buf_printf(tb,
                   "# HELP authd_event_subscribers Open GET /v1/events "
                   "streams.\n# TYPE authd_event_subscribers gauge\n"
                   "authd_event_subscribers %zu\n",
                   events_subscribers(a->events));
    buf_printf(tb, "# HELP authd_build_info The running build; the value "
                   "is always 1.\n# TYPE authd_build_info gauge\n"
                   "authd_build_info{version=\"");
    put_label_value(tb, AD_VERSION);
    buf_printf(tb, "\"} 1\n");
}

/* The check path's caches, one series per cache. */
static void metrics_caches(buf_t *tb, checker *c)
{
    static const struct {
        const char *name, *type, *help;
        size_t offset;
    } series[] = {
        {"authd_cache_entries", "gauge", "Entries held.",
         offsetof(cache_stats, entries)},
        {"authd_cache_bytes", "gauge", "Memory charged to the budget.",
         offsetof(cache_stats, bytes)},
        {"authd_cache_budget_bytes", "gauge",
         "The budget (cache_memory_mb's share).",
         offsetof(cache_stats, budget)},
        {"authd_cache_hits_total", "counter", "Lookups answered from memory.",
         offsetof(cache_stats, hits)},
        {"authd_cache_misses_total", "counter",
         "Lookups that read the store.", offsetof(cache_stats, misses)},
        {"authd_cache_evictions_total", "counter",
         "Entries evicted to stay within the budget.",
         offsetof(cache_stats, evictions)},
    };
    checker_stats cs;
    const cache_stats *per[3];
    static const char *const names[3] = {"devices", "policy_sets",
                                         "certificates"};
    size_t i, k;

    checker_get_stats(c, &cs);
    per[0] = &cs.devices;
    per[1] = &cs.sets;
    per[2] = &cs.certs;
    for (i = 0; i < sizeof(series) / sizeof(series[0]); i++) {
        buf_printf(tb, "# HELP %s %s\n# TYPE %s %s\n", series[i].name,
                   series[i].help, series[i].name, series[i].type);
        for (k = 0; k < 3; k++)
            buf_printf(tb, "%s{cache=\"%s\"} %llu\n", series[i].name,
                       names[k],
                       (unsigned long long)*(const uint64_t *)(const void *)(
                           (const char *)per[k] + series[i].offset));
    }
}

/* /metrics is written into one bounded buffer (common/buf). */
#define METRICS_TEXT_MAX (4u << 20)

char *http_metrics_text(app *a, size_t *len)
{
    buf_t tb;
    metrics *mt = a->metrics;
    store_stats ss;
    size_t r, i;

    buf_init(&tb, METRICS_TEXT_MAX);
    buf_printf(&tb, "# HELP authd_http_requests_total HTTP requests by "
                   "route and status.\n"
                   "# TYPE authd_http_requests_total counter\n");
    for (r = 0; mt && r <= mt->nroutes; r++) {
        const char *name = r < mt->nroutes ? mt->routes[r].name : "unrouted";
        for (i = 0; i < STATUS_SLOTS; i++) {
            uint64_t v = atomic_load(&mt->per_route[r].by_status[i]);
            if (v == 0)
                continue;
            if (i == STATUS_SLOTS - 1 || status_codes[i] == 0)
                buf_printf(&tb,
                          "authd_http_requests_total{route=\"%s\","
                          "status=\"other\"} %llu\n",
                          name, (unsigned long long)v);
            else
                buf_printf(&tb,
                          "authd_http_requests_total{route=\"%s\","
                          "status=\"%u\"} %llu\n",
                          name, status_codes[i], (unsigned long long)v);
        }
    }
    buf_printf(&tb, "# HELP authd_http_request_duration_seconds Request "
                   "latency by route.\n"
                   "# TYPE authd_http_request_duration_seconds histogram\n");
    for (r = 0; mt && r <= mt->nroutes; r++) {
        const char *name = r < mt->nroutes ? mt->routes[r].name : "unrouted";
        uint64_t cum = 0;
        for (i = 0; i < LAT_BUCKETS; i++)
            cum += atomic_load(&mt->per_route[r].lat[i]);
        if (cum == 0)
            continue;
        cum = 0;
        for (i = 0; i < LAT_BUCKETS; i++) {
            cum += atomic_load(&mt->per_route[r].lat[i]);
            if (i < LAT_BUCKETS - 1)
                buf_printf(&tb,
                          "authd_http_request_duration_seconds_bucket{route="
                          "\"%s\",le=\"%g\"} %llu\n",
                          name, lat_bounds_us[i] / 1e6,
                          (unsigned long long)cum);
            else
                buf_printf(&tb,
                          "authd_http_request_duration_seconds_bucket{route="
                          "\"%s\",le=\"+Inf\"} %llu\n",
                          name, (unsigned long long)cum);
        }
        buf_printf(&tb,
                  "authd_http_request_duration_seconds_sum{route=\"%s\"} "
                  "%g\n",
                  name, atomic_load(&mt->per_route[r].lat_sum_us) / 1e6);
        buf_printf(&tb,
                  "authd_http_request_duration_seconds_count{route=\"%s\"} "
                  "%llu\n",
                  name, (unsigned long long)cum);
    }
    if (mt) {
        buf_printf(&tb,
                  "# HELP authd_certificates_issued_total Certificates "
                  "issued.\n# TYPE authd_certificates_issued_total counter\n"
                  "authd_certificates_issued_total %llu\n",
                  (unsigned long long)atomic_load(
                      &mt->counters[METRIC_CERTS_ISSUED]));
        metrics_decisions(&tb, mt);
        buf_printf(&tb,
                  "# HELP authd_revocations_total Certificates revoked.\n"
                  "# TYPE authd_revocations_total counter\n"
                  "authd_revocations_total %llu\n",
                  (unsigned long long)atomic_load(
                      &mt->counters[METRIC_REVOCATIONS]));
        buf_printf(&tb,
                  "# HELP authd_tokens_issued_total Access tokens minted.\n"
                  "# TYPE authd_tokens_issued_total counter\n"
                  "authd_tokens_issued_total %llu\n",
                  (unsigned long long)atomic_load(
                      &mt->counters[METRIC_TOKENS_ISSUED]));
        buf_printf(&tb,
                  "# HELP authd_rate_limited_total Credential checks "
                  "refused by the abuse limits.\n"
                  "# TYPE authd_rate_limited_total counter\n");
        for (i = 0; i < RL_WHAT__COUNT; i++)
            buf_printf(&tb, "authd_rate_limited_total{what=\"%s\"} %llu\n",
                      rl_what_name((rl_what)i),
                      (unsigned long long)rl_counted(mt->limits,
                                                     (rl_what)i));
        buf_printf(&tb,
                  "# HELP authd_request_timeouts_total Connections cut "
                  "at the request deadline.\n"
                  "# TYPE authd_request_timeouts_total counter\n"
                  "authd_request_timeouts_total %llu\n",
                  (unsigned long long)atomic_load(&mt->request_timeouts));
        buf_printf(&tb,
                  "# HELP authd_enrollments_refused_total Enrollment "
                  "attempts refused.\n"
                  "# TYPE authd_enrollments_refused_total counter\n"
                  "authd_enrollments_refused_total %llu\n",
                  (unsigned long long)atomic_load(
                      &mt->counters[METRIC_ENROLL_REFUSED]));
    }
    store_commit_stats(a->st, &ss);
    buf_printf(&tb,
              "# HELP authd_store_commits_total Durable store commits "
              "(fsyncs).\n# TYPE authd_store_commits_total counter\n"
              "authd_store_commits_total %llu\n"
              "# HELP authd_store_writes_total Writes carried by those "
              "commits.\n# TYPE authd_store_writes_total counter\n"
              "authd_store_writes_total %llu\n"
              "# HELP authd_store_apply_seconds_total Writer time spent "
              "running writes.\n# TYPE authd_store_apply_seconds_total "
              "counter\nauthd_store_apply_seconds_total %.6f\n"
              "# HELP authd_store_commit_seconds_total Writer time spent "
              "committing (the data flush).\n"
              "# TYPE authd_store_commit_seconds_total "
              "counter\nauthd_store_commit_seconds_total %.6f\n"
              "# HELP authd_store_syncs_total Flushes by the flusher thread "
              "that make commits durable.\n"
              "# TYPE authd_store_syncs_total counter\n"
              "authd_store_syncs_total %llu\n"
              "# HELP authd_store_sync_seconds_total Flusher time spent "
              "flushing.\n# TYPE authd_store_sync_seconds_total counter\n"
              "authd_store_sync_seconds_total %.6f\n",
              (unsigned long long)ss.commits, (unsigned long long)ss.writes,
              ss.apply_ns / 1e9, ss.commit_ns / 1e9,
              (unsigned long long)ss.syncs, ss.sync_ns / 1e9);
    metrics_gauges(&tb, a, &ss);
    if (a->checker)
        metrics_caches(&tb, a->checker);
    return buf_take(&tb, len);
}

/* ---- the MHD glue ---------------------------------------------------- */

/* ---- connection tracking and the request deadline -------------------- */

static struct conn_track *track_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

/* Moves the connection to phase and restamps it. A request line on a
 * fresh connection keeps the connect stamp: the first request's time
 * began at connect, not when its line was complete. */
static void track_phase(http_server *srv, struct MHD_Connection *conn,
                        enum conn_phase phase)
{
    struct conn_track *t = track_of(conn);

    if (t == NULL)
        return;
    pthread_mutex_lock(&srv->conns_lock);
    if (phase != CONN_REQUEST) {
        t->phase = phase;
        t->since_ms = rl_now_ms();
    } else if (t->phase == CONN_IDLE) {
        t->phase = CONN_REQUEST;
        t->since_ms = rl_now_ms();
    }
    pthread_mutex_unlock(&srv->conns_lock);
}

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct listener *l = cls;
    http_server *srv = l->server;
    struct conn_track *t;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

        /* Without a record the connection still works, just without a
         * deadline beyond MHD's idle timeout. */
        t = calloc(1, sizeof(*t));
        *socket_context = t;
        if (t == NULL)
            return;
        t->fd = ci ? ci->connect_fd : -1;
        t->phase = CONN_FIRST;
        t->since_ms = rl_now_ms();
        pthread_mutex_lock(&srv->conns_lock);
        t->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = t;
        srv->conns = t;
        pthread_mutex_unlock(&srv->conns_lock);
        return;
    }
    t = *socket_context;
    if (t == NULL)
        return;
    pthread_mutex_lock(&srv->conns_lock);
    if (t->prev)
        t->prev->next = t->next;
    else
        srv->conns = t->next;
    if (t->next)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&srv->conns_lock);
    free(t);
    *socket_context = NULL;
}

/* Called by MHD as soon as a request line has arrived: a kept-alive
 * connection's next request starts its deadline here. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct listener *l = cls;

    (void)uri;
    track_phase(l->server, conn, CONN_REQUEST);
    return NULL;
}

static void *watchdog_main(void *arg)
{
    http_server *srv = arg;

    pthread_mutex_lock(&srv->conns_lock);
    while (!srv->stopping) {
        struct timespec until;
        struct conn_track *t;
        uint64_t now = rl_now_ms();

        for (t = srv->conns; t; t = t->next) {
            uint64_t limit = t->phase == CONN_IDLE ? srv->idle_ms
                                                   : srv->request_ms;
            if (t->cut || t->fd < 0 || t->phase == CONN_STREAM ||
                now < t->since_ms || now - t->since_ms <= limit)
                continue;
            /* shutdown, not close: MHD still owns the descriptor and
             * closes it when its read fails, so it cannot be reused
             * under MHD's feet. */
            shutdown(t->fd, SHUT_RDWR);
            t->cut = 1;
            if (srv->app->metrics)
                atomic_fetch_add_explicit(
                    &srv->app->metrics->request_timeouts, 1,
                    memory_order_relaxed);
            log_line("warn", "event=request_timeout phase=%s after_ms=%llu",
                     t->phase == CONN_IDLE ? "idle" : "request",
                     (unsigned long long)(now - t->since_ms));
        }
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += WATCHDOG_TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->conns_wake, &srv->conns_lock, &until);
    }
    pthread_mutex_unlock(&srv->conns_lock);
    return NULL;
}

static enum MHD_Result send_reply(struct listener *l,
                                  struct MHD_Connection *conn, http_req *r)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    /* Answered: the deadline now covers sending and the idle wait; an
     * event stream lives as long as its subscriber. */
    track_phase(l->server, conn, r->stream ? CONN_STREAM : CONN_IDLE);
    if (r->stream) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                 stream_reader, r->stream,
                                                 stream_free);
        if (resp == NULL) {
            stream_free(r->stream);
            return MHD_NO;
        }
        r->stream = NULL; /* now owned by the response */
    } else {
        resp = MHD_create_response_from_buffer(r->resp_len, r->resp,
                                               MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            return MHD_NO;
        r->resp = NULL; /* now owned by the response */
    }
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                r->content_type);
    if (r->www_authenticate)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                r->www_authenticate);
    if (r->cache_max_age >= 0) {
        char cc[32];
        snprintf(cc, sizeof(cc), "max-age=%ld", r->cache_max_age);
        MHD_add_response_header(resp, "Cache-Control", cc);
    } else {
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    }
    if (r->retry_after) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%u", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (r->close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    ret = MHD_queue_response(conn, r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void log_request(const http_req *r, uint64_t dur_ns)
{
    char path[160], method[16];

    log_line(r->status >= 500 ? "error" : "info",
             "event=request method=%s path=%s status=%u dur_us=%llu "
             "actor=%s",
             log_safe(r->method, method, sizeof(method)),
             log_safe(r->path, path, sizeof(path)), r->status,
             (unsigned long long)(dur_ns / 1000),
             r->actor[0] ? r->actor : "-");
}

/* ---- source addresses ------------------------------------------------- */

static void source_of(struct MHD_Connection *conn, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;

    util_strlcpy(out, "unix", outlen);
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)
                               ->sin_addr,
                  out, (socklen_t)outlen);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)
                                ->sin6_addr,
                  out, (socklen_t)outlen);
}

/* Routes that take a credential on the main listeners are guarded per
 * source address. The check listener is not: its one source is the
 * broker, speaking for every device (devices are limited one by one in
 * the checker instead). */
static int source_guarded(const http_server *srv, const struct listener *l,
                          const http_route *rt)
{
    return srv->limits && l->kind != LISTEN_CHECK &&
           rt->access != ACCESS_PUBLIC;
}

static void source_key(const http_req *r, char *key, size_t keylen)
{
    snprintf(key, keylen, "ip:%s", r->source);
}

/* 1 (and a 429 set) if the source is backing off. */
static int source_blocked(http_server *srv, http_req *r, const http_route *rt)
{
    char key[RL_KEY_MAX], msg[128];
    unsigned wait;

    source_key(r, key, sizeof(key));
    wait = rl_blocked(srv->limits, key, rl_now_ms());
    if (wait == 0)
        return 0;
    rl_count(srv->limits, RL_WHAT_SOURCE);
    snprintf(msg, sizeof(msg),
             "too many failed credentials from this address; retry in %u s",
             wait);
    if (rt->flags & ROUTE_OAUTH_ERRORS) {
        json_t *body = json_pack("{s:s, s:s}", "error", "rate_limited",
                                 "error_description", msg);
        http_reply_json(r, 429, body);
        r->error = AD_ERATE;
    } else {
        http_reply_error(r, AD_ERATE, msg);
    }
    r->retry_after = wait;
    return 1;
}

static void source_failed(http_server *srv, http_req *r)
{
    char key[RL_KEY_MAX];

    source_key(r, key, sizeof(key));
    rl_fail(srv->limits, key, rl_source_burst(srv->limits), rl_now_ms());
}

static void dispatch(struct listener *l, struct MHD_Connection *conn,
                     const char *url, const char *method,
                     struct req_state *st, http_lane lane, http_req *r)
{
    http_server *srv = l->server;
    char buf[1024];
    size_t i, route_ix = srv->nroutes;
    int path_matched = 0, guarded;

    memset(r, 0, sizeof(*r));
    r->app = srv->app;
    r->conn = conn;
    r->listener = l->kind;
    r->method = method;
    r->path = url;
    r->body = buf_len(&st->body) ? buf_str(&st->body) : "";
    r->body_len = buf_len(&st->body);
    r->cache_max_age = -1;
    r->lane = lane;
    source_of(conn, r->source, sizeof(r->source));

    if (st->bad_length) {
        /* Which length is the body? A proxy and we might disagree, and
         * the rest would be read as a smuggled second request. */
        r->close = 1;
        http_reply_error(r, AD_EBADREQ,
                         "conflicting or malformed Content-Length headers");
        goto done;
    }
    if (st->too_big) {
        char msg[64];
        snprintf(msg, sizeof(msg), "the body exceeds %zu bytes", st->body_max);
        http_reply_error(r, AD_ETOOBIG, msg);
        goto done;
    }
    for (i = 0; i < srv->nroutes; i++) {
        const http_route *rt = &srv->routes[i];
        const char *params[HTTP_PARAMS_MAX] = {NULL};

        if (!(rt->listeners & l->kind))
            continue;
        if (!route_match(rt->pattern, url, buf, sizeof(buf), params))
            continue;
        path_matched = 1;
        if (strcmp(rt->method, method) != 0 &&
            !(strcmp(method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0))
            continue;
        memcpy(r->param, params, sizeof(params));
        route_ix = i;
        guarded = source_guarded(srv, l, rt);
        if (guarded && source_blocked(srv, r, rt))
            goto done;
        if (authorize(r, rt)) {
            rt->handler(r);
            if (r->status == 0)
                http_reply_error(r, AD_EINTERNAL,
                                 "the handler gave no answer");
        }
        /* A wrong API key, enrollment token, secret or certificate
         * counts against the address it came from. */
        if (guarded && r->error == AD_EBADCRED && !r->deferred)
            source_failed(srv, r);
        goto done;
    }
    if (path_matched)
        http_reply_error(r, AD_EMETHOD, NULL);
    else
        http_reply_error(r, AD_ENOTFOUND, "no such endpoint");
done:
    /* A deferred request is counted once, when it is answered. */
    if (!r->deferred)
        metrics_record(srv->app, route_ix, r->status,
                       util_now_ns() - st->start_ns);
}

void http_defer(http_req *r)
{
    if (r->lane == HTTP_LANE_FAST)
        r->deferred = 1;
}

/* ---- the secret lane -------------------------------------------------- */

/* Queues a request for the secret lane and suspends its connection.
 * 0 if the queue is full (or stopping): the caller answers it itself. */
static int lane_submit(struct listener *l, struct MHD_Connection *conn,
                       const char *url, const char *method,
                       struct req_state *st)
{
    http_server *srv = l->server;
    struct lane_job *job;

    if (st->url == NULL && (st->url = strdup(url)) == NULL)
        return 0;
    if (st->method == NULL && (st->method = strdup(method)) == NULL)
        return 0;
    pthread_mutex_lock(&srv->lane_lock);
    if (srv->lane_nthreads == 0 || srv->lane_stopping ||
        srv->lane_len == LANE_QUEUE_MAX) {
        pthread_mutex_unlock(&srv->lane_lock);
        return 0;
    }
    /* Suspended before a worker can see the job, so its resume can
     * never come first. */
    MHD_suspend_connection(conn);
    job = &srv->lane_q[(srv->lane_head + srv->lane_len++) % LANE_QUEUE_MAX];
    job->l = l;
    job->conn = conn;
    job->st = st;
    pthread_cond_signal(&srv->lane_wake);
    pthread_mutex_unlock(&srv->lane_lock);
    return 1;
}

/* A secret worker: runs queued requests where they may block, leaves the
 * reply in the request's state and wakes the connection, which sends
 * it. Drains the queue before it stops, so no connection is left
 * suspended. */
static void *lane_main(void *arg)
{
    http_server *srv = arg;

    pthread_mutex_lock(&srv->lane_lock);
    for (;;) {
        struct lane_job job;
        http_req r;

        while (srv->lane_len == 0 && !srv->lane_stopping)
            pthread_cond_wait(&srv->lane_wake, &srv->lane_lock);
        if (srv->lane_len == 0)
            break;
        job = srv->lane_q[srv->lane_head];
        srv->lane_head = (srv->lane_head + 1) % LANE_QUEUE_MAX;
        srv->lane_len--;
        pthread_mutex_unlock(&srv->lane_lock);

        dispatch(job.l, job.conn, job.st->url, job.st->method, job.st,
                 HTTP_LANE_SLOW, &r);

        pthread_mutex_lock(&srv->lane_lock);
        job.st->lane_reply = r;
        job.st->lane_done = 1;
        MHD_resume_connection(job.conn);
    }
    pthread_mutex_unlock(&srv->lane_lock);
    return NULL;
}

/* Takes the reply a secret worker left for this request, if any. */
static int lane_take(http_server *srv, struct req_state *st, http_req *out)
{
    int done;

    pthread_mutex_lock(&srv->lane_lock);
    done = st->lane_done;
    if (done) {
        *out = st->lane_reply;
        st->lane_reply.resp = NULL; /* now the caller's */
        st->lane_done = 0;
    }
    pthread_mutex_unlock(&srv->lane_lock);
    return done;
}

struct length_scan {
    int count;
    int differ;
    const char *first;
};

static enum MHD_Result scan_length(void *cls, enum MHD_ValueKind kind,
                                   const char *key, const char *value)
{
    struct length_scan *ls = cls;

    (void)kind;
    if (key == NULL || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) != 0)
        return MHD_YES;
    if (ls->count++ == 0)
        ls->first = value;
    else if (value == NULL || ls->first == NULL ||
             strcmp(value, ls->first) != 0)
        ls->differ = 1;
    return MHD_YES;
}

/* Sets st->bad_length for Content-Length headers that disagree, are not
 * a plain number, or come with Transfer-Encoding (RFC 9112 §6.3: such a
 * message is a smuggling attempt as often as not), and st->too_big for
 * a declared length over the route's limit. */
static void check_lengths(struct MHD_Connection *conn, struct req_state *st)
{
    struct length_scan ls = {0, 0, NULL};
    uint64_t declared;

    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_length, &ls);
    if (ls.count == 0)
        return;
    if (ls.differ || ls.first == NULL ||
        codec_parse_u64(ls.first, UINT64_MAX, &declared) != 0 ||
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        st->bad_length = 1;
        return;
    }
    if (declared > st->body_max)
        st->too_big = 1;
}

/* The body limit of a request, fixed once its header has arrived.
 * Brokers' messages (a VerneMQ publish carries the payload in base64)
 * need more room than the API's own bodies. A bulk import needs far more
 * and gets it only when its header already holds an admin API key: no
 * one without one can make the daemon buffer more than 64 KiB. */
static size_t body_max_of(struct listener *l, struct MHD_Connection *conn,
                          const char *url, const char *method)
{
    http_server *srv = l->server;
    http_req probe;
    size_t i;

    if (strncmp(url, "/compat/", 8) == 0)
        return (size_t)srv->app->cfg.compat_body_max;
    if (strcmp(method, "POST") != 0 || !(l->kind & LISTEN_MAIN))
        return HTTP_BODY_MAX;
    for (i = 0; i < srv->nroutes; i++) {
        const http_route *rt = &srv->routes[i];

        if (!(rt->flags & ROUTE_BULK_BODY) || !(rt->listeners & l->kind) ||
            strcmp(rt->method, method) != 0 || strcmp(rt->pattern, url) != 0)
            continue;
        memset(&probe, 0, sizeof(probe));
        probe.app = srv->app;
        probe.conn = conn;
        if (http_bearer_role(&probe) == ROLE_ADMIN)
            return (size_t)srv->app->cfg.import_body_max;
        break;
    }
    return HTTP_BODY_MAX;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct listener *l = cls;
    struct req_state *st = *con_cls;
    http_req r;
    enum MHD_Result ret;
    uint64_t dur;

    (void)version;
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        if (st == NULL)
            return MHD_NO;
        st->start_ns = util_now_ns();
        *con_cls = st;
        atomic_fetch_add(&l->server->in_flight, 1);
        st->body_max = body_max_of(l, conn, url, method);
        buf_init(&st->body, st->body_max);
        check_lengths(conn, st);
        /* Answered at once, before any of the body is read. */
        if (!st->too_big && !st->bad_length)
            return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;

        *upload_data_size = 0;
        if (!st->too_big) {
            int over = buf_len(&st->body) + n > st->body_max;

            if (buf_append(&st->body, upload_data, n) == 0)
                return MHD_YES;
            /* Refused: past the route's limit (413), or out of memory. */
            if (!over)
                return MHD_NO;
            st->too_big = 1;
        }
        /* Too big: libmicrohttpd cannot answer mid-body, so drop the
         * rest and answer 413 once it has all arrived; a client that
         * keeps sending far past the limit is cut off instead. */
        st->discarded += n;
        return st->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
    }
    if (st->replied) {
        /* Woken by the secret lane, with the answer; else nothing new. */
        if (!lane_take(l->server, st, &r))
            return MHD_YES;
    } else {
        st->replied = 1;
        /* Only the check listener's pooled threads serve many
         * connections each; a thread-per-connection listener may block. */
        dispatch(l, conn, url, method, st,
                 l->kind == LISTEN_CHECK ? HTTP_LANE_FAST : HTTP_LANE_SLOW,
                 &r);
        if (r.deferred) {
            free(r.resp);
            if (lane_submit(l, conn, url, method, st))
                return MHD_YES;
            dispatch(l, conn, url, method, st, HTTP_LANE_FULL, &r);
        }
    }
    dur = util_now_ns() - st->start_ns;
    /* Check-listener traffic is the hot path: log only its errors. */
    if (l->kind != LISTEN_CHECK || r.status >= 400)
        if (!(r.status < 400 && strcmp(method, "GET") == 0 &&
              (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
               strcmp(url, "/metrics") == 0)))
            log_request(&r, dur);
    ret = send_reply(l, conn, &r);
    free(r.resp);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    struct listener *l = cls;
    struct req_state *st = *con_cls;

    (void)toe;
    track_phase(l->server, conn, CONN_IDLE);
    if (st == NULL)
        return;
    free(st->lane_reply.resp);
    free(st->url);
    free(st->method);
    buf_free(&st->body);
    free(st);
    *con_cls = NULL;
    atomic_fetch_sub(&l->server->in_flight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], safe[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_line("warn", "event=mhd message=%s", log_safe(msg, safe, sizeof(safe)));
}

/* ---- listeners ------------------------------------------------------- */

static ad_err parse_addr(const char *spec, struct sockaddr_storage *ss,
                         char *err, size_t errlen)
{
    char host[256];
    const char *colon, *port;
    struct addrinfo hints, *res = NULL;
    size_t hl;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        hl = (size_t)(close - spec - 1);
        if (hl >= sizeof(host))
            goto bad;
        memcpy(host, spec + 1, hl);
        port = close + 2;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL)
            goto bad;
        hl = (size_t)(colon - spec);
        if (hl >= sizeof(host))
            goto bad;
        memcpy(host, spec, hl);
        port = colon + 1;
    }
    host[hl] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(hl ? host : NULL, port, &hints, &res) != 0 || !res)
        goto bad;
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return AD_OK;
bad:
    return ad_errf(AD_EBADREQ, err, errlen,
                   "listener address %s: expected ADDR:PORT or off", spec);
}

static int unix_listen(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (!util_strlcpy(sun.sun_path, path, sizeof(sun.sun_path))) {
        ad_errf(AD_EBADREQ, err, errlen, "socket path too long: %s", path);
        return -1;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
        goto fail;
    /* Brokers on the same host in the owner's group may connect. */
    chmod(path, 0660);
    if (listen(fd, 512) != 0)
        goto fail;
    return fd;
fail:
    ad_errf(AD_EBADREQ, err, errlen, "check socket %s: %s", path,
            strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static ad_err start_listener(http_server *srv, listen_kind kind,
                             const char *spec, char *err, size_t errlen)
{
    struct listener *l = &srv->listeners[srv->nlisteners];
    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     MHD_USE_ITC;
    unsigned pool = 0;
    unsigned conn_limit = (unsigned)srv->app->cfg.max_connections;
    ad_err e;

    l->server = srv;
    l->kind = kind;
    l->unix_fd = -1;
    if (kind == LISTEN_CHECK && srv->app->cfg.check_socket[0]) {
        l->unix_fd = unix_listen(srv->app->cfg.check_socket, err, errlen);
        if (l->unix_fd < 0)
            return AD_EBADREQ;
        util_strlcpy(srv->unix_path, srv->app->cfg.check_socket,
                     sizeof(srv->unix_path));
    } else {
        e = parse_addr(spec, &ss, err, errlen);
        if (e != AD_OK)
            return e;
    }
    if (kind == LISTEN_CHECK) {
        long t = srv->app->cfg.threads;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        /* Decisions never block (device secrets go to the secret
         * lane), so one thread per core is enough. */
        pool = (unsigned)(t > 0 ? t : (ncpu > 0 ? ncpu : 2));
        /* TURBO skips syscalls MHD makes only for rare cases (e.g.
         * shutdown() before close); the check path pays per request. */
        flags |= MHD_USE_EPOLL | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME;
    } else {
        /* Writes wait for their group commit: a thread per connection
         * keeps one waiting request from stalling others. */
        flags |= MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
    }
    if (kind == LISTEN_HTTPS)
        flags |= MHD_USE_TLS;

    struct MHD_OptionItem optv[18];
    size_t n = 0;
#define OPT(o, v, p) optv[n++] = (struct MHD_OptionItem){o, (intptr_t)(v), p}
    /* The logger goes first so MHD reports nothing through its own. */
    OPT(MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL);
    OPT(MHD_OPTION_NOTIFY_COMPLETED, on_completed, l);
    OPT(MHD_OPTION_NOTIFY_CONNECTION, on_connection, l);
    OPT(MHD_OPTION_URI_LOG_CALLBACK, on_uri, l);
    OPT(MHD_OPTION_CONNECTION_LIMIT, conn_limit, NULL);
    /* One address may not hold every connection (loopback and unix
     * sockets included: MHD counts only IP addresses). */
    OPT(MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)srv->app->cfg.max_connections_per_ip, NULL);
    /* MHD's idle timeout restarts with every byte; the watchdog's
     * deadline does not (see watchdog_main). */
    OPT(MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(srv->idle_ms / 1000),
        NULL);
    /* Check requests are small; MHD clears its per-connection pool for
     * every request, so a smaller pool is less to clear. Bodies are
     * copied out of it as they arrive, whatever their size. */
    if (kind == LISTEN_CHECK)
        OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192, NULL);
    if (l->unix_fd >= 0)
        OPT(MHD_OPTION_LISTEN_SOCKET, l->unix_fd, NULL);
    else
        OPT(MHD_OPTION_SOCK_ADDR, 0, &ss);
    if (pool > 1)
        OPT(MHD_OPTION_THREAD_POOL_SIZE, pool, NULL);
    if (kind == LISTEN_HTTPS) {
        OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, srv->app->tls_key_pem);
        OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, srv->app->tls_cert_pem);
        /* Setting a trust list makes GnuTLS ask for (not demand) a
         * client certificate; device routes then require one. */
        OPT(MHD_OPTION_HTTPS_MEM_TRUST, 0, (void *)ca_chain_pem(srv->app->ca));
    }
    OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
    l->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, l,
                              MHD_OPTION_ARRAY, optv, MHD_OPTION_END);
    if (l->mhd == NULL) {
        if (l->unix_fd >= 0)
            close(l->unix_fd);
        return ad_errf(AD_EBADREQ, err, errlen,
                       "cannot start the %s listener on %s (address in "
                       "use?)",
                       kind == LISTEN_HTTPS  ? "https"
                       : kind == LISTEN_HTTP ? "http"
                                             : "check",
                       l->unix_fd >= 0 ? srv->app->cfg.check_socket : spec);
    }
    srv->nlisteners++;
    return AD_OK;
}

ad_err http_start(app *a, rl *limits, const http_route *routes,
                  size_t nroutes, http_server **out, char *err,
                  size_t errlen)
{
    http_server *srv;
    metrics *mt;
    ad_err e = AD_OK;

    *out = NULL;
    srv = calloc(1, sizeof(*srv));
    mt = calloc(1, sizeof(*mt));
    if (srv == NULL || mt == NULL) {
        free(srv);
        free(mt);
        return AD_ENOMEM;
    }
    mt->routes = routes;
    mt->nroutes = nroutes;
    mt->per_route = calloc(nroutes + 1, sizeof(*mt->per_route));
    if (mt->per_route == NULL) {
        free(srv);
        free(mt);
        return AD_ENOMEM;
    }
    mt->limits = limits;
    a->metrics = mt;
    srv->app = a;
    srv->limits = limits;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->request_ms = (uint64_t)a->cfg.request_timeout * 1000u;
    srv->idle_ms = (uint64_t)(a->cfg.request_timeout > IDLE_MIN_S
                                  ? a->cfg.request_timeout
                                  : IDLE_MIN_S) *
                   1000u;
    pthread_mutex_init(&srv->conns_lock, NULL);
    pthread_cond_init(&srv->conns_wake, NULL);
    pthread_mutex_init(&srv->lane_lock, NULL);
    pthread_cond_init(&srv->lane_wake, NULL);
    if (pthread_create(&srv->watchdog, NULL, watchdog_main, srv) == 0)
        srv->watchdog_running = 1;
    else
        e = ad_errf(AD_EINTERNAL, err, errlen,
                    "cannot start the request watchdog");
    /* One secret worker per argon2id slot: more would only wait at the
     * gate. */
    if (e == AD_OK) {
        size_t want = a->cfg.argon2_parallel > 0
                          ? (size_t)a->cfg.argon2_parallel
                          : 1;
        srv->lane_threads = calloc(want, sizeof(*srv->lane_threads));
        while (srv->lane_threads && srv->lane_nthreads < want &&
               pthread_create(&srv->lane_threads[srv->lane_nthreads], NULL,
                              lane_main, srv) == 0)
            srv->lane_nthreads++;
        if (srv->lane_nthreads < want)
            e = ad_errf(AD_EINTERNAL, err, errlen,
                        "cannot start the secret lane");
    }
    if (e == AD_OK && strcmp(a->cfg.http, "off") != 0 && a->cfg.http[0])
        e = start_listener(srv, LISTEN_HTTP, a->cfg.http, err, errlen);
    if (e == AD_OK && strcmp(a->cfg.https, "off") != 0 && a->cfg.https[0])
        e = start_listener(srv, LISTEN_HTTPS, a->cfg.https, err, errlen);
    if (e == AD_OK &&
        (a->cfg.check_socket[0] ||
         (strcmp(a->cfg.check_http, "off") != 0 && a->cfg.check_http[0])))
        e = start_listener(srv, LISTEN_CHECK, a->cfg.check_http, err,
                           errlen);
    if (e != AD_OK) {
        http_stop(srv, 0);
        return e;
    }
    *out = srv;
    return AD_OK;
}

void http_stop(http_server *srv, unsigned grace_ms)
{
    size_t i;
    unsigned waited = 0;
    MHD_socket quiesced[3];
    app *a;

    if (srv == NULL)
        return;
    a = srv->app;
    /* Stop accepting, let requests in flight finish, then close. The
     * quiesced listen sockets are closed only after MHD has stopped: its
     * pooled workers take them out of their epoll sets on their own
     * time, and closing first raced with that (TSan). */
    for (i = 0; i < srv->nlisteners; i++)
        quiesced[i] = MHD_quiesce_daemon(srv->listeners[i].mhd);
    while (atomic_load(&srv->in_flight) > 0 && waited < grace_ms) {
        usleep(10000);
        waited += 10;
    }
    /* The secret workers drain their queue before they stop: MHD must
     * not be stopped with a connection still suspended. */
    pthread_mutex_lock(&srv->lane_lock);
    srv->lane_stopping = 1;
    pthread_cond_broadcast(&srv->lane_wake);
    pthread_mutex_unlock(&srv->lane_lock);
    for (i = 0; i < srv->lane_nthreads; i++)
        pthread_join(srv->lane_threads[i], NULL);
    free(srv->lane_threads);
    for (i = 0; i < srv->nlisteners; i++) {
        MHD_stop_daemon(srv->listeners[i].mhd);
        if (quiesced[i] != MHD_INVALID_SOCKET)
            close(quiesced[i]);
    }
    if (srv->watchdog_running) {
        pthread_mutex_lock(&srv->conns_lock);
        srv->stopping = 1;
        pthread_cond_signal(&srv->conns_wake);
        pthread_mutex_unlock(&srv->conns_lock);
        pthread_join(srv->watchdog, NULL);
    }
    pthread_cond_destroy(&srv->conns_wake);
    pthread_mutex_destroy(&srv->conns_lock);
    pthread_cond_destroy(&srv->lane_wake);
    pthread_mutex_destroy(&srv->lane_lock);
    if (srv->unix_path[0])
        unlink(srv->unix_path);
    if (a->metrics) {
        free(a->metrics->per_route);
        free(a->metrics);
        a->metrics = NULL;
    }
    free(srv);
}
