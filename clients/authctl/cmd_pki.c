/* authctl commands for the certificate side (docs/api.md §6, §7, §9):
 * enrollments, certificates, server certificates made from a key that
 * never leaves this machine, revocation, the CRL and token keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ctl.h"
#include "pki.h"

enum { OUT_PATH_MAX = 4096, DNS_MAX = 32 };

static json_t *multi(const args *a, const char *name)
{
    json_t *arr = json_array();
    size_t i, n = args_count(a, name);

    for (i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_string(args_nth(a, name, i)));
    return arr;
}

/* Sets body[field] to the integer option name when given. 0, or -1 after
 * printing a usage error. */
static int int_opt(const args *a, const char *name, json_t *body,
                   const char *field)
{
    char err[128];
    long v;

    if (!args_has(a, name))
        return 0;
    if (args_long(a, name, 1, 1L << 52, 0, &v, err, sizeof(err)) != 0) {
        ctl_usage(a, "%s", err);
        return -1;
    }
    json_object_set_new(body, field, json_integer(v));
    return 0;
}

/* ---- enrollments ------------------------------------------------------ */

static const args_opt enroll_create_opts[] = {
    {"name", ARG_VALUE, "N", "a name for the batch"},
    {"pattern", ARG_VALUE, "P", "device ids it may enroll, a glob (SN-*)"},
    {"max-uses", ARG_VALUE, "N", "how many certificates it may issue"},
    {"expires-in", ARG_VALUE, "S", "seconds until it expires"},
    {"group", ARG_MULTI, "G", "groups of the devices it creates"},
    {"cert-days", ARG_VALUE, "D", "lifetime of its certificates in days"},
    {"gateway", ARG_VALUE, "ID", "the devices it creates sit behind gateway ID"},
    {NULL, 0, NULL, NULL},
};

static int enroll_create(ctl *c, const args *a)
{
    json_t *body = json_object(), *j = NULL;
    int rc = CTL_USAGE;

    if (body == NULL)
        return ctl_fail("out of memory");
    if (args_get(a, "name"))
        json_object_set_new(body, "name", json_string(args_get(a, "name")));
    if (args_get(a, "pattern"))
        json_object_set_new(body, "id_pattern",
                            json_string(args_get(a, "pattern")));
    if (args_has(a, "group"))
        json_object_set_new(body, "groups", multi(a, "group"));
    if (args_get(a, "gateway"))
        json_object_set_new(body, "gateway",
                            json_string(args_get(a, "gateway")));
    if (int_opt(a, "max-uses", body, "max_uses") != 0 ||
        int_opt(a, "expires-in", body, "expires_in") != 0 ||
        int_opt(a, "cert-days", body, "cert_days") != 0)
        goto out;
    rc = api_json(c->api, "POST", "/v1/enrollments", body, &j);
    if (rc == CTL_OK) {
        ctl_print(c, j, NULL);
        if (!c->json)
            fputs("authctl: the token is shown only this once\n", stderr);
    }
out:
    json_decref(j);
    json_decref(body);
    return rc;
}

static const args_opt limit_opts[] = {CTL_OPT_LIMIT, {NULL, 0, NULL, NULL}};

static int enroll_list(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"ID", "id"}, {"NAME", "name"}, {"PATTERN", "id_pattern"},
        {"USED", "used"}, {"MAX", "max_uses"}, {"EXPIRES", "expires_at"},
        {"GROUPS", "groups"}, {"CERT_DAYS", "cert_days"},
    };

    return ctl_list(c, a, "/v1/enrollments", NULL, cols,
                    sizeof(cols) / sizeof(cols[0]));
}

static int by_id(ctl *c, const args *a, const char *method,
                 const char *prefix, const char *suffix, const json_t *body,
                 const char *done)
{
    char path[API_PATH_MAX];
    json_t *j = NULL;
    int rc;

    if (ctl_path(path, sizeof(path), prefix, a->pos[0], suffix) != 0)
        return ctl_usage(a, "the argument is too long");
    rc = api_json(c->api, method, path, body, &j);
    if (rc == CTL_OK) {
        if (c->json || (j != NULL && done == NULL))
            ctl_print(c, j, NULL);
        else if (done)
            printf("%s %s\n", done, a->pos[0]);
    }
    json_decref(j);
    return rc;
}

static int enroll_show(ctl *c, const args *a)
{
    return by_id(c, a, "GET", "/v1/enrollments/", NULL, NULL, NULL);
}

static const args_opt enroll_update_opts[] = {
    {"max-uses", ARG_VALUE, "N", "the new budget (not below the uses made)"},
    {"expires-in", ARG_VALUE, "S", "seconds from now until it expires"},
    {"group", ARG_MULTI, "G", "replaces its groups (existing groups only)"},
    {NULL, 0, NULL, NULL},
};

