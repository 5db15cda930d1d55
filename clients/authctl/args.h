/* Command-line options for authctl: `--name VALUE`, `--name=VALUE`,
 * flags, repeatable options and positional arguments, checked against
 * the option tables of a command and of the global options. */
#ifndef AUTHCTL_ARGS_H
#define AUTHCTL_ARGS_H

#include <stddef.h>

enum {
    ARG_FLAG = 0,  /* --json */
    ARG_VALUE = 1, /* --name N (the last one wins) */
    ARG_MULTI = 2, /* --group G, repeatable */
    ARGS_POS_MAX = 8,
    ARGS_VALUES_MAX = 128
};

typedef struct args_opt {
    const char *name;  /* without the leading "--" */
    int kind;          /* ARG_FLAG, ARG_VALUE or ARG_MULTI */
    const char *meta;  /* the value's placeholder in help, e.g. "N" */
    const char *help;
} args_opt;

typedef struct args {
    const char *cmd;                  /* "device add", for messages */
    const char *pos[ARGS_POS_MAX];
    size_t npos;
    struct {
        const char *name;
        const char *value;            /* NULL for flags */
    } v[ARGS_VALUES_MAX];
    size_t nv;
} args;

/* Parses argv[0..argc) against two NULL-name-terminated option tables
 * (either may be NULL). "--" ends the options; "-" is a positional.
 * Returns 0, or -1 with a message in err; out is zeroed first and the
 * strings it holds point into argv. */
int args_parse(int argc, char **argv, const args_opt *cmd_opts,
               const args_opt *global_opts, args *out, char *err,
               size_t errlen);

/* The last value of an option, or NULL when absent. */
const char *args_get(const args *a, const char *name);
/* Whether an option (or flag) was given at all. */
int args_has(const args *a, const char *name);
/* How many times an option was given, and its i-th value. */
size_t args_count(const args *a, const char *name);
const char *args_nth(const args *a, const char *name, size_t i);

/* Parses a decimal integer in [min, max]: def when the option is absent.
 * Returns 0, or -1 (with a message in err) when it is not a number in
 * range; *out is unchanged on failure. */
int args_long(const args *a, const char *name, long min, long max, long def,
              long *out, char *err, size_t errlen);

/* Parses s as a whole decimal number in [min, max] (common/codec's
 * codec_parse_i64: digits with an optional '-', nothing else); 0 or -1
 * with *out unchanged. */
int args_parse_long(const char *s, long min, long max, long *out);

#endif
