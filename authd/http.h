/* The HTTP layer: libmicrohttpd listeners, request bodies (64 KiB max),
 * the route table lookup, credentials, JSON replies and errors, and the
 * per-route metrics. Handlers (routes_*.c) see only http_req. */
#ifndef AUTHD_HTTP_H
#define AUTHD_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "app.h"

typedef struct http_server http_server;
typedef struct http_stream http_stream;

typedef enum {
    LISTEN_HTTP = 1,
    LISTEN_HTTPS = 2,
    LISTEN_CHECK = 4,
    LISTEN_MAIN = LISTEN_HTTP | LISTEN_HTTPS,
    LISTEN_ALL = LISTEN_MAIN | LISTEN_CHECK
} listen_kind;

/* Who may call a route (docs/api.md §2). */
typedef enum {
    ACCESS_PUBLIC,      /* anyone */
    ACCESS_ADMIN,       /* API key, role admin */
    ACCESS_PROVISIONER, /* API key, role admin or provisioner */
    ACCESS_BROKER,      /* API key admin or broker, or the check listener */
    ACCESS_DEVICE,      /* a client certificate verified by our CA (HTTPS) */
    ACCESS_HANDLER      /* the handler checks the credential itself */
} route_access;

typedef enum { ROLE_NONE, ROLE_ADMIN, ROLE_PROVISIONER, ROLE_BROKER } api_role;

enum { HTTP_PARAMS_MAX = 3, HTTP_BODY_MAX = 64 * 1024 };

/* The longest source address text ("ip6 literal" or "unix"). */
enum { HTTP_SOURCE_MAX = 64 };

/* Where a request runs. A device-secret check costs an argon2id run
 * (tens of milliseconds of CPU); on the check listener it never runs on
 * the connection threads that answer every other device, but on the
 * secret lane's own workers, through a bounded queue. */
typedef enum {
    HTTP_LANE_FAST = 0, /* a connection thread: must not block (defer) */
    HTTP_LANE_SLOW,     /* may block: a secret worker, or a listener with
                         * a thread per connection */
    HTTP_LANE_FULL      /* the secret lane's queue is full: refuse */
} http_lane;

typedef struct http_req {
    app *app;
    void *conn; /* struct MHD_Connection */
    listen_kind listener;
    const char *method;
    const char *path;
    const char *param[HTTP_PARAMS_MAX]; /* {} segments of the route */
    const char *body;                   /* NUL-terminated, may be "" */
    size_t body_len;

    /* Who is calling: "apikey:<name>/<id>", "device:<id>",
     * "enrollment:<id>"... (docs/audit.md) */
    char actor[208];
    api_role role;
    /* Why http_bearer_role said ROLE_NONE: AD_EBADCRED, or the store's
     * error when it could not tell (AD_EUNAVAIL: 503, not a bad key). */
    ad_err bearer_err;
    /* The client certificate (DER), set for ACCESS_DEVICE routes. */
    const uint8_t *client_cert;
    size_t client_cert_len;

    /* The reply, set by one of the http_reply_* calls. */
    unsigned status;
    char *resp;
    size_t resp_len;
    const char *content_type;
    const char *www_authenticate; /* static string or NULL */
    http_stream *stream;          /* set by http_reply_stream */
    ad_err error;                 /* set by http_reply_error */
    unsigned retry_after;         /* seconds; sent as Retry-After if set */
    int close;                    /* answer with Connection: close */
    long cache_max_age;           /* >= 0: Cache-Control: max-age=N
                                   * instead of no-store (-1) */
    http_lane lane;
    int deferred;                 /* set by http_defer */

    /* The client's address ("127.0.0.1", "::1", "unix"). */
    char source[HTTP_SOURCE_MAX];
} http_req;

typedef void (*http_handler)(http_req *r);

typedef struct {
    const char *method;
    const char *pattern; /* "/v1/devices/{}" : {} matches one segment */
    listen_kind listeners;
    route_access access;
    http_handler handler;
    const char *name;    /* metrics label */
    unsigned flags;      /* ROUTE_* */
} http_route;

