/* Unit tests of the topic/ACL engine: MQTT matching, covering and
 * intersecting against a table of spec examples and corner cases,
 * variables (including hostile values), decisions and their
 * explanations, document validation, and a randomized cross-check of the
 * compiled tries against brute force over the reference relations. */
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"
#include "tap.h"

/* ---- the table ------------------------------------------------------ */

/* m: pol_match(pattern, subject); c: pol_covers; x: pol_intersects. */
static const struct vec {
    const char *pattern, *subject;
    int m, c, x;
    const char *why;
} vecs[] = {
    /* MQTT 3.1.1 §4.7 examples */
    {"sport/tennis/player1/#", "sport/tennis/player1", 1, 1, 1,
     "'#' also matches the parent level"},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", 1, 1, 1,
     "'#' matches one more level"},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", 1, 1,
     1, "'#' matches several more levels"},
    {"sport/#", "sport", 1, 1, 1, "'sport/#' matches 'sport'"},
    {"sport/tennis/+", "sport/tennis/player1", 1, 1, 1,
     "'+' matches one level"},
    {"sport/tennis/+", "sport/tennis/player1/tournament", 0, 0, 0,
     "'+' does not match two levels"},
    {"sport/tennis/+", "sport/tennis", 0, 0, 0,
     "'+' needs a level to be there"},
    {"sport/+", "sport", 0, 0, 0, "'sport/+' does not match 'sport'"},
    {"sport/+", "sport/", 1, 1, 1, "'+' matches an empty level"},
    {"+/+", "/finance", 1, 1, 1, "'/finance' has two levels, one empty"},
    {"/+", "/finance", 1, 1, 1, "'/+' matches '/finance'"},
    {"+", "/finance", 0, 0, 0, "'+' alone does not match two levels"},
    {"+/tennis/#", "sport/tennis/player1", 1, 1, 1,
     "'+' and '#' combine"},
    {"#", "$SYS/x", 0, 0, 0, "'#' does not match '$' topics"},
    {"+/monitor/Clients", "$SYS/monitor/Clients", 0, 0, 0,
     "a first-level '+' does not match '$SYS'"},
    {"$SYS/#", "$SYS/monitor/Clients", 1, 1, 1,
     "an explicit '$SYS/#' matches '$SYS' topics"},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", 1, 1, 1,
     "'+' below '$SYS' is fine"},
    {"#", "sport/tennis", 1, 1, 1, "'#' matches every normal topic"},
    {"#", "/", 1, 1, 1, "'#' matches a topic of empty levels"},
    {"+/#", "$SYS", 0, 0, 0, "'+/#' does not match '$SYS' either"},
    {"+/#", "x", 1, 1, 1, "'+/#' matches a one-level topic"},
    {"+", "$", 0, 0, 0, "a lone '$' level counts as a '$' topic"},
    {"$", "$", 1, 1, 1, "a literal '$' matches itself"},
    {"$x/+/b", "$x/+/b", 0, 1, 1, "a literal '$' first level covers itself"},
    {"+/$x", "a/$x", 1, 1, 1, "a '$' level after the first is ordinary"},
    /* empty levels, depth, case */
    {"a//b", "a//b", 1, 1, 1, "empty levels are real levels"},
    {"a/+/b", "a//b", 1, 1, 1, "'+' matches the empty middle level"},
    {"a/b", "a//b", 0, 0, 0, "'a/b' has two levels, 'a//b' three"},
    {"a/#", "a", 1, 1, 1, "'a/#' matches 'a'"},
    {"a/#", "ab", 0, 0, 0, "'#' is a level, not a string prefix"},
    {"a/+/#", "a", 0, 0, 0, "'a/+/#' needs a second level"},
    {"ACCOUNTS", "Accounts", 0, 0, 0, "matching is case-sensitive"},
    {"sport/tennis", "sport/tennis/", 0, 0, 0,
     "a trailing '/' adds an empty level"},
    {"a/b/c", "a/b", 0, 0, 0, "a longer literal does not match"},
    {"+/+/+", "a/b", 0, 0, 0, "three '+' need three levels"},
    {"a/+/+", "a//", 1, 1, 1, "'+' matches empty trailing levels"},
    {"/#", "/", 1, 1, 1, "'/#' matches '/'"},
    {"/#", "a", 0, 0, 0, "'/#' needs an empty first level"},
    {"+/", "a/", 1, 1, 1, "'+/' matches 'a/'"},
    {"\xc3\xbc/+", "\xc3\xbc/x", 1, 1, 1, "UTF-8 levels compare bytewise"},
    {"a/b/c/d/e/f", "a/b/c/d/e/f", 1, 1, 1, "deep literal matches itself"},
    /* invalid input */
    {"a#", "a", 0, 0, 0, "'a#' is not a filter"},
    {"#/a", "x/a", 0, 0, 0, "'#' must be last"},
    {"a+", "a+", 0, 0, 0, "'+' must stand alone in a level"},
    {"a/b", "", 0, 0, 0, "the empty topic is invalid"},
    {"", "a", 0, 0, 0, "the empty filter is invalid"},
    {"a/+", "a/\xff", 0, 0, 0, "bad UTF-8 is invalid"},
    {"a/+", "a/\xc0\xaf", 0, 0, 0, "overlong UTF-8 is invalid"},
    {"a/+", "a/\xed\xa0\x80", 0, 0, 0, "UTF-16 surrogates are invalid"},
    {"a/+", "a/\xf4\x90\x80\x80", 0, 0, 0, "code points past U+10FFFF are invalid"},
    /* filters: covering and intersecting */
    {"a/#", "a/+", 0, 1, 1, "a topic with '+' is not matched, but covered"},
    {"a/#", "a/+/b", 0, 1, 1, "'a/#' covers 'a/+/b'"},
    {"a/+", "a/#", 0, 0, 1, "'a/+' does not grant 'a/#'"},
    {"foo/+/bar", "foo/#", 0, 0, 1, "'foo/+/bar' does not grant 'foo/#'"},
    {"#", "$SYS/#", 0, 0, 0, "'#' does not cover '$SYS/#'"},
    {"+/+", "x/+", 0, 1, 1, "'+/+' covers 'x/+'"},
    {"+/+", "x/#", 0, 0, 1, "'+/+' does not cover 'x/#'"},
    {"#", "#", 0, 1, 1, "'#' covers itself"},
    {"+/#", "#", 0, 1, 1, "'+/#' is '#': there is no zero-level topic"},
    {"#", "+/#", 0, 1, 1, "and '#' covers '+/#'"},
    {"+", "#", 0, 0, 1, "'+' does not cover '#'"},
    {"a/b", "+/b", 0, 0, 1, "a literal does not cover '+'"},
    {"$SYS/+", "+/+", 0, 0, 0, "'+/+' never reaches '$SYS'"},
    {"+/+", "$SYS/+", 0, 0, 0, "a first-level '+' pattern misses '$SYS/+'"},
    {"$SYS/#", "$SYS/+", 0, 1, 1, "'$SYS/#' covers '$SYS/+'"},
    {"a/+/c", "a/b/+", 0, 0, 1, "overlapping wildcards intersect"},
    {"a/b/c", "a/+/d", 0, 0, 0, "different last literals are disjoint"},
    {"a/#", "b/#", 0, 0, 0, "different first literals are disjoint"},
    {"sport/#", "sport/tennis/#", 0, 1, 1, "a shorter '#' covers a longer"},
    {"sport/tennis/#", "sport/#", 0, 0, 1, "a longer '#' does not"},
    {"a/+", "a/+/+", 0, 0, 0, "different depths are disjoint"},
    {"a/+/#", "a/#", 0, 0, 1, "'a/+/#' misses the topic 'a'"},
    {"+/b/#", "a/+/#", 0, 0, 1, "'a/b' is in both"},
    {"a/#", "a", 1, 1, 1, "'a/#' covers the topic 'a'"},
    /* shared subscriptions */
    {"a/#", "$share/g/a/b", 0, 1, 1, "a $share filter is checked unshared"},
    {"a/#", "$share//a/b", 0, 0, 0, "a $share group must not be empty"},
    {"a/#", "$share/g+/a", 0, 0, 0, "a $share group has no wildcards"},
    {"a", "$share/g", 0, 0, 0, "a $share needs a filter after the group"},
    {"#", "$share/g/#", 0, 1, 1, "'$share/g/#' is '#'"},
    {"$share/g/a", "$share/g/a", 1, 0, 0,
     "a pattern is literal: it matches the topic, not the shared filter"},
};

