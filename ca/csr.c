/* CSR parsing and self-signature checks. PKCS#10 is read with our own
 * DER reader; EC keys (P-256, P-384) are verified through the legacy
 * EC_KEY/ECDSA calls straight from the raw point, which skips OpenSSL
 * 3.0's provider decoders (they cost more than the verify itself). RSA
 * and Ed25519 keys take the generic EVP path. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ecdsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "ca_int.h"

static const uint8_t oid_ec_pubkey[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
static const uint8_t oid_p256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x2b, 0x81, 0x04, 0x00, 0x22};
static const uint8_t oid_rsa[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};
static const uint8_t oid_ed25519[] = {0x2b, 0x65, 0x70};
static const uint8_t oid_ecdsa_sha256[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
static const uint8_t oid_ecdsa_sha384[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03};
static const uint8_t oid_ecdsa_sha512[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04};
static const uint8_t oid_rsa_sha256[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b};
static const uint8_t oid_rsa_sha384[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c};
static const uint8_t oid_rsa_sha512[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d};
static const uint8_t oid_cn[] = {0x55, 0x04, 0x03};

/* RSA moduli above this make verification slow enough to be a cheap
 * denial of service, and nobody enrolls devices with them. */
enum { RSA_MIN_BITS = 2048, RSA_MAX_BITS = 8192, CN_UTF8_MAX = 1024 };

/* ---- shared curve groups ------------------------------------------ */

static EC_GROUP *group_p256, *group_p384;
static pthread_once_t group_once = PTHREAD_ONCE_INIT;

static void groups_init(void)
{
    /* Created once and never modified: EC_KEY_set_group copies from
     * them, ECDSA only reads, so sharing across threads is safe. */
    group_p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    group_p384 = EC_GROUP_new_by_curve_name(NID_secp384r1);
}

const EC_GROUP *ca_group(ca_key_kind kind)
{
    pthread_once(&group_once, groups_init);
    if (kind == CA_KEY_EC_P256)
        return group_p256;
    if (kind == CA_KEY_EC_P384)
        return group_p384;
    return NULL;
}

/* ---- names -------------------------------------------------------- */

int ca_name_find_cn(der_span name, der_span *cn, uint8_t *tag)
{
    int found = 0;

    cn->p = NULL;
    cn->len = 0;
    *tag = 0;
    while (name.len > 0) {
        der_span rdn;

        if (der_read(&name, DER_SET, &rdn, NULL) != 0 || rdn.len == 0)
            return -1;
        while (rdn.len > 0) {
            der_span atv, oid, val;
            uint8_t vt;

            if (der_read(&rdn, DER_SEQUENCE, &atv, NULL) != 0 ||
                der_read(&atv, DER_OID, &oid, NULL) != 0 ||
                der_read_any(&atv, &vt, &val, NULL) != 0 || atv.len != 0)
                return -1;
            if (!DER_OID_IS(oid, oid_cn))
                continue;
            /* Two CNs would let a client choose which one a check sees;
             * refuse the ambiguity instead. */
            if (found++)
                return -1;
            *cn = val;
            *tag = vt;
        }
    }
    return 0;
}

static int printable_ok(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == ' ' || c == '\'' || c == '(' ||
           c == ')' || c == '+' || c == ',' || c == '-' || c == '.' ||
           c == '/' || c == ':' || c == '=' || c == '?';
}

