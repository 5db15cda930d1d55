/* Admin handlers for the registry (docs/api.md §7): devices, enrollments,
 * certificates, API keys and the audit log. Each parses its request,
 * calls the registry (which writes every change with its audit entry)
 * and answers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../common/codec.h"
#include "registry_devices.h"
#include "registry_enrollments.h"
#include "routes.h"
#include "tokens.h"
#include "util.h"

/* ---- shared helpers -------------------------------------------------- */

int routes_page(http_req *r, registry_page *pg)
{
    memset(pg, 0, sizeof(*pg));
    return http_paging(r, &pg->limit, &pg->after);
}

void routes_reply_list(http_req *r, ad_err e, registry_list *l)
{
    if (e != AD_OK) {
        http_reply_error(r, e, NULL);
        return;
    }
    http_reply_json(r, 200, json_pack("{s:o, s:o}", "items", l->items, "next",
                                      l->next));
}

/* Replies a view the registry read, or its error (ENOTFOUND with
 * missing). */
static void reply_view(http_req *r, ad_err e, json_t *view,
                       const char *missing)
{
    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? missing : NULL);
    else
        http_reply_json(r, 200, view);
}

/* ---- devices --------------------------------------------------------- */

/* Replaces each byte of s that does not begin a well-formed UTF-8
 * sequence with '?'. Messages quote input (a field's name, the JSON
 * parser's "near ..."), may cut it mid-character, and must still be
 * valid JSON text: jansson refuses to pack anything else. */
static void text_make_utf8(char *s)
{
    size_t n = strlen(s), i = 0, k;
    uint32_t cp;

    while (i < n) {
        k = codec_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (k == 0)
            s[i++] = '?';
        else
            i += k;
    }
}

/* The fields a new device may carry, in POST /v1/devices and in each
 * line of an import. Anything else is refused rather than dropped: a
 * misspelt "group" in a migrated fleet would otherwise vanish quietly. */
static const char *const device_fields[] = {"id", "groups", "policies",
                                            "attributes", "gateway", NULL};

/* Reads a new device from a request body (POST /v1/devices or a line of
 * an import) into *d, which borrows from body. Errors: AD_EDEVID,
 * AD_EFIELD, each with a message in why. */
static ad_err device_of_body(const json_t *body, registry_device_new *d,
                             char *why, size_t whylen)
{
    const char *k;
    json_t *v;
    size_t i;

    d->id = json_string_value(json_object_get(body, "id"));
    d->groups = json_object_get(body, "groups");
    d->policies = json_object_get(body, "policies");
    d->attributes = json_object_get(body, "attributes");
    d->gateway = NULL;
    if (!util_device_id_valid(d->id))
        return ad_errf(AD_EDEVID, why, whylen, "%s",
                       ad_err_message(AD_EDEVID));
    if ((v = json_object_get(body, "gateway")) != NULL && !json_is_null(v)) {
        if ((d->gateway = json_string_value(v)) == NULL)
            return ad_errf(AD_EFIELD, why, whylen,
                           "gateway must be a device id");
    }
    json_object_foreach((json_t *)body, k, v) {
        for (i = 0; device_fields[i] && strcmp(device_fields[i], k) != 0; i++)
            ;
        if (device_fields[i] == NULL) {
            ad_errf(AD_EFIELD, why, whylen,
                    "unknown field \"%.64s\": a device takes id, groups, "
                    "policies, attributes and gateway",
                    k);
            text_make_utf8(why);
            return AD_EFIELD;
        }
    }
    return AD_OK;
}

void route_device_create(http_req *r)
{
    registry_device_new d;
    json_t *body, *view = NULL;
    char msg[REGISTRY_WHY_MAX] = "";
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    e = device_of_body(body, &d, msg, sizeof(msg));
    if (e == AD_OK)
        e = registry_device_create(r->app->st, r->actor, &d, &view, msg,
                                   sizeof(msg));
    if (e != AD_OK)
        http_reply_error(r, e, msg[0] ? msg : NULL);
    else
        http_reply_json(r, 201, view);
    json_decref(body);
}

void route_device_list(http_req *r)
{
    registry_page pg;
    registry_list l;

    if (routes_page(r, &pg) != 0)
        return;
    pg.prefix = http_query(r, "prefix");
    routes_reply_list(r, registry_devices_list(r->app->st, &pg, &l), &l);
}

void route_device_get(http_req *r)
{
    json_t *view = NULL;
    ad_err e = registry_device_get(r->app->st, r->param[0], &view);

    reply_view(r, e, view, "no such device");
}

