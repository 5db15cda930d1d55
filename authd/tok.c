/* Access tokens: ES256 JWTs signed and verified with P-256 keys that are
 * parsed once when they join the ring, so that minting or verifying costs
 * one SHA-256, one ECDSA operation and a little base64url and JSON, with
 * no PEM/DER decoding and no generic JOSE library on the hot path. */
#include "tok.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "../common/codec.h"
#include "../common/jws.h"

/* Kids are read by common/jws, which bounds them the same way. */
_Static_assert((int)TOK_KID_MAX == (int)JWS_KID_MAX, "a kid has one maximum");

enum {
    COORD_LEN = JWS_COORD_LEN,   /* a P-256 scalar or coordinate */
    SIG_LEN = JWS_SIG_LEN,       /* JWS ES256 signature: r||s (RFC 7518 §3.4) */
    SIG_B64_LEN = JWS_SIG_B64_LEN, /* its base64url form, unpadded */
    /* Our own header with the longest kid is 102 bytes (136 encoded). */
    HDR_B64_MAX = 144,
    /* No payload can be larger and still fit in TOK_JWT_MAX. */
    PAYLOAD_RAW_MAX = TOK_JWT_MAX / 4 * 3,
    /* A rotation adds one key; 64 live keys is years of rotations. */
    RING_MAX = 64,
    /* A P-256 key is ~250 bytes of PEM; this only bounds the parse. */
    PEM_MAX = 16384,
};

/* One key, immutable once it is in a ring: readers use it under the
 * ring's read lock and it is freed only after the write lock has removed
 * it, so no reference counting is needed. */
typedef struct {
    char kid[TOK_KID_MAX];
    size_t kid_len;
    /* Shared by all threads: ECDSA_do_sign/do_verify only read the key
     * and group (each call has its own BN_CTX and nonce). */
    EC_KEY *ec;
    /* The base64url header this key mints, so that minting copies it
     * and verifying our own tokens compares it instead of parsing JSON. */
    char hdr[HDR_B64_MAX];
    size_t hdr_len;
    uint8_t x[COORD_LEN], y[COORD_LEN]; /* public point, for the JWKS */
} tok_key;

struct tok_ring {
    /* Readers: mint, verify, jwks, active_kid. Writers: add, remove.
     * Writer-preferring so that a rotation is not starved by a steady
     * stream of verifications. */
    pthread_rwlock_t lock;
    tok_key *keys[RING_MAX]; /* in insertion order (the JWKS order) */
    size_t nkeys;
    tok_key *active; /* one of keys[], or NULL */
};

/* base64url here is common/codec's CODEC_B64_URL, strict as RFC 7515 §2
 * wants: no padding, no whitespace, and the unused low bits of the last
 * character must be zero, so every byte string has exactly one encoding
 * and nothing in a token can change without changing the signed bytes. */

/* ---- keys --------------------------------------------------------- */

/* Kids go into our header verbatim, so they are limited to characters
 * that need no JSON escaping and print safely in logs. */
static int kid_ok(const char *kid)
{
    size_t i, n = strnlen(kid, TOK_KID_MAX);

    if (n == 0 || n >= TOK_KID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)kid[i];

        if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
            return 0;
    }
    return 1;
}

static void key_free(tok_key *k)
{
    if (k == NULL)
        return;
    EC_KEY_free(k->ec);
    free(k);
}

/* An encrypted PEM must fail, not prompt on the daemon's terminal. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Parses pem into a new key named kid (already checked by kid_ok) with
 * its header and public coordinates precomputed. */
