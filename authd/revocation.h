/* The daemon's revocation outputs: the current CRL (rebuilt when a
 * revocation commits on any node and before it grows stale, never per
 * request) and
 * the OCSP responder, which answers from the checker's certificate cache
 * so a revocation is visible to the next OCSP request. */
#ifndef AUTHD_REVOCATION_H
#define AUTHD_REVOCATION_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "../ca/ca.h"
#include "checker.h"
#include "store.h"

typedef struct revocation revocation;

/* Builds the first CRL. crl_hours is the CRL's validity (nextUpdate). */
ad_err revocation_open(store *st, const ca *c, checker *chk, long crl_hours,
                       revocation **out, char *err, size_t errlen);
void revocation_close(revocation *rv);

/* The change feed (changes.c), on whichever node made the change:
 * a certificate entered the CRL table (serial): list it;
 * the CRL number advanced (every revocation advances it after putting
 * its entries, and the feed reports them in that order): rebuild the CRL
 * with that number, now;
 * changes may have been missed: read the table again and rebuild. */
void revocation_revoked_changed(revocation *rv, const char *serial);
void revocation_number_changed(revocation *rv);
void revocation_resync(revocation *rv);
/* Advances the CRL number (which makes every node rebuild) if half of
 * this CRL's validity has passed. Not from a change-feed watcher. */
void revocation_tick(revocation *rv, time_t now);

/* When the current CRL was built (its thisUpdate, Unix seconds), for
 * /metrics. */
time_t revocation_crl_built(revocation *rv);

/* Copies of the current CRL (DER, or PEM text); caller frees. */
ad_err revocation_crl_der(revocation *rv, uint8_t **der, size_t *len);
ad_err revocation_crl_pem(revocation *rv, char **pem);

/* Answers an OCSPRequest (DER) with an OCSPResponse (DER, malloc()ed):
 * a signed response, or an error response for malformed requests and
 * requests about other CAs only. Never fails without an answer unless
 * out of memory (then *resp is NULL). */
void revocation_ocsp(revocation *rv, const uint8_t *req, size_t len,
                     uint8_t **resp, size_t *resp_len);

#endif
