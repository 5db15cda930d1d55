/* The broker-facing check endpoints (docs/api.md §10): /v1/check and its batch
 * form, and the compat endpoints that speak the wire formats brokers
 * already ship (mosquitto-go-auth's HTTP backend, EMQX's HTTP
 * authenticator and authorizer, VerneMQ's webhooks). Each adapter only
 * translates: every decision is checker_check. A deny is never a 5xx,
 * because brokers disconnect clients on backend errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checker.h"
#include "jsonflat.h"
#include "routes.h"
#include "../common/codec.h"
#include "util.h"

enum { BATCH_MAX = 1000 };

/* ---- request bodies: JSON or form --------------------------------------- */

/* The parameters of a compat request: see http_body_params. */
struct params {
    json_t *obj; /* owned */
};

static int params_read(http_req *r, struct params *p)
{
    p->obj = http_body_params(r);
    return p->obj ? 0 : -1;
}

/* A string parameter, "" if absent (numbers were made text on read). */
static const char *param(const struct params *p, const char *key)
{
    const char *v = json_string_value(json_object_get(p->obj, key));

    return v ? v : "";
}

static const char *opt(const char *s)
{
    return s && *s ? s : NULL;
}

/* Every decision goes through here, so /metrics counts them all. */
static void decide(http_req *r, const check_request *req, time_t now,
                   check_result *res)
{
    check_request on_lane = *req;

    on_lane.argon2 = routes_argon2(r);
    checker_check(r->app->checker, &on_lane, now, res);
    /* A device secret that needs argon2id is decided again on the
     * secret lane; this answer is dropped and counts for nothing. */
    if (res->deferred) {
        http_defer(r);
        return;
    }
    http_metric_decision(r->app, res->allow, res->reason);
}

/* ---- /v1/check ------------------------------------------------------------ */

/* A check request's fields, from either parser: value NULL if absent,
 * *ok 0 if present but neither a string nor null. */
typedef const char *(*field_getter)(const void *src, const char *key,
                                    int *ok);
/* A boolean field: 1 or 0, -1 if absent or null, *ok 0 if of another
 * type. */
typedef int (*bool_getter)(const void *src, const char *key, int *ok);

static const char *json_field(const void *src, const char *key, int *ok)
{
    const json_t *v = json_object_get((const json_t *)src, key);

    *ok = v == NULL || json_is_string(v) || json_is_null(v);
    return json_string_value(v);
}

static int json_bool(const void *src, const char *key, int *ok)
{
    const json_t *v = json_object_get((const json_t *)src, key);

    *ok = v == NULL || json_is_boolean(v) || json_is_null(v);
    return json_is_boolean(v) ? json_is_true(v) : -1;
}

static const char *flat_field(const void *src, const char *key, int *ok)
{
    const jsonflat_field *f = jsonflat_get((const jsonflat *)src, key);

    *ok = f == NULL || f->type == JSONFLAT_STRING || f->type == JSONFLAT_NULL;
    return f && f->type == JSONFLAT_STRING ? f->value : NULL;
}

static int flat_bool(const void *src, const char *key, int *ok)
{
    const jsonflat_field *f = jsonflat_get((const jsonflat *)src, key);

    *ok = f == NULL || f->type == JSONFLAT_TRUE || f->type == JSONFLAT_FALSE ||
          f->type == JSONFLAT_NULL;
    return f && f->type == JSONFLAT_TRUE ? 1 : f && f->type == JSONFLAT_FALSE ? 0
                                                                           : -1;
}

/* What one /v1/check object asks: an MQTT action, or a CoAP request
 * that maps onto one or two of them (API §13): GET, observed or not, is
 * subscribe and receive of the path as a topic, both of which must
 * allow; PUT and POST are publish; DELETE is allowed only where publish
 * is. */
typedef struct {
    check_request req;
    int coap;
    pol_action also; /* a second action that must allow too, or 0 */
} check_ask;

/* Fills ask from a /v1/check object; returns a message if malformed.
 * Strings point into src. */
