/* See checker.h. Two caches, both sharded by a hash of their key so that
 * checks from many threads rarely meet on a lock:
 *   - certificates by serial and by fingerprint: device, notAfter, status;
 *   - devices: status, their policy sources, and the compiled policy set
 *     for each distinct (client id, username, cert CN) they connect with.
 * Policies and groups are versioned by one generation counter; a device
 * entry built under an older generation is rebuilt on its next use.
 * Devices and certificates follow the one invalidation rule (checker.h)
 * with a generation per shard: every forget bumps the generation of the
 * shards its keys live in, and a reader inserts what it loaded only if
 * the generation it noted before the load is still current. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "../ca/ca.h"
#include "../common/codec.h"
#include "checker.h"
#include "ratelimit.h"
#include "registry.h"
#include "secret_hash.h"
#include "tokens.h"
#include "util.h"

#define SHARDS 64
#define BUCKETS 1024          /* per shard and map */
#define DEVICES_PER_SHARD 4096 /* beyond this a shard is emptied */
#define CERTS_PER_SHARD 8192
#define SETS_PER_DEVICE 8     /* distinct connection variable sets */

enum { DEV_ACTIVE, DEV_SUSPENDED, DEV_REVOKED };

/* A compiled policy set for one combination of connection variables. */
struct conn_set {
    char *client_id, *username, *cert_cn;
    pol_set *set;
    struct conn_set *next;
};

struct dev_entry {
    char id[CHECK_ID_MAX];
    uint64_t policy_gen;
    int status;
    json_t *device;   /* the record (groups, attributes) */
    json_t *docs;     /* array of [name, doc] pairs, in source order */
    pol_source *sources;
    size_t nsources;
    const char **groups;
    size_t ngroups;
    struct conn_set *sets;
    int nsets;
    char incarnation[REGISTRY_INCARNATION_MAX]; /* "" for old records */
    char *secret_hash;       /* argon2id encoded, or NULL */
    int secret_ok;           /* secret_mac holds a verified secret */
    uint8_t secret_mac[32];  /* HMAC(checker key, last good secret) */
    struct dev_entry *next;
};

struct cert_entry {
    char key[80];     /* "s:<serial>" or "f:<fingerprint>" */
    char serial[CA_SERIAL_HEX_MAX];
    char fpr[65];
    char device[CHECK_ID_MAX]; /* "" for server certificates */
    int64_t not_after;
    int revoked;
    int64_t revoked_at;
    int reason;       /* CRLReason code */
    struct cert_entry *next;
};

struct shard {
    pthread_mutex_t lock;
    uint64_t gen;     /* bumped by every invalidation in this shard */
    struct dev_entry *devs[BUCKETS];
    size_t ndevs;
    struct cert_entry *certs[BUCKETS];
    size_t ncerts;
};

