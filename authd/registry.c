/* See registry.h. */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/codec.h"
#include "registry_policies.h"
#include "registry_records.h"
#include "util.h"

/* An issuance as the writer sees it: everything that does not depend on
 * the store's state is prepared by the caller's thread, so the single
 * writer thread only checks and puts. */
struct issue_job {
    const registry_issue *is;
    char *record;      /* the certificate record, compact JSON */
    char fpr[65];
    char ixval[16 + CA_SERIAL_HEX_MAX]; /* issue-time-ordered index value */
    char now[32];
    unsigned char *spki; /* DER SubjectPublicKeyInfo of the new cert */
    int spki_len;
};

/* Candidates looked at for a replayed enrollment: a device re-enrolled
 * more often than this under one enrollment gets a new certificate. */
#define REPLAY_SCAN_MAX 256

/* DER SubjectPublicKeyInfo of a certificate (PEM or DER), malloc()ed. */
static int cert_spki(const char *pem, const uint8_t *der, size_t der_len,
                     unsigned char **out)
{
    X509 *x = NULL;
    int n = -1;

    *out = NULL;
    if (pem != NULL) {
        BIO *b = BIO_new_mem_buf(pem, -1);

        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else {
        const unsigned char *p = der;

        x = d2i_X509(NULL, &p, (long)der_len);
    }
    if (x != NULL)
        n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), out);
    X509_free(x);
    return n;
}

/* Inside the issuing write: whether the device (which exists) holds a
 * valid, unexpired certificate of this enrollment for the same key. If
 * so its serial and PEM go to the caller and AD_OK is returned;
 * AD_ENOTFOUND otherwise. */
static ad_err issue_replay(store_txn *tx, struct issue_job *job)
{
    const registry_issue *is = job->is;
    json_t *vals = NULL, *v, *cert = NULL;
    char na_now[32];
    size_t i;
    int more = 0;
    ad_err e, found = AD_ENOTFOUND;

    if (is->reused_serial == NULL || is->reused_pem == NULL ||
        job->spki == NULL)
        return AD_ENOTFOUND;
    util_time_rfc3339(is->now, na_now, sizeof(na_now));
    e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, is->device_id, NULL,
                         REPLAY_SCAN_MAX, &vals, &more);
    if (e != AD_OK)
        return e == AD_ENOTFOUND ? AD_ENOTFOUND : e;
    json_array_foreach(vals, i, v) {
        const char *ixv = json_string_value(v), *pem, *enr, *st, *na;
        unsigned char *spki = NULL;
        int n;

        if (ixv == NULL || strlen(ixv) <= 16)
            continue;
        e = store_get(tx, STORE_CERTS, ixv + 16, &cert);
        if (e == AD_ENOTFOUND)
            continue;
        if (e != AD_OK)
            break;
        pem = json_string_value(json_object_get(cert, "pem"));
        enr = json_string_value(json_object_get(cert, "enrollment"));
        st = json_string_value(json_object_get(cert, "status"));
        na = json_string_value(json_object_get(cert, "not_after"));
        /* RFC 3339 UTC text of one form compares as time. */
        if (pem && enr && st && na && strcmp(enr, is->enrollment_id) == 0 &&
            registry_cert_status_parse(st) == CERT_VALID &&
            strcmp(na, na_now) > 0 &&
            (n = cert_spki(pem, NULL, 0, &spki)) == job->spki_len &&
            memcmp(spki, job->spki, (size_t)n) == 0) {
            util_strlcpy(is->reused_serial, ixv + 16, CA_SERIAL_HEX_MAX);
            free(*is->reused_pem);
            *is->reused_pem = strdup(pem);
            found = *is->reused_pem ? AD_OK : AD_ENOMEM;
        }
        OPENSSL_free(spki);
        json_decref(cert);
        cert = NULL;
        if (found != AD_ENOTFOUND)
            break;
    }
    json_decref(vals);
    return e != AD_OK && e != AD_ENOTFOUND ? e : found;
}

/* The device must exist and be active; or, for an enrollment, it is
 * created (in the enrollment's groups) if absent. *created says which. */
/* ---- record states -------------------------------------------------------- */

static const char *const device_status_names[] = {
    [DEVICE_ACTIVE] = "active",
    [DEVICE_SUSPENDED] = "suspended",
    [DEVICE_REVOKED] = "revoked",
};

static const char *const cert_status_names[] = {
    [CERT_VALID] = "valid",
    [CERT_REVOKED] = "revoked",
    [CERT_EXPIRED] = "expired",
};

