/* Request bodies as the compat and token endpoints read them: HTML form
 * encoding (application/x-www-form-urlencoded) or a JSON object, told
 * apart by the first byte. No I/O and no HTTP here, so that the readers
 * can be unit-tested and fuzzed; http_body_params wraps them for a
 * request. */
#ifndef AUTHD_FORM_H
#define AUTHD_FORM_H

#include <stddef.h>

#include <jansson.h>

#include "../common/err.h"

/* Form bodies: at most this many fields, each pair at most this long
 * (room for the longest token a client may introspect). The query
 * string of a GET is held to the same bounds. */
enum { FORM_FIELDS_MAX = 16, FORM_PAIR_MAX = 16384 };

/* Parses body[0..len) as key=value pairs joined by '&', where '+' is a
 * space and %XX (two hex digits, either case) is a byte. Returns a new
 * object of strings (the caller owns it), or NULL if out of memory.
 * Pairs that cannot be read are skipped, not fatal, as browsers and
 * brokers skip them too: no '=', longer than FORM_PAIR_MAX, a '%' not
 * followed by two hex digits, a NUL byte (raw or %00: either would cut
 * the C string short), or a key or value that is not UTF-8. Skipping
 * never leaves a shortened value behind. A repeated key keeps its last
 * value. Once FORM_FIELDS_MAX distinct keys are held the rest of the
 * body is ignored, repeats of keys already held included. */
json_t *form_parse(const char *body, size_t len);

/* Reads a compat body: a JSON object when the first byte that is not
 * space, tab, CR or LF is '{' (duplicate keys refused, and integers
 * made their decimal text, since brokers send acc and qos either way),
 * else a form (form_parse). Returns AD_OK with a new object in *out (the
 * caller owns it), AD_EJSON with a message in err when the JSON is
 * malformed or not an object, or AD_ENOMEM; on error *out is NULL. */
ad_err form_params(const char *body, size_t len, json_t **out, char *err,
                   size_t errlen);

#endif
