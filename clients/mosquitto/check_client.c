/* POST /v1/check {"action":"connect",...} over one kept-alive libcurl
 * handle, and the compilation of the answer's statements and scope with
 * the same policy/ code the daemon decides with. */
#include "check_client.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "../../common/buf.h"
#include "../../common/codec.h"
#include "urls.h"

enum {
    URL_MAX = URLS_LEN_MAX + 64, /* a node's URL and a path */
    DOC_STATEMENTS_MAX = 256, /* pol_doc_validate's limit per document */
    /* A node that failed is asked again (when the current one fails)
     * after this long; until then a check does not wait on it. */
    NODE_HOLD_MS = 5000
};

struct cc {
    cc_config cfg;          /* strings owned */
    char *url_buf, *cacert_buf, *key_buf;
    urls nodes;
    CURL *curl;
    struct curl_slist *headers;
    char url[URL_MAX];
    buf_t answer;           /* answer being read, at most cfg.answer_max - 1 */
    int overflow;
};

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

void cc_close(cc *c)
{
    if (c == NULL)
        return;
    if (c->curl)
        curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    free(c->url_buf);
    urls_free(&c->nodes);
    free(c->cacert_buf);
    if (c->key_buf) {
        memset(c->key_buf, 0, strlen(c->key_buf));
        free(c->key_buf);
    }
    buf_free(&c->answer);
    free(c);
}

const char *cc_node(const cc *c)
{
    return c->nodes.url[c->nodes.current];
}

int cc_target(void *curl, const char *base, const char *path, char *url,
              size_t n)
{
    int w;

    if (strncmp(base, "unix:", 5) == 0) {
        /* The check listener on a unix socket: the host part is only
         * what the Host header says. */
        if (curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, base + 5) != CURLE_OK)
            return -1;
        w = snprintf(url, n, "http://localhost%s", path);
    } else {
        /* A list may mix both: a TCP node must not inherit the socket. */
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, NULL);
        w = snprintf(url, n, "%s%s", base, path);
    }
    if (w < 0 || (size_t)w >= n)
        return -1;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    return 0;
}

struct curl_slist *cc_prepare(void *curl, const cc_config *cfg)
{
    struct curl_slist *h = NULL, *t;
    char auth[512];
    int w;

    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms
                                                 : cfg->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (cfg->cacert)
        curl_easy_setopt(curl, CURLOPT_CAINFO, cfg->cacert);
    /* Neither a 100-continue round trip nor a proxy from the broker's
     * environment belongs on the path of every connect. */
    t = curl_slist_append(h, "Expect:");
    if (t == NULL)
        goto fail;
    h = t;
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    if (cfg->key) {
        w = snprintf(auth, sizeof(auth), "Authorization: Bearer %s", cfg->key);
        if (w < 0 || (size_t)w >= sizeof(auth))
            goto fail;
        t = curl_slist_append(h, auth);
        memset(auth, 0, sizeof(auth));
        if (t == NULL)
            goto fail;
        h = t;
    }
    return h;
fail:
    curl_slist_free_all(h);
    return NULL;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
    cc *c = arg;
    size_t n = size * nmemb;

    if (n > c->cfg.answer_max - 1 - buf_len(&c->answer))
        c->overflow = 1;
    if (buf_append(&c->answer, p, n) != 0)
        return 0; /* aborts the transfer */
    return n;
}

int cc_open(const cc_config *cfg, cc **out)
{
    cc *c = calloc(1, sizeof(*c));
    struct curl_slist *t;
    char err[256];

    *out = NULL;
    if (c == NULL)
        return -1;
    c->cfg.answer_max = cfg->answer_max > 1 ? cfg->answer_max
                                            : CC_ANSWER_MAX_DEFAULT;
    buf_init(&c->answer, c->cfg.answer_max - 1);
    c->url_buf = dup_or_null(cfg->url);
    c->cacert_buf = dup_or_null(cfg->cacert);
    c->key_buf = dup_or_null(cfg->key);
    c->cfg.url = c->url_buf;
    c->cfg.cacert = c->cacert_buf;
    c->cfg.key = c->key_buf;
    c->cfg.timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 2000;
    c->cfg.connect_timeout_ms = cfg->connect_timeout_ms;
    if (c->url_buf == NULL || (cfg->cacert && *cfg->cacert && !c->cacert_buf) ||
        (cfg->key && *cfg->key && !c->key_buf) ||
        urls_parse(c->url_buf, URLS_UNIX, &c->nodes, err, sizeof(err)) != 0)
        goto fail;
    c->curl = curl_easy_init();
    if (c->curl == NULL)
        goto fail;
    c->headers = cc_prepare(c->curl, &c->cfg);
    if (c->headers == NULL)
        goto fail;
    t = curl_slist_append(c->headers, "Content-Type: application/json");
    if (t == NULL)
        goto fail;
    c->headers = t;
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, c->cfg.timeout_ms);
    /* An answer announced bigger than the bound is refused before its
     * body is read; one without a length is stopped by on_body. */
    curl_easy_setopt(c->curl, CURLOPT_MAXFILESIZE_LARGE,
                     (curl_off_t)(c->cfg.answer_max - 1));
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    *out = c;
    return 0;