registry_device_status registry_device_status_parse(const char *text)
{
    int s;

    for (s = DEVICE_ACTIVE; text && s < DEVICE_STATUS_BAD; s++)
        if (strcmp(text, device_status_names[s]) == 0)
            return (registry_device_status)s;
    return DEVICE_STATUS_BAD;
}

const char *registry_device_status_name(registry_device_status s)
{
    return s < DEVICE_STATUS_BAD ? device_status_names[s] : "unknown";
}

registry_cert_status registry_cert_status_parse(const char *text)
{
    int s;

    for (s = CERT_VALID; text && s < CERT_STATUS_BAD; s++)
        if (strcmp(text, cert_status_names[s]) == 0)
            return (registry_cert_status)s;
    return CERT_STATUS_BAD;
}

const char *registry_cert_status_name(registry_cert_status s)
{
    return s < CERT_STATUS_BAD ? cert_status_names[s] : "unknown";
}

registry_device_status registry_device_status_of(const json_t *device)
{
    return registry_device_status_parse(
        json_string_value(json_object_get(device, "status")));
}

registry_cert_status registry_cert_status_of(const json_t *cert)
{
    return registry_cert_status_parse(
        json_string_value(json_object_get(cert, "status")));
}

static ad_err issue_device(store_txn *tx, struct issue_job *job,
                           const json_t *enr, int *created)
{
    const registry_issue *is = job->is;
    json_t *dev = NULL, *groups;
    const char *gw;
    ad_err e;

    *created = 0;
    e = store_get(tx, STORE_DEVICES, is->device_id, &dev);
    if (e == AD_OK) {
        switch (registry_device_status_of(dev)) {
        case DEVICE_SUSPENDED:
            e = AD_ESUSPENDED;
            break;
        case DEVICE_REVOKED:
            e = AD_EREVOKED;
            break;
        default:
            break;
        }
        json_decref(dev);
        return e;
    }
    if (e != AD_ENOTFOUND || !is->create_device)
        return e;
    groups = enr ? json_object_get(enr, "groups") : NULL;
    groups = groups ? json_deep_copy(groups) : json_array();
    dev = json_pack("{s:s, s:s, s:o, s:[], s:{}, s:s, s:s, s:s?}", "id",
                    is->device_id, "status",
                    registry_device_status_name(DEVICE_ACTIVE), "groups", groups,
                    "policies", "attributes", "created_at", job->now,
                    "updated_at", job->now, "enrollment", is->enrollment_id);
    if (dev == NULL || registry_set_incarnation(dev) != AD_OK) {
        json_decref(dev);
        return AD_ENOMEM;
    }
    /* A device born under an enrollment that names a gateway sits
     * behind it: checked here, in the same write, so a gateway deleted
     * since the enrollment was made refuses the issuance. */
    gw = enr ? json_string_value(json_object_get(enr, "gateway")) : NULL;
    if (gw && (strcmp(gw, is->device_id) == 0 ||
               json_object_set_new(dev, "gateway", json_string(gw)) != 0)) {
        json_decref(dev);
        return AD_EGATEWAY;
    }
    /* The enrollment's groups are read (and, in PostgreSQL, locked) in
     * this write: a group deleted since the enrollment was made refuses
     * the issuance rather than leaving a dangling name. */
    e = registry_refs_check(tx, NULL, groups, NULL, 0);
    if (e == AD_OK)
        e = store_put(tx, STORE_DEVICES, is->device_id, dev,
                      STORE_NOOVERWRITE);
    if (e == AD_OK)
        e = registry_refs_follow(tx, REGISTRY_REFS_DEVICE, is->device_id, NULL, dev);
    json_decref(dev);
    if (e == AD_OK && gw && (e = registry_gateway_touch(tx, gw)) == AD_OK)
        e = registry_child_link(tx, gw, is->device_id, 1);
    *created = e == AD_OK;
    return e;
}

/* AD_OK if the device exists and is active (AD_ENOTFOUND if absent). */
static ad_err replay_device_ok(store_txn *tx, const char *id)
{
    json_t *dev = NULL;
    ad_err e = store_get(tx, STORE_DEVICES, id, &dev);

    if (e == AD_OK && registry_device_status_of(dev) != DEVICE_ACTIVE)
        e = AD_ENOTFOUND; /* the usual path gives the refusal */
    json_decref(dev);
    return e;
}

