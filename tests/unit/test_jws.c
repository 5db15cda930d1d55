/* Unit tests of common/jws, the one ES256 compact-JWS reader of access
 * tokens and gateway bundles: JWS signed here by an independent signer
 * (OpenSSL's EVP_DigestSign, DER turned into r||s) verify; every header
 * refusal, a bad or foreign signature, malformed parts and oversize
 * input are refused with the reason the callers' messages rely on. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "../../common/codec.h"
#include "../../common/jws.h"
#include "tap.h"

static const char *const TOKEN_TYPS[] = {"at+jwt", "JWT", NULL};
static const char *const BUNDLE_TYPS[] = {"authd-bundle+jwt", NULL};
static const char GOOD_HDR[] = "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"k1\"}";
static const char GOOD_PAYLOAD[] = "{\"iss\":\"https://authd.test\",\"exp\":1}";

static EVP_PKEY *key1, *key2;
static EC_KEY *pub1, *pub2;

static char *b64(const void *p, size_t n)
{
    return codec_b64_encode_alloc(p, n, CODEC_B64_URL);
}

/* header.payload.signature signed with k: an r||s signature made from
 * OpenSSL's DER, so that the reader is checked against a signer it does
 * not share code with. */
static char *sign_jws(EVP_PKEY *k, const char *hdr, const char *payload)
{
    char *h = b64(hdr, strlen(hdr)), *p = b64(payload, strlen(payload));
    unsigned char der[160], rs[JWS_SIG_LEN];
    size_t n = strlen(h) + strlen(p) + 2, derlen = sizeof(der);
    char *input = malloc(n), *sig, *out;
    const unsigned char *dp = der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ECDSA_SIG *es;
    const BIGNUM *r, *s;

    snprintf(input, n, "%s.%s", h, p);
    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k);
    EVP_DigestSign(ctx, der, &derlen, (const unsigned char *)input,
                   strlen(input));
    es = d2i_ECDSA_SIG(NULL, &dp, (long)derlen);
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, rs, JWS_COORD_LEN);
    BN_bn2binpad(s, rs + JWS_COORD_LEN, JWS_COORD_LEN);
    sig = b64(rs, sizeof(rs));
    n += strlen(sig) + 1;
    out = malloc(n);
    snprintf(out, n, "%s.%s", input, sig);
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(ctx);
    free(sig);
    free(input);
    free(h);
    free(p);
    return out;
}

/* The whole check as a caller makes it: split, header (typs, required),
 * the key chosen by kid ("k1" is pub1, "k2" pub2), signature, payload.
 * The payload lands in payload (if non-NULL). */
static ad_err check(const char *jws, size_t len, const char *const *typs,
                    int typ_required, char *err, size_t errlen,
                    char payload[256])
{
    jws_parts parts;
    char kid[JWS_KID_MAX];
    uint8_t rs[JWS_SIG_LEN], out[256];
    size_t kid_len, n = 0;
    EC_KEY *key;
    ad_err e;

    err[0] = '\0';
    if ((e = jws_split(jws, len, 4096, "token", &parts, err, errlen)) != AD_OK ||
        (e = jws_header(&parts, typs, typ_required, kid, &kid_len, err,
                        errlen)) != AD_OK)
        return e;
    /* By (kid, kid_len), as the callers look keys up: a kid may hold a
     * NUL. */
    key = kid_len == 2 && memcmp(kid, "k1", 2) == 0   ? pub1
          : kid_len == 2 && memcmp(kid, "k2", 2) == 0 ? pub2
                                                       : NULL;
    if (key == NULL)
        return ad_errf(AD_EBADCRED, err, errlen, "unknown kid");
    if ((e = jws_sig_decode(&parts, rs, err, errlen)) != AD_OK ||
        (e = jws_verify(&parts, rs, key, err, errlen)) != AD_OK ||
        (e = jws_payload(&parts, out, sizeof(out) - 1, &n, err, errlen)) !=
            AD_OK)
        return e;
    if (payload != NULL) {
        memcpy(payload, out, n);
        payload[n] = '\0';
    }
    return AD_OK;
}

