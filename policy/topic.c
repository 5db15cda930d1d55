/* MQTT topic names and filters (3.1.1 / 5.0): validation, and the three
 * relations the engine is built on, pattern-matches-topic,
 * pattern-covers-filter and pattern-intersects-filter. These string forms
 * are the reference the compiled tries (compile.c) must agree with; the
 * unit tests and fuzzers check that they do. */
#include <string.h>

#include "pol_int.h"

static const char share_prefix[] = "$share/";
enum { SHARE_PREFIX_LEN = sizeof(share_prefix) - 1 };

int pol_body_valid(const char *s, size_t n, int wild)
{
    size_t b = 0, i;

    if (n == 0 || n > POL_TOPIC_MAX || !codec_utf8_valid(s, n))
        return 0;
    /* Each level [b, i): a wildcard must stand alone in its level, and
     * '#' only in the last one. */
    for (i = 0; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        if (memchr(s + b, '+', i - b) != NULL &&
            (!wild || i - b != 1))
            return 0;
        if (memchr(s + b, '#', i - b) != NULL &&
            (!wild || i - b != 1 || i != n))
            return 0;
        b = i + 1;
    }
    return 1;
}

int pol_topic_valid(const char *topic)
{
    if (topic == NULL)
        return 0;
    return pol_body_valid(topic, strnlen(topic, POL_TOPIC_MAX + 1), 0);
}

/* The length of the "$share/<group>/" prefix of s[0..n), or 0 if s is not
 * shared, or -1 if it starts like a shared subscription but is not one. */
static long share_len(const char *s, size_t n)
{
    const char *slash;
    size_t g;

    if (n < SHARE_PREFIX_LEN || memcmp(s, share_prefix, SHARE_PREFIX_LEN) != 0)
        return 0;
    slash = memchr(s + SHARE_PREFIX_LEN, '/', n - SHARE_PREFIX_LEN);
    if (slash == NULL)
        return -1;
    g = (size_t)(slash - (s + SHARE_PREFIX_LEN));
    if (g == 0 || memchr(s + SHARE_PREFIX_LEN, '+', g) != NULL ||
        memchr(s + SHARE_PREFIX_LEN, '#', g) != NULL)
        return -1;
    return (long)(slash + 1 - s);
}

int pol_filter_valid(const char *filter)
{
    size_t n;
    long sl;

    if (filter == NULL)
        return 0;
    n = strnlen(filter, POL_TOPIC_MAX + 1);
    if (n > POL_TOPIC_MAX)
        return 0;
    sl = share_len(filter, n);
    if (sl < 0)
        return 0;
    /* The group is checked as part of the whole (UTF-8, no NUL). */
    if (sl > 0 && !codec_utf8_valid(filter, (size_t)sl))
        return 0;
    return pol_body_valid(filter + sl, n - (size_t)sl, 1);
}

const char *pol_filter_unshare(const char *filter)
{
    long sl;

    if (filter == NULL)
        return NULL;
    sl = share_len(filter, strnlen(filter, POL_TOPIC_MAX + 1));
    return sl > 0 ? filter + sl : filter;
}

int pol_split(const char *s, size_t n, pol_span *lv, size_t max)
{
    size_t count = 0, b = 0, i;

    if (n == 1 && s[0] == '#')
        s = "+/#", n = 3;
    for (i = 0; i <= n; i++) {
        if (i < n && s[i] != '/')
            continue;
        if (count == max)
            return -1;
        lv[count].p = s + b;
        lv[count].n = (uint32_t)(i - b);
        lv[count].h = pol_hash(s + b, i - b);
        count++;
        b = i + 1;
    }
    return (int)count;
}

/* A cursor over the levels of a valid string, for the reference
 * relations below, which must not be limited to POL_LEVELS_MAX. */
typedef struct {
    const char *s;
    size_t n, pos;
    int done;
} lvcur;

static void cur_init(lvcur *c, const char *s, size_t n)
{
    if (n == 1 && s[0] == '#')
        s = "+/#", n = 3;
    c->s = s;
    c->n = n;
    c->pos = 0;
    c->done = 0;
}

