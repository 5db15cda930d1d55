/* Revocation lists: RFC 5280 reason names and codes, serials from hex,
 * and the CRL v2 encoder. The CRL is regenerated on every revocation, so
 * it is written directly with the DER writer and signed like a
 * certificate (see issue.c); building an X509_CRL entry by entry would
 * cost far more than the signature for a long list. */
#include <stdlib.h>
#include <string.h>

#include "ca_int.h"

enum {
    /* Room per entry: SEQUENCE header 2, INTEGER 2+21, GeneralizedTime
     * 2+15, reasonCode extensions 14; rounded up. */
    CRL_ENTRY_MAX = 64,
    CRL_FIXED_MAX = CA_CERT_MAX + 4096, /* all but the entries: at most
                                          * the subject plus a signature */
    HEX_IN_MAX = 128           /* hex serial input, leading zeros included */
};

static const char *const reason_names[] = {
    "unspecified",          /* 0 */
    "keyCompromise",        /* 1 */
    "cACompromise",         /* 2 */
    "affiliationChanged",   /* 3 */
    "superseded",           /* 4 */
    "cessationOfOperation", /* 5 */
    "certificateHold",      /* 6 */
    NULL,                   /* 7 is not used (RFC 5280 5.3.1) */
    "removeFromCRL",        /* 8 */
    "privilegeWithdrawn",   /* 9 */
    "aACompromise"          /* 10 */
};

enum { REASON_COUNT = sizeof(reason_names) / sizeof(reason_names[0]) };

static const uint8_t oid_aki[] = {0x55, 0x1d, 0x23};
static const uint8_t oid_crl_number[] = {0x55, 0x1d, 0x14};
static const uint8_t oid_reason_code[] = {0x55, 0x1d, 0x15};

ad_err ca_reason_from_name(const char *name, ca_reason *out)
{
    size_t i;

    if (name == NULL)
        return AD_EFIELD;
    for (i = 0; i < REASON_COUNT; i++)
        if (reason_names[i] != NULL && strcmp(reason_names[i], name) == 0) {
            *out = (ca_reason)i;
            return AD_OK;
        }
    return AD_EFIELD;
}

const char *ca_reason_name(int code)
{
    if (code < 0 || code >= (int)REASON_COUNT)
        return NULL;
    return reason_names[code];
}

ad_err ca_serial_from_hex(const char *hex, uint8_t serial[CA_SERIAL_MAX],
                          size_t *serial_len)
{
    uint8_t tmp[CA_SERIAL_MAX];
    size_t n, digits, i, len;

    if (hex == NULL)
        return AD_EFIELD;
    n = strnlen(hex, HEX_IN_MAX + 1);
    if (n == 0 || n > HEX_IN_MAX)
        return AD_EFIELD;
    while (n > 0 && *hex == '0') {
        hex++;
        n--;
    }
    digits = n;
    if (digits == 0 || digits > 2 * CA_SERIAL_MAX)
        return AD_EFIELD;
    len = (digits + 1) / 2;
    /* Right-aligned: an odd digit count leaves the first nibble high
     * half zero. */
    memset(tmp, 0, sizeof(tmp));
    for (i = 0; i < digits; i++) {
        int v = codec_hex_val((unsigned char)hex[i]);
        size_t pos = (2 * len - digits) + i;

        if (v < 0)
            return AD_EFIELD;
        tmp[pos / 2] |= (uint8_t)(pos % 2 ? v : v << 4);
    }
    memcpy(serial, tmp, len);
    *serial_len = len;
    return AD_OK;
}

/* 1 if a code is a CRLReason that may appear in a full CRL. */
static int crl_reason_ok(int r)
{
    return r >= 0 && r < (int)REASON_COUNT && reason_names[r] != NULL &&
           r != CA_REASON_REMOVE_FROM_CRL;
}

/* One Extension { extnID, extnValue } whose value is a single TLV. */
static void write_ext(der_w *w, const uint8_t *oid, size_t oid_len,
                      uint8_t tag, const void *val, size_t val_len)
{
    size_t e = derw_begin(w, DER_SEQUENCE), os;

    derw_tlv(w, DER_OID, oid, oid_len);
    os = derw_begin(w, DER_OCTET_STRING);
    derw_tlv(w, tag, val, val_len);
    derw_end(w, os);
    derw_end(w, e);
}

