/* See profile.h. The file is small and written only by `authctl login`,
 * so it is read whole and rewritten whole. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/buf.h"
#include "pki.h"
#include "profile.h"

enum { CONFIG_FILE_MAX = 64 * 1024 };

int profile_name_valid(const char *name)
{
    size_t n = 0;

    for (; name[n]; n++) {
        char ch = name[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
              ch == '-'))
            return 0;
    }
    return n > 0 && n <= PROFILE_NAME_MAX && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

int profile_path(char *out, size_t len, const char *file)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    int n;

    /* The XDG base directory spec: a relative value is to be ignored. */
    if (xdg && xdg[0] == '/')
        n = snprintf(out, len, "%s/authctl%s%s", xdg, file ? "/" : "",
                     file ? file : "");
    else if (home && home[0])
        n = snprintf(out, len, "%s/.config/authctl%s%s", home,
                     file ? "/" : "", file ? file : "");
    else
        return -1;
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int profile_mkdir(char *err, size_t errlen)
{
    char dir[PROFILE_STR_MAX];
    char *slash;

    if (profile_path(dir, sizeof(dir), NULL) != 0) {
        snprintf(err, errlen, "set HOME or XDG_CONFIG_HOME");
        return -1;
    }
    /* ~/.config (or XDG_CONFIG_HOME) itself may not exist yet. */
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (pki_mkdir(dir, 0700, err, errlen) != 0)
            return -1;
        *slash = '/';
    }
    return pki_mkdir(dir, 0700, err, errlen);
}

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* Whether line (trimmed) is the header "[name]"; *is_header: any. */
static int header_of(const char *line, const char *name, int *is_header)
{
    size_t n = strlen(line), k = strlen(name);

    *is_header = n >= 2 && line[0] == '[' && line[n - 1] == ']';
    return *is_header && n == k + 2 && strncmp(line + 1, name, k) == 0;
}

int profile_load(const char *name, profile *out, char *err, size_t errlen)
{
    char path[PROFILE_STR_MAX], *text = NULL, *line, *next;
    size_t len, lineno = 0;
    int in = 0, found = 0, rc = -1;

    memset(out, 0, sizeof(*out));
    if (profile_path(path, sizeof(path), "config") != 0 ||
        !pki_exists(path))
        return 0;
    if (pki_read_file(path, CONFIG_FILE_MAX, &text, &len, err, errlen) != 0)
        return -1;
    for (line = text; line; line = next) {
        char *eq, *s, *k, *v;
        int is_header;

        lineno++;
        if ((next = strchr(line, '\n')) != NULL)
            *next++ = '\0';
        s = trim(line);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (header_of(s, name, &is_header) || is_header) {
            in = !!header_of(s, name, &is_header);
            found |= in;
            continue;
        }
        if ((eq = strchr(s, '=')) == NULL) {
            snprintf(err, errlen, "%s:%zu: expected key = value", path,
                     lineno);
            goto out;
        }
        if (!in)
            continue;
        *eq = '\0';
        k = trim(s);
        v = trim(eq + 1);
        if (strlen(v) >= PROFILE_STR_MAX) {
            snprintf(err, errlen, "%s:%zu: value too long", path, lineno);
            goto out;
        }
        if (strcmp(k, "url") == 0)
            memcpy(out->url, v, strlen(v) + 1);
        else if (strcmp(k, "cacert") == 0)
            memcpy(out->cacert, v, strlen(v) + 1);
        else if (strcmp(k, "key_file") == 0)
            memcpy(out->key_file, v, strlen(v) + 1);
        else {
            snprintf(err, errlen, "%s:%zu: unknown key %s (url, cacert, "
                                  "key_file)",
                     path, lineno, k);
            goto out;
        }
    }
    rc = found;
out:
    free(text);
    return rc;
}

int profile_save(const char *name, const profile *p, char *err,
                 size_t errlen)
{
    char path[PROFILE_STR_MAX], dir[PROFILE_STR_MAX], *text = NULL;
    char *line, *next;
    size_t len = 0;
    buf_t b;
    int in = 0, rc = -1;

    buf_init(&b, CONFIG_FILE_MAX);
    if (profile_path(dir, sizeof(dir), NULL) != 0 ||
        profile_path(path, sizeof(path), "config") != 0) {
        snprintf(err, errlen, "set HOME or XDG_CONFIG_HOME");
        goto out;
    }
    if (profile_mkdir(err, errlen) != 0)
        goto out;
    if (pki_exists(path) &&
        pki_read_file(path, CONFIG_FILE_MAX, &text, &len, err, errlen) != 0)
        goto out;
    /* Every other profile's lines are kept as they were. */
    for (line = text; line && *line; line = next) {
        char copy[PROFILE_STR_MAX * 2];
        int is_header;

        if ((next = strchr(line, '\n')) != NULL)
            *next++ = '\0';
        snprintf(copy, sizeof(copy), "%s", line);
        if (header_of(trim(copy), name, &is_header) || is_header)
            in = header_of(trim(copy), name, &is_header);
        if (!in && buf_printf(&b, "%s\n", line) != 0)
            goto toolong;
    }
    if (buf_printf(&b, "[%s]\n", name) != 0 ||
        (p->url[0] && buf_printf(&b, "url = %s\n", p->url) != 0) ||
        (p->cacert[0] && buf_printf(&b, "cacert = %s\n", p->cacert) != 0) ||
        (p->key_file[0] &&
         buf_printf(&b, "key_file = %s\n", p->key_file) != 0))
        goto toolong;
    rc = pki_write_file(path, b.len ? (const void *)b.p : "", b.len, 0600,
                        err, errlen);
    goto out;
toolong:
    snprintf(err, errlen, "%s would grow past %d bytes", path,
             CONFIG_FILE_MAX);
out:
    free(text);
    buf_free(&b);
    return rc;
}
