/* See datadir.h. Each piece of the data directory is created only if it
 * is missing, and written atomically, so an init interrupted at any point
 * can simply be run again. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/codec.h"
#include "datadir.h"
#include "registry.h"
#include "seal.h"
#include "tokens.h"
#include "util.h"

#define PATH_MAX_LEN 1024
#define PEM_FILE_MAX (1 << 20)
#define STORE_URL_FILE "store.url"

static int path_of(char *out, const char *dir, const char *rel)
{
    return (size_t)snprintf(out, PATH_MAX_LEN, "%s/%s", dir, rel) <
           PATH_MAX_LEN;
}

static int exists(const char *dir, const char *rel)
{
    char p[PATH_MAX_LEN];
    struct stat st;

    return path_of(p, dir, rel) && stat(p, &st) == 0;
}

static ad_err mkdir_0700(const char *dir, const char *rel, char *err,
                         size_t errlen)
{
    char p[PATH_MAX_LEN];

    if (rel ? !path_of(p, dir, rel) : !util_strlcpy(p, dir, sizeof(p)))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    if (mkdir(p, 0700) != 0 && errno != EEXIST)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot create %s: %s", p,
                       strerror(errno));
    return AD_OK;
}

static ad_err write_text(const char *dir, const char *rel, const char *text,
                         unsigned mode, char *err, size_t errlen)
{
    char p[PATH_MAX_LEN];

    if (!path_of(p, dir, rel))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    if (util_write_file(p, text, strlen(text), mode) != 0)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot write %s: %s", p,
                       strerror(errno));
    return AD_OK;
}

static char *read_text(const char *dir, const char *rel, char *err,
                       size_t errlen)
{
    char p[PATH_MAX_LEN];
    char *text;

    if (!path_of(p, dir, rel)) {
        ad_errf(AD_EBADREQ, err, errlen, "path too long");
        return NULL;
    }
    text = util_read_file(p, PEM_FILE_MAX, NULL);
    if (text == NULL)
        ad_errf(AD_EBADREQ, err, errlen, "cannot read %s: %s", p,
                strerror(errno));
    return text;
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *out = malloc(la + lb + 2);

    if (out == NULL)
        return NULL;
    memcpy(out, a, la);
    if (la && a[la - 1] != '\n')
        out[la++] = '\n';
    memcpy(out + la, b, lb + 1);
    return out;
}

/* The host part of a URL like "https://host:8443/path". */
static int url_host(const char *url, char *host, size_t hostlen)
{
    const char *p = strstr(url, "://"), *end;
    size_t n;

    p = p ? p + 3 : url;
    if (*p == '[') {
        end = strchr(++p, ']');
    } else {
        end = p + strcspn(p, ":/");
    }
    if (end == NULL)
        return 0;
    n = (size_t)(end - p);
    if (n == 0 || n >= hostlen)
        return 0;
    memcpy(host, p, n);
    host[n] = '\0';
    return 1;
}

static int is_ip(const char *s)
{
    return strspn(s, "0123456789.") == strlen(s) || strchr(s, ':') != NULL;
}