static void test_the_mqtt_vector_table(void)
{
    size_t i;

    for (i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
        const struct vec *v = &vecs[i];
        int m = pol_match(v->pattern, v->subject);
        int c = pol_covers(v->pattern, v->subject);
        int x = pol_intersects(v->pattern, v->subject);

        ok(m == v->m && c == v->c && x == v->x,
           "%s ('%s' vs '%s': match %d/%d covers %d/%d intersects %d/%d)",
           v->why, v->pattern, v->subject, m, v->m, c, v->c, x, v->x);
        if (c && !x)
            ok(0, "covers implies intersects for row %zu", i);
    }
    ok(sizeof(vecs) / sizeof(vecs[0]) >= 60, "the table has 60+ rows");
}

static void test_topic_and_filter_validity(void)
{
    char *big = malloc(POL_TOPIC_MAX + 2);
    char deep[2 * 200 + 1];
    size_t i;

    ok(pol_topic_valid("a/b") && !pol_topic_valid("a/+") &&
           !pol_topic_valid("#") && !pol_topic_valid(NULL),
       "topic names carry no wildcards");
    ok(pol_filter_valid("a/+/#") && pol_filter_valid("+") &&
           pol_filter_valid("#") && !pol_filter_valid("a/#/b") &&
           !pol_filter_valid("a#") && !pol_filter_valid("a+/b"),
       "filter wildcards stand alone, '#' only last");
    ok(pol_filter_valid("$share/g/a/#") && !pol_filter_valid("$share/g") &&
           !pol_filter_valid("$share//a") && !pol_filter_valid("$share/#/a"),
       "shared subscriptions need a plain group and a filter");
    ok(strcmp(pol_filter_unshare("$share/g/a/+"), "a/+") == 0 &&
           strcmp(pol_filter_unshare("a/+"), "a/+") == 0,
       "unshare strips only the $share prefix");
    memset(big, 'x', POL_TOPIC_MAX + 1);
    big[POL_TOPIC_MAX] = '\0';
    ok(pol_topic_valid(big) && pol_match("#", big),
       "65535 bytes is the longest topic");
    big[POL_TOPIC_MAX] = 'x';
    big[POL_TOPIC_MAX + 1] = '\0';
    ok(!pol_topic_valid(big) && !pol_match("#", big),
       "65536 bytes is too long");
    free(big);
    for (i = 0; i < 200; i++) {
        deep[2 * i] = 'a';
        deep[2 * i + 1] = '/';
    }
    deep[2 * 200 - 1] = '\0';
    ok(pol_match("a/#", deep) && pol_match(deep, deep),
       "the reference relations have no depth limit");
}

/* ---- compiling and deciding ----------------------------------------- */

static pol_set *recompile(const pol_set *s);

static json_t *doc(const char *text)
{
    json_error_t e;
    json_t *d = json_loads(text, JSON_ALLOW_NUL, &e);

    if (d == NULL)
        tap_diag("bad test JSON: %s", e.text);
    return d;
}

static const char api_example[] =
    "{\"statements\":["
    "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
    "\"client_ids\":[\"${device.id}\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
    "\"topics\":[\"devices/${device.id}/telemetry/#\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"subscribe\",\"receive\"],"
    "\"topics\":[\"devices/${device.id}/cmd/+\"]},"
    "{\"effect\":\"deny\",\"actions\":[\"publish\",\"subscribe\",\"receive\"],"
    "\"topics\":[\"$SYS/#\"]}]}";

static pol_set *compile1(const json_t *d, const char *name,
                         const pol_vars *vars)
{
    pol_source src = {name, d};
    pol_set *set = NULL;
    char err[256] = "";

    if (pol_compile(&src, 1, vars, &set, err, sizeof(err)) != AD_OK)
        tap_diag("compile failed: %s", err);
    return set;
}

static int allows(const pol_set *s, pol_action a, const char *subject)
{
    return pol_decide(s, a, subject).allow;
}

static void test_api_example_decides_per_device(void)
{
    json_t *d = doc(api_example);
    pol_vars v = {0};
    pol_set *s;
    pol_decision dec;

    v.device_id = "dev1";
    s = compile1(d, "base", &v);
    ok(s != NULL, "the docs/policies.md example compiles");
    ok(allows(s, POL_CONNECT, "dev1") && !allows(s, POL_CONNECT, "dev2"),
       "a device connects only under its own id");
    ok(allows(s, POL_PUBLISH, "devices/dev1/telemetry/temp") &&
           allows(s, POL_PUBLISH, "devices/dev1/telemetry"),
       "a device publishes its own telemetry");
    ok(!allows(s, POL_PUBLISH, "devices/dev2/telemetry/temp"),
       "a device cannot publish another's telemetry");
    ok(allows(s, POL_SUBSCRIBE, "devices/dev1/cmd/+") &&
           allows(s, POL_SUBSCRIBE, "devices/dev1/cmd/reboot"),
       "a device subscribes to its commands");
    ok(!allows(s, POL_SUBSCRIBE, "devices/dev1/cmd/#") &&
           !allows(s, POL_SUBSCRIBE, "devices/+/cmd/+") &&
           !allows(s, POL_SUBSCRIBE, "#"),
       "test_subscribe_filter_must_be_covered: wider filters are refused");
    ok(allows(s, POL_RECEIVE, "devices/dev1/cmd/x") &&
           !allows(s, POL_PUBLISH, "devices/dev1/cmd/x"),
       "actions are separate");
    dec = pol_decide(s, POL_SUBSCRIBE, "$SYS/#");
    ok(!dec.allow && strcmp(dec.reason, "explicit_deny") == 0 &&
           strcmp(dec.policy, "base") == 0 && dec.statement == 3,
       "a $SYS subscription is denied by statement 3 of base (%s %d)",
       dec.reason, dec.statement);
    dec = pol_decide(s, POL_PUBLISH, "devices/dev1/telemetry/t");
    ok(dec.allow && strcmp(dec.reason, "allowed") == 0 &&
           dec.statement == 1,
       "the explanation names the allowing statement");
    ok(pol_decide_filter(s, POL_PUBLISH, "devices/dev1/telemetry/#").allow &&
           !pol_decide_filter(s, POL_PUBLISH, "devices/+/telemetry/#").allow &&
           !pol_decide_filter(s, POL_PUBLISH, "$SYS/#").allow &&
           pol_decide_filter(s, POL_CONNECT, "dev1").allow,
       "pol_decide_filter grants a scope only if every topic in it is allowed");
    dec = pol_decide(s, POL_PUBLISH, "other");
    ok(!dec.allow && dec.policy == NULL && dec.statement == -1 &&
           strcmp(dec.reason, "no_matching_allow") == 0,
       "default deny names no statement");
    ok(allows(s, POL_SUBSCRIBE, "$share/workers/devices/dev1/cmd/+") &&
           !allows(s, POL_SUBSCRIBE, "$share//devices/dev1/cmd/+"),
       "$share subscriptions are checked as their filter");
    pol_set_free(s);
    json_decref(d);
}