void route_device_patch(http_req *r)
{
    registry_device_patch p;
    json_t *body, *view = NULL, *v;
    char msg[REGISTRY_WHY_MAX] = "";
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    memset(&p, 0, sizeof(p));
    if ((v = json_object_get(body, "status")) != NULL) {
        p.set_status = 1;
        p.status = registry_device_status_parse(json_string_value(v));
    }
    p.groups = json_object_get(body, "groups");
    p.policies = json_object_get(body, "policies");
    p.attributes = json_object_get(body, "attributes");
    if ((v = json_object_get(body, "gateway")) != NULL) {
        p.set_gateway = 1;
        p.gateway = json_string_value(v);
        if (p.gateway == NULL && !json_is_null(v)) {
            http_reply_error(r, AD_EFIELD,
                             "gateway must be a device id, or null for none");
            goto out;
        }
    }
    e = registry_device_update(r->app->st, r->actor, r->param[0], &p, &view,
                               msg, sizeof(msg));
    if (e != AD_OK)
        http_reply_error(r, e, msg[0] ? msg
                               : e == AD_ENOTFOUND ? "no such device"
                                                   : NULL);
    else
        http_reply_json(r, 200, view);
out:
    json_decref(body);
}

void route_device_delete(http_req *r)
{
    size_t revoked = 0;
    ad_err e = registry_device_delete(r->app->st, r->actor, r->param[0],
                                      &revoked);

    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such device"
                               : e == AD_ECONFLICT
                                   ? "the device is the gateway of other "
                                     "devices: move or delete them first"
                                   : NULL);
        return;
    }
    routes_count_revocations(r->app, revoked);
    http_reply_empty(r, 204);
}

void route_device_children(http_req *r)
{
    registry_page pg;
    registry_list l;
    ad_err e;

    if (routes_page(r, &pg) != 0)
        return;
    e = registry_device_children(r->app->st, r->param[0], &pg, &l);
    if (e == AD_ENOTFOUND)
        http_reply_error(r, e, "no such device");
    else
        routes_reply_list(r, e, &l);
}

/* ---- devices: bulk import -------------------------------------------- */

enum {
    /* Lines per request: the answer holds one entry per failed line, so
     * this also bounds the answer. authctl sends 10000 at a time. */
    IMPORT_LINES_MAX = 100000,
    /* One line is one POST /v1/devices body, and has its limit. */
    IMPORT_LINE_MAX = HTTP_BODY_MAX,
    /* Devices per write: one transaction and one fsync for each
     * thousand, yet short enough that issuances queued behind it on the
     * single writer wait milliseconds, not seconds. */
    IMPORT_BATCH = 1000
};

/* The non-blank lines of an import waiting for their write, and their
 * line numbers (1-based, counting blank lines). */
struct import_batch {
    registry_import_item *items;
    size_t *line;
    size_t n;
};

/* Checks one line by the rules of POST /v1/devices and prepares it; or
 * sets it->e and it->why. */
static void import_prepare(registry_import_item *it, const char *p,
                           size_t len, time_t now)
{
    registry_device_new d;
    json_error_t jerr;
    json_t *obj = NULL;
    const char *id;

    if (len > IMPORT_LINE_MAX) {
        it->e = ad_errf(AD_ETOOBIG, it->why, sizeof(it->why),
                        "the line exceeds %d bytes", IMPORT_LINE_MAX);
        return;
    }
    obj = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL || !json_is_object(obj)) {
        it->e = ad_errf(AD_EJSON, it->why, sizeof(it->why), "%s",
                        obj ? "the line must be a JSON object" : jerr.text);
        text_make_utf8(it->why);
        goto out;
    }
    id = json_string_value(json_object_get(obj, "id"));
    if (util_device_id_valid(id))
        util_strlcpy(it->id, id, sizeof(it->id));
    it->e = device_of_body(obj, &d, it->why, sizeof(it->why));
    if (it->e == AD_OK)
        registry_import_prepare(it, &d, now);
out:
    json_decref(obj);
}

/* Writes the batch (unless an earlier batch failed: then its lines fail
 * the same way, unwritten), then moves each line's outcome into the
 * answer in line order and empties the batch. */
