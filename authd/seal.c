/* See seal.h. OpenSSL's EVP AES-256-GCM does the work; this file fixes
 * the framing (nonce || ciphertext || tag, base64) and keeps the key and
 * every plaintext buffer wiped when they are let go. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "../common/codec.h"
#include "seal.h"
#include "util.h"

ad_err seal_key_create(const char *path, char *err, size_t errlen)
{
    uint8_t key[SEAL_KEY_LEN];
    ssize_t w;
    int fd;
    ad_err e = AD_OK;

    if (util_random_bytes(key, sizeof(key)) != 0)
        return ad_errf(AD_ECRYPTO, err, errlen, "no random bytes");
    /* O_EXCL: a second init never replaces the key the sealed records
     * of the store were made with. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
              0600);
    if (fd < 0) {
        e = ad_errf(errno == EEXIST ? AD_ECONFLICT : AD_EBADREQ, err, errlen,
                    "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    w = write(fd, key, sizeof(key));
    if (w != (ssize_t)sizeof(key) || fsync(fd) != 0) {
        e = ad_errf(AD_EBADREQ, err, errlen, "cannot write %s: %s", path,
                    strerror(errno));
        close(fd);
        unlink(path);
        goto out;
    }
    if (close(fd) != 0) {
        e = ad_errf(AD_EBADREQ, err, errlen, "cannot write %s: %s", path,
                    strerror(errno));
        unlink(path);
    }
out:
    OPENSSL_cleanse(key, sizeof(key));
    return e;
}

ad_err seal_key_load(const char *path, uint8_t key[SEAL_KEY_LEN], char *err,
                     size_t errlen)
{
    uint8_t buf[SEAL_KEY_LEN + 1];
    ssize_t n;
    int fd;

    memset(key, 0, SEAL_KEY_LEN);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return ad_errf(errno == ENOENT ? AD_ENOTFOUND : AD_EBADREQ, err,
                       errlen, "cannot read %s: %s", path, strerror(errno));
    /* One byte more than a key: a longer file is refused, not cut. */
    n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n != SEAL_KEY_LEN) {
        OPENSSL_cleanse(buf, sizeof(buf));
        return ad_errf(AD_EBADREQ, err, errlen,
                       "%s must hold exactly %d bytes", path, SEAL_KEY_LEN);
    }
    memcpy(key, buf, SEAL_KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return AD_OK;
}

ad_err seal_seal(const uint8_t key[SEAL_KEY_LEN], const char *aad,
                 const void *plain, size_t n, char **out)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *frame = NULL;
    size_t flen = SEAL_NONCE_LEN + n + SEAL_TAG_LEN;
    int len, fin;
    ad_err e = AD_ECRYPTO;

    *out = NULL;
    if (n > SEAL_PLAIN_MAX || aad == NULL)
        return AD_EFIELD;
    if ((frame = malloc(flen)) == NULL)
        return AD_ENOMEM;
    /* A random 96-bit nonce: the few keys a cluster ever seals are far
     * from the 2^32 messages where random nonces risk a repeat. */
    if (util_random_bytes(frame, SEAL_NONCE_LEN) != 0)
        goto out;
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
        goto out;
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, frame) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *)aad,
                          (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(ctx, frame + SEAL_NONCE_LEN, &len, plain,
                          (int)n) != 1 ||
        EVP_EncryptFinal_ex(ctx, frame + SEAL_NONCE_LEN + len, &fin) != 1 ||
        (size_t)len + (size_t)fin != n ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN,
                            frame + SEAL_NONCE_LEN + n) != 1)
        goto out;
    *out = codec_b64_encode_alloc(frame, flen, 0);
    e = *out ? AD_OK : AD_ENOMEM;
out:
    EVP_CIPHER_CTX_free(ctx);
    free(frame);
    return e;
}

ad_err seal_open(const uint8_t key[SEAL_KEY_LEN], const char *aad,
                 const char *sealed, uint8_t **plain, size_t *n)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *frame = NULL, *pt = NULL;
    size_t flen = 0, ctlen;
    int len, fin;
    ad_err e = AD_ECRYPTO;

    *plain = NULL;
    *n = 0;
    if (sealed == NULL || aad == NULL)
        return AD_EFIELD;
    if (codec_b64_decode_alloc(sealed, strlen(sealed),
                               SEAL_NONCE_LEN + SEAL_PLAIN_MAX + SEAL_TAG_LEN,
                               &frame, &flen, 0) != 0)
        return AD_EFIELD;
    if (flen < SEAL_NONCE_LEN + SEAL_TAG_LEN) {
        e = AD_EFIELD;
        goto out;
    }
    ctlen = flen - SEAL_NONCE_LEN - SEAL_TAG_LEN;
    if ((pt = malloc(ctlen + 1)) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
        goto out;
    /* The tag is checked by EVP_DecryptFinal_ex (in constant time, by
     * OpenSSL's CRYPTO_memcmp); nothing is returned before it passes. */
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, frame) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)aad,
                          (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(ctx, pt, &len, frame + SEAL_NONCE_LEN,
                          (int)ctlen) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN,
                            frame + SEAL_NONCE_LEN + ctlen) != 1 ||
        EVP_DecryptFinal_ex(ctx, pt + len, &fin) != 1 ||
        (size_t)len + (size_t)fin != ctlen)
        goto out;
    pt[ctlen] = '\0';
    *plain = pt;
    *n = ctlen;
    pt = NULL;
    e = AD_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    if (pt) {
        OPENSSL_cleanse(pt, ctlen + 1);
        free(pt);
    }
    free(frame);
    return e;
}
