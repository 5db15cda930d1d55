/* Unit tests of ca/'s revocation support: RFC 5280 reason names, CRL v2
 * generation as OpenSSL decodes, verifies and uses it (the API and the
 * openssl CLI), and the OCSP responder: requests built by OpenSSL parsed
 * by ours, responses built by ours verified by OpenSSL's OCSP_basic_verify
 * and `openssl ocsp`, and hostile requests refused. The library does no
 * I/O; these tests may (temp files for the CLI). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "tap.h"

static ca_material mat;
static ca *the_ca;
static X509 *issuing, *root;
static int64_t now;
static char dir[] = "/tmp/test_ca_revocation.XXXXXX";

/* ---- helpers ------------------------------------------------------- */

static X509 *pem_to_x509(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

    BIO_free(b);
    return x;
}

static X509 *der_to_x509(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;

    return d2i_X509(NULL, &p, (long)len);
}

static char *bio_string(BIO *b)
{
    char *mem, *s;
    long n = BIO_get_mem_data(b, &mem);

    s = malloc((size_t)n + 1);
    memcpy(s, mem, (size_t)n);
    s[n] = '\0';
    return s;
}

/* Issues a device certificate for a fresh P-256 key on c; the key's
 * PEM goes to *key_out if non-NULL (caller frees). */
static int issue_leaf_key(ca *c, const char *cn, ca_issued *iss, char **key_out)
{
    ca_profile p;
    char *key = NULL;
    ad_err rc;

    memset(&p, 0, sizeof(p));
    p.kind = CA_PROFILE_DEVICE;
    p.common_name = cn;
    p.not_before = now - 60;
    p.not_after = now + 86400 * 30;
    rc = ca_issue_with_new_key(c, &p, iss, &key, NULL, 0);
    if (key_out != NULL)
        *key_out = key;
    else
        free(key);
    return rc == AD_OK;
}

static int issue_leaf(ca *c, const char *cn, ca_issued *iss)
{
    return issue_leaf_key(c, cn, iss, NULL);
}

static int write_file(const char *name, const void *data, size_t len,
                      char *path, size_t cap)
{
    FILE *f;
    int ok;

    snprintf(path, cap, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL)
        return 0;
    ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* Runs a shell command; returns its exit status and its output (stdout
 * and stderr, first 16 KiB) in out. */
static int run(const char *cmd, char *out, size_t cap)
{
    char full[2048];
    FILE *p;
    size_t n = 0;
    int st;

    snprintf(full, sizeof(full), "%s 2>&1", cmd);
    p = popen(full, "r");
    if (p == NULL)
        return -1;
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    /* One line, so that it can follow a TAP test point's description. */
    for (size_t i = 0; i < n; i++)
        if (out[i] == '\n' || out[i] == '\r' || out[i] == '\t')
            out[i] = ' ';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;

    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    return (int64_t)timegm(&tm);
}

static X509_CRL *d2i_crl(const uint8_t *der, size_t len)
{
    const uint8_t *p = der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);

    if (crl != NULL && p != der + len) {
        X509_CRL_free(crl);
        return NULL;
    }
    return crl;
}

/* A self-signed CA of another key type, made with OpenSSL, so that the
 * generic (non-P-256) signing paths are exercised. */
static int make_other_ca(const char *type, char **cert_pem, char **key_pem)
{
    EVP_PKEY *k = strcmp(type, "RSA2048") == 0 ? EVP_RSA_gen(2048)
                  : strcmp(type, "ED25519") == 0
                      ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                      : EVP_EC_gen(type);
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    BIO *b;
    int ok = 0;
    static const char *const exts[][2] = {
        {"basicConstraints", "critical,CA:TRUE"},
        {"keyUsage", "critical,digitalSignature,keyCertSign,cRLSign"},
        {"subjectKeyIdentifier", "hash"}};
    size_t i;

    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *)type, -1, -1, 0);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_set_version(x, 2);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, k);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    for (i = 0; i < 3; i++) {
        e = X509V3_EXT_conf(NULL, &ctx, exts[i][0], exts[i][1]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    if (X509_sign(x, k, strcmp(type, "ED25519") == 0 ? NULL : EVP_sha256()) > 0) {
        b = BIO_new(BIO_s_mem());
        PEM_write_bio_X509(b, x);
        *cert_pem = bio_string(b);
        BIO_free(b);
        b = BIO_new(BIO_s_mem());
        PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
        *key_pem = bio_string(b);
        BIO_free(b);
        ok = 1;
    }
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(k);
    return ok;
}

/* An OCSPRequest for the given certificates issued by issuer, DER
 * (malloc()ed); the OCSP_REQUEST is returned in *req_out if non-NULL. */
static uint8_t *make_request(X509 *const *certs, size_t n, X509 *issuer,
                             const EVP_MD *md, int nonce_len, size_t *len,
                             OCSP_REQUEST **req_out)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    uint8_t *der = NULL, *out = NULL;
    size_t i;
    int l;

    for (i = 0; i < n; i++)
        OCSP_request_add0_id(req, OCSP_cert_to_id(md, certs[i], issuer));
    if (nonce_len != 0)
        OCSP_request_add1_nonce(req, NULL, nonce_len);
    l = i2d_OCSP_REQUEST(req, &der);
    if (l > 0) {
        out = malloc((size_t)l);
        memcpy(out, der, (size_t)l);
        *len = (size_t)l;
    }
    OPENSSL_free(der);
    if (req_out != NULL)
        *req_out = req;
    else
        OCSP_REQUEST_free(req);
    return out;
}

static OCSP_BASICRESP *basic_of(const uint8_t *der, size_t len, int *status)
{
    const uint8_t *p = der;
    OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    OCSP_BASICRESP *bs = NULL;

    *status = -1;
    if (r == NULL || p != der + len) {
        OCSP_RESPONSE_free(r);
        return NULL;
    }
    *status = OCSP_response_status(r);
    bs = OCSP_response_get1_basic(r);
    OCSP_RESPONSE_free(r);
    return bs;
}

/* OCSP_basic_verify as a relying party with only the root trusted and
 * the issuing CA's certificate at hand (what `-CAfile chain.pem` does). */
static int basic_verifies(OCSP_BASICRESP *bs, X509 *signer, X509 *anchor)
{
    X509_STORE *st = X509_STORE_new();
    STACK_OF(X509) *certs = sk_X509_new_null();
    int rc;

    X509_STORE_add_cert(st, anchor);
    sk_X509_push(certs, signer);
    rc = OCSP_basic_verify(bs, certs, st, 0);
    ERR_clear_error();
    sk_X509_free(certs);
    X509_STORE_free(st);
    return rc == 1;
}

/* ---- reasons and serials ------------------------------------------ */

