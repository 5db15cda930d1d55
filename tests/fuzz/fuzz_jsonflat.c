/* Differential fuzz target for authd/jsonflat.c, the check path's flat
 * JSON parser: whatever it accepts, jansson (the reference) must accept
 * too, with the same keys and the same decoded string values. It may
 * refuse more than jansson (the caller then falls back to jansson), never
 * less, and never crash or read past the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../authd/jsonflat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    jsonflat flat;
    char *scratch;
    size_t scratch_len = size + 4 * JSONFLAT_FIELDS_MAX, i;
    json_t *ref;

    /* An exact-size copy so that any over-read is caught by ASan. */
    char *in = malloc(size ? size : 1);
    scratch = malloc(scratch_len);
    if (in == NULL || scratch == NULL)
        abort();
    memcpy(in, data, size);
    if (jsonflat_parse(in, size, scratch, scratch_len, &flat) == 0) {
        ref = json_loadb(in, size, JSON_REJECT_DUPLICATES, NULL);
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
            }
        }
        json_decref(ref);
    }
    free(scratch);
    free(in);
    return 0;
}