static ad_err issue_write(store_txn *tx, void *arg)
{
    struct issue_job *job = arg;
    const registry_issue *is = job->is;
    const ca_issued *c = is->cert;
    json_t *enr = NULL, *detail = NULL;
    registry_enrollment typed;
    int created = 0;
    ad_err e = AD_OK;

    /* A retried write starts afresh. */
    if (is->reused_serial)
        is->reused_serial[0] = '\0';
    /* Every check comes before the first put. */
    if (is->enrollment_id) {
        e = store_get(tx, STORE_ENROLLMENTS, is->enrollment_id, &enr);
        if (e != AD_OK)
            goto out;
        /* A replay (the same device and key under the same enrollment,
         * its certificate still good) gets that certificate back and
         * spends nothing: decided here, so that two replays racing each
         * other, or a replay racing the last use, agree. An active
         * device is required, as for any issuance. */
        if (is->device_id && is->create_device &&
            (e = replay_device_ok(tx, is->device_id)) == AD_OK &&
            (e = issue_replay(tx, job)) != AD_ENOTFOUND) {
            if (e == AD_OK) {
                detail = json_pack("{s:s, s:s, s:b}", "device_id",
                                   is->device_id, "enrollment",
                                   is->enrollment_id, "reused", 1);
                e = store_audit(tx, is->actor, is->audit_action,
                                is->reused_serial, detail);
            }
            goto out;
        }
        if (e != AD_OK && e != AD_ENOTFOUND)
            goto out;
        /* Checked again here, inside the writer: two requests racing for
         * the last use cannot both pass. */
        if ((e = registry_enrollment_decode(enr, &typed)) != AD_OK ||
            (e = registry_enrollment_usable(&typed, is->now)) != AD_OK)
            goto out;
    }
    if (is->device_id &&
        (e = issue_device(tx, job, enr, &created)) != AD_OK)
        goto out;
    if (enr) {
        json_object_set_new(
            enr, "used",
            json_integer(json_integer_value(json_object_get(enr, "used")) + 1));
        if ((e = store_put(tx, STORE_ENROLLMENTS, is->enrollment_id, enr, 0)) !=
            AD_OK)
            goto out;
    }
    /* A serial collision (2^-159) must not overwrite a record. */
    if ((e = store_put_text(tx, STORE_CERTS, c->serial_hex, job->record,
                            strlen(job->record), STORE_NOOVERWRITE)) != AD_OK)
        goto out;
    if ((e = store_index_add(tx, STORE_IX_CERTS_BY_FPR, job->fpr,
                             c->serial_hex)) != AD_OK)
        goto out;
    if (is->device_id &&
        (e = store_index_add(tx, STORE_IX_CERTS_BY_DEVICE, is->device_id,
                             job->ixval)) != AD_OK)
        goto out;
    if (is->enrollment_id &&
        (e = store_index_add(tx, STORE_IX_CERTS_BY_ENROLLMENT,
                             is->enrollment_id, job->ixval)) != AD_OK)
        goto out;
    /* One audit entry per issuance; it also records the enrollment use
     * and whether the device was created by it. */
    detail = json_pack("{s:s?, s:s?, s:b}", "device_id", is->device_id,
                       "enrollment", is->enrollment_id, "device_created",
                       created);
    e = store_audit(tx, is->actor, is->audit_action, c->serial_hex, detail);
out:
    json_decref(detail);
    json_decref(enr);
    return e;
}

ad_err registry_commit_issue(store *st, const registry_issue *is)
{
    const ca_issued *c = is->cert;
    struct issue_job job;
    struct timespec ts;
    char nb[32], na[32];
    buf_t rec;
    ad_err e;

    memset(&job, 0, sizeof(job));
    job.is = is;
    util_time_rfc3339(is->now, job.now, sizeof(job.now));
    codec_hex_encode(c->sha256, sizeof(c->sha256), job.fpr, 0);
    util_time_rfc3339((time_t)c->not_before, nb, sizeof(nb));
    util_time_rfc3339((time_t)c->not_after, na, sizeof(na));
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(job.ixval, sizeof(job.ixval), "%016llx%s",
             (unsigned long long)ts.tv_sec * 1000000ull +
                 (unsigned long long)(ts.tv_nsec / 1000),
             c->serial_hex);
    /* Written directly (the same JSON jansson would print): this runs
     * for every certificate and a tree built only to be printed costs
     * more than the writing. */
    buf_init(&rec, 64 * 1024);
    buf_append_str(&rec, "{");
    util_json_kv(&rec, "serial", c->serial_hex);
    util_json_kv(&rec, "device_id", is->device_id);
    util_json_kv(&rec, "enrollment", is->enrollment_id);
    util_json_kv(&rec, "kind", is->kind);
    util_json_kv(&rec, "not_before", nb);
    util_json_kv(&rec, "not_after", na);
    util_json_kv(&rec, "status", registry_cert_status_name(CERT_VALID));
    util_json_kv(&rec, "issued_at", job.now);
    util_json_kv(&rec, "revoked_at", NULL);
    util_json_kv(&rec, "reason", NULL);
    util_json_kv(&rec, "fingerprint", job.fpr);
    util_json_kv(&rec, "pem", c->pem);
    buf_append_str(&rec, "}");
    job.record = buf_take(&rec, NULL);
    if (job.record == NULL)
        return AD_ENOMEM;
    if (is->reused_serial != NULL && is->reused_pem != NULL &&
        (job.spki_len = cert_spki(NULL, c->der, c->der_len, &job.spki)) <= 0)
        job.spki = NULL;
    e = store_write(st, issue_write, &job);
    free(job.record);
    OPENSSL_free(job.spki);
    return e;
}

