/* authctl commands for the registry (docs/api.md §7, §6): devices, groups,
 * policies, API keys and the audit log. Each command is one request (or
 * one paged list) and prints a table, a record, or the server's JSON. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../../common/buf.h"
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
    {"gateway", ARG_VALUE, "ID", "the device sits behind gateway ID"},
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
    if (body != NULL && args_get(a, "gateway") &&
        json_object_set_new(body, "gateway",
                            json_string(args_get(a, "gateway"))) != 0) {
        json_decref(body);
        body = NULL;
    }
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
        /* Names left by a forced delete grant nothing: say so. */
        if (!c->json)
            ctl_missing_names(c, j);
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

static const args_opt device_update_opts[] = {
    {"gateway", ARG_VALUE, "ID", "move the device behind gateway ID"},
    {"no-gateway", ARG_FLAG, NULL, "the device sits behind no gateway"},
    {NULL, 0, NULL, NULL},
};

static int device_update(ctl *c, const args *a)
{
    static const char *const skip[] = {"certs", NULL};
    json_t *body;
    int rc;

    if (args_get(a, "gateway") && args_has(a, "no-gateway"))
        return ctl_usage(a, "--gateway and --no-gateway exclude each other");
    if (!args_get(a, "gateway") && !args_has(a, "no-gateway"))
        return ctl_usage(a, "nothing to change: give --gateway or --no-gateway");
    body = args_has(a, "no-gateway")
               ? json_pack("{s:n}", "gateway")
               : json_pack("{s:s}", "gateway", args_get(a, "gateway"));
    if (body == NULL)
        return ctl_fail("out of memory or an argument is not UTF-8");
    rc = simple(c, a, "PATCH", "/v1/devices/", a->pos[0], NULL, body, skip,
                "updated device");
    json_decref(body);
    return rc;
}

static const args_opt device_children_opts[] = {CTL_OPT_LIMIT,
                                                {NULL, 0, NULL, NULL}};

static int device_children(ctl *c, const args *a)
{
    static const out_col cols[] = {{"ID", "id"}, {"STATUS", "status"}};
    char path[API_PATH_MAX];

    if (ctl_path(path, sizeof(path), "/v1/devices/", a->pos[0],
                 "/children") != 0)
        return ctl_usage(a, "the id is too long");
    return ctl_list(c, a, path, NULL, cols, sizeof(cols) / sizeof(cols[0]));
}

static const args_opt yes_opts[] = {CTL_OPT_YES, {NULL, 0, NULL, NULL}};

