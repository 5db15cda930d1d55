/* Unit tests of shared policy sets (pol_compile_shared, pol_decide_bound):
 * a set compiled once with its variables in place must decide for every
 * device exactly as the device's own set (pol_compile with its
 * variables) does. Hand-written cases read as the specification; a
 * seeded random differential test then compares the two on thousands
 * of documents, variable sets and subjects. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"
#include "tap.h"

/* ---- helpers --------------------------------------------------------- */

static int same(pol_decision a, pol_decision b)
{
    return a.allow == b.allow && a.statement == b.statement &&
           strcmp(a.reason, b.reason) == 0 &&
           (a.policy == NULL) == (b.policy == NULL) &&
           (a.policy == NULL || strcmp(a.policy, b.policy) == 0);
}

static void show(const char *what, pol_decision d)
{
    tap_diag("  %s: allow=%d reason=%s policy=%s statement=%d", what,
             d.allow, d.reason, d.policy ? d.policy : "(null)", d.statement);
}

typedef struct {
    json_t *doc;
    pol_set *shared;
} fixture;

/* On failure nothing is left to close. */
static int fixture_open(fixture *f, const char *json)
{
    pol_source src;
    char err[256];

    memset(f, 0, sizeof(*f));
    f->doc = json_loads(json, 0, NULL);
    if (f->doc == NULL)
        return 0;
    src.name = "p";
    src.doc = f->doc;
    if (pol_compile_shared(&src, 1, &f->shared, err, sizeof(err)) != AD_OK) {
        tap_diag("compile: %s", err);
        json_decref(f->doc);
        f->doc = NULL;
        return 0;
    }
    return 1;
}

static void fixture_close(fixture *f)
{
    pol_set_free(f->shared);
    json_decref(f->doc);
}

/* The reference: the device's own set, compiled with its variables. */
static pol_decision reference(const fixture *f, const pol_vars *v,
                              pol_action a, const char *subject)
{
    pol_source src = {"p", f->doc};
    pol_set *set = NULL;
    pol_decision d = {0, NULL, -1, "compile_failed"};
    char err[256];

    if (pol_compile(&src, 1, v, &set, err, sizeof(err)) == AD_OK)
        d = pol_decide(set, a, subject);
    /* The strings point into the set; keep only static reasons. */
    d.policy = d.policy ? "p" : NULL;
    pol_set_free(set);
    return d;
}

/* Decides on the shared set, checks it against the reference, and
 * returns allow so that the caller states what is expected. */
static int decide(const fixture *f, const pol_vars *v, pol_action a,
                  const char *subject, int *statement)
{
    pol_decision s = pol_decide_bound(f->shared, v, a, subject);
    pol_decision r = reference(f, v, a, subject);

    if (!ok(same(s, r), "shared and per-device sets agree on %s \"%.60s\"",
            pol_action_name(a), subject)) {
        show("shared", s);
        show("device", r);
    }
    if (statement != NULL)
        *statement = s.statement;
    return s.allow;
}

static pol_vars dev(const char *id)
{
    pol_vars v;

    memset(&v, 0, sizeof(v));
    v.device_id = id;
    return v;
}

/* ---- the specification ---------------------------------------------- */

static const char fleet[] =
    "{\"statements\":["
    "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
    " \"client_ids\":[\"${device.id}\",\"${device.id}-*\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
    " \"topics\":[\"devices/${device.id}/telemetry/#\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"subscribe\",\"receive\"],"
    " \"topics\":[\"devices/${device.id}/cmd/+\"]},"
    "{\"effect\":\"deny\",\"actions\":[\"publish\"],"
    " \"topics\":[\"devices/${device.id}/cmd/secret\",\"$SYS/#\"]}]}";

static void test_policy_shared_fleet_device_owns_its_topics(void)
{
    fixture f;
    pol_vars d1 = dev("d1");
    int st = -2;

    if (!ok(fixture_open(&f, fleet), "the fleet policy compiles shared"))
        return;
    ok(pol_set_uses(f.shared) == POL_USES_DEVICE_ID,
       "the fleet policy reads only ${device.id}, so a cache keeps only it");
    ok(decide(&f, &d1, POL_PUBLISH, "devices/d1/telemetry/temp", &st) &&
           st == 1,
       "d1 publishes on its own telemetry, by statement 1");
    ok(decide(&f, &d1, POL_PUBLISH, "devices/d1/telemetry", NULL),
       "'#' also matches the parent level after a bound variable");
    ok(!decide(&f, &d1, POL_PUBLISH, "devices/d2/telemetry/temp", NULL),
       "d1 must not publish on d2's telemetry");
    ok(!decide(&f, &d1, POL_PUBLISH, "devices/${device.id}/telemetry/t",
               NULL),
       "the template text itself is not a topic anyone may publish on");
    ok(decide(&f, &d1, POL_SUBSCRIBE, "devices/d1/cmd/+", NULL),
       "d1 subscribes to its own commands");
    ok(!decide(&f, &d1, POL_SUBSCRIBE, "devices/d1/cmd/#", NULL),
       "'cmd/+' does not cover 'cmd/#'");
    ok(!decide(&f, &d1, POL_SUBSCRIBE, "devices/+/cmd/+", NULL),
       "a pattern with d1's id never covers a '+' in its place");
    ok(decide(&f, &d1, POL_RECEIVE, "devices/d1/cmd/reboot", &st) &&
           st == 2,
       "d1 receives its commands, by statement 2");
    ok(decide(&f, &d1, POL_CONNECT, "d1", &st) && st == 0,
       "d1 connects as itself, by statement 0");
    ok(decide(&f, &d1, POL_CONNECT, "d1-backup", NULL),
       "'${device.id}-*' lets d1 connect with a suffix");
    ok(!decide(&f, &d1, POL_CONNECT, "d2", NULL),
       "d1's set does not let d2's id connect");
    ok(!decide(&f, &d1, POL_CONNECT, "d1x", NULL),
       "the glob needs the '-' after the id");
    ok(!decide(&f, NULL, POL_PUBLISH, "devices/d1/telemetry/t", NULL),
       "with no variables a template matches nothing");
    fixture_close(&f);
}

