/* Creating and loading the CA (ca_generate, ca_open) and the small
 * encodings the daemon needs around certificates (PKCS#7 certs-only, PEM
 * chains, hex). None of this is on the issuance hot path, so it uses
 * OpenSSL's ordinary X509 API where that is clearer. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "ca_int.h"

enum {
    SUBJECT_MAX = 1024,       /* the subject string given to ca_generate */
    SUBJECT_ATTRS_MAX = 16,
    CHAIN_PEM_MAX = 256 * 1024,
    CHAIN_CERT_MAX = 64 * 1024, /* one certificate of an imported chain */
    PKCS7_MAX = 1024 * 1024,
    ROOT_YEARS = 20,
    ISSUING_YEARS = 10,
    BACKDATE_SECONDS = 3600   /* tolerate clients whose clocks lag */
};

ad_err ca_global_init(void)
{
    if (OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL) != 1 ||
        ca_group(CA_KEY_EC_P256) == NULL || ca_group(CA_KEY_EC_P384) == NULL)
        return AD_ECRYPTO;
    return AD_OK;
}

/* Copies a memory BIO's contents into a NUL-terminated malloc()ed string. */
static char *bio_to_string(BIO *bio)
{
    char *mem, *s;
    long n = BIO_get_mem_data(bio, &mem);

    if (n < 0 || (s = malloc((size_t)n + 1)) == NULL)
        return NULL;
    memcpy(s, mem, (size_t)n);
    s[n] = '\0';
    return s;
}

/* ---- ca_generate --------------------------------------------------- */

typedef struct {
    char key[32];
    char val[256];
} subject_attr;

/* Splits "CN=a,O=b\, c" into attributes (backslash escapes the next
 * character). Returns the count, or -1 if malformed. */
static int subject_split(const char *s, subject_attr *attrs, size_t max)
{
    size_t n = 0, k = 0;
    int in_val = 0;

    if (strnlen(s, SUBJECT_MAX + 1) > SUBJECT_MAX)
        return -1;
    memset(attrs, 0, max * sizeof(*attrs));
    for (;; s++) {
        char ch = *s;

        if (n >= max)
            return -1;
        if (ch == '\\' && s[1] != '\0') {
            ch = *++s;
        } else if (ch == ',' || ch == '\0') {
            if (!in_val || k == 0 || attrs[n].key[0] == '\0')
                return -1;
            n++;
            k = 0;
            in_val = 0;
            if (ch == '\0')
                return (int)n;
            while (s[1] == ' ') /* "CN=a, O=b" */
                s++;
            continue;
        } else if (ch == '=' && !in_val) {
            in_val = 1;
            k = 0;
            continue;
        }
        if (in_val) {
            if (k + 1 >= sizeof(attrs[n].val))
                return -1;
            attrs[n].val[k++] = ch;
        } else {
            if (k + 1 >= sizeof(attrs[n].key))
                return -1;
            attrs[n].key[k++] = ch;
        }
    }
}

/* Builds a Name from the attributes with the CN replaced by cn (or put
 * first if there is none). */
