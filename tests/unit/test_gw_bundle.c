/* Unit tests of clients/gateway/gw_bundle: bundles signed here with an
 * independent signer (OpenSSL EVP_DigestSign, DER turned into r||s) are
 * opened and decided on; every bundle that is expired, tampered, signed
 * by an unknown key or another curve, with alg none, or with junk around
 * it is refused; decisions follow the statements, the device's status
 * and the deny-wins rule. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "../../authd/tok.h"
#include "../../clients/gateway/gw_bundle.h"
#include "../../common/codec.h"
#include "tap.h"

enum { NOW = 1700000000 };

static EVP_PKEY *key1, *key2, *key384;

static char *b64(const void *p, size_t n)
{
    return codec_b64_encode_alloc(p, n, CODEC_B64_URL);
}

/* The JWK of a P-256 or P-384 public key. */
static json_t *jwk_of(EVP_PKEY *k, const char *kid)
{
    BIGNUM *x = NULL, *y = NULL;
    uint8_t bx[48], by[48];
    int bits = EVP_PKEY_get_bits(k), len = bits == 384 ? 48 : 32;
    char *sx, *sy;
    json_t *j;

    EVP_PKEY_get_bn_param(k, "qx", &x);
    EVP_PKEY_get_bn_param(k, "qy", &y);
    BN_bn2binpad(x, bx, len);
    BN_bn2binpad(y, by, len);
    sx = b64(bx, (size_t)len);
    sy = b64(by, (size_t)len);
    j = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "crv",
                  bits == 384 ? "P-384" : "P-256", "x", sx, "y", sy, "kid",
                  kid, "use", "sig");
    free(sx);
    free(sy);
    BN_free(x);
    BN_free(y);
    return j;
}

static gw_jwks *jwks_of(json_t *keys)
{
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(doc, JSON_COMPACT), err[200];
    gw_jwks *j = NULL;

    if (gw_jwks_parse(text, strlen(text), &j, err, sizeof(err)) != AD_OK)
        tap_diag("jwks: %s", err);
    free(text);
    json_decref(doc);
    return j;
}

/* header.payload.signature with k (r||s of the curve's width). */
static char *sign_raw(EVP_PKEY *k, const char *hdr, const char *payload)
{
    char *h = b64(hdr, strlen(hdr)), *p = b64(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + 2, siglen = 0;
    int w = EVP_PKEY_get_bits(k) == 384 ? 48 : 32;
    char *input = malloc(n), *sig, *out;
    unsigned char der[160], rs[96];
    const unsigned char *dp = der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ECDSA_SIG *es;
    const BIGNUM *r, *s;

    snprintf(input, n, "%s.%s", h, p);
    siglen = sizeof(der);
    EVP_DigestSignInit(ctx, NULL, w == 48 ? EVP_sha384() : EVP_sha256(), NULL,
                       k);
    EVP_DigestSign(ctx, der, &siglen, (const unsigned char *)input,
                   strlen(input));
    es = d2i_ECDSA_SIG(NULL, &dp, (long)siglen);
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, rs, w);
    BN_bn2binpad(s, rs + w, w);
    sig = b64(rs, (size_t)(2 * w));
    n = strlen(input) + strlen(sig) + 2;
    out = malloc(n);
    snprintf(out, n, "%s.%s", input, sig);
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(ctx);
    free(input);
    free(sig);
    free(h);
    free(p);
    return out;
}

static const char HDR1[] =
    "{\"alg\":\"ES256\",\"typ\":\"authd-bundle+jwt\",\"kid\":\"k1\"}";

/* The payload of a gateway gw1 with children c1 (active), c2 (suspended)
 * and c3 (revoked), exp as given. */
