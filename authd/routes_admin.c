/* Admin handlers for the registry (docs/api.md §7): devices, enrollments,
 * certificates, API keys and the audit log. Every change is one durable
 * store_write that also appends its audit entry. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../common/codec.h"
#include "checker.h"
#include "registry.h"
#include "routes.h"
#include "util.h"

enum { LIST_MAX_ITEMS = 64, ATTR_MAX = 64, ATTR_VALUE_MAX = 256 };

/* ---- shared helpers -------------------------------------------------- */

/* Replies {"items": items, "next": cursor-or-null}. Steals items. */
static void reply_page(http_req *r, json_t *items, int more,
                       const char *cursor_field)
{
    json_t *next = json_null();
    size_t n = json_array_size(items);

    if (more && n > 0) {
        json_t *last = json_array_get(items, n - 1);
        json_t *c = json_is_string(last) ? last
                                         : json_object_get(last, cursor_field);
        if (json_is_integer(c)) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(c));
            next = json_string(buf);
        } else if (json_is_string(c)) {
            next = json_copy(c);
        }
    }
    http_reply_json(r, 200, json_pack("{s:o, s:o}", "items", items, "next", next));
}

void routes_list_table(http_req *r, store_table t, const char *prefix,
                       json_t *(*view)(const json_t *rec),
                       const char *cursor_field)
{
    const char *after;
    store_txn *tx = NULL;
    json_t *items = NULL, *views, *v;
    size_t limit, i;
    int more = 0;
    ad_err e;

    if (http_paging(r, &limit, &after) != 0)
        return;
    e = store_read_begin(r->app->st, &tx);
    if (e == AD_OK)
        e = store_list(tx, t, prefix ? prefix : "", after, limit, &items,
                       &more);
    store_read_end(tx);
    if (e != AD_OK) {
        http_reply_error(r, e, NULL);
        return;
    }
    if (view) {
        views = json_array();
        json_array_foreach(items, i, v)
            json_array_append_new(views, view(v));
        json_decref(items);
        items = views;
    }
    reply_page(r, items, more, cursor_field);
}

/* Validates a JSON array of names (groups, policies). */
static int names_ok(const json_t *arr)
{
    size_t i;
    json_t *v;

    if (!json_is_array(arr) || json_array_size(arr) > LIST_MAX_ITEMS)
        return 0;
    json_array_foreach(arr, i, v)
        if (!util_name_valid(json_string_value(v)))
            return 0;
    return 1;
}

/* Attributes: an object of up to ATTR_MAX string values. */
static int attributes_ok(const json_t *obj)
{
    const char *k;
    json_t *v;

    if (!json_is_object(obj) || json_object_size(obj) > ATTR_MAX)
        return 0;
    json_object_foreach((json_t *)obj, k, v) {
        if (!util_name_valid(k) || !json_is_string(v) ||
            json_string_length(v) > ATTR_VALUE_MAX)
            return 0;
    }
    return 1;
}

static void now_text(char *buf, size_t len)
{
    util_time_rfc3339(time(NULL), buf, len);
}

/* A read of one record by key into a reply or an error. */
static json_t *get_record(http_req *r, store_table t, const char *key)
{
    store_txn *tx = NULL;
    json_t *rec = NULL;
    ad_err e;

    e = store_read_begin(r->app->st, &tx);
    if (e == AD_OK)
        e = store_get(tx, t, key, &rec);
    store_read_end(tx);
    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "not found" : NULL);
        return NULL;
    }
    return rec;
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
                                            "attributes", NULL};

/* The one set of rules for a new device, whether it comes from POST
 * /v1/devices or from a line of POST /v1/devices:import: checks body and
 * builds the record to store (status active, timestamps now, a new
 * incarnation) into *out, a new reference. Errors: AD_EDEVID, AD_EFIELD
 * (with a message in err), AD_ENOMEM; *out is then NULL. */
