/* The /v1/events follower: a libcurl streaming transfer on its own
 * thread, an incremental SSE parser, and the queue the broker thread
 * drains. Nothing here calls mosquitto: its functions are not safe off
 * the broker thread. */
#include "event_stream.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "../../common/buf.h"
#include "urls.h"

enum {
    LINE_MAX_BYTES = 64 * 1024, /* an event's data line; authd's are small */
    QUEUE_MAX = 100000,
    BACKOFF_FIRST_MS = 100,
    BACKOFF_MAX_MS = 5000,
    /* authd sends a keep-alive comment every 15 s; three missed ones
     * mean the connection is gone even if TCP has not noticed. */
    STALL_SECONDS = 45,
    /* After its stream broke, or it could not be reached, a node is
     * tried again only when the others fail, or after this long. */
    NODE_HOLD_MS = 5000
};

struct es {
    cc_config cfg;
    char *url_buf, *cacert_buf, *key_buf;
    urls nodes;           /* the stream thread's own copy of the list */
    size_t trying;        /* the node of the transfer running now */
    atomic_uint conns;    /* streams that answered 200 so far */
    atomic_size_t node;   /* the node of the last of them */
    atomic_int *pending, *up;
    atomic_int stop;
    pthread_t thread;
    pthread_mutex_t lock; /* queue and the stop wait */
    pthread_cond_t wake;
    es_item *head, *tail;
    size_t count;
    int overflowed;
    /* Parser state (the stream thread only). */
    char *line;
    size_t line_len;
    char event[64];
    char id[32];
    buf_t data;         /* the event's data lines, joined by '\n' */
    char last_id[32];   /* of the last dispatched event, for resuming on
                         * this node or another: with one event log for
                         * every node (cluster mode) ids are global */
    int status_ok;      /* this transfer answered 200 */
    int connected_once;
};

static void push(es *e, es_kind kind, const char *value)
{
    size_t n = strlen(value);
    es_item *it, *p, *nx;

    pthread_mutex_lock(&e->lock);
    if (e->overflowed)
        goto out; /* "everything is stale" is queued already */
    if (e->count >= QUEUE_MAX) {
        /* Too much at once: collapse into "everything is stale", which
         * the broker thread turns into a fresh check of every session
         * (refused ones are disconnected then). */
        for (p = e->head; p; p = nx) {
            nx = p->next;
            free(p);
        }
        e->head = e->tail = NULL;
        e->count = 0;
        e->overflowed = 1;
        kind = ES_ALL_STALE;
        value = "";
        n = 0;
    }
    it = malloc(sizeof(*it) + n + 1);
    if (it == NULL)
        goto out;
    it->next = NULL;
    it->kind = kind;
    memcpy(it->value, value, n + 1);
    if (e->tail)
        e->tail->next = it;
    else
        e->head = it;
    e->tail = it;
    e->count++;
    atomic_store(e->pending, 1);
out:
    pthread_mutex_unlock(&e->lock);
}

es_item *es_take(es *e)
{
    es_item *h;

    pthread_mutex_lock(&e->lock);
    h = e->head;
    e->head = e->tail = NULL;
    e->count = 0;
    e->overflowed = 0;
    atomic_store(e->pending, 0);
    pthread_mutex_unlock(&e->lock);
    return h;
}

/* One complete event: type in e->event, JSON in e->data. */
static void dispatch(es *e)
{
    json_t *d;
    const char *device, *v;

    if (e->id[0])
        memcpy(e->last_id, e->id, sizeof(e->last_id));
    /* No data, or more than LINE_MAX_BYTES of it (the buffer failed). */
    if (buf_len(&e->data) == 0 || buf_str(&e->data) == NULL ||
        e->event[0] == '\0')
        return;
    d = json_loadb(buf_str(&e->data), buf_len(&e->data), 0, NULL);
    if (d == NULL)
        return;
    device = json_string_value(json_object_get(d, "device"));
    if (strcmp(e->event, "revoked") == 0 || strcmp(e->event, "suspended") == 0) {
        if (device)
            push(e, ES_DEVICE_GONE, device);
    } else if (strcmp(e->event, "policy_changed") == 0) {
        if (device)
            push(e, ES_DEVICE_STALE, device);
        else
            push(e, ES_ALL_STALE, "");
    } else if (strcmp(e->event, "token_revoked") == 0) {
        if ((v = json_string_value(json_object_get(d, "jti"))) != NULL)
            push(e, ES_TOKEN_REVOKED, v);
    }
    /* "resumed" and unknown events change nothing here: a resumed
     * device is checked afresh when it connects. */
    json_decref(d);
}