static void test_invalid_subjects_are_denied(void)
{
    json_t *d = doc("{\"statements\":[{\"effect\":\"allow\","
                    "\"actions\":[\"publish\",\"subscribe\",\"receive\"],"
                    "\"topics\":[\"#\"]}]}");
    pol_set *s = compile1(d, "all", NULL);
    char deep[2 * 130 + 1];
    size_t i;

    ok(!allows(s, POL_PUBLISH, "a/+") && !allows(s, POL_PUBLISH, "a/#") &&
           !allows(s, POL_RECEIVE, "+"),
       "a publish or receive topic with wildcards is denied");
    ok(strcmp(pol_decide(s, POL_PUBLISH, "a/+").reason, "invalid_topic") == 0,
       "the reason says the topic is invalid");
    ok(!allows(s, POL_PUBLISH, "") && !allows(s, POL_PUBLISH, NULL) &&
           !allows(s, POL_PUBLISH, "a/\xff"),
       "empty, missing and non-UTF-8 topics are denied");
    ok(!allows(s, POL_SUBSCRIBE, "a#") && !allows(s, POL_SUBSCRIBE, "#/a") &&
           strcmp(pol_decide(s, POL_SUBSCRIBE, "a+").reason,
                  "invalid_filter") == 0,
       "invalid filters are denied");
    ok(!allows(s, POL_PUBLISH, "$SYS/x") && allows(s, POL_PUBLISH, "x") &&
           allows(s, POL_SUBSCRIBE, "#"),
       "'#' grants normal topics, not $SYS");
    for (i = 0; i < 130; i++) {
        deep[2 * i] = 'a';
        deep[2 * i + 1] = '/';
    }
    deep[2 * 128 - 1] = '\0';
    ok(allows(s, POL_PUBLISH, deep), "128 levels are decided");
    deep[2 * 128 - 1] = '/';
    deep[2 * 129 - 1] = '\0';
    ok(!allows(s, POL_PUBLISH, deep),
       "129 levels are denied (the decision stack is bounded)");
    ok(!allows(NULL, POL_PUBLISH, "x") && !allows(s, (pol_action)16, "x"),
       "no set or an unknown action denies");
    pol_set_free(s);
    json_decref(d);
}

static void test_hostile_variable_values_match_nothing(void)
{
    json_t *d = doc(api_example);
    const char *ids[] = {"a/b", "+", "#", "a+b", ""};
    pol_vars v = {0};
    pol_set *s;
    size_t i;

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        v.device_id = ids[i];
        s = compile1(d, "base", &v);
        ok(s && !allows(s, POL_PUBLISH, "devices/x/telemetry/y") &&
               !allows(s, POL_PUBLISH, "devices/a/b/telemetry/y") &&
               !allows(s, POL_SUBSCRIBE, "devices/+/cmd/+") &&
               !allows(s, POL_CONNECT, ids[i]) &&
               !allows(s, POL_PUBLISH, "devices//telemetry/x"),
           "device id '%s' cannot inject a level or a wildcard", ids[i]);
        pol_set_free(s);
    }
    v.device_id = NULL;
    s = compile1(d, "base", &v);
    ok(s && !allows(s, POL_CONNECT, "") &&
           !allows(s, POL_PUBLISH, "devices//telemetry/x"),
       "an unset device id drops its patterns");
    pol_set_free(s);
    json_decref(d);
}

static void test_attributes_and_inner_level_variables(void)
{
    json_t *d = doc(
        "{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
        "\"topics\":[\"site/${device.attributes.site}/#\","
        "\"t/pre-${device.id}\",\"u/${username}/x\",\"c/${cert.cn}\","
        "\"k/${client_id}\"]}]}");
    json_t *attrs = json_object();
    pol_vars v = {0};
    pol_set *s;

    v.device_id = "dev1";
    v.attributes = attrs;
    v.cert_cn = "dev1.example";
    v.client_id = "cl-1";
    json_object_set_new(attrs, "site", json_string("berlin"));
    s = compile1(d, "p", &v);
    ok(allows(s, POL_PUBLISH, "site/berlin/room/1"),
       "an attribute variable expands");
    ok(allows(s, POL_PUBLISH, "t/pre-dev1") &&
           !allows(s, POL_PUBLISH, "t/pre-dev2"),
       "a variable inside a level expands in place");
    ok(!allows(s, POL_PUBLISH, "u//x") && !allows(s, POL_PUBLISH, "u/x/x"),
       "an unset username drops only its own pattern");
    ok(allows(s, POL_PUBLISH, "c/dev1.example") && allows(s, POL_PUBLISH, "k/cl-1"),
       "cert.cn and client_id expand");
    pol_set_free(s);

    json_object_set_new(attrs, "site", json_string("a/b"));
    s = compile1(d, "p", &v);
    ok(!allows(s, POL_PUBLISH, "site/a/b/x") && allows(s, POL_PUBLISH, "t/pre-dev1"),
       "an attribute with '/' drops its pattern, not the others");
    pol_set_free(s);

    json_object_set_new(attrs, "site", json_stringn("x\0y", 3));
    s = compile1(d, "p", &v);
    ok(!allows(s, POL_PUBLISH, "site/x/1") && !allows(s, POL_PUBLISH, "site/x"),
       "an attribute with an embedded NUL matches nothing (no truncation)");
    pol_set_free(s);

    json_object_set_new(attrs, "site", json_integer(3));
    s = compile1(d, "p", &v);
    ok(!allows(s, POL_PUBLISH, "site/3/x"), "a non-string attribute is unset");
    pol_set_free(s);

    v.username = "${device.id}";
    s = compile1(d, "p", &v);
    ok(allows(s, POL_PUBLISH, "u/${device.id}/x") &&
           !allows(s, POL_PUBLISH, "u/dev1/x"),
       "a value containing '${' is literal, not expanded again");
    pol_set_free(s);
    json_decref(attrs);
    json_decref(d);
}

