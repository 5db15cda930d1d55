/* Token endpoints (docs/api.md §9): minting for devices (mTLS or device
 * secret), the JWKS, RFC 7662 introspection, jti revocation, signing-key
 * rotation, and device secrets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "../common/codec.h"
#include "checker.h"
#include "registry_devices.h"
#include "routes.h"
#include "tokens.h"
#include "util.h"

/* argon2id at OWASP's minimum (19 MiB, 2 passes): tens of ms per check,
 * which the checker pays once per secret thanks to its MAC cache. */
#define ARGON2_T 2
#define ARGON2_M_KIB 19456
#define ARGON2_P 1
#define SECRET_BYTES 32

/* One string field of the body's parameters (a copy), or NULL. */
static char *param_copy(const json_t *params, const char *name)
{
    const char *v = json_string_value(json_object_get(params, name));

    return v ? strdup(v) : NULL;
}

/* Device id and secret from "Authorization: Basic ..."; 0 if absent. */
static int basic_credentials(http_req *r, char *id, size_t idlen,
                             char *secret, size_t secretlen)
{
    const char *auth = http_header(r, "Authorization");
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    char *colon;
    int ok = 0;

    if (auth == NULL || strncasecmp(auth, "Basic ", 6) != 0)
        return 0;
    /* At most 511 bytes, with room for a NUL after them. */
    if (codec_b64_decode_alloc(auth + 6, strlen(auth + 6), 512, &raw,
                               &rawlen, 0) != 0 ||
        rawlen >= 512 || memchr(raw, '\0', rawlen) != NULL)
        goto out;
    raw[rawlen] = '\0';
    colon = strchr((char *)raw, ':');
    if (colon == NULL)
        goto out;
    *colon = '\0';
    ok = util_strlcpy(id, (char *)raw, idlen) &&
         util_strlcpy(secret, colon + 1, secretlen);
out:
    if (raw)
        OPENSSL_cleanse(raw, rawlen);
    free(raw);
    return ok;
}

int routes_cert_device(http_req *r, int64_t now, registry_cert_owner *owner)
{
    ad_err e = registry_device_by_cert(r->app->st, r->client_cert,
                                       r->client_cert_len, (time_t)now, owner);

    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_EBADCRED ? REGISTRY_CERT_REFUSED : NULL);
        return 0;
    }
    return 1;
}

void route_token(http_req *r)
{
    app *a = r->app;
    char id[CHECK_ID_MAX] = "", secret[256] = "", why[160] = "";
    char incarnation[REGISTRY_INCARNATION_MAX] = "";
    char *grant = NULL, *scope = NULL, *granted = NULL, *jwt = NULL;
    json_t *params = NULL;
    uint8_t cnf[32];
    const uint8_t *cnfp = NULL;
    registry_cert_owner owner;
    json_t *acl = NULL;
    int64_t exp = 0, now = (int64_t)time(NULL);
    ad_err e;

    if (r->listener == LISTEN_HTTPS && http_client_cert(r)) {
        if (!routes_cert_device(r, now, &owner))
            goto out;
        util_strlcpy(id, owner.device_id, sizeof(id));
        /* RFC 8705 binding: x5t#S256 of the presented certificate. */
        SHA256(r->client_cert, r->client_cert_len, cnf);
        cnfp = cnf;
    } else if (basic_credentials(r, id, sizeof(id), secret, sizeof(secret))) {
        const char *why_not = "invalid_credential";

        if (!util_device_id_valid(id) ||
            !checker_device_secret_ok(a->checker, id, secret,
                                      routes_argon2(r), &why_not)) {
            if (strcmp(why_not, "deferred") == 0) {
                http_defer(r);
            } else if (strcmp(why_not, "rate_limited") == 0) {
                /* Too many wrong secrets for this device, or no argon2id
                 * worker free: come back later (RFC 6585), in the OAuth
                 * error form this endpoint speaks. */
                http_reply_json(r, 429,
                                json_pack("{s:s, s:s}", "error",
                                          "rate_limited", "error_description",
                                          "too many secret checks for this "
                                          "device or server; retry later"));
                r->error = AD_ERATE;
                r->retry_after = 1;
            } else {
                r->www_authenticate = "Basic realm=\"authd\"";
                http_reply_error(r, AD_EBADCRED,
                                 "the device id or secret is not valid");
            }
            goto out;
        }
    } else {
        r->www_authenticate = "Basic realm=\"authd\"";
        http_reply_error(r, r->listener == LISTEN_HTTPS ? AD_EUNAUTH
                                                        : AD_ECLIENTCERT,
                         "a device client certificate (HTTPS) or HTTP Basic "
                         "device-id:secret is required");
        goto out;
    }
    snprintf(r->actor, sizeof(r->actor), "device:%s", id);
    if ((params = http_body_params(r)) == NULL)
        goto out;
    grant = param_copy(params, "grant_type");
    if (grant == NULL || strcmp(grant, "client_credentials") != 0) {
        http_reply_error(r, AD_EFIELD,
                         "grant_type must be client_credentials");
        goto out;
    }
    scope = param_copy(params, "scope");
    e = checker_grant_scope(a->checker, id, scope, &granted, &acl,
                            incarnation, why, sizeof(why));
    if (e != AD_OK) {
        http_reply_error(r, e, why);
        goto out;
    }
    e = tokens_mint(a->tokens, id, incarnation, granted, cnfp, acl, now, &jwt,
                    &exp);
    if (e != AD_OK) {
        /* Minting applies the bound verification applies: a token too
         * large to verify is refused here, never minted unusable. */
        http_reply_error(r, e,
                         e == AD_EFIELD ? "the token would exceed 32 KiB: "
                                          "ask for a narrower scope"
                                        : NULL);
        goto out;
    }
    http_metric_inc(a, METRIC_TOKENS_ISSUED);
    http_reply_json(r, 200,
                    json_pack("{s:s, s:s, s:I, s:s}", "access_token", jwt,
                              "token_type", "Bearer", "expires_in",
                              (json_int_t)(exp - now), "scope", granted));
out:
    OPENSSL_cleanse(secret, sizeof(secret));
    free(jwt);
    free(grant);
    free(scope);
    free(granted);
    json_decref(params);
    json_decref(acl);
}

