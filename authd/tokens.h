/* The daemon's token service: the signing key ring kept in DATA/tokens,
 * minting access tokens for devices, validating presented tokens (with a
 * bounded cache of verified tokens so a broker's repeated checks of one
 * token pay the signature once), and the revoked-jti list. Device status
 * is not checked here: callers do that on every use, so a suspension
 * bites even for a cached token. */
#ifndef AUTHD_TOKENS_H
#define AUTHD_TOKENS_H

#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

#include "../policy/policy.h"
#include "store.h"
#include "tok.h"

typedef struct tokens tokens;

typedef struct {
    const char *dir;      /* DATA/tokens */
    const char *issuer;   /* "iss" */
    const char *audience; /* "aud" */
    long ttl;             /* seconds a token lives */
} tokens_config;

/* A validated token, shared by the cache; release with token_release. */
typedef struct token_entry {
    char sub[129];
    char jti[64];
    char incarnation[17]; /* the device incarnation it was minted for */
    int64_t exp, iat;
    int has_cnf;
    uint8_t cnf[32];      /* SHA-256 of the bound certificate */
    char *scope;          /* space-separated action:filter items */
    pol_set *scope_set;   /* the scope as an allow-only policy */
    json_t *claims;
    atomic_int refs;
    uint8_t key[32];      /* SHA-256 of the token string (cache key) */
    struct token_entry *next;
} token_entry;

ad_err tokens_open(const tokens_config *cfg, store *st, tokens **out,
                   char *err, size_t errlen);
void tokens_close(tokens *t);

/* Generates a key, writes it (0600) and makes it the signing key; old
 * keys keep verifying. kid gets its id. */
ad_err tokens_rotate(tokens *t, char kid[TOK_KID_MAX], char *err,
                     size_t errlen);
json_t *tokens_jwks(tokens *t);

/* Mints a token for device_id with scope (already granted) and, when
 * cnf is non-NULL, bound to that certificate thumbprint; incarnation
 * (private claim "authd_dev") ties it to this record of the device; acl is the
 * EMQX-format claim (may be NULL). *jwt malloc()ed; *exp set. */
ad_err tokens_mint(tokens *t, const char *device_id, const char *incarnation,
                   const char *scope, const uint8_t *cnf, const json_t *acl,
                   int64_t now, char **jwt, int64_t *exp);

/* Validates a presented token at now: signature, iss, aud, exp, nbf and
 * not revoked. On success *out is a referenced entry. AD_EBADCRED with a
 * reason otherwise. */
ad_err tokens_validate(tokens *t, const char *jwt, int64_t now,
                       token_entry **out, char *err, size_t errlen);
void token_release(token_entry *e);

/* Revokes a jti (durably; it stays revoked until its exp passes). */
ad_err tokens_revoke(tokens *t, const char *actor, const char *jti);
int tokens_is_revoked(tokens *t, const char *jti);
/* The change feed: a jti revoked by a write on any node; or "read the
 * whole revoked list again" after changes may have been missed. Revoked
 * jtis are only ever added, so both only add. */
void tokens_note_revoked(tokens *t, const char *jti);
ad_err tokens_reload_revoked(tokens *t);

#endif