static int enroll_update(ctl *c, const args *a)
{
    json_t *body = json_object();
    int rc = CTL_USAGE;

    if (body == NULL)
        return ctl_fail("out of memory");
    if (args_has(a, "group"))
        json_object_set_new(body, "groups", multi(a, "group"));
    if (int_opt(a, "max-uses", body, "max_uses") != 0 ||
        int_opt(a, "expires-in", body, "expires_in") != 0)
        goto out;
    if (json_object_size(body) == 0) {
        rc = ctl_usage(a, "nothing to change: give --max-uses, --expires-in "
                          "or --group");
        goto out;
    }
    rc = by_id(c, a, "PATCH", "/v1/enrollments/", NULL, body, NULL);
out:
    json_decref(body);
    return rc;
}

static int enroll_rm(ctl *c, const args *a)
{
    return by_id(c, a, "DELETE", "/v1/enrollments/", NULL, NULL,
                 "deleted enrollment");
}

/* ---- certificates ----------------------------------------------------- */

static const args_opt cert_list_opts[] = {
    {"device", ARG_VALUE, "ID", "certificates of one device"},
    {"enrollment", ARG_VALUE, "ID", "certificates issued under an enrollment"},
    {"status", ARG_VALUE, "S", "valid, revoked or expired"},
    CTL_OPT_LIMIT,
    {NULL, 0, NULL, NULL},
};

static int cert_list(ctl *c, const args *a)
{
    static const out_col cols[] = {
        {"SERIAL", "serial"}, {"DEVICE", "device_id"}, {"STATUS", "status"},
        {"NOT_AFTER", "not_after"}, {"ENROLLMENT", "enrollment"},
    };
    char path[API_PATH_MAX] = "/v1/certs";

    if (api_query_add(path, sizeof(path), "device", args_get(a, "device")) ||
        api_query_add(path, sizeof(path), "enrollment",
                      args_get(a, "enrollment")) ||
        api_query_add(path, sizeof(path), "status", args_get(a, "status")))
        return ctl_usage(a, "the filters are too long");
    return ctl_list(c, a, path, NULL, cols, sizeof(cols) / sizeof(cols[0]));
}

static int cert_show(ctl *c, const args *a)
{
    static const char *const skip[] = {"pem", NULL};
    char path[API_PATH_MAX];
    json_t *j = NULL;
    int rc;

    if (ctl_path(path, sizeof(path), "/v1/certs/", a->pos[0], NULL) != 0)
        return ctl_usage(a, "the serial is too long");
    rc = api_json(c->api, "GET", path, NULL, &j);
    if (rc == CTL_OK) {
        ctl_print(c, j, skip);
        if (!c->json && json_is_string(json_object_get(j, "pem"))) {
            putchar('\n');
            out_text(json_string_value(json_object_get(j, "pem")));
        }
    }
    json_decref(j);
    return rc;
}

/* Writes key.pem (0600) first, then chain.pem and cert.pem into dir:
 * cert.pem last, so its presence means the directory is complete. */