static void test_group_variable_expands_per_group(void)
{
    json_t *d = doc("{\"statements\":[{\"effect\":\"allow\","
                    "\"actions\":[\"publish\",\"subscribe\"],"
                    "\"topics\":[\"groups/${group}/#\"]}]}");
    const char *groups[] = {"g1", "g2", "bad/g", "+"};
    pol_vars v = {0};
    pol_set *s;

    v.groups = groups;
    v.group_count = 4;
    s = compile1(d, "p", &v);
    ok(allows(s, POL_PUBLISH, "groups/g1/x") &&
           allows(s, POL_PUBLISH, "groups/g2/y/z") &&
           allows(s, POL_SUBSCRIBE, "groups/g2/#"),
       "each group gets its own pattern");
    ok(!allows(s, POL_PUBLISH, "groups/g3/x") &&
           !allows(s, POL_PUBLISH, "groups/bad/g/x") &&
           !allows(s, POL_SUBSCRIBE, "groups/+/#"),
       "hostile groups are dropped and other groups are not granted");
    pol_set_free(s);
    v.group_count = 0;
    s = compile1(d, "p", &v);
    ok(s && !allows(s, POL_PUBLISH, "groups/g1/x"),
       "no group, no pattern");
    pol_set_free(s);
    json_decref(d);
}

static void test_explicit_deny_beats_any_allow(void)
{
    json_t *p1 = doc("{\"statements\":["
                     "{\"effect\":\"allow\",\"actions\":[\"publish\",\"subscribe\"],"
                     "\"topics\":[\"#\"]},"
                     "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
                     "\"topics\":[\"a/#\"]}]}");
    json_t *p2 = doc("{\"statements\":["
                     "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
                     "\"topics\":[\"a/b\"]},"
                     "{\"effect\":\"deny\",\"actions\":[\"publish\",\"subscribe\"],"
                     "\"topics\":[\"a/secret/#\"]},"
                     "{\"effect\":\"deny\",\"actions\":[\"publish\"],"
                     "\"topics\":[\"a/+/x\"]}]}");
    pol_source src[2] = {{"p1", p1}, {"p2", p2}};
    pol_set *s = NULL;
    pol_decision d;
    char err[128];

    ok(pol_compile(src, 2, NULL, &s, err, sizeof(err)) == AD_OK,
       "two documents compile together");
    d = pol_decide(s, POL_PUBLISH, "a/secret/x");
    ok(!d.allow && strcmp(d.policy, "p2") == 0 && d.statement == 1 &&
           strcmp(d.reason, "explicit_deny") == 0,
       "a deny in a later policy beats an earlier allow, and the first "
       "matching deny is named (%s %d)", d.policy, d.statement);
    d = pol_decide(s, POL_PUBLISH, "a/b");
    ok(d.allow && strcmp(d.policy, "p1") == 0 && d.statement == 0,
       "the first allow in source order is named");
    d = pol_decide(s, POL_PUBLISH, "a/other/x");
    ok(!d.allow && d.statement == 2, "a deny with '+' applies");
    ok(!allows(s, POL_SUBSCRIBE, "a/#") && !allows(s, POL_SUBSCRIBE, "a/+/y") &&
           !allows(s, POL_SUBSCRIBE, "#"),
       "a subscription that could receive a denied topic is denied");
    ok(allows(s, POL_SUBSCRIBE, "a/public/+") && allows(s, POL_SUBSCRIBE, "b/#"),
       "subscriptions disjoint from the deny are allowed");
    pol_set_free(s);
    json_decref(p1);
    json_decref(p2);
}

static void test_connect_client_id_globs(void)
{
    json_t *d = doc("{\"statements\":["
                    "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
                    "\"client_ids\":[\"SN-*\",\"${device.id}\",\"gw-${device.id}-*\"]},"
                    "{\"effect\":\"deny\",\"actions\":[\"connect\"],"
                    "\"client_ids\":[\"SN-bad*\"]}]}");
    pol_vars v = {0};
    pol_set *s;

    v.device_id = "dev1";
    s = compile1(d, "c", &v);
    ok(allows(s, POL_CONNECT, "SN-1") && allows(s, POL_CONNECT, "SN-"),
       "a trailing '*' matches any suffix, even empty");
    ok(!allows(s, POL_CONNECT, "XSN-1") && !allows(s, POL_CONNECT, "SN"),
       "globs are anchored prefixes");
    ok(allows(s, POL_CONNECT, "dev1") && !allows(s, POL_CONNECT, "dev10"),
       "an exact id is exact");
    ok(allows(s, POL_CONNECT, "gw-dev1-7") && !allows(s, POL_CONNECT, "gw-dev2-7"),
       "a glob can carry a variable");
    ok(!allows(s, POL_CONNECT, "SN-bad1") &&
           pol_decide(s, POL_CONNECT, "SN-bad").statement == 1,
       "a connect deny glob wins");
    pol_set_free(s);
    v.device_id = "x*";
    s = compile1(d, "c", &v);
    ok(!allows(s, POL_CONNECT, "x*") && !allows(s, POL_CONNECT, "xyz"),
       "a '*' in a value cannot turn an exact id into a glob");
    pol_set_free(s);
    json_decref(d);
}

static void test_long_values_and_many_groups(void)
{
    json_t *d = doc("{\"statements\":[{\"effect\":\"allow\","
                    "\"actions\":[\"publish\"],"
                    "\"topics\":[\"s/${device.attributes.k}/x\","
                    "\"g/${group}\"]}]}");
    json_t *attrs = json_object(), *sts;
    char *val = malloc(POL_TOPIC_MAX + 1), *topic = malloc(POL_TOPIC_MAX + 8);
    const char **groups = calloc(600, sizeof(char *));
    char (*names)[8] = calloc(600, sizeof(*names));
    pol_vars v = {0};
    pol_set *s, *r;
    size_t i;

    memset(val, 'v', 2000);
    val[2000] = '\0';
    json_object_set_new(attrs, "k", json_string(val));
    v.attributes = attrs;
    s = compile1(d, "p", &v);
    snprintf(topic, POL_TOPIC_MAX + 8, "s/%s/x", val);
    ok(allows(s, POL_PUBLISH, topic),
       "a value longer than the small expansion buffer still expands");
    pol_set_free(s);
    memset(val, 'v', POL_TOPIC_MAX - 3);
    val[POL_TOPIC_MAX - 3] = '\0';
    json_object_set_new(attrs, "k", json_string(val));
    s = compile1(d, "p", &v);
    snprintf(topic, POL_TOPIC_MAX + 8, "s/%s/x", val);
    ok(s != NULL && !allows(s, POL_PUBLISH, topic),
       "an expansion past 65535 bytes is dropped, not truncated");
    pol_set_free(s);

    for (i = 0; i < 600; i++) {
        snprintf(names[i], sizeof(names[i]), "g%zu", i);
        groups[i] = names[i];
    }
    v.groups = groups;
    v.group_count = 600;
    s = compile1(d, "p", &v);
    sts = pol_set_statements(s);
    ok(json_array_size(sts) == 3,
       "600 group patterns export as 3 statements of at most 256 (got %zu)",
       json_array_size(sts));
    json_decref(sts);
    r = recompile(s);
    ok(r && allows(r, POL_PUBLISH, "g/g0") && allows(r, POL_PUBLISH, "g/g599") &&
           pol_decide(r, POL_PUBLISH, "g/g599").statement == 0 &&
           !allows(r, POL_PUBLISH, "g/g600"),
       "the split export decides and explains as the original");
    pol_set_free(r);
    pol_set_free(s);
    free(names);
    free(groups);
    free(val);
    free(topic);
    json_decref(attrs);
    json_decref(d);
}

