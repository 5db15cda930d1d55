/* A strict parser for flat JSON objects — {"key": "string" | number |
 * true | false | null, ...} — (and, for stored records, objects whose
 * nested values are kept as raw text) for the check path, where building a
 * jansson tree per request costs more than deciding. Anything it does not
 * accept (nesting, bad escapes, invalid UTF-8, duplicate keys, more
 * fields than it holds) makes it fail, and the caller falls back to
 * jansson, whose answers (and error messages) stay the reference. */
#ifndef AUTHD_JSONFLAT_H
#define AUTHD_JSONFLAT_H

#include <stddef.h>

enum { JSONFLAT_FIELDS_MAX = 16, JSONFLAT_DEPTH_MAX = 32 };

typedef enum {
    JSONFLAT_STRING,
    JSONFLAT_NUMBER,
    JSONFLAT_TRUE,
    JSONFLAT_FALSE,
    JSONFLAT_NULL,
    JSONFLAT_RAW       /* jsonflat_parse_nested: an array or object */
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

/* As jsonflat_parse, but a value may also be an array or an object
 * (nested at most JSONFLAT_DEPTH_MAX deep), checked and given as its raw
 * JSON text (JSONFLAT_RAW), to be parsed only if it is needed: for
 * reading the few fields a hot path wants from a stored record. Nested
 * objects' duplicate keys are not refused. scratch must hold 2 * len +
 * JSONFLAT_FIELDS_MAX * 4 bytes to be sure. */
int jsonflat_parse_nested(const char *in, size_t len, char *scratch,
                          size_t scratch_len, jsonflat *out);

/* The field named key, or NULL. */
const jsonflat_field *jsonflat_get(const jsonflat *f, const char *key);

#endif
