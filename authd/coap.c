/* See coap.h. One thread owns the libcoap context (libcoap contexts are
 * not thread-safe) and runs coap_io_process; handlers run on it. An
 * enrollment signs and waits for its durable commit on this thread, so
 * CoAP requests are served one at a time (a few milliseconds each: the
 * same group commit the HTTP routes use, without company). A device whose
 * answer is late retransmits, CoAP's own retry, and a retransmission of a
 * request already answered is answered again, not issued again. Handing
 * issuance to worker threads would need separate responses;
 * tests/bench/bench_coaps_enroll.py measures what serving in turn costs
 * and docs/coap.md says what the next step would be. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <netdb.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <coap3/coap.h>

#include "coap.h"
#include "http.h"
#include "issue.h"
#include "log.h"
#include "registry_enrollments.h"
#include "tokens.h"
#include "util.h"

/* CoAP content formats (RFC 9148 §8.3, RFC 8613 registry). */
enum {
    CF_PKCS7_CERTS = 281, /* application/pkcs7-mime; smime-type=certs-only */
    CF_PKCS10 = 286       /* application/pkcs10 */
};

enum {
    /* A CSR body (DER), reassembled from Block1 pieces at most this big:
     * RSA-4096 with extensions is under 2 KiB. */
    COAPS_BODY_MAX = 16 * 1024,
    /* Bodies being reassembled at once, and how long one waits for its
     * next piece before its slot may be reused. */
    COAPS_SLOTS = 32,
    COAPS_SLOT_TTL = 60,
    /* Certificates handed out recently, kept to answer a retransmitted
     * request again (RFC 7252 §4.5) instead of issuing twice: the
     * request's exchange lifetime is 247 s. */
    COAPS_RECENT = 32,
    COAPS_RECENT_TTL = 247,
    COAPS_SESSION_TIMEOUT = 120, /* seconds an idle DTLS session lives */
    COAPS_POLL_MS = 250          /* how often the thread sees stop */
};

/* One request body arriving in Block1 pieces. libcoap 4.3.1's own
 * reassembly (COAP_BLOCK_SINGLE_BODY) allocates whatever Size1 the client
 * claims before the application sees the request, so bodies are put
 * together here, bounded in size and count. */
struct body_slot {
    const coap_session_t *sess;
    const coap_resource_t *res;
    coap_address_t peer;
    time_t touched;
    size_t len;
    uint8_t buf[COAPS_BODY_MAX];
};

/* A 2.04 answered to a confirmable sen/sren, by session, peer and
 * message id. */
struct recent_answer {
    const coap_session_t *sess;
    coap_address_t peer;
    coap_mid_t mid;
    time_t at;
    uint8_t *p7; /* the certs-only PKCS#7 answered */
    size_t len;
};

struct coaps_server {
    app *app;
    coap_context_t *ctx;
    pthread_t thread;
    int running;
    atomic_int stop;
    uint8_t *crts;       /* /est/crts: the CA chain as certs-only PKCS#7 */
    size_t crts_len;
    /* libcoap enables PSK only when a context key is set; the identity
     * callback always replaces it, so it is random and never used. */
    uint8_t unused_psk[32];
    /* The key the identity callback hands back (libcoap copies it into
     * the session); wiped after each turn of the loop. */
    char psk[REGISTRY_ENR_TOKEN_MAX];
    coap_bin_const_t psk_bin;
    struct body_slot slots[COAPS_SLOTS];
    struct recent_answer recent[COAPS_RECENT];
    size_t recent_next; /* the ring's oldest entry */
};

/* ---- answers ----------------------------------------------------------- */

/* Errors are the project's one table (common/err.h): its HTTP status is
 * also a valid CoAP code (4.00, 4.01, 4.03, 4.04, 4.05, 4.09, 4.13, 4.15,
 * 4.29, 5.00, 5.03), with a diagnostic payload "code: message". */
static void reply_error(coap_pdu_t *resp, ad_err e, const char *msg)
{
    char text[400];
    uint8_t buf[4];
    int n;

    if (e == AD_OK)
        e = AD_EINTERNAL;
    coap_pdu_set_code(resp, (coap_pdu_code_t)COAP_RESPONSE_CODE(
                                ad_err_status(e)));
    coap_add_option(resp, COAP_OPTION_CONTENT_FORMAT,
                    coap_encode_var_safe(buf, sizeof(buf),
                                         COAP_MEDIATYPE_TEXT_PLAIN),
                    buf);
    n = snprintf(text, sizeof(text), "%s: %s", ad_err_code(e),
                 msg && *msg ? msg : ad_err_message(e));
    if (n > 0)
        coap_add_data(resp, (size_t)n < sizeof(text) ? (size_t)n
                                                     : sizeof(text) - 1,
                      (const uint8_t *)text);
}

