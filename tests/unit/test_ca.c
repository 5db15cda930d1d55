/* Unit tests of the ca/ library: CSR acceptance and refusal for each key
 * type, every field of issued certificates as OpenSSL itself decodes
 * them, chain verification (X509_STORE and the openssl CLI), GnuTLS
 * loading of the daemon's own server certificate, PKCS#7, inspection
 * and thread safety. The library does no I/O; these tests may. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"
#include "common/codec.h"
#include "tap.h"

static ca_material mat;
static ca *the_ca;
static int64_t now;

/* ---- helpers ------------------------------------------------------- */

static EVP_PKEY *make_key(const char *type)
{
    if (strcmp(type, "P-256") == 0 || strcmp(type, "P-384") == 0)
        return EVP_EC_gen(type);
    if (strcmp(type, "ED25519") == 0)
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (strcmp(type, "RSA2048") == 0)
        return EVP_RSA_gen(2048);
    if (strcmp(type, "RSA1024") == 0)
        return EVP_RSA_gen(1024);
    if (strcmp(type, "secp256k1") == 0)
        return EVP_EC_gen("secp256k1");
    return NULL;
}

/* A CSR made with OpenSSL's own X509_REQ API; DER, malloc()ed. */
static uint8_t *make_csr_with(EVP_PKEY *k, const char *cn, size_t *len)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    int ed = EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;
    uint8_t *der = NULL, *out = NULL;
    int n;

    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               (const unsigned char *)"Acme", -1, -1, 0);
    if (cn != NULL)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                   (const unsigned char *)cn, -1, -1, 0);
    X509_REQ_set_version(req, 0);
    X509_REQ_set_subject_name(req, name);
    X509_REQ_set_pubkey(req, k);
    X509_REQ_sign(req, k, ed ? NULL : EVP_sha256());
    n = i2d_X509_REQ(req, &der);
    if (n > 0) {
        out = malloc((size_t)n);
        memcpy(out, der, (size_t)n);
        *len = (size_t)n;
    }
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_REQ_free(req);
    return out;
}

static uint8_t *make_csr(const char *type, const char *cn, size_t *len)
{
    EVP_PKEY *k = make_key(type);
    uint8_t *der = make_csr_with(k, cn, len);

    EVP_PKEY_free(k);
    return der;
}

static char *der_to_pem(const char *label, const uint8_t *der, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *mem, *s;
    long n;

    PEM_write_bio(b, label, "", der, (long)len);
    n = BIO_get_mem_data(b, &mem);
    s = malloc((size_t)n + 1);
    memcpy(s, mem, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

static X509 *pem_to_x509(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);

    BIO_free(b);
    return x;
}

static ca_profile device_profile(const char *cn)
{
    ca_profile p;

    memset(&p, 0, sizeof(p));
    p.kind = CA_PROFILE_DEVICE;
    p.common_name = cn;
    p.san_uri = "urn:device:SN-1";
    p.not_before = now - 60;
    p.not_after = now + 86400 * 365;
    return p;
}

/* Issues a device certificate for a fresh key of the given type. */
static ad_err issue_for(const char *type, const ca_profile *p, ca_issued *iss)
{
    size_t len = 0;
    uint8_t *der = make_csr(type, "dev-1", &len);
    ca_csr *csr = NULL;
    ad_err rc = ca_csr_parse_der(der, len, &csr, NULL, 0);

    if (rc == AD_OK)
        rc = ca_issue(the_ca, csr, p, iss, NULL, 0);
    ca_csr_free(csr);
    free(der);
    return rc;
}

static X509 *d2i_issued(const ca_issued *iss)
{
    const uint8_t *p = iss->der;
    X509 *x = d2i_X509(NULL, &p, (long)iss->der_len);

    if (x != NULL && p != iss->der + iss->der_len) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Verifies x against root + issuing CA with OpenSSL's chain builder in
 * strict mode, for a given purpose. */
static int chain_verifies(X509 *x, int purpose, int *err_out)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509 *root = pem_to_x509(mat.root_cert_pem);
    X509 *iss = pem_to_x509(mat.issuing_cert_pem);
    int ok;

    X509_STORE_add_cert(st, root);
    sk_X509_push(untrusted, iss);
    X509_STORE_CTX_init(ctx, st, x, untrusted);
    X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    ok = X509_verify_cert(ctx) == 1;
    *err_out = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    sk_X509_pop_free(untrusted, X509_free);
    X509_free(root);
    return ok;
}

static int ext_count(X509 *x, int nid)
{
    int n = 0, i = -1;

    while ((i = X509_get_ext_by_NID(x, nid, i)) >= 0)
        n++;
    return n;
}

/* ---- CSRs ---------------------------------------------------------- */

static void test_csr_of_each_accepted_key_type_parses_and_verifies(void)
{
    static const char *const types[] = {"P-256", "P-384", "ED25519", "RSA2048"};
    size_t i;

    for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        size_t len = 0;
        uint8_t *der = make_csr(types[i], "device-42", &len);
        ca_csr *csr = NULL;
        char err[128] = "";
        ad_err rc = ca_csr_parse_der(der, len, &csr, err, sizeof(err));

        ok(rc == AD_OK, "a %s CSR is accepted (every supported device key must enroll): %s",
           types[i], err);
        ok(csr != NULL && ca_csr_common_name(csr) != NULL &&
               strcmp(ca_csr_common_name(csr), "device-42") == 0,
           "the %s CSR's CN is extracted (the daemon matches it against the id)", types[i]);
        ca_csr_free(csr);
        free(der);
    }
}

static void test_csr_without_cn_has_null_common_name(void)
{
    size_t len = 0;
    uint8_t *der = make_csr("P-256", NULL, &len);
    ca_csr *csr = NULL;

    ok(ca_csr_parse_der(der, len, &csr, NULL, 0) == AD_OK && csr != NULL &&
           ca_csr_common_name(csr) == NULL,
       "a CSR without CN parses and reports no CN (not an empty string)");
    ca_csr_free(csr);
    free(der);
}

static void test_csr_with_utf8_cn_is_returned_as_utf8(void)
{
    size_t len = 0;
    uint8_t *der = make_csr("P-256", "capteur-\xc3\xa9t\xc3\xa9", &len);
    ca_csr *csr = NULL;

    ok(ca_csr_parse_der(der, len, &csr, NULL, 0) == AD_OK && csr != NULL &&
           strcmp(ca_csr_common_name(csr), "capteur-\xc3\xa9t\xc3\xa9") == 0,
       "a UTF-8 CN comes back byte-identical");
    ca_csr_free(csr);
    free(der);
}