static ad_err device_new_record(const json_t *body, const char *now,
                                json_t **out, char *err, size_t errlen)
{
    json_t *groups, *policies, *attrs, *rec, *v;
    const char *id, *k;
    size_t i;

    *out = NULL;
    id = json_string_value(json_object_get(body, "id"));
    groups = json_object_get(body, "groups");
    policies = json_object_get(body, "policies");
    attrs = json_object_get(body, "attributes");
    if (!util_device_id_valid(id))
        return ad_errf(AD_EDEVID, err, errlen, "%s",
                       ad_err_message(AD_EDEVID));
    json_object_foreach((json_t *)body, k, v) {
        for (i = 0; device_fields[i] && strcmp(device_fields[i], k) != 0; i++)
            ;
        if (device_fields[i] == NULL) {
            ad_errf(AD_EFIELD, err, errlen,
                    "unknown field \"%.64s\": a device takes id, groups, "
                    "policies and attributes",
                    k);
            text_make_utf8(err);
            return AD_EFIELD;
        }
    }
    if ((groups && !names_ok(groups)) || (policies && !names_ok(policies)) ||
        (attrs && !attributes_ok(attrs)))
        return ad_errf(AD_EFIELD, err, errlen,
                       "groups and policies are arrays of names; "
                       "attributes is an object of strings");
    /* "o" steals: hand over a new reference either way. */
    rec = json_pack("{s:s, s:s, s:o, s:o, s:o, s:s, s:s}", "id", id, "status",
                    registry_device_status_name(DEVICE_ACTIVE), "groups",
                    groups ? json_incref(groups) : json_array(), "policies",
                    policies ? json_incref(policies) : json_array(),
                    "attributes", attrs ? json_incref(attrs) : json_object(),
                    "created_at", now, "updated_at", now);
    if (rec == NULL || registry_set_incarnation(rec) != AD_OK) {
        json_decref(rec);
        return ad_errf(AD_ENOMEM, err, errlen, "%s",
                       ad_err_message(AD_ENOMEM));
    }
    *out = rec;
    return AD_OK;
}

struct device_write {
    const char *actor;
    const char *id;
    json_t *patch;      /* create: the new record; update: fields */
    json_t *result;     /* the record after the write */
    char why[160];
};

static ad_err device_create_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    ad_err e = store_put(tx, STORE_DEVICES, w->id, w->patch, STORE_NOOVERWRITE);

    if (e == AD_OK)
        e = store_audit(tx, w->actor, "device.create", w->id, NULL);
    return e;
}

void route_device_create(http_req *r)
{
    json_t *body, *rec = NULL;
    struct device_write w;
    char now[32], msg[160];
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    now_text(now, sizeof(now));
    e = device_new_record(body, now, &rec, msg, sizeof(msg));
    if (e != AD_OK) {
        http_reply_error(r, e, msg);
        goto out;
    }
    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.id = json_string_value(json_object_get(rec, "id"));
    w.patch = rec;
    e = store_write(r->app->st, device_create_write, &w);
    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_EEXISTS ? "the device already exists" : NULL);
        goto out;
    }
    json_object_set_new(rec, "certs", json_array());
    http_reply_json(r, 201, json_incref(rec));
out:
    json_decref(rec);
    json_decref(body);
}

void route_device_list(http_req *r)
{
    routes_list_table(r, STORE_DEVICES, http_query(r, "prefix"), NULL, "id");
}

void route_device_get(http_req *r)
{
    store_txn *tx = NULL;
    json_t *dev = NULL, *serials = NULL, *certs;
    time_t now = time(NULL);
    size_t i;
    json_t *s;
    int more = 0;
    ad_err e;

    e = store_read_begin(r->app->st, &tx);
    if (e == AD_OK)
        e = store_get(tx, STORE_DEVICES, r->param[0], &dev);
    if (e == AD_OK)
        e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, r->param[0], NULL,
                             1000, &serials, &more);
    if (e != AD_OK) {
        store_read_end(tx);
        json_decref(dev);
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such device" : NULL);
        return;
    }
    certs = json_array();
    json_array_foreach(serials, i, s) {
        json_t *c = NULL, *v;
        if (store_get(tx, STORE_CERTS,
                      registry_ix_serial(json_string_value(s)),
                      &c) != AD_OK)
            continue;
        v = registry_cert_view(c, now);
        json_decref(c);
        if (v == NULL)
            continue;
        json_object_del(v, "pem");
        json_array_append_new(certs, v);
    }
    store_read_end(tx);
    json_decref(serials);
    json_object_set_new(dev, "certs", certs);
    http_reply_json(r, 200, dev);
}