static char *payload(long long iat, long long exp)
{
    static const char fmt[] =
        "{\"iss\":\"https://authd.test\",\"iat\":%lld,\"exp\":%lld,"
        "\"gateway\":{\"id\":\"gw1\",\"statements\":["
        "{\"effect\":\"allow\",\"actions\":[\"publish\",\"subscribe\"],"
        "\"topics\":[\"gw/gw1/#\",\"dev/c1/up\"],\"policy\":\"gw\",\"index\":0},"
        "{\"effect\":\"deny\",\"actions\":[\"publish\",\"subscribe\"],"
        "\"topics\":[\"gw/gw1/secret\"],\"policy\":\"gw\",\"index\":1},"
        "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
        "\"client_ids\":[\"gw1\"],\"policy\":\"gw\",\"index\":2}]},"
        "\"children\":["
        "{\"id\":\"c1\",\"status\":\"active\",\"statements\":["
        "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
        "\"topics\":[\"dev/c1/+\"],\"policy\":\"dev\",\"index\":0}]},"
        "{\"id\":\"c2\",\"status\":\"suspended\",\"statements\":["
        "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
        "\"topics\":[\"dev/c2/+\"],\"policy\":\"dev\",\"index\":0}]},"
        "{\"id\":\"c3\",\"status\":\"revoked\",\"statements\":[]},"
        "{\"id\":\"c4\",\"status\":\"active\",\"statements\":[]}],"
        "\"revoked_serials\":[\"0A1B\",\"ff00\"],\"revoked_jtis\":[\"j1\"]}";
    char *p = malloc(sizeof(fmt) + 64);

    snprintf(p, sizeof(fmt) + 64, fmt, iat, exp);
    return p;
}

static gw_jwks *jwks;

static ad_err open_s(const char *jws, int64_t now, gw_bundle **b, char *err,
                     size_t errlen)
{
    return gw_bundle_open(jwks, jws, strlen(jws), now, NULL, b, err, errlen);
}

/* Refused with AD_EBADCRED and a message containing why. */
static void refused(const char *jws, size_t len, const char *why,
                    const char *what)
{
    gw_bundle *b = (gw_bundle *)1;
    char err[256] = "";
    ad_err e = gw_bundle_open(jwks, jws, len, NOW, NULL, &b, err, sizeof(err));

    ok(e == AD_EBADCRED && b == NULL && strstr(err, why) != NULL,
       "%s is refused (%s; got \"%s\")", what, why, err);
    gw_bundle_free(e == AD_OK ? b : NULL);
}