static void import_flush(http_req *r, struct import_batch *b, ad_err *fatal,
                         json_int_t *created, json_t *failed)
{
    size_t i;
    ad_err e = *fatal;

    if (e == AD_OK)
        e = registry_devices_import(r->app->st, r->actor, b->items, b->n);
    if (e != AD_OK) {
        /* Nothing of this batch persisted, whatever the write did. */
        for (i = 0; i < b->n; i++) {
            registry_import_item *it = &b->items[i];
            if (it->record == NULL)
                continue;
            it->e = e;
            snprintf(it->why, sizeof(it->why),
                     "not written: the store failed (%s)", ad_err_code(e));
        }
        *fatal = e;
    }
    for (i = 0; i < b->n; i++) {
        registry_import_item *it = &b->items[i];

        if (it->e == AD_OK) {
            (*created)++;
        } else {
            const char *why = it->e == AD_EEXISTS ? "the device already exists"
                              : it->why[0]        ? it->why
                                                  : ad_err_message(it->e);
            json_t *f = json_pack("{s:I, s:{s:s, s:s}}", "line",
                                  (json_int_t)b->line[i], "error", "code",
                                  ad_err_code(it->e), "message", why);
            /* A failed line never drops out of the answer: without its
             * message if need be. */
            if (f == NULL)
                f = json_pack("{s:I, s:{s:s, s:s}}", "line",
                              (json_int_t)b->line[i], "error", "code",
                              ad_err_code(it->e), "message",
                              ad_err_message(it->e));
            if (f && it->id[0])
                json_object_set_new(f, "id", json_string(it->id));
            json_array_append_new(failed, f);
        }
        registry_import_item_clear(it);
    }
    b->n = 0;
}

/* Whether the Content-Type header names media type want (any case,
 * parameters such as charset allowed). */
static int media_type_is(const char *ctype, const char *want)
{
    size_t n = strlen(want);

    if (ctype == NULL || strncasecmp(ctype, want, n) != 0)
        return 0;
    return ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ' ||
           ctype[n] == '\t';
}

static int line_is_blank(const char *p, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    return 1;
}

void route_device_import(http_req *r)
{
    const char *p = r->body, *end = r->body + r->body_len, *nl;
    struct import_batch b;
    json_t *failed = NULL;
    json_int_t created = 0;
    size_t lines = 0, line = 0;
    ad_err fatal = AD_OK;
    time_t now;
    char msg[96];

    memset(&b, 0, sizeof(b));
    if (!media_type_is(http_header(r, "Content-Type"),
                       "application/x-ndjson")) {
        http_reply_error(r, AD_EMEDIA,
                         "the body must be application/x-ndjson: one device "
                         "object per line");
        return;
    }
    /* Counted before anything is written: a request over the limit is
     * refused whole. */
    for (nl = p; nl < end && (nl = memchr(nl, '\n', (size_t)(end - nl)));
         nl++)
        lines++;
    if (r->body_len > 0 && end[-1] != '\n')
        lines++;
    if (lines > IMPORT_LINES_MAX) {
        snprintf(msg, sizeof(msg), "the body has more than %d lines",
                 IMPORT_LINES_MAX);
        http_reply_error(r, AD_ETOOBIG, msg);
        return;
    }
    failed = json_array();
    b.items = calloc(IMPORT_BATCH, sizeof(*b.items));
    b.line = calloc(IMPORT_BATCH, sizeof(*b.line));
    if (failed == NULL || b.items == NULL || b.line == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        goto out;
    }
    now = time(NULL);
    while (p < end) {
        size_t len;

        nl = memchr(p, '\n', (size_t)(end - p));
        len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        if (!line_is_blank(p, len)) {
            b.line[b.n] = line;
            import_prepare(&b.items[b.n++], p, len, now);
        }
        p += len + (nl != NULL);
        if (b.n == IMPORT_BATCH) {
            import_flush(r, &b, &fatal, &created, failed);
            now = time(NULL);
        }
    }
    import_flush(r, &b, &fatal, &created, failed);
    /* New devices need no cache invalidation (nothing caches an absent
     * device) and, as with POST /v1/devices, no event: brokers have
     * nothing of theirs to drop. */
    http_reply_json(r, 200,
                    json_pack("{s:I, s:O}", "created", created, "failed",
                              failed));
out:
    free(b.items);
    free(b.line);
    json_decref(failed);
}

/* ---- enrollments ----------------------------------------------------- */

/* Reads an optional positive integer field bounded by max. */
static int int_field(const json_t *body, const char *name, json_int_t def,
                     json_int_t max, json_int_t *out)
{
    const json_t *v = json_object_get(body, name);

    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > max)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

