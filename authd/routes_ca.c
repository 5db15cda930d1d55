/* Handlers that hand out certificates: the CA's own certificates, factory
 * enrollment (/v1/enroll and EST simpleenroll), renewal over mTLS
 * (/v1/renew and EST simplereenroll) and server certificates. The rules
 * of issuing are issue.c's; this file reads requests and writes answers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../common/codec.h"
#include "issue.h"
#include "registry_enrollments.h"
#include "routes.h"
#include "util.h"

enum { MAX_SANS = 32 };

/* How an issued certificate is returned. */
typedef enum { ANSWER_JSON, ANSWER_PKCS7 } answer_form;

static void reply_pkcs7(http_req *r, unsigned status,
                        const uint8_t *const *ders, const size_t *lens,
                        size_t n)
{
    uint8_t *p7 = NULL;
    size_t p7len = 0;
    char *b64;
    ad_err e;

    e = ca_pkcs7_certs_only(ders, lens, n, &p7, &p7len);
    if (e != AD_OK) {
        http_reply_error(r, e, NULL);
        return;
    }
    b64 = codec_b64_encode_alloc(p7, p7len, CODEC_B64_LINES);
    free(p7);
    if (b64 == NULL) {
        http_reply_error(r, AD_ENOMEM, NULL);
        return;
    }
    http_reply_bytes(r, status, "application/pkcs7-mime; smime-type=certs-only",
                     b64, strlen(b64));
    free(b64);
}

/* Answers the outcome of an issue_* call: the error, or the certificate
 * in form (which it frees). */
static void reply_issued(http_req *r, ad_err e, const char *msg,
                         ca_issued *iss, const char *device_id,
                         answer_form form, int reused)
{
    char na[32];

    if (e != AD_OK) {
        http_reply_error(r, e, msg);
        return;
    }
    if (form == ANSWER_PKCS7) {
        const uint8_t *ders[1] = {iss->der};
        size_t lens[1] = {iss->der_len};
        reply_pkcs7(r, 200, ders, lens, 1);
    } else {
        buf_t out;
        char *text;
        size_t len;

        util_time_rfc3339((time_t)iss->not_after, na, sizeof(na));
        buf_init(&out, 64 * 1024);
        buf_append_str(&out, "{");
        util_json_kv(&out, "device_id", device_id);
        util_json_kv(&out, "serial", iss->serial_hex);
        util_json_kv(&out, "certificate", iss->pem);
        util_json_kv(&out, "chain", ca_chain_pem(r->app->ca));
        util_json_kv(&out, "not_after", na);
        buf_append_str(&out, "}");
        text = buf_take(&out, &len);
        if (text == NULL)
            http_reply_error(r, AD_ENOMEM, NULL);
        else
            http_reply_bytes(r, reused ? 200 : 201, "application/json",
                             text, len);
        free(text);
    }
    ca_issued_free(iss);
}

/* ---- CA certificates ------------------------------------------------- */

void route_ca_info(http_req *r)
{
    char na[32];

    util_time_rfc3339((time_t)ca_not_after(r->app->ca), na, sizeof(na));
    http_reply_json(r, 200,
                    json_pack("{s:s, s:s, s:s}", "subject",
                              ca_subject(r->app->ca), "not_after", na,
                              "chain_pem", ca_chain_pem(r->app->ca)));
}

void route_ca_pem(http_req *r)
{
    const char *pem = ca_chain_pem(r->app->ca);

    http_reply_bytes(r, 200, "application/x-pem-file", pem, strlen(pem));
}

void route_est_cacerts(http_req *r)
{
    app *a = r->app;

    reply_pkcs7(r, 200, (const uint8_t *const *)a->chain_der, a->chain_len,
                a->chain_n);
}

void route_est_csrattrs(http_req *r)
{
    /* No attributes are required (RFC 7030 §4.5.2 allows 204). */
    http_reply_empty(r, 204);
}

/* ---- enrollment ------------------------------------------------------ */

/* The enrollment a request is made under: an enrollment token as Bearer
 * (or the password of EST Basic auth, user = enrollment id), or an
 * admin/provisioner API key naming "enrollment" in the body, into *enr.
 * On failure replies and returns -1. */