static X509_NAME *subject_name(const subject_attr *attrs, int n, const char *cn)
{
    X509_NAME *name = X509_NAME_new();
    int i, have_cn = 0;

    if (name == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        if (strcmp(attrs[i].key, "CN") == 0)
            have_cn = 1;
    if (!have_cn && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                               (const unsigned char *)cn, -1,
                                               -1, 0) != 1)
        goto bad;
    for (i = 0; i < n; i++) {
        const char *v = strcmp(attrs[i].key, "CN") == 0 ? cn : attrs[i].val;

        if (X509_NAME_add_entry_by_txt(name, attrs[i].key, MBSTRING_UTF8,
                                       (const unsigned char *)v, -1, -1,
                                       0) != 1)
            goto bad;
    }
    return name;
bad:
    X509_NAME_free(name);
    return NULL;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok;

    if (ext == NULL)
        return 0;
    ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* Makes a CA certificate for key, signed by signer_key (issuer NULL:
 * self-signed). */
static X509 *make_ca_cert(EVP_PKEY *key, X509_NAME *subject, X509 *issuer,
                          EVP_PKEY *signer_key, int years, int is_root)
{
    X509 *x = X509_new();
    uint8_t serial[CA_SERIAL_MAX];
    BIGNUM *bn = NULL;
    X509V3_CTX ctx;
    int ok = 0;
    time_t now = time(NULL);

    if (x == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
        goto out;
    serial[0] = (uint8_t)(1 + serial[0] % 0x7f);
    if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
        X509_set_version(x, 2) != 1 || X509_set_subject_name(x, subject) != 1 ||
        X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer)
                                               : subject) != 1 ||
        X509_time_adj_ex(X509_getm_notBefore(x), 0, -BACKDATE_SECONDS, &now) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), years * 365 + years / 4, 0, &now) == NULL ||
        X509_set_pubkey(x, key) != 1)
        goto out;
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    if (!add_ext(x, &ctx, NID_basic_constraints,
                 is_root ? "critical,CA:TRUE" : "critical,CA:TRUE,pathlen:0") ||
        /* The issuing CA also signs OCSP responses and CRLs itself. */
        !add_ext(x, &ctx, NID_key_usage,
                 is_root ? "critical,keyCertSign,cRLSign"
                         : "critical,digitalSignature,keyCertSign,cRLSign") ||
        !add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
        (!is_root &&
         !add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always")))
        goto out;
    if (X509_sign(x, signer_key, EVP_sha256()) <= 0)
        goto out;
    ok = 1;
out:
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

static char *cert_pem(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;

    if (bio != NULL && PEM_write_bio_X509(bio, x) == 1)
        s = bio_to_string(bio);
    BIO_free(bio);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    char *s = NULL;

    /* PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY"). */
    if (bio != NULL &&
        PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) == 1)
        s = bio_to_string(bio);
    BIO_free(bio);
    return s;
}

ad_err ca_generate(const char *subject, ca_material *out, char *err,
                   size_t errlen)
{
    subject_attr attrs[SUBJECT_ATTRS_MAX];
    int nattrs = 0;
    const char *issuing_cn = "authd Issuing CA";
    EVP_PKEY *root_key = NULL, *iss_key = NULL;
    X509_NAME *root_name = NULL, *iss_name = NULL;
    X509 *root = NULL, *iss = NULL;
    ad_err rc;
    int i;

    memset(out, 0, sizeof(*out));
    if (subject != NULL) {
        nattrs = subject_split(subject, attrs, SUBJECT_ATTRS_MAX);
        if (nattrs < 0) {
            rc = ad_errf(AD_EFIELD, err, errlen,
                         "subject must look like \"CN=..,O=..\"");
            goto out;
        }
        for (i = 0; i < nattrs; i++)
            if (strcmp(attrs[i].key, "CN") == 0)
                issuing_cn = attrs[i].val;
    }
    root_name = subject_name(attrs, nattrs, "authd Root CA");
    iss_name = subject_name(attrs, nattrs, issuing_cn);
    if (root_name == NULL || iss_name == NULL) {
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "subject has an unknown attribute or a bad value");
        goto out;
    }
    root_key = EVP_EC_gen("P-256");
    iss_key = EVP_EC_gen("P-256");
    if (root_key == NULL || iss_key == NULL) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "cannot generate P-256 keys");
        goto out;
    }
    root = make_ca_cert(root_key, root_name, NULL, root_key, ROOT_YEARS, 1);
    iss = root == NULL ? NULL
                       : make_ca_cert(iss_key, iss_name, root, root_key,
                                      ISSUING_YEARS, 0);
    if (iss == NULL) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "cannot build the CA certificates");
        goto out;
    }
    out->root_cert_pem = cert_pem(root);
    out->root_key_pem = key_pem(root_key);
    out->issuing_cert_pem = cert_pem(iss);
    out->issuing_key_pem = key_pem(iss_key);
    if (out->root_cert_pem == NULL || out->root_key_pem == NULL ||
        out->issuing_cert_pem == NULL || out->issuing_key_pem == NULL) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "cannot encode the CA material");
        goto out;
    }
    rc = AD_OK;