static void test_valid_bundle_decides_like_the_daemon(void)
{
    char *p = payload(NOW - 10, NOW + 3600), *jws = sign_raw(key1, HDR1, p);
    char err[256] = "";
    gw_bundle *b = NULL;
    pol_decision d;

    ok(open_s(jws, NOW, &b, err, sizeof(err)) == AD_OK && b != NULL,
       "a bundle signed by a JWKS key opens (%s)", err);
    if (b == NULL)
        goto out;
    ok(strcmp(gw_bundle_gateway(b), "gw1") == 0 &&
           gw_bundle_child_count(b) == 4 && gw_bundle_exp(b) == NOW + 3600 &&
           strcmp(gw_bundle_kid(b), "k1") == 0,
       "it names its gateway, its children, its exp and the kid");
    ok(gw_decide(b, NULL, POL_PUBLISH, "gw/gw1/a/b").allow,
       "the gateway (the default device) may publish under its allow");
    d = gw_decide(b, "gw1", POL_PUBLISH, "gw/gw1/secret");
    ok(!d.allow && strcmp(d.reason, "explicit_deny") == 0 &&
           strcmp(d.policy, "gw") == 0 && d.statement == 1,
       "an explicit deny wins over the covering allow, naming its statement");
    ok(!gw_decide(b, NULL, POL_SUBSCRIBE, "gw/#").allow,
       "a subscribe filter wider than the allow is not covered");
    ok(!gw_decide(b, NULL, POL_SUBSCRIBE, "gw/gw1/#").allow,
       "a subscribe filter that meets a deny is refused");
    ok(gw_decide(b, NULL, POL_SUBSCRIBE, "gw/gw1/x/+").allow,
       "a covered filter away from the deny is allowed");
    ok(gw_decide(b, NULL, POL_CONNECT, "gw1").allow &&
           !gw_decide(b, NULL, POL_CONNECT, "gw2").allow,
       "connect follows client_ids");
    ok(!gw_decide(b, NULL, POL_PUBLISH, "gw/gw1/+").allow,
       "a publish topic with a wildcard is denied");
    ok(gw_decide(b, "c1", POL_PUBLISH, "dev/c1/up").allow &&
           !gw_decide(b, "c1", POL_PUBLISH, "gw/gw1/a").allow,
       "a child decides with its own statements, not the gateway's");
    d = gw_decide(b, "c2", POL_PUBLISH, "dev/c2/up");
    ok(!d.allow && strcmp(d.reason, "device_suspended") == 0,
       "a suspended child is denied even where its statements allow");
    d = gw_decide(b, "c3", POL_PUBLISH, "dev/c3/up");
    ok(!d.allow && strcmp(d.reason, "device_revoked") == 0,
       "a revoked child is denied");
    d = gw_decide(b, "c4", POL_PUBLISH, "dev/c4/up");
    ok(!d.allow && strcmp(d.reason, "no_matching_allow") == 0,
       "an active child without statements is denied: no allow");
    d = gw_decide(b, "nobody", POL_PUBLISH, "dev/c1/up");
    ok(!d.allow && strcmp(d.reason, "unknown_device") == 0,
       "a device the bundle does not name is denied");
    ok(!gw_decide(b, NULL, (pol_action)0, "gw/gw1/a").allow,
       "an unknown action is a deny");
    ok(gw_bundle_serial_revoked(b, "0a1b") && gw_bundle_serial_revoked(b, "FF00") &&
           !gw_bundle_serial_revoked(b, "0a1c"),
       "revoked serials are found whatever the hex case");
    ok(gw_bundle_jti_revoked(b, "j1") && !gw_bundle_jti_revoked(b, "j2"),
       "revoked jtis are found");
out:
    gw_bundle_free(b);
    free(jws);
    free(p);
}

static void test_expired_bundle_is_refused(void)
{
    char *p = payload(NOW - 7200, NOW - 1), *jws = sign_raw(key1, HDR1, p);
    char *p2 = payload(NOW - 7200, NOW), *jws2 = sign_raw(key1, HDR1, p2);
    char *p3 = payload(NOW + 3600, NOW + 7200), *jws3 = sign_raw(key1, HDR1, p3);

    refused(jws, strlen(jws), "expired", "a bundle past its exp");
    refused(jws2, strlen(jws2), "expired", "a bundle at its exp exactly");
    refused(jws3, strlen(jws3), "iat", "a bundle issued an hour in the future");
    {
        /* A clock far in the past: iat - now does not fit in an int64. */
        gw_bundle *b = NULL;
        char err[200] = "";

        ok(gw_bundle_open(jwks, jws3, strlen(jws3), INT64_MIN + 10, NULL, &b,
                          err, sizeof(err)) == AD_EBADCRED &&
               strstr(err, "iat") != NULL,
           "with a clock at the start of time the bundle is from the future (%s)",
           err);
        gw_bundle_free(b);
    }
    free(jws);
    free(p);
    free(jws2);
    free(p2);
    free(jws3);
    free(p3);
}

static void test_tampered_bundle_is_refused(void)
{
    char *p = payload(NOW, NOW + 3600), *jws = sign_raw(key1, HDR1, p);
    char *t = strdup(jws), *d1 = strchr(t, '.'), *d2 = strrchr(t, '.');
    char *q, *forged, *pp;
    size_t n = strlen(t);

    /* One payload character changed: another payload, same signature. */
    d1[10] = d1[10] == 'A' ? 'B' : 'A';
    refused(t, n, "bad signature", "a bundle with a payload byte changed");
    memcpy(t, jws, n);
    /* One signature character changed. */
    d2[5] = d2[5] == 'A' ? 'B' : 'A';
    refused(t, n, "bad signature", "a bundle with its signature changed");
    /* The payload re-encoded with a child made active: a real edit. */
    pp = strdup(p);
    q = strstr(pp, "\"suspended\"");
    memcpy(q, "\"active\"   ", 11);
    forged = sign_raw(key2, HDR1, pp); /* key2 is not k1 */
    memcpy(strrchr(forged, '.'), strrchr(jws, '.'), 87);
    refused(forged, strlen(forged), "bad signature",
            "an edited payload with the original signature");
    free(forged);
    free(pp);
    free(t);
    free(jws);
    free(p);
}

