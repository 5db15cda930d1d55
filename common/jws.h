/* The one reader of compact JWS signed with ES256 (RFC 7515, RFC 7518
 * §3.4), shared by access tokens (authd/tok.c) and offline gateway
 * bundles (clients/gateway/). Splitting, the header check, the signature
 * check and payload decoding are separate calls, so that each caller
 * picks the key named by the kid under its own locking and keeps its
 * own order of checks. No I/O, no globals; only jws_payload_alloc
 * allocates. Every refusal is AD_EBADCRED with a reason in err. */
#ifndef AUTHD_JWS_H
#define AUTHD_JWS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ec.h>

#include "err.h"

enum {
    JWS_KID_MAX = 64,       /* bytes of a kid, with its NUL */
    JWS_COORD_LEN = 32,     /* a P-256 coordinate or scalar */
    JWS_SIG_LEN = 64,       /* the signature: r||s, each 32 bytes */
    JWS_SIG_B64_LEN = 86,   /* its unpadded base64url */
    JWS_HDR_RAW_MAX = 1024  /* a decoded header; real ones are ~100 bytes */
};

/* The three base64url parts of a compact JWS, pointing into the text
 * given to jws_split (which must outlive them). The signing input is
 * hdr[0..input_len): the header, the dot and the payload. */
typedef struct {
    const char *hdr, *payload, *sig;
    size_t hdr_len, payload_len, sig_len;
    size_t input_len;
} jws_parts;

/* Splits text[0..len) into exactly three dot-separated parts; nothing is
 * decoded. what names the JWS in messages ("token", "bundle"): "the
 * token is longer than max bytes", "the token is not three
 * dot-separated parts". Returns AD_OK, or AD_EBADCRED with *out
 * zeroed. */
ad_err jws_split(const char *text, size_t len, size_t max, const char *what,
                 jws_parts *out, char *err, size_t errlen);

/* Decodes and checks the header (at most JWS_HDR_RAW_MAX bytes once
 * decoded): a JSON object without duplicate members, "alg" exactly
 * "ES256" (never "none", never HMAC), "typ" one of typs (a
 * NULL-terminated list; typs[0] names the expected value in the message)
 * or, unless typ_required, absent; no "crit" (no extension is
 * understood, so any marked critical must be refused); and a string
 * "kid" of 1..JWS_KID_MAX-1 bytes, copied to kid (NUL-terminated; it may
 * contain a NUL, so use *kid_len) for the caller to look its key up.
 * Returns AD_OK, or AD_EBADCRED ("alg is not ES256", "typ is not
 * at+jwt", "crit is not supported", "no kid", "unknown kid"...), in
 * which case kid is "" and *kid_len 0. */
ad_err jws_header(const jws_parts *p, const char *const *typs,
                  int typ_required, char kid[JWS_KID_MAX], size_t *kid_len,
                  char *err, size_t errlen);

/* Decodes the signature part into rs (r||s): it must be exactly
 * JWS_SIG_B64_LEN characters of strict base64url. Returns AD_OK, or
 * AD_EBADCRED ("the signature is not 64 bytes", "the signature is not
 * base64url"). */
ad_err jws_sig_decode(const jws_parts *p, uint8_t rs[JWS_SIG_LEN], char *err,
                      size_t errlen);

/* Verifies rs (from jws_sig_decode) over the signing input with key, a
 * P-256 public (or private) key the caller chose by kid. key is only
 * read, so threads may share it. An EC_KEY rather than an EVP_PKEY
 * because ECDSA_do_verify on the digest needs neither a DER re-encoding
 * of r||s nor a per-call EVP context, which this hot path would pay for
 * on every access token. Returns AD_OK, AD_EBADCRED ("bad signature",
 * also for r or s zero) or AD_ENOMEM. */
ad_err jws_verify(const jws_parts *p, const uint8_t rs[JWS_SIG_LEN],
                  EC_KEY *key, char *err, size_t errlen);

/* Decodes the payload part (strict base64url) into out, at most cap
 * bytes, and its length to *out_len. Returns AD_OK, or AD_EBADCRED ("the
 * payload is not base64url", also when longer than cap) with *out_len 0. */
ad_err jws_payload(const jws_parts *p, uint8_t *out, size_t cap,
                   size_t *out_len, char *err, size_t errlen);
/* The same into a malloc()ed buffer (*out, caller frees). Returns AD_OK,
 * or AD_EBADCRED (as jws_payload, or out of memory) with *out NULL. */
ad_err jws_payload_alloc(const jws_parts *p, uint8_t **out, size_t *out_len,
                         char *err, size_t errlen);

#endif
