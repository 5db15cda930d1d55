/* Unit tests of the check path's caches (authd/checker.c, devcache.c,
 * identity.c) against a real store: the one invalidation rule — a race
 * hook runs between a reader's store read and its cache insert, so a
 * revocation, suspension or policy change that commits exactly there
 * (the window in which a certificate was seen to stay cached as valid
 * until restart) is reproduced on every run — and a fleet that shares
 * one compiled policy set in a bounded, fixed-size-per-device cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../authd/checker.h"
#include "../../authd/registry_devices.h"
#include "../../authd/store.h"
#include "../../authd/util.h"
#include "tap.h"

#define SERIAL "0a0b0c0d"
#define FPR "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define DEVICE "dev-1"

static char dir[256];

struct rec_write {
    store_table table;
    const char *key;
    json_t *val;
    const char *fpr; /* also index the certificate by fingerprint */
};

static ad_err rec_put(store_txn *tx, void *arg)
{
    struct rec_write *w = arg;
    ad_err e = store_put(tx, w->table, w->key, w->val, 0);

    if (e == AD_OK && w->fpr)
        e = store_index_add(tx, STORE_IX_CERTS_BY_FPR, w->fpr, w->key);
    return e;
}

static int put(store *st, store_table t, const char *key, json_t *val,
               const char *fpr)
{
    struct rec_write w = {t, key, val, fpr};
    ad_err e = store_write(st, rec_put, &w);

    json_decref(val);
    return e == AD_OK;
}

static json_t *cert_record(const char *status)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "serial", SERIAL,
                     "fingerprint", FPR, "device_id", DEVICE, "not_after",
                     "2099-01-01T00:00:00Z", "status", status);
}

static json_t *device_record(const char *status)
{
    return json_pack("{s:s, s:s, s:[s], s:[], s:{}, s:s}", "id", DEVICE,
                     "status", status, "policies", "p", "groups",
                     "attributes", "incarnation", "0123456789abcdef");
}

static store *setup(void)
{
    store *st = NULL;
    char err[256] = "";
    json_t *doc = json_pack(
        "{s:[{s:s, s:[s], s:[s]}, {s:s, s:[s], s:[s]}]}", "statements",
        "effect", "allow", "actions", "connect", "client_ids", "*",
        "effect", "allow", "actions", "publish", "topics", "t/#");

    snprintf(dir, sizeof(dir), "/tmp/authd-test-checker-XXXXXX");
    if (mkdtemp(dir) == NULL || store_open(dir, 64, &st, err, sizeof(err)) != AD_OK) {
        tap_diag("store: %s", err);
        return NULL;
    }
    if (!put(st, STORE_POLICIES, "p", json_pack("{s:s, s:o}", "name", "p",
                                                 "document", doc), NULL) ||
        !put(st, STORE_DEVICES, DEVICE, device_record("active"), NULL) ||
        !put(st, STORE_CERTS, SERIAL, cert_record("valid"), FPR)) {
        store_close(st);
        return NULL;
    }
    return st;
}

static void teardown(store *st)
{
    char cmd[300];

    store_close(st);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
}

static void connect_by(checker *c, const char *serial, const char *fpr,
                       check_result *res)
{
    check_request req;

    memset(&req, 0, sizeof(req));
    req.action = POL_CONNECT;
    req.client_id = DEVICE;
    req.cert_serial = serial;
    req.cert_fingerprint = fpr;
    checker_check(c, &req, time(NULL), res);
}

/* What the race hook does, once: a write committed and invalidated
 * between the reader's store read and its insert. */
struct race {
    checker *c;
    store *st;
    int fired;
    int kind; /* 0 revoke the certificate, 1 suspend the device,
               * 2 make the policy deny what it allowed */
};

static void race_hook(void *arg)
{
    struct race *r = arg;

    if (r->fired++)
        return;
    if (r->kind == 0) {
        put(r->st, STORE_CERTS, SERIAL, cert_record("revoked"), NULL);
        checker_forget_cert(r->c, SERIAL, FPR);
    } else if (r->kind == 1) {
        put(r->st, STORE_DEVICES, DEVICE, device_record("suspended"), NULL);
        checker_forget_device(r->c, DEVICE);
    } else {
        json_t *doc = json_pack("{s:[{s:s, s:[s], s:[s]}]}", "statements",
                                "effect", "deny", "actions", "connect",
                                "client_ids", "*");

        put(r->st, STORE_POLICIES, "p",
            json_pack("{s:s, s:o}", "name", "p", "document", doc), NULL);
        checker_forget_policies(r->c);
    }
}

