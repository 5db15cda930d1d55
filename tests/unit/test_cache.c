/* Unit tests of the bounded cache under the check path (authd/cache.c):
 * it stays within its byte budget by evicting one cold entry at a time,
 * a used entry gets a second chance, and nothing read before an
 * invalidation is ever inserted after it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../authd/cache.h"
#include "tap.h"

typedef struct {
    int value;
    int *drops; /* counts releases of what the record owns */
} rec;

static void drop_rec(void *r)
{
    rec *x = r;

    if (x->drops)
        (*x->drops)++;
}

static int read_value(void *r, void *arg)
{
    *(int *)arg = ((rec *)r)->value;
    return 1;
}

static int touch(void *r, void *arg)
{
    (void)r;
    (void)arg;
    return 1;
}

static int put_value(cache *c, const char *key, int value, int *drops)
{
    rec r = {value, drops};

    return cache_put(c, key, &r, 0, cache_note(c, key));
}

static void test_a_put_entry_is_found_and_an_absent_one_misses(void)
{
    cache *c = NULL;
    int v = 0;

    ok(cache_open(1 << 20, sizeof(rec), drop_rec, &c) == AD_OK, "a cache");
    ok(put_value(c, "a", 7, NULL) == 1, "an entry is inserted");
    ok(cache_use(c, "a", read_value, &v) == 1 && v == 7,
       "and found with its record");
    ok(cache_use(c, "b", read_value, &v) == CACHE_MISS, "another key misses");
    ok(put_value(c, "a", 8, NULL) == 1 &&
           cache_use(c, "a", read_value, &v) == 1 && v == 8,
       "a newer read of the same key replaces the entry");
    cache_close(c);
}

static void test_nothing_read_before_an_invalidation_is_inserted_after_it(void)
{
    cache *c = NULL;
    int drops = 0, v = 0;
    uint64_t noted;
    rec r = {1, &drops};

    ok(cache_open(1 << 20, sizeof(rec), drop_rec, &c) == AD_OK, "a cache");
    noted = cache_note(c, "dev");
    /* ... the reader reads the store here; the write commits and: */
    cache_forget(c, "dev");
    ok(cache_put(c, "dev", &r, 0, noted) == 0,
       "a record read before the invalidation is refused");
    ok(cache_use(c, "dev", read_value, &v) == CACHE_MISS,
       "and the key stays uncached");
    ok(drops == 0, "a refused record's belongings stay with the caller");
    noted = cache_note(c, "dev");
    ok(cache_put(c, "dev", &r, 0, noted) == 1,
       "a record read after it is inserted");
    noted = cache_note(c, "dev");
    cache_forget_all(c);
    ok(cache_use(c, "dev", read_value, &v) == CACHE_MISS && drops == 1,
       "forgetting everything drops every entry and what it owns");
    ok(cache_put(c, "dev", &r, 0, noted) == 0,
       "and refuses what was read before it");
    ok(cache_use_since(c, "dev", noted, touch, NULL) == CACHE_MISS,
       "a write-back noted before an invalidation is refused too");
    cache_close(c);
}

static void test_the_cache_stays_within_its_budget(void)
{
    cache *c = NULL;
    cache_stats st;
    char key[32];
    int i, drops = 0, v;
    const size_t budget = 256 << 10;

    ok(cache_open(budget, sizeof(rec), drop_rec, &c) == AD_OK, "a cache");
    for (i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "device-%06d", i);
        put_value(c, key, i, &drops);
    }
    cache_get_stats(c, &st);
    ok(st.bytes <= budget, "100k inserts stay within the budget (%llu <= %zu)",
       (unsigned long long)st.bytes, budget);
    ok(st.entries > 1000 && st.entries < 100000,
       "it holds as many entries as fit (%llu)",
       (unsigned long long)st.entries);
    ok(st.evictions == 100000 - st.entries && (uint64_t)drops == st.evictions,
       "each eviction is one entry, its belongings released (%llu)",
       (unsigned long long)st.evictions);
    ok(cache_use(c, "device-099999", read_value, &v) == 1 && v == 99999,
       "the newest entry is there");
    cache_close(c);
    ok((uint64_t)drops == 100000, "closing releases the rest");
}

static void test_an_entry_in_use_survives_a_stream_of_cold_ones(void)
{
    cache *c = NULL;
    char key[32];
    int i, v = 0, hot_kept = 1;

    ok(cache_open(64 << 10, sizeof(rec), drop_rec, &c) == AD_OK, "a cache");
    put_value(c, "hot", 42, NULL);
    for (i = 0; i < 50000; i++) {
        snprintf(key, sizeof(key), "cold-%06d", i);
        put_value(c, key, i, NULL);
        /* The hot key is used between inserts, as a busy device is. */
        if (cache_use(c, "hot", read_value, &v) != 1)
            hot_kept = 0;
    }
    ok(hot_kept && v == 42,
       "an entry used between inserts is never evicted (second chance)");
    ok(cache_use(c, "cold-000000", read_value, &v) == CACHE_MISS,
       "while the coldest entries are");
    cache_close(c);
}

int main(void)
{
    test_a_put_entry_is_found_and_an_absent_one_misses();
    test_nothing_read_before_an_invalidation_is_inserted_after_it();
    test_the_cache_stays_within_its_budget();
    test_an_entry_in_use_survives_a_stream_of_cold_ones();
    return tap_done();
}