static ad_err key_new(const char *kid, const char *pem, tok_key **out,
                      char *err, size_t errlen)
{
    static const char h1[] = "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"";
    static const char h2[] = "\"}";
    uint8_t raw[sizeof(h1) + TOK_KID_MAX + sizeof(h2)];
    size_t pem_len = strnlen(pem, PEM_MAX + 1), n;
    tok_key *k = NULL;
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    const EC_GROUP *group;
    const EC_POINT *pub;
    BIGNUM *x = NULL, *y = NULL;
    ad_err e = AD_EFIELD;

    *out = NULL;
    if (pem_len > PEM_MAX) {
        ad_errf(e, err, errlen, "the key PEM is longer than %d bytes", PEM_MAX);
        goto out;
    }
    if ((k = calloc(1, sizeof(*k))) == NULL ||
        (bio = BIO_new_mem_buf(pem, (int)pem_len)) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    if ((pkey = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL)) == NULL) {
        ad_errf(e, err, errlen, "not an unencrypted PEM private key");
        goto out;
    }
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC ||
        (k->ec = EVP_PKEY_get1_EC_KEY(pkey)) == NULL ||
        (group = EC_KEY_get0_group(k->ec)) == NULL ||
        EC_GROUP_get_curve_name(group) != NID_X9_62_prime256v1) {
        ad_errf(e, err, errlen, "the key is not a P-256 (named curve) key");
        goto out;
    }
    /* Once per key: a private key that does not match its public point
     * would mint tokens nobody can verify. */
    if (EC_KEY_check_key(k->ec) != 1 ||
        (pub = EC_KEY_get0_public_key(k->ec)) == NULL) {
        ad_errf(e, err, errlen, "the key is inconsistent");
        goto out;
    }
    if ((x = BN_new()) == NULL || (y = BN_new()) == NULL ||
        EC_POINT_get_affine_coordinates(group, pub, x, y, NULL) != 1 ||
        BN_bn2binpad(x, k->x, COORD_LEN) != COORD_LEN ||
        BN_bn2binpad(y, k->y, COORD_LEN) != COORD_LEN) {
        e = ad_errf(AD_ECRYPTO, err, errlen, "cannot read the public point");
        goto out;
    }

    k->kid_len = strlen(kid);
    memcpy(k->kid, kid, k->kid_len + 1);
    n = 0;
    memcpy(raw, h1, sizeof(h1) - 1);
    n += sizeof(h1) - 1;
    memcpy(raw + n, kid, k->kid_len);
    n += k->kid_len;
    memcpy(raw + n, h2, sizeof(h2) - 1);
    n += sizeof(h2) - 1;
    k->hdr_len = codec_b64_encode(raw, n, k->hdr, CODEC_B64_URL);

    *out = k;
    k = NULL;
    e = AD_OK;
out:
    if (e != AD_OK)
        ERR_clear_error();
    BN_free(x);
    BN_free(y);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    key_free(k);
    return e;
}

/* Callers hold the ring's lock (either kind). */
static tok_key *find_kid(const tok_ring *ring, const char *kid, size_t len)
{
    size_t i;

    for (i = 0; i < ring->nkeys; i++)
        if (ring->keys[i]->kid_len == len &&
            memcmp(ring->keys[i]->kid, kid, len) == 0)
            return ring->keys[i];
    return NULL;
}

/* The key whose own header is exactly these bytes, if any: every token
 * we mint takes this path, which skips decoding and parsing the header.
 * Callers hold the ring's lock. */
static tok_key *find_header(const tok_ring *ring, const char *h, size_t len)
{
    size_t i;

    for (i = 0; i < ring->nkeys; i++)
        if (ring->keys[i]->hdr_len == len &&
            memcmp(ring->keys[i]->hdr, h, len) == 0)
            return ring->keys[i];
    return NULL;
}

/* ---- the ring ----------------------------------------------------- */

ad_err tok_ring_new(tok_ring **out)
{
    pthread_rwlockattr_t attr;
    tok_ring *ring = NULL;
    ad_err e = AD_ENOMEM;

    *out = NULL;
    if ((ring = calloc(1, sizeof(*ring))) == NULL)
        return AD_ENOMEM;
    if (pthread_rwlockattr_init(&attr) != 0)
        goto out;
    pthread_rwlockattr_setkind_np(&attr,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&ring->lock, &attr) == 0) {
        *out = ring;
        ring = NULL;
        e = AD_OK;
    }
    pthread_rwlockattr_destroy(&attr);
out:
    free(ring);
    return e;
}

void tok_ring_free(tok_ring *ring)
{
    size_t i;

    if (ring == NULL)
        return;
    for (i = 0; i < ring->nkeys; i++)
        key_free(ring->keys[i]);
    pthread_rwlock_destroy(&ring->lock);
    free(ring);
}