static void test_a_certificate_revoked_while_it_is_first_read_is_never_cached_as_valid(void)
{
    store *st = setup();
    checker *c = NULL;
    struct race r = {NULL, st, 0, 0};
    check_result res;
    int revoked = 0, reason = 0;
    int64_t at = 0;

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK, "a checker over a store");
    if (c == NULL)
        return;
    r.c = c;
    checker_set_race_hook(c, race_hook, &r);
    connect_by(c, SERIAL, NULL, &res);
    ok(r.fired >= 1, "the revocation committed between the read and the insert");
    ok(!res.allow, "the racing check itself does not answer from the stale read (%s)",
       res.reason);
    check_result_clear(&res);
    checker_set_race_hook(c, NULL, NULL);

    connect_by(c, SERIAL, NULL, &res);
    ok(!res.allow && strcmp(res.reason, "certificate_revoked") == 0,
       "the next check by serial sees the revocation, not a cached 'valid' (%s)",
       res.reason);
    check_result_clear(&res);
    connect_by(c, NULL, FPR, &res);
    ok(!res.allow && strcmp(res.reason, "certificate_revoked") == 0,
       "and so does a check by fingerprint (%s)", res.reason);
    check_result_clear(&res);
    ok(checker_cert_status(c, SERIAL, &revoked, &at, &reason) == AD_OK && revoked,
       "OCSP's status lookup says revoked, not good");
    checker_close(c);
    teardown(st);
}

static void test_a_fingerprint_lookup_racing_a_revocation_is_not_cached(void)
{
    store *st = setup();
    checker *c = NULL;
    struct race r = {NULL, st, 0, 0};
    check_result res;

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK, "a checker over a store");
    if (c == NULL)
        return;
    r.c = c;
    checker_set_race_hook(c, race_hook, &r);
    connect_by(c, NULL, FPR, &res);
    check_result_clear(&res);
    checker_set_race_hook(c, NULL, NULL);
    connect_by(c, NULL, FPR, &res);
    ok(!res.allow && strcmp(res.reason, "certificate_revoked") == 0,
       "the fingerprint key obeys the same rule (%s)", res.reason);
    check_result_clear(&res);
    checker_close(c);
    teardown(st);
}

static void test_a_device_suspended_while_it_is_first_read_is_never_cached_as_active(void)
{
    store *st = setup();
    checker *c = NULL;
    struct race r = {NULL, st, 0, 1};
    check_result res;

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK, "a checker over a store");
    if (c == NULL)
        return;
    /* The certificate is cached first, so the hook fires on the
     * device's load. */
    connect_by(c, SERIAL, NULL, &res);
    ok(res.allow, "the device connects while active (%s)", res.reason);
    check_result_clear(&res);
    checker_forget_device(c, DEVICE);
    r.c = c;
    checker_set_race_hook(c, race_hook, &r);
    connect_by(c, SERIAL, NULL, &res);
    ok(r.fired >= 1, "the suspension committed between the read and the insert");
    check_result_clear(&res);
    checker_set_race_hook(c, NULL, NULL);
    connect_by(c, SERIAL, NULL, &res);
    ok(!res.allow && strcmp(res.reason, "device_suspended") == 0,
       "the next check sees the suspension, not a cached 'active' (%s)",
       res.reason);
    check_result_clear(&res);
    checker_close(c);
    teardown(st);
}

static void test_a_grant_after_a_suspension_is_refused(void)
{
    store *st = setup();
    checker *c = NULL;
    char *granted = NULL, inc[17];
    json_t *acl = NULL;
    char err[128];

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK, "a checker over a store");
    if (c == NULL)
        return;
    ok(checker_grant_scope(c, DEVICE, NULL, &granted, &acl, inc, err,
                           sizeof(err)) == AD_OK &&
           strcmp(granted, "publish:t/#") == 0,
       "an active device is granted its policy's scope");
    free(granted);
    json_decref(acl);
    put(st, STORE_DEVICES, DEVICE, device_record("suspended"), NULL);
    checker_forget_device(c, DEVICE);
    ok(checker_grant_scope(c, DEVICE, NULL, &granted, &acl, inc, err,
                           sizeof(err)) == AD_ESUSPENDED,
       "a suspended device is refused a token");
    checker_close(c);
    teardown(st);
}

