/* Load client for bench_coaps_enroll.py: EST simpleenroll (/est/sen) over
 * CoAP + DTLS-PSK with libcoap, one request at a time, from a pool of
 * pre-generated DER CSRs so that the server is what is measured. With
 * "reuse" one DTLS session carries every request; with "new" each
 * enrollment opens (and closes) a session of its own, handshake included.
 *
 *   coaps_enroll_client ADDR PORT IDENTITY KEY POOL_FILE reuse|new SECONDS
 *
 * POOL_FILE holds records of a 2-byte big-endian length and a DER CSR.
 * It stops after SECONDS or when the pool is used up, and prints one line
 * "RESULT {"ok":N,"failed":N,"seconds":S,"first_bad":"..."}". */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coap3/coap.h>

enum { POOL_MAX = 200000, CSR_MAX = 4096 };

typedef struct {
    uint8_t *der;
    size_t len;
} csr_t;

static int answered;            /* 0 waiting, 1 answered, -1 failed */
static coap_pdu_code_t answer_code;

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
                                   const coap_pdu_t *got, const coap_mid_t mid)
{
    (void)s;
    (void)sent;
    (void)mid;
    answer_code = coap_pdu_get_code(got);
    answered = 1;
    return COAP_RESPONSE_OK;
}

static void on_nack(coap_session_t *s, const coap_pdu_t *sent,
                    const coap_nack_reason_t reason, const coap_mid_t mid)
{
    (void)s;
    (void)sent;
    (void)reason;
    (void)mid;
    answered = -1;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t load_pool(const char *path, csr_t *pool)
{
    FILE *f = fopen(path, "rb");
    uint8_t hdr[2];
    size_t n = 0;

    if (f == NULL)
        return 0;
    while (n < POOL_MAX && fread(hdr, 1, 2, f) == 2) {
        size_t len = ((size_t)hdr[0] << 8) | hdr[1];

        if (len == 0 || len > CSR_MAX || (pool[n].der = malloc(len)) == NULL)
            break;
        if (fread(pool[n].der, 1, len, f) != len) {
            free(pool[n].der);
            break;
        }
        pool[n++].len = len;
    }
    fclose(f);
    return n;
}

static coap_session_t *open_session(coap_context_t *ctx,
                                    const coap_address_t *dst,
                                    coap_dtls_cpsk_t *cpsk)
{
    return coap_new_client_session_psk2(ctx, NULL, dst, COAP_PROTO_DTLS,
                                        cpsk);
}

/* Sends one CSR and waits (at most 30 s) for its answer: 1 if 2.04. */
static int enroll_one(coap_context_t *ctx, coap_session_t *sess,
                      const csr_t *c)
{
    uint8_t tok[8], buf[4];
    size_t toklen = 0;
    coap_pdu_t *pdu;
    double deadline = now_s() + 30;

    pdu = coap_pdu_init(COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST,
                        coap_new_message_id(sess),
                        coap_session_max_pdu_size(sess));
    if (pdu == NULL)
        return 0;
    coap_session_new_token(sess, &toklen, tok);
    coap_add_token(pdu, toklen, tok);
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 3, (const uint8_t *)"est");
    coap_add_option(pdu, COAP_OPTION_URI_PATH, 3, (const uint8_t *)"sen");
    coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                    coap_encode_var_safe(buf, sizeof(buf), 286), buf);
    coap_add_option(pdu, COAP_OPTION_ACCEPT,
                    coap_encode_var_safe(buf, sizeof(buf), 281), buf);
    if (!coap_add_data_large_request(sess, pdu, c->len, c->der, NULL, NULL)) {
        coap_delete_pdu(pdu);
        return 0;
    }
    answered = 0;
    if (coap_send(sess, pdu) == COAP_INVALID_MID)
        return 0;
    while (answered == 0 && now_s() < deadline)
        coap_io_process(ctx, 1000);
    return answered == 1 && answer_code == COAP_RESPONSE_CODE(204);
}

int main(int argc, char **argv)
{
    coap_context_t *ctx = NULL;
    coap_session_t *sess = NULL;
    coap_address_t dst;
    coap_dtls_cpsk_t cpsk;
    static csr_t pool[POOL_MAX];
    size_t npool, i, ok = 0, failed = 0;
    char first_bad[64] = "";
    double start, limit;
    int reuse;

    if (argc != 8) {
        fprintf(stderr, "usage: %s ADDR PORT IDENTITY KEY POOL_FILE "
                        "reuse|new SECONDS\n", argv[0]);
        return 2;
    }
    reuse = strcmp(argv[6], "reuse") == 0;
    limit = strtod(argv[7], NULL);
    if ((npool = load_pool(argv[5], pool)) == 0) {
        fprintf(stderr, "coaps_enroll_client: no CSRs in %s\n", argv[5]);
        return 2;
    }
    coap_startup();
    coap_set_log_level(LOG_EMERG);
    coap_dtls_set_log_level(LOG_EMERG);
    coap_address_init(&dst);
    dst.addr.sin.sin_family = AF_INET;
    dst.addr.sin.sin_port = htons((uint16_t)strtoul(argv[2], NULL, 10));
    dst.size = sizeof(dst.addr.sin);
    if (inet_pton(AF_INET, argv[1], &dst.addr.sin.sin_addr) != 1) {
        fprintf(stderr, "coaps_enroll_client: ADDR must be IPv4\n");
        return 2;
    }
    memset(&cpsk, 0, sizeof(cpsk));
    cpsk.version = COAP_DTLS_CPSK_SETUP_VERSION;
    cpsk.psk_info.identity.s = (const uint8_t *)argv[3];
    cpsk.psk_info.identity.length = strlen(argv[3]);
    cpsk.psk_info.key.s = (const uint8_t *)argv[4];
    cpsk.psk_info.key.length = strlen(argv[4]);
    ctx = coap_new_context(NULL);
    if (ctx == NULL)
        return 1;
    coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP |
                                         COAP_BLOCK_SINGLE_BODY);
    coap_register_response_handler(ctx, on_response);
    coap_register_nack_handler(ctx, on_nack);
    start = now_s();
    for (i = 0; i < npool && now_s() - start < limit; i++) {
        if (sess == NULL && (sess = open_session(ctx, &dst, &cpsk)) == NULL)
            break;
        if (enroll_one(ctx, sess, &pool[i])) {
            ok++;
        } else {
            failed++;
            if (!first_bad[0])
                snprintf(first_bad, sizeof(first_bad), "%s %d.%02d",
                         answered == 1 ? "code" : "no answer",
                         (int)answer_code >> 5, (int)answer_code & 31);
            /* A session that failed is not reused. */
            coap_session_release(sess);
            sess = NULL;
            continue;
        }
        if (!reuse) {
            coap_session_release(sess);
            sess = NULL;
        }
    }
    printf("RESULT {\"ok\":%zu,\"failed\":%zu,\"seconds\":%.4f,"
           "\"pool_used_up\":%s,\"first_bad\":\"%s\"}\n",
           ok, failed, now_s() - start, i >= npool ? "true" : "false",
           first_bad);
    if (sess)
        coap_session_release(sess);
    coap_free_context(ctx);
    coap_cleanup();
    for (i = 0; i < npool; i++)
        free(pool[i].der);
    return 0;
}
