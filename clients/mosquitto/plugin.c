/* authd_mosquitto.so: a mosquitto 2.x plugin (plugin API v5) that asks
 * authd once per CONNECT and then decides every subscribe, publish and
 * receive locally with the statements authd returned, compiled by the
 * same policy/ code the daemon uses. A background thread follows
 * authd's event stream so that revoked and suspended devices are
 * disconnected at once and changed policies are fetched again.
 *
 * Threads: every callback runs on the broker thread, which alone owns
 * the session table and alone calls mosquitto. The event thread only
 * queues what it heard (event_stream.c); the queue is drained at the
 * start of every callback (so an ACL decision never uses a grant whose
 * revocation has already arrived) and at every MOSQ_EVT_TICK, where the
 * disconnections happen. mosquitto 2.0.11 runs TICK once per main-loop
 * iteration and its poll/epoll wait is at most 100 ms, so a revoked
 * device is disconnected within about 100 ms of the event. */
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "../../common/codec.h"
#include "check_client.h"
#include "event_stream.h"
#include "sessions.h"
#include "urls.h"

enum {
    DEFAULT_TIMEOUT_MS = 2000,
    /* With several nodes: a node that is gone costs at most this before
     * the next one is asked, so a failover stays well under a second. */
    DEFAULT_CONNECT_TIMEOUT_MS_MANY = 300,
    DEFAULT_CACHE_TTL = 300,
    ANSWER_MAX_MB_MAX = 1024,
    KICK_LIST_MAX = 100000
};

typedef struct plugin {
    mosquitto_plugin_id_t *id;
    cc_config cfg;
    long cache_ttl;
    cc *check;
    es *events;
    sess_table *sessions;
    atomic_int pending;     /* the event thread queued something */
    atomic_int stream_up;   /* the event stream is connected */
    unsigned gen;           /* bumped when every grant goes stale */
    int outage;             /* authd unreachable, logged once */
    int stream_logged;      /* stream_up as last logged */
    unsigned stream_conns;  /* es_connections as last logged */
    const char *check_node; /* cc_node as last logged */
    size_t nnodes;          /* URLs in plugin_opt_url */
    int kick_pending;       /* some session may be flagged kick */
    char **kick_devices;    /* device ids to disconnect at the next tick */
    size_t nkick, capkick;
    time_t last_sweep;
} plugin;

int mosquitto_plugin_version(int supported_version_count,
                             const int *supported_versions)
{
    int i;

    for (i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

/* ---- authd reachability (logged once per outage) --------------------- */

static void note_down(plugin *p, const char *why)
{
    if (!p->outage)
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "authd: %s unreachable (%s): new connections are "
                             "refused; connected clients keep their cached "
                             "grants until they expire",
                             p->cfg.url, why);
    p->outage = 1;
}

static void note_up(plugin *p)
{
    if (p->outage)
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "authd: %s reachable again",
                             p->cfg.url);
    p->outage = 0;
}

/* ---- grants ---------------------------------------------------------- */

/* The lowercase hex SHA-256 of the client's certificate DER into out
 * (65 bytes), or "" without a certificate. */
static void client_fingerprint(struct mosquitto *client, char *out)
{
    X509 *x = mosquitto_client_certificate(client);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    out[0] = '\0';
    if (x == NULL)
        return;
    if (X509_digest(x, EVP_sha256(), md, &n) == 1 && n == 32)
        codec_hex_encode(md, n, out, 0);
    X509_free(x);
}

/* Asks authd about s's credentials and, on allow, installs the new
 * grant. The session is left unchanged unless authd answered. */
