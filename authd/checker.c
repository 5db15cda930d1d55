/* See checker.h. The decisions: checker_check establishes one identity
 * for the connection from every credential the broker passes (each
 * lookup is identity.c's), then decides with the device's shared policy
 * set, its variables bound to this connection (devcache.c). Nothing here
 * reads the store itself. */
#include <stdlib.h>
#include <string.h>

#include "checker.h"
#include "devcache.h"
#include "identity.h"
#include "tokens.h"
#include "util.h"

enum {
    /* Of the cache budget: device records get the most, certificates
     * (two entries each, looked up mostly on connect) a quarter. */
    CERT_BUDGET_SHARE = 4
};

struct checker {
    tokens *tokens;
    long ttl;
    int trust_cn_only;
    devcache *devices;
    identity *ids;
};

/* ---- lifecycle ----------------------------------------------------------- */

ad_err checker_open(store *st, const checker_opts *opts, checker **out)
{
    size_t budget = opts->cache_bytes ? opts->cache_bytes
                                      : (size_t)CHECKER_CACHE_DEFAULT_MB << 20;
    checker *c;
    ad_err e;

    *out = NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return AD_ENOMEM;
    c->ttl = opts->ttl;
    c->trust_cn_only = opts->trust_cn_only;
    if ((e = devcache_open(st, budget - budget / CERT_BUDGET_SHARE,
                           &c->devices)) != AD_OK ||
        (e = identity_open(st, budget / CERT_BUDGET_SHARE, c->devices,
                           &c->ids)) != AD_OK) {
        checker_close(c);
        return e;
    }
    *out = c;
    return AD_OK;
}

void checker_close(checker *c)
{
    if (c == NULL)
        return;
    identity_close(c->ids);
    devcache_close(c->devices);
    free(c);
}

void check_result_clear(check_result *r)
{
    json_decref(r->statements);
    r->statements = NULL;
    free(r->scope);
    r->scope = NULL;
    json_decref(r->emqx_acl);
    r->emqx_acl = NULL;
}

void checker_set_race_hook(checker *c, void (*hook)(void *arg), void *arg)
{
    devcache_set_race_hook(c->devices, hook, arg);
    identity_set_race_hook(c->ids, hook, arg);
}

void checker_set_limits(checker *c, rl *limits)
{
    identity_set_limits(c->ids, limits);
}

void checker_set_tokens(checker *c, tokens *t)
{
    c->tokens = t;
}

void checker_get_stats(checker *c, checker_stats *out)
{
    devcache_stats ds;

    devcache_get_stats(c->devices, &ds);
    out->devices = ds.devices;
    out->sets = ds.sets;
    identity_get_stats(c->ids, &out->certs);
}

/* ---- invalidation -------------------------------------------------------- */

void checker_forget_device(checker *c, const char *device_id)
{
    devcache_forget(c->devices, device_id);
}

void checker_forget_policies(checker *c)
{
    devcache_forget_policies(c->devices);
}

void checker_forget_cert(checker *c, const char *serial_hex,
                         const char *fingerprint_hex)
{
    identity_forget_cert(c->ids, serial_hex, fingerprint_hex);
}

void checker_forget_all(checker *c)
{
    identity_forget_all(c->ids);
    devcache_forget_all(c->devices);
}

/* ---- deciding ------------------------------------------------------------ */

void check_result_deny(check_result *out, const char *reason)
{
    out->allow = 0;
    out->reason = reason;
    out->ttl = 0;
}

/* A JWT is three base64url segments. */
static int looks_like_jwt(const char *s)
{
    const char *dot1, *dot2;

    if (s == NULL || strncmp(s, "eyJ", 3) != 0)
        return 0;
    dot1 = strchr(s, '.');
    dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    return dot2 != NULL && strchr(dot2 + 1, '.') == NULL;
}

/* Validates a token password; on failure sets a deny and returns 0. */
static int token_identity(checker *c, const check_request *req, time_t now,
                          token_entry **tok, check_result *out)
{
    char why[128] = "";

    if (c->tokens == NULL ||
        tokens_validate(c->tokens, req->password, (int64_t)now, tok, why,
                        sizeof(why)) != AD_OK) {
        check_result_deny(out, strstr(why, "revoked")   ? "token_revoked"
                               : strstr(why, "expired") ? "token_expired"
                                                        : "invalid_token");
        return 0;
    }
    return 1;
}