static void test_policy_shared_deny_templates_meet_wildcards(void)
{
    fixture f;
    pol_vars d1 = dev("d1");
    int st = -2;

    if (!ok(fixture_open(&f, fleet), "the fleet policy compiles shared"))
        return;
    ok(!decide(&f, &d1, POL_PUBLISH, "devices/d1/cmd/secret", &st) &&
           st == 3,
       "publishing on its secret command is denied by statement 3");
    fixture_close(&f);

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"#\"]},"
                         "{\"effect\":\"deny\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"x/${device.id}/y\"]}]}"),
            "an allow-all with a templated deny compiles shared"))
        return;
    ok(!decide(&f, &d1, POL_SUBSCRIBE, "x/+/y", &st) && st == 1,
       "a '+' filter intersects the deny once d1 is bound");
    ok(!decide(&f, &d1, POL_SUBSCRIBE, "x/#", &st) && st == 1,
       "a '#' filter intersects the deny below it");
    ok(decide(&f, &d1, POL_SUBSCRIBE, "x/d2/#", NULL),
       "another device's subtree does not meet d1's deny");
    d1.device_id = "a/b";
    ok(decide(&f, &d1, POL_SUBSCRIBE, "x/#", NULL),
       "a hostile id drops the deny: '#' meets no pattern of it");
    d1.device_id = "$x";
    ok(!decide(&f, &d1, POL_SUBSCRIBE, "x/+/y", NULL),
       "the '$' rule is about the first level only");
    fixture_close(&f);

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"#\",\"$x/#\"]},"
                         "{\"effect\":\"deny\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"${device.id}/y\"]}]}"),
            "a deny with a variable in the first level compiles shared"))
        return;
    d1.device_id = "$x";
    ok(decide(&f, &d1, POL_SUBSCRIBE, "+/y", NULL),
       "a first-level '+' does not meet a level expanded to '$x'");
    ok(!decide(&f, &d1, POL_SUBSCRIBE, "$x/y", NULL),
       "the expanded '$x' meets itself");
    fixture_close(&f);
}

static void test_policy_shared_hostile_values_match_nothing(void)
{
    static const char *const bad[] = {"a/b", "+", "#", "", "a\xff", NULL};
    fixture f;
    pol_vars v;
    size_t i;

    if (!ok(fixture_open(&f, fleet), "the fleet policy compiles shared"))
        return;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = dev(bad[i]);
        ok(!decide(&f, &v, POL_PUBLISH, "devices/a/b/telemetry/x", NULL),
           "id \"%s\" cannot add a level", bad[i] ? bad[i] : "(unset)");
        ok(!decide(&f, &v, POL_PUBLISH, "devices/+/telemetry/x", NULL),
           "id \"%s\": a topic with a wildcard is refused",
           bad[i] ? bad[i] : "(unset)");
        ok(!decide(&f, &v, POL_SUBSCRIBE, "devices/+/cmd/+", NULL),
           "id \"%s\" cannot widen the subscription",
           bad[i] ? bad[i] : "(unset)");
        ok(!decide(&f, &v, POL_PUBLISH, "devices//telemetry/x", NULL),
           "id \"%s\" does not turn into an empty level",
           bad[i] ? bad[i] : "(unset)");
    }
    v = dev("x*");
    ok(!decide(&f, &v, POL_CONNECT, "x*", NULL),
       "a '*' in a value is refused in client ids");
    ok(decide(&f, &v, POL_PUBLISH, "devices/x*/telemetry/t", NULL),
       "but is an ordinary character in topics");
    fixture_close(&f);
}