static void test_a_policy_changed_while_a_device_is_first_read_is_never_cached(void)
{
    store *st = setup();
    checker *c = NULL;
    struct race r = {NULL, st, 0, 2};
    check_result res;

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK, "a checker over a store");
    if (c == NULL)
        return;
    r.c = c;
    checker_set_race_hook(c, race_hook, &r);
    connect_by(c, SERIAL, NULL, &res);
    check_result_clear(&res);
    checker_set_race_hook(c, NULL, NULL);
    ok(r.fired >= 1, "the policy change committed between a read and its insert");
    connect_by(c, SERIAL, NULL, &res);
    ok(!res.allow && strcmp(res.reason, "explicit_deny") == 0,
       "the next check decides with the new policy (%s)", res.reason);
    check_result_clear(&res);
    checker_close(c);
    teardown(st);
}

/* Writes count devices fl-<i> with policy "own" in one transaction. */
struct fleet_write {
    int count;
};

static ad_err fleet_put(store_txn *tx, void *arg)
{
    struct fleet_write *w = arg;
    char id[32];
    ad_err e = AD_OK;
    int i;

    for (i = 0; i < w->count && e == AD_OK; i++) {
        json_t *d;

        snprintf(id, sizeof(id), "fl-%06d", i);
        d = json_pack("{s:s, s:s, s:[s], s:[], s:{}, s:s}", "id", id,
                      "status", "active", "policies", "own", "groups",
                      "attributes", "incarnation", "0123456789abcdef");
        e = store_put(tx, STORE_DEVICES, id, d, 0);
        json_decref(d);
    }
    return e;
}

static store *fleet_setup(int devices, int statements)
{
    store *st = setup();
    json_t *doc, *sts;
    struct fleet_write w = {devices};
    int i;

    if (st == NULL)
        return NULL;
    /* One statement that matters and, to make the set big, many that
     * never match: a device's memory must not grow with them. */
    sts = json_pack("[{s:s, s:[s], s:[s]}]", "effect", "allow", "actions",
                    "publish", "topics", "devices/${device.id}/#");
    for (i = 1; i < statements; i++) {
        char t[64];

        snprintf(t, sizeof(t), "site/%d/${device.id}/+/x", i);
        json_array_append_new(sts, json_pack("{s:s, s:[s], s:[s]}", "effect",
                                             "allow", "actions", "subscribe",
                                             "topics", t));
    }
    doc = json_pack("{s:o}", "statements", sts);
    if (!put(st, STORE_POLICIES, "own",
             json_pack("{s:s, s:o}", "name", "own", "document", doc), NULL) ||
        store_write(st, fleet_put, &w) != AD_OK) {
        teardown(st);
        return NULL;
    }
    return st;
}

static int publish_as(checker *c, const char *device, const char *topic)
{
    check_request req;
    check_result res;
    int allow;

    memset(&req, 0, sizeof(req));
    req.action = POL_PUBLISH;
    req.username = device;
    req.client_id = device;
    req.topic = topic;
    checker_check(c, &req, time(NULL), &res);
    allow = res.allow;
    check_result_clear(&res);
    return allow;
}