int ca_dirstring_to_utf8(uint8_t tag, der_span v, char *out, size_t cap)
{
    size_t i = 0, n = 0, used, k;
    uint32_t cp;
    uint8_t u[4];

    if (cap == 0 || v.len == 0)
        return -1;
    if (tag == DER_BMPSTRING && v.len % 2 != 0)
        return -1;
    while (i < v.len) {
        switch (tag) {
        case DER_UTF8STRING:
            if ((used = codec_utf8_decode(v.p + i, v.len - i, &cp)) == 0)
                return -1;
            break;
        case DER_PRINTABLESTRING:
            if (!printable_ok(v.p[i]))
                return -1;
            cp = v.p[i];
            used = 1;
            break;
        case DER_IA5STRING:
        case DER_T61STRING: /* as Latin-1, like OpenSSL */
            cp = v.p[i];
            used = 1;
            if (tag == DER_IA5STRING && cp > 0x7f)
                return -1;
            break;
        case DER_BMPSTRING:
            cp = (uint32_t)v.p[i] << 8 | v.p[i + 1];
            used = 2;
            if (cp >= 0xd800 && cp <= 0xdfff)
                return -1;
            break;
        default:
            return -1;
        }
        /* Control characters in a name only ever serve to confuse logs
         * and comparisons. */
        if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
            return -1;
        /* Keep one byte for the NUL. A BMP surrogate never gets here. */
        if ((k = codec_utf8_encode(cp, u)) == 0 || cap - n <= k)
            return -1;
        memcpy(out + n, u, k);
        n += k;
        i += used;
    }
    out[n] = '\0';
    return (int)n;
}

/* ---- keys and algorithms ------------------------------------------ */

ad_err ca_spki_kind(der_span spki, ca_key_kind *kind, der_span *bits)
{
    der_span body, oid, params, b;

    if (der_read(&spki, DER_SEQUENCE, &body, NULL) != 0 || spki.len != 0 ||
        der_read_algid(&body, &oid, &params, NULL) != 0 ||
        der_read_bits(&body, &b, NULL) != 0 || body.len != 0)
        return AD_ECSR;
    if (DER_OID_IS(oid, oid_ec_pubkey)) {
        der_span cur = params, curve;
        size_t coord;

        /* Only named curves: explicit parameters are an attack surface
         * (CVE-2022-0778 and friends) with no legitimate use here. */
        if (der_read(&cur, DER_OID, &curve, NULL) != 0 || cur.len != 0)
            return AD_EWEAKKEY;
        if (DER_OID_IS(curve, oid_p256)) {
            *kind = CA_KEY_EC_P256;
            coord = 32;
        } else if (DER_OID_IS(curve, oid_p384)) {
            *kind = CA_KEY_EC_P384;
            coord = 48;
        } else {
            return AD_EWEAKKEY;
        }
        /* Uncompressed or compressed point of the right size; this also
         * rules out the point at infinity (a single 0x00 byte). */
        if (!((b.len == 1 + 2 * coord && b.p[0] == 4) ||
              (b.len == 1 + coord && (b.p[0] == 2 || b.p[0] == 3))))
            return AD_ECSR;
    } else if (DER_OID_IS(oid, oid_rsa)) {
        if (params.len != 0 &&
            !(params.len == 2 && params.p[0] == DER_NULL && params.p[1] == 0))
            return AD_ECSR;
        *kind = CA_KEY_RSA;
    } else if (DER_OID_IS(oid, oid_ed25519)) {
        if (params.len != 0 || b.len != 32)
            return AD_ECSR;
        *kind = CA_KEY_ED25519;
    } else {
        return AD_EWEAKKEY; /* DSA, X25519, Ed448, RSA-PSS keys, ... */
    }
    *bits = b;
    return AD_OK;
}