static void test_reason_names_map_to_rfc5280_codes(void)
{
    static const struct {
        const char *name;
        int code;
    } t[] = {{"unspecified", 0},         {"keyCompromise", 1},
             {"cACompromise", 2},        {"affiliationChanged", 3},
             {"superseded", 4},          {"cessationOfOperation", 5},
             {"certificateHold", 6},     {"removeFromCRL", 8},
             {"privilegeWithdrawn", 9},  {"aACompromise", 10}};
    size_t i;
    int all = 1;
    ca_reason r = CA_REASON_SUPERSEDED;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ca_reason got = (ca_reason)-1;

        if (ca_reason_from_name(t[i].name, &got) != AD_OK || (int)got != t[i].code ||
            ca_reason_name(t[i].code) == NULL ||
            strcmp(ca_reason_name(t[i].code), t[i].name) != 0)
            all = 0;
    }
    ok(all, "every RFC 5280 reason name maps to its CRLReason code and back "
            "(the API takes names, the CRL carries codes)");
    ok(ca_reason_from_name("KeyCompromise", &r) == AD_EFIELD &&
           ca_reason_from_name("keycompromise", &r) == AD_EFIELD &&
           ca_reason_from_name("bogus", &r) == AD_EFIELD &&
           ca_reason_from_name("", &r) == AD_EFIELD &&
           ca_reason_from_name(NULL, &r) == AD_EFIELD,
       "names are matched exactly and case-sensitively; unknown names are refused");
    ok(r == CA_REASON_SUPERSEDED, "a refused name leaves the output unchanged");
    ok(ca_reason_name(7) == NULL && ca_reason_name(11) == NULL &&
           ca_reason_name(-1) == NULL,
       "code 7 (unused) and out-of-range codes have no name");
}

static void test_serial_hex_parses_to_minimal_magnitude(void)
{
    uint8_t s[CA_SERIAL_MAX];
    size_t n = 0;
    char forty[41], fortyone[42];

    ok(ca_serial_from_hex("00ab", s, &n) == AD_OK && n == 1 && s[0] == 0xab,
       "leading zero bytes are dropped (inspect's hex may keep a sign byte)");
    ok(ca_serial_from_hex("ABC", s, &n) == AD_OK && n == 2 && s[0] == 0x0a &&
           s[1] == 0xbc,
       "an odd number of digits is right-aligned and upper case is accepted");
    memset(forty, 'f', 40);
    forty[40] = '\0';
    memset(fortyone, '1', 41);
    fortyone[41] = '\0';
    ok(ca_serial_from_hex(forty, s, &n) == AD_OK && n == 20,
       "a 20-byte serial (what ca_issue makes) parses");
    ok(ca_serial_from_hex(fortyone, s, &n) == AD_EFIELD,
       "more than 20 bytes is refused (RFC 5280 4.1.2.2)");
    ok(ca_serial_from_hex("0", s, &n) == AD_EFIELD &&
           ca_serial_from_hex("", s, &n) == AD_EFIELD &&
           ca_serial_from_hex("12:34", s, &n) == AD_EFIELD &&
           ca_serial_from_hex("0x12", s, &n) == AD_EFIELD,
       "zero, empty, separators and prefixes are refused");
}

/* ---- CRL ------------------------------------------------------------ */

static void test_crl_decodes_with_every_field_and_verifies(void)
{
    ca_issued a, b;
    ca_revoked rv[3];
    uint8_t *der = NULL;
    size_t len = 0;
    char err[256] = "";
    X509_CRL *crl;
    ASN1_INTEGER *num = NULL;
    AUTHORITY_KEYID *aki = NULL;
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(issuing);
    EVP_PKEY *pub = X509_get0_pubkey(issuing);
    X509_REVOKED *rev = NULL;
    ASN1_ENUMERATED *reason;
    ASN1_INTEGER *ser;
    int found, i;

    if (!ok(issue_leaf(the_ca, "crl-a", &a) && issue_leaf(the_ca, "crl-b", &b),
            "setup: two certificates issued"))
        return;
    memset(rv, 0, sizeof(rv));
    memcpy(rv[0].serial, a.serial, a.serial_len);
    rv[0].serial_len = a.serial_len;
    rv[0].revoked_at = now - 100;
    rv[0].reason = CA_REASON_KEY_COMPROMISE;
    memcpy(rv[1].serial, b.serial, b.serial_len);
    rv[1].serial_len = b.serial_len;
    rv[1].revoked_at = now - 50;
    rv[1].reason = CA_REASON_UNSPECIFIED;
    rv[2].serial[0] = 0x80; /* needs a 0x00 sign byte in the INTEGER */
    rv[2].serial[1] = 0x01;
    rv[2].serial_len = 2;
    rv[2].revoked_at = now - 10;
    rv[2].reason = CA_REASON_AA_COMPROMISE;

    ok(ca_crl_build(the_ca, rv, 3, 42, now, now + 86400, &der, &len, err,
                    sizeof(err)) == AD_OK,
       "a CRL with three entries is built: %s", err);
    crl = d2i_crl(der, len);
    if (!ok(crl != NULL, "OpenSSL's d2i_X509_CRL decodes all of it"))
        goto out;
    ok(X509_CRL_get_version(crl) == 1, "the CRL is v2 (needed for extensions)");
    ok(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuing)) == 0,
       "the issuer is the issuing CA's subject (how verifiers find the CRL)");
    ok(asn1_time_unix(X509_CRL_get0_lastUpdate(crl)) == now &&
           asn1_time_unix(X509_CRL_get0_nextUpdate(crl)) == now + 86400,
       "thisUpdate and nextUpdate are the requested times");
    num = X509_CRL_get_ext_d2i(crl, NID_crl_number, &i, NULL);
    ok(num != NULL && ASN1_INTEGER_get(num) == 42 && i == 0,
       "the CRL number is 42 and non-critical (5.2.3)");
    aki = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, &i, NULL);
    ok(aki != NULL && aki->keyid != NULL && ski != NULL &&
           ASN1_OCTET_STRING_cmp(aki->keyid, ski) == 0,
       "the AKI is the issuing CA's SKI (5.2.1: required)");
    ok(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == 3, "three entries");

    ser = ASN1_INTEGER_new();
    ASN1_STRING_set(ser, a.serial, (int)a.serial_len);
    found = X509_CRL_get0_by_serial(crl, &rev, ser);
    reason = found ? X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL) : NULL;
    ok(found == 1 && asn1_time_unix(X509_REVOKED_get0_revocationDate(rev)) == now - 100 &&
           reason != NULL && ASN1_ENUMERATED_get(reason) == 1,
       "the first serial is listed with its date and reason keyCompromise");
    ASN1_ENUMERATED_free(reason);
    ASN1_STRING_set(ser, b.serial, (int)b.serial_len);
    found = X509_CRL_get0_by_serial(crl, &rev, ser);
    reason = found ? X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, &i, NULL) : NULL;
    ok(found == 1 && reason == NULL && i == -1,
       "the unspecified entry is listed without a reasonCode (5.3.1: SHOULD be absent)");
    ASN1_ENUMERATED_free(reason);
    ASN1_STRING_set(ser, "\x80\x01", 2);
    found = X509_CRL_get0_by_serial(crl, &rev, ser);
    reason = found ? X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL) : NULL;
    ok(found == 1 && reason != NULL && ASN1_ENUMERATED_get(reason) == 10,
       "a serial with its top bit set stays positive and keeps aACompromise (10)");
    ASN1_ENUMERATED_free(reason);
    ASN1_INTEGER_free(ser);

    ok(X509_CRL_verify(crl, pub) == 1,
       "the signature verifies with the issuing CA's key");
    {
        X509_CRL *bad;

        der[len / 2] ^= 0x01;
        bad = d2i_crl(der, len);
        ok(bad == NULL || X509_CRL_verify(bad, pub) != 1,
           "a CRL altered after signing does not verify");
        der[len / 2] ^= 0x01;
        X509_CRL_free(bad);
        ERR_clear_error();
    }