/* A gateway's policy: each child's topics, and connect as a child. */
static const char gateway_policy[] =
    "{\"statements\":["
    "{\"effect\":\"deny\",\"actions\":[\"publish\",\"subscribe\"],"
    "\"topics\":[\"devices/${child.id}/telemetry/secret\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"publish\",\"subscribe\"],"
    "\"topics\":[\"devices/${child.id}/telemetry/#\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
    "\"client_ids\":[\"${child.id}\"]}]}";

enum { GW_CHILDREN = 10000 };

/* Both ways a gateway is decided: its own compiled set and the shared
 * set bound to its children. 1 if both allow, 0 if both deny, -1 if
 * they disagree (a bug either way). */
static int gw_allows(const pol_set *own, const pol_set *shared,
                     const pol_vars *v, pol_action a, const char *subject)
{
    pol_decision x = pol_decide(own, a, subject),
                 y = pol_decide_bound(shared, v, a, subject);

    if (x.allow != y.allow || x.statement != y.statement ||
        strcmp(x.reason, y.reason) != 0)
        return -1;
    return x.allow;
}

static void test_child_id_expands_per_child_of_a_gateway(void)
{
    json_t *d = doc(gateway_policy), *sts;
    char (*names)[12] = calloc(GW_CHILDREN, sizeof(*names));
    const char **kids = calloc(GW_CHILDREN, sizeof(char *));
    const char **groups = calloc(200, sizeof(char *));
    pol_source src = {"gw", d};
    pol_vars v = {0};
    pol_set *own = NULL, *shared = NULL, *r = NULL;
    char err[256] = "";
    size_t i;

    if (!ok(d && names && kids && groups, "set up"))
        goto out;
    /* Zero-padded, so the order they are made in is strcmp's. */
    for (i = 0; i < GW_CHILDREN; i++) {
        snprintf(names[i], sizeof(names[i]), "dev-%05zu", i);
        kids[i] = names[i];
    }
    v.device_id = "gw1";
    v.children = kids;
    v.child_count = GW_CHILDREN;
    own = compile1(d, "gw", &v);
    ok(own != NULL &&
           pol_compile_shared(&src, 1, &shared, err, sizeof(err)) == AD_OK,
       "a gateway policy compiles for the gateway and shared (%s)", err);
    ok(pol_set_uses(shared) == POL_USES_CHILD,
       "the shared set reports that it reads ${child.id}");
    ok(pol_set_uses(own) == 0, "a bound set reads no variable");
    ok(gw_allows(own, shared, &v, POL_PUBLISH,
                 "devices/dev-04242/telemetry/temp") == 1 &&
           gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices/dev-00000/telemetry") == 1 &&
           gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices/dev-09999/telemetry/a/b") == 1,
       "a gateway publishes for any of its 10,000 children");
    ok(gw_allows(own, shared, &v, POL_PUBLISH,
                 "devices/dev-10000/telemetry/temp") == 0 &&
           gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices/gw1/telemetry/temp") == 0,
       "not for a device that is not its child, nor for itself");
    ok(gw_allows(own, shared, &v, POL_PUBLISH,
                 "devices/dev-0424/telemetry/temp") == 0 &&
           gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices/dev-042420/telemetry/temp") == 0 &&
           gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices//telemetry/temp") == 0,
       "nor for a prefix of a child's id, an extension of one, or none");
    ok(gw_allows(own, shared, &v, POL_PUBLISH,
                 "devices/dev-00007/telemetry/secret") == 0 &&
           pol_decide_bound(shared, &v, POL_PUBLISH,
                            "devices/dev-00007/telemetry/secret")
                   .statement == 0,
       "the child's deny wins, and is named");
    ok(gw_allows(own, shared, &v, POL_SUBSCRIBE,
                 "devices/dev-00001/telemetry/t/#") == 1 &&
           gw_allows(own, shared, &v, POL_SUBSCRIBE,
                     "devices/dev-00001/telemetry/+/x") == 1,
       "subscribe within one child's telemetry is covered");
    ok(gw_allows(own, shared, &v, POL_SUBSCRIBE,
                 "devices/dev-00001/telemetry/#") == 0,
       "but not where it meets the child's deny");
    ok(gw_allows(own, shared, &v, POL_SUBSCRIBE,
                 "devices/+/telemetry/#") == 0 &&
           gw_allows(own, shared, &v, POL_SUBSCRIBE,
                     "devices/+/telemetry/t") == 0 &&
           gw_allows(own, shared, &v, POL_SUBSCRIBE, "devices/#") == 0,
       "test_subscribe_filter_must_be_covered: a '+' or '#' for the child "
       "is covered by no single child's pattern");
    ok(gw_allows(own, shared, &v, POL_SUBSCRIBE,
                 "devices/dev-00007/telemetry/+") == 0 &&
           pol_decide(own, POL_SUBSCRIBE, "devices/dev-00007/telemetry/+")
                   .statement == 0,
       "a '+' that meets the child's deny is refused by the deny");
    ok(gw_allows(own, shared, &v, POL_CONNECT, "dev-00042") == 1 &&
           gw_allows(own, shared, &v, POL_CONNECT, "dev-0004") == 0 &&
           gw_allows(own, shared, &v, POL_CONNECT, "dev-10000") == 0,
       "connect under a child's id, and only a child's");

    /* The export a broker gets: 10,000 patterns per statement, split
     * into statements of 256, deciding as the set does. */
    sts = pol_statements_bound(&src, 1, &v);
    ok(json_array_size(sts) == 3 * ((GW_CHILDREN + 255) / 256),
       "each statement exports as %d statements of at most 256 patterns "
       "(got %zu)", (GW_CHILDREN + 255) / 256, json_array_size(sts));
    json_decref(sts);
    r = recompile(own);
    ok(r != NULL && allows(r, POL_PUBLISH, "devices/dev-09999/telemetry/t") &&
           !allows(r, POL_PUBLISH, "devices/dev-09999/telemetry/secret") &&
           pol_decide(r, POL_PUBLISH, "devices/dev-09999/telemetry/secret")
                   .statement == 0 &&
           !allows(r, POL_PUBLISH, "devices/dev-1/telemetry/t") &&
           allows(r, POL_CONNECT, "dev-05000"),
       "the split export decides and explains as the gateway's set");
    pol_set_free(r);
    r = NULL;

    /* Hostile children: no level, wildcard or glob is injected. */
    {
        static const char *const bad[] = {"#", "+", "a/b", "x*"};

        v.children = bad;
        v.child_count = 4;
        pol_set_free(own);
        own = compile1(d, "gw", &v);
        ok(gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices/a/b/telemetry/t") == 0 &&
               gw_allows(own, shared, &v, POL_PUBLISH,
                         "devices/q/telemetry/t") == 0 &&
               gw_allows(own, shared, &v, POL_CONNECT, "x*") == 0 &&
               gw_allows(own, shared, &v, POL_CONNECT, "xy") == 0,
           "a child id with '/', '+', '#' (or '*' for a client id) gives "
           "no pattern");
        ok(gw_allows(own, shared, &v, POL_PUBLISH,
                     "devices/x*/telemetry/t") == 1,
           "but '*' is an ordinary character in a topic");
    }

    /* Groups times children is bounded: past POL_EXPANSIONS_MAX the
     * compile fails loudly rather than taking all memory. */
    json_decref(d);
    d = doc("{\"statements\":[{\"effect\":\"allow\","
            "\"actions\":[\"publish\"],"
            "\"topics\":[\"${group}/${child.id}\"]}]}");
    src.doc = d;
    for (i = 0; i < 200; i++)
        groups[i] = names[i];
    v.children = kids;
    v.child_count = GW_CHILDREN;
    v.groups = groups;
    v.group_count = 200;
    pol_set_free(own);
    own = NULL;
    err[0] = '\0';
    ok(pol_compile(&src, 1, &v, &own, err, sizeof(err)) == AD_EFIELD &&
           own == NULL && strstr(err, "more than") != NULL,
       "200 groups x 10,000 children is refused (%s)", err);
    ok(pol_statements_bound(&src, 1, &v) == NULL,
       "and so is its export");
    v.group_count = 2;
    own = compile1(d, "p", &v);
    ok(own != NULL && allows(own, POL_PUBLISH, "dev-00001/dev-00002") &&
           !allows(own, POL_PUBLISH, "dev-00002/dev-00001"),
       "2 groups x 10,000 children make the cross product");
out:
    pol_set_free(own);
    pol_set_free(shared);
    free(names);
    free(kids);
    free(groups);
    json_decref(d);
}

