/* Unit tests for common/codec (base64, hex, UTF-8, integers) and
 * common/buf (the bounded buffer), at their edges: each is the one copy
 * the whole tree uses, so a hole here is a hole everywhere. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "../../common/codec.h"
#include "tap.h"

/* Decodes a C string with flags; returns the length or -1. */
static long dec(const char *s, int flags, uint8_t *out, size_t cap)
{
    size_t n = 99;

    if (codec_b64_decode(s, strlen(s), out, cap, &n, flags) != 0)
        return n == 0 ? -1 : -2; /* -2: *out_len was not cleared */
    return (long)n;
}

static void test_b64_round_trips_every_length_mod_4(void)
{
    uint8_t data[64], out[64];
    char enc[128];
    size_t n, len, elen;
    int flags[] = {0, CODEC_B64_URL, CODEC_B64_LINES}, f;

    for (n = 0; n < sizeof(data); n++)
        data[n] = (uint8_t)(n * 37 + 250);
    for (f = 0; f < 3; f++) {
        int bad = 0;

        for (n = 0; n < sizeof(data); n++) {
            elen = codec_b64_encode(data, n, enc, flags[f]);
            if (elen != codec_b64_encoded_len(n, flags[f]) ||
                codec_b64_decode(enc, elen, out, sizeof(out), &len,
                                 flags[f]) != 0 ||
                len != n || memcmp(out, data, n) != 0 ||
                codec_b64_decoded_max(elen) < n)
                bad++;
        }
        ok(bad == 0, "flags %d: 0..63 bytes encode and decode back (%d bad)",
           flags[f], bad);
    }
    elen = codec_b64_encode((const uint8_t *)"A", 1, enc, 0);
    ok(elen == 4 && memcmp(enc, "QQ==", 4) == 0, "\"A\" is \"QQ==\"");
    elen = codec_b64_encode((const uint8_t *)"AB", 2, enc, CODEC_B64_URL);
    ok(elen == 3 && memcmp(enc, "QUI", 3) == 0,
       "base64url writes no padding");
}

static void test_b64_std_padding_must_be_complete_and_correct(void)
{
    static const char *const bad[] = {
        "Q", "QQ", "QUI", "QQ=", "QQ===", "Q===", "====", "=", "QUJD=",
        "QQ==QQ==", "QQ=A", "Q=Q=", "QUJDR", "QUJDRA=",
    };
    uint8_t out[16];
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(dec(bad[i], 0, out, sizeof(out)) == -1,
           "\"%s\" is refused (padding missing, short, long or misplaced)",
           bad[i]);
    ok(dec("", 0, out, sizeof(out)) == 0, "empty text is zero bytes");
    ok(dec("QQ==", 0, out, sizeof(out)) == 1 && out[0] == 'A',
       "\"QQ==\" is \"A\"");
    ok(dec("TW!u", 0, out, sizeof(out)) == -1 &&
           dec("TW!u", CODEC_B64_LINES, out, sizeof(out)) == -1,
       "a character outside the alphabet is refused");
    ok(dec("QUI=", 0, out, sizeof(out)) == 2 && memcmp(out, "AB", 2) == 0,
       "\"QUI=\" is \"AB\"");
    ok(dec("QUJD", 0, out, sizeof(out)) == 3 && memcmp(out, "ABC", 3) == 0,
       "\"QUJD\" is \"ABC\"");
}

static void test_b64_trailing_bits_must_be_zero(void)
{
    uint8_t out[16];

    ok(dec("QR==", 0, out, sizeof(out)) == -1,
       "\"QR==\" is refused: its low 4 bits are not zero (a second "
       "spelling of \"A\")");
    ok(dec("QUJ=", 0, out, sizeof(out)) == -1,
       "\"QUJ=\" is refused: its low 2 bits are not zero");
    ok(dec("QR", CODEC_B64_URL, out, sizeof(out)) == -1 &&
           dec("QUJ", CODEC_B64_URL, out, sizeof(out)) == -1,
       "the same holds unpadded in base64url");
    ok(dec("QQ", CODEC_B64_URL, out, sizeof(out)) == 1 &&
           dec("QUI", CODEC_B64_URL, out, sizeof(out)) == 2,
       "zero trailing bits decode in base64url");
}

