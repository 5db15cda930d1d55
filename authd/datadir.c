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

#include "datadir.h"
#include "registry.h"
#include "util.h"

#define PATH_MAX_LEN 1024
#define PEM_FILE_MAX (1 << 20)

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

/* A fresh ECDSA P-256 private key as PKCS#8 PEM (token signing). */
static char *new_p256_key_pem(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    BIO *bio = NULL;
    char *data, *out = NULL;
    long n;

    if (key == NULL)
        return NULL;
    bio = BIO_new(BIO_s_mem());
    if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        n = BIO_get_mem_data(bio, &data);
        out = malloc((size_t)n + 1);
        if (out) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(bio);
    EVP_PKEY_free(key);
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

static int has_token_key(const char *dir)
{
    char p[PATH_MAX_LEN];
    struct dirent *de;
    DIR *d;
    int found = 0;

    if (!path_of(p, dir, "tokens") || (d = opendir(p)) == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n > 4 && strcmp(de->d_name + n - 4, ".key") == 0)
            found = 1;
    }
    closedir(d);
    return found;
}

static ad_err init_token_key(const config *cfg, FILE *log, char *err,
                             size_t errlen)
{
    char kid[24], rel[64], *pem;
    ad_err e;

    if (has_token_key(cfg->data))
        return AD_OK;
    if ((e = util_random_hex(8, kid, sizeof(kid))) != AD_OK)
        return e;
    pem = new_p256_key_pem();
    if (pem == NULL)
        return ad_errf(AD_ECRYPTO, err, errlen, "cannot generate a key");
    snprintf(rel, sizeof(rel), "tokens/%s.key", kid);
    e = write_text(cfg->data, rel, pem, 0600, err, errlen);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    if (e == AD_OK && log)
        fprintf(log, "created token signing key %s/%s\n", cfg->data, rel);
    return e;
}

ad_err datadir_open_store(const config *cfg, store **out, char *err,
                          size_t errlen)
{
    char p[PATH_MAX_LEN];
    ad_err e;

    if ((e = mkdir_0700(cfg->data, "store", err, errlen)) != AD_OK)
        return e;
    if (!path_of(p, cfg->data, "store"))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    return store_open(p, (size_t)cfg->map_mb, out, err, errlen);
}

static ad_err init_admin_key(const config *cfg, FILE *log, char *err,
                             size_t errlen)
{
    store *st = NULL;
    json_t *view = NULL;
    char *line = NULL;
    const char *key;
    ad_err e;

    if (exists(cfg->data, "admin.key"))
        return AD_OK;
    if ((e = datadir_open_store(cfg, &st, err, errlen)) != AD_OK)
        return e;
    e = registry_apikey_create(st, "init", "admin", "admin", &view, err,
                               errlen);
    store_close(st);
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

ad_err datadir_init(const config *cfg, FILE *log, char *err, size_t errlen)
{
    static const char *const subdirs[] = {"ca", "tls", "tokens", "store"};
    size_t i;
    ad_err e;

    if ((e = mkdir_0700(cfg->data, NULL, err, errlen)) != AD_OK)
        return e;
    for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++)
        if ((e = mkdir_0700(cfg->data, subdirs[i], err, errlen)) != AD_OK)
            return e;
    if ((e = init_ca(cfg, log, err, errlen)) != AD_OK)
        return e;
    if ((e = init_tls(cfg, log, err, errlen)) != AD_OK)
        return e;
    if ((e = init_token_key(cfg, log, err, errlen)) != AD_OK)
        return e;
    return init_admin_key(cfg, log, err, errlen);
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

    if (!path_of(p, dir, "admin.key"))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    if ((e = check_one(p, err, errlen)) != AD_OK)
        return e;
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