static int enrollment_of(http_req *r, const char *named_id,
                         registry_enrollment *enr)
{
    const char *auth = http_header(r, "Authorization");
    ad_err e;

    if (auth == NULL) {
        r->www_authenticate = "Bearer";
        http_reply_error(r, AD_EUNAUTH, "an enrollment token is required");
        return -1;
    }
    if (strncasecmp(auth, "Basic ", 6) == 0) {
        uint8_t *raw = NULL;
        size_t rawlen = 0;
        char *colon;

        /* At most 512 bytes, with room for a NUL after them. */
        if (codec_b64_decode_alloc(auth + 6, strlen(auth + 6), 513, &raw,
                                   &rawlen, 0) != 0 ||
            rawlen > 512) {
            free(raw);
            http_reply_error(r, AD_EBADCRED, "malformed Basic credentials");
            return -1;
        }
        raw[rawlen] = '\0'; /* rawlen < 513, the buffer's size */
        colon = memchr(raw, ':', rawlen);
        if (colon == NULL || strlen((char *)raw) != rawlen) {
            free(raw);
            http_reply_error(r, AD_EBADCRED, "malformed Basic credentials");
            return -1;
        }
        *colon = '\0';
        e = registry_enrollment_by_token(r->app->st, colon + 1, enr);
        /* The user part must name the same enrollment, if given. */
        if (e == AD_OK && raw[0] && strcmp((char *)raw, enr->id) != 0)
            e = AD_EBADCRED;
        free(raw);
    } else if (strncasecmp(auth, "Bearer enr_", 11) == 0) {
        e = registry_enrollment_by_token(r->app->st, auth + 7, enr);
    } else {
        api_role role = http_bearer_role(r);

        if (role != ROLE_ADMIN && role != ROLE_PROVISIONER) {
            http_reply_error(r, role != ROLE_NONE ? AD_EFORBIDDEN
                                                  : r->bearer_err,
                             "an enrollment token or a provisioner API key "
                             "is required");
            return -1;
        }
        if (named_id == NULL) {
            http_reply_error(r, AD_EFIELD,
                             "with an API key, \"enrollment\" must name the "
                             "enrollment");
            return -1;
        }
        e = registry_enrollment_get(r->app->st, named_id, enr);
        if (e == AD_ENOTFOUND) {
            http_reply_error(r, AD_ENOTFOUND, "no such enrollment");
            return -1;
        }
        if (e == AD_OK)
            return 0;
    }
    if (e != AD_OK) {
        r->www_authenticate = "Bearer error=\"invalid_token\"";
        http_reply_error(r, e,
                         e == AD_EBADCRED ? "the enrollment token is not valid"
                                          : NULL);
        return -1;
    }
    snprintf(r->actor, sizeof(r->actor), "enrollment:%s", enr->id);
    return 0;
}

/* Shared by /v1/enroll and EST simpleenroll once the CSR is parsed. */
static void enroll_with(http_req *r, const registry_enrollment *enr,
                        const ca_csr *csr, const char *device_id,
                        answer_form form)
{
    ca_issued iss;
    char msg[300];
    int reused = 0;
    ad_err e;

    if (device_id == NULL)
        device_id = ca_csr_common_name(csr);
    e = issue_enroll(r->app, r->actor, enr, csr, device_id, &iss, &reused,
                     msg, sizeof(msg));
    reply_issued(r, e, msg, &iss, device_id, form, reused);
}

void route_enroll(http_req *r)
{
    json_t *body = NULL, *jdev, *jcsr, *jenr;
    registry_enrollment enr;
    ca_csr *csr = NULL;
    const char *csr_pem;
    char msg[256];
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    jenr = json_object_get(body, "enrollment");
    if (enrollment_of(r, json_string_value(jenr), &enr) != 0)
        goto out;
    jcsr = json_object_get(body, "csr");
    jdev = json_object_get(body, "device_id");
    if (!json_is_string(jcsr) || (jdev && !json_is_string(jdev) &&
                                  !json_is_null(jdev))) {
        http_reply_error(r, AD_EFIELD,
                         "\"csr\" (PEM string) is required; \"device_id\" "
                         "must be a string");
        goto out;
    }
    csr_pem = json_string_value(jcsr);
    msg[0] = '\0';
    e = ca_csr_parse_pem(csr_pem, json_string_length(jcsr), &csr, msg,
                         sizeof(msg));
    if (e != AD_OK) {
        http_metric_inc(r->app, METRIC_ENROLL_REFUSED);
        http_reply_error(r, e, msg);
        goto out;
    }
    enroll_with(r, &enr, csr, json_string_value(jdev), ANSWER_JSON);
out:
    ca_csr_free(csr);
    json_decref(body);
}

/* EST bodies are base64 DER (RFC 8951); PEM is accepted too. */
static ca_csr *est_csr(http_req *r)
{
    uint8_t *der = NULL;
    size_t len = 0;
    ca_csr *csr = NULL;
    char msg[256] = "";
    ad_err e;

    if (r->body_len >= 10 && memcmp(r->body, "-----BEGIN", 10) == 0) {
        e = ca_csr_parse_pem(r->body, r->body_len, &csr, msg, sizeof(msg));
    } else if (codec_b64_decode_alloc(r->body, r->body_len, SIZE_MAX, &der,
                                      &len, CODEC_B64_LINES) != 0 ||
               len == 0) {
        e = AD_ECSR;
        snprintf(msg, sizeof(msg), "the body must be a base64 DER CSR");
    } else {
        e = ca_csr_parse_der(der, len, &csr, msg, sizeof(msg));
    }
    free(der);
    if (e != AD_OK) {
        http_reply_error(r, e, msg);
        return NULL;
    }
    return csr;
}