static ad_err init_ca(const config *cfg, FILE *log, char *err, size_t errlen)
{
    const char *dir = cfg->data;
    ca_material m;
    char *cert = NULL, *key = NULL, *chain = NULL;
    ad_err e;

    /* chain.pem is written last: its presence means the CA is whole. */
    if (exists(dir, "ca/chain.pem")) {
        if (cfg->ca_cert[0])
            return ad_errf(AD_ECONFLICT, err, errlen,
                           "%s already has a CA; refusing to import over it",
                           dir);
        return AD_OK;
    }
    if (cfg->ca_cert[0] || cfg->ca_key[0]) {
        ca *probe = NULL;

        if (!cfg->ca_cert[0] || !cfg->ca_key[0])
            return ad_errf(AD_EBADREQ, err, errlen,
                           "--ca-cert and --ca-key go together");
        cert = util_read_file(cfg->ca_cert, PEM_FILE_MAX, NULL);
        key = util_read_file(cfg->ca_key, PEM_FILE_MAX, NULL);
        if (cert == NULL || key == NULL) {
            e = ad_errf(AD_EBADREQ, err, errlen, "cannot read %s: %s",
                        cert ? cfg->ca_key : cfg->ca_cert, strerror(errno));
            goto out;
        }
        /* The certificate file may carry the chain up to the root. */
        e = ca_open(cert, key, cert, &probe, err, errlen);
        ca_close(probe);
        if (e != AD_OK)
            goto out;
        if ((e = write_text(dir, "ca/issuing.key", key, 0600, err, errlen)) ||
            (e = write_text(dir, "ca/issuing.pem", cert, 0644, err, errlen)) ||
            (e = write_text(dir, "ca/chain.pem", cert, 0644, err, errlen)))
            goto out;
        if (log)
            fprintf(log, "imported issuing CA from %s\n", cfg->ca_cert);
        goto out;
    }
    e = ca_generate(cfg->subject[0] ? cfg->subject : NULL, &m, err, errlen);
    if (e != AD_OK)
        return e;
    chain = concat(m.issuing_cert_pem, m.root_cert_pem);
    if (chain == NULL) {
        e = AD_ENOMEM;
    } else if (!(e = write_text(dir, "ca/root.key", m.root_key_pem, 0600, err,
                                errlen)) &&
               !(e = write_text(dir, "ca/root.pem", m.root_cert_pem, 0644, err,
                                errlen)) &&
               !(e = write_text(dir, "ca/issuing.key", m.issuing_key_pem,
                                0600, err, errlen)) &&
               !(e = write_text(dir, "ca/issuing.pem", m.issuing_cert_pem,
                                0644, err, errlen))) {
        e = write_text(dir, "ca/chain.pem", chain, 0644, err, errlen);
    }
    ca_material_free(&m);
    if (e == AD_OK && log)
        fprintf(log, "created root and issuing CA in %s/ca\n", dir);
out:
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(key);
    free(cert);
    free(chain);
    return e;
}

static ad_err open_ca(const char *dir, ca **out, char *err, size_t errlen)
{
    char *cert, *key, *chain;
    ad_err e = AD_EBADREQ;

    *out = NULL;
    cert = read_text(dir, "ca/issuing.pem", err, errlen);
    key = cert ? read_text(dir, "ca/issuing.key", err, errlen) : NULL;
    chain = key ? read_text(dir, "ca/chain.pem", err, errlen) : NULL;
    if (chain)
        e = ca_open(cert, key, chain, out, err, errlen);
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
    free(chain);
    return e;
}

static ad_err init_tls(const config *cfg, FILE *log, char *err, size_t errlen)
{
    const char *dir = cfg->data;
    const char *dns[2] = {"localhost", NULL}, *ips[3] = {"127.0.0.1", "::1",
                                                        NULL};
    char host[256], *pem = NULL;
    size_t ndns = 1, nips = 2;
    ca_profile prof;
    ca_issued iss;
    char *key = NULL;
    ca *c = NULL;
    ad_err e;

    if (exists(dir, "tls/server.pem"))
        return AD_OK;
    if ((e = open_ca(dir, &c, err, errlen)) != AD_OK)
        return e;
    if (cfg->public_url[0] && url_host(cfg->public_url, host, sizeof(host)) &&
        strcmp(host, "localhost") != 0 && strcmp(host, "127.0.0.1") != 0) {
        if (is_ip(host))
            ips[nips++] = host;
        else
            dns[ndns++] = host;
    }
    memset(&prof, 0, sizeof(prof));
    prof.kind = CA_PROFILE_SERVER;
    prof.common_name = ndns > 1 ? dns[1] : "localhost";
    prof.dns = dns;
    prof.dns_count = ndns;
    prof.ips = ips;
    prof.ip_count = nips;
    prof.not_before = (int64_t)time(NULL) - 60;
    prof.not_after = (int64_t)time(NULL) + (int64_t)cfg->server_cert_days * 86400;
    if (prof.not_after > ca_not_after(c))
        prof.not_after = ca_not_after(c);
    e = ca_issue_with_new_key(c, &prof, &iss, &key, err, errlen);
    if (e != AD_OK)
        goto out;
    /* The listener presents the chain so clients need only the root. */
    pem = concat(iss.pem, ca_chain_pem(c));
    if (pem == NULL)
        e = AD_ENOMEM;
    if (e == AD_OK)
        e = write_text(dir, "tls/server.key", key, 0600, err, errlen);
    if (e == AD_OK)
        e = write_text(dir, "tls/server.pem", pem, 0644, err, errlen);
    if (e == AD_OK && log)
        fprintf(log, "created HTTPS certificate %s/tls/server.pem\n", dir);
    ca_issued_free(&iss);
out:
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(key);
    free(pem);
    ca_close(c);
    return e;
}

