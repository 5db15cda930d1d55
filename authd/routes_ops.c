/* Health, readiness, metrics (docs/api.md §14) and the OpenAPI document. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "openapi.h"
#include "routes.h"

void route_healthz(http_req *r)
{
    http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void route_openapi(http_req *r)
{
    size_t len;
    const char *doc = openapi_json(&len);

    http_reply_bytes(r, 200, "application/json", doc, len);
}

void route_readyz(http_req *r)
{
    app *a = r->app;

    if (!atomic_load(&a->ready) || a->st == NULL || a->ca == NULL) {
        http_reply_error(r, AD_ENOTREADY, NULL);
        return;
    }
    /* A shared database that does not answer, or a change feed that is
     * down (this node could miss another's revocation): not ready. */
    if (!store_ready(a->st)) {
        http_reply_error(r, AD_ENOTREADY, "the store is unreachable");
        return;
    }
    http_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

/* With metrics_token set, /metrics answers only "Authorization: Bearer
 * <metrics_token>". Both sides are hashed first, so that the comparison
 * takes the same time whatever was sent, its length included. */
static int metrics_authorized(http_req *r)
{
    const char *want = r->app->cfg.metrics_token;
    const char *h;
    unsigned char got_md[SHA256_DIGEST_LENGTH], want_md[SHA256_DIGEST_LENGTH];

    if (want[0] == '\0')
        return 1;
    h = http_header(r, "Authorization");
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) {
        r->www_authenticate = "Bearer";
        http_reply_error(r, AD_EUNAUTH, "/metrics needs the metrics token");
        return 0;
    }
    h += 7;
    while (*h == ' ')
        h++;
    SHA256((const unsigned char *)h, strlen(h), got_md);
    SHA256((const unsigned char *)want, strlen(want), want_md);
    if (CRYPTO_memcmp(got_md, want_md, sizeof(got_md)) != 0) {
        r->www_authenticate = "Bearer error=\"invalid_token\"";
        http_reply_error(r, AD_EBADCRED, "not the metrics token");
        return 0;
    }
    return 1;
}

void route_metrics(http_req *r)
{
    size_t len = 0;
    char *text;

    if (!metrics_authorized(r))
        return;
    text = http_metrics_text(r->app, &len);

    if (text == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    http_reply_bytes(r, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                     len);
    free(text);
}
