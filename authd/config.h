/* The daemon's configuration: defaults, then the config file (`key =
 * value` lines), then AUTHD_* environment variables, then command-line
 * flags, each overriding the one before. */
#ifndef AUTHD_CONFIG_H
#define AUTHD_CONFIG_H

#include <stddef.h>

#include "../common/err.h"

enum { CONFIG_STR_MAX = 512 };

typedef struct {
    char data[CONFIG_STR_MAX];          /* data directory */
    char store[CONFIG_STR_MAX];         /* "lmdb:[PATH]", "postgres://...";
                                         * "": what DATA/store.url says */
    char from[CONFIG_STR_MAX];          /* join: the existing node's data dir */
    char out[CONFIG_STR_MAX];           /* backup: the file to write */
    char to[CONFIG_STR_MAX];            /* migrate: the store to move into */
    char http[CONFIG_STR_MAX];          /* ADDR:PORT or "off" */
    char https[CONFIG_STR_MAX];
    char check_http[CONFIG_STR_MAX];
    char check_socket[CONFIG_STR_MAX];  /* unix socket path or "" */
    char coaps[CONFIG_STR_MAX];         /* EST over CoAP/DTLS: ADDR:PORT
                                         * (UDP) or "off" */
    char public_url[CONFIG_STR_MAX];    /* "" if unset */
    char config_file[CONFIG_STR_MAX];
    char device_uri_prefix[CONFIG_STR_MAX];
    char ca_cert[CONFIG_STR_MAX];       /* init: import an issuing CA */
    char ca_key[CONFIG_STR_MAX];
    char subject[CONFIG_STR_MAX];       /* init: issuing CA subject */
    char name[CONFIG_STR_MAX];          /* admin-key: key name */
    char role[CONFIG_STR_MAX];          /* admin-key: role */
    long cert_days;                     /* default device cert lifetime */
    long server_cert_days;              /* default server cert lifetime */
    long map_mb;                        /* LMDB map size */
    long threads;                       /* check listener thread pool */
    long max_connections;               /* per listener */
    long check_ttl;                     /* seconds brokers may cache allows */
    long cache_memory_mb;               /* the check path's caches, MiB */
    long token_ttl;                     /* access token lifetime, seconds */
    long bundle_ttl;                    /* gateway bundle lifetime, seconds */
    long crl_hours;                     /* CRL validity (nextUpdate) */
    /* Abuse limits (docs/api.md §3). */
    long rate_fail_burst;               /* per device: failures before
                                         * backing off */
    long rate_source_burst;             /* the same per source address */
    long rate_fail_window;              /* seconds a full burst drains in */
    long rate_backoff_max;              /* longest back-off, seconds */
    long rate_table_size;               /* keys tracked (fixed memory) */
    long argon2_parallel;               /* argon2id runs at once */
    long max_connections_per_ip;        /* per listener and address */
    long request_timeout;               /* seconds for a whole request */
    long compat_body_max;               /* body limit of /compat/ routes */
    long import_body_max;               /* body limit of devices:import */
    long coaps_max_sessions;            /* DTLS sessions kept at once */
    long coaps_max_handshakes;          /* DTLS handshakes at once */
    char token_audience[CONFIG_STR_MAX];
    char token_issuer[CONFIG_STR_MAX];  /* "" = public_url or "authd" */
    long trust_cn_only;                 /* 1: CN-only connects allowed */
    char metrics_token[CONFIG_STR_MAX]; /* "": /metrics is open; else
                                         * it needs this bearer token */
} config;

/* Fills cfg from defaults, the config file (from --config or
 * AUTHD_CONFIG, if any), the environment and argv (flags after the
 * subcommand). Errors are AD_EBADREQ with a message for the user. */
ad_err config_load(config *cfg, int argc, char **argv, char *err,
                   size_t errlen);

/* Re-reads the config file (SIGHUP) into cfg, keeping flags and
 * environment on top. Same errors as config_load; on error cfg is left
 * unchanged. */
ad_err config_reload(config *cfg, int argc, char **argv, char *err,
                     size_t errlen);

#endif