static void test_devices_with_the_same_policies_share_one_compiled_set(void)
{
    store *st = fleet_setup(100, 1);
    checker *c = NULL;
    checker_stats stats;
    char id[32], topic[64];
    int i, right = 1;

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK, "a checker over a store");
    if (c == NULL)
        return;
    for (i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "fl-%06d", i);
        snprintf(topic, sizeof(topic), "devices/%s/temp", id);
        right &= publish_as(c, id, topic);
        /* ${device.id} is bound per decision: the neighbour's topic is
         * not this device's. */
        snprintf(topic, sizeof(topic), "devices/fl-%06d/temp", (i + 1) % 100);
        right &= !publish_as(c, id, topic);
    }
    ok(right, "each device may publish to its own topic and not another's");
    checker_get_stats(c, &stats);
    ok(stats.devices.entries == 100, "100 devices are cached (%llu)",
       (unsigned long long)stats.devices.entries);
    ok(stats.sets.entries == 1, "and share one compiled set (%llu)",
       (unsigned long long)stats.sets.entries);
    checker_forget_policies(c);
    right = publish_as(c, "fl-000007", "devices/fl-000007/temp");
    checker_get_stats(c, &stats);
    ok(right && stats.sets.entries == 1,
       "a policy change compiles the set once again, not per device");
    checker_close(c);
    teardown(st);
}

static double bytes_per_device(int statements)
{
    store *st = fleet_setup(2000, statements);
    checker *c = NULL;
    checker_stats stats;
    char id[32], topic[64];
    int i;

    if (st == NULL ||
        checker_open(st, &(checker_opts){30, 0, 0}, &c) != AD_OK)
        return -1;
    for (i = 0; i < 2000; i++) {
        snprintf(id, sizeof(id), "fl-%06d", i);
        snprintf(topic, sizeof(topic), "devices/%s/temp", id);
        publish_as(c, id, topic);
    }
    checker_get_stats(c, &stats);
    checker_close(c);
    teardown(st);
    return stats.devices.entries == 2000
               ? (double)stats.devices.bytes / 2000.0
               : -1;
}

static void test_a_device_costs_the_same_small_memory_whatever_its_policy(void)
{
    double small = bytes_per_device(1), big = bytes_per_device(200);

    ok(small > 0 && small < 256,
       "a device with a one-statement policy costs under 256 bytes (%.0f)",
       small);
    ok(big == small, "and the same with a 200-statement policy (%.0f)", big);
}

static void test_a_small_budget_holds_any_fleet_by_evicting_cold_devices(void)
{
    store *st = fleet_setup(20000, 1);
    checker *c = NULL;
    checker_stats stats;
    char id[32], topic[64];
    const size_t budget = 1 << 20;
    int i, right = 1;

    ok(st && checker_open(st, &(checker_opts){30, 0, budget}, &c) == AD_OK,
       "a checker with 1 MiB for its caches");
    if (c == NULL)
        return;
    for (i = 0; i < 40000; i++) {
        snprintf(id, sizeof(id), "fl-%06d", i % 20000);
        snprintf(topic, sizeof(topic), "devices/%s/temp", id);
        right &= publish_as(c, id, topic);
    }
    ok(right, "every decision over 20k devices is right, evicted or not");
    checker_get_stats(c, &stats);
    ok(stats.devices.bytes <= budget,
       "the device cache stays within its share (%llu bytes)",
       (unsigned long long)stats.devices.bytes);
    ok(stats.devices.entries > 1000 && stats.devices.evictions > 0,
       "holding what fits (%llu) and evicting one by one (%llu)",
       (unsigned long long)stats.devices.entries,
       (unsigned long long)stats.devices.evictions);
    checker_close(c);
    teardown(st);
}

/* ---- gateways ------------------------------------------------------------ */

/* The daemon's change feed, as much of it as a gateway needs: a changed
 * device record drops that device's entry (changes.c does the same). */
static checker *watched;

static void watch_devices(void *arg, const store_change *ch)
{
    (void)arg;
    if (watched && ch->kind == STORE_CHANGE_RECORD &&
        ch->table == STORE_DEVICES)
        checker_forget_device(watched, ch->key);
}

/* A store with policies "gw" (publish devices/${child.id}/t for each
 * child) and "kid" (publish devices/${device.id}/own), a gateway "g1"
 * and "g2", and children k1..k3 of g1, all made through the registry. */