static void field(es *e, char *line, size_t n)
{
    char *colon, *value;
    size_t vlen;

    if (n == 0) {
        dispatch(e);
        e->event[0] = e->id[0] = '\0';
        buf_reset(&e->data);
        return;
    }
    if (line[0] == ':')
        return; /* a comment: authd's keep-alive */
    colon = memchr(line, ':', n);
    if (colon == NULL) {
        value = line + n;
        vlen = 0;
    } else {
        *colon = '\0';
        value = colon + 1;
        vlen = n - (size_t)(value - line);
        if (vlen && *value == ' ') {
            value++;
            vlen--;
        }
    }
    line[colon ? (size_t)(colon - line) : n] = '\0';
    if (strcmp(line, "event") == 0) {
        if (vlen < sizeof(e->event)) {
            memcpy(e->event, value, vlen);
            e->event[vlen] = '\0';
        }
    } else if (strcmp(line, "id") == 0) {
        if (vlen < sizeof(e->id)) {
            memcpy(e->id, value, vlen);
            e->id[vlen] = '\0';
        }
    } else if (strcmp(line, "data") == 0) {
        if (buf_len(&e->data) > 0)
            buf_append_byte(&e->data, '\n');
        buf_append(&e->data, value, vlen);
    }
}

int es_feed(es *e, const char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char c = p[i];

        if (c == '\n') {
            size_t len = e->line_len;

            if (len && e->line[len - 1] == '\r')
                len--;
            if (e->line == NULL) {
                field(e, (char *)"", 0);
            } else {
                e->line[len] = '\0';
                field(e, e->line, len);
            }
            e->line_len = 0;
            continue;
        }
        if (e->line == NULL) {
            e->line = malloc(LINE_MAX_BYTES + 1);
            if (e->line == NULL)
                return -1;
        }
        if (e->line_len >= LINE_MAX_BYTES)
            return -1;
        e->line[e->line_len++] = c;
    }
    return 0;
}

static void reset_parser(es *e)
{
    e->line_len = 0;
    e->event[0] = e->id[0] = '\0';
    buf_reset(&e->data);
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
    es *e = arg;
    size_t n = size * nmemb;

    if (n > 9 && strncmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', n);

        e->status_ok = sp && (size_t)(sp - p) + 4 <= n && strncmp(sp + 1, "200", 3) == 0;
        if (e->status_ok) {
            /* Events may have been missed while the stream was down
             * (or authd restarted and its ids started again): every
             * session is checked afresh when next used. */
            if (e->connected_once)
                push(e, ES_ALL_STALE, "");
            e->connected_once = 1;
            atomic_store(&e->node, e->trying);
            atomic_fetch_add(&e->conns, 1);
            atomic_store(e->up, 1);
        }
    }
    return n;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
    es *e = arg;
    size_t n = size * nmemb;

    if (!e->status_ok)
        return n; /* an error body: ignored, the transfer ends */
    return es_feed(e, p, n) == 0 ? n : 0;
}

static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c,
                       curl_off_t d)
{
    es *e = arg;

    (void)a, (void)b, (void)c, (void)d;
    return atomic_load(&e->stop) ? 1 : 0;
}

/* Sleeps ms unless stopped; returns nonzero when stopping. */
static int nap(es *e, long ms)
{
    struct timespec ts;
    int stop;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->lock);
    while (!(stop = atomic_load(&e->stop)))
        if (pthread_cond_timedwait(&e->wake, &e->lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&e->lock);
    return stop || atomic_load(&e->stop);
}

/* Gives this thread a file descriptor table of its own. While two
 * threads share one, Linux takes an atomic reference on the file in
 * every read, write and epoll_ctl of the broker thread (the fdget fast
 * path needs an unshared table): measured at 5-10% of mosquitto's
 * throughput under QoS 1 load. The private copy starts with every
 * descriptor the broker had open; they are closed here (in the copy
 * only), so that no broker socket is kept alive by this thread. */
static void private_fd_table(void)
{
#ifdef CLONE_FILES
    int fd;

    if (unshare(CLONE_FILES) != 0)
        return;
    if (close_range(3, ~0U, 0) != 0)
        for (fd = 3; fd < 65536; fd++)
            close(fd);
#endif
}

