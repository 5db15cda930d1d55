/* See cache.h. Each shard is a chained hash table whose entries also sit
 * on a circular list that the CLOCK hand walks: a use sets the entry's
 * used bit, the hand clears it in passing and evicts the first entry it
 * finds clear. That approximates LRU while a hit costs one store of a
 * byte under a lock already held. */
#include <pthread.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "cache.h"

enum {
    SHARDS = 64,
    BUCKETS_MIN = 16,
    BUCKETS_MAX = 1 << 20,
    /* What malloc keeps beside each block, for the budget. */
    MALLOC_OVERHEAD = 16,
    /* A guess at a key's length, for sizing the tables only. */
    KEY_GUESS = 24
};

typedef struct entry entry;
struct entry {
    entry *chain;             /* next in the bucket */
    entry *prev, *next;       /* the CLOCK ring */
    size_t cost;              /* bytes charged to the budget */
    uint64_t hash;
    uint8_t used;
    alignas(max_align_t) unsigned char data[]; /* record, then key + NUL */
};

typedef struct {
    alignas(64) pthread_mutex_t lock;
    uint64_t gen;
    entry **buckets;
    entry *hand;              /* NULL when the ring is empty */
    size_t bytes, entries;
    uint64_t hits, misses, evictions;
} shard;

struct cache {
    size_t record_size, record_span, shard_budget, nbuckets;
    cache_drop_fn drop;
    uint64_t seed;
    shard shards[SHARDS];
};

/* FNV-1a started from a random seed: the same key lands in different
 * buckets in every process, so ids cannot be chosen to share a chain
 * without knowing the seed. */