static cc_result fetch(plugin *p, sess *s, time_t now, char *reason,
                       size_t rlen)
{
    cc_grant g;
    char err[256];
    cc_result r;

    r = cc_connect(p->check, s->client_id, s->username, s->password,
                   s->fingerprint[0] ? s->fingerprint : NULL, &g, err,
                   sizeof(err));
    if (cc_node(p->check) != p->check_node) {
        /* Another node answered, or will be asked first next time. */
        p->check_node = cc_node(p->check);
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "authd: checks now go to %s%s%s",
                             p->check_node, err[0] ? " after: " : "", err);
    }
    if (r == CC_UNREACHABLE) {
        note_down(p, err);
        snprintf(reason, rlen, "authd_unreachable");
        s->retry_at = now + 1;
        return r;
    }
    note_up(p);
    if (r == CC_UNUSABLE) {
        /* authd answered; this client cannot be decided here. Per
         * client, not an outage: the operator must raise the bound. */
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "authd: client %s (device %s): the check answer "
                             "cannot be used: %s",
                             s->client_id ? s->client_id : "",
                             g.device[0] ? g.device
                             : s->grant.device[0] ? s->grant.device
                                                  : "not yet known",
                             err);
        snprintf(reason, rlen, "answer_unusable");
        return r;
    }
    snprintf(reason, rlen, "%s", g.reason[0] ? g.reason : "denied");
    if (r == CC_ALLOW) {
        cc_grant_clear(&s->grant);
        s->grant = g;
        s->deadline = now + p->cache_ttl;
        if (g.expire_at > 0 && (time_t)g.expire_at < s->deadline)
            s->deadline = (time_t)g.expire_at;
        s->gen = p->gen;
        s->stale = 0;
    }
    return r;
}

/* Does the client have a live TLS connection? Only asked for a client
 * whose session was closed: with use_identity_as_username a new
 * connection may reuse a freed client's address without BASIC_AUTH. */
static int client_is_live(struct mosquitto *client)
{
    X509 *x = mosquitto_client_certificate(client);

    if (x == NULL)
        return 0;
    X509_free(x);
    return 1;
}

static void flag_kick(plugin *p, sess *s)
{
    s->dead = 1;
    if (!s->closed) {
        s->kick = 1;
        p->kick_pending = 1;
    }
}

/* Checks a session again after its grant expired or went stale. During
 * an outage (the last call failed and the event stream is down too) no
 * request is made: the cached grant serves until its deadline. */
static void refresh(plugin *p, sess *s, time_t now)
{
    char reason[64];

    if (now < s->retry_at ||
        (p->outage && !atomic_load_explicit(&p->stream_up, memory_order_relaxed)))
        return;
    switch (fetch(p, s, now, reason, sizeof(reason))) {
    case CC_DENY:
    case CC_UNUSABLE: /* fail closed: the old grant is stale */
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "authd: client %s (device %s) refused on re-check: %s",
                             s->client_id ? s->client_id : "",
                             s->grant.device, reason);
        flag_kick(p, s);
        break;
    default:
        break;
    }
}

/* ---- events from authd ------------------------------------------------ */

struct match {
    plugin *p;
    const char *value;
};

static int gone(sess *s, void *arg)
{
    struct match *m = arg;

    if (strcmp(s->grant.device, m->value) != 0)
        return 0;
    if (s->closed)
        return 1; /* an offline session: nothing more is delivered to it */
    /* Its clients are disconnected at the tick, by username (the
     * device id) and by client id. */
    flag_kick(m->p, s);
    return 0;
}

static int stale(sess *s, void *arg)
{
    struct match *m = arg;

    if (strcmp(s->grant.device, m->value) == 0)
        s->stale = 1;
    return 0;
}

static int token_gone(sess *s, void *arg)
{
    struct match *m = arg;

    if (s->grant.jti[0] && strcmp(s->grant.jti, m->value) == 0) {
        if (s->closed)
            return 1;
        flag_kick(m->p, s);
    }
    return 0;
}

static void queue_device_kick(plugin *p, const char *device)
{
    char *d;

    if (p->nkick == p->capkick) {
        size_t cap = p->capkick ? p->capkick * 2 : 16;
        char **n;

        if (cap > KICK_LIST_MAX)
            return; /* the sessions are dead already; kicks are best effort */
        n = realloc(p->kick_devices, cap * sizeof(*n));
        if (n == NULL)
            return;
        p->kick_devices = n;
        p->capkick = cap;
    }
    if ((d = strdup(device)) != NULL)
        p->kick_devices[p->nkick++] = d;
}

static void drain(plugin *p)
{
    es_item *it, *nx;
    struct match m;

    m.p = p;
    for (it = es_take(p->events); it; it = nx) {
        nx = it->next;
        m.value = it->value;
        switch (it->kind) {
        case ES_DEVICE_GONE:
            sess_each(p->sessions, gone, &m);
            queue_device_kick(p, it->value);
            break;
        case ES_DEVICE_STALE:
            sess_each(p->sessions, stale, &m);
            break;
        case ES_TOKEN_REVOKED:
            sess_each(p->sessions, token_gone, &m);
            break;
        case ES_ALL_STALE:
            /* Lazily: each session fetches again when next used. */
            p->gen++;
            break;
        }
        free(it);
    }
}

