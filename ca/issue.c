/* Building and signing end-entity certificates. The TBSCertificate is
 * written directly with the DER writer, the CSR's SubjectPublicKeyInfo is
 * copied in byte for byte, and an ECDSA issuing key signs through the
 * EC_KEY parsed once in ca_open: no key is ever decoded or encoded here,
 * which is where OpenSSL 3.0 spends most of a naive issuance. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "ca_int.h"

enum {
    CN_MAX = 128,
    URL_MAX = 1024, /* SAN URI, CRL and OCSP URLs */
    DNS_MAX = 253,
    CERT_INITIAL = 1024
};

static const uint8_t oid_cn[] = {0x55, 0x04, 0x03};
static const uint8_t oid_basic_constraints[] = {0x55, 0x1d, 0x13};
static const uint8_t oid_key_usage[] = {0x55, 0x1d, 0x0f};
static const uint8_t oid_ext_key_usage[] = {0x55, 0x1d, 0x25};
static const uint8_t oid_ski[] = {0x55, 0x1d, 0x0e};
static const uint8_t oid_aki[] = {0x55, 0x1d, 0x23};
static const uint8_t oid_san[] = {0x55, 0x1d, 0x11};
static const uint8_t oid_crl_dp[] = {0x55, 0x1d, 0x1f};
static const uint8_t oid_aia[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01};
static const uint8_t oid_client_auth[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02};
static const uint8_t oid_server_auth[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01};
static const uint8_t oid_ocsp[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01};

/* Complete AlgorithmIdentifier encodings of the signatures we make. */
static const uint8_t alg_ecdsa_sha256[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                           0xce, 0x3d, 0x04, 0x03, 0x02};
static const uint8_t alg_ecdsa_sha384[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                           0xce, 0x3d, 0x04, 0x03, 0x03};
static const uint8_t alg_rsa_sha256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                         0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};
static const uint8_t alg_ed25519[] = {0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70};

/* basicConstraints CA:FALSE is an empty SEQUENCE (cA defaults to FALSE
 * and DER omits defaults). */
static const uint8_t bc_end_entity[] = {0x30, 0x00};
/* keyUsage named bits, trailing zero bits dropped (X.690 11.2.2):
 * digitalSignature(0)+keyAgreement(4); +keyEncipherment(2); alone. */
static const uint8_t ku_ec[] = {0x03, 0x02, 0x03, 0x88};
static const uint8_t ku_rsa[] = {0x03, 0x02, 0x05, 0xa0};
static const uint8_t ku_sig[] = {0x03, 0x02, 0x07, 0x80};

void ca_sig_alg(const ca *c, const uint8_t **alg, size_t *len,
                const EVP_MD **md)
{
    switch (c->kind) {
    case CA_KEY_EC_P384:
        *alg = alg_ecdsa_sha384;
        *len = sizeof(alg_ecdsa_sha384);
        *md = EVP_sha384();
        return;
    case CA_KEY_RSA:
        *alg = alg_rsa_sha256;
        *len = sizeof(alg_rsa_sha256);
        *md = EVP_sha256();
        return;
    case CA_KEY_ED25519:
        *alg = alg_ed25519;
        *len = sizeof(alg_ed25519);
        *md = NULL;
        return;
    case CA_KEY_EC_P256:
        break;
    }
    *alg = alg_ecdsa_sha256;
    *len = sizeof(alg_ecdsa_sha256);
    *md = EVP_sha256();
}

/* ---- profile checks ----------------------------------------------- */

/* IA5String content we are willing to put in a URI or dNSName: printable
 * ASCII without spaces (RFC 3986 and 5280 need nothing else). */
static int ia5_ok(const char *s, size_t max)
{
    size_t n = 0;

    if (s == NULL)
        return 0;
    for (; s[n] != '\0'; n++)
        if (n >= max || s[n] <= 0x20 || s[n] >= 0x7f)
            return 0;
    return n > 0;
}

static int dns_ok(const char *s)
{
    size_t i;

    if (!ia5_ok(s, DNS_MAX))
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        char ch = s[i];

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || ch == '-' || ch == '.')
            continue;
        /* A wildcard only as the whole leftmost label (RFC 6125 6.4.3). */
        if (ch == '*' && i == 0 && s[1] == '.')
            continue;
        return 0;
    }
    return 1;
}