static void test_b64_url_and_std_alphabets_do_not_mix(void)
{
    uint8_t out[16];

    ok(dec("-_-_", CODEC_B64_URL, out, sizeof(out)) == 3 &&
           out[0] == 0xfb && out[1] == 0xff && out[2] == 0xbf,
       "'-' and '_' are 62 and 63 in base64url");
    ok(dec("+/+/", 0, out, sizeof(out)) == 3 && out[0] == 0xfb,
       "'+' and '/' are 62 and 63 in base64");
    ok(dec("+/+/", CODEC_B64_URL, out, sizeof(out)) == -1,
       "base64url refuses '+' and '/'");
    ok(dec("-_-_", 0, out, sizeof(out)) == -1, "base64 refuses '-' and '_'");
    ok(dec("QQ==", CODEC_B64_URL, out, sizeof(out)) == -1,
       "base64url refuses padding");
    ok(dec("Q", CODEC_B64_URL, out, sizeof(out)) == -1 &&
           dec("QUJDR", CODEC_B64_URL, out, sizeof(out)) == -1,
       "base64url refuses a length of 1 mod 4");
    ok(dec("", CODEC_B64_URL, out, sizeof(out)) == 0,
       "empty base64url is zero bytes");
}

static void test_b64_whitespace_only_when_asked(void)
{
    uint8_t out[16];

    ok(dec("TWF u\nYQ==", 0, out, sizeof(out)) == -1,
       "whitespace is refused by default");
    ok(dec("TWF u\r\n\tYQ==\n", CODEC_B64_LINES, out, sizeof(out)) == 4 &&
           memcmp(out, "Mana", 4) == 0,
       "CODEC_B64_LINES skips whitespace (PEM and EST bodies wrap lines)");
    ok(dec("QQ=\n=", CODEC_B64_LINES, out, sizeof(out)) == 1,
       "a line break inside the padding is still whitespace");
    ok(dec("QQ=\v=", CODEC_B64_LINES, out, sizeof(out)) == -1,
       "only space, tab, CR and LF are whitespace");
    ok(dec("QQ= ", CODEC_B64_LINES, out, sizeof(out)) == -1,
       "whitespace does not complete padding");
}

static void test_b64_nul_and_high_bytes_are_refused(void)
{
    uint8_t out[16];
    size_t len;

    ok(codec_b64_decode("QU\0D", 4, out, sizeof(out), &len, 0) != 0,
       "a NUL inside the text is refused, not a terminator");
    ok(codec_b64_decode("QU\xc3\x81", 4, out, sizeof(out), &len, 0) != 0,
       "bytes above 0x7f are refused");
}

static void test_b64_respects_the_output_capacity(void)
{
    uint8_t out[8], *p = NULL;
    size_t len = 0;

    ok(dec("QUJD", 0, out, 3) == 3, "exactly cap bytes fit");
    ok(dec("QUJD", 0, out, 2) == -1 && dec("QUI=", 0, out, 1) == -1 &&
           dec("QQ==", 0, out, 0) == -1,
       "one byte past cap is refused");
    ok(codec_b64_decode_alloc("QUJDRA==", 8, 4, &p, &len, 0) == 0 &&
           len == 4 && memcmp(p, "ABCD", 4) == 0,
       "the allocating decoder allows exactly max bytes");
    free(p);
    p = NULL;
    ok(codec_b64_decode_alloc("QUJDRA==", 8, 3, &p, &len, 0) != 0 &&
           p == NULL && len == 0,
       "and refuses max + 1, leaving nothing allocated");
    ok(codec_b64_decode_alloc("", 0, 3, &p, &len, 0) == 0 && p != NULL &&
           len == 0,
       "empty input decodes to an empty, non-NULL buffer");
    free(p);
}