ad_err tok_ring_add(tok_ring *ring, const char *kid, const char *pem,
                    int make_active, char *err, size_t errlen)
{
    tok_key *k = NULL;
    ad_err e;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (ring == NULL || kid == NULL || pem == NULL)
        return ad_errf(AD_EFIELD, err, errlen, "a kid and a key are required");
    if (!kid_ok(kid))
        return ad_errf(AD_EFIELD, err, errlen,
                       "a kid is 1-%d printable ASCII characters other than "
                       "quotes and backslashes", TOK_KID_MAX - 1);
    /* Parse outside the lock: it is the slow part of a rotation, and
     * minting and verifying continue meanwhile. */
    if ((e = key_new(kid, pem, &k, err, errlen)) != AD_OK)
        return e;

    pthread_rwlock_wrlock(&ring->lock);
    if (find_kid(ring, kid, k->kid_len) != NULL) {
        e = ad_errf(AD_EFIELD, err, errlen, "kid %s is already in the ring", kid);
    } else if (ring->nkeys == RING_MAX) {
        e = ad_errf(AD_ECONFLICT, err, errlen,
                    "the ring holds %d keys; remove old ones first", RING_MAX);
    } else {
        ring->keys[ring->nkeys++] = k;
        if (make_active)
            ring->active = k;
        k = NULL;
    }
    pthread_rwlock_unlock(&ring->lock);
    key_free(k);
    return e;
}

ad_err tok_ring_remove(tok_ring *ring, const char *kid)
{
    tok_key *k = NULL;
    size_t i;
    ad_err e = AD_ENOTFOUND;

    if (ring == NULL || kid == NULL)
        return AD_ENOTFOUND;
    pthread_rwlock_wrlock(&ring->lock);
    for (i = 0; i < ring->nkeys; i++) {
        if (strcmp(ring->keys[i]->kid, kid) != 0)
            continue;
        if (ring->keys[i] == ring->active) {
            e = AD_ECONFLICT;
            break;
        }
        k = ring->keys[i];
        memmove(&ring->keys[i], &ring->keys[i + 1],
                (ring->nkeys - i - 1) * sizeof(ring->keys[0]));
        ring->nkeys--;
        e = AD_OK;
        break;
    }
    pthread_rwlock_unlock(&ring->lock);
    /* Safe to free now: readers use a key only while holding the read
     * lock, and the write lock above waited for all of them. */
    key_free(k);
    return e;
}

void tok_ring_active_kid(tok_ring *ring, char out[TOK_KID_MAX])
{
    out[0] = '\0';
    if (ring == NULL)
        return;
    pthread_rwlock_rdlock(&ring->lock);
    if (ring->active != NULL)
        memcpy(out, ring->active->kid, ring->active->kid_len + 1);
    pthread_rwlock_unlock(&ring->lock);
}

json_t *tok_ring_jwks(tok_ring *ring)
{
    char x[COORD_LEN * 2], y[COORD_LEN * 2];
    json_t *doc = NULL, *keys = json_array(), *jk;
    size_t i;
    int failed = 0;

    if (ring == NULL || keys == NULL)
        goto out;
    pthread_rwlock_rdlock(&ring->lock);
    for (i = 0; i < ring->nkeys && !failed; i++) {
        const tok_key *k = ring->keys[i];

        x[codec_b64_encode(k->x, COORD_LEN, x, CODEC_B64_URL)] = '\0';
        y[codec_b64_encode(k->y, COORD_LEN, y, CODEC_B64_URL)] = '\0';
        jk = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "crv",
                       "P-256", "x", x, "y", y, "kid", k->kid, "use", "sig",
                       "alg", "ES256");
        failed = jk == NULL || json_array_append_new(keys, jk) != 0;
    }
    pthread_rwlock_unlock(&ring->lock);
    if (failed || (doc = json_object()) == NULL)
        goto out;
    if (json_object_set_new(doc, "keys", keys) != 0) {
        keys = NULL; /* stolen even on failure */
        json_decref(doc);
        doc = NULL;
        goto out;
    }
    keys = NULL;
out:
    json_decref(keys);
    return doc;
}