/* Refused with AD_EBADCRED and a message containing reason. */
static void refused(const char *jws, const char *const *typs, int required,
                    const char *reason, const char *why)
{
    char err[200] = "";
    ad_err e = check(jws, strlen(jws), typs, required, err, sizeof(err), NULL);

    ok(e == AD_EBADCRED && strstr(err, reason) != NULL, "%s (%s: %s)", why,
       ad_err_code(e), err);
}

static void test_good_token_verifies_and_yields_its_payload(void)
{
    char *jws = sign_jws(key1, GOOD_HDR, GOOD_PAYLOAD), err[200] = "", payload[256];
    jws_parts parts;
    char kid[JWS_KID_MAX];
    size_t kid_len = 0;

    ok(check(jws, strlen(jws), TOKEN_TYPS, 0, err, sizeof(err), payload) ==
               AD_OK &&
           strcmp(payload, GOOD_PAYLOAD) == 0,
       "a JWS from an independent ES256 signer verifies and its payload "
       "decodes to the signed bytes (%s)", err);
    ok(jws_split(jws, strlen(jws), 4096, "token", &parts, err, sizeof(err)) ==
               AD_OK &&
           parts.hdr == jws && parts.input_len == (size_t)(strrchr(jws, '.') - jws) &&
           parts.sig_len == JWS_SIG_B64_LEN &&
           jws_header(&parts, TOKEN_TYPS, 0, kid, &kid_len, err, sizeof(err)) ==
               AD_OK &&
           strcmp(kid, "k1") == 0 && kid_len == 2,
       "the parts point into the text, the signing input ends at the second "
       "dot, and the kid comes back for the caller's key lookup");
    free(jws);

    jws = sign_jws(key1, "{\"alg\":\"ES256\",\"kid\":\"k1\"}", GOOD_PAYLOAD);
    ok(check(jws, strlen(jws), TOKEN_TYPS, 0, err, sizeof(err), NULL) == AD_OK,
       "typ may be absent where the caller allows it (tokens) (%s)", err);
    free(jws);
    jws = sign_jws(key1, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k1\"}",
                   GOOD_PAYLOAD);
    ok(check(jws, strlen(jws), TOKEN_TYPS, 0, err, sizeof(err), NULL) == AD_OK,
       "any typ of the caller's list is accepted, not just the first (%s)", err);
    free(jws);
    jws = sign_jws(key2, "{\"alg\":\"ES256\",\"typ\":\"authd-bundle+jwt\","
                         "\"kid\":\"k2\"}", GOOD_PAYLOAD);
    ok(check(jws, strlen(jws), BUNDLE_TYPS, 1, err, sizeof(err), NULL) == AD_OK,
       "a bundle with the required typ verifies with the key its kid names "
       "(%s)", err);
    free(jws);
}

