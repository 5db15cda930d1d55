/* See config.h. One table lists every option once: its key in the config
 * file, the flag and environment variable derived from it, and where it
 * lives in struct config. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "../common/codec.h"
#include "util.h"

typedef enum { OPT_STR, OPT_LONG, OPT_BOOL } opt_type;

struct opt {
    const char *key; /* file key; flag is --key with '_' -> '-' */
    opt_type type;
    size_t offset;
    const char *def;
};

#define STR_OPT(k, d) {#k, OPT_STR, offsetof(config, k), d}
#define LONG_OPT(k, d) {#k, OPT_LONG, offsetof(config, k), d}
#define BOOL_OPT(k, d) {#k, OPT_BOOL, offsetof(config, k), d}

static const struct opt opts[] = {
    STR_OPT(data, "./authd-data"),
    STR_OPT(store, ""),
    STR_OPT(from, ""),
    STR_OPT(to, ""),
    STR_OPT(out, ""),
    STR_OPT(http, "127.0.0.1:8080"),
    STR_OPT(https, "127.0.0.1:8443"),
    STR_OPT(check_http, "127.0.0.1:8181"),
    STR_OPT(check_socket, ""),
    STR_OPT(coaps, "off"),
    STR_OPT(public_url, ""),
    STR_OPT(config_file, ""),
    STR_OPT(device_uri_prefix, "urn:device:"),
    STR_OPT(ca_cert, ""),
    STR_OPT(ca_key, ""),
    STR_OPT(subject, ""),
    STR_OPT(name, "admin"),
    STR_OPT(role, "admin"),
    LONG_OPT(cert_days, "365"),
    LONG_OPT(server_cert_days, "365"),
    LONG_OPT(map_mb, "4096"),
    LONG_OPT(threads, "0"),
    LONG_OPT(max_connections, "1024"),
    LONG_OPT(check_ttl, "30"),
    LONG_OPT(cache_memory_mb, "256"),
    LONG_OPT(token_ttl, "3600"),
    LONG_OPT(bundle_ttl, "86400"),
    LONG_OPT(crl_hours, "168"),
    LONG_OPT(rate_fail_burst, "10"),
    LONG_OPT(rate_source_burst, "100"),
    LONG_OPT(rate_fail_window, "60"),
    LONG_OPT(rate_backoff_max, "300"),
    LONG_OPT(rate_table_size, "16384"),
    LONG_OPT(argon2_parallel, "0"),
    LONG_OPT(max_connections_per_ip, "128"),
    LONG_OPT(request_timeout, "30"),
    LONG_OPT(compat_body_max, "1048576"),
    LONG_OPT(import_body_max, "16777216"),
    LONG_OPT(coaps_max_sessions, "256"),
    LONG_OPT(coaps_max_handshakes, "64"),
    STR_OPT(token_audience, "authd"),
    STR_OPT(token_issuer, ""),
    BOOL_OPT(trust_cn_only, "false"),
    STR_OPT(metrics_token, ""),
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static const struct opt *opt_by_key(const char *key)
{
    size_t i;

    /* "config" is the flag and file-less alias of config_file. */
    if (strcmp(key, "config") == 0)
        key = "config_file";
    for (i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].key, key) == 0)
            return &opts[i];
    return NULL;
}

