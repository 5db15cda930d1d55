/* Issuing certificates, free of any transport: factory enrollment under an
 * enrollment, renewal by a device presenting its current certificate, and
 * server certificates. The HTTP routes (routes_ca.c) and the CoAP server
 * (coap.c) both call these, so every rule (id pattern, budgets, device
 * status, lifetimes, durable commit, audit, metrics) is written once. */
#ifndef AUTHD_ISSUE_H
#define AUTHD_ISSUE_H

#include <stddef.h>
#include <stdint.h>

#include "../ca/ca.h"
#include "app.h"
#include "registry_enrollments.h"

/* What a certificate is issued as. */
typedef struct {
    const char *kind;          /* "device" or "server" */
    const char *device_id;     /* device certs */
    const char *enrollment_id; /* enrollments (uses one of its budget) */
    int create_device;
    long days;
    const char *const *dns;    /* server certs: at least one dns or ip */
    size_t ndns;
    const char *const *ips;
    size_t nips;
    const char *audit_action;  /* "cert.enroll", "cert.renew", ... */
    /* Enrollment only, may be NULL: set to 1 when the device already
     * held a valid certificate of this enrollment for the CSR's key,
     * which is then *out (no use spent, nothing written but the audit
     * entry); 0 for a new certificate. */
    int *reused;
} issue_req;

/* Signs a certificate for csr as q describes and commits it (with the
 * enrollment use, the device record and the audit entry) in one durable
 * write, audited as actor. On AD_OK *out holds the certificate (the
 * caller frees it with ca_issued_free) and may leave the process; on
 * error *out is zeroed, nothing was written and msg may say why ("" to
 * use the error's default message). */
ad_err issue_cert(app *a, const char *actor, const ca_csr *csr,
                  const issue_req *q, ca_issued *out, char *msg,
                  size_t msglen);

/* Factory enrollment under enr, as /v1/enroll and both EST simpleenrolls
 * do: device_id (NULL: the CSR's CN) must be a valid id matching the
 * enrollment's pattern, the enrollment usable and the device issuable.
 * Refusals count in the enroll_refused metric. Same ownership and errors
 * as issue_cert, plus AD_EDEVID, AD_EPATTERN, AD_EENREXPIRED,
 * AD_EENRUSED, AD_ESUSPENDED, AD_EREVOKED. */
ad_err issue_enroll(app *a, const char *actor, const registry_enrollment *enr,
                    const ca_csr *csr, const char *device_id, ca_issued *out,
                    int *reused, char *msg, size_t msglen);

/* Renewal by the holder of cert_der (the certificate the client
 * authenticated with): it must be a current certificate of an active
 * device (AD_EBADCRED, AD_EREVOKED, AD_ESUSPENDED otherwise); the audit
 * actor is "device:<id>". device_id receives the id once the device is
 * known ("" before). With subject_must_match (EST re-enroll) the CSR's CN
 * must be the device id (AD_ESUBJECT). Same ownership as issue_cert. */
ad_err issue_renew(app *a, const uint8_t *cert_der, size_t cert_len,
                   const ca_csr *csr, int subject_must_match,
                   char device_id[REGISTRY_ID_MAX], ca_issued *out,
                   char *msg, size_t msglen);

#endif
