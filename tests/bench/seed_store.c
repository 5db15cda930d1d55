/* Seeds an authd data dir (initialised, daemon stopped) with N devices and
 * N real device certificates issued by the data dir's own CA, stored as
 * POST /v1/enroll stores them: the device record, the certificate record
 * in registry_commit_issue's exact layout, its three index entries and one
 * audit entry, all under one enrollment "seed". Certificates are signed
 * on several threads and written in large store_write batches, so 1M of
 * each takes minutes, not hours. For the store-scale benchmarks.
 *
 *   seed_store DATA_DIR N [THREADS]
 *
 * Prints "seeded N devices+certificates in S s". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "authd/registry.h"
#include "authd/store.h"
#include "authd/util.h"
#include "ca/ca.h"
#include "common/buf.h"
#include "common/codec.h"

#define BATCH 4096
#define MAX_THREADS 16
#define MAX_N 10000000L
#define TEXT_MAX (1024 * 1024)

struct seed_cert {
    char id[32];
    char *record; /* the certificate record, compact JSON */
    char *device; /* the device record, compact JSON */
    char serial[CA_SERIAL_HEX_MAX];
    char fpr[65];
    char ixval[16 + CA_SERIAL_HEX_MAX];
};

struct job {
    const ca *c;
    const ca_csr *csr;
    struct seed_cert *certs;
    long first, count, base; /* certs[first..first+count), ids base+i */
    int failed;
};

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    buf_t b;
    char chunk[4096];
    size_t n;

    if (f == NULL)
        return NULL;
    buf_init(&b, TEXT_MAX);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (buf_append(&b, chunk, n) != 0)
            break;
    fclose(f);
    return buf_take(&b, NULL);
}

/* One CSR for every certificate: only the signing and the records matter
 * here, and a fresh key per device would cost more than the issuance. */
static ca_csr *make_csr(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    BIO *bio = BIO_new(BIO_s_mem());
    ca_csr *csr = NULL;
    char err[256];
    char *pem;
    long len;

    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *)"seed-device", -1, -1,
                               0);
    X509_REQ_set_subject_name(req, name);
    X509_REQ_set_pubkey(req, k);
    X509_REQ_sign(req, k, EVP_sha256());
    PEM_write_bio_X509_REQ(bio, req);
    len = BIO_get_mem_data(bio, &pem);
    if (ca_csr_parse_pem(pem, (size_t)len, &csr, err, sizeof(err)) != AD_OK)
        fprintf(stderr, "seed_store: csr: %s\n", err);
    BIO_free(bio);
    X509_NAME_free(name);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return csr;
}

