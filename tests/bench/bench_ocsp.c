/* OCSP responder and CRL throughput on one core. A fresh CA, 100k issued
 * serials of which 10k are revoked (kept in a small open-addressing table
 * here; the daemon has its own store), then for a few seconds: parse a
 * real OpenSSL-built request (one CertID, with nonce) for a random
 * serial, check that it names our CA, look the serial up, build and sign
 * the response. Then the CRL of the 10k revoked entries, regenerated in
 * a loop. Printed beside the raw cost of one ECDSA P-256 signature
 * measured in the same run (the floor for a response).
 * Usage: bench_ocsp [seconds]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ca/ca.h"

enum {
    ISSUED = 100000,
    REVOKED = 10000,
    TABLE_BITS = 18, /* 262144 slots: load factor 0.38 */
    REQUESTS = 4096, /* distinct pre-built requests to cycle through */
    CRL_ROUNDS_MIN = 10
};

typedef struct {
    uint8_t serial[CA_SERIAL_MAX];
    uint8_t used, revoked, reason;
    int64_t revoked_at;
} slot;

static slot *table;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t slot_of(const uint8_t *serial)
{
    uint64_t h = 1469598103934665603ULL;
    size_t i;

    for (i = 0; i < CA_SERIAL_MAX; i++)
        h = (h ^ serial[i]) * 1099511628211ULL;
    return (size_t)(h & ((1u << TABLE_BITS) - 1));
}

static slot *lookup(const uint8_t *serial, size_t len, int insert)
{
    size_t i;

    if (len != CA_SERIAL_MAX)
        return NULL;
    for (i = slot_of(serial);; i = (i + 1) & ((1u << TABLE_BITS) - 1)) {
        if (!table[i].used) {
            if (!insert)
                return NULL;
            table[i].used = 1;
            memcpy(table[i].serial, serial, CA_SERIAL_MAX);
            return &table[i];
        }
        if (memcmp(table[i].serial, serial, CA_SERIAL_MAX) == 0)
            return &table[i];
    }
}

/* One OCSPRequest (SHA-1 CertID, 16-byte nonce) as `openssl ocsp` sends. */
static uint8_t *make_request(X509 *issuer, const uint8_t *serial, size_t *len)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    uint8_t *der = NULL, *out = NULL;
    int n;

    ASN1_STRING_set(sn, serial, CA_SERIAL_MAX);
    OCSP_request_add0_id(req, OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer),
                                               X509_get0_pubkey_bitstr(issuer), sn));
    OCSP_request_add1_nonce(req, NULL, -1);
    n = i2d_OCSP_REQUEST(req, &der);
    if (n > 0 && (out = malloc((size_t)n)) != NULL) {
        memcpy(out, der, (size_t)n);
        *len = (size_t)n;
    }
    OPENSSL_free(der);
    ASN1_INTEGER_free(sn);
    OCSP_REQUEST_free(req);
    return out;
}