enum {
    /* Errors the HTTP layer answers itself (429) take the OAuth 2.0
     * form {"error","error_description"} (RFC 6749 §5.2). */
    ROUTE_OAUTH_ERRORS = 1,
    /* A literal POST route whose body may reach import_body_max instead
     * of HTTP_BODY_MAX, for callers presenting an admin API key. */
    ROUTE_BULK_BODY = 2
};

/* Starts the listeners configured in app->cfg serving routes. limits
 * (not owned, may be NULL) backs off source addresses that keep failing
 * credentials on the main listeners. On error nothing is left running
 * and *out is NULL. */
typedef struct rl rl;
ad_err http_start(app *a, rl *limits, const http_route *routes,
                  size_t nroutes, http_server **out, char *err,
                  size_t errlen);
/* Stops accepting, waits up to grace_ms for in-flight requests, then
 * closes everything. NULL-safe. */
void http_stop(http_server *s, unsigned grace_ms);

/* On HTTP_LANE_FAST: asks for the request to be run again on the secret
 * lane, where it may block; the reply set so far is discarded. Ignored on
 * the other lanes. */
void http_defer(http_req *r);

/* Replies. Each replaces any reply set before. */
void http_reply_json(http_req *r, unsigned status, json_t *body); /* steals */
void http_reply_error(http_req *r, ad_err e, const char *detail);
void http_reply_bytes(http_req *r, unsigned status, const char *ctype,
                      const void *data, size_t len);
void http_reply_empty(http_req *r, unsigned status);

/* For ACCESS_HANDLER routes that take a client certificate if there is
 * one: 1 and r->client_cert set if a certificate verified by our CA was
 * presented over HTTPS, else 0. */
int http_client_cert(http_req *r);

/* A streamed reply (Server-Sent Events). read fills buf and returns the
 * byte count, 0 if nothing is ready yet (the connection then sleeps
 * without a thread or a busy loop until http_stream_wake), or -1 to end.
 * release(arg) runs once when the connection is done with the stream.
 * *handle (for waking) is valid until release is called. */
typedef ssize_t (*http_stream_read_fn)(void *arg, char *buf, size_t max);
void http_reply_stream(http_req *r, const char *ctype,
                       http_stream_read_fn read, void *arg,
                       void (*release)(void *arg), http_stream **handle);
/* Wakes a sleeping stream so read is called again. Thread-safe. */
void http_stream_wake(http_stream *s);

/* The request's query argument or header, or NULL. */
const char *http_query(http_req *r, const char *name);
const char *http_header(http_req *r, const char *name);

/* Parses the body as a JSON object. On failure replies 400 and returns
 * NULL; the caller just returns. */
json_t *http_body_object(http_req *r);

/* The body's parameters as a JSON object of strings: a JSON object (its
 * integers rendered as text) or an application/x-www-form-urlencoded
 * form (OAuth clients and some brokers send forms); for GET and HEAD,
 * the query string's parameters instead (brokers configured for GET).
 * On failure replies 400 and returns NULL. New reference. */
json_t *http_body_params(http_req *r);

/* Parses the paging query (limit 1..1000, default 100; after). Replies
 * 400 and returns -1 on a bad limit. */
int http_paging(http_req *r, size_t *limit, const char **after);

/* The API key in "Authorization: Bearer ..." resolved to its role, or
 * ROLE_NONE (then actor is untouched and r->bearer_err says why). */
api_role http_bearer_role(http_req *r);

/* Prometheus text for /metrics. Caller frees. */
char *http_metrics_text(app *a, size_t *len);

/* Counts events for /metrics. */
typedef enum {
    METRIC_CERTS_ISSUED,
    METRIC_ENROLL_REFUSED,
    METRIC_TOKENS_ISSUED,
    METRIC_REVOCATIONS,
    METRIC__COUNT
} metric_counter;
void http_metric_inc(app *a, metric_counter c);
/* Counts one check decision by result and reason. reason is one of the
 * check reasons (docs/api.md §10.3); any other text, or NULL, counts as
 * "other", so the label set stays bounded whatever a caller passes. */
void http_metric_decision(app *a, int allow, const char *reason);

#endif
