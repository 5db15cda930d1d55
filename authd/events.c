/* See events.h. One mutex guards the ring and the subscriber list;
 * events are rare (operator actions), reading is a copy. The ring is in
 * id order, so a subscriber's position is found by binary search. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

enum { EVENT_TEXT_MAX = 4096, CATCH_UP_PAGE = 1000 };

struct event {
    uint64_t id;
    char *text; /* the whole SSE record */
    size_t len;
};

struct events_sub {
    events *ev;
    uint64_t next_id;   /* the smallest id this subscriber still wants */
    int keepalive;      /* a keep-alive comment is owed */
    int ended;
    events_wake_fn wake;
    void *wake_arg;
    struct events_sub *prev, *next;
};

struct events {
    pthread_mutex_t lock;
    pthread_mutex_t catch_up_lock; /* one reader of the log at a time */
    store *st;
    struct event *ring;
    size_t capacity, head, count; /* ring[head] is the oldest held */
    uint64_t last_id;   /* the newest event read from the log */
    events_sub *subs;
    size_t nsubs; /* the length of subs */
    int closing;
};

/* The i-th oldest event held (i < count). */
static struct event *at(events *ev, size_t i)
{
    return &ev->ring[(ev->head + i) % ev->capacity];
}

/* The position of the first held event with id >= id (count if none). */
static size_t position_of(events *ev, uint64_t id)
{
    size_t lo = 0, hi = ev->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (at(ev, mid)->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void wake_all(events *ev)
{
    events_sub *s;

    for (s = ev->subs; s; s = s->next)
        if (s->wake)
            s->wake(s->wake_arg);
}

/* The SSE record of a log entry {id,type,data}; NULL if out of memory. */
static char *sse_text(uint64_t id, const char *type, const json_t *data,
                      size_t *len)
{
    json_t *obj = json_is_object(data) ? json_deep_copy(data) : json_object();
    char *body = NULL, *text = NULL;
    int n;

    if (obj == NULL)
        goto out;
    json_object_set_new(obj, "type", json_string(type));
    body = json_dumps(obj, JSON_COMPACT);
    if (body == NULL || (text = malloc(EVENT_TEXT_MAX)) == NULL)
        goto out;
    /* JSON from json_dumps has no raw newlines, so one data line holds it. */
    n = snprintf(text, EVENT_TEXT_MAX, "id: %llu\nevent: %s\ndata: %s\n\n",
                 (unsigned long long)id, type, body);
    if (n < 0 || n >= EVENT_TEXT_MAX)
        /* Too big for the wire format we promise; say what happened. */
        n = snprintf(text, EVENT_TEXT_MAX,
                     "id: %llu\nevent: %s\ndata: {\"type\":\"%s\","
                     "\"truncated\":true}\n\n",
                     (unsigned long long)id, type, type);
    *len = (size_t)n;
out:
    json_decref(obj);
    free(body);
    return text;
}

/* Appends one event (ids only grow) under ev->lock, dropping the oldest
 * when full. Takes text. */
static void push_locked(events *ev, uint64_t id, char *text, size_t len)
{
    struct event *slot;

    if (ev->count == ev->capacity) {
        slot = at(ev, 0);
        free(slot->text);
        ev->head = (ev->head + 1) % ev->capacity;
        ev->count--;
    }
    slot = at(ev, ev->count);
    slot->id = id;
    slot->text = text;
    slot->len = len;
    ev->count++;
    ev->last_id = id;
}

ad_err events_catch_up(events *ev)
{
    store_txn *tx = NULL;
    json_t *items = NULL, *item;
    uint64_t after;
    size_t i;
    int more = 1, pushed = 0;
    ad_err e = AD_OK;

    pthread_mutex_lock(&ev->catch_up_lock);
    pthread_mutex_lock(&ev->lock);
    after = ev->last_id;
    pthread_mutex_unlock(&ev->lock);
    while (more && e == AD_OK) {
        if ((e = store_read_begin(ev->st, &tx)) != AD_OK)
            break;
        e = store_event_list(tx, after, CATCH_UP_PAGE, &items, &more);
        store_read_end(tx);
        if (e != AD_OK)
            break;
        pthread_mutex_lock(&ev->lock);
        json_array_foreach(items, i, item) {
            json_int_t id = json_integer_value(json_object_get(item, "id"));
            const char *type =
                json_string_value(json_object_get(item, "type"));
            char *text;
            size_t len = 0;

            if (id <= 0 || (uint64_t)id <= after || type == NULL)
                continue;
            after = (uint64_t)id;
            text = sse_text(after, type, json_object_get(item, "data"), &len);
            if (text == NULL) {
                e = AD_ENOMEM;
                break;
            }
            push_locked(ev, after, text, len);
            pushed = 1;
        }
        if (pushed)
            wake_all(ev);
        pthread_mutex_unlock(&ev->lock);
        json_decref(items);
        items = NULL;
    }
    pthread_mutex_unlock(&ev->catch_up_lock);
    return e;
}

ad_err events_open(size_t capacity, store *st, events **out)
{
    events *ev;
    ad_err e;

    *out = NULL;
    ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return AD_ENOMEM;
    ev->st = st;
    ev->capacity = capacity ? capacity : 1024;
    ev->ring = calloc(ev->capacity, sizeof(*ev->ring));
    if (ev->ring == NULL) {
        free(ev);
        return AD_ENOMEM;
    }
    pthread_mutex_init(&ev->lock, NULL);
    pthread_mutex_init(&ev->catch_up_lock, NULL);
    if ((e = events_catch_up(ev)) != AD_OK) {
        events_close(ev);
        return e;
    }
    *out = ev;
    return AD_OK;
}
void events_shutdown(events *ev)
{
    events_sub *s;

    if (ev == NULL)
        return;
    pthread_mutex_lock(&ev->lock);
    ev->closing = 1;
    for (s = ev->subs; s; s = s->next) {
        s->ended = 1;
        if (s->wake)
            s->wake(s->wake_arg);
    }
    pthread_mutex_unlock(&ev->lock);
}

void events_close(events *ev)
{
    events_sub *s, *next;
    size_t i;

    if (ev == NULL)
        return;
    /* Streams still open now are gone with their listener: free them. */
    for (s = ev->subs; s; s = next) {
        next = s->next;
        free(s);
    }
    for (i = 0; i < ev->capacity; i++)
        free(ev->ring[i].text);
    free(ev->ring);
    pthread_mutex_destroy(&ev->lock);
    pthread_mutex_destroy(&ev->catch_up_lock);
    free(ev);
}

uint64_t events_last_id(events *ev)
{
    uint64_t id;

    pthread_mutex_lock(&ev->lock);
    id = ev->last_id;
    pthread_mutex_unlock(&ev->lock);
    return id;
}

events_sub *events_subscribe(events *ev, uint64_t last_id, events_wake_fn wake,
                             void *wake_arg)
{
    events_sub *s;

    /* A client coming from another node may have seen events whose
     * notification has not reached us yet: they are committed, so read
     * them before deciding where the client stands. */
    if (last_id > events_last_id(ev))
        (void)events_catch_up(ev);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->wake = wake;
    s->wake_arg = wake_arg;
    pthread_mutex_lock(&ev->lock);
    if (ev->closing) {
        pthread_mutex_unlock(&ev->lock);
        free(s);
        return NULL;
    }
    s->ev = ev;
    /* No id, or one ahead of the log (another database's): from now on.
     * An id older than the ring's oldest: from the oldest held. */
    if (last_id == 0 || last_id > ev->last_id)
        s->next_id = ev->last_id + 1;
    else
        s->next_id = last_id + 1;
    s->keepalive = 1; /* an immediate comment flushes the headers */
    s->next = ev->subs;
    if (ev->subs)
        ev->subs->prev = s;
    ev->subs = s;
    ev->nsubs++;
    pthread_mutex_unlock(&ev->lock);
    return s;
}

size_t events_subscribers(events *ev)
{
    size_t n;

    pthread_mutex_lock(&ev->lock);
    n = ev->nsubs;
    pthread_mutex_unlock(&ev->lock);
    return n;
}

void events_unsubscribe(events_sub *s)
{
    events *ev;

    if (s == NULL)
        return;
    ev = s->ev;
    if (ev) {
        pthread_mutex_lock(&ev->lock);
        if (s->ev) {
            if (s->prev)
                s->prev->next = s->next;
            else
                ev->subs = s->next;
            if (s->next)
                s->next->prev = s->prev;
            ev->nsubs--;
        }
        pthread_mutex_unlock(&ev->lock);
    }
    free(s);
}

ssize_t events_read(events_sub *s, char *buf, size_t max)
{
    events *ev = s->ev;
    size_t out = 0, i;

    if (ev == NULL)
        return -1;
    /* ended is written under the lock by events_shutdown: read it only
     * there (an unlocked peek was a data race TSan caught). */
    pthread_mutex_lock(&ev->lock);
    if (s->ended) {
        pthread_mutex_unlock(&ev->lock);
        return -1;
    }
    for (i = position_of(ev, s->next_id); i < ev->count; i++) {
        struct event *e = at(ev, i);

        if (out + e->len > max)
            break;
        memcpy(buf + out, e->text, e->len);
        out += e->len;
        s->next_id = e->id + 1;
    }
    if (out == 0 && s->keepalive && max >= 13) {
        memcpy(buf, ": keepalive\n\n", 13);
        out = 13;
    }
    s->keepalive = 0;
    pthread_mutex_unlock(&ev->lock);
    return (ssize_t)out;
}

void events_keepalive(events *ev)
{
    events_sub *s;

    pthread_mutex_lock(&ev->lock);
    for (s = ev->subs; s; s = s->next) {
        s->keepalive = 1;
        if (s->wake)
            s->wake(s->wake_arg);
    }
    pthread_mutex_unlock(&ev->lock);
}
