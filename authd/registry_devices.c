/* See registry_devices.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry_devices.h"
#include "registry_policies.h"
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

/* A gateway is named by a device id, and a device is not its own
 * gateway. Whether it exists is checked inside the write. */
static ad_err gateway_ok(const char *id, const char *gateway, char *why,
                         size_t whylen)
{
    if (!util_device_id_valid(gateway))
        return ad_errf(AD_EFIELD, why, whylen,
                       "gateway must be a device id (1-128 bytes of "
                       "[A-Za-z0-9._:-])");
    if (strcmp(gateway, id) == 0)
        return ad_errf(AD_EFIELD, why, whylen,
                       "a device cannot be its own gateway");
    return AD_OK;
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
    ad_err e;

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
    if (d->gateway && (e = gateway_ok(d->id, d->gateway, why, whylen)) != AD_OK)
        return e;
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
    if (rec == NULL || registry_set_incarnation(rec) != AD_OK ||
        (d->gateway &&
         json_object_set_new(rec, "gateway", json_string(d->gateway)) != 0)) {
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
    const char *gw = json_string_value(json_object_get(w->patch, "gateway"));
    ad_err e = store_put(tx, STORE_DEVICES, w->id, w->patch, STORE_NOOVERWRITE);

    /* The device is put first: an id that exists is AD_EEXISTS whatever
     * its gateway or policies. */
    if (e == AD_OK)
        e = registry_refs_check(tx, json_object_get(w->patch, "policies"),
                                json_object_get(w->patch, "groups"), w->why,
                                w->whylen);
    if (e == AD_OK)
        e = registry_refs_follow(tx, REGISTRY_REFS_DEVICE, w->id, NULL, w->patch);
    if (e == AD_OK && gw && (e = registry_gateway_touch(tx, gw)) == AD_OK)
        e = registry_child_link(tx, gw, w->id, 1);
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
    w.why = why;
    w.whylen = whylen;
    e = store_write(st, device_create_write, &w);
    if (e == AD_EEXISTS)
        snprintf(why, whylen, "the device already exists");
    if (e == AD_EGATEWAY)
        snprintf(why, whylen, "gateway \"%s\" is no device", d->gateway);
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
    if (it->e == AD_OK && d->gateway)
        util_strlcpy(it->gateway, d->gateway, sizeof(it->gateway));
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
    json_t *gateways, *gw = NULL, *rec = NULL;
    const char *gid;
    size_t i;
    ad_err e = AD_OK;

    /* The gateways that gain children, each touched once at the end: a
     * thousand children of one gateway rewrite its record once. */
    if ((gateways = json_object()) == NULL)
        return AD_ENOMEM;
    for (i = 0; i < b->n; i++) {
        registry_import_item *it = &b->items[i];

        if (it->record == NULL)
            continue;
        /* The gateway may be a device earlier in this import: the read
         * sees this transaction's own writes. */
        if (it->gateway[0] && json_object_get(gateways, it->gateway) == NULL) {
            e = store_get(tx, STORE_DEVICES, it->gateway, &gw);
            json_decref(gw);
            gw = NULL;
            if (e == AD_ENOTFOUND) {
                it->e = AD_EGATEWAY;
                snprintf(it->why, sizeof(it->why),
                         "gateway \"%s\" is no device", it->gateway);
                continue;
            }
            if (e != AD_OK)
                goto out;
        }
        /* An unknown policy or group is this line's failure. */
        if ((rec = json_loads(it->record, 0, NULL)) == NULL) {
            e = AD_ENOMEM;
            goto out;
        }
        e = registry_refs_check(tx, json_object_get(rec, "policies"),
                                json_object_get(rec, "groups"), it->why,
                                sizeof(it->why));
        if (e == AD_OK)
            e = store_put_text(tx, STORE_DEVICES, it->id, it->record,
                               strlen(it->record), STORE_NOOVERWRITE);
        /* The line's own failure: reported for it, the others go on. */
        if (e == AD_EUNKPOLICY || e == AD_EUNKGROUP || e == AD_EEXISTS) {
            it->e = e;
            e = AD_OK;
            json_decref(rec);
            rec = NULL;
            continue;
        }
        if (e == AD_OK)
            e = registry_refs_follow(tx, REGISTRY_REFS_DEVICE, it->id, NULL, rec);
        json_decref(rec);
        rec = NULL;
        if (e == AD_OK && it->gateway[0]) {
            e = registry_child_link(tx, it->gateway, it->id, 1);
            if (e == AD_OK &&
                json_object_set_new(gateways, it->gateway, json_true()) != 0)
                e = AD_ENOMEM;
        }
        if (e == AD_OK)
            e = store_audit(tx, b->actor, "device.create", it->id, b->detail);
        if (e != AD_OK)
            goto out;
        it->e = AD_OK;
    }
    json_object_foreach(gateways, gid, gw)
        if ((e = registry_gateway_touch(tx, gid)) != AD_OK)
            break;
out:
    json_decref(gateways);
    return e;
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

/* The gateway side of a device update (inside its write): when the
 * device moves to another gateway or its status changes, the indexes
 * follow and the old and the new gateway are touched. dev is the record
 * as written; old_gw its gateway before ("" for none), cur its status
 * before. */
static ad_err children_follow(store_txn *tx, struct device_write *w,
                              const json_t *dev, const char *old_gw,
                              registry_device_status cur)
{
    const char *new_gw = json_string_value(json_object_get(dev, "gateway"));
    registry_device_status now = registry_device_status_of(dev);
    int moved = strcmp(old_gw, new_gw ? new_gw : "") != 0;
    ad_err e;

    if (!moved && now == cur)
        return AD_OK;
    if (moved && old_gw[0]) {
        e = registry_child_unlink(tx, old_gw, w->id);
        if (e == AD_OK)
            e = registry_gateway_touch(tx, old_gw);
        /* A gateway that is gone has no cache to drop. */
        if (e != AD_OK && e != AD_EGATEWAY)
            return e;
    }
    if (new_gw == NULL)
        return AD_OK;
    e = registry_gateway_touch(tx, new_gw);
    if (e == AD_EGATEWAY)
        snprintf(w->why, w->whylen, "gateway \"%s\" is no device", new_gw);
    if (e == AD_OK)
        e = registry_child_link(tx, new_gw, w->id, now == DEVICE_ACTIVE);
    return e;
}

static ad_err device_update_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    json_t *dev = NULL, *pg, *old = NULL;
    registry_device_status cur, want;
    char now[32], old_gw[REGISTRY_ID_MAX];
    const char *g;
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
    g = json_string_value(json_object_get(dev, "gateway"));
    util_strlcpy(old_gw, g ? g : "", sizeof(old_gw));
    e = registry_refs_check(tx, json_object_get(w->patch, "policies"),
                            json_object_get(w->patch, "groups"), w->why,
                            w->whylen);
    if (e == AD_OK && (old = json_deep_copy(dev)) == NULL)
        e = AD_ENOMEM;
    if (e != AD_OK) {
        json_decref(dev);
        return e;
    }
    json_object_update_existing(dev, w->patch);
    if ((pg = json_object_get(w->patch, "gateway")) != NULL &&
        json_is_string(pg))
        json_object_set(dev, "gateway", pg);
    else if (pg != NULL)
        json_object_del(dev, "gateway");
    util_time_rfc3339(time(NULL), now, sizeof(now));
    json_object_set_new(dev, "updated_at", json_string(now));
    e = store_put(tx, STORE_DEVICES, w->id, dev, 0);
    if (e == AD_OK)
        e = registry_refs_follow(tx, REGISTRY_REFS_DEVICE, w->id, old, dev);
    json_decref(old);
    if (e == AD_OK)
        e = children_follow(tx, w, dev, old_gw, cur);
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
    /* "gateway": null in the patch (and the audit detail) clears it. */
    if (p->set_gateway)
        json_object_set_new(patch, "gateway", p->gateway
                                                  ? json_string(p->gateway)
                                                  : json_null());
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
    e = p->set_gateway && p->gateway ? gateway_ok(id, p->gateway, why, whylen)
                                     : AD_OK;
    if (e == AD_OK)
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

/* Inside a retiring write (delete, revoke): the device leaves its
 * gateway's active children (and, deleted, its children), and the
 * gateway is touched. dev is the record before the change. */
static ad_err child_retire(store_txn *tx, const json_t *dev, const char *id,
                           int deleted)
{
    const char *gw = json_string_value(json_object_get(dev, "gateway"));
    ad_err e;

    if (gw == NULL)
        return AD_OK;
    e = deleted ? registry_child_unlink(tx, gw, id)
                : store_index_del(tx, STORE_IX_ACTIVE_CHILDREN, gw, id);
    if (e == AD_ENOTFOUND)
        e = AD_OK;
    if (e == AD_OK)
        e = registry_gateway_touch(tx, gw);
    /* A gateway that is gone has no cache to drop. */
    return e == AD_EGATEWAY ? AD_OK : e;
}

static ad_err device_delete_write(store_txn *tx, void *arg)
{
    struct device_write *w = arg;
    json_t *dev = NULL;
    char first[REGISTRY_ID_MAX];
    ad_err e;

    json_array_clear(w->result); /* a retried write starts afresh */
    if ((e = store_get(tx, STORE_DEVICES, w->id, &dev)) != AD_OK)
        return e;
    /* A gateway with children stays until they are moved or deleted. */
    e = store_index_first(tx, STORE_IX_CHILDREN_BY_GATEWAY, w->id, first,
                          sizeof(first));
    if (e == AD_OK)
        e = AD_ECONFLICT;
    else if (e == AD_ENOTFOUND)
        e = child_retire(tx, dev, w->id, 1);
    if (e == AD_OK)
        e = registry_refs_follow(tx, REGISTRY_REFS_DEVICE, w->id, dev, NULL);
    json_decref(dev);
    if (e == AD_OK)
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
    if (e == AD_OK)
        e = child_retire(tx, dev, w->id, 0);
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

/* ---- gateways -------------------------------------------------------------- */

ad_err registry_gateway_touch(store_txn *tx, const char *gateway_id)
{
    json_t *gw = NULL;
    json_int_t rev;
    ad_err e;

    /* Read inside the write: locked until the commit (PostgreSQL: FOR
     * UPDATE), so two nodes changing children of one gateway serialise
     * here, and each rewrite reaches every node's change feed. */
    e = store_get(tx, STORE_DEVICES, gateway_id, &gw);
    if (e == AD_ENOTFOUND)
        return AD_EGATEWAY;
    if (e != AD_OK)
        return e;
    rev = json_integer_value(json_object_get(gw, "children_rev"));
    if (json_object_set_new(gw, "children_rev", json_integer(rev + 1)) != 0)
        e = AD_ENOMEM;
    if (e == AD_OK)
        e = store_put(tx, STORE_DEVICES, gateway_id, gw, 0);
    json_decref(gw);
    /* What the gateway may do changed: brokers re-check its sessions. */
    if (e == AD_OK)
        e = registry_event(tx, "policy_changed", "device", gateway_id);
    return e;
}

ad_err registry_child_link(store_txn *tx, const char *gateway_id,
                           const char *child_id, int active)
{
    ad_err e = store_index_add(tx, STORE_IX_CHILDREN_BY_GATEWAY, gateway_id,
                               child_id);

    if (e != AD_OK)
        return e;
    if (active)
        return store_index_add(tx, STORE_IX_ACTIVE_CHILDREN, gateway_id,
                               child_id);
    e = store_index_del(tx, STORE_IX_ACTIVE_CHILDREN, gateway_id, child_id);
    return e == AD_ENOTFOUND ? AD_OK : e;
}

ad_err registry_child_unlink(store_txn *tx, const char *gateway_id,
                             const char *child_id)
{
    ad_err e = store_index_del(tx, STORE_IX_ACTIVE_CHILDREN, gateway_id,
                               child_id);

    if (e == AD_OK || e == AD_ENOTFOUND)
        e = store_index_del(tx, STORE_IX_CHILDREN_BY_GATEWAY, gateway_id,
                            child_id);
    return e == AD_ENOTFOUND ? AD_OK : e;
}

enum { CHILDREN_PAGE = 1000 };

/* Up to limit children of gateway after `after`, each {"id","status"},
 * from tx. The active children come from their own index, in one read
 * for the page (a gateway's children are mostly active): only the
 * others' records are read for their status. A child whose record is
 * missing (never written so) is shown with status "unknown". */
static ad_err children_page(store_txn *tx, const char *gateway_id,
                            const char *after, size_t limit, json_t **items,
                            int *more)
{
    json_t *ids = NULL, *active = NULL, *v, *dev;
    size_t i, a = 0;
    int unused;
    ad_err e;

    *items = NULL;
    e = store_index_list(tx, STORE_IX_CHILDREN_BY_GATEWAY, gateway_id, after,
                         limit, &ids, more);
    /* Active children are a subset of all: those within this page are
     * among the first `limit` active ones after `after`. */
    if (e == AD_OK)
        e = store_index_list(tx, STORE_IX_ACTIVE_CHILDREN, gateway_id, after,
                             limit, &active, &unused);
    if (e == AD_OK && (*items = json_array()) == NULL)
        e = AD_ENOMEM;
    json_array_foreach(ids, i, v) {
        registry_device_status st = DEVICE_STATUS_BAD;
        const char *id = json_string_value(v);

        if (e != AD_OK)
            break;
        /* Both lists are in the same (byte) order: walk them together. */
        while (a < json_array_size(active) &&
               strcmp(json_string_value(json_array_get(active, a)), id) < 0)
            a++;
        if (a < json_array_size(active) &&
            strcmp(json_string_value(json_array_get(active, a)), id) == 0) {
            st = DEVICE_ACTIVE;
        } else {
            dev = NULL;
            e = store_get(tx, STORE_DEVICES, id, &dev);
            if (e == AD_OK)
                st = registry_device_status_of(dev);
            json_decref(dev);
            if (e == AD_ENOTFOUND)
                e = AD_OK;
            if (e != AD_OK)
                break;
        }
        e = json_array_append_new(*items,
                                  json_pack("{s:O, s:s}", "id", v, "status",
                                            registry_device_status_name(st))) ==
                    0
                ? AD_OK
                : AD_ENOMEM;
    }
    json_decref(ids);
    json_decref(active);
    if (e != AD_OK) {
        json_decref(*items);
        *items = NULL;
    }
    return e;
}

ad_err registry_device_children(store *st, const char *gateway_id,
                                const registry_page *pg, registry_list *out)
{
    store_txn *tx = NULL;
    json_t *gw = NULL, *items = NULL;
    int more = 0;
    ad_err e;

    memset(out, 0, sizeof(*out));
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_DEVICES, gateway_id, &gw);
    json_decref(gw);
    if (e == AD_OK)
        e = children_page(tx, gateway_id, pg->after, pg->limit, &items,
                          &more);
    store_read_end(tx);
    if (e == AD_OK)
        registry_list_set(out, items, more, "id");
    return e;
}

ad_err registry_gateway_children(store *st, const char *gateway_id,
                                 registry_child **out, size_t *n)
{
    store_txn *tx = NULL;
    json_t *gw = NULL, *items = NULL, *v;
    registry_child *list = NULL, *grown;
    size_t cap = 0, count = 0, i;
    char after[REGISTRY_ID_MAX] = "";
    int more = 1;
    ad_err e;

    *out = NULL;
    *n = 0;
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_DEVICES, gateway_id, &gw);
    json_decref(gw);
    while (e == AD_OK && more) {
        if ((e = children_page(tx, gateway_id, after, CHILDREN_PAGE, &items,
                               &more)) != AD_OK)
            break;
        if (count + json_array_size(items) > REGISTRY_CHILDREN_MAX) {
            e = AD_ETOOBIG;
            break;
        }
        if (count + json_array_size(items) > cap) {
            cap = cap ? 2 * cap : CHILDREN_PAGE;
            if ((grown = realloc(list, cap * sizeof(*list))) == NULL) {
                e = AD_ENOMEM;
                break;
            }
            list = grown;
        }
        json_array_foreach(items, i, v) {
            registry_child *c = &list[count++];

            util_strlcpy(c->id, json_string_value(json_object_get(v, "id")),
                         sizeof(c->id));
            c->status = registry_device_status_parse(
                json_string_value(json_object_get(v, "status")));
            util_strlcpy(after, c->id, sizeof(after));
        }
        json_decref(items);
        items = NULL;
    }
    json_decref(items);
    store_read_end(tx);
    if (e != AD_OK) {
        free(list);
        return e;
    }
    *out = list;
    *n = count;
    return AD_OK;
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
        e = store_audit(tx, w->actor, "device.set_secret", w->id, NULL);
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