static inline void drain_if_pending(plugin *p)
{
    if (atomic_load_explicit(&p->pending, memory_order_relaxed))
        drain(p);
}

/* ---- callbacks -------------------------------------------------------- */

static int on_basic_auth(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_basic_auth *ed = event_data;
    plugin *p = userdata;
    char fpr[65], reason[64];
    const char *cid = mosquitto_client_id(ed->client);
    const char *user;
    time_t now = time(NULL);
    sess *s;
    cc_result r;

    (void)event;
    drain_if_pending(p);
    client_fingerprint(ed->client, fpr);
    s = sess_new(ed->client, cid, ed->username, ed->password, fpr);
    if (s == NULL) {
        sess_del(p->sessions, ed->client);
        return MOSQ_ERR_NOMEM;
    }
    r = fetch(p, s, now, reason, sizeof(reason));
    if (r != CC_ALLOW) {
        /* An outage is logged once (note_down), not per client. */
        if (r == CC_DENY || r == CC_UNUSABLE)
            mosquitto_log_printf(MOSQ_LOG_NOTICE,
                                 "authd: client %s refused at connect: %s",
                                 cid ? cid : "", reason);
        sess_free(s);
        /* A session left by an earlier client at this address must not
         * serve this one. */
        sess_del(p->sessions, ed->client);
        /* Fail closed either way; CONNACK "not authorized". */
        return MOSQ_ERR_AUTH;
    }
    /* The MQTT username becomes the device id: certificate clients send
     * none, token clients any; kicks and %u patterns then see the
     * device. */
    user = ed->username;
    if ((user == NULL || strcmp(user, s->grant.device) != 0) &&
        mosquitto_set_username(ed->client, s->grant.device) != MOSQ_ERR_SUCCESS) {
        sess_free(s);
        sess_del(p->sessions, ed->client);
        return MOSQ_ERR_NOMEM;
    }
    sess_put(p->sessions, s);
    return MOSQ_ERR_SUCCESS;
}

/* With use_identity_as_username mosquitto skips BASIC_AUTH: the client
 * is checked at its first ACL check instead, by its certificate. */
static sess *connect_late(plugin *p, struct mosquitto *client, time_t now)
{
    char fpr[65], reason[64];
    cc_result r;
    sess *s;

    client_fingerprint(client, fpr);
    s = sess_new(client, mosquitto_client_id(client),
                 mosquitto_client_username(client), NULL, fpr);
    if (s == NULL)
        return NULL;
    sess_put(p->sessions, s);
    r = fetch(p, s, now, reason, sizeof(reason));
    if (r != CC_ALLOW) {
        if (r == CC_DENY || r == CC_UNUSABLE)
            mosquitto_log_printf(MOSQ_LOG_NOTICE,
                                 "authd: client %s refused at its first ACL check: %s",
                                 s->client_id ? s->client_id : "", reason);
        flag_kick(p, s); /* deny now, disconnect at the tick */
    }
    return s;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_acl_check *ed = event_data;
    plugin *p = userdata;
    pol_action action;
    time_t now;
    sess *s;

    (void)event;
    drain_if_pending(p);
    switch (ed->access) {
    case MOSQ_ACL_SUBSCRIBE: action = POL_SUBSCRIBE; break;
    case MOSQ_ACL_WRITE: action = POL_PUBLISH; break;
    case MOSQ_ACL_READ: action = POL_RECEIVE; break;
    case MOSQ_ACL_UNSUBSCRIBE: return MOSQ_ERR_SUCCESS;
    default: return MOSQ_ERR_ACL_DENIED;
    }
    now = time(NULL);
    s = sess_get(p->sessions, ed->client);
    if (s == NULL || (s->closed && !s->dead && client_is_live(ed->client)))
        s = connect_late(p, ed->client, now);
    if (s == NULL || s->dead)
        return MOSQ_ERR_ACL_DENIED;
    if (s->stale || s->gen != p->gen || now >= s->deadline) {
        refresh(p, s, now);
        if (s->dead || now >= s->deadline)
            return MOSQ_ERR_ACL_DENIED;
    }
    if (!pol_decide(s->grant.policy, action, ed->topic).allow)
        return MOSQ_ERR_ACL_DENIED;
    if (s->grant.has_scope &&
        !pol_decide(s->grant.scope, action, ed->topic).allow)
        return MOSQ_ERR_ACL_DENIED;
    return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_disconnect *ed = event_data;
    plugin *p = userdata;
    sess *s = sess_get(p->sessions, ed->client);

    (void)event;
    /* Kept, not freed: mosquitto checks the will right after this, and
     * a persistent session receives while offline; the sweep frees it
     * at its deadline. */
    if (s) {
        s->closed = 1;
        s->kick = 0;
    }
    return MOSQ_ERR_SUCCESS;
}

