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
#include "seal.h"
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

/* A key ring and the readers using it (see ring_get). */
struct ring_ref {
    tok_ring *ring;
    atomic_int refs; /* one for tokens->ring, one per reader */
};

struct tokens {
    pthread_mutex_t ring_lock;   /* guards the ring pointer */
    struct ring_ref *ring;
    pthread_mutex_t reload_lock; /* one reload at a time */
    uint8_t seal_key[SEAL_KEY_LEN];
    store *st;
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

/* ---- keys ---------------------------------------------------------------- *
 * The key ring lives in the store, so that every node of a cluster signs
 * with the same key and a rotation on one node reaches all of them:
 *   META "token_key:<kid>" {"kid","created","sealed","public_jwk"}
 *   META "token_keys"      {"signing": kid}
 * "sealed" is the PEM private key sealed (seal.h) with DATA/seal.key and
 * the kid as additional data: the database never holds it in clear. */

#define KEY_PREFIX "token_key:"
#define KEYS_RECORD "token_keys"
/* tok.c's ring holds at most 64 keys: years of rotations. */
#define KEYS_MAX 64

/* Takes a reference to the current ring: readers keep it across a mint
 * or a verify, and tokens_reload frees a replaced ring only once the last
 * reader has let it go, so no reader sees a ring half built or freed. */
static struct ring_ref *ring_get(tokens *t)
{
    struct ring_ref *r;

    pthread_mutex_lock(&t->ring_lock);
    r = t->ring;
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&t->ring_lock);
    return r;
}

static void ring_put(struct ring_ref *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        tok_ring_free(r->ring);
        free(r);
    }
}

/* The public JWK of a PEM key, by way of a ring of one (tok.c owns the
 * encoding). NULL if the key is not a P-256 key. */
static json_t *public_jwk(const char *kid, const char *pem, char *err,
                          size_t errlen)
{
    tok_ring *one = NULL;
    json_t *jwks = NULL, *jwk = NULL;

    if (tok_ring_new(&one) == AD_OK &&
        tok_ring_add(one, kid, pem, 1, err, errlen) == AD_OK &&
        (jwks = tok_ring_jwks(one)) != NULL)
        jwk = json_incref(json_array_get(json_object_get(jwks, "keys"), 0));
    json_decref(jwks);
    tok_ring_free(one);
    return jwk;
}

/* A key record for kid: pem sealed, and its public half. */
static ad_err key_record(const uint8_t seal_key[SEAL_KEY_LEN], const char *kid,
                         const char *pem, json_t **out, char *err,
                         size_t errlen)
{
    char now[32], *sealed = NULL;
    json_t *jwk;
    ad_err e;

    *out = NULL;
    if ((jwk = public_jwk(kid, pem, err, errlen)) == NULL)
        return ad_errf(AD_EFIELD, err, errlen, "token key %s is not a P-256 key",
                       kid);
    e = seal_seal(seal_key, kid, pem, strlen(pem), &sealed);
    if (e == AD_OK) {
        util_time_rfc3339(time(NULL), now, sizeof(now));
        *out = json_pack("{s:s, s:s, s:s, s:o}", "kid", kid, "created", now,
                         "sealed", sealed, "public_jwk", jwk);
        jwk = NULL; /* json_pack's "o" took it */
        if (*out == NULL)
            e = AD_ENOMEM;
    }
    json_decref(jwk);
    free(sealed);
    return e;
}

static int by_created(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const char *cx = json_string_value(json_object_get(x, "created"));
    const char *cy = json_string_value(json_object_get(y, "created"));
    int c = strcmp(cx ? cx : "", cy ? cy : "");

    return c ? c : strcmp(json_string_value(json_object_get(x, "kid")),
                          json_string_value(json_object_get(y, "kid")));
}

/* The key records in the store, oldest first (the JWKS order), and the
 * signing kid ("" if the store has no key ring yet). *recs is a new array. */