static void test_rsa1024_and_other_curves_are_refused_as_weak_keys(void)
{
    static const char *const types[] = {"RSA1024", "secp256k1"};
    size_t i;

    for (i = 0; i < 2; i++) {
        size_t len = 0;
        uint8_t *der = make_csr(types[i], "dev", &len);
        ca_csr *csr = (ca_csr *)1;
        ad_err rc = ca_csr_parse_der(der, len, &csr, NULL, 0);

        ok(rc == AD_EWEAKKEY && csr == NULL,
           "a %s CSR is refused with weak_key (got %s), out stays NULL",
           types[i], ad_err_code(rc));
        free(der);
    }
}

static void test_csr_with_tampered_signature_is_refused(void)
{
    static const char *const types[] = {"P-256", "P-384", "ED25519", "RSA2048"};
    size_t i;

    for (i = 0; i < 4; i++) {
        size_t len = 0;
        uint8_t *der = make_csr(types[i], "device-7", &len);
        uint8_t *cn;
        ca_csr *csr = NULL;
        ad_err rc;

        der[len - 1] ^= 0x01; /* last byte of the signature */
        rc = ca_csr_parse_der(der, len, &csr, NULL, 0);
        ok(rc == AD_ECSRSIG && csr == NULL,
           "a %s CSR with a flipped signature bit is refused as bad_csr_signature (got %s)",
           types[i], ad_err_code(rc));
        der[len - 1] ^= 0x01;
        /* Now change the signed content: the CN "device-7" -> "device-8". */
        cn = memmem(der, len, "device-7", 8);
        cn[7] = '8';
        rc = ca_csr_parse_der(der, len, &csr, NULL, 0);
        ok(rc == AD_ECSRSIG && csr == NULL,
           "a %s CSR whose subject was edited after signing is refused (got %s)",
           types[i], ad_err_code(rc));
        free(der);
    }
}

static void test_garbage_truncated_and_empty_csrs_are_refused(void)
{
    static const uint8_t garbage[] = "this is not a CSR at all";
    size_t len = 0, cut, bad = 0;
    uint8_t *der = make_csr("P-256", "dev", &len);
    uint8_t *longer;
    ca_csr *csr = NULL;
    ad_err rc;

    rc = ca_csr_parse_der(garbage, sizeof(garbage), &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "garbage bytes are invalid_csr (got %s)",
       ad_err_code(rc));
    rc = ca_csr_parse_der(garbage, 0, &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "an empty CSR is invalid_csr");
    rc = ca_csr_parse_der(NULL, 10, &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "a NULL CSR is invalid_csr");
    for (cut = 1; cut < len; cut++) {
        rc = ca_csr_parse_der(der, cut, &csr, NULL, 0);
        if (rc != AD_ECSR || csr != NULL)
            bad++;
    }
    ok(bad == 0, "every truncation of a valid CSR is invalid_csr (%zu were not)", bad);
    longer = malloc(len + 1);
    memcpy(longer, der, len);
    longer[len] = 0;
    rc = ca_csr_parse_der(longer, len + 1, &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "trailing bytes after the CSR are refused");
    free(longer);
    free(der);
}

static void test_pem_and_base64_csrs_are_accepted_and_empty_pem_refused(void)
{
    static const char empty_pem[] = "-----BEGIN CERTIFICATE REQUEST-----\n"
                                    "-----END CERTIFICATE REQUEST-----\n";
    static const char junk_pem[] = "-----BEGIN CERTIFICATE REQUEST-----\n"
                                   "!!!!notbase64!!!!\n"
                                   "-----END CERTIFICATE REQUEST-----\n";
    static const char wrong_label[] = "-----BEGIN CERTIFICATE REQUEST-----\n"
                                      "AAAA\n-----END CERTIFICATE-----\n";
    size_t len = 0;
    uint8_t *der = make_csr("P-256", "pem-dev", &len);
    char *pem = der_to_pem("CERTIFICATE REQUEST", der, len);
    char *body, *end;
    ca_csr *csr = NULL;
    ad_err rc;

    rc = ca_csr_parse_pem(pem, strlen(pem), &csr, NULL, 0);
    ok(rc == AD_OK && strcmp(ca_csr_common_name(csr), "pem-dev") == 0,
       "a PEM CSR is accepted");
    ca_csr_free(csr);
    csr = NULL;
    /* The bare base64 body, as EST clients send it. */
    body = strchr(pem, '\n') + 1;
    end = strstr(body, "-----END");
    rc = ca_csr_parse_base64(body, (size_t)(end - body), &csr, NULL, 0);
    ok(rc == AD_OK && csr != NULL, "a bare base64 CSR (EST) is accepted");
    ca_csr_free(csr);
    csr = NULL;
    rc = ca_csr_parse_pem(empty_pem, strlen(empty_pem), &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "a PEM block without a body is invalid_csr");
    rc = ca_csr_parse_pem(junk_pem, strlen(junk_pem), &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "a PEM block with a non-base64 body is invalid_csr");
    rc = ca_csr_parse_pem(wrong_label, strlen(wrong_label), &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "mismatched BEGIN/END labels are invalid_csr");
    rc = ca_csr_parse_pem("hello", 5, &csr, NULL, 0);
    ok(rc == AD_ECSR && csr == NULL, "text without a PEM block is invalid_csr");
    free(pem);
    free(der);
}

static void test_randomly_corrupted_csrs_never_crash(void)
{
    size_t len = 0, i, accepted = 0;
    uint8_t *der = make_csr("P-256", "fuzz", &len);
    uint8_t *buf = malloc(len);

    /* A poor man's fuzzer: under ASan this catches out-of-bounds reads in
     * the DER walker; the real fuzz target comes later. */
    for (i = 0; i < 3000; i++) {
        uint8_t r[3];
        ca_csr *csr = NULL;

        memcpy(buf, der, len);
        RAND_bytes(r, sizeof(r));
        buf[(r[0] | r[1] << 8) % len] ^= (uint8_t)(r[2] | 1);
        if (ca_csr_parse_der(buf, len, &csr, NULL, 0) == AD_OK)
            accepted++;
        ca_csr_free(csr);
    }
    ok(accepted == 0, "no single-byte corruption of a signed CSR is accepted (%zu were)",
       accepted);
    free(buf);
    free(der);
}

