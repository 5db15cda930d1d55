/* See events.h. One mutex guards the ring and the subscriber list;
 * publishing is rare (an operator action), reading is a copy. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

enum { EVENT_TEXT_MAX = 4096 };

struct event {
    uint64_t id;
    char *text; /* the whole SSE record */
    size_t len;
};

struct events_sub {
    events *ev;
    uint64_t next_id;   /* the next event this subscriber wants */
    int keepalive;      /* a keep-alive comment is owed */
    int ended;
    events_wake_fn wake;
    void *wake_arg;
    struct events_sub *prev, *next;
};

struct events {
    pthread_mutex_t lock;
    struct event *ring;
    size_t capacity;
    uint64_t last_id;   /* ids 1..last_id issued; ring holds the newest */
    events_sub *subs;
    int closing;
};

ad_err events_open(size_t capacity, events **out)
{
    events *ev;

    *out = NULL;
    ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return AD_ENOMEM;
    ev->capacity = capacity ? capacity : 1024;
    ev->ring = calloc(ev->capacity, sizeof(*ev->ring));
    if (ev->ring == NULL) {
        free(ev);
        return AD_ENOMEM;
    }
    pthread_mutex_init(&ev->lock, NULL);
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
    free(ev);
}

static void wake_all(events *ev)
{
    events_sub *s;

    for (s = ev->subs; s; s = s->next)
        if (s->wake)
            s->wake(s->wake_arg);
}

uint64_t events_publish(events *ev, const char *type, const json_t *data)
{
    json_t *obj;
    char *body, *text;
    struct event *slot;
    uint64_t id;
    int n;

    obj = data ? json_deep_copy(data) : json_object();
    if (obj == NULL)
        return 0;
    json_object_set_new(obj, "type", json_string(type));
    body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (body == NULL)
        return 0;
    text = malloc(EVENT_TEXT_MAX);
    if (text == NULL) {
        free(body);
        return 0;
    }
    pthread_mutex_lock(&ev->lock);
    id = ++ev->last_id;
    /* JSON from json_dumps has no raw newlines, so one data line holds it. */
    n = snprintf(text, EVENT_TEXT_MAX, "id: %llu\nevent: %s\ndata: %s\n\n",
                 (unsigned long long)id, type, body);
    if (n < 0 || n >= EVENT_TEXT_MAX) {
        /* Too big for the wire format we promise; say what happened. */
        n = snprintf(text, EVENT_TEXT_MAX,
                     "id: %llu\nevent: %s\ndata: {\"type\":\"%s\","
                     "\"truncated\":true}\n\n",
                     (unsigned long long)id, type, type);
    }
    slot = &ev->ring[id % ev->capacity];
    free(slot->text);
    slot->id = id;
    slot->text = text;
    slot->len = (size_t)n;
    wake_all(ev);
    pthread_mutex_unlock(&ev->lock);
    free(body);
    return id;
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
    events_sub *s = calloc(1, sizeof(*s));
    uint64_t oldest;

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
    oldest = ev->last_id >= ev->capacity ? ev->last_id - ev->capacity + 1 : 1;
    /* A last id from a previous process (ahead of ours) or none at all
     * means: from now on. */
    if (last_id == 0 || last_id > ev->last_id)
        s->next_id = ev->last_id + 1;
    else
        s->next_id = last_id + 1 < oldest ? oldest : last_id + 1;
    s->keepalive = 1; /* an immediate comment flushes the headers */
    s->next = ev->subs;
    if (ev->subs)
        ev->subs->prev = s;
    ev->subs = s;
    pthread_mutex_unlock(&ev->lock);
    return s;
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
        }
        pthread_mutex_unlock(&ev->lock);
    }
    free(s);
}

ssize_t events_read(events_sub *s, char *buf, size_t max)
{
    events *ev = s->ev;
    size_t out = 0;

    if (ev == NULL)
        return -1;
    /* ended is written under the lock by events_shutdown: read it only
     * there (an unlocked peek was a data race TSan caught). */
    pthread_mutex_lock(&ev->lock);
    if (s->ended) {
        pthread_mutex_unlock(&ev->lock);
        return -1;
    }
    while (s->next_id <= ev->last_id) {
        struct event *e = &ev->ring[s->next_id % ev->capacity];

        if (e->id != s->next_id) {
            /* Overwritten while we lagged: skip to the oldest kept. */
            s->next_id = ev->last_id >= ev->capacity
                             ? ev->last_id - ev->capacity + 1
                             : 1;
            continue;
        }
        if (out + e->len > max)
            break;
        memcpy(buf + out, e->text, e->len);
        out += e->len;
        s->next_id++;
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
