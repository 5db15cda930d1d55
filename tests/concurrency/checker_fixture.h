/* A small registry for the checker's concurrency tests, written straight
 * into a real store the way the daemon's routes write it: one policy,
 * devices with a certificate (indexed by device and fingerprint), a
 * device secret (argon2id, at a low cost so that checks stay fast) and
 * a token service with one key, each device holding a minted token. */
#ifndef AUTHD_TESTS_CHECKER_FIXTURE_H
#define AUTHD_TESTS_CHECKER_FIXTURE_H

#include <sys/stat.h>

#include <argon2.h>

#include "../../authd/checker.h"
#include "../../common/codec.h"
#include "../../authd/registry.h"
#include "../../authd/tokens.h"
#include "../../authd/util.h"
#include "harness.h"

enum { FIX_DEVICES_MAX = 16 };

typedef struct {
    char id[32];
    char serial[CA_SERIAL_HEX_MAX];
    char fpr[65];
    char secret[40];
    char incarnation[REGISTRY_INCARNATION_MAX];
    char *token;
} fix_device;

typedef struct {
    char dir[256];
    store *st;
    tokens *tk;
    checker *ck;
    size_t ndevices;
    fix_device dev[FIX_DEVICES_MAX];
} fixture;

static const char FIX_POLICY[] =
    "{\"statements\":["
    "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
    "\"client_ids\":[\"${device.id}\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
    "\"topics\":[\"devices/${device.id}/telemetry/#\"]},"
    "{\"effect\":\"deny\",\"actions\":[\"publish\"],"
    "\"topics\":[\"devices/${device.id}/telemetry/secret\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"subscribe\",\"receive\"],"
    "\"topics\":[\"devices/${device.id}/cmd/+\"]}]}";

struct fix_put {
    store_table table;
    const char *key;
    json_t *rec;
    store_index ix;
    const char *ix_key, *ix_val; /* optional index value */
    const char *ix_key2, *ix_val2; /* optional: certificate by fingerprint */
};

static inline ad_err fix_put_write(store_txn *tx, void *arg)
{
    struct fix_put *p = arg;
    ad_err e = store_put(tx, p->table, p->key, p->rec, 0);

    if (e == AD_OK && p->ix_key)
        e = store_index_add(tx, p->ix, p->ix_key, p->ix_val);
    if (e == AD_OK && p->ix_key2)
        e = store_index_add(tx, STORE_IX_CERTS_BY_FPR, p->ix_key2, p->ix_val2);
    return e;
}

/* Puts one record (stealing rec), optionally with index values. */
static inline int fix_put(fixture *f, store_table t, const char *key,
                          json_t *rec)
{
    struct fix_put p;
    ad_err e;

    memset(&p, 0, sizeof(p));
    p.table = t;
    p.key = key;
    p.rec = rec;
    e = rec ? store_write(f->st, fix_put_write, &p) : AD_ENOMEM;
    json_decref(rec);
    return e == AD_OK;
}

/* Sets the stored status of a device ("active" or "suspended"). The
 * caller then calls checker_forget_device, as the admin routes do. */
struct fix_status {
    const char *id, *status;
};

static inline ad_err fix_status_write(store_txn *tx, void *arg)
{
    struct fix_status *s = arg;
    json_t *dev = NULL;
    ad_err e = store_get(tx, STORE_DEVICES, s->id, &dev);

    if (e == AD_OK) {
        json_object_set_new(dev, "status", json_string(s->status));
        e = store_put(tx, STORE_DEVICES, s->id, dev, 0);
    }
    json_decref(dev);
    return e;
}

static inline int fix_set_status(fixture *f, const char *id,
                                 const char *status)
{
    struct fix_status s = {id, status};

    return store_write(f->st, fix_status_write, &s) == AD_OK;
}

