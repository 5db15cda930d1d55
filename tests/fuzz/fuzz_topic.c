/* Fuzz target for MQTT topic syntax and the three relations: the input
 * is a pattern and a subject separated by a NUL byte. Checks invariants
 * that must hold for any bytes (covers implies intersects, a valid topic
 * matches itself, topic and filter relations agree on topics) and that a
 * compiled one-statement policy decides exactly as the string functions. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { SUBJECT_MAX = 4096 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static size_t levels(const char *s)
{
    size_t n = 1;

    if (strcmp(s, "#") == 0)
        return 2;
    for (; *s; s++)
        n += *s == '/';
    return n;
}

/* A one-statement policy over pattern: allow, or deny beside an allow of
 * everything (so a deny decision can only come from the pattern). */
static pol_set *one(const char *pattern, int allow)
{
    json_t *doc = allow
        ? json_pack("{s:[{s:s,s:[s,s,s],s:[s]}]}", "statements", "effect",
                    "allow", "actions", "publish", "subscribe", "receive",
                    "topics", pattern)
        : json_pack("{s:[{s:s,s:[s,s,s],s:[s]},{s:s,s:[s,s],s:[s]}]}",
                    "statements", "effect", "deny", "actions", "publish",
                    "subscribe", "receive", "topics", pattern, "effect",
                    "allow", "actions", "publish", "subscribe", "topics",
                    "#");
    pol_source src = {"f", doc};
    pol_set *set = NULL;

    if (doc == NULL)
        return NULL;
    if (pol_doc_validate(doc, NULL, 0) == AD_OK)
        CHECK(pol_compile(&src, 1, NULL, &set, NULL, 0) == AD_OK);
    json_decref(doc);
    return set;
}

static void check_compiled(const char *p, const char *s)
{
    pol_set *allow, *deny;
    const char *un = pol_filter_unshare(s);
    pol_decision d;

    /* Only patterns a document may hold: no variables, no $share. */
    if (!pol_filter_valid(p) || strstr(p, "${") != NULL ||
        strncmp(p, "$share/", 7) == 0 || levels(p) > POL_LEVELS_MAX)
        return;
    if (pol_filter_valid(s) && levels(un) > POL_LEVELS_MAX)
        return;
    allow = one(p, 1);
    deny = one(p, 0);
    CHECK(allow != NULL && deny != NULL);
    CHECK(pol_decide(allow, POL_PUBLISH, s).allow == pol_match(p, s));
    CHECK(pol_decide(allow, POL_RECEIVE, s).allow == pol_match(p, s));
    d = pol_decide(allow, POL_SUBSCRIBE, s);
    CHECK(d.allow == pol_covers(p, s));
    if (d.allow)
        CHECK(d.statement == 0);
    if (pol_filter_valid(s)) {
        d = pol_decide(deny, POL_SUBSCRIBE, s);
        CHECK((strcmp(d.reason, "explicit_deny") == 0) ==
              pol_intersects(p, s));
    }
    if (pol_topic_valid(s)) {
        d = pol_decide(deny, POL_PUBLISH, s);
        CHECK((strcmp(d.reason, "explicit_deny") == 0) == pol_match(p, s));
    }
    pol_set_free(allow);
    pol_set_free(deny);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *p, *s;
    const uint8_t *nul;
    size_t pn, sn;

    if (size > 2 * SUBJECT_MAX)
        return 0;
    nul = memchr(data, 0, size);
    pn = nul ? (size_t)(nul - data) : size;
    sn = nul ? size - pn - 1 : size;
    p = malloc(pn + 1);
    s = malloc(sn + 1);
    if (p == NULL || s == NULL)
        goto out;
    memcpy(p, data, pn);
    p[pn] = '\0';
    memcpy(s, nul ? nul + 1 : data, sn);
    s[sn] = '\0'; /* a second NUL inside s just shortens it */

    /* "$share/g/x" is both a topic name and a shared filter (and
     * "$share//x" a topic but no filter), so topic and filter relations
     * agree only on topics outside "$share/". */
    if (pol_topic_valid(s) && strncmp(s, "$share/", 7) != 0) {
        CHECK(pol_filter_valid(s));
        CHECK(pol_match(s, s) && pol_covers(s, s) && pol_intersects(s, s));
        if (pol_filter_valid(p))
            CHECK(pol_match(p, s) == pol_covers(p, s) &&
                  pol_covers(p, s) == pol_intersects(p, s));
        if (s[0] != '$')
            CHECK(pol_match("#", s));
    }
    if (pol_filter_valid(s)) {
        const char *un = pol_filter_unshare(s);

        CHECK(pol_covers(un, s) && pol_intersects(un, s));
        if (un[0] != '$')
            CHECK(pol_covers("#", s));
    } else {
        CHECK(!pol_covers(p, s) && !pol_intersects(p, s));
    }
    if (pol_covers(p, s))
        CHECK(pol_intersects(p, s));
    if (pol_match(p, s) && strncmp(s, "$share/", 7) != 0)
        CHECK(pol_covers(p, s));
    /* Intersection is symmetric on plain filters. */
    if (pol_filter_valid(p) && pol_filter_valid(s) &&
        pol_filter_unshare(p) == p && pol_filter_unshare(s) == s)
        CHECK(pol_intersects(p, s) == pol_intersects(s, p));
    check_compiled(p, s);
out:
    free(p);
    free(s);
    return 0;
}