/* What a connect that is allowed takes back to the broker: the
 * statements with this connection's variables substituted (a plugin
 * decides locally with them), and EMQX's rules if asked. */
static void connect_export(const dev_view *dv, const pol_vars *vars,
                           const check_request *req, const token_entry *tok,
                           check_result *out)
{
    pol_set *bound = NULL;

    /* The statements alone need no tries: a fraction of a compile. */
    if (!req->want_emqx_acl) {
        if ((out->statements = dev_view_statements(dv, vars)) == NULL) {
            check_result_clear(out);
            check_result_deny(out, "policy_error");
        }
        return;
    }
    if (dev_view_bind(dv, vars, &bound) != AD_OK ||
        (out->statements = pol_set_statements(bound)) == NULL ||
        (req->want_emqx_acl &&
         (out->emqx_acl = pol_emqx_acl(bound, tok ? tok->scope : NULL)) ==
             NULL)) {
        check_result_clear(out);
        check_result_deny(out, "policy_error");
    }
    pol_set_free(bound);
}

struct decide_arg {
    checker *c;
    const char *device_id;
    const char *gateway;   /* on behalf of device_id: its gateway */
    const check_request *req;
    const token_entry *tok;
    int bound_ok;
    check_result *out;
    dev_view keep; /* an allowed connect's device, to export after */
    int export;
};

/* The decision itself, under the device's cache lock (devcache_use). */
static int decide_locked(const dev_view *dv, void *arg)
{
    struct decide_arg *da = arg;
    const check_request *req = da->req;
    check_result *out = da->out;
    pol_vars vars;
    const pol_set *set;
    pol_decision dec;
    const char *subject;

    /* Only a child's own gateway acts for it; an unknown child answers
     * the same, so a gateway cannot probe the registry for ids. */
    if (da->gateway &&
        (dv->gateway == NULL || strcmp(dv->gateway, da->gateway) != 0)) {
        check_result_deny(out, "not_gateway");
        return 0;
    }
    if (dv->status != DEVICE_ACTIVE) {
        check_result_deny(out, dv->status == DEVICE_SUSPENDED
                                   ? "device_suspended"
                                   : "device_revoked");
        return 0;
    }
    /* A token minted for an earlier device of the same id (deleted,
     * then created again) is not this device's. */
    if (da->tok && strcmp(da->tok->incarnation, dv->incarnation) != 0) {
        check_result_deny(out, "token_for_another_device");
        return 0;
    }
    /* A token bound to a certificate lives no longer than it: revoking
     * the certificate ends the token too. */
    if (!da->bound_ok) {
        check_result_deny(out, "token_certificate_revoked");
        return 0;
    }
    if ((set = dev_view_policy(dv)) == NULL) {
        check_result_deny(out, "policy_error");
        return 0;
    }
    dev_view_vars(dv, da->device_id, req->client_id, req->username,
                  req->cert_cn, &vars);
    subject = req->action == POL_CONNECT
                  ? (req->client_id ? req->client_id : "")
                  : (req->topic ? req->topic : "");
    if (da->gateway && req->action == POL_CONNECT)
        subject = da->device_id;
    dec = pol_decide_bound(set, &vars, req->action, subject);
    /* A token session may do only what both its scope and the policy
     * allow; connect is the policy's alone. */
    if (dec.allow && da->tok && req->action != POL_CONNECT) {
        pol_decision sdec =
            pol_decide(da->tok->scope_set, req->action, subject);
        if (!sdec.allow) {
            dec = sdec;
            dec.reason = "outside_token_scope";
        }
    }
    out->allow = dec.allow;
    out->reason = dec.reason ? dec.reason : (dec.allow ? "allowed" : "denied");
    util_strlcpy(out->policy, dec.policy ? dec.policy : "",
                 sizeof(out->policy));
    out->statement = dec.statement;
    /* The export compiles: not under the lock. */
    if (dec.allow && req->action == POL_CONNECT) {
        dev_view_ref(dv, &da->keep);
        da->export = 1;
    }
    return 0;
}

/* Decides on an established device identity; or, with gateway, for
 * device_id on behalf of that gateway (already found fit to act). */
