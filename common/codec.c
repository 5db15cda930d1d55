/* Strict text codecs; see codec.h. */
#include <stdlib.h>

#include "codec.h"

/* ---- base64 -------------------------------------------------------- */

static const char b64_std[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The value of c in the selected alphabet, or -1. Written as ranges
 * rather than a table so that the two alphabets cannot drift apart. */
static int b64_val(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

static int b64_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

size_t codec_b64_encoded_len(size_t n, int flags)
{
    size_t chars = (flags & (CODEC_B64_URL | CODEC_B64_NOPAD))
                       ? n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0)
                                           : (n + 2) / 3 * 4;

    if (flags & CODEC_B64_LINES)
        chars += (chars + 63) / 64;
    return chars;
}

size_t codec_b64_encode(const uint8_t *in, size_t n, char *out, int flags)
{
    const char *abc = (flags & CODEC_B64_URL) ? b64_url : b64_std;
    int pad = !(flags & (CODEC_B64_URL | CODEC_B64_NOPAD)), lines = (flags & CODEC_B64_LINES) != 0;
    size_t i, o = 0, col = 0, k, nq;
    char q[4];

    for (i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;

        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        q[0] = abc[v >> 18];
        q[1] = abc[(v >> 12) & 63];
        q[2] = abc[(v >> 6) & 63];
        q[3] = abc[v & 63];
        /* A final group of 1 or 2 bytes yields 2 or 3 characters. */
        nq = n - i >= 3 ? 4 : n - i + 1;
        for (; pad && nq < 4; nq++)
            q[nq] = '=';
        for (k = 0; k < nq; k++) {
            out[o++] = q[k];
            if (lines && ++col == 64) {
                out[o++] = '\n';
                col = 0;
            }
        }
    }
    if (lines && col)
        out[o++] = '\n';
    return o;
}

char *codec_b64_encode_alloc(const uint8_t *in, size_t n, int flags)
{
    size_t len;
    char *out;

    if (n > (SIZE_MAX - 4) / 4 * 3 - 64)
        return NULL;
    len = codec_b64_encoded_len(n, flags);
    if ((out = malloc(len + 1)) == NULL)
        return NULL;
    out[codec_b64_encode(in, n, out, flags)] = '\0';
    return out;
}

size_t codec_b64_decoded_max(size_t n)
{
    return n / 4 * 3 + 2;
}

int codec_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap,
                     size_t *out_len, int flags)
{
    const unsigned char *s = (const unsigned char *)in;
    int url = (flags & CODEC_B64_URL) != 0;
    int unpadded = (flags & (CODEC_B64_URL | CODEC_B64_NOPAD)) != 0;
    int skip = (flags & CODEC_B64_LINES) != 0;
    size_t i, o = 0, nq = 0, pad = 0;
    uint32_t acc = 0;

    *out_len = 0;
    for (i = 0; i < n; i++) {
        int v;

        if (skip && b64_space(s[i]))
            continue;
        if (s[i] == '=' && !unpadded) {
            /* Padding only fills the third or fourth place of a group. */
            if (nq + pad < 2 || ++pad + nq > 4)
                return -1;
            continue;
        }
        /* Data after padding would be a second, concatenated encoding;
         * refuse rather than guess. */
        if (pad || (v = b64_val(s[i], url)) < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        if (++nq == 4) {
            if (cap - o < 3)
                return -1;
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            nq = 0;
            acc = 0;
        }
    }
    /* The padded form is complete groups; the unpadded forms leave 2 or
     * 3 characters for a final 1 or 2 bytes. */
    if (unpadded ? nq == 1 : (nq != 0 && nq + pad != 4))
        return -1;
    if (nq == 2) {
        /* 12 bits for one byte: the low 4 must be zero. */
        if ((acc & 0xf) != 0 || cap - o < 1)
            return -1;
        out[o++] = (uint8_t)(acc >> 4);
    } else if (nq == 3) {
        /* 18 bits for two bytes: the low 2 must be zero. */
        if ((acc & 0x3) != 0 || cap - o < 2)
            return -1;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    *out_len = o;
    return 0;
}

int codec_b64_decode_alloc(const char *in, size_t n, size_t max,
                           uint8_t **out, size_t *out_len, int flags)
{
    size_t cap = codec_b64_decoded_max(n);
    uint8_t *p;

    *out = NULL;
    *out_len = 0;
    if (cap > max)
        cap = max;
    if ((p = malloc(cap > 0 ? cap : 1)) == NULL)
        return -1;
    if (codec_b64_decode(in, n, p, cap, out_len, flags) != 0) {
        free(p);
        return -1;
    }
    *out = p;
    return 0;
}

/* ---- hex ----------------------------------------------------------- */

void codec_hex_encode(const uint8_t *in, size_t n, char *out, int flags)
{
    const char *digits = (flags & CODEC_HEX_UPPER) ? "0123456789ABCDEF"
                                                   : "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

int codec_hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int codec_hex_decode(const char *in, size_t n, uint8_t *out, size_t cap,
                     size_t *out_len)
{
    size_t i;

    *out_len = 0;
    if (n % 2 != 0 || n / 2 > cap)
        return -1;
    for (i = 0; i < n; i += 2) {
        int hi = codec_hex_val((unsigned char)in[i]);
        int lo = codec_hex_val((unsigned char)in[i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        out[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    *out_len = n / 2;
    return 0;
}

/* ---- UTF-8 ---------------------------------------------------------- */

size_t codec_utf8_decode(const uint8_t *s, size_t avail, uint32_t *cp)
{
    uint32_t c, min;
    size_t k, i;

    *cp = 0;
    if (avail == 0)
        return 0;
    c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    /* C0 and C1 could only start overlong forms, F5..FF only values
     * past U+10FFFF; the checks below would catch them too, but refusing
     * the lead byte stops before reading continuation bytes. */
    if (c >= 0xc2 && c <= 0xdf) {
        k = 2, c &= 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        k = 3, c &= 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        k = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < k)
        return 0;
    for (i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    /* Overlong forms and surrogates would give one text two spellings. */
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return k;
}

int codec_utf8_valid(const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0, k;
    uint32_t cp;

    while (i < n) {
        if (s[i] != 0 && s[i] < 0x80) {
            i++; /* the common case, without a call */
            continue;
        }
        if ((k = codec_utf8_decode(s + i, n - i, &cp)) == 0 || cp == 0)
            return 0;
        i += k;
    }
    return 1;
}

size_t codec_utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp >= 0xd800 && cp <= 0xdfff)
        return 0;
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    if (cp > 0x10ffff)
        return 0;
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- integers ------------------------------------------------------ */

int codec_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0, d;

    if (s == NULL || *s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        d = (uint64_t)(*s - '0');
        /* v * 10 + d <= max, written so that nothing can wrap: the
         * bound is checked before each step, not after. */
        if (v > max / 10 || (v == max / 10 && d > max % 10))
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int codec_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    uint64_t mag, lim;
    int neg;

    if (s == NULL || min > max)
        return -1;
    neg = *s == '-';
    if (neg) {
        if (min >= 0)
            return -1;
        /* |min| without overflowing when min is INT64_MIN. */
        lim = (uint64_t)(-(min + 1)) + 1;
        if (codec_parse_u64(s + 1, lim, &mag) != 0)
            return -1;
        /* "-0" would be a second spelling of zero. */
        if (mag == 0)
            return -1;
        if (max < 0 && mag < (uint64_t)(-(max + 1)) + 1)
            return -1;
        *out = mag == lim ? min : -(int64_t)mag;
        return 0;
    }
    if (max < 0 || codec_parse_u64(s, (uint64_t)max, &mag) != 0)
        return -1;
    if (min > 0 && mag < (uint64_t)min)
        return -1;
    *out = (int64_t)mag;
    return 0;
}
