/* The libcurl side of authctl. Each request goes through api_raw, which
 * bounds what it reads, never follows redirects (a redirect could carry
 * the bearer credential elsewhere), fails over between the nodes of the
 * URL list when that cannot repeat a request, and tells transport
 * failures (exit 3) apart from answers (exit 1 when they are refusals). */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "../../common/buf.h"
#include "../../common/codec.h"
#include "ctl.h"
#include "out.h"
#include "urls.h"
#include "version.h"

enum {
    BEARER_MAX = 1024,
    ANSWER_MAX = 64 * 1024 * 1024, /* a CRL of ~1M entries; lists page */
    /* One node: a slow link should not fail a command that would work. */
    CONNECT_MS_ONE = 10000,
    /* Several: a node that is gone costs at most this before the next
     * is tried, so that failover stays well under a second. */
    CONNECT_MS_MANY = 300,
    /* A node that failed is tried after the others for this long. */
    NODE_HOLD_MS = 5000
};

struct api {
    CURL *curl;
    char *spec;        /* the URL list as given, for api_clone */
    urls nodes;
    char *bearer;
    char *cacert;
    long timeout;
    long connect_ms;
    int insecure;
};

struct sink {
    buf_t body; /* at most ANSWER_MAX bytes */
    int too_big;
};

int api_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void api_global_cleanup(void)
{
    curl_global_cleanup();
}

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