static void release_free(coap_session_t *sess, void *p)
{
    (void)sess;
    free(p);
}

/* Answers code with body (certs-only PKCS#7), block-wise if it does not
 * fit one datagram. With owned, body is free()d once sent (or on error). */
static ad_err reply_p7(coap_resource_t *res, coap_session_t *sess,
                       const coap_pdu_t *req, const coap_string_t *query,
                       coap_pdu_t *resp, unsigned code, uint8_t *body,
                       size_t len, int owned)
{
    coap_pdu_set_code(resp, (coap_pdu_code_t)COAP_RESPONSE_CODE(code));
    if (!coap_add_data_large_response(res, sess, req, resp, query,
                                      CF_PKCS7_CERTS, -1, 0, len, body,
                                      owned ? release_free : NULL,
                                      owned ? body : NULL)) {
        /* libcoap calls release_func on failure too. */
        return AD_ENOMEM;
    }
    return AD_OK;
}

/* ---- the session's credential ------------------------------------------ */

static SSL *session_ssl(coap_session_t *sess)
{
    coap_tls_library_t lib = COAP_TLS_LIBRARY_NOTLS;
    void *tls = coap_session_get_tls(sess, &lib);

    return lib == COAP_TLS_LIBRARY_OPENSSL ? tls : NULL;
}

/* Whether the session was authenticated by a pre-shared key; if so its
 * identity (the enrollment id) into id. */
static int session_psk(coap_session_t *sess, char *id, size_t idlen)
{
    SSL *ssl = session_ssl(sess);
    const SSL_CIPHER *c = ssl ? SSL_get_current_cipher(ssl) : NULL;
    const coap_bin_const_t *ident;

    if (c == NULL || SSL_CIPHER_get_auth_nid(c) != NID_auth_psk)
        return 0;
    ident = coap_session_get_psk_identity(sess);
    if (ident == NULL || ident->length == 0 || ident->length >= idlen ||
        memchr(ident->s, '\0', ident->length) != NULL)
        return 0;
    memcpy(id, ident->s, ident->length);
    id[ident->length] = '\0';
    return 1;
}

/* The certificate the client authenticated with, as DER (*der is
 * OPENSSL_malloc()ed), verified against our CA chain by the handshake.
 * Returns 0, or -1 if the session has none. */
static int session_cert(coap_session_t *sess, uint8_t **der, size_t *len)
{
    SSL *ssl = session_ssl(sess);
    X509 *x;
    int n;

    *der = NULL;
    *len = 0;
    if (ssl == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    x = SSL_get1_peer_certificate(ssl);
#else
    x = SSL_get_peer_certificate(ssl);
#endif
    if (x == NULL)
        return -1;
    n = i2d_X509(x, der);
    X509_free(x);
    if (n <= 0)
        return -1;
    *len = (size_t)n;
    return 0;
}

/* The DTLS-PSK identity callback: identity = an enrollment id, key = its
 * token, unsealed from the enrollment record (docs/coap.md says why the
 * token is kept sealed). NULL fails the handshake. */
static const coap_bin_const_t *psk_for(coap_bin_const_t *identity,
                                       coap_session_t *sess, void *arg)
{
    coaps_server *s = arg;
    registry_enrollment enr;
    char id[REGISTRY_ID_MAX];

    (void)sess;
    OPENSSL_cleanse(s->psk, sizeof(s->psk));
    if (identity == NULL || identity->length == 0 ||
        identity->length >= sizeof(id) ||
        memchr(identity->s, '\0', identity->length) != NULL)
        return NULL;
    memcpy(id, identity->s, identity->length);
    id[identity->length] = '\0';
    /* A used-up or expired enrollment still handshakes, so that its sen
     * is answered 4.03 with the reason, as /v1/enroll answers 403. */
    if (registry_enrollment_psk(s->app->st, tokens_seal_key(s->app->tokens),
                                id, &enr, s->psk) != AD_OK)
        return NULL;
    s->psk_bin.s = (const uint8_t *)s->psk;
    s->psk_bin.length = strlen(s->psk);
    return &s->psk_bin;
}

/* libcoap demands a client certificate whenever it verifies one; a
 * session without one may still read /est/crts, so the demand is dropped
 * (a certificate that is presented is still verified against the chain). */
static int optional_client_cert(void *tls, coap_dtls_pki_t *setup)
{
    SSL *ssl = tls;
    int mode;

    (void)setup;
    if (ssl == NULL)
        return 1;
    mode = SSL_get_verify_mode(ssl);
    if (mode & SSL_VERIFY_FAIL_IF_NO_PEER_CERT)
        SSL_set_verify(ssl, mode & ~SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       SSL_get_verify_callback(ssl));
    return 1;
}

/* ---- requests ---------------------------------------------------------- */

static unsigned option_uint(const coap_pdu_t *pdu, uint16_t number,
                            unsigned absent)
{
    coap_opt_iterator_t it;
    coap_opt_t *o = coap_check_option(pdu, number, &it);

    if (o == NULL)
        return absent;
    return coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o));
}

