/* Differential fuzz target for authd/jsonflat.c, the check path's flat
 * JSON parser: whatever it accepts, jansson (the reference) must accept
 * too, with the same keys and the same decoded string values. It may
 * refuse more than jansson (the caller then falls back to jansson), never
 * less, and never crash or read past the input. The nested mode must
 * also give each array or object as raw text that jansson reads as the
 * same value; the flat mode never gives one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../authd/jsonflat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *in, size_t size, int nested)
{
    jsonflat flat;
    char *scratch;
    size_t scratch_len = 2 * size + 4 * JSONFLAT_FIELDS_MAX, i;
    json_t *ref, *raw;
    int r;

    scratch = malloc(scratch_len);
    if (scratch == NULL)
        abort();
    r = nested ? jsonflat_parse_nested(in, size, scratch, scratch_len, &flat)
               : jsonflat_parse(in, size, scratch, scratch_len, &flat);
    if (r == 0) {
        /* Top-level duplicates are refused by both modes; nested ones
         * only by jansson's flag, which is why nested mode reads the
         * reference without it. */
        ref = json_loadb(in, size, nested ? 0 : JSON_REJECT_DUPLICATES,
                         NULL);
        if (ref == NULL || !json_is_object(ref) ||
            json_object_size(ref) != flat.count)
            abort();
        for (i = 0; i < flat.count; i++) {
            json_t *v = json_object_get(ref, flat.fields[i].key);
            if (v == NULL)
                abort();
            switch (flat.fields[i].type) {
            case JSONFLAT_STRING:
                if (!json_is_string(v) ||
                    strcmp(json_string_value(v), flat.fields[i].value) != 0)
                    abort();
                break;
            case JSONFLAT_NUMBER:
                if (!json_is_number(v))
                    abort();
                break;
            case JSONFLAT_TRUE:
                if (!json_is_true(v))
                    abort();
                break;
            case JSONFLAT_FALSE:
                if (!json_is_false(v))
                    abort();
                break;
            case JSONFLAT_NULL:
                if (!json_is_null(v))
                    abort();
                break;
            case JSONFLAT_RAW:
                raw = json_loads(flat.fields[i].value, 0, NULL);
                if (!nested || raw == NULL || !json_equal(raw, v))
                    abort();
                json_decref(raw);
                break;
            }
        }
        json_decref(ref);
    }
    free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy so that any over-read is caught by ASan. */
    char *in = malloc(size ? size : 1);

    if (in == NULL)
        abort();
    memcpy(in, data, size);
    check(in, size, 0);
    check(in, size, 1);
    free(in);
    return 0;
}
