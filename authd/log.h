/* Logging: one line per event on stderr as key=value pairs, written with
 * a single write(2) so concurrent lines never interleave. Never pass a
 * secret (keys, tokens, passwords) to these functions. */
#ifndef AUTHD_LOG_H
#define AUTHD_LOG_H

#include <stddef.h>

/* Logs "ts=<rfc3339> level=<level> " followed by the formatted pairs. */
void log_line(const char *level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Copies an untrusted value into buf so it is one safe token in a
 * key=value line: bytes outside printable ASCII, spaces, quotes and '='
 * become '_', and it is cut at bufsize-1 bytes. Returns buf. */
const char *log_safe(const char *value, char *buf, size_t bufsize);

#endif