char *tok_new_key_pem(void)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    BIO *bio = NULL;
    char *data = NULL, *pem = NULL;
    long n;

    /* A secure-memory BIO so that the private key text is wiped when the
     * BIO is freed. */
    if (pkey == NULL || (bio = BIO_new(BIO_s_secmem())) == NULL ||
        PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || data == NULL || (pem = malloc((size_t)n + 1)) == NULL)
        goto out;
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
out:
    if (pem == NULL)
        ERR_clear_error();
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return pem;
}

/* ---- claims serialization ---------------------------------------- */

/* json_dumpb costs more than a sixth of a mint (it formats every object's
 * address for loop detection and every integer through snprintf), so the
 * claims are written here instead: compact, members in insertion order,
 * the same JSON jansson would write. Strings must be valid UTF-8 without
 * NUL, since tok_verify would refuse such a token anyway, and nesting is
 * bounded, which also stops a cyclic value. */
enum { CLAIMS_DEPTH_MAX = 32 };

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} outbuf;

static void put(outbuf *o, const char *s, size_t n)
{
    if (o->failed || n > o->cap - o->len) {
        o->failed = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_string(outbuf *o, const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, run, len;
    char esc[7] = {'\\', 'u', '0', '0', 0, 0, 0};
    uint32_t cp;

    put(o, "\"", 1);
    while (i < n && !o->failed) {
        /* Copy runs that need no escaping in one go. */
        for (run = i; run < n && s[run] >= 0x20 && s[run] < 0x80 &&
                      s[run] != '"' && s[run] != '\\';
             run++)
            ;
        put(o, str + i, run - i);
        if ((i = run) == n)
            break;
        if (s[i] >= 0x80) {
            if ((len = codec_utf8_decode(s + i, n - i, &cp)) == 0)
                o->failed = 1;
            put(o, str + i, len);
            i += len;
            continue;
        }
        switch (s[i]) {
        case '"': put(o, "\\\"", 2); break;
        case '\\': put(o, "\\\\", 2); break;
        case '\b': put(o, "\\b", 2); break;
        case '\f': put(o, "\\f", 2); break;
        case '\n': put(o, "\\n", 2); break;
        case '\r': put(o, "\\r", 2); break;
        case '\t': put(o, "\\t", 2); break;
        case 0: o->failed = 1; break;
        default:
            /* Uppercase digits, as jansson writes them. */
            codec_hex_encode(s + i, 1, esc + 4, CODEC_HEX_UPPER);
            put(o, esc, 6);
        }
        i++;
    }
    put(o, "\"", 1);
}

static void put_integer(outbuf *o, json_int_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    /* Through unsigned, so that the most negative value negates. */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v
                                 : (unsigned long long)v;

    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        tmp[--i] = '-';
    put(o, tmp + i, sizeof(tmp) - i);
}

/* As jansson: 17 significant digits (exact round trip), always a
 * fraction or exponent so that the value reads back as a real, and the
 * exponent without '+' or leading zeros ("1e20", not "1e+20"). */
static void put_real(outbuf *o, double d)
{
    char tmp[40], *e;
    int n = snprintf(tmp, sizeof(tmp) - 2, "%.17g", d), i, plain = 1;
    size_t skip;

    if (n <= 0 || (size_t)n >= sizeof(tmp) - 2) {
        o->failed = 1;
        return;
    }
    for (i = 0; i < n; i++) {
        if (tmp[i] == ',')
            tmp[i] = '.'; /* a locale's decimal comma */
        if (tmp[i] == '.' || tmp[i] == 'e')
            plain = 0;
    }
    if (plain) {
        tmp[n++] = '.';
        tmp[n++] = '0';
        tmp[n] = '\0';
    }
    if ((e = strchr(tmp, 'e')) != NULL) {
        e++;
        if (*e == '-')
            e++;
        for (skip = 0; e[skip] == '+' || (e[skip] == '0' && e[skip + 1] != '\0');)
            skip++;
        memmove(e, e + skip, strlen(e + skip) + 1);
        n = (int)strlen(tmp);
    }
    put(o, tmp, (size_t)n);
}

static void put_value(outbuf *o, const json_t *v, int depth)
{
    size_t i;
    void *it;

    if (depth > CLAIMS_DEPTH_MAX) {
        o->failed = 1;
        return;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        put(o, "{", 1);
        /* Iteration does not modify the object; jansson just has no
         * const iterator. */
        for (it = json_object_iter((json_t *)v), i = 0; it != NULL && !o->failed;
             it = json_object_iter_next((json_t *)v, it), i++) {
            if (i > 0)
                put(o, ",", 1);
            put_string(o, json_object_iter_key(it), json_object_iter_key_len(it));
            put(o, ":", 1);
            put_value(o, json_object_iter_value(it), depth + 1);
        }
        put(o, "}", 1);
        break;
    case JSON_ARRAY:
        put(o, "[", 1);
        for (i = 0; i < json_array_size(v) && !o->failed; i++) {
            if (i > 0)
                put(o, ",", 1);
            put_value(o, json_array_get(v, i), depth + 1);
        }
        put(o, "]", 1);
        break;
    case JSON_STRING:
        put_string(o, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        put_integer(o, json_integer_value(v));
        break;
    case JSON_REAL:
        put_real(o, json_real_value(v));
        break;
    case JSON_TRUE:
        put(o, "true", 4);
        break;
    case JSON_FALSE:
        put(o, "false", 5);
        break;
    case JSON_NULL:
        put(o, "null", 4);
        break;
    default:
        o->failed = 1;
    }
}

/* ---- minting ------------------------------------------------------ */

/* hdr.payload.signature into a new malloc()ed string of at most max
 * bytes: the signing input is hdr (already base64url) and the base64url
 * of payload[0..plen), signed with k under the ring's read lock, which
 * the caller holds and this releases (*locked = 0) as soon as the key
 * is no longer needed. The one ES256 signer of the daemon: access tokens
 * and gateway bundles both come through here. */
static ad_err sign_compact(tok_ring *ring, int *locked, const tok_key *k,
                           const char *hdr, size_t hlen,
                           const uint8_t *payload, size_t plen, size_t max,
                           char **out, size_t *out_len)
{
    uint8_t digest[SHA256_DIGEST_LENGTH], rs[SIG_LEN];
    size_t pos, total;
    const BIGNUM *r, *s;
    ECDSA_SIG *sig = NULL;
    char *buf = NULL;
    ad_err e = AD_EFIELD;

    total = hlen + 1 + codec_b64_encoded_len(plen, CODEC_B64_URL) + 1 +
            SIG_B64_LEN;
    if (total > max)
        goto out;
    if ((buf = malloc(total + 1)) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    memcpy(buf, hdr, hlen);
    pos = hlen;
    buf[pos++] = '.';
    pos += codec_b64_encode(payload, plen, (char *)buf + pos, CODEC_B64_URL);
    SHA256((const uint8_t *)buf, pos, digest);
    sig = ECDSA_do_sign(digest, sizeof(digest), k->ec);
    pthread_rwlock_unlock(&ring->lock);
    *locked = 0;
    if (sig == NULL) {
        e = AD_ECRYPTO;
        goto out;
    }
    ECDSA_SIG_get0(sig, &r, &s);
    /* JWS wants fixed-width big-endian r||s, not DER (RFC 7518 §3.4). */
    if (BN_bn2binpad(r, rs, COORD_LEN) != COORD_LEN ||
        BN_bn2binpad(s, rs + COORD_LEN, COORD_LEN) != COORD_LEN) {
        e = AD_ECRYPTO;
        goto out;
    }
    buf[pos++] = '.';
    pos += codec_b64_encode(rs, SIG_LEN, buf + pos, CODEC_B64_URL);
    buf[pos] = '\0';
    *out = buf;
    if (out_len != NULL)
        *out_len = pos;
    buf = NULL;
    e = AD_OK;
out:
    if (e == AD_ECRYPTO)
        ERR_clear_error();
    ECDSA_SIG_free(sig);
    free(buf);
    return e;
}

ad_err tok_mint(tok_ring *ring, const json_t *claims, char **jwt)
{
    char payload[PAYLOAD_RAW_MAX];
    const tok_key *k;
    outbuf o = {NULL, 0, 0, 0};
    int locked = 0;
    ad_err e = AD_EFIELD;

    *jwt = NULL;
    if (ring == NULL || !json_is_object(claims))
        goto out;
    /* Into a bounded stack buffer: claims too large for a TOK_JWT_MAX
     * token are refused here rather than minted unusable. */
    o.p = payload;
    o.cap = sizeof(payload);
    put_value(&o, claims, 0);
    if (o.failed)
        goto out;

    pthread_rwlock_rdlock(&ring->lock);
    locked = 1;
    if ((k = ring->active) == NULL) {
        e = AD_ENOTREADY;
        goto out;
    }
    e = sign_compact(ring, &locked, k, k->hdr, k->hdr_len,
                     (const uint8_t *)payload, o.len, TOK_JWT_MAX, jwt, NULL);
out:
    if (locked)
        pthread_rwlock_unlock(&ring->lock);
    return e;
}

/* A typ goes into the header verbatim: the same characters as a kid. */
static int typ_ok(const char *typ)
{
    return kid_ok(typ);
}

ad_err tok_sign(tok_ring *ring, const char *typ, const char *payload,
                size_t plen, size_t max, char **jws, size_t *jws_len,
                char kid[TOK_KID_MAX])
{
    static const char h1[] = "{\"alg\":\"ES256\",\"typ\":\"";
    static const char h2[] = "\",\"kid\":\"";
    static const char h3[] = "\"}";
    uint8_t raw[sizeof(h1) + sizeof(h2) + sizeof(h3) + 2 * TOK_KID_MAX];
    char hdr[HDR_B64_MAX * 2];
    size_t n = 0, tl, hlen;
    const tok_key *k;
    int locked = 0;
    ad_err e = AD_EFIELD;

    *jws = NULL;
    if (jws_len != NULL)
        *jws_len = 0;
    if (kid != NULL)
        kid[0] = '\0';
    if (ring == NULL || typ == NULL || !typ_ok(typ) || payload == NULL)
        return AD_EFIELD;
    tl = strlen(typ);
    pthread_rwlock_rdlock(&ring->lock);
    locked = 1;
    if ((k = ring->active) == NULL) {
        e = AD_ENOTREADY;
        goto out;
    }
    memcpy(raw, h1, sizeof(h1) - 1);
    n += sizeof(h1) - 1;
    memcpy(raw + n, typ, tl);
    n += tl;
    memcpy(raw + n, h2, sizeof(h2) - 1);
    n += sizeof(h2) - 1;
    memcpy(raw + n, k->kid, k->kid_len);
    n += k->kid_len;
    memcpy(raw + n, h3, sizeof(h3) - 1);
    n += sizeof(h3) - 1;
    hlen = codec_b64_encode(raw, n, hdr, CODEC_B64_URL);
    if (kid != NULL)
        memcpy(kid, k->kid, k->kid_len + 1);
    e = sign_compact(ring, &locked, k, hdr, hlen, (const uint8_t *)payload,
                     plen, max, jws, jws_len);
out:
    if (locked)
        pthread_rwlock_unlock(&ring->lock);
    return e;
}

/* ---- verification ------------------------------------------------- */

/* v is a JSON string equal to s (embedded NULs never equal). */
static int str_eq(const json_t *v, const char *s)
{
    size_t n = strlen(s);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

/* A NumericDate claim (integer or real) as a double; seconds since the
 * epoch are exact in a double far beyond any real date. */
static int claim_time(const json_t *claims, const char *name, int *present,
                      double *t)
{
    const json_t *v = json_object_get(claims, name);

    *present = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_number(v))
        return -1;
    *t = json_number_value(v);
    return 0;
}

static ad_err check_claims(const json_t *c, const tok_expect *x, char *err,
                           size_t errlen)
{
    const json_t *aud, *v;
    double t = 0, now = (double)x->now;
    double leeway = x->leeway > 0 ? (double)x->leeway : 0;
    size_t i;
    int present;

    if (!json_is_object(c))
        return ad_errf(AD_EBADCRED, err, errlen, "the claims are not a JSON object");
    if (claim_time(c, "exp", &present, &t) != 0 || !present)
        return ad_errf(AD_EBADCRED, err, errlen, "exp is missing or not a number");
    if (!(t > now - leeway))
        return ad_errf(AD_EBADCRED, err, errlen, "expired");
    if (claim_time(c, "nbf", &present, &t) != 0)
        return ad_errf(AD_EBADCRED, err, errlen, "nbf is not a number");
    if (present && t > now + leeway)
        return ad_errf(AD_EBADCRED, err, errlen, "not yet valid (nbf)");
    if (claim_time(c, "iat", &present, &t) != 0)
        return ad_errf(AD_EBADCRED, err, errlen, "iat is not a number");
    if (present && t > now + leeway)
        return ad_errf(AD_EBADCRED, err, errlen, "issued in the future (iat)");
    if (!str_eq(json_object_get(c, "iss"), x->issuer))
        return ad_errf(AD_EBADCRED, err, errlen, "wrong issuer");
    if (x->audience == NULL)
        return AD_OK;
    aud = json_object_get(c, "aud");
    if (str_eq(aud, x->audience))
        return AD_OK;
    json_array_foreach(aud, i, v)
        if (str_eq(v, x->audience))
            return AD_OK;
    return ad_errf(AD_EBADCRED, err, errlen, "wrong audience");
}

ad_err tok_verify(tok_ring *ring, const char *jwt, const tok_expect *expect,
                  json_t **claims, char *err, size_t errlen)
{
    /* Our typ, and the generic one some clients of RFC 7519 write. */
    static const char *const typs[] = {"at+jwt", "JWT", NULL};
    uint8_t payload[PAYLOAD_RAW_MAX], rs[SIG_LEN];
    char kid[TOK_KID_MAX];
    size_t n, plen, kid_len = 0;
    jws_parts parts;
    const tok_key *k;
    json_t *c = NULL;
    int locked = 0;
    ad_err e = AD_EBADCRED;

    if (claims != NULL)
        *claims = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (ring == NULL || expect == NULL || expect->issuer == NULL)
        return ad_errf(AD_EINTERNAL, err, errlen, "no ring or expectations");
    if (jwt == NULL || (n = strnlen(jwt, TOK_JWT_MAX + 1)) == 0)
        return ad_errf(e, err, errlen, "no token");
    if ((e = jws_split(jwt, n, TOK_JWT_MAX, "token", &parts, err, errlen)) !=
        AD_OK)
        return e;

    /* The header first, so that "alg":"none" and friends are reported as
     * such. The key found is used under this read lock until verified. */
    pthread_rwlock_rdlock(&ring->lock);
    locked = 1;
    if ((k = find_header(ring, parts.hdr, parts.hdr_len)) == NULL) {
        /* Not a header we mint: parse it in full, without the lock. */
        pthread_rwlock_unlock(&ring->lock);
        locked = 0;
        if ((e = jws_header(&parts, typs, 0, kid, &kid_len, err, errlen)) !=
            AD_OK)
            goto out;
        e = AD_EBADCRED;
        pthread_rwlock_rdlock(&ring->lock);
        locked = 1;
        if ((k = find_kid(ring, kid, kid_len)) == NULL) {
            ad_errf(e, err, errlen, "unknown kid");
            goto out;
        }
    }

    /* The payload is decoded (not parsed) before the signature is
     * checked, so a token whose payload is not base64url says so. */
    if ((e = jws_sig_decode(&parts, rs, err, errlen)) != AD_OK ||
        (e = jws_payload(&parts, payload, sizeof(payload), &plen, err,
                         errlen)) != AD_OK ||
        (e = jws_verify(&parts, rs, k->ec, err, errlen)) != AD_OK)
        goto out;
    pthread_rwlock_unlock(&ring->lock);
    locked = 0;
    e = AD_EBADCRED;

    /* Only signed claims are parsed. Duplicates are refused so that no
     * other parser can read a different exp or aud from the same bytes. */
    if ((c = json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES,
                        NULL)) == NULL) {
        ad_errf(e, err, errlen, "the claims are not JSON");
        goto out;
    }
    if ((e = check_claims(c, expect, err, errlen)) != AD_OK)
        goto out;
    if (claims != NULL) {
        *claims = c;
        c = NULL;
    }
    e = AD_OK;
out:
    if (locked)
        pthread_rwlock_unlock(&ring->lock);
    json_decref(c);
    return e;
}
