/* Offline gateway bundles (docs/gateway-bundles.md): what a gateway takes
 * with it to decide for itself and its children while it cannot reach
 * authd. A bundle is a compact JWS (ES256, the token signing key, header
 * typ GWBUNDLE_TYP) whose payload carries the gateway's and every
 * child's substituted statements, the children's status, and the
 * revoked certificate serials and token jtis that concern them;
 * clients/gateway/ verifies and decides with it. */
#ifndef AUTHD_GWBUNDLE_H
#define AUTHD_GWBUNDLE_H

#include <stdint.h>

#include "app.h"

enum {
    /* Children one bundle carries; a gateway with more is refused (413)
     * rather than given a bundle that leaves some out. */
    GWBUNDLE_CHILDREN_MAX = 50000,
    /* The largest bundle signed (bytes of compact JWS). */
    GWBUNDLE_JWS_MAX = 64 << 20,
    /* Revoked serials, and revoked jtis, one bundle lists. */
    GWBUNDLE_REVOKED_MAX = 1000000
};

#define GWBUNDLE_TYP "authd-bundle+jwt"

/* Builds and signs gateway_id's bundle at now, valid until now +
 * a->cfg.bundle_ttl. *jws (malloc()ed) and *exp on success. Errors:
 * AD_ENOTFOUND (no such device), AD_ESUSPENDED/AD_EREVOKED (the gateway
 * is not active), AD_ETOOBIG (over GWBUNDLE_CHILDREN_MAX children or
 * GWBUNDLE_REVOKED_MAX revocations, or larger than GWBUNDLE_JWS_MAX),
 * AD_ESTORE/AD_EUNAVAIL, AD_ENOMEM, AD_ENOTREADY (no signing key); err
 * says more. On error nothing is written. */
ad_err gwbundle_build(app *a, const char *gateway_id, int64_t now, char **jws,
                      int64_t *exp, char *err, size_t errlen);

#endif