/* ---- issuing -------------------------------------------------------- */

static void test_device_cert_fields_decode_with_openssl(void)
{
    ca_profile p = device_profile("device-42");
    ca_issued iss;
    X509 *x, *issuing = pem_to_x509(mat.issuing_cert_pem);
    char cn[256] = "";
    const ASN1_INTEGER *sn;
    GENERAL_NAMES *san;
    EXTENDED_KEY_USAGE *eku;
    BASIC_CONSTRAINTS *bc;
    int crit = -1, verr = 0;
    const ASN1_OCTET_STRING *aki, *iss_ski;
    ASN1_TIME *t;
    EVP_PKEY *issuing_key;

    ok(issue_for("P-256", &p, &iss) == AD_OK, "a device certificate is issued");
    x = d2i_issued(&iss);
    ok(x != NULL, "OpenSSL decodes the certificate DER exactly (no trailing bytes)");
    if (x == NULL)
        goto out;
    ok(X509_get_version(x) == 2, "it is X.509 v3");
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn));
    ok(strcmp(cn, "device-42") == 0 &&
           X509_NAME_entry_count(X509_get_subject_name(x)) == 1,
       "the subject is exactly CN=device-42 (the CSR's O=Acme is dropped)");
    ok(X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(issuing)) == 0,
       "the issuer is the issuing CA's subject");
    sn = X509_get0_serialNumber(x);
    ok(ASN1_STRING_type(sn) == V_ASN1_INTEGER && ASN1_STRING_length(sn) >= 16,
       "the serial is positive and at least 16 bytes (CA/B BR wants 64 random bits)");
    ok(ASN1_STRING_length(sn) == (int)iss.serial_len &&
           memcmp(ASN1_STRING_get0_data(sn), iss.serial, iss.serial_len) == 0,
       "ca_issued.serial is the certificate's serial");
    san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    ok(san != NULL && sk_GENERAL_NAME_num(san) == 1 &&
           sk_GENERAL_NAME_value(san, 0)->type == GEN_URI &&
           strcmp((const char *)ASN1_STRING_get0_data(
                      sk_GENERAL_NAME_value(san, 0)->d.uniformResourceIdentifier),
                  "urn:device:SN-1") == 0,
       "the SAN is the device URI");
    GENERAL_NAMES_free(san);
    eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    ok(eku != NULL && sk_ASN1_OBJECT_num(eku) == 1 &&
           OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)) == NID_client_auth,
       "EKU is exactly clientAuth (a device cert must not serve TLS)");
    EXTENDED_KEY_USAGE_free(eku);
    bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    ok(bc != NULL && !bc->ca && crit == 1, "basicConstraints CA:FALSE, critical");
    BASIC_CONSTRAINTS_free(bc);
    ok((X509_get_extension_flags(x) & EXFLAG_KUSAGE) &&
           X509_get_key_usage(x) == (KU_DIGITAL_SIGNATURE | KU_KEY_AGREEMENT) &&
           X509_EXTENSION_get_critical(
               X509_get_ext(x, X509_get_ext_by_NID(x, NID_key_usage, -1))) == 1,
       "keyUsage is digitalSignature+keyAgreement for an EC key, critical");
    aki = X509_get0_authority_key_id(x);
    iss_ski = X509_get0_subject_key_id(issuing);
    ok(aki != NULL && iss_ski != NULL && ASN1_OCTET_STRING_cmp(aki, iss_ski) == 0,
       "AKI equals the issuing CA's SKI (chain building by key id)");
    ok(X509_get0_subject_key_id(x) != NULL &&
           ASN1_STRING_length(X509_get0_subject_key_id(x)) == 20,
       "an SKI is present (SHA-1 of the key)");
    {
        /* OpenSSL's "hash" method computes the same value. */
        X509V3_CTX ctx;
        X509_EXTENSION *e;
        ASN1_OCTET_STRING *mine;

        X509V3_set_ctx(&ctx, NULL, x, NULL, NULL, 0);
        e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
        mine = e != NULL ? X509V3_EXT_d2i(e) : NULL;
        ok(mine != NULL && ASN1_OCTET_STRING_cmp(mine, X509_get0_subject_key_id(x)) == 0,
           "the SKI is what OpenSSL computes for the key (RFC 5280 method 1)");
        ASN1_OCTET_STRING_free(mine);
        X509_EXTENSION_free(e);
    }
    t = ASN1_TIME_new();
    ASN1_TIME_set(t, (time_t)p.not_before);
    ok(ASN1_TIME_compare(X509_get0_notBefore(x), t) == 0, "notBefore is the profile's");
    ASN1_TIME_set(t, (time_t)p.not_after);
    ok(ASN1_TIME_compare(X509_get0_notAfter(x), t) == 0, "notAfter is the profile's");
    ASN1_TIME_free(t);
    ok(ext_count(x, NID_crl_distribution_points) == 0 && ext_count(x, NID_info_access) == 0,
       "no CRL DP or AIA when the profile gives none");
    issuing_key = X509_get0_pubkey(issuing);
    ok(X509_verify(x, issuing_key) == 1, "the signature verifies with the issuing key");
    ok(X509_get_signature_nid(x) == NID_ecdsa_with_SHA256, "it is signed ecdsa-with-SHA256");
    ok(chain_verifies(x, X509_PURPOSE_SSL_CLIENT, &verr),
       "X509_verify_cert (strict) accepts it as a TLS client cert under root+issuing: %s",
       X509_verify_cert_error_string(verr));
    ok(!chain_verifies(x, X509_PURPOSE_SSL_SERVER, &verr),
       "and refuses it as a TLS server certificate");
    {
        uint8_t d[32];
        unsigned dl = 0;

        X509_digest(x, EVP_sha256(), d, &dl);
        ok(dl == 32 && memcmp(d, iss.sha256, 32) == 0, "ca_issued.sha256 is the DER's SHA-256");
    }
    {
        BIO *b = BIO_new_mem_buf(iss.pem, -1);
        X509 *y = PEM_read_bio_X509(b, NULL, NULL, NULL);

        ok(y != NULL && X509_cmp(x, y) == 0, "the PEM is the same certificate");
        X509_free(y);
        BIO_free(b);
    }
    X509_free(x);