void route_est_simpleenroll(http_req *r)
{
    registry_enrollment enr;
    ca_csr *csr;

    if (enrollment_of(r, NULL, &enr) != 0)
        return;
    if ((csr = est_csr(r)) != NULL)
        enroll_with(r, &enr, csr, NULL, ANSWER_PKCS7);
    ca_csr_free(csr);
}

/* ---- renewal over mTLS ----------------------------------------------- */

static void renew_with(http_req *r, const ca_csr *csr, answer_form form,
                       int subject_must_match)
{
    ca_issued iss;
    char msg[300], device_id[REGISTRY_ID_MAX];
    ad_err e;

    e = issue_renew(r->app, r->client_cert, r->client_cert_len, csr,
                    subject_must_match, device_id, &iss, msg, sizeof(msg));
    if (device_id[0])
        snprintf(r->actor, sizeof(r->actor), "device:%s", device_id);
    reply_issued(r, e, msg, &iss, device_id, form, 0);
}

void route_renew(http_req *r)
{
    json_t *body, *jcsr;
    ca_csr *csr = NULL;
    char msg[256] = "";
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    jcsr = json_object_get(body, "csr");
    if (!json_is_string(jcsr)) {
        http_reply_error(r, AD_EFIELD, "\"csr\" (PEM string) is required");
        goto out;
    }
    e = ca_csr_parse_pem(json_string_value(jcsr), json_string_length(jcsr),
                         &csr, msg, sizeof(msg));
    if (e != AD_OK) {
        http_reply_error(r, e, msg);
        goto out;
    }
    renew_with(r, csr, ANSWER_JSON, 0);
out:
    ca_csr_free(csr);
    json_decref(body);
}

void route_est_simplereenroll(http_req *r)
{
    ca_csr *csr = est_csr(r);

    if (csr != NULL)
        renew_with(r, csr, ANSWER_PKCS7, 1);
    ca_csr_free(csr);
}

/* ---- server certificates --------------------------------------------- */

/* Copies a JSON array of strings into out (at most MAX_SANS). Returns
 * the count, or -1 if it is not such an array. */
static int string_array(const json_t *arr, const char **out)
{
    size_t i;
    json_t *v;

    if (arr == NULL || json_is_null(arr))
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > MAX_SANS)
        return -1;
    json_array_foreach(arr, i, v) {
        const char *s = json_string_value(v);
        if (s == NULL || *s == '\0' || strlen(s) > 253)
            return -1;
        out[i] = s;
    }
    return (int)json_array_size(arr);
}

void route_server_certs(http_req *r)
{
    json_t *body, *jcsr, *jdays;
    const char *dns[MAX_SANS], *ips[MAX_SANS];
    int ndns, nips;
    ca_csr *csr = NULL;
    issue_req q;
    ca_issued iss;
    char msg[256] = "";
    ad_err e;

    if ((body = http_body_object(r)) == NULL)
        return;
    jcsr = json_object_get(body, "csr");
    jdays = json_object_get(body, "days");
    ndns = string_array(json_object_get(body, "dns"), dns);
    nips = string_array(json_object_get(body, "ips"), ips);
    if (!json_is_string(jcsr) || ndns < 0 || nips < 0 ||
        (jdays && (!json_is_integer(jdays) || json_integer_value(jdays) < 1 ||
                   json_integer_value(jdays) > 3650))) {
        http_reply_error(r, AD_EFIELD,
                         "expected {\"csr\": PEM, \"dns\": [names], \"ips\": "
                         "[addresses], \"days\": 1..3650}");
        goto out;
    }
    if (ndns + nips == 0) {
        http_reply_error(r, AD_EFIELD, "give at least one of dns or ips");
        goto out;
    }
    e = ca_csr_parse_pem(json_string_value(jcsr), json_string_length(jcsr),
                         &csr, msg, sizeof(msg));
    if (e != AD_OK) {
        http_reply_error(r, e, msg);
        goto out;
    }
    memset(&q, 0, sizeof(q));
    q.kind = "server";
    q.days = jdays ? (long)json_integer_value(jdays)
                   : atomic_load(&r->app->server_cert_days);
    q.dns = dns;
    q.ndns = (size_t)ndns;
    q.ips = ips;
    q.nips = (size_t)nips;
    q.audit_action = "cert.issue_server";
    e = issue_cert(r->app, r->actor, csr, &q, &iss, msg, sizeof(msg));
    reply_issued(r, e, msg, &iss, NULL, ANSWER_JSON, 0);
out:
    ca_csr_free(csr);
    json_decref(body);
}