static int kick_flagged(sess *s, void *arg)
{
    (void)arg;
    if (s->kick) {
        s->kick = 0;
        if (!s->closed && s->client_id)
            mosquitto_kick_client_by_clientid(s->client_id, false);
    }
    return 0;
}

struct sweep {
    plugin *p;
    time_t now;
};

static int sweep_one(sess *s, void *arg)
{
    struct sweep *w = arg;

    if (s->closed)
        return s->dead || w->now >= s->deadline;
    /* A live session whose token or certificate has expired ends now,
     * not at its next message. */
    if (!s->dead && s->grant.expire_at > 0 && w->now >= (time_t)s->grant.expire_at) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "authd: client %s (device %s): credential expired",
                             s->client_id ? s->client_id : "", s->grant.device);
        flag_kick(w->p, s);
    }
    return 0;
}

static int on_tick(int event, void *event_data, void *userdata)
{
    plugin *p = userdata;
    time_t now = time(NULL);
    size_t i;
    int up;
    unsigned conns;
    const char *node;

    (void)event, (void)event_data;
    drain_if_pending(p);
    for (i = 0; i < p->nkick; i++) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE,
                             "authd: disconnecting device %s (revoked or suspended)",
                             p->kick_devices[i]);
        mosquitto_kick_client_by_username(p->kick_devices[i], false);
        free(p->kick_devices[i]);
    }
    p->nkick = 0;
    up = atomic_load(&p->stream_up);
    /* Counted, not only up/down: a switch to another node can happen
     * between two ticks. */
    conns = es_connections(p->events, &node);
    if (conns != p->stream_conns) {
        p->stream_conns = conns;
        mosquitto_log_printf(MOSQ_LOG_INFO,
                             "authd: following events at %s/v1/events", node);
        p->stream_logged = 1;
    }
    if (up != p->stream_logged) {
        if (!up)
            mosquitto_log_printf(MOSQ_LOG_WARNING,
                                 "authd: event stream lost, reconnecting");
        p->stream_logged = up;
    }
    if (p->outage && up)
        note_up(p);
    if (now != p->last_sweep) {
        struct sweep w = {p, now};

        p->last_sweep = now;
        sess_each(p->sessions, sweep_one, &w);
    }
    if (p->kick_pending) {
        /* Kicking runs on_disconnect, which only sets flags. */
        p->kick_pending = 0;
        sess_each(p->sessions, kick_flagged, NULL);
    }
    return MOSQ_ERR_SUCCESS;
}

/* ---- lifecycle -------------------------------------------------------- */

static void plugin_free(plugin *p)
{
    size_t i;

    if (p == NULL)
        return;
    es_stop(p->events);
    cc_close(p->check);
    sess_table_close(p->sessions);
    for (i = 0; i < p->nkick; i++)
        free(p->kick_devices[i]);
    free(p->kick_devices);
    free((char *)p->cfg.url);
    free((char *)p->cfg.cacert);
    free((char *)p->cfg.key);
    free(p);
}

/* A decimal option value in [min, max] (common/codec's strict parser:
 * digits only, no sign, no spaces). */
static int parse_long(const char *s, long min, long max, long *out)
{
    int64_t v;

    if (codec_parse_i64(s, min, max, &v) != 0)
        return -1;
    *out = (long)v;
    return 0;
}

static int set_str(const char **dst, const char *v)
{
    free((char *)*dst);
    *dst = strdup(v);
    return *dst ? 0 : -1;
}

