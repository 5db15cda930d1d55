/* See jsonflat.h. A single forward pass over the input; every read is
 * bounds-checked against len and every write against scratch_len. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/codec.h"
#include "jsonflat.h"

struct cursor {
    const char *p, *end;
    char *out, *out_end;
};

static void skip_ws(struct cursor *c)
{
    while (c->p < c->end &&
           (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int put(struct cursor *c, unsigned char ch)
{
    if (c->out >= c->out_end)
        return -1;
    *c->out++ = (char)ch;
    return 0;
}

static int hex4(const char *p, unsigned *v)
{
    unsigned x = 0;
    int i, d;

    for (i = 0; i < 4; i++) {
        if ((d = codec_hex_val((unsigned char)p[i])) < 0)
            return -1;
        x = x << 4 | (unsigned)d;
    }
    *v = x;
    return 0;
}

/* Appends code point cp (never a surrogate: the caller pairs them). */
static int put_utf8(struct cursor *c, unsigned cp)
{
    uint8_t b[4];
    size_t n = codec_utf8_encode(cp, b);

    if (n == 0 || (size_t)(c->out_end - c->out) < n)
        return -1;
    memcpy(c->out, b, n);
    c->out += n;
    return 0;
}

/* Decodes a string starting at the opening quote into the scratch
 * buffer, NUL-terminated. */
static const char *string(struct cursor *c)
{
    const char *start = c->out;

    if (c->p >= c->end || *c->p != '"')
        return NULL;
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        const char *run = c->p;

        /* Most text is plain printable ASCII: copied a run at a time. */
        while (c->p < c->end && (unsigned char)*c->p >= 0x20 &&
               (unsigned char)*c->p < 0x80 && *c->p != '"' && *c->p != '\\')
            c->p++;
        if (c->p > run) {
            size_t n = (size_t)(c->p - run);

            if ((size_t)(c->out_end - c->out) < n)
                return NULL;
            memcpy(c->out, run, n);
            c->out += n;
            continue;
        }

        if (ch == '"') {
            c->p++;
            return put(c, 0) == 0 ? start : NULL;
        }
        if (ch < 0x20)
            return NULL;
        if (ch == '\\') {
            unsigned cp, lo;

            if (c->end - c->p < 2)
                return NULL;
            switch (c->p[1]) {
            case '"': case '\\': case '/':
                if (put(c, (unsigned char)c->p[1]))
                    return NULL;
                c->p += 2;
                continue;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            case 'u':
                if (c->end - c->p < 6 || hex4(c->p + 2, &cp))
                    return NULL;
                c->p += 6;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (c->end - c->p < 6 || c->p[0] != '\\' ||
                        c->p[1] != 'u' || hex4(c->p + 2, &lo) ||
                        lo < 0xdc00 || lo > 0xdfff)
                        return NULL;
                    c->p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return NULL; /* a lone low surrogate */
                }
                /* NUL would silently cut the C string. */
                if (cp == 0 || put_utf8(c, cp))
                    return NULL;
                continue;
            default:
                return NULL;
            }
            if (put(c, ch))
                return NULL;
            c->p += 2;
            continue;
        }
        {
            uint32_t cp;
            size_t n = codec_utf8_decode((const uint8_t *)c->p,
                                         (size_t)(c->end - c->p), &cp);
            if (n == 0 || (size_t)(c->out_end - c->out) < n)
                return NULL;
            memcpy(c->out, c->p, n);
            c->out += n;
            c->p += n;
        }
    }
    return NULL;
}

/* A JSON number (RFC 8259 grammar), copied as text. */
static const char *number(struct cursor *c)
{
    const char *s = c->p, *start = c->out;

    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p >= c->end)
        return NULL;
    if (*c->p == '0') {
        c->p++;
    } else if (*c->p >= '1' && *c->p <= '9') {
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
    } else {
        return NULL;
    }
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return NULL;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return NULL;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
            c->p++;
    }
    if ((size_t)(c->out_end - c->out) < (size_t)(c->p - s) + 1)
        return NULL;
    memcpy(c->out, s, (size_t)(c->p - s));
    c->out += c->p - s;
    *c->out++ = '\0';
    /* jansson refuses integers beyond 64 bits and reals that overflow a
     * double; so do we, so that we never accept what it would not. */
    errno = 0;
    if (strpbrk(start, ".eE") == NULL) {
        (void)strtoll(start, NULL, 10);
    } else {
        double d = strtod(start, NULL);
        if (!isfinite(d))
            return NULL;
    }
    if (errno == ERANGE)
        return NULL;
    return start;
}

