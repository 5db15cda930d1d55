/* clients/urls.c: the list of authd nodes authctl and the mosquitto
 * plugin fail over between: what a list may hold, and the order in which
 * nodes are tried after successes and failures. */
#include <string.h>

#include "tap.h"
#include "urls.h"

static void test_urls_single_url_is_a_list_of_one(void)
{
    urls l;
    char err[256];

    ok(urls_parse("https://127.0.0.1:8443/", 0, &l, err, sizeof(err)) == 0,
       "the old single-URL form keeps working");
    ok(l.n == 1 && strcmp(l.url[0], "https://127.0.0.1:8443") == 0,
       "trailing slashes go, since paths are appended: %s", l.url[0]);
    urls_free(&l);
}

static void test_urls_commas_and_spaces_both_separate(void)
{
    urls l;
    char err[256];

    ok(urls_parse(" http://a:1, https://b:2/,,http://c:3\thttp://d:4 ", 0, &l,
                  err, sizeof(err)) == 0,
       "commas, spaces and tabs separate (mosquitto options may use either)");
    ok(l.n == 4 && strcmp(l.url[0], "http://a:1") == 0 &&
           strcmp(l.url[1], "https://b:2") == 0 &&
           strcmp(l.url[2], "http://c:3") == 0 &&
           strcmp(l.url[3], "http://d:4") == 0,
       "four nodes in the order given");
    urls_free(&l);
}

static void test_urls_bad_lists_are_refused(void)
{
    static const char *const bad[] = {
        "", " , ", "ftp://a", "http://a,ftp://b", "http://", "https:///",
        "unix:/x", "127.0.0.1:8443",
    };
    urls l;
    char err[256], many[URLS_MAX * 16 + 64];
    size_t i, n = 0;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ok(urls_parse(bad[i], 0, &l, err, sizeof(err)) == -1 && err[0] &&
               l.n == 0,
           "'%s' is refused with a reason (%s): a typo must not become "
           "a node that is never reachable", bad[i], err);
    }
    many[0] = '\0';
    for (i = 0; i <= URLS_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "http://n%zu,", i);
    ok(urls_parse(many, 0, &l, err, sizeof(err)) == -1,
       "more than %d nodes is refused (the list is bounded)", URLS_MAX);
    ok(urls_parse(NULL, 0, &l, err, sizeof(err)) == -1, "no spec is refused");
}

static void test_urls_unix_sockets_only_where_allowed(void)
{
    urls l;
    char err[256];

    ok(urls_parse("unix:/run/authd/check.sock,http://b:1", URLS_UNIX, &l, err,
                  sizeof(err)) == 0 && l.n == 2 &&
           strcmp(l.url[0], "unix:/run/authd/check.sock") == 0,
       "the plugin may name the check socket as one of its nodes");
    urls_free(&l);
    ok(urls_parse("unix:/", URLS_UNIX, &l, err, sizeof(err)) == -1,
       "a socket needs a path");
}

static void test_urls_order_starts_at_the_node_that_answered_last(void)
{
    urls l;
    size_t order[URLS_MAX], n;
    char err[256];

    ok(urls_parse("http://a,http://b,http://c", 0, &l, err, sizeof(err)) == 0,
       "three nodes");
    n = urls_order(&l, 1000, order);
    ok(n == 3 && order[0] == 0 && order[1] == 1 && order[2] == 2,
       "at first, the order given");
    urls_bad(&l, 0, 1000, 5000);
    urls_good(&l, 1);
    n = urls_order(&l, 1001, order);
    ok(n == 2 && order[0] == 1 && order[1] == 2,
       "after a failover: the healthy node first, the failed one skipped");
    n = urls_order(&l, 6000, order);
    ok(n == 3 && order[0] == 1 && order[1] == 2 && order[2] == 0,
       "after its hold the failed node is tried again, after the others");
    urls_free(&l);
}

static void test_urls_full_outage_tries_one_node_per_request(void)
{
    urls l, copy;
    size_t order[URLS_MAX], n;
    char err[256];

    ok(urls_parse("http://a http://b http://c", 0, &l, err, sizeof(err)) == 0,
       "three nodes");
    urls_bad(&l, 0, 100, 5000);
    urls_bad(&l, 1, 50, 5000);
    urls_bad(&l, 2, 200, 5000);
    n = urls_order(&l, 300, order);
    ok(n == 1 && order[0] == 1,
       "every node down: only the one whose hold ends first (%zu), so an "
       "outage costs one connect attempt per request, not one per node",
       order[0]);
    ok(urls_copy(&l, &copy) == 0 && copy.n == 3 && copy.url[2] != l.url[2] &&
           strcmp(copy.url[2], "http://c") == 0 &&
           copy.down_until[1] == l.down_until[1],
       "a copy has its own strings and the same state");
    urls_free(&copy);
    urls_free(&l);
    urls_free(NULL);
}

int main(void)
{
    TAP_RUN(test_urls_single_url_is_a_list_of_one);
    TAP_RUN(test_urls_commas_and_spaces_both_separate);
    TAP_RUN(test_urls_bad_lists_are_refused);
    TAP_RUN(test_urls_unix_sockets_only_where_allowed);
    TAP_RUN(test_urls_order_starts_at_the_node_that_answered_last);
    TAP_RUN(test_urls_full_outage_tries_one_node_per_request);
    return tap_done();
}
