/* See registry_devices.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry_devices.h"
#include "registry_records.h"
#include "util.h"

enum { ATTR_MAX = 64, ATTR_VALUE_MAX = 256, DEVICE_CERTS_SHOWN = 1000 };

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

/* The one set of rules for a new device, whether it comes alone or in an
 * import: checks d and builds the record to store (status active,
 * timestamps now, a new incarnation) into *out, a new reference. Errors:
 * AD_EDEVID, AD_EFIELD (with a message in why), AD_ENOMEM. */
static ad_err device_new_record(const registry_device_new *d, time_t t,
                                json_t **out, char *why, size_t whylen)
{
    json_t *rec;
    char now[32];

    *out = NULL;
    if (!util_device_id_valid(d->id))
        return ad_errf(AD_EDEVID, why, whylen, "%s",
                       ad_err_message(AD_EDEVID));
    if ((d->groups && !registry_names_valid(d->groups)) ||
        (d->policies && !registry_names_valid(d->policies)) ||
        (d->attributes && !attributes_ok(d->attributes)))
        return ad_errf(AD_EFIELD, why, whylen,
                       "groups and policies are arrays of names; "
                       "attributes is an object of strings");
    util_time_rfc3339(t, now, sizeof(now));
    /* "o" steals: hand over a new reference either way. */
    rec = json_pack("{s:s, s:s, s:o, s:o, s:o, s:s, s:s}", "id", d->id,
                    "status", registry_device_status_name(DEVICE_ACTIVE),
                    "groups",
                    d->groups ? json_deep_copy(d->groups) : json_array(),
                    "policies",
                    d->policies ? json_deep_copy(d->policies) : json_array(),
                    "attributes",
                    d->attributes ? json_deep_copy(d->attributes)
                                  : json_object(),
                    "created_at", now, "updated_at", now);
    if (rec == NULL || registry_set_incarnation(rec) != AD_OK) {
        json_decref(rec);
        return ad_errf(AD_ENOMEM, why, whylen, "%s",
                       ad_err_message(AD_ENOMEM));
    }
    *out = rec;
    return AD_OK;
}

/* ---- create ------------------------------------------------------------ */

struct device_write {
    const char *actor;
    const char *id;
    json_t *patch;  /* create: the new record; update: fields */
    json_t *result; /* update: the record after the write; delete and
                     * revoke: the certificates revoked */
    const char *reason; /* revoke */
    char *why;
    size_t whylen;
};

static ad_err device_create_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    ad_err e = store_put(tx, STORE_DEVICES, w->id, w->patch, STORE_NOOVERWRITE);

    if (e == AD_OK)
        e = store_audit(tx, w->actor, "device.create", w->id, NULL);
    return e;
}

ad_err registry_device_create(store *st, const char *actor,
                              const registry_device_new *d, json_t **view,
                              char *why, size_t whylen)
{
    struct device_write w;
    json_t *rec = NULL;
    ad_err e;

    *view = NULL;
    if (whylen)
        why[0] = '\0';
    if ((e = device_new_record(d, time(NULL), &rec, why, whylen)) != AD_OK)
        return e;
    memset(&w, 0, sizeof(w));
    w.actor = actor;
    w.id = d->id;
    w.patch = rec;
    e = store_write(st, device_create_write, &w);
    if (e == AD_EEXISTS)
        snprintf(why, whylen, "the device already exists");
    if (e == AD_OK) {
        json_object_set_new(rec, "certs", json_array());
        *view = rec;
        rec = NULL;
    }
    json_decref(rec);
    return e;
}

/* ---- import -------------------------------------------------------------- */

void registry_import_prepare(registry_import_item *it,
                             const registry_device_new *d, time_t now)
{
    json_t *rec = NULL;

    it->e = device_new_record(d, now, &rec, it->why, sizeof(it->why));
    if (it->e == AD_OK && (it->record = json_dumps(rec, JSON_COMPACT)) == NULL)
        it->e = AD_ENOMEM;
    json_decref(rec);
}

struct import_write {
    const char *actor;
    const json_t *detail; /* the audit detail of each created device */
    registry_import_item *items;
    size_t n;
};

/* A device that already exists is that item's failure and the others go
 * on; any other store error discards the whole batch, so an item is
 * either written with its audit entry or not at all. */