static void test_each_header_refusal(void)
{
    static const struct {
        const char *hdr, *reason, *why;
        int bundle;
    } cases[] = {
        {"{\"alg\":\"none\",\"kid\":\"k1\"}", "alg is not ES256", "alg none", 0},
        {"{\"alg\":\"HS256\",\"kid\":\"k1\"}", "alg is not ES256",
         "alg HS256 (the public key as an HMAC secret)", 0},
        {"{\"alg\":\"ES384\",\"kid\":\"k1\"}", "alg is not ES256", "alg ES384", 0},
        {"{\"alg\":\"es256\",\"kid\":\"k1\"}", "alg is not ES256",
         "alg is case-sensitive", 0},
        {"{\"kid\":\"k1\"}", "alg is not ES256", "a missing alg", 0},
        {"{\"alg\":[\"ES256\"],\"kid\":\"k1\"}", "alg is not ES256",
         "a non-string alg", 0},
        {"{\"alg\":\"ES256\\u0000\",\"kid\":\"k1\"}", "not a JSON object",
         "an alg with an escaped NUL (which C strings would cut to ES256)", 0},
        {"{\"alg\":\"ES256\",\"alg\":\"none\",\"kid\":\"k1\"}", "not a JSON object",
         "a duplicate alg (two parsers must not read two algs)", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"kid\":\"k2\"}", "not a JSON object",
         "a duplicate kid", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"crit\":[\"exp\"]}",
         "crit is not supported", "crit (no extension is understood)", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"k1\",\"crit\":[]}", "crit is not supported",
         "even an empty crit", 0},
        {"{\"alg\":\"ES256\",\"typ\":\"JOSE\",\"kid\":\"k1\"}", "typ is not at+jwt",
         "a typ outside the token list, named by its first entry", 0},
        {"{\"alg\":\"ES256\",\"typ\":7,\"kid\":\"k1\"}", "typ is not at+jwt",
         "a non-string typ", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"k1\"}", "typ is not authd-bundle+jwt",
         "an absent typ where the caller requires one (bundles)", 1},
        {"{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"k1\"}",
         "typ is not authd-bundle+jwt",
         "an access token's typ where a bundle's is required", 1},
        {"{\"alg\":\"ES256\"}", "no kid", "a missing kid", 0},
        {"{\"alg\":\"ES256\",\"kid\":7}", "no kid", "a non-string kid", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"\"}", "unknown kid", "an empty kid", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"k3\"}", "unknown kid",
         "a kid the caller has no key for", 0},
        {"[\"ES256\"]", "not a JSON object", "a header that is an array", 0},
        {"{\"alg\":\"ES256\",\"kid\":\"k1\"", "not a JSON object",
         "a truncated header", 0},
        {"", "not a JSON object", "an empty header", 0},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* Validly signed, so the header is the only reason. */
        char *jws = sign_jws(key1, cases[i].hdr, GOOD_PAYLOAD);

        refused(jws, cases[i].bundle ? BUNDLE_TYPS : TOKEN_TYPS, cases[i].bundle,
                cases[i].reason, cases[i].why);
        free(jws);
    }
}

static void test_kid_bounds(void)
{
    char hdr[200], kid63[64], kid[JWS_KID_MAX], err[200] = "";
    char *jws;
    jws_parts parts;
    size_t kid_len = 99;

    memset(kid63, 'k', 63);
    kid63[63] = '\0';
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid63);
    jws = sign_jws(key1, hdr, GOOD_PAYLOAD);
    ok(jws_split(jws, strlen(jws), 4096, "token", &parts, err, sizeof(err)) ==
               AD_OK &&
           jws_header(&parts, TOKEN_TYPS, 0, kid, &kid_len, err, sizeof(err)) ==
               AD_OK &&
           kid_len == 63 && strcmp(kid, kid63) == 0,
       "a kid of JWS_KID_MAX - 1 bytes is returned whole (%s)", err);
    free(jws);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%sk\"}", kid63);
    jws = sign_jws(key1, hdr, GOOD_PAYLOAD);
    jws_split(jws, strlen(jws), 4096, "token", &parts, err, sizeof(err));
    ok(jws_header(&parts, TOKEN_TYPS, 0, kid, &kid_len, err, sizeof(err)) ==
               AD_EBADCRED &&
           strstr(err, "unknown kid") && kid[0] == '\0' && kid_len == 0,
       "a kid of JWS_KID_MAX bytes cannot name a key: unknown kid, nothing "
       "copied (%s)", err);
    free(jws);
    jws = sign_jws(key1, "{\"alg\":\"ES256\",\"kid\":\"k1\\u0000x\"}", GOOD_PAYLOAD);
    refused(jws, TOKEN_TYPS, 0, "not a JSON object",
            "a kid with an escaped NUL is refused, so it can never be read "
            "as \"k1\"");
    free(jws);
}