/* See ca_int.h. SHA-1 and RSA-PSS signatures are not accepted. */
int ca_sigalg_md(der_span oid, der_span params, ca_key_kind kind,
                 const EVP_MD **md)
{
    int null_ok = params.len == 0 ||
                  (params.len == 2 && params.p[0] == DER_NULL && params.p[1] == 0);

    switch (kind) {
    case CA_KEY_EC_P256:
    case CA_KEY_EC_P384:
        if (params.len != 0) /* RFC 5758: parameters absent */
            return -1;
        if (DER_OID_IS(oid, oid_ecdsa_sha256))
            *md = EVP_sha256();
        else if (DER_OID_IS(oid, oid_ecdsa_sha384))
            *md = EVP_sha384();
        else if (DER_OID_IS(oid, oid_ecdsa_sha512))
            *md = EVP_sha512();
        else
            return -1;
        return 0;
    case CA_KEY_RSA:
        if (!null_ok)
            return -1;
        if (DER_OID_IS(oid, oid_rsa_sha256))
            *md = EVP_sha256();
        else if (DER_OID_IS(oid, oid_rsa_sha384))
            *md = EVP_sha384();
        else if (DER_OID_IS(oid, oid_rsa_sha512))
            *md = EVP_sha512();
        else
            return -1;
        return 0;
    case CA_KEY_ED25519:
        if (params.len != 0 || !DER_OID_IS(oid, oid_ed25519))
            return -1;
        *md = NULL;
        return 0;
    }
    return -1;
}

/* Hashes data with md using the one-shot low-level functions, which do
 * not go through provider fetching. Returns the digest length or 0. */
static unsigned quick_hash(const EVP_MD *md, der_span data, uint8_t *out)
{
    switch (EVP_MD_get_type(md)) {
    case NID_sha256:
        SHA256(data.p, data.len, out);
        return 32;
    case NID_sha384:
        SHA384(data.p, data.len, out);
        return 48;
    case NID_sha512:
        SHA512(data.p, data.len, out);
        return 64;
    }
    return 0;
}

int ca_ec_verify(const EC_KEY *key, const EVP_MD *md, der_span data,
                 der_span sig)
{
    uint8_t dg[64];
    unsigned n = quick_hash(md, data, dg);

    if (n == 0 || sig.len > 256)
        return -1;
    /* ECDSA_verify re-encodes the signature and refuses non-DER forms. */
    return ECDSA_verify(0, dg, (int)n, sig.p, (int)sig.len,
                        (EC_KEY *)key) == 1 ? 0 : -1;
}

int ca_evp_verify(EVP_PKEY *pkey, const EVP_MD *md, der_span data,
                  der_span sig)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    int ok = -1;

    if (mctx == NULL)
        return -1;
    if (EVP_DigestVerifyInit(mctx, NULL, md, NULL, pkey) == 1 &&
        EVP_DigestVerify(mctx, sig.p, sig.len, data.p, data.len) == 1)
        ok = 0;
    EVP_MD_CTX_free(mctx);
    return ok;
}

/* The fast path: an EC public key straight from its point. */
static ad_err csr_verify_ec(const ca_csr *csr, const EVP_MD *md,
                            der_span cri, der_span sig, char *err,
                            size_t errlen)
{
    EC_KEY *key = EC_KEY_new();
    ad_err rc;

    if (key == NULL || EC_KEY_set_group(key, ca_group(csr->kind)) != 1) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "cannot allocate an EC key");
        goto out;
    }
    /* oct2key checks that the point lies on the curve. */
    if (EC_KEY_oct2key(key, csr->spk_bits.p, csr->spk_bits.len, NULL) != 1) {
        rc = ad_errf(AD_ECSR, err, errlen, "the EC public key is not a valid point");
        goto out;
    }
    if (ca_ec_verify(key, md, cri, sig) != 0) {
        rc = ad_errf(AD_ECSRSIG, err, errlen, "the CSR signature does not verify");
        goto out;
    }
    rc = AD_OK;
out:
    EC_KEY_free(key);
    return rc;
}

