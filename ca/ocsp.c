/* The OCSP responder's encodings (RFC 6960): a strict, bounded parser for
 * OCSPRequest and the BasicOCSPResponse encoder. A response is built for
 * every request, so both sides use the DER reader and writer directly
 * and sign with the key parsed once in ca_open, as issuance does; OpenSSL's
 * OCSP_* objects would allocate and re-encode far more than the math. */
#include <string.h>

#include <openssl/evp.h>

#include "ca_int.h"

enum {
    EXTENSIONS_MAX = 16,    /* request extensions we are willing to walk */
    RESPONSE_INITIAL = 512,
    RESPONSE_MAX = 64 * 1024, /* 16 answers plus a CA certificate */
    REQ_VERSION_1 = 0
};

static const uint8_t oid_sha1[] = {0x2b, 0x0e, 0x03, 0x02, 0x1a};
static const uint8_t oid_sha256[] = {0x60, 0x86, 0x48, 0x01, 0x65,
                                     0x03, 0x04, 0x02, 0x01};
static const uint8_t oid_sha384[] = {0x60, 0x86, 0x48, 0x01, 0x65,
                                     0x03, 0x04, 0x02, 0x02};
static const uint8_t oid_sha512[] = {0x60, 0x86, 0x48, 0x01, 0x65,
                                     0x03, 0x04, 0x02, 0x03};
/* id-pkix-ocsp-nonce 1.3.6.1.5.5.7.48.1.2, id-pkix-ocsp-basic ...48.1.1 */
static const uint8_t oid_nonce[] = {0x2b, 0x06, 0x01, 0x05, 0x05,
                                    0x07, 0x30, 0x01, 0x02};
static const uint8_t oid_basic[] = {0x2b, 0x06, 0x01, 0x05, 0x05,
                                    0x07, 0x30, 0x01, 0x01};

/* Digest sizes by ca_ocsp_hash. */
static const size_t hash_len[CA_OCSP_HASHES] = {20, 32, 48, 64};

const EVP_MD *ca_ocsp_hash_md(ca_ocsp_hash h)
{
    switch (h) {
    case CA_OCSP_HASH_SHA1:
        return EVP_sha1();
    case CA_OCSP_HASH_SHA256:
        return EVP_sha256();
    case CA_OCSP_HASH_SHA384:
        return EVP_sha384();
    case CA_OCSP_HASH_SHA512:
        return EVP_sha512();
    case CA_OCSP_HASH_OTHER:
        break;
    }
    return NULL;
}

/* ---- parsing ------------------------------------------------------ */

static ca_ocsp_hash hash_from_oid(der_span oid)
{
    if (DER_OID_IS(oid, oid_sha1))
        return CA_OCSP_HASH_SHA1;
    if (DER_OID_IS(oid, oid_sha256))
        return CA_OCSP_HASH_SHA256;
    if (DER_OID_IS(oid, oid_sha384))
        return CA_OCSP_HASH_SHA384;
    if (DER_OID_IS(oid, oid_sha512))
        return CA_OCSP_HASH_SHA512;
    return CA_OCSP_HASH_OTHER;
}

/* Reads an issuer hash OCTET STRING of the algorithm's size (1..64 bytes
 * for algorithms we do not know). */
static int read_hash(der_span *cur, ca_ocsp_hash h, uint8_t *out,
                     size_t *out_len)
{
    der_span v;

    if (der_read(cur, DER_OCTET_STRING, &v, NULL) != 0 || v.len == 0 ||
        v.len > CA_HASH_MAX)
        return -1;
    if (h != CA_OCSP_HASH_OTHER && v.len != hash_len[h])
        return -1;
    memcpy(out, v.p, v.len);
    *out_len = v.len;
    return 0;
}

/* CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash,
 * serialNumber } */