out:
    ASN1_INTEGER_free(num);
    AUTHORITY_KEYID_free(aki);
    X509_CRL_free(crl);
    free(der);
    ca_issued_free(&a);
    ca_issued_free(&b);
}

static void test_crl_without_entries_omits_the_list(void)
{
    uint8_t *der = NULL;
    size_t len = 0;
    X509_CRL *crl;

    ok(ca_crl_build(the_ca, NULL, 0, 0, now, now + 3600, &der, &len, NULL, 0) == AD_OK,
       "an empty CRL is built (a fresh CA has revoked nothing)");
    crl = d2i_crl(der, len);
    ok(crl != NULL && X509_CRL_get_REVOKED(crl) == NULL &&
           X509_CRL_verify(crl, X509_get0_pubkey(issuing)) == 1,
       "it has no revokedCertificates at all (5.1.2.6) and verifies");
    X509_CRL_free(crl);
    free(der);
}

static void test_crl_refuses_bad_entries_and_times(void)
{
    ca_revoked r;
    uint8_t *der = (uint8_t *)"x";
    size_t len = 9;

    memset(&r, 0, sizeof(r));
    r.serial[0] = 1;
    r.serial_len = 1;
    r.revoked_at = now;
    r.reason = (ca_reason)7;
    ok(ca_crl_build(the_ca, &r, 1, 1, now, now + 60, &der, &len, NULL, 0) == AD_EFIELD &&
           der == NULL && len == 0,
       "reason code 7 is refused and nothing is returned");
    r.reason = CA_REASON_REMOVE_FROM_CRL;
    ok(ca_crl_build(the_ca, &r, 1, 1, now, now + 60, &der, &len, NULL, 0) == AD_EFIELD,
       "removeFromCRL is refused in a full CRL (delta CRLs only, 5.3.1)");
    r.reason = CA_REASON_SUPERSEDED;
    r.serial_len = 0;
    ok(ca_crl_build(the_ca, &r, 1, 1, now, now + 60, &der, &len, NULL, 0) == AD_EFIELD,
       "an empty serial is refused");
    r.serial_len = 21;
    ok(ca_crl_build(the_ca, &r, 1, 1, now, now + 60, &der, &len, NULL, 0) == AD_EFIELD,
       "a serial over 20 bytes is refused");
    r.serial_len = 1;
    ok(ca_crl_build(the_ca, &r, 1, 1, now, now, &der, &len, NULL, 0) == AD_EFIELD,
       "nextUpdate must be after thisUpdate");
    r.revoked_at = -1000000000000LL;
    ok(ca_crl_build(the_ca, &r, 1, 1, now, now + 60, &der, &len, NULL, 0) == AD_EFIELD &&
           der == NULL,
       "a revocation time before 1950 is refused, not mis-encoded");
}

static void test_crl_pem_is_an_x509_crl_block(void)
{
    uint8_t *der = NULL, *back = NULL;
    size_t len = 0;
    char *pem;
    BIO *b;
    X509_CRL *crl;
    int n;

    ca_crl_build(the_ca, NULL, 0, 3, now, now + 60, &der, &len, NULL, 0);
    pem = ca_crl_pem(der, len);
    ok(pem != NULL && strncmp(pem, "-----BEGIN X509 CRL-----\n", 25) == 0,
       "the PEM block is labelled X509 CRL (what `openssl crl` expects)");
    b = BIO_new_mem_buf(pem, -1);
    crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
    n = crl != NULL ? i2d_X509_CRL(crl, &back) : 0;
    ok(n > 0 && (size_t)n == len && memcmp(back, der, len) == 0,
       "PEM_read_bio_X509_CRL reads back the same DER");
    OPENSSL_free(back);
    X509_CRL_free(crl);
    BIO_free(b);
    free(pem);
    free(der);
}

static void test_crl_is_used_by_openssl_verify_crl_check(void)
{
    ca_issued good, bad;
    ca_revoked r;
    uint8_t *der = NULL;
    size_t len = 0;
    char *pem = NULL, chain[4096], out[16384], p_crl_der[512], p_crl[512],
         p_chain[512], p_good[512], p_bad[512], cmd[2048];
    int rc;

    if (!ok(issue_leaf(the_ca, "cli-good", &good) && issue_leaf(the_ca, "cli-bad", &bad),
            "setup: two certificates issued"))
        return;
    memset(&r, 0, sizeof(r));
    memcpy(r.serial, bad.serial, bad.serial_len);
    r.serial_len = bad.serial_len;
    r.revoked_at = now - 5;
    r.reason = CA_REASON_KEY_COMPROMISE;
    ca_crl_build(the_ca, &r, 1, 77, now - 60, now + 3600, &der, &len, NULL, 0);
    pem = ca_crl_pem(der, len);
    snprintf(chain, sizeof(chain), "%s%s", mat.issuing_cert_pem, mat.root_cert_pem);
    if (!ok(pem != NULL && write_file("crl.der", der, len, p_crl_der, sizeof(p_crl_der)) &&
                write_file("crl.pem", pem, strlen(pem), p_crl, sizeof(p_crl)) &&
                write_file("chain.pem", chain, strlen(chain), p_chain, sizeof(p_chain)) &&
                write_file("good.pem", good.pem, strlen(good.pem), p_good, sizeof(p_good)) &&
                write_file("bad.pem", bad.pem, strlen(bad.pem), p_bad, sizeof(p_bad)),
            "setup: temp files written"))
        goto out;

    snprintf(cmd, sizeof(cmd), "openssl crl -inform DER -text -noout -in %s", p_crl_der);
    rc = run(cmd, out, sizeof(out));
    ok(rc == 0 && strstr(out, "Version 2") != NULL &&
           strstr(out, "X509v3 CRL Number") != NULL && strstr(out, "77") != NULL &&
           strstr(out, "X509v3 Authority Key Identifier") != NULL &&
           strstr(out, "Key Compromise") != NULL &&
           strstr(out, "ecdsa-with-SHA256") != NULL,
       "`openssl crl -text` shows v2, the CRL number, AKI, the reason and the "
       "signature algorithm (rc %d)", rc);
    snprintf(cmd, sizeof(cmd), "openssl crl -in %s -noout -CAfile %s", p_crl, p_chain);
    rc = run(cmd, out, sizeof(out));
    ok(rc == 0 && strstr(out, "verify OK") != NULL,
       "`openssl crl -CAfile` verifies the CRL's signature: %s", out);
    snprintf(cmd, sizeof(cmd), "openssl verify -crl_check -CAfile %s -CRLfile %s %s",
             p_chain, p_crl, p_bad);
    rc = run(cmd, out, sizeof(out));
    ok(rc != 0 && strstr(out, "certificate revoked") != NULL,
       "`openssl verify -crl_check` rejects the revoked certificate: %s", out);
    snprintf(cmd, sizeof(cmd), "openssl verify -crl_check -CAfile %s -CRLfile %s %s",
             p_chain, p_crl, p_good);
    rc = run(cmd, out, sizeof(out));
    ok(rc == 0, "`openssl verify -crl_check` accepts a certificate not on the CRL: %s",
       out);
out:
    free(pem);
    free(der);
    ca_issued_free(&good);
    ca_issued_free(&bad);
}

