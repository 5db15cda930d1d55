/* Enrollments: a token that lets devices get their first certificate,
 * a limited number of times until it expires. The registry keeps only
 * the token's hash; its record is read here and nowhere above. */
#ifndef AUTHD_REGISTRY_ENROLLMENTS_H
#define AUTHD_REGISTRY_ENROLLMENTS_H

#include <time.h>

#include <jansson.h>

#include "registry.h"

/* What the issuing routes need of an enrollment. */
typedef struct {
    char id[REGISTRY_ID_MAX];
    char id_pattern[REGISTRY_ID_MAX]; /* a glob over device ids */
    long cert_days;                   /* 0: the daemon's default */
    time_t expires_at;
    long long used, max_uses;
} registry_enrollment;

enum { REGISTRY_ENR_TOKEN_MAX = 64 }; /* an "enr_..." token's length + 1 */

/* Finds the enrollment a token ("enr_...") belongs to (by its SHA-256,
 * compared in constant time). AD_EBADCRED if none; *out is zeroed on
 * error. */
ad_err registry_enrollment_by_token(store *st, const char *token,
                                    registry_enrollment *out);

/* Enrollment id. AD_ENOTFOUND if none; *out is zeroed on error. */
ad_err registry_enrollment_get(store *st, const char *id,
                               registry_enrollment *out);

/* Whether the enrollment may still be used at time now: AD_OK,
 * AD_EENREXPIRED or AD_EENRUSED. */
ad_err registry_enrollment_usable(const registry_enrollment *enr, time_t now);

/* A new enrollment, its fields checked by the caller. */
typedef struct {
    const char *name;       /* NULL: the id */
    const char *id_pattern; /* a glob of id characters, * and ? */
    const json_t *groups;   /* names, or NULL for none */
    const char *gateway;    /* devices it creates sit behind this device
                             * (a device id), or NULL */
    long long max_uses, expires_in, cert_days;
    /* The cluster's seal key (tokens_seal_key), or NULL. With it the
     * record also keeps the token sealed (AES-256-GCM, bound to the
     * enrollment id), because DTLS-PSK needs the token itself on the
     * server side: see registry_enrollment_psk and docs/coap.md. */
    const uint8_t *seal_key;
} registry_enrollment_new;

/* Creates an enrollment with a new id and token. *view (new reference) is
 * its public record plus "token", shown this once. A gateway must be an
 * existing device (AD_EGATEWAY; checked again at each issuance). On
 * error *view is NULL and nothing is written. */
ad_err registry_enrollment_create(store *st, const char *actor,
                                  const registry_enrollment_new *n,
                                  json_t **view);

/* The enrollment id and its token, unsealed with seal_key, for the
 * DTLS-PSK handshake of EST over CoAP (identity = id, key = token).
 * token (REGISTRY_ENR_TOKEN_MAX bytes) receives the NUL-terminated token;
 * the caller wipes it (OPENSSL_cleanse) after use. AD_ENOTFOUND if there
 * is no such enrollment or it keeps no sealed token (created before
 * sealing, or without a seal key), AD_ECRYPTO if the sealed token does
 * not open or does not match the token's hash. On error *out and token
 * are zeroed. */
ad_err registry_enrollment_psk(store *st, const uint8_t *seal_key,
                               const char *id, registry_enrollment *out,
                               char token[REGISTRY_ENR_TOKEN_MAX]);

/* Changes enrollment id: max_uses (0: unchanged; not below its uses,
 * AD_EFIELD), expires_in (0: unchanged; from now), groups (NULL:
 * unchanged; each must exist, AD_EUNKGROUP), in one audited write
 * ("enrollment.update", the change as detail). *view (new reference) is
 * the public record after it; why says what was refused. */
ad_err registry_enrollment_update(store *st, const char *actor,
                                  const char *id, long long max_uses,
                                  long long expires_in, const json_t *groups,
                                  json_t **view, char *why, size_t whylen);

/* The public record of enrollment id (AD_ENOTFOUND), and pages of them. */
ad_err registry_enrollment_view_get(store *st, const char *id, json_t **view);
ad_err registry_enrollments_list(store *st, const registry_page *pg,
                                 registry_list *out);

/* Deletes enrollment id and its token: AD_ENOTFOUND if there is none.
 * Certificates issued under it stay valid. */
ad_err registry_enrollment_delete(store *st, const char *actor,
                                  const char *id);

#endif