static void test_policy_shared_group_is_the_same_in_every_level(void)
{
    static const char *const groups[] = {"g1", "g2"};
    fixture f;
    pol_vars v = dev("d1");
    int st = -2;

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\","
                         " \"actions\":[\"publish\",\"subscribe\"],"
                         " \"topics\":[\"grp/${group}/x/${group}/#\"]},"
                         "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
                         " \"client_ids\":[\"${group}-${device.id}\"]}]}"),
            "a policy reading ${group} twice compiles shared"))
        return;
    ok(pol_set_uses(f.shared) == (POL_USES_GROUP | POL_USES_DEVICE_ID),
       "the set reads ${group} and ${device.id}");
    v.groups = groups;
    v.group_count = 2;
    ok(decide(&f, &v, POL_PUBLISH, "grp/g1/x/g1/t", &st) && st == 0,
       "g1 in both levels is one of the device's patterns");
    ok(decide(&f, &v, POL_PUBLISH, "grp/g2/x/g2", NULL),
       "so is g2 in both");
    ok(!decide(&f, &v, POL_PUBLISH, "grp/g1/x/g2/t", NULL),
       "g1 then g2 is no pattern of the device: one group per pattern");
    ok(decide(&f, &v, POL_SUBSCRIBE, "grp/g2/x/g2/+", NULL),
       "subscribe under one group is covered");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "grp/+/x/g1/#", NULL),
       "a '+' in place of the group is not covered");
    ok(decide(&f, &v, POL_CONNECT, "g2-d1", NULL),
       "connect with a group-prefixed id");
    ok(!decide(&f, &v, POL_CONNECT, "g3-d1", NULL),
       "a group the device is not in does not connect");
    v.group_count = 0;
    ok(!decide(&f, &v, POL_PUBLISH, "grp/g1/x/g1/t", NULL),
       "a device in no group has no ${group} pattern");
    fixture_close(&f);

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"#\"]},"
                         "{\"effect\":\"deny\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"q/${group}/r/${group}\"]}]}"),
            "a deny reading ${group} twice compiles shared"))
        return;
    v.group_count = 2;
    ok(decide(&f, &v, POL_SUBSCRIBE, "q/+/r/g3", NULL),
       "'+' meets g1 and g2 below, but neither ends in g3");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "q/+/r/g2", NULL),
       "'+' takes g2, and the deny's second level is g2 too");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "q/#", NULL),
       "'#' meets the deny under every group");
    fixture_close(&f);
}

static void test_policy_shared_child_is_looked_up_one_per_pattern(void)
{
    /* Sorted by strcmp, as pol_vars requires; two are hostile. */
    static const char *const kids[] = {"a/b", "c*", "c1", "c2", "c3"};
    static const char *const groups[] = {"a", "ab"};
    static const char *const odd[] = {"bc", "c"};
    fixture f;
    pol_vars v = dev("gw1");
    int st = -2;

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"deny\",\"actions\":[\"publish\"],"
                         " \"topics\":[\"devices/${child.id}/secret\"]},"
                         "{\"effect\":\"allow\","
                         " \"actions\":[\"publish\",\"subscribe\"],"
                         " \"topics\":[\"devices/${child.id}/telemetry/#\","
                         "  \"pair/${child.id}/x/${child.id}\","
                         "  \"mix/${group}${child.id}/${child.id}\"]},"
                         "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
                         " \"client_ids\":[\"gw-${child.id}\","
                         "  \"${child.id}-*\"]},"
                         "{\"effect\":\"deny\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"devices/${child.id}/cmd\"]},"
                         "{\"effect\":\"allow\",\"actions\":[\"subscribe\"],"
                         " \"topics\":[\"devices/+/cmd\","
                         "  \"devices/+/other\"]}]}"),
            "a gateway policy reading ${child.id} compiles shared"))
        return;
    ok(pol_set_uses(f.shared) == (POL_USES_CHILD | POL_USES_GROUP),
       "the set reads ${child.id} and ${group}");
    v.children = kids;
    v.child_count = 5;
    ok(decide(&f, &v, POL_PUBLISH, "devices/c2/telemetry/t", &st) && st == 1,
       "a child's telemetry is allowed by the statement that names it");
    ok(!decide(&f, &v, POL_PUBLISH, "devices/c4/telemetry/t", NULL),
       "an id that is no child of the gateway is not");
    ok(!decide(&f, &v, POL_PUBLISH, "devices/c/telemetry/t", NULL),
       "nor a prefix of a child's id");
    ok(!decide(&f, &v, POL_PUBLISH, "devices/c2/secret", &st) && st == 0,
       "the deny naming the child wins");
    ok(!decide(&f, &v, POL_PUBLISH, "devices/a/telemetry/t", NULL) &&
           !decide(&f, &v, POL_PUBLISH, "devices/b/telemetry/t", NULL),
       "a child id with '/' injects no level: it matches nothing");
    ok(decide(&f, &v, POL_PUBLISH, "devices/c*/telemetry/t", NULL),
       "'*' is an ordinary character in a topic");
    ok(decide(&f, &v, POL_PUBLISH, "pair/c3/x/c3", NULL),
       "the same child in both levels is one pattern");
    ok(!decide(&f, &v, POL_PUBLISH, "pair/c3/x/c1", NULL),
       "two children in one pattern are not");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "devices/+/telemetry/#", NULL),
       "a '+' for the child is covered by no one child's pattern");
    ok(decide(&f, &v, POL_SUBSCRIBE, "devices/c1/telemetry/#", NULL),
       "one child's subtree is");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "devices/+/cmd", &st) && st == 3,
       "a '+' meets the deny of some child");
    ok(decide(&f, &v, POL_SUBSCRIBE, "devices/+/other", NULL),
       "but not where no child's deny reaches");
    ok(decide(&f, &v, POL_CONNECT, "gw-c2", NULL),
       "connect as a child through the exact id");
    ok(!decide(&f, &v, POL_CONNECT, "gw-c4", NULL) &&
           !decide(&f, &v, POL_CONNECT, "gw-", NULL) &&
           !decide(&f, &v, POL_CONNECT, "gw-c", NULL),
       "not as a stranger, nobody or a prefix of a child");
    ok(!decide(&f, &v, POL_CONNECT, "gw-c*", NULL) &&
           !decide(&f, &v, POL_CONNECT, "c*-x", NULL),
       "a child id with '*' gives no client id pattern");
    ok(decide(&f, &v, POL_CONNECT, "c3-anything", NULL),
       "a glob with the child tries each child");
    v.groups = groups;
    v.group_count = 2;
    v.children = odd;
    v.child_count = 2;
    ok(decide(&f, &v, POL_PUBLISH, "mix/abc/bc", NULL) &&
           decide(&f, &v, POL_PUBLISH, "mix/abc/c", NULL),
       "\"abc\" is a+bc and ab+c: both bindings are followed");
    ok(!decide(&f, &v, POL_PUBLISH, "mix/abc/x", NULL),
       "and neither gives x");
    v.child_count = 0;
    ok(!decide(&f, &v, POL_PUBLISH, "devices/c1/telemetry/t", NULL) &&
           decide(&f, &v, POL_SUBSCRIBE, "devices/+/cmd", NULL),
       "a gateway with no children has no ${child.id} pattern");
    fixture_close(&f);

    /* A '+' meeting a deny's child level: a child whose pattern is too
     * long to exist must not hide a later child whose pattern does. */
    {
        enum { LONG = POL_TOPIC_MAX - 4 };
        const char *pair[2];
        char *big = malloc(LONG + 1);

        if (!ok(big != NULL &&
                    fixture_open(&f,
                                 "{\"statements\":["
                                 "{\"effect\":\"deny\","
                                 " \"actions\":[\"subscribe\"],"
                                 " \"topics\":[\"d/${child.id}/x/y\"]},"
                                 "{\"effect\":\"allow\","
                                 " \"actions\":[\"subscribe\"],"
                                 " \"topics\":[\"#\"]}]}"),
                "a deny reading ${child.id} compiles shared")) {
            free(big);
            return;
        }
        memset(big, 'A', LONG);
        big[LONG] = '\0';
        pair[0] = big; /* "A..." sorts before "b" */
        pair[1] = "b";
        v = dev("gw1");
        v.children = pair;
        v.child_count = 2;
        ok(!decide(&f, &v, POL_SUBSCRIBE, "d/+/x/y", &st) && st == 0,
           "the long child's pattern is dropped, b's still denies");
        v.child_count = 1;
        ok(decide(&f, &v, POL_SUBSCRIBE, "d/+/x/y", NULL),
           "with the long child alone nothing is denied");
        fixture_close(&f);
        free(big);
    }
}

