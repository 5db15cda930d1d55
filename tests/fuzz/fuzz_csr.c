/* Fuzz target for the CSR reader (ca/csr.c): the same bytes as DER, as
 * PEM text and as EST's bare base64. Our reader may refuse more than
 * OpenSSL, never less: a DER CSR it accepts must parse and verify with
 * OpenSSL's own X509_REQ code. Every accepted CSR is then issued a
 * certificate, which our certificate reader must read back and which
 * must verify under the issuing CA. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "../../ca/ca.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 64 * 1024 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

/* One CA for the whole run, made on first use (replay_main.c calls no
 * initializer). It stays reachable until exit, so it is not a leak. */
static ca_material mat;
static ca *the_ca;

static ca *get_ca(void)
{
    if (the_ca == NULL) {
        CHECK(ca_global_init() == AD_OK);
        CHECK(ca_generate(NULL, &mat, NULL, 0) == AD_OK);
        CHECK(ca_open(mat.issuing_cert_pem, mat.issuing_key_pem, NULL,
                      &the_ca, NULL, 0) == AD_OK);
    }
    return the_ca;
}

/* OpenSSL, the reference, must accept and verify what we accepted. */
static void openssl_agrees(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)len);

    CHECK(req != NULL);
    CHECK(p == der + len); /* nothing trailing was accepted */
    CHECK(X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) == 1);
    X509_REQ_free(req);
}

static void issue_and_read_back(ca *c, const ca_csr *csr)
{
    const char *cn = ca_csr_common_name(csr);
    ca_profile prof;
    ca_issued iss;
    ca_cert_info info;

    CHECK(cn == NULL || strlen(cn) < 4096);
    memset(&prof, 0, sizeof(prof));
    prof.kind = CA_PROFILE_DEVICE;
    prof.common_name = "fuzz-device";
    prof.san_uri = "urn:device:fuzz-device";
    prof.not_before = 1700000000;
    prof.not_after = 1700000000 + 86400;
    CHECK(ca_issue(c, csr, &prof, &iss, NULL, 0) == AD_OK);
    CHECK(ca_cert_inspect(iss.der, iss.der_len, &info) == AD_OK);
    CHECK(strcmp(info.serial_hex, iss.serial_hex) == 0);
    CHECK(strcmp(info.common_name, "fuzz-device") == 0);
    CHECK(memcmp(info.sha256, iss.sha256, 32) == 0);
    CHECK(ca_cert_verify_issued(c, iss.der, iss.der_len, 1700000100) ==
          AD_OK);
    ca_issued_free(&iss);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ca *c = get_ca();
    ca_csr *csr = (ca_csr *)1;
    char *text;

    if (size > INPUT_MAX)
        return 0;
    if (ca_csr_parse_der(data, size, &csr, NULL, 0) == AD_OK) {
        CHECK(csr != NULL);
        openssl_agrees(data, size);
        issue_and_read_back(c, csr);
        ca_csr_free(csr);
    } else {
        CHECK(csr == NULL); /* "on error *out is NULL" */
    }

    /* As text: an exact-size copy so that ASan sees any over-read (the
     * parsers take a length, no NUL is promised). */
    text = malloc(size ? size : 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    csr = (ca_csr *)1;
    if (ca_csr_parse_pem(text, size, &csr, NULL, 0) == AD_OK) {
        issue_and_read_back(c, csr);
        ca_csr_free(csr);
    } else {
        CHECK(csr == NULL);
    }
    csr = (ca_csr *)1;
    if (ca_csr_parse_base64(text, size, &csr, NULL, 0) == AD_OK) {
        issue_and_read_back(c, csr);
        ca_csr_free(csr);
    } else {
        CHECK(csr == NULL);
    }
    free(text);
    return 0;
}
