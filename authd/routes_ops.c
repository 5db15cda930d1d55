/* Health, readiness and metrics (docs/api.md §14). */
#include <stdlib.h>

#include "routes.h"

void route_healthz(http_req *r)
{
    http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
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

void route_metrics(http_req *r)
{
    size_t len = 0;
    char *text = http_metrics_text(r->app, &len);

    if (text == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    http_reply_bytes(r, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                     len);
    free(text);
}