static int cn_ok(const char *cn)
{
    size_t n;
    char tmp[CN_MAX + 1];
    der_span v;

    if (cn == NULL)
        return 0;
    n = strnlen(cn, CN_MAX + 1);
    if (n == 0 || n > CN_MAX)
        return 0;
    v.p = (const uint8_t *)cn;
    v.len = n;
    return ca_dirstring_to_utf8(DER_UTF8STRING, v, tmp, sizeof(tmp)) >= 0;
}

/* Parses an IP SAN; 4 or 16 bytes into out, 0 if unparseable. */
static size_t ip_parse(const char *s, uint8_t out[16])
{
    if (s == NULL)
        return 0;
    if (inet_pton(AF_INET, s, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, s, out) == 1)
        return 16;
    return 0;
}

static ad_err profile_check(const ca_profile *p, char *err, size_t errlen)
{
    size_t i;
    uint8_t ip[16];

    if (p->kind != CA_PROFILE_DEVICE && p->kind != CA_PROFILE_SERVER)
        return ad_errf(AD_EFIELD, err, errlen, "unknown certificate profile");
    if (!cn_ok(p->common_name))
        return ad_errf(AD_EFIELD, err, errlen,
                       "common_name must be 1-128 bytes of printable UTF-8");
    if (p->not_after <= p->not_before)
        return ad_errf(AD_EFIELD, err, errlen, "not_after must be after not_before");
    if (p->san_uri != NULL && !ia5_ok(p->san_uri, URL_MAX))
        return ad_errf(AD_EFIELD, err, errlen, "san_uri is not a printable ASCII URI");
    if (p->crl_url != NULL && !ia5_ok(p->crl_url, URL_MAX))
        return ad_errf(AD_EFIELD, err, errlen, "crl_url is not a printable ASCII URI");
    if (p->ocsp_url != NULL && !ia5_ok(p->ocsp_url, URL_MAX))
        return ad_errf(AD_EFIELD, err, errlen, "ocsp_url is not a printable ASCII URI");
    if ((p->dns_count > 0 && p->dns == NULL) || (p->ip_count > 0 && p->ips == NULL) ||
        p->dns_count > 64 || p->ip_count > 64)
        return ad_errf(AD_EFIELD, err, errlen, "bad SAN lists (at most 64 each)");
    for (i = 0; i < p->dns_count; i++)
        if (!dns_ok(p->dns[i]))
            return ad_errf(AD_EFIELD, err, errlen, "dns[%zu] is not a host name", i);
    for (i = 0; i < p->ip_count; i++)
        if (ip_parse(p->ips[i], ip) == 0)
            return ad_errf(AD_EFIELD, err, errlen, "ips[%zu] is not an IP address", i);
    return AD_OK;
}

/* ---- encoding ----------------------------------------------------- */

/* Opens Extension { extnID, critical?, extnValue OCTET STRING { ... } };
 * pos[0] is the Extension, pos[1] the OCTET STRING. */
static void ext_open(der_w *w, const uint8_t *oid, size_t oid_len,
                     int critical, size_t pos[2])
{
    static const uint8_t crit[] = {0x01, 0x01, 0xff};

    pos[0] = derw_begin(w, DER_SEQUENCE);
    derw_tlv(w, DER_OID, oid, oid_len);
    if (critical)
        derw_bytes(w, crit, sizeof(crit));
    pos[1] = derw_begin(w, DER_OCTET_STRING);
}

static void ext_close(der_w *w, const size_t pos[2])
{
    derw_end(w, pos[1]);
    derw_end(w, pos[0]);
}

