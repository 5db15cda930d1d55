/* Unit tests of the access-token module: ES256 tokens round-trip, verify
 * under OpenSSL's own EVP path, every malformed or mis-signed token is
 * refused with a reason, key rotation keeps old tokens valid until their
 * key is removed, and minting/verifying is safe during a rotation. Tokens
 * that tok_mint would never produce are crafted here with an independent
 * signer (EVP_DigestSign + DER to r||s). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include "../../authd/tok.h"
#include "tap.h"

enum { NOW = 1700000000, LEEWAY = 30, THREADS = 4, THREAD_ROUNDS = 150 };

static const char ISSUER[] = "https://authd.test";
static const char AUDIENCE[] = "mqtt";

static char *pem1, *pem2, *pem_other; /* P-256 keys; other is kid1's twin */
static EVP_PKEY *key1;                /* pem1, for the test's own signer */
static tok_ring *ring;                /* kid1 = pem1, active */

static tok_expect expect_default(void)
{
    tok_expect x = {ISSUER, AUDIENCE, NOW, LEEWAY};

    return x;
}

/* ---- an independent base64url and signer ------------------------- */

static char *b64url(const void *data, size_t n)
{
    static const char a[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *p = data;
    char *out = malloc(n / 3 * 4 + 5), *o = out;
    size_t i;

    for (i = 0; i < n; i += 3) {
        unsigned long v = (unsigned long)p[i] << 16;

        if (i + 1 < n)
            v |= (unsigned long)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        if (i + 1 < n)
            *o++ = a[(v >> 6) & 63];
        if (i + 2 < n)
            *o++ = a[v & 63];
    }
    *o = '\0';
    return out;
}

/* Decodes n base64url characters (lenient: this only reads our output). */
static size_t unb64url(const char *s, size_t n, unsigned char *out)
{
    size_t i, o = 0;
    unsigned long acc = 0;
    int bits = 0;

    for (i = 0; i < n; i++) {
        const char *a =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p = strchr(a, s[i]);

        if (p == NULL || s[i] == '\0')
            break;
        acc = acc << 6 | (unsigned long)(p - a);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

/* a followed by b (a malloc()ed string). */
static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *out = malloc(na + nb + 1);

    memcpy(out, a, na);
    memcpy(out + na, b, nb + 1);
    return out;
}

/* Joins three parts with dots (a malloc()ed string). */
static char *join3(const char *h, const char *p, const char *s)
{
    size_t n = strlen(h) + strlen(p) + strlen(s) + 3;
    char *out = malloc(n);

    snprintf(out, n, "%s.%s.%s", h, p, s);
    return out;
}

/* The raw r||s ES256 signature of input by key, via EVP (DER) alone. */
static int evp_sign_rs(EVP_PKEY *key, const char *input, unsigned char rs[64])
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    unsigned char der[128];
    const unsigned char *dp = der;
    size_t dlen = sizeof(der);
    ECDSA_SIG *sig = NULL;
    const BIGNUM *r, *s;
    int ok = 0;

    if (EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestSign(m, der, &dlen, (const unsigned char *)input,
                       strlen(input)) == 1 &&
        (sig = d2i_ECDSA_SIG(NULL, &dp, (long)dlen)) != NULL) {
        ECDSA_SIG_get0(sig, &r, &s);
        ok = BN_bn2binpad(r, rs, 32) == 32 && BN_bn2binpad(s, rs + 32, 32) == 32;
    }
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(m);
    return ok;
}

/* A token with exactly this header and payload JSON, signed by key with
 * the test's own signer (or with an empty signature if key is NULL). */
static char *craft(EVP_PKEY *key, const char *hdr, const char *payload)
{
    char *h = b64url(hdr, strlen(hdr)), *p = b64url(payload, strlen(payload));
    char *input = join3(h, p, ""), *s = NULL, *jwt;
    unsigned char rs[64];

    input[strlen(input) - 1] = '\0'; /* "h.p." -> "h.p" */
    if (key != NULL && evp_sign_rs(key, input, rs))
        s = b64url(rs, sizeof(rs));
    jwt = join3(h, p, s != NULL ? s : "");
    free(h);
    free(p);
    free(s);
    free(input);
    return jwt;
}

static EVP_PKEY *load_pem(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);

    BIO_free(b);
    return k;
}

/* Claims a daemon would mint, as a new object. */
static json_t *good_claims(void)
{
    return json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:s}", "iss", ISSUER, "sub",
                     "dev-1", "aud", AUDIENCE, "iat", (json_int_t)NOW, "exp",
                     (json_int_t)NOW + 300, "jti", "j-1", "scope",
                     "publish:d/dev-1/#");
}

static const char GOOD_PAYLOAD[] =
    "{\"iss\":\"https://authd.test\",\"sub\":\"dev-1\",\"aud\":\"mqtt\","
    "\"exp\":1700000300}";

/* tok_verify on jwt with the default expectations; the reason in err. */
static ad_err verify(const char *jwt, char *err, size_t errlen)
{
    tok_expect x = expect_default();
    json_t *c = NULL;
    ad_err e = tok_verify(ring, jwt, &x, &c, err, errlen);

    if ((e == AD_OK) != (c != NULL))
        tap_diag("claims returned %s a success", c ? "without" : "despite");
    json_decref(c);
    return e;
}

