/* See identity.h. Certificates are cached under two keys, "s:<serial>"
 * and "f:<fingerprint>", each entry a copy of what a check needs; a
 * revocation forgets both. Unknown identifiers are not cached: they
 * cost one store read each, and cannot fill the cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "../common/codec.h"
#include "identity.h"
#include "ratelimit.h"
#include "registry.h"
#include "registry.h"
#include "secret_hash.h"
#include "util.h"

enum { CERT_KEY_MAX = 80 };

struct identity {
    store *st;
    cache *certs;      /* "s:<serial>" / "f:<fingerprint>" -> cert_rec */
    devcache *devices;
    /* Keys the in-memory record of verified device secrets, so a
     * memory dump does not give a fast offline check of a secret. */
    uint8_t mac_key[32];
    rl *limits;        /* the argon2id gate and back-off, or NULL */
    void (*race_hook)(void *arg); /* tests only */
    void *race_arg;
};

ad_err identity_open(store *st, size_t cert_budget, devcache *dc,
                     identity **out)
{
    identity *id;
    ad_err e;

    *out = NULL;
    id = calloc(1, sizeof(*id));
    if (id == NULL)
        return AD_ENOMEM;
    id->st = st;
    id->devices = dc;
    if (RAND_bytes(id->mac_key, sizeof(id->mac_key)) != 1) {
        free(id);
        return AD_EINTERNAL;
    }
    if ((e = cache_open(cert_budget, sizeof(cert_rec), NULL, &id->certs)) !=
        AD_OK) {
        identity_close(id);
        return e;
    }
    *out = id;
    return AD_OK;
}

void identity_close(identity *id)
{
    if (id == NULL)
        return;
    cache_close(id->certs);
    OPENSSL_cleanse(id->mac_key, sizeof(id->mac_key));
    free(id);
}

void identity_set_limits(identity *id, rl *limits)
{
    id->limits = limits;
}

void identity_set_race_hook(identity *id, void (*hook)(void *arg), void *arg)
{
    id->race_hook = hook;
    id->race_arg = arg;
}

static void race_point(identity *id)
{
    if (id->race_hook)
        id->race_hook(id->race_arg);
}

void identity_get_stats(identity *id, cache_stats *certs)
{
    cache_get_stats(id->certs, certs);
}

/* ---- certificates -------------------------------------------------------- */

/* A SHA-256 fingerprint as brokers print it (either case, ':' between
 * bytes allowed) into lowercase hex. 0 if it is not 32 bytes of hex. */
static int fingerprint_normalize(const char *in, char out[65])
{
    char digits[64];
    uint8_t raw[32];
    size_t n = 0, len = 0;

    for (; *in; in++) {
        if (*in == ':')
            continue;
        if (n == sizeof(digits))
            return 0;
        digits[n++] = *in;
    }
    if (codec_hex_decode(digits, n, raw, sizeof(raw), &len) != 0 ||
        len != sizeof(raw))
        return 0;
    codec_hex_encode(raw, sizeof(raw), out, 0);
    return 1;
}

