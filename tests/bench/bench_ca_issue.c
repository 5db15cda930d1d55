/* Issuance throughput on one core: parse+verify a P-256 CSR and issue a
 * device certificate in a loop, printed beside the raw cost of one ECDSA
 * P-256 sign + verify measured in the same run (the floor: a CSR needs one
 * verify and the certificate one sign). Usage: bench_ca_issue [seconds]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "ca/ca.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *make_p256_csr(size_t *len)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    uint8_t *der = NULL, *out = NULL;
    int n;

    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *)"bench-device", -1, -1, 0);
    X509_REQ_set_subject_name(req, name);
    X509_REQ_set_pubkey(req, k);
    X509_REQ_sign(req, k, EVP_sha256());
    n = i2d_X509_REQ(req, &der);
    if (n > 0 && (out = malloc((size_t)n)) != NULL) {
        memcpy(out, der, (size_t)n);
        *len = (size_t)n;
    }
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return out;
}

/* The floor: ECDSA_do_sign + ECDSA_do_verify on P-256 with legacy EC
 * keys, i.e. the math with no encoding at all. Returns pairs/s. */
static double raw_ecdsa(double secs, double *sign_us, double *verify_us)
{
    EC_KEY *k = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    uint8_t dg[32];
    double t0, t1, t2;
    long n = 0, i;

    EC_KEY_generate_key(k);
    RAND_bytes(dg, sizeof(dg));
    t0 = now_s();
    do {
        for (i = 0; i < 100; i++) {
            ECDSA_SIG *s = ECDSA_do_sign(dg, 32, k);

            if (ECDSA_do_verify(dg, 32, s, k) != 1)
                abort();
            ECDSA_SIG_free(s);
        }
        n += 100;
    } while ((t1 = now_s()) - t0 < secs);
    /* Split into sign and verify with a short sign-only run. */
    t2 = now_s();
    for (i = 0; i < n / 4; i++)
        ECDSA_SIG_free(ECDSA_do_sign(dg, 32, k));
    *sign_us = (now_s() - t2) / (double)(n / 4) * 1e6;
    *verify_us = (t1 - t0) / (double)n * 1e6 - *sign_us;
    EC_KEY_free(k);
    return (double)n / (t1 - t0);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0, t0, t1, t2, t3, raw, s_us, v_us;
    ca_material m;
    ca *c = NULL;
    ca_profile p;
    size_t len = 0;
    uint8_t *csr_der;
    long n = 0, n_parse = 0, i;
    char err[256] = "";

    if (secs <= 0)
        secs = 2.0;
    if (ca_global_init() != AD_OK || ca_generate(NULL, &m, err, sizeof(err)) != AD_OK ||
        ca_open(m.issuing_cert_pem, m.issuing_key_pem, NULL, &c, err, sizeof(err)) != AD_OK ||
        (csr_der = make_p256_csr(&len)) == NULL) {
        fprintf(stderr, "bench_ca_issue: setup failed: %s\n", err);
        return 1;
    }
    memset(&p, 0, sizeof(p));
    p.kind = CA_PROFILE_DEVICE;
    p.common_name = "bench-device";
    p.san_uri = "urn:device:bench-device";
    p.not_before = (int64_t)time(NULL);
    p.not_after = p.not_before + 365 * 86400;
    p.crl_url = "http://authd.example/crl";

    t0 = now_s();
    do {
        for (i = 0; i < 50; i++) {
            ca_csr *csr = NULL;
            ca_issued iss;

            if (ca_csr_parse_der(csr_der, len, &csr, err, sizeof(err)) != AD_OK ||
                ca_issue(c, csr, &p, &iss, err, sizeof(err)) != AD_OK) {
                fprintf(stderr, "bench_ca_issue: %s\n", err);
                return 1;
            }
            ca_issued_free(&iss);
            ca_csr_free(csr);
        }
        n += 50;
    } while ((t1 = now_s()) - t0 < secs);

    /* CSR parse+verify alone: should sit just above the raw verify. */
    t2 = now_s();
    do {
        for (i = 0; i < 50; i++) {
            ca_csr *csr = NULL;

            if (ca_csr_parse_der(csr_der, len, &csr, NULL, 0) != AD_OK)
                return 1;
            ca_csr_free(csr);
        }
        n_parse += 50;
    } while ((t3 = now_s()) - t2 < secs / 4);

    raw = raw_ecdsa(secs / 2, &s_us, &v_us);
    printf("ca_issue (CSR parse+verify, build, sign, PEM), 1 thread: %.0f certs/s/core "
           "(%.1f us each, %ld in %.2f s)\n",
           (double)n / (t1 - t0), (t1 - t0) / (double)n * 1e6, n, t1 - t0);
    printf("raw ECDSA P-256 sign+verify (OpenSSL, same run):         %.0f pairs/s "
           "(sign %.1f us, verify %.1f us)\n",
           raw, s_us, v_us);
    printf("ca_csr_parse_der alone (P-256, fast path):               %.1f us each\n",
           (t3 - t2) / (double)n_parse * 1e6);
    printf("overhead over the raw math: %.0f%%\n",
           ((double)raw / ((double)n / (t1 - t0)) - 1.0) * 100.0);
    free(csr_der);
    ca_close(c);
    ca_material_free(&m);
    return 0;
}