static char *mint(tok_ring *r, json_t *claims)
{
    char *jwt = NULL;

    /* Every later check needs the token; without one, stop here. */
    if (tok_mint(r, claims, &jwt) != AD_OK || jwt == NULL) {
        printf("Bail out! tok_mint failed on valid claims\n");
        exit(1);
    }
    json_decref(claims);
    return jwt;
}

/* Checks that a token is refused as a bad credential and, if reason is
 * set, that err mentions it. */
static void refused(const char *jwt, const char *reason, const char *why)
{
    char err[256] = "";
    ad_err e = verify(jwt, err, sizeof(err));

    ok(e == AD_EBADCRED && (reason == NULL || strstr(err, reason) != NULL),
       "%s (got %s: %s)", why, ad_err_code(e), err);
}

/* ---- tests -------------------------------------------------------- */

static void test_token_round_trips_through_mint_and_verify(void)
{
    json_t *claims = good_claims(), *got = NULL;
    tok_expect x = expect_default();
    char *jwt = NULL, err[256] = "";

    ok(tok_mint(ring, claims, &jwt) == AD_OK && jwt != NULL,
       "a token is minted with the active key");
    ok(jwt != NULL && strlen(jwt) <= TOK_JWT_MAX, "it fits in TOK_JWT_MAX");
    ok(tok_verify(ring, jwt, &x, &got, err, sizeof(err)) == AD_OK,
       "the token verifies (%s)", err);
    ok(got != NULL && json_equal(got, claims),
       "verification returns exactly the minted claims");
    json_decref(got);
    got = NULL;
    x.audience = NULL;
    ok(tok_verify(ring, jwt, &x, NULL, err, sizeof(err)) == AD_OK,
       "with no audience expected any aud is accepted, and claims may be NULL");
    free(jwt);
    json_decref(claims);
}

/* The payload part of a token, decoded (malloc()ed, NUL-terminated). */
static char *payload_of(const char *jwt)
{
    const char *p = strchr(jwt, '.') + 1;
    size_t n = (size_t)(strchr(p, '.') - p);
    unsigned char *out = malloc(n);

    out[unb64url(p, n, out)] = '\0';
    return (char *)out;
}

static void test_claims_are_serialized_as_jansson_would(void)
{
    json_t *c = json_pack(
        "{s:s,s:s,s:s,s:I,s:I,s:i,s:f,s:f,s:f,s:f,s:f,s:b,s:b,s:n,s:[],s:{},"
        "s:[{s:[i,s]}],s:s}",
        "iss", ISSUER, "esc", "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f end",
        "utf8", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x94\x91", "big",
        (json_int_t)9223372036854775807LL, "min",
        (json_int_t)(-9223372036854775807LL - 1), "neg", -42, "r1", 0.1, "r2",
        1e20, "r3", -2.5e-7, "r4", 3.0, "r5", 1e300, "t", 1, "f", 0, "nul",
        "ea", "eo", "deep", "k", 1, "v", "exp", "x");
    char *jwt = NULL, *payload, *want = json_dumps(c, JSON_COMPACT);
    json_t *back;

    json_object_set_new(c, "exp", json_integer(NOW + 60));
    free(want);
    want = json_dumps(c, JSON_COMPACT);
    ok(tok_mint(ring, c, &jwt) == AD_OK, "claims with every JSON type are minted");
    payload = jwt ? payload_of(jwt) : NULL;
    if (!ok(payload && want && strcmp(payload, want) == 0,
            "the payload is byte-for-byte json_dumps(JSON_COMPACT)"))
        tap_diag("got %s, want %s", payload ? payload : "(null)",
                 want ? want : "(null)");
    back = payload ? json_loads(payload, JSON_REJECT_DUPLICATES, NULL) : NULL;
    ok(back != NULL && json_equal(back, c), "and it reads back equal");
    json_decref(back);
    free(payload);
    free(want);
    free(jwt);
    jwt = NULL;
    json_decref(c);

    c = good_claims();
    json_object_set_new(c, "bad", json_stringn("a\0b", 3));
    ok(tok_mint(ring, c, &jwt) == AD_EFIELD && !jwt,
       "a string with NUL is not minted (verifiers would refuse it)");
    json_object_set_new(c, "bad", json_stringn_nocheck("\xc3(", 2));
    ok(tok_mint(ring, c, &jwt) == AD_EFIELD && !jwt,
       "invalid UTF-8 is not minted");
    json_object_set_new(c, "bad", json_stringn_nocheck("\xed\xa0\x80", 3));
    ok(tok_mint(ring, c, &jwt) == AD_EFIELD && !jwt,
       "an encoded surrogate is not minted");
    json_object_del(c, "bad");
    {
        json_t *deep = json_array(), *inner = deep;
        int i;

        for (i = 0; i < 40; i++) {
            json_t *next = json_array();

            json_array_append_new(inner, next);
            inner = next;
        }
        json_object_set_new(c, "deep", deep);
    }
    ok(tok_mint(ring, c, &jwt) == AD_EFIELD && !jwt,
       "claims nested 40 deep are not minted");
    json_decref(c);
}

