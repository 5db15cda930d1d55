/* authctl commands for the registry (docs/api.md §7, §6): devices, groups,
 * policies, API keys and the audit log. Each command is one request (or
 * one paged list) and prints a table, a record, or the server's JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "pki.h"

enum { POLICY_FILE_MAX = 64 * 1024 };

/* Runs method on path and prints what comes back (or ok_text when the
 * answer is empty or the output is for humans and ok_text is set). */
static int simple(ctl *c, const args *a, const char *method,
                  const char *prefix, const char *id, const char *suffix,
                  const json_t *body, const char *const *skip,
                  const char *ok_text)
{
    char path[API_PATH_MAX];
    json_t *j = NULL;
    int rc;

    if (ctl_path(path, sizeof(path), prefix, id, suffix) != 0)
        return ctl_usage(a, "the name is too long");
    rc = api_json(c->api, method, path, body, &j);
    if (rc == CTL_OK) {
        if (c->json || ok_text == NULL)
            ctl_print(c, j, skip);
        else
            printf("%s %s\n", ok_text, id);
    }
    json_decref(j);
    return rc;
}

/* A JSON array of the values of a repeatable option. */
static json_t *multi(const args *a, const char *name)
{
    json_t *arr = json_array();
    size_t i, n = args_count(a, name);

    for (i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_string(args_nth(a, name, i)));
    return arr;
}

/* ---- devices ---------------------------------------------------------- */

static const args_opt device_add_opts[] = {
    {"group", ARG_MULTI, "G", "put the device in group G"},
    {"policy", ARG_MULTI, "P", "attach policy P to the device itself"},
    {"attr", ARG_MULTI, "K=V", "set attribute K to V"},
    {NULL, 0, NULL, NULL},
};

static int device_add(ctl *c, const args *a)
{
    json_t *body = NULL, *attrs = json_object();
    size_t i, n = args_count(a, "attr");
    int rc = CTL_FAILED;

    for (i = 0; attrs && i < n; i++) {
        const char *kv = args_nth(a, "attr", i), *eq = strchr(kv, '=');
        char key[256];
        if (eq == NULL || eq == kv || (size_t)(eq - kv) >= sizeof(key)) {
            rc = ctl_usage(a, "--attr takes KEY=VALUE, got '%s'", kv);
            goto out;
        }
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        json_object_set_new(attrs, key, json_string(eq + 1));
    }
    body = json_pack("{s:s, s:o, s:o, s:O}", "id", a->pos[0], "groups",
                     multi(a, "group"), "policies", multi(a, "policy"),
                     "attributes", attrs);
    if (body == NULL) {
        rc = ctl_fail("out of memory or an argument is not UTF-8");
        goto out;
    }
    rc = simple(c, a, "POST", "/v1/devices", "", NULL, body, NULL,
                NULL);
out:
    json_decref(attrs);
    json_decref(body);
    return rc;
}

static const args_opt device_list_opts[] = {
    {"prefix", ARG_VALUE, "P", "only devices whose id starts with P"},
    CTL_OPT_LIMIT,
    {NULL, 0, NULL, NULL},
};

static int device_list(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"ID", "id"}, {"STATUS", "status"}, {"GROUPS", "groups"},
        {"POLICIES", "policies"}, {"CREATED", "created_at"},
    };
    char path[API_PATH_MAX] = "/v1/devices";

    if (api_query_add(path, sizeof(path), "prefix", args_get(a, "prefix")))
        return ctl_usage(a, "the prefix is too long");
    return ctl_list(c, a, path, NULL, cols, sizeof(cols) / sizeof(cols[0]));
}

static int device_show(ctl *c, const args *a)
{
    static const char *const skip[] = {"certs", NULL};
    static const out_col cols[] = {
        {"SERIAL", "serial"}, {"STATUS", "status"},
        {"NOT_AFTER", "not_after"}, {"ENROLLMENT", "enrollment"},
    };
    char path[API_PATH_MAX];
    json_t *j = NULL, *certs;
    int rc;

    if (ctl_path(path, sizeof(path), "/v1/devices/", a->pos[0], NULL) != 0)
        return ctl_usage(a, "the id is too long");
    rc = api_json(c->api, "GET", path, NULL, &j);
    if (rc == CTL_OK) {
        ctl_print(c, j, skip);
        certs = json_object_get(j, "certs");
        if (!c->json && json_array_size(certs) > 0) {
            puts("\ncertificates:");
            out_table(certs, cols, sizeof(cols) / sizeof(cols[0]));
        }
    }
    json_decref(j);
    return rc;
}

