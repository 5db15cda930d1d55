/* See issue.h. The certificate leaves this module only after its commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <time.h>

#include "http.h"
#include "log.h"
#include "issue.h"
#include "util.h"

static void set_msg(char *msg, size_t msglen, const char *text)
{
    if (msg != NULL && msglen > 0)
        util_strlcpy(msg, text, msglen);
}

/* A recorded certificate (its PEM) as a ca_issued. */
static ad_err issued_of_pem(const char *pem, ca_issued *out)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    ca_cert_info info;
    int n = x ? i2d_X509(x, &der) : -1;
    ad_err e = AD_ECRYPTO;

    memset(out, 0, sizeof(*out));
    BIO_free(b);
    X509_free(x);
    if (n <= 0 || ca_cert_inspect(der, (size_t)n, &info) != AD_OK)
        goto out;
    out->der = malloc((size_t)n);
    out->pem = strdup(pem);
    if (out->der == NULL || out->pem == NULL) {
        e = AD_ENOMEM;
        ca_issued_free(out);
        goto out;
    }
    memcpy(out->der, der, (size_t)n);
    out->der_len = (size_t)n;
    util_strlcpy(out->serial_hex, info.serial_hex, sizeof(out->serial_hex));
    memcpy(out->sha256, info.sha256, sizeof(out->sha256));
    out->not_before = info.not_before;
    out->not_after = info.not_after;
    e = ca_serial_from_hex(info.serial_hex, out->serial, &out->serial_len);
    if (e != AD_OK)
        ca_issued_free(out);
out:
    OPENSSL_free(der);
    return e;
}

ad_err issue_cert(app *a, const char *actor, const ca_csr *csr,
                  const issue_req *q, ca_issued *out, char *msg,
                  size_t msglen)
{
    ca_issued iss;
    ca_profile prof;
    registry_issue rec;
    char uri[CONFIG_STR_MAX + 160];
    char crl_url[CONFIG_STR_MAX + 16], ocsp_url[CONFIG_STR_MAX + 16];
    time_t now = time(NULL);
    char reused_serial[CA_SERIAL_HEX_MAX], *reused_pem = NULL;
    int64_t not_after;
    ad_err e;

    memset(out, 0, sizeof(*out));
    set_msg(msg, msglen, "");
    memset(&prof, 0, sizeof(prof));
    not_after = (int64_t)now + (int64_t)q->days * 86400;
    /* Never outlive the issuing CA. */
    if (not_after > ca_not_after(a->ca))
        not_after = ca_not_after(a->ca);
    prof.not_before = (int64_t)now - 60; /* tolerate small clock skew */
    prof.not_after = not_after;
    if (strcmp(q->kind, "server") == 0) {
        prof.kind = CA_PROFILE_SERVER;
        prof.common_name = q->ndns ? q->dns[0] : q->ips[0];
        prof.dns = q->dns;
        prof.dns_count = q->ndns;
        prof.ips = q->ips;
        prof.ip_count = q->nips;
    } else {
        prof.kind = CA_PROFILE_DEVICE;
        prof.common_name = q->device_id;
        snprintf(uri, sizeof(uri), "%s%s", a->cfg.device_uri_prefix,
                 q->device_id);
        prof.san_uri = uri;
    }
    if (a->cfg.public_url[0]) {
        snprintf(crl_url, sizeof(crl_url), "%s/v1/crl", a->cfg.public_url);
        snprintf(ocsp_url, sizeof(ocsp_url), "%s/v1/ocsp", a->cfg.public_url);
        prof.crl_url = crl_url;
        prof.ocsp_url = ocsp_url;
    }
    e = ca_issue(a->ca, csr, &prof, &iss, msg, msglen);
    if (e != AD_OK)
        return e;
    memset(&rec, 0, sizeof(rec));
    rec.actor = actor;
    rec.kind = q->kind;
    rec.enrollment_id = q->enrollment_id;
    rec.device_id = q->device_id;
    rec.create_device = q->create_device;
    rec.cert = &iss;
    rec.audit_action = q->audit_action;
    rec.now = now;
    if (q->reused != NULL) {
        *q->reused = 0;
        rec.reused_serial = reused_serial;
        rec.reused_pem = &reused_pem;
    }
    reused_serial[0] = '\0';
    e = registry_commit_issue(a->st, &rec);
    if (e != AD_OK) {
        http_metric_inc(a, METRIC_ENROLL_REFUSED);
        set_msg(msg, msglen, "");
        ca_issued_free(&iss);
        free(reused_pem);
        return e;
    }
    if (reused_serial[0]) {
        /* A replay: the certificate just signed was never recorded and
         * is dropped; the one on record is handed out again. */
        ca_issued_free(&iss);
        e = issued_of_pem(reused_pem, &iss);
        free(reused_pem);
        if (e != AD_OK)
            return e;
        *q->reused = 1;
        *out = iss;
        return AD_OK;
    }
    free(reused_pem);
    http_metric_inc(a, METRIC_CERTS_ISSUED);
    *out = iss;
    return AD_OK;
}