static ad_err opt_set(config *cfg, const struct opt *o, const char *value,
                      const char *source, char *err, size_t errlen)
{
    char *field = (char *)cfg + o->offset;

    if (o->type == OPT_STR) {
        if (!util_strlcpy(field, value, CONFIG_STR_MAX))
            return ad_errf(AD_EBADREQ, err, errlen, "%s: %s is too long",
                           source, o->key);
    } else if (o->type == OPT_BOOL) {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        size_t i;
        long v = -1;

        for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
            if (strcmp(value, yes[i]) == 0)
                v = 1;
            if (strcmp(value, no[i]) == 0)
                v = 0;
        }
        if (v < 0)
            return ad_errf(AD_EBADREQ, err, errlen,
                           "%s: %s must be true or false", source, o->key);
        *(long *)(void *)field = v;
    } else {
        uint64_t v;
        if (codec_parse_u64(value, 1000000000, &v) != 0)
            return ad_errf(AD_EBADREQ, err, errlen,
                           "%s: %s must be a non-negative integer", source,
                           o->key);
        *(long *)(void *)field = (long)v;
    }
    return AD_OK;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static ad_err load_file(config *cfg, const char *path, char *err,
                        size_t errlen)
{
    char *text, *line, *next;
    int lineno = 0;
    ad_err e = AD_OK;

    text = util_read_file(path, 1 << 20, NULL);
    if (text == NULL)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot read config %s: %s",
                       path, strerror(errno));
    for (line = text; line && e == AD_OK; line = next) {
        char *eq, *key, *value, where[64];
        const struct opt *o;

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        line = trim(line);
        if (*line == '\0' || *line == '#')
            continue;
        snprintf(where, sizeof(where), "config line %d", lineno);
        eq = strchr(line, '=');
        if (eq == NULL) {
            e = ad_errf(AD_EBADREQ, err, errlen, "%s: expected key = value",
                        where);
            break;
        }
        *eq = '\0';
        key = trim(line);
        value = trim(eq + 1);
        for (char *p = key; *p; p++)
            if (*p == '-')
                *p = '_';
        o = opt_by_key(key);
        if (o == NULL) {
            e = ad_errf(AD_EBADREQ, err, errlen, "%s: unknown key %s", where,
                        key);
            break;
        }
        e = opt_set(cfg, o, value, where, err, errlen);
    }
    free(text);
    return e;
}

static void load_env(config *cfg)
{
    size_t i;

    for (i = 0; i < N_OPTS; i++) {
        char name[64], *p;
        const char *v;

        snprintf(name, sizeof(name), "AUTHD_%s", opts[i].key);
        for (p = name; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        v = getenv(name);
        if (v == NULL && strcmp(opts[i].key, "config_file") == 0)
            v = getenv("AUTHD_CONFIG");
        /* A bad environment value is ignored rather than fatal only if
         * it cannot be parsed; flags can still override it. */
        if (v != NULL)
            opt_set(cfg, &opts[i], v, "environment", NULL, 0);
    }
}

/* Applies flags; when only_config is set, it only picks up --config. */
static ad_err load_flags(config *cfg, int argc, char **argv, int only_config,
                         char *err, size_t errlen)
{
    int i;

    for (i = 0; i < argc; i++) {
        char key[64], *p;
        const char *arg = argv[i], *value, *eq;
        const struct opt *o;
        size_t klen;
        ad_err e;

        if (strncmp(arg, "--", 2) != 0)
            return ad_errf(AD_EBADREQ, err, errlen, "unexpected argument %s",
                           arg);
        arg += 2;
        eq = strchr(arg, '=');
        klen = eq ? (size_t)(eq - arg) : strlen(arg);
        if (klen == 0 || klen >= sizeof(key))
            return ad_errf(AD_EBADREQ, err, errlen, "unknown flag %s",
                           argv[i]);
        memcpy(key, arg, klen);
        key[klen] = '\0';
        for (p = key; *p; p++)
            if (*p == '-')
                *p = '_';
        o = opt_by_key(key);
        if (o == NULL)
            return ad_errf(AD_EBADREQ, err, errlen, "unknown flag %s",
                           argv[i]);
        if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc)
                return ad_errf(AD_EBADREQ, err, errlen, "%s needs a value",
                               argv[i]);
            value = argv[++i];
        }
        if (only_config && o->offset != offsetof(config, config_file))
            continue;
        e = opt_set(cfg, o, value, "flag", err, errlen);
        if (e != AD_OK)
            return e;
    }
    return AD_OK;
}