void route_jwks(http_req *r)
{
    http_reply_json(r, 200, tokens_jwks(r->app->tokens));
}

void route_introspect(http_req *r)
{
    json_t *params = http_body_params(r), *out;
    token_entry *te = NULL;
    char why[128], *token;

    if (params == NULL)
        return; /* answered already */
    token = param_copy(params, "token");
    json_decref(params);
    if (token == NULL || *token == '\0') {
        free(token);
        http_reply_error(r, AD_EFIELD, "token is required (form or JSON)");
        return;
    }
    /* Inactive for any reason, without saying which (RFC 7662 §2.2). */
    if (tokens_validate(r->app->tokens, token, (int64_t)time(NULL), &te, why,
                        sizeof(why)) != AD_OK ||
        !checker_token_active(r->app->checker, te, time(NULL))) {
        http_reply_json(r, 200, json_pack("{s:b}", "active", 0));
    } else {
        out = json_pack("{s:b, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "active",
                        1, "sub", te->sub, "scope", te->scope, "exp",
                        (json_int_t)te->exp, "iat", (json_int_t)te->iat, "jti",
                        te->jti, "client_id", te->sub, "token_type",
                        "Bearer");
        if (json_object_get(te->claims, "cnf"))
            json_object_set(out, "cnf", json_object_get(te->claims, "cnf"));
        json_object_set(out, "iss", json_object_get(te->claims, "iss"));
        json_object_set(out, "aud", json_object_get(te->claims, "aud"));
        http_reply_json(r, 200, out);
    }
    token_release(te);
    free(token);
}

void route_token_revoke(http_req *r)
{
    json_t *body, *sub;
    const char *jti;
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    jti = json_string_value(json_object_get(body, "jti"));
    /* Optional: the token's device, recorded so that its gateway's
     * bundle carries the jti (found in the token cache if not given). */
    sub = json_object_get(body, "sub");
    if (jti == NULL || *jti == '\0' || strlen(jti) >= 64) {
        http_reply_error(r, AD_EFIELD, "jti (string, < 64 bytes) is required");
    } else if (sub != NULL && !util_device_id_valid(json_string_value(sub))) {
        http_reply_error(r, AD_EFIELD, "sub, if given, is a device id");
    } else if ((e = tokens_revoke_sub(r->app->tokens, r->actor, jti,
                                      json_string_value(sub))) != AD_OK) {
        http_reply_error(r, e, NULL);
    } else {
        http_reply_json(r, 200, json_pack("{s:s, s:b}", "jti", jti, "revoked", 1));
    }
    json_decref(body);
}

void route_token_key_rotate(http_req *r)
{
    char kid[TOK_KID_MAX], why[160] = "";
    ad_err e = tokens_rotate(r->app->tokens, r->actor, kid, why, sizeof(why));

    if (e != AD_OK) {
        http_reply_error(r, e, why);
        return;
    }
    http_reply_json(r, 201, json_pack("{s:s}", "kid", kid));
}

/* ---- device secrets ------------------------------------------------------ */

void route_device_secret(http_req *r)
{
    char secret[80], hash[256];
    uint8_t salt[16];
    ad_err e;

    if (util_random_token("", SECRET_BYTES, secret, sizeof(secret)) != AD_OK) {
        http_reply_error(r, AD_EINTERNAL, NULL);
        return;
    }
    if (util_random_bytes(salt, sizeof(salt)) != 0 ||
        argon2id_hash_encoded(ARGON2_T, ARGON2_M_KIB, ARGON2_P, secret,
                              strlen(secret), salt, sizeof(salt), 32, hash,
                              sizeof(hash)) != ARGON2_OK) {
        OPENSSL_cleanse(secret, sizeof(secret));
        http_reply_error(r, AD_ECRYPTO, "cannot hash the secret");
        return;
    }
    e = registry_device_secret_set(r->app->st, r->actor, r->param[0], hash);
    if (e == AD_OK) {
        /* The old secret stops working with the next check: the change
         * feed has dropped the cached device before the registry returned. */
        http_reply_json(r, 201, json_pack("{s:s, s:s}", "device_id",
                                          r->param[0], "secret", secret));
    } else {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such device" : NULL);
    }
    OPENSSL_cleanse(secret, sizeof(secret));
}