out:
    if (rc != AD_OK)
        ca_material_free(out);
    X509_free(root);
    X509_free(iss);
    X509_NAME_free(root_name);
    X509_NAME_free(iss_name);
    EVP_PKEY_free(root_key);
    EVP_PKEY_free(iss_key);
    ERR_clear_error();
    return rc;
}

static void free_secret(char *s)
{
    if (s != NULL)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void ca_material_free(ca_material *m)
{
    if (m == NULL)
        return;
    free(m->root_cert_pem);
    free_secret(m->root_key_pem);
    free(m->issuing_cert_pem);
    free_secret(m->issuing_key_pem);
    memset(m, 0, sizeof(*m));
}

/* ---- ca_open ------------------------------------------------------- */

/* Refuses passphrase prompts: the library must never touch a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* The issuing key kind, and for EC keys the legacy EC_KEY used by the
 * fast signing path. */
static int key_kind(EVP_PKEY *pkey, ca_key_kind *kind, EC_KEY **ec)
{
    *ec = NULL;
    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_EC: {
        const EC_GROUP *g;
        int nid;

        if ((*ec = EVP_PKEY_get1_EC_KEY(pkey)) == NULL ||
            (g = EC_KEY_get0_group(*ec)) == NULL)
            return -1;
        nid = EC_GROUP_get_curve_name(g);
        if (nid == NID_X9_62_prime256v1)
            *kind = CA_KEY_EC_P256;
        else if (nid == NID_secp384r1)
            *kind = CA_KEY_EC_P384;
        else
            return -1;
        return 0;
    }
    case EVP_PKEY_RSA:
        *kind = CA_KEY_RSA;
        return EVP_PKEY_get_bits(pkey) >= 2048 ? 0 : -1;
    case EVP_PKEY_ED25519:
        *kind = CA_KEY_ED25519;
        return 0;
    }
    return -1;
}

/* A one-line "CN=..,O=.." rendering of the subject, in encoded order. */
static char *name_string(X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;
    unsigned long flags = XN_FLAG_SEP_COMMA_PLUS | XN_FLAG_FN_SN |
                          (ASN1_STRFLGS_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);

    if (bio != NULL && X509_NAME_print_ex(bio, name, 0, flags) >= 0)
        s = bio_to_string(bio);
    BIO_free(bio);
    return s;
}