static int device_status(ctl *c, const args *a, const char *status,
                         const char *done)
{
    json_t *body = json_pack("{s:s}", "status", status);
    static const char *const skip[] = {"certs", NULL};
    int rc;

    if (body == NULL)
        return ctl_fail("out of memory");
    rc = simple(c, a, "PATCH", "/v1/devices/", a->pos[0], NULL, body, skip,
                done);
    json_decref(body);
    return rc;
}

static int device_suspend(ctl *c, const args *a)
{
    return device_status(c, a, "suspended", "suspended device");
}

static int device_resume(ctl *c, const args *a)
{
    return device_status(c, a, "active", "resumed device");
}

static int device_rm(ctl *c, const args *a)
{
    return simple(c, a, "DELETE", "/v1/devices/", a->pos[0], NULL, NULL,
                  NULL, "deleted device");
}

static int device_secret(ctl *c, const args *a)
{
    json_t *body = json_object();
    int rc;

    rc = simple(c, a, "POST", "/v1/devices/", a->pos[0], "/secret", body,
                NULL, NULL);
    if (rc == CTL_OK && !c->json)
        fputs("authctl: the secret is shown only this once; a new call "
              "replaces it\n", stderr);
    json_decref(body);
    return rc;
}

/* ---- groups ----------------------------------------------------------- */

static const args_opt group_put_opts[] = {
    {"policy", ARG_MULTI, "P", "a policy of the group (the whole list)"},
    {NULL, 0, NULL, NULL},
};

static int group_put(ctl *c, const args *a)
{
    json_t *body = json_pack("{s:o}", "policies", multi(a, "policy"));
    int rc;

    if (body == NULL)
        return ctl_fail("out of memory or an argument is not UTF-8");
    rc = simple(c, a, "PUT", "/v1/groups/", a->pos[0], NULL, body, NULL,
                NULL);
    json_decref(body);
    return rc;
}

static int group_show(ctl *c, const args *a)
{
    return simple(c, a, "GET", "/v1/groups/", a->pos[0], NULL, NULL, NULL,
                  NULL);
}

static int group_list(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"NAME", "name"}, {"POLICIES", "policies"}, {"UPDATED", "updated_at"},
    };

    return ctl_list(c, a, "/v1/groups", NULL, cols,
                    sizeof(cols) / sizeof(cols[0]));
}

static int group_rm(ctl *c, const args *a)
{
    return simple(c, a, "DELETE", "/v1/groups/", a->pos[0], NULL, NULL,
                  NULL, "deleted group");
}

/* ---- policies --------------------------------------------------------- */

static int policy_put(ctl *c, const args *a)
{
    char *text = NULL, err[256], path[API_PATH_MAX];
    json_error_t jerr;
    json_t *doc = NULL, *j = NULL;
    size_t len;
    int rc = CTL_FAILED;

    if (ctl_path(path, sizeof(path), "/v1/policies/", a->pos[0], NULL) != 0)
        return ctl_usage(a, "the name is too long");
    if (pki_read_file(a->pos[1], POLICY_FILE_MAX, &text, &len, err,
                      sizeof(err)) != 0)
        return ctl_fail("%s", err);
    /* Checked here for a message with a line number; the server still
     * validates the statements. */
    if ((doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
        rc = ctl_fail("%s: invalid JSON at line %d column %d: %s",
                      a->pos[1], jerr.line, jerr.column, jerr.text);
        goto out;
    }
    rc = api_json(c->api, "PUT", path, doc, &j);
    if (rc == CTL_OK) {
        if (c->json)
            out_json(j);
        else
            printf("stored policy %s\n", a->pos[0]);
    }
out:
    json_decref(j);
    json_decref(doc);
    free(text);
    return rc;
}

static int policy_get(ctl *c, const args *a)
{
    char path[API_PATH_MAX];
    json_t *j = NULL;
    int rc;

    if (ctl_path(path, sizeof(path), "/v1/policies/", a->pos[0], NULL) != 0)
        return ctl_usage(a, "the name is too long");
    /* The document is JSON either way: it round-trips into policy put. */
    if ((rc = api_json(c->api, "GET", path, NULL, &j)) == CTL_OK)
        out_json(j);
    json_decref(j);
    return rc;
}

static int policy_list(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"NAME", "name"}, {"STATEMENTS", "statement_count"},
        {"UPDATED", "updated_at"},
    };

    return ctl_list(c, a, "/v1/policies", NULL, cols,
                    sizeof(cols) / sizeof(cols[0]));
}