static ad_err device_update_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    json_t *dev = NULL;
    registry_device_status cur, want;
    char now[32];
    ad_err e;

    /* A retried write starts afresh. */
    json_decref(w->result);
    w->result = NULL;
    w->why[0] = '\0';
    e = store_get(tx, STORE_DEVICES, w->id, &dev);
    if (e != AD_OK)
        return e;
    cur = registry_device_status_of(dev);
    /* DEVICE_STATUS_BAD when the patch leaves the status alone. */
    want = registry_device_status_of(w->patch);
    /* Revocation is final: a revoked device cannot be made active. */
    if (want != DEVICE_STATUS_BAD && cur == DEVICE_REVOKED &&
        want != DEVICE_REVOKED) {
        snprintf(w->why, sizeof(w->why), "a revoked device stays revoked");
        json_decref(dev);
        return AD_ECONFLICT;
    }
    json_object_update_existing(dev, w->patch);
    now_text(now, sizeof(now));
    json_object_set_new(dev, "updated_at", json_string(now));
    e = store_put(tx, STORE_DEVICES, w->id, dev, 0);
    if (e == AD_OK)
        e = store_audit(tx, w->actor,
                        want == DEVICE_SUSPENDED ? "device.suspend"
                        : want != DEVICE_STATUS_BAD && cur == DEVICE_SUSPENDED
                            ? "device.resume"
                            : "device.update",
                        w->id, w->patch);
    /* Broker plugins drop or refetch this device's statements. */
    if (e == AD_OK && want == DEVICE_SUSPENDED)
        e = registry_event(tx, "suspended", "device", w->id);
    else if (e == AD_OK && want == DEVICE_ACTIVE)
        e = registry_event(tx, "resumed", "device", w->id);
    if (e == AD_OK && (json_object_get(w->patch, "groups") ||
                       json_object_get(w->patch, "policies") ||
                       json_object_get(w->patch, "attributes")))
        e = registry_event(tx, "policy_changed", "device", w->id);
    if (e == AD_OK)
        w->result = json_incref(dev);
    json_decref(dev);
    return e;
}

void route_device_patch(http_req *r)
{
    json_t *body, *patch = NULL, *v;
    struct device_write w;
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    patch = json_object();
    if ((v = json_object_get(body, "status")) != NULL) {
        registry_device_status want =
            registry_device_status_parse(json_string_value(v));
        if (want != DEVICE_ACTIVE && want != DEVICE_SUSPENDED) {
            http_reply_error(r, AD_EFIELD,
                             "status must be \"active\" or \"suspended\" "
                             "(revoke with POST /v1/devices/{id}/revoke)");
            goto out;
        }
        json_object_set(patch, "status", v);
    }
    if ((v = json_object_get(body, "groups")) != NULL) {
        if (!names_ok(v)) {
            http_reply_error(r, AD_EFIELD, "groups must be an array of names");
            goto out;
        }
        json_object_set(patch, "groups", v);
    }
    if ((v = json_object_get(body, "policies")) != NULL) {
        if (!names_ok(v)) {
            http_reply_error(r, AD_EFIELD, "policies must be an array of names");
            goto out;
        }
        json_object_set(patch, "policies", v);
    }
    if ((v = json_object_get(body, "attributes")) != NULL) {
        if (!attributes_ok(v)) {
            http_reply_error(r, AD_EFIELD,
                             "attributes must be an object of strings");
            goto out;
        }
        json_object_set(patch, "attributes", v);
    }
    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.id = r->param[0];
    w.patch = patch;
    e = store_write(r->app->st, device_update_write, &w);
    if (e != AD_OK) {
        http_reply_error(r, e, w.why[0] ? w.why
                               : e == AD_ENOTFOUND ? "no such device"
                                                   : NULL);
        goto out;
    }
    http_reply_json(r, 200, w.result);
out:
    json_decref(patch);
    json_decref(body);
}

static ad_err device_delete_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    ad_err e;

    json_array_clear(w->result); /* a retried write starts afresh */
    e = store_del(tx, STORE_DEVICES, w->id);

    /* A deleted device is retired: its certificates are revoked
     * (cessationOfOperation), so they cannot come back to life if a
     * device of the same id is created later. They stay on record for
     * the audit log and the CRL. */
    if (e == AD_OK)
        e = registry_revoke_device_certs(tx, w->actor, w->id,
                                         "cessationOfOperation", w->result);
    if (e == AD_OK) {
        e = store_del(tx, STORE_DEVICE_SECRETS, w->id);
        if (e == AD_ENOTFOUND)
            e = AD_OK; /* the device had no secret */
    }
    if (e == AD_OK)
        e = store_audit(tx, w->actor, "device.delete", w->id, NULL);
    if (e == AD_OK)
        e = registry_event_revoked(tx, w->result, w->id,
                                   "cessationOfOperation");
    return e;
}