static void decide_for(checker *c, const char *device_id, const char *gateway,
                       const check_request *req, const token_entry *tok,
                       time_t now, check_result *out)
{
    struct decide_arg da;
    pol_vars vars;
    int unused;
    ad_err err;

    memset(&da, 0, sizeof(da));
    da.c = c;
    da.device_id = device_id;
    da.gateway = gateway;
    da.req = req;
    da.tok = tok;
    da.out = out;
    util_strlcpy(out->device, device_id, sizeof(out->device));
    da.bound_ok = tok == NULL || !tok->has_cnf ||
                  identity_bound_cert_valid(c->ids, tok, now);
    err = devcache_use(c->devices, device_id, decide_locked, &da, &unused);
    if (err != AD_OK) {
        check_result_deny(out, err != AD_ENOTFOUND ? "store_error"
                               : gateway           ? "not_gateway"
                                                   : "unknown_device");
        return;
    }
    if (da.export) {
        dev_view_vars(&da.keep, device_id, req->client_id, req->username,
                      req->cert_cn, &vars);
        connect_export(&da.keep, &vars, req, tok, out);
        dev_view_release(&da.keep);
    }
    if (!out->allow) {
        out->ttl = 0;
        return;
    }
    out->ttl = c->ttl;
    if (out->expire_at > 0 && out->expire_at - (int64_t)now < out->ttl)
        out->ttl = out->expire_at > (int64_t)now
                       ? (long)(out->expire_at - (int64_t)now)
                       : 0;
}

struct gate_arg {
    const token_entry *tok;
    int bound_ok;
    const char *reason; /* NULL: the gateway may act */
};

/* Whether the connecting device may act at all (under its cache lock):
 * active, and its credential still its own. */
static int gate_locked(const dev_view *dv, void *arg)
{
    struct gate_arg *ga = arg;

    if (dv->status != DEVICE_ACTIVE)
        ga->reason = dv->status == DEVICE_SUSPENDED ? "gateway_suspended"
                                                    : "gateway_revoked";
    else if (ga->tok && strcmp(ga->tok->incarnation, dv->incarnation) != 0)
        ga->reason = "token_for_another_device";
    else if (!ga->bound_ok)
        ga->reason = "token_certificate_revoked";
    return 0;
}

/* A decision for child on behalf of gateway, the connection's device:
 * the gateway must be fit to act and be the child's gateway, and then
 * the child decides as if it had connected itself, by its device id. */
static void decide_on_behalf(checker *c, const char *gateway,
                             const check_request *req, const token_entry *tok,
                             time_t now, check_result *out)
{
    const char *child = req->on_behalf_of;
    struct gate_arg ga;
    check_request creq;
    int unused;
    ad_err err;

    util_strlcpy(out->device, child, sizeof(out->device));
    if (!util_device_id_valid(child)) {
        check_result_deny(out, "not_gateway");
        return;
    }
    memset(&ga, 0, sizeof(ga));
    ga.tok = tok;
    ga.bound_ok = tok == NULL || !tok->has_cnf ||
                  identity_bound_cert_valid(c->ids, tok, now);
    err = devcache_use(c->devices, gateway, gate_locked, &ga, &unused);
    if (err != AD_OK || ga.reason) {
        check_result_deny(out, err == AD_ENOTFOUND ? "unknown_device"
                               : err != AD_OK      ? "store_error"
                                                   : ga.reason);
        return;
    }
    creq = *req;
    creq.client_id = child;
    creq.username = child;
    creq.cert_cn = NULL;
    creq.on_behalf_of = NULL;
    decide_for(c, child, gateway, &creq, NULL, now, out);
}