/* Reads a certificate record. */
static ad_err cert_load(identity *id, const char *serial, const char *fpr,
                        cert_rec *e)
{
    store_txn *tx = NULL;
    json_t *rec = NULL;
    char found[CA_SERIAL_HEX_MAX + 1];
    const char *s, *na, *dev, *st;
    time_t t;
    ad_err err;

    memset(e, 0, sizeof(*e));
    if ((err = store_read_begin(id->st, &tx)) != AD_OK)
        return err;
    if (serial == NULL) {
        err = store_index_first(tx, STORE_IX_CERTS_BY_FPR, fpr, found,
                                sizeof(found));
        serial = found;
    } else {
        err = AD_OK;
    }
    if (err == AD_OK)
        err = store_get(tx, STORE_CERTS, serial, &rec);
    store_read_end(tx);
    if (err != AD_OK)
        return err;
    s = json_string_value(json_object_get(rec, "fingerprint"));
    na = json_string_value(json_object_get(rec, "not_after"));
    dev = json_string_value(json_object_get(rec, "device_id"));
    st = json_string_value(json_object_get(rec, "status"));
    if (s == NULL || na == NULL || util_parse_rfc3339(na, &t) != 0 ||
        (fpr && strcmp(fpr, s) != 0)) {
        json_decref(rec);
        return AD_ENOTFOUND;
    }
    util_strlcpy(e->serial, serial, sizeof(e->serial));
    util_strlcpy(e->fpr, s, sizeof(e->fpr));
    util_strlcpy(e->device, dev ? dev : "", sizeof(e->device));
    e->not_after = (int64_t)t;
    e->revoked = registry_cert_status_parse(st) == CERT_REVOKED;
    if (e->revoked) {
        const char *ra = json_string_value(json_object_get(rec, "revoked_at"));
        const char *rn = json_string_value(json_object_get(rec, "reason"));
        ca_reason code = CA_REASON_UNSPECIFIED;

        if (ra && util_parse_rfc3339(ra, &t) == 0)
            e->revoked_at = (int64_t)t;
        if (rn && ca_reason_from_name(rn, &code) == AD_OK)
            e->reason = (int)code;
    }
    json_decref(rec);
    return AD_OK;
}

static int copy_cert(void *record, void *arg)
{
    memcpy(arg, record, sizeof(cert_rec));
    return 0;
}

ad_err identity_cert(identity *id, const char *serial, const char *fpr,
                     cert_rec *out)
{
    char key[CERT_KEY_MAX];
    uint64_t noted;
    int tries;
    ad_err err;

    if (serial)
        snprintf(key, sizeof(key), "s:%s", serial);
    else
        snprintf(key, sizeof(key), "f:%s", fpr);
    for (tries = 0;; tries++) {
        if (cache_use(id->certs, key, copy_cert, out) != CACHE_MISS)
            return AD_OK;
        noted = cache_note(id->certs, key);
        if ((err = cert_load(id, serial, fpr, out)) != AD_OK)
            return err;
        race_point(id);
        if (cache_put(id->certs, key, out, 0, noted) == 1)
            return AD_OK;
        /* An invalidation landed while we read: what we read may predate
         * it, so it is neither cached nor answered. Read again. A reader
         * starved by a storm of invalidations answers from a read that
         * began after the last one it saw, without caching it. */
        if (tries == 3)
            return cert_load(id, serial, fpr, out);
    }
}

void identity_forget_cert(identity *id, const char *serial_hex,
                          const char *fingerprint_hex)
{
    char key[CERT_KEY_MAX];

    if (serial_hex) {
        snprintf(key, sizeof(key), "s:%s", serial_hex);
        cache_forget(id->certs, key);
    }
    if (fingerprint_hex) {
        snprintf(key, sizeof(key), "f:%s", fingerprint_hex);
        cache_forget(id->certs, key);
    }
}

void identity_forget_all(identity *id)
{
    cache_forget_all(id->certs);
}

enum { CERT_PEM_MAX = 16384 };

/* The SHA-256 fingerprint (lowercase hex) of a certificate given as PEM
 * or as bare base64 DER. 0 if it is neither. */
static int pem_fingerprint(const char *pem, char fpr[65])
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    const char *b64 = pem, *stop;
    uint8_t *der = NULL;
    size_t len = 0;
    int ok;

    if (strlen(pem) > CERT_PEM_MAX)
        return 0;
    if ((b64 = strstr(pem, begin)) != NULL) {
        b64 += sizeof(begin) - 1;
        if ((stop = strstr(b64, end)) == NULL)
            return 0;
    } else {
        b64 = pem;
        stop = pem + strlen(pem);
    }
    ok = codec_b64_decode_alloc(b64, (size_t)(stop - b64), CERT_PEM_MAX, &der,
                                &len, CODEC_B64_LINES) == 0 &&
         len > 0;
    if (ok)
        util_sha256_hex(der, len, fpr);
    free(der);
    return ok;
}

/* Resolves one way of naming a certificate into *cert, and checks that
 * it names the same certificate as any named before (*have). 0 with
 * *reason if not. */