void route_device_delete(http_req *r)
{
    struct device_write w;
    ad_err e;

    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.id = r->param[0];
    w.result = json_array();
    e = store_write(r->app->st, device_delete_write, &w);
    if (e == AD_OK)
        routes_count_revocations(r->app, w.result);
    json_decref(w.result);
    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such device" : NULL);
        return;
    }
    http_reply_empty(r, 204);
}

/* ---- devices: bulk import -------------------------------------------- */

enum {
    /* Lines per request: the answer holds one entry per failed line, so
     * this also bounds the answer. authctl sends 10000 at a time. */
    IMPORT_LINES_MAX = 100000,
    /* One line is one POST /v1/devices body, and has its limit. */
    IMPORT_LINE_MAX = HTTP_BODY_MAX,
    /* Devices per store_write: one transaction and one fsync for each
     * thousand, yet short enough that issuances queued behind it on the
     * single writer wait milliseconds, not seconds. */
    IMPORT_BATCH = 1000,
    IMPORT_WHY_MAX = 160
};

/* One non-blank line of an import, prepared before the write. */
struct import_line {
    size_t line;              /* 1-based, counting blank lines */
    char id[129];             /* the line's device id if valid, else "" */
    char *text;               /* the record as compact JSON; NULL when the
                               * line was refused before the write */
    ad_err e;                 /* the line's outcome */
    char why[IMPORT_WHY_MAX]; /* its message, "" for the default */
};

struct import_batch {
    const char *actor;
    const json_t *detail; /* the audit detail of each created device */
    struct import_line *lines;
    size_t n;
};

/* Writes every prepared line of the batch. A device that already exists
 * (in the registry, or earlier in this import) is that line's failure
 * and the others go on; any other store error discards the whole batch,
 * so a line is either written with its audit entry or not at all. */
static ad_err import_write(store_txn *tx, void *arg)
{
    struct import_batch *b = arg;
    size_t i;
    ad_err e;

    for (i = 0; i < b->n; i++) {
        struct import_line *l = &b->lines[i];

        if (l->text == NULL)
            continue;
        e = store_put_text(tx, STORE_DEVICES, l->id, l->text, strlen(l->text),
                           STORE_NOOVERWRITE);
        if (e == AD_EEXISTS) {
            l->e = e;
            continue;
        }
        if (e == AD_OK)
            e = store_audit(tx, b->actor, "device.create", l->id, b->detail);
        if (e != AD_OK)
            return e;
        l->e = AD_OK;
    }
    return AD_OK;
}

/* Checks one line by the rules of POST /v1/devices and serialises its
 * record into l->text; or sets l->e and l->why. */
static void import_prepare(struct import_line *l, const char *p, size_t len,
                           const char *now)
{
    json_error_t jerr;
    json_t *obj = NULL, *rec = NULL;
    const char *id;

    if (len > IMPORT_LINE_MAX) {
        l->e = ad_errf(AD_ETOOBIG, l->why, sizeof(l->why),
                       "the line exceeds %d bytes", IMPORT_LINE_MAX);
        return;
    }
    obj = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL || !json_is_object(obj)) {
        l->e = ad_errf(AD_EJSON, l->why, sizeof(l->why), "%s",
                       obj ? "the line must be a JSON object" : jerr.text);
        text_make_utf8(l->why);
        goto out;
    }
    id = json_string_value(json_object_get(obj, "id"));
    if (util_device_id_valid(id))
        util_strlcpy(l->id, id, sizeof(l->id));
    l->e = device_new_record(obj, now, &rec, l->why, sizeof(l->why));
    if (l->e != AD_OK)
        goto out;
    if ((l->text = json_dumps(rec, JSON_COMPACT)) == NULL)
        l->e = AD_ENOMEM;
out:
    json_decref(rec);
    json_decref(obj);
}