static void test_token_header_is_es256_at_jwt_with_the_kid(void)
{
    char *jwt = mint(ring, good_claims());
    unsigned char raw[512];
    size_t n = unb64url(jwt, (size_t)(strchr(jwt, '.') - jwt), raw);
    json_t *h = json_loadb((const char *)raw, n, 0, NULL);

    ok(h != NULL && json_object_size(h) == 3, "the header has three members");
    ok(strcmp(json_string_value(json_object_get(h, "alg")), "ES256") == 0,
       "alg is ES256");
    ok(strcmp(json_string_value(json_object_get(h, "typ")), "at+jwt") == 0,
       "typ is at+jwt (RFC 9068)");
    ok(strcmp(json_string_value(json_object_get(h, "kid")), "kid1") == 0,
       "kid names the signing key so verifiers can pick it from the JWKS");
    ok(strchr(jwt, '=') == NULL, "no part carries base64 padding");
    json_decref(h);
    free(jwt);
}

static void test_signature_verifies_with_openssl_evp(void)
{
    char *jwt = mint(ring, good_claims());
    const char *d2 = strrchr(jwt, '.');
    unsigned char rs[64], der[128], *dp = der;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int len, good;

    ok(unb64url(d2 + 1, strlen(d2 + 1), rs) == 64,
       "the signature is 64 bytes of r||s, not DER");
    ECDSA_SIG_set0(sig, BN_bin2bn(rs, 32, NULL), BN_bin2bn(rs + 32, 32, NULL));
    len = i2d_ECDSA_SIG(sig, &dp);
    good = len > 0 && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, key1) == 1 &&
           EVP_DigestVerify(m, der, (size_t)len, (const unsigned char *)jwt,
                            (size_t)(d2 - jwt)) == 1;
    ok(good, "OpenSSL's EVP verifier accepts the signature over header.payload");
    EVP_MD_CTX_free(m);
    ECDSA_SIG_free(sig);
    free(jwt);
}

static void test_crafted_token_from_the_same_key_is_accepted(void)
{
    char *jwt = craft(key1, "{\"kid\":\"kid1\",\"alg\":\"ES256\",\"typ\":\"JWT\"}",
                      GOOD_PAYLOAD);
    char err[256] = "";

    ok(verify(jwt, err, sizeof(err)) == AD_OK,
       "a foreign-ordered header with typ JWT and an EVP signature verifies (%s)",
       err);
    free(jwt);
    jwt = craft(key1, "{\"kid\":\"kid1\",\"alg\":\"ES256\"}", GOOD_PAYLOAD);
    ok(verify(jwt, err, sizeof(err)) == AD_OK, "typ may be absent (%s)", err);
    free(jwt);
}

static void test_token_signed_by_another_key_is_refused(void)
{
    tok_ring *other = NULL;
    char *jwt = NULL;

    ok(tok_ring_new(&other) == AD_OK &&
           tok_ring_add(other, "kid1", pem_other, 1, NULL, 0) == AD_OK,
       "a second ring holds a different key under the same kid");
    jwt = mint(other, good_claims());
    refused(jwt, "bad signature",
            "a token from another key with our kid is a bad signature");
    free(jwt);
    tok_ring_free(other);
}

static void test_alg_none_token_is_refused(void)
{
    char *jwt = craft(NULL, "{\"alg\":\"none\"}", GOOD_PAYLOAD);

    refused(jwt, NULL, "alg none with an empty signature is refused");
    free(jwt);
    jwt = craft(NULL, "{\"alg\":\"none\",\"kid\":\"kid1\"}", GOOD_PAYLOAD);
    refused(jwt, NULL, "alg none naming a known kid is refused");
    free(jwt);
    /* Same, but with a 64-byte signature so only alg can be the reason. */
    jwt = craft(key1, "{\"alg\":\"none\",\"kid\":\"kid1\"}", GOOD_PAYLOAD);
    refused(jwt, "alg", "alg none is refused even with a valid ES256 signature");
    free(jwt);
}

static void test_hs256_token_is_refused(void)
{
    const char *hdr = "{\"alg\":\"HS256\",\"kid\":\"kid1\"}";
    char *h = b64url(hdr, strlen(hdr));
    char *p = b64url(GOOD_PAYLOAD, strlen(GOOD_PAYLOAD));
    char *input = join3(h, p, ""), *s, *jwt;
    unsigned char mac[64];
    unsigned mlen = 0;

    /* The classic confusion: HMAC keyed with the public key's PEM. */
    input[strlen(input) - 1] = '\0';
    HMAC(EVP_sha256(), pem1, (int)strlen(pem1), (unsigned char *)input,
         strlen(input), mac, &mlen);
    s = b64url(mac, mlen);
    jwt = join3(h, p, s);
    refused(jwt, NULL, "an HS256 token is refused");
    free(jwt);
    free(s);
    /* A 64-byte "HMAC" so the header is what gets it refused. */
    free(input);
    jwt = craft(key1, hdr, GOOD_PAYLOAD);
    refused(jwt, "alg", "alg HS256 is refused whatever the signature");
    free(jwt);
    free(h);
    free(p);
}