static void test_b64_lines_wrap_at_64(void)
{
    uint8_t data[96];
    char *s;

    memset(data, 0xa5, sizeof(data));
    s = codec_b64_encode_alloc(data, 48, CODEC_B64_LINES);
    ok(s && strlen(s) == 65 && s[64] == '\n',
       "48 bytes are one full 64-column line and a newline");
    free(s);
    s = codec_b64_encode_alloc(data, 49, CODEC_B64_LINES);
    ok(s && strlen(s) == 70 && s[64] == '\n' && s[69] == '\n' &&
           strlen(s) == codec_b64_encoded_len(49, CODEC_B64_LINES),
       "49 bytes wrap onto a second, newline-terminated line");
    free(s);
    s = codec_b64_encode_alloc(data, 0, CODEC_B64_LINES);
    ok(s && s[0] == '\0', "nothing encodes to the empty string");
    free(s);
}

static void test_hex_case_and_length(void)
{
    const uint8_t in[] = {0x00, 0x9f, 0xa0, 0xff};
    uint8_t out[4];
    char s[9];
    size_t len = 99;

    codec_hex_encode(in, 4, s, 0);
    ok(strcmp(s, "009fa0ff") == 0, "lowercase by default");
    codec_hex_encode(in, 4, s, CODEC_HEX_UPPER);
    ok(strcmp(s, "009FA0FF") == 0, "uppercase on request");
    ok(codec_hex_decode("009fA0Ff", 8, out, sizeof(out), &len) == 0 &&
           len == 4 && memcmp(out, in, 4) == 0,
       "either case decodes");
    ok(codec_hex_decode("009fa0f", 7, out, sizeof(out), &len) != 0 &&
           len == 0,
       "odd length is refused");
    ok(codec_hex_decode("0g", 2, out, sizeof(out), &len) != 0 &&
           codec_hex_decode("0x", 2, out, sizeof(out), &len) != 0 &&
           codec_hex_decode(" 0", 2, out, sizeof(out), &len) != 0 &&
           codec_hex_decode("0\0", 2, out, sizeof(out), &len) != 0,
       "non-digits, a 0x prefix, spaces and NUL are refused");
    ok(codec_hex_decode("0011223344", 10, out, sizeof(out), &len) != 0,
       "more than cap bytes is refused");
    ok(codec_hex_decode("", 0, out, sizeof(out), &len) == 0 && len == 0,
       "empty is zero bytes");
    ok(codec_hex_val('0') == 0 && codec_hex_val('9') == 9 &&
           codec_hex_val('a') == 10 && codec_hex_val('F') == 15 &&
           codec_hex_val('g') == -1 && codec_hex_val('/') == -1 &&
           codec_hex_val(':') == -1 && codec_hex_val('@') == -1 &&
           codec_hex_val('G') == -1 && codec_hex_val('`') == -1 &&
           codec_hex_val(0) == -1 && codec_hex_val(0xe0) == -1,
       "digit values at the edges of each range");
}

static int v8(const char *s, size_t n) { return codec_utf8_valid(s, n); }

static void test_utf8_accepts_well_formed_text(void)
{
    uint32_t cp;

    ok(v8("", 0), "empty is valid");
    ok(v8("a/b", 3), "ASCII is valid");
    ok(v8("\xc2\x80", 2) && v8("\xdf\xbf", 2), "two-byte edges U+80, U+7FF");
    ok(v8("\xe0\xa0\x80", 3) && v8("\xef\xbf\xbf", 3),
       "three-byte edges U+800, U+FFFF");
    ok(v8("\xed\x9f\xbf", 3) && v8("\xee\x80\x80", 3),
       "U+D7FF and U+E000 (either side of the surrogates) are valid");
    ok(v8("\xf0\x90\x80\x80", 4) && v8("\xf4\x8f\xbf\xbf", 4),
       "four-byte edges U+10000, U+10FFFF");
    ok(codec_utf8_decode((const uint8_t *)"\xe2\x82\xac", 3, &cp) == 3 &&
           cp == 0x20ac,
       "the euro sign decodes to U+20AC");
}