static ad_err read_key_records(store *st, json_t **recs,
                               char signing[TOK_KID_MAX], char *err,
                               size_t errlen)
{
    store_txn *tx = NULL;
    json_t *items = NULL, *ring = NULL, *v;
    json_t *sorted[KEYS_MAX];
    size_t i, n;
    int more = 0;
    ad_err e;

    *recs = NULL;
    signing[0] = '\0';
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return ad_errf(e, err, errlen, "cannot read the token keys");
    e = store_get(tx, STORE_META, KEYS_RECORD, &ring);
    if (e == AD_ENOTFOUND)
        e = AD_OK;
    if (e == AD_OK)
        e = store_list(tx, STORE_META, KEY_PREFIX, NULL, KEYS_MAX, &items,
                       &more);
    store_read_end(tx);
    if (e != AD_OK) {
        e = ad_errf(e, err, errlen, "cannot read the token keys");
        goto out;
    }
    if (more) {
        e = ad_errf(AD_EINTERNAL, err, errlen,
                    "the store holds more than %d token keys", KEYS_MAX);
        goto out;
    }
    if (ring && !util_strlcpy(signing,
                              json_string_value(json_object_get(ring, "signing"))
                                  ? json_string_value(
                                        json_object_get(ring, "signing"))
                                  : "",
                              TOK_KID_MAX)) {
        e = ad_errf(AD_EINTERNAL, err, errlen, "bad %s record", KEYS_RECORD);
        goto out;
    }
    n = json_array_size(items);
    json_array_foreach(items, i, v) {
        if (!json_is_string(json_object_get(v, "kid")) ||
            !json_is_string(json_object_get(v, "sealed"))) {
            e = ad_errf(AD_EINTERNAL, err, errlen, "a token key record lacks "
                        "kid or sealed");
            goto out;
        }
        sorted[i] = v;
    }
    qsort(sorted, n, sizeof(sorted[0]), by_created);
    if ((*recs = json_array()) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    for (i = 0; i < n; i++)
        json_array_append(*recs, sorted[i]);
out:
    json_decref(items);
    json_decref(ring);
    return e;
}

/* Builds a ring from the store's records: every key unsealed and parsed
 * before the ring is handed out. */
static ad_err build_ring(tokens *t, struct ring_ref **out, char *err,
                         size_t errlen)
{
    char signing[TOK_KID_MAX];
    struct ring_ref *r = NULL;
    json_t *recs = NULL, *v;
    size_t i;
    ad_err e;

    *out = NULL;
    if ((e = read_key_records(t->st, &recs, signing, err, errlen)) != AD_OK)
        return e;
    if (json_array_size(recs) == 0 || !signing[0]) {
        e = ad_errf(AD_EBADREQ, err, errlen, "the store holds no token keys");
        goto out;
    }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    atomic_init(&r->refs, 1);
    if ((e = tok_ring_new(&r->ring)) != AD_OK)
        goto out;
    json_array_foreach(recs, i, v) {
        const char *kid = json_string_value(json_object_get(v, "kid"));
        uint8_t *pem = NULL;
        size_t n = 0;

        e = seal_open(t->seal_key, kid,
                      json_string_value(json_object_get(v, "sealed")), &pem, &n);
        if (e != AD_OK) {
            e = ad_errf(e, err, errlen,
                        "token key %s does not open with this node's "
                        "seal.key (is it another cluster's?)",
                        kid);
            goto out;
        }
        e = tok_ring_add(r->ring, kid, (const char *)pem,
                         strcmp(kid, signing) == 0, err, errlen);
        OPENSSL_cleanse(pem, n);
        free(pem);
        if (e != AD_OK)
            goto out;
    }
    {
        char active[TOK_KID_MAX];
        tok_ring_active_kid(r->ring, active);
        if (!active[0]) {
            e = ad_errf(AD_EINTERNAL, err, errlen,
                        "the signing key %s is not in the store", signing);
            goto out;
        }
    }
    *out = r;
    r = NULL;
out:
    ring_put(r);
    json_decref(recs);
    return e;
}

/* Nonzero if every kid of old's JWKS is in new's: nothing that verified
 * before stops verifying, so cached validations stay right. */
static int ring_kept_all(tok_ring *old, tok_ring *fresh)
{
    json_t *a = tok_ring_jwks(old), *b = tok_ring_jwks(fresh), *ka, *kb;
    size_t i, j;
    int all = a != NULL && b != NULL;

    json_array_foreach(json_object_get(a, "keys"), i, ka) {
        int found = 0;
        json_array_foreach(json_object_get(b, "keys"), j, kb)
            found |= json_equal(json_object_get(ka, "kid"),
                                json_object_get(kb, "kid"));
        all &= found;
    }
    json_decref(a);
    json_decref(b);
    return all;
}

static void shard_clear(struct shard *sh);

static ad_err reload(tokens *t, char *err, size_t errlen)
{
    struct ring_ref *fresh = NULL, *old;
    int keep_cache;
    size_t i;
    ad_err e;

    /* One reload at a time, each reading the store after the one before
     * it swapped: the last to finish installs the newest ring. */
    pthread_mutex_lock(&t->reload_lock);
    e = build_ring(t, &fresh, err, errlen);
    if (e == AD_OK) {
        pthread_mutex_lock(&t->ring_lock);
        old = t->ring;
        t->ring = fresh;
        pthread_mutex_unlock(&t->ring_lock);
        keep_cache = ring_kept_all(old->ring, fresh->ring);
        ring_put(old); /* freed when its last reader is done */
        /* A key that left the ring takes its tokens' cached validations
         * with it. */
        for (i = 0; !keep_cache && i < SHARDS; i++) {
            pthread_mutex_lock(&t->shards[i].lock);
            shard_clear(&t->shards[i]);
            pthread_mutex_unlock(&t->shards[i].lock);
        }
    }
    pthread_mutex_unlock(&t->reload_lock);
    return e;
}

ad_err tokens_reload(tokens *t)
{
    return reload(t, NULL, 0);
}

/* The legacy layout: DIR/<kid>.key files, DIR/active naming the signing
 * key (else the newest file signs). */
struct legacy_key {
    char kid[TOK_KID_MAX];
    char *pem;
};

static void legacy_free(struct legacy_key *k, size_t n)
{
    size_t i;

    for (i = 0; k && i < n; i++) {
        OPENSSL_cleanse(k[i].pem, strlen(k[i].pem));
        free(k[i].pem);
    }
    free(k);
}

/* Reads DIR's keys into *keys (*n of them; none if DIR is absent) and the
 * signing kid into active. On error nothing is returned. */
static ad_err read_legacy_keys(const char *dir, struct legacy_key **keys,
                               size_t *n, char active[TOK_KID_MAX], char *err,
                               size_t errlen)
{
    char path[1200];
    struct legacy_key *k = NULL;
    struct dirent *de;
    time_t newest_mtime = 0;
    DIR *d;
    size_t count = 0;
    int named;
    char *text;
    ad_err e = AD_OK;

    *keys = NULL;
    *n = 0;
    active[0] = '\0';
    if (dir == NULL || (d = opendir(dir)) == NULL)
        return AD_OK;
    snprintf(path, sizeof(path), "%s/active", dir);
    text = util_read_file(path, 256, NULL);
    if (text) {
        text[strcspn(text, "\r\n")] = '\0';
        util_strlcpy(active, text, TOK_KID_MAX);
        free(text);
    }
    named = active[0] != '\0';
    if ((k = calloc(KEYS_MAX, sizeof(*k))) == NULL) {
        closedir(d);
        return AD_ENOMEM;
    }
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        struct stat st;

        if (len <= 4 || len - 4 >= TOK_KID_MAX ||
            strcmp(de->d_name + len - 4, ".key") != 0)
            continue;
        memcpy(k[count].kid, de->d_name, len - 4);
        k[count].kid[len - 4] = '\0';
        if (!util_name_valid(k[count].kid))
            continue;
        if (count == KEYS_MAX) {
            e = ad_errf(AD_EBADREQ, err, errlen, "more than %d keys in %s",
                        KEYS_MAX, dir);
            break;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        k[count].pem = util_read_file(path, KEY_FILE_MAX, NULL);
        if (k[count].pem == NULL) {
            e = ad_errf(AD_EBADREQ, err, errlen, "cannot read %s", path);
            break;
        }
        if (!named && stat(path, &st) == 0 && st.st_mtime >= newest_mtime) {
            newest_mtime = st.st_mtime;
            util_strlcpy(active, k[count].kid, TOK_KID_MAX);
        }
        count++;
    }
    closedir(d);
    if (e != AD_OK) {
        legacy_free(k, count);
        return e;
    }
    *keys = k;
    *n = count;
    return AD_OK;
}

/* Puts a new key ring (or adds to one): recs are key records, signing the
 * kid that signs from now on. */
struct keys_write {
    json_t *recs;
    const char *signing;
    int first; /* the store must hold no key ring yet */
    const char *actor; /* a rotation: audited as token_key.rotate */
};

static ad_err keys_write(store_txn *tx, void *arg)
{
    struct keys_write *w = arg;
    json_t *ring = NULL, *items = NULL, *v;
    char key[TOK_KID_MAX + sizeof(KEY_PREFIX)];
    int more = 0;
    size_t i;
    ad_err e;

    /* Count under the write: two nodes rotating at once cannot overflow
     * the ring every node must load. */
    e = store_list(tx, STORE_META, KEY_PREFIX, NULL, KEYS_MAX, &items, &more);
    if (e == AD_OK && (w->first ? json_array_size(items) > 0
                                : more || json_array_size(items) +
                                                  json_array_size(w->recs) >
                                              KEYS_MAX))
        e = w->first ? AD_EEXISTS : AD_ECONFLICT;
    json_decref(items);
    json_array_foreach(w->recs, i, v) {
        if (e != AD_OK)
            break;
        snprintf(key, sizeof(key), "%s%s", KEY_PREFIX,
                 json_string_value(json_object_get(v, "kid")));
        e = store_put(tx, STORE_META, key, v, STORE_NOOVERWRITE);
    }
    if (e == AD_OK &&
        (ring = json_pack("{s:s}", "signing", w->signing)) == NULL)
        e = AD_ENOMEM;
    if (e == AD_OK)
        e = store_put(tx, STORE_META, KEYS_RECORD, ring,
                      w->first ? STORE_NOOVERWRITE : 0);
    json_decref(ring);
    if (e == AD_OK && w->actor)
        e = store_audit(tx, w->actor, "token_key.rotate", w->signing, NULL);
    return e;
}

/* Nonzero if the store already holds a key ring. */
static ad_err store_has_ring(store *st, int *has)
{
    store_txn *tx = NULL;
    json_t *ring = NULL;
    ad_err e;

    *has = 0;
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_META, KEYS_RECORD, &ring);
    store_read_end(tx);
    json_decref(ring);
    if (e == AD_OK)
        *has = 1;
    return e == AD_ENOTFOUND ? AD_OK : e;
}

