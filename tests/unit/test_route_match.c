/* Unit tests of authd/route_match.c, the route table's path patterns:
 * literal routes, "{}" segments and the final "{*}". */
#include <string.h>

#include "../../authd/route_match.h"
#include "tap.h"

static char buf[64];
static const char *params[ROUTE_PARAMS_MAX];

static int match(const char *pattern, const char *path)
{
    memset(params, 0, sizeof(params));
    return route_match(pattern, path, buf, sizeof(buf), params);
}

static int param_is(size_t i, const char *want)
{
    return params[i] != NULL && strcmp(params[i], want) == 0;
}

static void test_route_literal_patterns_match_exactly(void)
{
    ok(match("/v1/ca.pem", "/v1/ca.pem"), "a literal pattern matches itself");
    ok(!match("/v1/ca.pem", "/v1/ca.pem/") && !match("/v1/ca.pem", "/v1/ca"),
       "a trailing '/' or a prefix is another path");
}

static void test_route_segment_captures(void)
{
    ok(match("/v1/devices/{}/secret", "/v1/devices/SN-1/secret") &&
           param_is(0, "SN-1") && params[1] == NULL,
       "{} captures one segment");
    ok(!match("/v1/devices/{}", "/v1/devices/"),
       "an empty segment is not a capture");
    ok(!match("/v1/devices/{}/secret", "/v1/devices//secret"),
       "an empty middle segment is not a capture");
    ok(!match("/v1/devices/{}", "/v1/devices/a/b"),
       "{} never spans a '/'");
    ok(!match("/v1/devices/{}", "/v1/devices/a/"),
       "a trailing '/' after a capture does not match");
    ok(!match("/v1/devices/{}/secret", "/v1/devices/a"),
       "a path that ends early does not match");
}

static void test_route_rest_capture(void)
{
    ok(match("/v1/ocsp/{*}", "/v1/ocsp/MEIw/QDA+") && param_is(0, "MEIw/QDA+"),
       "{*} takes the rest of the path, '/' included (OCSP GET)");
    ok(!match("/v1/ocsp/{*}", "/v1/ocsp/"), "{*} is never empty");
}

static void test_route_long_paths_do_not_match_captures(void)
{
    char path[80];

    memset(path, 'x', sizeof(path) - 1);
    path[sizeof(path) - 1] = '\0';
    memcpy(path, "/v1/devices/", 12);
    ok(!match("/v1/devices/{}", path),
       "a path that does not fit the copy is refused, not cut");
    path[sizeof(buf) - 1] = '\0';
    ok(match("/v1/devices/{}", path) && strlen(params[0]) == sizeof(buf) - 13,
       "a path of buflen - 1 bytes fits with its NUL and matches");
    path[sizeof(buf) - 1] = 'x';
    path[sizeof(buf)] = '\0';
    ok(!match("/v1/devices/{}", path), "one byte more does not");
}

int main(void)
{
    TAP_RUN(test_route_literal_patterns_match_exactly);
    TAP_RUN(test_route_segment_captures);
    TAP_RUN(test_route_rest_capture);
    TAP_RUN(test_route_long_paths_do_not_match_captures);
    return tap_done();
}
