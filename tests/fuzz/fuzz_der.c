/* Fuzz target for the DER reader in ca/der.c, which every CSR, OCSP
 * request and presented certificate goes through. The input is walked
 * as a tree of TLVs; each element read must come back byte for byte
 * when written again with the DER writer (so the reader only accepts
 * minimal, definite lengths), and each time it accepts must come back
 * byte for byte from the time writer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../ca/der.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 64 * 1024, DEPTH_MAX = 24 };

#define YEAR_1950 (-631152000LL) /* 1950-01-01T00:00:00Z */

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static void same_when_written(uint8_t tag, der_span content, der_span whole)
{
    der_w w;
    uint8_t *out;
    size_t len = 0;

    derw_init(&w, 16, INPUT_MAX * 2);
    derw_tlv(&w, tag, content.p, content.len);
    out = derw_take(&w, &len);
    CHECK(out != NULL);
    CHECK(len == whole.len && memcmp(out, whole.p, len) == 0);
    free(out);
}

/* A time the reader accepts is written back identically: UTCTime for
 * 1950..2049, GeneralizedTime otherwise (RFC 5280) or when asked. */
static void time_round_trip(der_span whole)
{
    der_span cur = whole;
    int64_t t = 0;
    der_w w;
    uint8_t *out;
    size_t len = 0;

    if (der_read_time(&cur, &t) != 0) {
        CHECK(cur.p == whole.p && cur.len == whole.len);
        return;
    }
    CHECK(cur.len == 0);
    derw_init(&w, 32, 64);
    if (whole.p[0] == DER_UTCTIME)
        derw_time(&w, t);
    else
        derw_gentime(&w, t);
    out = derw_take(&w, &len);
    /* The reader takes GeneralizedTime from year 0; the writer starts at
     * 1950 (RFC 5280's UTCTime window), so earlier times do not return. */
    if (t < YEAR_1950) {
        CHECK(out == NULL);
        return;
    }
    CHECK(out != NULL);
    CHECK(len == whole.len && memcmp(out, whole.p, len) == 0);
    free(out);
}

static void other_readers(der_span whole)
{
    der_span cur = whole, a, b, c;

    if (der_read_bits(&cur, &a, &b) == 0) {
        CHECK(cur.len == 0 && b.len == whole.len);
        CHECK(a.p + a.len == whole.p + whole.len);
    } else {
        CHECK(cur.p == whole.p && cur.len == whole.len);
    }
    cur = whole;
    if (der_read_algid(&cur, &a, &b, &c) == 0) {
        CHECK(cur.len == 0 && c.len == whole.len);
        CHECK(a.p >= whole.p && a.p + a.len <= whole.p + whole.len);
        CHECK(b.len == 0 || (b.p >= a.p + a.len &&
                             b.p + b.len == whole.p + whole.len));
    } else {
        CHECK(cur.p == whole.p && cur.len == whole.len);
    }
}

static void walk(der_span cur, int depth)
{
    while (cur.len > 0) {
        der_span before = cur, content, whole;
        uint8_t tag = 0;

        if (der_read_any(&cur, &tag, &content, &whole) != 0) {
            /* On failure the cursor is left where it was. */
            CHECK(cur.p == before.p && cur.len == before.len);
            return;
        }
        CHECK(whole.p == before.p && before.len - cur.len == whole.len);
        CHECK(content.p + content.len == whole.p + whole.len);
        CHECK(der_peek(&before) == tag);
        same_when_written(tag, content, whole);
        if (tag == DER_UTCTIME || tag == DER_GENERALIZEDTIME)
            time_round_trip(whole);
        other_readers(whole);
        if ((tag & 0x20) && depth < DEPTH_MAX)
            walk(content, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    der_span all;

    if (size > INPUT_MAX)
        return 0;
    /* An exact-size copy so that any over-read is caught by ASan. */
    copy = malloc(size ? size : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    all.p = copy;
    all.len = size;
    walk(all, 0);
    free(copy);
    return 0;
}
