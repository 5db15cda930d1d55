/* The checker (authd/checker.c) under the broker's load shape: several
 * threads deciding token, certificate (by fingerprint and by serial) and
 * secret connects, publishes and subscribes, and granting token scopes,
 * while other threads drop the caches under them (forget device, forget
 * certificate, forget policies, a policy rewritten) and one device is
 * suspended and reinstated over and over. The records of the other
 * devices never change, so every answer about them is known; the
 * flipping device may only be allowed or refused as suspended. Under the
 * `tsan` setup any data race fails it. */
#include <sched.h>
#include <stdatomic.h>

#include "checker_fixture.h"

enum {
    DEVICES = 6,         /* steady devices; one more flips */
    CHECKERS = 3,
    CHECKS_MAX = 200000, /* per checker thread */
    ERRORS_SHOWN = 5
};

static fixture fx;
static conc_deadline deadline;
static atomic_int running;

enum { ROLE_CHECKER, ROLE_FORGETTER, ROLE_FLIPPER };

struct worker {
    int role, index;
    int errors;
    long done;
};

static void expect(struct worker *me, const check_request *req, int allow,
                   const char *what, const char *dev)
{
    check_result res;

    checker_check(fx.ck, req, time(NULL), &res);
    if (res.allow != allow) {
        if (me->errors < ERRORS_SHOWN)
            tap_diag("%s for %s: allow=%d reason=%s", what, dev, res.allow,
                     res.reason);
        me->errors++;
    }
    check_result_clear(&res);
}

/* One round of every kind of check for one steady device. */
static void check_device(struct worker *me, const fix_device *d, long i)
{
    check_request req;
    char topic[128];
    char *granted = NULL;
    json_t *acl = NULL;
    char inc[REGISTRY_INCARNATION_MAX], err[128];

    memset(&req, 0, sizeof(req));
    req.action = POL_CONNECT;
    req.client_id = d->id;
    switch (i % 4) {
    case 0:
        req.username = d->id;
        req.password = d->token;
        expect(me, &req, 1, "token connect", d->id);
        break;
    case 1:
        req.cert_fingerprint = d->fpr;
        expect(me, &req, 1, "certificate connect by fingerprint", d->id);
        break;
    case 2:
        req.cert_serial = d->serial;
        expect(me, &req, 1, "certificate connect by serial", d->id);
        break;
    default:
        req.username = d->id;
        req.password = d->secret;
        expect(me, &req, 1, "secret connect", d->id);
        break;
    }

    memset(&req, 0, sizeof(req));
    req.action = POL_PUBLISH;
    req.client_id = d->id;
    req.username = d->id;
    snprintf(topic, sizeof(topic), "devices/%s/telemetry/t%ld", d->id, i % 7);
    req.topic = topic;
    expect(me, &req, 1, "publish to own telemetry", d->id);
    snprintf(topic, sizeof(topic), "devices/%s/telemetry/secret", d->id);
    expect(me, &req, 0, "publish to a denied topic", d->id);
    req.action = POL_SUBSCRIBE;
    snprintf(topic, sizeof(topic), "devices/%s/cmd/+", d->id);
    expect(me, &req, 1, "subscribe to own commands", d->id);
    /* The token's scope is telemetry only: the policy alone would allow
     * this subscribe. */
    req.password = d->token;
    expect(me, &req, 0, "token subscribe outside its scope", d->id);

    if (i % 8 == 0) {
        ad_err e;

        /* Asked for its commands, or (no scope) for all it may do; the
         * telemetry filter is never granted, a deny intersects it. */
        snprintf(topic, sizeof(topic), "subscribe:devices/%s/cmd/+", d->id);
        e = checker_grant_scope(fx.ck, d->id, i % 16 ? NULL : topic, &granted,
                                &acl, inc, err, sizeof(err));
        if (e != AD_OK || strcmp(inc, d->incarnation) != 0 ||
            strstr(granted, topic) == NULL) {
            if (me->errors < ERRORS_SHOWN)
                tap_diag("grant scope for %s: %s %s", d->id, ad_err_code(e),
                         err);
            me->errors++;
        }
        free(granted);
        json_decref(acl);
        if (!checker_device_active(fx.ck, d->id, d->incarnation))
            me->errors++;
    }
}