/* ---- the store URL ------------------------------------------------ */

/* The URL with any password cut out, for messages: "postgres://u:***@h". */
static void url_for_humans(const char *url, char *out, size_t outlen)
{
    const char *scheme = strstr(url, "://"), *at, *colon;

    if (scheme == NULL || (at = strchr(scheme + 3, '@')) == NULL ||
        (colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3))) == NULL) {
        snprintf(out, outlen, "%s", url);
        return;
    }
    snprintf(out, outlen, "%.*s:***%s", (int)(colon - url), url, at);
}

static int url_is_lmdb(const char *url)
{
    return strncmp(url, "lmdb:", 5) == 0;
}

ad_err datadir_store_url(const config *cfg, char *out, size_t outlen,
                         char *err, size_t errlen)
{
    char p[PATH_MAX_LEN], *text;

    if (cfg->store[0]) {
        if (!util_strlcpy(out, cfg->store, outlen))
            return ad_errf(AD_EBADREQ, err, errlen, "the store URL is too long");
        return AD_OK;
    }
    if (!path_of(p, cfg->data, STORE_URL_FILE))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    text = util_read_file(p, CONFIG_STR_MAX, NULL);
    if (text == NULL) {
        if (errno != ENOENT)
            return ad_errf(AD_EBADREQ, err, errlen, "cannot read %s: %s", p,
                           strerror(errno));
        return util_strlcpy(out, "lmdb:", outlen) ? AD_OK : AD_EBADREQ;
    }
    text[strcspn(text, "\r\n")] = '\0';
    if (!text[0] || !util_strlcpy(out, text, outlen)) {
        free(text);
        return ad_errf(AD_EBADREQ, err, errlen, "%s holds no store URL", p);
    }
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return AD_OK;
}

ad_err datadir_remember_store(const char *dir, const char *url, char *err,
                              size_t errlen)
{
    char *line;
    ad_err e;

    if (!url_is_lmdb(url) && strncmp(url, "postgres://", 11) != 0 &&
        strncmp(url, "postgresql://", 13) != 0)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "the store URL must start lmdb:, postgres:// or "
                       "postgresql://");
    if ((e = mkdir_0700(dir, NULL, err, errlen)) != AD_OK)
        return e;
    if ((line = concat(url, "")) == NULL)
        return AD_ENOMEM;
    /* 0600: a PostgreSQL URL may carry a password. */
    e = write_text(dir, STORE_URL_FILE, line, 0600, err, errlen);
    OPENSSL_cleanse(line, strlen(line));
    free(line);
    return e;
}

/* Opens the store url names for data dir dir. An LMDB directory is
 * created (0700) if missing, as init creates DATA/store. */
static ad_err open_store_url(const char *dir, const char *url, size_t map_mb,
                             store **out, char *err, size_t errlen)
{
    store_options o;
    char shown[CONFIG_STR_MAX];
    ad_err e;

    *out = NULL;
    if (url_is_lmdb(url)) {
        e = url[5] ? mkdir_0700(url + 5, NULL, err, errlen)
                   : mkdir_0700(dir, "store", err, errlen);
        if (e != AD_OK)
            return e;
    }
    memset(&o, 0, sizeof(o));
    o.data_dir = dir;
    o.map_mb = map_mb;
    e = store_open_url(url, &o, out, err, errlen);
    if (e != AD_OK && err && !err[0]) {
        url_for_humans(url, shown, sizeof(shown));
        ad_errf(e, err, errlen, "cannot open the store %s", shown);
    }
    return e;
}

