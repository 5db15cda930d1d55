/* Verifying argon2id device-secret hashes without letting the memory
 * they need pile up: argon2's working memory (19 MiB at our cost) is
 * mapped for each run and unmapped right after, instead of coming from
 * malloc, whose per-thread arenas keep freed blocks of that size. */
#ifndef AUTHD_SECRET_HASH_H
#define AUTHD_SECRET_HASH_H

#include <stddef.h>

/* Memory cost refused above this (KiB): a stored hash asking for more
 * is treated as malformed rather than allowed to map gigabytes. */
enum { SECRET_HASH_M_MAX_KIB = 262144 };

/* Checks secret against an encoded argon2id hash
 * ("$argon2id$v=19$m=..,t=..,p=..$salt$hash", base64 without padding).
 * Returns 1 if it matches, 0 if not, -1 if the hash is malformed or
 * memory ran out. The digest comparison is constant-time. */
int secret_hash_verify(const char *encoded, const char *secret,
                       size_t secret_len);

#endif