static int parse_options(plugin *p, struct mosquitto_opt *options,
                         int option_count)
{
    urls nodes;
    char err[256];
    long answer_mb = (long)(CC_ANSWER_MAX_DEFAULT >> 20);
    int i;

    p->cfg.timeout_ms = DEFAULT_TIMEOUT_MS;
    p->cache_ttl = DEFAULT_CACHE_TTL;
    for (i = 0; i < option_count; i++) {
        const char *k = options[i].key, *v = options[i].value;
        int bad;

        if (k == NULL || v == NULL)
            continue;
        if (strcmp(k, "url") == 0)
            bad = set_str(&p->cfg.url, v);
        else if (strcmp(k, "cacert") == 0)
            bad = set_str(&p->cfg.cacert, v);
        else if (strcmp(k, "key") == 0)
            bad = set_str(&p->cfg.key, v);
        else if (strcmp(k, "timeout_ms") == 0)
            bad = parse_long(v, 1, 600000, &p->cfg.timeout_ms);
        else if (strcmp(k, "connect_timeout_ms") == 0)
            bad = parse_long(v, 1, 600000, &p->cfg.connect_timeout_ms);
        else if (strcmp(k, "cache_ttl") == 0)
            bad = parse_long(v, 1, 86400 * 366, &p->cache_ttl);
        else if (strcmp(k, "answer_max_mb") == 0)
            bad = parse_long(v, 1, ANSWER_MAX_MB_MAX, &answer_mb);
        else
            continue; /* options of other plugins share the namespace */
        if (bad) {
            mosquitto_log_printf(MOSQ_LOG_ERR,
                                 "authd: bad value for plugin_opt_%s", k);
            return -1;
        }
    }
    p->cfg.answer_max = (size_t)answer_mb << 20;
    if (p->cfg.url == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "authd: plugin_opt_url is required");
        return -1;
    }
    if (urls_parse(p->cfg.url, URLS_UNIX, &nodes, err, sizeof(err)) != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "authd: plugin_opt_url: %s", err);
        return -1;
    }
    p->nnodes = nodes.n;
    urls_free(&nodes);
    /* One node: nothing to fail over to, so a slow connect may take the
     * whole timeout as before. */
    if (p->cfg.connect_timeout_ms == 0)
        p->cfg.connect_timeout_ms = p->nnodes > 1
                                        ? DEFAULT_CONNECT_TIMEOUT_MS_MANY
                                        : p->cfg.timeout_ms;
    if (p->cfg.connect_timeout_ms > p->cfg.timeout_ms)
        p->cfg.connect_timeout_ms = p->cfg.timeout_ms;
    return 0;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count)
{
    plugin *p = calloc(1, sizeof(*p));

    *userdata = NULL;
    if (p == NULL)
        return MOSQ_ERR_NOMEM;
    p->id = identifier;
    atomic_init(&p->pending, 0);
    atomic_init(&p->stream_up, 0);
    if (parse_options(p, options, option_count) != 0) {
        plugin_free(p);
        return MOSQ_ERR_INVAL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (cc_open(&p->cfg, &p->check) != 0 ||
        sess_table_open(&p->sessions) != 0 ||
        es_start(&p->cfg, &p->pending, &p->stream_up, &p->events) != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "authd: cannot start the plugin");
        plugin_free(p);
        return MOSQ_ERR_UNKNOWN;
    }
    if (mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH,
                                    on_basic_auth, NULL, p) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK,
                                    on_acl_check, NULL, p) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT,
                                    on_disconnect, NULL, p) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_TICK,
                                    on_tick, NULL, p) != MOSQ_ERR_SUCCESS) {
        mosquitto_log_printf(MOSQ_LOG_ERR, "authd: cannot register callbacks");
        mosquitto_callback_unregister(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
        mosquitto_callback_unregister(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
        mosquitto_callback_unregister(identifier, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
        mosquitto_callback_unregister(identifier, MOSQ_EVT_TICK, on_tick, NULL);
        plugin_free(p);
        return MOSQ_ERR_UNKNOWN;
    }
    p->check_node = cc_node(p->check);
    mosquitto_log_printf(MOSQ_LOG_INFO,
                         "authd: plugin ready (authd at %s, cache_ttl %lds)",
                         p->cfg.url, p->cache_ttl);
    *userdata = p;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
                             int option_count)
{
    plugin *p = userdata;

    (void)options, (void)option_count;
    if (p == NULL)
        return MOSQ_ERR_SUCCESS;
    mosquitto_callback_unregister(p->id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
    mosquitto_callback_unregister(p->id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
    mosquitto_callback_unregister(p->id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
    mosquitto_callback_unregister(p->id, MOSQ_EVT_TICK, on_tick, NULL);
    plugin_free(p);
    curl_global_cleanup();
    return MOSQ_ERR_SUCCESS;
}