/* ---- validation ----------------------------------------------------- */

static void test_validation_errors_name_the_statement(void)
{
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"[]", "must be a JSON object"},
        {"{}", "\"statements\" must be"},
        {"{\"statements\":[]}", "\"statements\" must be"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\"]}],\"x\":1}", "unknown key \"x\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\"]},{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\"]},{\"effect\":\"allow\",\"actions\":[\"fly\"],"
         "\"topics\":[\"a\"]}]}", "statement 2: unknown action \"fly\""},
        {"{\"statements\":[1]}", "statement 0: must be an object"},
        {"{\"statements\":[{\"effect\":\"maybe\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\"]}]}", "statement 0: \"effect\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[],"
         "\"topics\":[\"a\"]}]}", "statement 0: \"actions\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"]}]}",
         "statement 0: \"topics\" is required"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"connect\"]}]}",
         "statement 0: \"client_ids\" is required"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\"],\"colour\":1}]}",
         "statement 0: unknown key \"colour\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a#\"]}]}", "statement 0: invalid topic filter \"a#\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a/${foo}\"]}]}", "statement 0: topic \"a/${foo}\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a/${device.id\"]}]}", "unterminated"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"${device.id}#\"]}]}", "invalid topic filter"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"$share/g/a\"]}]}", "$share/"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\\u0000b\"]}]}", "NUL"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[]}]}", "\"topics\" must be an array"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"connect\"],"
         "\"client_ids\":[\"a*b\"]}]}", "only allowed at the end"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"connect\"],"
         "\"client_ids\":[\"a\"],\"topics\":[\"a\"]}]}",
         "\"topics\" given without"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\","
         "\"publish\"],\"topics\":[\"a\"]}]}", "duplicate action"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"a\"],\"index\":\"x\"}]}", "\"index\""},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"d/${child}\"]}]}", "unknown or unterminated"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"d/${child.ids}\"]}]}", "unknown or unterminated"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"connect\"],"
         "\"client_ids\":[\"${children}\"]}]}", "unknown or unterminated"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"publish\"],"
         "\"topics\":[\"d/${child.id}#\"]}]}", "invalid topic filter"},
        {"{\"statements\":[{\"effect\":\"allow\",\"actions\":[\"connect\"],"
         "\"client_ids\":[\"*${child.id}\"]}]}", "only allowed at the end"},
    };
    char err[256], deep[2 * 130 + 128];
    size_t i;
    json_t *d;

    for (i = 0; i < 129; i++)
        memcpy(deep + 2 * i, "a/", 2);
    deep[2 * 129 - 1] = '\0';
    d = json_pack("{s:[{s:s,s:[s],s:[s]}]}", "statements", "effect", "deny",
                  "actions", "publish", "topics", deep);
    ok(pol_doc_validate(d, err, sizeof(err)) == AD_EFIELD &&
           strstr(err, "more than 128 levels") != NULL,
       "a pattern deeper than any decidable topic is refused (%s)", err);
    json_decref(d);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        d = doc(bad[i].json);
        err[0] = '\0';
        ok(pol_doc_validate(d, err, sizeof(err)) == AD_EFIELD &&
               strstr(err, bad[i].msg) != NULL,
           "refused with '%s' (got '%s')", bad[i].msg, err);
        json_decref(d);
    }
    d = doc(api_example);
    ok(pol_doc_validate(d, err, sizeof(err)) == AD_OK,
       "the docs/policies.md example is valid");
    json_decref(d);
    d = doc("{\"statements\":[{\"effect\":\"deny\",\"actions\":[\"receive\"],"
            "\"topics\":[\"x/${device.attributes.room-1}/${group}/+\","
            "\"${username}/${cert.cn}/${client_id}\","
            "\"gw/${child.id}/+\",\"g/${group}-${child.id}/#\"],"
            "\"policy\":\"p\",\"index\":4},"
            "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
            "\"client_ids\":[\"${child.id}\",\"gw-${child.id}-*\"]}]}");
    ok(pol_doc_validate(d, err, sizeof(err)) == AD_OK,
       "every variable and the export keys are accepted");
    json_decref(d);
}

static void test_action_names_round_trip(void)
{
    ok(pol_action_parse("connect") == POL_CONNECT &&
           pol_action_parse("receive") == POL_RECEIVE &&
           pol_action_parse("fly") == 0 && pol_action_parse(NULL) == 0,
       "action names parse");
    ok(strcmp(pol_action_name(POL_SUBSCRIBE), "subscribe") == 0 &&
           pol_action_name((pol_action)3) == NULL,
       "action names print");
}

/* ---- exported statements ------------------------------------------- */

static int same_decision(pol_decision a, pol_decision b)
{
    return a.allow == b.allow && a.statement == b.statement &&
           strcmp(a.reason, b.reason) == 0 &&
           ((a.policy == NULL && b.policy == NULL) ||
            (a.policy && b.policy && strcmp(a.policy, b.policy) == 0));
}

