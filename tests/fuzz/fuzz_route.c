/* Fuzz target for authd/route_match.c against every pattern of the real
 * route table (authd/routes.c). The input (up to its first NUL) is a
 * request path. For each route:
 *  - route_match agrees with a POSIX regular expression built from the
 *    pattern ("{}" as "([^/]+)", "{*}" as "(.+)"), captures included,
 *    for paths shorter than the dispatcher's buffer; longer paths match
 *    literal patterns only;
 *  - a "{}" capture is non-empty and holds no '/', and putting the
 *    captures back into the pattern gives the path again;
 * and across the table, a path that two routes of one method and
 * listener match goes to a literal route first (a pattern with captures
 * must never hide a later route). */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../authd/route_match.h"
#include "../../authd/routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The dispatcher's copy of the path (http.c) is this big. */
enum { PATH_BUF = 1024, INPUT_MAX = 4 * PATH_BUF, ROUTES_MAX = 128,
       REGEX_MAX = 512 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static regex_t regexes[ROUTES_MAX];
static size_t ncaptures[ROUTES_MAX];
static int compiled;

/* Builds "^...$" for a table pattern; aborts on any pattern syntax the
 * matcher is not meant to see. */
static void compile(const char *pattern, regex_t *re, size_t *ncap)
{
    char rx[REGEX_MAX];
    size_t o = 0;
    const char *p;

    *ncap = 0;
    rx[o++] = '^';
    for (p = pattern; *p; p++) {
        const char *piece;
        char one[4] = {0};

        if (strncmp(p, "{*}", 3) == 0) {
            CHECK(p[3] == '\0'); /* {*} only ends a pattern */
            piece = "(.+)";
            p += 2;
            (*ncap)++;
        } else if (strncmp(p, "{}", 2) == 0) {
            piece = "([^/]+)";
            p += 1;
            (*ncap)++;
        } else if (*p == '.') {
            piece = "[.]";
        } else {
            CHECK(strchr("/-_:", *p) != NULL || (*p >= 'a' && *p <= 'z') ||
                  (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'));
            one[0] = *p;
            piece = one;
        }
        CHECK(o + strlen(piece) + 2 < sizeof(rx));
        memcpy(rx + o, piece, strlen(piece));
        o += strlen(piece);
    }
    rx[o++] = '$';
    rx[o] = '\0';
    CHECK(*ncap <= ROUTE_PARAMS_MAX);
    CHECK(regcomp(re, rx, REG_EXTENDED) == 0);
}

static int is_literal(const char *pattern)
{
    return strchr(pattern, '{') == NULL;
}

/* The pattern with each capture put back in; must give the path. */
static void check_resubstitution(const char *pattern, const char *path,
                                 const char **params, size_t ncap)
{
    size_t o = 0, np = 0, plen = strlen(path);
    const char *p;

    for (p = pattern; *p; p++) {
        if (*p == '{') {
            int star = p[1] == '*';
            size_t n;

            CHECK(np < ncap && params[np] != NULL);
            n = strlen(params[np]);
            CHECK(n > 0);
            if (!star)
                CHECK(strchr(params[np], '/') == NULL);
            CHECK(o + n <= plen && memcmp(path + o, params[np], n) == 0);
            o += n;
            np++;
            p += star ? 2 : 1;
        } else {
            CHECK(o < plen && path[o] == *p);
            o++;
        }
    }
    CHECK(o == plen && np == ncap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n, i, j, plen;
    const http_route *table = routes_table(&n);
    int matched[ROUTES_MAX];
    char *path, buf[PATH_BUF];

    CHECK(n <= ROUTES_MAX);
    if (!compiled) {
        for (i = 0; i < n; i++)
            compile(table[i].pattern, &regexes[i], &ncaptures[i]);
        compiled = 1;
    }
    if (size > INPUT_MAX)
        return 0;
    path = malloc(size + 1);
    CHECK(path != NULL);
    if (size)
        memcpy(path, data, size);
    path[size] = '\0';
    plen = strlen(path);

    for (i = 0; i < n; i++) {
        const char *params[ROUTE_PARAMS_MAX] = {NULL};
        regmatch_t m[ROUTE_PARAMS_MAX + 1];
        int got = route_match(table[i].pattern, path, buf, sizeof(buf), params);
        int want = regexec(&regexes[i], path, ROUTE_PARAMS_MAX + 1, m, 0) == 0;

        CHECK(got == 0 || got == 1);
        if (plen >= sizeof(buf) && !is_literal(table[i].pattern))
            want = 0;
        CHECK(got == want);
        matched[i] = got;
        if (!got)
            continue;
        check_resubstitution(table[i].pattern, path, params, ncaptures[i]);
        for (j = 0; j < ncaptures[i]; j++) {
            size_t len = (size_t)(m[j + 1].rm_eo - m[j + 1].rm_so);
            CHECK(m[j + 1].rm_so >= 0 && strlen(params[j]) == len &&
                  memcmp(params[j], path + m[j + 1].rm_so, len) == 0);
        }
        for (; j < ROUTE_PARAMS_MAX; j++)
            CHECK(params[j] == NULL);
    }
    for (i = 0; i < n; i++)
        for (j = i + 1; j < n && matched[i]; j++)
            if (matched[j] && strcmp(table[i].method, table[j].method) == 0 &&
                (table[i].listeners & table[j].listeners) != 0)
                CHECK(is_literal(table[i].pattern));
    free(path);
    return 0;
}
