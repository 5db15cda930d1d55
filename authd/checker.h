/* The broker check path (docs/api.md §10): who is this client, and may it
 * connect / publish / subscribe / receive here? Three parts:
 *   - identity.c: credentials — certificates (cached by serial and
 *     fingerprint), tokens, device secrets;
 *   - devcache.c: a small fixed-size record per device and the policy
 *     sets devices share, compiled once and bound per decision;
 *   - checker.c (this API): one identity per connection, decisions.
 * The caches are bounded by a memory budget with CLOCK eviction
 * (cache.h), and every registry write that could change an answer drops
 * the affected entries before it is acknowledged, so the next check sees
 * it. */
#ifndef AUTHD_CHECKER_H
#define AUTHD_CHECKER_H

#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "../policy/policy.h"
#include "cache.h"
#include "registry.h"
#include "store.h"

typedef struct checker checker;

/* What a device-secret check does when it needs an argon2id run (tens
 * of milliseconds of CPU; a secret verified before is answered from a
 * keyed MAC without one). */
typedef enum {
    CHECK_ARGON2_RUN = 0, /* run it here: the caller may block */
    CHECK_ARGON2_DEFER,   /* deny with reason "deferred": the caller runs
                           * the request again where it may block */
    CHECK_ARGON2_REFUSE   /* deny "rate_limited": nowhere to run it now */
} check_argon2;

typedef struct {
    pol_action action;
    const char *client_id;        /* MQTT client id; NULL = "" */
    const char *username;
    const char *password;         /* a token or a device secret, or NULL */
    const char *cert_fingerprint; /* SHA-256 of the DER, hex (':' allowed) */
    const char *cert_serial;      /* hex */
    const char *cert_pem;         /* the client certificate itself: PEM,
                                   * or base64 DER (EMQX ${cert_pem},
                                   * VerneMQ client_cert) */
    const char *cert_cn;          /* subject CN as the broker saw it */
    int trust_cert_cn;            /* the broker verified the certificate
                                   * against our CA: cert_cn names the
                                   * device (EMQX authn, VerneMQ's
                                   * use_identity_as_username) */
    int want_emqx_acl;            /* fill check_result.emqx_acl */
    check_argon2 argon2;          /* a device secret that needs argon2id */
    const char *topic;            /* the topic or filter to decide on */
    const char *on_behalf_of;     /* a child device the connecting device
                                   * (its gateway) acts for, or NULL */
} check_request;

enum { CHECK_ID_MAX = 129 };

typedef struct {
    int allow;
    const char *reason;           /* short snake_case code, static */
    char device[CHECK_ID_MAX];    /* "" if no identity was established */
    long ttl;                     /* seconds the answer may be cached */
    int64_t expire_at;            /* credential end, Unix s (0: none) */
    json_t *statements;           /* allowed connects: substituted statements */
    char *scope;                  /* allowed token connects: the token's scope */
    json_t *emqx_acl;             /* allowed connects, if asked: EMQX rules
                                   * (pol_emqx_acl) */
    char policy[CHECK_ID_MAX];    /* deciding statement's policy, or "" */
    int statement;                /* its index, or -1 */
    int deferred;                 /* CHECK_ARGON2_DEFER: a device secret
                                   * needs argon2id; decide again where
                                   * the caller may block */
} check_result;

enum { CHECKER_CACHE_DEFAULT_MB = 256 };

typedef struct {
    long ttl;           /* answers may be cached by brokers this long
                         * (capped at the credential's end) */
    int trust_cn_only;  /* let a connect that names a device only by its
                         * certificate's CN in (API §8: weaker, since a
                         * CN cannot say which certificate was presented) */
    size_t cache_bytes; /* memory for the caches; 0: the default */
} checker_opts;

/* Creates the checker over st. */
ad_err checker_open(store *st, const checker_opts *opts, checker **out);
void checker_close(checker *c);

/* Decides req at time now. Never fails: any error is a deny with a
 * reason. Every credential in req must name the same device (one
 * connection, one identity): a token, a certificate however it is named
 * (fingerprint, serial, PEM, CN) and a non-empty username that disagree
 * are a deny. With on_behalf_of, that device must be active and be the
 * child's gateway ("not_gateway" otherwise, also for a child that does
 * not exist), the child active, and the decision is the child's own:
 * its policy, ${device.id} = ${username} = ${client_id} = the child,
 * no ${cert.cn}, a connect's client id the child's id; out->device is
 * the child. Free out with check_result_clear. */