out:
    X509_free(issuing);
    ca_issued_free(&iss);
}

static void test_serials_are_random_and_positive_each_time(void)
{
    ca_profile p = device_profile("dev");
    ca_issued a, b;
    size_t len = 0;
    uint8_t *der = make_csr("P-256", "dev", &len);
    ca_csr *csr = NULL;
    int i, first_ok = 1;

    ca_csr_parse_der(der, len, &csr, NULL, 0);
    ca_issue(the_ca, csr, &p, &a, NULL, 0);
    ca_issue(the_ca, csr, &p, &b, NULL, 0);
    ok(a.serial_len == 20 && b.serial_len == 20 && memcmp(a.serial, b.serial, 20) != 0,
       "two issuances for the same CSR get different 20-byte serials");
    ok(strlen(a.serial_hex) == 40 && strspn(a.serial_hex, "0123456789abcdef") == 40,
       "serial_hex is 40 lowercase hex digits");
    ca_issued_free(&a);
    ca_issued_free(&b);
    for (i = 0; i < 200; i++) {
        ca_issue(the_ca, csr, &p, &a, NULL, 0);
        if (a.serial[0] < 0x01 || a.serial[0] > 0x7f || a.der == NULL)
            first_ok = 0;
        ca_issued_free(&a);
    }
    ok(first_ok, "the first serial byte is always 0x01..0x7f (positive, minimal DER)");
    ok(a.der == NULL && a.pem == NULL && a.serial_len == 0, "ca_issued_free leaves it zeroed");
    ca_csr_free(csr);
    free(der);
}

static void test_server_profile_has_server_auth_and_dns_ip_sans(void)
{
    static const char *const dns[] = {"authd.example", "*.mqtt.example"};
    static const char *const ips[] = {"192.0.2.7", "2001:db8::1"};
    ca_profile p = device_profile("authd.example");
    ca_issued iss;
    X509 *x;
    EXTENDED_KEY_USAGE *eku;
    GENERAL_NAMES *san;
    int verr = 0, n_dns = 0, n_ip = 0, i;

    p.kind = CA_PROFILE_SERVER;
    p.san_uri = NULL;
    p.dns = dns;
    p.dns_count = 2;
    p.ips = ips;
    p.ip_count = 2;
    ok(issue_for("P-256", &p, &iss) == AD_OK, "a server certificate is issued");
    x = d2i_issued(&iss);
    eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    ok(eku != NULL && sk_ASN1_OBJECT_num(eku) == 1 &&
           OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)) == NID_server_auth,
       "EKU is serverAuth");
    EXTENDED_KEY_USAGE_free(eku);
    san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (i = 0; san != NULL && i < sk_GENERAL_NAME_num(san); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);

        n_dns += g->type == GEN_DNS;
        n_ip += g->type == GEN_IPADD;
    }
    GENERAL_NAMES_free(san);
    ok(n_dns == 2 && n_ip == 2, "two DNS and two IP SANs");
    ok(X509_check_host(x, "authd.example", 0, 0, NULL) == 1 &&
           X509_check_host(x, "a.mqtt.example", 0, 0, NULL) == 1,
       "hostname checks match the DNS SANs (and the wildcard)");
    ok(X509_check_ip_asc(x, "192.0.2.7", 0) == 1 && X509_check_ip_asc(x, "2001:db8::1", 0) == 1,
       "IP checks match the IPv4 and IPv6 SANs");
    ok(chain_verifies(x, X509_PURPOSE_SSL_SERVER, &verr),
       "the chain verifies for the TLS server purpose: %s",
       X509_verify_cert_error_string(verr));
    X509_free(x);
    ca_issued_free(&iss);
}

static void test_crl_dp_and_ocsp_aia_present_when_given(void)
{
    ca_profile p = device_profile("dev");
    ca_issued iss;
    X509 *x;
    STACK_OF(DIST_POINT) *dps;
    AUTHORITY_INFO_ACCESS *aia;
    STACK_OF(OPENSSL_STRING) *ocsp;
    int found_crl = 0;

    p.crl_url = "http://ca.example/crl";
    p.ocsp_url = "http://ca.example/ocsp";
    ok(issue_for("P-256", &p, &iss) == AD_OK, "a certificate with CRL DP and OCSP is issued");
    x = d2i_issued(&iss);
    dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    if (dps != NULL && sk_DIST_POINT_num(dps) == 1) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, 0);

        if (dp->distpoint != NULL && dp->distpoint->type == 0) {
            GENERAL_NAME *g = sk_GENERAL_NAME_value(dp->distpoint->name.fullname, 0);

            found_crl = g->type == GEN_URI &&
                        strcmp((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                               "http://ca.example/crl") == 0;
        }
    }
    sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
    ok(found_crl, "the CRL distribution point is a fullName URI");
    aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
    ok(aia != NULL && sk_ACCESS_DESCRIPTION_num(aia) == 1, "one AIA entry");
    AUTHORITY_INFO_ACCESS_free(aia);
    ocsp = X509_get1_ocsp(x);
    ok(ocsp != NULL && sk_OPENSSL_STRING_num(ocsp) == 1 &&
           strcmp(sk_OPENSSL_STRING_value(ocsp, 0), "http://ca.example/ocsp") == 0,
       "X509_get1_ocsp finds the OCSP URL");
    X509_email_free(ocsp);
    X509_free(x);
    ca_issued_free(&iss);
}

static void test_key_usage_follows_the_key_type(void)
{
    ca_profile p = device_profile("dev");
    ca_issued iss;
    X509 *x;

    ok(issue_for("RSA2048", &p, &iss) == AD_OK, "an RSA-keyed certificate is issued");
    x = d2i_issued(&iss);
    ok(x != NULL && X509_get_key_usage(x) == (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT),
       "an RSA key gets digitalSignature+keyEncipherment");
    X509_free(x);
    ca_issued_free(&iss);
    ok(issue_for("ED25519", &p, &iss) == AD_OK, "an Ed25519-keyed certificate is issued");
    x = d2i_issued(&iss);
    ok(x != NULL && X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE,
       "an Ed25519 key gets digitalSignature only");
    X509_free(x);
    ca_issued_free(&iss);
    ok(issue_for("P-384", &p, &iss) == AD_OK, "a P-384-keyed certificate is issued");
    ca_issued_free(&iss);
}

