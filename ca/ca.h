/* The certificate authority library: generates and loads CA keys, checks
 * CSRs, and builds and signs certificates. It does no file or network I/O
 * and knows nothing of HTTP or LMDB; everything comes in and goes out as
 * memory (PEM strings or DER bytes). The daemon wires it to the store.
 *
 * Hot path: the common case (an ECDSA P-256 CSR signed with SHA-256, an
 * ECDSA P-256 issuing key) avoids OpenSSL 3.0's generic key decoders and
 * encoders, which cost far more than the signature math: the CSR's
 * SubjectPublicKeyInfo is copied into the certificate byte for byte and
 * the TBSCertificate is encoded directly. Other key types take the
 * generic (slower) path with the same results. */
#ifndef AUTHD_CA_H
#define AUTHD_CA_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

typedef struct ca ca;         /* a loaded issuing CA: key parsed once */
typedef struct ca_csr ca_csr; /* a parsed CSR whose signature verified */

enum { CA_SERIAL_MAX = 20, CA_SERIAL_HEX_MAX = 2 * CA_SERIAL_MAX + 1 };

/* Call once at program start (before threads). Returns AD_OK. */
ad_err ca_global_init(void);

/* ---- generating and loading a CA ---------------------------------- */

/* Material produced by ca_generate. All strings are NUL-terminated PEM
 * owned by the struct; free with ca_material_free (NULL-safe). */
typedef struct {
    char *root_cert_pem;
    char *root_key_pem;      /* PKCS#8, unencrypted */
    char *issuing_cert_pem;
    char *issuing_key_pem;   /* PKCS#8, unencrypted */
} ca_material;

/* Generates an ECDSA P-256 self-signed root (20 years) and an issuing CA
 * (10 years, pathlen 0) signed by it. subject is an OpenSSL-style
 * "CN=..,O=.." string for the issuing CA, or NULL for
 * "CN=authd Issuing CA"; the root gets "CN=authd Root CA" plus the same
 * non-CN attributes. On error *out is zeroed. */
ad_err ca_generate(const char *subject, ca_material *out, char *err,
                   size_t errlen);
void ca_material_free(ca_material *m);

/* Parses the issuing CA's certificate and private key (PEM) and the
 * chain to present (PEM: issuing CA first, then root; may be just the
 * issuing certificate). Checks that the key matches the certificate and
 * that the certificate is a CA. The key is parsed once here; ca_issue
 * never decodes it again. On error *out is NULL. */
ad_err ca_open(const char *issuing_cert_pem, const char *issuing_key_pem,
               const char *chain_pem, ca **out, char *err, size_t errlen);
void ca_close(ca *c);

/* The chain PEM given to ca_open (issuing CA first). Owned by c. */
const char *ca_chain_pem(const ca *c);
/* The issuing CA certificate's DER. Owned by c. */
const uint8_t *ca_cert_der(const ca *c, size_t *len);
/* The issuing CA's subject as a one-line string ("CN=..,O=.."). */
const char *ca_subject(const ca *c);
/* The issuing CA's notAfter, Unix seconds. */
int64_t ca_not_after(const ca *c);

/* ---- CSRs --------------------------------------------------------- */

/* Parses a CSR from PEM ("-----BEGIN CERTIFICATE REQUEST-----") or from
 * DER, verifies its self-signature and checks its key: ECDSA P-256 or
 * P-384, Ed25519, or RSA >= 2048 bits. Errors: AD_ECSR (garbage or
 * unsupported structure), AD_ECSRSIG (signature does not verify),
 * AD_EWEAKKEY (other key types or sizes). On error *out is NULL.
 * Safe to call from many threads at once. */
ad_err ca_csr_parse_pem(const char *pem, size_t len, ca_csr **out,
                        char *err, size_t errlen);
ad_err ca_csr_parse_der(const uint8_t *der, size_t len, ca_csr **out,
                        char *err, size_t errlen);
/* The same for a bare base64 DER body, as EST's /simpleenroll sends it
 * (RFC 7030 4.2.1: application/pkcs10, base64, no PEM armour). */
ad_err ca_csr_parse_base64(const char *b64, size_t len, ca_csr **out,
                           char *err, size_t errlen);
void ca_csr_free(ca_csr *csr);

/* The subject commonName of the CSR as a NUL-terminated UTF-8 string,
 * or NULL if the subject has none. Owned by csr. */
const char *ca_csr_common_name(const ca_csr *csr);