static void test_other_headers_are_refused(void)
{
    static const struct {
        const char *hdr, *reason, *why;
    } cases[] = {
        {"{\"alg\":\"ES384\",\"kid\":\"kid1\"}", "alg", "ES384 is refused"},
        {"{\"alg\":\"es256\",\"kid\":\"kid1\"}", "alg", "alg is case-sensitive"},
        {"{\"kid\":\"kid1\"}", "alg", "a missing alg is refused"},
        {"{\"alg\":[\"ES256\"],\"kid\":\"kid1\"}", "alg", "a non-string alg is refused"},
        {"{\"alg\":\"ES256\",\"alg\":\"none\",\"kid\":\"kid1\"}", "header",
         "a duplicate alg is refused"},
        {"{\"alg\":\"ES256\",\"kid\":\"kid1\",\"crit\":[\"exp\"]}", "crit",
         "crit is refused"},
        {"{\"alg\":\"ES256\",\"kid\":\"kid1\",\"typ\":\"JOSE\"}", "typ",
         "an unexpected typ is refused"},
        {"{\"alg\":\"ES256\"}", "kid", "a missing kid is refused"},
        {"{\"alg\":\"ES256\",\"kid\":7}", "kid", "a non-string kid is refused"},
        {"[\"ES256\"]", "header", "a header that is not an object is refused"},
        {"{\"alg\":\"ES256\",\"kid\":\"kid1\"", "header", "a truncated header is refused"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *jwt = craft(key1, cases[i].hdr, GOOD_PAYLOAD);

        refused(jwt, cases[i].reason, cases[i].why);
        free(jwt);
    }
}

static void test_tampered_payload_is_refused(void)
{
    char *jwt = mint(ring, good_claims()), *p = strchr(jwt, '.') + 1;

    /* A middle character: always valid base64url, never padding bits. */
    p[4] = p[4] == 'A' ? 'B' : 'A';
    refused(jwt, "bad signature", "one changed payload character breaks the signature");
    free(jwt);

    jwt = mint(ring, good_claims());
    {
        /* Swap in a payload that grants more, keeping the signature. */
        const char *rich = "{\"iss\":\"https://authd.test\",\"sub\":\"admin\","
                           "\"aud\":\"mqtt\",\"exp\":1800000000}";
        char *h = strndup(jwt, (size_t)(strchr(jwt, '.') - jwt));
        char *np = b64url(rich, strlen(rich)), *forged;

        forged = join3(h, np, strrchr(jwt, '.') + 1);
        refused(forged, "bad signature", "a substituted payload is refused");
        free(forged);
        free(np);
        free(h);
    }
    free(jwt);
}

static void test_tampered_header_is_refused(void)
{
    char *jwt = mint(ring, good_claims());
    const char *hdr = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"kid1\"}";
    char *h = b64url(hdr, strlen(hdr));
    char *rest = strchr(jwt, '.') + 1, *forged;
    size_t n = strlen(h) + strlen(rest) + 2;

    forged = malloc(n);
    snprintf(forged, n, "%s.%s", h, rest);
    refused(forged, "bad signature", "a different (valid) header breaks the signature");
    free(forged);
    free(h);
    free(jwt);
}

static void test_truncated_signature_is_refused(void)
{
    char *jwt = mint(ring, good_claims());
    size_t n = strlen(jwt);

    jwt[n - 1] = '\0';
    refused(jwt, "signature", "a signature one character short is refused");
    jwt[n - 4] = '\0';
    refused(jwt, "signature", "a signature of 61 bytes is refused");
    *(strrchr(jwt, '.') + 1) = '\0';
    refused(jwt, "signature", "an empty signature is refused");
    free(jwt);
}

static void test_token_without_exactly_three_parts_is_refused(void)
{
    char *jwt = mint(ring, good_claims());
    char *four = concat(jwt, ".x"), *one;

    refused(four, "three", "four parts are refused");
    four[strlen(four) - 1] = '\0';
    refused(four, "three", "a trailing dot is refused");
    one = strndup(jwt, (size_t)(strrchr(jwt, '.') - jwt));
    refused(one, "three", "two parts (no signature) are refused");
    *strchr(one, '.') = '\0';
    refused(one, "three", "one part is refused");
    refused("", NULL, "an empty token is refused");
    refused("..", NULL, "three empty parts are refused");
    free(one);
    free(four);
    free(jwt);
}

static void test_base64_padding_is_refused(void)
{
    char *jwt = mint(ring, good_claims());
    char *padded = concat(jwt, "=="), *h;

    refused(padded, "signature", "a padded signature is refused");
    free(padded);
    /* The same padding on the header. */
    h = strndup(jwt, (size_t)(strchr(jwt, '.') - jwt));
    padded = concat(h, "=");
    free(h);
    h = padded;
    padded = concat(h, strchr(jwt, '.'));
    refused(padded, NULL, "a header with '=' is refused");
    free(padded);
    free(h);
    free(jwt);
}

static void test_non_base64url_characters_are_refused(void)
{
    static const char bad[] = {'+', '/', '*', ' ', '\n', '\x80'};
    char *jwt = mint(ring, good_claims());
    char *p = strchr(jwt, '.') + 1, *s = strrchr(jwt, '.') + 1, keep;
    size_t i;

    for (i = 0; i < sizeof(bad); i++) {
        keep = p[5];
        p[5] = bad[i];
        refused(jwt, "payload", "a payload with a non-base64url byte is refused");
        p[5] = keep;
        keep = s[5];
        s[5] = bad[i];
        refused(jwt, "signature", "a signature with a non-base64url byte is refused");
        s[5] = keep;
    }
    /* 64 bytes end in one byte over two characters: the last one's low
     * four bits are unused and must be zero, or two strings would decode
     * to the same signature. */
    keep = s[85];
    s[85] = keep == 'A' ? 'B' : (char)(keep + 1);
    refused(jwt, "signature", "non-canonical trailing bits are refused");
    s[85] = keep;
    ok(verify(jwt, NULL, 0) == AD_OK, "the restored token verifies again");
    free(jwt);
}

static json_t *claims_with(const char *name, json_t *value)
{
    json_t *c = good_claims();

    if (value == NULL)
        json_object_del(c, name);
    else
        json_object_set_new(c, name, value);
    return c;
}

static void check_claims(const char *name, json_t *value, ad_err want,
                         const char *reason, const char *why)
{
    char *jwt = mint(ring, claims_with(name, value)), err[256] = "";
    ad_err e = verify(jwt, err, sizeof(err));

    ok(e == want && (reason == NULL || strstr(err, reason) != NULL), "%s (%s: %s)",
       why, ad_err_code(e), err);
    free(jwt);
}

static void test_expired_token_is_refused(void)
{
    check_claims("exp", json_integer(NOW - LEEWAY - 1), AD_EBADCRED, "expired",
                 "exp beyond the leeway is expired");
    check_claims("exp", json_integer(NOW - LEEWAY), AD_EBADCRED, "expired",
                 "exp exactly now - leeway is expired");
    check_claims("exp", json_integer(NOW - LEEWAY + 1), AD_OK, NULL,
                 "exp within the leeway is accepted (clock skew)");
    check_claims("exp", json_real(NOW + 10.5), AD_OK, NULL,
                 "a fractional exp is a valid NumericDate");
}

static void test_missing_exp_is_refused(void)
{
    check_claims("exp", NULL, AD_EBADCRED, "exp", "a token without exp is refused");
    check_claims("exp", json_string("1800000000"), AD_EBADCRED, "exp",
                 "a string exp is refused");
    check_claims("exp", json_true(), AD_EBADCRED, "exp", "a boolean exp is refused");
}

static void test_token_not_yet_valid_is_refused(void)
{
    check_claims("nbf", json_integer(NOW + LEEWAY + 1), AD_EBADCRED, "nbf",
                 "nbf in the future beyond the leeway is refused");
    check_claims("nbf", json_integer(NOW + LEEWAY), AD_OK, NULL,
                 "nbf within the leeway is accepted");
    check_claims("nbf", json_string("0"), AD_EBADCRED, "nbf",
                 "a string nbf is refused");
    check_claims("iat", json_integer(NOW + LEEWAY + 1), AD_EBADCRED, "iat",
                 "iat in the future beyond the leeway is refused");
    check_claims("iat", json_null(), AD_EBADCRED, "iat", "a null iat is refused");
}

static void test_wrong_issuer_is_refused(void)
{
    check_claims("iss", json_string("https://evil.test"), AD_EBADCRED, "issuer",
                 "another issuer is refused");
    check_claims("iss", json_string("https://authd.tes"), AD_EBADCRED, "issuer",
                 "a prefix of the issuer is refused");
    check_claims("iss", NULL, AD_EBADCRED, "issuer", "a missing iss is refused");
    check_claims("iss", json_pack("[s]", ISSUER), AD_EBADCRED, "issuer",
                 "an iss array is refused");
}

static void test_wrong_audience_is_refused(void)
{
    check_claims("aud", json_string("mqtt2"), AD_EBADCRED, "audience",
                 "another audience is refused");
    check_claims("aud", NULL, AD_EBADCRED, "audience",
                 "a missing aud is refused when one is expected");
    check_claims("aud", json_pack("[s,s]", "a", "b"), AD_EBADCRED, "audience",
                 "an aud array without ours is refused");
    check_claims("aud", json_pack("[i,s]", 1, AUDIENCE), AD_OK, NULL,
                 "an aud array containing ours is accepted");
    check_claims("aud", json_pack("{s:s}", "aud", AUDIENCE), AD_EBADCRED,
                 "audience", "an aud object is refused");
}

static void test_unknown_kid_is_refused(void)
{
    char *jwt = craft(key1, "{\"alg\":\"ES256\",\"kid\":\"kid9\"}", GOOD_PAYLOAD);
    tok_ring *empty = NULL;
    tok_expect x = expect_default();
    json_t *c = NULL;
    char err[128] = "", *ours = mint(ring, good_claims());

    refused(jwt, "unknown kid", "a kid not in the ring is refused");
    free(jwt);
    tok_ring_new(&empty);
    ok(tok_verify(empty, ours, &x, &c, err, sizeof(err)) == AD_EBADCRED && !c &&
           strstr(err, "unknown kid"),
       "an empty ring verifies nothing (%s)", err);
    tok_ring_free(empty);
    free(ours);
}

static void test_oversize_token_is_refused(void)
{
    size_t big = TOK_JWT_MAX;
    char *filler = malloc(big), *payload = malloc(big + 200), *jwt;
    json_t *claims = good_claims();
    char *out = NULL;

    memset(filler, 'a', big - 1);
    filler[big - 1] = '\0';
    snprintf(payload, big + 200,
             "{\"iss\":\"https://authd.test\",\"aud\":\"mqtt\",\"exp\":1700000300,"
             "\"x\":\"%s\"}", filler);
    jwt = craft(key1, "{\"alg\":\"ES256\",\"kid\":\"kid1\"}", payload);
    refused(jwt, "longer", "a validly signed token over TOK_JWT_MAX is refused");
    free(jwt);

    json_object_set_new(claims, "x", json_string(filler));
    ok(tok_mint(ring, claims, &out) == AD_EFIELD && out == NULL,
       "claims too large for TOK_JWT_MAX are not minted");
    json_decref(claims);
    claims = json_array();
    ok(tok_mint(ring, claims, &out) == AD_EFIELD && out == NULL,
       "claims that are not an object are not minted");
    json_decref(claims);
    free(filler);
    free(payload);
}

static void test_zero_signature_is_refused(void)
{
    char *jwt = mint(ring, good_claims());
    char *s = strrchr(jwt, '.') + 1;

    memset(s, 'A', 86);
    refused(jwt, "bad signature", "r = s = 0 is refused");
    free(jwt);
}

static void test_bad_claims_json_is_refused(void)
{
    /* The third payload repeats "exp": duplicates must be refused. */
    static const char dup_exp[] =
        "{\"exp\":1700000300,\"iss\":\"https://authd.test\","
        "\"aud\":\"mqtt\",\"exp\":1}";
    static const char *payloads[] = {"[1,2]", "\"x\"", dup_exp, "{", ""};
    size_t i;

    for (i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        char *jwt = craft(key1, "{\"alg\":\"ES256\",\"kid\":\"kid1\"}", payloads[i]);

        refused(jwt, "claims", "a signed payload that is not one JSON object "
                "without duplicates is refused");
        free(jwt);
    }
}

static char *pem_of(EVP_PKEY *k, int sec1)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out;
    long n;

    if (sec1) {
        EC_KEY *ec = EVP_PKEY_get1_EC_KEY(k);

        PEM_write_bio_ECPrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
        EC_KEY_free(ec);
    } else {
        PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    }
    n = BIO_get_mem_data(b, &data);
    out = strndup(data, (size_t)n);
    BIO_free(b);
    return out;
}