/* Writes the batch (unless an earlier batch failed: then its lines fail
 * the same way, unwritten), then moves each line's outcome into the
 * answer in line order and empties the batch. */
static void import_flush(http_req *r, struct import_batch *b, ad_err *fatal,
                         json_int_t *created, json_t *failed)
{
    size_t i, writable = 0;
    ad_err e = *fatal;

    for (i = 0; i < b->n; i++)
        writable += b->lines[i].text != NULL;
    if (writable > 0 && e == AD_OK)
        e = store_write(r->app->st, import_write, b);
    if (e != AD_OK) {
        /* Nothing of this batch persisted, whatever import_write did. */
        for (i = 0; i < b->n; i++) {
            struct import_line *l = &b->lines[i];
            if (l->text == NULL)
                continue;
            l->e = e;
            snprintf(l->why, sizeof(l->why),
                     "not written: the store failed (%s)", ad_err_code(e));
        }
        *fatal = e;
    }
    for (i = 0; i < b->n; i++) {
        struct import_line *l = &b->lines[i];

        if (l->e == AD_OK) {
            (*created)++;
        } else {
            const char *why = l->e == AD_EEXISTS ? "the device already exists"
                              : l->why[0]        ? l->why
                                                 : ad_err_message(l->e);
            json_t *f = json_pack("{s:I, s:{s:s, s:s}}", "line",
                                  (json_int_t)l->line, "error", "code",
                                  ad_err_code(l->e), "message", why);
            /* A failed line never drops out of the answer: without its
             * message if need be. */
            if (f == NULL)
                f = json_pack("{s:I, s:{s:s, s:s}}", "line",
                              (json_int_t)l->line, "error", "code",
                              ad_err_code(l->e), "message",
                              ad_err_message(l->e));
            if (f && l->id[0])
                json_object_set_new(f, "id", json_string(l->id));
            json_array_append_new(failed, f);
        }
        free(l->text);
        memset(l, 0, sizeof(*l));
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
    json_t *failed = NULL, *detail = NULL;
    json_int_t created = 0;
    size_t lines = 0, line = 0;
    ad_err fatal = AD_OK;
    char now[32], msg[96];

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
    detail = json_pack("{s:s}", "via", "import");
    b.lines = calloc(IMPORT_BATCH, sizeof(*b.lines));
    if (failed == NULL || detail == NULL || b.lines == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        goto out;
    }
    b.actor = r->actor;
    b.detail = detail;
    now_text(now, sizeof(now));
    while (p < end) {
        size_t len;

        nl = memchr(p, '\n', (size_t)(end - p));
        len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        line++;
        if (!line_is_blank(p, len)) {
            struct import_line *l = &b.lines[b.n++];
            l->line = line;
            import_prepare(l, p, len, now);
        }
        p += len + (nl != NULL);
        if (b.n == IMPORT_BATCH) {
            import_flush(r, &b, &fatal, &created, failed);
            now_text(now, sizeof(now));
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
    free(b.lines);
    json_decref(detail);
    json_decref(failed);
}

/* ---- enrollments ----------------------------------------------------- */

struct record_write {
    const char *actor;
    const char *action;
    store_table table;
    const char *id;
    json_t *rec;
    store_index ix;     /* secret-hash index to keep in step */
    const char *ix_key; /* create: the hash; delete: looked up */
};

static ad_err record_create_write(store_txn *tx, void *arg)
{
    struct record_write *w = arg;
    ad_err e = store_put(tx, w->table, w->id, w->rec, STORE_NOOVERWRITE);

    if (e == AD_OK)
        e = store_index_add(tx, w->ix, w->ix_key, w->id);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, w->action, w->id, NULL);
    return e;
}

static ad_err record_delete_write(store_txn *tx, void *arg)
{
    struct record_write *w = arg;
    const char *field = w->table == STORE_ENROLLMENTS ? "token_sha256" : "hash";
    json_t *rec = NULL;
    const char *hash;
    ad_err e;

    if ((e = store_get(tx, w->table, w->id, &rec)) != AD_OK)
        return e;
    hash = json_string_value(json_object_get(rec, field));
    if (hash)
        e = store_index_del(tx, w->ix, hash, w->id);
    if (e == AD_OK)
        e = store_del(tx, w->table, w->id);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, w->action, w->id, NULL);
    json_decref(rec);
    return e;
}

static ad_err delete_record(http_req *r, store_table t, store_index ix,
                            const char *action)
{
    struct record_write w;

    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.action = action;
    w.table = t;
    w.id = r->param[0];
    w.ix = ix;
    return store_write(r->app->st, record_delete_write, &w);
}

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
    json_t *body, *groups, *rec = NULL, *view;
    json_int_t max_uses, expires_in, cert_days;
    const char *name, *pattern;
    struct record_write w;
    char id[40], token[64], digest[65], now[32], exp[32];
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
    if (groups && !names_ok(groups)) {
        http_reply_error(r, AD_EFIELD, "groups must be an array of names");
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
    if (util_random_hex(8, id + 2, sizeof(id) - 2) != AD_OK ||
        util_random_token("enr_", 32, token, sizeof(token)) != AD_OK) {
        http_reply_error(r, AD_EINTERNAL, NULL);
        goto out;
    }
    id[0] = 'e';
    id[1] = '_';
    util_sha256_hex(token, strlen(token), digest);
    now_text(now, sizeof(now));
    util_time_rfc3339(time(NULL) + (time_t)expires_in, exp, sizeof(exp));
    rec = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:o, s:I, s:s, s:s}", "id",
                    id, "name", name ? name : id, "id_pattern", pattern,
                    "max_uses", max_uses, "used", (json_int_t)0, "expires_at",
                    exp, "groups", groups ? json_incref(groups) : json_array(), "cert_days",
                    cert_days, "created_at", now, "token_sha256", digest);
    if (rec == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        goto out;
    }
    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.action = "enrollment.create";
    w.table = STORE_ENROLLMENTS;
    w.id = id;
    w.rec = rec;
    w.ix = STORE_IX_ENROLLMENT_TOKENS;
    w.ix_key = digest;
    e = store_write(r->app->st, record_create_write, &w);
    if (e != AD_OK) {
        http_reply_error(r, e, NULL);
        goto out;
    }
    view = registry_enrollment_view(rec);
    /* The token is shown this once; only its hash is kept. */
    json_object_set_new(view, "token", json_string(token));
    http_reply_json(r, 201, view);