static ad_err device_status_err(const json_t *dev)
{
    switch (registry_device_status_of(dev)) {
    case DEVICE_ACTIVE:
        return AD_OK;
    case DEVICE_SUSPENDED:
        return AD_ESUSPENDED;
    case DEVICE_REVOKED:
        return AD_EREVOKED;
    default:
        return AD_ESTORE;
    }
}

ad_err registry_device_issuable(store *st, const char *device_id)
{
    store_txn *tx = NULL;
    json_t *dev = NULL;
    ad_err e;

    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_DEVICES, device_id, &dev);
    store_read_end(tx);
    if (e == AD_ENOTFOUND)
        return AD_OK;
    if (e != AD_OK)
        return e;
    e = device_status_err(dev);
    json_decref(dev);
    return e;
}

ad_err registry_device_by_cert(store *st, const uint8_t *der, size_t len,
                               time_t now, registry_cert_owner *owner)
{
    ca_cert_info info;
    store_txn *tx = NULL;
    json_t *rec = NULL, *dev = NULL;
    const char *fpr, *status, *dev_id, *na, *enr_id;
    char want[65];
    time_t not_after;
    ad_err e;

    if (owner)
        memset(owner, 0, sizeof(*owner));
    if (ca_cert_inspect(der, len, &info) != AD_OK)
        return AD_EBADCRED;
    codec_hex_encode(info.sha256, sizeof(info.sha256), want, 0);
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_CERTS, info.serial_hex, &rec);
    if (e != AD_OK) {
        e = e == AD_ENOTFOUND ? AD_EBADCRED : e;
        goto out;
    }
    fpr = json_string_value(json_object_get(rec, "fingerprint"));
    status = json_string_value(json_object_get(rec, "status"));
    dev_id = json_string_value(json_object_get(rec, "device_id"));
    na = json_string_value(json_object_get(rec, "not_after"));
    /* The serial alone is not proof: the whole certificate must be the
     * one we issued. */
    if (fpr == NULL || strcmp(fpr, want) != 0 || dev_id == NULL ||
        na == NULL || util_parse_rfc3339(na, &not_after) != 0) {
        e = AD_EBADCRED;
        goto out;
    }
    if (registry_cert_status_parse(status) == CERT_REVOKED) {
        e = AD_EBADCRED;
        goto out;
    }
    if (now > not_after) {
        e = AD_EBADCRED;
        goto out;
    }
    e = store_get(tx, STORE_DEVICES, dev_id, &dev);
    if (e != AD_OK) {
        e = e == AD_ENOTFOUND ? AD_EBADCRED : e;
        goto out;
    }
    if ((e = device_status_err(dev)) != AD_OK)
        goto out;
    if (owner) {
        enr_id = json_string_value(json_object_get(rec, "enrollment"));
        util_strlcpy(owner->device_id, dev_id, sizeof(owner->device_id));
        util_strlcpy(owner->enrollment_id, enr_id ? enr_id : "",
                     sizeof(owner->enrollment_id));
    }
out:
    store_read_end(tx);
    json_decref(rec);
    json_decref(dev);
    return e;
}

const char *registry_ix_serial(const char *value)
{
    return value && strlen(value) > 16 ? value + 16 : "";
}

json_t *registry_cert_view(const json_t *cert, time_t now)
{
    json_t *v = json_deep_copy(cert);
    const char *status, *na;
    time_t t;

    if (v == NULL)
        return NULL;
    status = json_string_value(json_object_get(v, "status"));
    na = json_string_value(json_object_get(v, "not_after"));
    if (registry_cert_status_parse(status) == CERT_VALID && na &&
        util_parse_rfc3339(na, &t) == 0 && now > t)
        json_object_set_new(
            v, "status", json_string(registry_cert_status_name(CERT_EXPIRED)));
    return v;
}

static json_t *apikey_view(const json_t *key)
{
    return registry_view_without(key, "hash");
}

static const registry_hashed_kind apikeys = {
    STORE_APIKEYS, STORE_IX_APIKEY_HASHES, "hash", "key",
    "apikey.create", "apikey.delete", apikey_view, NULL};

