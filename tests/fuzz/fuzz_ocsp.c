/* Fuzz target for the OCSP responder (ca/ocsp.c): arbitrary bytes as an
 * OCSPRequest; whatever parses is answered with a signed response, so
 * the encoder sees every shape the parser lets through. Checks that a
 * refused request leaves the output zeroed and that every accepted one
 * can be answered. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../ca/ca.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t zero[sizeof(ca_ocsp_request)];
    static ca_ocsp_request req; /* 8 KiB: keep it off the fuzzer's stack */
    ca_ocsp_answer ans[CA_OCSP_MAX_IDS];
    uint8_t *resp = NULL, errbuf[CA_OCSP_ERROR_LEN];
    size_t resp_len = 0, i;
    int64_t now = 1700000000;
    ca *c = get_ca();

    if (ca_ocsp_request_parse(data, size, &req, NULL, 0) != AD_OK) {
        CHECK(memcmp(&req, zero, sizeof(req)) == 0);
        CHECK(ca_ocsp_error_response(CA_OCSP_MALFORMED_REQUEST, errbuf) ==
              CA_OCSP_ERROR_LEN);
        return 0;
    }
    CHECK(req.count >= 1 && req.count <= CA_OCSP_MAX_IDS);
    CHECK(req.nonce_len <= CA_OCSP_NONCE_MAX);
    memset(ans, 0, sizeof(ans));
    for (i = 0; i < req.count; i++) {
        const ca_ocsp_certid *id = &req.ids[i];

        CHECK(id->serial_len >= 1 && id->serial_len <= CA_SERIAL_MAX);
        CHECK(id->der_len > 0 && id->der_len <= CA_OCSP_CERTID_MAX);
        CHECK(strlen(id->serial_hex) == 2 * id->serial_len);
        ans[i].this_update = now;
        ans[i].next_update = (i & 1) ? 0 : now + 3600;
        /* The corpus was made for another CA, so the status comes from
         * the serial to reach every encoder branch either way. */
        if (id->serial[id->serial_len - 1] % 3 == 0 && !ca_ocsp_id_is_ours(c, id)) {
            ans[i].status = CA_OCSP_UNKNOWN;
        } else if (id->serial[id->serial_len - 1] & 1) {
            ans[i].status = CA_OCSP_REVOKED;
            ans[i].revoked_at = now - 60;
            ans[i].reason = (ca_reason)(id->serial[0] % 2 ? 1 : 0);
        } else {
            ans[i].status = CA_OCSP_GOOD;
        }
    }
    CHECK(ca_ocsp_respond(c, &req, ans, now, &resp, &resp_len, NULL, 0) ==
          AD_OK);
    CHECK(resp != NULL && resp_len > 0);
    free(resp);
    return 0;
}