/* Collects the request body, which may come in Block1 pieces. Returns 1
 * with *body and *len set when it is whole (pointing into req or a slot), 0 when
 * more is expected (the answer is 2.31 Continue), or a CoAP error code. */
static int request_body(coaps_server *s, coap_resource_t *res,
                        coap_session_t *sess, const coap_pdu_t *req,
                        const uint8_t **body, size_t *len,
                        struct body_slot **slot)
{
    const coap_address_t *peer = coap_session_get_addr_remote(sess);
    size_t length = 0, offset = 0, total = 0, i;
    const uint8_t *data = NULL;
    struct body_slot *sl = NULL;
    time_t now = time(NULL);

    *body = NULL;
    *len = 0;
    *slot = NULL;
    if (!coap_get_data_large(req, &length, &data, &offset, &total))
        return 1; /* no body */
    if (total > COAPS_BODY_MAX || offset > COAPS_BODY_MAX ||
        length > COAPS_BODY_MAX - offset)
        return 413;
    if (offset == 0 && total <= length) {
        *body = data;
        *len = length;
        return 1;
    }
    for (i = 0; i < COAPS_SLOTS; i++)
        if (s->slots[i].sess == sess && s->slots[i].res == res && peer &&
            coap_address_equals(&s->slots[i].peer, peer)) {
            sl = &s->slots[i];
            break;
        }
    if (offset == 0 && sl == NULL) {
        /* A free slot, else one gone stale, else the least recent. */
        for (i = 0; i < COAPS_SLOTS; i++)
            if (sl == NULL || s->slots[i].sess == NULL ||
                s->slots[i].touched < sl->touched) {
                sl = &s->slots[i];
                if (sl->sess == NULL)
                    break;
            }
        if (sl->sess != NULL && now - sl->touched < COAPS_SLOT_TTL)
            log_line("warn", "event=coap_body_evicted slots=%d",
                     (int)COAPS_SLOTS);
    }
    /* A piece sent again (its 2.31 was lost) is answered again. */
    if (sl != NULL && offset != 0 && offset + length == sl->len &&
        total > offset + length)
        return 0;
    if (sl == NULL || (offset != 0 && sl->len != offset))
        return 408; /* Request Entity Incomplete */
    if (offset == 0) {
        sl->sess = sess;
        sl->res = res;
        if (peer)
            coap_address_copy(&sl->peer, peer);
        sl->len = 0;
    }
    memcpy(sl->buf + sl->len, data, length);
    sl->len += length;
    sl->touched = now;
    if (total > offset + length)
        return 0;
    *body = sl->buf;
    *len = sl->len;
    *slot = sl;
    return 1;
}

static void slot_release(struct body_slot *sl)
{
    if (sl != NULL) {
        sl->sess = NULL;
        sl->res = NULL;
        sl->len = 0;
    }
}

static struct recent_answer *recent_find(coaps_server *s,
                                         const coap_session_t *sess,
                                         const coap_pdu_t *req)
{
    const coap_address_t *peer = coap_session_get_addr_remote(sess);
    coap_mid_t mid = coap_pdu_get_mid(req);
    time_t now = time(NULL);
    size_t i;

    if (coap_pdu_get_type(req) != COAP_MESSAGE_CON || peer == NULL)
        return NULL;
    for (i = 0; i < COAPS_RECENT; i++) {
        struct recent_answer *r = &s->recent[i];

        if (r->p7 != NULL && r->sess == sess && r->mid == mid &&
            now - r->at < COAPS_RECENT_TTL &&
            coap_address_equals(&r->peer, peer))
            return r;
    }
    return NULL;
}

