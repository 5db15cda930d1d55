/* The daemon's token service: the signing key ring kept in the store
 * (sealed with DATA/seal.key, so that every node of a cluster shares it),
 * minting access tokens for devices, validating presented tokens (with a
 * bounded cache of verified tokens so a broker's repeated checks of one
 * token pay the signature once), and the revoked-jti list. Device status
 * is not checked here: callers do that on every use, so a suspension
 * bites even for a cached token. */
#ifndef AUTHD_TOKENS_H
#define AUTHD_TOKENS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "../policy/policy.h"
#include "store.h"
#include "tok.h"

typedef struct tokens tokens;

typedef struct {
    const char *dir;      /* DATA/tokens: keys of the older layout */
    const char *issuer;   /* "iss" */
    const char *audience; /* "aud" */
    long ttl;             /* seconds a token lives */
    const char *seal_key; /* DATA/seal.key; NULL: seal.key beside dir */
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

/* Makes sure the store holds a key ring this node can open, as `authd
 * init` and every start do: creates seal_key_path (0600) if absent, unless
 * the store already holds keys (they were sealed with another node's key:
 * AD_ECONFLICT, the data dir must be joined); then, if the store holds no
 * key ring, imports legacy_dir's <kid>.key files (the older layout; may be
 * NULL) sealed, or else generates the first key. Says what it did on log
 * if non-NULL. */
ad_err tokens_provision(store *st, const char *seal_key_path,
                        const char *legacy_dir, FILE *log, char *err,
                        size_t errlen);

/* Provisions as above, then loads and unseals every key of the store's
 * ring. AD_ECRYPTO if a key does not open with the seal key. */
ad_err tokens_open(const tokens_config *cfg, store *st, tokens **out,
                   char *err, size_t errlen);
void tokens_close(tokens *t);

/* Re-reads the key ring from the store (after another node rotated) and
 * swaps it in whole: a mint or verify running meanwhile finishes on the
 * ring it started with, which is freed after it. Cached validations are
 * dropped if a key left the ring. On error the current ring stays.
 * Safe from any thread, a store watcher's included (it reads the store
 * but never writes). */
ad_err tokens_reload(tokens *t);

/* Generates a key, stores it sealed and makes it the signing key of the
 * whole cluster in one store write, then reloads; old keys keep
 * verifying, audited as token_key.rotate by actor (NULL: "system").
 * kid gets its id ("" on error). AD_ECONFLICT when the ring
 * is full (64 keys). */
ad_err tokens_rotate(tokens *t, const char *actor, char kid[TOK_KID_MAX],
                     char *err, size_t errlen);
json_t *tokens_jwks(tokens *t);

/* The cluster's seal key (SEAL_KEY_LEN bytes, owned by t), for the other
 * records kept sealed in the store: enrollment tokens (see
 * registry_enrollment_new.seal_key). */
const uint8_t *tokens_seal_key(const tokens *t);

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

/* Revokes a jti (durably; it stays revoked until its exp passes). The
 * record names the token's device when a validated token with that jti
 * is still in the cache. */
ad_err tokens_revoke(tokens *t, const char *actor, const char *jti);
/* The same, naming the token's device sub (a device id; NULL: as
 * tokens_revoke finds it), so that the gateway bundles of that device
 * carry the jti. AD_EFIELD for an invalid jti or sub. */
ad_err tokens_revoke_sub(tokens *t, const char *actor, const char *jti,
                         const char *sub);
int tokens_is_revoked(tokens *t, const char *jti);
/* The change feed: a jti revoked by a write on any node; or "read the
 * whole revoked list again" after changes may have been missed. Revoked
 * jtis are only ever added, so both only add. */
void tokens_note_revoked(tokens *t, const char *jti);
ad_err tokens_reload_revoked(tokens *t);

/* Signs payload (serialized compact, members in order) as a compact JWS
 * with the current signing key and its kid (tok_sign: header typ as
 * given). *jws malloc()ed, at most max bytes; the kid used into kid if
 * non-NULL. AD_EFIELD if larger than max, AD_ENOTREADY with no key. */
ad_err tokens_sign_json(tokens *t, const char *typ, const json_t *payload,
                        size_t max, char **jws, size_t *jws_len,
                        char kid[TOK_KID_MAX]);

/* The "iss" tokens carry. */
const char *tokens_issuer(const tokens *t);

/* Appends to out (an array) the revoked jtis that may still be live at
 * now (keep_until not passed) whose recorded subject is one of the
 * sorted ids subs[0..n), or that record no subject (revoked before
 * subjects were recorded, or with none known): a gateway refuses those
 * too, to be safe. AD_ETOOBIG past max entries; AD_ESTORE. */
ad_err tokens_revoked_for(tokens *t, const char *const *subs, size_t n,
                          int64_t now, size_t max, json_t *out);

#endif
