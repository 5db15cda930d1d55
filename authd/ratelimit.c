/* See ratelimit.h. The failure table is set-associative: a key hashes
 * (with a per-process random seed, so nobody can aim keys at one set)
 * to a set of WAYS entries; a new key takes a free entry of its set or
 * evicts the least recently failing one that is not blocked, and only
 * when every entry of the set is blocked the oldest block. Memory is
 * fixed at open, however many keys an attacker invents. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "ratelimit.h"

#define WAYS 8
#define STRIPES 64
/* A block never doubles past this shift (2^20 s is weeks anyway). */
#define SHIFT_MAX 20

/* A leaky bucket per key: each failure adds 1000 to level_m, which
 * drains at burst per fail_window_s; at burst or more the key is
 * blocked for 1 s, doubling with each unit above burst. A steady
 * attacker so gets burst attempts per window in the long run. */
struct rl_entry {
    uint64_t hash;
    uint64_t last_ms;          /* when level_m was last drained */
    uint64_t blocked_until_ms; /* 0: not blocked */
    uint64_t level_m;          /* failures, in thousandths */
    int used;
    char key[RL_KEY_MAX];      /* truncated; hash covers the whole key */
};

struct rl {
    rl_config cfg;
    uint64_t seed;
    size_t nsets; /* a power of two */
    struct rl_entry *entries;
    pthread_mutex_t locks[STRIPES];
    atomic_uint running;
    atomic_uint_fast64_t counted[RL_WHAT__COUNT];
};

uint64_t rl_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

ad_err rl_open(const rl_config *cfg, rl **out)
{
    rl *r;
    size_t want, i;

    *out = NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        return AD_ENOMEM;
    r->cfg = *cfg;
    if (r->cfg.fail_window_s == 0)
        r->cfg.fail_window_s = 1;
    if (r->cfg.parallel == 0)
        r->cfg.parallel = 1;
    want = (cfg->table_size ? cfg->table_size : 1) / WAYS + 1;
    r->nsets = 1;
    while (r->nsets < want && r->nsets < ((size_t)1 << 24))
        r->nsets <<= 1;
    r->entries = calloc(r->nsets * WAYS, sizeof(*r->entries));
    if (r->entries == NULL) {
        free(r);
        return AD_ENOMEM;
    }
    if (RAND_bytes((unsigned char *)&r->seed, sizeof(r->seed)) != 1) {
        free(r->entries);
        free(r);
        return AD_EINTERNAL;
    }
    for (i = 0; i < STRIPES; i++)
        pthread_mutex_init(&r->locks[i], NULL);
    atomic_init(&r->running, 0);
    *out = r;
    return AD_OK;
}

void rl_close(rl *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&r->locks[i]);
    free(r->entries);
    free(r);
}

/* FNV-1a from a secret seed, then a full avalanche (murmur3's fmix64),
 * so set indexes cannot be predicted from the key. */
