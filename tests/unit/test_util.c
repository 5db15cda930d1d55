/* Unit tests of the daemon's small rules: device ids, id_pattern globs,
 * constant-time comparison, and bounded parsing (base64 itself is
 * common/codec, tested in test_codec.c). */
#include <stdlib.h>
#include <string.h>

#include "../../common/codec.h"
#include "../../authd/util.h"
#include "tap.h"

static void test_device_ids_are_1_to_128_bytes_of_the_id_charset(void)
{
    char long_id[130];

    ok(util_device_id_valid("SN-0001"), "a plain id is valid");
    ok(util_device_id_valid("a.b_c:d-E9"), "every allowed character passes");
    ok(!util_device_id_valid(""), "an empty id is refused");
    ok(!util_device_id_valid("a/b"), "'/' is refused (topic injection)");
    ok(!util_device_id_valid("a+b") && !util_device_id_valid("a#b"),
       "MQTT wildcards are refused");
    ok(!util_device_id_valid("a b") && !util_device_id_valid("a\nb"),
       "whitespace is refused (log injection)");
    ok(!util_device_id_valid("caf\xc3\xa9"), "non-ASCII is refused");
    memset(long_id, 'x', 128);
    long_id[128] = '\0';
    ok(util_device_id_valid(long_id), "128 bytes is the longest valid id");
    long_id[128] = 'x';
    long_id[129] = '\0';
    ok(!util_device_id_valid(long_id), "129 bytes is too long");
}

static void test_id_pattern_globs(void)
{
    ok(util_glob_match("SN-*", "SN-1"), "a trailing star matches a suffix");
    ok(util_glob_match("SN-*", "SN-"), "a star matches nothing too");
    ok(!util_glob_match("SN-*", "XSN-1"), "the pattern is anchored at start");
    ok(util_glob_match("*-edge", "gw-edge"), "a leading star matches");
    ok(!util_glob_match("*-edge", "gw-edge2"), "the pattern is anchored at end");
    ok(util_glob_match("SN-??", "SN-42") && !util_glob_match("SN-??", "SN-4"),
       "? matches exactly one byte");
    ok(util_glob_match("*", "anything"), "* matches every id");
    ok(util_glob_match("a*b*c", "axxbyyc") && !util_glob_match("a*b*c", "axxc"),
       "several stars backtrack correctly");
}

static void test_secret_equal_compares_whole_strings(void)
{
    ok(util_secret_equal("abc", "abc"), "equal secrets match");
    ok(!util_secret_equal("abd", "abc"), "a different last byte differs");
    ok(!util_secret_equal("ab", "abc") && !util_secret_equal("abcd", "abc"),
       "a prefix or extension of the secret does not match");
    ok(!util_secret_equal("", "abc"), "an empty guess does not match");
}

static void test_parse_u64_is_bounded(void)
{
    uint64_t v = 0;

    ok(codec_parse_u64("1000", 1000, &v) == 0 && v == 1000, "the bound is allowed");
    ok(codec_parse_u64("1001", 1000, &v) != 0, "past the bound is refused");
    ok(codec_parse_u64("", 10, &v) != 0 && codec_parse_u64("1x", 10, &v) != 0 &&
           codec_parse_u64("-1", 10, &v) != 0,
       "empty, trailing junk and signs are refused");
    ok(codec_parse_u64("99999999999999999999999", UINT64_MAX, &v) != 0,
       "overflow is refused, not wrapped");
}

/* With a small bound the overflow guard must not underflow: max 4 is the
 * mosquitto-go-auth acc parameter, and "5".."16" must not pass as 4 or
 * less. */
static void test_parse_u64_small_bounds(void)
{
    static const uint64_t maxes[] = {0, 1, 4, 9, 10, 11, 99, 100};
    char s[8];
    uint64_t v, max, i;
    size_t k;

    for (k = 0; k < sizeof(maxes) / sizeof(maxes[0]); k++) {
        int wrong = 0;

        max = maxes[k];
        for (i = 0; i <= 120; i++) {
            int rc;

            snprintf(s, sizeof(s), "%llu", (unsigned long long)i);
            v = 12345;
            rc = codec_parse_u64(s, max, &v);
            if (i <= max ? rc != 0 || v != i : rc == 0)
                wrong++;
        }
        ok(wrong == 0, "max %llu: exactly 0..max are accepted (%d wrong)",
           (unsigned long long)max, wrong);
    }
    ok(codec_parse_u64("18446744073709551615", UINT64_MAX, &v) == 0 &&
           v == UINT64_MAX,
       "UINT64_MAX itself parses with bound UINT64_MAX");
    ok(codec_parse_u64("18446744073709551616", UINT64_MAX, &v) != 0,
       "UINT64_MAX + 1 is refused, not wrapped");
}

static void test_random_tokens_have_prefix_and_differ(void)
{
    char a[64], b[64];

    ok(util_random_token("enr_", 32, a, sizeof(a)) == AD_OK &&
           util_random_token("enr_", 32, b, sizeof(b)) == AD_OK,
       "tokens are generated");
    ok(strncmp(a, "enr_", 4) == 0 && strlen(a) == 4 + 43,
       "a 32-byte token is the prefix and 43 base64url characters");
    ok(strcmp(a, b) != 0, "two tokens differ");
    ok(util_random_token("enr_", 32, a, 20) != AD_OK,
       "a too-small buffer is refused rather than overrun");
}

int main(void)
{
    TAP_RUN(test_device_ids_are_1_to_128_bytes_of_the_id_charset);
    TAP_RUN(test_id_pattern_globs);
    TAP_RUN(test_secret_equal_compares_whole_strings);
    TAP_RUN(test_parse_u64_is_bounded);
    TAP_RUN(test_parse_u64_small_bounds);
    TAP_RUN(test_random_tokens_have_prefix_and_differ);
    return tap_done();
}