static int device_rm(ctl *c, const args *a)
{
    if (!ctl_confirm(a, "Delete (and revoke the certificates of) device",
                     a->pos[0]))
        return ctl_fail("not confirmed: nothing was deleted");
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

/* ---- device import ---------------------------------------------------- */

enum {
    IMPORT_BATCH_DEFAULT = 10000,  /* lines per request */
    IMPORT_BATCH_MAX = 100000,     /* the server's limit per request */
    IMPORT_LINE_MAX = 64 * 1024,   /* the server's limit per line */
    /* Bytes per request: a chunk is sent early when it would pass this,
     * half the server's default import_body_max. */
    IMPORT_CHUNK_MAX = 8 * 1024 * 1024
};

static const args_opt device_import_opts[] = {
    {"batch", ARG_VALUE, "N",
     "lines per request, 1..100000 (default 10000)"},
    {NULL, 0, NULL, NULL},
};

/* One import run: the file, the chunk being filled and what came back. */
struct import_run {
    ctl *c;
    FILE *f;
    const char *name;
    buf_t chunk;          /* lines first..first+nlines-1, each ending \n */
    size_t first, nlines; /* file line numbers of the chunk */
    size_t total;         /* lines in the file, 0 when unknown (stdin) */
    size_t done;          /* lines sent and answered */
    json_int_t created;
    size_t nfailed;
    json_t *local;        /* this chunk's lines refused before sending */
    json_t *failed;       /* --json: every failure, in line order */
};

/* Lines in a regular file, for the progress total; 0 if it is not one
 * (a pipe cannot be read twice). The file is left at its start. */
static size_t import_count_lines(FILE *f)
{
    struct stat sb;
    char block[65536];
    size_t n, i, lines = 0;
    char last = '\n';

    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    while ((n = fread(block, 1, sizeof(block), f)) > 0) {
        for (i = 0; i < n; i++)
            lines += block[i] == '\n';
        last = block[n - 1];
    }
    if (last != '\n')
        lines++;
    rewind(f);
    return lines;
}

/* Prints one failure, or keeps it for --json. Takes f's reference. */
static void import_report(struct import_run *run, json_t *f)
{
    const json_t *err = json_object_get(f, "error");
    char msg[512], code[64], id[160];

    run->nfailed++;
    if (run->c->json) {
        json_array_append_new(run->failed, f);
        return;
    }
    out_sanitize(json_string_value(json_object_get(err, "message")), msg,
                 sizeof(msg));
    out_sanitize(json_string_value(json_object_get(err, "code")), code,
                 sizeof(code));
    out_sanitize(json_string_value(json_object_get(f, "id")), id, sizeof(id));
    printf("line %lld: %s%s%s (%s)\n",
           (long long)json_integer_value(json_object_get(f, "line")), id,
           id[0] ? ": " : "", msg, code);
    json_decref(f);
}

/* Sends the chunk and reports its failures in line order: the server's
 * (renumbered from the chunk's lines to the file's) merged with the
 * lines refused here. Returns CTL_OK or why the import must stop. */
static int import_send(struct import_run *run)
{
    api_resp resp;
    json_t *j = NULL, *remote;
    size_t i = 0, k = 0, nl, nr;
    int rc;

    if (run->nlines == 0)
        return CTL_OK;
    rc = api_raw(run->c->api, "POST", "/v1/devices:import",
                 "application/x-ndjson", buf_str(&run->chunk),
                 buf_len(&run->chunk), &resp);
    if (rc != CTL_OK)
        goto stopped;
    if (resp.status != 200) {
        rc = api_refused(&resp);
        goto stopped;
    }
    j = json_loadb(resp.body, resp.len, 0, NULL);
    remote = json_object_get(j, "failed");
    if (!json_is_integer(json_object_get(j, "created")) ||
        !json_is_array(remote)) {
        fprintf(stderr, "authctl: the server's answer is not an import "
                        "result\n");
        rc = CTL_FAILED;
        goto stopped;
    }
    run->created += json_integer_value(json_object_get(j, "created"));
    nl = json_array_size(run->local);
    nr = json_array_size(remote);
    while (i < nl || k < nr) {
        json_t *lf = json_array_get(run->local, i),
               *rf = json_array_get(remote, k);
        json_int_t rline =
            rf ? json_integer_value(json_object_get(rf, "line")) +
                     (json_int_t)run->first - 1
               : 0;
        if (rf == NULL ||
            (lf && json_integer_value(json_object_get(lf, "line")) < rline)) {
            import_report(run, json_incref(lf));
            i++;
        } else {
            json_object_set_new(rf, "line", json_integer(rline));
            import_report(run, json_incref(rf));
            k++;
        }
    }
    run->done += run->nlines;
    if (run->total)
        fprintf(stderr, "authctl: imported %zu/%zu lines, %zu failed\n",
                run->done, run->total, run->nfailed);
    else
        fprintf(stderr, "authctl: imported %zu lines, %zu failed\n",
                run->done, run->nfailed);
    json_array_clear(run->local);
    buf_reset(&run->chunk);
    run->first += run->nlines;
    run->nlines = 0;
    json_decref(j);
    api_resp_clear(&resp);
    return CTL_OK;
stopped:
    /* A refused chunk wrote nothing; one whose answer did not come may
     * still have been committed. Importing the file again is safe:
     * devices already written then fail as already_exists. */
    fprintf(stderr, "authctl: import stopped: lines %zu..%zu of %s %s, "
                    "nothing after them was sent\n",
            run->first, run->first + run->nlines - 1, run->name,
            rc == CTL_UNREACHABLE ? "may or may not be written"
                                  : "were not written");
    json_decref(j);
    api_resp_clear(&resp);
    return rc;
}

/* Reads one line (without its \n) into line, at most IMPORT_LINE_MAX
 * bytes; a longer line is read to its end and *too_long set. Returns 0,
 * or -1 at the end of the file. NUL bytes are kept, so the server sees
 * exactly what the file holds. */
static int import_read_line(FILE *f, char *line, size_t *len, int *too_long)
{
    int ch, any = 0;

    *len = 0;
    *too_long = 0;
    while ((ch = getc(f)) != EOF) {
        any = 1;
        if (ch == '\n')
            return 0;
        if (*len < IMPORT_LINE_MAX)
            line[(*len)++] = (char)ch;
        else
            *too_long = 1;
    }
    return any ? 0 : -1;
}

static int device_import(ctl *c, const args *a)
{
    struct import_run run;
    char err[256], *line = NULL;
    long batch;
    size_t len;
    int too_long, rc = CTL_FAILED;

    if (args_long(a, "batch", 1, IMPORT_BATCH_MAX, IMPORT_BATCH_DEFAULT,
                  &batch, err, sizeof(err)) != 0)
        return ctl_usage(a, "%s", err);
    memset(&run, 0, sizeof(run));
    run.c = c;
    run.name = strcmp(a->pos[0], "-") == 0 ? "stdin" : a->pos[0];
    run.first = 1;
    buf_init(&run.chunk, IMPORT_CHUNK_MAX);
    run.local = json_array();
    run.failed = json_array();
    line = malloc(IMPORT_LINE_MAX);
    if (run.local == NULL || run.failed == NULL || line == NULL) {
        rc = ctl_fail("out of memory");
        goto out;
    }
    if (strcmp(a->pos[0], "-") == 0)
        run.f = stdin;
    else if ((run.f = fopen(a->pos[0], "rb")) == NULL) {
        rc = ctl_fail("%s: %s", a->pos[0], strerror(errno));
        goto out;
    }
    run.total = import_count_lines(run.f);
    while (import_read_line(run.f, line, &len, &too_long) == 0) {
        size_t lineno = run.first + run.nlines;

        /* A chunk that would pass its byte limit goes first. */
        if (buf_len(&run.chunk) + len + 1 > IMPORT_CHUNK_MAX &&
            (rc = import_send(&run)) != CTL_OK)
            goto out;
        if (too_long) {
            /* Not sent: a blank line keeps the server's numbering. */
            json_array_append_new(
                run.local,
                json_pack("{s:I, s:{s:s, s:s}}", "line", (json_int_t)lineno,
                          "error", "code", "payload_too_large", "message",
                          "the line exceeds 65536 bytes (not sent)"));
            len = 0;
        }
        if (buf_append(&run.chunk, line, len) != 0 ||
            buf_append_byte(&run.chunk, '\n') != 0) {
            rc = ctl_fail("out of memory");
            goto out;
        }
        if (++run.nlines == (size_t)batch && (rc = import_send(&run)) != CTL_OK)
            goto out;
    }
    if (ferror(run.f)) {
        rc = ctl_fail("%s: read error after line %zu", run.name,
                      run.first + run.nlines - 1);
        goto out;
    }
    if ((rc = import_send(&run)) != CTL_OK)
        goto out;
    if (c->json) {
        json_t *j = json_pack("{s:I, s:O}", "created", run.created, "failed",
                              run.failed);
        out_json(j);
        json_decref(j);
    } else {
        printf("%lld created, %zu failed\n", (long long)run.created,
               run.nfailed);
    }
    rc = run.nfailed ? CTL_FAILED : CTL_OK;
out:
    if (run.f && run.f != stdin)
        fclose(run.f);
    free(line);
    buf_free(&run.chunk);
    json_decref(run.local);
    json_decref(run.failed);
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

static const args_opt force_opts[] = {
    {"force", ARG_FLAG, NULL,
     "delete even while devices or groups name it (they keep the name)"},
    {NULL, 0, NULL, NULL},
};

static int group_rm(ctl *c, const args *a)
{
    return simple(c, a, "DELETE", "/v1/groups/", a->pos[0],
                  args_has(a, "force") ? "?force=true" : NULL, NULL, NULL,
                  "deleted group");
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
    return simple(c, a, "DELETE", "/v1/policies/", a->pos[0],
                  args_has(a, "force") ? "?force=true" : NULL, NULL, NULL,
                  "deleted policy");
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
    if (rc == CTL_OK && !c->json) {
        char path[API_PATH_MAX];
        json_t *dev = NULL;

        /* A decision made without a missing policy or group says so. */
        if (ctl_path(path, sizeof(path), "/v1/devices/", a->pos[0], NULL) ==
                0 &&
            api_json(c->api, "GET", path, NULL, &dev) == CTL_OK)
            ctl_missing_names(c, dev);
        json_decref(dev);
    }
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
    {"after", ARG_VALUE, "SEQ", "entries after sequence number SEQ (in the "
                                "listing's order)"},
    {"action", ARG_VALUE, "A", "only action A (device.create; device.* for "
                               "every verb of an object)"},
    {"actor", ARG_VALUE, "A", "only actor A (apikey:NAME, device:ID, ...)"},
    {"target", ARG_VALUE, "T", "only entries about T"},
    {"since", ARG_VALUE, "S", "only from time S on (RFC 3339 UTC or Unix "
                              "seconds)"},
    {"until", ARG_VALUE, "U", "only before time U"},
    {"desc", ARG_FLAG, NULL, "newest first"},
    {"follow", ARG_FLAG, NULL, "then print new entries as they come, until "
                               "interrupted"},
    CTL_OPT_LIMIT,
    {NULL, 0, NULL, NULL},
};

static const out_col audit_cols[] = {
    {"SEQ", "seq"}, {"TIME", "time"}, {"ACTOR", "actor"},
    {"ACTION", "action"}, {"TARGET", "target"}, {"DETAIL", "detail"},
};
#define AUDIT_NCOLS (sizeof(audit_cols) / sizeof(audit_cols[0]))

/* How often --follow asks for new entries. */
enum { AUDIT_FOLLOW_MS = 500 };

static volatile sig_atomic_t audit_stop;

static void audit_on_signal(int sig)
{
    (void)sig;
    audit_stop = 1;
}

/* path := /v1/audit with the filters of a (and order=desc if desc). */
static int audit_path(const args *a, int desc, char *path, size_t len)
{
    static const char *const keys[] = {"action", "actor", "target", "since",
                                       "until"};
    size_t i;

    snprintf(path, len, "/v1/audit");
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (api_query_add(path, len, keys[i], args_get(a, keys[i])) != 0)
            return -1;
    return desc ? api_query_add(path, len, "order", "desc") : 0;
}

/* One entry on one line: NDJSON with --json, else the table's columns. */
static void audit_line(const ctl *c, const json_t *it)
{
    char cell[512];
    size_t i;

    if (c->json) {
        char *text = json_dumps(it, JSON_COMPACT);

        if (text)
            puts(text);
        free(text);
    } else {
        for (i = 0; i < AUDIT_NCOLS; i++)
            printf("%s%s", out_value(json_object_get(it, audit_cols[i].field),
                                     cell, sizeof(cell)),
                   i + 1 < AUDIT_NCOLS ? "  " : "\n");
    }
    fflush(stdout);
}

/* The newest entry's seq (0 if the log is empty) into *head. */
static int audit_head(ctl *c, uint64_t *head)
{
    json_t *j = NULL, *it;
    int rc = api_json(c->api, "GET", "/v1/audit?order=desc&limit=1", NULL, &j);

    *head = 0;
    it = json_array_get(json_object_get(j, "items"), 0);
    if (rc == CTL_OK && it)
        *head = (uint64_t)json_integer_value(json_object_get(it, "seq"));
    json_decref(j);
    return rc;
}

/* Polls for entries after *head that match the filters and prints them
 * until SIGINT or SIGTERM. Each round first reads the newest seq, so the
 * next round starts after every entry this one examined, matching or
 * not. */
static int audit_follow(ctl *c, const args *a, uint64_t head)
{
    struct sigaction sa;
    char path[API_PATH_MAX], num[32];
    int rc = CTL_OK;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = audit_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (audit_path(a, 0, path, sizeof(path)) != 0)
        return ctl_usage(a, "the filters are too long");
    while (!audit_stop) {
        struct timespec ts = {0, AUDIT_FOLLOW_MS * 1000000L};
        uint64_t top, last = head;
        json_t *all = NULL, *it;
        size_t i;

        if ((rc = audit_head(c, &top)) != CTL_OK)
            break;
        if (top > head) {
            snprintf(num, sizeof(num), "%llu", (unsigned long long)head);
            if ((rc = api_list(c->api, path, num, c->page_size, 0, &all)) !=
                CTL_OK)
                break;
            json_array_foreach(json_object_get(all, "items"), i, it) {
                audit_line(c, it);
                last = (uint64_t)json_integer_value(json_object_get(it, "seq"));
            }
            json_decref(all);
            head = last > top ? last : top;
        }
        nanosleep(&ts, NULL); /* cut short by the signal */
    }
    return audit_stop ? CTL_OK : rc;
}

static int audit(ctl *c, const args *a)
{
    const char *after = args_get(a, "after");
    int desc = args_has(a, "desc"), follow = args_has(a, "follow");
    char path[API_PATH_MAX], err[128];
    uint64_t head = 0;
    json_t *all = NULL, *items, *it;
    long seq, limit;
    size_t i;
    int rc;

    if (after && args_parse_long(after, 0, 1L << 62, &seq) != 0)
        return ctl_usage(a, "--after takes an audit sequence number");
    if (args_long(a, "limit", 1, 1000000000L, 0, &limit, err, sizeof(err)) !=
        0)
        return ctl_usage(a, "%s", err);
    if (audit_path(a, desc, path, sizeof(path)) != 0)
        return ctl_usage(a, "the filters are too long");
    /* Read before the listing: following starts after every entry the
     * listing could have seen. */
    if (follow && (rc = audit_head(c, &head)) != CTL_OK)
        return rc;
    if (!follow)
        return ctl_list(c, a, path, after, audit_cols, AUDIT_NCOLS);
    /* Following: what is there first (as asked), then one line per new
     * entry; with --json every entry is one line of JSON. */
    if (limit > 0 || after || desc) {
        if ((rc = api_list(c->api, path, after, c->page_size, limit, &all)) !=
            CTL_OK)
            return rc;
        items = json_object_get(all, "items");
        json_array_foreach(items, i, it) {
            audit_line(c, it);
            seq = (long)json_integer_value(json_object_get(it, "seq"));
            if (!desc && (uint64_t)seq > head)
                head = (uint64_t)seq;
        }
        json_decref(all);
    }
    return audit_follow(c, a, head);
}

/* ---- the table -------------------------------------------------------- */

static const args_opt limit_opts[] = {CTL_OPT_LIMIT, {NULL, 0, NULL, NULL}};

static const ctl_cmd cmds[] = {
    {"device", "add",
     "ID [--group G]... [--policy P]... [--attr K=V]... [--gateway ID]",
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
    {"device", "update", "ID --gateway GW | --no-gateway",
     "Moves a device behind another gateway, or behind none.", NULL,
     device_update_opts, 1, 1, device_update},
    {"device", "children", "ID [--limit N]",
     "Lists the devices behind gateway ID, with their status (every page "
     "unless --limit).", NULL, device_children_opts, 1, 1, device_children},
    {"device", "rm", "ID [--yes]",
     "Deletes a device (its certificates are revoked).",
     "On a terminal it asks first unless --yes; with stdin not a terminal "
     "(scripts) it does not ask.", yes_opts, 1, 1, device_rm},
    {"device", "secret", "ID",
     "Makes a new device secret (username/password method) and prints it "
     "once.", "A new secret replaces the old one.", NULL, 1, 1,
     device_secret},
    {"device", "import", "FILE|- [--batch N]",
     "Imports devices from an NDJSON file (- reads stdin), in chunks, "
     "with progress.",
     "Each line is one device as `device add` sends it: {\"id\", "
     "\"groups\", \"policies\", \"attributes\"}; blank lines are skipped. "
     "The file goes to POST /v1/devices:import N lines at a time; progress "
     "goes to stderr, each failed line (its line number in FILE, the id, "
     "the reason) and a summary to stdout. A bad line is skipped, the "
     "others are written. Exits 1 if any line failed. Importing a file "
     "again is safe: devices already there fail as already_exists.",
     device_import_opts, 1, 1, device_import},
    {"group", "put", "NAME [--policy P]...",
     "Creates or replaces a group and its list of policies.", NULL,
     group_put_opts, 1, 1, group_put},
    {"group", "show", "NAME", "Shows a group.", NULL, NULL, 1, 1, group_show},
    {"group", "list", "[--limit N]", "Lists groups.", NULL, limit_opts, 0, 0,
     group_list},
    {"group", "rm", "NAME [--force]", "Deletes a group.",
     "A group devices still name is refused (in_use) unless --force.",
     force_opts, 1, 1, group_rm},
    {"policy", "put", "NAME FILE|-",
     "Creates or replaces a policy from a JSON document (- reads stdin).",
     "The document is {\"statements\":[{\"effect\",\"actions\",\"topics\"|"
     "\"client_ids\"}, ...]} (docs/policies.md).",
     NULL, 2, 2, policy_put},
    {"policy", "get", "NAME", "Prints a policy document (JSON).", NULL, NULL,
     1, 1, policy_get},
    {"policy", "list", "[--limit N]", "Lists policies.", NULL, limit_opts, 0,
     0, policy_list},
    {"policy", "rm", "NAME [--force]", "Deletes a policy.",
     "A policy devices or groups still name is refused (in_use) unless "
     "--force.", force_opts, 1, 1,
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
    {"audit", NULL,
     "[--action A] [--actor A] [--target T] [--since S] [--until U] "
     "[--desc] [--after SEQ] [--limit N] [--follow]",
     "Prints the audit log: issuance, revocation, enrollment use, admin "
     "changes.",
     "Filters are exact (--action device.* takes every verb of an object; "
     "--actor apikey:NAME every key of that name); --since/--until take "
     "RFC 3339 UTC or Unix seconds. --follow prints the entries asked for "
     "(none without --limit, --after or --desc), then each new matching "
     "entry as one line (one JSON object per line with --json) until "
     "SIGINT. docs/audit.md describes the entries.",
     audit_opts, 0, 0, audit},
};

const ctl_cmd *cmd_registry_table(size_t *n)
{
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
