/* The one growable buffer for the whole tree (after curl's dynbuf): it is
 * given a maximum when it is initialised, every append is bounded by it,
 * and the first failure (too big or out of memory) sticks, so a builder
 * can append freely and check once when it takes the result. The
 * contents are always NUL-terminated, which suits text and costs binary
 * users one byte. */
#ifndef AUTHD_BUF_H
#define AUTHD_BUF_H

#include <stdarg.h>
#include <stddef.h>

/* Not opaque, so that buffers live on the stack; read it through the
 * functions below. The type is buf_t rather than buf because "buf" is
 * the name of many local variables, which -Wshadow would then flag. */
typedef struct buf_s {
    char *p;      /* NULL until the first append */
    size_t len;   /* bytes of content, without the NUL */
    size_t cap;   /* bytes allocated at p */
    size_t max;   /* most bytes of content ever held */
    int failed;   /* sticky: an append was refused */
} buf_t;

/* Starts an empty buffer that may hold up to max bytes of content
 * (max == len is fine, max + 1 is refused). Allocates nothing. */
void buf_init(buf_t *b, size_t max);
/* Frees the contents and leaves an empty buffer with the same maximum
 * that has not failed. */
void buf_reset(buf_t *b);
/* Frees the contents; b may be reused only after buf_init. */
void buf_free(buf_t *b);

/* Appends n bytes. Returns 0, or -1 if the buffer has failed or would
 * pass its maximum or memory ran out; then the buffer is failed, its
 * contents are freed and nothing more is appended. */
int buf_append(buf_t *b, const void *p, size_t n);
/* Appends a NUL-terminated string (without its NUL). */
int buf_append_str(buf_t *b, const char *s);
/* Appends one byte. */
int buf_append_byte(buf_t *b, unsigned char c);
/* Appends formatted text, bounded like any other append. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int buf_printf(buf_t *b, const char *fmt, ...);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
int buf_vprintf(buf_t *b, const char *fmt, va_list ap);
/* Drops the content after the first len bytes (len <= buf_len). */
void buf_truncate(buf_t *b, size_t len);

/* The content (NUL-terminated; "" when empty, NULL once failed), its
 * length, and whether an append has failed. */
const char *buf_str(const buf_t *b);
size_t buf_len(const buf_t *b);
int buf_failed(const buf_t *b);
/* The content for in-place edits of bytes already appended, or NULL. */
char *buf_ptr(buf_t *b);

/* Hands the content over: returns the NUL-terminated malloc()ed text
 * (caller frees; an empty buffer yields "") and its length in *len if
 * len is not NULL, or NULL if the buffer failed or memory ran out. The
 * buffer is left empty and not failed, with the same maximum. */
char *buf_take(buf_t *b, size_t *len);

#endif