static int parse_certid(der_span *cur, ca_ocsp_certid *id)
{
    der_span cid, whole, oid, params, ser;

    if (der_read(cur, DER_SEQUENCE, &cid, &whole) != 0 ||
        whole.len > CA_OCSP_CERTID_MAX ||
        der_read_algid(&cid, &oid, &params, NULL) != 0)
        return -1;
    /* Parameters are NULL or absent for every digest (RFC 5754 2). */
    if (params.len != 0 &&
        !(params.len == 2 && params.p[0] == DER_NULL && params.p[1] == 0))
        return -1;
    id->hash = hash_from_oid(oid);
    if (read_hash(&cid, id->hash, id->name_hash, &id->name_hash_len) != 0 ||
        read_hash(&cid, id->hash, id->key_hash, &id->key_hash_len) != 0 ||
        der_read(&cid, DER_INTEGER, &ser, NULL) != 0 || cid.len != 0)
        return -1;
    /* A minimal, non-negative INTEGER whose magnitude fits a serial
     * (RFC 5280 4.1.2.2: at most 20 octets). */
    if (ser.len == 0 || (ser.p[0] & 0x80) ||
        (ser.len > 1 && ser.p[0] == 0 && !(ser.p[1] & 0x80)))
        return -1;
    if (ser.len > 1 && ser.p[0] == 0) {
        ser.p++;
        ser.len--;
    }
    if (ser.len > CA_SERIAL_MAX)
        return -1;
    memcpy(id->serial, ser.p, ser.len);
    id->serial_len = ser.len;
    codec_hex_encode(id->serial, id->serial_len, id->serial_hex, 0);
    memcpy(id->der, whole.p, whole.len);
    id->der_len = whole.len;
    return 0;
}

/* Walks Extensions (content of the [2] or [0] wrapper). With out, keeps
 * the nonce and refuses unknown critical extensions; without (single
 * request extensions, which we never act on) only checks the syntax. */
static int parse_extensions(der_span wrapper, ca_ocsp_request *out)
{
    der_span exts, e, oid, crit, val;
    size_t n = 0;

    if (der_read(&wrapper, DER_SEQUENCE, &exts, NULL) != 0 ||
        wrapper.len != 0 || exts.len == 0)
        return -1;
    while (exts.len > 0) {
        int critical = 0;

        if (++n > EXTENSIONS_MAX ||
            der_read(&exts, DER_SEQUENCE, &e, NULL) != 0 ||
            der_read(&e, DER_OID, &oid, NULL) != 0 || oid.len == 0)
            return -1;
        if (der_peek(&e) == 0x01) {
            /* DER omits the default FALSE, so only TRUE may be present. */
            if (der_read(&e, 0x01, &crit, NULL) != 0 || crit.len != 1 ||
                crit.p[0] != 0xff)
                return -1;
            critical = 1;
        }
        if (der_read(&e, DER_OCTET_STRING, &val, NULL) != 0 || e.len != 0)
            return -1;
        if (out == NULL)
            continue;
        if (DER_OID_IS(oid, oid_nonce)) {
            if (out->has_nonce || val.len == 0 || val.len > CA_OCSP_NONCE_MAX)
                return -1;
            memcpy(out->nonce, val.p, val.len);
            out->nonce_len = val.len;
            out->has_nonce = 1;
        } else if (critical) {
            return -1;
        }
    }
    return 0;
}

ad_err ca_ocsp_request_parse(const uint8_t *der, size_t len,
                             ca_ocsp_request *out, char *err, size_t errlen)
{
    der_span cur = {der, len}, req, tbs, v, vi, list, one, sig;
    const char *why = "not an OCSPRequest";

    memset(out, 0, sizeof(*out));
    if (der == NULL || len == 0 || len > CA_OCSP_REQUEST_MAX) {
        why = "empty or larger than 8 KiB";
        goto bad;
    }
    if (der_read(&cur, DER_SEQUENCE, &req, NULL) != 0 || cur.len != 0 ||
        der_read(&req, DER_SEQUENCE, &tbs, NULL) != 0)
        goto bad;
    /* optionalSignature [0]: accepted and not checked (we serve anyone
     * who asks); it only has to be one well-formed Signature. */
    if (req.len > 0 &&
        (der_read(&req, DER_CTX0, &v, NULL) != 0 || req.len != 0 ||
         der_read(&v, DER_SEQUENCE, &sig, NULL) != 0 || v.len != 0))
        goto bad;
    if (der_peek(&tbs) == DER_CTX0) {
        /* DER would omit the default v1, but encoders that write it are
         * harmless; any other version is not one we understand. */
        if (der_read(&tbs, DER_CTX0, &v, NULL) != 0 ||
            der_read(&v, DER_INTEGER, &vi, NULL) != 0 || v.len != 0 ||
            vi.len != 1 || vi.p[0] != REQ_VERSION_1) {
            why = "unsupported version";
            goto bad;
        }
    }
    if (der_peek(&tbs) == DER_CTX1 && der_read(&tbs, DER_CTX1, &v, NULL) != 0)
        goto bad; /* requestorName: ignored */
    if (der_read(&tbs, DER_SEQUENCE, &list, NULL) != 0)
        goto bad;
    if (der_peek(&tbs) == DER_CTX2 &&
        (der_read(&tbs, DER_CTX2, &v, NULL) != 0 ||
         parse_extensions(v, out) != 0)) {
        why = "bad request extensions";
        goto bad;
    }
    if (tbs.len != 0)
        goto bad;
    while (list.len > 0) {
        if (out->count == CA_OCSP_MAX_IDS) {
            why = "more than 16 single requests";
            goto bad;
        }
        if (der_read(&list, DER_SEQUENCE, &one, NULL) != 0 ||
            parse_certid(&one, &out->ids[out->count]) != 0) {
            why = "bad CertID";
            goto bad;
        }
        if (one.len > 0 &&
            (der_read(&one, DER_CTX0, &v, NULL) != 0 ||
             parse_extensions(v, NULL) != 0 || one.len != 0))
            goto bad;
        out->count++;
    }
    if (out->count == 0) {
        why = "no single requests";
        goto bad;
    }
    return AD_OK;
bad:
    memset(out, 0, sizeof(*out));
    return ad_errf(AD_EBADREQ, err, errlen, "malformed OCSP request: %s", why);
}