/* The generic path for RSA and Ed25519. */
static ad_err csr_verify_evp(const ca_csr *csr, const EVP_MD *md,
                             der_span cri, der_span sig, char *err,
                             size_t errlen)
{
    const uint8_t *p = csr->spki.p;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)csr->spki.len);
    ad_err rc;

    if (pkey == NULL || p != csr->spki.p + csr->spki.len) {
        rc = ad_errf(AD_ECSR, err, errlen, "the public key cannot be decoded");
        goto out;
    }
    if (csr->kind == CA_KEY_RSA) {
        int bits = EVP_PKEY_get_bits(pkey);

        if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA || bits < RSA_MIN_BITS ||
            bits > RSA_MAX_BITS) {
            rc = ad_errf(AD_EWEAKKEY, err, errlen,
                         "RSA keys must have 2048 to 8192 bits, not %d", bits);
            goto out;
        }
    }
    if (ca_evp_verify(pkey, md, cri, sig) != 0) {
        rc = ad_errf(AD_ECSRSIG, err, errlen, "the CSR signature does not verify");
        goto out;
    }
    rc = AD_OK;
out:
    EVP_PKEY_free(pkey);
    return rc;
}

/* ---- parsing ------------------------------------------------------ */

/* Parses and verifies a CSR; takes ownership of der in every case. */
static ad_err csr_parse_owned(uint8_t *der, size_t len, ca_csr **out,
                              char *err, size_t errlen)
{
    static const uint8_t v1[] = {0x00};
    ca_csr *csr = NULL;
    der_span cur = {der, len}, req, cri, cri_whole, ver, subj, sig_oid,
             sig_params, sig, cn, spki_body;
    uint8_t cn_tag, t;
    const EVP_MD *md = NULL;
    char cnbuf[CN_UTF8_MAX + 1];
    ad_err rc;

    csr = calloc(1, sizeof(*csr));
    if (csr == NULL) {
        free(der);
        return ad_errf(AD_ENOMEM, err, errlen, "out of memory");
    }
    csr->der = der;
    csr->der_len = len;
    if (der_read(&cur, DER_SEQUENCE, &req, NULL) != 0 || cur.len != 0 ||
        der_read(&req, DER_SEQUENCE, &cri, &cri_whole) != 0 ||
        der_read_algid(&req, &sig_oid, &sig_params, NULL) != 0 ||
        der_read_bits(&req, &sig, NULL) != 0 || req.len != 0) {
        rc = ad_errf(AD_ECSR, err, errlen, "not a PKCS#10 CertificationRequest");
        goto out;
    }
    if (der_read(&cri, DER_INTEGER, &ver, NULL) != 0 ||
        !DER_OID_IS(ver, v1) || der_read(&cri, DER_SEQUENCE, &subj, NULL) != 0 ||
        der_read(&cri, DER_SEQUENCE, &spki_body, &csr->spki) != 0) {
        rc = ad_errf(AD_ECSR, err, errlen, "malformed certificationRequestInfo");
        goto out;
    }
    /* The attributes are required by RFC 2986 but some encoders omit an
     * empty set; we never read them, only insist nothing else follows. */
    if (cri.len > 0) {
        der_span attrs;

        if (der_read_any(&cri, &t, &attrs, NULL) != 0 || t != DER_CTX0 ||
            cri.len != 0) {
            rc = ad_errf(AD_ECSR, err, errlen, "malformed CSR attributes");
            goto out;
        }
    }
    if (ca_name_find_cn(subj, &cn, &cn_tag) != 0) {
        rc = ad_errf(AD_ECSR, err, errlen, "malformed subject (or more than one CN)");
        goto out;
    }
    if (cn.p != NULL) {
        int n = ca_dirstring_to_utf8(cn_tag, cn, cnbuf, sizeof(cnbuf));

        if (n < 0 || (csr->cn = malloc((size_t)n + 1)) == NULL) {
            rc = ad_errf(n < 0 ? AD_ECSR : AD_ENOMEM, err, errlen,
                         "the subject commonName is not a valid string");
            goto out;
        }
        memcpy(csr->cn, cnbuf, (size_t)n + 1);
    }
    rc = ca_spki_kind(csr->spki, &csr->kind, &csr->spk_bits);
    if (rc != AD_OK) {
        ad_errf(rc, err, errlen, rc == AD_EWEAKKEY
                                     ? "the key type is not accepted"
                                     : "malformed SubjectPublicKeyInfo");
        goto out;
    }
    if (ca_sigalg_md(sig_oid, sig_params, csr->kind, &md) != 0) {
        rc = ad_errf(AD_ECSR, err, errlen,
                     "the signature algorithm does not fit the key or is not accepted");
        goto out;
    }
    if (csr->kind == CA_KEY_EC_P256 || csr->kind == CA_KEY_EC_P384)
        rc = csr_verify_ec(csr, md, cri_whole, sig, err, errlen);
    else
        rc = csr_verify_evp(csr, md, cri_whole, sig, err, errlen);
    if (rc != AD_OK)
        goto out;
    *out = csr;
    csr = NULL;
out:
    ca_csr_free(csr);
    return rc;
}

