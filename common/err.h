/* One error table for the whole project: every failure a library or the
 * daemon can report, its snake_case code for JSON bodies, and the HTTP
 * status the daemon answers with. Libraries return these codes; only the
 * daemon knows what an HTTP status is for, but keeping the mapping beside
 * the code means there is exactly one place to add an error. */
#ifndef AUTHD_ERR_H
#define AUTHD_ERR_H

/* X(ENUM, "code", http_status, "default human message") */
#define AD_ERR_MAP(X)                                                        \
    X(AD_OK, "ok", 200, "ok")                                                \
    X(AD_EBADREQ, "bad_request", 400, "the request is malformed")            \
    X(AD_EJSON, "invalid_json", 400, "the body is not valid JSON")           \
    X(AD_EFIELD, "invalid_field", 400, "a field is missing or has the wrong type") \
    X(AD_ECSR, "invalid_csr", 400, "the CSR cannot be parsed")               \
    X(AD_ECSRSIG, "bad_csr_signature", 400, "the CSR signature does not verify") \
    X(AD_EWEAKKEY, "weak_key", 400, "the key type or size is not accepted")  \
    X(AD_EDEVID, "invalid_device_id", 400, "device ids are 1-128 bytes of [A-Za-z0-9._:-]") \
    X(AD_EGATEWAY, "unknown_gateway", 400, "the gateway must be an existing device other than the device itself") \
    X(AD_EUNKPOLICY, "unknown_policy", 400, "a named policy does not exist") \
    X(AD_EUNKGROUP, "unknown_group", 400, "a named group does not exist")   \
    X(AD_EPATTERN, "id_not_allowed", 403, "the device id does not match the enrollment's id_pattern") \
    X(AD_EUNAUTH, "unauthorized", 401, "a credential is required")          \
    X(AD_EBADCRED, "invalid_credential", 401, "the credential is not valid") \
    X(AD_ECLIENTCERT, "client_certificate_required", 401, "this endpoint needs a client certificate over HTTPS") \
    X(AD_EFORBIDDEN, "forbidden", 403, "this credential may not call this endpoint") \
    X(AD_EENREXPIRED, "enrollment_expired", 403, "the enrollment has expired") \
    X(AD_EENRUSED, "enrollment_used_up", 403, "the enrollment has no uses left") \
    X(AD_ESUSPENDED, "device_suspended", 403, "the device is suspended")     \
    X(AD_EREVOKED, "device_revoked", 403, "the device is revoked")           \
    X(AD_ESUBJECT, "subject_mismatch", 403, "the CSR subject does not match the certificate") \
    X(AD_ENOTFOUND, "not_found", 404, "no such resource")                    \
    X(AD_EMETHOD, "method_not_allowed", 405, "method not allowed on this path") \
    X(AD_EEXISTS, "already_exists", 409, "the resource already exists")      \
    X(AD_ECONFLICT, "conflict", 409, "the request conflicts with the current state") \
    X(AD_EINUSE, "in_use", 409, "the resource is still referenced (delete with ?force=true)") \
    X(AD_ETOOBIG, "payload_too_large", 413, "the body exceeds 64 KiB")       \
    X(AD_EMEDIA, "unsupported_media_type", 415, "unsupported content type") \
    X(AD_ERATE, "rate_limited", 429, "too many requests")                    \
    X(AD_EINTERNAL, "internal_error", 500, "internal error")                 \
    X(AD_ENOMEM, "out_of_memory", 500, "out of memory")                      \
    X(AD_ESTORE, "store_error", 500, "the store failed")                     \
    X(AD_ECRYPTO, "crypto_error", 500, "a cryptographic operation failed")   \
    X(AD_ENOTREADY, "not_ready", 503, "the service is not ready")           \
    X(AD_EUNAVAIL, "store_unavailable", 503,                                 \
      "the database is unreachable; nothing was changed, try again")

typedef enum {
#define AD_ERR_ENUM(e, code, status, msg) e,
    AD_ERR_MAP(AD_ERR_ENUM)
#undef AD_ERR_ENUM
    AD_ERR__COUNT
} ad_err;

/* The snake_case code of an error ("internal_error" for unknown values). */
const char *ad_err_code(ad_err e);
/* The HTTP status the daemon answers an error with. */
unsigned ad_err_status(ad_err e);
/* The default human message of an error. */
const char *ad_err_message(ad_err e);

/* Copies a formatted detail message into err (if err is non-NULL and
 * errlen > 0) and returns e, so that callers can write
 * `return ad_errf(AD_ECSR, err, errlen, "...")`. */
ad_err ad_errf(ad_err e, char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