static void test_crl_with_10k_entries_is_built_quickly(void)
{
    enum { N = 10000 };
    ca_revoked *rv = calloc(N, sizeof(*rv));
    uint8_t *der = NULL;
    size_t len = 0, i;
    struct timespec t0, t1;
    double ms;
    X509_CRL *crl;

    for (i = 0; i < N; i++) {
        RAND_bytes(rv[i].serial, CA_SERIAL_MAX);
        rv[i].serial[0] = (uint8_t)(1 + rv[i].serial[0] % 0x7f);
        rv[i].serial_len = CA_SERIAL_MAX;
        rv[i].revoked_at = now - (int64_t)i;
        rv[i].reason = (ca_reason)(i % 6);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ok(ca_crl_build(the_ca, rv, N, 9, now, now + 86400, &der, &len, NULL, 0) == AD_OK,
       "a CRL with 10k entries is built");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    tap_diag("10k-entry CRL: %zu bytes in %.2f ms", len, ms);
    crl = d2i_crl(der, len);
    ok(crl != NULL && sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) == N &&
           X509_CRL_verify(crl, X509_get0_pubkey(issuing)) == 1,
       "OpenSSL decodes all 10k entries and the signature verifies");
    X509_CRL_free(crl);
    free(der);
    free(rv);
}

/* ---- OCSP requests ---------------------------------------------------- */

static void test_ocsp_request_from_openssl_parses_with_certid_fields(void)
{
    ca_issued a;
    X509 *leaf = NULL;
    uint8_t *req = NULL, name_sha1[20], key_sha1[20], name_sha256[32], key_sha256[32];
    size_t len = 0;
    unsigned dl;
    ca_ocsp_request r;
    char err[256] = "";
    const EVP_MD *mds[] = {EVP_sha1(), EVP_sha256(), EVP_sha384(), EVP_sha512()};
    const ca_ocsp_hash kinds[] = {CA_OCSP_HASH_SHA1, CA_OCSP_HASH_SHA256,
                                  CA_OCSP_HASH_SHA384, CA_OCSP_HASH_SHA512};
    size_t i;

    if (!ok(issue_leaf(the_ca, "ocsp-a", &a) &&
                (leaf = der_to_x509(a.der, a.der_len)) != NULL,
            "setup: a certificate issued"))
        return;
    req = make_request(&leaf, 1, issuing, EVP_sha1(), -1, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, err, sizeof(err)) == AD_OK,
       "an OpenSSL-built request with a nonce parses: %s", err);
    X509_NAME_digest(X509_get_subject_name(issuing), EVP_sha1(), name_sha1, &dl);
    X509_pubkey_digest(issuing, EVP_sha1(), key_sha1, &dl);
    ok(r.count == 1 && r.ids[0].hash == CA_OCSP_HASH_SHA1 &&
           r.ids[0].name_hash_len == 20 && memcmp(r.ids[0].name_hash, name_sha1, 20) == 0 &&
           r.ids[0].key_hash_len == 20 && memcmp(r.ids[0].key_hash, key_sha1, 20) == 0,
       "the SHA-1 CertID's issuerNameHash and issuerKeyHash are OpenSSL's");
    ok(r.ids[0].serial_len == a.serial_len &&
           memcmp(r.ids[0].serial, a.serial, a.serial_len) == 0 &&
           strcmp(r.ids[0].serial_hex, a.serial_hex) == 0,
       "the serial (bytes and hex) is the issued certificate's, as the daemon keys it");
    ok(r.has_nonce && r.nonce_len == 18 && r.nonce[0] == 0x04 && r.nonce[1] == 16,
       "the nonce extension's value is kept (OpenSSL wraps 16 random bytes)");
    ok(ca_ocsp_id_is_ours(the_ca, &r.ids[0]) == 1, "the CertID names our issuing CA");
    free(req);

    req = make_request(&leaf, 1, issuing, EVP_sha256(), 0, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK && !r.has_nonce,
       "a request without a nonce parses and says so");
    X509_NAME_digest(X509_get_subject_name(issuing), EVP_sha256(), name_sha256, &dl);
    X509_pubkey_digest(issuing, EVP_sha256(), key_sha256, &dl);
    ok(r.ids[0].hash == CA_OCSP_HASH_SHA256 && r.ids[0].name_hash_len == 32 &&
           memcmp(r.ids[0].name_hash, name_sha256, 32) == 0 &&
           memcmp(r.ids[0].key_hash, key_sha256, 32) == 0,
       "a SHA-256 CertID is read with its 32-byte hashes");
    free(req);

    for (i = 0; i < 4; i++) {
        req = make_request(&leaf, 1, issuing, mds[i], 0, &len, NULL);
        ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK &&
               r.ids[0].hash == kinds[i] && ca_ocsp_id_is_ours(the_ca, &r.ids[0]) == 1,
           "a %s CertID for our CA is recognised as ours", EVP_MD_get0_name(mds[i]));
        free(req);
    }
    X509_free(leaf);
    ca_issued_free(&a);
}

