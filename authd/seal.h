/* Sealing: AES-256-GCM with a per-cluster key (DATA/seal.key), so that
 * secrets the nodes of a cluster share through the store (the token
 * signing keys) are never in the database in clear. A sealed value is the
 * standard base64 of nonce (12 random bytes) || ciphertext || tag (16
 * bytes); the additional data binds it to its record (a kid), so a sealed
 * value copied under another name does not open. */
#ifndef AUTHD_SEAL_H
#define AUTHD_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

enum {
    SEAL_KEY_LEN = 32,
    SEAL_NONCE_LEN = 12,
    SEAL_TAG_LEN = 16,
    SEAL_PLAIN_MAX = 64 * 1024 /* the largest value sealed or opened */
};

/* Writes a fresh random key to path (mode 0600), refusing (AD_ECONFLICT)
 * if the file exists. Nothing is left behind on error. */
ad_err seal_key_create(const char *path, char *err, size_t errlen);

/* Reads the key at path into key. AD_ENOTFOUND if the file is absent,
 * AD_EBADREQ if it is not exactly SEAL_KEY_LEN bytes. On error key is
 * zeroed. */
ad_err seal_key_load(const char *path, uint8_t key[SEAL_KEY_LEN], char *err,
                     size_t errlen);

/* Seals plain[0..n) (n <= SEAL_PLAIN_MAX) with key, bound to aad (a
 * NUL-terminated string, may be ""). *out is a malloc()ed NUL-terminated
 * base64 string; NULL on error. */
ad_err seal_seal(const uint8_t key[SEAL_KEY_LEN], const char *aad,
                 const void *plain, size_t n, char **out);

/* Opens a sealed value: AD_ECRYPTO if it was not sealed with key and aad
 * or was altered, AD_EFIELD if it is not well-formed. *plain is a
 * malloc()ed buffer of *n bytes plus a NUL (so PEM text can be used as a
 * string); the caller wipes it (OPENSSL_cleanse) and frees it. On error
 * *plain is NULL and *n 0. */
ad_err seal_open(const uint8_t key[SEAL_KEY_LEN], const char *aad,
                 const char *sealed, uint8_t **plain, size_t *n);

#endif