static int cert_named(identity *id, const char *serial, const char *fpr,
                      cert_rec *cert, int *have, const char **reason)
{
    cert_rec found;
    ad_err err = identity_cert(id, serial, fpr, &found);

    if (err != AD_OK) {
        *reason = err == AD_ENOTFOUND ? "unknown_certificate" : "store_error";
        return 0;
    }
    if (*have && strcmp(found.serial, cert->serial) != 0) {
        *reason = "certificate_mismatch";
        return 0;
    }
    *cert = found;
    *have = 1;
    return 1;
}

int identity_named_cert(identity *id, const check_request *req, time_t now,
                        cert_rec *cert, const char **reason)
{
    char fpr[65], serial[CA_SERIAL_HEX_MAX];
    int have = 0;

    if (req->cert_fingerprint && *req->cert_fingerprint) {
        if (!fingerprint_normalize(req->cert_fingerprint, fpr)) {
            *reason = "invalid_certificate_id";
            return -1;
        }
        if (!cert_named(id, NULL, fpr, cert, &have, reason))
            return -1;
    }
    if (req->cert_pem && *req->cert_pem) {
        if (!pem_fingerprint(req->cert_pem, fpr)) {
            *reason = "invalid_certificate";
            return -1;
        }
        if (!cert_named(id, NULL, fpr, cert, &have, reason))
            return -1;
    }
    if (req->cert_serial && *req->cert_serial) {
        if (!util_serial_normalize(req->cert_serial, serial, sizeof(serial))) {
            *reason = "invalid_certificate_id";
            return -1;
        }
        if (!cert_named(id, serial, NULL, cert, &have, reason))
            return -1;
    }
    if (!have)
        return 0;
    if (cert->revoked) {
        *reason = "certificate_revoked";
        return -1;
    }
    if ((int64_t)now > cert->not_after) {
        *reason = "certificate_expired";
        return -1;
    }
    if (cert->device[0] == '\0') {
        *reason = "not_a_device_certificate";
        return -1;
    }
    return 1;
}

int identity_device_has_valid_cert(identity *id, const char *device_id,
                                   time_t now, int64_t *not_after)
{
    store_txn *tx = NULL;
    json_t *vals = NULL, *v;
    size_t i;
    int more = 0, found = 0;

    *not_after = 0;
    if (store_read_begin(id->st, &tx) != AD_OK)
        return 0;
    if (store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, device_id, NULL, 1000,
                         &vals, &more) == AD_OK) {
        store_read_end(tx); /* identity_cert reads on its own */
        tx = NULL;
        json_array_foreach(vals, i, v) {
            const char *ix = json_string_value(v);
            cert_rec ce;

            if (ix == NULL || strlen(ix) <= 16 ||
                identity_cert(id, ix + 16, NULL, &ce) != AD_OK)
                continue;
            if (!ce.revoked && (int64_t)now <= ce.not_after &&
                strcmp(ce.device, device_id) == 0) {
                found = 1;
                if (ce.not_after > *not_after)
                    *not_after = ce.not_after;
            }
        }
    }
    store_read_end(tx);
    json_decref(vals);
    return found;
}

int identity_bound_cert_valid(identity *id, const token_entry *tok,
                              time_t now)
{
    cert_rec ce;
    char bound[65];

    codec_hex_encode(tok->cnf, 32, bound, 0);
    return identity_cert(id, NULL, bound, &ce) == AD_OK && !ce.revoked &&
           (int64_t)now <= ce.not_after;
}

int identity_token_fits_cert(const token_entry *tok, const cert_rec *cert)
{
    uint8_t presented[32];
    size_t len = 0;

    if (tok->has_cnf)
        return codec_hex_decode(cert->fpr, 64, presented, sizeof(presented),
                                &len) == 0 &&
               len == sizeof(presented) &&
               CRYPTO_memcmp(presented, tok->cnf, 32) == 0;
    return strcmp(tok->sub, cert->device) == 0;
}

/* ---- device secrets ------------------------------------------------------ */