static store *gateway_setup(void)
{
    store *st = NULL;
    char err[256] = "", why[REGISTRY_WHY_MAX];
    json_t *gdoc, *kdoc, *pol, *view = NULL;
    const char *kids[] = {"k1", "k2", "k3"};
    registry_device_new d;
    size_t i;
    int good = 1;

    snprintf(dir, sizeof(dir), "/tmp/authd-test-checker-XXXXXX");
    if (mkdtemp(dir) == NULL || store_open(dir, 64, &st, err, sizeof(err)) != AD_OK) {
        tap_diag("store: %s", err);
        return NULL;
    }
    store_watch(st, watch_devices, NULL);
    gdoc = json_pack("{s:[{s:s, s:[s], s:[s]}]}", "statements", "effect",
                     "allow", "actions", "publish", "topics",
                     "devices/${child.id}/t");
    kdoc = json_pack("{s:[{s:s, s:[s], s:[s]}]}", "statements", "effect",
                     "allow", "actions", "publish", "topics",
                     "devices/${device.id}/own");
    good &= put(st, STORE_POLICIES, "gw",
                json_pack("{s:s, s:o}", "name", "gw", "document", gdoc), NULL);
    good &= put(st, STORE_POLICIES, "kid",
                json_pack("{s:s, s:o}", "name", "kid", "document", kdoc), NULL);
    pol = json_pack("[s]", "gw");
    memset(&d, 0, sizeof(d));
    d.policies = pol;
    d.id = "g1";
    good &= registry_device_create(st, "t", &d, &view, why, sizeof(why)) == AD_OK;
    json_decref(view);
    d.id = "g2";
    good &= registry_device_create(st, "t", &d, &view, why, sizeof(why)) == AD_OK;
    json_decref(view);
    json_decref(pol);
    pol = json_pack("[s]", "kid");
    d.policies = pol;
    d.gateway = "g1";
    for (i = 0; i < 3; i++) {
        d.id = kids[i];
        good &= registry_device_create(st, "t", &d, &view, why,
                                       sizeof(why)) == AD_OK;
        json_decref(view);
    }
    json_decref(pol);
    if (!good) {
        tap_diag("gateway setup failed: %s", why);
        teardown(st);
        return NULL;
    }
    return st;
}

static ad_err set_status(store *st, const char *id, registry_device_status s)
{
    registry_device_patch p;
    json_t *view = NULL;
    char why[REGISTRY_WHY_MAX];
    ad_err e;

    memset(&p, 0, sizeof(p));
    p.set_status = 1;
    p.status = s;
    e = registry_device_update(st, "t", id, &p, &view, why, sizeof(why));
    json_decref(view);
    return e;
}

static ad_err move_to(store *st, const char *id, const char *gateway)
{
    registry_device_patch p;
    json_t *view = NULL;
    char why[REGISTRY_WHY_MAX];
    ad_err e;

    memset(&p, 0, sizeof(p));
    p.set_gateway = 1;
    p.gateway = gateway;
    e = registry_device_update(st, "t", id, &p, &view, why, sizeof(why));
    json_decref(view);
    return e;
}

static void test_a_gateway_decides_for_its_active_children_exactly(void)
{
    store *st = gateway_setup();
    checker *c = NULL;
    checker_stats before, after;

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK,
       "a checker over a store with a gateway");
    if (c == NULL)
        return;
    watched = c;
    ok(publish_as(c, "g1", "devices/k1/t") && publish_as(c, "g1", "devices/k3/t"),
       "the gateway publishes for each of its children");
    ok(!publish_as(c, "g1", "devices/g2/t") && !publish_as(c, "g1", "devices/k4/t"),
       "and for nobody else");
    ok(!publish_as(c, "g2", "devices/k1/t"), "another gateway has no right to them");
    ok(publish_as(c, "k1", "devices/k1/own"), "a child has its own entry");
    checker_get_stats(c, &before);
    ok(set_status(st, "k2", DEVICE_SUSPENDED) == AD_OK, "k2 suspended");
    ok(!publish_as(c, "g1", "devices/k2/t"),
       "a suspended child drops out of the gateway's rights at once");
    ok(publish_as(c, "g1", "devices/k1/t"), "its siblings stay");
    ok(publish_as(c, "k1", "devices/k1/own"), "k1's entry was untouched");
    checker_get_stats(c, &after);
    ok(after.sets.misses == before.sets.misses,
       "a child's change compiles no policy set (%llu set misses -> %llu)",
       (unsigned long long)before.sets.misses,
       (unsigned long long)after.sets.misses);
    ok(after.devices.misses - before.devices.misses == 1,
       "only the gateway's entry was read again (%llu)",
       (unsigned long long)(after.devices.misses - before.devices.misses));
    ok(set_status(st, "k2", DEVICE_ACTIVE) == AD_OK &&
           publish_as(c, "g1", "devices/k2/t"),
       "resumed, it is back at once");
    ok(move_to(st, "k3", "g2") == AD_OK, "k3 moved to g2");
    ok(!publish_as(c, "g1", "devices/k3/t") && publish_as(c, "g2", "devices/k3/t"),
       "a moved child is the new gateway's, not the old one's");
    watched = NULL;
    checker_close(c);
    teardown(st);
}

