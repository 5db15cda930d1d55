/* Building a gateway's offline bundle: the children from the registry,
 * each device's statements from the check path's device cache (so they
 * are the very statements the daemon decides with), the revocations
 * that concern them from the store, all signed by tokens_sign_json. */
#include "gwbundle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checker.h"
#include "registry.h"
#include "registry_devices.h"
#include "tokens.h"
#include "util.h"

enum {
    /* Devices whose certificates one read transaction walks: a long
     * read holds LMDB pages (or a PostgreSQL snapshot) for its length. */
    SERIALS_TXN_DEVICES = 1000,
    /* Certificates of one device looked at; the registry shows as many. */
    CERTS_PER_DEVICE_MAX = 1000
};

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* {"id","statements"} (and "status" for a child) for device id, as the
 * daemon would decide for it. AD_ENOTFOUND if it is gone. */
static ad_err device_entry(app *a, const char *id, int with_status,
                           registry_device_status *status, json_t **out)
{
    json_t *sts = NULL, *o;
    ad_err e;

    *out = NULL;
    if ((e = checker_device_statements(a->checker, id, status, &sts)) != AD_OK)
        return e;
    o = with_status
            ? json_pack("{s:s, s:s, s:o}", "id", id, "status",
                        registry_device_status_name(*status), "statements",
                        sts)
            : json_pack("{s:s, s:o}", "id", id, "statements", sts);
    if (o == NULL)
        return AD_ENOMEM;
    *out = o;
    return AD_OK;
}

/* Appends the revoked certificate serials of ids[0..n) to out. */
static ad_err revoked_serials(app *a, const char *const *ids, size_t n,
                              json_t *out)
{
    store_txn *tx = NULL;
    json_t *vals = NULL, *v;
    const char *serial, *text;
    size_t i, k, tlen;
    int more;
    ad_err e = AD_OK;

    for (i = 0; i < n && e == AD_OK; i++) {
        if (i % SERIALS_TXN_DEVICES == 0) {
            store_read_end(tx);
            tx = NULL;
            if ((e = store_read_begin(a->st, &tx)) != AD_OK)
                break;
        }
        more = 0;
        e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, ids[i], NULL,
                             CERTS_PER_DEVICE_MAX, &vals, &more);
        if (e == AD_ENOTFOUND) {
            e = AD_OK;
            continue;
        }
        json_array_foreach(vals, k, v) {
            if (e != AD_OK)
                break;
            serial = registry_ix_serial(json_string_value(v));
            if (*serial == '\0' ||
                store_get_raw(tx, STORE_REVOKED_CERTS, serial, &text, &tlen) !=
                    AD_OK)
                continue;
            if (json_array_size(out) >= GWBUNDLE_REVOKED_MAX)
                e = AD_ETOOBIG;
            else if (json_array_append_new(out, json_string(serial)) != 0)
                e = AD_ENOMEM;
        }
        json_decref(vals);
        vals = NULL;
    }
    store_read_end(tx);
    return e;
}

ad_err gwbundle_build(app *a, const char *gateway_id, int64_t now, char **jws,
                      int64_t *exp_out, char *err, size_t errlen)
{
    registry_child *kids = NULL;
    size_t nkids = 0, i, nids = 0;
    const char **ids = NULL;
    registry_device_status st;
    json_t *payload = NULL, *gw = NULL, *children = NULL, *entry;
    json_t *serials = NULL, *jtis = NULL;
    int64_t exp = now + a->cfg.bundle_ttl;
    ad_err e;

    *jws = NULL;
    *exp_out = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    e = registry_gateway_children(a->st, gateway_id, &kids, &nkids);
    if (e == AD_OK && nkids > GWBUNDLE_CHILDREN_MAX)
        e = AD_ETOOBIG;
    if (e != AD_OK) {
        if (e == AD_ETOOBIG)
            ad_errf(e, err, errlen,
                    "the gateway has more than %d children, the most a "
                    "bundle carries", GWBUNDLE_CHILDREN_MAX);
        goto out;
    }

    if ((e = device_entry(a, gateway_id, 0, &st, &gw)) != AD_OK)
        goto out;
    if (st != DEVICE_ACTIVE) {
        e = st == DEVICE_SUSPENDED ? AD_ESUSPENDED : AD_EREVOKED;
        goto out;
    }
    if ((children = json_array()) == NULL ||
        (ids = calloc(nkids + 1, sizeof(*ids))) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    ids[nids++] = gateway_id;
    for (i = 0; i < nkids; i++) {
        e = device_entry(a, kids[i].id, 1, &st, &entry);
        /* Deleted since the list was read: no longer a child. */
        if (e == AD_ENOTFOUND)
            continue;
        if (e != AD_OK)
            goto out;
        if (json_array_append_new(children, entry) != 0) {
            e = AD_ENOMEM;
            goto out;
        }
        ids[nids++] = kids[i].id;
    }
    /* Sorted, for tokens_revoked_for's lookups. */
    qsort(ids, nids, sizeof(*ids), str_cmp);

    if ((serials = json_array()) == NULL || (jtis = json_array()) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    if ((e = revoked_serials(a, ids, nids, serials)) != AD_OK ||
        (e = tokens_revoked_for(a->tokens, ids, nids, now,
                                GWBUNDLE_REVOKED_MAX, jtis)) != AD_OK) {
        if (e == AD_ETOOBIG)
            ad_errf(e, err, errlen, "more than %d revocations concern this "
                                    "gateway", GWBUNDLE_REVOKED_MAX);
        goto out;
    }

    payload = json_pack("{s:s, s:I, s:I, s:O, s:O, s:O, s:O}", "iss",
                        tokens_issuer(a->tokens), "iat", (json_int_t)now,
                        "exp", (json_int_t)exp, "gateway", gw, "children",
                        children, "revoked_serials", serials, "revoked_jtis",
                        jtis);
    if (payload == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    e = tokens_sign_json(a->tokens, GWBUNDLE_TYP, payload, GWBUNDLE_JWS_MAX,
                         jws, NULL, NULL);
    if (e == AD_EFIELD) {
        e = ad_errf(AD_ETOOBIG, err, errlen,
                    "the bundle would exceed %d bytes", GWBUNDLE_JWS_MAX);
        goto out;
    }
    if (e == AD_OK)
        *exp_out = exp;
out:
    json_decref(payload);
    json_decref(gw);
    json_decref(children);
    json_decref(serials);
    json_decref(jtis);
    free(ids);
    free(kids);
    return e;
}