static void test_policy_shared_attributes_and_escape(void)
{
    fixture f;
    pol_vars v = dev("d1");
    json_t *attrs = json_pack("{s:s,s:s,s:i}", "site", "s1", "bad", "a/b",
                              "num", 3);

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
                         " \"topics\":[\"sites/${device.attributes.site}/+\","
                         " \"b/${device.attributes.bad}\","
                         " \"n/${device.attributes.num}\","
                         " \"m/${device.attributes.missing}\","
                         " \"${$}{device.id}/${device.id}\","
                         " \"${$}share\"]}]}"),
            "a policy with attributes and the ${$} escape compiles shared"))
        goto out;
    ok(pol_set_uses(f.shared) == (POL_USES_ATTRIBUTES | POL_USES_DEVICE_ID),
       "attributes and the id are read; the ${$} escape is no variable");
    v.attributes = attrs;
    ok(decide(&f, &v, POL_PUBLISH, "sites/s1/x", NULL),
       "a string attribute is substituted");
    ok(!decide(&f, &v, POL_PUBLISH, "sites/s2/x", NULL),
       "another site is not the device's");
    ok(!decide(&f, &v, POL_PUBLISH, "b/a/b", NULL),
       "a hostile attribute cannot add a level");
    ok(!decide(&f, &v, POL_PUBLISH, "n/3", NULL),
       "a number attribute reads as unset");
    ok(!decide(&f, &v, POL_PUBLISH, "m/x", NULL),
       "a missing attribute reads as unset");
    ok(decide(&f, &v, POL_PUBLISH, "${device.id}/d1", NULL),
       "'${$}' is a literal '$', never expanded");
    ok(decide(&f, &v, POL_PUBLISH, "$share", NULL),
       "'${$}share' is the literal one-level topic '$share'");
    fixture_close(&f);

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"publish\","
                         " \"subscribe\"], \"topics\":[\"${device.id}\","
                         " \"${device.id}/#\"]}]}"),
            "a first-level variable compiles shared"))
        goto out;
    v = dev("$share");
    ok(decide(&f, &v, POL_PUBLISH, "$share", NULL),
       "an id of '$share' still makes the one-level pattern '$share'");
    ok(!decide(&f, &v, POL_PUBLISH, "$share/x", NULL),
       "but '$share/#' is dropped: a policy never names a shared filter");
    ok(decide(&f, &v, POL_SUBSCRIBE, "$share/g/$share", NULL),
       "a shared subscription to '$share' is covered by the one-level one");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "$share/g/$share/#", NULL),
       "'$share/#' is not covered by '$share' alone");
    fixture_close(&f);
out:
    json_decref(attrs);
}