ad_err datadir_open_store(const config *cfg, store **out, char *err,
                          size_t errlen)
{
    char url[CONFIG_STR_MAX];
    ad_err e;

    *out = NULL;
    if ((e = datadir_store_url(cfg, url, sizeof(url), err, errlen)) != AD_OK)
        return e;
    e = open_store_url(cfg->data, url, (size_t)cfg->map_mb, out, err, errlen);
    OPENSSL_cleanse(url, sizeof(url));
    return e;
}

static ad_err init_admin_key(const config *cfg, store *st, FILE *log,
                             char *err, size_t errlen)
{
    json_t *view = NULL;
    char *line = NULL;
    const char *key;
    ad_err e;

    if (exists(cfg->data, "admin.key"))
        return AD_OK;
    e = registry_apikey_create(st, "cli:init", "admin", "admin", &view, err,
                               errlen);
    if (e != AD_OK)
        return e;
    key = json_string_value(json_object_get(view, "key"));
    line = concat(key, "");
    if (line == NULL) {
        e = AD_ENOMEM;
    } else {
        e = write_text(cfg->data, "admin.key", line, 0600, err, errlen);
        OPENSSL_cleanse(line, strlen(line));
    }
    free(line);
    json_decref(view);
    if (e == AD_OK && log)
        fprintf(log, "created admin API key in %s/admin.key (mode 0600)\n",
                cfg->data);
    return e;
}

/* seal.key and the store's token key ring (tokens_provision). */
static ad_err init_tokens(const char *dir, store *st, FILE *log, char *err,
                          size_t errlen)
{
    char seal[PATH_MAX_LEN], legacy[PATH_MAX_LEN];

    if (!path_of(seal, dir, "seal.key") || !path_of(legacy, dir, "tokens"))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    return tokens_provision(st, seal, legacy, log, err, errlen);
}

ad_err datadir_init(const config *cfg, FILE *log, char *err, size_t errlen)
{
    static const char *const subdirs[] = {"ca", "tls", "tokens"};
    store *st = NULL;
    size_t i;
    ad_err e;
    /* A first start with --store is an init: the data dir remembers the
     * store it was initialised on, for the next start, `admin-key` and
     * `join --from`. */
    int fresh = !exists(cfg->data, "ca/issuing.key");

    if ((e = mkdir_0700(cfg->data, NULL, err, errlen)) != AD_OK)
        return e;
    if (fresh && cfg->store[0] && !exists(cfg->data, STORE_URL_FILE) &&
        (e = datadir_remember_store(cfg->data, cfg->store, err, errlen)) !=
            AD_OK)
        return e;
    for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++)
        if ((e = mkdir_0700(cfg->data, subdirs[i], err, errlen)) != AD_OK)
            return e;
    if ((e = init_ca(cfg, log, err, errlen)) != AD_OK)
        return e;
    if ((e = init_tls(cfg, log, err, errlen)) != AD_OK)
        return e;
    if ((e = datadir_open_store(cfg, &st, err, errlen)) != AD_OK)
        return e;
    e = init_tokens(cfg->data, st, log, err, errlen);
    if (e == AD_OK)
        e = init_admin_key(cfg, st, log, err, errlen);
    store_close(st);
    return e;
}

int datadir_is_fresh(const config *cfg)
{
    return !exists(cfg->data, "ca/issuing.key");
}

/* The root CA's SHA-256 fingerprint as 64 lowercase hex digits, or 0. */
static int root_fingerprint(const char *dir, char out[65])
{
    char p[PATH_MAX_LEN];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    X509 *x = NULL;
    FILE *f;
    int ok = 0;

    if (!path_of(p, dir, "ca/root.pem") || (f = fopen(p, "r")) == NULL)
        return 0;
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x && X509_digest(x, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32) {
        codec_hex_encode(md, 32, out, 0);
        ok = 1;
    }
    X509_free(x);
    return ok;
}

