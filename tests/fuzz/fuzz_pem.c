/* Fuzz target for the PEM and base64 readers of ca/der.c (CA material,
 * CSRs, EST bodies) and ca_pem_chain_to_der. Any block pem_next decodes
 * must survive pem_encode and pem_next again unchanged; any bytes
 * b64_decode accepts must come back from a PEM round trip; the chain
 * splitter must agree with pem_next on CERTIFICATE blocks. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/codec.h"
#include "../../ca/ca.h"
#include "../../ca/der.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 64 * 1024, BLOCKS_MAX = 16 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

/* der -> PEM text -> der must be the identity. */
static void pem_round_trip(const uint8_t *der, size_t len)
{
    static const char *const labels[] = {"CERTIFICATE", NULL};
    char *pem = pem_encode("CERTIFICATE", der, len);
    uint8_t *back = NULL;
    size_t back_len = 0, next = 0;

    CHECK(pem != NULL);
    CHECK(pem_next(pem, strlen(pem), labels, len, &back, &back_len, &next) ==
          0);
    CHECK(back_len == len && memcmp(back, der, len) == 0);
    /* Only the trailing newline may follow the END line. */
    CHECK(strlen(pem) - next <= 1);
    free(back);
    free(pem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const cert_only[] = {"CERTIFICATE", NULL};
    uint8_t *ders[BLOCKS_MAX], *der = NULL;
    size_t lens[BLOCKS_MAX], der_len = 0, off = 0, next = 0, n, i, ncert = 0;
    char *text;
    int rc, blocks = 0;

    if (size > INPUT_MAX)
        return 0;
    /* Exact size, no NUL: the readers take a length. */
    text = malloc(size ? size : 1);
    CHECK(text != NULL);
    memcpy(text, data, size);

    while (blocks < BLOCKS_MAX && off < size) {
        rc = pem_next(text + off, size - off, NULL, INPUT_MAX, &der, &der_len,
                      &next);
        if (rc != 0) {
            CHECK(der == NULL && der_len == 0);
            break;
        }
        CHECK(der != NULL && der_len > 0 && der_len <= INPUT_MAX);
        CHECK(next > 0 && next <= size - off);
        pem_round_trip(der, der_len);
        free(der);
        der = NULL;
        off += next;
        blocks++;
    }
    /* The labelled form sees the CERTIFICATE blocks the splitter sees. */
    off = 0;
    while (ncert < BLOCKS_MAX && off < size &&
           pem_next(text + off, size - off, cert_only, INPUT_MAX, &der,
                    &der_len, &next) == 0) {
        free(der);
        der = NULL;
        off += next;
        ncert++;
    }

    if (codec_b64_decode_alloc(text, size, INPUT_MAX, &der, &der_len,
                               CODEC_B64_LINES) == 0) {
        CHECK(der != NULL && der_len <= INPUT_MAX);
        if (der_len > 0)
            pem_round_trip(der, der_len);
        free(der);
    } else {
        CHECK(der == NULL && der_len == 0);
    }
    free(text);

    /* The chain splitter reads a NUL-terminated string. */
    text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    n = ca_pem_chain_to_der(text, ders, lens, BLOCKS_MAX);
    CHECK(n <= BLOCKS_MAX);
    /* Each certificate it splits out is a CERTIFICATE block pem_next
     * reads too (it stops at a NUL, so only without one). */
    CHECK(memchr(data, 0, size) != NULL || n <= ncert);
    for (i = 0; i < n; i++) {
        CHECK(ders[i] != NULL && lens[i] > 0);
        free(ders[i]);
    }
    free(text);
    return 0;
}