static const char *check_ask_from(field_getter get, bool_getter getb,
                                  const void *src, check_ask *ask)
{
    static const char *const strings[] = {
        "client_id", "username", "password", "cert_fingerprint",
        "cert_serial", "topic", "action", "on_behalf_of",
        "protocol", "method", "path"};
    const char *vals[sizeof(strings) / sizeof(strings[0])];
    check_request *req = &ask->req;
    size_t i;
    int ok, observe;

    memset(ask, 0, sizeof(*ask));
    for (i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        vals[i] = get(src, strings[i], &ok);
        if (!ok)
            return "client_id, username, password, cert_fingerprint, "
                   "cert_serial, topic, action, on_behalf_of, protocol, "
                   "method and path are strings";
    }
    observe = getb(src, "observe", &ok);
    if (!ok)
        return "observe is a boolean";
    req->client_id = vals[0];
    req->username = opt(vals[1]);
    req->password = opt(vals[2]);
    req->cert_fingerprint = opt(vals[3]);
    req->cert_serial = opt(vals[4]);
    req->on_behalf_of = vals[7];
    if (vals[7] && !util_device_id_valid(vals[7]))
        return "on_behalf_of must be a device id";
    if (vals[8] && strcmp(vals[8], "coap") != 0)
        return "protocol must be \"coap\" (or absent for MQTT actions)";
    if (vals[8] == NULL) {
        if (vals[9] || vals[10] || observe >= 0)
            return "method, path and observe go with \"protocol\":\"coap\"";
        req->action = vals[6] ? pol_action_parse(vals[6]) : 0;
        if (req->action == 0)
            return "action must be connect, publish, subscribe or receive";
        req->topic = vals[5];
        if (req->action != POL_CONNECT && req->topic == NULL)
            return "topic is required for publish, subscribe and receive";
        return NULL;
    }
    /* CoAP: the method says what is done to the path; an action beside
     * it would be a second, possibly contradicting, answer. */
    ask->coap = 1;
    if (vals[6] || vals[5])
        return "a CoAP check has method and path, not action or topic";
    if (vals[9] == NULL || vals[10] == NULL)
        return "a CoAP check needs method and path";
    if (vals[10][0] == '/')
        return "path is the topic, without a leading '/'";
    req->topic = vals[10];
    if (strcmp(vals[9], "GET") == 0) {
        req->action = POL_SUBSCRIBE;
        ask->also = POL_RECEIVE;
    } else if (observe == 1) {
        return "observe goes with GET only";
    } else if (strcmp(vals[9], "PUT") == 0 || strcmp(vals[9], "POST") == 0 ||
               strcmp(vals[9], "DELETE") == 0) {
        req->action = POL_PUBLISH;
    } else {
        return "method must be GET, PUT, POST or DELETE";
    }
    return NULL;
}

static const char *check_ask_of(const json_t *o, check_ask *ask)
{
    if (!json_is_object(o)) {
        memset(ask, 0, sizeof(*ask));
        return "each check is a JSON object";
    }
    return check_ask_from(json_field, json_bool, o, ask);
}

/* Decides what ask asks: its action, then the second one a CoAP GET
 * needs, whose deny (or shorter ttl) is the answer. */
static void decide_ask(http_req *r, const check_ask *ask, time_t now,
                       check_result *res)
{
    check_request second;
    check_result res2;

    decide(r, &ask->req, now, res);
    if (!res->allow || ask->also == 0 || res->deferred)
        return;
    second = ask->req;
    second.action = ask->also;
    decide(r, &second, now, &res2);
    if (res2.deferred) {
        check_result_clear(res);
        *res = res2;
        return;
    }
    if (!res2.allow) {
        check_result_clear(res);
        *res = res2;
        return;
    }
    if (res2.ttl < res->ttl)
        res->ttl = res2.ttl;
    check_result_clear(&res2);
}

static json_t *check_answer(const check_result *res, pol_action action)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:i}", "result",
                          res->allow ? "allow" : "deny", "reason", res->reason,
                          "device", res->device, "ttl", (int)res->ttl);

    if (o && res->allow && action == POL_CONNECT) {
        json_object_set(o, "statements",
                        res->statements ? res->statements : json_array());
        json_object_set_new(o, "expire_at",
                            json_integer((json_int_t)res->expire_at));
        if (res->scope)
            json_object_set_new(o, "scope", json_string(res->scope));
    }
    return o;
}

/* Bodies the flat parser is tried on; bigger ones go to jansson. */
enum { FLAT_BODY_MAX = 4096 };