static void test_utf8_refuses_malformed_text(void)
{
    uint32_t cp = 7;

    ok(!v8("\xc0\x80", 2) && !v8("\xc1\xbf", 2), "overlong two-byte forms");
    ok(!v8("\xe0\x80\x80", 3) && !v8("\xe0\x9f\xbf", 3),
       "overlong three-byte forms");
    ok(!v8("\xf0\x80\x80\x80", 4) && !v8("\xf0\x8f\xbf\xbf", 4),
       "overlong four-byte forms");
    ok(!v8("\xed\xa0\x80", 3) && !v8("\xed\xbf\xbf", 3),
       "surrogates U+D800 (ED A0 80) and U+DFFF");
    ok(!v8("\xf4\x90\x80\x80", 4) && !v8("\xf5\x80\x80\x80", 4) &&
           !v8("\xff", 1) && !v8("\xfe", 1),
       "past U+10FFFF, and bytes that never occur");
    ok(!v8("\xe2\x82", 2) && !v8("\xf0\x90\x80", 3) && !v8("\xc2", 1),
       "truncated sequences at the end");
    ok(!v8("\xe2\x82x", 3) && !v8("\xc2\xc2\x80", 3),
       "a sequence cut short by another byte");
    ok(!v8("\x80", 1) && !v8("a\xbf", 2), "a lone continuation byte");
    ok(!v8("a\0b", 3) && !v8("\0", 1), "NUL is refused inside the text");
    ok(codec_utf8_decode((const uint8_t *)"\0", 1, &cp) == 1 && cp == 0,
       "the one-sequence decoder reports NUL as U+0000 for callers to judge");
    ok(codec_utf8_decode((const uint8_t *)"\xe2\x82\xac", 2, &cp) == 0 &&
           cp == 0,
       "the decoder honours avail rather than reading past it");
    ok(codec_utf8_decode((const uint8_t *)"a", 0, &cp) == 0,
       "nothing available is not a sequence");
}

static void test_utf8_encode_round_trips(void)
{
    static const uint32_t cps[] = {0, 0x7f, 0x80, 0x7ff, 0x800, 0xd7ff,
                                   0xe000, 0xffff, 0x10000, 0x10ffff};
    uint8_t b[4];
    uint32_t back;
    size_t i, n;
    int bad = 0;

    for (i = 0; i < sizeof(cps) / sizeof(cps[0]); i++) {
        n = codec_utf8_encode(cps[i], b);
        if (n == 0 || codec_utf8_decode(b, n, &back) != n || back != cps[i])
            bad++;
    }
    ok(bad == 0, "code points at each length edge round-trip (%d bad)", bad);
    ok(codec_utf8_encode(0xd800, b) == 0 && codec_utf8_encode(0xdfff, b) == 0,
       "surrogates are not encoded");
    ok(codec_utf8_encode(0x110000, b) == 0, "past U+10FFFF is not encoded");
}

/* For every value 0..limit, parse_u64 at this max accepts exactly
 * 0..max; returns the number of wrong answers. */
static int u64_sweep(uint64_t max, uint64_t limit)
{
    char s[32];
    uint64_t i, v;
    int wrong = 0, rc;

    for (i = 0; i <= limit; i++) {
        snprintf(s, sizeof(s), "%llu", (unsigned long long)i);
        v = 777;
        rc = codec_parse_u64(s, max, &v);
        if (i <= max ? (rc != 0 || v != i) : (rc == 0 || v != 777))
            wrong++;
    }
    return wrong;
}