ad_err issue_enroll(app *a, const char *actor, const registry_enrollment *enr,
                    const ca_csr *csr, const char *device_id, ca_issued *out,
                    int *reused, char *msg, size_t msglen)
{
    issue_req q;
    const char *pattern = enr->id_pattern;
    ad_err e;

    memset(out, 0, sizeof(*out));
    set_msg(msg, msglen, "");
    if (device_id == NULL)
        device_id = ca_csr_common_name(csr);
    if (device_id == NULL) {
        set_msg(msg, msglen, "no device_id given and the CSR has no CN");
        return AD_EDEVID;
    }
    if (!util_device_id_valid(device_id))
        return AD_EDEVID;
    if (!util_glob_match(pattern, device_id)) {
        char safe[140];

        if (msg != NULL && msglen > 0)
            snprintf(msg, msglen, "device id %s does not match %s",
                     log_safe(device_id, safe, sizeof(safe)), pattern);
        return AD_EPATTERN;
    }
    /* Cheap refusals before spending a signature; the writer checks all
     * of this again atomically. */
    e = registry_enrollment_usable(enr, time(NULL));
    /* A used-up enrollment may still answer a replay: the writer decides. */
    if (e == AD_EENRUSED)
        e = AD_OK;
    if (e == AD_OK)
        e = registry_device_issuable(a->st, device_id);
    if (e != AD_OK) {
        http_metric_inc(a, METRIC_ENROLL_REFUSED);
        return e;
    }
    memset(&q, 0, sizeof(q));
    q.kind = "device";
    q.device_id = device_id;
    q.enrollment_id = enr->id;
    q.create_device = 1;
    q.days = enr->cert_days;
    if (q.days <= 0)
        q.days = atomic_load(&a->cert_days);
    q.audit_action = "cert.enroll";
    q.reused = reused;
    return issue_cert(a, actor, csr, &q, out, msg, msglen);
}

ad_err issue_renew(app *a, const uint8_t *cert_der, size_t cert_len,
                   const ca_csr *csr, int subject_must_match,
                   char device_id[REGISTRY_ID_MAX], ca_issued *out,
                   char *msg, size_t msglen)
{
    registry_cert_owner owner;
    char actor[REGISTRY_ID_MAX + 8];
    registry_enrollment enr;
    issue_req q;
    const char *cn;
    ad_err e;

    memset(out, 0, sizeof(*out));
    set_msg(msg, msglen, "");
    device_id[0] = '\0';
    e = registry_device_by_cert(a->st, cert_der, cert_len, time(NULL),
                                &owner);
    if (e != AD_OK) {
        if (e == AD_EBADCRED)
            set_msg(msg, msglen, REGISTRY_CERT_REFUSED);
        return e;
    }
    util_strlcpy(device_id, owner.device_id, REGISTRY_ID_MAX);
    snprintf(actor, sizeof(actor), "device:%s", owner.device_id);
    cn = ca_csr_common_name(csr);
    if (subject_must_match && (cn == NULL || strcmp(cn, owner.device_id) != 0)) {
        set_msg(msg, msglen, "the CSR subject must be CN=<device id>");
        return AD_ESUBJECT;
    }
    memset(&q, 0, sizeof(q));
    q.kind = "device";
    q.device_id = owner.device_id;
    q.days = atomic_load(&a->cert_days);
    /* Keep the lifetime the device's enrollment chose, if it still
     * exists; renewal does not consume an enrollment use. */
    if (owner.enrollment_id[0] &&
        registry_enrollment_get(a->st, owner.enrollment_id, &enr) == AD_OK &&
        enr.cert_days > 0)
        q.days = enr.cert_days;
    q.audit_action = "cert.renew";
    return issue_cert(a, actor, csr, &q, out, msg, msglen);
}
