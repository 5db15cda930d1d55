/* Internal to ca/: the bodies of the opaque handles and the few helpers
 * shared between ca.c (loading), csr.c (CSR checks) and issue.c
 * (certificates). Nothing here is part of the public contract. */
#ifndef AUTHD_CA_INT_H
#define AUTHD_CA_INT_H

#include <openssl/ec.h>
#include <openssl/evp.h>

#include "../common/codec.h"
#include "ca.h"
#include "der.h"

enum {
    CA_CSR_MAX = 16 * 1024,  /* DER; PEM input may be base64 of this */
    CA_CERT_MAX = 16 * 1024, /* any certificate we build or read */
    CA_PEM_IN_MAX = 64 * 1024
};

/* The public-key algorithms we accept in a CSR or as an issuing key. */
typedef enum {
    CA_KEY_EC_P256,
    CA_KEY_EC_P384,
    CA_KEY_RSA,
    CA_KEY_ED25519
} ca_key_kind;

struct ca_csr {
    uint8_t *der;        /* owned: the CSR DER, or just the SPKI DER */
    size_t der_len;
    der_span spki;       /* the whole SubjectPublicKeyInfo TLV, in der */
    der_span spk_bits;   /* subjectPublicKey BIT STRING after unused-bits */
    ca_key_kind kind;
    char *cn;            /* NULL if the subject has no commonName */
};

/* The CertID hash algorithms whose issuer hashes ca_open precomputes,
 * indexed by ca_ocsp_hash (CA_OCSP_HASH_OTHER excluded). */
enum { CA_OCSP_HASHES = CA_OCSP_HASH_OTHER, CA_HASH_MAX = 64 };

struct ca {
    EVP_PKEY *pkey;      /* the issuing private key */
    EC_KEY *ec;          /* the same key, for the ECDSA fast path; or NULL */
    ca_key_kind kind;
    uint8_t *cert_der;
    size_t cert_der_len;
    der_span subject;    /* the issuing cert's subject Name TLV, in cert_der */
    uint8_t ski[64];     /* the issuing cert's subject key identifier */
    size_t ski_len;
    /* OCSP (RFC 6960): SHA-1 of the subjectPublicKey bits (the responder
     * ID byKey), and per CertID hash the hashes of the subject Name DER
     * and of the subjectPublicKey bits, so matching a request is a
     * memcmp. */
    uint8_t key_sha1[20];
    uint8_t name_hash[CA_OCSP_HASHES][CA_HASH_MAX];
    uint8_t key_hash[CA_OCSP_HASHES][CA_HASH_MAX];
    char *chain_pem;
    char *subject_str;
    int64_t not_before, not_after;
};

/* The signatureAlgorithm encoding (complete AlgorithmIdentifier TLV) and
 * digest the issuing key signs with (*md NULL for Ed25519): ECDSA with
 * SHA-256 for P-256, SHA-384 for P-384, sha256WithRSAEncryption, Ed25519. */
void ca_sig_alg(const ca *c, const uint8_t **alg, size_t *len,
                const EVP_MD **md);
/* Signs w->buf[tbs_pos .. w->len) with the issuing key (the pre-parsed
 * EC_KEY when there is one) and appends alg and the signature BIT
 * STRING. 0, or -1 with nothing useful written. */
int ca_write_signature(der_w *w, const ca *c, const EVP_MD *md,
                       const uint8_t *alg, size_t alg_len, size_t tbs_pos);
/* The digest of a CertID hash algorithm (NULL for CA_OCSP_HASH_OTHER). */
const EVP_MD *ca_ocsp_hash_md(ca_ocsp_hash h);

/* The named-curve groups, built once (pthread_once) and only read
 * afterwards, so every thread may share them. NULL on failure. */
const EC_GROUP *ca_group(ca_key_kind kind);

/* Builds a key-only ca_csr around an SPKI DER (copied). */
ad_err ca_csr_from_spki(const uint8_t *spki, size_t len, ca_csr **out);

/* The fields of a Certificate that inspect/verify/open need; spans point
 * into the input. */
typedef struct {
    der_span tbs;        /* whole TBSCertificate TLV: what was signed */
    der_span serial;     /* INTEGER content */
    der_span sig_alg_oid, sig_alg_params;
    der_span issuer, subject; /* whole Name TLVs */
    der_span spki, spk_bits;
    der_span sig;        /* signatureValue after the unused-bits byte */
    der_span cn;         /* CN value content (len 0 if none) */
    uint8_t cn_tag;
    int64_t not_before, not_after;
} ca_cert_fields;

/* Parses a Certificate strictly enough to trust the spans above; the
 * input must be exactly one certificate. 0 or -1. */
int ca_cert_parse(const uint8_t *der, size_t len, ca_cert_fields *f);

/* Finds the single commonName in a Name's content; *cn gets the value
 * content and *tag its string type. 0 (found, or none: cn->len 0 and
 * cn->p NULL), -1 if malformed or more than one CN. */
int ca_name_find_cn(der_span name_content, der_span *cn, uint8_t *tag);

/* Converts a directory string (UTF8, Printable, IA5, T61 as Latin-1, BMP)
 * to NUL-terminated UTF-8 in out[0..cap). Refuses invalid encodings,
 * NULs and control characters. Returns the length or -1. */
int ca_dirstring_to_utf8(uint8_t tag, der_span v, char *out, size_t cap);

/* Maps a signature AlgorithmIdentifier to its digest for a key kind
 * (*md NULL for Ed25519). -1 if it does not fit the key or is refused. */
int ca_sigalg_md(der_span oid, der_span params, ca_key_kind kind,
                 const EVP_MD **md);
/* Verifies an ECDSA DER signature over data hashed with md (SHA-2
 * only). 0 if it verifies, -1 otherwise. key is only read. */
int ca_ec_verify(const EC_KEY *key, const EVP_MD *md, der_span data,
                 der_span sig);
/* The same through EVP_DigestVerify (md NULL for Ed25519). */
int ca_evp_verify(EVP_PKEY *pkey, const EVP_MD *md, der_span data,
                  der_span sig);

/* The key kind from an SPKI's algorithm identifier. AD_OK, AD_EWEAKKEY
 * (known but not accepted, or unknown), AD_ECSR (malformed). */
ad_err ca_spki_kind(der_span spki, ca_key_kind *kind, der_span *bits);

#endif