static ad_err import_write(store_txn *tx, void *arg)
{
    struct import_write *b = arg;
    size_t i;
    ad_err e;

    for (i = 0; i < b->n; i++) {
        registry_import_item *it = &b->items[i];

        if (it->record == NULL)
            continue;
        e = store_put_text(tx, STORE_DEVICES, it->id, it->record,
                           strlen(it->record), STORE_NOOVERWRITE);
        if (e == AD_EEXISTS) {
            it->e = e;
            continue;
        }
        if (e == AD_OK)
            e = store_audit(tx, b->actor, "device.create", it->id, b->detail);
        if (e != AD_OK)
            return e;
        it->e = AD_OK;
    }
    return AD_OK;
}

ad_err registry_devices_import(store *st, const char *actor,
                               registry_import_item *items, size_t n)
{
    struct import_write b;
    size_t i, writable = 0;
    ad_err e;

    for (i = 0; i < n; i++)
        writable += items[i].record != NULL;
    if (writable == 0)
        return AD_OK;
    b.actor = actor;
    b.items = items;
    b.n = n;
    if ((b.detail = json_pack("{s:s}", "via", "import")) == NULL)
        return AD_ENOMEM;
    e = store_write(st, import_write, &b);
    json_decref((json_t *)b.detail);
    return e;
}

void registry_import_item_clear(registry_import_item *it)
{
    free(it->record);
    memset(it, 0, sizeof(*it));
}

/* ---- read ---------------------------------------------------------------- */

ad_err registry_device_get(store *st, const char *id, json_t **view)
{
    store_txn *tx = NULL;
    json_t *dev = NULL, *serials = NULL, *certs, *s;
    time_t now = time(NULL);
    size_t i;
    int more = 0;
    ad_err e;

    *view = NULL;
    e = store_read_begin(st, &tx);
    if (e == AD_OK)
        e = store_get(tx, STORE_DEVICES, id, &dev);
    if (e == AD_OK)
        e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, id, NULL,
                             DEVICE_CERTS_SHOWN, &serials, &more);
    if (e != AD_OK) {
        store_read_end(tx);
        json_decref(dev);
        return e;
    }
    certs = json_array();
    json_array_foreach(serials, i, s) {
        json_t *c = NULL, *v;
        if (store_get(tx, STORE_CERTS, registry_ix_serial(json_string_value(s)),
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
    *view = dev;
    return AD_OK;
}

ad_err registry_devices_list(store *st, const registry_page *pg,
                             registry_list *out)
{
    return registry_records_list(st, STORE_DEVICES, pg, NULL, "id", out);
}

/* ---- update -------------------------------------------------------------- */

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
    if (w->whylen)
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
        snprintf(w->why, w->whylen, "a revoked device stays revoked");
        json_decref(dev);
        return AD_ECONFLICT;
    }
    json_object_update_existing(dev, w->patch);
    util_time_rfc3339(time(NULL), now, sizeof(now));
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

/* The patch as the stored fields it changes (also the audit detail), or
 * AD_EFIELD with the field's rule in why. */
static ad_err patch_object(const registry_device_patch *p, json_t *patch,
                           char *why, size_t whylen)
{
    if (p->set_status) {
        if (p->status != DEVICE_ACTIVE && p->status != DEVICE_SUSPENDED)
            return ad_errf(AD_EFIELD, why, whylen,
                           "status must be \"active\" or \"suspended\" "
                           "(revoke with POST /v1/devices/{id}/revoke)");
        json_object_set_new(patch, "status",
                            json_string(registry_device_status_name(p->status)));
    }
    if (p->groups) {
        if (!registry_names_valid(p->groups))
            return ad_errf(AD_EFIELD, why, whylen,
                           "groups must be an array of names");
        json_object_set_new(patch, "groups", json_deep_copy(p->groups));
    }
    if (p->policies) {
        if (!registry_names_valid(p->policies))
            return ad_errf(AD_EFIELD, why, whylen,
                           "policies must be an array of names");
        json_object_set_new(patch, "policies", json_deep_copy(p->policies));
    }
    if (p->attributes) {
        if (!attributes_ok(p->attributes))
            return ad_errf(AD_EFIELD, why, whylen,
                           "attributes must be an object of strings");
        json_object_set_new(patch, "attributes",
                            json_deep_copy(p->attributes));
    }
    return AD_OK;
}

ad_err registry_device_update(store *st, const char *actor, const char *id,
                              const registry_device_patch *p, json_t **view,
                              char *why, size_t whylen)
{
    struct device_write w;
    ad_err e;

    *view = NULL;
    if (whylen)
        why[0] = '\0';
    memset(&w, 0, sizeof(w));
    w.actor = actor;
    w.id = id;
    w.why = why;
    w.whylen = whylen;
    if ((w.patch = json_object()) == NULL)
        return AD_ENOMEM;
    e = patch_object(p, w.patch, why, whylen);
    if (e == AD_OK)
        e = store_write(st, device_update_write, &w);
    if (e == AD_OK) {
        *view = w.result;
        w.result = NULL;
    }
    json_decref(w.result);
    json_decref(w.patch);
    return e;
}

/* ---- delete and revoke ---------------------------------------------------- */

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
        e = registry_revoke_device_certs(tx, w->actor, w->id, w->reason,
                                         w->result);
    if (e == AD_OK) {
        e = store_del(tx, STORE_DEVICE_SECRETS, w->id);
        if (e == AD_ENOTFOUND)
            e = AD_OK; /* the device had no secret */
    }
    if (e == AD_OK)
        e = store_audit(tx, w->actor, "device.delete", w->id, NULL);
    if (e == AD_OK)
        e = registry_event_revoked(tx, w->result, w->id, w->reason);
    return e;
}

