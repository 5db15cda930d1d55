/* See route_match.h. Literal patterns are decided with one strcmp, the
 * rest with a copy of the path split in place. */
#include <string.h>

#include "route_match.h"

int route_match(const char *pattern, const char *path, char *buf,
                size_t buflen, const char **params)
{
    size_t np = 0, plen, lit = strcspn(pattern, "{");
    const char *p = pattern;
    char *s;

    /* Most routes are literal, and every route's literal prefix must
     * match: decide those without copying the path. */
    if (pattern[lit] == '\0')
        return strcmp(pattern, path) == 0;
    if (strncmp(pattern, path, lit) != 0)
        return 0;
    plen = strlen(path);
    if (plen >= buflen)
        return 0;
    memcpy(buf, path, plen + 1);
    s = buf;
    while (*p && *s) {
        if (p[0] == '{' && p[1] == '*' && p[2] == '}' && p[3] == '\0') {
            /* {*}: the rest of the path, '/' included (OCSP GET). */
            if (np >= ROUTE_PARAMS_MAX)
                return 0;
            params[np++] = s;
            return 1;
        }
        if (p[0] == '{' && p[1] == '}') {
            char *end = strchr(s, '/');
            if (end == s || np >= ROUTE_PARAMS_MAX)
                return 0;
            params[np++] = s;
            if (end) {
                *end = '\0';
                s = end + 1;
                p += 2;
                if (*p != '/')
                    return 0;
                p++;
            } else {
                s += strlen(s);
                p += 2;
            }
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}
