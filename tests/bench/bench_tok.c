/* Micro-benchmark of access tokens: tok_mint and tok_verify on one thread
 * with realistic claims, against `openssl speed ecdsap256` run right
 * after them, in TOK_ROUNDS rounds (default 3) whose median ratio is
 * quoted (the goal is >= 0.8x its sign/s and verify/s), verify scaling over all cores (the ring's read lock must not be the
 * bottleneck), and libjwt 1.10 for comparison when built with it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../../authd/tok.h"

#ifdef HAVE_LIBJWT
#include <jwt.h>
#endif

enum { POOL = 1024, MAX_THREADS = 16 };

static const double SECONDS = 1.0;
enum { MAX_ROUNDS = 15 };
static const char ISSUER[] = "https://authd.example.com";

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The claims /v1/token mints for a certificate-bound device. */
static json_t *claims_for(int i)
{
    char sub[32], jti[64];

    snprintf(sub, sizeof(sub), "dev-%06d", i);
    snprintf(jti, sizeof(jti), "9f2c4e1a-%08x-4b7d-a3c1-5e6f7a8b9c0d", (unsigned)i);
    return json_pack(
        "{s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:{s:s},s:[{s:s,s:s,s:s},{s:s,s:s,s:s},"
        "{s:s,s:s,s:s}]}",
        "iss", ISSUER, "sub", sub, "aud", "mqtt", "iat", (json_int_t)1700000000,
        "exp", (json_int_t)1700003600, "jti", jti, "scope",
        "publish:devices/dev/telemetry/# subscribe:devices/dev/cmd/+",
        "cnf", "x5t#S256", "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2",
        "acl", "permission", "allow", "action", "publish", "topic",
        "devices/dev/telemetry/#", "permission", "allow", "action", "subscribe",
        "topic", "devices/dev/cmd/+", "permission", "deny", "action", "all",
        "topic", "#");
}

struct vjob {
    tok_ring *ring;
    char **pool;
    double seconds;
    long count, failures;
};

static void *verify_loop(void *arg)
{
    struct vjob *j = arg;
    tok_expect x = {ISSUER, "mqtt", 1700000100, 30};
    double start = now_s(), end = start + j->seconds;
    long n = 0;

    do {
        int k;

        for (k = 0; k < 64; k++, n++)
            if (tok_verify(j->ring, j->pool[n % POOL], &x, NULL, NULL, 0) != AD_OK)
                j->failures++;
    } while (now_s() < end);
    j->count = n;
    j->seconds = now_s() - start;
    return NULL;
}

/* `openssl speed -seconds 1 ecdsap256`: its sign/s and verify/s. */
static int openssl_speed(double *sign, double *verify)
{
    FILE *p = popen("openssl speed -seconds 1 ecdsap256 2>/dev/null", "r");
    char line[512];
    int found = 0;

    if (p == NULL)
        return -1;
    while (fgets(line, sizeof(line), p) != NULL) {
        const char *at = strstr(line, "(nistp256)");

        if (at != NULL &&
            sscanf(at + 10, "%*fs %*fs %lf %lf", sign, verify) == 2)
            found = 1;
    }
    pclose(p);
    return found ? 0 : -1;
}

#ifdef HAVE_LIBJWT
static char *public_pem(const char *priv)
{
    BIO *in = BIO_new_mem_buf(priv, -1), *out = BIO_new(BIO_s_mem());
    EVP_PKEY *k = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    char *data = NULL, *pem = NULL;
    long n;

    if (k != NULL && PEM_write_bio_PUBKEY(out, k) == 1 &&
        (n = BIO_get_mem_data(out, &data)) > 0)
        pem = strndup(data, (size_t)n);
    EVP_PKEY_free(k);
    BIO_free(in);
    BIO_free(out);
    return pem;
}

/* libjwt as a caller would use it: a jwt_t per token, the PEM key handed
 * over each time (libjwt parses it inside every encode and decode). */
static void bench_libjwt(const char *priv, const char *payload)
{
    char *pub = public_pem(priv), *tok = NULL;
    double start, end, t;
    long n = 0, bad = 0;

    if (pub == NULL)
        return;
    start = now_s();
    end = start + SECONDS;
    do {
        jwt_t *j = NULL;

        free(tok);
        tok = NULL;
        if (jwt_new(&j) != 0 ||
            jwt_set_alg(j, JWT_ALG_ES256, (const unsigned char *)priv,
                        (int)strlen(priv)) != 0 ||
            jwt_add_grants_json(j, payload) != 0 || (tok = jwt_encode_str(j)) == NULL)
            bad++;
        jwt_free(j);
        n++;
    } while ((n & 15) != 0 || now_s() < end);
    t = now_s() - start;
    printf("libjwt 1.10 jwt_encode_str: %9.0f tokens/s%s\n", (double)n / t,
           bad ? " (with failures)" : "");

    n = bad = 0;
    start = now_s();
    end = start + SECONDS;
    do {
        jwt_t *j = NULL;

        if (tok == NULL || jwt_decode(&j, tok, (const unsigned char *)pub,
                                      (int)strlen(pub)) != 0)
            bad++;
        jwt_free(j);
        n++;
    } while ((n & 15) != 0 || now_s() < end);
    t = now_s() - start;
    printf("libjwt 1.10 jwt_decode:     %9.0f verifies/s%s\n", (double)n / t,
           bad ? " (with failures)" : "");
    free(tok);
    free(pub);
}
#endif

