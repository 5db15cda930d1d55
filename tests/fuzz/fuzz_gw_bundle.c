/* Fuzz target for offline gateway bundles (clients/gateway/gw_bundle.c).
 * An input starting with 'S' is a payload: it is signed here with the
 * fixed test key, so the fuzzer reaches the payload reader and the
 * policy compiler past the signature; any other input is bundle text
 * verified as it stands. Against a fixed one-key JWKS and a fixed clock
 * the bundle must be refused cleanly or open into one that decides
 * without crashing: an unknown device is always denied, and opening is
 * all-or-nothing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../../clients/gateway/gw_bundle.h"
#include "../../common/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

enum { NOW = 1700000000, INPUT_MAX = 1 << 20 };

/* A throwaway key for fuzzing only (the one fuzz_jwt uses); the corpus
 * bundles are signed by it under kid "fuzz-1". */
static const char KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7smlJgbRxMH0hg8P\n"
    "CtiKxZe86X4Kdi5T65PXzNzmLZKhRANCAAQwq6yeE9rZAFfOXkN6SgUdvavvLYEW\n"
    "MNsnsCc60Jr9w59N0TFe6pKRb+vJaY+4tY88RN4CwGzxR6sdCc3UIwN3\n"
    "-----END PRIVATE KEY-----\n";

static const char HDR[] =
    "{\"alg\":\"ES256\",\"typ\":\"authd-bundle+jwt\",\"kid\":\"fuzz-1\"}";

/* The key and its JWKS, made once for the whole run (never freed:
 * libFuzzer has no teardown, and it is not a per-input leak). */
static EVP_PKEY *pkey;
static gw_jwks *jwks;

static void setup(void)
{
    BIO *bio;
    BIGNUM *x = NULL, *y = NULL;
    uint8_t bx[32], by[32];
    char sx[48], sy[48], doc[256];
    int n;

    if (jwks != NULL)
        return;
    CHECK((bio = BIO_new_mem_buf(KEY_PEM, -1)) != NULL);
    CHECK((pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) != NULL);
    BIO_free(bio);
    CHECK(EVP_PKEY_get_bn_param(pkey, "qx", &x) == 1 &&
          EVP_PKEY_get_bn_param(pkey, "qy", &y) == 1);
    CHECK(BN_bn2binpad(x, bx, 32) == 32 && BN_bn2binpad(y, by, 32) == 32);
    sx[codec_b64_encode(bx, 32, sx, CODEC_B64_URL)] = '\0';
    sy[codec_b64_encode(by, 32, sy, CODEC_B64_URL)] = '\0';
    BN_free(x);
    BN_free(y);
    n = snprintf(doc, sizeof(doc),
                 "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":"
                 "\"fuzz-1\",\"x\":\"%s\",\"y\":\"%s\"}]}", sx, sy);
    CHECK(n > 0 && (size_t)n < sizeof(doc));
    CHECK(gw_jwks_parse(doc, (size_t)n, &jwks, NULL, 0) == AD_OK);
    CHECK(gw_jwks_count(jwks) == 1);
}

/* HDR.payload.signature over payload[0..n), malloc()ed. */
static char *sign_payload(const uint8_t *payload, size_t n, size_t *len)
{
    size_t hl = codec_b64_encoded_len(sizeof(HDR) - 1, CODEC_B64_URL);
    size_t pl = codec_b64_encoded_len(n, CODEC_B64_URL), siglen;
    char *out = malloc(hl + pl + 2 + 87);
    unsigned char der[80], rs[64];
    const unsigned char *dp = der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ECDSA_SIG *es;
    const BIGNUM *r, *s;
    size_t pos;

    CHECK(out != NULL && ctx != NULL);
    pos = codec_b64_encode((const uint8_t *)HDR, sizeof(HDR) - 1, out,
                           CODEC_B64_URL);
    out[pos++] = '.';
    pos += codec_b64_encode(payload, n, out + pos, CODEC_B64_URL);
    siglen = sizeof(der);
    CHECK(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
          EVP_DigestSign(ctx, der, &siglen, (const uint8_t *)out, pos) == 1);
    CHECK((es = d2i_ECDSA_SIG(NULL, &dp, (long)siglen)) != NULL);
    ECDSA_SIG_get0(es, &r, &s);
    CHECK(BN_bn2binpad(r, rs, 32) == 32 && BN_bn2binpad(s, rs + 32, 32) == 32);
    out[pos++] = '.';
    pos += codec_b64_encode(rs, 64, out + pos, CODEC_B64_URL);
    out[pos] = '\0';
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(ctx);
    *len = pos;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const pol_action actions[] = {POL_CONNECT, POL_PUBLISH,
                                         POL_SUBSCRIBE, POL_RECEIVE};
    static const char *const subjects[] = {"a", "a/b", "+/#", "#", "$SYS/x",
                                           "", "a//b", "c1", "gw/+/x"};
    char *text = NULL, err[256];
    size_t len, i, j;
    gw_bundle *b = NULL;
    pol_decision d;
    ad_err e;

    if (size > INPUT_MAX)
        return 0;
    setup();
    if (size > 0 && data[0] == 'S') {
        text = sign_payload(data + 1, size - 1, &len);
    } else {
        CHECK((text = malloc(size + 1)) != NULL);
        memcpy(text, data, size);
        text[size] = '\0';
        len = size;
    }
    b = (gw_bundle *)&b; /* must be reset on every path */
    e = gw_bundle_open(jwks, text, len, NOW, NULL, &b, err, sizeof(err));
    CHECK(e == AD_OK || e == AD_EBADCRED || e == AD_ENOMEM);
    CHECK((e == AD_OK) == (b != NULL));
    if (b != NULL) {
        CHECK(gw_bundle_exp(b) > NOW);
        CHECK(gw_bundle_gateway(b) != NULL &&
              gw_bundle_child_count(b) <= GW_CHILDREN_MAX);
        d = gw_decide(b, "no such device: the id has spaces", POL_PUBLISH, "a");
        CHECK(!d.allow);
        for (i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
            for (j = 0; j < sizeof(subjects) / sizeof(subjects[0]); j++) {
                d = gw_decide(b, NULL, actions[i], subjects[j]);
                CHECK(d.reason != NULL);
                /* A wildcard is never a topic one may publish to. */
                if (actions[i] == POL_PUBLISH && strpbrk(subjects[j], "+#"))
                    CHECK(!d.allow);
                d = gw_decide(b, "c1", actions[i], subjects[j]);
                CHECK(d.reason != NULL);
            }
        (void)gw_bundle_serial_revoked(b, "0A");
        (void)gw_bundle_jti_revoked(b, "j");
    }
    gw_bundle_free(b);
    free(text);
    return 0;
}