/* Race: the child leaves while the gateway's entry is being loaded. */
struct child_race {
    store *st;
    int fired;
};

static void child_race_hook(void *arg)
{
    struct child_race *r = arg;

    if (r->fired++ == 0 && set_status(r->st, "k1", DEVICE_SUSPENDED) != AD_OK)
        tap_diag("the racing suspension failed");
}

static void test_a_child_suspended_while_its_gateway_is_read_is_never_cached(void)
{
    store *st = gateway_setup();
    checker *c = NULL;
    struct child_race r = {st, 0};

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK,
       "a checker over a store with a gateway");
    if (c == NULL)
        return;
    watched = c;
    checker_set_race_hook(c, child_race_hook, &r);
    publish_as(c, "g1", "devices/k1/t");
    checker_set_race_hook(c, NULL, NULL);
    ok(r.fired >= 1, "the suspension committed between the read and the insert");
    ok(!publish_as(c, "g1", "devices/k1/t"),
       "the gateway's children are not cached from before the suspension");
    watched = NULL;
    checker_close(c);
    teardown(st);
}

static int behalf(checker *c, const char *gateway, const char *child,
                  const char *topic, const char **reason, char *device)
{
    check_request req;
    check_result res;
    int allow;

    memset(&req, 0, sizeof(req));
    req.action = POL_PUBLISH;
    req.username = gateway;
    req.topic = topic;
    req.on_behalf_of = child;
    checker_check(c, &req, time(NULL), &res);
    allow = res.allow;
    *reason = res.reason;
    if (device)
        snprintf(device, CHECK_ID_MAX, "%s", res.device);
    check_result_clear(&res);
    return allow;
}

static void test_on_behalf_of_only_from_the_childs_own_active_gateway(void)
{
    store *st = gateway_setup();
    checker *c = NULL;
    const char *why = "";
    char dev[CHECK_ID_MAX] = "";

    ok(st && checker_open(st, &(checker_opts){30, 0, 0}, &c) == AD_OK,
       "a checker over a store with a gateway");
    if (c == NULL)
        return;
    watched = c;
    ok(behalf(c, "g1", "k1", "devices/k1/own", &why, dev) &&
           strcmp(dev, "k1") == 0,
       "the gateway acts for its child with the child's policy (%s, %s)",
       why, dev);
    ok(!behalf(c, "g1", "k1", "devices/k1/t", &why, NULL),
       "the gateway's own rights are not the child's (%s)", why);
    ok(!behalf(c, "g2", "k1", "devices/k1/own", &why, NULL) &&
           strcmp(why, "not_gateway") == 0,
       "another gateway may not (%s)", why);
    ok(!behalf(c, "g1", "nobody", "devices/nobody/own", &why, NULL) &&
           strcmp(why, "not_gateway") == 0,
       "an unknown child answers as a stranger does (%s)", why);
    ok(set_status(st, "k1", DEVICE_SUSPENDED) == AD_OK &&
           !behalf(c, "g1", "k1", "devices/k1/own", &why, NULL) &&
           strcmp(why, "device_suspended") == 0,
       "a suspended child is denied (%s)", why);
    ok(set_status(st, "k1", DEVICE_ACTIVE) == AD_OK &&
           set_status(st, "g1", DEVICE_SUSPENDED) == AD_OK &&
           !behalf(c, "g1", "k1", "devices/k1/own", &why, NULL) &&
           strcmp(why, "gateway_suspended") == 0,
       "a suspended gateway acts for nobody (%s)", why);
    watched = NULL;
    checker_close(c);
    teardown(st);
}