ad_err ca_open(const char *issuing_cert_pem, const char *issuing_key_pem,
               const char *chain_pem, ca **out, char *err, size_t errlen)
{
    static const char *const cert_label[] = {"CERTIFICATE", NULL};
    ca *c = NULL;
    X509 *x = NULL;
    BIO *bio = NULL;
    const uint8_t *p;
    const ASN1_OCTET_STRING *ski;
    ca_cert_fields f;
    uint8_t *first = NULL;
    size_t first_len = 0, next = 0, chain_len;
    int h;
    ad_err rc;

    *out = NULL;
    if (issuing_cert_pem == NULL || issuing_key_pem == NULL) {
        rc = ad_errf(AD_EFIELD, err, errlen, "the issuing certificate and key are required");
        goto out;
    }
    if (chain_pem == NULL)
        chain_pem = issuing_cert_pem;
    chain_len = strnlen(chain_pem, CHAIN_PEM_MAX + 1);
    if (chain_len > CHAIN_PEM_MAX) {
        rc = ad_errf(AD_EFIELD, err, errlen, "the chain PEM is too large");
        goto out;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    if (pem_next(issuing_cert_pem, strnlen(issuing_cert_pem, CHAIN_PEM_MAX),
                 cert_label, CA_CERT_MAX, &c->cert_der, &c->cert_der_len,
                 &next) != 0 ||
        ca_cert_parse(c->cert_der, c->cert_der_len, &f) != 0) {
        rc = ad_errf(AD_EFIELD, err, errlen, "the issuing certificate cannot be parsed");
        goto out;
    }
    p = c->cert_der;
    x = d2i_X509(NULL, &p, (long)c->cert_der_len);
    if (x == NULL) {
        rc = ad_errf(AD_EFIELD, err, errlen, "the issuing certificate cannot be parsed");
        goto out;
    }
    /* X509_check_ca also refuses a keyUsage without keyCertSign. */
    if (X509_check_ca(x) < 1) {
        rc = ad_errf(AD_EFIELD, err, errlen, "the issuing certificate is not a CA");
        goto out;
    }
    bio = BIO_new_mem_buf(issuing_key_pem, -1);
    if (bio == NULL ||
        (c->pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)) == NULL) {
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "the issuing key cannot be parsed (encrypted keys are not supported)");
        goto out;
    }
    if (X509_check_private_key(x, c->pkey) != 1) {
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "the issuing key does not match the issuing certificate");
        goto out;
    }
    if (key_kind(c->pkey, &c->kind, &c->ec) != 0) {
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "the issuing key must be P-256, P-384, RSA >= 2048 or Ed25519");
        goto out;
    }
    /* Spans from the parse point into c->cert_der, which c owns. */
    c->subject = f.subject;
    c->not_before = f.not_before;
    c->not_after = f.not_after;
    ski = X509_get0_subject_key_id(x);
    if (ski != NULL && ASN1_STRING_length(ski) > 0 &&
        (size_t)ASN1_STRING_length(ski) <= sizeof(c->ski)) {
        c->ski_len = (size_t)ASN1_STRING_length(ski);
        memcpy(c->ski, ASN1_STRING_get0_data(ski), c->ski_len);
    } else {
        /* No SKI on the CA: use the RFC 5280 method that verifiers that
         * match by key id would compute. */
        SHA1(f.spk_bits.p, f.spk_bits.len, c->ski);
        c->ski_len = SHA_DIGEST_LENGTH;
    }
    /* What OCSP requests name us by (RFC 6960 4.1.1): hashes of the
     * subject Name DER and of the subjectPublicKey bits, for each CertID
     * hash we accept, computed once so that a request costs a memcmp. */
    SHA1(f.spk_bits.p, f.spk_bits.len, c->key_sha1);
    for (h = 0; h < CA_OCSP_HASHES; h++) {
        const EVP_MD *md = ca_ocsp_hash_md((ca_ocsp_hash)h);

        if (md == NULL ||
            EVP_Digest(f.subject.p, f.subject.len, c->name_hash[h], NULL,
                       md, NULL) != 1 ||
            EVP_Digest(f.spk_bits.p, f.spk_bits.len, c->key_hash[h], NULL,
                       md, NULL) != 1) {
            rc = ad_errf(AD_ECRYPTO, err, errlen, "cannot hash the issuing certificate");
            goto out;
        }
    }
    /* The chain we present must start with the certificate we sign with. */
    if (pem_next(chain_pem, chain_len, cert_label, CHAIN_CERT_MAX, &first,
                 &first_len, &next) != 0 ||
        first_len != c->cert_der_len ||
        memcmp(first, c->cert_der, first_len) != 0) {
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "the chain must begin with the issuing certificate");
        goto out;
    }
    c->chain_pem = malloc(chain_len + 1);
    c->subject_str = name_string(X509_get_subject_name(x));
    if (c->chain_pem == NULL || c->subject_str == NULL) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    memcpy(c->chain_pem, chain_pem, chain_len);
    c->chain_pem[chain_len] = '\0';
    *out = c;
    c = NULL;
    rc = AD_OK;
out:
    ERR_clear_error();
    free(first);
    BIO_free(bio);
    X509_free(x);
    ca_close(c);
    return rc;
}

void ca_close(ca *c)
{
    if (c == NULL)
        return;
    EC_KEY_free(c->ec);
    EVP_PKEY_free(c->pkey);
    free(c->cert_der);
    free(c->chain_pem);
    free(c->subject_str);
    free(c);
}

const char *ca_chain_pem(const ca *c) { return c->chain_pem; }
const char *ca_subject(const ca *c) { return c->subject_str; }
int64_t ca_not_after(const ca *c) { return c->not_after; }