static void test_bad_profiles_are_refused_as_invalid_field(void)
{
    static const char *const bad_ip[] = {"300.1.1.1"};
    static const char *const bad_dns[] = {"bad host"};
    char long_cn[200];
    ca_profile p;
    ca_issued iss;
    ad_err rc;

    memset(long_cn, 'a', sizeof(long_cn) - 1);
    long_cn[sizeof(long_cn) - 1] = '\0';
    p = device_profile(NULL);
    rc = issue_for("P-256", &p, &iss);
    ok(rc == AD_EFIELD && iss.der == NULL, "a missing CN is invalid_field, out zeroed");
    p = device_profile("");
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "an empty CN is invalid_field");
    p = device_profile(long_cn);
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "a 199-byte CN is invalid_field");
    p = device_profile("bad\x01" "cn");
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "a CN with a control byte is invalid_field");
    p = device_profile("dev");
    p.not_after = p.not_before;
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "an empty validity is invalid_field");
    p = device_profile("dev");
    p.kind = CA_PROFILE_SERVER;
    p.ips = bad_ip;
    p.ip_count = 1;
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "a bad IP string is invalid_field");
    p.ip_count = 0;
    p.dns = bad_dns;
    p.dns_count = 1;
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "a DNS name with a space is invalid_field");
    p = device_profile("dev");
    p.san_uri = "urn:with space";
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "a SAN URI with a space is invalid_field");
    p = device_profile("dev");
    p.not_after = (int64_t)253402300800LL; /* year 10000 */
    ok(issue_for("P-256", &p, &iss) == AD_EFIELD, "a notAfter past 9999 is invalid_field");
    p = device_profile("dev");
    p.not_after = (int64_t)2524608000LL; /* 2050-01-01: GeneralizedTime */
    ok(issue_for("P-256", &p, &iss) == AD_OK, "a notAfter in 2050 is issued");
    {
        X509 *x = d2i_issued(&iss);
        ASN1_TIME *t = ASN1_TIME_new();

        ASN1_TIME_set(t, (time_t)p.not_after);
        ok(x != NULL && ASN1_STRING_type(X509_get0_notAfter(x)) == V_ASN1_GENERALIZEDTIME &&
               ASN1_TIME_compare(X509_get0_notAfter(x), t) == 0,
           "and from 2050 on the time is a GeneralizedTime (RFC 5280 4.1.2.5)");
        ASN1_TIME_free(t);
        X509_free(x);
    }
    ca_issued_free(&iss);
}

/* ---- inspect, verify, pkcs7, open ----------------------------------- */

static void test_randomly_corrupted_certificates_never_crash_or_verify(void)
{
    ca_profile p = device_profile("dev");
    ca_issued iss;
    uint8_t *buf;
    size_t i, verified = 0;

    issue_for("P-256", &p, &iss);
    buf = malloc(iss.der_len);
    /* Exercises the certificate reader under ASan, and checks that no
     * single-byte change survives ca_cert_verify_issued. */
    for (i = 0; i < 3000; i++) {
        uint8_t r[3];
        ca_cert_info info;

        memcpy(buf, iss.der, iss.der_len);
        RAND_bytes(r, sizeof(r));
        buf[(r[0] | r[1] << 8) % iss.der_len] ^= (uint8_t)(r[2] | 1);
        (void)ca_cert_inspect(buf, iss.der_len, &info);
        if (ca_cert_verify_issued(the_ca, buf, iss.der_len, now) == AD_OK)
            verified++;
    }
    ok(verified == 0, "no single-byte corruption of an issued cert verifies (%zu did)", verified);
    free(buf);
    ca_issued_free(&iss);
}

static void test_cert_inspect_agrees_with_openssl(void)
{
    ca_profile p = device_profile("inspect-me");
    ca_issued iss;
    ca_cert_info info;
    X509 *x;
    char hex[CA_SERIAL_HEX_MAX];
    const ASN1_INTEGER *sn;
    size_t cder_len;
    const uint8_t *cder;

    issue_for("P-256", &p, &iss);
    x = d2i_issued(&iss);
    ok(ca_cert_inspect(iss.der, iss.der_len, &info) == AD_OK, "an issued cert can be inspected");
    sn = X509_get0_serialNumber(x);
    codec_hex_encode(ASN1_STRING_get0_data(sn),
                     (size_t)ASN1_STRING_length(sn), hex, 0);
    ok(strcmp(info.serial_hex, hex) == 0 && strcmp(info.serial_hex, iss.serial_hex) == 0,
       "the serial hex agrees with OpenSSL's");
    ok(memcmp(info.sha256, iss.sha256, 32) == 0, "the fingerprint agrees");
    ok(strcmp(info.common_name, "inspect-me") == 0, "the CN agrees");
    ok(info.not_before == p.not_before && info.not_after == p.not_after, "the validity agrees");
    X509_free(x);
    /* The issuing CA's certificate was made by OpenSSL, not by us. */
    cder = ca_cert_der(the_ca, &cder_len);
    ok(ca_cert_inspect(cder, cder_len, &info) == AD_OK &&
           strcmp(info.common_name, "authd Issuing CA") == 0,
       "an OpenSSL-made certificate inspects too");
    ok(info.not_after == ca_not_after(the_ca), "ca_not_after matches its notAfter");
    ok(ca_cert_inspect(iss.der, iss.der_len - 1, &info) == AD_EBADREQ &&
           info.serial_hex[0] == '\0',
       "a truncated certificate is bad_request, out zeroed");
    ca_issued_free(&iss);
}

static void test_cert_verify_issued_checks_signature_issuer_and_time(void)
{
    ca_profile p = device_profile("dev");
    ca_issued iss;
    ca_material other;
    ca *other_ca = NULL;

    issue_for("P-256", &p, &iss);
    ok(ca_cert_verify_issued(the_ca, iss.der, iss.der_len, now) == AD_OK,
       "our certificate verifies now");
    ok(ca_cert_verify_issued(the_ca, iss.der, iss.der_len, p.not_after + 1) == AD_EBADCRED,
       "not after notAfter");
    ok(ca_cert_verify_issued(the_ca, iss.der, iss.der_len, p.not_before - 1) == AD_EBADCRED,
       "not before notBefore");
    iss.der[iss.der_len - 1] ^= 1;
    ok(ca_cert_verify_issued(the_ca, iss.der, iss.der_len, now) != AD_OK,
       "a tampered signature does not verify");
    iss.der[iss.der_len - 1] ^= 1;
    ca_generate("CN=authd Issuing CA", &other, NULL, 0);
    ca_open(other.issuing_cert_pem, other.issuing_key_pem, NULL, &other_ca, NULL, 0);
    ok(other_ca != NULL &&
           ca_cert_verify_issued(other_ca, iss.der, iss.der_len, now) == AD_EBADCRED,
       "a different CA with the same subject name does not accept it");
    ca_close(other_ca);
    ca_material_free(&other);
    ca_issued_free(&iss);
}

