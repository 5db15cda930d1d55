/* See tokens.h. The cache maps SHA-256(token) to a validated entry and is
 * sharded like the checker's caches; entries are reference counted so a
 * check can keep using one while another thread evicts it. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "../common/codec.h"
#include "registry.h"
#include "tokens.h"
#include "util.h"

#define SHARDS 32
#define BUCKETS 512
#define ENTRIES_PER_SHARD 4096
#define REVOKED_BUCKETS 4096
#define KEY_FILE_MAX (64 * 1024)

struct shard {
    pthread_mutex_t lock;
    token_entry *buckets[BUCKETS];
    size_t n;
};

struct revoked {
    char jti[64];
    struct revoked *next;
};

struct tokens {
    tok_ring *ring;
    store *st;
    char dir[1024];
    char issuer[512];
    char audience[256];
    long ttl;
    struct shard shards[SHARDS];
    pthread_rwlock_t revoked_lock;
    struct revoked *revoked[REVOKED_BUCKETS];
};

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ---- keys ---------------------------------------------------------------- */

/* Loads every DIR/<kid>.key; DIR/active names the signing key (else the
 * newest file signs). */
static ad_err load_keys(tokens *t, char *err, size_t errlen)
{
    enum { KEYS_MAX = 256 };
    char path[1200], active[TOK_KID_MAX] = "";
    char (*kids)[TOK_KID_MAX] = NULL;
    char *text;
    struct dirent *de;
    time_t newest_mtime = 0;
    DIR *d;
    size_t n = 0, i;
    ad_err e = AD_OK;

    snprintf(path, sizeof(path), "%s/active", t->dir);
    text = util_read_file(path, 256, NULL);
    if (text) {
        text[strcspn(text, "\r\n")] = '\0';
        util_strlcpy(active, text, sizeof(active));
        free(text);
    }
    d = opendir(t->dir);
    if (d == NULL)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot open %s: %s", t->dir,
                       strerror(errno));
    kids = calloc(KEYS_MAX, sizeof(*kids));
    if (kids == NULL) {
        closedir(d);
        return AD_ENOMEM;
    }
    /* First pass: which keys exist, and which is newest. */
    while ((de = readdir(d)) != NULL && n < KEYS_MAX) {
        size_t len = strlen(de->d_name);
        struct stat st;

        if (len <= 4 || len - 4 >= TOK_KID_MAX ||
            strcmp(de->d_name + len - 4, ".key") != 0)
            continue;
        memcpy(kids[n], de->d_name, len - 4);
        kids[n][len - 4] = '\0';
        if (!util_name_valid(kids[n]))
            continue;
        snprintf(path, sizeof(path), "%s/%s", t->dir, de->d_name);
        if (stat(path, &st) == 0 && !active[0] && st.st_mtime >= newest_mtime) {
            newest_mtime = st.st_mtime;
            util_strlcpy(active, kids[n], sizeof(active));
        }
        n++;
    }
    closedir(d);
    if (n == 0) {
        free(kids);
        return ad_errf(AD_EBADREQ, err, errlen, "no token keys in %s", t->dir);
    }
    for (i = 0; i < n && e == AD_OK; i++) {
        snprintf(path, sizeof(path), "%s/%s.key", t->dir, kids[i]);
        text = util_read_file(path, KEY_FILE_MAX, NULL);
        if (text == NULL) {
            e = ad_errf(AD_EBADREQ, err, errlen, "cannot read %s", path);
            break;
        }
        e = tok_ring_add(t->ring, kids[i], text, strcmp(kids[i], active) == 0,
                         err, errlen);
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    free(kids);
    return e;
}

ad_err tokens_rotate(tokens *t, char kid[TOK_KID_MAX], char *err,
                     size_t errlen)
{
    char path[1200], *pem;
    ad_err e;

    kid[0] = '\0';
    e = util_random_hex(8, kid, TOK_KID_MAX);
    if (e != AD_OK)
        return e;
    pem = tok_new_key_pem();
    if (pem == NULL)
        return ad_errf(AD_ECRYPTO, err, errlen, "cannot generate a key");
    snprintf(path, sizeof(path), "%s/%s.key", t->dir, kid);
    if (util_write_file(path, pem, strlen(pem), 0600) != 0) {
        e = ad_errf(AD_EINTERNAL, err, errlen, "cannot write %s: %s", path,
                    strerror(errno));
        goto out;
    }
    /* Written before it signs anything: a restart finds the same key. */
    snprintf(path, sizeof(path), "%s/active", t->dir);
    if (util_write_file(path, kid, strlen(kid), 0600) != 0) {
        e = ad_errf(AD_EINTERNAL, err, errlen, "cannot write %s: %s", path,
                    strerror(errno));
        goto out;
    }
    e = tok_ring_add(t->ring, kid, pem, 1, err, errlen);
out:
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    return e;
}

