/* Compact JWS with ES256: the checks every JWS reader in the tree must
 * make, written once (see jws.h). base64url is common/codec's strict
 * CODEC_B64_URL: no padding, no whitespace, zero unused bits, so every
 * byte string has one encoding and nothing in a JWS can change without
 * changing the signed bytes. */
#include "jws.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/sha.h>

#include "codec.h"

ad_err jws_split(const char *text, size_t len, size_t max, const char *what,
                 jws_parts *out, char *err, size_t errlen)
{
    const char *d1, *d2;

    memset(out, 0, sizeof(*out));
    if (len > max)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "the %s is longer than %zu bytes", what, max);
    /* Exactly three parts and nothing else: the decoders refuse any byte
     * outside the alphabet, so junk cannot hide inside a part. */
    if (text == NULL || (d1 = memchr(text, '.', len)) == NULL ||
        (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - text))) == NULL ||
        memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - text)) != NULL)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "the %s is not three dot-separated parts", what);
    out->hdr = text;
    out->hdr_len = (size_t)(d1 - text);
    out->payload = d1 + 1;
    out->payload_len = (size_t)(d2 - d1 - 1);
    out->sig = d2 + 1;
    out->sig_len = len - (size_t)(d2 + 1 - text);
    out->input_len = (size_t)(d2 - text);
    return AD_OK;
}

/* v is a JSON string equal to s (an embedded NUL never equals). */
static int str_eq(const json_t *v, const char *s)
{
    size_t n = strlen(s);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

ad_err jws_header(const jws_parts *p, const char *const *typs,
                  int typ_required, char kid[JWS_KID_MAX], size_t *kid_len,
                  char *err, size_t errlen)
{
    uint8_t raw[JWS_HDR_RAW_MAX];
    json_t *hdr = NULL, *v;
    size_t n, i;
    ad_err e = AD_EBADCRED;

    kid[0] = '\0';
    *kid_len = 0;
    if (codec_b64_decode(p->hdr, p->hdr_len, raw, sizeof(raw), &n,
                         CODEC_B64_URL) != 0) {
        ad_errf(e, err, errlen, "the header is not base64url or too long");
        goto out;
    }
    /* Duplicates refused: {"alg":"ES256","alg":"none"} must not mean
     * different things to different parsers. */
    if ((hdr = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES,
                          NULL)) == NULL ||
        !json_is_object(hdr)) {
        ad_errf(e, err, errlen, "the header is not a JSON object");
        goto out;
    }
    if (!str_eq(json_object_get(hdr, "alg"), "ES256")) {
        ad_errf(e, err, errlen, "alg is not ES256");
        goto out;
    }
    if ((v = json_object_get(hdr, "typ")) != NULL || typ_required) {
        for (i = 0; typs[i] != NULL && !str_eq(v, typs[i]); i++)
            ;
        if (typs[i] == NULL) {
            ad_errf(e, err, errlen, "typ is not %s",
                    typs[0] != NULL ? typs[0] : "allowed");
            goto out;
        }
    }
    if (json_object_get(hdr, "crit") != NULL) {
        ad_errf(e, err, errlen, "crit is not supported");
        goto out;
    }
    v = json_object_get(hdr, "kid");
    if (!json_is_string(v)) {
        ad_errf(e, err, errlen, "no kid");
        goto out;
    }
    /* Too long to be any key's kid. */
    n = json_string_length(v);
    if (n == 0 || n >= JWS_KID_MAX) {
        ad_errf(e, err, errlen, "unknown kid");
        goto out;
    }
    memcpy(kid, json_string_value(v), n);
    kid[n] = '\0';
    *kid_len = n;
    e = AD_OK;
out:
    json_decref(hdr);
    return e;
}

ad_err jws_sig_decode(const jws_parts *p, uint8_t rs[JWS_SIG_LEN], char *err,
                      size_t errlen)
{
    size_t got;

    if (p->sig_len != JWS_SIG_B64_LEN)
        return ad_errf(AD_EBADCRED, err, errlen, "the signature is not 64 bytes");
    if (codec_b64_decode(p->sig, p->sig_len, rs, JWS_SIG_LEN, &got,
                         CODEC_B64_URL) != 0 ||
        got != JWS_SIG_LEN)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "the signature is not base64url");
    return AD_OK;
}

ad_err jws_verify(const jws_parts *p, const uint8_t rs[JWS_SIG_LEN],
                  EC_KEY *key, char *err, size_t errlen)
{
    uint8_t digest[SHA256_DIGEST_LENGTH];
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    ad_err e = AD_EBADCRED;

    /* JWS carries r and s as fixed-width big-endian integers side by
     * side (RFC 7518 §3.4), not DER; ECDSA_do_verify takes them as
     * numbers, so there is nothing to re-encode. */
    if ((sig = ECDSA_SIG_new()) == NULL ||
        (r = BN_bin2bn(rs, JWS_COORD_LEN, NULL)) == NULL ||
        (s = BN_bin2bn(rs + JWS_COORD_LEN, JWS_COORD_LEN, NULL)) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    /* ECDSA_do_verify refuses these too; saying so costs nothing and
     * does not rest on that. */
    if (BN_is_zero(r) || BN_is_zero(s)) {
        ad_errf(e, err, errlen, "bad signature");
        goto out;
    }
    ECDSA_SIG_set0(sig, r, s);
    r = s = NULL;
    SHA256((const uint8_t *)p->hdr, p->input_len, digest);
    if (key == NULL ||
        ECDSA_do_verify(digest, sizeof(digest), sig, key) != 1) {
        ad_errf(e, err, errlen, "bad signature");
        goto out;
    }
    e = AD_OK;
out:
    if (e != AD_OK)
        ERR_clear_error();
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return e;
}

ad_err jws_payload(const jws_parts *p, uint8_t *out, size_t cap,
                   size_t *out_len, char *err, size_t errlen)
{
    if (codec_b64_decode(p->payload, p->payload_len, out, cap, out_len,
                         CODEC_B64_URL) != 0)
        return ad_errf(AD_EBADCRED, err, errlen, "the payload is not base64url");
    return AD_OK;
}

ad_err jws_payload_alloc(const jws_parts *p, uint8_t **out, size_t *out_len,
                         char *err, size_t errlen)
{
    if (codec_b64_decode_alloc(p->payload, p->payload_len,
                               codec_b64_decoded_max(p->payload_len), out,
                               out_len, CODEC_B64_URL) != 0)
        return ad_errf(AD_EBADCRED, err, errlen, "the payload is not base64url");
    return AD_OK;
}