/* Follows the stream of node i until it ends or the plugin stops;
 * returns whether the node answered 200 (the stream was up). */
static int follow(es *e, CURL *curl, size_t i)
{
    struct curl_slist *h, *t;
    char url[URLS_LEN_MAX + 64], hdr[64];
    int up;

    curl_easy_reset(curl);
    h = cc_prepare(curl, &e->cfg);
    if (h == NULL)
        return 0;
    if (cc_target(curl, e->nodes.url[i], "/v1/events", url, sizeof(url)) != 0)
        goto out;
    t = curl_slist_append(h, "Accept: text/event-stream");
    h = t ? t : h;
    if (e->last_id[0]) {
        /* Whichever node this is: it sends what came after. */
        snprintf(hdr, sizeof(hdr), "Last-Event-ID: %s", e->last_id);
        t = curl_slist_append(h, hdr);
        h = t ? t : h;
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, e);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, e);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, e);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)STALL_SECONDS);
    e->trying = i;
    e->status_ok = 0;
    reset_parser(e);
    curl_easy_perform(curl);
out:
    up = e->status_ok;
    atomic_store(e->up, 0);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    return up;
}

static void *run(void *arg)
{
    es *e = arg;
    CURL *curl;
    long backoff = BACKOFF_FIRST_MS;
    size_t order[URLS_MAX], n, k;
    int was_up;

    private_fd_table();
    if ((curl = curl_easy_init()) == NULL)
        return NULL;
    while (!atomic_load(&e->stop)) {
        /* One round: the nodes in order until one streams. */
        was_up = 0;
        n = urls_order(&e->nodes, urls_now_ms(), order);
        for (k = 0; k < n && !was_up && !atomic_load(&e->stop); k++) {
            was_up = follow(e, curl, order[k]);
            if (was_up)
                urls_good(&e->nodes, order[k]);
            /* Whether its stream broke or it never answered, the next
             * attempt goes to another node first: this one may be
             * dying, and another serves the same events. */
            urls_bad(&e->nodes, order[k], urls_now_ms(), NODE_HOLD_MS);
        }
        if (was_up)
            backoff = BACKOFF_FIRST_MS; /* it worked for a while */
        if (nap(e, backoff))
            break;
        if (!was_up)
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    curl_easy_cleanup(curl);
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static void es_free(es *e)
{
    es_item *p, *nx;

    for (p = e->head; p; p = nx) {
        nx = p->next;
        free(p);
    }
    free(e->url_buf);
    urls_free(&e->nodes);
    free(e->cacert_buf);
    free(e->key_buf);
    free(e->line);
    buf_free(&e->data);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e);
}

int es_start(const cc_config *cfg, atomic_int *pending, atomic_int *up,
             es **out)
{
    es *e = calloc(1, sizeof(*e));
    char err[256];

    *out = NULL;
    if (e == NULL)
        return -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    atomic_init(&e->stop, 0);
    atomic_init(&e->conns, 0);
    atomic_init(&e->node, 0);
    /* The same bound as before the buffer: data plus its separator
     * within LINE_MAX_BYTES. */
    buf_init(&e->data, LINE_MAX_BYTES - 2);
    e->pending = pending;
    e->up = up;
    e->url_buf = dup_or_null(cfg->url);
    e->cacert_buf = dup_or_null(cfg->cacert);
    e->key_buf = dup_or_null(cfg->key);
    e->cfg.url = e->url_buf;
    e->cfg.cacert = e->cacert_buf;
    e->cfg.key = e->key_buf;
    e->cfg.timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 2000;
    e->cfg.connect_timeout_ms = cfg->connect_timeout_ms;
    if (e->url_buf == NULL ||
        urls_parse(e->url_buf, URLS_UNIX, &e->nodes, err, sizeof(err)) != 0 ||
        pthread_create(&e->thread, NULL, run, e) != 0) {
        es_free(e);
        return -1;
    }
    *out = e;
    return 0;
}

unsigned es_connections(es *e, const char **node)
{
    unsigned n = atomic_load(&e->conns);

    /* The strings of the list never change while e lives. */
    *node = e->nodes.url[atomic_load(&e->node)];
    return n;
}

void es_stop(es *e)
{
    if (e == NULL)
        return;
    pthread_mutex_lock(&e->lock);
    atomic_store(&e->stop, 1);
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    es_free(e);
}
