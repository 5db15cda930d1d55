/* Reading certificates without OpenSSL's X509 decoder: the strict parse
 * that ca_cert_inspect, ca_cert_verify_issued and ca_open share. The
 * daemon inspects a client certificate on every mTLS request, so this
 * stays as cheap as a SHA-256 of the DER. */
#include <string.h>

#include <openssl/sha.h>

#include "ca_int.h"

int ca_cert_parse(const uint8_t *der, size_t len, ca_cert_fields *f)
{
    der_span cur = {der, len}, cert, tbs, alg_oid, alg_params, alg_whole,
             tbs_alg, val, spki;
    uint8_t t;

    memset(f, 0, sizeof(*f));
    if (der == NULL || len == 0 || len > CA_CERT_MAX * 4)
        return -1;
    if (der_read(&cur, DER_SEQUENCE, &cert, NULL) != 0 || cur.len != 0 ||
        der_read(&cert, DER_SEQUENCE, &tbs, &f->tbs) != 0 ||
        der_read_algid(&cert, &f->sig_alg_oid, &f->sig_alg_params,
                       &alg_whole) != 0 ||
        der_read_bits(&cert, &f->sig, NULL) != 0 || cert.len != 0)
        return -1;
    if (der_peek(&tbs) == DER_CTX0) {
        der_span v, vi;

        /* v1 (0) would be encoded by omission; only v2 and v3 appear. */
        if (der_read(&tbs, DER_CTX0, &v, NULL) != 0 ||
            der_read(&v, DER_INTEGER, &vi, NULL) != 0 || v.len != 0 ||
            vi.len != 1 || vi.p[0] < 1 || vi.p[0] > 2)
            return -1;
    }
    /* RFC 5280 4.1.2.2: at most 20 octets; also what serial_hex holds. */
    if (der_read(&tbs, DER_INTEGER, &f->serial, NULL) != 0 ||
        f->serial.len == 0 || f->serial.len > CA_SERIAL_MAX)
        return -1;
    /* The signed and the unsigned algorithm must be the same bytes, or a
     * verifier could be steered by the one that is not covered. */
    if (der_read(&tbs, DER_SEQUENCE, &val, &tbs_alg) != 0 ||
        tbs_alg.len != alg_whole.len ||
        memcmp(tbs_alg.p, alg_whole.p, alg_whole.len) != 0)
        return -1;
    if (der_read(&tbs, DER_SEQUENCE, &val, &f->issuer) != 0 ||
        der_read(&tbs, DER_SEQUENCE, &val, NULL) != 0 ||
        der_read_time(&val, &f->not_before) != 0 ||
        der_read_time(&val, &f->not_after) != 0 || val.len != 0)
        return -1;
    if (der_read(&tbs, DER_SEQUENCE, &val, &f->subject) != 0 ||
        ca_name_find_cn(val, &f->cn, &f->cn_tag) != 0)
        return -1;
    if (der_read(&tbs, DER_SEQUENCE, &spki, &f->spki) != 0 ||
        der_read_algid(&spki, &alg_oid, &alg_params, NULL) != 0 ||
        der_read(&spki, DER_BIT_STRING, &val, NULL) != 0 || spki.len != 0 ||
        val.len < 1)
        return -1;
    if (val.p[0] == 0) {
        f->spk_bits.p = val.p + 1;
        f->spk_bits.len = val.len - 1;
    }
    /* issuerUniqueID [1], subjectUniqueID [2], extensions [3]: we read
     * none of them, but they must be well-formed and in order. */
    for (int prev = 0; tbs.len > 0;) {
        if (der_read_any(&tbs, &t, &val, NULL) != 0)
            return -1;
        if ((t & 0x1f) <= prev || (t & 0x1f) > 3 || (t & 0xc0) != 0x80)
            return -1;
        prev = t & 0x1f;
    }
    return 0;
}

ad_err ca_cert_inspect(const uint8_t *der, size_t len, ca_cert_info *out)
{
    ca_cert_fields f;

    memset(out, 0, sizeof(*out));
    if (ca_cert_parse(der, len, &f) != 0)
        return AD_EBADREQ;
    codec_hex_encode(f.serial.p, f.serial.len, out->serial_hex, 0);
    SHA256(der, len, out->sha256);
    if (f.cn.p != NULL &&
        ca_dirstring_to_utf8(f.cn_tag, f.cn, out->common_name,
                             sizeof(out->common_name)) < 0)
        out->common_name[0] = '\0';
    out->not_before = f.not_before;
    out->not_after = f.not_after;
    return AD_OK;
}

ad_err ca_cert_verify_issued(const ca *c, const uint8_t *der, size_t len,
                             int64_t now)
{
    ca_cert_fields f;
    const EVP_MD *md = NULL;
    int bad;

    if (ca_cert_parse(der, len, &f) != 0)
        return AD_EBADREQ;
    if (f.issuer.len != c->subject.len ||
        memcmp(f.issuer.p, c->subject.p, c->subject.len) != 0)
        return AD_EBADCRED;
    if (ca_sigalg_md(f.sig_alg_oid, f.sig_alg_params, c->kind, &md) != 0)
        return AD_EBADCRED;
    if (c->ec != NULL)
        bad = ca_ec_verify(c->ec, md, f.tbs, f.sig);
    else
        bad = ca_evp_verify(c->pkey, md, f.tbs, f.sig);
    if (bad)
        return AD_EBADCRED;
    if (now < f.not_before || now > f.not_after)
        return AD_EBADCRED;
    return AD_OK;
}