/* The abuse limits must stay limits: zero would mean "nothing may run"
 * or "no bound", neither of which an operator means. */
static ad_err check_limits(const config *cfg, char *err, size_t errlen)
{
    static const struct {
        const char *key;
        size_t offset;
        long min, max;
    } lim[] = {
        {"rate_fail_burst", offsetof(config, rate_fail_burst), 1, 1000000},
        {"rate_source_burst", offsetof(config, rate_source_burst), 1,
         1000000},
        {"rate_fail_window", offsetof(config, rate_fail_window), 1, 86400},
        {"rate_backoff_max", offsetof(config, rate_backoff_max), 1, 86400},
        {"rate_table_size", offsetof(config, rate_table_size), 64, 16777216},
        {"argon2_parallel", offsetof(config, argon2_parallel), 1, 1024},
        {"max_connections_per_ip", offsetof(config, max_connections_per_ip),
         1, 1000000},
        {"request_timeout", offsetof(config, request_timeout), 1, 3600},
        {"compat_body_max", offsetof(config, compat_body_max), 65536,
         64L << 20},
        {"cache_memory_mb", offsetof(config, cache_memory_mb), 1, 1L << 20},
        {"import_body_max", offsetof(config, import_body_max), 65536,
         256L << 20},
        /* A gateway decides offline for at most this long: a year. */
        {"bundle_ttl", offsetof(config, bundle_ttl), 1, 366L * 86400},
        {"coaps_max_sessions", offsetof(config, coaps_max_sessions), 1,
         65536},
        {"coaps_max_handshakes", offsetof(config, coaps_max_handshakes), 1,
         4096},
    };
    size_t i;

    for (i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
        long v = *(const long *)(const void *)((const char *)cfg +
                                               lim[i].offset);
        if (v < lim[i].min || v > lim[i].max)
            return ad_errf(AD_EBADREQ, err, errlen,
                           "%s must be between %ld and %ld", lim[i].key,
                           lim[i].min, lim[i].max);
    }
    return AD_OK;
}

static ad_err load_all(config *cfg, int argc, char **argv, char *err,
                       size_t errlen)
{
    ad_err e;
    size_t i;

    memset(cfg, 0, sizeof(*cfg));
    for (i = 0; i < N_OPTS; i++)
        opt_set(cfg, &opts[i], opts[i].def, "default", NULL, 0);
    /* Find the config file first (env, then flag), then layer. */
    load_env(cfg);
    e = load_flags(cfg, argc, argv, 1, err, errlen);
    if (e != AD_OK)
        return e;
    if (cfg->config_file[0]) {
        char path[CONFIG_STR_MAX];
        util_strlcpy(path, cfg->config_file, sizeof(path));
        e = load_file(cfg, path, err, errlen);
        if (e != AD_OK)
            return e;
        util_strlcpy(cfg->config_file, path, sizeof(cfg->config_file));
    }
    load_env(cfg);
    e = load_flags(cfg, argc, argv, 0, err, errlen);
    if (e == AD_OK && cfg->argon2_parallel == 0) {
        /* Automatic: half the cores, at least one. argon2id is pure CPU,
         * so every slot is a core the checks of other devices lose while
         * someone guesses secrets. */
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->argon2_parallel = ncpu >= 4 ? ncpu / 2 : 1;
    }
    return e == AD_OK ? check_limits(cfg, err, errlen) : e;
}

ad_err config_load(config *cfg, int argc, char **argv, char *err,
                   size_t errlen)
{
    return load_all(cfg, argc, argv, err, errlen);
}

ad_err config_reload(config *cfg, int argc, char **argv, char *err,
                     size_t errlen)
{
    config fresh;
    ad_err e = load_all(&fresh, argc, argv, err, errlen);

    if (e == AD_OK)
        *cfg = fresh;
    return e;
}