void route_check(http_req *r)
{
    json_t *body = NULL;
    check_ask ask;
    check_result res;
    const char *bad;
    jsonflat flat;
    char scratch[FLAT_BODY_MAX + 4 * JSONFLAT_FIELDS_MAX];

    /* The hot path: a flat object parsed without building a tree. What
     * it does not take (nesting, oddities) jansson judges below. */
    if (r->body_len <= FLAT_BODY_MAX &&
        jsonflat_parse(r->body, r->body_len, scratch, sizeof(scratch),
                       &flat) == 0) {
        bad = check_ask_from(flat_field, flat_bool, &flat, &ask);
    } else {
        if ((body = http_body_object(r)) == NULL)
            return;
        bad = check_ask_of(body, &ask);
    }
    if (bad != NULL) {
        http_reply_error(r, AD_EFIELD, bad);
        json_decref(body);
        return;
    }
    decide_ask(r, &ask, time(NULL), &res);
    if (res.deferred) {
        check_result_clear(&res);
        json_decref(body);
        return;
    }
    if (ask.req.action != POL_CONNECT) {
        /* A fixed shape written directly. Safe without escaping: reasons
         * are static snake_case codes and device ids are restricted to
         * [A-Za-z0-9._:-]. */
        char buf[64 + CHECK_ID_MAX + 64];
        int n = snprintf(buf, sizeof(buf),
                         "{\"result\":\"%s\",\"reason\":\"%s\","
                         "\"device\":\"%s\",\"ttl\":%ld}",
                         res.allow ? "allow" : "deny", res.reason, res.device,
                         res.ttl);
        http_reply_bytes(r, 200, "application/json", buf, (size_t)n);
    } else {
        http_reply_json(r, 200, check_answer(&res, ask.req.action));
    }
    check_result_clear(&res);
    json_decref(body);
}

void route_check_batch(http_req *r)
{
    json_t *body, *checks, *results, *c;
    time_t now = time(NULL);
    size_t i;

    if ((body = http_body_object(r)) == NULL)
        return;
    checks = json_object_get(body, "checks");
    if (!json_is_array(checks) || json_array_size(checks) > BATCH_MAX) {
        http_reply_error(r, AD_EFIELD,
                         "expected {\"checks\": [up to 1000 check objects]}");
        json_decref(body);
        return;
    }
    results = json_array();
    json_array_foreach(checks, i, c) {
        check_ask ask;
        check_result res;
        const char *bad = check_ask_of(c, &ask);

        if (bad) {
            /* One malformed check must not fail its neighbours. */
            json_array_append_new(results,
                                  json_pack("{s:s, s:s, s:s}", "result", "deny",
                                            "reason", "invalid_request",
                                            "error", bad));
            continue;
        }
        decide_ask(r, &ask, now, &res);
        if (res.deferred) {
            check_result_clear(&res);
            json_decref(results);
            json_decref(body);
            return;
        }
        json_array_append_new(results, check_answer(&res, ask.req.action));
        check_result_clear(&res);
    }
    http_reply_json(r, 200, json_pack("{s:o}", "results", results));
    json_decref(body);
}

/* ---- mosquitto-go-auth HTTP backend -------------------------------------- */

static void goauth_answer(http_req *r, int allow, const char *reason)
{
    http_reply_json(r, allow ? 200 : 403,
                    json_pack("{s:b, s:s}", "ok", allow, "error",
                              allow ? "" : reason));
}

void route_goauth_user(http_req *r)
{
    struct params p;
    check_request req;
    check_result res;
    if (params_read(r, &p) != 0)
        return;
    memset(&req, 0, sizeof(req));
    req.action = POL_CONNECT;
    req.username = opt(param(&p, "username"));
    req.password = opt(param(&p, "password"));
    req.client_id = param(&p, "clientid");
    decide(r, &req, time(NULL), &res);
    goauth_answer(r, res.allow, res.reason);
    check_result_clear(&res);
    json_decref(p.obj);
}

void route_goauth_superuser(http_req *r)
{
    struct params p;

    if (params_read(r, &p) != 0)
        return;
    /* Devices are never superusers. */
    goauth_answer(r, 0, "not_superuser");
    json_decref(p.obj);
}

/* Decides one action for a go-auth acl request; 0 with *reason if not. */
static int goauth_decide(http_req *r, check_request *req, pol_action action,
                         const char **reason)
{
    check_result res;
    int allow;

    req->action = action;
    decide(r, req, time(NULL), &res);
    allow = res.allow;
    *reason = res.reason;
    check_result_clear(&res);
    return allow;
}

