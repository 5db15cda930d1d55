/* Fuzz target for authd/form.c, the reader of form and JSON-or-form
 * bodies. Checked on every input:
 *  - form_parse never fails (but for memory) and yields at most
 *    FORM_FIELDS_MAX string fields whose keys and values are UTF-8 with
 *    no NUL;
 *  - it agrees with a second, deliberately plain reading of the form
 *    rules written here (split at '&', first '=', '+' and %XX, skip bad
 *    pairs, last value wins, stop at FORM_FIELDS_MAX keys);
 *  - writing the result back as a form (minimally escaped, and again
 *    with every byte but the unreserved ones escaped) and reading it
 *    again gives the same object;
 *  - form_params reads a form exactly as form_parse does, and a JSON
 *    body as jansson does with its integers made text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../common/buf.h"
#include "../../common/codec.h"
#include "../../authd/form.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bodies are at most 64 KiB on the wire; a little more covers the
 * bound. */
enum { INPUT_MAX = 80 * 1024 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

/* The model's component decoder: a malloc()ed string, or NULL when a '%'
 * is not followed by two hex digits, or a byte decodes to NUL, or the
 * result is not UTF-8. */
static char *model_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t i, o = 0;
    static const char hex[] = "0123456789abcdefABCDEF";

    CHECK(out != NULL);
    for (i = 0; i < n; i++) {
        if (s[i] == '%') {
            char h[3] = {0};
            if (n - i < 3 || s[i + 1] == '\0' || s[i + 2] == '\0' ||
                strchr(hex, s[i + 1]) == NULL || strchr(hex, s[i + 2]) == NULL)
                goto bad;
            h[0] = s[i + 1];
            h[1] = s[i + 2];
            out[o] = (char)strtoul(h, NULL, 16);
            if (out[o] == '\0')
                goto bad;
            o++;
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    if (!codec_utf8_valid(out, o))
        goto bad;
    return out;
bad:
    free(out);
    return NULL;
}

/* The form rules read plainly, one pair at a time. */
static json_t *model_parse(const char *body, size_t len)
{
    json_t *obj = json_object();
    size_t start = 0;

    CHECK(obj != NULL);
    while (start < len && json_object_size(obj) < FORM_FIELDS_MAX) {
        size_t end = start, eq;
        char *k, *v;

        while (end < len && body[end] != '&')
            end++;
        for (eq = start; eq < end && body[eq] != '='; eq++)
            ;
        if (eq < end && end - start <= FORM_PAIR_MAX) {
            k = model_decode(body + start, eq - start);
            v = model_decode(body + eq + 1, end - eq - 1);
            if (k && v)
                CHECK(json_object_set_new(obj, k, json_string(v)) == 0);
            free(k);
            free(v);
        }
        start = end + 1;
    }
    return obj;
}

/* Appends s as a form component: with all_escaped, every byte but
 * [A-Za-z0-9._~-] as %XX; otherwise only what the reader would take
 * for syntax ('%', '&', '+', and '=' in keys), with ' ' as '+'. */
static void put_component(buf_t *b, const char *s, int is_key, int all_escaped)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = all_escaped
                        ? ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                           (c >= '0' && c <= '9') || strchr("._~-", c) != NULL)
                        : (c != '%' && c != '&' && c != '+' &&
                           !(is_key && c == '='));
        if (c == ' ' && !all_escaped)
            buf_append_byte(b, '+');
        else if (plain)
            buf_append_byte(b, c);
        else
            buf_printf(b, "%%%02X", c);
    }
}

/* obj written back as a form; *fits is 0 when a pair would be too long
 * for the reader to keep. */