/* Remembers the answer p7 to a confirmable req, replacing the oldest. */
static void recent_add(coaps_server *s, const coap_session_t *sess,
                       const coap_pdu_t *req, const uint8_t *p7, size_t len)
{
    const coap_address_t *peer = coap_session_get_addr_remote(sess);
    struct recent_answer *r;
    uint8_t *copy;

    if (coap_pdu_get_type(req) != COAP_MESSAGE_CON || peer == NULL ||
        (copy = malloc(len)) == NULL)
        return;
    memcpy(copy, p7, len);
    r = &s->recent[s->recent_next];
    s->recent_next = (s->recent_next + 1) % COAPS_RECENT;
    free(r->p7);
    r->sess = sess;
    coap_address_copy(&r->peer, peer);
    r->mid = coap_pdu_get_mid(req);
    r->at = time(NULL);
    r->p7 = copy;
    r->len = len;
}

static coaps_server *server_of(coap_session_t *sess)
{
    return coap_get_app_data(coap_session_get_context(sess));
}

static void log_request(const char *path, coap_pdu_t *resp, const char *actor)
{
    coap_pdu_code_t c = coap_pdu_get_code(resp);
    char safe[200];

    /* One line per request, not per Block1 piece (a 16 KiB body in
     * 16-byte pieces would be a thousand lines). */
    if (c == COAP_RESPONSE_CODE(231))
        return;
    log_line("info", "event=coap_request path=%s code=%d.%02d actor=%s", path,
             (int)c >> 5, (int)c & 31,
             actor[0] ? log_safe(actor, safe, sizeof(safe)) : "-");
}

