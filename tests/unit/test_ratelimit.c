/* Unit tests of the abuse limits (authd/ratelimit.c) and the argon2id
 * verifier that maps its memory per run (authd/secret_hash.c). Time is
 * passed in explicitly, so back-off is tested without sleeping. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <argon2.h>

#include "../../authd/ratelimit.h"
#include "../../authd/secret_hash.h"
#include "tap.h"

static rl *open_limits(unsigned burst, unsigned window, unsigned max,
                       size_t table, unsigned parallel)
{
    rl_config c;
    rl *r = NULL;

    memset(&c, 0, sizeof(c));
    c.fail_window_s = window;
    c.device_burst = burst;
    c.source_burst = burst * 10;
    c.backoff_max_s = max;
    c.table_size = table;
    c.parallel = parallel;
    if (rl_open(&c, &r) != AD_OK)
        return NULL;
    return r;
}

static void test_failures_within_the_burst_are_not_blocked(void)
{
    rl *r = open_limits(3, 60, 300, 1024, 2);
    uint64_t t = 1000000;

    ok(r != NULL, "the limiter opens");
    ok(rl_blocked(r, "dev:a", t) == 0, "an unknown key is not blocked");
    ok(rl_fail(r, "dev:a", 3, t) == 0 && rl_fail(r, "dev:a", 3, t + 1) == 0,
       "two failures of a burst of three do not block (typos happen)");
    ok(rl_blocked(r, "dev:a", t + 2) == 0, "still free after two");
    ok(rl_fail(r, "dev:a", 3, t + 2) == 1,
       "the third failure blocks for 1 s");
    ok(rl_blocked(r, "dev:a", t + 2) == 1,
       "a blocked key says how long to wait (Retry-After)");
    ok(rl_blocked(r, "dev:b", t + 2) == 0,
       "another key is not affected by dev:a's failures");
    ok(rl_blocked(r, "dev:a", t + 1002) == 0, "the block ends after 1 s");
    rl_close(r);
}

static void test_backoff_doubles_up_to_the_maximum(void)
{
    rl *r = open_limits(2, 3600, 10, 1024, 2);
    uint64_t t = 5000;
    unsigned w, expect[] = {1, 2, 4, 8, 10, 10};
    size_t i;

    rl_fail(r, "ip:1.2.3.4", 2, t);
    for (i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        w = rl_fail(r, "ip:1.2.3.4", 2, t);
        ok(w == expect[i],
           "failure %zu past the burst blocks %u s (got %u): an attacker "
           "slows down exponentially, capped at rate_backoff_max",
           i + 1, expect[i], w);
        t += (uint64_t)w * 1000;
        ok(rl_blocked(r, "ip:1.2.3.4", t) == 0,
           "and may try again once the block is over");
    }
    rl_close(r);
}

static void test_a_quiet_window_drains_the_bucket(void)
{
    rl *r = open_limits(3, 60, 300, 1024, 2);
    uint64_t t = 10000;

    rl_fail(r, "dev:x", 3, t);
    rl_fail(r, "dev:x", 3, t);
    ok(rl_fail(r, "dev:x", 3, t) == 1, "three failures at once block");
    t += 61000;
    ok(rl_fail(r, "dev:x", 3, t) == 0,
       "after a quiet window the old failures are forgiven");
    rl_fail(r, "dev:x", 3, t);
    ok(rl_fail(r, "dev:x", 3, t) == 1,
       "and a new burst is needed to block again");
    rl_close(r);
}

static void test_a_success_forgets_the_failures(void)
{
    rl *r = open_limits(3, 60, 300, 1024, 2);

    rl_fail(r, "dev:s", 3, 100);
    rl_fail(r, "dev:s", 3, 100);
    rl_success(r, "dev:s");
    ok(rl_fail(r, "dev:s", 3, 100) == 0,
       "after a good secret earlier failures no longer count");
    rl_close(r);
}

static void test_a_flood_of_keys_cannot_evict_a_block(void)
{
    rl *r = open_limits(1, 60, 300, 64, 2);
    char key[32];
    int i;

    ok(rl_fail(r, "dev:target", 1, 1000) == 1, "the target is blocked");
    /* A table of 64: 100000 keys can only evict, never grow it. */
    for (i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "ip:flood-%d", i);
        rl_fail(r, key, 1000, 1000);
    }
    ok(rl_blocked(r, "dev:target", 1000) == 1,
       "unblocked flood keys are evicted before a blocked one, so "
       "inventing keys does not lift a block");
    rl_close(r);
}

