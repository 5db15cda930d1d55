/* A background thread that follows authd's GET /v1/events (Server-Sent
 * Events) and hands what concerns the broker's sessions to the broker
 * thread through a mutex-protected queue: the broker thread is the only
 * one that touches sessions or calls mosquitto. When the stream breaks
 * it reconnects, to another node of the URL list first, with the
 * Last-Event-ID of the last event it processed; with backoff when no
 * node answers. */
#ifndef AUTHD_MQ_EVENT_STREAM_H
#define AUTHD_MQ_EVENT_STREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "check_client.h"

typedef enum {
    ES_DEVICE_GONE = 1,   /* revoked or suspended: forget and disconnect */
    ES_DEVICE_STALE = 2,  /* its policy changed: fetch again when next used */
    ES_TOKEN_REVOKED = 3, /* value is a jti */
    ES_ALL_STALE = 4      /* a policy or group changed, or events may have
                           * been missed: every session fetches again */
} es_kind;

typedef struct es_item {
    struct es_item *next;
    es_kind kind;
    char value[]; /* device id or jti */
} es_item;

typedef struct es es;

/* Starts the thread. pending is set to 1 whenever items are queued (the
 * broker thread tests it, without locking, at every callback); up is
 * set to 1 while the stream is connected and to 0 when it breaks (the
 * broker thread logs the transitions). Returns 0, or -1 with nothing
 * started. */
int es_start(const cc_config *cfg, atomic_int *pending, atomic_int *up,
             es **out);
/* How many times the stream has connected (answered 200) so far, and in
 * *node the URL of the node it connected to last (a string that lives
 * as long as e). For the broker thread's log. */
unsigned es_connections(es *e, const char **node);
/* Stops the thread (within about a second) and frees everything.
 * NULL-safe. */
void es_stop(es *e);

/* Takes every queued item, oldest first (the caller frees each with
 * free()), and clears *pending. NULL if there is none. */
es_item *es_take(es *e);

/* ---- exposed for tests ---------------------------------------------- */

/* Feeds bytes of an SSE stream; complete events are queued. Returns 0,
 * or -1 if a line exceeds the limit (the stream must be dropped). */
int es_feed(es *e, const char *p, size_t n);

#endif