/* The device's argon2id hash from the store (malloc), or NULL. */
static char *secret_hash_of(identity *id, const char *device_id)
{
    store_txn *tx = NULL;
    json_t *sec = NULL;
    const char *h;
    char *hash = NULL;

    if (store_read_begin(id->st, &tx) != AD_OK)
        return NULL;
    if (store_get(tx, STORE_DEVICE_SECRETS, device_id, &sec) == AD_OK &&
        (h = json_string_value(json_object_get(sec, "argon2id"))) != NULL)
        hash = strdup(h);
    store_read_end(tx);
    json_decref(sec);
    return hash;
}

/* A keyed MAC of the last good secret answers repeated checks; only a
 * new or wrong secret pays argon2id, and that only while the device is
 * not backing off and a slot of the argon2id gate is free (else the deny
 * reason is "rate_limited"). A device whose good secret is cached keeps
 * connecting while others guess at it: secrets are 256-bit random, so
 * the cheap MAC path gives no guessing advantage. */
int identity_secret_ok(identity *id, const char *device_id,
                       const char *secret, check_argon2 argon2,
                       check_result *out)
{
    dev_view dv;
    uint8_t mac[32];
    unsigned maclen = sizeof(mac);
    char *hash = NULL, key[RL_KEY_MAX];
    uint64_t noted;
    int good = 0, verdict = -1, gated = 0;
    ad_err e;

    if (HMAC(EVP_sha256(), id->mac_key, sizeof(id->mac_key),
             (const unsigned char *)secret, strlen(secret), mac,
             &maclen) == NULL) {
        check_result_deny(out, "internal_error");
        return 0;
    }
    if ((e = devcache_get(id->devices, device_id, &dv)) != AD_OK) {
        check_result_deny(out, e == AD_ENOTFOUND ? "unknown_device"
                                                 : "store_error");
        return 0;
    }
    dev_view_release(&dv);
    if (devcache_secret_known(id->devices, device_id, mac))
        return 1;
    /* Noted before the hash is read: a secret rotated meanwhile makes
     * what is verified here too old to remember. */
    noted = devcache_note(id->devices, device_id);
    if ((hash = secret_hash_of(id, device_id)) == NULL) {
        check_result_deny(out, "invalid_credential");
        return 0;
    }
    snprintf(key, sizeof(key), "dev:%s", device_id);
    if (id->limits && rl_blocked(id->limits, key, rl_now_ms())) {
        rl_count(id->limits, RL_WHAT_SECRET);
        check_result_deny(out, "rate_limited");
        goto out;
    }
    /* Not on a thread that answers other devices: the caller runs the
     * request again where it may block, or has nowhere to. */
    if (argon2 == CHECK_ARGON2_DEFER) {
        check_result_deny(out, "deferred");
        out->deferred = 1;
        goto out;
    }
    if (argon2 == CHECK_ARGON2_REFUSE) {
        if (id->limits)
            rl_count(id->limits, RL_WHAT_BUSY);
        check_result_deny(out, "rate_limited");
        goto out;
    }
    /* Never queue for the gate: a queue of argon2 runs is the very
     * latency and memory the limit exists to prevent. */
    if (id->limits && !(gated = rl_gate_enter(id->limits))) {
        rl_count(id->limits, RL_WHAT_BUSY);
        check_result_deny(out, "rate_limited");
        goto out;
    }
    verdict = secret_hash_verify(hash, secret, strlen(secret));
    if (gated)
        rl_gate_leave(id->limits);
    good = verdict == 1;
    if (id->limits && verdict == 1)
        rl_success(id->limits, key);
    else if (id->limits && verdict == 0)
        rl_fail(id->limits, key, rl_device_burst(id->limits), rl_now_ms());
    if (good)
        devcache_secret_remember(id->devices, device_id, noted, mac);
    else
        check_result_deny(out, "invalid_credential");
out:
    OPENSSL_cleanse(hash, strlen(hash));
    free(hash);
    OPENSSL_cleanse(mac, sizeof(mac));
    return good;
}
