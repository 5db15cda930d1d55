/* Small helpers the daemon's modules share: time formats, random tokens,
 * hashes, constant-time comparison, id rules, and careful file writes. */
#ifndef AUTHD_UTIL_H
#define AUTHD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../common/buf.h"
#include "../common/err.h"

/* Formats t as RFC 3339 UTC ("2026-11-22T10:00:00Z"). */
void util_time_rfc3339(time_t t, char *out, size_t outlen);
/* Parses RFC 3339 UTC ("...Z") into *t. Returns 0 on success. */
int util_parse_rfc3339(const char *s, time_t *t);

/* Writes len random bytes encoded as unpadded base64url after prefix
 * into out. Returns AD_OK, AD_EINTERNAL if out is too small or the RNG
 * fails. */
ad_err util_random_token(const char *prefix, size_t len, char *out,
                         size_t outlen);
/* Random lowercase hex of nbytes bytes into out (2*nbytes+1). */
ad_err util_random_hex(size_t nbytes, char *out, size_t outlen);

/* A certificate serial as authd writes it: lowercase hex of the
 * minimal positive big-endian bytes (even length). Accepts any case,
 * ':' separators and leading zeros (brokers print serials as numbers).
 * Returns 1, or 0 if in is not a hex serial that fits. */
int util_serial_normalize(const char *in, char *out, size_t outlen);

/* Fills buf with len bytes from the CSPRNG. 0 on success. */
int util_random_bytes(void *buf, size_t len);

/* Lowercase hex SHA-256 of data into out[65]. */
void util_sha256_hex(const void *data, size_t len, char out[65]);

/* Constant-time equality of two NUL-terminated strings (the time depends
 * only on the length of b, the expected value). */
int util_secret_equal(const char *a, const char *b);

/* Device ids: 1..128 bytes of [A-Za-z0-9._:-]. */
int util_device_id_valid(const char *id);
/* Names of groups, policies, API keys: 1..128 bytes of [A-Za-z0-9._:-]. */
int util_name_valid(const char *name);
/* Glob with '*' (any run) and '?' (one byte); no escapes. */
int util_glob_match(const char *pattern, const char *s);

/* Bounded copy that always terminates; returns 0 if src did not fit. */
int util_strlcpy(char *dst, const char *src, size_t size);

/* Writes data to path atomically (temp file, fsync, rename, fsync of the
 * directory) with the given mode. Returns 0 or -1 with errno set. */
int util_write_file(const char *path, const void *data, size_t len,
                    unsigned mode);
/* Reads a whole file (at most max bytes) into a NUL-terminated buffer
 * the caller frees. Returns NULL with errno set on failure. */
char *util_read_file(const char *path, size_t max, size_t *len);

/* Monotonic clock in nanoseconds. */
uint64_t util_now_ns(void);



/* JSON writing for the hot paths, where building a jansson tree only to
 * print it costs more than the work around it; the buffer bounds it and
 * any failure sticks (see common/buf.h). Appends s as a JSON string
 * (quotes, escapes); NULL appends null. */
void util_json_str(buf_t *b, const char *s);
/* Appends "key": value-as-string (or null), with a leading comma if
 * something other than '{' precedes it. */
void util_json_kv(buf_t *b, const char *key, const char *value);
#endif