json_t *tokens_jwks(tokens *t)
{
    return tok_ring_jwks(t->ring);
}

/* ---- revoked jtis --------------------------------------------------------- */

static void revoked_add_mem(tokens *t, const char *jti)
{
    uint64_t b = hash_bytes(jti, strlen(jti)) % REVOKED_BUCKETS;
    struct revoked *r;

    pthread_rwlock_wrlock(&t->revoked_lock);
    for (r = t->revoked[b]; r; r = r->next)
        if (strcmp(r->jti, jti) == 0)
            break;
    if (r == NULL && (r = calloc(1, sizeof(*r))) != NULL) {
        util_strlcpy(r->jti, jti, sizeof(r->jti));
        r->next = t->revoked[b];
        t->revoked[b] = r;
    }
    pthread_rwlock_unlock(&t->revoked_lock);
}

int tokens_is_revoked(tokens *t, const char *jti)
{
    uint64_t b = hash_bytes(jti, strlen(jti)) % REVOKED_BUCKETS;
    struct revoked *r;
    int found = 0;

    pthread_rwlock_rdlock(&t->revoked_lock);
    for (r = t->revoked[b]; r && !found; r = r->next)
        found = strcmp(r->jti, jti) == 0;
    pthread_rwlock_unlock(&t->revoked_lock);
    return found;
}

struct revoke_write {
    const char *actor;
    const char *jti;
    int64_t keep_until;
};

static ad_err revoke_write(store_txn *tx, void *arg)
{
    struct revoke_write *w = arg;
    char now[32];
    json_t *rec;
    ad_err e;

    util_time_rfc3339(time(NULL), now, sizeof(now));
    rec = json_pack("{s:s, s:s, s:I}", "jti", w->jti, "revoked_at", now,
                    "keep_until", (json_int_t)w->keep_until);
    if (rec == NULL)
        return AD_ENOMEM;
    e = store_put(tx, STORE_REVOKED_JTIS, w->jti, rec, 0);
    json_decref(rec);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, "token.revoke", w->jti, NULL);
    if (e == AD_OK)
        e = registry_event(tx, "token_revoked", "jti", w->jti);
    return e;
}

ad_err tokens_revoke(tokens *t, const char *actor, const char *jti)
{
    struct revoke_write w;
    ad_err e;

    if (jti == NULL || *jti == '\0' || strlen(jti) >= 64)
        return AD_EFIELD;
    w.actor = actor;
    w.jti = jti;
    /* No token outlives ttl, so the entry may go after that. */
    w.keep_until = (int64_t)time(NULL) + t->ttl;
    e = store_write(t->st, revoke_write, &w);
    if (e == AD_OK)
        revoked_add_mem(t, jti);
    return e;
}

static ad_err load_revoked(tokens *t)
{
    store_txn *tx = NULL;
    json_t *items = NULL, *v;
    const char *after = NULL;
    char cursor[64] = "";
    size_t i;
    int more = 1;
    ad_err e = AD_OK;

    while (more && e == AD_OK) {
        if ((e = store_read_begin(t->st, &tx)) != AD_OK)
            break;
        e = store_list(tx, STORE_REVOKED_JTIS, "", after, 1000, &items, &more);
        store_read_end(tx);
        if (e != AD_OK)
            break;
        json_array_foreach(items, i, v) {
            const char *jti = json_string_value(json_object_get(v, "jti"));
            if (jti) {
                revoked_add_mem(t, jti);
                util_strlcpy(cursor, jti, sizeof(cursor));
            }
        }
        after = cursor;
        json_decref(items);
        items = NULL;
    }
    return e;
}

void tokens_note_revoked(tokens *t, const char *jti)
{
    if (jti && *jti && strlen(jti) < 64)
        revoked_add_mem(t, jti);
}