int ca_ocsp_id_is_ours(const ca *c, const ca_ocsp_certid *id)
{
    size_t n;

    if (c == NULL || id == NULL || (unsigned)id->hash >= CA_OCSP_HASHES)
        return 0;
    n = hash_len[id->hash];
    return id->name_hash_len == n && id->key_hash_len == n &&
           memcmp(id->name_hash, c->name_hash[id->hash], n) == 0 &&
           memcmp(id->key_hash, c->key_hash[id->hash], n) == 0;
}

/* ---- responses ---------------------------------------------------- */

static int reason_ok(int r)
{
    return ca_reason_name(r) != NULL;
}

/* CertStatus ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT
 * RevokedInfo, unknown [2] IMPLICIT NULL } */
static void write_status(der_w *w, const ca_ocsp_answer *a)
{
    static const uint8_t good[] = {0x80, 0x00}, unknown[] = {0x82, 0x00};
    size_t ri, rr;
    uint8_t code;

    switch (a->status) {
    case CA_OCSP_GOOD:
        derw_bytes(w, good, sizeof(good));
        return;
    case CA_OCSP_UNKNOWN:
        derw_bytes(w, unknown, sizeof(unknown));
        return;
    case CA_OCSP_REVOKED:
        break;
    }
    /* RevokedInfo { revocationTime, revocationReason [0] EXPLICIT
     * CRLReason OPTIONAL }; unspecified is omitted, as in the CRL. */
    ri = derw_begin(w, DER_CTX1);
    derw_gentime(w, a->revoked_at);
    if (a->reason != CA_REASON_UNSPECIFIED) {
        code = (uint8_t)a->reason;
        rr = derw_begin(w, DER_CTX0);
        derw_tlv(w, DER_ENUMERATED, &code, 1);
        derw_end(w, rr);
    }
    derw_end(w, ri);
}