/* The flipping device: allowed, or refused because it is suspended. */
static void check_flipping(struct worker *me, const fix_device *d)
{
    check_request req;
    check_result res;
    char topic[128];

    memset(&req, 0, sizeof(req));
    req.action = POL_PUBLISH;
    req.client_id = d->id;
    req.username = d->id;
    snprintf(topic, sizeof(topic), "devices/%s/telemetry/x", d->id);
    req.topic = topic;
    checker_check(fx.ck, &req, time(NULL), &res);
    if (!res.allow && strcmp(res.reason, "device_suspended") != 0) {
        if (me->errors < ERRORS_SHOWN)
            tap_diag("flipping device: reason %s", res.reason);
        me->errors++;
    }
    check_result_clear(&res);
    req.action = POL_CONNECT;
    req.password = d->token;
    checker_check(fx.ck, &req, time(NULL), &res);
    if (!res.allow && strcmp(res.reason, "device_suspended") != 0)
        me->errors++;
    check_result_clear(&res);
}

static void *checker_main(struct worker *me)
{
    long i;

    for (i = 0; i < CHECKS_MAX && !conc_expired(&deadline); i++) {
        check_device(me, &fx.dev[(size_t)(i + me->index) % DEVICES], i);
        if (i % 4 == 0)
            check_flipping(me, &fx.dev[DEVICES]);
        me->done++;
    }
    atomic_fetch_sub(&running, 1);
    return NULL;
}

static void *forgetter_main(struct worker *me)
{
    json_t *doc = json_loads(FIX_POLICY, 0, NULL);
    long i;

    for (i = 0; atomic_load(&running) > 0; i++) {
        const fix_device *d = &fx.dev[(size_t)i % DEVICES];

        checker_forget_device(fx.ck, d->id);
        if (i % 3 == 0)
            checker_forget_cert(fx.ck, d->serial, d->fpr);
        if (i % 5 == 0)
            checker_forget_policies(fx.ck);
        /* Rewriting the policy unchanged: the checker must rebuild from
         * the same document, so no answer may change. */
        if (i % 200 == 0 &&
            !fix_put(&fx, STORE_POLICIES, "p1",
                     json_pack("{s:s, s:O}", "name", "p1", "document", doc)))
            me->errors++;
        if (i % 200 == 0)
            checker_forget_policies(fx.ck);
        me->done++;
        if (i % 64 == 0)
            sched_yield();
    }
    json_decref(doc);
    return NULL;
}

static void *flipper_main(struct worker *me)
{
    const fix_device *d = &fx.dev[DEVICES];
    long i;

    for (i = 0; atomic_load(&running) > 0; i++) {
        struct timespec pause = {0, 2 * 1000 * 1000};

        if (!fix_set_status(&fx, d->id, i % 2 ? "active" : "suspended"))
            me->errors++;
        checker_forget_device(fx.ck, d->id);
        me->done++;
        nanosleep(&pause, NULL);
    }
    /* Leave it active, as it started. */
    if (!fix_set_status(&fx, d->id, "active"))
        me->errors++;
    checker_forget_device(fx.ck, d->id);
    return NULL;
}

static void *role_main(void *arg)
{
    struct worker *me = arg;

    switch (me->role) {
    case ROLE_CHECKER:
        return checker_main(me);
    case ROLE_FORGETTER:
        return forgetter_main(me);
    default:
        return flipper_main(me);
    }
}

static void test_checker_answers_stay_right_while_caches_are_dropped(void)
{
    enum { N = CHECKERS + 2 };
    struct worker w[N];
    char id[32];
    int i, errors = 0, setup = 1;

    setup = fix_open(&fx, "checker");
    for (i = 0; setup && i <= DEVICES; i++) {
        if (i == DEVICES)
            snprintf(id, sizeof(id), "dev-flip");
        else
            snprintf(id, sizeof(id), "dev-%d", i);
        setup = fix_add_device(&fx, id);
    }
    ok(setup, "a store with a policy, devices, certificates, secrets and "
              "tokens is set up");
    if (!setup) {
        fix_close(&fx);
        return;
    }
    memset(w, 0, sizeof(w));
    for (i = 0; i < N; i++) {
        w[i].role = i < CHECKERS        ? ROLE_CHECKER
                    : i == CHECKERS     ? ROLE_FORGETTER
                                        : ROLE_FLIPPER;
        w[i].index = i;
    }
    atomic_init(&running, CHECKERS);
    deadline = conc_deadline_in(conc_budget());
    ok(conc_run(N, role_main, w, sizeof(w[0])) == 0, "every thread starts");
    for (i = 0; i < N; i++) {
        errors += w[i].errors;
        tap_diag("role %d: %ld rounds, %d errors", w[i].role, w[i].done,
                 w[i].errors);
    }
    ok(errors == 0,
       "every answer about a steady device was right and the flipping "
       "device was only ever allowed or suspended (%d errors)", errors);
    ok(w[0].done > 0 && w[CHECKERS].done > 0,
       "checks and cache drops both ran");
    fix_close(&fx);
}

int main(void)
{
    TAP_RUN(test_checker_answers_stay_right_while_caches_are_dropped);
    return tap_done();
}