static void test_pkcs7_certs_only_round_trips_with_d2i_pkcs7(void)
{
    ca_profile p = device_profile("dev");
    ca_issued iss;
    uint8_t *ders[2], *out = NULL;
    size_t lens[2], out_len = 0, n;
    const uint8_t *q;
    PKCS7 *p7;
    STACK_OF(X509) *certs;
    X509 *x0, *x1;

    issue_for("P-256", &p, &iss);
    n = ca_pem_chain_to_der(ca_chain_pem(the_ca), ders, lens, 2);
    ok(n == 1, "the default chain is just the issuing certificate");
    ders[1] = ders[0];
    lens[1] = lens[0];
    ders[0] = iss.der;
    lens[0] = iss.der_len;
    ok(ca_pkcs7_certs_only((const uint8_t *const *)ders, lens, 2, &out, &out_len) == AD_OK,
       "a certs-only PKCS#7 is built");
    q = out;
    p7 = d2i_PKCS7(NULL, &q, (long)out_len);
    ok(p7 != NULL && q == out + out_len && PKCS7_type_is_signed(p7), "d2i_PKCS7 reads it as SignedData");
    certs = p7 != NULL ? p7->d.sign->cert : NULL;
    x0 = d2i_issued(&iss);
    x1 = pem_to_x509(mat.issuing_cert_pem);
    ok(certs != NULL && sk_X509_num(certs) == 2 && X509_cmp(sk_X509_value(certs, 0), x0) == 0 &&
           X509_cmp(sk_X509_value(certs, 1), x1) == 0,
       "it holds both certificates in the given order");
    {
        /* Re-encoding with OpenSSL must give the same bytes: our DER is
         * what OpenSSL would write. */
        uint8_t *re = NULL;
        int rl = i2d_PKCS7(p7, &re);

        ok(rl == (int)out_len && memcmp(re, out, out_len) == 0,
           "OpenSSL re-encodes it byte for byte");
        OPENSSL_free(re);
    }
    {
        uint8_t *empty = NULL;
        size_t empty_len = 0;
        PKCS7 *e7;

        q = NULL;
        ok(ca_pkcs7_certs_only(NULL, NULL, 0, &empty, &empty_len) == AD_OK &&
               (q = empty, e7 = d2i_PKCS7(NULL, &q, (long)empty_len)) != NULL,
           "zero certificates still make a readable SignedData");
        PKCS7_free(q != NULL ? e7 : NULL);
        free(empty);
    }
    X509_free(x0);
    X509_free(x1);
    PKCS7_free(p7);
    free(ders[1]);
    free(out);
    ca_issued_free(&iss);
}

static void test_ca_open_refuses_mismatched_key_and_non_ca(void)
{
    ca_material other;
    ca *c = (ca *)1;
    char err[160] = "";
    ad_err rc;

    ca_generate(NULL, &other, NULL, 0);
    rc = ca_open(mat.issuing_cert_pem, other.issuing_key_pem, NULL, &c, err, sizeof(err));
    ok(rc != AD_OK && c == NULL, "a key that does not match the certificate is refused (%s)", err);
    c = (ca *)1;
    rc = ca_open(mat.issuing_cert_pem, mat.issuing_key_pem, mat.root_cert_pem, &c, NULL, 0);
    ok(rc != AD_OK && c == NULL, "a chain that does not begin with the issuing cert is refused");
    c = (ca *)1;
    rc = ca_open("garbage", mat.issuing_key_pem, NULL, &c, NULL, 0);
    ok(rc != AD_OK && c == NULL, "a garbage certificate is refused");
    {
        /* A leaf certificate with its own key: not a CA. */
        ca_profile p = device_profile("leaf");
        ca_issued iss;
        char *key = NULL;

        p.kind = CA_PROFILE_SERVER;
        p.san_uri = NULL;
        ca_issue_with_new_key(the_ca, &p, &iss, &key, NULL, 0);
        c = (ca *)1;
        rc = ca_open(iss.pem, key, NULL, &c, NULL, 0);
        ok(rc != AD_OK && c == NULL, "a non-CA certificate is refused as issuing CA");
        free(key);
        ca_issued_free(&iss);
    }
    ca_material_free(&other);
}

static void test_ca_generate_makes_a_proper_root_and_issuing_ca(void)
{
    X509 *root = pem_to_x509(mat.root_cert_pem), *iss = pem_to_x509(mat.issuing_cert_pem);
    BASIC_CONSTRAINTS *bc;
    int crit = 0;
    char cn[64] = "";

    ok(root != NULL && iss != NULL, "both certificates parse");
    ok(X509_check_issued(root, root) == X509_V_OK && X509_verify(root, X509_get0_pubkey(root)) == 1,
       "the root is self-signed");
    ok(X509_check_issued(root, iss) == X509_V_OK && X509_verify(iss, X509_get0_pubkey(root)) == 1,
       "the issuing CA is signed by the root");
    bc = X509_get_ext_d2i(iss, NID_basic_constraints, &crit, NULL);
    ok(bc != NULL && bc->ca && crit && bc->pathlen != NULL &&
           ASN1_INTEGER_get(bc->pathlen) == 0,
       "the issuing CA has CA:TRUE, pathlen 0, critical");
    BASIC_CONSTRAINTS_free(bc);
    ok((X509_get_key_usage(root) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) ==
           (KU_KEY_CERT_SIGN | KU_CRL_SIGN),
       "the root may sign certificates and CRLs");
    X509_NAME_get_text_by_NID(X509_get_subject_name(root), NID_commonName, cn, sizeof(cn));
    ok(strcmp(cn, "authd Root CA") == 0, "the root is CN=authd Root CA");
    ok(strcmp(ca_subject(the_ca), "CN=authd Issuing CA") == 0,
       "ca_subject renders the issuing subject (%s)", ca_subject(the_ca));
    ok(strstr(mat.root_key_pem, "-----BEGIN PRIVATE KEY-----") != NULL &&
           strstr(mat.issuing_key_pem, "-----BEGIN PRIVATE KEY-----") != NULL,
       "keys come out as PKCS#8");
    X509_free(root);
    X509_free(iss);
    {
        ca_material m;
        ca *c = NULL;
        X509 *r;
        char o[64] = "";

        ok(ca_generate("CN=Acme Devices CA,O=Acme\\, Inc.", &m, NULL, 0) == AD_OK &&
               ca_open(m.issuing_cert_pem, m.issuing_key_pem, NULL, &c, NULL, 0) == AD_OK,
           "a custom subject with an escaped comma works");
        ok(c != NULL && strcmp(ca_subject(c), "CN=Acme Devices CA,O=Acme\\, Inc.") == 0,
           "the issuing subject is as given (%s)", c != NULL ? ca_subject(c) : "");
        r = pem_to_x509(m.root_cert_pem);
        X509_NAME_get_text_by_NID(X509_get_subject_name(r), NID_organizationName, o, sizeof(o));
        ok(strcmp(o, "Acme, Inc.") == 0, "the root shares the non-CN attributes");
        X509_free(r);
        ca_close(c);
        ca_material_free(&m);
        ok(ca_generate("CN=x,BOGUS=y", &m, NULL, 0) == AD_EFIELD && m.root_cert_pem == NULL,
           "an unknown attribute is invalid_field, out zeroed");
    }
}

