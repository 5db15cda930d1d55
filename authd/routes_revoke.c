/* Revocation (docs/api.md §12) and the event stream brokers listen to (§8):
 * revoke one certificate or a whole device, then make it bite at once —
 * cached identities dropped, the CRL rebuilt, an event published. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../ca/ca.h"
#include "../common/codec.h"
#include "checker.h"
#include "events.h"
#include "registry_devices.h"
#include "revocation.h"
#include "routes.h"
#include "util.h"

/* ---- after a revocation commits ------------------------------------------ */

/* Caches, the CRL and the event stream follow the store's change feed
 * (see changes.c), here and on every other node; what is left to do after
 * a revocation commits is to count it. */
void routes_count_revocations(app *a, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        http_metric_inc(a, METRIC_REVOCATIONS);
}

/* ---- certificates -------------------------------------------------------- */

/* The reason from the body: an RFC 5280 name, default "unspecified". On
 * error replies and returns NULL. */
static const char *reason_of(http_req *r, json_t **body)
{
    const char *reason;
    ca_reason code;
    json_t *jr;

    *body = NULL;
    if (r->body_len == 0)
        return "unspecified";
    if ((*body = http_body_object(r)) == NULL)
        return NULL;
    jr = json_object_get(*body, "reason");
    if (jr == NULL || json_is_null(jr))
        return "unspecified";
    reason = json_string_value(jr);
    if (reason == NULL || ca_reason_from_name(reason, &code) != AD_OK ||
        code == CA_REASON_REMOVE_FROM_CRL) {
        http_reply_error(r, AD_EFIELD,
                         "reason must be an RFC 5280 reason name: unspecified, "
                         "keyCompromise, cACompromise, affiliationChanged, "
                         "superseded, cessationOfOperation, certificateHold, "
                         "privilegeWithdrawn, aACompromise");
        json_decref(*body);
        *body = NULL;
        return NULL;
    }
    return reason;
}

void route_cert_revoke(http_req *r)
{
    char serial[CA_SERIAL_HEX_MAX + 2];
    json_t *body = NULL, *view = NULL;
    const char *reason;
    ad_err e;

    if (!util_serial_normalize(r->param[0], serial, sizeof(serial))) {
        http_reply_error(r, AD_ENOTFOUND, "not a certificate serial");
        return;
    }
    if ((reason = reason_of(r, &body)) == NULL)
        return;
    e = registry_cert_revoke(r->app->st, r->actor, serial, reason, &view);
    if (e != AD_OK) {
        http_reply_error(r, e,
                         e == AD_ENOTFOUND   ? "no such certificate"
                         : e == AD_ECONFLICT ? "the certificate is already revoked"
                                             : NULL);
    } else {
        routes_count_revocations(r->app, 1);
        http_reply_json(r, 200, view);
    }
    json_decref(body);
}

/* ---- devices ------------------------------------------------------------- */

void route_device_revoke(http_req *r)
{
    json_t *body = NULL, *serials = NULL;
    const char *reason;
    ad_err e;

    if ((reason = reason_of(r, &body)) == NULL)
        return;
    e = registry_device_revoke(r->app->st, r->actor, r->param[0], reason,
                               &serials);
    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such device" : NULL);
        goto out;
    }
    /* Tokens need nothing more: every use checks the device's status. */
    routes_count_revocations(r->app, json_array_size(serials));
    http_reply_json(r, 200,
                    json_pack("{s:s, s:s, s:s, s:o}", "device_id", r->param[0],
                              "status", "revoked", "reason", reason,
                              "revoked_certs", serials));
out:
    json_decref(body);
}

/* ---- the event stream ---------------------------------------------------- */

struct sse {
    events_sub *sub;
    _Atomic(http_stream *) stream;
};

static void sse_wake(void *arg)
{
    struct sse *x = arg;
    http_stream *s = atomic_load(&x->stream);

    /* Before the stream exists the first read will find the event. */
    if (s)
        http_stream_wake(s);
}

static ssize_t sse_read(void *arg, char *buf, size_t max)
{
    return events_read(((struct sse *)arg)->sub, buf, max);
}

static void sse_release(void *arg)
{
    struct sse *x = arg;

    events_unsubscribe(x->sub);
    free(x);
}

void route_events(http_req *r)
{
    const char *last = http_header(r, "Last-Event-ID");
    uint64_t last_id = 0;
    http_stream *stream = NULL;
    struct sse *x;

    if (last == NULL)
        last = http_query(r, "last_event_id");
    if (last && *last && codec_parse_u64(last, UINT64_MAX - 1, &last_id) != 0) {
        http_reply_error(r, AD_EBADREQ, "Last-Event-ID must be an event id");
        return;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    atomic_init(&x->stream, NULL);
    x->sub = events_subscribe(r->app->events, last_id, sse_wake, x);
    if (x->sub == NULL) {
        free(x);
        http_reply_error(r, AD_ENOTREADY, "the daemon is stopping");
        return;
    }
    http_reply_stream(r, "text/event-stream", sse_read, x, sse_release,
                      &stream);
    if (stream != NULL) /* else x was released already */
        atomic_store(&x->stream, stream);
}

/* ---- CRL and OCSP ---------------------------------------------------------- */

void route_crl_der(http_req *r)
{
    uint8_t *der = NULL;
    size_t len = 0;

    if (revocation_crl_der(r->app->revocation, &der, &len) != AD_OK) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    http_reply_bytes(r, 200, "application/pkix-crl", der, len);
    free(der);
}

void route_crl_pem(http_req *r)
{
    char *pem = NULL;

    if (revocation_crl_pem(r->app->revocation, &pem) != AD_OK) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    http_reply_bytes(r, 200, "application/x-pem-file", pem, strlen(pem));
    free(pem);
}

static void ocsp_answer(http_req *r, const uint8_t *req, size_t len)
{
    uint8_t *resp = NULL;
    size_t resp_len = 0;

    revocation_ocsp(r->app->revocation, req, len, &resp, &resp_len);
    if (resp == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    /* OCSP errors travel inside a 200 OCSPResponse (RFC 6960 A.1). */
    http_reply_bytes(r, 200, "application/ocsp-response", resp, resp_len);
    free(resp);
}

void route_ocsp_post(http_req *r)
{
    ocsp_answer(r, (const uint8_t *)r->body, r->body_len);
}

void route_ocsp_get(http_req *r)
{
    uint8_t *der = NULL;
    size_t len = 0;

    /* The path is the URL-decoded base64 DER request (RFC 6960 A.1). */
    if (codec_b64_decode_alloc(r->param[0], strlen(r->param[0]), SIZE_MAX,
                               &der, &len, 0) != 0)
        ocsp_answer(r, (const uint8_t *)"", 0);
    else
        ocsp_answer(r, der, len);
    free(der);
}
