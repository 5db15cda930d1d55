/* Option parsing for authctl. Deliberately not getopt_long: options may
 * come before or after the command words and each command has its own
 * table, and GNU argument permutation would blur where a command's
 * positional arguments are. */
#include "args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/codec.h"

static const args_opt *find_opt(const args_opt *t, const char *name,
                                size_t len)
{
    for (; t && t->name; t++)
        if (strlen(t->name) == len && strncmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

int args_parse(int argc, char **argv, const args_opt *cmd_opts,
               const args_opt *global_opts, args *out, char *err,
               size_t errlen)
{
    const char *cmd = out->cmd;
    int i, only_pos = 0;

    memset(out, 0, sizeof(*out));
    out->cmd = cmd;
    for (i = 0; i < argc; i++) {
        const char *s = argv[i], *name, *eq, *value = NULL;
        const args_opt *o;
        size_t len;

        if (only_pos || s[0] != '-' || strcmp(s, "-") == 0) {
            if (out->npos == ARGS_POS_MAX) {
                snprintf(err, errlen, "too many arguments");
                return -1;
            }
            out->pos[out->npos++] = s;
            continue;
        }
        if (strcmp(s, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(s, "-h") == 0) {
            name = "help";
            len = 4;
        } else if (s[1] != '-') {
            snprintf(err, errlen, "unknown option %s (options are --long)", s);
            return -1;
        } else {
            name = s + 2;
            eq = strchr(name, '=');
            len = eq ? (size_t)(eq - name) : strlen(name);
            if (eq)
                value = eq + 1;
        }
        o = find_opt(cmd_opts, name, len);
        if (o == NULL)
            o = find_opt(global_opts, name, len);
        if (o == NULL) {
            snprintf(err, errlen, "unknown option --%.*s", (int)len, name);
            return -1;
        }
        if (o->kind == ARG_FLAG && value != NULL) {
            snprintf(err, errlen, "--%s takes no value", o->name);
            return -1;
        }
        if (o->kind != ARG_FLAG && value == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", o->name);
                return -1;
            }
            value = argv[++i];
        }
        if (out->nv == ARGS_VALUES_MAX) {
            snprintf(err, errlen, "too many options");
            return -1;
        }
        out->v[out->nv].name = o->name;
        out->v[out->nv].value = value;
        out->nv++;
    }
    return 0;
}

const char *args_get(const args *a, const char *name)
{
    const char *v = NULL;
    size_t i;

    for (i = 0; i < a->nv; i++)
        if (strcmp(a->v[i].name, name) == 0)
            v = a->v[i].value;
    return v;
}

int args_has(const args *a, const char *name)
{
    return args_count(a, name) > 0;
}

size_t args_count(const args *a, const char *name)
{
    size_t i, n = 0;

    for (i = 0; i < a->nv; i++)
        if (strcmp(a->v[i].name, name) == 0)
            n++;
    return n;
}

const char *args_nth(const args *a, const char *name, size_t k)
{
    size_t i;

    for (i = 0; i < a->nv; i++)
        if (strcmp(a->v[i].name, name) == 0 && k-- == 0)
            return a->v[i].value;
    return NULL;
}

int args_parse_long(const char *s, long min, long max, long *out)
{
    int64_t v;

    if (codec_parse_i64(s, min, max, &v) != 0)
        return -1;
    *out = (long)v;
    return 0;
}

int args_long(const args *a, const char *name, long min, long max, long def,
              long *out, char *err, size_t errlen)
{
    const char *s = args_get(a, name);

    if (s == NULL) {
        *out = def;
        return 0;
    }
    if (args_parse_long(s, min, max, out) != 0) {
        snprintf(err, errlen, "--%s must be a whole number from %ld to %ld",
                 name, min, max);
        return -1;
    }
    return 0;
}