static void write_extensions(der_w *w, const ca *c, const ca_csr *csr,
                             const ca_profile *p)
{
    static const uint8_t aki_keyid_tag = 0x80; /* [0] IMPLICIT keyIdentifier */
    size_t x, seq, e[2], s, i;
    uint8_t ski[SHA_DIGEST_LENGTH];

    x = derw_begin(w, DER_CTX3);
    seq = derw_begin(w, DER_SEQUENCE);

    ext_open(w, oid_basic_constraints, sizeof(oid_basic_constraints), 1, e);
    derw_bytes(w, bc_end_entity, sizeof(bc_end_entity));
    ext_close(w, e);

    ext_open(w, oid_key_usage, sizeof(oid_key_usage), 1, e);
    if (csr->kind == CA_KEY_RSA)
        derw_bytes(w, ku_rsa, sizeof(ku_rsa));
    else if (csr->kind == CA_KEY_ED25519)
        derw_bytes(w, ku_sig, sizeof(ku_sig));
    else
        derw_bytes(w, ku_ec, sizeof(ku_ec));
    ext_close(w, e);

    ext_open(w, oid_ext_key_usage, sizeof(oid_ext_key_usage), 0, e);
    s = derw_begin(w, DER_SEQUENCE);
    if (p->kind == CA_PROFILE_SERVER)
        derw_tlv(w, DER_OID, oid_server_auth, sizeof(oid_server_auth));
    else
        derw_tlv(w, DER_OID, oid_client_auth, sizeof(oid_client_auth));
    derw_end(w, s);
    ext_close(w, e);

    /* RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. */
    SHA1(csr->spk_bits.p, csr->spk_bits.len, ski);
    ext_open(w, oid_ski, sizeof(oid_ski), 0, e);
    derw_tlv(w, DER_OCTET_STRING, ski, sizeof(ski));
    ext_close(w, e);

    ext_open(w, oid_aki, sizeof(oid_aki), 0, e);
    s = derw_begin(w, DER_SEQUENCE);
    derw_tlv(w, aki_keyid_tag, c->ski, c->ski_len);
    derw_end(w, s);
    ext_close(w, e);

    if (p->kind == CA_PROFILE_DEVICE ? p->san_uri != NULL
                                     : p->dns_count + p->ip_count > 0) {
        ext_open(w, oid_san, sizeof(oid_san), 0, e);
        s = derw_begin(w, DER_SEQUENCE);
        if (p->kind == CA_PROFILE_DEVICE) {
            derw_tlv(w, 0x86, p->san_uri, strlen(p->san_uri));
        } else {
            for (i = 0; i < p->dns_count; i++)
                derw_tlv(w, 0x82, p->dns[i], strlen(p->dns[i]));
            for (i = 0; i < p->ip_count; i++) {
                uint8_t ip[16];
                size_t n = ip_parse(p->ips[i], ip);

                derw_tlv(w, 0x87, ip, n);
            }
        }
        derw_end(w, s);
        ext_close(w, e);
    }

    if (p->crl_url != NULL) {
        /* CRLDistributionPoints { DistributionPoint { distributionPoint
         * [0] { fullName [0] { uniformResourceIdentifier [6] } } } } */
        size_t dps, dp, dpn, fn;

        ext_open(w, oid_crl_dp, sizeof(oid_crl_dp), 0, e);
        dps = derw_begin(w, DER_SEQUENCE);
        dp = derw_begin(w, DER_SEQUENCE);
        dpn = derw_begin(w, 0xa0);
        fn = derw_begin(w, 0xa0);
        derw_tlv(w, 0x86, p->crl_url, strlen(p->crl_url));
        derw_end(w, fn);
        derw_end(w, dpn);
        derw_end(w, dp);
        derw_end(w, dps);
        ext_close(w, e);
    }

    if (p->ocsp_url != NULL) {
        size_t aia, ad;

        ext_open(w, oid_aia, sizeof(oid_aia), 0, e);
        aia = derw_begin(w, DER_SEQUENCE);
        ad = derw_begin(w, DER_SEQUENCE);
        derw_tlv(w, DER_OID, oid_ocsp, sizeof(oid_ocsp));
        derw_tlv(w, 0x86, p->ocsp_url, strlen(p->ocsp_url));
        derw_end(w, ad);
        derw_end(w, aia);
        ext_close(w, e);
    }

    derw_end(w, seq);
    derw_end(w, x);
}

/* Signs with the EC_KEY parsed in ca_open. c->ec is shared between
 * threads: ECDSA signing only reads the key and group (a fresh BN_CTX per
 * call) and draws its nonce from OpenSSL's per-thread DRBG. */