/* ---- issuing ------------------------------------------------------ */

typedef enum {
    CA_PROFILE_DEVICE, /* EKU clientAuth, SAN URI */
    CA_PROFILE_SERVER  /* EKU serverAuth, SAN DNS + IP */
} ca_profile_kind;

/* What goes into a certificate besides the CSR's public key. The CSR's
 * own subject and extensions are ignored: the subject is exactly
 * CN=<common_name>. */
typedef struct {
    ca_profile_kind kind;
    const char *common_name;      /* required, 1..128 bytes */
    const char *san_uri;          /* device: e.g. "urn:device:SN-1"; may be NULL */
    const char *const *dns;       /* server: DNS SANs */
    size_t dns_count;
    const char *const *ips;       /* server: IPv4/IPv6 text SANs */
    size_t ip_count;
    int64_t not_before;           /* Unix seconds */
    int64_t not_after;            /* Unix seconds, > not_before */
    const char *crl_url;          /* optional CRL distribution point */
    const char *ocsp_url;         /* optional OCSP AIA */
} ca_profile;

/* A signed certificate. Strings/bytes owned by the struct; free with
 * ca_issued_free (NULL-safe, leaves it zeroed). */
typedef struct {
    uint8_t serial[CA_SERIAL_MAX];   /* big-endian, positive */
    size_t serial_len;
    char serial_hex[CA_SERIAL_HEX_MAX]; /* lowercase hex, no separators */
    uint8_t *der;
    size_t der_len;
    char *pem;                       /* one "CERTIFICATE" PEM block */
    uint8_t sha256[32];              /* SHA-256 of der (x5t#S256, fingerprints) */
    int64_t not_before, not_after;
} ca_issued;

/* Builds and signs a certificate for the CSR's public key with a fresh
 * random positive serial of 20 bytes (160 bits, first bit 0), AKI = the
 * issuing CA's SKI, SKI = SHA-1 of the subject public key, basic
 * constraints CA:FALSE, key usage digitalSignature (plus keyAgreement for
 * EC keys, keyEncipherment for RSA). Errors: AD_EFIELD for a bad profile
 * (missing CN, a bad IP string...), AD_ECRYPTO. On error *out is zeroed.
 * Thread-safe: c is only read. */
ad_err ca_issue(const ca *c, const ca_csr *csr, const ca_profile *profile,
                ca_issued *out, char *err, size_t errlen);
void ca_issued_free(ca_issued *iss);

/* Generates a fresh ECDSA P-256 key and issues a server certificate for
 * it (used for the daemon's own HTTPS listener). *key_pem is PKCS#8 PEM,
 * owned by the caller (free()). On error *out is zeroed, *key_pem NULL. */
ad_err ca_issue_with_new_key(const ca *c, const ca_profile *profile,
                             ca_issued *out, char **key_pem, char *err,
                             size_t errlen);

/* ---- inspecting certificates -------------------------------------- */

/* What the daemon needs to know of a presented client certificate. */
typedef struct {
    char serial_hex[CA_SERIAL_HEX_MAX];
    uint8_t sha256[32];
    char common_name[129];       /* "" if none or too long */
    int64_t not_before, not_after;
} ca_cert_info;

/* Reads serial, SHA-256 fingerprint, subject CN and validity from a DER
 * certificate without verifying anything. AD_EBADREQ if it cannot be
 * parsed. */
ad_err ca_cert_inspect(const uint8_t *der, size_t len, ca_cert_info *out);

/* Returns AD_OK if the DER certificate's signature verifies with the
 * issuing CA's key and it is currently within its validity. */
ad_err ca_cert_verify_issued(const ca *c, const uint8_t *der, size_t len,
                             int64_t now);

/* ---- revocation: reasons, CRLs ------------------------------------ */

/* RFC 5280 5.3.1 CRLReason codes (7 is unused). */
typedef enum {
    CA_REASON_UNSPECIFIED = 0,
    CA_REASON_KEY_COMPROMISE = 1,
    CA_REASON_CA_COMPROMISE = 2,
    CA_REASON_AFFILIATION_CHANGED = 3,
    CA_REASON_SUPERSEDED = 4,
    CA_REASON_CESSATION_OF_OPERATION = 5,
    CA_REASON_CERTIFICATE_HOLD = 6,
    CA_REASON_REMOVE_FROM_CRL = 8,
    CA_REASON_PRIVILEGE_WITHDRAWN = 9,
    CA_REASON_AA_COMPROMISE = 10
} ca_reason;

