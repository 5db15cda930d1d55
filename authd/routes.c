/* Every endpoint of the daemon, who may call it and on which listener.
 * First match wins; a path that matches with another method is 405. */
#include "routes.h"

/* The metrics label is the handler name without its "route_" prefix. */
#define R(m, p, l, a, h) {m, p, l, a, h, &(#h)[6], 0}
#define RF(m, p, l, a, h, f) {m, p, l, a, h, &(#h)[6], f}

static const http_route table[] = {
    /* brokers and gateways (§8): also on the check listener. First:
     * these are the hot paths, and the table is searched in order. */
    R("GET", "/v1/events", LISTEN_ALL, ACCESS_BROKER, route_events),
    R("POST", "/v1/check", LISTEN_ALL, ACCESS_BROKER, route_check),
    R("POST", "/v1/check/batch", LISTEN_ALL, ACCESS_BROKER,
      route_check_batch),
    R("POST", "/compat/mosquitto-go-auth/user", LISTEN_ALL, ACCESS_BROKER,
      route_goauth_user),
    R("POST", "/compat/mosquitto-go-auth/superuser", LISTEN_ALL,
      ACCESS_BROKER, route_goauth_superuser),
    R("POST", "/compat/mosquitto-go-auth/acl", LISTEN_ALL, ACCESS_BROKER,
      route_goauth_acl),
    R("POST", "/compat/emqx/authn", LISTEN_ALL, ACCESS_BROKER,
      route_emqx_authn),
    R("POST", "/compat/emqx/authz", LISTEN_ALL, ACCESS_BROKER,
      route_emqx_authz),
    /* go-auth and EMQX may be configured for GET: the same handlers
     * read the query string (http_body_params). */
    R("GET", "/compat/mosquitto-go-auth/user", LISTEN_ALL, ACCESS_BROKER,
      route_goauth_user),
    R("GET", "/compat/mosquitto-go-auth/superuser", LISTEN_ALL,
      ACCESS_BROKER, route_goauth_superuser),
    R("GET", "/compat/mosquitto-go-auth/acl", LISTEN_ALL, ACCESS_BROKER,
      route_goauth_acl),
    R("GET", "/compat/emqx/authn", LISTEN_ALL, ACCESS_BROKER,
      route_emqx_authn),
    R("GET", "/compat/emqx/authz", LISTEN_ALL, ACCESS_BROKER,
      route_emqx_authz),
    R("POST", "/compat/vernemq/{}", LISTEN_ALL, ACCESS_BROKER, route_vernemq),
    R("POST", "/compat/vernemq", LISTEN_ALL, ACCESS_BROKER, route_vernemq),

    /* operations (§10) */
    R("GET", "/healthz", LISTEN_ALL, ACCESS_PUBLIC, route_healthz),
    R("GET", "/readyz", LISTEN_ALL, ACCESS_PUBLIC, route_readyz),
    R("GET", "/metrics", LISTEN_ALL, ACCESS_PUBLIC, route_metrics),
    R("GET", "/v1/openapi.json", LISTEN_MAIN, ACCESS_PUBLIC, route_openapi),

    /* the CA and issuance (§4) */
    R("GET", "/v1/ca", LISTEN_MAIN, ACCESS_PUBLIC, route_ca_info),
    R("GET", "/v1/ca.pem", LISTEN_MAIN, ACCESS_PUBLIC, route_ca_pem),
    R("POST", "/v1/enroll", LISTEN_MAIN, ACCESS_HANDLER, route_enroll),
    R("POST", "/v1/renew", LISTEN_MAIN, ACCESS_DEVICE, route_renew),
    R("POST", "/v1/server-certs", LISTEN_MAIN, ACCESS_ADMIN,
      route_server_certs),
    R("GET", "/.well-known/est/cacerts", LISTEN_MAIN, ACCESS_PUBLIC,
      route_est_cacerts),
    R("POST", "/.well-known/est/simpleenroll", LISTEN_MAIN, ACCESS_HANDLER,
      route_est_simpleenroll),
    R("POST", "/.well-known/est/simplereenroll", LISTEN_MAIN, ACCESS_DEVICE,
      route_est_simplereenroll),
    R("GET", "/.well-known/est/csrattrs", LISTEN_MAIN, ACCESS_PUBLIC,
      route_est_csrattrs),

    /* the registry (§5) */
    R("POST", "/v1/devices", LISTEN_MAIN, ACCESS_ADMIN, route_device_create),
    RF("POST", "/v1/devices:import", LISTEN_MAIN, ACCESS_ADMIN,
       route_device_import, ROUTE_BULK_BODY),
    R("GET", "/v1/devices", LISTEN_MAIN, ACCESS_ADMIN, route_device_list),
    R("GET", "/v1/devices/{}", LISTEN_MAIN, ACCESS_ADMIN, route_device_get),
    R("PATCH", "/v1/devices/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_device_patch),
    R("DELETE", "/v1/devices/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_device_delete),
    R("POST", "/v1/enrollments", LISTEN_MAIN, ACCESS_PROVISIONER,
      route_enrollment_create),
    R("GET", "/v1/enrollments", LISTEN_MAIN, ACCESS_PROVISIONER,
      route_enrollment_list),
    R("GET", "/v1/enrollments/{}", LISTEN_MAIN, ACCESS_PROVISIONER,
      route_enrollment_get),
    R("PATCH", "/v1/enrollments/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_enrollment_update),
    R("DELETE", "/v1/enrollments/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_enrollment_delete),
    R("GET", "/v1/certs", LISTEN_MAIN, ACCESS_ADMIN, route_cert_list),
    R("GET", "/v1/certs/{}", LISTEN_MAIN, ACCESS_ADMIN, route_cert_get),
    R("POST", "/v1/apikeys", LISTEN_MAIN, ACCESS_ADMIN, route_apikey_create),
    R("GET", "/v1/apikeys", LISTEN_MAIN, ACCESS_ADMIN, route_apikey_list),
    R("DELETE", "/v1/apikeys/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_apikey_delete),
    R("GET", "/v1/audit", LISTEN_MAIN, ACCESS_ADMIN, route_audit_list),
    R("GET", "/v1/audit/verify", LISTEN_MAIN, ACCESS_ADMIN,
      route_audit_verify),

    /* policies and groups (§5, §6) */
    R("POST", "/v1/policies/explain", LISTEN_MAIN, ACCESS_ADMIN,
      route_policy_explain),
    R("GET", "/v1/policies", LISTEN_MAIN, ACCESS_ADMIN, route_policy_list),
    R("PUT", "/v1/policies/{}", LISTEN_MAIN, ACCESS_ADMIN, route_policy_put),
    R("GET", "/v1/policies/{}", LISTEN_MAIN, ACCESS_ADMIN, route_policy_get),
    R("DELETE", "/v1/policies/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_policy_delete),
    R("GET", "/v1/groups", LISTEN_MAIN, ACCESS_ADMIN, route_group_list),
    R("PUT", "/v1/groups/{}", LISTEN_MAIN, ACCESS_ADMIN, route_group_put),
    R("GET", "/v1/groups/{}", LISTEN_MAIN, ACCESS_ADMIN, route_group_get),
    R("DELETE", "/v1/groups/{}", LISTEN_MAIN, ACCESS_ADMIN,
      route_group_delete),

    /* tokens (§7) */
    RF("POST", "/v1/token", LISTEN_MAIN, ACCESS_HANDLER, route_token,
       ROUTE_OAUTH_ERRORS),
    R("GET", "/.well-known/jwks.json", LISTEN_ALL, ACCESS_PUBLIC, route_jwks),
    R("GET", "/v1/jwks", LISTEN_ALL, ACCESS_PUBLIC, route_jwks),
    R("POST", "/v1/introspect", LISTEN_ALL, ACCESS_BROKER, route_introspect),
    R("POST", "/v1/tokens/revoke", LISTEN_MAIN, ACCESS_ADMIN,
      route_token_revoke),
    R("POST", "/v1/token-keys", LISTEN_MAIN, ACCESS_ADMIN,
      route_token_key_rotate),
    R("POST", "/v1/devices/{}/secret", LISTEN_MAIN, ACCESS_ADMIN,
      route_device_secret),
    R("GET", "/v1/devices/{}/children", LISTEN_MAIN, ACCESS_ADMIN,
      route_device_children),

    /* gateways (§12): the offline bundle; the handler takes the
     * gateway's client certificate or its access token */
    R("GET", "/v1/gateway/bundle", LISTEN_MAIN, ACCESS_HANDLER,
      route_gateway_bundle),

    /* revocation (§9) */
    R("POST", "/v1/certs/{}/revoke", LISTEN_MAIN, ACCESS_ADMIN,
      route_cert_revoke),
    R("POST", "/v1/devices/{}/revoke", LISTEN_MAIN, ACCESS_ADMIN,
      route_device_revoke),
    R("GET", "/v1/crl", LISTEN_ALL, ACCESS_PUBLIC, route_crl_der),
    R("GET", "/v1/crl.pem", LISTEN_ALL, ACCESS_PUBLIC, route_crl_pem),
    R("POST", "/v1/ocsp", LISTEN_ALL, ACCESS_PUBLIC, route_ocsp_post),
    R("GET", "/v1/ocsp/{*}", LISTEN_ALL, ACCESS_PUBLIC, route_ocsp_get),

};

const http_route *routes_table(size_t *n)
{
    *n = sizeof(table) / sizeof(table[0]);
    return table;
}
