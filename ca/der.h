/* Internal to ca/: a small strict DER reader and a bounded DER writer,
 * plus the PEM armour and time conversions the CA needs. They exist so the
 * issuance hot path never reaches OpenSSL's generic ASN.1 decoders. */
#ifndef AUTHD_CA_DER_H
#define AUTHD_CA_DER_H

#include <stddef.h>
#include <stdint.h>

/* A borrowed byte range. As a cursor, p advances and len shrinks. */
typedef struct {
    const uint8_t *p;
    size_t len;
} der_span;

enum {
    DER_INTEGER = 0x02,
    DER_BIT_STRING = 0x03,
    DER_OCTET_STRING = 0x04,
    DER_NULL = 0x05,
    DER_OID = 0x06,
    DER_UTF8STRING = 0x0c,
    DER_PRINTABLESTRING = 0x13,
    DER_T61STRING = 0x14,
    DER_IA5STRING = 0x16,
    DER_UTCTIME = 0x17,
    DER_GENERALIZEDTIME = 0x18,
    DER_BMPSTRING = 0x1e,
    DER_SEQUENCE = 0x30,
    DER_SET = 0x31,
    DER_ENUMERATED = 0x0a,
    DER_CTX0 = 0xa0, /* [0] constructed */
    DER_CTX1 = 0xa1,
    DER_CTX2 = 0xa2,
    DER_CTX3 = 0xa3  /* [3] constructed */
};

/* Reads the next element of cur, which must have tag `tag` (single-byte
 * tags only; high tag numbers are refused). Lengths must be minimal
 * definite DER and fit in what is left. On success advances cur, sets
 * *content to the value bytes and, if whole is non-NULL, *whole to the
 * whole TLV; returns 0. On failure returns -1 and leaves cur unchanged. */
int der_read(der_span *cur, uint8_t tag, der_span *content, der_span *whole);
/* Like der_read but accepts any tag and reports it in *tag. */
int der_read_any(der_span *cur, uint8_t *tag, der_span *content,
                 der_span *whole);
/* The tag of the next element, or -1 if cur is empty. */
int der_peek(const der_span *cur);
/* 1 if an OID's content bytes equal the given encoding. */
int der_oid_is(der_span oid, const uint8_t *enc, size_t len);
#define DER_OID_IS(span, arr) der_oid_is((span), (arr), sizeof(arr))
/* Reads a BIT STRING whose unused-bit count is 0; *bits is the bytes
 * after that count byte. */
int der_read_bits(der_span *cur, der_span *bits, der_span *whole);
/* Reads an AlgorithmIdentifier: *oid is the OID content, *params the
 * parameter TLV (len 0 if absent). Nothing may follow the parameters. */
int der_read_algid(der_span *cur, der_span *oid, der_span *params,
                   der_span *whole);
/* Reads a UTCTime or GeneralizedTime (the forms RFC 5280 allows:
 * YYMMDDHHMMSSZ and YYYYMMDDHHMMSSZ) as Unix seconds. */
int der_read_time(der_span *cur, int64_t *t);

/* A growable output buffer that refuses to grow past max. Errors are
 * sticky: after the first failure every call is a no-op and err is set,
 * so encoders can be written straight through and checked once. */
typedef struct {
    uint8_t *buf;
    size_t len, cap, max;
    int err;
} der_w;

void derw_init(der_w *w, size_t initial, size_t max);
void derw_free(der_w *w);
void derw_bytes(der_w *w, const void *p, size_t n);
void derw_tlv(der_w *w, uint8_t tag, const void *p, size_t n);
/* Starts a constructed element; returns its position, to pass to
 * derw_end once its content has been written. */
size_t derw_begin(der_w *w, uint8_t tag);
/* Ends an element begun at pos: writes its length (moving the content if
 * the length needs more than one byte). Afterwards the whole TLV is
 * w->buf[pos .. w->len). */
void derw_end(der_w *w, size_t pos);
/* A non-negative INTEGER from big-endian magnitude bytes. */
void derw_uint(der_w *w, const uint8_t *mag, size_t n);
/* UTCTime for years 1950..2049, GeneralizedTime otherwise (RFC 5280
 * 4.1.2.5). Years outside 1950..9999 set err. */
void derw_time(der_w *w, int64_t t);
/* Always GeneralizedTime (OCSP's times), years 1950..9999. */
void derw_gentime(der_w *w, int64_t t);
/* Hands the buffer over: returns it (caller frees) and resets w. NULL if
 * an error occurred. */
uint8_t *derw_take(der_w *w, size_t *len);

/* Finds the next "-----BEGIN <label>-----" block in s[0..len) (label
 * NULL: any label; accepted labels are matched exactly), decodes its
 * base64 body into a malloc()ed buffer of at most max bytes. *next is set
 * to the offset just after the END line. Returns 0 on success, 1 if there
 * is no further BEGIN line, -1 on a malformed block or oversize body. */
int pem_next(const char *s, size_t len, const char *const *labels,
             size_t max, uint8_t **der, size_t *der_len, size_t *next);
/* A NUL-terminated PEM block of the given label, 64-column lines. NULL
 * on allocation failure. */
char *pem_encode(const char *label, const uint8_t *der, size_t len);

/* Civil date/time <-> Unix seconds, proleptic Gregorian, UTC. */
int64_t der_days_from_civil(int64_t y, unsigned m, unsigned d);
void der_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

#endif
