/* The plugin's sessions: what an allowed connect granted each client,
 * in a hash table keyed by the broker's client pointer. Touched only on
 * the broker thread, so it has no locks: an ACL decision is a lookup
 * and a pol_decide. */
#ifndef AUTHD_MQ_SESSIONS_H
#define AUTHD_MQ_SESSIONS_H

#include <stddef.h>
#include <time.h>

#include "check_client.h"

typedef struct sess {
    struct sess *next;      /* bucket chain */
    const void *client;     /* key: the broker's struct mosquitto * */
    /* The credentials of the connect, to check again when the grant
     * expires or goes stale (mosquitto keeps them in memory as well). */
    char *client_id;
    char *username;
    char *password;
    char fingerprint[65];
    cc_grant grant;         /* device, jti, compiled sets, expire_at */
    time_t deadline;        /* trust the grant until then, at most */
    time_t retry_at;        /* after a failed fetch, not again before */
    unsigned gen;           /* the plugin's generation when fetched */
    unsigned closed : 1;    /* the network connection has ended */
    unsigned dead : 1;      /* revoked/suspended/refused: deny everything */
    unsigned stale : 1;     /* its policy changed: fetch again */
    unsigned kick : 1;      /* disconnect it at the next tick */
} sess;

typedef struct sess_table sess_table;

/* Returns 0, or -1 out of memory (*out NULL). */
int sess_table_open(sess_table **out);
/* Frees the table and every session in it. NULL-safe. */
void sess_table_close(sess_table *t);

/* A new session for client with copies of the strings (NULL allowed),
 * or NULL out of memory. The grant is moved in later by the caller. */
sess *sess_new(const void *client, const char *client_id,
               const char *username, const char *password,
               const char *fingerprint);
/* Frees a session that is not in a table. NULL-safe. */
void sess_free(sess *s);

/* The session of client, or NULL. */
sess *sess_get(const sess_table *t, const void *client);
/* Inserts s (the table owns it then), freeing a previous session of the
 * same client. Returns 0. */
int sess_put(sess_table *t, sess *s);
/* Removes and frees the session of client, if any. */
void sess_del(sess_table *t, const void *client);
size_t sess_count(const sess_table *t);

/* Calls fn on every session; when fn returns nonzero the session is
 * removed and freed. fn must not add or remove sessions itself. */
void sess_each(sess_table *t, int (*fn)(sess *s, void *arg), void *arg);

#endif