static void test_ocsp_certid_of_a_foreign_ca_is_not_ours(void)
{
    ca_material other;
    ca *oc = NULL;
    ca_issued f;
    X509 *oiss = NULL, *leaf = NULL;
    OCSP_CERTID *id;
    OCSP_REQUEST *req;
    uint8_t *der = NULL;
    int n;
    ca_ocsp_request r;

    /* The same subject as ours: only the key hash can tell them apart. */
    if (!ok(ca_generate(NULL, &other, NULL, 0) == AD_OK &&
                ca_open(other.issuing_cert_pem, other.issuing_key_pem, NULL, &oc,
                        NULL, 0) == AD_OK &&
                issue_leaf(oc, "foreign", &f),
            "setup: a second CA with the same subject"))
        return;
    oiss = pem_to_x509(other.issuing_cert_pem);
    leaf = der_to_x509(f.der, f.der_len);
    req = OCSP_REQUEST_new();
    OCSP_request_add0_id(req, OCSP_cert_to_id(EVP_sha1(), leaf, oiss));
    /* Our name and key, but the hashes of another name. */
    id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(root),
                          X509_get0_pubkey_bitstr(issuing), X509_get_serialNumber(leaf));
    OCSP_request_add0_id(req, id);
    n = i2d_OCSP_REQUEST(req, &der);
    ok(n > 0 && ca_ocsp_request_parse(der, (size_t)n, &r, NULL, 0) == AD_OK && r.count == 2,
       "a request about foreign certificates parses");
    ok(ca_ocsp_id_is_ours(the_ca, &r.ids[0]) == 0,
       "a CertID from another CA with the same subject name is not ours (key differs)");
    ok(ca_ocsp_id_is_ours(the_ca, &r.ids[1]) == 0,
       "a CertID with our key hash but another name hash is not ours");
    ok(ca_ocsp_id_is_ours(oc, &r.ids[0]) == 1, "and the other CA does claim its own");
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
    X509_free(oiss);
    X509_free(leaf);
    ca_issued_free(&f);
    ca_close(oc);
    ca_material_free(&other);
}

static void test_ocsp_signed_request_with_requestor_is_accepted(void)
{
    ca_issued a;
    X509 *leaf;
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    EVP_PKEY *k;
    BIO *b;
    char *key_pem = NULL;
    uint8_t *der = NULL;
    int n;
    ca_ocsp_request r;

    issue_leaf_key(the_ca, "signed-req", &a, &key_pem);
    leaf = der_to_x509(a.der, a.der_len);
    b = BIO_new_mem_buf(key_pem, -1);
    k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    free(key_pem);
    OCSP_request_add0_id(req, OCSP_cert_to_id(NULL, leaf, issuing));
    OCSP_request_add1_nonce(req, NULL, -1);
    /* The device signs its own request, with its certificate attached
     * (OCSP_request_sign sets requestorName from it). */
    ok(OCSP_request_sign(req, leaf, k, EVP_sha256(), NULL, 0) == 1,
       "setup: OpenSSL signs the request (requestorName + signature + certs)");
    n = i2d_OCSP_REQUEST(req, &der);
    ok(n > 0 && ca_ocsp_request_parse(der, (size_t)n, &r, NULL, 0) == AD_OK &&
           r.count == 1 && r.has_nonce && ca_ocsp_id_is_ours(the_ca, &r.ids[0]),
       "a signed request with a requestorName is accepted, its signature ignored");
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
    EVP_PKEY_free(k);
    X509_free(leaf);
    ca_issued_free(&a);
}

static void test_ocsp_hostile_requests_are_refused_without_crashing(void)
{
    ca_issued a;
    X509 *leaf, *many[17];
    uint8_t *req, *buf, junk[512];
    size_t len = 0, i, bad = 0, crashfree = 1;
    ca_ocsp_request r;
    char err[256];
    OCSP_REQUEST *oreq;
    X509_EXTENSION *ext;
    ASN1_OCTET_STRING *os;
    ASN1_OBJECT *obj;
    uint8_t *der = NULL;
    int n;

    issue_leaf(the_ca, "hostile", &a);
    leaf = der_to_x509(a.der, a.der_len);
    req = make_request(&leaf, 1, issuing, EVP_sha1(), -1, &len, NULL);

    for (i = 0; i < len; i++)
        if (ca_ocsp_request_parse(req, i, &r, NULL, 0) != AD_EBADREQ)
            bad++;
    ok(bad == 0, "every truncation of a valid request is refused (%zu accepted)", bad);

    buf = malloc(len + 1);
    memcpy(buf, req, len);
    buf[len] = 0;
    ok(ca_ocsp_request_parse(buf, len + 1, &r, err, sizeof(err)) == AD_EBADREQ &&
           r.count == 0,
       "trailing bytes are refused and the output is zeroed");
    /* Every single-bit flip: accepted or refused, never a crash (ASan). */
    for (i = 0; i < len * 8; i++) {
        memcpy(buf, req, len);
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        (void)ca_ocsp_request_parse(buf, len, &r, NULL, 0);
    }
    ok(crashfree, "all %zu single-bit flips were handled", len * 8);
    free(buf);

    for (i = 0; i < 200; i++) {
        size_t n2 = (size_t)(i % sizeof(junk)) + 1;

        RAND_bytes(junk, (int)n2);
        if (i % 2)
            junk[0] = 0x30;
        if (ca_ocsp_request_parse(junk, n2, &r, NULL, 0) != AD_EBADREQ)
            bad++;
    }
    ok(bad == 0, "random garbage is refused");
    ok(ca_ocsp_request_parse(NULL, 0, &r, NULL, 0) == AD_EBADREQ &&
           ca_ocsp_request_parse(req, 0, &r, NULL, 0) == AD_EBADREQ,
       "empty input is refused");
    free(req);

    buf = calloc(1, CA_OCSP_REQUEST_MAX + 1);
    buf[0] = 0x30;
    buf[1] = 0x82;
    buf[2] = (uint8_t)((CA_OCSP_REQUEST_MAX - 3) >> 8);
    buf[3] = (uint8_t)((CA_OCSP_REQUEST_MAX - 3) & 0xff);
    ok(ca_ocsp_request_parse(buf, CA_OCSP_REQUEST_MAX + 1, &r, NULL, 0) == AD_EBADREQ,
       "input over %d bytes is refused before parsing", CA_OCSP_REQUEST_MAX);
    free(buf);

    for (i = 0; i < 17; i++)
        many[i] = leaf;
    req = make_request(many, 16, issuing, EVP_sha1(), -1, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK && r.count == 16,
       "16 single requests are accepted");
    free(req);
    req = make_request(many, 17, issuing, EVP_sha1(), -1, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, err, sizeof(err)) == AD_EBADREQ,
       "17 single requests are refused (the work per request is bounded): %s", err);
    free(req);
    req = make_request(many, 0, issuing, EVP_sha1(), -1, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_EBADREQ,
       "a request with no single requests is refused");
    free(req);
    req = make_request(&leaf, 1, issuing, EVP_sha1(), 100, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_EBADREQ,
       "a 100-byte nonce is refused (RFC 8954 caps nonces at 32 bytes)");
    free(req);
    req = make_request(&leaf, 1, issuing, EVP_sha1(), 32, &len, NULL);
    ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK && r.nonce_len == 34,
       "a 32-byte nonce is accepted");
    free(req);

    /* An unknown critical request extension must be refused. */
    free(make_request(&leaf, 1, issuing, EVP_sha1(), 0, &len, &oreq));
    obj = OBJ_txt2obj("1.3.6.1.4.1.99999.1", 1);
    os = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(os, (const unsigned char *)"\x05\x00", 2);
    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 1, os);
    OCSP_REQUEST_add_ext(oreq, ext, -1);
    n = i2d_OCSP_REQUEST(oreq, &der);
    ok(n > 0 && ca_ocsp_request_parse(der, (size_t)n, &r, NULL, 0) == AD_EBADREQ,
       "an unknown critical request extension is refused");
    OPENSSL_free(der);
    der = NULL;
    X509_EXTENSION_set_critical(ext, 0);
    X509_EXTENSION_free(OCSP_REQUEST_delete_ext(oreq, 0));
    OCSP_REQUEST_add_ext(oreq, ext, -1);
    n = i2d_OCSP_REQUEST(oreq, &der);
    ok(n > 0 && ca_ocsp_request_parse(der, (size_t)n, &r, NULL, 0) == AD_OK,
       "the same extension non-critical is ignored");
    OPENSSL_free(der);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
    OCSP_REQUEST_free(oreq);
    X509_free(leaf);
    ca_issued_free(&a);
}

