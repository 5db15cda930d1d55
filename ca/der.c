/* The DER reader and writer, PEM armour (its base64 is common/codec)
 * and UTC time arithmetic behind ca/; see der.h. The reader never recurses: callers walk the
 * structures they expect element by element, so nesting depth is bounded
 * by the code, not by the input. */
#include <stdlib.h>
#include <string.h>

#include "../common/codec.h"
#include "der.h"

/* ---- reader ------------------------------------------------------- */

int der_peek(const der_span *cur)
{
    return cur->len == 0 ? -1 : cur->p[0];
}

int der_read_any(der_span *cur, uint8_t *tag, der_span *content,
                 der_span *whole)
{
    const uint8_t *p = cur->p;
    size_t left = cur->len, hdr = 2, clen;

    if (left < 2)
        return -1;
    /* High tag numbers never occur in the structures we read; refusing
     * them keeps the header a fixed two bytes plus the long length. */
    if ((p[0] & 0x1f) == 0x1f)
        return -1;
    if (p[1] < 0x80) {
        clen = p[1];
    } else {
        size_t n = p[1] & 0x7f, i;

        /* 0x80 is BER's indefinite length; more than 4 length bytes
         * cannot describe anything we would accept. */
        if (n == 0 || n > 4 || left < 2 + n || p[2] == 0)
            return -1;
        clen = 0;
        for (i = 0; i < n; i++)
            clen = (clen << 8) | p[2 + i];
        if (clen < 0x80) /* DER: the short form was required */
            return -1;
        hdr += n;
    }
    if (clen > left - hdr)
        return -1;
    *tag = p[0];
    content->p = p + hdr;
    content->len = clen;
    if (whole != NULL) {
        whole->p = p;
        whole->len = hdr + clen;
    }
    cur->p += hdr + clen;
    cur->len -= hdr + clen;
    return 0;
}

int der_read(der_span *cur, uint8_t tag, der_span *content, der_span *whole)
{
    der_span save = *cur, c, wh;
    uint8_t t;

    if (der_read_any(cur, &t, &c, &wh) != 0)
        return -1;
    if (t != tag) {
        *cur = save;
        return -1;
    }
    *content = c;
    if (whole != NULL)
        *whole = wh;
    return 0;
}

int der_oid_is(der_span oid, const uint8_t *enc, size_t len)
{
    return oid.len == len && memcmp(oid.p, enc, len) == 0;
}

int der_read_bits(der_span *cur, der_span *bits, der_span *whole)
{
    der_span save = *cur, c;

    if (der_read(cur, DER_BIT_STRING, &c, whole) != 0)
        return -1;
    /* Keys and signatures are whole octets; a non-zero unused-bit count
     * would be a malformed or hostile encoding. */
    if (c.len < 1 || c.p[0] != 0) {
        *cur = save;
        return -1;
    }
    bits->p = c.p + 1;
    bits->len = c.len - 1;
    return 0;
}

int der_read_algid(der_span *cur, der_span *oid, der_span *params,
                   der_span *whole)
{
    der_span save = *cur, seq, o, prm = {NULL, 0};
    uint8_t t;

    if (der_read(cur, DER_SEQUENCE, &seq, whole) != 0)
        return -1;
    if (der_read(&seq, DER_OID, &o, NULL) != 0 || o.len == 0)
        goto bad;
    if (seq.len > 0) {
        der_span pc;

        if (der_read_any(&seq, &t, &pc, &prm) != 0 || seq.len != 0)
            goto bad;
    }
    *oid = o;
    *params = prm;
    return 0;
bad:
    *cur = save;
    return -1;
}

static int digits(const uint8_t *p, size_t n, unsigned *v)
{
    size_t i;

    *v = 0;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        *v = *v * 10 + (unsigned)(p[i] - '0');
    }
    return 0;
}

