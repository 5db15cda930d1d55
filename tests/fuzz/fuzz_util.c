/* Fuzz target for the daemon's small input readers in authd/util.c that
 * request fields pass through: RFC 3339 times, certificate serials,
 * base64 and base64url, decimal integers, ids and globs, and the JSON
 * string writer of the hot paths. Each reader's accepted output must
 * survive its writer and the reader again (serials and times normalise
 * once, then stay put), and what util_jbuf writes must read back in
 * jansson as the same string. The input is split at its first NUL into
 * a subject and a second string (the glob's subject). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../common/buf.h"
#include "../../common/codec.h"
#include "../../authd/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 16 * 1024 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static void times(const char *s)
{
    time_t t = 0, t2 = 0;
    char out[64];

    if (util_parse_rfc3339(s, &t) != 0)
        return;
    /* Only years 0..9999 have a four-digit RFC 3339 form. */
    if (t < -62167219200LL || t > 253402300799LL)
        return;
    util_time_rfc3339(t, out, sizeof(out));
    CHECK(util_parse_rfc3339(out, &t2) == 0 && t2 == t);
}

static void serials(const char *s)
{
    char out[128], again[128];

    if (!util_serial_normalize(s, out, sizeof(out)))
        return;
    CHECK(strlen(out) % 2 == 0 && strncmp(out, "00", 2) != 0);
    CHECK(util_serial_normalize(out, again, sizeof(again)) &&
          strcmp(out, again) == 0);
}

/* Whatever decodes re-encodes and decodes back to the same bytes, for
 * each alphabet and with or without line breaks. */
static void base64s(const char *s, size_t len)
{
    static const int flags[] = {0, CODEC_B64_LINES, CODEC_B64_URL};
    uint8_t *raw = NULL, *back = NULL;
    size_t raw_len = 0, back_len = 0, i;
    char *enc;

    for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (codec_b64_decode_alloc(s, len, INPUT_MAX, &raw, &raw_len,
                                   flags[i]) == 0) {
            enc = codec_b64_encode_alloc(raw, raw_len, flags[i]);
            CHECK(enc != NULL);
            CHECK(codec_b64_decode_alloc(enc, strlen(enc), INPUT_MAX, &back,
                                         &back_len, flags[i]) == 0);
            CHECK(back_len == raw_len && memcmp(back, raw, raw_len) == 0);
            free(enc);
            free(back);
            back = NULL;
        }
        free(raw);
        raw = NULL;
    }
}

static void numbers(const char *s)
{
    uint64_t v = 0;
    char out[32];

    if (codec_parse_u64(s, UINT64_MAX, &v) != 0)
        return;
    snprintf(out, sizeof(out), "%llu", (unsigned long long)v);
    /* Canonical text reads back to the same value; a bound refuses. */
    CHECK(codec_parse_u64(out, UINT64_MAX, &v) == 0);
    CHECK(v == 0 || codec_parse_u64(out, v - 1, &v) != 0);
}

static void json_strings(const char *s, size_t len)
{
    json_t *ref = json_stringn(s, len), *doc, *v;
    buf_t b;
    char *text;
    size_t tlen = 0;

    /* jansson refuses invalid UTF-8 and NULs: nothing to compare then. */
    if (ref == NULL || strlen(s) != len) {
        json_decref(ref);
        return;
    }
    buf_init(&b, INPUT_MAX * 8);
    buf_append_str(&b, "{");
    util_json_kv(&b, "k", s);
    if (strcmp(s, "k") != 0) /* a duplicate key would shadow the first */
        util_json_kv(&b, s, NULL);
    buf_append_str(&b, "}");
    text = buf_take(&b, &tlen);
    CHECK(text != NULL && strlen(text) == tlen);
    doc = json_loadb(text, tlen, 0, NULL);
    CHECK(doc != NULL);
    CHECK(json_equal(json_object_get(doc, "k"), ref));
    v = json_object_get(doc, s);
    CHECK(v != NULL && (json_is_null(v) || strcmp(s, "k") == 0));
    CHECK(json_object_size(doc) == (strcmp(s, "k") != 0 ? 2u : 1u));
    json_decref(doc);
    json_decref(ref);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;
    const char *second;
    size_t first_len;

    if (size > INPUT_MAX)
        return 0;
    s = malloc(size + 2);
    CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    s[size + 1] = '\0';
    first_len = strlen(s);
    second = s + first_len + (first_len < size ? 1 : 0);

    times(s);
    serials(s);
    base64s(s, first_len);
    numbers(s);
    json_strings(s, first_len);
    if (util_device_id_valid(s)) {
        CHECK(first_len >= 1 && first_len <= 128);
        CHECK(strpbrk(s, "/ *?#+") == NULL);
        CHECK(util_glob_match(s, s)); /* no '*' or '?' in an id */
    }
    (void)util_glob_match(s, second);
    CHECK(util_glob_match("*", second));
    free(s);
    return 0;
}
