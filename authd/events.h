/* The event stream behind GET /v1/events (Server-Sent Events):
 * revocations, suspensions, policy changes. Events are written to the
 * store's event log by the transaction that makes the change (see
 * store_event_append), so their ids are one sequence for every node and
 * survive restarts. This module keeps the newest of them in a ring,
 * catching up from the store whenever the change feed says the log grew,
 * and streams them: a client reconnecting with Last-Event-ID, to this
 * node or any other, misses nothing the ring still holds. */
#ifndef AUTHD_EVENTS_H
#define AUTHD_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "../common/err.h"
#include "store.h"

typedef struct events events;
typedef struct events_sub events_sub;

/* A ring holding the newest capacity events of st's event log, filled
 * from the log at once. */
ad_err events_open(size_t capacity, store *st, events **out);
/* Ends every subscription: their streams finish (read returns -1) and
 * no new one starts. Call before stopping the listeners. NULL-safe. */
void events_shutdown(events *ev);
/* Frees the ring, after the listeners are stopped. NULL-safe. */
void events_close(events *ev);

/* Reads the events the log holds after the ring's newest into the ring
 * and wakes subscribers. Called when the change feed reports new events
 * (or may have missed some). */
ad_err events_catch_up(events *ev);

/* The id of the newest event (0 if none). */
uint64_t events_last_id(events *ev);

/* A subscription that starts after last_id (0: only new events; an id
 * older than the ring's oldest starts at the oldest retained event; an id
 * ahead of the log, which only another database can have given out:
 * only new events). */
typedef void (*events_wake_fn)(void *arg);
events_sub *events_subscribe(events *ev, uint64_t last_id, events_wake_fn wake,
                             void *wake_arg);
void events_unsubscribe(events_sub *sub);

/* Writes the next bytes of the SSE stream into buf: whole events
 * ("id: N\nevent: T\ndata: {...}\n\n") or a keep-alive comment. Returns
 * the byte count, 0 if nothing is ready (the wake function will be
 * called when something is), or -1 when the stream has ended. */
ssize_t events_read(events_sub *sub, char *buf, size_t max);

/* How many subscriptions are open now (streams of GET /v1/events), for
 * /metrics. */
size_t events_subscribers(events *ev);

/* Asks every subscriber to send a keep-alive comment (also how broken
 * connections get noticed). */
void events_keepalive(events *ev);

#endif
