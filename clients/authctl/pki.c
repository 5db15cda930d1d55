/* Keys, CSRs and crash-safe file writes for authctl. The key is written
 * with its final mode from the first byte (never chmod'ed afterwards), so
 * there is no window in which another user could read it. */
#include "pki.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

void pki_free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* The contents of a memory BIO as a malloc'd string, or NULL. */
static char *bio_string(BIO *b)
{
    char *data = NULL, *s;
    long n = BIO_get_mem_data(b, &data);

    if (n <= 0 || (s = malloc((size_t)n + 1)) == NULL)
        return NULL;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

int pki_key_and_csr(const char *cn, const char *key_in, char **key_pem,
                    char **csr_pem, char *err, size_t errlen)
{
    EVP_PKEY *key = NULL;
    BIO *in = NULL;
    X509_REQ *req = NULL;
    X509_NAME *name = NULL;
    BIO *kb = NULL, *cb = NULL;
    char *k = NULL, *c = NULL;
    int rc = -1;

    *key_pem = NULL;
    *csr_pem = NULL;
    if (key_in != NULL) {
        if ((in = BIO_new_mem_buf(key_in, -1)) == NULL ||
            (key = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL)) == NULL) {
            snprintf(err, errlen, "cannot read the private key");
            goto out;
        }
    } else if ((key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) == NULL) {
        snprintf(err, errlen, "cannot generate a P-256 key");
        goto out;
    }
    /* V_ASN1_UTF8STRING rather than MBSTRING_UTF8: device ids may be 128
     * bytes, past X.520's 64-byte bound that the MBSTRING path enforces;
     * the daemon takes the id from the request anyway. */
    if ((req = X509_REQ_new()) == NULL || (name = X509_NAME_new()) == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", V_ASN1_UTF8STRING,
                                    (const unsigned char *)cn, -1, -1, 0) ||
        !X509_REQ_set_version(req, 0) ||
        !X509_REQ_set_subject_name(req, name) ||
        !X509_REQ_set_pubkey(req, key) ||
        X509_REQ_sign(req, key, EVP_sha256()) <= 0) {
        snprintf(err, errlen, "cannot make a CSR for %s", cn);
        goto out;
    }
    if ((kb = BIO_new(BIO_s_mem())) == NULL ||
        (cb = BIO_new(BIO_s_mem())) == NULL ||
        !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) ||
        !PEM_write_bio_X509_REQ(cb, req) || (k = bio_string(kb)) == NULL ||
        (c = bio_string(cb)) == NULL) {
        snprintf(err, errlen, "cannot encode the key or the CSR");
        goto out;
    }
    *key_pem = k;
    *csr_pem = c;
    k = c = NULL;
    rc = 0;
out:
    ERR_clear_error();
    pki_free_secret(k);
    free(c);
    if (kb) {
        /* The memory BIO held the private key. */
        char *data = NULL;
        long n = BIO_get_mem_data(kb, &data);
        if (n > 0)
            OPENSSL_cleanse(data, (size_t)n);
    }
    BIO_free(kb);
    BIO_free(cb);
    BIO_free(in);
    X509_NAME_free(name);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return rc;
}

static int sync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd, rc;

    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else if ((size_t)(slash - path) < sizeof(dir)) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    } else {
        return -1;
    }
    if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

int pki_write_file(const char *path, const void *data, size_t len,
                   mode_t mode, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    const char *p = data;
    int fd = -1, rc = -1, made = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        goto out;
    }
    /* mkstemp creates 0600; fchmod only ever widens a non-secret file. */
    if ((fd = mkstemp(tmp)) < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    made = 1;
    if (fchmod(fd, mode) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
            goto out;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    rc = close(fd);
    fd = -1;
    if (rc != 0) {
        rc = -1;
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    rc = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    made = 0;
    if (sync_dir_of(path) != 0) {
        snprintf(err, errlen, "%s: cannot sync its directory", path);
        goto out;
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (made)
        unlink(tmp);
    return rc;
}

int pki_mkdir(const char *path, mode_t mode, char *err, size_t errlen)
{
    struct stat st;

    if (mkdir(path, mode) == 0)
        return 0;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    snprintf(err, errlen, "%s: %s", path,
             errno == EEXIST ? "exists and is not a directory"
                             : strerror(errno));
    return -1;
}

int pki_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

int pki_read_file(const char *path, size_t max, char **out, size_t *len,
                  char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0;
    int rc = -1;

    *out = NULL;
    *len = 0;
    if (strcmp(path, "-") == 0)
        f = stdin;
    else if ((f = fopen(path, "rb")) == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto out;
    }
    if ((buf = malloc(max + 2)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    /* One byte past max tells "too big" from "exactly max". */
    n = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto out;
    }
    if (n > max) {
        snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    if (f && f != stdin)
        fclose(f);
    if (buf) {
        OPENSSL_cleanse(buf, max + 2);
        free(buf);
    }
    return rc;
}
