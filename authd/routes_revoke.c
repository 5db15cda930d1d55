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
#include "registry.h"
#include "revocation.h"
#include "routes.h"
#include "util.h"

/* ---- after a revocation commits ------------------------------------------ */

/* Caches, the CRL and the event stream follow the store's change feed
 * (see changes.c), here and on every other node; what is left to do after
 * a revocation commits is to count it. */
void routes_count_revocations(app *a, const json_t *revoked)
{
    size_t i, n = json_array_size(revoked);

    for (i = 0; i < n; i++)
        http_metric_inc(a, METRIC_REVOCATIONS);
}

/* ---- certificates -------------------------------------------------------- */

struct revoke_write {
    const char *actor;
    const char *serial;
    const char *device;
    const char *reason;
    json_t *revoked;
};

static ad_err cert_revoke_write(store_txn *tx, void *arg)
{
    struct revoke_write *w = arg;
    ad_err e;

    json_array_clear(w->revoked); /* a retried write starts afresh */
    e = registry_revoke_cert(tx, w->actor, w->serial, w->reason, w->revoked);
    if (e == AD_OK)
        e = registry_event_revoked(tx, w->revoked, NULL, w->reason);
    return e;
}

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
    struct revoke_write w;
    json_t *body = NULL, *rec = NULL;
    store_txn *tx = NULL;
    const char *reason;
    ad_err e;

    if (!util_serial_normalize(r->param[0], serial, sizeof(serial))) {
        http_reply_error(r, AD_ENOTFOUND, "not a certificate serial");
        return;
    }
    if ((reason = reason_of(r, &body)) == NULL)
        return;
    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.serial = serial;
    w.reason = reason;
    w.revoked = json_array();
    e = store_write(r->app->st, cert_revoke_write, &w);
    if (e != AD_OK) {
        http_reply_error(r, e,
                         e == AD_ENOTFOUND   ? "no such certificate"
                         : e == AD_ECONFLICT ? "the certificate is already revoked"
                                             : NULL);
        goto out;
    }
    routes_count_revocations(r->app, w.revoked);
    if (store_read_begin(r->app->st, &tx) == AD_OK &&
        store_get(tx, STORE_CERTS, serial, &rec) == AD_OK) {
        http_reply_json(r, 200, registry_cert_view(rec, time(NULL)));
    } else {
        http_reply_json(r, 200, json_pack("{s:s, s:s}", "serial", serial,
                                          "status", registry_cert_status_name(CERT_REVOKED)));
    }
    store_read_end(tx);
out:
    json_decref(rec);
    json_decref(w.revoked);
    json_decref(body);
}

/* ---- devices ------------------------------------------------------------- */

static ad_err device_revoke_write(store_txn *tx, void *arg)
{
    struct revoke_write *w = arg;
    json_t *dev = NULL;
    char now[32];
    ad_err e;

    json_array_clear(w->revoked); /* a retried write starts afresh */
    if ((e = store_get(tx, STORE_DEVICES, w->device, &dev)) != AD_OK)
        return e;
    util_time_rfc3339(time(NULL), now, sizeof(now));
    json_object_set_new(dev, "status", json_string(registry_device_status_name(
                                           DEVICE_REVOKED)));
    json_object_set_new(dev, "updated_at", json_string(now));
    e = store_put(tx, STORE_DEVICES, w->device, dev, 0);
    json_decref(dev);
    if (e == AD_OK)
        e = registry_revoke_device_certs(tx, w->actor, w->device, w->reason,
                                         w->revoked);
    if (e == AD_OK) {
        json_t *detail = json_pack("{s:s}", "reason", w->reason);
        e = store_audit(tx, w->actor, "device.revoke", w->device, detail);
        json_decref(detail);
    }
    if (e == AD_OK)
        e = registry_event_revoked(tx, w->revoked, w->device, w->reason);
    return e;
}

void route_device_revoke(http_req *r)
{
    struct revoke_write w;
    json_t *body = NULL, *serials, *v;
    const char *reason;
    size_t i;
    ad_err e;

    if ((reason = reason_of(r, &body)) == NULL)
        return;
    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.device = r->param[0];
    w.reason = reason;
    w.revoked = json_array();
    e = store_write(r->app->st, device_revoke_write, &w);
    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such device" : NULL);
        goto out;
    }
    /* Tokens need nothing more: every use checks the device's status. */
    routes_count_revocations(r->app, w.revoked);
    serials = json_array();
    json_array_foreach(w.revoked, i, v)
        json_array_append(serials, json_object_get(v, "serial"));
    http_reply_json(r, 200,
                    json_pack("{s:s, s:s, s:s, s:o}", "device_id", w.device,
                              "status", "revoked", "reason", reason,
                              "revoked_certs", serials));
out:
    json_decref(w.revoked);
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