ad_err ca_ocsp_respond(const ca *c, const ca_ocsp_request *req,
                       const ca_ocsp_answer *answers, int64_t produced_at,
                       uint8_t **der, size_t *der_len, char *err,
                       size_t errlen)
{
    der_w w = {0};
    const uint8_t *alg;
    size_t alg_len, resp, rb0, rb, os, basic, tbs, rid, list, i;
    const EVP_MD *md;
    ad_err rc;

    *der = NULL;
    *der_len = 0;
    if (c == NULL || req == NULL || answers == NULL || req->count == 0 ||
        req->count > CA_OCSP_MAX_IDS || req->nonce_len > CA_OCSP_NONCE_MAX)
        return ad_errf(AD_EFIELD, err, errlen, "missing CA, request or answers");
    for (i = 0; i < req->count; i++) {
        const ca_ocsp_answer *a = &answers[i];

        if (req->ids[i].der_len == 0 || req->ids[i].der_len > CA_OCSP_CERTID_MAX)
            return ad_errf(AD_EFIELD, err, errlen, "request id %zu is empty", i);
        if (a->status != CA_OCSP_GOOD && a->status != CA_OCSP_REVOKED &&
            a->status != CA_OCSP_UNKNOWN)
            return ad_errf(AD_EFIELD, err, errlen, "answer %zu: bad status", i);
        if (a->status == CA_OCSP_REVOKED && !reason_ok((int)a->reason))
            return ad_errf(AD_EFIELD, err, errlen, "answer %zu: bad reason", i);
        if (a->next_update != 0 && a->next_update <= a->this_update)
            return ad_errf(AD_EFIELD, err, errlen,
                           "answer %zu: nextUpdate must be after thisUpdate", i);
    }
    ca_sig_alg(c, &alg, &alg_len, &md);

    derw_init(&w, RESPONSE_INITIAL, RESPONSE_MAX);
    resp = derw_begin(&w, DER_SEQUENCE);
    derw_bytes(&w, "\x0a\x01\x00", 3); /* responseStatus successful */
    rb0 = derw_begin(&w, DER_CTX0);
    rb = derw_begin(&w, DER_SEQUENCE);
    derw_tlv(&w, DER_OID, oid_basic, sizeof(oid_basic));
    os = derw_begin(&w, DER_OCTET_STRING);
    basic = derw_begin(&w, DER_SEQUENCE);
    tbs = derw_begin(&w, DER_SEQUENCE);
    /* version v1 is the default and so omitted; responderID byKey [2]
     * EXPLICIT KeyHash: the CA signs its own responses (4.2.2.2). */
    rid = derw_begin(&w, DER_CTX2);
    derw_tlv(&w, DER_OCTET_STRING, c->key_sha1, sizeof(c->key_sha1));
    derw_end(&w, rid);
    derw_gentime(&w, produced_at);
    list = derw_begin(&w, DER_SEQUENCE);
    for (i = 0; i < req->count; i++) {
        const ca_ocsp_answer *a = &answers[i];
        size_t sr = derw_begin(&w, DER_SEQUENCE), nu;

        /* The CertID as the client sent it, so that it matches whatever
         * parameters encoding the client compares. */
        derw_bytes(&w, req->ids[i].der, req->ids[i].der_len);
        write_status(&w, a);
        derw_gentime(&w, a->this_update);
        if (a->next_update != 0) {
            nu = derw_begin(&w, DER_CTX0);
            derw_gentime(&w, a->next_update);
            derw_end(&w, nu);
        }
        derw_end(&w, sr);
    }
    derw_end(&w, list);
    if (req->has_nonce) {
        size_t x = derw_begin(&w, DER_CTX1), seq, e;

        seq = derw_begin(&w, DER_SEQUENCE);
        e = derw_begin(&w, DER_SEQUENCE);
        derw_tlv(&w, DER_OID, oid_nonce, sizeof(oid_nonce));
        derw_tlv(&w, DER_OCTET_STRING, req->nonce, req->nonce_len);
        derw_end(&w, e);
        derw_end(&w, seq);
        derw_end(&w, x);
    }
    derw_end(&w, tbs);
    if (w.err) {
        rc = ad_errf(AD_EFIELD, err, errlen, "a time is outside 1950-9999");
        goto out;
    }
    if (ca_write_signature(&w, c, md, alg, alg_len, tbs) != 0) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "signing the OCSP response failed");
        goto out;
    }
    {
        /* certs [0] EXPLICIT SEQUENCE OF Certificate: our own, so that
         * `openssl ocsp -CAfile root-and-chain.pem` (no -issuer, no
         * -VAfile) finds the signer and chains it to the root. */
        size_t x = derw_begin(&w, DER_CTX0), seq = derw_begin(&w, DER_SEQUENCE);

        derw_bytes(&w, c->cert_der, c->cert_der_len);
        derw_end(&w, seq);
        derw_end(&w, x);
    }
    derw_end(&w, basic);
    derw_end(&w, os);
    derw_end(&w, rb);
    derw_end(&w, rb0);
    derw_end(&w, resp);
    *der = derw_take(&w, der_len);
    if (*der == NULL) {
        *der_len = 0;
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    rc = AD_OK;
out:
    derw_free(&w);
    return rc;
}

size_t ca_ocsp_error_response(ca_ocsp_error status,
                              uint8_t out[CA_OCSP_ERROR_LEN])
{
    switch (status) {
    case CA_OCSP_MALFORMED_REQUEST:
    case CA_OCSP_INTERNAL_ERROR:
    case CA_OCSP_TRY_LATER:
    case CA_OCSP_UNAUTHORIZED:
        break;
    default:
        return 0;
    }
    /* OCSPResponse { responseStatus ENUMERATED } with no responseBytes. */
    out[0] = DER_SEQUENCE;
    out[1] = 3;
    out[2] = DER_ENUMERATED;
    out[3] = 1;
    out[4] = (uint8_t)status;
    return CA_OCSP_ERROR_LEN;
}
