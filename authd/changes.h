/* What the daemon does when the store changes, whichever node changed
 * it: the one place that maps a changed record to the caches, the CRL,
 * the token state and the event stream that must follow it. Local
 * writes and other nodes' writes (LISTEN/NOTIFY) take the same path, so
 * a rule enforced on one node is enforced on all. */
#ifndef AUTHD_CHANGES_H
#define AUTHD_CHANGES_H

#include "app.h"
#include "store.h"

/* The store_watch_fn of the daemon; arg is the app. Parts of the app not
 * opened yet (NULL) are skipped. */
void changes_apply(void *arg, const store_change *c);

#endif