struct checker {
    store *st;
    tokens *tokens;
    long ttl;
    /* Keys the in-memory record of verified device secrets, so a
     * memory dump does not give a fast offline check of a secret. */
    uint8_t mac_key[32];
    atomic_uint_fast64_t policy_gen;
    int trust_cn_only;
    void (*race_hook)(void *arg); /* tests only: see checker.h */
    void *race_arg;
    struct shard shards[SHARDS];
    rl *limits; /* the argon2id gate and back-off, or NULL */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static struct shard *shard_of(checker *c, uint64_t h)
{
    return &c->shards[h % SHARDS];
}

/* ---- lifecycle --------------------------------------------------------- */

ad_err checker_open(store *st, long ttl, int trust_cn_only, checker **out)
{
    checker *c;
    int i;

    *out = NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return AD_ENOMEM;
    c->st = st;
    c->ttl = ttl;
    c->trust_cn_only = trust_cn_only;
    if (RAND_bytes(c->mac_key, sizeof(c->mac_key)) != 1) {
        free(c);
        return AD_EINTERNAL;
    }
    atomic_init(&c->policy_gen, 1);
    for (i = 0; i < SHARDS; i++)
        pthread_mutex_init(&c->shards[i].lock, NULL);
    *out = c;
    return AD_OK;
}

static void conn_sets_free(struct conn_set *cs)
{
    while (cs) {
        struct conn_set *next = cs->next;
        free(cs->client_id);
        free(cs->username);
        free(cs->cert_cn);
        pol_set_free(cs->set);
        free(cs);
        cs = next;
    }
}

static void dev_entry_free(struct dev_entry *d)
{
    if (d == NULL)
        return;
    conn_sets_free(d->sets);
    free(d->sources);
    free(d->groups);
    if (d->secret_hash)
        OPENSSL_cleanse(d->secret_hash, strlen(d->secret_hash));
    free(d->secret_hash);
    json_decref(d->docs);
    json_decref(d->device);
    free(d);
}

static void shard_clear_devs(struct shard *sh)
{
    size_t b;

    for (b = 0; b < BUCKETS; b++) {
        struct dev_entry *d = sh->devs[b];
        while (d) {
            struct dev_entry *next = d->next;
            dev_entry_free(d);
            d = next;
        }
        sh->devs[b] = NULL;
    }
    sh->ndevs = 0;
}

static void shard_clear_certs(struct shard *sh)
{
    size_t b;

    for (b = 0; b < BUCKETS; b++) {
        struct cert_entry *e = sh->certs[b];
        while (e) {
            struct cert_entry *next = e->next;
            free(e);
            e = next;
        }
        sh->certs[b] = NULL;
    }
    sh->ncerts = 0;
}

void checker_close(checker *c)
{
    int i;

    if (c == NULL)
        return;
    for (i = 0; i < SHARDS; i++) {
        shard_clear_devs(&c->shards[i]);
        shard_clear_certs(&c->shards[i]);
        pthread_mutex_destroy(&c->shards[i].lock);
    }
    OPENSSL_cleanse(c->mac_key, sizeof(c->mac_key));
    free(c);
}

void check_result_clear(check_result *r)
{
    json_decref(r->statements);
    r->statements = NULL;
    free(r->scope);
    r->scope = NULL;
    json_decref(r->emqx_acl);
    r->emqx_acl = NULL;
}

void checker_set_race_hook(checker *c, void (*hook)(void *arg), void *arg)
{
    c->race_hook = hook;
    c->race_arg = arg;
}

/* Between a reader's store read and its cache insert. */
static void race_point(checker *c)
{
    if (c->race_hook)
        c->race_hook(c->race_arg);
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

/* Reads a certificate record into e (key set by the caller). */
static ad_err cert_load(checker *c, const char *serial, const char *fpr,
                        struct cert_entry *e)
{
    store_txn *tx = NULL;
    json_t *rec = NULL;
    char found[CA_SERIAL_HEX_MAX + 1];
    const char *s, *na, *dev, *st;
    time_t t;
    ad_err err;

    if ((err = store_read_begin(c->st, &tx)) != AD_OK)
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
    e->revoked = st && strcmp(st, "revoked") == 0;
    e->revoked_at = 0;
    e->reason = 0;
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

/* Finds a certificate by serial or fingerprint, copying it into out. */
static ad_err cert_find(checker *c, const char *serial, const char *fpr,
                        struct cert_entry *out)
{
    struct cert_entry *e, *fresh;
    struct shard *sh;
    uint64_t h, gen;
    size_t b;
    int tries;
    ad_err err;

    if (serial)
        snprintf(out->key, sizeof(out->key), "s:%s", serial);
    else
        snprintf(out->key, sizeof(out->key), "f:%s", fpr);
    h = hash_str(out->key);
    sh = shard_of(c, h);
    b = (h / SHARDS) % BUCKETS;
    for (tries = 0;; tries++) {
        pthread_mutex_lock(&sh->lock);
        for (e = sh->certs[b]; e; e = e->next)
            if (strcmp(e->key, out->key) == 0) {
                *out = *e;
                pthread_mutex_unlock(&sh->lock);
                return AD_OK;
            }
        gen = sh->gen;
        pthread_mutex_unlock(&sh->lock);

        /* Unknown identifiers are not cached: they cost one store read. */
        if ((err = cert_load(c, serial, fpr, out)) != AD_OK)
            return err;
        race_point(c);
        pthread_mutex_lock(&sh->lock);
        if (sh->gen == gen)
            break;
        /* An invalidation landed while we read: what we read may predate
         * it, so it is neither cached nor answered. Read again. A reader
         * starved by a storm of invalidations answers from a read that
         * began after the last one it saw, without caching it. */
        pthread_mutex_unlock(&sh->lock);
        if (tries == 3)
            return cert_load(c, serial, fpr, out);
    }
    fresh = malloc(sizeof(*fresh));
    if (fresh != NULL) {
        *fresh = *out;
        if (sh->ncerts >= CERTS_PER_SHARD)
            shard_clear_certs(sh);
        fresh->next = sh->certs[b];
        sh->certs[b] = fresh;
        sh->ncerts++;
    }
    pthread_mutex_unlock(&sh->lock);
    return AD_OK;
}

static void cert_forget_key(checker *c, const char *key)
{
    uint64_t h = hash_str(key);
    struct shard *sh = shard_of(c, h);
    struct cert_entry **pp, *e;

    pthread_mutex_lock(&sh->lock);
    sh->gen++;
    for (pp = &sh->certs[(h / SHARDS) % BUCKETS]; (e = *pp) != NULL;) {
        if (strcmp(e->key, key) == 0) {
            *pp = e->next;
            free(e);
            sh->ncerts--;
        } else {
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(&sh->lock);
}

void checker_forget_cert(checker *c, const char *serial_hex,
                         const char *fingerprint_hex)
{
    char key[80];

    if (serial_hex) {
        snprintf(key, sizeof(key), "s:%s", serial_hex);
        cert_forget_key(c, key);
    }
    if (fingerprint_hex) {
        snprintf(key, sizeof(key), "f:%s", fingerprint_hex);
        cert_forget_key(c, key);
    }
}

/* ---- devices ------------------------------------------------------------- */

/* Appends the named policy to the sources unless it is already there. */
static void add_policy(store_txn *tx, json_t *docs, const char *name)
{
    json_t *pair, *rec = NULL, *doc;
    size_t i;

    json_array_foreach(docs, i, pair)
        if (strcmp(json_string_value(json_array_get(pair, 0)), name) == 0)
            return;
    /* A device may name a policy that does not exist (yet): it
     * contributes nothing. */
    if (store_get(tx, STORE_POLICIES, name, &rec) != AD_OK)
        return;
    doc = json_object_get(rec, "document");
    if (doc)
        json_array_append_new(docs, json_pack("[s, O]", name, doc));
    json_decref(rec);
}

/* Builds a device entry from the store. AD_ENOTFOUND if no device. */
static ad_err dev_load(checker *c, const char *id, struct dev_entry **out)
{
    struct dev_entry *d;
    store_txn *tx = NULL;
    json_t *v, *gname;
    const char *status;
    size_t i;
    ad_err err;

    *out = NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return AD_ENOMEM;
    util_strlcpy(d->id, id, sizeof(d->id));
    /* Read the generation first: a policy change racing with this load
     * makes the entry stale at once rather than silently old. */
    d->policy_gen = atomic_load(&c->policy_gen);
    d->docs = json_array();
    if ((err = store_read_begin(c->st, &tx)) != AD_OK)
        goto fail;
    if ((err = store_get(tx, STORE_DEVICES, id, &d->device)) != AD_OK)
        goto fail;
    json_array_foreach(json_object_get(d->device, "policies"), i, v)
        if (json_is_string(v))
            add_policy(tx, d->docs, json_string_value(v));
    json_array_foreach(json_object_get(d->device, "groups"), i, gname) {
        json_t *group = NULL, *p;
        size_t j;

        if (!json_is_string(gname) ||
            store_get(tx, STORE_GROUPS, json_string_value(gname), &group) !=
                AD_OK)
            continue;
        json_array_foreach(json_object_get(group, "policies"), j, p)
            if (json_is_string(p))
                add_policy(tx, d->docs, json_string_value(p));
        json_decref(group);
    }
    {
        json_t *sec = NULL;
        if (store_get(tx, STORE_DEVICE_SECRETS, id, &sec) == AD_OK) {
            const char *h = json_string_value(json_object_get(sec, "argon2id"));
            d->secret_hash = h ? strdup(h) : NULL;
        }
        json_decref(sec);
    }
    store_read_end(tx);
    tx = NULL;

    util_strlcpy(d->incarnation,
                 json_string_value(json_object_get(d->device, "incarnation"))
                     ? json_string_value(
                           json_object_get(d->device, "incarnation"))
                     : "",
                 sizeof(d->incarnation));
    status = json_string_value(json_object_get(d->device, "status"));
    d->status = status && strcmp(status, "suspended") == 0 ? DEV_SUSPENDED
                : status && strcmp(status, "revoked") == 0 ? DEV_REVOKED
                                                           : DEV_ACTIVE;
    d->nsources = json_array_size(d->docs);
    d->sources = calloc(d->nsources + 1, sizeof(*d->sources));
    v = json_object_get(d->device, "groups");
    d->groups = calloc(json_array_size(v) + 1, sizeof(*d->groups));
    if (d->sources == NULL || d->groups == NULL) {
        err = AD_ENOMEM;
        goto fail;
    }
    for (i = 0; i < d->nsources; i++) {
        json_t *pair = json_array_get(d->docs, i);
        d->sources[i].name = json_string_value(json_array_get(pair, 0));
        d->sources[i].doc = json_array_get(pair, 1);
    }
    json_array_foreach(v, i, gname)
        if (json_is_string(gname))
            d->groups[d->ngroups++] = json_string_value(gname);
    *out = d;
    return AD_OK;
fail:
    store_read_end(tx);
    dev_entry_free(d);
    return err;
}

static int same(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* The compiled set for these connection variables (under the lock). */
static pol_set *dev_set(struct dev_entry *d, const char *client_id,
                        const char *username, const char *cert_cn)
{
    struct conn_set *cs, **pp;
    pol_vars vars;
    char err[256];

    for (cs = d->sets; cs; cs = cs->next)
        if (same(cs->client_id, client_id) && same(cs->username, username) &&
            same(cs->cert_cn, cert_cn))
            return cs->set;
    memset(&vars, 0, sizeof(vars));
    vars.device_id = d->id;
    vars.client_id = client_id;
    vars.username = username;
    vars.cert_cn = cert_cn;
    vars.attributes = json_object_get(d->device, "attributes");
    vars.groups = d->groups;
    vars.group_count = d->ngroups;
    cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return NULL;
    if (pol_compile(d->sources, d->nsources, &vars, &cs->set, err,
                    sizeof(err)) != AD_OK) {
        free(cs);
        return NULL;
    }
    cs->client_id = dup_or_null(client_id);
    cs->username = dup_or_null(username);
    cs->cert_cn = dup_or_null(cert_cn);
    /* Newest first; the oldest beyond the bound is dropped. */
    cs->next = d->sets;
    d->sets = cs;
    if (++d->nsets > SETS_PER_DEVICE) {
        for (pp = &d->sets; (*pp)->next; pp = &(*pp)->next)
            ;
        conn_sets_free(*pp);
        *pp = NULL;
        d->nsets--;
    }
    return cs->set;
}

/* Finds (loading if needed) the device entry and locks its shard. On
 * success the caller holds *locked and must unlock it. */
static ad_err dev_find_locked(checker *c, const char *id,
                              struct dev_entry **out, struct shard **locked)
{
    uint64_t h = hash_str(id), gen;
    struct shard *sh = shard_of(c, h);
    struct dev_entry **pp, *d, *fresh = NULL;
    size_t b = (h / SHARDS) % BUCKETS;
    uint64_t noted = 0;
    ad_err err;

    *out = NULL;
    *locked = NULL;
    for (;;) {
        pthread_mutex_lock(&sh->lock);
        gen = atomic_load(&c->policy_gen);
        for (pp = &sh->devs[b]; (d = *pp) != NULL; pp = &d->next)
            if (strcmp(d->id, id) == 0)
                break;
        if (d && d->policy_gen != gen) {
            *pp = d->next; /* stale: drop and rebuild */
            dev_entry_free(d);
            sh->ndevs--;
            d = NULL;
        }
        if (d == NULL && fresh != NULL && sh->gen != noted) {
            /* An invalidation landed while we read: what we read may
             * predate it. Read again. */
            dev_entry_free(fresh);
            fresh = NULL;
        }
        if (d == NULL && fresh != NULL) {
            if (sh->ndevs >= DEVICES_PER_SHARD)
                shard_clear_devs(sh);
            fresh->next = sh->devs[b];
            sh->devs[b] = fresh;
            sh->ndevs++;
            d = fresh;
            fresh = NULL;
        }
        if (d != NULL) {
            dev_entry_free(fresh); /* lost a race: someone else loaded it */
            *out = d;
            *locked = sh;
            return AD_OK;
        }
        noted = sh->gen;
        pthread_mutex_unlock(&sh->lock);
        /* Load without holding the lock: it reads the store. */
        if ((err = dev_load(c, id, &fresh)) != AD_OK)
            return err;
        race_point(c);
    }
}

void checker_forget_device(checker *c, const char *device_id)
{
    uint64_t h = hash_str(device_id);
    struct shard *sh = shard_of(c, h);
    struct dev_entry **pp, *d;

    pthread_mutex_lock(&sh->lock);
    sh->gen++;
    for (pp = &sh->devs[(h / SHARDS) % BUCKETS]; (d = *pp) != NULL;) {
        if (strcmp(d->id, device_id) == 0) {
            *pp = d->next;
            dev_entry_free(d);
            sh->ndevs--;
        } else {
            pp = &d->next;
        }
    }
    pthread_mutex_unlock(&sh->lock);
}

void checker_forget_policies(checker *c)
{
    atomic_fetch_add(&c->policy_gen, 1);
}

/* ---- deciding ------------------------------------------------------------ */

static void deny(check_result *out, const char *reason)
{
    out->allow = 0;
    out->reason = reason;
    out->ttl = 0;
}

/* A JWT is three base64url segments; tokens arrive with the tokens issue. */
static int looks_like_jwt(const char *s)
{
    const char *dot1, *dot2;

    if (s == NULL || strncmp(s, "eyJ", 3) != 0)
        return 0;
    dot1 = strchr(s, '.');
    dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    return dot2 != NULL && strchr(dot2 + 1, '.') == NULL;
}

/* Is the certificate a token is bound to still one we vouch for? */
static int bound_cert_valid(checker *c, const token_entry *tok, time_t now)
{
    struct cert_entry ce;
    char bound[65];

    codec_hex_encode(tok->cnf, 32, bound, 0);
    return cert_find(c, NULL, bound, &ce) == AD_OK && !ce.revoked &&
           (int64_t)now <= ce.not_after;
}

/* Decides on an established device identity (under the device's lock). */
static void decide_for(checker *c, const char *device_id,
                       const check_request *req, const token_entry *tok,
                       time_t now, check_result *out)
{
    int bound_ok;
    struct dev_entry *d = NULL;
    struct shard *sh = NULL;
    pol_set *set;
    pol_decision dec;
    const char *subject;
    ad_err err;

    util_strlcpy(out->device, device_id, sizeof(out->device));
    /* Looked up before the device lock: it may read the store. */
    bound_ok = tok == NULL || !tok->has_cnf || bound_cert_valid(c, tok, now);
    err = dev_find_locked(c, device_id, &d, &sh);
    if (err != AD_OK) {
        deny(out, err == AD_ENOTFOUND ? "unknown_device" : "store_error");
        return;
    }
    if (d->status != DEV_ACTIVE) {
        deny(out, d->status == DEV_SUSPENDED ? "device_suspended"
                                             : "device_revoked");
        pthread_mutex_unlock(&sh->lock);
        return;
    }
    /* A token minted for an earlier device of the same id (deleted,
     * then created again) is not this device's. */
    if (tok && strcmp(tok->incarnation, d->incarnation) != 0) {
        deny(out, "token_for_another_device");
        pthread_mutex_unlock(&sh->lock);
        return;
    }
    /* A token bound to a certificate lives no longer than it: revoking
     * the certificate ends the token too. */
    if (!bound_ok) {
        deny(out, "token_certificate_revoked");
        pthread_mutex_unlock(&sh->lock);
        return;
    }
    set = dev_set(d, req->client_id, req->username, req->cert_cn);
    if (set == NULL) {
        pthread_mutex_unlock(&sh->lock);
        deny(out, "policy_error");
        return;
    }
    subject = req->action == POL_CONNECT
                  ? (req->client_id ? req->client_id : "")
                  : (req->topic ? req->topic : "");
    dec = pol_decide(set, req->action, subject);
    /* A token session may do only what both its scope and the policy
     * allow; connect is the policy's alone. */
    if (dec.allow && tok && req->action != POL_CONNECT) {
        pol_decision sdec = pol_decide(tok->scope_set, req->action, subject);
        if (!sdec.allow) {
            dec = sdec;
            dec.reason = "outside_token_scope";
        }
    }
    out->allow = dec.allow;
    out->reason = dec.reason ? dec.reason : (dec.allow ? "allowed" : "denied");
    util_strlcpy(out->policy, dec.policy ? dec.policy : "",
                 sizeof(out->policy));
    out->statement = dec.statement;
    if (dec.allow && req->action == POL_CONNECT) {
        out->statements = pol_set_statements(set);
        if (req->want_emqx_acl)
            out->emqx_acl = pol_emqx_acl(set, tok ? tok->scope : NULL);
    }
    pthread_mutex_unlock(&sh->lock);

    if (!out->allow) {
        out->ttl = 0;
        return;
    }
    out->ttl = c->ttl;
    if (out->expire_at > 0 && out->expire_at - (int64_t)now < out->ttl)
        out->ttl = out->expire_at > (int64_t)now
                       ? (long)(out->expire_at - (int64_t)now)
                       : 0;
}

/* Does the device hold a certificate that is neither revoked nor
 * expired? *not_after gets the latest such notAfter. */
static int device_has_valid_cert(checker *c, const char *device_id,
                                 time_t now, int64_t *not_after)
{
    store_txn *tx = NULL;
    json_t *vals = NULL, *v;
    size_t i;
    int more = 0, found = 0;

    *not_after = 0;
    if (store_read_begin(c->st, &tx) != AD_OK)
        return 0;
    if (store_index_list(tx, STORE_IX_CERTS_BY_DEVICE, device_id, NULL, 1000,
                         &vals, &more) == AD_OK) {
        json_array_foreach(vals, i, v) {
            const char *ix = json_string_value(v);
            struct cert_entry ce;

            store_read_end(tx); /* cert_find reads on its own */
            tx = NULL;
            if (ix == NULL || strlen(ix) <= 16 ||
                cert_find(c, ix + 16, NULL, &ce) != AD_OK)
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

/* Checks a device secret: a keyed MAC of the last good secret answers
 * repeated checks; only a new or wrong secret pays argon2id, and that
 * only while the device is not backing off and a slot of the argon2id
 * gate is free (else the deny reason is "rate_limited"). A device whose
 * good secret is cached keeps connecting while others guess at it:
 * secrets are 256-bit random, so the cheap MAC path gives no guessing
 * advantage. */
static int secret_ok(checker *c, const char *device_id, const char *secret,
                     check_argon2 argon2, check_result *out)
{
    struct dev_entry *d = NULL;
    struct shard *sh = NULL;
    uint8_t mac[32];
    unsigned maclen = sizeof(mac);
    char *hash = NULL, key[RL_KEY_MAX];
    int good = 0, verdict = -1, gated = 0;

    if (HMAC(EVP_sha256(), c->mac_key, sizeof(c->mac_key),
             (const unsigned char *)secret, strlen(secret), mac,
             &maclen) == NULL) {
        deny(out, "internal_error");
        return 0;
    }
    if (dev_find_locked(c, device_id, &d, &sh) != AD_OK) {
        deny(out, "unknown_device");
        return 0;
    }
    if (d->secret_hash == NULL) {
        pthread_mutex_unlock(&sh->lock);
        deny(out, "invalid_credential");
        return 0;
    }
    if (d->secret_ok && CRYPTO_memcmp(d->secret_mac, mac, 32) == 0) {
        pthread_mutex_unlock(&sh->lock);
        return 1;
    }
    hash = strdup(d->secret_hash);
    pthread_mutex_unlock(&sh->lock);
    snprintf(key, sizeof(key), "dev:%s", device_id);
    if (c->limits && rl_blocked(c->limits, key, rl_now_ms())) {
        rl_count(c->limits, RL_WHAT_SECRET);
        deny(out, "rate_limited");
        goto out;
    }
    /* Not on a thread that answers other devices: the caller runs the
     * request again where it may block, or has nowhere to. */
    if (argon2 == CHECK_ARGON2_DEFER) {
        deny(out, "deferred");
        out->deferred = 1;
        goto out;
    }
    if (argon2 == CHECK_ARGON2_REFUSE) {
        if (c->limits)
            rl_count(c->limits, RL_WHAT_BUSY);
        deny(out, "rate_limited");
        goto out;
    }
    /* Never queue for the gate: a queue of argon2 runs is the very
     * latency and memory the limit exists to prevent. */
    if (c->limits && !(gated = rl_gate_enter(c->limits))) {
        rl_count(c->limits, RL_WHAT_BUSY);
        deny(out, "rate_limited");
        goto out;
    }
    /* argon2 takes tens of milliseconds: never under the shard lock. */
    verdict = hash ? secret_hash_verify(hash, secret, strlen(secret)) : -1;
    if (gated)
        rl_gate_leave(c->limits);
    good = verdict == 1;
    if (c->limits && verdict == 1)
        rl_success(c->limits, key);
    else if (c->limits && verdict == 0)
        rl_fail(c->limits, key, rl_device_burst(c->limits), rl_now_ms());
    if (good && dev_find_locked(c, device_id, &d, &sh) == AD_OK) {
        if (d->secret_hash && strcmp(d->secret_hash, hash) == 0) {
            memcpy(d->secret_mac, mac, 32);
            d->secret_ok = 1;
        }
        pthread_mutex_unlock(&sh->lock);
    }
    if (!good)
        deny(out, "invalid_credential");
out:
    if (hash)
        OPENSSL_cleanse(hash, strlen(hash));
    free(hash);
    return good;
}

void checker_set_limits(checker *c, rl *limits)
{
    c->limits = limits;
}

void checker_set_tokens(checker *c, tokens *t)
{
    c->tokens = t;
}

/* ---- identity: who is this connection? ---------------------------------- */

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

/* Resolves one way of naming a certificate into *ce, and checks that it
 * names the same certificate as any named before (*have). 0 with a deny
 * in out if not. */
static int cert_named(checker *c, const char *serial, const char *fpr,
                      struct cert_entry *ce, int *have, check_result *out)
{
    struct cert_entry found;
    ad_err err = cert_find(c, serial, fpr, &found);

    if (err != AD_OK) {
        deny(out, err == AD_ENOTFOUND ? "unknown_certificate" : "store_error");
        return 0;
    }
    if (*have && strcmp(found.serial, ce->serial) != 0) {
        deny(out, "certificate_mismatch");
        return 0;
    }
    *ce = found;
    *have = 1;
    return 1;
}

/* The certificate the broker names, however it names it (fingerprint,
 * PEM, serial; all that are given must agree), checked to be a valid
 * device certificate of ours. Returns 1 with *ce set, 0 if none is
 * named, -1 with a deny in out. */
static int identify_cert(checker *c, const check_request *req, time_t now,
                         struct cert_entry *ce, check_result *out)
{
    char fpr[65], serial[CA_SERIAL_HEX_MAX];
    int have = 0;

    if (req->cert_fingerprint && *req->cert_fingerprint) {
        if (!fingerprint_normalize(req->cert_fingerprint, fpr)) {
            deny(out, "invalid_certificate_id");
            return -1;
        }
        if (!cert_named(c, NULL, fpr, ce, &have, out))
            return -1;
    }
    if (req->cert_pem && *req->cert_pem) {
        if (!pem_fingerprint(req->cert_pem, fpr)) {
            deny(out, "invalid_certificate");
            return -1;
        }
        if (!cert_named(c, NULL, fpr, ce, &have, out))
            return -1;
    }
    if (req->cert_serial && *req->cert_serial) {
        if (!util_serial_normalize(req->cert_serial, serial, sizeof(serial))) {
            deny(out, "invalid_certificate_id");
            return -1;
        }
        if (!cert_named(c, serial, NULL, ce, &have, out))
            return -1;
    }
    if (!have)
        return 0;
    if (ce->revoked) {
        deny(out, "certificate_revoked");
        return -1;
    }
    if ((int64_t)now > ce->not_after) {
        deny(out, "certificate_expired");
        return -1;
    }
    if (ce->device[0] == '\0') {
        deny(out, "not_a_device_certificate");
        return -1;
    }
    return 1;
}

/* Validates a token password; on failure sets a deny and returns 0. */
static int token_identity(checker *c, const check_request *req, time_t now,
                          token_entry **tok, check_result *out)
{
    char why[128] = "";

    if (c->tokens == NULL ||
        tokens_validate(c->tokens, req->password, (int64_t)now, tok, why,
                        sizeof(why)) != AD_OK) {
        deny(out, strstr(why, "revoked")   ? "token_revoked"
                  : strstr(why, "expired") ? "token_expired"
                                           : "invalid_token");
        return 0;
    }
    return 1;
}

/* Does a token go with the certificate the connection presented? A
 * bound token (RFC 8705 cnf) only with the very certificate it is bound
 * to; any token only with a certificate of its own device. */
static int token_fits_cert(const token_entry *tok, const struct cert_entry *ce)
{
    uint8_t presented[32];
    size_t len = 0;

    if (tok->has_cnf)
        return codec_hex_decode(ce->fpr, 64, presented, sizeof(presented),
                                &len) == 0 &&
               len == sizeof(presented) &&
               CRYPTO_memcmp(presented, tok->cnf, 32) == 0;
    return strcmp(tok->sub, ce->device) == 0;
}

void checker_check(checker *c, const check_request *req, time_t now,
                   check_result *out)
{
    struct cert_entry ce;
    const char *device_id = NULL;
    token_entry *tok = NULL;
    check_request local = *req;
    int have_cert, named_by_cn;

    memset(out, 0, sizeof(*out));
    out->statement = -1;
    deny(out, "denied");
    if (req->action != POL_CONNECT && req->action != POL_PUBLISH &&
        req->action != POL_SUBSCRIBE && req->action != POL_RECEIVE) {
        deny(out, "invalid_action");
        return;
    }
    /* Every credential the broker passes must name one and the same
     * device: the certificate (however named), a token, the CN, the
     * username. Each step below either agrees or denies. */
    if ((have_cert = identify_cert(c, req, now, &ce, out)) < 0)
        return;
    named_by_cn = req->trust_cert_cn && req->cert_cn && *req->cert_cn;
    if (req->password && *req->password && looks_like_jwt(req->password)) {
        if (!token_identity(c, req, now, &tok, out))
            return;
        if (have_cert && !token_fits_cert(tok, &ce)) {
            deny(out, "token_certificate_mismatch");
            goto out;
        }
        device_id = tok->sub;
        out->expire_at = tok->exp;
        if (have_cert && ce.not_after < out->expire_at)
            out->expire_at = ce.not_after;
    } else if (have_cert) {
        device_id = ce.device;
        out->expire_at = ce.not_after;
    }
    if (named_by_cn) {
        if (device_id != NULL) {
            /* A CN beside a stronger credential must agree with it. */
            if (strcmp(req->cert_cn, device_id) != 0) {
                deny(out, tok && !have_cert ? "token_certificate_mismatch"
                                            : "certificate_mismatch");
                goto out;
            }
            /* A bound token binds to one certificate; a CN names any of
             * the device's, revoked ones included. */
            if (tok && tok->has_cnf && !have_cert && !c->trust_cn_only) {
                deny(out, "certificate_required");
                goto out;
            }
        } else if (!(req->password && *req->password)) {
            /* A CN alone cannot tell which of the device's certificates
             * was presented, revoked or not. */
            if (!c->trust_cn_only) {
                deny(out, "certificate_required");
                goto out;
            }
            if (!util_device_id_valid(req->cert_cn)) {
                deny(out, "unknown_device");
                goto out;
            }
            if (!device_has_valid_cert(c, req->cert_cn, now,
                                       &out->expire_at)) {
                deny(out, "no_valid_certificate");
                goto out;
            }
            device_id = req->cert_cn;
        }
    }
    if (device_id == NULL) {
        /* No certificate or token: the username is the device, proven on
         * connect by its secret and trusted afterwards (the broker asks
         * only about connections it accepted). */
        const char *claimed = req->username;

        if ((claimed == NULL || *claimed == '\0') && named_by_cn)
            claimed = req->cert_cn;
        if (claimed == NULL || *claimed == '\0') {
            deny(out, "no_identity");
            goto out;
        }
        if (named_by_cn && strcmp(claimed, req->cert_cn) != 0) {
            deny(out, "certificate_mismatch");
            goto out;
        }
        if (!util_device_id_valid(claimed)) {
            deny(out, "unknown_device");
            goto out;
        }
        if (req->action == POL_CONNECT) {
            util_strlcpy(out->device, claimed, sizeof(out->device));
            if (req->password == NULL || *req->password == '\0') {
                deny(out, "no_credential");
                goto out;
            }
            if (!secret_ok(c, claimed, req->password, req->argon2, out))
                goto out;
        }
        device_id = claimed;
    }
    /* Brokers key every later decision by username: a connection
     * authenticated as one device must not go on as another, nor choose
     * ${username} in its own statements. */
    if (req->username && *req->username &&
        strcmp(req->username, device_id) != 0) {
        util_strlcpy(out->device, device_id, sizeof(out->device));
        deny(out, "username_mismatch");
        goto out;
    }
    /* ${cert.cn} is the CN of the certificate that identified the
     * client: authd writes CN=<device id> into every device cert. */
    if (have_cert && local.cert_cn == NULL)
        local.cert_cn = ce.device;
    decide_for(c, device_id, &local, tok, now, out);
    /* A plugin deciding locally for a token session needs the scope
     * too: it narrows the statements. */
    if (out->allow && tok && req->action == POL_CONNECT)
        out->scope = strdup(tok->scope);
out:
    token_release(tok);
}

void checker_explain(checker *c, const char *device_id, pol_action action,
                     const char *subject, check_result *out)
{
    check_request req;

    memset(out, 0, sizeof(*out));
    out->statement = -1;
    memset(&req, 0, sizeof(req));
    req.action = action;
    req.username = device_id;
    if (action == POL_CONNECT)
        req.client_id = subject;
    else
        req.topic = subject;
    decide_for(c, device_id, &req, NULL, 0, out);
    out->ttl = 0;
}

int checker_device_secret_ok(checker *c, const char *device_id,
                             const char *secret, check_argon2 argon2,
                             const char **reason)
{
    check_result res;

    memset(&res, 0, sizeof(res));
    *reason = "invalid_credential";
    if (!secret_ok(c, device_id, secret, argon2, &res)) {
        if (res.reason)
            *reason = res.reason;
        return 0;
    }
    if (!checker_device_active(c, device_id, NULL))
        return 0;
    return 1;
}

int checker_device_active(checker *c, const char *device_id,
                          const char *incarnation)
{
    struct dev_entry *d = NULL;
    struct shard *sh = NULL;
    int active;

    if (dev_find_locked(c, device_id, &d, &sh) != AD_OK)
        return 0;
    active = d->status == DEV_ACTIVE &&
             (incarnation == NULL || strcmp(incarnation, d->incarnation) == 0);
    pthread_mutex_unlock(&sh->lock);
    return active;
}

ad_err checker_grant_scope(checker *c, const char *device_id,
                           const char *requested, char **granted,
                           json_t **acl, char incarnation[17], char *err,
                           size_t errlen)
{
    struct dev_entry *d = NULL;
    struct shard *sh = NULL;
    pol_set *set;
    char *scope = NULL;
    json_t *rules = NULL;
    int status;
    ad_err e;

    *granted = NULL;
    *acl = NULL;
    if ((e = dev_find_locked(c, device_id, &d, &sh)) != AD_OK)
        return e == AD_ENOTFOUND ? AD_EBADCRED : e;
    /* Everything read from the entry is read under the shard lock: an
     * invalidation may free it the moment the lock is released. */
    status = d->status;
    if (status != DEV_ACTIVE) {
        pthread_mutex_unlock(&sh->lock);
        return status == DEV_SUSPENDED ? AD_ESUSPENDED : AD_EREVOKED;
    }
    /* A token's subject connects as itself: client id = device id. */
    set = dev_set(d, device_id, device_id, NULL);
    if (set == NULL) {
        pthread_mutex_unlock(&sh->lock);
        return AD_EINTERNAL;
    }
    e = pol_scope_grant(set, requested, &scope, err, errlen);
    if (e == AD_OK && (rules = pol_emqx_acl(set, scope)) == NULL)
        e = AD_ENOMEM;
    if (e == AD_OK)
        util_strlcpy(incarnation, d->incarnation, REGISTRY_INCARNATION_MAX);
    pthread_mutex_unlock(&sh->lock);
    if (e != AD_OK) {
        free(scope);
        return e;
    }
    *granted = scope;
    *acl = rules;
    return AD_OK;
}

ad_err checker_cert_status(checker *c, const char *serial_hex, int *revoked,
                           int64_t *revoked_at, int *reason)
{
    struct cert_entry ce;
    ad_err e = cert_find(c, serial_hex, NULL, &ce);

    if (e != AD_OK)
        return e;
    *revoked = ce.revoked;
    *revoked_at = ce.revoked_at;
    *reason = ce.reason;
    return AD_OK;
}

int checker_token_active(checker *c, const token_entry *tok, time_t now)
{
    if (tok->has_cnf && !bound_cert_valid(c, tok, now))
        return 0;
    return checker_device_active(c, tok->sub, tok->incarnation);
}