ad_err ca_csr_parse_der(const uint8_t *der, size_t len, ca_csr **out,
                        char *err, size_t errlen)
{
    uint8_t *copy;

    *out = NULL;
    if (der == NULL || len == 0 || len > CA_CSR_MAX)
        return ad_errf(AD_ECSR, err, errlen, "the CSR is empty or larger than %d bytes",
                       CA_CSR_MAX);
    copy = malloc(len);
    if (copy == NULL)
        return ad_errf(AD_ENOMEM, err, errlen, "out of memory");
    memcpy(copy, der, len);
    return csr_parse_owned(copy, len, out, err, errlen);
}

ad_err ca_csr_parse_pem(const char *pem, size_t len, ca_csr **out, char *err,
                        size_t errlen)
{
    static const char *const labels[] = {"CERTIFICATE REQUEST",
                                         "NEW CERTIFICATE REQUEST", NULL};
    uint8_t *der = NULL;
    size_t der_len = 0, next = 0;

    *out = NULL;
    if (pem == NULL || len == 0 || len > CA_PEM_IN_MAX)
        return ad_errf(AD_ECSR, err, errlen, "the CSR PEM is empty or too large");
    if (pem_next(pem, len, labels, CA_CSR_MAX, &der, &der_len, &next) != 0)
        return ad_errf(AD_ECSR, err, errlen,
                       "no well-formed CERTIFICATE REQUEST PEM block");
    return csr_parse_owned(der, der_len, out, err, errlen);
}

ad_err ca_csr_parse_base64(const char *b64, size_t len, ca_csr **out,
                           char *err, size_t errlen)
{
    uint8_t *der = NULL;
    size_t der_len = 0;

    *out = NULL;
    if (b64 == NULL || len == 0 || len > CA_PEM_IN_MAX ||
        codec_b64_decode_alloc(b64, len, CA_CSR_MAX, &der, &der_len,
                               CODEC_B64_LINES) != 0 ||
        der_len == 0) {
        free(der);
        return ad_errf(AD_ECSR, err, errlen, "the CSR is not valid base64 DER");
    }
    return csr_parse_owned(der, der_len, out, err, errlen);
}

ad_err ca_csr_from_spki(const uint8_t *spki, size_t len, ca_csr **out)
{
    ca_csr *csr = calloc(1, sizeof(*csr));
    ad_err rc;

    *out = NULL;
    if (csr == NULL || (csr->der = malloc(len)) == NULL) {
        free(csr);
        return AD_ENOMEM;
    }
    memcpy(csr->der, spki, len);
    csr->der_len = len;
    csr->spki.p = csr->der;
    csr->spki.len = len;
    rc = ca_spki_kind(csr->spki, &csr->kind, &csr->spk_bits);
    if (rc != AD_OK) {
        ca_csr_free(csr);
        return rc;
    }
    *out = csr;
    return AD_OK;
}

void ca_csr_free(ca_csr *csr)
{
    if (csr == NULL)
        return;
    free(csr->der);
    free(csr->cn);
    free(csr);
}

const char *ca_csr_common_name(const ca_csr *csr)
{
    return csr->cn;
}