static pol_set *recompile(const pol_set *s)
{
    json_t *sts = pol_set_statements(s), *d = json_object();
    pol_set *r = NULL;
    char err[256] = "";

    json_object_set_new(d, "statements", sts);
    if (pol_doc_validate(d, err, sizeof(err)) != AD_OK)
        tap_diag("export does not validate: %s", err);
    else
        r = compile1(d, "exported", NULL);
    json_decref(d);
    return r;
}

static void test_exported_statements_decide_identically(void)
{
    json_t *d = doc(api_example);
    json_t *g = doc("{\"statements\":[{\"effect\":\"allow\","
                    "\"actions\":[\"publish\",\"connect\"],"
                    "\"topics\":[\"g/${group}/#\",\"u/${username}/x\"],"
                    "\"client_ids\":[\"${username}\"]}]}");
    const char *groups[] = {"ga", "g${b}"};
    const char *subjects[] = {"devices/dev1/telemetry/a", "$SYS/x",
                              "devices/dev1/cmd/x", "g/ga/1",
                              "g/g${b}/1", "u/${device.id}/x", "dev1",
                              "${device.id}", "devices/dev1/cmd/+", "#"};
    pol_source src[2] = {{"base", d}, {"grp", g}};
    pol_vars v = {0};
    pol_set *s = NULL, *r;
    json_t *sts;
    size_t i;
    int a, same = 1;
    char err[128];

    v.device_id = "dev1";
    v.username = "${device.id}";
    v.groups = groups;
    v.group_count = 2;
    pol_compile(src, 2, &v, &s, err, sizeof(err));
    sts = pol_set_statements(s);
    ok(json_array_size(sts) == 5 &&
           strcmp(json_string_value(json_object_get(json_array_get(sts, 4),
                                                    "policy")), "grp") == 0 &&
           json_integer_value(json_object_get(json_array_get(sts, 3),
                                              "index")) == 3,
       "each exported statement carries its policy and index");
    ok(strcmp(json_string_value(json_array_get(json_object_get(
                  json_array_get(sts, 1), "topics"), 0)),
              "devices/dev1/telemetry/#") == 0,
       "exported topics have their variables substituted");
    json_decref(sts);
    r = recompile(s);
    ok(r != NULL, "the export compiles without variables");
    for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1)
        for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++)
            if (!same_decision(pol_decide(s, (pol_action)a, subjects[i]),
                               pol_decide(r, (pol_action)a, subjects[i]))) {
                tap_diag("differs: %s %s", pol_action_name((pol_action)a),
                         subjects[i]);
                same = 0;
            }
    ok(same, "the export decides identically, explanations included");
    ok(allows(r, POL_PUBLISH, "u/${device.id}/x") &&
           allows(r, POL_PUBLISH, "g/g${b}/1"),
       "a literal '${' from a value survives the round trip");
    pol_set_free(r);
    pol_set_free(s);
    json_decref(d);
    json_decref(g);
}

/* ---- randomized cross-check ----------------------------------------- */

static unsigned long long rng_state = 0x9E3779B97F4A7C15ull;

static unsigned rnd(unsigned n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)((rng_state >> 33) % n);
}

/* Random topic (wild 0) or filter (wild 1) of 1-3 levels. */
static void rnd_subject(char *buf, size_t cap, int wild)
{
    static const char *lits[] = {"a", "b", "", "$x"};
    size_t levels = 1 + rnd(3), i, o = 0;

    buf[0] = '\0';
    for (i = 0; i < levels; i++) {
        const char *l;
        unsigned k = rnd(wild ? 6 : 4);

        if (k == 4)
            l = "+";
        else if (k == 5)
            l = i + 1 == levels ? "#" : "+";
        else
            l = lits[k];
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? "/" : "", l);
    }
    if (buf[0] == '\0')
        snprintf(buf, cap, "a"); /* the empty string is not a topic */
}

typedef struct {
    char pat[32];
    int allow;
} rstmt;

static void test_compiled_tries_agree_with_brute_force(void)
{
    int round, i, k, pub_ok = 1, sub_ok = 1, exp_ok = 1, checks = 0;
    const char *env = getenv("POLICY_TEST_SEED");

    if (env != NULL)
        rng_state = strtoull(env, NULL, 10);
    tap_diag("seed %llu", rng_state);
    for (round = 0; round < 300; round++) {
        rstmt st[8];
        int ns = 1 + (int)rnd(8);
        json_t *d = json_object(), *arr = json_array();
        pol_set *s, *r;

        for (i = 0; i < ns; i++) {
            json_t *o = json_object(), *acts = json_array(), *t = json_array();

            rnd_subject(st[i].pat, sizeof(st[i].pat), 1);
            st[i].allow = rnd(3) != 0;
            json_array_append_new(acts, json_string("publish"));
            json_array_append_new(acts, json_string("subscribe"));
            json_array_append_new(t, json_string(st[i].pat));
            json_object_set_new(o, "effect",
                                json_string(st[i].allow ? "allow" : "deny"));
            json_object_set_new(o, "actions", acts);
            json_object_set_new(o, "topics", t);
            json_array_append_new(arr, o);
        }
        json_object_set_new(d, "statements", arr);
        s = compile1(d, "r", NULL);
        r = recompile(s);
        for (k = 0; k < 40; k++) {
            char topic[32], filter[32];
            int want_stmt = -1, deny = 0;
            pol_decision got;

            rnd_subject(topic, sizeof(topic), 0);
            for (i = 0; i < ns && !deny; i++)
                if (!st[i].allow && pol_match(st[i].pat, topic))
                    deny = 1, want_stmt = i;
            for (i = 0; i < ns && !deny && want_stmt < 0; i++)
                if (st[i].allow && pol_match(st[i].pat, topic))
                    want_stmt = i;
            got = pol_decide(s, POL_PUBLISH, topic);
            if (got.allow != (!deny && want_stmt >= 0) ||
                got.statement != want_stmt) {
                if (pub_ok)
                    tap_diag("publish %s: got %d/%d want deny=%d stmt=%d",
                             topic, got.allow, got.statement, deny, want_stmt);
                pub_ok = 0;
            }
            if (!same_decision(got, pol_decide(r, POL_PUBLISH, topic)))
                exp_ok = 0;

            rnd_subject(filter, sizeof(filter), 1);
            deny = 0, want_stmt = -1;
            for (i = 0; i < ns && !deny; i++)
                if (!st[i].allow && pol_intersects(st[i].pat, filter))
                    deny = 1, want_stmt = i;
            for (i = 0; i < ns && !deny && want_stmt < 0; i++)
                if (st[i].allow && pol_covers(st[i].pat, filter))
                    want_stmt = i;
            got = pol_decide(s, POL_SUBSCRIBE, filter);
            if (got.allow != (!deny && want_stmt >= 0) ||
                got.statement != want_stmt) {
                if (sub_ok)
                    tap_diag("subscribe %s: got %d/%d want deny=%d stmt=%d",
                             filter, got.allow, got.statement, deny, want_stmt);
                sub_ok = 0;
            }
            if (!same_decision(got, pol_decide(r, POL_SUBSCRIBE, filter)))
                exp_ok = 0;
            checks += 2;
        }
        if (!pub_ok || !sub_ok || !exp_ok) {
            for (i = 0; i < ns; i++)
                tap_diag("  stmt %d %s %s", i, st[i].allow ? "allow" : "deny",
                         st[i].pat);
            round = 1000000; /* report the first failing policy only */
        }
        pol_set_free(r);
        pol_set_free(s);
        json_decref(d);
    }
    ok(pub_ok, "publish: the trie equals a loop over pol_match (%d checks)",
       checks / 2);
    ok(sub_ok, "subscribe: the trie equals a loop over pol_covers and "
       "pol_intersects (%d checks)", checks / 2);
    ok(exp_ok, "the exported statements decide the same random subjects");
}