static void test_unknown_kid_other_alg_and_curve_are_refused(void)
{
    char *p = payload(NOW, NOW + 3600), *jws;

    jws = sign_raw(key2, "{\"alg\":\"ES256\",\"typ\":\"authd-bundle+jwt\","
                         "\"kid\":\"k9\"}", p);
    refused(jws, strlen(jws), "unknown kid", "a bundle signed with a kid not in the JWKS");
    free(jws);
    jws = sign_raw(key2, HDR1, p);
    refused(jws, strlen(jws), "bad signature",
            "a bundle claiming kid k1 but signed by another key");
    free(jws);
    /* alg none: an empty signature part. */
    {
        char *h = b64("{\"alg\":\"none\",\"typ\":\"authd-bundle+jwt\",\"kid\":\"k1\"}",
                      strlen("{\"alg\":\"none\",\"typ\":\"authd-bundle+jwt\",\"kid\":\"k1\"}"));
        char *pl = b64(p, strlen(p));
        size_t n = strlen(h) + strlen(pl) + 3;
        char *none = malloc(n);

        snprintf(none, n, "%s.%s.", h, pl);
        refused(none, strlen(none), "alg is not ES256", "alg none");
        free(none);
        free(pl);
        free(h);
    }
    jws = sign_raw(key1, "{\"alg\":\"HS256\",\"typ\":\"authd-bundle+jwt\","
                         "\"kid\":\"k1\"}", p);
    refused(jws, strlen(jws), "alg is not ES256", "alg HS256");
    free(jws);
    jws = sign_raw(key1, "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"k1\"}", p);
    refused(jws, strlen(jws), "typ", "an access token's typ (no token passes for a bundle)");
    free(jws);
    jws = sign_raw(key1, "{\"alg\":\"ES256\",\"typ\":\"authd-bundle+jwt\","
                         "\"kid\":\"k1\",\"crit\":[\"x\"],\"x\":1}", p);
    refused(jws, strlen(jws), "crit", "a header with crit");
    free(jws);
    jws = sign_raw(key1, "{\"alg\":\"ES256\",\"alg\":\"none\",\"typ\":"
                         "\"authd-bundle+jwt\",\"kid\":\"k1\"}", p);
    refused(jws, strlen(jws), "header", "a header with alg twice");
    free(jws);
    /* A P-384 key under its own kid: the JWKS keeps only P-256 keys, so
     * the kid is unknown whether the header says ES384 or ES256. */
    jws = sign_raw(key384, "{\"alg\":\"ES384\",\"typ\":\"authd-bundle+jwt\","
                           "\"kid\":\"k384\"}", p);
    refused(jws, strlen(jws), "alg is not ES256", "an ES384 bundle");
    free(jws);
    jws = sign_raw(key384, "{\"alg\":\"ES256\",\"typ\":\"authd-bundle+jwt\","
                           "\"kid\":\"k384\"}", p);
    refused(jws, strlen(jws), "unknown kid", "a bundle signed on the wrong curve");
    free(jws);
    free(p);
}