/* Adds children big-0000.. of g1, n of them, in one import. */
static int add_children(store *st, int n)
{
    registry_import_item *items = calloc((size_t)n, sizeof(*items));
    registry_device_new d;
    char id[32];
    int i, good = items != NULL;

    memset(&d, 0, sizeof(d));
    d.gateway = "g1";
    for (i = 0; good && i < n; i++) {
        snprintf(id, sizeof(id), "big-%04d", i);
        d.id = id;
        util_strlcpy(items[i].id, id, sizeof(items[i].id));
        registry_import_prepare(&items[i], &d, time(NULL));
        good = items[i].e == AD_OK;
    }
    good = good && registry_devices_import(st, "t", items, (size_t)n) == AD_OK;
    for (i = 0; items && i < n; i++)
        registry_import_item_clear(&items[i]);
    free(items);
    return good;
}

static void test_a_gateway_too_big_to_cache_is_read_once_per_decision(void)
{
    store *st = gateway_setup();
    checker *c = NULL;
    checker_stats before, after;

    /* 256 KiB: a device entry fits a shard, 2000 children do not. */
    ok(st && add_children(st, 2000) &&
           checker_open(st, &(checker_opts){30, 0, 256 << 10}, &c) == AD_OK,
       "a gateway with 2000 children and a small cache");
    if (c == NULL)
        return;
    watched = c;
    ok(publish_as(c, "g1", "devices/big-1999/t") &&
           !publish_as(c, "g1", "devices/big-2000/t"),
       "it decides right without a cache entry");
    checker_get_stats(c, &before);
    ok(publish_as(c, "g1", "devices/big-0007/t"), "and again");
    checker_get_stats(c, &after);
    ok(after.devices.misses - before.devices.misses == 1,
       "one store read per decision, not one per retry (%llu)",
       (unsigned long long)(after.devices.misses - before.devices.misses));
    watched = NULL;
    checker_close(c);
    teardown(st);
}

static void test_registry_lists_a_gateways_children_with_their_status(void)
{
    store *st = gateway_setup();
    registry_child *kids = NULL;
    size_t n = 0;

    ok(st != NULL, "a store with a gateway");
    if (st == NULL)
        return;
    ok(set_status(st, "k2", DEVICE_SUSPENDED) == AD_OK, "k2 suspended");
    ok(registry_gateway_children(st, "g1", &kids, &n) == AD_OK && n == 3,
       "three children (%zu)", n);
    ok(n == 3 && strcmp(kids[0].id, "k1") == 0 && strcmp(kids[1].id, "k2") == 0 &&
           strcmp(kids[2].id, "k3") == 0,
       "in id order");
    ok(n == 3 && kids[0].status == DEVICE_ACTIVE &&
           kids[1].status == DEVICE_SUSPENDED && kids[2].status == DEVICE_ACTIVE,
       "each with its status");
    free(kids);
    ok(registry_gateway_children(st, "g2", &kids, &n) == AD_OK && n == 0 &&
           kids == NULL,
       "a gateway without children has none");
    ok(registry_gateway_children(st, "nobody", &kids, &n) == AD_ENOTFOUND &&
           kids == NULL && n == 0,
       "no such device is AD_ENOTFOUND, nothing written");
    teardown(st);
}

int main(void)
{
    test_a_certificate_revoked_while_it_is_first_read_is_never_cached_as_valid();
    test_a_fingerprint_lookup_racing_a_revocation_is_not_cached();
    test_a_device_suspended_while_it_is_first_read_is_never_cached_as_active();
    test_a_grant_after_a_suspension_is_refused();
    test_a_policy_changed_while_a_device_is_first_read_is_never_cached();
    test_devices_with_the_same_policies_share_one_compiled_set();
    test_a_device_costs_the_same_small_memory_whatever_its_policy();
    test_a_small_budget_holds_any_fleet_by_evicting_cold_devices();
    test_a_gateway_decides_for_its_active_children_exactly();
    test_a_child_suspended_while_its_gateway_is_read_is_never_cached();
    test_on_behalf_of_only_from_the_childs_own_active_gateway();
    test_registry_lists_a_gateways_children_with_their_status();
    test_a_gateway_too_big_to_cache_is_read_once_per_decision();
    return tap_done();
}