int der_read_time(der_span *cur, int64_t *t)
{
    der_span save = *cur, c;
    uint8_t tag;
    unsigned y, mo, d, h, mi, s;
    const uint8_t *p;
    static const unsigned char mdays[12] = {31, 29, 31, 30, 31, 30,
                                            31, 31, 30, 31, 30, 31};

    if (der_read_any(cur, &tag, &c, NULL) != 0)
        return -1;
    p = c.p;
    if (tag == DER_UTCTIME && c.len == 13) {
        if (digits(p, 2, &y) != 0)
            goto bad;
        y += y < 50 ? 2000 : 1900;
        p += 2;
    } else if (tag == DER_GENERALIZEDTIME && c.len == 15) {
        if (digits(p, 4, &y) != 0)
            goto bad;
        p += 4;
    } else {
        goto bad;
    }
    if (digits(p, 2, &mo) || digits(p + 2, 2, &d) || digits(p + 4, 2, &h) ||
        digits(p + 6, 2, &mi) || digits(p + 8, 2, &s) || p[10] != 'Z')
        goto bad;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 ||
        mi > 59 || s > 59)
        goto bad;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        goto bad;
    *t = der_days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 +
         (int64_t)mi * 60 + s;
    return 0;
bad:
    *cur = save;
    return -1;
}

/* ---- writer ------------------------------------------------------- */

void derw_init(der_w *w, size_t initial, size_t max)
{
    w->len = 0;
    w->max = max;
    w->err = 0;
    w->cap = initial < max ? initial : max;
    w->buf = malloc(w->cap);
    if (w->buf == NULL)
        w->err = 1;
}