ad_err registry_apikey_create(store *st, const char *actor, const char *name,
                              const char *role, json_t **view, char *err,
                              size_t errlen)
{
    char id[24], key[64], digest[65], now[32];
    json_t *rec = NULL;
    ad_err e;

    *view = NULL;
    if (!util_name_valid(name))
        return ad_errf(AD_EFIELD, err, errlen,
                       "name is required: 1..128 bytes of [A-Za-z0-9._:-]");
    if (role == NULL ||
        (strcmp(role, "admin") != 0 && strcmp(role, "provisioner") != 0 &&
         strcmp(role, "broker") != 0))
        return ad_errf(AD_EFIELD, err, errlen,
                       "role must be admin, provisioner or broker");
    id[0] = 'k';
    id[1] = '_';
    if (util_random_hex(8, id + 2, sizeof(id) - 2) != AD_OK ||
        util_random_token("ak_", 32, key, sizeof(key)) != AD_OK)
        return AD_EINTERNAL;
    /* 256 random bits: SHA-256 is enough to store it (no brute force). */
    util_sha256_hex(key, strlen(key), digest);
    util_time_rfc3339(time(NULL), now, sizeof(now));
    rec = json_pack("{s:s, s:s, s:s, s:s, s:s}", "id", id, "name", name,
                    "role", role, "created_at", now, "hash", digest);
    if (rec == NULL)
        return AD_ENOMEM;
    e = registry_hashed_create(st, &apikeys, actor, id, rec, key, view);
    OPENSSL_cleanse(key, sizeof(key));
    json_decref(rec);
    return e;
}

ad_err registry_revoke_cert(store_txn *tx, const char *actor,
                            const char *serial, const char *reason,
                            json_t *revoked)
{
    json_t *rec = NULL, *crl = NULL;
    char now[32];
    ad_err e;

    if ((e = store_get(tx, STORE_CERTS, serial, &rec)) != AD_OK)
        return e;
    if (registry_cert_status_of(rec) == CERT_REVOKED) {
        json_decref(rec);
        return AD_ECONFLICT;
    }
    util_time_rfc3339(time(NULL), now, sizeof(now));
    json_object_set_new(rec, "status",
                        json_string(registry_cert_status_name(CERT_REVOKED)));
    json_object_set_new(rec, "revoked_at", json_string(now));
    json_object_set_new(rec, "reason", json_string(reason));
    e = store_put(tx, STORE_CERTS, serial, rec, 0);
    /* The CRL is built from this table alone, not from a scan of all
     * certificates. */
    crl = json_pack("{s:s, s:s, s:s}", "serial", serial, "revoked_at", now,
                    "reason", reason);
    if (e == AD_OK)
        e = crl ? store_put(tx, STORE_REVOKED_CERTS, serial, crl, 0)
                : AD_ENOMEM;
    if (e == AD_OK) {
        json_t *detail = json_pack("{s:O, s:s}", "device_id",
                                   json_object_get(rec, "device_id"),
                                   "reason", reason);
        e = store_audit(tx, actor, "cert.revoke", serial, detail);
        json_decref(detail);
    }
    if (e == AD_OK)
        e = registry_crl_advance(tx, NULL);
    if (e == AD_OK && revoked)
        json_array_append_new(
            revoked, json_pack("{s:s, s:O?, s:O?, s:s, s:s}", "serial", serial,
                               "fingerprint", json_object_get(rec, "fingerprint"),
                               "device_id", json_object_get(rec, "device_id"),
                               "revoked_at", now, "reason", reason));
    json_decref(crl);
    json_decref(rec);
    return e;
}

ad_err registry_revoke_device_certs(store_txn *tx, const char *actor,
                                    const char *device_id, const char *reason,
                                    json_t *revoked)
{
    json_t *vals = NULL, *v;
    const char *after = NULL;
    char cursor[16 + CA_SERIAL_HEX_MAX + 1] = "";
    size_t i;
    int more = 1;
    ad_err e = AD_OK;

    while (more && e == AD_OK) {
        e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, device_id, after,
                             256, &vals, &more);
        if (e != AD_OK)
            break;
        json_array_foreach(vals, i, v) {
            util_strlcpy(cursor, json_string_value(v), sizeof(cursor));
            e = registry_revoke_cert(tx, actor,
                                     registry_ix_serial(json_string_value(v)),
                                     reason, revoked);
            /* Already revoked or gone: nothing to do for that one. */
            if (e == AD_ECONFLICT || e == AD_ENOTFOUND)
                e = AD_OK;
            if (e != AD_OK)
                break;
        }
        json_decref(vals);
        vals = NULL;
        after = cursor;
    }
    return e;
}

