/* What authctl prints: pretty JSON for --json, aligned tables for lists
 * and "field: value" lines for single records. Text from the server is
 * printed with control characters replaced, so a hostile name cannot
 * drive the terminal. */
#ifndef AUTHCTL_OUT_H
#define AUTHCTL_OUT_H

#include <stddef.h>

#include <jansson.h>

typedef struct out_col {
    const char *header; /* "STATUS" */
    const char *field;  /* "status" */
} out_col;

/* Copies s into buf (always NUL-terminated) with every control byte
 * replaced by '?'. Returns buf. */
char *out_sanitize(const char *s, char *buf, size_t len);

/* Formats a JSON value for a human into buf: strings as they are, null
 * or absent as "-", arrays joined by ",", objects as "k=v,...". Returns
 * buf; a value longer than len is cut with "...". */
char *out_value(const json_t *v, char *buf, size_t len);

/* Prints multi-line text (a PEM) on stdout, control bytes other than
 * newlines replaced, ending with a newline. */
void out_text(const char *s);

/* Prints j as indented JSON and a newline on stdout. */
void out_json(const json_t *j);

/* Prints items (an array of objects) as a table with a header row. */
void out_table(const json_t *items, const out_col *cols, size_t ncols);

/* Prints each member of obj as "name: value", names aligned, skipping
 * the NULL-terminated list skip (may be NULL). */
void out_fields(const json_t *obj, const char *const *skip);

#endif
