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

/* Hex of bytes in lowercase into out (out must hold 2*len+1). */
void ca_hex(const uint8_t *in, size_t len, char *out);

#endif