static void *issue_main(void *arg)
{
    struct job *j = arg;
    char now[32], nb[32], na[32], uri[64], err[256];
    time_t t = time(NULL);
    long i;

    util_time_rfc3339(t, now, sizeof(now));
    for (i = j->first; i < j->first + j->count && !j->failed; i++) {
        struct seed_cert *sc = &j->certs[i];
        ca_profile prof;
        ca_issued iss;
        buf_t rec;
        uint64_t us = (uint64_t)t * 1000000u + (uint64_t)(j->base + i);
        char inc[17];

        memset(&prof, 0, sizeof(prof));
        snprintf(sc->id, sizeof(sc->id), "S-%08ld", j->base + i);
        snprintf(uri, sizeof(uri), "urn:device:%s", sc->id);
        prof.kind = CA_PROFILE_DEVICE;
        prof.common_name = sc->id;
        prof.san_uri = uri;
        prof.not_before = (int64_t)t - 60;
        prof.not_after = (int64_t)t + 365 * 86400;
        if (ca_issue(j->c, j->csr, &prof, &iss, err, sizeof(err)) != AD_OK) {
            fprintf(stderr, "seed_store: issue: %s\n", err);
            j->failed = 1;
            break;
        }
        util_strlcpy(sc->serial, iss.serial_hex, sizeof(sc->serial));
        codec_hex_encode(iss.sha256, sizeof(iss.sha256), sc->fpr, 0);
        snprintf(sc->ixval, sizeof(sc->ixval), "%016llx%s",
                 (unsigned long long)us, iss.serial_hex);
        util_time_rfc3339((time_t)iss.not_before, nb, sizeof(nb));
        util_time_rfc3339((time_t)iss.not_after, na, sizeof(na));
        /* The layout of registry_commit_issue, field for field. */
        buf_init(&rec, 64 * 1024);
        buf_append_str(&rec, "{");
        util_json_kv(&rec, "serial", iss.serial_hex);
        util_json_kv(&rec, "device_id", sc->id);
        util_json_kv(&rec, "enrollment", "seed");
        util_json_kv(&rec, "kind", "device");
        util_json_kv(&rec, "not_before", nb);
        util_json_kv(&rec, "not_after", na);
        util_json_kv(&rec, "status", "valid");
        util_json_kv(&rec, "issued_at", now);
        util_json_kv(&rec, "revoked_at", NULL);
        util_json_kv(&rec, "reason", NULL);
        util_json_kv(&rec, "fingerprint", sc->fpr);
        util_json_kv(&rec, "pem", iss.pem);
        buf_append_str(&rec, "}");
        sc->record = buf_take(&rec, NULL);
        ca_issued_free(&iss);
        /* The device as an enrollment creates it (issue_device). */
        if (util_random_hex(8, inc, sizeof(inc)) != AD_OK)
            inc[0] = '\0';
        buf_init(&rec, 4096);
        buf_append_str(&rec, "{");
        util_json_kv(&rec, "id", sc->id);
        util_json_kv(&rec, "status", "active");
        buf_append_str(&rec, ",\"groups\":[\"seed\"],\"policies\":[],"
                             "\"attributes\":{}");
        util_json_kv(&rec, "created_at", now);
        util_json_kv(&rec, "updated_at", now);
        util_json_kv(&rec, "enrollment", "seed");
        util_json_kv(&rec, "incarnation", inc);
        buf_append_str(&rec, "}");
        sc->device = buf_take(&rec, NULL);
        if (sc->record == NULL || sc->device == NULL)
            j->failed = 1;
    }
    return NULL;
}

struct put_batch {
    struct seed_cert *certs;
    long n;
};

static ad_err put_batch_write(store_txn *tx, void *arg)
{
    struct put_batch *b = arg;
    json_t *detail = NULL;
    ad_err e = AD_OK;
    long i;

    for (i = 0; i < b->n && e == AD_OK; i++) {
        struct seed_cert *sc = &b->certs[i];

        e = store_put_text(tx, STORE_DEVICES, sc->id, sc->device,
                           strlen(sc->device), STORE_NOOVERWRITE);
        if (e == AD_OK)
            e = store_put_text(tx, STORE_CERTS, sc->serial, sc->record,
                               strlen(sc->record), STORE_NOOVERWRITE);
        if (e == AD_OK)
            e = store_index_add(tx, STORE_IX_CERTS_BY_FPR, sc->fpr,
                                sc->serial);
        if (e == AD_OK)
            e = store_index_add(tx, STORE_IX_CERTS_BY_DEVICE, sc->id,
                                sc->ixval);
        if (e == AD_OK)
            e = store_index_add(tx, STORE_IX_CERTS_BY_ENROLLMENT, "seed",
                                sc->ixval);
        if (e == AD_OK) {
            detail = json_pack("{s:s, s:s, s:b}", "device_id", sc->id,
                               "enrollment", "seed", "device_created", 1);
            e = detail ? store_audit(tx, "enrollment:seed", "cert.enroll",
                                     sc->serial, detail)
                       : AD_ENOMEM;
            json_decref(detail);
        }
    }
    return e;
}