/* ---- OCSP responses --------------------------------------------------- */

static void test_ocsp_responses_verify_with_openssl(void)
{
    ca_issued iss[3];
    X509 *leaves[3] = {NULL, NULL, NULL};
    OCSP_REQUEST *oreq = NULL;
    OCSP_BASICRESP *bs = NULL;
    uint8_t *req = NULL, *resp = NULL;
    size_t len = 0, rlen = 0, i;
    ca_ocsp_request r;
    ca_ocsp_answer ans[3];
    char err[256] = "";
    int status = -1, st, reason;
    ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd;
    STACK_OF(X509) *va;

    for (i = 0; i < 3; i++) {
        char cn[32];

        snprintf(cn, sizeof(cn), "resp-%zu", i);
        issue_leaf(the_ca, cn, &iss[i]);
        leaves[i] = der_to_x509(iss[i].der, iss[i].der_len);
    }
    req = make_request(leaves, 3, issuing, EVP_sha1(), -1, &len, &oreq);
    ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK && r.count == 3,
       "setup: a three-certificate request parses");
    memset(ans, 0, sizeof(ans));
    for (i = 0; i < 3; i++) {
        ans[i].this_update = now - 30;
        ans[i].next_update = now + 3600;
    }
    ans[0].status = CA_OCSP_GOOD;
    ans[1].status = CA_OCSP_REVOKED;
    ans[1].revoked_at = now - 1000;
    ans[1].reason = CA_REASON_KEY_COMPROMISE;
    ans[2].status = CA_OCSP_UNKNOWN;
    ok(ca_ocsp_respond(the_ca, &r, ans, now, &resp, &rlen, err, sizeof(err)) == AD_OK,
       "a response is built: %s", err);
    bs = basic_of(resp, rlen, &status);
    if (!ok(bs != NULL && status == OCSP_RESPONSE_STATUS_SUCCESSFUL,
            "OpenSSL decodes a successful OCSPResponse with a basic response"))
        goto out;
    ok(basic_verifies(bs, issuing, root),
       "OCSP_basic_verify accepts it with only the root trusted: the issuing CA "
       "signs its own responses (RFC 6960 4.2.2.2)");
    va = sk_X509_new_null();
    sk_X509_push(va, issuing);
    {
        X509_STORE *empty = X509_STORE_new();

        ok(OCSP_basic_verify(bs, va, empty, OCSP_TRUSTOTHER) == 1,
           "and with the issuing certificate as the trusted responder (-VAfile)");
        X509_STORE_free(empty);
        ERR_clear_error();
    }
    sk_X509_free(va);
    ok(OCSP_check_nonce(oreq, bs) == 1, "the nonce is echoed (replay protection)");
    ok(sk_X509_num(OCSP_resp_get0_certs(bs)) == 1 &&
           X509_cmp(sk_X509_value(OCSP_resp_get0_certs(bs), 0), issuing) == 0,
       "exactly the issuing certificate is included");
    {
        X509_STORE *roots = X509_STORE_new();

        X509_STORE_add_cert(roots, root);
        ok(OCSP_basic_verify(bs, NULL, roots, 0) == 1,
           "so a client that trusts only the root verifies it without the issuer at hand");
        X509_STORE_free(roots);
        ERR_clear_error();
    }
    {
        const ASN1_GENERALIZEDTIME *pa = OCSP_resp_get0_produced_at(bs);

        ok(asn1_time_unix(pa) == now, "producedAt is the given time");
    }

    for (i = 0; i < 3; i++) {
        static const int want[] = {V_OCSP_CERTSTATUS_GOOD, V_OCSP_CERTSTATUS_REVOKED,
                                   V_OCSP_CERTSTATUS_UNKNOWN};
        OCSP_CERTID *id = OCSP_cert_to_id(EVP_sha1(), leaves[i], issuing);
        int found = OCSP_resp_find_status(bs, id, &st, &reason, &rev, &thisupd, &nextupd);

        ok(found == 1 && st == want[i] && asn1_time_unix(thisupd) == now - 30 &&
               asn1_time_unix(nextupd) == now + 3600 &&
               OCSP_check_validity(thisupd, nextupd, 300, -1) == 1,
           "certificate %zu has status %s with thisUpdate/nextUpdate", i,
           OCSP_cert_status_str(want[i]));
        if (i == 1)
            ok(reason == OCSP_REVOKED_STATUS_KEYCOMPROMISE &&
                   asn1_time_unix(rev) == now - 1000,
               "the revoked status carries its time and reason keyCompromise");
        OCSP_CERTID_free(id);
    }
    OCSP_BASICRESP_free(bs);
    bs = NULL;

    /* A byte flipped in the signed part: the signature must fail. */
    resp[rlen / 2] ^= 0x01;
    bs = basic_of(resp, rlen, &status);
    ok(bs == NULL || !basic_verifies(bs, issuing, root),
       "a response altered after signing does not verify");
out:
    OCSP_BASICRESP_free(bs);
    OCSP_REQUEST_free(oreq);
    free(req);
    free(resp);
    for (i = 0; i < 3; i++) {
        X509_free(leaves[i]);
        ca_issued_free(&iss[i]);
    }
}