out:
    json_decref(rec);
    json_decref(body);
}

void route_enrollment_list(http_req *r)
{
    routes_list_table(r, STORE_ENROLLMENTS, NULL, registry_enrollment_view,
                      "id");
}

void route_enrollment_get(http_req *r)
{
    json_t *rec = get_record(r, STORE_ENROLLMENTS, r->param[0]);

    if (rec == NULL)
        return;
    http_reply_json(r, 200, registry_enrollment_view(rec));
    json_decref(rec);
}

void route_enrollment_delete(http_req *r)
{
    ad_err e = delete_record(r, STORE_ENROLLMENTS, STORE_IX_ENROLLMENT_TOKENS,
                             "enrollment.delete");

    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such enrollment" : NULL);
    else
        http_reply_empty(r, 204);
}

/* ---- certificates ---------------------------------------------------- */

void route_cert_list(http_req *r)
{
    const char *after, *device = http_query(r, "device"),
                       *enrollment = http_query(r, "enrollment"),
                       *status = http_query(r, "status");
    store_txn *tx = NULL;
    json_t *items = json_array(), *page = NULL, *v;
    time_t now = time(NULL);
    char cursor_buf[16 + CA_SERIAL_HEX_MAX + 1];
    size_t limit, i;
    int more = 0;
    ad_err e;

    if (http_paging(r, &limit, &after) != 0) {
        json_decref(items);
        return;
    }
    if (status && registry_cert_status_parse(status) == CERT_STATUS_BAD) {
        json_decref(items);
        http_reply_error(r, AD_EBADREQ,
                         "status must be valid, revoked or expired");
        return;
    }
    if ((e = store_read_begin(r->app->st, &tx)) != AD_OK)
        goto fail;
    /* Walk pages of the narrowest source until limit items pass the
     * remaining filters, so that "next" is always a resumable cursor. */
    for (;;) {
        const char *cursor = after;
        int src_more = 0;

        json_decref(page);
        page = NULL;
        if (device)
            e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, device, cursor,
                                 limit, &page, &src_more);
        else if (enrollment)
            e = store_index_list(tx, STORE_IX_CERTS_BY_ENROLLMENT, enrollment,
                                 cursor, limit, &page, &src_more);
        else
            e = store_list(tx, STORE_CERTS, "", cursor, limit, &page,
                           &src_more);
        if (e != AD_OK)
            goto fail;
        json_array_foreach(page, i, v) {
            json_t *rec = NULL, *view;
            /* The cursor is the source's own key: an index value or a
             * serial. */
            const char *key = json_is_string(v)
                                  ? json_string_value(v)
                                  : json_string_value(
                                        json_object_get(v, "serial"));
            const char *serial = json_is_string(v) ? registry_ix_serial(key)
                                                   : key;
            const char *st, *dev, *en;

            if (json_array_size(items) >= limit) {
                more = 1;
                break;
            }
            after = key; /* the page cursor follows the source */
            if (json_is_string(v)) {
                if (store_get(tx, STORE_CERTS, serial, &rec) != AD_OK)
                    continue;
            } else {
                rec = json_incref(v);
            }
            view = registry_cert_view(rec, now);
            json_decref(rec);
            st = json_string_value(json_object_get(view, "status"));
            dev = json_string_value(json_object_get(view, "device_id"));
            en = json_string_value(json_object_get(view, "enrollment"));
            if ((status && (st == NULL || strcmp(st, status) != 0)) ||
                (device && (dev == NULL || strcmp(dev, device) != 0)) ||
                (enrollment && (en == NULL || strcmp(en, enrollment) != 0))) {
                json_decref(view);
                continue;
            }
            json_array_append_new(items, view);
        }
        if (more || !src_more)
            break;
        if (json_array_size(items) >= limit) {
            more = 1;
            break;
        }
        /* after points into page, which the next round frees. */
        util_strlcpy(cursor_buf, after ? after : "", sizeof(cursor_buf));
        after = cursor_buf;
    }
    /* The cursor is the last source key looked at (an index value for
     * device/enrollment lists), copied before its page is freed. */
    util_strlcpy(cursor_buf, after ? after : "", sizeof(cursor_buf));
    json_decref(page);
    store_read_end(tx);
    http_reply_json(r, 200,
                    json_pack("{s:o, s:o}", "items", items, "next",
                              more && cursor_buf[0] ? json_string(cursor_buf)
                                                    : json_null()));
    return;