/* /est/sen (renew = 0) and /est/sren (renew = 1). */
static void post_enroll(coap_resource_t *res, coap_session_t *sess,
                        const coap_pdu_t *req, const coap_string_t *query,
                        coap_pdu_t *resp, int renew)
{
    coaps_server *s = server_of(sess);
    char id[REGISTRY_ID_MAX], actor[REGISTRY_ID_MAX + 16] = "", msg[300] = "";
    const char *path = renew ? "/est/sren" : "/est/sen";
    struct body_slot *slot = NULL;
    registry_enrollment enr;
    const uint8_t *body;
    uint8_t *cert = NULL, *p7 = NULL;
    size_t certlen = 0, bodylen, p7len = 0;
    ca_csr *csr = NULL;
    ca_issued iss;
    int reused = 0;
    struct recent_answer *again;
    ad_err e = AD_OK;
    int got;

    memset(&iss, 0, sizeof(iss));
    /* A retransmission of a request already answered 2.04 (the answer was
     * lost) gets the same answer: no second certificate, no second use. */
    if ((again = recent_find(s, sess, req)) != NULL) {
        uint8_t *copy = malloc(again->len);

        if (copy == NULL) {
            e = AD_ENOMEM;
            goto out;
        }
        memcpy(copy, again->p7, again->len);
        log_line("info", "event=coap_replayed path=%s mid=%d", path,
                 (int)again->mid);
        e = reply_p7(res, sess, req, query, resp, 204, copy, again->len, 1);
        goto out;
    }
    if (renew) {
        if (session_cert(sess, &cert, &certlen) != 0) {
            e = AD_ECLIENTCERT;
            util_strlcpy(msg, "a DTLS session with the device's certificate "
                              "is required", sizeof(msg));
            goto out;
        }
    } else if (!session_psk(sess, id, sizeof(id))) {
        e = AD_EUNAUTH;
        util_strlcpy(msg, "a DTLS-PSK session is required (identity: the "
                          "enrollment id, key: its token)", sizeof(msg));
        goto out;
    } else {
        snprintf(actor, sizeof(actor), "enrollment:%s", id);
    }
    if (option_uint(req, COAP_OPTION_CONTENT_FORMAT, 0xffffffffu) !=
        CF_PKCS10) {
        e = AD_EMEDIA;
        util_strlcpy(msg, "the body must be a PKCS#10 CSR (DER), content "
                          "format 286", sizeof(msg));
        goto out;
    }
    if (option_uint(req, COAP_OPTION_ACCEPT, CF_PKCS7_CERTS) !=
        CF_PKCS7_CERTS) {
        coap_pdu_set_code(resp, COAP_RESPONSE_CODE(406));
        goto done;
    }
    got = request_body(s, res, sess, req, &body, &bodylen, &slot);
    if (got == 0) {
        coap_pdu_set_code(resp, COAP_RESPONSE_CODE(231));
        goto done;
    }
    if (got == 413) {
        uint8_t buf[4];

        e = AD_ETOOBIG;
        snprintf(msg, sizeof(msg), "the body exceeds %d bytes",
                 (int)COAPS_BODY_MAX);
        /* RFC 7959 §2.9.3: Size1 tells the client the limit. */
        coap_add_option(resp, COAP_OPTION_SIZE1,
                        coap_encode_var_safe(buf, sizeof(buf),
                                             COAPS_BODY_MAX),
                        buf);
        goto out;
    }
    if (got != 1) {
        coap_pdu_set_code(resp, (coap_pdu_code_t)COAP_RESPONSE_CODE(got));
        goto done;
    }
    if (bodylen == 0) {
        e = AD_ECSR;
        util_strlcpy(msg, "the body is empty", sizeof(msg));
        goto out;
    }
    e = ca_csr_parse_der(body, bodylen, &csr, msg, sizeof(msg));
    slot_release(slot);
    if (e != AD_OK) {
        if (!renew)
            http_metric_inc(s->app, METRIC_ENROLL_REFUSED);
        goto out;
    }
    if (renew) {
        e = issue_renew(s->app, cert, certlen, csr, 1, id, &iss, msg,
                        sizeof(msg));
        if (id[0])
            snprintf(actor, sizeof(actor), "device:%s", id);
    } else {
        /* The handshake proved the token; the enrollment is read afresh,
         * as it may have been used up or deleted since. */
        e = registry_enrollment_get(s->app->st, id, &enr);
        if (e == AD_ENOTFOUND) {
            e = AD_EBADCRED;
            util_strlcpy(msg, "the enrollment no longer exists",
                         sizeof(msg));
        }
        if (e == AD_OK)
            e = issue_enroll(s->app, actor, &enr, csr, NULL, &iss, &reused,
                             msg, sizeof(msg));
    }
    if (e == AD_OK) {
        const uint8_t *ders[1] = {iss.der};
        size_t lens[1] = {iss.der_len};

        e = ca_pkcs7_certs_only(ders, lens, 1, &p7, &p7len);
        if (e == AD_OK)
            recent_add(s, sess, req, p7, p7len);
        if (e == AD_OK) {
            /* RFC 9148 §5: a successful (re-)enrollment is 2.04. */
            e = reply_p7(res, sess, req, query, resp, 204, p7, p7len, 1);
            p7 = NULL;
        }
        if (e != AD_OK)
            log_line("error", "event=coap_answer_lost serial=%s",
                     iss.serial_hex);
    }
out:
    if (e != AD_OK) {
        slot_release(slot);
        reply_error(resp, e, msg);
    }
done:
    log_request(path, resp, actor);
    ca_issued_free(&iss);
    ca_csr_free(csr);
    free(p7);
    OPENSSL_free(cert);
}

static void h_sen(coap_resource_t *res, coap_session_t *sess,
                  const coap_pdu_t *req, const coap_string_t *query,
                  coap_pdu_t *resp)
{
    post_enroll(res, sess, req, query, resp, 0);
}

static void h_sren(coap_resource_t *res, coap_session_t *sess,
                   const coap_pdu_t *req, const coap_string_t *query,
                   coap_pdu_t *resp)
{
    post_enroll(res, sess, req, query, resp, 1);
}

static void h_crts(coap_resource_t *res, coap_session_t *sess,
                   const coap_pdu_t *req, const coap_string_t *query,
                   coap_pdu_t *resp)
{
    coaps_server *s = server_of(sess);

    if (reply_p7(res, sess, req, query, resp, 205, s->crts, s->crts_len, 0) !=
        AD_OK)
        reply_error(resp, AD_ENOMEM, NULL);
}