static void test_ring_add_refuses_what_it_cannot_use(void)
{
    EVP_PKEY *p384 = EVP_EC_gen("P-384");
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    char *pem384 = pem_of(p384, 0), *pemed = pem_of(ed, 0);
    char *sec1 = pem_of(key1, 1), err[256] = "", longkid[TOK_KID_MAX + 1];
    tok_ring *r = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    char *enc = NULL, *data = NULL;
    long n;

    PEM_write_bio_PKCS8PrivateKey(b, key1, EVP_aes_128_cbc(), NULL, 0, NULL,
                                  (void *)"secret");
    n = BIO_get_mem_data(b, &data);
    enc = strndup(data, (size_t)n);
    BIO_free(b);

    tok_ring_new(&r);
    ok(tok_ring_add(r, "a", pem384, 1, err, sizeof(err)) == AD_EFIELD,
       "a P-384 key is refused (%s)", err);
    ok(tok_ring_add(r, "a", pemed, 1, err, sizeof(err)) == AD_EFIELD,
       "an Ed25519 key is refused (%s)", err);
    ok(tok_ring_add(r, "a", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END "
                    "PRIVATE KEY-----\n", 1, err, sizeof(err)) == AD_EFIELD,
       "garbage PEM is refused (%s)", err);
    ok(tok_ring_add(r, "a", enc, 1, err, sizeof(err)) == AD_EFIELD,
       "an encrypted key is refused, never prompting (%s)", err);
    ok(tok_ring_add(r, "", pem1, 1, err, sizeof(err)) == AD_EFIELD,
       "an empty kid is refused");
    ok(tok_ring_add(r, "a\"b", pem1, 1, err, sizeof(err)) == AD_EFIELD,
       "a kid with a quote is refused (it goes into the header verbatim)");
    memset(longkid, 'k', TOK_KID_MAX);
    longkid[TOK_KID_MAX] = '\0';
    ok(tok_ring_add(r, longkid, pem1, 1, err, sizeof(err)) == AD_EFIELD,
       "a kid of TOK_KID_MAX characters is refused");
    longkid[TOK_KID_MAX - 1] = '\0';
    ok(tok_ring_add(r, longkid, pem1, 1, err, sizeof(err)) == AD_OK,
       "a kid of TOK_KID_MAX-1 characters is accepted (%s)", err);
    ok(tok_ring_add(r, "sec1", sec1, 0, err, sizeof(err)) == AD_OK,
       "a SEC1 (EC PRIVATE KEY) PEM is accepted (%s)", err);
    ok(tok_ring_add(r, "sec1", pem2, 0, err, sizeof(err)) == AD_EFIELD,
       "a duplicate kid is refused (%s)", err);
    {
        char *jwt = mint(r, good_claims()), active[TOK_KID_MAX];
        tok_expect x = expect_default();

        ok(jwt != NULL && tok_verify(r, jwt, &x, NULL, err, sizeof(err)) == AD_OK,
           "a token under the longest kid verifies (%s)", err);
        tok_ring_active_kid(r, active);
        ok(strcmp(active, longkid) == 0, "the longest kid is reported whole");
        free(jwt);
    }
    tok_ring_free(r);
    free(enc);
    free(sec1);
    free(pemed);
    free(pem384);
    EVP_PKEY_free(ed);
    EVP_PKEY_free(p384);
}

