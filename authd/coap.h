/* EST over secure CoAP (RFC 9148, docs/coap.md): a libcoap server on DTLS
 * 1.2 with its own thread, serving /est/crts, /est/sen (DTLS-PSK with the
 * enrollment id and token), /est/sren (the device's certificate) and
 * /est/att. Issuing goes through issue.c, as the HTTP routes do. */
#ifndef AUTHD_COAP_H
#define AUTHD_COAP_H

#include <stddef.h>

#include "app.h"

typedef struct coaps_server coaps_server;

/* What the listener may hold at once. */
typedef struct {
    unsigned max_sessions;   /* DTLS sessions kept (idle ones beyond are
                              * closed, oldest first) */
    unsigned max_handshakes; /* sessions in their handshake at once */
} coaps_limits;

/* Listens on addr ("ADDR:PORT", UDP) and serves from a thread of its own
 * until coaps_stop. a must outlive the server; its CA chain, HTTPS
 * certificate and key are the DTLS server's credentials. On error *out is
 * NULL, err says why and nothing is left running. */
ad_err coaps_start(app *a, const char *addr, const coaps_limits *lim,
                   coaps_server **out, char *err, size_t errlen);

/* Stops the thread (within about a quarter second) and frees everything;
 * NULL is accepted. Sessions are dropped without a close_notify. */
void coaps_stop(coaps_server *s);

#endif
