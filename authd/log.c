/* See log.h. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void log_line(const char *level, const char *fmt, ...)
{
    char line[2048], when[32];
    va_list ap;
    int n, m;

    util_time_rfc3339(time(NULL), when, sizeof(when));
    n = snprintf(line, sizeof(line), "ts=%s level=%s ", when, level);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2; /* truncated: still one line */
    line[n++] = '\n';
    /* One write per line: stderr lines from many threads stay whole. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}

const char *log_safe(const char *value, char *buf, size_t bufsize)
{
    size_t i;

    if (bufsize == 0)
        return "";
    if (value == NULL) {
        util_strlcpy(buf, "-", bufsize);
        return buf;
    }
    for (i = 0; value[i] && i + 1 < bufsize; i++) {
        unsigned char c = (unsigned char)value[i];
        buf[i] = (c > 0x20 && c < 0x7f && c != '"' && c != '=') ? (char)c
                                                                  : '_';
    }
    buf[i] = '\0';
    return buf;
}