static int policy_rm(ctl *c, const args *a)
{
    return simple(c, a, "DELETE", "/v1/policies/", a->pos[0], NULL, NULL,
                  NULL, "deleted policy");
}

static int policy_test(ctl *c, const args *a)
{
    const char *action = a->pos[1];
    json_t *body, *j = NULL, *st;
    char v1[256], v2[256], v3[256];
    int rc;

    if (strcmp(action, "connect") != 0 && strcmp(action, "publish") != 0 &&
        strcmp(action, "subscribe") != 0 && strcmp(action, "receive") != 0)
        return ctl_usage(a, "ACTION is connect, publish, subscribe or "
                            "receive");
    body = json_pack("{s:s, s:s, s:s}", "device", a->pos[0], "action", action,
                     strcmp(action, "connect") == 0 ? "client_id" : "topic",
                     a->pos[2]);
    if (body == NULL)
        return ctl_fail("out of memory or an argument is not UTF-8");
    rc = api_json(c->api, "POST", "/v1/policies/explain", body, &j);
    if (rc == CTL_OK && c->json) {
        out_json(j);
    } else if (rc == CTL_OK) {
        st = json_object_get(j, "statement");
        printf("%s (%s)\n",
               out_value(json_object_get(j, "result"), v1, sizeof(v1)),
               out_value(json_object_get(j, "reason"), v2, sizeof(v2)));
        if (json_is_object(st))
            printf("decided by policy %s, statement %s (counting from 0)\n",
                   out_value(json_object_get(st, "policy"), v1, sizeof(v1)),
                   out_value(json_object_get(st, "index"), v3, sizeof(v3)));
        else
            puts("decided by no statement (no allow matched: deny)");
    }
    json_decref(j);
    json_decref(body);
    return rc;
}

/* ---- API keys --------------------------------------------------------- */

static const args_opt apikey_create_opts[] = {
    {"name", ARG_VALUE, "N", "a name for the key (required)"},
    {"role", ARG_VALUE, "R", "admin, provisioner or broker (required)"},
    {NULL, 0, NULL, NULL},
};

static int apikey_create(ctl *c, const args *a)
{
    const char *name = args_get(a, "name"), *role = args_get(a, "role");
    json_t *body;
    int rc;

    if (name == NULL || role == NULL)
        return ctl_usage(a, "--name and --role are required");
    if ((body = json_pack("{s:s, s:s}", "name", name, "role", role)) == NULL)
        return ctl_fail("out of memory or an argument is not UTF-8");
    rc = simple(c, a, "POST", "/v1/apikeys", "", NULL, body, NULL, NULL);
    if (rc == CTL_OK && !c->json)
        fputs("authctl: the key is shown only this once\n", stderr);
    json_decref(body);
    return rc;
}

static int apikey_list(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"ID", "id"}, {"NAME", "name"}, {"ROLE", "role"},
        {"CREATED", "created_at"},
    };

    return ctl_list(c, a, "/v1/apikeys", NULL, cols,
                    sizeof(cols) / sizeof(cols[0]));
}

static int apikey_rm(ctl *c, const args *a)
{
    return simple(c, a, "DELETE", "/v1/apikeys/", a->pos[0], NULL, NULL,
                  NULL, "deleted API key");
}

/* ---- audit ------------------------------------------------------------ */

static const args_opt audit_opts[] = {
    {"after", ARG_VALUE, "SEQ", "entries after sequence number SEQ"},
    CTL_OPT_LIMIT,
    {NULL, 0, NULL, NULL},
};

