/* The token service (authd/tokens.c) from many threads: minting and
 * validating (the verified-token cache filled and hit concurrently),
 * revoking jtis while others validate the same tokens, and rotating the
 * signing key meanwhile. A revocation that has returned must bite every
 * validation that starts after it; a rotation must not break tokens
 * signed by earlier keys. Under the `tsan` setup any race fails it. */
#include <stdatomic.h>
#include <sys/stat.h>

#include "../../authd/tokens.h"
#include "../../authd/util.h"
#include "harness.h"

enum {
    MINTERS = 3,
    VALIDATORS = 2,
    POOL = 32,          /* tokens minted before the phase */
    ROTATIONS_MAX = 8,
    MINTS_MAX = 4000    /* per minter */
};

static char dir[256], keydir[300];
static store *st;
static tokens *tk;
static conc_deadline deadline;
static atomic_int busy; /* minters and rotator still running */

static char *pool[POOL];
static char pool_jti[POOL][64];
/* 0 live, 1 being revoked, 2 revoked (tokens_revoke has returned). */
static atomic_int pool_revoked[POOL];

/* Each minter's newest token, for validators to meet in the cache. */
static pthread_mutex_t latest_lock = PTHREAD_MUTEX_INITIALIZER;
static char *latest[MINTERS];

enum { ROLE_MINTER, ROLE_VALIDATOR, ROLE_REVOKER, ROLE_ROTATOR };

struct worker {
    int role, index;
    int errors;
    long done;
};

static int validate_as(const char *jwt, const char *sub, char *jti_out)
{
    token_entry *e = NULL;
    char why[128] = "";
    int good;

    if (tokens_validate(tk, jwt, (int64_t)time(NULL), &e, why, sizeof(why)) !=
        AD_OK)
        return 0;
    good = strcmp(e->sub, sub) == 0 && e->exp > (int64_t)time(NULL) &&
           strcmp(e->scope, "publish:t/#") == 0;
    if (jti_out)
        util_strlcpy(jti_out, e->jti, 64);
    token_release(e);
    return good;
}

static void *minter_main(struct worker *me)
{
    char sub[32], *jwt = NULL, jti[64];
    int64_t exp = 0;
    int i;

    snprintf(sub, sizeof(sub), "dev-%d", me->index);
    for (i = 0; i < MINTS_MAX && !conc_expired(&deadline); i++) {
        if (tokens_mint(tk, sub, "inc0", "publish:t/#", NULL, NULL,
                        (int64_t)time(NULL), &jwt, &exp) != AD_OK) {
            me->errors++;
            continue;
        }
        if (!validate_as(jwt, sub, jti))
            me->errors++;
        /* Every tenth one is revoked at once: it must stop validating. */
        if (i % 10 == 9) {
            if (tokens_revoke(tk, "conc", jti) != AD_OK ||
                !tokens_is_revoked(tk, jti) || validate_as(jwt, sub, NULL))
                me->errors++;
            free(jwt);
        } else {
            pthread_mutex_lock(&latest_lock);
            free(latest[me->index]);
            latest[me->index] = jwt;
            pthread_mutex_unlock(&latest_lock);
        }
        jwt = NULL;
        me->done++;
    }
    atomic_fetch_sub(&busy, 1);
    return NULL;
}

static void *validator_main(struct worker *me)
{
    unsigned i = (unsigned)me->index * 7u;

    while (atomic_load(&busy) > 0) {
        int k = (int)(i++ % POOL), before, after, good;
        char *mine = NULL, sub[32];

        /* A revocation that returned before we began must refuse the
         * token; one not yet begun when we ended must not. */
        before = atomic_load(&pool_revoked[k]);
        good = validate_as(pool[k], k % 2 ? "pool-odd" : "pool-even", NULL);
        after = atomic_load(&pool_revoked[k]);
        if ((before == 2 && good) || (after == 0 && !good))
            me->errors++;
        pthread_mutex_lock(&latest_lock);
        if (latest[i % MINTERS] != NULL)
            mine = strdup(latest[i % MINTERS]);
        pthread_mutex_unlock(&latest_lock);
        snprintf(sub, sizeof(sub), "dev-%u", i % MINTERS);
        if (mine != NULL && !validate_as(mine, sub, NULL))
            me->errors++;
        free(mine);
        me->done++;
    }
    return NULL;
}