void datadir_summary(const config *cfg, FILE *out)
{
    char url[CONFIG_STR_MAX + 16], fpr[65] = "";
    /* Absolute paths, so that the export lines work from any directory.
     * realpath allocates: given a buffer it may write PATH_MAX bytes,
     * more than this file's paths hold (glibc's fortified build aborts). */
    char *abs = realpath(cfg->data, NULL);
    const char *dir = abs != NULL ? abs : cfg->data;

    if (cfg->public_url[0]) {
        util_strlcpy(url, cfg->public_url, sizeof(url));
    } else if (strcmp(cfg->https, "off") != 0) {
        /* A wildcard listener is reached on loopback from this host. */
        const char *hp = cfg->https;
        if (strncmp(hp, "0.0.0.0:", 8) == 0)
            snprintf(url, sizeof(url), "https://127.0.0.1:%s", hp + 8);
        else
            snprintf(url, sizeof(url), "https://%s", hp);
    } else {
        snprintf(url, sizeof(url), "http://%s", cfg->http);
    }
    root_fingerprint(dir, fpr);
    fprintf(out,
            "\nauthd: data directory %s initialised:\n"
            "  root CA             %s/ca/root.pem\n"
            "  CA chain            %s/ca/chain.pem (issuing, root)\n"
            "  CA keys             %s/ca/root.key, %s/ca/issuing.key\n"
            "  HTTPS certificate   %s/tls/server.pem\n"
            "  admin API key       %s/admin.key (mode 0600; keep it "
            "secret)\n"
            "  root fingerprint    SHA256:%s\n",
            dir, dir, dir, dir, dir, dir, dir, fpr[0] ? fpr : "(unreadable)");
    if (!cfg->public_url[0])
        fprintf(out,
                "warning: public_url is unset, so certificates carry no "
                "CRL or OCSP URL;\n"
                "  set public_url (or --public-url) to the address devices "
                "and brokers reach\n");
    fprintf(out,
            "To use authctl on this host:\n"
            "  export AUTHD_URL=%s\n"
            "  export AUTHD_CACERT=%s/ca/chain.pem\n"
            "  export AUTHD_KEY_FILE=%s/admin.key\n"
            "  authctl device list\n"
            "From another host (copy admin.key there safely):\n"
            "  authctl login --url %s --ca-fingerprint %s "
            "--key-file admin.key\n\n",
            url, dir, dir, url, fpr[0] ? fpr : "FINGERPRINT");
    fflush(out);
    free(abs);
}

static ad_err check_one(const char *path, char *err, size_t errlen)
{
    struct stat st;

    if (stat(path, &st) != 0)
        return AD_OK; /* absent pieces are reported by whoever needs them */
    if (st.st_mode & 077)
        return ad_errf(AD_EFORBIDDEN, err, errlen,
                       "%s is accessible by group or others (mode %03o); "
                       "run chmod 600 on it",
                       path, (unsigned)(st.st_mode & 0777));
    return AD_OK;
}

ad_err datadir_check_permissions(const char *dir, char *err, size_t errlen)
{
    static const char *const secret_dirs[] = {"ca", "tls", "tokens"};
    char p[PATH_MAX_LEN];
    struct stat dst;
    size_t i;
    ad_err e;

    static const char *const secret_files[] = {"admin.key", "seal.key",
                                               STORE_URL_FILE};

    for (i = 0; i < sizeof(secret_files) / sizeof(secret_files[0]); i++) {
        if (!path_of(p, dir, secret_files[i]))
            return ad_errf(AD_EBADREQ, err, errlen, "path too long");
        if ((e = check_one(p, err, errlen)) != AD_OK)
            return e;
    }
    for (i = 0; i < sizeof(secret_dirs) / sizeof(secret_dirs[0]); i++) {
        struct dirent *de;
        DIR *d;

        if (!path_of(p, dir, secret_dirs[i]))
            continue;
        /* Whoever may write the directory may swap a key or plant a
         * token-signing key, however the files themselves are kept. */
        if (stat(p, &dst) == 0 && (dst.st_mode & 022))
            return ad_errf(AD_EFORBIDDEN, err, errlen,
                           "%s is writable by group or others (mode %03o); "
                           "run chmod 700 on it",
                           p, (unsigned)(dst.st_mode & 0777));
        if ((d = opendir(p)) == NULL)
            continue;
        while ((de = readdir(d)) != NULL) {
            char f[PATH_MAX_LEN];
            size_t n = strlen(de->d_name);

            if (n <= 4 || strcmp(de->d_name + n - 4, ".key") != 0)
                continue;
            if ((size_t)snprintf(f, sizeof(f), "%s/%s", p, de->d_name) >=
                sizeof(f))
                continue;
            if ((e = check_one(f, err, errlen)) != AD_OK) {
                closedir(d);
                return e;
            }
        }
        closedir(d);
    }
    return AD_OK;
}

