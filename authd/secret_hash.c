/* See secret_hash.h. The encoded form is parsed here (libargon2 keeps
 * its decoder private) so that argon2_verify_ctx can run with our
 * allocator callbacks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <argon2.h>
#include <openssl/crypto.h>

#include "../common/codec.h"
#include "secret_hash.h"
#include "util.h"

/* Salt and digest lengths accepted (argon2's own limits are wider). */
enum { SALT_MAX = 64, DIGEST_MIN = 16, DIGEST_MAX = 64, FIELD_MAX = 128 };

static int map_memory(uint8_t **memory, size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        *memory = NULL;
        return ARGON2_MEMORY_ALLOCATION_ERROR;
    }
    *memory = p;
    return ARGON2_OK;
}

static void unmap_memory(uint8_t *memory, size_t bytes)
{
    if (memory)
        munmap(memory, bytes);
}

/* Reads "<name>=<decimal>" at *s, at most max, and moves past it. */
static int read_param(const char **s, const char *name, uint64_t max,
                      uint32_t *out)
{
    size_t n = strlen(name), len;
    char num[16];
    uint64_t v;

    if (strncmp(*s, name, n) != 0 || (*s)[n] != '=')
        return -1;
    *s += n + 1;
    len = strspn(*s, "0123456789");
    if (len == 0 || len >= sizeof(num))
        return -1;
    memcpy(num, *s, len);
    num[len] = '\0';
    if (codec_parse_u64(num, max, &v) != 0)
        return -1;
    *s += len;
    *out = (uint32_t)v;
    return 0;
}

/* Decodes the base64 field at *s up to the next '$' (or the end) into
 * out, between min and max bytes. */
static int read_b64(const char **s, uint8_t *out, size_t min, size_t max,
                    size_t *outlen)
{
    size_t len = strcspn(*s, "$");
    size_t rawlen = 0;

    if (len == 0 || len > FIELD_MAX ||
        codec_b64_decode(*s, len, out, max, &rawlen, CODEC_B64_NOPAD) != 0 ||
        rawlen < min)
        return -1;
    *s += len;
    *outlen = rawlen;
    return 0;
}

int secret_hash_verify(const char *encoded, const char *secret,
                       size_t secret_len)
{
    static const char prefix[] = "$argon2id$";
    uint8_t salt[SALT_MAX], want[DIGEST_MAX], got[DIGEST_MAX];
    size_t saltlen = 0, wantlen = 0;
    uint32_t version = 0, m = 0, t = 0, p = 0;
    const char *s = encoded;
    argon2_context ctx;
    int rc;

    if (encoded == NULL || secret_len > UINT32_MAX ||
        strncmp(s, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    s += sizeof(prefix) - 1;
    if (read_param(&s, "v", 0xff, &version) != 0 || *s++ != '$' ||
        read_param(&s, "m", SECRET_HASH_M_MAX_KIB, &m) != 0 || *s++ != ',' ||
        read_param(&s, "t", 64, &t) != 0 || *s++ != ',' ||
        read_param(&s, "p", 16, &p) != 0 || *s++ != '$' ||
        read_b64(&s, salt, ARGON2_MIN_SALT_LENGTH, sizeof(salt), &saltlen) !=
            0 ||
        *s++ != '$' ||
        read_b64(&s, want, DIGEST_MIN, sizeof(want), &wantlen) != 0 ||
        *s != '\0')
        return -1;
    memset(&ctx, 0, sizeof(ctx));
    ctx.out = got;
    ctx.outlen = (uint32_t)wantlen;
    /* argon2 reads the password only; the cast drops a const it keeps. */
    ctx.pwd = (uint8_t *)(uintptr_t)secret;
    ctx.pwdlen = (uint32_t)secret_len;
    ctx.salt = salt;
    ctx.saltlen = (uint32_t)saltlen;
    ctx.t_cost = t;
    ctx.m_cost = m;
    ctx.lanes = p;
    ctx.threads = 1; /* the caller's thread only: the gate counts threads */
    ctx.version = version;
    ctx.allocate_cbk = map_memory;
    ctx.free_cbk = unmap_memory;
    ctx.flags = ARGON2_DEFAULT_FLAGS;
    rc = argon2_verify_ctx(&ctx, (const char *)want, Argon2_id);
    OPENSSL_cleanse(got, sizeof(got));
    if (rc == ARGON2_OK)
        return 1;
    if (rc == ARGON2_VERIFY_MISMATCH)
        return 0;
    return -1;
}