static void test_parse_u64_at_small_bounds(void)
{
    static const uint64_t maxes[] = {0, 1, 4, 9, 10, 11, 19, 20, 99, 100};
    size_t k;

    for (k = 0; k < sizeof(maxes) / sizeof(maxes[0]); k++)
        ok(u64_sweep(maxes[k], 250) == 0,
           "max %llu: 0..max accepted, max+1..250 refused and *out untouched",
           (unsigned long long)maxes[k]);
}

static void test_parse_u64_at_the_top(void)
{
    uint64_t v = 0;

    ok(codec_parse_u64("18446744073709551615", UINT64_MAX, &v) == 0 &&
           v == UINT64_MAX,
       "UINT64_MAX parses with bound UINT64_MAX");
    ok(codec_parse_u64("18446744073709551616", UINT64_MAX, &v) != 0 &&
           codec_parse_u64("18446744073709551620", UINT64_MAX, &v) != 0 &&
           codec_parse_u64("99999999999999999999", UINT64_MAX, &v) != 0 &&
           codec_parse_u64("184467440737095516150", UINT64_MAX, &v) != 0,
       "anything past UINT64_MAX is refused, not wrapped");
    ok(codec_parse_u64("18446744073709551614", UINT64_MAX - 1, &v) == 0 &&
           codec_parse_u64("18446744073709551615", UINT64_MAX - 1, &v) != 0,
       "UINT64_MAX - 1 as the bound");
    ok(codec_parse_u64("00000000000000000000000000042", 42, &v) == 0 &&
           v == 42,
       "leading zeros do not count towards overflow");
}

static void test_parse_u64_refuses_anything_but_digits(void)
{
    static const char *const bad[] = {"", " 1", "1 ", "+1", "-0", "-1",
                                      "0x10", "1e3", "1.0", "1,0", "\t1",
                                      "1\n", "\xef\xbc\x91"};
    /* The same, printable in a TAP line. */
    static const char *const shown[] = {"", " 1", "1 ", "+1", "-0", "-1",
                                        "0x10", "1e3", "1.0", "1,0", "\\t1",
                                        "1\\n", "fullwidth 1"};
    uint64_t v = 5;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(codec_parse_u64(bad[i], 1000, &v) != 0 && v == 5,
           "\"%s\" is refused and *out is left alone", shown[i]);
    ok(codec_parse_u64(NULL, 1000, &v) != 0, "NULL is refused");
}

static void test_parse_i64_signs_and_bounds(void)
{
    int64_t v = 0;

    ok(codec_parse_i64("-5", -5, 5, &v) == 0 && v == -5 &&
           codec_parse_i64("5", -5, 5, &v) == 0 && v == 5,
       "both ends of [-5, 5] are accepted");
    ok(codec_parse_i64("-6", -5, 5, &v) != 0 &&
           codec_parse_i64("6", -5, 5, &v) != 0,
       "one past either end is refused");
    ok(codec_parse_i64("-1", 0, 10, &v) != 0,
       "a negative value is refused when min is 0");
    ok(codec_parse_i64("-0", 0, 10, &v) != 0 &&
           codec_parse_i64("-0", -10, 10, &v) != 0,
       "-0 is refused: zero has one spelling");
    ok(codec_parse_i64("3", 4, 10, &v) != 0 && codec_parse_i64("4", 4, 10, &v) == 0,
       "below a positive min is refused");
    ok(codec_parse_i64("-3", -10, -4, &v) != 0 &&
           codec_parse_i64("-4", -10, -4, &v) == 0 && v == -4 &&
           codec_parse_i64("0", -10, -4, &v) != 0,
       "a wholly negative range");
    ok(codec_parse_i64("-9223372036854775808", INT64_MIN, INT64_MAX, &v) == 0 &&
           v == INT64_MIN,
       "INT64_MIN parses");
    ok(codec_parse_i64("9223372036854775807", INT64_MIN, INT64_MAX, &v) == 0 &&
           v == INT64_MAX,
       "INT64_MAX parses");
    ok(codec_parse_i64("-9223372036854775809", INT64_MIN, INT64_MAX, &v) != 0 &&
           codec_parse_i64("9223372036854775808", INT64_MIN, INT64_MAX, &v) != 0,
       "one past either 64-bit end is refused");
    ok(codec_parse_i64("+1", -5, 5, &v) != 0 &&
           codec_parse_i64("--1", -5, 5, &v) != 0 &&
           codec_parse_i64("-", -5, 5, &v) != 0 &&
           codec_parse_i64(" -1", -5, 5, &v) != 0 &&
           codec_parse_i64("", -5, 5, &v) != 0,
       "'+', doubled or bare signs, spaces and empty are refused");
}