void derw_free(der_w *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

/* Makes room for n more bytes; sets err if that would pass max. */
static int derw_room(der_w *w, size_t n)
{
    size_t want;
    uint8_t *nb;

    if (w->err)
        return -1;
    if (n > w->max - w->len) {
        w->err = 1;
        return -1;
    }
    if (w->len + n <= w->cap)
        return 0;
    want = w->cap * 2;
    if (want < w->len + n)
        want = w->len + n;
    if (want > w->max)
        want = w->max;
    nb = realloc(w->buf, want);
    if (nb == NULL) {
        w->err = 1;
        return -1;
    }
    w->buf = nb;
    w->cap = want;
    return 0;
}

void derw_bytes(der_w *w, const void *p, size_t n)
{
    if (n == 0 || derw_room(w, n) != 0)
        return;
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

size_t derw_begin(der_w *w, uint8_t tag)
{
    size_t pos = w->len;
    uint8_t hdr[2] = {tag, 0};

    derw_bytes(w, hdr, 2);
    return pos;
}

void derw_end(der_w *w, size_t pos)
{
    size_t clen, extra = 0, v, i;

    if (w->err)
        return;
    clen = w->len - pos - 2;
    if (clen < 0x80) {
        w->buf[pos + 1] = (uint8_t)clen;
        return;
    }
    for (v = clen; v > 0; v >>= 8)
        extra++;
    if (derw_room(w, extra) != 0)
        return;
    memmove(w->buf + pos + 2 + extra, w->buf + pos + 2, clen);
    w->buf[pos + 1] = (uint8_t)(0x80 | extra);
    for (i = 0; i < extra; i++)
        w->buf[pos + 2 + i] = (uint8_t)(clen >> (8 * (extra - 1 - i)));
    w->len += extra;
}

void derw_tlv(der_w *w, uint8_t tag, const void *p, size_t n)
{
    size_t pos = derw_begin(w, tag);

    derw_bytes(w, p, n);
    derw_end(w, pos);
}

void derw_uint(der_w *w, const uint8_t *mag, size_t n)
{
    size_t pos;
    static const uint8_t zero = 0;

    while (n > 1 && mag[0] == 0) {
        mag++;
        n--;
    }
    pos = derw_begin(w, DER_INTEGER);
    if (n == 0 || (mag[0] & 0x80))
        derw_bytes(w, &zero, 1);
    derw_bytes(w, mag, n);
    derw_end(w, pos);
}

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* Writes t as UTCTime (years 1950..2049, unless gen) or
 * GeneralizedTime, always in the seconds-and-Z form. */
static void write_time(der_w *w, int64_t t, int gen)
{
    int64_t days = t / 86400, rem = t % 86400, y;
    unsigned mo, d;
    char s[16];
    size_t n = 0;

    if (rem < 0) {
        rem += 86400;
        days--;
    }
    der_civil_from_days(days, &y, &mo, &d);
    if (y < 1950 || y > 9999) {
        w->err = 1;
        return;
    }
    if (y >= 2050)
        gen = 1;
    if (gen) {
        put2(s, (unsigned)(y / 100));
        n = 2;
    }
    put2(s + n, (unsigned)(y % 100));
    put2(s + n + 2, mo);
    put2(s + n + 4, d);
    put2(s + n + 6, (unsigned)(rem / 3600));
    put2(s + n + 8, (unsigned)(rem / 60 % 60));
    put2(s + n + 10, (unsigned)(rem % 60));
    s[n + 12] = 'Z';
    derw_tlv(w, gen ? DER_GENERALIZEDTIME : DER_UTCTIME, s, n + 13);
}

void derw_time(der_w *w, int64_t t)
{
    write_time(w, t, 0);
}

void derw_gentime(der_w *w, int64_t t)
{
    write_time(w, t, 1);
}

uint8_t *derw_take(der_w *w, size_t *len)
{
    uint8_t *b = w->buf;

    if (w->err) {
        derw_free(w);
        return NULL;
    }
    *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return b;
}

/* ---- dates -------------------------------------------------------- */

/* Howard Hinnant's days_from_civil / civil_from_days: exact for the
 * whole proleptic Gregorian calendar, no tables, no libc time zone. */
int64_t der_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void der_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* ---- base64 and PEM ----------------------------------------------- */

static const char *find(const char *s, size_t len, const char *needle)
{
    size_t nl = strlen(needle), i;

    if (nl > len)
        return NULL;
    for (i = 0; i + nl <= len; i++)
        if (s[i] == needle[0] && memcmp(s + i, needle, nl) == 0)
            return s + i;
    return NULL;
}

int pem_next(const char *s, size_t len, const char *const *labels,
             size_t max, uint8_t **der, size_t *der_len, size_t *next)
{
    static const char begin[] = "-----BEGIN ", end[] = "-----END ";
    const char *b, *lab, *lab_end, *body, *e, *e_end;
    size_t lab_len;
    int ok = labels == NULL;

    *der = NULL;
    *der_len = 0;
    b = find(s, len, begin);
    if (b == NULL)
        return 1;
    lab = b + sizeof(begin) - 1;
    lab_end = find(lab, len - (size_t)(lab - s), "-----");
    if (lab_end == NULL)
        return -1;
    lab_len = (size_t)(lab_end - lab);
    for (; labels != NULL && *labels != NULL; labels++)
        if (strlen(*labels) == lab_len && memcmp(*labels, lab, lab_len) == 0)
            ok = 1;
    if (!ok || lab_len > 64)
        return -1;
    body = lab_end + 5;
    e = find(body, len - (size_t)(body - s), end);
    if (e == NULL)
        return -1;
    /* The END line must name the same label as the BEGIN line. */
    e_end = e + sizeof(end) - 1;
    if ((size_t)(s + len - e_end) < lab_len + 5 ||
        memcmp(e_end, lab, lab_len) != 0 ||
        memcmp(e_end + lab_len, "-----", 5) != 0)
        return -1;
    /* Encapsulated headers (Proc-Type etc.) mean encryption; not ours. */
    if (memchr(body, ':', (size_t)(e - body)) != NULL)
        return -1;
    /* Strict base64 across the wrapped lines; an empty body is no DER. */
    if (codec_b64_decode_alloc(body, (size_t)(e - body), max, der, der_len,
                               CODEC_B64_LINES) != 0)
        return -1;
    if (*der_len == 0) {
        free(*der);
        *der = NULL;
        return -1;
    }
    *next = (size_t)(e_end + lab_len + 5 - s);
    return 0;
}

char *pem_encode(const char *label, const uint8_t *der, size_t len)
{
    size_t ll = strlen(label), lines = (len + 47) / 48, cap, n = 0;
    char *out;

    /* Each 48-byte chunk is one 64-column line plus newline. */
    cap = 2 * (ll + 17) + lines * 65 + 1;
    out = malloc(cap);
    if (out == NULL)
        return NULL;
    memcpy(out + n, "-----BEGIN ", 11);
    n += 11;
    memcpy(out + n, label, ll);
    n += ll;
    memcpy(out + n, "-----\n", 6);
    n += 6;
    n += codec_b64_encode(der, len, out + n, CODEC_B64_LINES);
    memcpy(out + n, "-----END ", 9);
    n += 9;
    memcpy(out + n, label, ll);
    n += ll;
    memcpy(out + n, "-----\n", 6);
    n += 6;
    out[n] = '\0';
    return out;
}
