/* Offline gateway bundles (docs/gateway-bundles.md): a gateway fetches
 * GET /v1/gateway/bundle while it is online, and later, with no network,
 * verifies the bundle against the daemon's JWKS and decides for itself
 * and its children with the same policy/ engine the daemon uses. This
 * module parses a JWKS, verifies a bundle (a compact JWS, ES256) and
 * decides; no I/O, no clock (the caller passes the time), no globals.
 * Every input is bounded: the enum below says how. */
#ifndef AUTHD_GW_BUNDLE_H
#define AUTHD_GW_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/err.h"
#include "../../policy/policy.h"

enum {
    GW_JWKS_MAX = 1 << 20,        /* bytes of JWKS text */
    GW_JWKS_KEYS_MAX = 64,        /* usable keys in one JWKS */
    GW_KID_MAX = 64,              /* bytes of a kid, with its NUL */
    GW_BUNDLE_MAX = 64 << 20,     /* bytes of a compact JWS */
    GW_CHILDREN_MAX = 50000,      /* children in one bundle */
    GW_DEVICE_STATEMENTS_MAX = 65536, /* statements of one device */
    GW_REVOKED_MAX = 1000000,     /* serials, and jtis, in one bundle */
    /* How far in the future "iat" may be: the gateway's clock may run a
     * little behind the daemon's. "exp" gets no such slack. */
    GW_IAT_SKEW = 300
};

/* The header "typ" of a bundle. Requiring it means no other JWS the same
 * keys sign (an access token, typ "at+jwt") can pass for a bundle. */
#define GW_BUNDLE_TYP "authd-bundle+jwt"

typedef struct gw_jwks gw_jwks;     /* immutable once parsed */
typedef struct gw_bundle gw_bundle; /* immutable once opened; thread-safe reads */

/* Parses a JWKS ({"keys":[...]}, as /.well-known/jwks.json serves it) of
 * len bytes (at most GW_JWKS_MAX). Keys with kty "EC" and crv "P-256",
 * a kid (1..GW_KID_MAX-1 bytes) and x/y (32 bytes each, base64url) are
 * kept; keys of other types or curves are skipped, since a JWKS may
 * carry keys for other uses. A P-256 key whose point is not on the
 * curve, a duplicate kid, or a malformed document is AD_EFIELD with a
 * message. On error *out is NULL. */
ad_err gw_jwks_parse(const char *text, size_t len, gw_jwks **out, char *err,
                     size_t errlen);
void gw_jwks_free(gw_jwks *jwks);
/* The number of usable keys. */
size_t gw_jwks_count(const gw_jwks *jwks);

/* Verifies and opens a bundle: jws[0..len) must be exactly a compact JWS
 * (three base64url parts, nothing before or after) of at most
 * GW_BUNDLE_MAX bytes whose header is {"alg":"ES256","typ":GW_BUNDLE_TYP,
 * "kid":<a kid of jwks>} (no "crit"), whose 64-byte r||s signature
 * verifies with that key, and whose payload is the bundle object (see
 * docs/gateway-bundles.md) with exp > now and iat <= now + GW_IAT_SKEW.
 * If issuer is non-NULL, "iss" must equal it. Every device's statements
 * are compiled here, so a bundle that opens decides without failing.
 * On error *out is NULL and the result is AD_EBADCRED (refused: the
 * message says why, e.g. "expired", "bad signature", "unknown kid") or
 * AD_ENOMEM. */
ad_err gw_bundle_open(const gw_jwks *jwks, const char *jws, size_t len,
                      int64_t now, const char *issuer, gw_bundle **out,
                      char *err, size_t errlen);
void gw_bundle_free(gw_bundle *b);

/* What the bundle says; the strings live as long as b. */
const char *gw_bundle_gateway(const gw_bundle *b);
const char *gw_bundle_issuer(const gw_bundle *b);
size_t gw_bundle_child_count(const gw_bundle *b);
int64_t gw_bundle_exp(const gw_bundle *b);
int64_t gw_bundle_iat(const gw_bundle *b);
/* The key id that signed it. */
const char *gw_bundle_kid(const gw_bundle *b);

/* 1 if the bundle lists serial (hex, compared without regard to case)
 * among revoked_serials, or jti among revoked_jtis; else 0. */
int gw_bundle_serial_revoked(const gw_bundle *b, const char *serial_hex);
int gw_bundle_jti_revoked(const gw_bundle *b, const char *jti);

/* Decides action on subject (a topic, a subscribe filter, or a client id
 * for connect) for device_id (NULL: the gateway), as the daemon decides
 * for that device: a device the bundle does not name is denied
 * ("unknown_device"), a child whose status is not active is denied
 * ("device_suspended", "device_revoked"), and otherwise the answer is
 * pol_decide on the device's statements (explicit deny wins, no allow
 * means deny). The policy name in the answer lives as long as b.
 * Thread-safe; allocates nothing. */
pol_decision gw_decide(const gw_bundle *b, const char *device_id,
                       pol_action action, const char *subject);

#endif