static uint64_t key_hash(const cache *c, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ c->seed;

    while (*key) {
        h ^= (unsigned char)*key++;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static shard *shard_of(cache *c, uint64_t h)
{
    return &c->shards[h % SHARDS];
}

static size_t bucket_of(const cache *c, uint64_t h)
{
    return (size_t)(h / SHARDS) & (c->nbuckets - 1);
}

static const char *entry_key(const cache *c, const entry *e)
{
    return (const char *)e->data + c->record_span;
}

ad_err cache_open(size_t budget, size_t record_size, cache_drop_fn drop,
                  cache **out)
{
    cache *c;
    size_t per, expected, nb = BUCKETS_MIN;
    int i;

    *out = NULL;
    /* Shards are cache-line aligned (so two locks never share a line):
     * the block must be too. */
    c = aligned_alloc(alignof(cache), (sizeof(*c) + alignof(cache) - 1) /
                                          alignof(cache) * alignof(cache));
    if (c == NULL)
        return AD_ENOMEM;
    memset(c, 0, sizeof(*c));
    c->record_size = record_size;
    c->record_span = (record_size + alignof(max_align_t) - 1) /
                     alignof(max_align_t) * alignof(max_align_t);
    c->drop = drop;
    c->shard_budget = budget / SHARDS;
    per = sizeof(entry) + c->record_span + KEY_GUESS + MALLOC_OVERHEAD;
    expected = c->shard_budget / per;
    while (nb < expected && nb < BUCKETS_MAX)
        nb *= 2;
    c->nbuckets = nb;
    if (RAND_bytes((unsigned char *)&c->seed, sizeof(c->seed)) != 1) {
        free(c);
        return AD_EINTERNAL;
    }
    for (i = 0; i < SHARDS; i++) {
        c->shards[i].buckets = calloc(nb, sizeof(entry *));
        if (c->shards[i].buckets == NULL) {
            while (i-- > 0)
                free(c->shards[i].buckets);
            free(c);
            return AD_ENOMEM;
        }
        pthread_mutex_init(&c->shards[i].lock, NULL);
    }
    *out = c;
    return AD_OK;
}

static void entry_free(cache *c, entry *e)
{
    if (c->drop)
        c->drop(e->data);
    free(e);
}

/* Takes e out of its bucket and the ring (under the shard lock). */
static void unlink_entry(cache *c, shard *sh, entry *e)
{
    entry **pp = &sh->buckets[bucket_of(c, e->hash)];

    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->next == e) {
        sh->hand = NULL;
    } else {
        e->prev->next = e->next;
        e->next->prev = e->prev;
        if (sh->hand == e)
            sh->hand = e->next;
    }
    sh->bytes -= e->cost;
    sh->entries--;
}

static void shard_clear(cache *c, shard *sh)
{
    while (sh->hand != NULL) {
        entry *e = sh->hand;

        unlink_entry(c, sh, e);
        entry_free(c, e);
    }
}

void cache_close(cache *c)
{
    int i;

    if (c == NULL)
        return;
    for (i = 0; i < SHARDS; i++) {
        shard_clear(c, &c->shards[i]);
        free(c->shards[i].buckets);
        pthread_mutex_destroy(&c->shards[i].lock);
    }
    free(c);
}

static entry *find(cache *c, shard *sh, uint64_t h, const char *key)
{
    entry *e;

    for (e = sh->buckets[bucket_of(c, h)]; e != NULL; e = e->chain)
        if (e->hash == h && strcmp(entry_key(c, e), key) == 0)
            return e;
    return NULL;
}

static int use(cache *c, const char *key, int check_gen, uint64_t noted,
               int (*fn)(void *record, void *arg), void *arg)
{
    uint64_t h = key_hash(c, key);
    shard *sh = shard_of(c, h);
    entry *e;
    int r = CACHE_MISS;

    pthread_mutex_lock(&sh->lock);
    e = check_gen && sh->gen != noted ? NULL : find(c, sh, h, key);
    if (e != NULL) {
        e->used = 1;
        sh->hits++;
        r = fn(e->data, arg);
    } else {
        sh->misses++;
    }
    pthread_mutex_unlock(&sh->lock);
    return r;
}

int cache_use(cache *c, const char *key, int (*fn)(void *record, void *arg),
              void *arg)
{
    return use(c, key, 0, 0, fn, arg);
}

int cache_use_since(cache *c, const char *key, uint64_t noted,
                    int (*fn)(void *record, void *arg), void *arg)
{
    return use(c, key, 1, noted, fn, arg);
}

uint64_t cache_note(cache *c, const char *key)
{
    shard *sh = shard_of(c, key_hash(c, key));
    uint64_t gen;

    pthread_mutex_lock(&sh->lock);
    gen = sh->gen;
    pthread_mutex_unlock(&sh->lock);
    return gen;
}

/* Makes room for cost more bytes: the CLOCK hand gives each entry used
 * since its last pass a second chance and evicts the first that is not. */
static void make_room(cache *c, shard *sh, size_t cost)
{
    while (sh->hand != NULL && sh->bytes + cost > c->shard_budget) {
        entry *e = sh->hand;

        if (e->used) {
            e->used = 0;
            sh->hand = e->next;
            continue;
        }
        unlink_entry(c, sh, e);
        entry_free(c, e);
        sh->evictions++;
    }
}

int cache_put(cache *c, const char *key, const void *record, size_t extra,
              uint64_t noted)
{
    uint64_t h = key_hash(c, key);
    shard *sh = shard_of(c, h);
    size_t klen = strlen(key);
    size_t size = sizeof(entry) + c->record_span + klen + 1;
    entry *e, *old;

    e = malloc(size);
    if (e == NULL)
        return 0;
    memcpy(e->data, record, c->record_size);
    memcpy(e->data + c->record_span, key, klen + 1);
    e->hash = h;
    e->used = 0;
    e->cost = size + extra + MALLOC_OVERHEAD;
    pthread_mutex_lock(&sh->lock);
    if (sh->gen != noted || e->cost > c->shard_budget) {
        pthread_mutex_unlock(&sh->lock);
        free(e); /* the record's belongings stay with the caller */
        return 0;
    }
    /* Both were read since the last invalidation: the newer read wins. */
    if ((old = find(c, sh, h, key)) != NULL) {
        unlink_entry(c, sh, old);
        entry_free(c, old);
    }
    make_room(c, sh, e->cost);
    e->chain = sh->buckets[bucket_of(c, h)];
    sh->buckets[bucket_of(c, h)] = e;
    /* New entries join just behind the hand: the last it will reach. */
    if (sh->hand == NULL) {
        e->prev = e->next = e;
        sh->hand = e;
    } else {
        e->next = sh->hand;
        e->prev = sh->hand->prev;
        e->prev->next = e;
        sh->hand->prev = e;
    }
    sh->bytes += e->cost;
    sh->entries++;
    pthread_mutex_unlock(&sh->lock);
    return 1;
}

int cache_fits(cache *c, size_t extra)
{
    /* As cache_put counts it, with a key of the longest kind we use. */
    return sizeof(entry) + c->record_span + 512 + extra + MALLOC_OVERHEAD <=
           c->shard_budget;
}

void cache_forget(cache *c, const char *key)
{
    uint64_t h = key_hash(c, key);
    shard *sh = shard_of(c, h);
    entry *e;

    pthread_mutex_lock(&sh->lock);
    sh->gen++;
    if ((e = find(c, sh, h, key)) != NULL) {
        unlink_entry(c, sh, e);
        entry_free(c, e);
    }
    pthread_mutex_unlock(&sh->lock);
}

void cache_forget_all(cache *c)
{
    int i;

    for (i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&c->shards[i].lock);
        c->shards[i].gen++;
        shard_clear(c, &c->shards[i]);
        pthread_mutex_unlock(&c->shards[i].lock);
    }
}

void cache_get_stats(cache *c, cache_stats *out)
{
    int i;

    memset(out, 0, sizeof(*out));
    out->budget = (uint64_t)c->shard_budget * SHARDS;
    for (i = 0; i < SHARDS; i++) {
        shard *sh = &c->shards[i];

        pthread_mutex_lock(&sh->lock);
        out->entries += sh->entries;
        out->bytes += sh->bytes;
        out->hits += sh->hits;
        out->misses += sh->misses;
        out->evictions += sh->evictions;
        pthread_mutex_unlock(&sh->lock);
    }
}