ad_err tokens_provision(store *st, const char *seal_key_path,
                        const char *legacy_dir, FILE *log, char *err,
                        size_t errlen)
{
    uint8_t sk[SEAL_KEY_LEN];
    char active[TOK_KID_MAX], kid[TOK_KID_MAX];
    struct legacy_key *old = NULL, fresh;
    struct keys_write w;
    size_t n = 0, i;
    int has = 0;
    ad_err e;

    memset(&w, 0, sizeof(w));
    memset(&fresh, 0, sizeof(fresh));
    if ((e = store_has_ring(st, &has)) != AD_OK)
        return ad_errf(e, err, errlen, "cannot read the token keys");
    e = seal_key_load(seal_key_path, sk, err, errlen);
    if (e == AD_ENOTFOUND) {
        /* A key ring sealed with a key this node lacks is another
         * node's: it must be joined from that node, not given a new
         * seal.key that opens nothing. */
        if (has)
            return ad_errf(AD_ECONFLICT, err, errlen,
                           "the store already holds token keys sealed by "
                           "another node; prepare this data dir with "
                           "`authd join --from` that node's data dir");
        if ((e = seal_key_create(seal_key_path, err, errlen)) != AD_OK)
            return e;
        if (log)
            fprintf(log, "created sealing key %s (mode 0600)\n",
                    seal_key_path);
        e = seal_key_load(seal_key_path, sk, err, errlen);
    }
    if (e != AD_OK || has)
        goto out;
    /* An older data dir kept its keys in files: they move into the
     * store, sealed, so tokens they signed keep verifying. */
    if ((e = read_legacy_keys(legacy_dir, &old, &n, active, err, errlen)) !=
        AD_OK)
        goto out;
    if (n == 0) {
        if ((e = util_random_hex(8, kid, sizeof(kid))) != AD_OK)
            goto out;
        if ((fresh.pem = tok_new_key_pem()) == NULL) {
            e = ad_errf(AD_ECRYPTO, err, errlen, "cannot generate a key");
            goto out;
        }
        util_strlcpy(fresh.kid, kid, sizeof(fresh.kid));
        util_strlcpy(active, kid, sizeof(active));
    }
    if ((w.recs = json_array()) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    for (i = 0; i < (n ? n : 1) && e == AD_OK; i++) {
        json_t *rec = NULL;
        const struct legacy_key *k = n ? &old[i] : &fresh;

        e = key_record(sk, k->kid, k->pem, &rec, err, errlen);
        if (e == AD_OK)
            json_array_append_new(w.recs, rec);
    }
    if (e != AD_OK)
        goto out;
    w.signing = active;
    w.first = 1;
    e = store_write(st, keys_write, &w);
    if (e == AD_EEXISTS) {
        e = ad_errf(AD_ECONFLICT, err, errlen,
                    "another node stored its token keys first");
        goto out;
    }
    if (e != AD_OK) {
        e = ad_errf(e, err, errlen, "cannot store the token keys");
        goto out;
    }
    if (log && n)
        fprintf(log, "imported %zu token key(s) from %s into the store, "
                     "sealed\n", n, legacy_dir);
    else if (log)
        fprintf(log, "created token signing key %s in the store, sealed\n",
                kid);
out:
    OPENSSL_cleanse(sk, sizeof(sk));
    legacy_free(old, n);
    if (fresh.pem) {
        OPENSSL_cleanse(fresh.pem, strlen(fresh.pem));
        free(fresh.pem);
    }
    json_decref(w.recs);
    return e;
}

ad_err tokens_rotate(tokens *t, const char *actor, char kid[TOK_KID_MAX],
                     char *err, size_t errlen)
{
    struct keys_write w;
    json_t *rec = NULL;
    char *pem;
    ad_err e;

    memset(&w, 0, sizeof(w));
    kid[0] = '\0';
    e = util_random_hex(8, kid, TOK_KID_MAX);
    if (e != AD_OK)
        return e;
    pem = tok_new_key_pem();
    if (pem == NULL)
        return ad_errf(AD_ECRYPTO, err, errlen, "cannot generate a key");
    e = key_record(t->seal_key, kid, pem, &rec, err, errlen);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    if (e != AD_OK)
        goto out;
    if ((w.recs = json_array()) == NULL ||
        json_array_append(w.recs, rec) != 0) {
        e = AD_ENOMEM;
        goto out;
    }
    w.signing = kid;
    w.actor = actor ? actor : "system";
    /* The new key and the new signing kid in one write: every node,
     * reloading after it, finds the signing key among the keys. */
    e = store_write(t->st, keys_write, &w);
    if (e == AD_ECONFLICT) {
        e = ad_errf(e, err, errlen, "the ring holds %d keys", KEYS_MAX);
        goto out;
    }
    if (e != AD_OK) {
        e = ad_errf(e, err, errlen, "cannot store the new key");
        goto out;
    }
    /* Stored before it signs anything: a restart, or another node,
     * finds the same key. */
    e = reload(t, err, errlen);
out:
    json_decref(rec);
    json_decref(w.recs);
    if (e != AD_OK)
        kid[0] = '\0';
    return e;
}

const uint8_t *tokens_seal_key(const tokens *t)
{
    return t->seal_key;
}

json_t *tokens_jwks(tokens *t)
{
    struct ring_ref *r = ring_get(t);
    json_t *doc = tok_ring_jwks(r->ring);

    ring_put(r);
    return doc;
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
    const char *sub; /* the token's device, when known, or NULL */
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
    /* The subject, so that a gateway's bundle carries the revoked jtis
     * of its own devices (records from before it have none: bundles
     * carry those to every gateway, to be safe). */
    if (w->sub != NULL && json_object_set_new(rec, "sub", json_string(w->sub)) != 0) {
        json_decref(rec);
        return AD_ENOMEM;
    }
    e = store_put(tx, STORE_REVOKED_JTIS, w->jti, rec, 0);
    json_decref(rec);
    if (e == AD_OK)
        e = store_audit(tx, w->actor, "token.revoke", w->jti, NULL);
    if (e == AD_OK)
        e = registry_event(tx, "token_revoked", "jti", w->jti);
    return e;
}

/* The subject of a validated token with this jti still in the cache,
 * copied into sub; 0 if none is (a scan of every shard: revocation is
 * an admin's rare call). */
static int cached_sub_of(tokens *t, const char *jti, char sub[129])
{
    token_entry *e;
    size_t i, b;
    int found = 0;

    for (i = 0; i < SHARDS && !found; i++) {
        pthread_mutex_lock(&t->shards[i].lock);
        for (b = 0; b < BUCKETS && !found; b++)
            for (e = t->shards[i].buckets[b]; e != NULL && !found; e = e->next)
                if (strcmp(e->jti, jti) == 0) {
                    util_strlcpy(sub, e->sub, 129);
                    found = 1;
                }
        pthread_mutex_unlock(&t->shards[i].lock);
    }
    return found;
}

ad_err tokens_revoke(tokens *t, const char *actor, const char *jti)
{
    return tokens_revoke_sub(t, actor, jti, NULL);
}

ad_err tokens_revoke_sub(tokens *t, const char *actor, const char *jti,
                         const char *sub)
{
    struct revoke_write w;
    char cached[129];
    ad_err e;

    if (jti == NULL || *jti == '\0' || strlen(jti) >= 64)
        return AD_EFIELD;
    if (sub != NULL && !util_device_id_valid(sub))
        return AD_EFIELD;
    w.actor = actor;
    w.jti = jti;
    w.sub = sub;
    if (sub == NULL && cached_sub_of(t, jti, cached))
        w.sub = cached;
    /* No token outlives ttl, so the entry may go after that. */
    w.keep_until = (int64_t)time(NULL) + t->ttl;
    e = store_write(t->st, revoke_write, &w);
    if (e == AD_OK)
        revoked_add_mem(t, jti);
    return e;
}

/* Called by walk_revoked for each entry with a jti; a result other than
 * AD_OK ends the walk with it. */
typedef ad_err (*revoked_fn)(const char *jti, const json_t *entry, void *ctx);

/* Walks every STORE_REVOKED_JTIS entry that has a jti, in key order, a
 * page of 1000 per read transaction so that no transaction stays open
 * for the whole list. Returns AD_OK, the store's error, or fn's. */
static ad_err walk_revoked(tokens *t, revoked_fn fn, void *ctx)
{
    store_txn *tx = NULL;
    json_t *items = NULL, *v;
    const char *after = NULL, *jti;
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
            if ((jti = json_string_value(json_object_get(v, "jti"))) == NULL)
                continue;
            util_strlcpy(cursor, jti, sizeof(cursor));
            if ((e = fn(jti, v, ctx)) != AD_OK)
                break;
        }
        after = cursor;
        json_decref(items);
        items = NULL;
    }
    return e;
}