static void test_buf_max_exactly_hit_and_exceeded(void)
{
    buf_t b;
    char *s;
    size_t len = 99;

    buf_init(&b, 8);
    ok(buf_append(&b, "1234", 4) == 0 && buf_append_str(&b, "5678") == 0,
       "appends up to the maximum succeed");
    ok(buf_len(&b) == 8 && strcmp(buf_str(&b), "12345678") == 0,
       "the content is NUL-terminated at exactly max bytes");
    ok(buf_append(&b, "", 0) == 0, "an empty append at the maximum is fine");
    ok(buf_append_byte(&b, '9') != 0 && buf_failed(&b),
       "one byte past the maximum fails");
    ok(buf_append_str(&b, "") != 0 && buf_str(&b) == NULL,
       "and the failure sticks");
    s = buf_take(&b, &len);
    ok(s == NULL && len == 0, "a failed buffer hands over nothing");
    ok(!buf_failed(&b) && buf_append_str(&b, "ok") == 0,
       "after take the buffer is usable again with the same maximum");
    s = buf_take(&b, &len);
    ok(s && strcmp(s, "ok") == 0 && len == 2, "take hands over the text");
    free(s);

    buf_init(&b, 0);
    ok(buf_append_str(&b, "") == 0 && buf_append_byte(&b, 'x') != 0,
       "max 0 holds only the empty string");
    s = buf_take(&b, &len);
    ok(s == NULL, "nothing to take once failed");

    buf_init(&b, 4);
    ok(buf_append(&b, "12345", 5) != 0 && buf_len(&b) == 0,
       "a single append past the maximum appends nothing");
    buf_free(&b);

    buf_init(&b, 100);
    s = buf_take(&b, &len);
    ok(s && s[0] == '\0' && len == 0, "an untouched buffer takes as \"\"");
    free(s);
}

static void test_buf_printf_is_bounded(void)
{
    buf_t b;
    char big[600];

    buf_init(&b, 20);
    ok(buf_printf(&b, "%s=%d", "acc", 4) == 0 &&
           strcmp(buf_str(&b), "acc=4") == 0,
       "printf appends formatted text");
    ok(buf_printf(&b, "%015d", 7) == 0 && buf_len(&b) == 20,
       "printf may fill to exactly the maximum");
    ok(buf_printf(&b, "x") != 0 && buf_failed(&b),
       "and fails one byte past it");
    buf_free(&b);

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_init(&b, 4096);
    ok(buf_printf(&b, "[%s]", big) == 0 && buf_len(&b) == 601 &&
           buf_str(&b)[600] == ']' && buf_str(&b)[601] == '\0',
       "long formatted text (past the scratch) is written whole");
    buf_free(&b);
    buf_init(&b, 600);
    ok(buf_printf(&b, "[%s]", big) != 0, "and is refused past the maximum");
    buf_free(&b);
}

