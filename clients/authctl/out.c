/* Printing for authctl. Tables are sized from their content; a cell is
 * cut at CELL_MAX bytes so one long attribute cannot blow up a list. */
#include "out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CELL_MAX = 256, FIELD_MAX = 4096 };

char *out_sanitize(const char *s, char *buf, size_t len)
{
    size_t n = 0;

    if (len == 0)
        return buf;
    for (; s && *s && n + 1 < len; s++) {
        unsigned char c = (unsigned char)*s;
        buf[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    buf[n] = '\0';
    return buf;
}

/* Appends text to buf at *n, marking a cut with "...". */
static void put(char *buf, size_t len, size_t *n, const char *text)
{
    size_t t = strlen(text);

    if (*n + 1 >= len)
        return;
    if (*n + t + 1 > len) {
        t = len - *n - 1;
        memcpy(buf + *n, text, t);
        *n += t;
        buf[*n] = '\0';
        if (len > 4)
            memcpy(buf + len - 4, "...", 4);
        *n = len - 1;
        return;
    }
    memcpy(buf + *n, text, t + 1);
    *n += t;
}

static void value_into(const json_t *v, char *buf, size_t len, size_t *n)
{
    char num[64];

    if (v == NULL || json_is_null(v)) {
        put(buf, len, n, "-");
    } else if (json_is_string(v)) {
        put(buf, len, n, json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        put(buf, len, n, num);
    } else if (json_is_real(v)) {
        snprintf(num, sizeof(num), "%g", json_real_value(v));
        put(buf, len, n, num);
    } else if (json_is_boolean(v)) {
        put(buf, len, n, json_is_true(v) ? "true" : "false");
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        if (json_array_size(v) == 0)
            put(buf, len, n, "-");
        json_array_foreach(v, i, e) {
            if (i > 0)
                put(buf, len, n, ",");
            value_into(e, buf, len, n);
        }
    } else if (json_is_object(v)) {
        const char *k;
        const json_t *e;
        int first = 1;
        if (json_object_size(v) == 0)
            put(buf, len, n, "-");
        json_object_foreach((json_t *)v, k, e) {
            if (!first)
                put(buf, len, n, ",");
            first = 0;
            put(buf, len, n, k);
            put(buf, len, n, "=");
            value_into(e, buf, len, n);
        }
    }
}

char *out_value(const json_t *v, char *buf, size_t len)
{
    char *raw;
    size_t n = 0;

    if (len == 0)
        return buf;
    if ((raw = malloc(len)) == NULL) {
        buf[0] = '\0';
        return buf;
    }
    raw[0] = '\0';
    value_into(v, raw, len, &n);
    out_sanitize(raw, buf, len);
    free(raw);
    return buf;
}

void out_text(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++, n++) {
        unsigned char c = (unsigned char)*s;
        putchar((c < 0x20 && c != '\n') || c == 0x7f ? '?' : c);
    }
    if (n == 0 || s[-1] != '\n')
        putchar('\n');
}

void out_json(const json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fputc('\n', stdout);
}

void out_table(const json_t *items, const out_col *cols, size_t ncols)
{
    size_t nrows = json_array_size(items), r, c, w;
    size_t *width = calloc(ncols ? ncols : 1, sizeof(*width));
    char cell[CELL_MAX];

    if (width == NULL)
        return;
    for (c = 0; c < ncols; c++)
        width[c] = strlen(cols[c].header);
    for (r = 0; r < nrows; r++)
        for (c = 0; c < ncols; c++) {
            out_value(json_object_get(json_array_get(items, r), cols[c].field),
                      cell, sizeof(cell));
            if ((w = strlen(cell)) > width[c])
                width[c] = w;
        }
    for (c = 0; c < ncols; c++)
        printf("%-*s%s", c + 1 < ncols ? (int)width[c] : 0, cols[c].header,
               c + 1 < ncols ? "  " : "\n");
    for (r = 0; r < nrows; r++)
        for (c = 0; c < ncols; c++) {
            out_value(json_object_get(json_array_get(items, r), cols[c].field),
                      cell, sizeof(cell));
            printf("%-*s%s", c + 1 < ncols ? (int)width[c] : 0, cell,
                   c + 1 < ncols ? "  " : "\n");
        }
    free(width);
}

static int skipped(const char *k, const char *const *skip)
{
    for (; skip && *skip; skip++)
        if (strcmp(*skip, k) == 0)
            return 1;
    return 0;
}

void out_fields(const json_t *obj, const char *const *skip)
{
    const char *k;
    const json_t *v;
    size_t w = 0, n;
    char *text = malloc(FIELD_MAX), name[CELL_MAX];

    if (text == NULL)
        return;
    json_object_foreach((json_t *)obj, k, v)
        if (!skipped(k, skip) && strlen(k) > w)
            w = strlen(k);
    if (w > CELL_MAX - 2)
        w = CELL_MAX - 2;
    json_object_foreach((json_t *)obj, k, v) {
        if (skipped(k, skip))
            continue;
        /* Leaves room for the colon. */
        out_sanitize(k, name, sizeof(name) - 1);
        n = strlen(name);
        name[n] = ':';
        name[n + 1] = '\0';
        printf("%-*s %s\n", (int)w + 1, name,
               out_value(v, text, FIELD_MAX));
    }
    free(text);
}
