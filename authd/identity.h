/* Credentials on the check path: which certificate a broker names and
 * whether it is one of ours and still good, which device a token is
 * for, and whether a device secret is right. Certificates are cached by
 * serial and by fingerprint within a memory budget (cache.h); device
 * secrets are answered from the device cache's keyed MAC of the last
 * verified secret, and only a new or wrong secret pays argon2id, within
 * the limits of ratelimit.h. How these combine into one identity per
 * connection is checker.c's. */
#ifndef AUTHD_IDENTITY_H
#define AUTHD_IDENTITY_H

#include <stdint.h>
#include <time.h>

#include "../ca/ca.h"
#include "cache.h"
#include "checker.h"
#include "devcache.h"
#include "store.h"
#include "tokens.h"

typedef struct identity identity;
typedef struct rl rl;

/* A certificate of ours, as a check needs it. */
typedef struct {
    char serial[CA_SERIAL_HEX_MAX];
    char fpr[65];
    char device[CHECK_ID_MAX]; /* "" for server certificates */
    int64_t not_after;
    int revoked;
    int64_t revoked_at;
    int reason;                /* CRLReason code */
} cert_rec;

ad_err identity_open(store *st, size_t cert_budget, devcache *dc,
                     identity **out);
void identity_close(identity *id);
void identity_set_limits(identity *id, rl *limits);
void identity_set_race_hook(identity *id, void (*hook)(void *arg), void *arg);

/* A certificate by serial (lowercase hex as issued) or, with serial
 * NULL, by SHA-256 fingerprint (lowercase hex). AD_ENOTFOUND if not
 * ours. */
ad_err identity_cert(identity *id, const char *serial, const char *fpr,
                     cert_rec *out);
void identity_forget_cert(identity *id, const char *serial_hex,
                          const char *fingerprint_hex);
void identity_forget_all(identity *id);

/* The certificate the broker names, however it names it (fingerprint,
 * PEM or base64 DER, serial: all that are given must be the same one),
 * checked to be a good device certificate of ours. 1 with *cert set, 0
 * if none is named, -1 with *reason a deny reason. */
int identity_named_cert(identity *id, const check_request *req, time_t now,
                        cert_rec *cert, const char **reason);

/* Does the device hold a certificate neither revoked nor expired?
 * *not_after gets the latest such notAfter. */
int identity_device_has_valid_cert(identity *id, const char *device_id,
                                   time_t now, int64_t *not_after);

/* Is the certificate a token is bound to (cnf) still good? */
int identity_bound_cert_valid(identity *id, const token_entry *tok,
                              time_t now);

/* Does a token go with the certificate the connection presented: a
 * bound token only with that very certificate, any token only with a
 * certificate of its own device. */
int identity_token_fits_cert(const token_entry *tok, const cert_rec *cert);

/* Checks a device secret. 1 if right; else 0 with the deny in out
 * (reason, and deferred under CHECK_ARGON2_DEFER). */
int identity_secret_ok(identity *id, const char *device_id,
                       const char *secret, check_argon2 argon2,
                       check_result *out);

void identity_get_stats(identity *id, cache_stats *certs);

#endif
