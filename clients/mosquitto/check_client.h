/* The plugin's side of POST /v1/check: one libcurl easy handle (its
 * connections kept alive between calls) that asks authd whether a client
 * may connect and turns an allow into compiled policy sets, so that
 * every later publish, subscribe and receive is decided locally by
 * policy/ (no HTTP per message). A handle belongs to one thread.
 *
 * authd may be several nodes (cluster mode): a check goes to the node
 * that answered last; when that one gives no usable answer the next is
 * tried within the same check (a check changes nothing, so repeating it
 * is safe), and a node that failed is skipped for a few seconds. */
#ifndef AUTHD_MQ_CHECK_CLIENT_H
#define AUTHD_MQ_CHECK_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "policy/policy.h"

/* Where authd is and how to reach it. url is one node or several,
 * separated by commas or spaces: each "http://host:port",
 * "https://host:port" or "unix:/path/to/check.sock" (the check listener
 * on a unix socket); a trailing '/' is ignored. */
typedef struct {
    const char *url;
    const char *cacert;  /* PEM bundle for https, or NULL: system store */
    const char *key;     /* broker API key (Bearer), or NULL */
    long timeout_ms;         /* a whole request to one node */
    long connect_timeout_ms; /* connecting to one node; 0: timeout_ms */
    size_t answer_max;       /* most bytes of one check answer; 0:
                              * CC_ANSWER_MAX_DEFAULT */
} cc_config;

/* A connect answer carries the device's statements with every variable
 * expanded: a gateway whose policy reads ${child.id} gets one pattern per
 * child and statement (about 80 bytes per child under three such
 * statements, so 8 MB for 100,000 children). policy/ expands at most
 * POL_EXPANSIONS_MAX (1,048,576) patterns per set, about 30-60 MB of
 * answer; the default is sized for that. The buffer grows only as far
 * as an answer goes and is freed after each check. */
#define CC_ANSWER_MAX_DEFAULT ((size_t)64 << 20)

typedef struct cc cc;

typedef enum {
    CC_ALLOW = 0,
    CC_DENY = 1,       /* authd answered deny */
    CC_UNREACHABLE = 2, /* no answer, a non-200 status, or a bad body */
    /* authd answered, but the answer is over cfg.answer_max or its
     * statements do not compile: no outage (another node would answer
     * the same), and nothing to decide with, so the caller fails closed
     * for this client. */
    CC_UNUSABLE = 3
} cc_result;

/* What an allowed connect grants: the device's statements compiled as
 * one document without variables and, for a token session, the token's
 * scope compiled as allow statements; a publish/subscribe/receive is
 * allowed only if both allow (scope ∩ policy). A NULL set allows
 * nothing. */
typedef struct {
    char device[129];
    char reason[64];
    char jti[129];       /* token sessions: the token's jti, else "" */
    pol_set *policy;
    pol_set *scope;      /* only when has_scope */
    int has_scope;
    int64_t expire_at;   /* 0 if authd gave none */
} cc_grant;

/* Opens a handle with a copy of cfg. Returns 0, or -1 (a bad URL list,
 * out of memory or libcurl failure; *out is NULL). */
int cc_open(const cc_config *cfg, cc **out);
void cc_close(cc *c); /* NULL-safe */

/* The URL of the node that answered the last check (or will be asked
 * first). The string lives as long as the handle. */
const char *cc_node(const cc *c);

/* Applies the transport options of cfg (CA, timeouts, no proxy) to a
 * libcurl easy handle and returns the headers every request carries
 * (Authorization with the key), the caller's to free with
 * curl_slist_free_all after the transfer. NULL on failure. */
struct curl_slist *cc_prepare(void *curl, const cc_config *cfg);
/* Points a libcurl easy handle at path on one node (base: one URL of the
 * list, as urls_parse keeps it): the URL, written into url (at most n
 * bytes), and the unix socket or none. Returns 0, or -1 if it does not
 * fit. */
int cc_target(void *curl, const char *base, const char *path, char *url,
              size_t n);

/* Asks authd whether this client may connect. username, password and
 * fingerprint (lowercase hex SHA-256 of the certificate DER) may be NULL.
 * On CC_ALLOW *out holds the grant (release with cc_grant_clear); on
 * CC_DENY out->reason (and out->device when known) says why; on
 * CC_UNREACHABLE (no node answered) err says what failed at each node
 * tried; on CC_UNUSABLE err says why the answer could not be used (and
 * out->device names the device when it was read). out is zeroed on
 * entry. */
cc_result cc_connect(cc *c, const char *client_id, const char *username,
                     const char *password, const char *fingerprint,
                     cc_grant *out, char *err, size_t errlen);

/* Frees the sets of a grant and zeroes it. NULL-safe. */
void cc_grant_clear(cc_grant *g);

/* Compiles a statements array (as a connect answer carries it) into one
 * set; documents of more than 256 statements are compiled as several
 * sources of one set. An empty array gives *out = NULL (allows nothing).
 * Returns 0 or -1 with err set. Exposed for the tests of this module. */
int cc_compile_statements(const json_t *statements, pol_set **out,
                          char *err, size_t errlen);

#endif
