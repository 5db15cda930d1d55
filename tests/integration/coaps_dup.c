/* Test client for test_coap.py: what a lossy link does to EST over
 * CoAP, which coap-client cannot be made to do. Over one DTLS-PSK session
 * it sends a POST /est/sen again with the same message id after its answer
 * (as a device does whose 2.04 was lost), or sends one Block1 piece of the
 * CSR twice (as a device does whose 2.31 was lost).
 *
 *   coaps_dup ADDR PORT IDENTITY KEY CSR_DER_FILE whole|piece
 *
 * Prints each answer's code on a line "ANSWER 2.04" and exits 0 if every
 * request was answered (in "whole", the first), 1 otherwise. Libcoap's own block handling is off
 * here, so the pieces and the message ids are exactly the ones built. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coap3/coap.h>

enum { CSR_MAX = 8192, PIECE = 64, PIECE_SZX = 2 };

static int answered;
static coap_pdu_code_t answer_code;

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
                                   const coap_pdu_t *got, const coap_mid_t mid)
{
    (void)s;
    (void)sent;
    (void)mid;
    answer_code = coap_pdu_get_code(got);
    answered = 1;
    printf("ANSWER %d.%02d\n", (int)answer_code >> 5, (int)answer_code & 31);
    fflush(stdout);
    return COAP_RESPONSE_OK;
}

/* A POST /est/sen with the given message id, token and payload, with a
 * Block1 option if block >= 0. */
static coap_pdu_t *sen_pdu(coap_session_t *sess, coap_mid_t mid,
                           const uint8_t *tok, size_t toklen, long block,
                           const uint8_t *data, size_t len)
{
    coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST,
                                    mid, coap_session_max_pdu_size(sess));
    uint8_t buf[4];

    if (pdu == NULL)
        return NULL;
    coap_add_token(pdu, toklen, tok);
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 3, (const uint8_t *)"est");
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 3, (const uint8_t *)"sen");
    coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                    coap_encode_var_safe(buf, sizeof(buf), 286), buf);
    if (block >= 0)
        coap_add_option(pdu, COAP_OPTION_BLOCK1,
                        coap_encode_var_safe(buf, sizeof(buf),
                                             (unsigned)block),
                        buf);
    coap_add_data(pdu, len, data);
    return pdu;
}

/* Sends pdu and waits up to wait seconds for an answer; 1 if one came. */
static int exchange(coap_context_t *ctx, coap_session_t *sess, coap_pdu_t *pdu,
                    int wait)
{
    time_t end = time(NULL) + wait;

    answered = 0;
    if (pdu == NULL || coap_send(sess, pdu) == COAP_INVALID_MID)
        return 0;
    while (!answered && time(NULL) < end)
        coap_io_process(ctx, 500);
    return answered;
}

int main(int argc, char **argv)
{
    static uint8_t csr[CSR_MAX];
    uint8_t tok[8] = {'d', 'u', 'p', 0, 0, 0, 0, 1};
    coap_context_t *ctx;
    coap_session_t *sess;
    coap_address_t dst;
    coap_dtls_cpsk_t cpsk;
    size_t len, off;
    coap_mid_t mid;
    FILE *f;
    int ok = 1;

    if (argc != 7) {
        fprintf(stderr, "usage: %s ADDR PORT IDENTITY KEY CSR whole|piece\n",
                argv[0]);
        return 2;
    }
    if ((f = fopen(argv[5], "rb")) == NULL)
        return 2;
    len = fread(csr, 1, sizeof(csr), f);
    fclose(f);
    coap_startup();
    coap_set_log_level(LOG_EMERG);
    coap_dtls_set_log_level(LOG_EMERG);
    coap_address_init(&dst);
    dst.addr.sin.sin_family = AF_INET;
    dst.addr.sin.sin_port = htons((uint16_t)strtoul(argv[2], NULL, 10));
    dst.size = sizeof(dst.addr.sin);
    if (inet_pton(AF_INET, argv[1], &dst.addr.sin.sin_addr) != 1)
        return 2;
    memset(&cpsk, 0, sizeof(cpsk));
    cpsk.version = COAP_DTLS_CPSK_SETUP_VERSION;
    cpsk.psk_info.identity.s = (const uint8_t *)argv[3];
    cpsk.psk_info.identity.length = strlen(argv[3]);
    cpsk.psk_info.key.s = (const uint8_t *)argv[4];
    cpsk.psk_info.key.length = strlen(argv[4]);
    if ((ctx = coap_new_context(NULL)) == NULL)
        return 1;
    coap_register_response_handler(ctx, on_response);
    sess = coap_new_client_session_psk2(ctx, NULL, &dst, COAP_PROTO_DTLS,
                                        &cpsk);
    if (sess == NULL)
        return 1;
    mid = coap_new_message_id(sess);
    if (strcmp(argv[6], "whole") == 0) {
        /* The same request twice: same message id, same token. This
         * client drops the second answer as a duplicate of the first
         * (the server's log tells the test what it did), so it is given
         * only a moment. */
        ok = exchange(ctx, sess, sen_pdu(sess, mid, tok, sizeof(tok), -1, csr,
                                         len), 15);
        if (ok)
            exchange(ctx, sess, sen_pdu(sess, mid, tok, sizeof(tok), -1, csr,
                                        len), 2);
    } else {
        /* 64-byte pieces; the second one goes twice. */
        long num = 0;

        for (off = 0; ok && off < len; off += PIECE, num++) {
            size_t n = len - off < PIECE ? len - off : PIECE;
            long more = off + n < len ? 1 : 0;
            long opt = (num << 4) | (more << 3) | PIECE_SZX;

            ok = exchange(ctx, sess, sen_pdu(sess, coap_new_message_id(sess),
                                             tok, sizeof(tok), opt, csr + off,
                                             n), 15);
            if (ok && num == 1)
                ok = exchange(ctx, sess,
                              sen_pdu(sess, coap_new_message_id(sess), tok,
                                      sizeof(tok), opt, csr + off, n), 15);
        }
    }
    coap_session_release(sess);
    coap_free_context(ctx);
    coap_cleanup();
    return ok ? 0 : 1;
}
