/* authctl's HTTP client: libcurl to the authd API, JSON in and out, the
 * §3 error body turned into a message on stderr and an exit status, and
 * paging through {"items","next"} lists. An api handle keeps its
 * connections alive across calls; it is not shared between threads.
 *
 * A handle may name several authd nodes (cluster mode: any node serves
 * the same registry). Each request starts at the node that answered
 * last and moves to the next one only when the request cannot have been
 * applied: the connection failed before anything was sent, or, for GET,
 * HEAD, PUT and DELETE (safe to repeat), it broke before any answer.
 * An HTTP answer of any status is final. */
#ifndef AUTHCTL_API_H
#define AUTHCTL_API_H

#include <stddef.h>

#include <jansson.h>

typedef struct api api;

typedef struct api_config {
    const char *url;    /* "https://host:port" or "http://...", or several
                         * separated by commas or spaces */
    const char *bearer; /* API key or enrollment token; may be NULL */
    const char *cacert; /* PEM file of CAs to trust; NULL: the system's */
    long timeout;       /* seconds for a whole request */
    long connect_ms;    /* per node to connect (TCP and TLS); 0: 300 ms
                         * with several nodes, 10 s with one */
    int insecure;       /* no TLS verification at all: only for `authctl
                         * login`, which pins what it fetched itself */
} api_config;

/* One answer: status and body (NUL-terminated, owned). */
typedef struct api_resp {
    long status;
    char *body;
    size_t len;
} api_resp;

enum { API_PATH_MAX = 2048 };

/* Calls curl_global_init; once, before any thread starts. 0 or -1. */
int api_global_init(void);
void api_global_cleanup(void);

/* Opens a handle for cfg (the strings are copied). Returns 0, or -1 with
 * a message in err (a URL that is not http(s), more than 16 URLs, no
 * memory); *out is NULL on failure. */
int api_open(const api_config *cfg, api **out, char *err, size_t errlen);
/* The same servers and trust with another bearer credential; it starts
 * at the node a last answered from. */
int api_clone(const api *a, const char *bearer, api **out, char *err,
              size_t errlen);
/* Closes a handle; accepts NULL. The credential is wiped. */
void api_close(api *a);
/* The URL of the node that answered last (or will be tried first), for
 * messages. */
const char *api_url(const api *a);

/* Sends one request with an optional body of content type ctype, to the
 * first node that can take it (see above). Every HTTP answer is CTL_OK
 * (look at out->status); when no node answered it prints why for each
 * node tried and returns CTL_UNREACHABLE; an oversized answer is
 * CTL_FAILED. out is zeroed first; free it with api_resp_clear. */
int api_raw(api *a, const char *method, const char *path, const char *ctype,
            const void *body, size_t len, api_resp *out);
void api_resp_clear(api_resp *r);

/* Prints the server's refusal ("message (code)") and returns CTL_FAILED. */
int api_refused(const api_resp *r);

/* Sends body (NULL: none) as JSON. On a 2xx answer sets *out to its JSON
 * (NULL when the answer is empty, as for 204) and returns CTL_OK; else
 * prints why and returns CTL_FAILED or CTL_UNREACHABLE with *out NULL. */
int api_json(api *a, const char *method, const char *path,
             const json_t *body, json_t **out);

/* Follows a list's cursor from path (which may already hold a query),
 * starting after the cursor after (NULL: from the start): page_size
 * items per request, at most limit items in all (0: every page). *out
 * is {"items":[...],"next":<cursor to go on from, or null>}. Returns
 * like api_json. */
int api_list(api *a, const char *path, const char *after, long page_size,
             long limit, json_t **out);

/* Formats the refusal in r as "message (HTTP status code)" into buf. */
void api_error_message(const api_resp *r, char *buf, size_t len);

/* Appends one escaped path segment to buf ("/v1/devices/" + id). Returns
 * 0, or -1 when it does not fit (buf is then unchanged). */
int api_path_add(char *buf, size_t len, const char *segment);
/* Appends "?key=value" or "&key=value" (escaped) to buf; value NULL adds
 * nothing. 0 or -1 as above. */
int api_query_add(char *buf, size_t len, const char *key, const char *value);

#endif