fail:
    json_decref(page);
    json_decref(items);
    store_read_end(tx);
    http_reply_error(r, e, NULL);
}

void route_cert_get(http_req *r)
{
    char serial[CA_SERIAL_HEX_MAX + 2];
    json_t *rec;

    /* Any case, colons or leading zeros name the same serial. */
    if (!util_serial_normalize(r->param[0], serial, sizeof(serial))) {
        http_reply_error(r, AD_ENOTFOUND, "not a certificate serial");
        return;
    }
    r->param[0] = serial;
    rec = get_record(r, STORE_CERTS, serial);

    if (rec == NULL)
        return;
    http_reply_json(r, 200, registry_cert_view(rec, time(NULL)));
    json_decref(rec);
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
    routes_list_table(r, STORE_APIKEYS, NULL, registry_apikey_view, "id");
}

void route_apikey_delete(http_req *r)
{
    ad_err e = delete_record(r, STORE_APIKEYS, STORE_IX_APIKEY_HASHES,
                             "apikey.delete");

    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "no such API key" : NULL);
    else
        http_reply_empty(r, 204);
}

/* ---- audit ----------------------------------------------------------- */

void route_audit_list(http_req *r)
{
    const char *after;
    uint64_t after_seq = 0;
    store_txn *tx = NULL;
    json_t *items = NULL;
    size_t limit;
    int more = 0;
    ad_err e;

    if (http_paging(r, &limit, &after) != 0)
        return;
    if (after && codec_parse_u64(after, UINT64_MAX - 1, &after_seq) != 0) {
        http_reply_error(r, AD_EBADREQ, "after must be an audit seq number");
        return;
    }
    e = store_read_begin(r->app->st, &tx);
    if (e == AD_OK)
        e = store_audit_list(tx, after_seq, limit, &items, &more);
    store_read_end(tx);
    if (e != AD_OK) {
        http_reply_error(r, e, NULL);
        return;
    }
    reply_page(r, items, more, "seq");
}