static void test_buf_grows_across_many_appends(void)
{
    buf_t b;
    size_t i;
    int same = 1;

    buf_init(&b, 100000);
    for (i = 0; i < 100000; i++)
        buf_append_byte(&b, (unsigned char)('a' + i % 26));
    for (i = 0; i < 100000; i++)
        same &= buf_str(&b)[i] == (char)('a' + i % 26);
    ok(!buf_failed(&b) && buf_len(&b) == 100000 && same,
       "100000 one-byte appends keep every byte through reallocations");
    buf_truncate(&b, 3);
    ok(strcmp(buf_str(&b), "abc") == 0, "truncate keeps the prefix");
    buf_free(&b);
}

static void test_b64_nopad_is_the_standard_alphabet_unpadded(void)
{
    uint8_t out[16];
    char enc[16];

    ok(dec("QQ", CODEC_B64_NOPAD, out, sizeof(out)) == 1 && out[0] == 'A',
       "argon2's PHC strings write 'A' as QQ");
    ok(dec("+/+/", CODEC_B64_NOPAD, out, sizeof(out)) == 3,
       "with the standard alphabet");
    ok(dec("QQ==", CODEC_B64_NOPAD, out, sizeof(out)) == -1,
       "padding is refused");
    ok(dec("-_", CODEC_B64_NOPAD, out, sizeof(out)) == -1,
       "the url alphabet is refused");
    ok(dec("QR", CODEC_B64_NOPAD, out, sizeof(out)) == -1 &&
           dec("Q", CODEC_B64_NOPAD, out, sizeof(out)) == -1,
       "non-zero trailing bits and a length of 1 mod 4 are refused");
    enc[codec_b64_encode((const uint8_t *)"AB", 2, enc, CODEC_B64_NOPAD)] =
        '\0';
    ok(strcmp(enc, "QUI") == 0, "encoding writes no padding: %s", enc);
}

static void test_buf_reset_frees_and_keeps_the_maximum(void)
{
    buf_t b;
    int i;

    buf_init(&b, 4096);
    /* Under ASan (the test command's second pass) a reset that dropped
     * the old contents instead of freeing them is a reported leak. */
    for (i = 0; i < 3; i++) {
        ok(buf_printf(&b, "%0999d", i) == 0 && buf_len(&b) == 999,
           "the buffer holds a kilobyte (round %d)", i);
        buf_reset(&b);
        ok(buf_len(&b) == 0 && !buf_failed(&b) && b.max == 4096,
           "a reset empties it and keeps its maximum");
    }
    buf_free(&b);
}

int main(void)
{
    TAP_RUN(test_b64_round_trips_every_length_mod_4);
    TAP_RUN(test_b64_std_padding_must_be_complete_and_correct);
    TAP_RUN(test_b64_trailing_bits_must_be_zero);
    TAP_RUN(test_b64_url_and_std_alphabets_do_not_mix);
    TAP_RUN(test_b64_nopad_is_the_standard_alphabet_unpadded);
    TAP_RUN(test_b64_whitespace_only_when_asked);
    TAP_RUN(test_b64_nul_and_high_bytes_are_refused);
    TAP_RUN(test_b64_respects_the_output_capacity);
    TAP_RUN(test_b64_lines_wrap_at_64);
    TAP_RUN(test_hex_case_and_length);
    TAP_RUN(test_utf8_accepts_well_formed_text);
    TAP_RUN(test_utf8_refuses_malformed_text);
    TAP_RUN(test_utf8_encode_round_trips);
    TAP_RUN(test_parse_u64_at_small_bounds);
    TAP_RUN(test_parse_u64_at_the_top);
    TAP_RUN(test_parse_u64_refuses_anything_but_digits);
    TAP_RUN(test_parse_i64_signs_and_bounds);
    TAP_RUN(test_buf_max_exactly_hit_and_exceeded);
    TAP_RUN(test_buf_printf_is_bounded);
    TAP_RUN(test_buf_grows_across_many_appends);
    TAP_RUN(test_buf_reset_frees_and_keeps_the_maximum);
    return tap_done();
}