static void h_att(coap_resource_t *res, coap_session_t *sess,
                  const coap_pdu_t *req, const coap_string_t *query,
                  coap_pdu_t *resp)
{
    (void)res;
    (void)sess;
    (void)req;
    (void)query;
    /* No attributes are required: the HTTP route answers 204 No Content,
     * which RFC 9148 §5 maps to 2.04 with no payload. */
    coap_pdu_set_code(resp, COAP_RESPONSE_CODE(204));
}

/* ---- the server -------------------------------------------------------- */

static void coap_log_to_ours(coap_log_t level, const char *message)
{
    char safe[300];
    size_t n = strlen(message);
    char line[300];

    /* libcoap's lines end in a newline. */
    if (n >= sizeof(line))
        n = sizeof(line) - 1;
    memcpy(line, message, n);
    line[n] = '\0';
    if (n > 0 && line[n - 1] == '\n')
        line[n - 1] = '\0';
    log_line(level <= LOG_ERR ? "error" : "warn",
             "event=coap_log message=\"%s\"", log_safe(line, safe,
                                                       sizeof(safe)));
}

static void *serve(void *arg)
{
    coaps_server *s = arg;

    while (!atomic_load(&s->stop)) {
        coap_io_process(s->ctx, COAPS_POLL_MS);
        OPENSSL_cleanse(s->psk, sizeof(s->psk));
    }
    return NULL;
}

static ad_err parse_udp_addr(const char *spec, coap_address_t *out, char *err,
                             size_t errlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints, *res = NULL;
    size_t hl;

    if (colon == NULL || spec[0] == '[')
        goto bad;
    hl = (size_t)(colon - spec);
    if (hl == 0 || hl >= sizeof(host))
        goto bad;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL ||
        res->ai_addrlen > sizeof(out->addr)) {
        if (res)
            freeaddrinfo(res);
        goto bad;
    }
    coap_address_init(out);
    out->size = res->ai_addrlen;
    memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return AD_OK;
bad:
    return ad_errf(AD_EBADREQ, err, errlen,
                   "coaps address %s: expected IPv4ADDR:PORT or off", spec);
}

static int add_resource(coap_context_t *ctx, const char *path,
                        coap_request_t method, coap_method_handler_t h,
                        const char *ct, const char *rt)
{
    coap_str_const_t p = {strlen(path), (const uint8_t *)path};
    coap_str_const_t ctname = {2, (const uint8_t *)"ct"};
    coap_str_const_t rtname = {2, (const uint8_t *)"rt"};
    coap_str_const_t ctval = {strlen(ct), (const uint8_t *)ct};
    coap_str_const_t rtval = {strlen(rt), (const uint8_t *)rt};
    coap_resource_t *r = coap_resource_init(&p, 0);

    if (r == NULL)
        return -1;
    coap_register_handler(r, method, h);
    /* libcoap copies names and values it is not told to release. */
    if (coap_add_attr(r, &ctname, &ctval, 0) == NULL ||
        coap_add_attr(r, &rtname, &rtval, 0) == NULL) {
        coap_delete_resource(ctx, r);
        return -1;
    }
    coap_add_resource(ctx, r);
    return 0;
}