void route_enrollment_create(http_req *r)
{
    registry_enrollment_new n;
    json_t *body, *view = NULL;
    json_int_t max_uses, expires_in, cert_days;
    const char *name, *pattern;
    const json_t *groups, *gateway;
    char msg[160];
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    name = json_string_value(json_object_get(body, "name"));
    pattern = json_string_value(json_object_get(body, "id_pattern"));
    groups = json_object_get(body, "groups");
    if (json_object_get(body, "name") && (name == NULL || strlen(name) > 128)) {
        http_reply_error(r, AD_EFIELD, "name must be a string of 1..128 bytes");
        goto out;
    }
    if (pattern == NULL)
        pattern = "*";
    if (*pattern == '\0' || strlen(pattern) > 128 ||
        (json_object_get(body, "id_pattern") &&
         !json_is_string(json_object_get(body, "id_pattern")))) {
        http_reply_error(r, AD_EFIELD,
                         "id_pattern must be a glob of 1..128 bytes");
        goto out;
    }
    for (const char *p = pattern; *p; p++) {
        char c[2] = {*p, 0};
        if (*p != '*' && *p != '?' && !util_name_valid(c)) {
            http_reply_error(r, AD_EFIELD,
                             "id_pattern may hold only id characters, * and ?");
            goto out;
        }
    }
    if (groups && !registry_names_valid(groups)) {
        http_reply_error(r, AD_EFIELD, "groups must be an array of names");
        goto out;
    }
    gateway = json_object_get(body, "gateway");
    if (gateway && !json_is_null(gateway) &&
        !util_device_id_valid(json_string_value(gateway))) {
        http_reply_error(r, AD_EFIELD, "gateway must be a device id");
        goto out;
    }
    if (int_field(body, "max_uses", 1, 100000000, &max_uses) != 0 ||
        int_field(body, "expires_in", 86400, 10L * 365 * 86400, &expires_in) !=
            0 ||
        int_field(body, "cert_days", r->app->cfg.cert_days, 3650, &cert_days) !=
            0) {
        snprintf(msg, sizeof(msg),
                 "max_uses (1..1e8), expires_in (seconds, 1..10 years) and "
                 "cert_days (1..3650) must be positive integers");
        http_reply_error(r, AD_EFIELD, msg);
        goto out;
    }
    n.name = name;
    n.id_pattern = pattern;
    n.groups = groups;
    n.gateway = json_string_value(gateway);
    n.max_uses = max_uses;
    n.expires_in = expires_in;
    n.cert_days = cert_days;
    n.seal_key = tokens_seal_key(r->app->tokens);
    e = registry_enrollment_create(r->app->st, r->actor, &n, &view);
    if (e != AD_OK)
        http_reply_error(r, e, e == AD_EGATEWAY ? "the gateway is no device"
                                                : NULL);
    else
        http_reply_json(r, 201, view);
out:
    json_decref(body);
}

void route_enrollment_list(http_req *r)
{
    registry_page pg;
    registry_list l;

    if (routes_page(r, &pg) == 0)
        routes_reply_list(r, registry_enrollments_list(r->app->st, &pg, &l),
                          &l);
}

void route_enrollment_get(http_req *r)
{
    json_t *view = NULL;
    ad_err e = registry_enrollment_view_get(r->app->st, r->param[0], &view);

    reply_view(r, e, view, "not found");
}

void route_enrollment_update(http_req *r)
{
    json_t *body, *view = NULL, *v;
    json_int_t max_uses = 0, expires_in = 0;
    const json_t *groups;
    const char *k;
    char msg[200] = "";
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "max_uses") != 0 && strcmp(k, "expires_in") != 0 &&
            strcmp(k, "groups") != 0) {
            http_reply_error(r, AD_EFIELD, "only max_uses, expires_in and "
                                           "groups can be changed");
            goto out;
        }
    }
    groups = json_object_get(body, "groups");
    if (groups && !registry_names_valid(groups)) {
        http_reply_error(r, AD_EFIELD, "groups must be an array of names");
        goto out;
    }
    /* The same bounds as at creation. */
    if (int_field(body, "max_uses", 0, 100000000, &max_uses) != 0 ||
        int_field(body, "expires_in", 0, 10L * 365 * 86400, &expires_in) !=
            0) {
        http_reply_error(r, AD_EFIELD,
                         "max_uses (1..1e8) and expires_in (seconds, 1..10 "
                         "years) must be positive integers");
        goto out;
    }
    e = registry_enrollment_update(r->app->st, r->actor, r->param[0],
                                   max_uses, expires_in, groups, &view, msg,
                                   sizeof(msg));
    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such enrollment"
                               : msg[0]          ? msg
                                                 : NULL);
    else
        http_reply_json(r, 200, view);
