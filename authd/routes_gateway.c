/* GET /v1/gateway/bundle (docs/gateway-bundles.md): a gateway fetches its
 * offline bundle with its client certificate or its own access token. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "checker.h"
#include "gwbundle.h"
#include "registry.h"
#include "routes.h"
#include "tokens.h"
#include "util.h"

/* Bundles built at once: a build reads every child, so a few gateways
 * asking together must not take every worker. The excess gets 429. */
enum { BUILDS_AT_ONCE = 2 };

/* The device calling, from its token or its certificate, into id; or an
 * error answered already (0). */
static int caller_device(http_req *r, int64_t now, char id[CHECK_ID_MAX])
{
    app *a = r->app;
    const char *auth = http_header(r, "Authorization");
    token_entry *te = NULL;
    registry_cert_owner owner;
    uint8_t fpr[SHA256_DIGEST_LENGTH];
    char why[128] = "";
    int have_cert = r->listener == LISTEN_HTTPS && http_client_cert(r);
    int ok = 0;

    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
        if (tokens_validate(a->tokens, auth + 7, now, &te, why, sizeof(why)) !=
                AD_OK ||
            !checker_token_active(a->checker, te, (time_t)now)) {
            r->www_authenticate = "Bearer error=\"invalid_token\"";
            http_reply_error(r, AD_EBADCRED,
                             "the access token is not valid or not active");
            goto out;
        }
        /* A certificate-bound token (RFC 8705) proves nothing without its
         * certificate: it is accepted only with that very certificate. */
        if (te->has_cnf) {
            if (have_cert)
                SHA256(r->client_cert, r->client_cert_len, fpr);
            if (!have_cert || CRYPTO_memcmp(fpr, te->cnf, sizeof(fpr)) != 0) {
                r->www_authenticate = "Bearer error=\"invalid_token\"";
                http_reply_error(r, AD_EBADCRED,
                                 "this token is bound to a certificate: "
                                 "present it (HTTPS client certificate)");
                goto out;
            }
        }
        util_strlcpy(id, te->sub, CHECK_ID_MAX);
    } else if (have_cert) {
        if (!routes_cert_device(r, now, &owner))
            goto out;
        util_strlcpy(id, owner.device_id, CHECK_ID_MAX);
    } else {
        r->www_authenticate = "Bearer";
        http_reply_error(r, r->listener == LISTEN_HTTPS ? AD_EUNAUTH
                                                        : AD_ECLIENTCERT,
                         "the gateway's client certificate (HTTPS) or its "
                         "access token (Bearer) is required");
        goto out;
    }
    ok = 1;
out:
    token_release(te);
    return ok;
}

void route_gateway_bundle(http_req *r)
{
    app *a = r->app;
    char id[CHECK_ID_MAX] = "", why[200] = "";
    int64_t now = (int64_t)time(NULL), exp = 0;
    char *jws = NULL;
    json_t *body;
    ad_err e;

    if (!caller_device(r, now, id))
        return;
    snprintf(r->actor, sizeof(r->actor), "device:%s", id);
    if (atomic_fetch_add(&a->bundle_builds, 1) >= BUILDS_AT_ONCE) {
        atomic_fetch_sub(&a->bundle_builds, 1);
        r->retry_after = 1;
        http_reply_error(r, AD_ERATE, "other bundles are being built; retry");
        return;
    }
    e = gwbundle_build(a, id, now, &jws, &exp, why, sizeof(why));
    atomic_fetch_sub(&a->bundle_builds, 1);
    if (e != AD_OK) {
        http_reply_error(r, e, why[0] ? why : NULL);
        return;
    }
    body = json_pack("{s:s, s:I}", "bundle", jws, "exp", (json_int_t)exp);
    free(jws);
    if (body == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    http_reply_json(r, 200, body);
}
