/* A chained hash table of sessions keyed by pointer, doubling as it
 * fills so that a lookup stays one or two pointer comparisons. */
#include "sessions.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BUCKETS_FIRST = 256 };

struct sess_table {
    sess **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
};

static size_t slot(const sess_table *t, const void *client)
{
    /* Fibonacci hashing of the address: allocations are aligned, so the
     * low bits alone say little. */
    uint64_t h = (uint64_t)(uintptr_t)client * 0x9E3779B97F4A7C15ull;

    return (size_t)(h >> 32) & (t->nbuckets - 1);
}

int sess_table_open(sess_table **out)
{
    sess_table *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (t == NULL)
        return -1;
    t->nbuckets = BUCKETS_FIRST;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (t->buckets == NULL) {
        free(t);
        return -1;
    }
    *out = t;
    return 0;
}

static int drop_all(sess *s, void *arg)
{
    (void)s, (void)arg;
    return 1;
}

void sess_table_close(sess_table *t)
{
    if (t == NULL)
        return;
    sess_each(t, drop_all, NULL);
    free(t->buckets);
    free(t);
}

static char *dup_opt(const char *s, int *fail)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *fail = 1;
    return d;
}

sess *sess_new(const void *client, const char *client_id,
               const char *username, const char *password,
               const char *fingerprint)
{
    sess *s = calloc(1, sizeof(*s));
    int fail = 0;

    if (s == NULL)
        return NULL;
    s->client = client;
    s->client_id = dup_opt(client_id, &fail);
    s->username = dup_opt(username, &fail);
    s->password = dup_opt(password, &fail);
    if (fingerprint && strlen(fingerprint) < sizeof(s->fingerprint))
        memcpy(s->fingerprint, fingerprint, strlen(fingerprint) + 1);
    if (fail) {
        sess_free(s);
        return NULL;
    }
    return s;
}

void sess_free(sess *s)
{
    if (s == NULL)
        return;
    free(s->client_id);
    free(s->username);
    if (s->password) {
        /* Volatile so the wipe of a secret is not optimised away. */
        volatile char *p = s->password;
        while (*p)
            *p++ = '\0';
        free(s->password);
    }
    cc_grant_clear(&s->grant);
    free(s);
}

sess *sess_get(const sess_table *t, const void *client)
{
    sess *s;

    for (s = t->buckets[slot(t, client)]; s; s = s->next)
        if (s->client == client)
            return s;
    return NULL;
}

static void grow(sess_table *t)
{
    size_t old_n = t->nbuckets, i;
    sess **old = t->buckets, **nb;

    nb = calloc(old_n * 2, sizeof(*nb));
    if (nb == NULL)
        return; /* longer chains, still correct */
    t->buckets = nb;
    t->nbuckets = old_n * 2;
    for (i = 0; i < old_n; i++) {
        sess *s = old[i], *nx;

        for (; s; s = nx) {
            size_t b = slot(t, s->client);

            nx = s->next;
            s->next = nb[b];
            nb[b] = s;
        }
    }
    free(old);
}

int sess_put(sess_table *t, sess *s)
{
    size_t b;

    sess_del(t, s->client);
    if (t->count + 1 > t->nbuckets)
        grow(t);
    b = slot(t, s->client);
    s->next = t->buckets[b];
    t->buckets[b] = s;
    t->count++;
    return 0;
}

void sess_del(sess_table *t, const void *client)
{
    sess **pp = &t->buckets[slot(t, client)], *s;

    for (; (s = *pp) != NULL; pp = &s->next)
        if (s->client == client) {
            *pp = s->next;
            t->count--;
            sess_free(s);
            return;
        }
}

size_t sess_count(const sess_table *t)
{
    return t->count;
}

void sess_each(sess_table *t, int (*fn)(sess *s, void *arg), void *arg)
{
    size_t i;

    for (i = 0; i < t->nbuckets; i++) {
        sess **pp = &t->buckets[i], *s;

        while ((s = *pp) != NULL) {
            if (fn(s, arg)) {
                *pp = s->next;
                t->count--;
                sess_free(s);
            } else {
                pp = &s->next;
            }
        }
    }
}