static void test_mint_without_an_active_key_is_not_ready(void)
{
    tok_ring *r = NULL;
    char *jwt = NULL, kid[TOK_KID_MAX] = "x";
    json_t *claims = good_claims();

    tok_ring_new(&r);
    tok_ring_active_kid(r, kid);
    ok(kid[0] == '\0', "an empty ring has no active kid");
    ok(tok_mint(r, claims, &jwt) == AD_ENOTREADY && jwt == NULL,
       "minting with no key is AD_ENOTREADY");
    tok_ring_add(r, "passive", pem1, 0, NULL, 0);
    ok(tok_mint(r, claims, &jwt) == AD_ENOTREADY && jwt == NULL,
       "a key added without make_active does not sign");
    json_decref(claims);
    tok_ring_free(r);
}

static void test_rotation_keeps_old_tokens_until_their_key_is_removed(void)
{
    tok_ring *r = NULL;
    char *old = NULL, *fresh = NULL, kid[TOK_KID_MAX], err[256] = "";
    tok_expect x = expect_default();
    json_t *jwks, *keys;

    tok_ring_new(&r);
    tok_ring_add(r, "kid1", pem1, 1, NULL, 0);
    old = mint(r, good_claims());
    ok(tok_ring_add(r, "kid2", pem2, 1, err, sizeof(err)) == AD_OK,
       "a second key is added as active (%s)", err);
    tok_ring_active_kid(r, kid);
    ok(strcmp(kid, "kid2") == 0, "kid2 is now the active kid");
    fresh = mint(r, good_claims());
    {
        unsigned char raw[256];
        size_t n = unb64url(fresh, (size_t)(strchr(fresh, '.') - fresh), raw);
        json_t *h = json_loadb((const char *)raw, n, 0, NULL);

        ok(strcmp(json_string_value(json_object_get(h, "kid")), "kid2") == 0,
           "new tokens carry kid2");
        json_decref(h);
    }
    ok(tok_verify(r, old, &x, NULL, err, sizeof(err)) == AD_OK,
       "kid1 tokens still verify after the rotation (%s)", err);
    ok(tok_verify(r, fresh, &x, NULL, err, sizeof(err)) == AD_OK,
       "kid2 tokens verify (%s)", err);
    jwks = tok_ring_jwks(r);
    keys = json_object_get(jwks, "keys");
    ok(json_array_size(keys) == 2 &&
           strcmp(json_string_value(json_object_get(json_array_get(keys, 0), "kid")),
                  "kid1") == 0 &&
           strcmp(json_string_value(json_object_get(json_array_get(keys, 1), "kid")),
                  "kid2") == 0,
       "the JWKS lists both keys");
    json_decref(jwks);
    ok(tok_ring_remove(r, "kid2") == AD_ECONFLICT,
       "the active key cannot be removed");
    ok(tok_ring_remove(r, "kid3") == AD_ENOTFOUND, "removing an absent kid is not found");
    ok(tok_ring_remove(r, "kid1") == AD_OK, "the old key is removed");
    ok(tok_verify(r, old, &x, NULL, err, sizeof(err)) == AD_EBADCRED &&
           strstr(err, "unknown kid") != NULL,
       "kid1 tokens fail once kid1 is removed (%s)", err);
    ok(tok_verify(r, fresh, &x, NULL, err, sizeof(err)) == AD_OK,
       "kid2 tokens are unaffected (%s)", err);
    jwks = tok_ring_jwks(r);
    ok(json_array_size(json_object_get(jwks, "keys")) == 1,
       "the JWKS no longer lists kid1");
    json_decref(jwks);
    free(old);
    free(fresh);
    tok_ring_free(r);
}