void checker_check(checker *c, const check_request *req, time_t now,
                   check_result *out)
{
    cert_rec ce;
    const char *device_id = NULL, *why = NULL;
    token_entry *tok = NULL;
    check_request local = *req;
    int have_cert, named_by_cn;

    memset(out, 0, sizeof(*out));
    out->statement = -1;
    check_result_deny(out, "denied");
    if (req->action != POL_CONNECT && req->action != POL_PUBLISH &&
        req->action != POL_SUBSCRIBE && req->action != POL_RECEIVE) {
        check_result_deny(out, "invalid_action");
        return;
    }
    /* Every credential the broker passes must name one and the same
     * device: the certificate (however named), a token, the CN, the
     * username. Each step below either agrees or denies. */
    if ((have_cert = identity_named_cert(c->ids, req, now, &ce, &why)) < 0) {
        check_result_deny(out, why);
        return;
    }
    named_by_cn = req->trust_cert_cn && req->cert_cn && *req->cert_cn;
    if (req->password && *req->password && looks_like_jwt(req->password)) {
        if (!token_identity(c, req, now, &tok, out))
            return;
        if (have_cert && !identity_token_fits_cert(tok, &ce)) {
            check_result_deny(out, "token_certificate_mismatch");
            goto out;
        }
        device_id = tok->sub;
        out->expire_at = tok->exp;
        if (have_cert && ce.not_after < out->expire_at)
            out->expire_at = ce.not_after;
    } else if (have_cert) {
        device_id = ce.device;
        out->expire_at = ce.not_after;
    }
    if (named_by_cn) {
        if (device_id != NULL) {
            /* A CN beside a stronger credential must agree with it. */
            if (strcmp(req->cert_cn, device_id) != 0) {
                check_result_deny(out, tok && !have_cert
                                           ? "token_certificate_mismatch"
                                           : "certificate_mismatch");
                goto out;
            }
            /* A bound token binds to one certificate; a CN names any of
             * the device's, revoked ones included. */
            if (tok && tok->has_cnf && !have_cert && !c->trust_cn_only) {
                check_result_deny(out, "certificate_required");
                goto out;
            }
        } else if (!(req->password && *req->password)) {
            /* A CN alone cannot tell which of the device's certificates
             * was presented, revoked or not. */
            if (!c->trust_cn_only) {
                check_result_deny(out, "certificate_required");
                goto out;
            }
            if (!util_device_id_valid(req->cert_cn)) {
                check_result_deny(out, "unknown_device");
                goto out;
            }
            if (!identity_device_has_valid_cert(c->ids, req->cert_cn, now,
                                       &out->expire_at)) {
                check_result_deny(out, "no_valid_certificate");
                goto out;
            }
            device_id = req->cert_cn;
        }
    }
    if (device_id == NULL) {
        /* No certificate or token: the username is the device, proven on
         * connect by its secret and trusted afterwards (the broker asks
         * only about connections it accepted). */
        const char *claimed = req->username;

        if ((claimed == NULL || *claimed == '\0') && named_by_cn)
            claimed = req->cert_cn;
        if (claimed == NULL || *claimed == '\0') {
            check_result_deny(out, "no_identity");
            goto out;
        }
        if (named_by_cn && strcmp(claimed, req->cert_cn) != 0) {
            check_result_deny(out, "certificate_mismatch");
            goto out;
        }
        if (!util_device_id_valid(claimed)) {
            check_result_deny(out, "unknown_device");
            goto out;
        }
        if (req->action == POL_CONNECT) {
            util_strlcpy(out->device, claimed, sizeof(out->device));
            if (req->password == NULL || *req->password == '\0') {
                check_result_deny(out, "no_credential");
                goto out;
            }
            if (!identity_secret_ok(c->ids, claimed, req->password, req->argon2,
                                    out))
                goto out;
        }
        device_id = claimed;
    }
    /* Brokers key every later decision by username: a connection
     * authenticated as one device must not go on as another, nor choose
     * ${username} in its own statements. */
    if (req->username && *req->username &&
        strcmp(req->username, device_id) != 0) {
        util_strlcpy(out->device, device_id, sizeof(out->device));
        check_result_deny(out, "username_mismatch");
        goto out;
    }
    /* ${cert.cn} is the CN of the certificate that identified the
     * client: authd writes CN=<device id> into every device cert. */
    if (have_cert && local.cert_cn == NULL)
        local.cert_cn = ce.device;
    if (req->on_behalf_of) {
        decide_on_behalf(c, device_id, &local, tok, now, out);
        goto out;
    }
    decide_for(c, device_id, NULL, &local, tok, now, out);
    /* A plugin deciding locally for a token session needs the scope
     * too: it narrows the statements. */
    if (out->allow && tok && req->action == POL_CONNECT)
        out->scope = strdup(tok->scope);
out:
    token_release(tok);
}