static uint64_t key_hash(const rl *r, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ r->seed;

    while (*key) {
        h ^= (unsigned char)*key++;
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Locks the key's stripe and returns its set; the caller unlocks. */
static struct rl_entry *set_locked(rl *r, uint64_t h, pthread_mutex_t **lock)
{
    size_t set = (size_t)(h & (r->nsets - 1));

    *lock = &r->locks[set % STRIPES];
    pthread_mutex_lock(*lock);
    return &r->entries[set * WAYS];
}

static struct rl_entry *find(struct rl_entry *set, uint64_t h,
                             const char *key)
{
    int i;

    for (i = 0; i < WAYS; i++)
        if (set[i].used && set[i].hash == h &&
            strncmp(set[i].key, key, RL_KEY_MAX - 1) == 0)
            return &set[i];
    return NULL;
}

static unsigned secs_until(uint64_t until_ms, uint64_t now_ms)
{
    if (until_ms <= now_ms)
        return 0;
    return (unsigned)((until_ms - now_ms + 999) / 1000);
}

unsigned rl_blocked(rl *r, const char *key, uint64_t now_ms)
{
    pthread_mutex_t *lock;
    uint64_t h = key_hash(r, key);
    struct rl_entry *e = find(set_locked(r, h, &lock), h, key);
    unsigned wait = e ? secs_until(e->blocked_until_ms, now_ms) : 0;

    pthread_mutex_unlock(lock);
    return wait;
}

/* The entry a new key takes: a free one, else the stalest unblocked
 * one, else the block that ends first. */
static struct rl_entry *victim(struct rl_entry *set, uint64_t now_ms)
{
    struct rl_entry *best = NULL;
    int i, best_blocked = 1;

    for (i = 0; i < WAYS; i++) {
        int blocked = set[i].blocked_until_ms > now_ms;

        if (!set[i].used)
            return &set[i];
        if (best == NULL || (best_blocked && !blocked) ||
            (best_blocked == blocked &&
             (blocked ? set[i].blocked_until_ms < best->blocked_until_ms
                      : set[i].last_ms < best->last_ms))) {
            best = &set[i];
            best_blocked = blocked;
        }
    }
    return best;
}

/* Drains e's bucket for the time since its last failure. */
static void drain(const rl *r, struct rl_entry *e, unsigned burst,
                  uint64_t now_ms)
{
    uint64_t gone;

    if (now_ms <= e->last_ms)
        return;
    /* burst units (1000 each) drain in fail_window_s seconds. */
    gone = (now_ms - e->last_ms) * burst / r->cfg.fail_window_s;
    e->level_m = gone >= e->level_m ? 0 : e->level_m - gone;
    e->last_ms = now_ms;
}

unsigned rl_fail(rl *r, const char *key, unsigned burst, uint64_t now_ms)
{
    pthread_mutex_t *lock;
    uint64_t h = key_hash(r, key), block_ms, max_ms, level;
    struct rl_entry *set = set_locked(r, h, &lock);
    struct rl_entry *e = find(set, h, key);
    unsigned wait = 0;
    size_t n;

    if (burst == 0)
        burst = 1;
    if (e == NULL) {
        e = victim(set, now_ms);
        memset(e, 0, sizeof(*e));
        e->used = 1;
        e->hash = h;
        e->last_ms = now_ms;
        n = strlen(key);
        if (n > RL_KEY_MAX - 1)
            n = RL_KEY_MAX - 1;
        memcpy(e->key, key, n);
    }
    drain(r, e, burst, now_ms);
    if (e->level_m < UINT64_MAX / 2)
        e->level_m += 1000;
    /* Rounded: a failure a few ms after another still counts whole. */
    level = (e->level_m + 500) / 1000;
    if (level >= burst) {
        block_ms = level - burst >= SHIFT_MAX ? (uint64_t)1000u << SHIFT_MAX
                                              : (uint64_t)1000u
                                                    << (level - burst);
        max_ms = (uint64_t)r->cfg.backoff_max_s * 1000u;
        if (block_ms > max_ms)
            block_ms = max_ms;
        if (now_ms + block_ms > e->blocked_until_ms)
            e->blocked_until_ms = now_ms + block_ms;
        wait = secs_until(e->blocked_until_ms, now_ms);
    }
    pthread_mutex_unlock(lock);
    return wait;
}

unsigned rl_device_burst(const rl *r)
{
    return r->cfg.device_burst;
}

unsigned rl_source_burst(const rl *r)
{
    return r->cfg.source_burst;
}

void rl_success(rl *r, const char *key)
{
    pthread_mutex_t *lock;
    uint64_t h = key_hash(r, key);
    struct rl_entry *e = find(set_locked(r, h, &lock), h, key);

    if (e)
        memset(e, 0, sizeof(*e));
    pthread_mutex_unlock(lock);
}

int rl_gate_enter(rl *r)
{
    unsigned n = atomic_fetch_add(&r->running, 1);

    if (n < r->cfg.parallel)
        return 1;
    atomic_fetch_sub(&r->running, 1);
    return 0;
}

void rl_gate_leave(rl *r)
{
    atomic_fetch_sub(&r->running, 1);
}

void rl_count(rl *r, rl_what what)
{
    if (r && what < RL_WHAT__COUNT)
        atomic_fetch_add_explicit(&r->counted[what], 1, memory_order_relaxed);
}

uint64_t rl_counted(rl *r, rl_what what)
{
    return r && what < RL_WHAT__COUNT ? atomic_load(&r->counted[what]) : 0;
}

const char *rl_what_name(rl_what what)
{
    switch (what) {
    case RL_WHAT_SECRET:
        return "device_secret";
    case RL_WHAT_BUSY:
        return "busy";
    case RL_WHAT_SOURCE:
        return "source";
    default:
        return "other";
    }
}
