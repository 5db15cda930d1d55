/* Fuzz target for token scopes (pol_scope_compile in policy/scope.c):
 * the "action:filter ..." text a device sends to POST /v1/token and that
 * comes back inside every token it presents. A scope that compiles must
 * normalise once and then stay put, the two compilations must decide
 * alike, every item without a "${" must be allowed by its own scope (the
 * set is allow-only), and an empty scope must allow nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 8 * 1024 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static void items_allowed(const pol_set *set, const char *norm)
{
    const char *p = norm;

    while (*p) {
        size_t n = strcspn(p, " ");
        char item[INPUT_MAX + 1], *colon;
        pol_action a;

        CHECK(n > 0 && n <= INPUT_MAX);
        memcpy(item, p, n);
        item[n] = '\0';
        colon = strchr(item, ':');
        CHECK(colon != NULL);
        *colon = '\0';
        a = pol_action_parse(item);
        CHECK(a == POL_PUBLISH || a == POL_SUBSCRIBE || a == POL_RECEIVE);
        /* A filter with a "${" is compiled as a policy pattern, whose
         * variables are not set for a scope: it is dropped (matches
         * nothing) rather than kept literally. */
        CHECK(strstr(colon + 1, "${") != NULL ||
              pol_decide_filter(set, a, colon + 1).allow);
        p += n;
        CHECK(*p == '\0' || (*p == ' ' && p[1] != ' ' && p[1] != '\0'));
        if (*p == ' ')
            p++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const subjects[] = {"a", "a/b", "#", "+/+", "$SYS/x",
                                           "devices/d1/telemetry/x"};
    pol_set *set = NULL, *set2 = NULL;
    char *scope, *norm = NULL, *norm2 = NULL;
    size_t i;

    if (size > INPUT_MAX)
        return 0;
    scope = malloc(size + 1);
    CHECK(scope != NULL);
    memcpy(scope, data, size);
    scope[size] = '\0';
    if (pol_scope_compile(scope, &set, &norm, NULL, 0) != AD_OK) {
        CHECK(set == NULL && norm == NULL);
        free(scope);
        return 0;
    }
    CHECK(set != NULL && norm != NULL && strlen(norm) <= strlen(scope));
    CHECK(pol_scope_compile(norm, &set2, &norm2, NULL, 0) == AD_OK);
    CHECK(strcmp(norm, norm2) == 0);
    items_allowed(set, norm);
    for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        pol_action a = (pol_action)(POL_PUBLISH << (i % 3));
        pol_decision d1 = pol_decide(set, a, subjects[i]);
        pol_decision d2 = pol_decide(set2, a, subjects[i]);

        CHECK(d1.allow == d2.allow);
        CHECK(norm[0] != '\0' || !d1.allow);
    }
    pol_set_free(set);
    pol_set_free(set2);
    free(norm);
    free(norm2);
    free(scope);
    return 0;
}
