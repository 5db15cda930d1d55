/* What the daemon does when the store changes, whichever node changed
 * it: the one place that maps a changed record to the caches, the CRL,
 * the token state and the event stream that must follow it. Local
 * writes and other nodes' writes (LISTEN/NOTIFY) take the same path, so
 * a rule enforced on one node is enforced on all. */
#ifndef AUTHD_CHANGES_H
#define AUTHD_CHANGES_H

#include <time.h>

#include "app.h"
#include "store.h"

/* The store_watch_fn of the daemon; arg is the app. Parts of the app not
 * opened yet (NULL) are skipped. */
void changes_apply(void *arg, const store_change *c);

/* At start, once the watcher is in place: what changed while the parts
 * were being opened is caught up. */
void changes_catch_up(app *a);

/* Once a second from the main loop. The caches are exact only while the
 * change feed runs (store_ready): once it has been down for check_ttl
 * seconds, what they hold may be stale, so they are dropped, and dropped
 * again every second while it stays down. Checks then read the store: a
 * database that does not answer means deny. */
void changes_tick(app *a, time_t now);

#endif
