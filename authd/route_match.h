/* The route table's path patterns: literal text, "{}" for one non-empty
 * path segment, and a final "{*}" for the rest of the path. Kept apart
 * from http.c so that the matcher can be unit-tested and fuzzed against
 * the real table. */
#ifndef AUTHD_ROUTE_MATCH_H
#define AUTHD_ROUTE_MATCH_H

#include <stddef.h>

/* The most captures one pattern may hold. */
enum { ROUTE_PARAMS_MAX = 3 };

/* Matches path against pattern. Returns 1 on a match, with the captures
 * in params[0..] in pattern order, each pointing into buf (a copy of
 * path, split at the '/' after each "{}" capture); returns 0 otherwise.
 * A "{}" capture is non-empty and holds no '/'; a "{*}" capture is
 * non-empty and may. Paths of buflen bytes or more never match a
 * pattern with captures. params must hold ROUTE_PARAMS_MAX pointers; on
 * no match buf and params may have been written. */
int route_match(const char *pattern, const char *path, char *buf,
                size_t buflen, const char **params);

#endif