static ad_err device_revoke_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    json_t *dev = NULL;
    char now[32];
    ad_err e;

    json_array_clear(w->result); /* a retried write starts afresh */
    if ((e = store_get(tx, STORE_DEVICES, w->id, &dev)) != AD_OK)
        return e;
    util_time_rfc3339(time(NULL), now, sizeof(now));
    json_object_set_new(dev, "status", json_string(registry_device_status_name(
                                           DEVICE_REVOKED)));
    json_object_set_new(dev, "updated_at", json_string(now));
    e = store_put(tx, STORE_DEVICES, w->id, dev, 0);
    json_decref(dev);
    if (e == AD_OK)
        e = registry_revoke_device_certs(tx, w->actor, w->id, w->reason,
                                         w->result);
    if (e == AD_OK) {
        json_t *detail = json_pack("{s:s}", "reason", w->reason);
        e = store_audit(tx, w->actor, "device.revoke", w->id, detail);
        json_decref(detail);
    }
    if (e == AD_OK)
        e = registry_event_revoked(tx, w->result, w->id, w->reason);
    return e;
}

/* Runs a write that revokes the device's certificates; *revoked (new
 * reference) gets their entries. */
static ad_err device_retire(store *st, store_write_fn fn, const char *actor,
                            const char *id, const char *reason,
                            json_t **revoked)
{
    struct device_write w;
    ad_err e;

    *revoked = NULL;
    memset(&w, 0, sizeof(w));
    w.actor = actor;
    w.id = id;
    w.reason = reason;
    if ((w.result = json_array()) == NULL)
        return AD_ENOMEM;
    e = store_write(st, fn, &w);
    if (e == AD_OK)
        *revoked = w.result;
    else
        json_decref(w.result);
    return e;
}

ad_err registry_device_delete(store *st, const char *actor, const char *id,
                              size_t *revoked)
{
    json_t *list = NULL;
    ad_err e = device_retire(st, device_delete_write, actor, id,
                             "cessationOfOperation", &list);

    *revoked = json_array_size(list);
    json_decref(list);
    return e;
}

ad_err registry_device_revoke(store *st, const char *actor, const char *id,
                              const char *reason, json_t **serials)
{
    json_t *list = NULL, *v;
    size_t i;
    ad_err e = device_retire(st, device_revoke_write, actor, id, reason, &list);

    *serials = NULL;
    if (e != AD_OK)
        return e;
    if ((*serials = json_array()) == NULL)
        e = AD_ENOMEM;
    json_array_foreach(list, i, v)
        json_array_append(*serials, json_object_get(v, "serial"));
    json_decref(list);
    return e;
}

/* ---- the device secret ------------------------------------------------------ */

struct secret_write {
    const char *actor;
    const char *id;
    const char *hash;
};

static ad_err secret_write(store_txn *tx, void *arg)
{
    struct secret_write *w = arg;
    json_t *dev = NULL, *rec;
    char now[32];
    ad_err e;

    if ((e = store_get(tx, STORE_DEVICES, w->id, &dev)) != AD_OK)
        return e;
    json_decref(dev);
    util_time_rfc3339(time(NULL), now, sizeof(now));
    rec = json_pack("{s:s, s:s}", "argon2id", w->hash, "updated_at", now);
    if (rec == NULL)
        return AD_ENOMEM;
    e = store_put(tx, STORE_DEVICE_SECRETS, w->id, rec, 0);
    json_decref(rec);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, "device.secret", w->id, NULL);
    return e;
}

ad_err registry_device_secret_set(store *st, const char *actor,
                                  const char *id, const char *argon2id)
{
    struct secret_write w;

    w.actor = actor;
    w.id = id;
    w.hash = argon2id;
    return store_write(st, secret_write, &w);
}