static void test_jwks_coordinates_are_the_public_point(void)
{
    json_t *jwks = tok_ring_jwks(ring), *k = json_array_get(json_object_get(jwks, "keys"), 0);
    const char *x = json_string_value(json_object_get(k, "x"));
    const char *y = json_string_value(json_object_get(k, "y"));
    unsigned char xb[48], yb[48];
    EC_KEY *ec = EVP_PKEY_get1_EC_KEY(key1);
    const EC_GROUP *g = EC_KEY_get0_group(ec);
    EC_POINT *pt = EC_POINT_new(g);
    BIGNUM *bx = NULL, *by = NULL;
    int same;

    ok(json_object_size(k) == 7 &&
           strcmp(json_string_value(json_object_get(k, "kty")), "EC") == 0 &&
           strcmp(json_string_value(json_object_get(k, "crv")), "P-256") == 0 &&
           strcmp(json_string_value(json_object_get(k, "use")), "sig") == 0 &&
           strcmp(json_string_value(json_object_get(k, "alg")), "ES256") == 0 &&
           strcmp(json_string_value(json_object_get(k, "kid")), "kid1") == 0,
       "a JWK has exactly kty EC, crv P-256, x, y, kid, use sig, alg ES256");
    ok(x && y && strlen(x) == 43 && strlen(y) == 43,
       "x and y are 43 characters: 32 bytes unpadded, whatever the leading zeros");
    same = x && y && unb64url(x, 43, xb) == 32 && unb64url(y, 43, yb) == 32 &&
           (bx = BN_bin2bn(xb, 32, NULL)) && (by = BN_bin2bn(yb, 32, NULL)) &&
           EC_POINT_set_affine_coordinates(g, pt, bx, by, NULL) == 1 &&
           EC_POINT_cmp(g, pt, EC_KEY_get0_public_key(ec), NULL) == 0;
    ok(same, "x and y decode to the key's public point");
    BN_free(bx);
    BN_free(by);
    EC_POINT_free(pt);
    EC_KEY_free(ec);
    json_decref(jwks);
}

struct worker {
    tok_ring *ring;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    tok_expect x = expect_default();
    char err[128];
    int i;

    for (i = 0; i < THREAD_ROUNDS; i++) {
        json_t *c = good_claims();
        char *jwt = NULL;

        if (tok_mint(w->ring, c, &jwt) != AD_OK ||
            tok_verify(w->ring, jwt, &x, NULL, err, sizeof(err)) != AD_OK)
            w->failures++;
        free(jwt);
        json_decref(c);
    }
    return NULL;
}