static void test_junk_is_refused(void)
{
    char *p = payload(NOW, NOW + 3600), *jws = sign_raw(key1, HDR1, p);
    size_t n = strlen(jws);
    char *t = malloc(n + 8);
    gw_bundle *b = NULL;
    char err[200];
    char *bad;

    snprintf(t, n + 8, "%s\n", jws);
    refused(t, n + 1, "signature", "a bundle with a trailing newline (the library is strict)");
    snprintf(t, n + 8, " %s", jws);
    refused(t, n + 1, "header", "a bundle with a leading space");
    snprintf(t, n + 8, "%s.x", jws);
    refused(t, n + 2, "three", "a bundle of four parts");
    refused(jws, n - 1, "signature", "a bundle cut short by one character");
    refused(jws, 0, "no bundle", "an empty bundle");
    refused("a.b", 3, "three", "two parts");
    refused("..", 2, "header", "three empty parts");
    ok(gw_bundle_open(jwks, jws, (size_t)GW_BUNDLE_MAX + 1, NOW, NULL, &b, err,
                      sizeof(err)) == AD_EBADCRED &&
           strstr(err, "longer") != NULL,
       "a bundle over GW_BUNDLE_MAX is refused before it is read");
    /* Signed but not a bundle: each shape refused with a reason. */
    bad = sign_raw(key1, HDR1, "[1,2]");
    refused(bad, strlen(bad), "not a JSON object", "a signed array");
    free(bad);
    bad = sign_raw(key1, HDR1, "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600}");
    refused(bad, strlen(bad), "gateway", "a signed object without gateway");
    free(bad);
    bad = sign_raw(key1, HDR1, "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600,"
                               "\"exp\":1800000000}");
    refused(bad, strlen(bad), "not JSON", "a payload with exp twice");
    free(bad);
    bad = sign_raw(key1, HDR1,
                   "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600,\"gateway\":"
                   "{\"id\":\"g\",\"statements\":[]},\"children\":[{\"id\":\"g\","
                   "\"status\":\"active\",\"statements\":[]}]}");
    refused(bad, strlen(bad), "twice", "a device listed twice");
    free(bad);
    bad = sign_raw(key1, HDR1,
                   "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600,\"gateway\":"
                   "{\"id\":\"g/+\",\"statements\":[]},\"children\":[]}");
    refused(bad, strlen(bad), "id", "a device id with a wildcard");
    free(bad);
    bad = sign_raw(key1, HDR1,
                   "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600,\"gateway\":"
                   "{\"id\":\"g\",\"statements\":[{\"effect\":\"allow\"}]},"
                   "\"children\":[]}");
    refused(bad, strlen(bad), "statement", "a statement that does not validate");
    free(bad);
    bad = sign_raw(key1, HDR1,
                   "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600,\"gateway\":"
                   "{\"id\":\"g\",\"statements\":[]},\"children\":[{\"id\":\"c\","
                   "\"status\":\"sleeping\",\"statements\":[]}]}");
    refused(bad, strlen(bad), "status", "an unknown child status");
    free(bad);
    bad = sign_raw(key1, HDR1, "{\"iss\":\"x\",\"iat\":1,\"exp\":1700003600.5,"
                               "\"gateway\":{\"id\":\"g\",\"statements\":[]},"
                               "\"children\":[]}");
    refused(bad, strlen(bad), "integers", "a fractional exp");
    free(bad);
    free(t);
    free(jws);
    free(p);
}

static void test_issuer_is_checked_when_given(void)
{
    char *p = payload(NOW, NOW + 3600), *jws = sign_raw(key1, HDR1, p);
    gw_bundle *b = NULL;
    char err[200];

    ok(gw_bundle_open(jwks, jws, strlen(jws), NOW, "https://authd.test", &b,
                      err, sizeof(err)) == AD_OK,
       "the right issuer opens");
    gw_bundle_free(b);
    ok(gw_bundle_open(jwks, jws, strlen(jws), NOW, "https://other", &b, err,
                      sizeof(err)) == AD_EBADCRED &&
           b == NULL && strstr(err, "issuer") != NULL,
       "another issuer is refused");
    free(jws);
    free(p);
}