const uint8_t *ca_cert_der(const ca *c, size_t *len)
{
    *len = c->cert_der_len;
    return c->cert_der;
}

/* ---- encodings ----------------------------------------------------- */

/* 1 if der is exactly one DER SEQUENCE (what a certificate is at least). */
static int one_sequence(const uint8_t *der, size_t len)
{
    der_span cur = {der, len}, body;

    return der != NULL && der_read(&cur, DER_SEQUENCE, &body, NULL) == 0 &&
           cur.len == 0;
}

ad_err ca_pkcs7_certs_only(const uint8_t *const *ders, const size_t *lens,
                           size_t n, uint8_t **out, size_t *out_len)
{
    static const uint8_t oid_signed_data[] = {0x2a, 0x86, 0x48, 0x86, 0xf7,
                                              0x0d, 0x01, 0x07, 0x02};
    static const uint8_t oid_data[] = {0x2a, 0x86, 0x48, 0x86, 0xf7,
                                       0x0d, 0x01, 0x07, 0x01};
    static const uint8_t version1[] = {0x02, 0x01, 0x01};
    static const uint8_t empty_set[] = {0x31, 0x00};
    der_w w;
    size_t ci, ctx, sd, eci, certs, i;
    ad_err rc;

    *out = NULL;
    *out_len = 0;
    for (i = 0; i < n; i++)
        if (!one_sequence(ders[i], lens[i]))
            return AD_EFIELD;
    /* ContentInfo { signedData, [0] SignedData { version 1, digestAlgs {},
     * encapContentInfo { data }, certificates [0] {...}, signerInfos {} } }
     * The certificates keep the caller's order, as OpenSSL's encoder does
     * (it encodes this SET OF as a SEQUENCE OF). */
    derw_init(&w, 1024, PKCS7_MAX);
    ci = derw_begin(&w, DER_SEQUENCE);
    derw_tlv(&w, DER_OID, oid_signed_data, sizeof(oid_signed_data));
    ctx = derw_begin(&w, DER_CTX0);
    sd = derw_begin(&w, DER_SEQUENCE);
    derw_bytes(&w, version1, sizeof(version1));
    derw_bytes(&w, empty_set, sizeof(empty_set));
    eci = derw_begin(&w, DER_SEQUENCE);
    derw_tlv(&w, DER_OID, oid_data, sizeof(oid_data));
    derw_end(&w, eci);
    if (n > 0) {
        certs = derw_begin(&w, DER_CTX0);
        for (i = 0; i < n; i++)
            derw_bytes(&w, ders[i], lens[i]);
        derw_end(&w, certs);
    }
    derw_bytes(&w, empty_set, sizeof(empty_set));
    derw_end(&w, sd);
    derw_end(&w, ctx);
    derw_end(&w, ci);
    rc = w.err ? AD_ETOOBIG : AD_OK;
    if (rc == AD_OK)
        *out = derw_take(&w, out_len);
    derw_free(&w);
    return rc;
}

size_t ca_pem_chain_to_der(const char *pem, uint8_t **ders, size_t *lens,
                           size_t max)
{
    static const char *const cert_label[] = {"CERTIFICATE", NULL};
    size_t n = 0, off = 0, len, next, i;

    if (pem == NULL)
        return 0;
    len = strnlen(pem, CHAIN_PEM_MAX + 1);
    if (len > CHAIN_PEM_MAX)
        return 0;
    while (n < max) {
        int r = pem_next(pem + off, len - off, cert_label, CHAIN_CERT_MAX,
                         &ders[n], &lens[n], &next);

        if (r == 1)
            break;
        if (r != 0 || !one_sequence(ders[n], lens[n])) {
            if (r == 0)
                free(ders[n]);
            goto bad;
        }
        n++;
        off += next;
    }
    return n;
bad:
    for (i = 0; i < n; i++) {
        free(ders[i]);
        ders[i] = NULL;
        lens[i] = 0;
    }
    return 0;
}