void route_goauth_acl(http_req *r)
{
    struct params p;
    check_request req;
    uint64_t acc = 0;
    int allow = 0;
    const char *reason = "invalid_acc";

    if (params_read(r, &p) != 0)
        return;
    memset(&req, 0, sizeof(req));
    req.username = opt(param(&p, "username"));
    req.client_id = json_string_value(json_object_get(p.obj, "clientid"));
    req.topic = param(&p, "topic");
    /* Every answer starts from deny: only the four access types
     * go-auth defines can lead to an allow. 1 read (delivery), 2 write
     * (publish), 3 both, 4 subscribe. */
    if (codec_parse_u64(param(&p, "acc"), 4, &acc) != 0)
        acc = 0;
    switch (acc) {
    case 1:
        allow = goauth_decide(r, &req, POL_RECEIVE, &reason);
        break;
    case 2:
        allow = goauth_decide(r, &req, POL_PUBLISH, &reason);
        break;
    case 3:
        allow = goauth_decide(r, &req, POL_RECEIVE, &reason) &&
                goauth_decide(r, &req, POL_PUBLISH, &reason);
        break;
    case 4:
        allow = goauth_decide(r, &req, POL_SUBSCRIBE, &reason);
        break;
    default:
        break;
    }
    goauth_answer(r, allow, reason);
    json_decref(p.obj);
}

/* ---- EMQX 5 HTTP authenticator and authorizer ---------------------------- */


void route_emqx_authn(http_req *r)
{
    struct params p;
    check_request req;
    check_result res;
    json_t *out, *acl;

    if (params_read(r, &p) != 0)
        return;
    memset(&req, 0, sizeof(req));
    req.action = POL_CONNECT;
    req.username = opt(param(&p, "username"));
    req.password = opt(param(&p, "password"));
    req.client_id = param(&p, "clientid");
    req.cert_cn = opt(param(&p, "cert_common_name"));
    /* EMQX verified the client certificate against our CA; with
     * ${cert_pem} in its body template the decision binds to that very
     * certificate, with only the CN it is refused unless the operator
     * trusts CNs (checker.h). */
    req.cert_pem = opt(param(&p, "cert_pem"));
    req.trust_cert_cn = req.cert_cn != NULL;
    req.want_emqx_acl = 1;
    decide(r, &req, time(NULL), &res);
    if (!res.allow || res.emqx_acl == NULL) {
        http_reply_json(r, 200, json_pack("{s:s}", "result", "deny"));
    } else {
        /* EMQX reads "acl" and "expire_at" here from 5.8.0 on (its
         * documentation); older versions ignore both and ask authz. */
        acl = json_incref(res.emqx_acl);
        out = json_pack("{s:s, s:b, s:o}", "result", "allow", "is_superuser",
                        0, "acl", acl);
        if (res.expire_at > 0)
            json_object_set_new(out, "expire_at",
                                json_integer((json_int_t)res.expire_at));
        http_reply_json(r, 200, out);
    }
    check_result_clear(&res);
    json_decref(p.obj);
}

void route_emqx_authz(http_req *r)
{
    struct params p;
    check_request req;
    check_result res;
    const char *action;

    if (params_read(r, &p) != 0)
        return;
    memset(&req, 0, sizeof(req));
    req.username = opt(param(&p, "username"));
    req.client_id = json_string_value(json_object_get(p.obj, "clientid"));
    req.topic = json_string_value(json_object_get(p.obj, "topic"));
    action = json_string_value(json_object_get(p.obj, "action"));
    req.action = action && strcmp(action, "publish") == 0     ? POL_PUBLISH
                 : action && strcmp(action, "subscribe") == 0 ? POL_SUBSCRIBE
                                                              : 0;
    if (req.action == 0 || req.topic == NULL) {
        http_reply_json(r, 200, json_pack("{s:s}", "result", "deny"));
        json_decref(p.obj);
        return;
    }
    decide(r, &req, time(NULL), &res);
    http_reply_json(r, 200,
                    json_pack("{s:s}", "result", res.allow ? "allow" : "deny"));
    check_result_clear(&res);
    json_decref(p.obj);
}

/* ---- VerneMQ webhooks ----------------------------------------------------- */

/* VerneMQ's webhooks cache an answer only when it carries
 * cache-control: max-age, for that long: the check's ttl (0 for a
 * deny, which is never cached). */
static void vmq_cache_for(http_req *r, long seconds)
{
    r->cache_max_age = seconds > 0 ? seconds : 0;
}

static void vmq_not_allowed(http_req *r)
{
    http_reply_json(r, 200,
                    json_pack("{s:{s:s}}", "result", "error", "not_allowed"));
}