/* A policy allowing publish on n topics t/0 .. t/(n-1). */
static pol_set *many_topics(int n)
{
    json_t *topics = json_array(), *doc;
    pol_set *set;
    char t[32];
    int i;

    for (i = 0; i < n; i++) {
        snprintf(t, sizeof(t), "t/%d", i);
        json_array_append_new(topics, json_string(t));
    }
    doc = json_pack("{s:[{s:s, s:[s], s:o}]}", "statements", "effect",
                    "allow", "actions", "publish", "topics", topics);
    set = compile1(doc, "many", NULL);
    json_decref(doc);
    return set;
}

static void test_a_granted_scope_always_verifies(void)
{
    pol_set *policy = many_topics(70), *scope = NULL;
    char *granted = NULL, *norm = NULL, err[256] = "";

    ok(pol_scope_grant(policy, NULL, &granted, err, sizeof(err)) == AD_OK,
       "a 70-topic policy grants its whole scope (%s)", err);
    ok(granted && pol_scope_compile(granted, &scope, &norm, err,
                                    sizeof(err)) == AD_OK,
       "and the verifier accepts every scope the granter writes (%s)", err);
    ok(norm && granted && strcmp(norm, granted) == 0,
       "a granted scope is already canonical");
    ok(scope && pol_decide(scope, POL_PUBLISH, "t/69").allow,
       "the 70th item is in the verified scope");
    pol_set_free(scope);
    free(granted);
    free(norm);
    pol_set_free(policy);

    policy = many_topics(POL_SCOPE_ITEMS_MAX + 1);
    granted = NULL;
    ok(pol_scope_grant(policy, NULL, &granted, err, sizeof(err)) ==
               AD_EFIELD && granted == NULL,
       "a grant over the bound is refused, never minted unverifiable");
    pol_set_free(policy);
}

static void test_requested_scopes_are_cut_to_the_policy(void)
{
    json_t *d = json_loads(api_example, 0, NULL);
    pol_vars v = {0};
    pol_set *policy, *scope = NULL;
    char *granted = NULL, err[256] = "";

    v.device_id = "d1";
    policy = compile1(d, "api", &v);
    ok(pol_scope_grant(policy,
                       "publish:devices/d1/telemetry/a publish:devices/d2/x "
                       "publish:devices/d1/telemetry/a",
                       &granted, err, sizeof(err)) == AD_OK &&
           strcmp(granted, "publish:devices/d1/telemetry/a") == 0,
       "granted = requested items the policy allows in full, once each (%s)",
       granted ? granted : err);
    free(granted);
    ok(pol_scope_grant(policy, "publish:devices/d2/x", &granted, err,
                       sizeof(err)) == AD_EFORBIDDEN,
       "nothing allowed is a refusal");
    ok(pol_scope_grant(policy, "fly:x", &granted, err, sizeof(err)) ==
           AD_EFIELD,
       "a malformed item is a bad request");
    ok(pol_scope_compile("connect:x", &scope, NULL, err, sizeof(err)) ==
               AD_EFIELD && scope == NULL,
       "connect is not a scope action");
    ok(pol_scope_compile("publish:a/#/b", &scope, NULL, err, sizeof(err)) ==
           AD_EFIELD,
       "an invalid filter is refused");
    ok(pol_scope_compile("publish:a/${device.id}", &scope, NULL, err,
                         sizeof(err)) == AD_EFIELD,
       "a variable in a scope is refused, not silently dropped");
    pol_set_free(policy);
    json_decref(d);
}

static void test_emqx_rules_are_scope_and_policy_and_end_with_deny_all(void)
{
    json_t *d = json_loads(api_example, 0, NULL), *acl, *last, *want;
    pol_vars v = {0};
    pol_set *policy;
    size_t n;

    v.device_id = "d1";
    policy = compile1(d, "api", &v);
    acl = pol_emqx_acl(policy, "publish:devices/d1/telemetry/t "
                               "publish:devices/d1/elsewhere");
    n = json_array_size(acl);
    last = json_array_get(acl, n - 1);
    ok(n == 4, "two denies ($SYS/# for publish and subscribe), one allow, "
               "one deny-all: %zu rules", n);
    want = json_pack("{s:s, s:s, s:s}", "permission", "allow", "action",
                     "publish", "topic", "devices/d1/telemetry/t");
    ok(json_equal(json_array_get(acl, 2), want),
       "only the scope item the policy allows becomes an allow");
    json_decref(want);
    ok(strcmp(json_string_value(json_object_get(last, "permission")),
              "deny") == 0 &&
           strcmp(json_string_value(json_object_get(last, "action")), "all") == 0 &&
           strcmp(json_string_value(json_object_get(last, "topic")), "#") == 0,
       "the list closes with a deny of everything");
    json_decref(acl);
    acl = pol_emqx_acl(policy, NULL);
    ok(json_array_size(acl) == 5,
       "without a token: denies, the policy's two allows, deny-all");
    json_decref(acl);
    pol_set_free(policy);
    json_decref(d);
}

int main(void)
{
    TAP_RUN(test_the_mqtt_vector_table);
    TAP_RUN(test_topic_and_filter_validity);
    TAP_RUN(test_api_example_decides_per_device);
    TAP_RUN(test_invalid_subjects_are_denied);
    TAP_RUN(test_hostile_variable_values_match_nothing);
    TAP_RUN(test_attributes_and_inner_level_variables);
    TAP_RUN(test_group_variable_expands_per_group);
    TAP_RUN(test_explicit_deny_beats_any_allow);
    TAP_RUN(test_connect_client_id_globs);
    TAP_RUN(test_long_values_and_many_groups);
    TAP_RUN(test_child_id_expands_per_child_of_a_gateway);
    TAP_RUN(test_validation_errors_name_the_statement);
    TAP_RUN(test_action_names_round_trip);
    TAP_RUN(test_exported_statements_decide_identically);
    TAP_RUN(test_compiled_tries_agree_with_brute_force);
    TAP_RUN(test_a_granted_scope_always_verifies);
    TAP_RUN(test_requested_scopes_are_cut_to_the_policy);
    TAP_RUN(test_emqx_rules_are_scope_and_policy_and_end_with_deny_all);
    return tap_done();
}
