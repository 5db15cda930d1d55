/* Admin handlers for policies and groups (docs/api.md §7, §6) and the explain
 * endpoint. A policy or group write bumps the checker's generation after
 * it commits, so the next check compiles against the new documents. */
#include <string.h>
#include <time.h>

#include "checker.h"
#include "registry.h"
#include "routes.h"
#include "util.h"

enum { GROUP_POLICIES_MAX = 64 };

struct named_write {
    const char *actor;
    const char *action;
    store_table table;
    const char *name;
    json_t *rec;   /* put: the record; NULL: delete */
    int created;
};

static ad_err named_write(store_txn *tx, void *arg)
{
    struct named_write *w = arg;
    json_t *old = NULL;
    ad_err e;

    if (w->rec == NULL) {
        e = store_del(tx, w->table, w->name);
    } else {
        w->created = store_get(tx, w->table, w->name, &old) == AD_ENOTFOUND;
        json_decref(old);
        e = store_put(tx, w->table, w->name, w->rec, 0);
    }
    if (e == AD_OK)
        e = store_audit(tx, w->actor, w->action, w->name, NULL);
    if (e == AD_OK)
        e = registry_event(tx, "policy_changed",
                           w->table == STORE_POLICIES ? "policy" : "group",
                           w->name);
    return e;
}

/* Writes (rec) or deletes (rec NULL) a named record (compiled policies
 * follow the store's change feed). Replies with the error, or returns AD_OK. */
static ad_err write_named(http_req *r, store_table t, const char *action,
                          json_t *rec, int *created)
{
    struct named_write w;
    ad_err e;

    memset(&w, 0, sizeof(w));
    w.actor = r->actor;
    w.action = action;
    w.table = t;
    w.name = r->param[0];
    w.rec = rec;
    e = store_write(r->app->st, named_write, &w);
    if (e != AD_OK) {
        http_reply_error(r, e, e == AD_ENOTFOUND ? "not found" : NULL);
        return e;
    }
    if (created)
        *created = w.created;
    return AD_OK;
}

static json_t *read_named(http_req *r, store_table t)
{
    store_txn *tx = NULL;
    json_t *rec = NULL;
    ad_err e;

    e = store_read_begin(r->app->st, &tx);
    if (e == AD_OK)
        e = store_get(tx, t, r->param[0], &rec);
    store_read_end(tx);
    if (e != AD_OK)
        http_reply_error(r, e, e == AD_ENOTFOUND ? "not found" : NULL);
    return rec;
}

/* Policy lists show names and sizes, not whole documents. */
static json_t *policy_summary(const json_t *rec)
{
    return json_pack("{s:O?, s:I, s:O?}", "name", json_object_get(rec, "name"),
                     "statement_count",
                     (json_int_t)json_array_size(json_object_get(
                         json_object_get(rec, "document"), "statements")),
                     "updated_at", json_object_get(rec, "updated_at"));
}

/* ---- policies ----------------------------------------------------------- */

void route_policy_put(http_req *r)
{
    json_t *doc, *rec;
    char msg[256] = "", now[32];
    int created = 0;
    ad_err e;

    if (!util_name_valid(r->param[0])) {
        http_reply_error(r, AD_EFIELD,
                         "policy names are 1..128 bytes of [A-Za-z0-9._:-]");
        return;
    }
    if ((doc = http_body_object(r)) == NULL)
        return;
    e = pol_doc_validate(doc, msg, sizeof(msg));
    if (e != AD_OK) {
        http_reply_error(r, e, msg);
        json_decref(doc);
        return;
    }
    util_time_rfc3339(time(NULL), now, sizeof(now));
    rec = json_pack("{s:s, s:o, s:s}", "name", r->param[0], "document", doc,
                    "updated_at", now);
    if (write_named(r, STORE_POLICIES, "policy.put", rec, &created) == AD_OK)
        http_reply_json(r, created ? 201 : 200, json_incref(rec));
    json_decref(rec);
}

void route_policy_get(http_req *r)
{
    json_t *rec = read_named(r, STORE_POLICIES);

    if (rec == NULL)
        return;
    /* The document as it was put, so GET and PUT round-trip. */
    http_reply_json(r, 200, json_incref(json_object_get(rec, "document")));
    json_decref(rec);
}

void route_policy_delete(http_req *r)
{
    if (write_named(r, STORE_POLICIES, "policy.delete", NULL, NULL) == AD_OK)
        http_reply_empty(r, 204);
}

void route_policy_list(http_req *r)
{
    routes_list_table(r, STORE_POLICIES, NULL, policy_summary, "name");
}

/* ---- groups ----------------------------------------------------------- */

void route_group_put(http_req *r)
{
    json_t *body, *policies, *v, *rec;
    char now[32];
    size_t i;
    int created = 0;

    if (!util_name_valid(r->param[0])) {
        http_reply_error(r, AD_EFIELD,
                         "group names are 1..128 bytes of [A-Za-z0-9._:-]");
        return;
    }
    if ((body = http_body_object(r)) == NULL)
        return;
    policies = json_object_get(body, "policies");
    if (policies == NULL)
        policies = json_array();
    else
        json_incref(policies);
    if (!json_is_array(policies) ||
        json_array_size(policies) > GROUP_POLICIES_MAX)
        goto bad;
    json_array_foreach(policies, i, v)
        if (!util_name_valid(json_string_value(v)))
            goto bad;
    util_time_rfc3339(time(NULL), now, sizeof(now));
    rec = json_pack("{s:s, s:o, s:s}", "name", r->param[0], "policies",
                    policies, "updated_at", now);
    if (write_named(r, STORE_GROUPS, "group.put", rec, &created) == AD_OK)
        http_reply_json(r, created ? 201 : 200, json_incref(rec));
    json_decref(rec);
    json_decref(body);
    return;
bad:
    json_decref(policies);
    json_decref(body);
    http_reply_error(r, AD_EFIELD,
                     "policies must be an array of up to 64 policy names");
}

void route_group_get(http_req *r)
{
    json_t *rec = read_named(r, STORE_GROUPS);

    if (rec != NULL)
        http_reply_json(r, 200, rec);
}

void route_group_delete(http_req *r)
{
    if (write_named(r, STORE_GROUPS, "group.delete", NULL, NULL) == AD_OK)
        http_reply_empty(r, 204);
}

void route_group_list(http_req *r)
{
    routes_list_table(r, STORE_GROUPS, NULL, NULL, "name");
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
