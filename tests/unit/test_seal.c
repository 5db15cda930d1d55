/* Unit tests of authd/seal.c: sealed values open only with their key and
 * their additional data, any altered byte is refused, the framing is
 * nonce || ciphertext || tag, and DATA/seal.key is created once, 0600,
 * and read back only when it holds exactly a key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "../../common/codec.h"
#include "../../authd/seal.h"
#include "tap.h"

static const char pem[] = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqG"
                          "\n-----END PRIVATE KEY-----\n";

static void test_a_sealed_value_opens_with_its_key_and_aad(void)
{
    uint8_t key[SEAL_KEY_LEN], *plain = NULL;
    char *s = NULL;
    size_t n = 0;

    memset(key, 7, sizeof(key));
    ok(seal_seal(key, "kid1", pem, strlen(pem), &s) == AD_OK && s,
       "a PEM key seals");
    ok(s && strstr(s, "PRIVATE KEY") == NULL,
       "the sealed text does not carry the clear text");
    ok(seal_open(key, "kid1", s, &plain, &n) == AD_OK && n == strlen(pem) &&
           memcmp(plain, pem, n) == 0 && plain[n] == '\0',
       "it opens to the same bytes, NUL-terminated for PEM parsers");
    if (plain)
        OPENSSL_cleanse(plain, n);
    free(plain);
    ok(seal_open(key, "kid2", s, &plain, &n) == AD_ECRYPTO && plain == NULL &&
           n == 0,
       "a sealed value copied under another kid does not open");
    key[0] ^= 1;
    ok(seal_open(key, "kid1", s, &plain, &n) == AD_ECRYPTO && plain == NULL,
       "another cluster's key does not open it");
    free(s);
}

static void test_the_frame_is_nonce_ciphertext_tag_and_every_bit_counts(void)
{
    uint8_t key[SEAL_KEY_LEN], frame[256], *plain = NULL;
    char *a = NULL, *b = NULL, *bad = NULL;
    size_t flen = 0, n = 0, i;
    int refused = 1;

    memset(key, 9, sizeof(key));
    seal_seal(key, "k", "hello", 5, &a);
    seal_seal(key, "k", "hello", 5, &b);
    ok(a && b && strcmp(a, b) != 0,
       "two seals of one value differ: the nonce is random");
    ok(a && codec_b64_decode(a, strlen(a), frame, sizeof(frame), &flen, 0) ==
                0 &&
           flen == SEAL_NONCE_LEN + 5 + SEAL_TAG_LEN,
       "the frame is 12 bytes of nonce, the ciphertext and a 16-byte tag");
    /* Flip each bit of the frame in turn: GCM must refuse them all. */
    for (i = 0; a && i < flen * 8; i++) {
        uint8_t f2[256];

        memcpy(f2, frame, flen);
        f2[i / 8] ^= (uint8_t)(1u << (i % 8));
        bad = codec_b64_encode_alloc(f2, flen, 0);
        if (seal_open(key, "k", bad, &plain, &n) != AD_ECRYPTO || plain)
            refused = 0;
        free(plain);
        plain = NULL;
        free(bad);
    }
    ok(refused, "a flip of any bit of nonce, ciphertext or tag is refused");
    bad = a ? codec_b64_encode_alloc(frame, flen - 1, 0) : NULL;
    ok(bad && seal_open(key, "k", bad, &plain, &n) == AD_ECRYPTO,
       "a truncated tag is refused");
    free(bad);
    ok(seal_open(key, "k", "AAAA", &plain, &n) == AD_EFIELD,
       "a frame shorter than nonce and tag is malformed");
    ok(seal_open(key, "k", "not base64!", &plain, &n) == AD_EFIELD,
       "text that is not base64 is malformed");
    free(a);
    free(b);
}

static void test_an_empty_value_seals_and_a_huge_one_is_refused(void)
{
    uint8_t key[SEAL_KEY_LEN], *plain = NULL;
    char *s = NULL;
    size_t n = 1;
    void *big = calloc(1, SEAL_PLAIN_MAX + 1);

    memset(key, 3, sizeof(key));
    ok(seal_seal(key, "", "", 0, &s) == AD_OK &&
           seal_open(key, "", s, &plain, &n) == AD_OK && n == 0,
       "an empty value round-trips");
    free(s);
    free(plain);
    s = NULL;
    ok(big && seal_seal(key, "k", big, SEAL_PLAIN_MAX + 1, &s) == AD_EFIELD &&
           s == NULL,
       "more than SEAL_PLAIN_MAX is refused");
    free(big);
}

static void test_the_key_file_is_created_once_0600_and_read_exactly(void)
{
    char dir[] = "/tmp/test_seal_XXXXXX", path[128], err[256];
    uint8_t k1[SEAL_KEY_LEN], k2[SEAL_KEY_LEN];
    struct stat st;
    FILE *f;

    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp");
        return;
    }
    snprintf(path, sizeof(path), "%s/seal.key", dir);
    ok(seal_key_load(path, k1, err, sizeof(err)) == AD_ENOTFOUND,
       "an absent key file is not found (init then creates it)");
    ok(seal_key_create(path, err, sizeof(err)) == AD_OK, "the key is created");
    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600 &&
           st.st_size == SEAL_KEY_LEN,
       "it is 32 bytes, mode 0600");
    ok(seal_key_load(path, k1, err, sizeof(err)) == AD_OK, "it loads");
    ok(seal_key_create(path, err, sizeof(err)) == AD_ECONFLICT,
       "a second create never replaces it");
    ok(seal_key_load(path, k2, err, sizeof(err)) == AD_OK &&
           memcmp(k1, k2, sizeof(k1)) == 0,
       "the key is unchanged by the refused create");
    f = fopen(path, "ab");
    if (f) {
        fputc('x', f);
        fclose(f);
    }
    ok(seal_key_load(path, k2, err, sizeof(err)) == AD_EBADREQ,
       "a file longer than a key is refused, not cut");
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    test_a_sealed_value_opens_with_its_key_and_aad();
    test_the_frame_is_nonce_ciphertext_tag_and_every_bit_counts();
    test_an_empty_value_seals_and_a_huge_one_is_refused();
    test_the_key_file_is_created_once_0600_and_read_exactly();
    return tap_done();
}