static ad_err put_enrollment(store_txn *tx, void *arg)
{
    char now[32], exp[32];
    const long *n = arg;
    json_t *enr;
    ad_err e;

    util_time_rfc3339(time(NULL), now, sizeof(now));
    util_time_rfc3339(time(NULL) + 86400, exp, sizeof(exp));
    enr = json_pack("{s:s, s:s, s:s, s:[s], s:I, s:I, s:s, s:s, s:I}", "id",
                    "seed", "name", "seed", "id_pattern", "*", "groups",
                    "seed", "max_uses", (json_int_t)100000000, "used",
                    (json_int_t)*n, "created_at", now, "expires_at", exp,
                    "cert_days", (json_int_t)365);
    if (enr == NULL)
        return AD_ENOMEM;
    e = store_put(tx, STORE_ENROLLMENTS, "seed", enr, 0);
    json_decref(enr);
    return e;
}

int main(int argc, char **argv)
{
    char path[4096], err[256];
    char *cert_pem = NULL, *key_pem = NULL;
    ca *c = NULL;
    ca_csr *csr = NULL;
    store *st = NULL;
    struct seed_cert *certs = NULL;
    long n, done = 0, i, threads = 2;
    uint64_t t0;
    int rc = 1;

    if (argc < 3 || (n = strtol(argv[2], NULL, 10)) <= 0 || n > MAX_N) {
        fprintf(stderr, "usage: seed_store DATA_DIR N [THREADS]\n");
        return 2;
    }
    if (argc > 3)
        threads = strtol(argv[3], NULL, 10);
    if (threads < 1 || threads > MAX_THREADS)
        threads = 2;
    if (ca_global_init() != AD_OK)
        return 1;
    snprintf(path, sizeof(path), "%s/ca/issuing.pem", argv[1]);
    cert_pem = read_file(path);
    snprintf(path, sizeof(path), "%s/ca/issuing.key", argv[1]);
    key_pem = read_file(path);
    if (cert_pem == NULL || key_pem == NULL) {
        fprintf(stderr, "seed_store: no CA in %s/ca (run authd init)\n",
                argv[1]);
        goto out;
    }
    if (ca_open(cert_pem, key_pem, NULL, &c, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "seed_store: ca: %s\n", err);
        goto out;
    }
    if ((csr = make_csr()) == NULL)
        goto out;
    snprintf(path, sizeof(path), "%s/store", argv[1]);
    if (store_open(path, 0, &st, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "seed_store: store: %s\n", err);
        goto out;
    }
    if (store_write(st, put_enrollment, &n) != AD_OK)
        goto out;
    certs = calloc(BATCH, sizeof(*certs));
    if (certs == NULL)
        goto out;
    t0 = util_now_ns();
    while (done < n) {
        long m = n - done < BATCH ? n - done : BATCH;
        pthread_t th[MAX_THREADS];
        struct job jobs[MAX_THREADS];
        struct put_batch b = {certs, m};
        int failed = 0;
        ad_err e;

        for (i = 0; i < threads; i++) {
            long per = (m + threads - 1) / threads;
            long first = i * per;

            jobs[i] = (struct job){c, csr, certs, first,
                                   first >= m ? 0
                                   : (first + per > m ? m - first : per),
                                   done, 0};
            pthread_create(&th[i], NULL, issue_main, &jobs[i]);
        }
        for (i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            failed |= jobs[i].failed;
        }
        e = failed ? AD_ECRYPTO : store_write(st, put_batch_write, &b);
        for (i = 0; i < m; i++) {
            free(certs[i].record);
            free(certs[i].device);
            certs[i].record = certs[i].device = NULL;
        }
        if (e != AD_OK) {
            fprintf(stderr, "seed_store: write failed: %s\n", ad_err_code(e));
            goto out;
        }
        done += m;
        if (done % (BATCH * 64) == 0)
            fprintf(stderr, "seed_store: %ld\n", done);
    }
    printf("seeded %ld devices+certificates in %.1f s\n", n,
           (double)(util_now_ns() - t0) / 1e9);
    rc = 0;
out:
    free(certs);
    store_close(st);
    ca_csr_free(csr);
    ca_close(c);
    free(cert_pem);
    free(key_pem);
    return rc;
}
