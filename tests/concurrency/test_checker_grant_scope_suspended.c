/* checker_grant_scope for a suspended device while the device's cache
 * entry is being dropped: what POST /v1/token does when an admin
 * suspends the device (status written to the store, then
 * checker_forget_device) as the device asks for a token. The answer
 * must be AD_ESUSPENDED, and the checker must not touch the cache entry
 * after letting go of its shard lock: another thread may free the entry
 * at that moment. ThreadSanitizer (and, when the timing falls right,
 * AddressSanitizer) sees such a use after free. */
#include <sched.h>
#include <stdatomic.h>

#include "checker_fixture.h"

enum {
    GRANTERS = 2,
    GRANTS_MAX = 200000, /* per granter */
    ERRORS_SHOWN = 5
};

static fixture fx;
static conc_deadline deadline;
static atomic_int running;

struct worker {
    int granter;
    int errors;
    long done;
};

static void *granter_main(struct worker *me)
{
    const fix_device *d = &fx.dev[0];
    char scope[100], inc[REGISTRY_INCARNATION_MAX], err[128];
    long i;

    snprintf(scope, sizeof(scope), "publish:devices/%s/telemetry/#", d->id);
    for (i = 0; i < GRANTS_MAX && !conc_expired(&deadline); i++) {
        char *granted = NULL;
        json_t *acl = NULL;
        /* A requested scope (on every other call) makes the call free
         * its normalised copy between the unlock and the return. */
        ad_err e = checker_grant_scope(fx.ck, d->id, i % 2 ? scope : NULL,
                                       &granted, &acl, inc, err, sizeof(err));

        if (e != AD_ESUSPENDED || granted != NULL || acl != NULL) {
            if (me->errors < ERRORS_SHOWN)
                tap_diag("grant for a suspended device: %s (%d)",
                         ad_err_code(e), (int)e);
            me->errors++;
        }
        free(granted);
        json_decref(acl);
        me->done++;
    }
    atomic_fetch_sub(&running, 1);
    return NULL;
}

static void *forgetter_main(struct worker *me)
{
    const fix_device *d = &fx.dev[0];

    while (atomic_load(&running) > 0) {
        checker_forget_device(fx.ck, d->id);
        me->done++;
        if (me->done % 16 == 0)
            sched_yield();
    }
    return NULL;
}

static void *role_main(void *arg)
{
    struct worker *me = arg;

    return me->granter ? granter_main(me) : forgetter_main(me);
}

static void test_grant_scope_refuses_a_suspended_device_while_it_is_forgotten(
    void)
{
    enum { N = GRANTERS + 1 };
    struct worker w[N];
    const fix_device *d;
    char *granted = NULL, inc[REGISTRY_INCARNATION_MAX], err[128] = "";
    json_t *acl = NULL;
    int i, errors = 0, setup;

    setup = fix_open(&fx, "grant") && fix_add_device(&fx, "dev-s");
    ok(setup, "a store with a policy and one device is set up");
    if (!setup) {
        fix_close(&fx);
        return;
    }
    d = &fx.dev[0];
    ok(checker_grant_scope(fx.ck, d->id, NULL, &granted, &acl, inc, err,
                           sizeof(err)) == AD_OK &&
           granted != NULL,
       "an active device is granted a scope (and is now cached)");
    free(granted);
    json_decref(acl);

    /* The admin route's order: the store first, then the cache. */
    ok(fix_set_status(&fx, d->id, "suspended"), "the device is suspended");
    checker_forget_device(fx.ck, d->id);

    memset(w, 0, sizeof(w));
    for (i = 0; i < GRANTERS; i++)
        w[i].granter = 1;
    atomic_init(&running, GRANTERS);
    deadline = conc_deadline_in(conc_budget());
    ok(conc_run(N, role_main, w, sizeof(w[0])) == 0, "every thread starts");
    for (i = 0; i < N; i++) {
        errors += w[i].errors;
        tap_diag("%s: %ld calls, %d errors",
                 w[i].granter ? "granter" : "forgetter", w[i].done,
                 w[i].errors);
    }
    ok(errors == 0,
       "every grant for the suspended device was AD_ESUSPENDED with "
       "nothing handed out (%d errors)", errors);
    fix_close(&fx);
}

int main(void)
{
    TAP_RUN(test_grant_scope_refuses_a_suspended_device_while_it_is_forgotten);
    return tap_done();
}