void route_vernemq(http_req *r)
{
    const char *hook = r->param[0] ? r->param[0] : http_header(r, "vernemq-hook");
    struct params p;
    check_request req;
    check_result res;
    time_t now = time(NULL);
    int m5;

    if (hook == NULL) {
        http_reply_error(r, AD_ENOTFOUND,
                         "name the hook in the path or a vernemq-hook header");
        return;
    }
    if (params_read(r, &p) != 0)
        return;
    m5 = strlen(hook) > 3 && strcmp(hook + strlen(hook) - 3, "_m5") == 0;
    memset(&req, 0, sizeof(req));
    req.username = opt(param(&p, "username"));
    req.client_id = json_string_value(json_object_get(p.obj, "client_id"));

    if (strncmp(hook, "auth_on_register", 16) == 0 &&
        (hook[16] == '\0' || m5)) {
        req.action = POL_CONNECT;
        req.password = opt(json_string_value(json_object_get(p.obj, "password")));
        /* With forward_connection_opts VerneMQ passes the client
         * certificate: the decision binds to it. Without a password or
         * a certificate the username can only be the certificate's CN
         * (use_identity_as_username): a CN-only connect. */
        req.cert_pem = opt(param(&p, "client_cert"));
        if (req.password == NULL && req.cert_pem == NULL) {
            req.cert_cn = req.username;
            req.trust_cert_cn = 1;
        }
        decide(r, &req, now, &res);
        if (res.allow)
            http_reply_json(r, 200, json_pack("{s:s}", "result", "ok"));
        else
            vmq_not_allowed(r);
        vmq_cache_for(r, res.allow ? res.ttl : 0);
        check_result_clear(&res);
    } else if (strncmp(hook, "auth_on_publish", 15) == 0 &&
               (hook[15] == '\0' || m5)) {
        req.action = POL_PUBLISH;
        req.topic = json_string_value(json_object_get(p.obj, "topic"));
        if (req.topic == NULL) {
            vmq_not_allowed(r);
        } else {
            decide(r, &req, now, &res);
            if (res.allow)
                http_reply_json(r, 200, json_pack("{s:s}", "result", "ok"));
            else
                vmq_not_allowed(r);
            vmq_cache_for(r, res.allow ? res.ttl : 0);
            check_result_clear(&res);
        }
    } else if (strncmp(hook, "auth_on_subscribe", 17) == 0 &&
               (hook[17] == '\0' || m5)) {
        json_t *topics = json_object_get(p.obj, "topics"), *t, *granted;
        size_t i;
        int all_allowed = 1;
        long max_age = -1, this_age;

        if (!json_is_array(topics) || json_array_size(topics) > BATCH_MAX) {
            vmq_not_allowed(r);
            json_decref(p.obj);
            return;
        }
        granted = json_array();
        req.action = POL_SUBSCRIBE;
        json_array_foreach(topics, i, t) {
            json_t *entry = json_is_object(t) ? json_deep_copy(t) : NULL;

            req.topic = json_string_value(json_object_get(t, "topic"));
            res.allow = 0;
            res.ttl = 0;
            if (req.topic) {
                decide(r, &req, now, &res);
                check_result_clear(&res);
            }
            /* The answer covers every filter: cached no longer than the
             * shortest of their decisions. */
            this_age = res.allow ? res.ttl : 0;
            if (max_age < 0 || this_age < max_age)
                max_age = this_age;
            if (res.allow) {
                /* Kept exactly as sent: VerneMQ resets whatever options
                 * (no_local, rap, retain_handling) an answer leaves out. */
                json_array_append_new(granted, entry);
                continue;
            }
            all_allowed = 0;
            /* A refused filter keeps its place with the failure code
             * (0x80, or 0x87 "not authorized" in MQTT 5). */
            if (entry == NULL)
                entry = json_pack("{s:s}", "topic", "");
            json_object_set_new(entry, "qos",
                                json_integer(m5 ? 135 : 128));
            json_array_append_new(granted, entry);
        }
        if (all_allowed)
            /* Nothing to change: the subscription goes through with all
             * its options and its subscription identifier untouched. */
            http_reply_json(r, 200, json_pack("{s:s}", "result", "ok"));
        else if (m5)
            http_reply_json(r, 200,
                            json_pack("{s:s, s:{s:o}}", "result", "ok",
                                      "modifiers", "topics", granted));
        else
            http_reply_json(r, 200,
                            json_pack("{s:s, s:o}", "result", "ok", "topics",
                                      granted));
        if (all_allowed)
            json_decref(granted);
        vmq_cache_for(r, max_age < 0 ? 0 : max_age);
    } else {
        /* Hooks we do not decide on pass through unchanged. */
        http_reply_json(r, 200, json_pack("{s:s}", "result", "next"));
    }
    json_decref(p.obj);
}