static void test_policy_shared_on_bound_sets_and_exports(void)
{
    fixture f;
    pol_vars v = dev("d1");
    pol_source src;
    pol_set *bound = NULL;
    json_t *exp;
    char err[256];

    if (!ok(fixture_open(&f, fleet), "the fleet policy compiles shared"))
        return;
    src.name = "p";
    src.doc = f.doc;
    ok(pol_compile(&src, 1, &v, &bound, err, sizeof(err)) == AD_OK,
       "the same policy compiles for d1");
    ok(pol_decide_bound(bound, NULL, POL_PUBLISH,
                        "devices/d1/telemetry/x").allow,
       "a bound set needs no variables");
    v.device_id = "d2";
    ok(pol_decide_bound(bound, &v, POL_PUBLISH,
                        "devices/d1/telemetry/x").allow,
       "and ignores the ones given: it has none left");
    ok(pol_set_uses(bound) == 0, "a bound set reads no variables");
    exp = pol_set_statements(f.shared);
    ok(exp != NULL && json_array_size(exp) == 1,
       "a shared set exports only the patterns without variables");
    json_decref(exp);
    ok(!pol_decide_filter(f.shared, POL_PUBLISH,
                          "devices/d1/telemetry/#").allow,
       "on a shared set, pol_decide_filter treats templates as matching "
       "nothing");
    pol_set_free(bound);
    fixture_close(&f);
}

/* The expanded pattern must be valid UTF-8 of at most POL_TOPIC_MAX
 * bytes, however it is reached: by a topic (where '+' may stand for an
 * empty level, shorter than itself), a '+' or '#' in a filter, or a
 * client id glob. */
static void test_policy_shared_limits_and_utf8(void)
{
    enum { MAXLEN = POL_TOPIC_MAX };
    char *id = malloc(MAXLEN + 1), *subj = malloc(MAXLEN + 8);
    json_t *attrs = NULL;
    fixture f;
    pol_vars v;
    int st = -2;

    if (!ok(id != NULL && subj != NULL, "buffers allocated"))
        goto out;
    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
                         " \"topics\":[\"x${device.id}/#\"]},"
                         "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
                         " \"topics\":[\"${device.id}/+\"]},"
                         "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
                         " \"client_ids\":[\"${device.id}*\"]}]}"),
            "a policy for the length limits compiles shared"))
        goto out;
    memset(id, 'L', MAXLEN);
    v = dev(id);
    id[MAXLEN - 3] = '\0';
    snprintf(subj, MAXLEN + 8, "x%s", id);
    ok(decide(&f, &v, POL_PUBLISH, subj, &st) && st == 0,
       "'x<id>/#' of exactly POL_TOPIC_MAX bytes matches 'x<id>'");
    id[MAXLEN - 3] = 'L';
    id[MAXLEN - 2] = '\0';
    snprintf(subj, MAXLEN + 8, "x%s", id);
    ok(!decide(&f, &v, POL_PUBLISH, subj, NULL),
       "one byte more and 'x<id>/#' is too long: it matches nothing");
    id[MAXLEN - 2] = 'L';
    id[MAXLEN - 1] = '\0';
    snprintf(subj, MAXLEN + 8, "%s/", id);
    ok(!decide(&f, &v, POL_PUBLISH, subj, NULL),
       "'<id>/+' is one byte longer than the topic '<id>/' it would "
       "match, and too long");
    ok(decide(&f, &v, POL_CONNECT, id, NULL),
       "'<id>*' of POL_TOPIC_MAX bytes accepts the id itself");
    id[MAXLEN - 1] = 'L';
    id[MAXLEN] = '\0';
    ok(!decide(&f, &v, POL_CONNECT, id, NULL),
       "'<id>*' of POL_TOPIC_MAX + 1 bytes is dropped");
    fixture_close(&f);

    if (!ok(fixture_open(&f,
                         "{\"statements\":["
                         "{\"effect\":\"allow\",\"actions\":[\"subscribe\","
                         " \"connect\"], \"topics\":[\"#\"],"
                         " \"client_ids\":[\"*\"]},"
                         "{\"effect\":\"deny\",\"actions\":[\"subscribe\","
                         " \"connect\"],"
                         " \"topics\":[\"j/${device.id}${device.attributes.k}\"],"
                         " \"client_ids\":[\"${device.id}*\"]}]}"),
            "a deny joining two values compiles shared"))
        goto out;
    /* jansson refuses invalid UTF-8 unless told not to check. */
    attrs = json_object();
    json_object_set_new(attrs, "k", json_string_nocheck("\xa9"));
    v = dev("\xc3");
    v.attributes = attrs;
    ok(!decide(&f, &v, POL_SUBSCRIBE, "j/+", &st) && st == 1,
       "two halves of one UTF-8 character join into a valid level that "
       "'+' meets");
    ok(!decide(&f, &v, POL_SUBSCRIBE, "j/#", NULL),
       "and that '#' meets");
    json_object_set_new(attrs, "k", json_string("x"));
    ok(decide(&f, &v, POL_SUBSCRIBE, "j/+", NULL),
       "a half character next to text is invalid: the deny is dropped");
    ok(decide(&f, &v, POL_CONNECT, "\xc3\xa9", NULL),
       "a glob ending inside a character of the id is invalid UTF-8 and "
       "dropped");
    fixture_close(&f);
out:
    json_decref(attrs);
    free(id);
    free(subj);
}

/* ---- the random differential ---------------------------------------- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return n ? (uint32_t)(z % n) : 0;
}

#define PICK(a) ((a)[rnd(sizeof(a) / sizeof((a)[0]))])

enum { LONG_LEN = 65531 };
static char *long_a, *long_b; /* values near the length limit */