/* A credential goes into a header: refuse anything that could end it. */
static int bearer_ok(const char *s)
{
    size_t n = 0;

    for (; *s; s++, n++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return n > 0 && n <= BEARER_MAX;
}

int api_open(const api_config *cfg, api **out, char *err, size_t errlen)
{
    api *a = NULL;
    int rc = -1;

    *out = NULL;
    if (cfg->bearer && !bearer_ok(cfg->bearer)) {
        snprintf(err, errlen, "the credential must be 1..%d printable "
                              "characters without spaces", BEARER_MAX);
        goto out;
    }
    if ((a = calloc(1, sizeof(*a))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (urls_parse(cfg->url, 0, &a->nodes, err, errlen) != 0)
        goto out;
    if ((a->spec = strdup(cfg->url)) == NULL ||
        (cfg->bearer && (a->bearer = strdup(cfg->bearer)) == NULL) ||
        (cfg->cacert && (a->cacert = strdup(cfg->cacert)) == NULL) ||
        (a->curl = curl_easy_init()) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    a->insecure = cfg->insecure;
    a->timeout = cfg->timeout > 0 ? cfg->timeout : 60;
    a->connect_ms = cfg->connect_ms > 0 ? cfg->connect_ms
                    : a->nodes.n > 1 ? CONNECT_MS_MANY : CONNECT_MS_ONE;
    *out = a;
    a = NULL;
    rc = 0;
out:
    api_close(a);
    return rc;
}

int api_clone(const api *a, const char *bearer, api **out, char *err,
              size_t errlen)
{
    api_config cfg;
    int rc;

    cfg.url = a->spec;
    cfg.bearer = bearer;
    cfg.cacert = a->cacert;
    cfg.timeout = a->timeout;
    cfg.connect_ms = a->connect_ms;
    cfg.insecure = a->insecure;
    rc = api_open(&cfg, out, err, errlen);
    if (rc == 0) {
        (*out)->nodes.current = a->nodes.current;
        memcpy((*out)->nodes.down_until, a->nodes.down_until,
               sizeof(a->nodes.down_until));
    }
    return rc;
}

void api_close(api *a)
{
    if (a == NULL)
        return;
    if (a->curl)
        curl_easy_cleanup(a->curl);
    free(a->spec);
    urls_free(&a->nodes);
    free_secret(a->bearer);
    free(a->cacert);
    free(a);
}

const char *api_url(const api *a)
{
    return a->nodes.url[a->nodes.current];
}

void api_resp_clear(api_resp *r)
{
    if (r) {
        free(r->body);
        memset(r, 0, sizeof(*r));
    }
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;

    if (n > ANSWER_MAX - buf_len(&s->body))
        s->too_big = 1;
    if (buf_append(&s->body, data, n) != 0)
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    return n;
}

/* Whether nothing of the request can have reached the node: the
 * connection (TCP, then TLS) failed before curl sent a byte of it. */
static int not_sent(CURL *curl, CURLcode cc)
{
    curl_off_t pre = 0;

    switch (cc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_PEER_FAILED_VERIFICATION:
        return 1;
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SSL_CONNECT_ERROR:
        /* A connect timeout, or a handshake broken off: the transfer
         * never started. (Also a whole-request timeout otherwise.) */
        return curl_easy_getinfo(curl, CURLINFO_PRETRANSFER_TIME_T, &pre) ==
                   CURLE_OK && pre == 0;
    default:
        return 0;
    }
}

/* Whether a request that reached a node may be sent to another one: only
 * methods whose repetition changes nothing, and only when the connection
 * broke before any answer began (a partial answer or a timeout after
 * sending is final). */
static int safe_to_repeat(CURL *curl, CURLcode cc, const char *method)
{
    long status = 0;

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 &&
        strcmp(method, "PUT") != 0 && strcmp(method, "DELETE") != 0)
        return 0;
    if (cc != CURLE_SEND_ERROR && cc != CURLE_RECV_ERROR &&
        cc != CURLE_GOT_NOTHING)
        return 0;
    return curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status) ==
               CURLE_OK && status == 0;
}

/* Sets every option of one attempt at node base. */
static void set_options(api *a, const char *method, const char *url,
                        struct curl_slist *hdrs, char *errbuf,
                        struct sink *sink, const void *body, size_t len)
{
    /* reset keeps the live connections and TLS sessions for the next
     * call; the options are set again for each attempt. */
    curl_easy_reset(a->curl);
    curl_easy_setopt(a->curl, CURLOPT_URL, url);
    curl_easy_setopt(a->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(a->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(a->curl, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(a->curl, CURLOPT_CONNECTTIMEOUT_MS, a->connect_ms);
    curl_easy_setopt(a->curl, CURLOPT_TIMEOUT, a->timeout);
    curl_easy_setopt(a->curl, CURLOPT_USERAGENT, "authctl/" AD_VERSION);
    curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, sink);
    if (a->cacert)
        curl_easy_setopt(a->curl, CURLOPT_CAINFO, a->cacert);
    if (a->insecure) {
        curl_easy_setopt(a->curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(a->curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)len);
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body);
    }
}

int api_raw(api *a, const char *method, const char *path, const char *ctype,
            const void *body, size_t len, api_resp *out)
{
    struct curl_slist *hdrs = NULL, *h;
    struct sink sink;
    char errbuf[CURL_ERROR_SIZE], ctbuf[128];
    /* Why each node tried failed: printed only when none answered. */
    char why_node[URLS_MAX][CURL_ERROR_SIZE];
    size_t order[URLS_MAX], norder, tried = 0, k, i = 0, ulen;
    char *url = NULL, *auth = NULL;
    const char *why = "out of memory";
    CURLcode cc = CURLE_COULDNT_CONNECT;
    int rc = CTL_FAILED, maybe_applied = 0, untrusted = 0;

    buf_init(&sink.body, ANSWER_MAX);
    sink.too_big = 0;
    memset(out, 0, sizeof(*out));
    ulen = URLS_LEN_MAX + strlen(path) + 1;
    if ((url = malloc(ulen)) == NULL)
        goto out;
    h = curl_slist_append(hdrs, "Accept: application/json");
    if (h == NULL)
        goto out;
    hdrs = h;
    /* No "Expect: 100-continue" round trip for bodies. */
    if ((h = curl_slist_append(hdrs, "Expect:")) == NULL)
        goto out;
    hdrs = h;
    if (a->bearer) {
        size_t alen = strlen(a->bearer) + sizeof("Authorization: Bearer ");

        if ((auth = malloc(alen)) == NULL)
            goto out;
        snprintf(auth, alen, "Authorization: Bearer %s", a->bearer);
        if ((h = curl_slist_append(hdrs, auth)) == NULL)
            goto out;
        hdrs = h;
    }
    if (ctype) {
        snprintf(ctbuf, sizeof(ctbuf), "Content-Type: %s", ctype);
        if ((h = curl_slist_append(hdrs, ctbuf)) == NULL)
            goto out;
        hdrs = h;
    }
    norder = urls_order(&a->nodes, urls_now_ms(), order);
    for (k = 0; k < norder; k++) {
        i = order[k];
        snprintf(url, ulen, "%s%s", a->nodes.url[i], path);
        errbuf[0] = '\0';
        buf_reset(&sink.body);
        sink.too_big = 0;
        set_options(a, method, url, hdrs, errbuf, &sink, body, len);
        cc = curl_easy_perform(a->curl);
        if (sink.too_big) {
            why = "the server's answer is too large";
            goto out;
        }
        if (cc == CURLE_OUT_OF_MEMORY || cc == CURLE_WRITE_ERROR)
            goto out;
        if (cc == CURLE_OK)
            break;
        snprintf(why_node[tried++], CURL_ERROR_SIZE, "%s",
                 errbuf[0] ? errbuf : curl_easy_strerror(cc));
        untrusted |= cc == CURLE_PEER_FAILED_VERIFICATION;
        urls_bad(&a->nodes, i, urls_now_ms(), NODE_HOLD_MS);
        if (!not_sent(a->curl, cc) && !safe_to_repeat(a->curl, cc, method)) {
            maybe_applied = a->nodes.n > 1;
            break;
        }
    }
    if (k == norder || cc != CURLE_OK) {
        for (k = 0; k < tried; k++)
            fprintf(stderr, "authctl: cannot reach %s: %s\n",
                    a->nodes.url[order[k]], why_node[k]);
        if (maybe_applied)
            fprintf(stderr, "authctl: the %s may have reached %s before the "
                            "connection broke: not sent to another node\n",
                    method, a->nodes.url[i]);
        if (untrusted)
            fprintf(stderr,
                    "authctl: hint: the server's certificate is not trusted "
                    "(or does not name this host): run `authctl login --url "
                    "%s --ca-fingerprint SHA256` with the root fingerprint "
                    "authd printed at its first start, or pass --cacert "
                    "authd-data/ca/chain.pem (env AUTHD_CACERT)\n",
                    a->nodes.url[order[0]]);
        why = NULL;
        rc = CTL_UNREACHABLE;
        goto out;
    }
    urls_good(&a->nodes, i);
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &out->status);
    if ((out->body = buf_take(&sink.body, &out->len)) == NULL)
        goto out;
    why = NULL;
    rc = CTL_OK;
out:
    if (why)
        fprintf(stderr, "authctl: %s\n", why);
    /* The handle must not keep pointers to what is freed here. */
    curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, NULL);
    curl_slist_free_all(hdrs);
    free_secret(auth);
    free(url);
    buf_free(&sink.body);
    return rc;
}

void api_error_message(const api_resp *r, char *buf, size_t len)
{
    json_t *j = NULL, *e;
    const char *code, *msg;
    char safe_msg[512], safe_code[64];

    if (r->len > 0)
        j = json_loadb(r->body, r->len, 0, NULL);
    e = json_object_get(j, "error");
    code = json_string_value(json_object_get(e, "code"));
    msg = json_string_value(json_object_get(e, "message"));
    if (msg)
        snprintf(buf, len, "%s (HTTP %ld%s%s)",
                 out_sanitize(msg, safe_msg, sizeof(safe_msg)), r->status,
                 code ? " " : "",
                 out_sanitize(code ? code : "", safe_code, sizeof(safe_code)));
    else
        snprintf(buf, len, "the server answered HTTP %ld", r->status);
    json_decref(j);
}

int api_refused(const api_resp *r)
{
    char msg[640];

    api_error_message(r, msg, sizeof(msg));
    fprintf(stderr, "authctl: %s\n", msg);
    return CTL_FAILED;
}

int api_json(api *a, const char *method, const char *path,
             const json_t *body, json_t **out)
{
    api_resp r;
    json_error_t jerr;
    char *text = NULL;
    int rc;

    *out = NULL;
    if (body && (text = json_dumps(body, JSON_COMPACT)) == NULL) {
        fprintf(stderr, "authctl: out of memory\n");
        return CTL_FAILED;
    }
    rc = api_raw(a, method, path, text ? "application/json" : NULL, text,
                 text ? strlen(text) : 0, &r);
    if (rc != CTL_OK)
        goto out;
    if (r.status < 200 || r.status > 299) {
        rc = api_refused(&r);
        goto out;
    }
    if (r.len == 0)
        goto out;
    if ((*out = json_loadb(r.body, r.len, 0, &jerr)) == NULL) {
        fprintf(stderr, "authctl: the server's answer is not JSON: %s\n",
                jerr.text);
        rc = CTL_FAILED;
    }
out:
    free(text);
    api_resp_clear(&r);
    return rc;
}

int api_list(api *a, const char *path, const char *after, long page_size,
             long limit, json_t **out)
{
    json_t *items = json_array(), *page = NULL, *next;
    const char *why = "out of memory";
    char *cursor = after ? strdup(after) : NULL, *full = NULL;
    char num[32];
    int rc = CTL_FAILED;

    *out = NULL;
    if (items == NULL || (after && cursor == NULL) ||
        (full = malloc(API_PATH_MAX)) == NULL)
        goto out;
    for (;;) {
        long want = page_size;
        size_t have = json_array_size(items);

        if (limit > 0 && (size_t)limit - have < (size_t)want)
            want = limit - (long)have;
        snprintf(num, sizeof(num), "%ld", want);
        snprintf(full, API_PATH_MAX, "%s", path);
        if (api_query_add(full, API_PATH_MAX, "limit", num) != 0 ||
            api_query_add(full, API_PATH_MAX, "after", cursor) != 0) {
            why = "the request path is too long";
            goto out;
        }
        json_decref(page);
        if ((rc = api_json(a, "GET", full, NULL, &page)) != CTL_OK) {
            why = NULL; /* api_json said why */
            goto out;
        }
        rc = CTL_FAILED;
        next = json_object_get(page, "next");
        if (!json_is_array(json_object_get(page, "items")) ||
            (next && !json_is_null(next) && !json_is_string(next))) {
            why = "the server's list answer is not {\"items\":[...],"
                  "\"next\":...}";
            goto out;
        }
        if (json_array_extend(items, json_object_get(page, "items")) != 0)
            goto out;
        if (!json_is_string(next)) {
            next = json_null();
            break;
        }
        if (limit > 0 && json_array_size(items) >= (size_t)limit)
            break;
        if (cursor && strcmp(cursor, json_string_value(next)) == 0) {
            why = "the list cursor did not advance";
            goto out;
        }
        free(cursor);
        if ((cursor = strdup(json_string_value(next))) == NULL)
            goto out;
    }
    *out = json_pack("{s:O, s:O}", "items", items, "next", next);
    if (*out == NULL)
        goto out;
    why = NULL;
    rc = CTL_OK;
out:
    if (why) {
        fprintf(stderr, "authctl: %s\n", why);
        rc = CTL_FAILED;
    }
    json_decref(page);
    json_decref(items);
    free(cursor);
    free(full);
    return rc;
}

/* Percent-encodes s into out; keep lists characters left as they are. */
static int escape(const char *s, const char *keep, char *out, size_t len)
{
    size_t n = 0;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                    c == '_' || c == '~' || (c && strchr(keep, c));
        if (n + (plain ? 1 : 3) >= len)
            return -1;
        if (plain) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            codec_hex_encode(&c, 1, out + n, CODEC_HEX_UPPER);
            n += 2;
        }
    }
    out[n] = '\0';
    return 0;
}

int api_path_add(char *buf, size_t len, const char *segment)
{
    size_t n = strlen(buf);

    /* Device ids may hold ':'; it needs no escaping inside a path. */
    if (n >= len || escape(segment, ":@", buf + n, len - n) != 0) {
        if (n < len)
            buf[n] = '\0';
        return -1;
    }
    return 0;
}

int api_query_add(char *buf, size_t len, const char *key, const char *value)
{
    size_t n = strlen(buf);
    int w;

    if (value == NULL)
        return 0;
    w = snprintf(buf + n, len - n, "%c%s=", strchr(buf, '?') ? '&' : '?',
                 key);
    if (w < 0 || (size_t)w >= len - n ||
        escape(value, "", buf + n + (size_t)w, len - n - (size_t)w) != 0) {
        buf[n] = '\0';
        return -1;
    }
    return 0;
}