ad_err datadir_load(app *a, char *err, size_t errlen)
{
    const char *dir = a->cfg.data;
    ad_err e;

    if ((e = open_ca(dir, &a->ca, err, errlen)) != AD_OK)
        goto fail;
    a->chain_n = ca_pem_chain_to_der(ca_chain_pem(a->ca), a->chain_der,
                                     a->chain_len, APP_CHAIN_MAX);
    if (a->chain_n == 0) {
        e = ad_errf(AD_EBADREQ, err, errlen, "the CA chain has no certificate");
        goto fail;
    }
    a->tls_cert_pem = read_text(dir, "tls/server.pem", err, errlen);
    a->tls_key_pem = a->tls_cert_pem
                         ? read_text(dir, "tls/server.key", err, errlen)
                         : NULL;
    if (a->tls_key_pem == NULL) {
        e = AD_EBADREQ;
        goto fail;
    }
    if ((e = datadir_open_store(&a->cfg, &a->st, err, errlen)) != AD_OK)
        goto fail;
    return AD_OK;
fail:
    datadir_unload(a);
    return e;
}

void datadir_unload(app *a)
{
    size_t i;

    store_close(a->st);
    a->st = NULL;
    ca_close(a->ca);
    a->ca = NULL;
    for (i = 0; i < a->chain_n; i++)
        free(a->chain_der[i]);
    a->chain_n = 0;
    if (a->tls_key_pem)
        OPENSSL_cleanse(a->tls_key_pem, strlen(a->tls_key_pem));
    free(a->tls_key_pem);
    free(a->tls_cert_pem);
    a->tls_key_pem = a->tls_cert_pem = NULL;
}

ad_err datadir_lock(const char *dir, int *fd, char *err, size_t errlen)
{
    char p[PATH_MAX_LEN], pid[32];
    ad_err e;
    int f;

    *fd = -1;
    if ((e = mkdir_0700(dir, NULL, err, errlen)) != AD_OK)
        return e;
    if (!path_of(p, dir, "lock"))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    f = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (f < 0)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot open the lock %s: %s",
                       p, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int busy = errno == EWOULDBLOCK;
        ssize_t n = busy ? pread(f, pid, sizeof(pid) - 1, 0) : -1;

        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(f);
        if (busy)
            return ad_errf(AD_ECONFLICT, err, errlen,
                           "the data dir is in use: another authd (pid %s) "
                           "holds the lock %s",
                           pid[0] ? pid : "?", p);
        return ad_errf(AD_EBADREQ, err, errlen, "cannot lock %s: %s", p,
                       strerror(errno));
    }
    /* The holder's pid, for the message a second daemon prints; the
     * lock holds without it. */
    if (ftruncate(f, 0) == 0) {
        int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
        ssize_t w = pwrite(f, pid, (size_t)n, 0);
        (void)w;
    }
    *fd = f;
    return AD_OK;
}

void datadir_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* closing the descriptor releases the flock */
}

/* ---- join ----------------------------------------------------------- */

/* Copies from/rel to dir/rel with mode; a missing source is an error
 * unless optional. */
static ad_err copy_file(const char *from, const char *dir, const char *rel,
                        unsigned mode, int optional, char *err, size_t errlen)
{
    char src[PATH_MAX_LEN], dst[PATH_MAX_LEN], *data;
    size_t len = 0;
    ad_err e = AD_OK;

    if (optional && !exists(from, rel))
        return AD_OK;
    if (!path_of(src, from, rel) || !path_of(dst, dir, rel))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    /* By length: seal.key is 32 raw bytes and may hold a NUL. */
    if ((data = util_read_file(src, PEM_FILE_MAX, &len)) == NULL)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot read %s: %s", src,
                       strerror(errno));
    if (util_write_file(dst, data, len, mode) != 0)
        e = ad_errf(AD_EBADREQ, err, errlen, "cannot write %s: %s", dst,
                    strerror(errno));
    OPENSSL_cleanse(data, len);
    free(data);
    return e;
}