static const char *const lit_levels[] = {
    "a", "b", "", "$x", "$SYS", "\xc3\xa9", "$share", "d1", "x*", "g1",
    "${$}", "${$}share", "${$}{group}"};
static const char *const tmpl_levels[] = {
    "${device.id}", "${group}", "${device.attributes.k}", "p${device.id}",
    "${group}-${device.id}", "${client_id}", "${username}", "${cert.cn}",
    "${group}${group}", "${device.id}${device.attributes.k}",
    "${device.attributes.j}", "$${device.id}", "${$}${device.id}",
    "${child.id}", "${child.id}", "c-${child.id}", "${child.id}-x",
    "${group}${child.id}", "${child.id}${device.id}", "${$}${child.id}",
    "${child.id}${child.id}"};
static const char *const cid_pats[] = {
    "${device.id}", "${device.id}-*", "${group}*", "c1", "c*", "*",
    "${$}x", "${device.attributes.k}", "${username}${device.id}",
    "${device.id}${device.attributes.k}*", "${group}-${device.id}",
    "${client_id}", "${child.id}", "gw-${child.id}", "${child.id}-*",
    "${group}-${child.id}", "${child.id}${device.attributes.k}",
    "${$}${child.id}", "${child.id}${child.id}*"};
/* Values: ordinary, hostile, empty, UTF-8 halves that only join into a
 * character side by side, '$' starts, and lengths near the limit. */
static const char *values[] = {
    "d1", "d2", "a", "g1", "g2", "a/b", "+", "#", "", "\xc3\xa9", "\xc3",
    "\xa9", "$share", "$x", "x*", "${device.id}", "b", "$SYS", NULL, NULL,
    "c1", "long_a", "long_b"};

static const char *val(void)
{
    const char *v = PICK(values);

    if (v != NULL && strcmp(v, "long_a") == 0)
        return rnd(16) == 0 ? long_a : "a";
    if (v != NULL && strcmp(v, "long_b") == 0)
        return rnd(16) == 0 ? long_b : "b";
    return v;
}

static json_t *rand_topic(void)
{
    char buf[256];
    size_t o = 0;
    int lv = 1 + (int)rnd(4), i;

    for (i = 0; i < lv; i++) {
        const char *l;
        uint32_t k = rnd(10);

        if (k < 3)
            l = PICK(lit_levels);
        else if (k < 4)
            l = "+";
        else if (k < 5 && i == lv - 1)
            l = "#";
        else
            l = PICK(tmpl_levels);
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s",
                              i ? "/" : "", l);
    }
    return json_string(buf);
}

static json_t *rand_doc(void)
{
    static const char *const acts[] = {"connect", "publish", "subscribe",
                                       "receive"};
    json_t *sts = json_array();
    int ns = 1 + (int)rnd(5), s, k;

    for (s = 0; s < ns; s++) {
        json_t *st = json_object(), *a = json_array(), *t;
        unsigned mask = 1 + rnd(15);

        json_object_set_new(st, "effect",
                            json_string(rnd(3) ? "allow" : "deny"));
        for (k = 0; k < 4; k++)
            if (mask & (1u << k))
                json_array_append_new(a, json_string(acts[k]));
        json_object_set_new(st, "actions", a);
        if (mask & 14u) {
            t = json_array();
            for (k = 1 + (int)rnd(3); k > 0; k--)
                json_array_append_new(t, rand_topic());
            json_object_set_new(st, "topics", t);
        }
        if (mask & 1u) {
            t = json_array();
            for (k = 1 + (int)rnd(3); k > 0; k--)
                json_array_append_new(t, json_string(PICK(cid_pats)));
            json_object_set_new(st, "client_ids", t);
        }
        json_array_append_new(sts, st);
    }
    return json_pack("{s:o}", "statements", sts);
}

enum { KIDS_MAX = 24 };

typedef struct {
    pol_vars v;
    const char *groups[3];
    const char *children[KIDS_MAX];
    json_t *attrs;
} rvars;