static int write_set(const char *dir, const char *key_pem,
                     const json_t *answer, char *err, size_t errlen)
{
    const char *cert = json_string_value(json_object_get(answer, "certificate"));
    const char *chain = json_string_value(json_object_get(answer, "chain"));
    char path[OUT_PATH_MAX];

    if (cert == NULL || chain == NULL) {
        snprintf(err, errlen, "the server's answer has no certificate or "
                              "chain");
        return -1;
    }
    if (key_pem) {
        snprintf(path, sizeof(path), "%s/key.pem", dir);
        if (pki_write_file(path, key_pem, strlen(key_pem), 0600, err,
                           errlen) != 0)
            return -1;
    }
    snprintf(path, sizeof(path), "%s/chain.pem", dir);
    if (pki_write_file(path, chain, strlen(chain), 0644, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/cert.pem", dir);
    return pki_write_file(path, cert, strlen(cert), 0644, err, errlen);
}

static const args_opt cert_server_opts[] = {
    {"dns", ARG_MULTI, "HOST", "a DNS name of the server"},
    {"ip", ARG_MULTI, "IP", "an IP address of the server"},
    {"days", ARG_VALUE, "D", "lifetime in days (default: the server's)"},
    {"out", ARG_VALUE, "DIR", "where to write key.pem, cert.pem, chain.pem"},
    {"force", ARG_FLAG, NULL, "replace files that are already in DIR"},
    {NULL, 0, NULL, NULL},
};

/* The first of key.pem, cert.pem and chain.pem already in dir, or NULL. */
static const char *out_taken(const char *dir)
{
    static const char *const names[] = {"key.pem", "cert.pem", "chain.pem"};
    char path[OUT_PATH_MAX];
    struct stat st;
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (lstat(path, &st) == 0)
            return names[i];
    }
    return NULL;
}

static int cert_server(ctl *c, const args *a)
{
    const char *dir = args_get(a, "out"), *cn;
    char *key = NULL, *csr = NULL, err[512];
    json_t *body = NULL, *j = NULL;
    char v1[128], v2[128];
    int rc = CTL_FAILED;

    if (dir == NULL || (!args_has(a, "dns") && !args_has(a, "ip")))
        return ctl_usage(a, "--out and at least one --dns or --ip are "
                            "required");
    if (strlen(dir) > OUT_PATH_MAX - 32)
        return ctl_usage(a, "--out is too long");
    if (args_count(a, "dns") + args_count(a, "ip") > DNS_MAX)
        return ctl_usage(a, "at most %d names in all", DNS_MAX);
    cn = args_has(a, "dns") ? args_nth(a, "dns", 0) : args_nth(a, "ip", 0);
    body = json_pack("{s:o, s:o}", "dns", multi(a, "dns"), "ips",
                     multi(a, "ip"));
    if (body == NULL) {
        rc = ctl_fail("out of memory or an argument is not UTF-8");
        goto out;
    }
    if (int_opt(a, "days", body, "days") != 0) {
        rc = CTL_USAGE;
        goto out;
    }
    /* A key in use by a broker is not replaced by accident; checked
     * before anything is issued. */
    if (!args_has(a, "force") && out_taken(dir) != NULL) {
        rc = ctl_fail("%s/%s exists: use --force to replace it", dir,
                      out_taken(dir));
        goto out;
    }
    if (pki_mkdir(dir, 0755, err, sizeof(err)) != 0) {
        rc = ctl_fail("%s", err);
        goto out;
    }
    if (pki_key_and_csr(cn, NULL, &key, &csr, err, sizeof(err)) != 0) {
        rc = ctl_fail("%s", err);
        goto out;
    }
    json_object_set_new(body, "csr", json_string(csr));
    rc = api_json(c->api, "POST", "/v1/server-certs", body, &j);
    if (rc != CTL_OK)
        goto out;
    if (write_set(dir, key, j, err, sizeof(err)) != 0) {
        rc = ctl_fail("%s", err);
        goto out;
    }
    if (c->json)
        out_json(j);
    else
        printf("wrote %s/{key.pem,cert.pem,chain.pem}: serial %s, not after "
               "%s\n", dir,
               out_value(json_object_get(j, "serial"), v1, sizeof(v1)),
               out_value(json_object_get(j, "not_after"), v2, sizeof(v2)));
out:
    pki_free_secret(key);
    free(csr);
    json_decref(body);
    json_decref(j);
    return rc;
}

/* ---- revocation ------------------------------------------------------- */

static const args_opt revoke_opts[] = {
    {"reason", ARG_VALUE, "R",
     "an RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, "
     "superseded, cessationOfOperation, ... (default unspecified)"},
    CTL_OPT_YES,
    {NULL, 0, NULL, NULL},
};

static int revoke(ctl *c, const args *a, const char *prefix, const char *done)
{
    const char *reason = args_get(a, "reason");
    json_t *body = json_pack("{s:s}", "reason", reason ? reason : "unspecified");
    int rc;

    if (body == NULL)
        return ctl_fail("out of memory or an argument is not UTF-8");
    rc = by_id(c, a, "POST", prefix, "/revoke", body, done);
    json_decref(body);
    return rc;
}

static int revoke_cert(ctl *c, const args *a)
{
    if (!ctl_confirm(a, "Revoke certificate", a->pos[0]))
        return ctl_fail("not confirmed: nothing was revoked");
    return revoke(c, a, "/v1/certs/", "revoked certificate");
}

static int revoke_device(ctl *c, const args *a)
{
    if (!ctl_confirm(a, "Revoke (finally) device", a->pos[0]))
        return ctl_fail("not confirmed: nothing was revoked");
    return revoke(c, a, "/v1/devices/", "revoked device");
}

static const args_opt crl_opts[] = {
    {"out", ARG_VALUE, "FILE", "write to FILE (default: stdout)"},
    {"der", ARG_FLAG, NULL, "DER instead of PEM"},
    {NULL, 0, NULL, NULL},
};

static int crl(ctl *c, const args *a)
{
    const char *file = args_get(a, "out");
    int der = args_has(a, "der");
    char err[512];
    api_resp r;
    int rc;

    rc = api_raw(c->api, "GET", der ? "/v1/crl" : "/v1/crl.pem", NULL, NULL,
                 0, &r);
    if (rc != CTL_OK)
        return rc;
    if (r.status != 200) {
        rc = api_refused(&r);
    } else if (file) {
        if (pki_write_file(file, r.body, r.len, 0644, err, sizeof(err)) != 0)
            rc = ctl_fail("%s", err);
    } else if (fwrite(r.body, 1, r.len, stdout) != r.len) {
        rc = ctl_fail("cannot write the CRL");
    }
    api_resp_clear(&r);
    return rc;
}

/* ---- tokens ----------------------------------------------------------- */

/* Whether s has the shape of a jti authd mints: 32 lowercase hex digits
 * (16 random bytes), so a typo or a pasted token is caught here. */
static int jti_shaped(const char *s)
{
    size_t i;

    for (i = 0; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 32;
}

static int token_revoke(ctl *c, const args *a)
{
    json_t *body, *j = NULL;
    int rc;

    if (!jti_shaped(a->pos[0]))
        return ctl_usage(a, "a jti is 32 lowercase hex digits (the token's "
                            "\"jti\" claim), not a whole token");
    body = json_pack("{s:s}", "jti", a->pos[0]);
    if (body == NULL)
        return ctl_fail("out of memory or an argument is not UTF-8");
    rc = api_json(c->api, "POST", "/v1/tokens/revoke", body, &j);
    if (rc == CTL_OK) {
        if (c->json)
            out_json(j);
        else
            printf("revoked token %s\n", a->pos[0]);
    }
    json_decref(j);
    json_decref(body);
    return rc;
}

static int token_rotate(ctl *c, const args *a)
{
    json_t *body = json_object(), *j = NULL;
    int rc;

    (void)a;
    rc = api_json(c->api, "POST", "/v1/token-keys", body, &j);
    if (rc == CTL_OK)
        ctl_print(c, j, NULL);
    json_decref(j);
    json_decref(body);
    return rc;
}

static const ctl_cmd cmds[] = {
    {"enroll", "create",
     "[--name N] [--pattern P] [--max-uses N] [--expires-in S] "
     "[--group G]... [--cert-days D] [--gateway ID]",
     "Creates an enrollment (a factory batch) and prints its token once.",
     "Unset fields take the server's defaults (one use, one day).",
     enroll_create_opts, 0, 0, enroll_create},
    {"enroll", "list", "[--limit N]", "Lists enrollments (never tokens).",
     NULL, limit_opts, 0, 0, enroll_list},
    {"enroll", "show", "ID", "Shows an enrollment.", NULL, NULL, 1, 1,
     enroll_show},
    {"enroll", "update", "ID [--max-uses N] [--expires-in S] [--group G]...",
     "Changes an enrollment's budget, expiry or groups.",
     "--group replaces the whole list; the change is audited.",
     enroll_update_opts, 1, 1, enroll_update},
    {"enroll", "rm", "ID", "Deletes an enrollment; its token stops working.",
     NULL, NULL, 1, 1, enroll_rm},
    {"cert", "list",
     "[--device ID] [--enrollment ID] [--status S] [--limit N]",
     "Lists issued certificates.", NULL, cert_list_opts, 0, 0, cert_list},
    {"cert", "show", "SERIAL", "Shows a certificate and its PEM.", NULL, NULL,
     1, 1, cert_show},
    {"cert", "server", "--dns HOST [--dns ...] [--ip IP]... [--days D] "
     "--out DIR [--force]",
     "Issues a TLS server certificate (serverAuth) for a broker or gateway.",
     "The P-256 key is made here and never sent; DIR gets key.pem (0600), "
     "cert.pem and chain.pem (issuing CA, then root). The first --dns (or "
     "--ip) is the subject CN. Existing files in DIR are kept (exit 1) "
     "unless --force.",
     cert_server_opts, 0, 0, cert_server},
    {"revoke", "cert", "SERIAL [--reason R] [--yes]",
     "Revokes one certificate.",
     "On a terminal it asks first unless --yes; with stdin not a terminal "
     "(scripts) it does not ask.", revoke_opts, 1, 1, revoke_cert},
    {"revoke", "device", "ID [--reason R] [--yes]",
     "Revokes a device: all its certificates and tokens; final.",
     "On a terminal it asks first unless --yes; with stdin not a terminal "
     "(scripts) it does not ask.", revoke_opts, 1, 1, revoke_device},
    {"token", "revoke", "JTI", "Revokes one access token by its jti.", NULL,
     NULL, 1, 1, token_revoke},
    {"token", "rotate-key", "",
     "Adds a new token-signing key; old keys verify until their tokens "
     "expire.", NULL, NULL, 0, 0, token_rotate},
    {"crl", NULL, "[--out FILE] [--der]",
     "Fetches the current CRL (PEM, or DER with --der).", NULL, crl_opts, 0,
     0, crl},
};

const ctl_cmd *cmd_pki_table(size_t *n)
{
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