ad_err coaps_start(app *a, const char *addr, const coaps_limits *lim,
                   coaps_server **out, char *err, size_t errlen)
{
    coaps_server *s = NULL;
    coap_address_t la;
    coap_dtls_pki_t pki;
    coap_dtls_spsk_t spsk;
    const char *chain = ca_chain_pem(a->ca);
    ad_err e;

    *out = NULL;
    if ((e = parse_udp_addr(addr, &la, err, errlen)) != AD_OK)
        return e;
    coap_startup();
    if (!coap_dtls_is_supported()) {
        e = ad_errf(AD_EINTERNAL, err, errlen,
                    "this libcoap has no DTLS support");
        goto fail;
    }
    coap_set_log_handler(coap_log_to_ours);
    coap_set_log_level(LOG_ERR);
    coap_dtls_set_log_level(LOG_ERR);
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        e = AD_ENOMEM;
        goto fail;
    }
    s->app = a;
    atomic_store(&s->stop, 0);
    e = ca_pkcs7_certs_only((const uint8_t *const *)a->chain_der,
                            a->chain_len, a->chain_n, &s->crts,
                            &s->crts_len);
    if (e != AD_OK)
        goto fail;
    if (RAND_bytes(s->unused_psk, sizeof(s->unused_psk)) != 1) {
        e = AD_ECRYPTO;
        goto fail;
    }
    if ((s->ctx = coap_new_context(NULL)) == NULL) {
        e = ad_errf(AD_EINTERNAL, err, errlen, "coap_new_context failed");
        goto fail;
    }
    coap_set_app_data(s->ctx, s);
    /* libcoap answers large bodies block-wise (Block2); request bodies
     * are put together here (request_body says why). */
    coap_context_set_block_mode(s->ctx, COAP_BLOCK_USE_LIBCOAP);
    coap_context_set_max_idle_sessions(s->ctx, lim->max_sessions);
    coap_context_set_max_handshake_sessions(s->ctx, lim->max_handshakes);
    coap_context_set_session_timeout(s->ctx, COAPS_SESSION_TIMEOUT);

    memset(&pki, 0, sizeof(pki));
    pki.version = COAP_DTLS_PKI_SETUP_VERSION;
    pki.verify_peer_cert = 1;
    pki.check_common_ca = 1;
    pki.cert_chain_validation = 1;
    pki.cert_chain_verify_depth = APP_CHAIN_MAX;
    pki.additional_tls_setup_call_back = optional_client_cert;
    pki.pki_key.key_type = COAP_PKI_KEY_PEM_BUF;
    pki.pki_key.key.pem_buf.ca_cert = (const uint8_t *)chain;
    pki.pki_key.key.pem_buf.ca_cert_len = strlen(chain) + 1;
    pki.pki_key.key.pem_buf.public_cert = (const uint8_t *)a->tls_cert_pem;
    pki.pki_key.key.pem_buf.public_cert_len = strlen(a->tls_cert_pem) + 1;
    pki.pki_key.key.pem_buf.private_key = (const uint8_t *)a->tls_key_pem;
    pki.pki_key.key.pem_buf.private_key_len = strlen(a->tls_key_pem) + 1;
    if (!coap_context_set_pki(s->ctx, &pki)) {
        e = ad_errf(AD_ECRYPTO, err, errlen,
                    "the DTLS certificate setup failed");
        goto fail;
    }
    memset(&spsk, 0, sizeof(spsk));
    spsk.version = COAP_DTLS_SPSK_SETUP_VERSION;
    spsk.validate_id_call_back = psk_for;
    spsk.id_call_back_arg = s;
    spsk.psk_info.key.s = s->unused_psk;
    spsk.psk_info.key.length = sizeof(s->unused_psk);
    if (!coap_context_set_psk2(s->ctx, &spsk)) {
        e = ad_errf(AD_ECRYPTO, err, errlen, "the DTLS-PSK setup failed");
        goto fail;
    }
    if (add_resource(s->ctx, "est/crts", COAP_REQUEST_GET, h_crts, "281",
                     "\"ace.est.crts\"") != 0 ||
        add_resource(s->ctx, "est/sen", COAP_REQUEST_POST, h_sen, "281 286",
                     "\"ace.est.sen\"") != 0 ||
        add_resource(s->ctx, "est/sren", COAP_REQUEST_POST, h_sren,
                     "281 286", "\"ace.est.sren\"") != 0 ||
        add_resource(s->ctx, "est/att", COAP_REQUEST_GET, h_att, "285",
                     "\"ace.est.att\"") != 0) {
        e = AD_ENOMEM;
        goto fail;
    }
    if (coap_new_endpoint(s->ctx, &la, COAP_PROTO_DTLS) == NULL) {
        e = ad_errf(AD_EBADREQ, err, errlen,
                    "cannot listen on coaps %s (UDP)", addr);
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, serve, s) != 0) {
        e = ad_errf(AD_EINTERNAL, err, errlen, "cannot start the coaps "
                                               "thread");
        goto fail;
    }
    s->running = 1;
    *out = s;
    return AD_OK;
fail:
    coaps_stop(s);
    if (s == NULL)
        coap_cleanup();
    return e;
}

void coaps_stop(coaps_server *s)
{
    if (s == NULL)
        return;
    if (s->running) {
        atomic_store(&s->stop, 1);
        pthread_join(s->thread, NULL);
    }
    if (s->ctx)
        coap_free_context(s->ctx);
    OPENSSL_cleanse(s->psk, sizeof(s->psk));
    OPENSSL_cleanse(s->unused_psk, sizeof(s->unused_psk));
    for (size_t i = 0; i < COAPS_RECENT; i++)
        free(s->recent[i].p7);
    free(s->crts);
    free(s);
    coap_cleanup();
}