static char *encode(const json_t *obj, int all_escaped, size_t *len,
                    int *fits)
{
    const char *k;
    json_t *v;
    buf_t b;
    char *out;

    *fits = 1;
    buf_init(&b, 64 * INPUT_MAX);
    json_object_foreach((json_t *)obj, k, v) {
        size_t at;

        if (buf_len(&b) > 0)
            buf_append_byte(&b, '&');
        at = buf_len(&b);
        put_component(&b, k, 1, all_escaped);
        buf_append_byte(&b, '=');
        put_component(&b, json_string_value(v), 0, all_escaped);
        if (buf_len(&b) - at > FORM_PAIR_MAX)
            *fits = 0;
    }
    CHECK(!buf_failed(&b));
    out = buf_take(&b, len);
    CHECK(out != NULL);
    return out;
}

static void check_fields(const json_t *obj)
{
    const char *k;
    json_t *v;

    CHECK(json_is_object(obj));
    CHECK(json_object_size(obj) <= FORM_FIELDS_MAX);
    json_object_foreach((json_t *)obj, k, v) {
        CHECK(codec_utf8_valid(k, strlen(k)) || *k == '\0');
        CHECK(json_is_string(v));
        CHECK(json_string_length(v) == strlen(json_string_value(v)));
        CHECK(json_string_length(v) == 0 ||
              codec_utf8_valid(json_string_value(v), json_string_length(v)));
        CHECK(strlen(k) + json_string_length(v) < FORM_PAIR_MAX);
    }
}

static void round_trip(const json_t *obj, int all_escaped)
{
    size_t len = 0;
    int fits;
    char *text = encode(obj, all_escaped, &len, &fits);
    json_t *again;

    /* The minimal form of a pair is never longer than the text it was
     * read from, so it always fits; the fully escaped one may not. */
    CHECK(fits || all_escaped);
    if (fits) {
        again = form_parse(text, len);
        CHECK(again != NULL && json_equal(again, obj));
        json_decref(again);
    }
    free(text);
}

static void check_params(const char *in, size_t size, const json_t *form)
{
    char err[256] = "";
    json_t *obj = (json_t *)1, *ref, *v;
    const char *k;
    size_t i = 0;
    ad_err e = form_params(in, size, &obj, err, sizeof(err));

    while (i < size && strchr(" \t\r\n", in[i]) != NULL && in[i] != '\0')
        i++;
    if (i >= size || in[i] != '{') {
        CHECK(e == AD_OK && json_equal(obj, form));
        json_decref(obj);
        return;
    }
    ref = json_loadb(in, size, JSON_REJECT_DUPLICATES, NULL);
    if (ref == NULL || !json_is_object(ref)) {
        CHECK(e == AD_EJSON && obj == NULL && err[0] != '\0');
        json_decref(ref);
        return;
    }
    CHECK(e == AD_OK && json_is_object(obj));
    CHECK(json_object_size(obj) == json_object_size(ref));
    json_object_foreach(ref, k, v) {
        json_t *got = json_object_get(obj, k);

        CHECK(got != NULL);
        if (json_is_integer(v)) {
            char want[32];

            snprintf(want, sizeof(want), "%lld",
                     (long long)json_integer_value(v));
            CHECK(json_is_string(got) &&
                  strcmp(json_string_value(got), want) == 0);
        } else {
            CHECK(json_equal(got, v));
        }
        if (json_is_string(got))
            CHECK(json_string_length(got) == strlen(json_string_value(got)));
    }
    json_decref(ref);
    json_decref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in;
    json_t *obj, *model;

    if (size > INPUT_MAX)
        return 0;
    /* An exact-size copy so that any over-read is caught by ASan. */
    in = malloc(size ? size : 1);
    CHECK(in != NULL);
    if (size)
        memcpy(in, data, size);

    obj = form_parse(in, size);
    CHECK(obj != NULL);
    check_fields(obj);
    model = model_parse(in, size);
    CHECK(json_equal(obj, model));
    json_decref(model);
    round_trip(obj, 0);
    round_trip(obj, 1);
    check_params(in, size, obj);

    json_decref(obj);
    free(in);
    return 0;
}
