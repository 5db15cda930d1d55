/* The daemon's context: everything a request handler may use, built once
 * at start by main.c and passed explicitly (no globals but the config). */
#ifndef AUTHD_APP_H
#define AUTHD_APP_H

#include <stdatomic.h>
#include <time.h>
#include <stddef.h>
#include <stdint.h>

#include "../ca/ca.h"
#include "config.h"
#include "store.h"

enum { APP_CHAIN_MAX = 4 };

typedef struct metrics metrics;
typedef struct checker checker;
typedef struct tokens tokens;
typedef struct events events;
typedef struct revocation revocation;

typedef struct app {
    config cfg;
    store *st;
    ca *ca;
    /* The CA chain as DER certificates (issuing first), for EST. */
    uint8_t *chain_der[APP_CHAIN_MAX];
    size_t chain_len[APP_CHAIN_MAX];
    size_t chain_n;
    /* Listener TLS material (PEM), for the HTTPS listener. */
    char *tls_cert_pem;
    char *tls_key_pem;
    metrics *metrics;
    checker *checker;   /* the check path's caches */
    tokens *tokens;     /* signing keys, token cache, revoked jtis */
    events *events;     /* the ring behind GET /v1/events */
    revocation *revocation; /* the current CRL and the OCSP responder */
    atomic_int ready;
    /* When the store's change feed went down (0: it is up); the main
     * loop's own (changes_tick). */
    time_t feed_down_since;
    atomic_int bundle_builds;     /* gateway bundles being built now */
    atomic_long cert_days;        /* SIGHUP may change these two */
    atomic_long server_cert_days;
} app;

#endif