static void test_ocsp_response_without_nonce_and_unspecified_reason(void)
{
    ca_issued a;
    X509 *leaf;
    OCSP_REQUEST *oreq = NULL;
    OCSP_BASICRESP *bs;
    uint8_t *req, *resp = NULL;
    size_t len = 0, rlen = 0;
    ca_ocsp_request r;
    ca_ocsp_answer ans;
    OCSP_CERTID *id;
    int status, st, reason;
    ASN1_GENERALIZEDTIME *rev, *thisupd, *nextupd = NULL;

    issue_leaf(the_ca, "nononce", &a);
    leaf = der_to_x509(a.der, a.der_len);
    req = make_request(&leaf, 1, issuing, EVP_sha256(), 0, &len, &oreq);
    ca_ocsp_request_parse(req, len, &r, NULL, 0);
    memset(&ans, 0, sizeof(ans));
    ans.status = CA_OCSP_REVOKED;
    ans.revoked_at = now - 5;
    ans.reason = CA_REASON_UNSPECIFIED;
    ans.this_update = now;
    ans.next_update = 0;
    ok(ca_ocsp_respond(the_ca, &r, &ans, now, &resp, &rlen, NULL, 0) == AD_OK,
       "a response to a SHA-256 CertID without nonce is built");
    bs = basic_of(resp, rlen, &status);
    id = OCSP_cert_to_id(EVP_sha256(), leaf, issuing);
    ok(bs != NULL && basic_verifies(bs, issuing, root) && OCSP_check_nonce(oreq, bs) == 2,
       "it verifies and carries no nonce when none was asked for");
    ok(bs != NULL && OCSP_resp_find_status(bs, id, &st, &reason, &rev, &thisupd, &nextupd) == 1 &&
           st == V_OCSP_CERTSTATUS_REVOKED && reason == -1 && nextupd == NULL,
       "revoked with reason unspecified omits the reason, and nextUpdate 0 omits it");
    OCSP_CERTID_free(id);
    OCSP_BASICRESP_free(bs);
    OCSP_REQUEST_free(oreq);
    X509_free(leaf);
    free(req);
    free(resp);
    ca_issued_free(&a);
}

static void test_ocsp_respond_refuses_bad_answers(void)
{
    ca_ocsp_request r;
    ca_ocsp_answer ans;
    uint8_t *resp = (uint8_t *)"x";
    size_t rlen = 7;

    memset(&r, 0, sizeof(r));
    memset(&ans, 0, sizeof(ans));
    ok(ca_ocsp_respond(the_ca, &r, &ans, now, &resp, &rlen, NULL, 0) == AD_EFIELD &&
           resp == NULL && rlen == 0,
       "a request with no CertIDs gets no response and nothing is returned");
    r.count = 1;
    r.ids[0].der_len = 2;
    r.ids[0].der[0] = 0x30;
    ans.status = CA_OCSP_REVOKED;
    ans.reason = (ca_reason)7;
    ans.this_update = now;
    ok(ca_ocsp_respond(the_ca, &r, &ans, now, &resp, &rlen, NULL, 0) == AD_EFIELD,
       "a revoked answer with reason 7 is refused");
    ans.reason = CA_REASON_SUPERSEDED;
    ans.next_update = now - 1;
    ok(ca_ocsp_respond(the_ca, &r, &ans, now, &resp, &rlen, NULL, 0) == AD_EFIELD,
       "nextUpdate before thisUpdate is refused");
}

static void test_ocsp_error_responses_have_no_body(void)
{
    static const int codes[] = {CA_OCSP_MALFORMED_REQUEST, CA_OCSP_INTERNAL_ERROR,
                                CA_OCSP_TRY_LATER, CA_OCSP_UNAUTHORIZED};
    uint8_t buf[CA_OCSP_ERROR_LEN];
    size_t i;

    for (i = 0; i < 4; i++) {
        const uint8_t *p = buf;
        OCSP_RESPONSE *o;
        OCSP_BASICRESP *bs = NULL;
        size_t n = ca_ocsp_error_response((ca_ocsp_error)codes[i], buf);

        o = n == CA_OCSP_ERROR_LEN ? d2i_OCSP_RESPONSE(NULL, &p, (long)n) : NULL;
        if (o != NULL)
            bs = OCSP_response_get1_basic(o);
        ok(o != NULL && OCSP_response_status(o) == codes[i] && bs == NULL,
           "error status %d decodes with that status and no body", codes[i]);
        OCSP_BASICRESP_free(bs);
        OCSP_RESPONSE_free(o);
        ERR_clear_error();
    }
    ok(ca_ocsp_error_response((ca_ocsp_error)0, buf) == 0 &&
           ca_ocsp_error_response((ca_ocsp_error)5, buf) == 0,
       "successful (0) and the unused code 4/5 are not error responses");
}

static void test_ocsp_other_issuer_key_types_sign_verifiable_responses(void)
{
    static const char *const types[] = {"P-384", "RSA2048", "ED25519"};
    size_t t;

    for (t = 0; t < 3; t++) {
        char *cert_pem = NULL, *key_pem = NULL, err[256] = "";
        ca *c = NULL;
        ca_issued a;
        X509 *cax = NULL, *leaf = NULL;
        uint8_t *req = NULL, *resp = NULL, *crl_der = NULL;
        size_t len = 0, rlen = 0, clen = 0;
        ca_ocsp_request r;
        ca_ocsp_answer ans;
        ca_revoked rv;
        OCSP_REQUEST *oreq = NULL;
        OCSP_BASICRESP *bs = NULL;
        X509_CRL *crl = NULL;
        int status;

        if (!ok(make_other_ca(types[t], &cert_pem, &key_pem) &&
                    ca_open(cert_pem, key_pem, NULL, &c, err, sizeof(err)) == AD_OK &&
                    issue_leaf(c, "other", &a),
                "setup: a %s CA opens and issues: %s", types[t], err)) {
            free(cert_pem);
            free(key_pem);
            ca_close(c);
            continue;
        }
        cax = pem_to_x509(cert_pem);
        leaf = der_to_x509(a.der, a.der_len);
        req = make_request(&leaf, 1, cax, EVP_sha1(), -1, &len, &oreq);
        memset(&ans, 0, sizeof(ans));
        ans.status = CA_OCSP_GOOD;
        ans.this_update = now;
        ok(ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK &&
               ca_ocsp_id_is_ours(c, &r.ids[0]) &&
               ca_ocsp_respond(c, &r, &ans, now, &resp, &rlen, NULL, 0) == AD_OK &&
               (bs = basic_of(resp, rlen, &status)) != NULL &&
               basic_verifies(bs, cax, cax) && OCSP_check_nonce(oreq, bs) == 1,
           "a %s issuer's OCSP response verifies (generic signing path)", types[t]);
        memset(&rv, 0, sizeof(rv));
        memcpy(rv.serial, a.serial, a.serial_len);
        rv.serial_len = a.serial_len;
        rv.revoked_at = now;
        rv.reason = CA_REASON_SUPERSEDED;
        ok(ca_crl_build(c, &rv, 1, 1, now, now + 60, &crl_der, &clen, NULL, 0) == AD_OK &&
               (crl = d2i_crl(crl_der, clen)) != NULL &&
               X509_CRL_verify(crl, X509_get0_pubkey(cax)) == 1,
           "a %s issuer's CRL verifies", types[t]);
        ERR_clear_error();
        X509_CRL_free(crl);
        OCSP_BASICRESP_free(bs);
        OCSP_REQUEST_free(oreq);
        free(crl_der);
        free(req);
        free(resp);
        X509_free(leaf);
        X509_free(cax);
        ca_issued_free(&a);
        ca_close(c);
        free(cert_pem);
        free(key_pem);
    }
}