/* What the joining node needs from the source node's store when the two
 * are not one database (two LMDB nodes): the sealed token key records,
 * and the admin key's record so that admin.key works on the new node. */
struct join_records {
    json_t *meta;   /* [[key, record], ...] of STORE_META */
    json_t *apikey; /* the admin key's record, or NULL */
    char digest[65];
};

static ad_err read_join_records(store *st, const char *digest,
                                struct join_records *jr, char *err,
                                size_t errlen)
{
    store_txn *tx = NULL;
    json_t *items = NULL, *ring = NULL, *v;
    char id[128];
    size_t i;
    int more = 0;
    ad_err e;

    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_get(tx, STORE_META, "token_keys", &ring);
    if (e == AD_OK)
        e = store_list(tx, STORE_META, "token_key:", NULL, 64, &items, &more);
    if (e == AD_OK && (jr->meta = json_array()) == NULL)
        e = AD_ENOMEM;
    json_array_foreach(items, i, v) {
        char key[128];
        snprintf(key, sizeof(key), "token_key:%s",
                 json_string_value(json_object_get(v, "kid")));
        if (e == AD_OK)
            json_array_append_new(jr->meta, json_pack("[s,O]", key, v));
    }
    if (e == AD_OK)
        json_array_append_new(jr->meta, json_pack("[s,O]", "token_keys", ring));
    if (e == AD_OK &&
        store_index_first(tx, STORE_IX_APIKEY_HASHES, digest, id,
                          sizeof(id)) == AD_OK)
        store_get(tx, STORE_APIKEYS, id, &jr->apikey);
    store_read_end(tx);
    json_decref(items);
    json_decref(ring);
    if (e == AD_ENOTFOUND)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "the source node's store holds no token keys");
    return e;
}

static ad_err join_write(store_txn *tx, void *arg)
{
    struct join_records *jr = arg;
    json_t *v, *have = NULL;
    const char *id;
    size_t i;
    ad_err e = AD_OK;

    /* Another node's keys already there: this is a shared store. */
    if (store_get(tx, STORE_META, "token_keys", &have) == AD_OK) {
        json_decref(have);
    } else {
        json_array_foreach(jr->meta, i, v) {
            e = store_put(tx, STORE_META,
                          json_string_value(json_array_get(v, 0)),
                          json_array_get(v, 1), STORE_NOOVERWRITE);
            if (e != AD_OK)
                return e;
        }
    }
    if (jr->apikey == NULL)
        return AD_OK;
    id = json_string_value(json_object_get(jr->apikey, "id"));
    if (id == NULL)
        return AD_OK;
    if (store_get(tx, STORE_APIKEYS, id, &have) == AD_OK) {
        json_decref(have);
        return AD_OK;
    }
    e = store_put(tx, STORE_APIKEYS, id, jr->apikey, STORE_NOOVERWRITE);
    if (e == AD_OK)
        e = store_index_add(tx, STORE_IX_APIKEY_HASHES, jr->digest, id);
    if (e == AD_OK)
        e = store_audit(tx, "cli:join", "apikey.copy", id, NULL);
    return e;
}

