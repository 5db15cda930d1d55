/* The bounded growable buffer; see buf.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

enum { BUF_FIRST_CAP = 256 };

void buf_init(buf_t *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    /* One byte is always kept for the NUL, so max + 1 must not wrap. */
    b->max = max < SIZE_MAX ? max : SIZE_MAX - 1;
}

void buf_reset(buf_t *b)
{
    free(b->p);
    buf_init(b, b->max);
}

void buf_free(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static int buf_fail(buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = 1;
    return -1;
}

/* Makes room for n more bytes and the NUL. */
static int buf_room(buf_t *b, size_t n)
{
    size_t want, cap;
    char *np;

    if (b->failed)
        return -1;
    if (n > b->max - b->len)
        return buf_fail(b);
    want = b->len + n + 1; /* cannot wrap: len + n <= max < SIZE_MAX */
    if (want <= b->cap)
        return 0;
    cap = b->cap ? b->cap : BUF_FIRST_CAP;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    /* Never allocate past what the maximum can use. */
    if (cap > b->max + 1)
        cap = b->max + 1;
    if ((np = realloc(b->p, cap)) == NULL)
        return buf_fail(b);
    b->p = np;
    b->cap = cap;
    return 0;
}

int buf_append(buf_t *b, const void *p, size_t n)
{
    if (buf_room(b, n) != 0)
        return -1;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int buf_append_str(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_append_byte(buf_t *b, unsigned char c)
{
    return buf_append(b, &c, 1);
}

int buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
    va_list again;
    char small[256];
    int n;

    if (b->failed)
        return -1;
    va_copy(again, ap);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    if (n < 0) {
        va_end(again);
        return buf_fail(b);
    }
    if ((size_t)n < sizeof(small)) {
        va_end(again);
        return buf_append(b, small, (size_t)n);
    }
    /* Longer than the scratch: format straight into the buffer. */
    if (buf_room(b, (size_t)n) != 0) {
        va_end(again);
        return -1;
    }
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, again);
    va_end(again);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_truncate(buf_t *b, size_t len)
{
    if (b->p != NULL && len < b->len) {
        b->len = len;
        b->p[len] = '\0';
    }
}

const char *buf_str(const buf_t *b)
{
    if (b->failed)
        return NULL;
    return b->p ? b->p : "";
}

size_t buf_len(const buf_t *b)
{
    return b->len;
}

int buf_failed(const buf_t *b)
{
    return b->failed;
}

char *buf_ptr(buf_t *b)
{
    return b->failed ? NULL : b->p;
}

char *buf_take(buf_t *b, size_t *len)
{
    char *out = b->failed ? NULL : b->p;

    if (out == NULL && !b->failed)
        out = calloc(1, 1);
    if (len)
        *len = out ? b->len : 0;
    if (out == b->p)
        b->p = NULL; /* handed over, not freed by the reset */
    buf_reset(b);
    return out;
}
