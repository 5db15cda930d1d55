/* Parsing a list of authd URLs and choosing which node to try next. */
#include "urls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int is_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The length of the scheme prefix s starts with, or 0 if not allowed. */
static size_t scheme_len(const char *s, size_t n, int flags)
{
    if (n >= 8 && strncmp(s, "https://", 8) == 0)
        return 8;
    if (n >= 7 && strncmp(s, "http://", 7) == 0)
        return 7;
    if ((flags & URLS_UNIX) && n >= 6 && strncmp(s, "unix:/", 6) == 0)
        return 5; /* the path keeps its leading '/' */
    return 0;
}

void urls_free(urls *l)
{
    size_t i;

    if (l == NULL)
        return;
    for (i = 0; i < l->n; i++)
        free(l->url[i]);
    memset(l, 0, sizeof(*l));
}

int urls_parse(const char *spec, int flags, urls *out, char *err,
               size_t errlen)
{
    const char *p, *start;
    size_t n, sl;
    urls l;

    memset(out, 0, sizeof(*out));
    memset(&l, 0, sizeof(l));
    if (spec == NULL || strlen(spec) > URLS_SPEC_MAX) {
        snprintf(err, errlen, "no server URL, or a list longer than %d bytes",
                 URLS_SPEC_MAX);
        return -1;
    }
    for (p = spec; *p;) {
        if (is_sep(*p)) {
            p++;
            continue;
        }
        for (start = p; *p && !is_sep(*p); p++)
            ;
        n = (size_t)(p - start);
        sl = scheme_len(start, n, flags);
        if (sl == 0) {
            snprintf(err, errlen, "the server URL '%.*s' must start with "
                     "https:// or http://%s", n > 64 ? 64 : (int)n, start,
                     (flags & URLS_UNIX) ? " (or be unix:/path)" : "");
            goto fail;
        }
        /* http://host/ keeps "host"; paths are appended to what is left. */
        if (sl != 5)
            while (n > sl && start[n - 1] == '/')
                n--;
        if (n == sl || (sl == 5 && n == 6)) {
            snprintf(err, errlen, "the server URL '%.*s' names no host",
                     n > 64 ? 64 : (int)n, start);
            goto fail;
        }
        if (n > URLS_LEN_MAX) {
            snprintf(err, errlen, "a server URL is longer than %d bytes",
                     URLS_LEN_MAX);
            goto fail;
        }
        if (l.n == URLS_MAX) {
            snprintf(err, errlen, "more than %d server URLs", URLS_MAX);
            goto fail;
        }
        if ((l.url[l.n] = strndup(start, n)) == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        l.n++;
    }
    if (l.n == 0) {
        snprintf(err, errlen, "no server URL");
        goto fail;
    }
    *out = l;
    return 0;
fail:
    urls_free(&l);
    return -1;
}

int urls_copy(const urls *src, urls *out)
{
    size_t i;

    *out = *src;
    for (i = 0; i < src->n; i++)
        out->url[i] = NULL;
    for (i = 0; i < src->n; i++)
        if ((out->url[i] = strdup(src->url[i])) == NULL) {
            urls_free(out);
            return -1;
        }
    return 0;
}

size_t urls_order(const urls *l, int64_t now_ms, size_t order[URLS_MAX])
{
    size_t k, i, m = 0, soonest = l->current;

    for (k = 0; k < l->n; k++) {
        i = (l->current + k) % l->n;
        if (l->down_until[i] <= now_ms)
            order[m++] = i;
        else if (l->down_until[i] < l->down_until[soonest])
            soonest = i;
    }
    if (m == 0 && l->n > 0)
        order[m++] = soonest;
    return m;
}

void urls_good(urls *l, size_t i)
{
    l->current = i;
    l->down_until[i] = 0;
}

void urls_bad(urls *l, size_t i, int64_t now_ms, int64_t hold_ms)
{
    l->down_until[i] = now_ms + hold_ms;
}

int64_t urls_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