static int sign_ec(const ca *c, const EVP_MD *md, der_span tbs, uint8_t *sig,
                   size_t cap, size_t *slen)
{
    uint8_t dg[48];
    unsigned dlen = (unsigned)EVP_MD_get_size(md), n = 0;

    if (ECDSA_size(c->ec) <= 0 || (size_t)ECDSA_size(c->ec) > cap)
        return -1;
    if (dlen == 32)
        SHA256(tbs.p, tbs.len, dg);
    else if (dlen == 48)
        SHA384(tbs.p, tbs.len, dg);
    else
        return -1;
    if (ECDSA_sign(0, dg, (int)dlen, sig, &n, c->ec) != 1)
        return -1;
    *slen = n;
    return 0;
}

/* Signs through EVP (RSA, Ed25519); EVP_PKEY is safe to share for
 * signing, each call having its own EVP_MD_CTX. */
static int sign_evp(const ca *c, const EVP_MD *md, der_span tbs, uint8_t *sig,
                    size_t cap, size_t *slen)
{
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    size_t n = 0;
    int ok = -1;

    if (mctx == NULL ||
        EVP_DigestSignInit(mctx, NULL, md, NULL, c->pkey) != 1 ||
        EVP_DigestSign(mctx, NULL, &n, tbs.p, tbs.len) != 1 || n > cap ||
        EVP_DigestSign(mctx, sig, &n, tbs.p, tbs.len) != 1)
        goto out;
    *slen = n;
    ok = 0;
out:
    EVP_MD_CTX_free(mctx);
    return ok;
}

/* Signs the TBSCertificate (w->buf[tbs_pos .. w->len)) with the issuing
 * key, then appends signatureAlgorithm and signatureValue. Signing comes
 * first because appending may move the buffer. Shared with the CRL and
 * OCSP encoders, which sign the same way. */
int ca_write_signature(der_w *w, const ca *c, const EVP_MD *md,
                       const uint8_t *alg, size_t alg_len, size_t tbs_pos)
{
    /* Large enough for RSA-16384 and any ECDSA signature. */
    uint8_t sig[2048];
    size_t slen = 0, pos;
    der_span tbs;
    int rc;

    if (w->err)
        return -1;
    tbs.p = w->buf + tbs_pos;
    tbs.len = w->len - tbs_pos;
    rc = c->ec != NULL ? sign_ec(c, md, tbs, sig, sizeof(sig), &slen)
                       : sign_evp(c, md, tbs, sig, sizeof(sig), &slen);
    if (rc != 0)
        return -1;
    derw_bytes(w, alg, alg_len);
    pos = derw_begin(w, DER_BIT_STRING);
    derw_bytes(w, "", 1); /* no unused bits */
    derw_bytes(w, sig, slen);
    derw_end(w, pos);
    return w->err ? -1 : 0;
}