static void test_jwks_parsing(void)
{
    gw_jwks *j = NULL;
    char err[200];
    const char *bad_point =
        "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"z\","
        "\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\","
        "\"y\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}";
    const char *rsa = "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"x\",\"e\":\"AQAB\","
                      "\"kid\":\"r\"}]}";
    json_t *k1 = jwk_of(key1, "k1");
    char *one = json_dumps(k1, JSON_COMPACT);
    size_t n = 2 * strlen(one) + 32;
    char *dup = malloc(n);

    ok(gw_jwks_parse(bad_point, strlen(bad_point), &j, err, sizeof(err)) ==
               AD_EFIELD && j == NULL,
       "a P-256 key whose point is not on the curve is refused (%s)", err);
    snprintf(dup, n, "{\"keys\":[%s,%s]}", one, one);
    ok(gw_jwks_parse(dup, strlen(dup), &j, err, sizeof(err)) == AD_EFIELD &&
           strstr(err, "twice") != NULL,
       "a kid twice is refused: which key would verify?");
    ok(gw_jwks_parse(rsa, strlen(rsa), &j, err, sizeof(err)) == AD_OK &&
           gw_jwks_count(j) == 0,
       "keys of other types are skipped, not fatal");
    gw_jwks_free(j);
    j = NULL;
    ok(gw_jwks_parse("[]", 2, &j, err, sizeof(err)) == AD_EFIELD,
       "a JWKS that is not an object with keys is refused");
    ok(gw_jwks_parse("{}", (size_t)GW_JWKS_MAX + 1, &j, err, sizeof(err)) ==
           AD_EFIELD,
       "a JWKS over GW_JWKS_MAX is refused");
    free(dup);
    free(one);
    json_decref(k1);
}

/* Many children: the bundle opens and each child decides on its own. */
static void test_many_children(void)
{
    enum { N = 5000 };
    json_t *claims = json_pack("{s:s,s:i,s:i}", "iss", "x", "iat", NOW, "exp",
                               NOW + 60);
    json_t *children = json_array(), *gwsts = json_array();
    char id[32], topic[64], *p, *jws;
    gw_bundle *b = NULL;
    char err[200];
    int i, good = 1;

    for (i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "child-%05d", i);
        snprintf(topic, sizeof(topic), "dev/%s/#", id);
        json_array_append_new(
            children,
            json_pack("{s:s,s:s,s:[{s:s,s:[s],s:[s],s:s,s:i}]}", "id", id,
                      "status", i % 7 ? "active" : "suspended", "statements",
                      "effect", "allow", "actions", "publish", "topics",
                      topic, "policy", "p", "index", 0));
    }
    json_array_append_new(gwsts, json_pack("{s:s,s:[s],s:[s],s:s,s:i}",
                                           "effect", "allow", "actions",
                                           "publish", "topics", "gw/#",
                                           "policy", "g", "index", 0));
    json_object_set_new(claims, "gateway",
                        json_pack("{s:s,s:o}", "id", "gw", "statements", gwsts));
    json_object_set_new(claims, "children", children);
    p = json_dumps(claims, JSON_COMPACT);
    jws = sign_raw(key1, HDR1, p);
    ok(open_s(jws, NOW, &b, err, sizeof(err)) == AD_OK,
       "a bundle of %d children opens (%s)", N, err);
    for (i = 0; b != NULL && i < N; i += 37) {
        snprintf(id, sizeof(id), "child-%05d", i);
        snprintf(topic, sizeof(topic), "dev/%s/t", id);
        if (gw_decide(b, id, POL_PUBLISH, topic).allow != (i % 7 != 0))
            good = 0;
        snprintf(topic, sizeof(topic), "dev/child-%05d/t", (i + 1) % N);
        if (gw_decide(b, id, POL_PUBLISH, topic).allow)
            good = 0;
    }
    ok(b != NULL && good,
       "each child is allowed its own topics only, and suspended ones none");
    gw_bundle_free(b);
    free(jws);
    free(p);
    json_decref(claims);
}

/* The daemon's signer (authd/tok.c tok_sign, which GET
 * /v1/gateway/bundle uses) and this verifier agree: a bundle signed by a
 * key ring opens against that ring's own JWKS, and tok_sign refuses
 * what it must. */