static int strcmp_p(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A gateway's children: none, a few values (hostile ones included), or
 * now and then many, sorted by strcmp without duplicates as pol_vars
 * requires. */
static void rand_children(rvars *r)
{
    static const char *const many[] = {
        "c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08",
        "c09", "c1", "c10", "c11", "c12", "c2", "d1", "g1"};
    size_t n = 0, i, o = 0;
    uint32_t k = rnd(8);

    if (k == 0) {
        for (i = 0; i < sizeof(many) / sizeof(many[0]); i++)
            if (rnd(3))
                r->children[n++] = many[i];
    }
    for (i = k == 0 ? 2 : k < 4 ? k : 0; i > 0; i--) {
        const char *c = val();

        if (c != NULL && n < KIDS_MAX)
            r->children[n++] = c;
    }
    qsort(r->children, n, sizeof(r->children[0]), strcmp_p);
    for (i = 0; i < n; i++)
        if (o == 0 || strcmp(r->children[o - 1], r->children[i]) != 0)
            r->children[o++] = r->children[i];
    r->v.children = r->children;
    r->v.child_count = o;
}

static void rand_vars(rvars *r)
{
    size_t g;

    memset(r, 0, sizeof(*r));
    r->v.device_id = val();
    r->v.client_id = val();
    r->v.username = val();
    r->v.cert_cn = val();
    r->attrs = json_object();
    if (rnd(4)) {
        const char *k = val();

        json_object_set_new(r->attrs, "k", json_string_nocheck(k ? k : ""));
    }
    if (rnd(4) == 0)
        json_object_set_new(r->attrs, "j", json_stringn_nocheck("x\0y", 3));
    else if (rnd(3) == 0)
        json_object_set_new(r->attrs, "j", json_integer(7));
    r->v.attributes = rnd(8) ? r->attrs : NULL;
    r->v.group_count = rnd(4);
    for (g = 0; g < r->v.group_count; g++)
        r->groups[g] = val();
    r->v.groups = r->groups;
    rand_children(r);
}

static const char *rand_child(const rvars *r)
{
    const char *c = r->v.child_count
                        ? r->children[rnd((uint32_t)r->v.child_count)]
                        : NULL;

    return c ? c : "c1";
}

/* A level for a subject: often a value of these variables, so that the
 * templates have something to match. */
static const char *subject_level(const rvars *r, int wild, int last)
{
    static const char *const lits[] = {"a", "b", "", "$x", "$SYS",
                                       "\xc3\xa9", "$share", "d1", "x*",
                                       "g1", "p", "pd1", "$d1", "g1-d1",
                                       "g1g1", "c1", "${device.id}", "c-c1",
                                       "c1-x", "g1c1", "c1c1", "c1d1",
                                       "c0", "c10"};
    static char buf[4][64];
    static unsigned turn;
    uint32_t k = rnd(15);

    if (wild && k == 0)
        return "+";
    if (wild && k == 1 && last)
        return "#";
    if (k < 6)
        return PICK(lits);
    switch (k) {
    case 6: return r->v.device_id ? r->v.device_id : "d1";
    case 7: {
        const char *g = r->v.group_count
                            ? r->groups[rnd((uint32_t)r->v.group_count)]
                            : NULL;
        return g ? g : "g1";
    }
    case 8: return r->v.username ? r->v.username : "u";
    case 9: return r->v.client_id ? r->v.client_id : "c1";
    case 10:
    case 11: return rand_child(r);
    case 12: {
        /* A child with a template's text around it, or cut short. */
        static const char *const fmt[] = {"c-%.40s", "%.40s-x", "%.40sd1",
                                          "g1%.40s", "%.3s", "$%.40s"};
        char *b = buf[turn++ % 4];

        snprintf(b, sizeof(buf[0]), PICK(fmt), rand_child(r));
        return b;
    }
    default: {
        const char *g = r->v.group_count ? r->groups[0] : NULL;
        char *b = buf[turn++ % 4];

        snprintf(b, sizeof(buf[0]), "%.30s%.30s", g ? g : "g1",
                 rand_child(r));
        return b;
    }
    }
}

static char subject_buf[4 * (LONG_LEN + 16)];

static char *rand_subject(const rvars *r, pol_action a)
{
    size_t cap = sizeof(subject_buf), o = 0;
    char *s = subject_buf;
    int lv = 1 + (int)rnd(5), i, wild = a == POL_SUBSCRIBE;

    s[0] = '\0';
    if (a == POL_CONNECT) {
        const char *base = subject_level(r, 0, 1);
        const char *suf = rnd(2) ? "" : rnd(2) ? "-x" : "\xc3\xa9";

        if (rnd(3) == 0 && r->v.group_count && r->groups[0] != NULL)
            snprintf(s, cap, "%s-%s", r->groups[0],
                     rnd(2) ? rand_child(r)
                     : r->v.device_id ? r->v.device_id : "");
        else if (rnd(3) == 0)
            snprintf(s, cap, "%s%s%s", rnd(2) ? "gw-" : "", rand_child(r),
                     suf);
        else
            snprintf(s, cap, "%s%s", base, suf);
        return s;
    }
    if (wild && rnd(8) == 0)
        o += (size_t)snprintf(s, cap, "$share/q/");
    for (i = 0; i < lv; i++) {
        const char *l = subject_level(r, wild, i == lv - 1);

        /* A first level from the id meets first-level templates, where
         * the '$' and "$share" rules live. */
        if (i == 0 && rnd(4) == 0 && r->v.device_id != NULL)
            l = r->v.device_id;

        if (o + strlen(l) + 2 >= cap)
            break;
        o += (size_t)snprintf(s + o, cap - o, "%s%s", i ? "/" : "", l);
        if (l[0] == '#')
            break;
    }
    return s;
}

static long diff_docs, diff_skipped, diff_decisions, diff_failures;
static long diff_allowed, diff_denied; /* by a statement, not by default */
static long diff_exports;
static long diff_child_mattered; /* a decision the children changed */

static void differential_one(json_t *doc)
{
    pol_source src = {"rnd", doc};
    pol_set *shared = NULL, *bound = NULL, *none = NULL;
    char err[256];
    int vi, si;
    unsigned a;

    if (pol_doc_validate(doc, err, sizeof(err)) != AD_OK) {
        diff_skipped++;
        return;
    }
    if (pol_compile_shared(&src, 1, &shared, err, sizeof(err)) != AD_OK ||
        pol_compile(&src, 1, NULL, &none, err, sizeof(err)) != AD_OK) {
        diff_failures++;
        goto out;
    }
    diff_docs++;
    for (vi = 0; vi < 4; vi++) {
        rvars r;

        rand_vars(&r);
        if (pol_compile(&src, 1, &r.v, &bound, err, sizeof(err)) != AD_OK) {
            diff_failures++;
            json_decref(r.attrs);
            continue;
        }
        {
            /* What a broker gets on connect: the export without tries
             * equals the export of the compiled set. */
            json_t *full = pol_set_statements(bound),
                   *light = pol_statements_bound(&src, 1, &r.v);

            diff_exports++;
            if ((full == NULL || light == NULL || !json_equal(full, light)) &&
                diff_failures++ < 5)
                tap_diag("statements differ from the compiled set's");
            json_decref(full);
            json_decref(light);
        }
        for (si = 0; si < 24; si++) {
            for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1) {
                char *subj = rand_subject(&r, (pol_action)a);
                pol_decision s, b;

                s = pol_decide_bound(shared, &r.v, (pol_action)a, subj);
                b = pol_decide(bound, (pol_action)a, subj);
                diff_decisions++;
                if (r.v.child_count > 0) {
                    pol_vars orphan = r.v;

                    orphan.child_count = 0;
                    diff_child_mattered +=
                        !same(b, pol_decide_bound(shared, &orphan,
                                                  (pol_action)a, subj));
                }
                diff_allowed += b.allow;
                diff_denied += !b.allow && b.statement >= 0;
                if (!same(s, b) && diff_failures++ < 5) {
                    char *text = json_dumps(doc, JSON_COMPACT);

                    tap_diag("differ: %s \"%.80s\" doc %s",
                             pol_action_name((pol_action)a), subj, text);
                    tap_diag("  vars id=%.20s cid=%.20s user=%.20s cn=%.20s "
                             "groups=%zu [%.20s %.20s %.20s] children=%zu "
                             "[%.20s %.20s]",
                             r.v.device_id ? r.v.device_id : "(null)",
                             r.v.client_id ? r.v.client_id : "(null)",
                             r.v.username ? r.v.username : "(null)",
                             r.v.cert_cn ? r.v.cert_cn : "(null)",
                             r.v.group_count,
                             r.v.group_count > 0 && r.groups[0] ? r.groups[0] : "-",
                             r.v.group_count > 1 && r.groups[1] ? r.groups[1] : "-",
                             r.v.group_count > 2 && r.groups[2] ? r.groups[2] : "-",
                             r.v.child_count,
                             r.v.child_count > 0 ? r.children[0] : "-",
                             r.v.child_count > 1 ? r.children[1] : "-");
                    show("shared", s);
                    show("device", b);
                    free(text);
                }
                /* With no variables the shared set is the set compiled
                 * with none. */
                if (!same(pol_decide(shared, (pol_action)a, subj),
                           pol_decide(none, (pol_action)a, subj)) &&
                    diff_failures++ < 5)
                    tap_diag("differ with no variables: %s \"%.80s\"",
                             pol_action_name((pol_action)a), subj);
            }
        }
        pol_set_free(bound);
        bound = NULL;
        json_decref(r.attrs);
    }
out:
    pol_set_free(shared);
    pol_set_free(none);
}

