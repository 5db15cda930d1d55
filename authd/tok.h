/* Access tokens: ES256 JWTs (RFC 7519, RFC 9068 profile) minted and
 * verified with P-256 keys parsed once, so a sign or a verify costs the
 * ECDSA math and little else. No I/O: keys come in as PEM text and the
 * daemon decides where they live. A key ring holds every key that may
 * still verify (after a rotation) and one active key that signs. */
#ifndef AUTHD_TOK_H
#define AUTHD_TOK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/err.h"

typedef struct tok_ring tok_ring;

enum { TOK_KID_MAX = 64, TOK_JWT_MAX = 32768 };

/* An empty ring. */
ad_err tok_ring_new(tok_ring **out);
void tok_ring_free(tok_ring *ring);

/* Adds a P-256 private key (PEM, PKCS#8 or SEC1) under kid; if
 * make_active, it becomes the signing key. Safe while other threads mint
 * and verify. AD_EFIELD for a key that is not P-256 or a duplicate kid. */
ad_err tok_ring_add(tok_ring *ring, const char *kid, const char *pem,
                    int make_active, char *err, size_t errlen);

/* Drops a key (no longer verifies). AD_ENOTFOUND if absent; AD_ECONFLICT
 * for the active key. */
ad_err tok_ring_remove(tok_ring *ring, const char *kid);

/* The active key's kid into out; "" if none. */
void tok_ring_active_kid(tok_ring *ring, char out[TOK_KID_MAX]);

/* The public keys as a JWKS document {"keys":[{kty,crv,x,y,kid,use,alg}]}
 * (new reference). */
json_t *tok_ring_jwks(tok_ring *ring);

/* Signs claims (any JSON object; the caller sets iss, sub, aud, iat,
 * exp, jti...) with the active key. The header is {"alg":"ES256",
 * "typ":"at+jwt","kid":<active kid>}. *jwt is malloc()ed. */
ad_err tok_mint(tok_ring *ring, const json_t *claims, char **jwt);

/* Signs payload[0..plen) (any bytes; the caller serializes its JSON)
 * as a compact JWS with the active key: header {"alg":"ES256","typ":typ,
 * "kid":<active kid>}, for JWS that are not access tokens (typ
 * "authd-bundle+jwt" for gateway bundles, so that neither passes for the
 * other). typ is 1-63 printable ASCII characters without quotes or
 * backslashes. *jws (malloc()ed) is at most max bytes, its length in
 * *jws_len if non-NULL, the kid used in kid if non-NULL. AD_EFIELD for a
 * bad typ or a result over max, AD_ENOTREADY with no active key; on
 * error *jws is NULL. */
ad_err tok_sign(tok_ring *ring, const char *typ, const char *payload,
                size_t plen, size_t max, char **jws, size_t *jws_len,
                char kid[TOK_KID_MAX]);

/* What verification requires besides a good signature. */
typedef struct {
    const char *issuer;   /* "iss" must equal this */
    const char *audience; /* "aud" (string or array) must contain this, if set */
    int64_t now;          /* Unix seconds */
    int64_t leeway;       /* seconds allowed for clock skew on exp/nbf/iat */
} tok_expect;

/* Fully validates a compact JWS: three base64url parts, header alg
 * ES256 exactly (never "none" or HMAC), a known kid, a valid P-256
 * signature (64-byte r||s), claims a JSON object with exp (required),
 * nbf/iat if present, iss and aud as expected. On success *claims is a
 * new reference. Errors: AD_EBADCRED (anything wrong with the token),
 * with a reason in err ("expired", "bad signature", "unknown kid"...). */
ad_err tok_verify(tok_ring *ring, const char *jwt, const tok_expect *expect,
                  json_t **claims, char *err, size_t errlen);

/* A fresh P-256 private key as PKCS#8 PEM (for rotation); caller frees. */
char *tok_new_key_pem(void);

#endif