static void test_bad_signature_is_refused(void)
{
    char *jws = sign_jws(key1, GOOD_HDR, GOOD_PAYLOAD);
    char *p = strchr(jws, '.') + 1, *s = strrchr(jws, '.') + 1, keep;

    keep = p[4];
    p[4] = keep == 'A' ? 'B' : 'A';
    refused(jws, TOKEN_TYPS, 0, "bad signature", "one payload character changed");
    p[4] = keep;
    keep = s[10];
    s[10] = keep == 'A' ? 'B' : 'A';
    refused(jws, TOKEN_TYPS, 0, "bad signature", "one signature character changed");
    s[10] = keep;
    keep = jws[2];
    jws[2] = keep == 'A' ? 'B' : 'A';
    refused(jws, TOKEN_TYPS, 0, "", "one header character changed");
    jws[2] = keep;
    memset(s, 'A', JWS_SIG_B64_LEN);
    refused(jws, TOKEN_TYPS, 0, "bad signature", "r = s = 0");
    /* 64 0xff bytes: r and s above the group order. */
    memset(s, '_', JWS_SIG_B64_LEN - 1);
    s[JWS_SIG_B64_LEN - 1] = 'w';
    refused(jws, TOKEN_TYPS, 0, "bad signature", "r and s not below the order");
    free(jws);
}

static void test_wrong_key_is_refused(void)
{
    char *jws = sign_jws(key2, GOOD_HDR, GOOD_PAYLOAD), err[200] = "";
    jws_parts parts;
    uint8_t rs[JWS_SIG_LEN];

    refused(jws, TOKEN_TYPS, 0, "bad signature",
            "a JWS signed by another key under our kid");
    jws_split(jws, strlen(jws), 4096, "token", &parts, err, sizeof(err));
    jws_sig_decode(&parts, rs, err, sizeof(err));
    ok(jws_verify(&parts, rs, pub2, err, sizeof(err)) == AD_OK,
       "the same JWS verifies with the key that signed it");
    ok(jws_verify(&parts, rs, NULL, err, sizeof(err)) == AD_EBADCRED &&
           strstr(err, "bad signature"),
       "no key verifies nothing");
    free(jws);
}

static void test_malformed_parts_are_refused(void)
{
    char *jws = sign_jws(key1, GOOD_HDR, GOOD_PAYLOAD), *t, err[200] = "";
    size_t n = strlen(jws);
    jws_parts parts;
    uint8_t out[8];
    size_t got = 99;

    if ((t = malloc(n + 4)) == NULL || jws == NULL) {
        printf("Bail out! out of memory\n");
        exit(1);
    }
    snprintf(t, n + 4, "%s.x", jws);
    refused(t, TOKEN_TYPS, 0, "three dot-separated parts", "four parts");
    t[n + 1] = '\0';
    refused(t, TOKEN_TYPS, 0, "three dot-separated parts", "a trailing dot");
    memcpy(t, jws, n + 1);
    *strrchr(t, '.') = '\0';
    refused(t, TOKEN_TYPS, 0, "three dot-separated parts", "two parts");
    refused("abc", TOKEN_TYPS, 0, "three dot-separated parts", "one part");
    ok(jws_split("", 0, 4096, "bundle", &parts, err, sizeof(err)) == AD_EBADCRED &&
           strcmp(err, "the bundle is not three dot-separated parts") == 0 &&
           parts.hdr == NULL,
       "an empty text is refused, named as the caller asked, parts zeroed "
       "(%s)", err);
    refused("..", TOKEN_TYPS, 0, "not a JSON object", "three empty parts");

    /* Bounds: only text[0..len) is read, whatever follows it. */
    memcpy(t, jws, n + 1);
    ok(jws_split(t, (size_t)(strrchr(t, '.') - t), 4096, "token", &parts, err,
                 sizeof(err)) == AD_EBADCRED,
       "a length ending before the second dot sees two parts, not the "
       "bytes after it");
    ok(check(t, n - 1, TOKEN_TYPS, 0, err, sizeof(err), NULL) == AD_EBADCRED &&
           strstr(err, "not 64 bytes"),
       "a length one short of the text cuts the signature (%s)", err);

    snprintf(t, n + 4, "%s==", jws);
    refused(t, TOKEN_TYPS, 0, "not 64 bytes", "a padded signature");
    memcpy(t, jws, n + 1);
    t[n - 1] = t[n - 1] == 'A' ? 'B' : (char)(t[n - 1] + 1);
    refused(t, TOKEN_TYPS, 0, "the signature is not base64url",
            "non-zero unused bits in the signature's last character");
    memcpy(t, jws, n + 1);
    t[n - 5] = '+';
    refused(t, TOKEN_TYPS, 0, "the signature is not base64url",
            "a standard-alphabet character in the signature");
    memcpy(t, jws, n + 1);
    strchr(t, '.')[3] = '*';
    jws_split(t, n, 4096, "token", &parts, err, sizeof(err));
    ok(jws_payload(&parts, out, sizeof(out), &got, err, sizeof(err)) ==
               AD_EBADCRED &&
           strstr(err, "the payload is not base64url") && got == 0,
       "a payload with a byte outside base64url is refused (%s)", err);
    t[2] = '=';
    refused(t, TOKEN_TYPS, 0, "the header is not base64url",
            "a header with '=' in it");
    free(t);
    free(jws);
}