ad_err tokens_reload_revoked(tokens *t)
{
    return load_revoked(t);
}

/* ---- open / close ---------------------------------------------------------- */

ad_err tokens_open(const tokens_config *cfg, store *st, tokens **out,
                   char *err, size_t errlen)
{
    tokens *t;
    ad_err e;
    int i;

    *out = NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return AD_ENOMEM;
    t->st = st;
    t->ttl = cfg->ttl > 0 ? cfg->ttl : 3600;
    util_strlcpy(t->dir, cfg->dir, sizeof(t->dir));
    util_strlcpy(t->issuer, cfg->issuer, sizeof(t->issuer));
    util_strlcpy(t->audience, cfg->audience, sizeof(t->audience));
    for (i = 0; i < SHARDS; i++)
        pthread_mutex_init(&t->shards[i].lock, NULL);
    pthread_rwlock_init(&t->revoked_lock, NULL);
    e = tok_ring_new(&t->ring);
    if (e == AD_OK)
        e = load_keys(t, err, errlen);
    if (e == AD_OK)
        e = load_revoked(t);
    if (e != AD_OK) {
        tokens_close(t);
        return e;
    }
    *out = t;
    return AD_OK;
}

static void entry_free(token_entry *e)
{
    free(e->scope);
    pol_set_free(e->scope_set);
    json_decref(e->claims);
    free(e);
}

void token_release(token_entry *e)
{
    if (e && atomic_fetch_sub(&e->refs, 1) == 1)
        entry_free(e);
}

static void shard_clear(struct shard *sh)
{
    size_t b;

    for (b = 0; b < BUCKETS; b++) {
        token_entry *e = sh->buckets[b];
        while (e) {
            token_entry *next = e->next;
            token_release(e);
            e = next;
        }
        sh->buckets[b] = NULL;
    }
    sh->n = 0;
}

void tokens_close(tokens *t)
{
    size_t i;

    if (t == NULL)
        return;
    for (i = 0; i < SHARDS; i++) {
        shard_clear(&t->shards[i]);
        pthread_mutex_destroy(&t->shards[i].lock);
    }
    for (i = 0; i < REVOKED_BUCKETS; i++) {
        struct revoked *r = t->revoked[i];
        while (r) {
            struct revoked *next = r->next;
            free(r);
            r = next;
        }
    }
    pthread_rwlock_destroy(&t->revoked_lock);
    tok_ring_free(t->ring);
    free(t);
}

/* ---- minting ------------------------------------------------------------ */

ad_err tokens_mint(tokens *t, const char *device_id, const char *incarnation,
                   const char *scope, const uint8_t *cnf, const json_t *acl,
                   int64_t now, char **jwt, int64_t *exp)
{
    char jti[40];
    json_t *claims;
    ad_err e;

    *jwt = NULL;
    if ((e = util_random_hex(16, jti, sizeof(jti))) != AD_OK)
        return e;
    *exp = now + t->ttl;
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "iss",
                       t->issuer, "sub", device_id, "aud", t->audience, "iat",
                       (json_int_t)now, "nbf", (json_int_t)now, "exp",
                       (json_int_t)*exp, "jti", jti, "scope", scope,
                       "client_id", device_id);
    if (claims == NULL)
        return AD_ENOMEM;
    if (cnf) {
        char *b64 = codec_b64_encode_alloc(cnf, 32, CODEC_B64_URL);
        if (b64 == NULL) {
            json_decref(claims);
            return AD_ENOMEM;
        }
        json_object_set_new(claims, "cnf",
                            json_pack("{s:s}", "x5t#S256", b64));
        free(b64);
    }
    if (incarnation && *incarnation)
        json_object_set_new(claims, "authd_dev", json_string(incarnation));
    if (acl)
        json_object_set(claims, "acl", (json_t *)acl);
    e = tok_mint(t->ring, claims, jwt);
    json_decref(claims);
    return e;
}

/* ---- validating ----------------------------------------------------------- */