static void test_daemon_signer_output_opens(void)
{
    tok_ring *ring = NULL;
    char *pem = tok_new_key_pem(), *p = payload(NOW, NOW + 60), *jws = NULL;
    char *text = NULL, kid[TOK_KID_MAX], err[200] = "";
    json_t *doc = NULL;
    gw_jwks *own = NULL;
    gw_bundle *b = NULL;
    size_t len = 0;

    ok(pem != NULL && tok_ring_new(&ring) == AD_OK &&
           tok_ring_add(ring, "ring-1", pem, 1, NULL, 0) == AD_OK,
       "a ring with one key");
    ok(tok_sign(ring, GW_BUNDLE_TYP, p, strlen(p), (size_t)GW_BUNDLE_MAX, &jws,
                &len, kid) == AD_OK &&
           jws != NULL && len == strlen(jws) && strcmp(kid, "ring-1") == 0,
       "tok_sign signs a bundle payload with the active key and says its kid");
    doc = tok_ring_jwks(ring);
    text = json_dumps(doc, JSON_COMPACT);
    ok(gw_jwks_parse(text, strlen(text), &own, err, sizeof(err)) == AD_OK,
       "the ring's JWKS parses (%s)", err);
    ok(own != NULL && jws != NULL &&
           gw_bundle_open(own, jws, len, NOW, NULL, &b, err, sizeof(err)) ==
               AD_OK &&
           strcmp(gw_bundle_kid(b), "ring-1") == 0,
       "what the daemon signs, the gateway opens (%s)", err);
    gw_bundle_free(b);
    b = NULL;
    free(jws);
    jws = NULL;
    ok(tok_sign(ring, "at+jwt", p, strlen(p), (size_t)GW_BUNDLE_MAX, &jws, NULL,
                NULL) == AD_OK &&
           gw_bundle_open(own, jws, strlen(jws), NOW, NULL, &b, err,
                          sizeof(err)) == AD_EBADCRED &&
           strstr(err, "typ") != NULL,
       "a JWS of the same key under another typ is no bundle");
    free(jws);
    jws = NULL;
    ok(tok_sign(ring, "bad\"typ", p, strlen(p), (size_t)GW_BUNDLE_MAX, &jws,
                NULL, NULL) == AD_EFIELD && jws == NULL,
       "a typ that would need escaping is refused");
    ok(tok_sign(ring, GW_BUNDLE_TYP, p, strlen(p), 200, &jws, NULL, NULL) ==
               AD_EFIELD && jws == NULL,
       "a JWS over the caller's maximum is refused, not cut");
    gw_jwks_free(own);
    free(text);
    json_decref(doc);
    tok_ring_free(ring);
    free(pem);
    free(p);
}

int main(void)
{
    json_t *keys;

    key1 = EVP_EC_gen("P-256");
    key2 = EVP_EC_gen("P-256");
    key384 = EVP_EC_gen("P-384");
    keys = json_pack("[o,o]", jwk_of(key1, "k1"), jwk_of(key384, "k384"));
    jwks = jwks_of(keys);
    ok(jwks != NULL && gw_jwks_count(jwks) == 1,
       "the test JWKS parses, keeping the P-256 key only");
    if (jwks == NULL)
        return tap_done();

    TAP_RUN(test_valid_bundle_decides_like_the_daemon);
    TAP_RUN(test_expired_bundle_is_refused);
    TAP_RUN(test_tampered_bundle_is_refused);
    TAP_RUN(test_unknown_kid_other_alg_and_curve_are_refused);
    TAP_RUN(test_junk_is_refused);
    TAP_RUN(test_issuer_is_checked_when_given);
    TAP_RUN(test_jwks_parsing);
    TAP_RUN(test_many_children);
    TAP_RUN(test_daemon_signer_output_opens);

    gw_jwks_free(jwks);
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
    EVP_PKEY_free(key384);
    return tap_done();
}