/* An issuing CA whose key is of the given type, self-signed (tests the
 * generic signing path; operators may import such a CA). */
static void make_foreign_ca(EVP_PKEY *k, char **cert_pem, char **key_pem)
{
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509V3_CTX ctx;
    X509_EXTENSION *e;
    BIO *b;
    char *mem;
    long len;
    int ed = EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"Imported CA",
                               -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    X509_set_pubkey(x, k);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(x, k, ed ? NULL : EVP_sha256());
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    len = BIO_get_mem_data(b, &mem);
    *cert_pem = strndup(mem, (size_t)len);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    len = BIO_get_mem_data(b, &mem);
    *key_pem = strndup(mem, (size_t)len);
    BIO_free(b);
    X509_NAME_free(n);
    X509_free(x);
}

static void test_imported_p384_rsa_and_ed25519_issuing_cas_sign_correctly(void)
{
    static const char *const types[] = {"P-384", "RSA2048", "ED25519"};
    static const int sig_nids[] = {NID_ecdsa_with_SHA384, NID_sha256WithRSAEncryption,
                                   NID_ED25519};
    size_t i;

    for (i = 0; i < 3; i++) {
        EVP_PKEY *k = make_key(types[i]);
        char *cert_pem = NULL, *key_pem = NULL;
        ca *c = NULL;
        ca_profile p = device_profile("dev");
        ca_issued iss;
        size_t len = 0;
        uint8_t *der = make_csr("P-256", "dev", &len);
        ca_csr *csr = NULL;
        X509 *x;
        ad_err rc;

        make_foreign_ca(k, &cert_pem, &key_pem);
        rc = ca_open(cert_pem, key_pem, NULL, &c, NULL, 0);
        ok(rc == AD_OK, "a %s issuing CA opens", types[i]);
        ca_csr_parse_der(der, len, &csr, NULL, 0);
        rc = c != NULL ? ca_issue(c, csr, &p, &iss, NULL, 0) : AD_EINTERNAL;
        x = rc == AD_OK ? d2i_issued(&iss) : NULL;
        ok(x != NULL && X509_get_signature_nid(x) == sig_nids[i] && X509_verify(x, k) == 1,
           "a %s issuing CA signs with the right algorithm, verifiably", types[i]);
        ok(rc == AD_OK && ca_cert_verify_issued(c, iss.der, iss.der_len, now) == AD_OK,
           "ca_cert_verify_issued accepts it under the %s CA", types[i]);
        X509_free(x);
        if (rc == AD_OK)
            ca_issued_free(&iss);
        ca_csr_free(csr);
        free(der);
        ca_close(c);
        free(cert_pem);
        free(key_pem);
        EVP_PKEY_free(k);
    }
}

/* ---- external consumers --------------------------------------------- */

static int write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static void test_issued_cert_verifies_with_the_openssl_cli(void)
{
    char dir[] = "/tmp/test_ca.XXXXXX", cmd[1024];
    ca_profile p = device_profile("cli-dev");
    ca_issued iss;
    int rc;

    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp");
        return;
    }
    issue_for("P-256", &p, &iss);
    write_file(dir, "root.pem", mat.root_cert_pem);
    write_file(dir, "issuing.pem", mat.issuing_cert_pem);
    write_file(dir, "cert.pem", iss.pem);
    snprintf(cmd, sizeof(cmd),
             "openssl verify -x509_strict -purpose sslclient -CAfile %s/root.pem "
             "-untrusted %s/issuing.pem %s/cert.pem >/dev/null 2>&1",
             dir, dir, dir);
    rc = system(cmd);
    ok(rc == 0, "`openssl verify -x509_strict -purpose sslclient` accepts the chain");
    snprintf(cmd, sizeof(cmd), "openssl x509 -in %s/cert.pem -noout -text 2>&1 | "
                               "grep -q 'URI:urn:device:SN-1'", dir);
    ok(system(cmd) == 0, "`openssl x509 -text` shows the SAN URI");
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
    ca_issued_free(&iss);
}