static long env_long(const char *name, long dflt, long lo, long hi)
{
    const char *v = getenv(name);
    char *end;
    long x;

    if (v == NULL || *v == '\0')
        return dflt;
    x = strtol(v, &end, 10);
    return *end == '\0' && x >= lo && x <= hi ? x : dflt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, long n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(void)
{
    char *pem = tok_new_key_pem(), **pool = calloc(POOL, sizeof(char *));
    char err[256] = "", *payload = NULL;
    tok_ring *ring = NULL;
    json_t *claims = NULL;
    double start, end, t, mint_rate, verify_rate, ssl_sign = 0, ssl_verify = 0;
    long n = 0, i, r, cpus = sysconf(_SC_NPROCESSORS_ONLN), failures = 0;
    long rounds = env_long("TOK_ROUNDS", 3, 1, MAX_ROUNDS), done = 0;
    double mint_ratio[MAX_ROUNDS], verify_ratio[MAX_ROUNDS];
    struct vjob jobs[MAX_THREADS];
    pthread_t th[MAX_THREADS];

    if (pem == NULL || pool == NULL || tok_ring_new(&ring) != AD_OK ||
        tok_ring_add(ring, "bench-1", pem, 1, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "bench_tok: setup failed: %s\n", err);
        return 1;
    }

    /* Rounds, each ours then openssl's: on a shared, noisy machine a
     * ratio is only meaningful between figures taken side by side, and
     * the median ratio over rounds is what is quoted. */
    claims = claims_for(1);
    for (r = 0; r < rounds; r++) {
        /* Minting: the same claims object with a fresh jti each time, as
         * the token endpoint builds one per request. */
        long minted = 0;

        start = now_s();
        end = start + SECONDS;
        do {
            char *jwt = NULL, jti[64];

            snprintf(jti, sizeof(jti), "9f2c4e1a-%08lx-4b7d-a3c1-5e6f7a8b9c0d",
                     n);
            json_object_set_new(claims, "jti", json_string(jti));
            if (tok_mint(ring, claims, &jwt) != AD_OK)
                failures++;
            if (n < POOL)
                pool[n] = jwt;
            else
                free(jwt);
            n++;
            minted++;
        } while (n < POOL || (minted & 63) != 0 || now_s() < end);
        t = now_s() - start;
        mint_rate = (double)minted / t;

        /* Verifying: a pool of distinct tokens, nothing cached. */
        jobs[0] = (struct vjob){ring, pool, SECONDS, 0, 0};
        verify_loop(&jobs[0]);
        verify_rate = (double)jobs[0].count / jobs[0].seconds;
        failures += jobs[0].failures;
        if (openssl_speed(&ssl_sign, &ssl_verify) != 0) {
            printf("openssl speed ecdsap256: not available\n");
            break;
        }
        mint_ratio[r] = mint_rate / ssl_sign;
        verify_ratio[r] = verify_rate / ssl_verify;
        printf("round %ld: tok_mint %9.0f tokens/s, tok_verify %9.0f "
               "verifies/s; openssl speed ecdsap256 %9.0f sign/s, %9.0f "
               "verify/s; ratio mint %.2fx verify %.2fx\n",
               r + 1, mint_rate, verify_rate, ssl_sign, ssl_verify,
               mint_ratio[r], verify_ratio[r]);
        done++;
    }
    payload = json_dumps(claims, JSON_COMPACT);
    printf("token size: %zu bytes\n", pool[0] ? strlen(pool[0]) : (size_t)0);
    if (done > 0)
        printf("ratio (median of %ld rounds): mint %.2fx sign/s, verify %.2fx "
               "verify/s (goal >= 0.80)\n",
               done, median(mint_ratio, done), median(verify_ratio, done));

    /* The same on every core at once: with a shared read lock per call,
     * this should scale with the cores. */
    if (cpus > MAX_THREADS)
        cpus = MAX_THREADS;
    if (cpus > 1) {
        double total = 0;

        jobs[0] = (struct vjob){ring, pool, SECONDS, 0, 0};
        verify_loop(&jobs[0]);
        verify_rate = (double)jobs[0].count / jobs[0].seconds;
        for (i = 0; i < cpus; i++) {
            jobs[i] = (struct vjob){ring, pool, SECONDS, 0, 0};
            pthread_create(&th[i], NULL, verify_loop, &jobs[i]);
        }
        for (i = 0; i < cpus; i++) {
            pthread_join(th[i], NULL);
            total += (double)jobs[i].count / jobs[i].seconds;
            failures += jobs[i].failures;
        }
        printf("tok_verify: %9.0f verifies/s on one thread, %9.0f on %ld "
               "threads (%.2fx)\n",
               verify_rate, total, cpus, total / verify_rate);
    }

#ifdef HAVE_LIBJWT
    if (payload != NULL)
        bench_libjwt(pem, payload);
#endif

    if (failures)
        fprintf(stderr, "bench_tok: %ld operations failed\n", failures);
    for (i = 0; i < POOL; i++)
        free(pool[i]);
    free(pool);
    free(payload);
    json_decref(claims);
    tok_ring_free(ring);
    free(pem);
    return failures ? 1 : 0;
}