out:
    json_decref(body);
}

void route_enrollment_delete(http_req *r)
{
    ad_err e = registry_enrollment_delete(r->app->st, r->actor, r->param[0]);

    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such enrollment" : NULL);
    else
        http_reply_empty(r, 204);
}

/* ---- certificates ---------------------------------------------------- */

void route_cert_list(http_req *r)
{
    const char *status = http_query(r, "status");
    registry_cert_filter f;
    registry_page pg;
    registry_list l;

    if (routes_page(r, &pg) != 0)
        return;
    f.device = http_query(r, "device");
    f.enrollment = http_query(r, "enrollment");
    f.status = status ? registry_cert_status_parse(status) : CERT_STATUS_BAD;
    if (status && f.status == CERT_STATUS_BAD) {
        http_reply_error(r, AD_EBADREQ,
                         "status must be valid, revoked or expired");
        return;
    }
    routes_reply_list(r, registry_certs_list(r->app->st, &f, &pg, &l), &l);
}

void route_cert_get(http_req *r)
{
    char serial[CA_SERIAL_HEX_MAX + 2];
    json_t *view = NULL;
    ad_err e;

    /* Any case, colons or leading zeros name the same serial. */
    if (!util_serial_normalize(r->param[0], serial, sizeof(serial))) {
        http_reply_error(r, AD_ENOTFOUND, "not a certificate serial");
        return;
    }
    r->param[0] = serial;
    e = registry_cert_get(r->app->st, serial, &view);
    reply_view(r, e, view, "not found");
}

/* ---- API keys -------------------------------------------------------- */

void route_apikey_create(http_req *r)
{
    json_t *body, *view = NULL;
    const char *name, *role;
    char msg[160] = "";
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    name = json_string_value(json_object_get(body, "name"));
    role = json_string_value(json_object_get(body, "role"));
    e = registry_apikey_create(r->app->st, r->actor, name, role, &view, msg,
                               sizeof(msg));
    if (e != AD_OK)
        http_reply_error(r, e, msg);
    else
        http_reply_json(r, 201, view);
    json_decref(body);
}

void route_apikey_list(http_req *r)
{
    registry_page pg;
    registry_list l;

    if (routes_page(r, &pg) == 0)
        routes_reply_list(r, registry_apikeys_list(r->app->st, &pg, &l), &l);
}

void route_apikey_delete(http_req *r)
{
    ad_err e = registry_apikey_delete(r->app->st, r->actor, r->param[0]);

    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such API key" : NULL);
    else
        http_reply_empty(r, 204);
}

/* ---- audit ----------------------------------------------------------- */

void route_audit_list(http_req *r)
{
    registry_page pg;
    registry_list l;
    registry_audit_filter f;
    const char *order = http_query(r, "order");
    char msg[96] = "";
    ad_err e;

    if (routes_page(r, &pg) != 0)
        return;
    memset(&f, 0, sizeof(f));
    if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
        http_reply_error(r, AD_EBADREQ, "order must be asc or desc");
        return;
    }
    f.desc = order && strcmp(order, "desc") == 0;
    f.action = http_query(r, "action");
    f.actor = http_query(r, "actor");
    f.target = http_query(r, "target");
    f.since = http_query(r, "since");
    f.until = http_query(r, "until");
    e = registry_audit_list(r->app->st, &pg, &f, &l, msg, sizeof(msg));
    if (e != AD_OK && msg[0])
        http_reply_error(r, e, msg);
    else
        routes_reply_list(r, e, &l);
}

void route_audit_verify(http_req *r)
{
    store_audit_check c;
    ad_err e = store_audit_verify(r->app->st, &c);

    if (e != AD_OK)
        http_reply_error(r, e, NULL);
    else if (c.ok)
        http_reply_json(r, 200, json_pack("{s:b, s:I, s:I, s:s}", "ok", 1,
                                          "entries", (json_int_t)c.entries,
                                          "unchained",
                                          (json_int_t)c.unchained, "head",
                                          c.head));
    else
        http_reply_json(r, 200, json_pack("{s:b, s:I}", "ok", 0, "first_bad",
                                          (json_int_t)c.first_bad));
}