static void test_the_gate_admits_parallel_then_fails_fast(void)
{
    rl *r = open_limits(3, 60, 300, 64, 2);

    ok(rl_gate_enter(r) && rl_gate_enter(r), "two runs may start");
    ok(!rl_gate_enter(r),
       "a third fails at once instead of queueing (argon2 never runs on "
       "more than argon2_parallel threads)");
    rl_gate_leave(r);
    ok(rl_gate_enter(r), "a slot freed is taken again");
    rl_gate_leave(r);
    rl_gate_leave(r);
    rl_count(r, RL_WHAT_BUSY);
    ok(rl_counted(r, RL_WHAT_BUSY) == 1 &&
           strcmp(rl_what_name(RL_WHAT_BUSY), "busy") == 0,
       "refusals are counted for authd_rate_limited_total");
    rl_close(r);
}

struct gate_arg {
    rl *r;
    int admitted;
};

static void *gate_thread(void *p)
{
    struct gate_arg *g = p;
    int i;

    for (i = 0; i < 20000; i++)
        if (rl_gate_enter(g->r)) {
            g->admitted++;
            rl_gate_leave(g->r);
        }
    return NULL;
}

static void test_the_gate_is_exact_under_contention(void)
{
    rl *r = open_limits(3, 60, 300, 64, 1);
    struct gate_arg g[4];
    pthread_t th[4];
    int i, total = 0;

    for (i = 0; i < 4; i++) {
        g[i].r = r;
        g[i].admitted = 0;
        pthread_create(&th[i], NULL, gate_thread, &g[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += g[i].admitted;
    }
    ok(total > 0, "threads got through the gate (%d)", total);
    ok(rl_gate_enter(r), "after contention the single slot is free again "
                         "(no slot leaked)");
    ok(!rl_gate_enter(r), "and there is exactly one");
    rl_close(r);
}

static void test_secret_hash_verifies_argon2id(void)
{
    char enc[256];
    const uint8_t salt[16] = "0123456789abcdef";
    const char *secret = "s3cret-value";

    ok(argon2id_hash_encoded(2, 1024, 1, secret, strlen(secret), salt,
                             sizeof(salt), 32, enc, sizeof(enc)) == ARGON2_OK,
       "a reference hash is made");
    ok(secret_hash_verify(enc, secret, strlen(secret)) == 1,
       "the right secret matches");
    ok(secret_hash_verify(enc, "s3cret-valuf", 12) == 0,
       "a wrong secret does not");
    ok(secret_hash_verify(enc, secret, strlen(secret) - 1) == 0,
       "a prefix of the secret does not");
    ok(secret_hash_verify("$argon2i$v=19$m=1024,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA"
                          "$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                          secret, strlen(secret)) == -1,
       "argon2i (not id) is malformed for us");
    ok(secret_hash_verify("$argon2id$v=19$m=99999999,t=2,p=1$"
                          "AAAAAAAAAAAAAAAAAAAAAA$"
                          "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                          secret, strlen(secret)) == -1,
       "a hash asking for ~100 GiB is refused, not mapped");
    ok(secret_hash_verify("$argon2id$v=19$m=1024,t=2,p=1$AAAA", secret,
                          strlen(secret)) == -1,
       "a truncated hash is malformed");
    ok(secret_hash_verify(NULL, secret, strlen(secret)) == -1,
       "no hash is malformed");
}

int main(void)
{
    TAP_RUN(test_failures_within_the_burst_are_not_blocked);
    TAP_RUN(test_backoff_doubles_up_to_the_maximum);
    TAP_RUN(test_a_quiet_window_drains_the_bucket);
    TAP_RUN(test_a_success_forgets_the_failures);
    TAP_RUN(test_a_flood_of_keys_cannot_evict_a_block);
    TAP_RUN(test_the_gate_admits_parallel_then_fails_fast);
    TAP_RUN(test_the_gate_is_exact_under_contention);
    TAP_RUN(test_secret_hash_verifies_argon2id);
    return tap_done();
}