static token_entry *entry_of(tokens *t, json_t *claims, const uint8_t key[32],
                             char *err, size_t errlen)
{
    token_entry *e = calloc(1, sizeof(*e));
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    const char *jti = json_string_value(json_object_get(claims, "jti"));
    const char *scope = json_string_value(json_object_get(claims, "scope"));
    const char *x5t = json_string_value(
        json_object_get(json_object_get(claims, "cnf"), "x5t#S256"));

    (void)t;
    if (e == NULL)
        return NULL;
    if (sub == NULL || !util_device_id_valid(sub) || jti == NULL ||
        strlen(jti) >= sizeof(e->jti)) {
        ad_errf(AD_EBADCRED, err, errlen, "the token lacks sub or jti");
        goto fail;
    }
    util_strlcpy(e->sub, sub, sizeof(e->sub));
    util_strlcpy(e->jti, jti, sizeof(e->jti));
    {
        const char *inc =
            json_string_value(json_object_get(claims, "authd_dev"));
        util_strlcpy(e->incarnation, inc ? inc : "", sizeof(e->incarnation));
    }
    e->exp = (int64_t)json_number_value(json_object_get(claims, "exp"));
    e->iat = (int64_t)json_number_value(json_object_get(claims, "iat"));
    if (x5t) {
        uint8_t raw[32];
        size_t rawlen = 0;
        if (codec_b64_decode(x5t, strlen(x5t), raw, sizeof(raw), &rawlen,
                             CODEC_B64_URL) != 0 ||
            rawlen != 32) {
            ad_errf(AD_EBADCRED, err, errlen, "bad cnf thumbprint");
            goto fail;
        }
        memcpy(e->cnf, raw, 32);
        e->has_cnf = 1;
    }
    if (pol_scope_compile(scope ? scope : "", &e->scope_set, &e->scope, err,
                          errlen) != AD_OK) {
        ad_errf(AD_EBADCRED, err, errlen, "bad scope in the token");
        goto fail;
    }
    e->claims = json_incref(claims);
    memcpy(e->key, key, 32);
    atomic_init(&e->refs, 1);
    return e;
fail:
    entry_free(e);
    return NULL;
}

ad_err tokens_validate(tokens *t, const char *jwt, int64_t now,
                       token_entry **out, char *err, size_t errlen)
{
    uint8_t key[32];
    uint64_t h;
    struct shard *sh;
    size_t b;
    token_entry *e, *fresh;
    json_t *claims = NULL;
    tok_expect expect;
    ad_err rc;

    *out = NULL;
    if (jwt == NULL || strlen(jwt) > TOK_JWT_MAX)
        return ad_errf(AD_EBADCRED, err, errlen, "not a token");
    SHA256((const unsigned char *)jwt, strlen(jwt), key);
    memcpy(&h, key, sizeof(h));
    sh = &t->shards[h % SHARDS];
    b = (h / SHARDS) % BUCKETS;
    pthread_mutex_lock(&sh->lock);
    for (e = sh->buckets[b]; e; e = e->next)
        if (memcmp(e->key, key, 32) == 0)
            break;
    if (e && now >= e->exp) {
        e = NULL; /* expired: verify again below and fail there */
    }
    if (e)
        atomic_fetch_add(&e->refs, 1);
    pthread_mutex_unlock(&sh->lock);

    if (e == NULL) {
        memset(&expect, 0, sizeof(expect));
        expect.issuer = t->issuer;
        expect.audience = t->audience;
        expect.now = now;
        /* We verify only tokens we minted, on our own clock: no skew
         * to allow for, and an expired token is expired at once. */
        expect.leeway = 0;
        rc = tok_verify(t->ring, jwt, &expect, &claims, err, errlen);
        if (rc != AD_OK)
            return rc;
        fresh = entry_of(t, claims, key, err, errlen);
        json_decref(claims);
        if (fresh == NULL)
            return AD_EBADCRED;
        /* Cache it (the cache holds one reference, we return another). */
        atomic_fetch_add(&fresh->refs, 1);
        pthread_mutex_lock(&sh->lock);
        if (sh->n >= ENTRIES_PER_SHARD)
            shard_clear(sh);
        fresh->next = sh->buckets[b];
        sh->buckets[b] = fresh;
        sh->n++;
        pthread_mutex_unlock(&sh->lock);
        e = fresh;
    }
    /* Revocation is checked on every use, cached or not. */
    if (tokens_is_revoked(t, e->jti)) {
        token_release(e);
        return ad_errf(AD_EBADCRED, err, errlen, "the token is revoked");
    }
    *out = e;
    return AD_OK;
}
