/* The event ring behind GET /v1/events (Server-Sent Events): revocations,
 * suspensions and policy changes, numbered in order. Writers publish an
 * event after the change is committed; readers (broker plugins) get every
 * event after the id they last saw, as long as the ring still holds it,
 * so a client reconnecting with Last-Event-ID misses nothing retained. */
#ifndef AUTHD_EVENTS_H
#define AUTHD_EVENTS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "../common/err.h"

typedef struct events events;
typedef struct events_sub events_sub;

/* A ring holding the last capacity events. */
ad_err events_open(size_t capacity, events **out);
/* Ends every subscription: their streams finish (read returns -1) and
 * no new one starts. Call before stopping the listeners. NULL-safe. */
void events_shutdown(events *ev);
/* Frees the ring, after the listeners are stopped. NULL-safe. */
void events_close(events *ev);

/* Appends an event {"type": type, ...data} and wakes subscribers.
 * Returns its id (ids start at 1 and never repeat within a process;
 * they restart with the process, which subscribers see as a gap). */
uint64_t events_publish(events *ev, const char *type, const json_t *data);

/* The id of the newest event (0 if none). */
uint64_t events_last_id(events *ev);

/* A subscription that starts after last_id (0: only new events; an id
 * older than the ring's oldest starts at the oldest retained event). */
typedef void (*events_wake_fn)(void *arg);
events_sub *events_subscribe(events *ev, uint64_t last_id, events_wake_fn wake,
                             void *wake_arg);
void events_unsubscribe(events_sub *sub);

/* Writes the next bytes of the SSE stream into buf: whole events
 * ("id: N\nevent: T\ndata: {...}\n\n") or a keep-alive comment. Returns
 * the byte count, 0 if nothing is ready (the wake function will be
 * called when something is), or -1 when the stream has ended. */
ssize_t events_read(events_sub *sub, char *buf, size_t max);

/* Asks every subscriber to send a keep-alive comment (also how broken
 * connections get noticed). */
void events_keepalive(events *ev);

#endif