static pol_span cur_level(const lvcur *c)
{
    const char *slash = memchr(c->s + c->pos, '/', c->n - c->pos);
    pol_span l;

    l.p = c->s + c->pos;
    l.n = (uint32_t)(slash ? (size_t)(slash - l.p) : c->n - c->pos);
    l.h = 0; /* the reference relations compare bytes */
    return l;
}

static void cur_next(lvcur *c, pol_span l)
{
    size_t end = (size_t)(l.p - c->s) + l.n;

    if (end >= c->n)
        c->done = 1;
    else
        c->pos = end + 1;
}

static int starts_dollar(pol_span l) { return l.n > 0 && l.p[0] == '$'; }

static int same(pol_span a, pol_span b)
{
    return a.n == b.n && memcmp(a.p, b.p, a.n) == 0;
}

/* Both valid, filter already unshared. */
static int covers_body(const char *p, size_t pn, const char *f, size_t fn)
{
    lvcur pc, fc;
    pol_span pl, fl;
    int first = 1;

    cur_init(&pc, p, pn);
    cur_init(&fc, f, fn);
    for (;; first = 0) {
        if (pc.done)
            return fc.done;
        pl = cur_level(&pc);
        /* '#' is never first after cur_init, so the '$' rule was already
         * applied to the first level. */
        if (pol_span_is(pl, '#'))
            return 1;
        if (fc.done)
            return 0;
        fl = cur_level(&fc);
        if (pol_span_is(fl, '#'))
            return 0;
        if (pol_span_is(pl, '+')) {
            if (first && starts_dollar(fl))
                return 0;
        } else if (!same(pl, fl)) {
            return 0; /* a literal covers only itself, never '+' */
        }
        cur_next(&pc, pl);
        cur_next(&fc, fl);
    }
}

static int intersects_body(const char *p, size_t pn, const char *f, size_t fn)
{
    lvcur pc, fc;
    pol_span pl, fl;
    int first = 1;

    cur_init(&pc, p, pn);
    cur_init(&fc, f, fn);
    for (;; first = 0) {
        if (pc.done && fc.done)
            return 1;
        if (pc.done)
            return pol_span_is(cur_level(&fc), '#');
        if (fc.done)
            return pol_span_is(cur_level(&pc), '#');
        pl = cur_level(&pc);
        fl = cur_level(&fc);
        if (pol_span_is(pl, '#') || pol_span_is(fl, '#'))
            return 1;
        if (pol_span_is(pl, '+') && pol_span_is(fl, '+')) {
            /* any non-'$' level is a witness */
        } else if (pol_span_is(pl, '+')) {
            if (first && starts_dollar(fl))
                return 0;
        } else if (pol_span_is(fl, '+')) {
            if (first && starts_dollar(pl))
                return 0;
        } else if (!same(pl, fl)) {
            return 0;
        }
        cur_next(&pc, pl);
        cur_next(&fc, fl);
    }
}

/* A pattern is a filter taken literally: a "$share/" prefix in a pattern
 * is just two more levels. */
static int pattern_len(const char *pattern, size_t *n)
{
    if (pattern == NULL)
        return 0;
    *n = strnlen(pattern, POL_TOPIC_MAX + 1);
    return pol_body_valid(pattern, *n, 1);
}

static int unshared_len(const char **filter, size_t *n)
{
    if (!pol_filter_valid(*filter))
        return 0;
    *filter = pol_filter_unshare(*filter);
    *n = strlen(*filter);
    return 1;
}

int pol_match(const char *pattern, const char *topic)
{
    size_t pn, tn;

    if (!pattern_len(pattern, &pn) || !pol_topic_valid(topic))
        return 0;
    tn = strlen(topic);
    return covers_body(pattern, pn, topic, tn);
}

int pol_covers(const char *pattern, const char *filter)
{
    size_t pn, fn;

    if (!pattern_len(pattern, &pn) || !unshared_len(&filter, &fn))
        return 0;
    return covers_body(pattern, pn, filter, fn);
}

int pol_intersects(const char *pattern, const char *filter)
{
    size_t pn, fn;

    if (!pattern_len(pattern, &pn) || !unshared_len(&filter, &fn))
        return 0;
    return intersects_body(pattern, pn, filter, fn);
}
