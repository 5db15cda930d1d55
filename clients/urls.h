/* The list of authd nodes a client (authctl, the mosquitto plugin) may
 * talk to, and the order in which to try them: the node that answered
 * last comes first, a node that failed is skipped for a while. Several
 * nodes serve the same registry (cluster mode), so any of them will do.
 * A list is not locked: each thread keeps its own (urls_copy). */
#ifndef AUTHD_CLIENTS_URLS_H
#define AUTHD_CLIENTS_URLS_H

#include <stddef.h>
#include <stdint.h>

enum {
    URLS_MAX = 16,        /* nodes in one list */
    URLS_LEN_MAX = 1024,  /* bytes of one URL */
    URLS_SPEC_MAX = 16384 /* bytes of the whole option value */
};

/* Which URL forms urls_parse accepts besides http:// and https://. */
enum { URLS_UNIX = 1 }; /* "unix:/path/to/socket" */

typedef struct urls {
    size_t n;
    char *url[URLS_MAX];          /* owned; trailing '/' removed */
    size_t current;               /* the node that answered last */
    int64_t down_until[URLS_MAX]; /* monotonic ms; skipped before that */
} urls;

/* Parses spec, URLs separated by commas and/or white space ("http://a:1,
 * http://b:1" or "http://a:1 http://b:1"; one URL is a list of one).
 * Each must be http:// or https:// (or unix:/ with URLS_UNIX) with
 * something after the scheme, and may hold neither separator. Returns
 * 0, or -1 with a message in err; out is zeroed first and holds nothing
 * to free on failure. */
int urls_parse(const char *spec, int flags, urls *out, char *err,
               size_t errlen);
/* A copy of src (its state too). 0, or -1 out of memory (out zeroed). */
int urls_copy(const urls *src, urls *out);
/* Frees the strings and zeroes l; accepts NULL and a zeroed list. */
void urls_free(urls *l);

/* The indexes to try for one request, in order, into order; returns how
 * many. Every node not held down, starting at the current one and going
 * round; when every node is held down, only the one whose hold ends
 * first (so that a full outage costs one attempt per request, and a node
 * that comes back is found). */
size_t urls_order(const urls *l, int64_t now_ms, size_t order[URLS_MAX]);
/* Node i answered: it becomes the current one and is no longer held. */
void urls_good(urls *l, size_t i);
/* Node i failed: skipped by urls_order until now_ms + hold_ms. */
void urls_bad(urls *l, size_t i, int64_t now_ms, int64_t hold_ms);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t urls_now_ms(void);

#endif
