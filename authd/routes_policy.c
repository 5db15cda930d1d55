/* Admin handlers for policies and groups (docs/api.md §7, §6) and the explain
 * endpoint. The registry writes each change with its "policy_changed"
 * event; compiled policies follow the store's change feed. */
#include <string.h>

#include "checker.h"
#include "registry_policies.h"
#include "routes.h"
#include "util.h"

/* Puts the named record of kind (the route's name) holding value. */
static void put_named(http_req *r, registry_named_kind kind,
                      const json_t *value)
{
    json_t *view = NULL;
    char why[256] = "";
    int created = 0;
    ad_err e = registry_named_put(r->app->st, kind, r->actor, r->param[0],
                                  value, &view, &created, why, sizeof(why));

    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "not found"
                               : why[0]          ? why
                                                 : NULL);
    else
        http_reply_json(r, created ? 201 : 200, view);
}

static void get_named(http_req *r, registry_named_kind kind)
{
    json_t *view = NULL;
    ad_err e = registry_named_get(r->app->st, kind, r->param[0], &view);

    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "not found" : NULL);
    else
        http_reply_json(r, 200, view);
}

static void delete_named(http_req *r, registry_named_kind kind)
{
    const char *force = http_query(r, "force");
    char why[1024] = "";
    ad_err e;

    if (force && strcmp(force, "true") != 0 && strcmp(force, "false") != 0) {
        http_reply_error(r, AD_EFIELD, "force must be true or false");
        return;
    }
    e = registry_named_delete(r->app->st, kind, r->actor, r->param[0],
                              force && strcmp(force, "true") == 0, why,
                              sizeof(why));
    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "not found"
                               : why[0]          ? why
                                                 : NULL);
    else
        http_reply_empty(r, 204);
}

static void list_named(http_req *r, registry_named_kind kind)
{
    registry_page pg;
    registry_list l;

    if (routes_page(r, &pg) == 0)
        routes_reply_list(r, registry_named_list(r->app->st, kind, &pg, &l),
                          &l);
}

/* ---- policies ----------------------------------------------------------- */

void route_policy_put(http_req *r)
{
    char msg[256] = "";
    json_t *doc;
    ad_err e;

    if (!util_name_valid(r->param[0])) {
        http_reply_error(r, AD_EFIELD,
                         "policy names are 1..128 bytes of [A-Za-z0-9._:-]");
        return;
    }
    if ((doc = http_body_object(r)) == NULL)
        return;
    e = pol_doc_validate(doc, msg, sizeof(msg));
    if (e != AD_OK)
        http_reply_error(r, e, msg);
    else
        put_named(r, REGISTRY_POLICY, doc);
    json_decref(doc);
}

void route_policy_get(http_req *r)
{
    get_named(r, REGISTRY_POLICY);
}

void route_policy_delete(http_req *r)
{
    delete_named(r, REGISTRY_POLICY);
}

void route_policy_list(http_req *r)
{
    list_named(r, REGISTRY_POLICY);
}

/* ---- groups ----------------------------------------------------------- */

void route_group_put(http_req *r)
{
    json_t *body, *policies;

    if (!util_name_valid(r->param[0])) {
        http_reply_error(r, AD_EFIELD,
                         "group names are 1..128 bytes of [A-Za-z0-9._:-]");
        return;
    }
    if ((body = http_body_object(r)) == NULL)
        return;
    policies = json_object_get(body, "policies");
    policies = policies ? json_incref(policies) : json_array();
    if (!registry_names_valid(policies))
        http_reply_error(r, AD_EFIELD,
                         "policies must be an array of up to 64 policy names");
    else
        put_named(r, REGISTRY_GROUP, policies);
    json_decref(policies);
    json_decref(body);
}

void route_group_get(http_req *r)
{
    get_named(r, REGISTRY_GROUP);
}

void route_group_delete(http_req *r)
{
    delete_named(r, REGISTRY_GROUP);
}

void route_group_list(http_req *r)
{
    list_named(r, REGISTRY_GROUP);
}

/* ---- explain ------------------------------------------------------------ */

void route_policy_explain(http_req *r)
{
    json_t *body, *stmt;
    const char *device, *action_name, *subject;
    pol_action action;
    check_result res;

    if ((body = http_body_object(r)) == NULL)
        return;
    device = json_string_value(json_object_get(body, "device"));
    action_name = json_string_value(json_object_get(body, "action"));
    action = action_name ? pol_action_parse(action_name) : 0;
    subject = json_string_value(json_object_get(
        body, action == POL_CONNECT ? "client_id" : "topic"));
    if (!util_device_id_valid(device) || action == 0 || subject == NULL) {
        http_reply_error(r, AD_EFIELD,
                         "expected {\"device\", \"action\": "
                         "connect|publish|subscribe|receive, \"topic\" (or "
                         "\"client_id\" for connect)}");
        json_decref(body);
        return;
    }
    checker_explain(r->app->checker, device, action, subject, &res);
    if (strcmp(res.reason, "unknown_device") == 0) {
        http_reply_error(r, AD_ENOTFOUND, "no such device");
    } else {
        stmt = res.policy[0] ? json_pack("{s:s, s:i}", "policy", res.policy,
                                         "index", res.statement)
                             : json_null();
        http_reply_json(r, 200,
                        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "result",
                                  res.allow ? "allow" : "deny", "reason",
                                  res.reason, "device", device, "action",
                                  pol_action_name(action),
                                  action == POL_CONNECT ? "client_id" : "topic",
                                  subject, "statement", stmt));
    }
    check_result_clear(&res);
    json_decref(body);
}
