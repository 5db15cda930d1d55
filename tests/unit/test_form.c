/* Unit tests of authd/form.c, the reader of compat and token bodies:
 * form decoding ('+', %XX and every way a %-escape can be malformed),
 * the bounds, duplicate keys, and the JSON-or-form choice with its
 * integer-to-text rule. */
#include <stdlib.h>
#include <string.h>

#include "../../authd/form.h"
#include "tap.h"

/* The last object field() parsed: its strings stay valid until the next
 * call (main frees the last one). */
static json_t *last;

/* The value of key in a form parse of the C string body, or NULL. */
static const char *field(const char *body, const char *key)
{
    json_decref(last);
    last = form_parse(body, strlen(body));
    if (last == NULL)
        return NULL;
    return json_string_value(json_object_get(last, key));
}

static size_t nfields(const char *body)
{
    json_t *o = form_parse(body, strlen(body));
    size_t n = o ? json_object_size(o) : (size_t)-1;

    json_decref(o);
    return n;
}

static int is(const char *got, const char *want)
{
    return got != NULL && strcmp(got, want) == 0;
}

static void test_form_plus_is_a_space_in_keys_and_values(void)
{
    ok(is(field("user+name=a+b", "user name"), "a b"),
       "'+' decodes to a space on both sides of '=' (go-auth encodes so)");
    ok(is(field("a=%2B", "a"), "+"),
       "%%2B is a literal '+', so a '+' in a password survives");
}

static void test_form_percent_escapes_decode_in_either_case(void)
{
    ok(is(field("a=%41", "a"), "A"), "%%41 is 'A'");
    ok(is(field("a=%6a%6A", "a"), "jj"), "hex digits are read in either case");
    ok(is(field("a=%C3%A9", "a"), "\xc3\xa9"),
       "escaped UTF-8 decodes to the bytes it spells");
    ok(is(field("%26=%3D", "&"), "="),
       "escaped '&' and '=' are data, not separators");
}

static void test_form_malformed_escapes_drop_only_their_pair(void)
{
    ok(field("a=b%", "a") == NULL, "a trailing '%%' is refused");
    ok(field("a=%4", "a") == NULL, "a '%%' with one digit is refused");
    ok(field("a=%4&b=1", "a") == NULL,
       "a '%%' with one digit before '&' is refused, not read across it");
    ok(field("a=%zz", "a") == NULL, "'%%zz' is refused");
    ok(field("a=%-1", "a") == NULL,
       "signed hex '%%-1' is refused (a sign is not a digit)");
    ok(field("a=%+1", "a") == NULL, "'%%+1' is refused");
    ok(field("a=% 1", "a") == NULL, "'%% 1' is refused");
    ok(field("%zz=1", "%zz") == NULL && nfields("%zz=1") == 0,
       "a malformed key drops the pair");
    ok(is(field("a=%zz&b=ok", "b"), "ok"),
       "a malformed pair does not take the next one with it");
}

static void test_form_nul_and_invalid_utf8_are_refused(void)
{
    json_t *o;

    ok(field("a=x%00y", "a") == NULL && nfields("a=x%00y") == 0,
       "%%00 is refused: it would cut the value short in C");
    ok(nfields("%00=1") == 0, "%%00 in a key is refused too");
    o = form_parse("a=x\0y&b=1", 9);
    ok(o && json_object_get(o, "a") == NULL &&
           json_object_size(o) == 1,
       "a raw NUL byte in a value is refused like %%00, not cut at");
    json_decref(o);
    o = form_parse("user\0x=a", 8);
    ok(o && json_object_size(o) == 0,
       "a raw NUL byte in a key is refused (\"user\\0x\" is not \"user\")");
    json_decref(o);
    ok(field("a=%ff", "a") == NULL,
       "a value that is not UTF-8 is dropped (it could not be a JSON string)");
    ok(nfields("%ff=1") == 0, "a key that is not UTF-8 is dropped");
}

static void test_form_duplicate_keys_keep_the_last_value(void)
{
    ok(is(field("a=1&a=2", "a"), "2") && nfields("a=1&a=2") == 1,
       "a repeated key keeps its last value, as the GET query string does");
    ok(is(field("a=1&a=%zz", "a"), "1"),
       "a malformed repeat does not erase the earlier value");
}

static void test_form_empty_and_odd_shapes(void)
{
    json_t *o = form_parse("", 0);

    ok(o != NULL && json_object_size(o) == 0,
       "an empty body is an empty object, not an error");
    json_decref(o);
    o = form_parse(NULL, 0);
    ok(o != NULL && json_object_size(o) == 0,
       "a NULL body of length 0 is read as empty");
    json_decref(o);
    ok(is(field("a=", "a"), ""), "an empty value is the empty string");
    ok(is(field("=v", ""), "v"), "an empty key is kept as the empty string");
    ok(nfields("flag&a=1") == 1 && is(field("flag&a=1", "a"), "1"),
       "a pair without '=' is skipped");
    ok(is(field("&&a=1&&", "a"), "1") && nfields("&&a=1&&") == 1,
       "empty pairs are skipped");
    ok(is(field("a=b=c", "a"), "b=c"), "the first '=' splits key and value");
}

static void test_form_reads_only_len_bytes(void)
{
    json_t *o = form_parse("a=1b=2", 3);

    ok(o != NULL && is(json_string_value(json_object_get(o, "a")), "1") &&
           json_object_size(o) == 1,
       "the body is read up to len, not to a NUL");
    json_decref(o);
    o = form_parse("a=%41", 4);
    ok(o != NULL && json_object_size(o) == 0,
       "an escape cut by len is truncated, not read past len");
    json_decref(o);
}