/* Revokes the second half of the pool, one token at a time. */
static void *revoker_main(struct worker *me)
{
    int k;

    for (k = POOL / 2; k < POOL && atomic_load(&busy) > 0; k++) {
        struct timespec pause = {0, 20 * 1000 * 1000};

        atomic_store(&pool_revoked[k], 1);
        if (tokens_revoke(tk, "conc", pool_jti[k]) != AD_OK)
            me->errors++;
        atomic_store(&pool_revoked[k], 2);
        me->done++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void *rotator_main(struct worker *me)
{
    char kid[TOK_KID_MAX], err[256];
    int i;

    for (i = 0; i < ROTATIONS_MAX && !conc_expired(&deadline); i++) {
        struct timespec pause = {0, 100 * 1000 * 1000};
        json_t *jwks;

        if (tokens_rotate(tk, "system", kid, err, sizeof(err)) != AD_OK) {
            tap_diag("rotate: %s", err);
            me->errors++;
        }
        jwks = tokens_jwks(tk);
        if (json_array_size(json_object_get(jwks, "keys")) < (size_t)i + 2)
            me->errors++;
        json_decref(jwks);
        me->done++;
        nanosleep(&pause, NULL);
    }
    atomic_fetch_sub(&busy, 1);
    return NULL;
}

static void *role_main(void *arg)
{
    struct worker *me = arg;

    switch (me->role) {
    case ROLE_MINTER:
        return minter_main(me);
    case ROLE_VALIDATOR:
        return validator_main(me);
    case ROLE_REVOKER:
        return revoker_main(me);
    default:
        return rotator_main(me);
    }
}

static int open_tokens(void)
{
    tokens_config cfg = {keydir, "https://authd.test", "mqtt", 3600, NULL};
    char err[256] = "";

    if (tokens_open(&cfg, st, &tk, err, sizeof(err)) != AD_OK) {
        tap_diag("tokens_open: %s", err);
        return 0;
    }
    return 1;
}

static void test_tokens_mint_validate_revoke_rotate_from_many_threads(void)
{
    enum { N = MINTERS + VALIDATORS + 2 };
    struct worker w[N];
    char path[400], err[256] = "", *pem;
    int64_t exp;
    int i, errors = 0, pool_ok = 1;

    memset(w, 0, sizeof(w));
    pem = tok_new_key_pem();
    snprintf(path, sizeof(path), "%s/k0.key", keydir);
    ok(pem != NULL && util_write_file(path, pem, strlen(pem), 0600) == 0,
       "a first signing key is written");
    free(pem);
    ok(store_open(dir, 64, &st, err, sizeof(err)) == AD_OK && open_tokens(),
       "the store and the token service open (%s)", err);
    if (tk == NULL)
        return;
    for (i = 0; i < POOL; i++) {
        pool_ok &= tokens_mint(tk, i % 2 ? "pool-odd" : "pool-even", "inc0",
                               "publish:t/#", NULL, NULL, (int64_t)time(NULL),
                               &pool[i], &exp) == AD_OK &&
                   validate_as(pool[i], i % 2 ? "pool-odd" : "pool-even",
                               pool_jti[i]);
        atomic_init(&pool_revoked[i], 0);
    }
    ok(pool_ok, "the pool of tokens is minted and validates");

    for (i = 0; i < N; i++) {
        w[i].role = i < MINTERS                ? ROLE_MINTER
                    : i < MINTERS + VALIDATORS ? ROLE_VALIDATOR
                    : i == N - 2               ? ROLE_REVOKER
                                               : ROLE_ROTATOR;
        w[i].index = i < MINTERS ? i : i - MINTERS;
    }
    atomic_init(&busy, MINTERS + 1);
    deadline = conc_deadline_in(conc_budget());
    ok(conc_run(N, role_main, w, sizeof(w[0])) == 0, "every thread starts");
    for (i = 0; i < N; i++) {
        errors += w[i].errors;
        tap_diag("role %d #%d: %ld operations, %d errors", w[i].role,
                 w[i].index, w[i].done, w[i].errors);
    }
    ok(errors == 0,
       "every mint validated as its device, every revocation bit at once, "
       "every rotation kept the old keys (%d errors)", errors);

    /* After the rotations: the first half of the pool, signed by the
     * first key, still validates; the revoked half does not. */
    pool_ok = 1;
    for (i = 0; i < POOL; i++) {
        int good = validate_as(pool[i], i % 2 ? "pool-odd" : "pool-even", NULL);
        pool_ok &= atomic_load(&pool_revoked[i]) ? !good : good;
    }
    ok(pool_ok, "after rotation old tokens validate unless revoked");

    /* A restart reads the revoked jtis and the keys back. */
    tokens_close(tk);
    tk = NULL;
    pool_ok = open_tokens();
    for (i = 0; pool_ok && i < POOL; i++) {
        int good = validate_as(pool[i], i % 2 ? "pool-odd" : "pool-even", NULL);
        pool_ok &= atomic_load(&pool_revoked[i]) ? !good : good;
    }
    ok(pool_ok, "after reopening, revocations and old keys are as they were");
    tokens_close(tk);
    tk = NULL;
    store_close(st);
    st = NULL;
    for (i = 0; i < POOL; i++)
        free(pool[i]);
    for (i = 0; i < MINTERS; i++)
        free(latest[i]);
}

int main(void)
{
    int rc;

    if (conc_tmpdir("tokens", dir, sizeof(dir)) != 0)
        return 1;
    snprintf(keydir, sizeof(keydir), "%s/tokens", dir);
    if (mkdir(keydir, 0700) != 0)
        return 1;
    TAP_RUN(test_tokens_mint_validate_revoke_rotate_from_many_threads);
    rc = tap_done();
    conc_rmdir(dir);
    return rc;
}