static void test_policy_shared_random_differential(void)
{
    int i;
    const char *seed_env = getenv("POLICY_SHARED_SEED");

    rng_state = seed_env ? strtoull(seed_env, NULL, 10) : 20240601u;
    long_a = malloc(LONG_LEN + 1);
    long_b = malloc(LONG_LEN + 3);
    if (!ok(long_a != NULL && long_b != NULL, "long values allocated"))
        goto out;
    memset(long_a, 'L', LONG_LEN);
    long_a[LONG_LEN] = '\0';
    memset(long_b, 'M', LONG_LEN + 2);
    long_b[LONG_LEN + 2] = '\0';
    for (i = 0; i < 3000; i++) {
        json_t *doc = rand_doc();

        differential_one(doc);
        json_decref(doc);
    }
    tap_diag("differential: %ld documents (%ld refused by validation), "
             "%ld decisions, %ld allowed, %ld denied by a statement, "
             "%ld exports, %ld decided otherwise without the children",
             diff_docs, diff_skipped, diff_decisions, diff_allowed,
             diff_denied, diff_exports, diff_child_mattered);
    ok(diff_docs >= 2000 && diff_decisions >= 500000 &&
           diff_allowed >= diff_decisions / 50 &&
           diff_denied >= diff_decisions / 50 &&
           diff_child_mattered >= diff_decisions / 400,
       "enough random documents and decisions were compared");
    ok(diff_failures == 0,
       "pol_decide_bound on the shared set equals pol_decide on the "
       "device's set in every field (%ld differences)", diff_failures);
out:
    free(long_a);
    free(long_b);
}

int main(void)
{
    TAP_RUN(test_policy_shared_fleet_device_owns_its_topics);
    TAP_RUN(test_policy_shared_deny_templates_meet_wildcards);
    TAP_RUN(test_policy_shared_hostile_values_match_nothing);
    TAP_RUN(test_policy_shared_group_is_the_same_in_every_level);
    TAP_RUN(test_policy_shared_child_is_looked_up_one_per_pattern);
    TAP_RUN(test_policy_shared_attributes_and_escape);
    TAP_RUN(test_policy_shared_on_bound_sets_and_exports);
    TAP_RUN(test_policy_shared_limits_and_utf8);
    TAP_RUN(test_policy_shared_random_differential);
    return tap_done();
}