fail:
    cc_close(c);
    return -1;
}

void cc_grant_clear(cc_grant *g)
{
    if (g == NULL)
        return;
    pol_set_free(g->policy);
    pol_set_free(g->scope);
    memset(g, 0, sizeof(*g));
}

int cc_compile_statements(const json_t *statements, pol_set **out,
                          char *err, size_t errlen)
{
    size_t n = json_array_size(statements), nsrc, i;
    pol_source *src = NULL;
    json_t **docs = NULL;
    int rc = -1;

    *out = NULL;
    if (!json_is_array(statements)) {
        snprintf(err, errlen, "\"statements\" is not an array");
        return -1;
    }
    if (n == 0)
        return 0;
    /* A device with many policies may have more statements than one
     * document holds; deny-wins and allow-needed hold across sources. */
    nsrc = (n + DOC_STATEMENTS_MAX - 1) / DOC_STATEMENTS_MAX;
    src = calloc(nsrc, sizeof(*src));
    docs = calloc(nsrc, sizeof(*docs));
    if (src == NULL || docs == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (i = 0; i < nsrc; i++) {
        json_t *part = json_array();
        size_t j;

        for (j = i * DOC_STATEMENTS_MAX; part && j < n && j < (i + 1) * DOC_STATEMENTS_MAX; j++)
            json_array_append(part, json_array_get(statements, j));
        docs[i] = part ? json_pack("{s:o}", "statements", part) : NULL;
        if (docs[i] == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        src[i].name = "statements";
        src[i].doc = docs[i];
    }
    if (pol_compile(src, nsrc, NULL, out, err, errlen) != AD_OK)
        goto out;
    rc = 0;
out:
    if (docs)
        for (i = 0; i < nsrc; i++)
            json_decref(docs[i]);
    free(docs);
    free(src);
    return rc;
}

static void copy_str(char *dst, size_t n, const char *src)
{
    size_t l = src ? strlen(src) : 0;

    if (l >= n)
        l = n - 1;
    if (l)
        memcpy(dst, src, l);
    dst[l] = '\0';
}

/* The jti claim of a JWT, without verifying it (authd did): the token
 * is only matched against token_revoked events. */
static void jwt_jti(const char *jwt, char *out, size_t n)
{
    const char *p = strchr(jwt, '.'), *q;
    uint8_t *raw = NULL;
    size_t len, o = 0;
    json_t *claims;

    out[0] = '\0';
    if (p == NULL || (q = strchr(p + 1, '.')) == NULL)
        return;
    p++;
    len = (size_t)(q - p);
    if (len > 16384 ||
        codec_b64_decode_alloc(p, len, len, &raw, &o, CODEC_B64_URL) != 0)
        return;
    claims = json_loadb((const char *)raw, o, 0, NULL);
    copy_str(out, n, json_string_value(json_object_get(claims, "jti")));
    json_decref(claims);
    free(raw);
}

/* Wipes the answer buffer: it may hold statements and token claims. */
static void answer_wipe(cc *c)
{
    if (buf_ptr(&c->answer) != NULL)
        memset(buf_ptr(&c->answer), 0, buf_len(&c->answer));
    buf_reset(&c->answer);
}

/* One attempt at node i with the body already set: the answer's JSON
 * when it is a 200 with a "result", else NULL with why in err. */
static json_t *ask(cc *c, size_t i, char *err, size_t errlen)
{
    json_t *ans;
    long status = 0;
    CURLcode rc;

    answer_wipe(c);
    c->overflow = 0;
    if (cc_target(c->curl, c->nodes.url[i], "/v1/check", c->url,
                  sizeof(c->url)) != 0) {
        snprintf(err, errlen, "the URL is too long");
        return NULL;
    }
    rc = curl_easy_perform(c->curl);
    if (rc != CURLE_OK) {
        if (rc == CURLE_FILESIZE_EXCEEDED)
            c->overflow = 1;
        if (c->overflow)
            snprintf(err, errlen, "the answer is over %zu MiB "
                     "(plugin_opt_answer_max_mb)", c->cfg.answer_max >> 20);
        else
            snprintf(err, errlen, "%s", curl_easy_strerror(rc));
        return NULL;
    }
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        snprintf(err, errlen, "HTTP %ld from /v1/check", status);
        return NULL;
    }
    if (buf_str(&c->answer) == NULL) {
        snprintf(err, errlen, "the /v1/check answer could not be read");
        return NULL;
    }
    ans = json_loadb(buf_str(&c->answer), buf_len(&c->answer), 0, NULL);
    if (json_string_value(json_object_get(ans, "result")) == NULL) {
        json_decref(ans);
        snprintf(err, errlen, "the /v1/check answer has no \"result\"");
        return NULL;
    }
    return ans;
}

/* Asks the nodes in urls_order until one answers. Any failure moves on:
 * a check changes nothing on authd, so it may be repeated elsewhere.
 * Except an answer over the bound: that node answered, and any other
 * would send the same, so the search stops there with c->overflow set.
 * On NULL err holds "URL: why" for each node tried. */
static json_t *ask_nodes(cc *c, char *err, size_t errlen)
{
    size_t order[URLS_MAX], n, k, used = 0;
    char why[CURL_ERROR_SIZE];
    json_t *ans = NULL;
    int w;

    n = urls_order(&c->nodes, urls_now_ms(), order);
    for (k = 0; k < n && ans == NULL; k++) {
        if ((ans = ask(c, order[k], why, sizeof(why))) != NULL) {
            urls_good(&c->nodes, order[k]);
            break;
        }
        if (c->overflow)
            urls_good(&c->nodes, order[k]);
        else
            urls_bad(&c->nodes, order[k], urls_now_ms(), NODE_HOLD_MS);
        if (c->nodes.n == 1)
            w = snprintf(err, errlen, "%s", why);
        else
            w = snprintf(err + used, errlen - used, "%s%s: %s",
                         used ? "; " : "", c->nodes.url[order[k]], why);
        if (w > 0)
            used = (size_t)w + used >= errlen ? errlen - 1 : used + (size_t)w;
        if (c->overflow)
            break;
    }
    return ans;
}

cc_result cc_connect(cc *c, const char *client_id, const char *username,
                     const char *password, const char *fingerprint,
                     cc_grant *out, char *err, size_t errlen)
{
    json_t *req = NULL, *ans = NULL;
    char *body = NULL;
    const char *result, *scope;
    cc_result res = CC_UNREACHABLE;

    memset(out, 0, sizeof(*out));
    err[0] = '\0';
    req = json_pack("{s:s, s:s, s:s, s:s, s:s}", "action", "connect",
                    "client_id", client_id ? client_id : "",
                    "username", username ? username : "",
                    "password", password ? password : "",
                    "cert_fingerprint", fingerprint ? fingerprint : "");
    if (req == NULL) {
        /* jansson refuses strings that are not UTF-8: an MQTT password
         * may be any bytes, but no credential of authd's is. */
        copy_str(out->reason, sizeof(out->reason), "invalid_credential");
        res = CC_DENY;
        goto out;
    }
    body = json_dumps(req, JSON_COMPACT);
    if (body == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    c->overflow = 0;
    if ((ans = ask_nodes(c, err, errlen)) == NULL) {
        if (c->overflow)
            res = CC_UNUSABLE;
        goto out;
    }
    result = json_string_value(json_object_get(ans, "result"));
    copy_str(out->device, sizeof(out->device),
             json_string_value(json_object_get(ans, "device")));
    copy_str(out->reason, sizeof(out->reason),
             json_string_value(json_object_get(ans, "reason")));
    if (strcmp(result, "allow") != 0) {
        res = CC_DENY;
        goto out;
    }
    if (out->device[0] == '\0') {
        snprintf(err, errlen, "an allowed connect names no device");
        goto out;
    }
    out->expire_at = (int64_t)json_integer_value(json_object_get(ans, "expire_at"));
    /* From here authd has allowed: what fails is this plugin's use of
     * the answer, never a reason to keep an older grant. */
    res = CC_UNUSABLE;
    if (cc_compile_statements(json_object_get(ans, "statements"), &out->policy,
                              err, errlen) != 0)
        goto out;
    scope = json_string_value(json_object_get(ans, "scope"));
    if (scope) {
        out->has_scope = 1;
        if (pol_scope_compile(scope, &out->scope, NULL, err, errlen) != AD_OK)
            goto out;
        if (password)
            jwt_jti(password, out->jti, sizeof(out->jti));
    }
    res = CC_ALLOW;
out:
    if (res != CC_ALLOW) {
        pol_set_free(out->policy);
        pol_set_free(out->scope);
        out->policy = out->scope = NULL;
    }
    if (body) {
        memset(body, 0, strlen(body)); /* it holds the password */
        free(body);
    }
    answer_wipe(c);
    json_decref(req);
    json_decref(ans);
    return res;
}
