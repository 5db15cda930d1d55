/* Fuzz target for the certificate reader (ca/cert.c) behind
 * ca_cert_inspect, which reads every client certificate presented over
 * mTLS before anything is verified. It may refuse more than OpenSSL,
 * never less in what it reads: a certificate both read must have the
 * same serial, subject CN and validity, with nothing trailing, and the
 * SHA-256 must be of exactly the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "../../common/codec.h"
#include "../../ca/ca.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 64 * 1024 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static int64_t unix_of(const ASN1_TIME *t)
{
    struct tm tm;

    CHECK(ASN1_TIME_to_tm(t, &tm) == 1);
    return (int64_t)timegm(&tm);
}

static void openssl_agrees(const uint8_t *der, size_t len,
                           const ca_cert_info *info)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    const ASN1_INTEGER *serial;
    char hex[2 * 20 + 1];
    int cn_at;

    /* Ours does not look inside extensions (nothing it reports lives
     * there), so a certificate whose extensions are malformed reads
     * with ours and not with OpenSSL; only what both read is compared. */
    if (x == NULL)
        return;
    CHECK(p == der + len);
    /* Ours is the hex of the INTEGER's content octets (a leading 00 kept);
     * OpenSSL keeps the magnitude. Negative serials are not compared. */
    serial = X509_get0_serialNumber(x);
    if (ASN1_STRING_type(serial) == V_ASN1_INTEGER &&
        ASN1_STRING_length(serial) > 0 && ASN1_STRING_length(serial) <= 20) {
        const char *ours = info->serial_hex;

        codec_hex_encode(ASN1_STRING_get0_data(serial),
                         (size_t)ASN1_STRING_length(serial), hex, 0);
        if (strncmp(ours, "00", 2) == 0 && strlen(ours) > 2)
            ours += 2;
        CHECK(strcmp(ours, hex) == 0);
    }
    CHECK(unix_of(X509_get0_notBefore(x)) == info->not_before);
    CHECK(unix_of(X509_get0_notAfter(x)) == info->not_after);
    /* Ours converts the first CN's directory string (UTF8String,
     * PrintableString, IA5String, T61String as Latin-1, BMPString) to
     * UTF-8 and leaves "" for anything it refuses (controls, surrogates,
     * too long); where it read one, OpenSSL's own conversion of the
     * same entry must be the same text. */
    cn_at = X509_NAME_get_index_by_NID(X509_get_subject_name(x),
                                       NID_commonName, -1);
    if (info->common_name[0] != '\0' && cn_at >= 0) {
        X509_NAME_ENTRY *e =
            X509_NAME_get_entry(X509_get_subject_name(x), cn_at);
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));

        CHECK(n >= 0);
        CHECK((size_t)n == strlen(info->common_name) &&
              memcmp(utf8, info->common_name, (size_t)n) == 0);
        OPENSSL_free(utf8);
    }
    X509_free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ca_cert_info info;
    uint8_t sha[32], *copy;

    if (size > INPUT_MAX)
        return 0;
    /* An exact-size copy so that any over-read is caught by ASan. */
    copy = malloc(size ? size : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    memset(&info, 0xa5, sizeof(info));
    if (ca_cert_inspect(copy, size, &info) == AD_OK) {
        SHA256(copy, size, sha);
        CHECK(memcmp(sha, info.sha256, 32) == 0);
        CHECK(strlen(info.serial_hex) >= 2 &&
              strlen(info.serial_hex) % 2 == 0);
        CHECK(strlen(info.common_name) < sizeof(info.common_name));
        openssl_agrees(copy, size, &info);
    }
    free(copy);
    return 0;
}