static void test_form_bounds(void)
{
    char body[FORM_FIELDS_MAX * 8 + 16], *big;
    size_t i, n = 0;
    json_t *o;

    for (i = 0; i <= FORM_FIELDS_MAX; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "k%zu=v&", i);
    o = form_parse(body, n);
    ok(o && json_object_size(o) == FORM_FIELDS_MAX &&
           json_object_get(o, "k0") != NULL &&
           json_object_get(o, "k16") == NULL,
       "the first FORM_FIELDS_MAX fields are kept, the rest dropped");
    json_decref(o);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "k0=late");
    o = form_parse(body, n);
    ok(o && strcmp(json_string_value(json_object_get(o, "k0")), "v") == 0,
       "once the field cap is reached, a repeat of a held key is ignored too");
    json_decref(o);

    big = malloc(FORM_PAIR_MAX + 2);
    if (big == NULL)
        abort();
    memcpy(big, "a=", 2);
    memset(big + 2, 'x', FORM_PAIR_MAX - 2);
    o = form_parse(big, FORM_PAIR_MAX);
    ok(o && json_string_length(json_object_get(o, "a")) == FORM_PAIR_MAX - 2,
       "a pair of exactly FORM_PAIR_MAX bytes is kept");
    json_decref(o);
    big[FORM_PAIR_MAX] = 'x';
    o = form_parse(big, FORM_PAIR_MAX + 1);
    ok(o && json_object_size(o) == 0,
       "a pair one byte over FORM_PAIR_MAX is dropped");
    json_decref(o);
    free(big);
}

/* form_params on a C string: the error, with *out and err filled. */
static ad_err params(const char *body, json_t **out, char *err, size_t errlen)
{
    return form_params(body, strlen(body), out, err, errlen);
}

static void test_form_params_reads_json_objects(void)
{
    char err[256] = "";
    json_t *o = NULL;

    ok(params(" \r\n\t{\"acc\": 4, \"topic\": \"t\", \"qos\": -1}", &o, err,
              sizeof(err)) == AD_OK &&
           is(json_string_value(json_object_get(o, "acc")), "4") &&
           is(json_string_value(json_object_get(o, "qos")), "-1") &&
           is(json_string_value(json_object_get(o, "topic")), "t"),
       "a JSON body (after blanks) is read, integers made their text");
    json_decref(o);
    ok(params("{\"a\": 1.5, \"b\": true, \"t\": [{\"topic\": \"x\", \"qos\": 1}]}",
              &o, err, sizeof(err)) == AD_OK &&
           json_is_real(json_object_get(o, "a")) &&
           json_is_true(json_object_get(o, "b")) &&
           json_is_integer(json_object_get(
               json_array_get(json_object_get(o, "t"), 0), "qos")),
       "only top-level integers become text; reals, booleans and nested "
       "values stay as sent (VerneMQ's topics list)");
    json_decref(o);
}

static void test_form_params_refuses_bad_json(void)
{
    char err[256] = "";
    json_t *o = (json_t *)1;

    ok(params("{\"a\": ", &o, err, sizeof(err)) == AD_EJSON && o == NULL &&
           strncmp(err, "invalid JSON at line 1", 22) == 0,
       "malformed JSON is AD_EJSON with where it failed");
    ok(params("{\"a\": \"1\", \"a\": \"2\"}", &o, err, sizeof(err)) ==
               AD_EJSON && o == NULL,
       "duplicate JSON keys are refused (which one would count?)");
    ok(params("{\"a\": \"x\\u0000y\"}", &o, err, sizeof(err)) == AD_EJSON &&
           o == NULL,
       "a NUL escape in JSON is refused, as %%00 is in forms");
    ok(params("{} x", &o, err, sizeof(err)) == AD_EJSON,
       "trailing bytes after the object are refused");
}

static void test_form_params_reads_forms_otherwise(void)
{
    char err[256] = "";
    json_t *o = NULL;

    ok(params("username=d1&acc=4", &o, err, sizeof(err)) == AD_OK &&
           is(json_string_value(json_object_get(o, "acc")), "4"),
       "a body not starting with '{' is a form");
    json_decref(o);
    ok(params("", &o, err, sizeof(err)) == AD_OK && o &&
           json_object_size(o) == 0,
       "an empty body is an empty form");
    json_decref(o);
    ok(params("[1, 2]", &o, err, sizeof(err)) == AD_OK && o &&
           json_object_size(o) == 0,
       "a JSON array is read as a form (with no fields), not as JSON");
    json_decref(o);
}

int main(void)
{
    TAP_RUN(test_form_plus_is_a_space_in_keys_and_values);
    TAP_RUN(test_form_percent_escapes_decode_in_either_case);
    TAP_RUN(test_form_malformed_escapes_drop_only_their_pair);
    TAP_RUN(test_form_nul_and_invalid_utf8_are_refused);
    TAP_RUN(test_form_duplicate_keys_keep_the_last_value);
    TAP_RUN(test_form_empty_and_odd_shapes);
    TAP_RUN(test_form_reads_only_len_bytes);
    TAP_RUN(test_form_bounds);
    TAP_RUN(test_form_params_reads_json_objects);
    TAP_RUN(test_form_params_refuses_bad_json);
    TAP_RUN(test_form_params_reads_forms_otherwise);
    json_decref(last);
    return tap_done();
}