void checker_explain(checker *c, const char *device_id, pol_action action,
                     const char *subject, check_result *out)
{
    check_request req;

    memset(out, 0, sizeof(*out));
    out->statement = -1;
    memset(&req, 0, sizeof(req));
    req.action = action;
    req.username = device_id;
    if (action == POL_CONNECT)
        req.client_id = subject;
    else
        req.topic = subject;
    decide_for(c, device_id, NULL, &req, NULL, 0, out);
    out->ttl = 0;
}

int checker_device_secret_ok(checker *c, const char *device_id,
                             const char *secret, check_argon2 argon2,
                             const char **reason)
{
    check_result res;

    memset(&res, 0, sizeof(res));
    *reason = "invalid_credential";
    if (!identity_secret_ok(c->ids, device_id, secret, argon2, &res)) {
        if (res.reason)
            *reason = res.reason;
        return 0;
    }
    return checker_device_active(c, device_id, NULL);
}

int checker_device_active(checker *c, const char *device_id,
                          const char *incarnation)
{
    dev_view dv;
    int active;

    if (devcache_get(c->devices, device_id, &dv) != AD_OK)
        return 0;
    active = dv.status == DEVICE_ACTIVE &&
             (incarnation == NULL || strcmp(incarnation, dv.incarnation) == 0);
    dev_view_release(&dv);
    return active;
}

ad_err checker_grant_scope(checker *c, const char *device_id,
                           const char *requested, char **granted,
                           json_t **acl, char incarnation[17], char *err,
                           size_t errlen)
{
    dev_view dv;
    pol_vars vars;
    pol_set *set = NULL;
    char *scope = NULL;
    json_t *rules = NULL;
    ad_err e;

    *granted = NULL;
    *acl = NULL;
    if ((e = devcache_get(c->devices, device_id, &dv)) != AD_OK)
        return e == AD_ENOTFOUND ? AD_EBADCRED : e;
    if (dv.status != DEVICE_ACTIVE) {
        e = dv.status == DEVICE_SUSPENDED ? AD_ESUSPENDED : AD_EREVOKED;
        goto out;
    }
    /* A token's subject connects as itself: client id = username =
     * device id. */
    dev_view_vars(&dv, device_id, device_id, device_id, NULL, &vars);
    if (dev_view_policy(&dv) == NULL ||
        dev_view_bind(&dv, &vars, &set) != AD_OK) {
        e = AD_EINTERNAL;
        goto out;
    }
    e = pol_scope_grant(set, requested, &scope, err, errlen);
    if (e == AD_OK && (rules = pol_emqx_acl(set, scope)) == NULL)
        e = AD_ENOMEM;
    if (e != AD_OK)
        goto out;
    util_strlcpy(incarnation, dv.incarnation, REGISTRY_INCARNATION_MAX);
    *granted = scope;
    *acl = rules;
    scope = NULL;
out:
    free(scope);
    pol_set_free(set);
    dev_view_release(&dv);
    return e;
}

ad_err checker_device_statements(checker *c, const char *device_id,
                                 registry_device_status *status,
                                 json_t **statements)
{
    dev_view dv;
    pol_vars vars;
    json_t *sts;
    ad_err e;

    *statements = NULL;
    if ((e = devcache_get(c->devices, device_id, &dv)) != AD_OK)
        return e;
    dev_view_vars(&dv, device_id, device_id, device_id, NULL, &vars);
    sts = dev_view_policy(&dv) == NULL ? json_array()
                                       : dev_view_statements(&dv, &vars);
    if (sts == NULL) {
        e = AD_ENOMEM;
    } else {
        *status = dv.status;
        *statements = sts;
    }
    dev_view_release(&dv);
    return e;
}

ad_err checker_cert_status(checker *c, const char *serial_hex, int *revoked,
                           int64_t *revoked_at, int *reason)
{
    cert_rec ce;
    ad_err e = identity_cert(c->ids, serial_hex, NULL, &ce);

    if (e != AD_OK)
        return e;
    *revoked = ce.revoked;
    *revoked_at = ce.revoked_at;
    *reason = ce.reason;
    return AD_OK;
}

int checker_token_active(checker *c, const token_entry *tok, time_t now)
{
    if (tok->has_cnf && !identity_bound_cert_valid(c->ids, tok, now))
        return 0;
    return checker_device_active(c, tok->sub, tok->incarnation);
}
