/* See form.h. Every read is bounded by the length passed in: bodies are
 * not NUL-terminated as far as these readers know. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/codec.h"
#include "form.h"

/* Decodes one form component; NULL if it is malformed or holds a NUL
 * byte, raw or as %00 (either would silently cut the C string short). */
static char *form_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t i, o = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '\0') {
            goto bad;
        } else if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            int hi, lo;

            if (i + 2 >= n)
                goto bad;
            hi = codec_hex_val((unsigned char)s[i + 1]);
            lo = codec_hex_val((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi << 4 | lo) == 0)
                goto bad;
            out[o++] = (char)(unsigned char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
bad:
    free(out);
    return NULL;
}

json_t *form_parse(const char *body, size_t len)
{
    json_t *obj = json_object();
    size_t i = 0;

    while (obj && i < len && json_object_size(obj) < FORM_FIELDS_MAX) {
        const char *pair = body + i, *amp = memchr(pair, '&', len - i);
        size_t plen = amp ? (size_t)(amp - pair) : len - i;
        const char *eq = memchr(pair, '=', plen);
        char *k, *v;

        i += plen + 1;
        if (eq == NULL || plen > FORM_PAIR_MAX)
            continue;
        k = form_decode(pair, (size_t)(eq - pair));
        v = form_decode(eq + 1, plen - (size_t)(eq - pair) - 1);
        /* json_string refuses text that is not UTF-8, and setting a
         * NULL value (or a non-UTF-8 key) fails: the pair is skipped. */
        if (k && v)
            json_object_set_new(obj, k, json_string(v));
        free(k);
        free(v);
    }
    return obj;
}

ad_err form_params(const char *body, size_t len, json_t **out, char *err,
                   size_t errlen)
{
    json_error_t jerr;
    json_t *obj, *v;
    const char *k;
    size_t i = 0;

    *out = NULL;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' ||
                       body[i] == '\t'))
        i++;
    if (i >= len || body[i] != '{') {
        if ((obj = form_parse(body, len)) == NULL)
            return AD_ENOMEM;
        *out = obj;
        return AD_OK;
    }
    obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL)
        return ad_errf(AD_EJSON, err, errlen,
                       "invalid JSON at line %d column %d: %s", jerr.line,
                       jerr.column, jerr.text);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return ad_errf(AD_EJSON, err, errlen, "the body must be a JSON object");
    }
    /* Some clients send numbers (acc, qos) as JSON numbers, others as
     * text: keep one form, text. Replacing a value does not disturb the
     * iteration. */
    json_object_foreach(obj, k, v) {
        if (json_is_integer(v)) {
            char buf[32];
            json_t *s;

            snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
            if ((s = json_string(buf)) == NULL ||
                json_object_set_new(obj, k, s) != 0) {
                json_decref(obj);
                return AD_ENOMEM;
            }
        }
    }
    *out = obj;
    return AD_OK;
}