static void test_oversize_is_refused(void)
{
    char *jws = sign_jws(key1, GOOD_HDR, GOOD_PAYLOAD), err[200] = "", *big, *hdr;
    size_t n = strlen(jws), got = 0;
    jws_parts parts;
    uint8_t small[8], *heap = NULL;

    ok(jws_split(jws, n, n, "token", &parts, err, sizeof(err)) == AD_OK,
       "a JWS of exactly max bytes is within bounds");
    ok(jws_split(jws, n, n - 1, "token", &parts, err, sizeof(err)) ==
               AD_EBADCRED &&
           strstr(err, "the token is longer than") && parts.hdr == NULL,
       "one byte over max is refused before anything is read (%s)", err);

    /* A header that decodes past JWS_HDR_RAW_MAX, validly signed. */
    hdr = malloc(JWS_HDR_RAW_MAX + 64);
    snprintf(hdr, JWS_HDR_RAW_MAX + 64, "{\"alg\":\"ES256\",\"kid\":\"k1\",\"x\":\"%*s\"}",
             JWS_HDR_RAW_MAX, "");
    big = sign_jws(key1, hdr, GOOD_PAYLOAD);
    ok(jws_split(big, strlen(big), 8192, "token", &parts, err, sizeof(err)) ==
               AD_OK &&
           jws_header(&parts, TOKEN_TYPS, 0, (char[JWS_KID_MAX]){0}, &got, err,
                      sizeof(err)) == AD_EBADCRED &&
           strstr(err, "too long"),
       "a header over JWS_HDR_RAW_MAX is refused, not parsed (%s)", err);
    free(big);
    free(hdr);

    jws_split(jws, n, 4096, "token", &parts, err, sizeof(err));
    ok(jws_payload(&parts, small, sizeof(small), &got, err, sizeof(err)) ==
               AD_EBADCRED &&
           got == 0,
       "a payload longer than the caller's buffer is refused, not cut");
    ok(jws_payload_alloc(&parts, &heap, &got, err, sizeof(err)) == AD_OK &&
           got == strlen(GOOD_PAYLOAD) && memcmp(heap, GOOD_PAYLOAD, got) == 0,
       "the allocating decoder sizes its buffer from the part");
    free(heap);
    free(jws);
}

int main(void)
{
    key1 = EVP_EC_gen("P-256");
    key2 = EVP_EC_gen("P-256");
    pub1 = EVP_PKEY_get1_EC_KEY(key1);
    pub2 = EVP_PKEY_get1_EC_KEY(key2);
    if (pub1 == NULL || pub2 == NULL) {
        printf("Bail out! cannot make P-256 keys\n");
        return 1;
    }
    test_good_token_verifies_and_yields_its_payload();
    test_each_header_refusal();
    test_kid_bounds();
    test_bad_signature_is_refused();
    test_wrong_key_is_refused();
    test_malformed_parts_are_refused();
    test_oversize_is_refused();
    EC_KEY_free(pub1);
    EC_KEY_free(pub2);
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
    return tap_done();
}