ad_err datadir_join(const config *cfg, FILE *log, char *err, size_t errlen)
{
    static const char *const subdirs[] = {"ca", "tls", "tokens"};
    const char *dir = cfg->data, *from = cfg->from;
    char url[CONFIG_STR_MAX], src_url[CONFIG_STR_MAX];
    struct join_records jr;
    config src;
    store *st = NULL;
    tokens *probe = NULL;
    char *admin = NULL;
    size_t i;
    ad_err e;

    memset(&jr, 0, sizeof(jr));
    if (!from[0])
        return ad_errf(AD_EBADREQ, err, errlen,
                       "--from names the data dir of a node of the cluster");
    if (exists(dir, "ca/chain.pem") || exists(dir, "ca/issuing.key"))
        return ad_errf(AD_ECONFLICT, err, errlen,
                       "%s already holds a CA; join prepares a new data dir",
                       dir);
    if (!exists(from, "ca/chain.pem") || !exists(from, "seal.key") ||
        !exists(from, "admin.key"))
        return ad_errf(AD_EBADREQ, err, errlen,
                       "%s is not an initialised data dir (no CA, seal.key "
                       "or admin.key); start that node once first",
                       from);
    /* The source's own checks: joining copies its secrets. */
    if ((e = datadir_check_permissions(from, err, errlen)) != AD_OK)
        return e;
    /* The joining node uses --store, else the store the source node
     * remembers (a cluster shares one). */
    src = *cfg;
    util_strlcpy(src.data, from, sizeof(src.data));
    src.store[0] = '\0';
    if ((e = datadir_store_url(&src, src_url, sizeof(src_url), err,
                               errlen)) != AD_OK)
        return e;
    if (!util_strlcpy(url, cfg->store[0] ? cfg->store : src_url, sizeof(url)))
        return ad_errf(AD_EBADREQ, err, errlen, "the store URL is too long");

    /* The source's records first, its store closed again before ours
     * opens: the two may be one LMDB, which one process opens once. */
    admin = read_text(from, "admin.key", err, errlen);
    if (admin == NULL)
        return AD_EBADREQ;
    admin[strcspn(admin, "\r\n")] = '\0';
    util_sha256_hex(admin, strlen(admin), jr.digest);
    if ((e = open_store_url(from, src_url, (size_t)cfg->map_mb, &st, err,
                            errlen)) != AD_OK)
        goto out;
    e = read_join_records(st, jr.digest, &jr, err, errlen);
    store_close(st);
    st = NULL;
    if (e != AD_OK)
        goto out;

    if ((e = mkdir_0700(dir, NULL, err, errlen)) != AD_OK)
        goto out;
    for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++)
        if ((e = mkdir_0700(dir, subdirs[i], err, errlen)) != AD_OK)
            goto out;
    /* chain.pem last, as init writes it: its presence means a whole CA. */
    if ((e = copy_file(from, dir, "seal.key", 0600, 0, err, errlen)) ||
        (e = copy_file(from, dir, "admin.key", 0600, 0, err, errlen)) ||
        (e = copy_file(from, dir, "ca/root.key", 0600, 1, err, errlen)) ||
        (e = copy_file(from, dir, "ca/root.pem", 0644, 1, err, errlen)) ||
        (e = copy_file(from, dir, "ca/issuing.key", 0600, 0, err, errlen)) ||
        (e = copy_file(from, dir, "ca/issuing.pem", 0644, 0, err, errlen)) ||
        (e = copy_file(from, dir, "ca/chain.pem", 0644, 0, err, errlen)))
        goto out;
    if (log)
        fprintf(log, "copied the CA, admin.key and seal.key from %s\n", from);
    if ((e = datadir_remember_store(dir, url, err, errlen)) != AD_OK)
        goto out;

    if ((e = open_store_url(dir, url, (size_t)cfg->map_mb, &st, err,
                            errlen)) != AD_OK)
        goto out;
    e = store_write(st, join_write, &jr);
    if (e != AD_OK) {
        e = ad_errf(e, err, errlen, "cannot write the cluster's keys to the "
                                    "store");
        goto out;
    }
    {
        /* Proof that this node opens the cluster's token keys. */
        char tdir[PATH_MAX_LEN], seal[PATH_MAX_LEN];
        tokens_config tc;

        if (!path_of(tdir, dir, "tokens") || !path_of(seal, dir, "seal.key")) {
            e = ad_errf(AD_EBADREQ, err, errlen, "path too long");
            goto out;
        }
        memset(&tc, 0, sizeof(tc));
        tc.dir = tdir;
        tc.seal_key = seal;
        tc.issuer = "authd";
        tc.audience = "authd";
        tc.ttl = 60;
        if ((e = tokens_open(&tc, st, &probe, err, errlen)) != AD_OK)
            goto out;
    }
    store_close(st);
    st = NULL;
    /* The node's own HTTPS certificate, for its own names. */
    if ((e = init_tls(cfg, log, err, errlen)) != AD_OK)
        goto out;
    if (log)
        fprintf(log, "joined: %s shares the CA and token keys of %s\n", dir,
                from);
out:
    tokens_close(probe);
    store_close(st);
    if (admin) {
        OPENSSL_cleanse(admin, strlen(admin));
        free(admin);
    }
    json_decref(jr.meta);
    json_decref(jr.apikey);
    return e;
}