static int audit(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"SEQ", "seq"}, {"TIME", "time"}, {"ACTOR", "actor"},
        {"ACTION", "action"}, {"TARGET", "target"}, {"DETAIL", "detail"},
    };
    const char *after = args_get(a, "after");
    long seq;

    if (after && args_parse_long(after, 0, 1L << 62, &seq) != 0)
        return ctl_usage(a, "--after takes an audit sequence number");
    return ctl_list(c, a, "/v1/audit", after, cols,
                    sizeof(cols) / sizeof(cols[0]));
}

/* ---- the table -------------------------------------------------------- */

static const args_opt limit_opts[] = {CTL_OPT_LIMIT, {NULL, 0, NULL, NULL}};

static const ctl_cmd cmds[] = {
    {"device", "add", "ID [--group G]... [--policy P]... [--attr K=V]...",
     "Creates a device in the registry.", NULL, device_add_opts, 1, 1,
     device_add},
    {"device", "list", "[--prefix P] [--limit N]",
     "Lists devices (every page unless --limit).", NULL, device_list_opts, 0,
     0, device_list},
    {"device", "show", "ID",
     "Shows a device: status, groups, policies, attributes, certificates.",
     NULL, NULL, 1, 1, device_show},
    {"device", "suspend", "ID",
     "Suspends a device: its checks are denied and its tokens stop "
     "being active.", NULL, NULL, 1, 1, device_suspend},
    {"device", "resume", "ID", "Makes a suspended device active again.",
     NULL, NULL, 1, 1, device_resume},
    {"device", "rm", "ID",
     "Deletes a device (its certificates are revoked).", NULL, NULL, 1, 1,
     device_rm},
    {"device", "secret", "ID",
     "Makes a new device secret (username/password method) and prints it "
     "once.", "A new secret replaces the old one.", NULL, 1, 1,
     device_secret},
    {"group", "put", "NAME [--policy P]...",
     "Creates or replaces a group and its list of policies.", NULL,
     group_put_opts, 1, 1, group_put},
    {"group", "show", "NAME", "Shows a group.", NULL, NULL, 1, 1, group_show},
    {"group", "list", "[--limit N]", "Lists groups.", NULL, limit_opts, 0, 0,
     group_list},
    {"group", "rm", "NAME", "Deletes a group.", NULL, NULL, 1, 1, group_rm},
    {"policy", "put", "NAME FILE|-",
     "Creates or replaces a policy from a JSON document (- reads stdin).",
     "The document is {\"statements\":[{\"effect\",\"actions\",\"topics\"|"
     "\"client_ids\"}, ...]} (docs/policies.md).",
     NULL, 2, 2, policy_put},
    {"policy", "get", "NAME", "Prints a policy document (JSON).", NULL, NULL,
     1, 1, policy_get},
    {"policy", "list", "[--limit N]", "Lists policies.", NULL, limit_opts, 0,
     0, policy_list},
    {"policy", "rm", "NAME", "Deletes a policy.", NULL, NULL, 1, 1,
     policy_rm},
    {"policy", "test", "DEVICE ACTION TOPIC|CLIENT_ID",
     "Asks the server what it would decide, and which statement decided.",
     "ACTION is connect (then the last argument is the MQTT client id), "
     "publish, subscribe or receive (then it is the topic or filter).",
     NULL, 3, 3, policy_test},
    {"apikey", "create", "--name N --role admin|provisioner|broker",
     "Creates an API key and prints it once.", NULL, apikey_create_opts, 0,
     0, apikey_create},
    {"apikey", "list", "[--limit N]", "Lists API keys (never the keys).",
     NULL, limit_opts, 0, 0, apikey_list},
    {"apikey", "rm", "ID", "Deletes an API key.", NULL, NULL, 1, 1,
     apikey_rm},
    {"audit", NULL, "[--after SEQ] [--limit N]",
     "Prints the audit log: issuance, revocation, enrollment use, admin "
     "changes.", NULL, audit_opts, 0, 0, audit},
};

const ctl_cmd *cmd_registry_table(size_t *n)
{
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
