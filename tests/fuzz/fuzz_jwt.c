/* Fuzz target for access tokens: the input, as a string, goes to
 * tok_verify against a fixed one-key ring and a fixed clock (it must
 * never crash, leak, or accept something that is not a claims object);
 * and if the input parses as a JSON object, it is minted as claims and
 * must verify back to exactly the same claims. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../authd/tok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

enum { NOW = 1700000000 };

static const char ISSUER[] = "https://authd.test";

/* A throwaway key for fuzzing only; the corpus tokens are signed by it. */
static const char KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7smlJgbRxMH0hg8P\n"
    "CtiKxZe86X4Kdi5T65PXzNzmLZKhRANCAAQwq6yeE9rZAFfOXkN6SgUdvavvLYEW\n"
    "MNsnsCc60Jr9w59N0TFe6pKRb+vJaY+4tY88RN4CwGzxR6sdCc3UIwN3\n"
    "-----END PRIVATE KEY-----\n";

/* One ring for the whole run, as the daemon has (never freed: libFuzzer
 * has no teardown, and it is not a per-input leak). */
static tok_ring *fuzz_ring(void)
{
    static tok_ring *ring;

    if (ring == NULL) {
        CHECK(tok_ring_new(&ring) == AD_OK);
        CHECK(tok_ring_add(ring, "fuzz-1", KEY_PEM, 1, NULL, 0) == AD_OK);
    }
    return ring;
}

static void verify_bytes(tok_ring *ring, const uint8_t *data, size_t size)
{
    /* One byte past TOK_JWT_MAX, so the length check is reached too. */
    char buf[TOK_JWT_MAX + 2], err[256];
    size_t n = size < sizeof(buf) - 1 ? size : sizeof(buf) - 1;
    tok_expect x = {ISSUER, "mqtt", NOW, 30};
    json_t *claims = NULL;
    ad_err e;

    memcpy(buf, data, n);
    buf[n] = '\0';
    e = tok_verify(ring, buf, &x, &claims, err, sizeof(err));
    CHECK((e == AD_OK) == (claims != NULL));
    CHECK(e == AD_OK || e == AD_EBADCRED || e == AD_ENOMEM);
    if (e == AD_OK)
        CHECK(json_is_object(claims) && json_object_get(claims, "exp") != NULL);
    json_decref(claims);
}

static void round_trip(tok_ring *ring, const uint8_t *data, size_t size)
{
    json_t *c = json_loadb((const char *)data, size, 0, NULL), *back = NULL;
    tok_expect x = {ISSUER, NULL, NOW, 0};
    char *jwt = NULL, err[256] = "";
    ad_err e;

    if (!json_is_object(c))
        goto out;
    /* Make the claims valid at NOW whatever the input says about time. */
    json_object_set_new(c, "iss", json_string(ISSUER));
    json_object_set_new(c, "exp", json_integer(NOW + 60));
    json_object_del(c, "nbf");
    json_object_del(c, "iat");
    e = tok_mint(ring, c, &jwt);
    /* Too large or too deep claims are refused, nothing else. */
    CHECK(e == AD_OK || e == AD_EFIELD);
    if (e != AD_OK) {
        CHECK(jwt == NULL);
        goto out;
    }
    CHECK(strlen(jwt) <= TOK_JWT_MAX);
    CHECK(tok_verify(ring, jwt, &x, &back, err, sizeof(err)) == AD_OK);
    CHECK(json_equal(back, c));
out:
    json_decref(back);
    json_decref(c);
    free(jwt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tok_ring *ring = fuzz_ring();

    verify_bytes(ring, data, size);
    round_trip(ring, data, size);
    return 0;
}