/* Looks up an RFC 5280 reason name ("keyCompromise", "cACompromise",
 * ...; exact, case-sensitive). AD_OK, or AD_EFIELD for an unknown name
 * (*out is then left unchanged). */
ad_err ca_reason_from_name(const char *name, ca_reason *out);
/* The RFC 5280 name of a reason code, or NULL if the code is not one. */
const char *ca_reason_name(int code);

/* Parses a certificate serial from hex (1..40 digits after dropping
 * leading zeros, either case, no separators; ca_issued.serial_hex and
 * ca_cert_info.serial_hex both qualify) into its big-endian magnitude
 * without leading zero bytes. AD_OK, or AD_EFIELD for bad hex, a zero
 * serial or more than 20 bytes (nothing is then written). */
ad_err ca_serial_from_hex(const char *hex, uint8_t serial[CA_SERIAL_MAX],
                          size_t *serial_len);

/* One revoked certificate, as the daemon keeps it. */
typedef struct {
    uint8_t serial[CA_SERIAL_MAX]; /* big-endian magnitude, 1..20 bytes */
    size_t serial_len;
    int64_t revoked_at;            /* Unix seconds */
    ca_reason reason;              /* unspecified is encoded by omission */
} ca_revoked;

enum { CA_CRL_MAX_ENTRIES = 1000000 };

/* Builds a CRL v2 (RFC 5280 5.1) signed by the issuing CA: issuer = the
 * CA's subject, thisUpdate/nextUpdate, crlExtensions AKI (the CA's SKI)
 * and CRLNumber, and one entry per revoked[i] in the given order, each
 * with a reasonCode extension unless the reason is unspecified.
 * removeFromCRL belongs to delta CRLs only (RFC 5280 5.3.1) and is
 * refused here, as is any code that is not a CRLReason. *der is
 * malloc()ed and owned by the caller. Errors: AD_EFIELD (bad entry, bad
 * times, next_update <= this_update, n > CA_CRL_MAX_ENTRIES),
 * AD_ECRYPTO, AD_ENOMEM; on error *der is NULL and *der_len 0.
 * Thread-safe: c is only read. About 5 ms for 10k entries. */
ad_err ca_crl_build(const ca *c, const ca_revoked *revoked, size_t n,
                    uint64_t crl_number, int64_t this_update,
                    int64_t next_update, uint8_t **der, size_t *der_len,
                    char *err, size_t errlen);
/* A DER CRL as one NUL-terminated "X509 CRL" PEM block, malloc()ed and
 * owned by the caller; NULL on allocation failure. */
char *ca_crl_pem(const uint8_t *der, size_t len);

/* ---- OCSP (RFC 6960) ---------------------------------------------- */

enum {
    CA_OCSP_REQUEST_MAX = 8 * 1024, /* DER bytes of an OCSPRequest */
    CA_OCSP_MAX_IDS = 16,           /* single requests per OCSPRequest */
    CA_OCSP_NONCE_MAX = 64,         /* nonce extnValue bytes */
    CA_OCSP_CERTID_MAX = 256,       /* DER bytes of one CertID */
    CA_OCSP_ERROR_LEN = 5           /* an OCSPResponse without a body */
};

/* CertID hash algorithms. OTHER is any other algorithm: such a CertID
 * parses but never names our CA (answer it "unknown"). */
typedef enum {
    CA_OCSP_HASH_SHA1,
    CA_OCSP_HASH_SHA256,
    CA_OCSP_HASH_SHA384,
    CA_OCSP_HASH_SHA512,
    CA_OCSP_HASH_OTHER
} ca_ocsp_hash;

/* One CertID of a request. */
typedef struct {
    ca_ocsp_hash hash;
    uint8_t name_hash[64];           /* issuerNameHash */
    size_t name_hash_len;
    uint8_t key_hash[64];            /* issuerKeyHash */
    size_t key_hash_len;
    uint8_t serial[CA_SERIAL_MAX];   /* big-endian magnitude */
    size_t serial_len;
    char serial_hex[CA_SERIAL_HEX_MAX]; /* lowercase, as ca_issued's */
    uint8_t der[CA_OCSP_CERTID_MAX]; /* the CertID as received, echoed */
    size_t der_len;
} ca_ocsp_certid;