static int literal(struct cursor *c, const char *word)
{
    size_t n = strlen(word);

    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return -1;
    c->p += n;
    return 0;
}

/* Checks one value of any type, nested at most depth deep; what it
 * decodes on the way is scratch work the caller discards. */
static int any_value(struct cursor *c, int depth)
{
    char open, close;

    skip_ws(c);
    if (c->p >= c->end)
        return -1;
    switch (*c->p) {
    case '"': return string(c) ? 0 : -1;
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    case '[': case '{': break;
    default: return number(c) ? 0 : -1;
    }
    if (depth == 0)
        return -1;
    open = *c->p++;
    close = open == '[' ? ']' : '}';
    skip_ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 0;
    }
    for (;;) {
        if (open == '{') {
            skip_ws(c);
            if (string(c) == NULL)
                return -1;
            skip_ws(c);
            if (c->p >= c->end || *c->p++ != ':')
                return -1;
        }
        if (any_value(c, depth - 1) != 0)
            return -1;
        skip_ws(c);
        if (c->p >= c->end)
            return -1;
        if (*c->p == ',') {
            c->p++;
            continue;
        }
        return *c->p++ == close ? 0 : -1;
    }
}

/* An array or object, checked, and copied as its raw text. */
static const char *raw_value(struct cursor *c)
{
    const char *from = c->p;
    char *mark = c->out;
    size_t n;

    if (any_value(c, JSONFLAT_DEPTH_MAX) != 0)
        return NULL;
    c->out = mark; /* the checking's decoded strings are not kept */
    n = (size_t)(c->p - from);
    if ((size_t)(c->out_end - c->out) < n + 1)
        return NULL;
    memcpy(c->out, from, n);
    c->out[n] = '\0';
    c->out += n + 1;
    return mark;
}

static int parse(const char *in, size_t len, char *scratch,
                 size_t scratch_len, int nested, jsonflat *out)
{
    struct cursor c = {in, in + len, scratch, scratch + scratch_len};
    size_t i;

    out->count = 0;
    skip_ws(&c);
    if (c.p >= c.end || *c.p++ != '{')
        return -1;
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
        c.p++;
        goto done;
    }
    for (;;) {
        jsonflat_field *f;

        if (out->count >= JSONFLAT_FIELDS_MAX)
            return -1;
        f = &out->fields[out->count];
        skip_ws(&c);
        if ((f->key = string(&c)) == NULL)
            return -1;
        for (i = 0; i < out->count; i++)
            if (strcmp(out->fields[i].key, f->key) == 0)
                return -1; /* duplicate keys are refused, as by jansson */
        skip_ws(&c);
        if (c.p >= c.end || *c.p++ != ':')
            return -1;
        skip_ws(&c);
        if (c.p >= c.end)
            return -1;
        switch (*c.p) {
        case '"':
            f->type = JSONFLAT_STRING;
            f->value = string(&c);
            break;
        case 't':
            f->type = JSONFLAT_TRUE;
            f->value = literal(&c, "true") ? NULL : "true";
            break;
        case 'f':
            f->type = JSONFLAT_FALSE;
            f->value = literal(&c, "false") ? NULL : "false";
            break;
        case 'n':
            f->type = JSONFLAT_NULL;
            f->value = literal(&c, "null") ? NULL : "null";
            break;
        case '[':
        case '{':
            f->type = JSONFLAT_RAW;
            f->value = nested ? raw_value(&c) : NULL;
            break;
        default:
            f->type = JSONFLAT_NUMBER;
            f->value = number(&c);
        }
        if (f->value == NULL)
            return -1;
        out->count++;
        skip_ws(&c);
        if (c.p >= c.end)
            return -1;
        if (*c.p == ',') {
            c.p++;
            continue;
        }
        if (*c.p++ != '}')
            return -1;
        break;
    }
done:
    skip_ws(&c);
    return c.p == c.end ? 0 : -1;
}

int jsonflat_parse(const char *in, size_t len, char *scratch,
                   size_t scratch_len, jsonflat *out)
{
    return parse(in, len, scratch, scratch_len, 0, out);
}

int jsonflat_parse_nested(const char *in, size_t len, char *scratch,
                          size_t scratch_len, jsonflat *out)
{
    return parse(in, len, scratch, scratch_len, 1, out);
}

const jsonflat_field *jsonflat_get(const jsonflat *f, const char *key)
{
    size_t i;

    for (i = 0; i < f->count; i++)
        if (strcmp(f->fields[i].key, key) == 0)
            return &f->fields[i];
    return NULL;
}
