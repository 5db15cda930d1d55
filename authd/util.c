/* See util.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "../common/codec.h"
#include "util.h"

void util_time_rfc3339(time_t t, char *out, size_t outlen)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    if (strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && outlen)
        out[0] = '\0';
}

int util_parse_rfc3339(const char *s, time_t *t)
{
    struct tm tm;
    const char *end;

    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end == NULL || *end != '\0')
        return -1;
    *t = timegm(&tm);
    return 0;
}

ad_err util_random_token(const char *prefix, size_t len, char *out,
                         size_t outlen)
{
    unsigned char raw[64];
    size_t plen = strlen(prefix), n;

    if (len > sizeof(raw) ||
        outlen < plen + codec_b64_encoded_len(len, CODEC_B64_URL) + 1)
        return AD_EINTERNAL;
    if (RAND_bytes(raw, (int)len) != 1)
        return AD_EINTERNAL;
    memcpy(out, prefix, plen);
    n = codec_b64_encode(raw, len, out + plen, CODEC_B64_URL);
    out[plen + n] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
    return AD_OK;
}

ad_err util_random_hex(size_t nbytes, char *out, size_t outlen)
{
    unsigned char raw[32];

    if (nbytes > sizeof(raw) || outlen < 2 * nbytes + 1)
        return AD_EINTERNAL;
    if (RAND_bytes(raw, (int)nbytes) != 1)
        return AD_EINTERNAL;
    codec_hex_encode(raw, nbytes, out, 0);
    return AD_OK;
}

int util_serial_normalize(const char *in, char *out, size_t outlen)
{
    char digits[128];
    size_t n = 0, start = 0, o = 0;

    for (; *in; in++) {
        char c = *in;
        if (c == ':')
            continue;
        int v = codec_hex_val((unsigned char)c);

        if (v < 0 || n + 1 >= sizeof(digits))
            return 0;
        digits[n++] = "0123456789abcdef"[v];
    }
    while (start < n && digits[start] == '0')
        start++;
    if (start == n)
        return 0; /* zero is not a serial we issue */
    if (((n - start) & 1) + (n - start) + 1 > outlen)
        return 0;
    if ((n - start) & 1)
        out[o++] = '0';
    memcpy(out + o, digits + start, n - start);
    out[o + n - start] = '\0';
    return 1;
}

int util_random_bytes(void *buf, size_t len)
{
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

void util_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];

    SHA256(data, len, md);
    codec_hex_encode(md, sizeof(md), out, 0);
}

int util_secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i;
    unsigned char diff = (unsigned char)(la != lb);

    for (i = 0; i < lb; i++)
        diff |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
    return diff == 0;
}

static int name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

int util_device_id_valid(const char *id)
{
    size_t n;

    if (id == NULL)
        return 0;
    for (n = 0; id[n]; n++)
        if (n >= 128 || !name_char((unsigned char)id[n]))
            return 0;
    return n > 0;
}

int util_name_valid(const char *name) { return util_device_id_valid(name); }

int util_glob_match(const char *p, const char *s)
{
    const char *star = NULL, *resume = NULL;

    /* Iterative matcher with one backtrack point: linear in practice and
     * never recursive, so hostile patterns cannot blow the stack. */
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == '?' || *p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

int util_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);

    if (size == 0)
        return 0;
    if (n >= size) {
        memcpy(dst, src, size - 1);
        dst[size - 1] = '\0';
        return 0;
    }
    memcpy(dst, src, n + 1);
    return 1;
}

int util_write_file(const char *path, const void *data, size_t len,
                    unsigned mode)
{
    char tmp[4096], dir[4096];
    const char *slash;
    int fd = -1, saved;
    size_t off = 0;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
    if (fd < 0)
        return -1;
    /* The umask must not widen or narrow what we asked for. */
    if (fchmod(fd, (mode_t)mode) != 0)
        goto fail;
    while (off < len) {
        ssize_t n = write(fd, (const char *)data + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    slash = strrchr(path, '/');
    if (slash) {
        size_t dl = (size_t)(slash - path);
        int dfd;

        if (dl == 0)
            dl = 1;
        if (dl < sizeof(dir)) {
            memcpy(dir, path, dl);
            dir[dl] = '\0';
            dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
        }
    }
    return 0;
fail:
    saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = saved;
    return -1;
}

char *util_read_file(const char *path, size_t max, size_t *len)
{
    struct stat st;
    char *buf = NULL;
    size_t off = 0;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) != 0)
        goto fail;
    if (st.st_size < 0 || (uint64_t)st.st_size > max) {
        errno = EFBIG;
        goto fail;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        goto fail;
    while (off < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errno = n == 0 ? EIO : errno;
            goto fail;
        }
        off += (size_t)n;
    }
    close(fd);
    buf[off] = '\0';
    if (len)
        *len = off;
    return buf;
fail:
    saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return NULL;
}

uint64_t util_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void util_json_str(buf_t *b, const char *s)
{
    const char *run;

    if (s == NULL) {
        buf_append(b, "null", 4);
        return;
    }
    buf_append(b, "\"", 1);
    for (run = s; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[7];
        size_t n = 2;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_append(b, run, (size_t)(s - run));
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            codec_hex_encode(&c, 1, esc + 4, 0);
            n = 6;
        }
        buf_append(b, esc, n);
        run = s + 1;
    }
    buf_append(b, run, (size_t)(s - run));
    buf_append(b, "\"", 1);
}

void util_json_kv(buf_t *b, const char *key, const char *value)
{
    const char *text = buf_str(b);

    if (text != NULL && buf_len(b) > 0 && text[buf_len(b) - 1] != '{')
        buf_append(b, ",", 1);
    util_json_str(b, key);
    buf_append(b, ":", 1);
    util_json_str(b, value);
}
