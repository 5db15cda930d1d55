/* The daemon's route table and the handlers it names. One table lists
 * every endpoint with who may call it (docs/api.md §2), so reading routes.c
 * tells the whole HTTP surface. */
#ifndef AUTHD_ROUTES_H
#define AUTHD_ROUTES_H

#include <stddef.h>

#include "checker.h"
#include "http.h"
#include "registry.h"

/* The table, and its length. */
const http_route *routes_table(size_t *n);

/* routes_ops.c */
void route_healthz(http_req *r);
void route_readyz(http_req *r);
void route_metrics(http_req *r);
/* GET /v1/openapi.json: the API description (docs/openapi.json). */
void route_openapi(http_req *r);

/* routes_ca.c */
void route_ca_info(http_req *r);
void route_ca_pem(http_req *r);
void route_enroll(http_req *r);
void route_renew(http_req *r);
void route_server_certs(http_req *r);
void route_est_cacerts(http_req *r);
void route_est_simpleenroll(http_req *r);
void route_est_simplereenroll(http_req *r);
void route_est_csrattrs(http_req *r);

/* routes_admin.c */
void route_device_create(http_req *r);
/* POST /v1/devices:import: NDJSON, one POST /v1/devices body a line. */
void route_device_import(http_req *r);
void route_device_list(http_req *r);
void route_device_get(http_req *r);
void route_device_patch(http_req *r);
void route_device_delete(http_req *r);
/* GET /v1/devices/{id}/children: a gateway's children, paged. */
void route_device_children(http_req *r);
void route_enrollment_create(http_req *r);
void route_enrollment_list(http_req *r);
void route_enrollment_update(http_req *r);
void route_enrollment_get(http_req *r);
void route_enrollment_delete(http_req *r);
void route_cert_list(http_req *r);
void route_cert_get(http_req *r);
void route_apikey_create(http_req *r);
void route_apikey_list(http_req *r);
void route_apikey_delete(http_req *r);
void route_audit_list(http_req *r);
void route_audit_verify(http_req *r);

/* Reads ?limit and ?after into *pg (no prefix). On error replies and
 * returns -1. */
int routes_page(http_req *r, registry_page *pg);
/* Replies {"items", "next"} from *l (taking both), or the error e. */
void routes_reply_list(http_req *r, ad_err e, registry_list *l);

/* routes_policy.c */
void route_policy_put(http_req *r);
void route_policy_get(http_req *r);
void route_policy_delete(http_req *r);
void route_policy_list(http_req *r);
void route_policy_explain(http_req *r);
void route_group_put(http_req *r);
void route_group_get(http_req *r);
void route_group_delete(http_req *r);
void route_group_list(http_req *r);

/* routes_check.c */
void route_check(http_req *r);
void route_check_batch(http_req *r);
void route_goauth_user(http_req *r);
void route_goauth_superuser(http_req *r);
void route_goauth_acl(http_req *r);
void route_emqx_authn(http_req *r);
void route_emqx_authz(http_req *r);
void route_vernemq(http_req *r);

/* routes_token.c */
void route_token(http_req *r);
void route_jwks(http_req *r);
void route_introspect(http_req *r);
void route_token_revoke(http_req *r);
void route_token_key_rotate(http_req *r);
void route_device_secret(http_req *r);

/* routes_gateway.c: GET /v1/gateway/bundle (gateway mTLS or token). */
void route_gateway_bundle(http_req *r);

/* routes_revoke.c */
void route_cert_revoke(http_req *r);
void route_device_revoke(http_req *r);
void route_events(http_req *r);
void route_crl_der(http_req *r);
void route_crl_pem(http_req *r);
void route_ocsp_post(http_req *r);
void route_ocsp_get(http_req *r);
/* After n revocations committed: counts them for /metrics (caches, the
 * CRL and events follow the store's change feed). */
void routes_count_revocations(app *a, size_t n);

/* The device r's client certificate belongs to (registry_device_by_cert
 * at now): 1 with *owner filled, or 0 after answering r's error. The
 * one way a route takes a device from its TLS connection. */
int routes_cert_device(http_req *r, int64_t now, registry_cert_owner *owner);

/* What a device-secret check made on r's lane does when it needs
 * argon2id: defer from a connection thread, run on the secret lane (or a
 * listener with a thread per connection), refuse when the lane is full. */
static inline check_argon2 routes_argon2(const http_req *r)
{
    return r->lane == HTTP_LANE_FAST   ? CHECK_ARGON2_DEFER
           : r->lane == HTTP_LANE_FULL ? CHECK_ARGON2_REFUSE
                                       : CHECK_ARGON2_RUN;
}

#endif