ad_err registry_set_incarnation(json_t *device)
{
    char inc[REGISTRY_INCARNATION_MAX];
    ad_err e = util_random_hex(8, inc, sizeof(inc));

    if (e == AD_OK &&
        json_object_set_new(device, "incarnation", json_string(inc)) != 0)
        e = AD_ENOMEM;
    return e;
}

ad_err registry_crl_advance(store_txn *tx, uint64_t *number)
{
    json_t *meta = NULL;
    uint64_t next;
    ad_err e;

    e = store_get(tx, STORE_META, "crl", &meta);
    if (e == AD_ENOTFOUND) {
        meta = json_object();
        e = meta ? AD_OK : AD_ENOMEM;
    }
    if (e != AD_OK)
        return e;
    next = (uint64_t)json_integer_value(json_object_get(meta, "number")) + 1;
    json_object_set_new(meta, "number", json_integer((json_int_t)next));
    e = store_put(tx, STORE_META, "crl", meta, 0);
    json_decref(meta);
    if (e == AD_OK && number)
        *number = next;
    return e;
}

ad_err registry_crl_number(store *st, uint64_t *number)
{
    store_txn *tx = NULL;
    json_t *meta = NULL;
    ad_err e;

    *number = 0;
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_META, "crl", &meta);
    if (e == AD_OK)
        *number = (uint64_t)json_integer_value(json_object_get(meta, "number"));
    else if (e == AD_ENOTFOUND)
        e = AD_OK;
    json_decref(meta);
    store_read_end(tx);
    return e;
}

ad_err registry_event_revoked(store_txn *tx, const json_t *revoked,
                              const char *device, const char *reason)
{
    json_t *serials = json_array(), *v, *data;
    size_t i;
    ad_err e;

    if (serials == NULL)
        return AD_ENOMEM;
    json_array_foreach(revoked, i, v)
        json_array_append(serials, json_object_get(v, "serial"));
    if (device == NULL)
        device = json_string_value(
            json_object_get(json_array_get(revoked, 0), "device_id"));
    data = json_pack("{s:s?, s:o, s:s}", "device", device, "serials", serials,
                     "reason", reason);
    if (data == NULL)
        return AD_ENOMEM;
    e = store_event_append(tx, "revoked", data);
    json_decref(data);
    return e;
}

ad_err registry_event(store_txn *tx, const char *type, const char *key,
                      const char *value)
{
    json_t *data = json_pack("{s:s}", key, value);
    ad_err e;

    if (data == NULL)
        return AD_ENOMEM;
    e = store_event_append(tx, type, data);
    json_decref(data);
    return e;
}

ad_err registry_apikey_authenticate(store *st, const char *key,
                                    char id[REGISTRY_APIKEY_ID_MAX],
                                    char name[REGISTRY_APIKEY_NAME_MAX],
                                    char role[REGISTRY_ROLE_MAX])
{
    const char *hash, *r, *n;
    store_txn *tx = NULL;
    json_t *rec = NULL;
    char digest[65];
    ad_err e;

    id[0] = name[0] = role[0] = '\0';
    if (strncmp(key, "ak_", 3) != 0 || strlen(key) > 200)
        return AD_EBADCRED;
    /* Keys are 256-bit random, so a plain SHA-256 is a safe lookup key;
     * the stored hash is still compared in constant time below. */
    util_sha256_hex(key, strlen(key), digest);
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_index_first(tx, STORE_IX_APIKEY_HASHES, digest, id,
                          REGISTRY_APIKEY_ID_MAX);
    if (e == AD_OK)
        e = store_get(tx, STORE_APIKEYS, id, &rec);
    if (e == AD_OK) {
        hash = json_string_value(json_object_get(rec, "hash"));
        r = json_string_value(json_object_get(rec, "role"));
        n = json_string_value(json_object_get(rec, "name"));
        if (hash == NULL || r == NULL || !util_secret_equal(digest, hash)) {
            e = AD_EBADCRED;
        } else {
            util_strlcpy(role, r, REGISTRY_ROLE_MAX);
            util_strlcpy(name, n ? n : "", REGISTRY_APIKEY_NAME_MAX);
        }
    }
    if (e == AD_ENOTFOUND)
        e = AD_EBADCRED;
    if (e != AD_OK)
        id[0] = '\0';
    json_decref(rec);
    store_read_end(tx);
    return e;
}

int registry_names_valid(const json_t *names)
{
    size_t i;
    json_t *v;

    if (!json_is_array(names) || json_array_size(names) > 64)
        return 0;
    json_array_foreach(names, i, v)
        if (!util_name_valid(json_string_value(v)))
            return 0;
    return 1;
}

/* ---- certificates ---------------------------------------------------- */