/* The floor: one ECDSA P-256 signature with a legacy EC_KEY, in us. */
static double raw_sign_us(double secs)
{
    EC_KEY *k = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    uint8_t dg[32];
    double t0, t1;
    long n = 0, i;

    EC_KEY_generate_key(k);
    RAND_bytes(dg, sizeof(dg));
    t0 = now_s();
    do {
        for (i = 0; i < 100; i++)
            ECDSA_SIG_free(ECDSA_do_sign(dg, 32, k));
        n += 100;
    } while ((t1 = now_s()) - t0 < secs);
    EC_KEY_free(k);
    return (t1 - t0) / (double)n * 1e6;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0, t0, t1, crl_ms, sign_us, ocsp_us;
    static uint8_t serials[ISSUED][CA_SERIAL_MAX];
    ca_revoked *revoked = NULL;
    uint8_t *reqs[REQUESTS], *crl = NULL;
    size_t req_lens[REQUESTS], crl_len = 0, i;
    ca_material m;
    ca *c = NULL;
    X509 *issuer = NULL;
    BIO *bio;
    char err[256] = "";
    long n = 0, n_revoked = 0, n_crl = 0;
    int64_t now = (int64_t)time(NULL);
    static ca_ocsp_request req;

    if (secs <= 0)
        secs = 2.0;
    table = calloc((size_t)1 << TABLE_BITS, sizeof(*table));
    revoked = calloc(REVOKED, sizeof(*revoked));
    if (table == NULL || revoked == NULL || ca_global_init() != AD_OK ||
        ca_generate(NULL, &m, err, sizeof(err)) != AD_OK ||
        ca_open(m.issuing_cert_pem, m.issuing_key_pem, NULL, &c, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "bench_ocsp: setup failed: %s\n", err);
        return 1;
    }
    bio = BIO_new_mem_buf(m.issuing_cert_pem, -1);
    issuer = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);

    /* 100k serials as ca_issue makes them; every 10th one revoked. */
    for (i = 0; i < ISSUED; i++) {
        slot *s;

        RAND_bytes(serials[i], CA_SERIAL_MAX);
        serials[i][0] = (uint8_t)(1 + serials[i][0] % 0x7f);
        s = lookup(serials[i], CA_SERIAL_MAX, 1);
        if (i % 10 == 0) {
            ca_revoked *r = &revoked[i / 10];

            s->revoked = 1;
            s->reason = (uint8_t)(i % 3 == 0 ? CA_REASON_KEY_COMPROMISE
                                             : CA_REASON_CESSATION_OF_OPERATION);
            s->revoked_at = now - (int64_t)i;
            memcpy(r->serial, serials[i], CA_SERIAL_MAX);
            r->serial_len = CA_SERIAL_MAX;
            r->revoked_at = s->revoked_at;
            r->reason = (ca_reason)s->reason;
        }
    }
    for (i = 0; i < REQUESTS; i++) {
        size_t pick = (size_t)rand() % ISSUED;

        if ((reqs[i] = make_request(issuer, serials[pick], &req_lens[i])) == NULL)
            return 1;
    }

    t0 = now_s();
    do {
        for (i = 0; i < 64; i++) {
            size_t k = (size_t)(n + (long)i) % REQUESTS;
            ca_ocsp_answer ans;
            uint8_t *resp = NULL;
            size_t resp_len = 0;
            const slot *s;

            if (ca_ocsp_request_parse(reqs[k], req_lens[k], &req, err, sizeof(err)) != AD_OK) {
                fprintf(stderr, "bench_ocsp: %s\n", err);
                return 1;
            }
            memset(&ans, 0, sizeof(ans));
            ans.this_update = now;
            ans.next_update = now + 3600;
            s = ca_ocsp_id_is_ours(c, &req.ids[0])
                    ? lookup(req.ids[0].serial, req.ids[0].serial_len, 0)
                    : NULL;
            if (s == NULL) {
                ans.status = CA_OCSP_UNKNOWN;
            } else if (s->revoked) {
                ans.status = CA_OCSP_REVOKED;
                ans.revoked_at = s->revoked_at;
                ans.reason = (ca_reason)s->reason;
                n_revoked++;
            } else {
                ans.status = CA_OCSP_GOOD;
            }
            if (ca_ocsp_respond(c, &req, &ans, now, &resp, &resp_len, err, sizeof(err)) !=
                AD_OK) {
                fprintf(stderr, "bench_ocsp: %s\n", err);
                return 1;
            }
            free(resp);
        }
        n += 64;
    } while ((t1 = now_s()) - t0 < secs);
    ocsp_us = (t1 - t0) / (double)n * 1e6;
    printf("OCSP parse+lookup+build+sign, 1 thread: %.0f responses/s/core "
           "(%.1f us each, %ld in %.2f s, %.1f%% revoked)\n",
           (double)n / (t1 - t0), ocsp_us, n, t1 - t0,
           100.0 * (double)n_revoked / (double)n);

    t0 = now_s();
    do {
        free(crl);
        crl = NULL;
        if (ca_crl_build(c, revoked, REVOKED, (uint64_t)n_crl + 1, now, now + 86400, &crl,
                         &crl_len, err, sizeof(err)) != AD_OK) {
            fprintf(stderr, "bench_ocsp: %s\n", err);
            return 1;
        }
        n_crl++;
    } while ((t1 = now_s()) - t0 < secs / 2 || n_crl < CRL_ROUNDS_MIN);
    crl_ms = (t1 - t0) / (double)n_crl * 1e3;
    printf("CRL with %d revoked entries: %.2f ms each (%zu bytes, %ld builds)\n", REVOKED,
           crl_ms, crl_len, n_crl);

    sign_us = raw_sign_us(secs / 4);
    printf("raw ECDSA P-256 sign (OpenSSL, same run): %.1f us, so the responder "
           "runs at %.0f%% of the signature-bound ceiling\n",
           sign_us, 100.0 * sign_us / ocsp_us);
    free(crl);
    for (i = 0; i < REQUESTS; i++)
        free(reqs[i]);
    X509_free(issuer);
    free(revoked);
    free(table);
    ca_close(c);
    ca_material_free(&m);
    return 0;
}