static ad_err add_revoked(const char *jti, const json_t *entry, void *ctx)
{
    (void)entry;
    revoked_add_mem(ctx, jti);
    return AD_OK;
}

static ad_err load_revoked(tokens *t)
{
    return walk_revoked(t, add_revoked, t);
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

/* DATA/seal.key when cfg names none: beside DATA/tokens. */
static int seal_path_of(const tokens_config *cfg, char *out, size_t outlen)
{
    const char *slash;
    size_t n;

    if (cfg->seal_key)
        return util_strlcpy(out, cfg->seal_key, outlen);
    if (cfg->dir == NULL)
        return 0;
    slash = strrchr(cfg->dir, '/');
    n = slash ? (size_t)(slash - cfg->dir) : 0;
    return (size_t)snprintf(out, outlen, "%.*s%sseal.key", (int)n, cfg->dir,
                            slash ? "/" : "") < outlen;
}

ad_err tokens_open(const tokens_config *cfg, store *st, tokens **out,
                   char *err, size_t errlen)
{
    char seal_path[1200];
    tokens *t;
    ad_err e;
    int i;

    *out = NULL;
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return AD_ENOMEM;
    t->st = st;
    t->ttl = cfg->ttl > 0 ? cfg->ttl : 3600;
    util_strlcpy(t->issuer, cfg->issuer, sizeof(t->issuer));
    util_strlcpy(t->audience, cfg->audience, sizeof(t->audience));
    for (i = 0; i < SHARDS; i++)
        pthread_mutex_init(&t->shards[i].lock, NULL);
    pthread_rwlock_init(&t->revoked_lock, NULL);
    pthread_mutex_init(&t->ring_lock, NULL);
    pthread_mutex_init(&t->reload_lock, NULL);
    e = seal_path_of(cfg, seal_path, sizeof(seal_path))
            ? AD_OK
            : ad_errf(AD_EBADREQ, err, errlen, "no seal.key path");
    /* An older data dir's DATA/tokens files are imported on first open. */
    if (e == AD_OK)
        e = tokens_provision(st, seal_path, cfg->dir, NULL, err, errlen);
    if (e == AD_OK)
        e = seal_key_load(seal_path, t->seal_key, err, errlen);
    if (e == AD_OK)
        e = build_ring(t, &t->ring, err, errlen);
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
    ring_put(t->ring);
    pthread_mutex_destroy(&t->ring_lock);
    pthread_mutex_destroy(&t->reload_lock);
    OPENSSL_cleanse(t->seal_key, sizeof(t->seal_key));
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
    {
        struct ring_ref *r = ring_get(t);
        e = tok_mint(r->ring, claims, jwt);
        ring_put(r);
    }
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
        {
            struct ring_ref *r = ring_get(t);
            rc = tok_verify(r->ring, jwt, &expect, &claims, err, errlen);
            ring_put(r);
        }
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

/* ---- gateway bundles ------------------------------------------------------ */

ad_err tokens_sign_json(tokens *t, const char *typ, const json_t *payload,
                        size_t max, char **jws, size_t *jws_len,
                        char kid[TOK_KID_MAX])
{
    struct ring_ref *r;
    char *text;
    ad_err e;

    *jws = NULL;
    if (jws_len != NULL)
        *jws_len = 0;
    /* Compact, in insertion order: what is signed is what is sent. */
    if ((text = json_dumps(payload, JSON_COMPACT | JSON_PRESERVE_ORDER)) ==
        NULL)
        return AD_ENOMEM;
    r = ring_get(t);
    e = tok_sign(r->ring, typ, text, strlen(text), max, jws, jws_len, kid);
    ring_put(r);
    free(text);
    return e;
}

const char *tokens_issuer(const tokens *t)
{
    return t->issuer;
}

/* Is id among the sorted ids[0..n)? */
static int in_sorted(const char *const *ids, size_t n, const char *id)
{
    size_t lo = 0, hi = n, mid;
    int c;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = strcmp(ids[mid], id);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* What tokens_revoked_for selects and where it puts it. */
typedef struct {
    const char *const *subs;
    size_t n, max;
    int64_t now;
    json_t *out;
} revoked_for_ctx;

static ad_err add_revoked_for(const char *jti, const json_t *entry, void *ctx)
{
    const revoked_for_ctx *c = ctx;
    const json_t *ku = json_object_get(entry, "keep_until");
    const char *sub = json_string_value(json_object_get(entry, "sub"));

    /* A token past keep_until has expired anyway. */
    if (json_is_integer(ku) && json_integer_value(ku) < c->now)
        return AD_OK;
    if (sub != NULL && !in_sorted(c->subs, c->n, sub))
        return AD_OK;
    if (json_array_size(c->out) >= c->max)
        return AD_ETOOBIG;
    if (json_array_append_new(c->out, json_string(jti)) != 0)
        return AD_ENOMEM;
    return AD_OK;
}

ad_err tokens_revoked_for(tokens *t, const char *const *subs, size_t n,
                          int64_t now, size_t max, json_t *out)
{
    revoked_for_ctx c;

    c.subs = subs;
    c.n = n;
    c.max = max;
    c.now = now;
    c.out = out;
    return walk_revoked(t, add_revoked_for, &c);
}