/* A parsed OCSPRequest: plain memory, no allocation (about 8 KiB). */
typedef struct {
    size_t count;                    /* 1..CA_OCSP_MAX_IDS */
    ca_ocsp_certid ids[CA_OCSP_MAX_IDS];
    int has_nonce;
    uint8_t nonce[CA_OCSP_NONCE_MAX]; /* the nonce extnValue content */
    size_t nonce_len;
} ca_ocsp_request;

/* Parses an OCSPRequest (DER, at most CA_OCSP_REQUEST_MAX bytes)
 * strictly: 1..CA_OCSP_MAX_IDS single requests, serials positive and at
 * most 20 bytes, hashes at most 64 bytes (and of the algorithm's size
 * for known algorithms). requestorName and single request extensions
 * are ignored, a signature is accepted unchecked, the nonce
 * (id-pkix-ocsp-nonce, 1..64 bytes) is kept; an unknown critical
 * request extension is refused. AD_OK or AD_EBADREQ (answer
 * malformedRequest); on error *out is zeroed. No allocation, no
 * shared state: safe from any thread. */
ad_err ca_ocsp_request_parse(const uint8_t *der, size_t len,
                             ca_ocsp_request *out, char *err, size_t errlen);

/* 1 if the CertID names our issuing CA (its hash algorithm is one we
 * support and both issuer hashes match those computed in ca_open),
 * else 0. The serial is not looked at. */
int ca_ocsp_id_is_ours(const ca *c, const ca_ocsp_certid *id);

typedef enum {
    CA_OCSP_GOOD,
    CA_OCSP_REVOKED,
    CA_OCSP_UNKNOWN
} ca_ocsp_cert_status;

/* The answer for one CertID. */
typedef struct {
    ca_ocsp_cert_status status;
    int64_t revoked_at;   /* revoked only: Unix seconds */
    ca_reason reason;     /* revoked only; unspecified is omitted */
    int64_t this_update;  /* Unix seconds */
    int64_t next_update;  /* Unix seconds, or 0 to omit */
} ca_ocsp_answer;

/* Builds a successful OCSPResponse carrying a BasicOCSPResponse signed
 * by the issuing CA key itself (RFC 6960 4.2.2.2, no delegated responder;
 * the issuing certificate rides in certs so that a client holding only
 * the root can find the signer): responderID byKey (SHA-1 of the CA
 * key), producedAt, one
 * SingleResponse per req->ids[i] echoing its CertID with answers[i]
 * (req->count answers), and the request's nonce echoed in
 * responseExtensions. *der is malloc()ed and owned by the caller.
 * Errors: AD_EFIELD (bad answer or time), AD_ECRYPTO, AD_ENOMEM; on
 * error *der is NULL and *der_len 0. Thread-safe: c is only read. */
ad_err ca_ocsp_respond(const ca *c, const ca_ocsp_request *req,
                       const ca_ocsp_answer *answers, int64_t produced_at,
                       uint8_t **der, size_t *der_len, char *err,
                       size_t errlen);

/* OCSPResponseStatus values that carry no response body. */
typedef enum {
    CA_OCSP_MALFORMED_REQUEST = 1,
    CA_OCSP_INTERNAL_ERROR = 2,
    CA_OCSP_TRY_LATER = 3,
    CA_OCSP_UNAUTHORIZED = 6
} ca_ocsp_error;

/* Writes the OCSPResponse for an error status (SEQUENCE { ENUMERATED })
 * into out. Returns CA_OCSP_ERROR_LEN, or 0 (nothing written) if status
 * is not one of ca_ocsp_error. */
size_t ca_ocsp_error_response(ca_ocsp_error status,
                              uint8_t out[CA_OCSP_ERROR_LEN]);

/* ---- encodings ---------------------------------------------------- */

/* A degenerate PKCS#7 SignedData ("certs-only", RFC 7030 §4.1.3)
 * holding the given DER certificates in order. *out is malloc()ed DER,
 * owned by the caller. */
ad_err ca_pkcs7_certs_only(const uint8_t *const *ders, const size_t *lens,
                           size_t n, uint8_t **out, size_t *out_len);

/* Splits a PEM chain into DER certificates. Returns the number of
 * certificates stored in ders/lens (at most max); each ders[i] is
 * malloc()ed and owned by the caller. 0 on error or no certificates. */
size_t ca_pem_chain_to_der(const char *pem, uint8_t **ders, size_t *lens,
                           size_t max);

#endif