void checker_check(checker *c, const check_request *req, time_t now,
                   check_result *out);
void check_result_clear(check_result *r);
/* Makes r a deny for reason (static text): no allow, nothing cached. */
void check_result_deny(check_result *r, const char *reason);

/* Explains the policy decision for a device (no credential needed):
 * fills out as checker_check would for an authenticated client. */
void checker_explain(checker *c, const char *device_id, pol_action action,
                     const char *subject, check_result *out);

/* Lets the checker accept access tokens as passwords. */
typedef struct tokens tokens;
void checker_set_tokens(checker *c, tokens *t);

/* Bounds device-secret checks by limits (not owned; NULL: unbounded):
 * a backing-off device or a full argon2id gate is a deny with reason
 * "rate_limited". */
typedef struct rl rl;
void checker_set_limits(checker *c, rl *limits);

/* 1 if the device exists, is active and secret is its device secret;
 * else 0 with *reason a static deny reason ("invalid_credential",
 * "rate_limited", "deferred" under CHECK_ARGON2_DEFER, ...). */
int checker_device_secret_ok(checker *c, const char *device_id,
                             const char *secret, check_argon2 argon2,
                             const char **reason);
/* 1 if the device exists, is active, and (when incarnation is given) is
 * that incarnation of the id: a token minted before the device was
 * deleted and created again is not the new device's. Tokens stop with
 * suspension. */
int checker_device_active(checker *c, const char *device_id,
                          const char *incarnation);

/* Is a validated token still good for its device: the device active
 * and the same incarnation, and its bound certificate (if any) neither
 * revoked nor expired? (Introspection's "active".) */
struct token_entry;
int checker_token_active(checker *c, const struct token_entry *tok,
                         time_t now);

/* The scope a token for device_id may carry (pol_scope_grant against
 * the device's policy as it connects as itself), the matching EMQX "acl"
 * claim (pol_emqx_acl), and the device's incarnation (for the token).
 * AD_EFORBIDDEN if nothing remains, AD_EFIELD for a malformed or
 * oversized scope, AD_ESUSPENDED/AD_EREVOKED/AD_EBADCRED for the
 * device. On error nothing is written. */
ad_err checker_grant_scope(checker *c, const char *device_id,
                           const char *requested, char **granted,
                           json_t **acl, char incarnation[17], char *err,
                           size_t errlen);

/* What a gateway bundle carries for device_id (docs/gateway-bundles.md):
 * its status, and its statements substituted as for a connect as
 * itself with client id = username = the device id and no cert.cn
 * (what on_behalf_of binds for a child), ${group} and attributes its
 * own, and ${child.id} its active children: the export a broker gets on
 * an allowed connect. A device whose documents do not compile gets no
 * statements (the daemon denies it everything). *statements is a new
 * array. AD_ENOTFOUND, AD_ESTORE, AD_ENOMEM; then nothing is written. */
ad_err checker_device_statements(checker *c, const char *device_id,
                                 registry_device_status *status,
                                 json_t **statements);

/* A certificate's revocation status by serial (lowercase hex as issued):
 * AD_OK with *revoked (and *revoked_at, *reason: a CRLReason code) set,
 * AD_ENOTFOUND if authd never issued it. Uses the certificate cache. */
ad_err checker_cert_status(checker *c, const char *serial_hex, int *revoked,
                           int64_t *revoked_at, int *reason);

/* Invalidation, called by the store's change feed (changes.c) after the
 * write that makes it necessary has committed, on this node before it
 * is answered, on the others when its notification arrives. The one rule every cache here
 * follows: a reader notes its key's generation before it reads the
 * store, and inserts what it read only if no invalidation of that key
 * happened since, so no entry can outlive the invalidation of the data
 * it was built from. */
void checker_forget_device(checker *c, const char *device_id);
void checker_forget_policies(checker *c);   /* any policy or group */
void checker_forget_cert(checker *c, const char *serial_hex,
                         const char *fingerprint_hex);
/* Everything: after changes may have been missed. */
void checker_forget_all(checker *c);

/* What the caches hold, for /metrics. */
typedef struct {
    cache_stats devices, sets, certs;
} checker_stats;
void checker_get_stats(checker *c, checker_stats *out);

/* Test hook: called by a reader between its store read and its cache
 * insert, to let a test put an invalidation exactly there. NULL clears
 * it. Not for production use. */
void checker_set_race_hook(checker *c, void (*hook)(void *arg), void *arg);

#endif