static void test_concurrent_mint_and_verify_survive_rotation(void)
{
    enum { SPARES = 4, ACTIVES = 20 };
    struct worker w[THREADS];
    pthread_t t[THREADS];
    char *spares[SPARES], kid[32];
    tok_ring *r = NULL;
    int i, rounds = 0, errors = 0, failures = 0;

    for (i = 0; i < SPARES; i++)
        spares[i] = tok_new_key_pem();
    tok_ring_new(&r);
    tok_ring_add(r, "gen0", pem1, 1, NULL, 0);
    for (i = 0; i < THREADS; i++) {
        w[i].ring = r;
        w[i].failures = 0;
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    /* Rotate while the workers run: new active keys (whose tokens the
     * workers mint next), and passive keys that come and go, which moves
     * the ring's array under them. Active keys are never removed here:
     * a worker may be between minting and verifying with one. */
    for (rounds = 0; rounds < ACTIVES; rounds++) {
        json_t *jwks;

        snprintf(kid, sizeof(kid), "gen%d", rounds + 1);
        errors += tok_ring_add(r, kid, spares[rounds % SPARES], 1, NULL, 0) != AD_OK;
        snprintf(kid, sizeof(kid), "spare%d", rounds);
        errors += tok_ring_add(r, kid, spares[(rounds + 1) % SPARES], 0, NULL, 0) != AD_OK;
        jwks = tok_ring_jwks(r);
        errors += jwks == NULL;
        json_decref(jwks);
        errors += tok_ring_remove(r, kid) != AD_OK;
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
    }
    ok(errors == 0, "every rotation step succeeded under load");
    ok(failures == 0, "all %d mint+verify pairs in %d threads succeeded during "
       "%d rotations (%d failed)", THREADS * THREAD_ROUNDS, THREADS, rounds,
       failures);
    tok_ring_free(r);
    for (i = 0; i < SPARES; i++)
        free(spares[i]);
}

static void test_new_key_pem_is_a_pkcs8_p256_key(void)
{
    char *pem = tok_new_key_pem();
    EVP_PKEY *k = pem ? load_pem(pem) : NULL;
    char name[32] = "";
    size_t n = 0;

    ok(pem != NULL && strncmp(pem, "-----BEGIN PRIVATE KEY-----", 27) == 0,
       "tok_new_key_pem returns PKCS#8 PEM");
    ok(k != NULL && EVP_PKEY_get_group_name(k, name, sizeof(name), &n) == 1 &&
           strcmp(name, "prime256v1") == 0,
       "the key is on P-256 (%s)", name);
    EVP_PKEY_free(k);
    free(pem);
}

int main(void)
{
    char err[256] = "";

    pem1 = tok_new_key_pem();
    pem2 = tok_new_key_pem();
    pem_other = tok_new_key_pem();
    key1 = pem1 ? load_pem(pem1) : NULL;
    if (key1 == NULL || pem2 == NULL || pem_other == NULL ||
        tok_ring_new(&ring) != AD_OK ||
        tok_ring_add(ring, "kid1", pem1, 1, err, sizeof(err)) != AD_OK) {
        printf("Bail out! cannot set up a key ring: %s\n", err);
        return 1;
    }

    TAP_RUN(test_token_round_trips_through_mint_and_verify);
    TAP_RUN(test_claims_are_serialized_as_jansson_would);
    TAP_RUN(test_token_header_is_es256_at_jwt_with_the_kid);
    TAP_RUN(test_signature_verifies_with_openssl_evp);
    TAP_RUN(test_crafted_token_from_the_same_key_is_accepted);
    TAP_RUN(test_token_signed_by_another_key_is_refused);
    TAP_RUN(test_alg_none_token_is_refused);
    TAP_RUN(test_hs256_token_is_refused);
    TAP_RUN(test_other_headers_are_refused);
    TAP_RUN(test_tampered_payload_is_refused);
    TAP_RUN(test_tampered_header_is_refused);
    TAP_RUN(test_truncated_signature_is_refused);
    TAP_RUN(test_token_without_exactly_three_parts_is_refused);
    TAP_RUN(test_base64_padding_is_refused);
    TAP_RUN(test_non_base64url_characters_are_refused);
    TAP_RUN(test_expired_token_is_refused);
    TAP_RUN(test_missing_exp_is_refused);
    TAP_RUN(test_token_not_yet_valid_is_refused);
    TAP_RUN(test_wrong_issuer_is_refused);
    TAP_RUN(test_wrong_audience_is_refused);
    TAP_RUN(test_unknown_kid_is_refused);
    TAP_RUN(test_oversize_token_is_refused);
    TAP_RUN(test_zero_signature_is_refused);
    TAP_RUN(test_bad_claims_json_is_refused);
    TAP_RUN(test_ring_add_refuses_what_it_cannot_use);
    TAP_RUN(test_mint_without_an_active_key_is_not_ready);
    TAP_RUN(test_rotation_keeps_old_tokens_until_their_key_is_removed);
    TAP_RUN(test_jwks_coordinates_are_the_public_point);
    TAP_RUN(test_concurrent_mint_and_verify_survive_rotation);
    TAP_RUN(test_new_key_pem_is_a_pkcs8_p256_key);

    tok_ring_free(ring);
    EVP_PKEY_free(key1);
    free(pem1);
    free(pem2);
    free(pem_other);
    return tap_done();
}