ad_err registry_cert_get(store *st, const char *serial, json_t **view)
{
    json_t *rec = NULL;
    ad_err e = registry_record_get(st, STORE_CERTS, serial, &rec);

    *view = NULL;
    if (e == AD_OK)
        *view = registry_cert_view(rec, time(NULL));
    json_decref(rec);
    return e != AD_OK ? e : *view ? AD_OK : AD_ENOMEM;
}

/* Whether a certificate view passes the filter. */
static int cert_passes(const json_t *view, const registry_cert_filter *f)
{
    const char *dev = json_string_value(json_object_get(view, "device_id"));
    const char *en = json_string_value(json_object_get(view, "enrollment"));

    return (f->status == CERT_STATUS_BAD ||
            registry_cert_status_of(view) == f->status) &&
           (f->device == NULL || (dev && strcmp(dev, f->device) == 0)) &&
           (f->enrollment == NULL || (en && strcmp(en, f->enrollment) == 0));
}

ad_err registry_certs_list(store *st, const registry_cert_filter *f,
                           const registry_page *pg, registry_list *out)
{
    const char *after = pg->after;
    store_txn *tx = NULL;
    json_t *items = json_array(), *page = NULL, *v;
    time_t now = time(NULL);
    char cursor_buf[16 + CA_SERIAL_HEX_MAX + 1];
    size_t i;
    int more = 0;
    ad_err e;

    out->items = out->next = NULL;
    if (items == NULL)
        return AD_ENOMEM;
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        goto fail;
    /* Walk pages of the narrowest source until limit items pass the
     * remaining filters, so that "next" is always a resumable cursor. */
    for (;;) {
        const char *cursor = after;
        int src_more = 0;

        json_decref(page);
        page = NULL;
        if (f->device)
            e = store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, f->device,
                                 cursor, pg->limit, &page, &src_more);
        else if (f->enrollment)
            e = store_index_list(tx, STORE_IX_CERTS_BY_ENROLLMENT,
                                 f->enrollment, cursor, pg->limit, &page,
                                 &src_more);
        else
            e = store_list(tx, STORE_CERTS, "", cursor, pg->limit, &page,
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

            if (json_array_size(items) >= pg->limit) {
                more = 1;
                break;
            }
            after = key; /* the page cursor follows the source */
            if (json_is_string(v)) {
                if (store_get(tx, STORE_CERTS, registry_ix_serial(key),
                              &rec) != AD_OK)
                    continue;
            } else {
                rec = json_incref(v);
            }
            view = registry_cert_view(rec, now);
            json_decref(rec);
            if (!cert_passes(view, f)) {
                json_decref(view);
                continue;
            }
            json_array_append_new(items, view);
        }
        if (more || !src_more)
            break;
        if (json_array_size(items) >= pg->limit) {
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
    out->items = items;
    out->next = more && cursor_buf[0] ? json_string(cursor_buf) : json_null();
    return AD_OK;
fail:
    json_decref(page);
    json_decref(items);
    store_read_end(tx);
    return e;
}

struct cert_revoke {
    const char *actor;
    const char *serial;
    const char *reason;
    json_t *revoked;
};

static ad_err cert_revoke_write(store_txn *tx, void *arg)
{
    struct cert_revoke *w = arg;
    ad_err e;

    json_array_clear(w->revoked); /* a retried write starts afresh */
    e = registry_revoke_cert(tx, w->actor, w->serial, w->reason, w->revoked);
    if (e == AD_OK)
        e = registry_event_revoked(tx, w->revoked, NULL, w->reason);
    return e;
}

ad_err registry_cert_revoke(store *st, const char *actor, const char *serial,
                            const char *reason, json_t **view)
{
    struct cert_revoke w;
    ad_err e;

    *view = NULL;
    w.actor = actor;
    w.serial = serial;
    w.reason = reason;
    if ((w.revoked = json_array()) == NULL)
        return AD_ENOMEM;
    e = store_write(st, cert_revoke_write, &w);
    json_decref(w.revoked);
    if (e != AD_OK)
        return e;
    /* Revoked is durable whatever this read says. */
    if (registry_cert_get(st, serial, view) != AD_OK)
        *view = json_pack("{s:s, s:s}", "serial", serial, "status",
                          registry_cert_status_name(CERT_REVOKED));
    return AD_OK;
}

/* ---- API keys and the audit log -------------------------------------- */

ad_err registry_apikeys_list(store *st, const registry_page *pg,
                             registry_list *out)
{
    return registry_hashed_list(st, &apikeys, pg, out);
}

ad_err registry_apikey_delete(store *st, const char *actor, const char *id)
{
    return registry_hashed_delete(st, &apikeys, actor, id);
}

/* since/until: RFC 3339 UTC or Unix seconds. */
static int audit_time_arg(const char *s, time_t *t)
{
    uint64_t n;

    if (s[0] >= '0' && s[0] <= '9' && strchr(s, '-') == NULL) {
        if (codec_parse_u64(s, (uint64_t)INT32_MAX * 4, &n) != 0)
            return -1;
        *t = (time_t)n;
        return 0;
    }
    return util_parse_rfc3339(s, t);
}

static int audit_match(const json_t *it, const registry_audit_filter *f,
                       const time_t *since, const time_t *until)
{
    const char *action = json_string_value(json_object_get(it, "action"));
    const char *s;
    time_t t;

    if (f->action) {
        size_t n = strlen(f->action);

        if (action == NULL)
            return 0;
        /* "device.*": the object's every verb. */
        if (n >= 2 && strcmp(f->action + n - 2, ".*") == 0
                ? strncmp(action, f->action, n - 1) != 0
                : strcmp(action, f->action) != 0)
            return 0;
    }
    if (f->actor) {
        size_t n = strlen(f->actor);

        /* "apikey:ops" also names every key called ops
         * ("apikey:ops/k_..."). */
        s = json_string_value(json_object_get(it, "actor"));
        if (s == NULL ||
            (strcmp(s, f->actor) != 0 &&
             (strchr(f->actor, '/') != NULL || strncmp(s, f->actor, n) != 0 ||
              s[n] != '/')))
            return 0;
    }
    if (f->target && ((s = json_string_value(json_object_get(it, "target"))) ==
                          NULL ||
                      strcmp(s, f->target) != 0))
        return 0;
    if (since || until) {
        s = json_string_value(json_object_get(it, "time"));
        if (s == NULL || util_parse_rfc3339(s, &t) != 0)
            return 0;
        if ((since && t < *since) || (until && t >= *until))
            return 0;
    }
    return 1;
}

/* Entries read from the store at a time while filtering. */
enum { AUDIT_CHUNK = 500 };

ad_err registry_audit_list(store *st, const registry_page *pg,
                           const registry_audit_filter *f,
                           registry_list *out, char *err, size_t errlen)
{
    uint64_t cur = 0;
    time_t since = 0, until = 0;
    store_txn *tx = NULL;
    json_t *items = NULL, *chunk = NULL, *it;
    size_t examined = 0, i;
    int more = 0, done = 0, full = 0;
    ad_err e;

    out->items = out->next = NULL;
    if (pg->after && codec_parse_u64(pg->after, UINT64_MAX - 1, &cur) != 0)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "after must be an audit seq number");
    if (f->since && audit_time_arg(f->since, &since) != 0)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "since must be RFC 3339 UTC or Unix seconds");
    if (f->until && audit_time_arg(f->until, &until) != 0)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "until must be RFC 3339 UTC or Unix seconds");
    if ((items = json_array()) == NULL)
        return AD_ENOMEM;
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        goto out;
    /* Newest first reads from the end; either way at most SCAN_MAX
     * entries, so one request costs the same on a log of any size. */
    while (!full && !done && examined < REGISTRY_AUDIT_SCAN_MAX) {
        size_t want = REGISTRY_AUDIT_SCAN_MAX - examined, n;

        if (want > AUDIT_CHUNK)
            want = AUDIT_CHUNK;
        json_decref(chunk);
        chunk = NULL;
        if (f->desc && pg->after && cur <= 1) {
            done = 1; /* nothing is older than seq 1 */
            break;
        }
        e = f->desc ? store_audit_rlist(tx, cur, want, &chunk, &more)
                    : store_audit_list(tx, cur, want, &chunk, &more);
        if (e != AD_OK)
            goto out;
        n = json_array_size(chunk);
        json_array_foreach(chunk, i, it) {
            examined++;
            cur = (uint64_t)json_integer_value(json_object_get(it, "seq"));
            if (audit_match(it, f, f->since ? &since : NULL,
                            f->until ? &until : NULL) &&
                json_array_append(items, it) != 0) {
                e = AD_ENOMEM;
                goto out;
            }
            if (json_array_size(items) >= pg->limit) {
                full = 1;
                done = i + 1 == n && !more;
                break;
            }
        }
        if (!full && !more)
            done = 1;
    }
    out->items = items;
    items = NULL;
    if (done || cur == 0) {
        out->next = json_null();
    } else {
        char buf[32];

        snprintf(buf, sizeof(buf), "%llu", (unsigned long long)cur);
        out->next = json_string(buf);
    }
out:
    store_read_end(tx);
    json_decref(chunk);
    json_decref(items);
    return e;
}