static void test_ocsp_cli_verifies_responses(void)
{
    ca_issued a;
    char p_iss[512], p_chain[512], p_leaf[512], p_req[512], p_resp[512],
         p_resp2[512], chain[4096], cmd[4096], out[16384];
    uint8_t *req = NULL, *resp = NULL, *resp2 = NULL;
    size_t len = 0, rlen = 0, rlen2 = 0;
    ca_ocsp_request r;
    ca_ocsp_answer ans;
    FILE *f;
    int rc;

    issue_leaf(the_ca, "cli-ocsp", &a);
    snprintf(chain, sizeof(chain), "%s%s", mat.issuing_cert_pem, mat.root_cert_pem);
    write_file("issuing.pem", mat.issuing_cert_pem, strlen(mat.issuing_cert_pem), p_iss,
               sizeof(p_iss));
    write_file("chain.pem", chain, strlen(chain), p_chain, sizeof(p_chain));
    write_file("leaf.pem", a.pem, strlen(a.pem), p_leaf, sizeof(p_leaf));
    snprintf(p_req, sizeof(p_req), "%s/req.der", dir);
    snprintf(cmd, sizeof(cmd), "openssl ocsp -issuer %s -cert %s -reqout %s", p_iss,
             p_leaf, p_req);
    rc = run(cmd, out, sizeof(out));
    f = fopen(p_req, "rb");
    if (f != NULL) {
        req = malloc(CA_OCSP_REQUEST_MAX);
        len = fread(req, 1, CA_OCSP_REQUEST_MAX, f);
        fclose(f);
    }
    if (!ok(rc == 0 && req != NULL &&
                ca_ocsp_request_parse(req, len, &r, NULL, 0) == AD_OK && r.has_nonce,
            "a request from `openssl ocsp -reqout` parses, with its nonce: %s", out))
        goto out;
    memset(&ans, 0, sizeof(ans));
    ans.status = CA_OCSP_GOOD;
    ans.this_update = now - 60;
    ans.next_update = now + 3600;
    ca_ocsp_respond(the_ca, &r, &ans, now, &resp, &rlen, NULL, 0);
    write_file("resp.der", resp, rlen, p_resp, sizeof(p_resp));
    snprintf(cmd, sizeof(cmd), "openssl ocsp -reqin %s -respin %s -CAfile %s", p_req,
             p_resp, p_chain);
    rc = run(cmd, out, sizeof(out));
    ok(rc == 0 && strstr(out, "Response verify OK") != NULL &&
           strstr(out, "Nonce Verify error") == NULL,
       "`openssl ocsp -reqin -respin -CAfile chain.pem` verifies the response and nonce: %s",
       out);
    snprintf(cmd, sizeof(cmd),
             "openssl ocsp -issuer %s -VAfile %s -cert %s -no_nonce -respin %s", p_iss,
             p_iss, p_leaf, p_resp);
    rc = run(cmd, out, sizeof(out));
    ok(rc == 0 && strstr(out, "Response verify OK") != NULL && strstr(out, ": good") != NULL,
       "`openssl ocsp -issuer issuing.pem -VAfile issuing.pem` verifies it and "
       "reports good: %s", out);

    ans.status = CA_OCSP_REVOKED;
    ans.revoked_at = now - 120;
    ans.reason = CA_REASON_CESSATION_OF_OPERATION;
    ca_ocsp_respond(the_ca, &r, &ans, now, &resp2, &rlen2, NULL, 0);
    write_file("resp2.der", resp2, rlen2, p_resp2, sizeof(p_resp2));
    snprintf(cmd, sizeof(cmd),
             "openssl ocsp -issuer %s -CAfile %s -cert %s -no_nonce -respin %s", p_iss,
             p_chain, p_leaf, p_resp2);
    rc = run(cmd, out, sizeof(out));
    ok(rc == 0 && strstr(out, ": revoked") != NULL &&
           strstr(out, "cessationOfOperation") != NULL,
       "`openssl ocsp -CAfile chain.pem` reports revoked with the reason: %s", out);
out:
    free(req);
    free(resp);
    free(resp2);
    ca_issued_free(&a);
}

int main(void)
{
    char err[256] = "", chain[8192];
    char cmd[600];

    now = (int64_t)time(NULL);
    if (ca_global_init() != AD_OK || ca_generate("CN=Rev CA,O=Acme", &mat, err,
                                                 sizeof(err)) != AD_OK) {
        printf("Bail out! cannot generate a CA: %s\n", err);
        return 1;
    }
    snprintf(chain, sizeof(chain), "%s%s", mat.issuing_cert_pem, mat.root_cert_pem);
    if (ca_open(mat.issuing_cert_pem, mat.issuing_key_pem, chain, &the_ca, err,
                sizeof(err)) != AD_OK || mkdtemp(dir) == NULL) {
        printf("Bail out! cannot open the CA: %s\n", err);
        return 1;
    }
    issuing = pem_to_x509(mat.issuing_cert_pem);
    root = pem_to_x509(mat.root_cert_pem);

    TAP_RUN(test_reason_names_map_to_rfc5280_codes);
    TAP_RUN(test_serial_hex_parses_to_minimal_magnitude);
    TAP_RUN(test_crl_decodes_with_every_field_and_verifies);
    TAP_RUN(test_crl_without_entries_omits_the_list);
    TAP_RUN(test_crl_refuses_bad_entries_and_times);
    TAP_RUN(test_crl_pem_is_an_x509_crl_block);
    TAP_RUN(test_crl_is_used_by_openssl_verify_crl_check);
    TAP_RUN(test_crl_with_10k_entries_is_built_quickly);
    TAP_RUN(test_ocsp_request_from_openssl_parses_with_certid_fields);
    TAP_RUN(test_ocsp_certid_of_a_foreign_ca_is_not_ours);
    TAP_RUN(test_ocsp_signed_request_with_requestor_is_accepted);
    TAP_RUN(test_ocsp_hostile_requests_are_refused_without_crashing);
    TAP_RUN(test_ocsp_responses_verify_with_openssl);
    TAP_RUN(test_ocsp_response_without_nonce_and_unspecified_reason);
    TAP_RUN(test_ocsp_respond_refuses_bad_answers);
    TAP_RUN(test_ocsp_error_responses_have_no_body);
    TAP_RUN(test_ocsp_other_issuer_key_types_sign_verifiable_responses);
    TAP_RUN(test_ocsp_cli_verifies_responses);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
    X509_free(issuing);
    X509_free(root);
    ca_close(the_ca);
    ca_material_free(&mat);
    return tap_done();
}
