/* A strict parser for flat JSON objects — {"key": "string" | number |
 * true | false | null, ...} — for the check path, where building a
 * jansson tree per request costs more than deciding. Anything it does not
 * accept (nesting, bad escapes, invalid UTF-8, duplicate keys, more
 * fields than it holds) makes it fail, and the caller falls back to
 * jansson, whose answers (and error messages) stay the reference. */
#ifndef AUTHD_JSONFLAT_H
#define AUTHD_JSONFLAT_H

#include <stddef.h>

enum { JSONFLAT_FIELDS_MAX = 16 };

typedef enum {
    JSONFLAT_STRING,
    JSONFLAT_NUMBER,
    JSONFLAT_TRUE,
    JSONFLAT_FALSE,
    JSONFLAT_NULL
} jsonflat_type;

typedef struct {
    const char *key;   /* NUL-terminated, decoded, in the scratch buffer */
    const char *value; /* strings: decoded text; numbers: their text */
    jsonflat_type type;
} jsonflat_field;

typedef struct {
    jsonflat_field fields[JSONFLAT_FIELDS_MAX];
    size_t count;
} jsonflat;

/* Parses in[0..len) into out, decoding keys and strings into scratch
 * (which must hold len + JSONFLAT_FIELDS_MAX * 4 bytes to be sure; less
 * makes long inputs fail). A string containing an escaped NUL fails.
 * Returns 0 on success, -1 if the input is not such an object. */
int jsonflat_parse(const char *in, size_t len, char *scratch,
                   size_t scratch_len, jsonflat *out);

/* The field named key, or NULL. */
const jsonflat_field *jsonflat_get(const jsonflat *f, const char *key);

#endif
