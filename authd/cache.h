/* A bounded in-memory cache of fixed-size records by string key, for the
 * check path's caches (devices, certificates, compiled policy sets).
 *
 * Bounded by bytes, not by entries: each entry costs its key, its
 * record, a small header and whatever the record owns (the cost its
 * inserter declares). When a shard is over its share of the budget the
 * CLOCK hand evicts entries not used since it last passed them, one at a
 * time: a hot entry survives, and no shard is ever emptied whole.
 *
 * The invalidation rule lives here, once, for every cache built on it: a
 * reader notes the generation of its key's shard (cache_note) before it
 * reads the store, and cache_put inserts what it read only if no
 * invalidation (cache_forget) happened in that shard since. An entry can
 * therefore never outlive the invalidation of the data it was built
 * from. Keys are spread over shards by a seeded hash, each with its own
 * lock, so threads rarely meet. */
#ifndef AUTHD_CACHE_H
#define AUTHD_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

typedef struct cache cache;

/* Releases what a record owns (not the record itself); may be NULL. */
typedef void (*cache_drop_fn)(void *record);

/* A cache of records of record_size bytes within budget bytes. */
ad_err cache_open(size_t budget, size_t record_size, cache_drop_fn drop,
                  cache **out);
/* Drops every record; NULL-safe. */
void cache_close(cache *c);

/* Runs fn(record, arg) under the lock of key's shard if key is cached,
 * and marks it used; fn may change the record in place but must not
 * call back into this cache. Returns fn's result, or CACHE_MISS. */
enum { CACHE_MISS = -1000 };
int cache_use(cache *c, const char *key, int (*fn)(void *record, void *arg),
              void *arg);

/* As cache_use, only if no invalidation happened in key's shard since
 * noted: for writing back something learnt from a store read begun
 * after cache_note (a verified secret). CACHE_MISS otherwise. */
int cache_use_since(cache *c, const char *key, uint64_t noted,
                    int (*fn)(void *record, void *arg), void *arg);

/* The generation of key's shard, to note before reading the store. */
uint64_t cache_note(cache *c, const char *key);

/* Inserts a copy of record under key if nothing invalidated key's shard
 * since noted, replacing the entry already there if any (both were read
 * since the last invalidation). extra is what the record owns
 * beyond record_size, in bytes, for the budget. Returns 1 if inserted
 * (the cache now owns what the record owns), 0 if not (the caller still
 * does, and must drop it). */
int cache_put(cache *c, const char *key, const void *record, size_t extra,
              uint64_t noted);

/* Whether an entry that owns extra bytes could ever be inserted: 0 if
 * it alone exceeds a shard's share of the budget. */
int cache_fits(cache *c, size_t extra);

/* Removes key and bumps its shard's generation, so that no load begun
 * before this call can insert. Call after the write that makes the
 * entry wrong has committed and before that write is acknowledged. */
void cache_forget(cache *c, const char *key);
/* As cache_forget for every key. */
void cache_forget_all(cache *c);

typedef struct {
    uint64_t entries, bytes, budget;
    uint64_t hits, misses, evictions;
} cache_stats;
void cache_get_stats(cache *c, cache_stats *out);

#endif
