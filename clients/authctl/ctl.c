/* Helpers shared by authctl's command modules: messages with the right
 * exit status, request paths, and printing a record or a whole list the
 * same way in every command. */
#include "ctl.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int ctl_usage(const args *a, const char *fmt, ...)
{
    va_list ap;

    fputs("authctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'authctl %s --help'\n",
            a && a->cmd ? a->cmd : "");
    return CTL_USAGE;
}

int ctl_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("authctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CTL_FAILED;
}

int ctl_path(char *buf, size_t len, const char *prefix, const char *segment,
             const char *suffix)
{
    size_t n;

    if ((size_t)snprintf(buf, len, "%s", prefix) >= len ||
        api_path_add(buf, len, segment) != 0)
        return -1;
    n = strlen(buf);
    if (suffix && (size_t)snprintf(buf + n, len - n, "%s", suffix) >= len - n)
        return -1;
    return 0;
}

void ctl_print(const ctl *c, const json_t *j, const char *const *skip)
{
    if (j == NULL)
        return;
    if (c->json)
        out_json(j);
    else
        out_fields(j, skip);
}

int ctl_list(ctl *c, const args *a, const char *path, const char *after,
             const out_col *cols, size_t ncols)
{
    json_t *all = NULL;
    char err[128];
    long limit;
    int rc;

    if (args_long(a, "limit", 1, 1000000000L, 0, &limit, err,
                  sizeof(err)) != 0)
        return ctl_usage(a, "%s", err);
    rc = api_list(c->api, path, after, c->page_size, limit, &all);
    if (rc != CTL_OK)
        return rc;
    if (c->json)
        out_json(all);
    else
        out_table(json_object_get(all, "items"), cols, ncols);
    json_decref(all);
    return CTL_OK;
}

/* How many names of one kind are looked up at most (the server allows
 * 64 of each). */
enum { MISSING_CHECK_MAX = 64 };

static int missing_of(ctl *c, const json_t *names, const char *prefix,
                      const char *kind)
{
    char path[API_PATH_MAX];
    json_t *v;
    api_resp r;
    size_t i;
    int n = 0, rc;

    json_array_foreach(names, i, v) {
        if (i >= MISSING_CHECK_MAX || !json_is_string(v))
            break;
        if (ctl_path(path, sizeof(path), prefix, json_string_value(v),
                     NULL) != 0)
            continue;
        rc = api_raw(c->api, "GET", path, NULL, NULL, 0, &r);
        if (rc != CTL_OK)
            return -1;
        if (r.status == 404) {
            printf("%s %s (missing)\n", kind, json_string_value(v));
            n++;
        }
        api_resp_clear(&r);
    }
    return n;
}

int ctl_missing_names(ctl *c, const json_t *device)
{
    int p = missing_of(c, json_object_get(device, "policies"),
                       "/v1/policies/", "policy");
    int g = p < 0 ? -1
                  : missing_of(c, json_object_get(device, "groups"),
                               "/v1/groups/", "group");

    return p < 0 || g < 0 ? -1 : p + g;
}

int ctl_confirm(const args *a, const char *question, const char *subject)
{
    char line[32];

    if (args_has(a, "yes") || !isatty(STDIN_FILENO))
        return 1;
    fprintf(stderr, "%s %s? [y/N] ", question, subject);
    fflush(stderr);
    if (fgets(line, sizeof(line), stdin) == NULL)
        return 0;
    line[strcspn(line, "\r\n")] = '\0';
    return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0;
}