static void test_server_cert_with_new_key_loads_in_gnutls(void)
{
    static const char *const dns[] = {"localhost"};
    static const char *const ips[] = {"127.0.0.1"};
    ca_profile p = device_profile("localhost");
    ca_issued iss;
    char *key = NULL;
    gnutls_certificate_credentials_t cred = NULL;
    gnutls_datum_t c, k;
    gnutls_x509_crt_t crt = NULL;
    int rc;

    p.kind = CA_PROFILE_SERVER;
    p.san_uri = NULL;
    p.dns = dns;
    p.dns_count = 1;
    p.ips = ips;
    p.ip_count = 1;
    ok(ca_issue_with_new_key(the_ca, &p, &iss, &key, NULL, 0) == AD_OK && key != NULL,
       "a server certificate with a fresh key is issued");
    ok(key != NULL && strstr(key, "-----BEGIN PRIVATE KEY-----") != NULL,
       "the key is PKCS#8 PEM");
    gnutls_certificate_allocate_credentials(&cred);
    c.data = (unsigned char *)iss.pem;
    c.size = (unsigned)strlen(iss.pem);
    k.data = (unsigned char *)key;
    k.size = key != NULL ? (unsigned)strlen(key) : 0;
    rc = gnutls_certificate_set_x509_key_mem(cred, &c, &k, GNUTLS_X509_FMT_PEM);
    ok(rc >= 0, "GnuTLS (libmicrohttpd's TLS) loads the cert+key pair: %s",
       gnutls_strerror(rc));
    gnutls_x509_crt_init(&crt);
    ok(gnutls_x509_crt_import(crt, &c, GNUTLS_X509_FMT_PEM) >= 0 &&
           gnutls_x509_crt_check_hostname(crt, "localhost") != 0 &&
           gnutls_x509_crt_check_ip(crt, (const unsigned char *)"\x7f\0\0\x01", 4, 0) != 0,
       "GnuTLS matches the DNS and IP SANs");
    gnutls_x509_crt_deinit(crt);
    gnutls_certificate_free_credentials(cred);
    free(key);
    ca_issued_free(&iss);
}

/* ---- threads -------------------------------------------------------- */

enum { THREADS = 4, PER_THREAD = 100 };

static void *issue_many(void *arg)
{
    ca_csr *csr = arg;
    ca_profile p = device_profile("threaded");
    EVP_PKEY *issuing_key;
    X509 *issuing = pem_to_x509(mat.issuing_cert_pem);
    intptr_t bad = 0;
    int i;

    issuing_key = X509_get0_pubkey(issuing);
    for (i = 0; i < PER_THREAD; i++) {
        ca_issued iss;
        X509 *x;

        if (ca_issue(the_ca, csr, &p, &iss, NULL, 0) != AD_OK) {
            bad++;
            continue;
        }
        x = d2i_issued(&iss);
        if (x == NULL || X509_verify(x, issuing_key) != 1)
            bad++;
        X509_free(x);
        ca_issued_free(&iss);
    }
    X509_free(issuing);
    return (void *)bad;
}

struct blob {
    const uint8_t *p;
    size_t len;
};

static void *parse_many(void *arg)
{
    const struct blob *b = arg;
    intptr_t bad = 0;
    int i;

    for (i = 0; i < PER_THREAD; i++) {
        ca_csr *csr = NULL;

        if (ca_csr_parse_der(b->p, b->len, &csr, NULL, 0) != AD_OK)
            bad++;
        ca_csr_free(csr);
    }
    return (void *)bad;
}

static void test_concurrent_issuance_on_one_ca_is_correct(void)
{
    pthread_t th[THREADS * 2];
    size_t len = 0, rsa_len = 0;
    uint8_t *der = make_csr("P-256", "threaded", &len);
    uint8_t *rsa = make_csr("RSA2048", "threaded", &rsa_len);
    ca_csr *csr = NULL;
    intptr_t bad = 0;
    int i;

    struct blob blobs[2];

    blobs[0].p = der;
    blobs[0].len = len;
    blobs[1].p = rsa;
    blobs[1].len = rsa_len;
    ca_csr_parse_der(der, len, &csr, NULL, 0);
    for (i = 0; i < THREADS; i++) {
        pthread_create(&th[i], NULL, issue_many, csr);
        pthread_create(&th[THREADS + i], NULL, parse_many, &blobs[i % 2]);
    }
    for (i = 0; i < THREADS * 2; i++) {
        void *r;

        pthread_join(th[i], &r);
        bad += (intptr_t)r;
    }
    ok(bad == 0, "%d threads issuing on one shared ca (and %d parsing CSRs) all produce "
                 "valid certificates (%ld failures)",
       THREADS, THREADS, (long)bad);
    ca_csr_free(csr);
    free(der);
    free(rsa);
}

int main(void)
{
    char err[256] = "";

    now = (int64_t)time(NULL);
    if (ca_global_init() != AD_OK ||
        ca_generate(NULL, &mat, err, sizeof(err)) != AD_OK ||
        ca_open(mat.issuing_cert_pem, mat.issuing_key_pem, NULL, &the_ca, err,
                sizeof(err)) != AD_OK) {
        printf("Bail out! cannot set up a CA: %s\n", err);
        return 1;
    }
    TAP_RUN(test_csr_of_each_accepted_key_type_parses_and_verifies);
    TAP_RUN(test_csr_without_cn_has_null_common_name);
    TAP_RUN(test_csr_with_utf8_cn_is_returned_as_utf8);
    TAP_RUN(test_rsa1024_and_other_curves_are_refused_as_weak_keys);
    TAP_RUN(test_csr_with_tampered_signature_is_refused);
    TAP_RUN(test_garbage_truncated_and_empty_csrs_are_refused);
    TAP_RUN(test_pem_and_base64_csrs_are_accepted_and_empty_pem_refused);
    TAP_RUN(test_randomly_corrupted_csrs_never_crash);
    TAP_RUN(test_device_cert_fields_decode_with_openssl);
    TAP_RUN(test_serials_are_random_and_positive_each_time);
    TAP_RUN(test_server_profile_has_server_auth_and_dns_ip_sans);
    TAP_RUN(test_crl_dp_and_ocsp_aia_present_when_given);
    TAP_RUN(test_key_usage_follows_the_key_type);
    TAP_RUN(test_bad_profiles_are_refused_as_invalid_field);
    TAP_RUN(test_randomly_corrupted_certificates_never_crash_or_verify);
    TAP_RUN(test_cert_inspect_agrees_with_openssl);
    TAP_RUN(test_cert_verify_issued_checks_signature_issuer_and_time);
    TAP_RUN(test_pkcs7_certs_only_round_trips_with_d2i_pkcs7);
    TAP_RUN(test_ca_open_refuses_mismatched_key_and_non_ca);
    TAP_RUN(test_ca_generate_makes_a_proper_root_and_issuing_ca);
    TAP_RUN(test_imported_p384_rsa_and_ed25519_issuing_cas_sign_correctly);
    TAP_RUN(test_issued_cert_verifies_with_the_openssl_cli);
    TAP_RUN(test_server_cert_with_new_key_loads_in_gnutls);
    TAP_RUN(test_concurrent_issuance_on_one_ca_is_correct);
    ca_close(the_ca);
    ca_material_free(&mat);
    return tap_done();
}