/* Adds a device with a certificate, a secret and a token. */
static inline int fix_add_device(fixture *f, const char *id)
{
    fix_device *d;
    json_t *dev, *cert;
    struct fix_put p;
    uint8_t salt[16], raw[20];
    char hash[160], ixval[80], not_after[32];
    int64_t exp;

    if (f->ndevices >= FIX_DEVICES_MAX)
        return 0;
    d = &f->dev[f->ndevices];
    util_strlcpy(d->id, id, sizeof(d->id));
    if (util_random_hex(16, d->secret, sizeof(d->secret)) != AD_OK ||
        util_random_bytes(raw, sizeof(raw)) != 0 ||
        util_random_bytes(salt, sizeof(salt)) != 0)
        return 0;
    raw[0] = (uint8_t)((raw[0] & 0x7f) | 0x10); /* positive, 20 bytes */
    codec_hex_encode(raw, sizeof(raw), d->serial, 0);
    util_sha256_hex(raw, sizeof(raw), d->fpr);

    dev = json_pack("{s:s, s:s, s:[s], s:[], s:{}}", "id", id, "status",
                    "active", "policies", "p1", "groups", "attributes");
    if (dev == NULL || registry_set_incarnation(dev) != AD_OK) {
        json_decref(dev);
        return 0;
    }
    util_strlcpy(d->incarnation,
                 json_string_value(json_object_get(dev, "incarnation")),
                 sizeof(d->incarnation));
    if (!fix_put(f, STORE_DEVICES, id, dev))
        return 0;

    /* A cheap argon2id (1 pass, 64 KiB): the code path is the daemon's,
     * only the cost parameters in the encoded hash differ. */
    if (argon2id_hash_encoded(1, 64, 1, d->secret, strlen(d->secret), salt,
                              sizeof(salt), 32, hash,
                              sizeof(hash)) != ARGON2_OK ||
        !fix_put(f, STORE_DEVICE_SECRETS, id,
                 json_pack("{s:s}", "argon2id", hash)))
        return 0;

    util_time_rfc3339(time(NULL) + 86400, not_after, sizeof(not_after));
    cert = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "serial", d->serial,
                     "fingerprint", d->fpr, "not_after", not_after,
                     "device_id", id, "status", "valid", "kind", "device");
    snprintf(ixval, sizeof(ixval), "%016x%s", 1u, d->serial);
    memset(&p, 0, sizeof(p));
    p.table = STORE_CERTS;
    p.key = d->serial;
    p.rec = cert;
    p.ix = STORE_IX_CERTS_BY_DEVICE;
    p.ix_key = id;
    p.ix_val = ixval;
    p.ix_key2 = d->fpr;
    p.ix_val2 = d->serial;
    if (cert == NULL || store_write(f->st, fix_put_write, &p) != AD_OK) {
        json_decref(cert);
        return 0;
    }
    json_decref(cert);

    {
        char scope[100];

        snprintf(scope, sizeof(scope), "publish:devices/%s/telemetry/#", id);
        if (tokens_mint(f->tk, id, d->incarnation, scope, NULL, NULL,
                        (int64_t)time(NULL), &d->token, &exp) != AD_OK)
            return 0;
    }
    f->ndevices++;
    return 1;
}

static inline int fix_open(fixture *f, const char *name)
{
    tokens_config cfg;
    char keydir[300], path[400], err[256] = "", *pem;
    json_t *doc;
    int good;

    memset(f, 0, sizeof(*f));
    if (conc_tmpdir(name, f->dir, sizeof(f->dir)) != 0)
        return 0;
    snprintf(keydir, sizeof(keydir), "%s/tokens", f->dir);
    snprintf(path, sizeof(path), "%s/k0.key", keydir);
    if (mkdir(keydir, 0700) != 0 || (pem = tok_new_key_pem()) == NULL)
        return 0;
    good = util_write_file(path, pem, strlen(pem), 0600) == 0;
    free(pem);
    if (!good || store_open(f->dir, 64, &f->st, err, sizeof(err)) != AD_OK) {
        tap_diag("fixture: %s", err);
        return 0;
    }
    memset(&cfg, 0, sizeof(cfg));
    cfg.dir = keydir;
    cfg.issuer = "https://authd.test";
    cfg.audience = "mqtt";
    cfg.ttl = 3600;
    if (tokens_open(&cfg, f->st, &f->tk, err, sizeof(err)) != AD_OK) {
        tap_diag("fixture: %s", err);
        return 0;
    }
    if (checker_open(f->st, &(checker_opts){60, 0, 0}, &f->ck) != AD_OK)
        return 0;
    checker_set_tokens(f->ck, f->tk);
    doc = json_loads(FIX_POLICY, 0, NULL);
    if (doc == NULL)
        return 0;
    return fix_put(f, STORE_POLICIES, "p1",
                   json_pack("{s:s, s:o}", "name", "p1", "document", doc));
}

static inline void fix_close(fixture *f)
{
    size_t i;

    checker_close(f->ck);
    tokens_close(f->tk);
    store_close(f->st);
    for (i = 0; i < f->ndevices; i++)
        free(f->dev[i].token);
    if (f->dir[0])
        conc_rmdir(f->dir);
    memset(f, 0, sizeof(*f));
}

#endif