/* Writes the 4-octet time prefix of a serial (see ca_issue). */
static void serial_time_prefix(uint8_t *p)
{
    struct timespec ts;
    uint64_t ticks;
    uint32_t v;

    clock_gettime(CLOCK_REALTIME, &ts);
    ticks = ((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u) / 4;
    v = 0x40000000u | (uint32_t)(ticks & 0x3fffffffu);
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

ad_err ca_issue(const ca *c, const ca_csr *csr, const ca_profile *p,
                ca_issued *out, char *err, size_t errlen)
{
    der_w w = {0};
    size_t cert, tbs, pos, rdn, atv;
    const uint8_t *alg;
    size_t alg_len;
    const EVP_MD *md;
    ad_err rc;

    memset(out, 0, sizeof(*out));
    if (c == NULL || csr == NULL || p == NULL)
        return ad_errf(AD_EFIELD, err, errlen, "missing CA, CSR or profile");
    rc = profile_check(p, err, errlen);
    if (rc != AD_OK)
        return rc;
    /* 4 octets of time, then 16 random octets (128 bits, the entropy
     * the serial is for). The time prefix (4 ms ticks, first octet
     * 0x40..0x7f: positive and already minimal, so the INTEGER is exactly
     * these 20 octets) makes serials issued together sort together: a
     * store keyed by serial then appends instead of touching a random
     * page per certificate, which is what a durable commit pays for. It
     * wraps every ~50 days, which only moves where appends land. */
    if (RAND_bytes(out->serial + 4, CA_SERIAL_MAX - 4) != 1)
        return ad_errf(AD_ECRYPTO, err, errlen, "the random generator failed");
    serial_time_prefix(out->serial);
    out->serial_len = CA_SERIAL_MAX;
    ca_sig_alg(c, &alg, &alg_len, &md);

    derw_init(&w, CERT_INITIAL, CA_CERT_MAX);
    cert = derw_begin(&w, DER_SEQUENCE);
    tbs = derw_begin(&w, DER_SEQUENCE);
    derw_bytes(&w, "\xa0\x03\x02\x01\x02", 5); /* [0] version v3 */
    derw_uint(&w, out->serial, out->serial_len);
    derw_bytes(&w, alg, alg_len);
    derw_bytes(&w, c->subject.p, c->subject.len);
    pos = derw_begin(&w, DER_SEQUENCE);
    derw_time(&w, p->not_before);
    derw_time(&w, p->not_after);
    derw_end(&w, pos);
    pos = derw_begin(&w, DER_SEQUENCE);
    rdn = derw_begin(&w, DER_SET);
    atv = derw_begin(&w, DER_SEQUENCE);
    derw_tlv(&w, DER_OID, oid_cn, sizeof(oid_cn));
    derw_tlv(&w, DER_UTF8STRING, p->common_name, strlen(p->common_name));
    derw_end(&w, atv);
    derw_end(&w, rdn);
    derw_end(&w, pos);
    derw_bytes(&w, csr->spki.p, csr->spki.len);
    write_extensions(&w, c, csr, p);
    derw_end(&w, tbs);
    if (w.err) {
        /* The profile was checked, so only the time range or the size
         * limit can have failed here. */
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "validity outside 1950-9999 or certificate too large");
        goto out;
    }
    if (ca_write_signature(&w, c, md, alg, alg_len, tbs) != 0) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "signing failed");
        goto out;
    }
    derw_end(&w, cert);
    out->der = derw_take(&w, &out->der_len);
    if (out->der == NULL) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    out->pem = pem_encode("CERTIFICATE", out->der, out->der_len);
    if (out->pem == NULL) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    codec_hex_encode(out->serial, out->serial_len, out->serial_hex, 0);
    SHA256(out->der, out->der_len, out->sha256);
    out->not_before = p->not_before;
    out->not_after = p->not_after;
    rc = AD_OK;
out:
    derw_free(&w);
    if (rc != AD_OK)
        ca_issued_free(out);
    return rc;
}

void ca_issued_free(ca_issued *iss)
{
    if (iss == NULL)
        return;
    free(iss->der);
    free(iss->pem);
    memset(iss, 0, sizeof(*iss));
}

ad_err ca_issue_with_new_key(const ca *c, const ca_profile *profile,
                             ca_issued *out, char **key_pem, char *err,
                             size_t errlen)
{
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    uint8_t *spki = NULL;
    ca_csr *keyonly = NULL;
    char *pem = NULL, *mem;
    long mlen;
    int spki_len;
    ad_err rc;

    memset(out, 0, sizeof(*out));
    *key_pem = NULL;
    pkey = EVP_EC_gen("P-256");
    if (pkey == NULL || (spki_len = i2d_PUBKEY(pkey, &spki)) <= 0) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "cannot generate a P-256 key");
        goto out;
    }
    rc = ca_csr_from_spki(spki, (size_t)spki_len, &keyonly);
    if (rc != AD_OK) {
        ad_errf(rc, err, errlen, "cannot use the generated key");
        goto out;
    }
    rc = ca_issue(c, keyonly, profile, out, err, errlen);
    if (rc != AD_OK)
        goto out;
    /* PKCS#8 ("BEGIN PRIVATE KEY"), which GnuTLS and OpenSSL both read. */
    bio = BIO_new(BIO_s_secmem());
    if (bio == NULL ||
        PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1 ||
        (mlen = BIO_get_mem_data(bio, &mem)) <= 0 ||
        (pem = malloc((size_t)mlen + 1)) == NULL) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "cannot encode the key");
        goto out;
    }
    memcpy(pem, mem, (size_t)mlen);
    pem[mlen] = '\0';
    *key_pem = pem;
    pem = NULL;
    rc = AD_OK;
out:
    if (rc != AD_OK)
        ca_issued_free(out);
    free(pem);
    BIO_free(bio);
    ca_csr_free(keyonly);
    OPENSSL_free(spki);
    EVP_PKEY_free(pkey);
    return rc;
}