ad_err ca_crl_build(const ca *c, const ca_revoked *revoked, size_t n,
                    uint64_t crl_number, int64_t this_update,
                    int64_t next_update, uint8_t **der, size_t *der_len,
                    char *err, size_t errlen)
{
    der_w w = {0};
    const uint8_t *alg;
    size_t alg_len, crl, tbs, list, x, seq, i;
    const EVP_MD *md;
    uint8_t num[8];
    ad_err rc;

    *der = NULL;
    *der_len = 0;
    if (c == NULL || (n > 0 && revoked == NULL))
        return ad_errf(AD_EFIELD, err, errlen, "missing CA or revoked list");
    if (n > CA_CRL_MAX_ENTRIES)
        return ad_errf(AD_EFIELD, err, errlen, "more than %d revoked entries",
                       CA_CRL_MAX_ENTRIES);
    if (next_update <= this_update)
        return ad_errf(AD_EFIELD, err, errlen, "nextUpdate must be after thisUpdate");
    for (i = 0; i < n; i++) {
        if (revoked[i].serial_len == 0 || revoked[i].serial_len > CA_SERIAL_MAX)
            return ad_errf(AD_EFIELD, err, errlen, "revoked[%zu]: bad serial", i);
        if (!crl_reason_ok((int)revoked[i].reason))
            return ad_errf(AD_EFIELD, err, errlen,
                           "revoked[%zu]: reason %d cannot appear in a CRL", i,
                           (int)revoked[i].reason);
    }
    ca_sig_alg(c, &alg, &alg_len, &md);
    for (i = 0; i < sizeof(num); i++)
        num[i] = (uint8_t)(crl_number >> (8 * (sizeof(num) - 1 - i)));

    /* Sized up front so the entries never reallocate. */
    derw_init(&w, CRL_FIXED_MAX + n * CRL_ENTRY_MAX,
              CRL_FIXED_MAX + n * CRL_ENTRY_MAX);
    crl = derw_begin(&w, DER_SEQUENCE);
    tbs = derw_begin(&w, DER_SEQUENCE);
    derw_bytes(&w, "\x02\x01\x01", 3); /* version v2 */
    derw_bytes(&w, alg, alg_len);
    derw_bytes(&w, c->subject.p, c->subject.len);
    derw_time(&w, this_update);
    derw_time(&w, next_update);
    /* An empty revokedCertificates must be absent, not empty (5.1.2.6). */
    if (n > 0) {
        list = derw_begin(&w, DER_SEQUENCE);
        for (i = 0; i < n; i++) {
            const ca_revoked *r = &revoked[i];
            size_t e = derw_begin(&w, DER_SEQUENCE);

            derw_uint(&w, r->serial, r->serial_len);
            derw_time(&w, r->revoked_at);
            /* 5.3.1: reasonCode unspecified SHOULD be absent. */
            if (r->reason != CA_REASON_UNSPECIFIED) {
                uint8_t code = (uint8_t)r->reason;

                seq = derw_begin(&w, DER_SEQUENCE);
                write_ext(&w, oid_reason_code, sizeof(oid_reason_code),
                          DER_ENUMERATED, &code, 1);
                derw_end(&w, seq);
            }
            derw_end(&w, e);
        }
        derw_end(&w, list);
    }
    x = derw_begin(&w, DER_CTX0);
    seq = derw_begin(&w, DER_SEQUENCE);
    {
        /* AuthorityKeyIdentifier { [0] keyIdentifier } (5.2.1, MUST). */
        size_t e = derw_begin(&w, DER_SEQUENCE), os, aki;

        derw_tlv(&w, DER_OID, oid_aki, sizeof(oid_aki));
        os = derw_begin(&w, DER_OCTET_STRING);
        aki = derw_begin(&w, DER_SEQUENCE);
        derw_tlv(&w, 0x80, c->ski, c->ski_len);
        derw_end(&w, aki);
        derw_end(&w, os);
        derw_end(&w, e);
    }
    {
        /* CRLNumber (5.2.3, MUST): a non-negative INTEGER. */
        size_t e = derw_begin(&w, DER_SEQUENCE), os;

        derw_tlv(&w, DER_OID, oid_crl_number, sizeof(oid_crl_number));
        os = derw_begin(&w, DER_OCTET_STRING);
        derw_uint(&w, num, sizeof(num));
        derw_end(&w, os);
        derw_end(&w, e);
    }
    derw_end(&w, seq);
    derw_end(&w, x);
    derw_end(&w, tbs);
    if (w.err) {
        rc = ad_errf(AD_EFIELD, err, errlen,
                     "a time is outside 1950-9999 or the CRL is too large");
        goto out;
    }
    if (ca_write_signature(&w, c, md, alg, alg_len, tbs) != 0) {
        rc = ad_errf(AD_ECRYPTO, err, errlen, "signing the CRL failed");
        goto out;
    }
    derw_end(&w, crl);
    *der = derw_take(&w, der_len);
    if (*der == NULL) {
        *der_len = 0;
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    rc = AD_OK;
out:
    derw_free(&w);
    return rc;
}

char *ca_crl_pem(const uint8_t *der, size_t len)
{
    if (der == NULL || len == 0)
        return NULL;
    return pem_encode("X509 CRL", der, len);
}
