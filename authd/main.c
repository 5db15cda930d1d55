/* authd's entry point: parses the subcommand, wires the data directory,
 * store, CA and HTTP listeners together, and runs the signal loop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "backup.h"
#include "changes.h"
#include "checker.h"
#include "datadir.h"
#include "events.h"
#include "revocation.h"
#include "coap.h"
#include "http.h"
#include "log.h"
#include "migrate.h"
#include "ratelimit.h"
#include "registry.h"
#include "registry_policies.h"
#include "routes.h"
#include "tokens.h"
#include "docdir.h"
#include "version.h"

static const char usage[] =
    "usage: authd --version\n"
    "       authd serve [--data DIR] [--http ADDR:PORT|off] "
    "[--https ADDR:PORT|off]\n"
    "                   [--check-http ADDR:PORT|off | --check-socket PATH]\n"
    "                   [--coaps ADDR:PORT|off]\n"
    "                   [--public-url URL] [--config FILE] [--store URL]\n"
    "       authd init --data DIR [--store URL] [--ca-cert F --ca-key F] "
    "[--subject \"CN=..,O=..\"]\n"
    "       authd join --data DIR --from SRC_DATA_DIR [--store URL] "
    "[--public-url URL]\n"
    "       authd admin-key --data DIR [--name N] "
    "[--role admin|broker|provisioner]\n"
    "       authd migrate --data DIR --to postgres://... (offline)\n"
    "       authd audit verify --data DIR   (exit 0: the chain holds, 1: "
    "not)\n"
    "       authd backup --data DIR --out FILE (while the daemon serves)\n"
    "       authd restore --data NEW_DIR --from FILE [--store URL]\n"
    "The store URL is lmdb: (DIR/store), lmdb:PATH or postgres://...; init,\n"
    "join and migrate remember it in DIR/store.url.\n"
    "Every option may also come from the config file (key = value) and\n"
    "AUTHD_* environment variables (AUTHD_DATA, AUTHD_HTTP, ...); flags "
    "win.\n"
    "Reference: docs/README.md in the source tree, installed as\n"
    "  " AD_DOCDIR "/docs/README.md\n"
    "(docs/config.md: every key; docs/api.md: the HTTP API and /metrics;\n"
    "docs/operations.md: first start, backup, restore), and the manual\n"
    "pages authd(8) and authd.conf(5).\n";

static int cmd_init(config *cfg)
{
    char err[512] = "";
    ad_err e = AD_OK;
    int fresh = 0;

    /* Remembered first, so that a later `serve` without --store opens
     * the store init filled. */
    if (cfg->store[0])
        e = datadir_remember_store(cfg->data, cfg->store, err, sizeof(err));
    if (e == AD_OK) {
        fresh = datadir_is_fresh(cfg);
        e = datadir_init(cfg, stdout, err, sizeof(err));
    }
    if (e != AD_OK) {
        fprintf(stderr, "authd init: %s\n", err[0] ? err : ad_err_message(e));
        return 1;
    }
    printf("data directory %s is ready\n", cfg->data);
    fflush(stdout);
    if (fresh)
        datadir_summary(cfg, stderr);
    return 0;
}

static int cmd_join(config *cfg)
{
    char err[512] = "";
    int lock_fd = -1;
    ad_err e;

    /* Held while the dir is filled: a daemon must not start on it
     * half-joined. */
    e = datadir_lock(cfg->data, &lock_fd, err, sizeof(err));
    if (e == AD_OK)
        e = datadir_join(cfg, stdout, err, sizeof(err));
    datadir_unlock(lock_fd);
    if (e != AD_OK) {
        fprintf(stderr, "authd join: %s\n", err[0] ? err : ad_err_message(e));
        return e == AD_ECONFLICT ? 3 : 1;
    }
    printf("data directory %s is ready\n", cfg->data);
    return 0;
}

static int cmd_migrate(config *cfg)
{
    char err[512] = "";
    int lock_fd = -1;
    ad_err e;

    /* Offline: the lock keeps a daemon from writing the old store while
     * it is copied. */
    e = datadir_lock(cfg->data, &lock_fd, err, sizeof(err));
    if (e == AD_OK)
        e = migrate_store(cfg, stdout, err, sizeof(err));
    datadir_unlock(lock_fd);
    if (e != AD_OK) {
        fprintf(stderr, "authd migrate: %s\n",
                err[0] ? err : ad_err_message(e));
        return e == AD_ECONFLICT ? 3 : e == AD_EBADREQ ? 2 : 1;
    }
    printf("data directory %s now uses the new store\n", cfg->data);
    return 0;
}

/* Checks the audit log's hash chain from the store itself (the daemon
 * may run: LMDB readers and PostgreSQL sessions do not disturb it). */
static int cmd_audit_verify(config *cfg)
{
    char err[512] = "";
    store *st = NULL;
    store_audit_check c;
    ad_err e;

    e = datadir_open_store(cfg, &st, err, sizeof(err));
    if (e == AD_OK)
        e = store_audit_verify(st, &c);
    store_close(st);
    if (e != AD_OK) {
        fprintf(stderr, "authd audit verify: %s\n",
                err[0] ? err : ad_err_message(e));
        return 2;
    }
    if (!c.ok) {
        printf("{\"ok\":false,\"first_bad\":%llu}\n",
               (unsigned long long)c.first_bad);
        return 1;
    }
    printf("{\"ok\":true,\"entries\":%llu,\"unchained\":%llu,"
           "\"head\":\"%s\"}\n",
           (unsigned long long)c.entries, (unsigned long long)c.unchained,
           c.head);
    return 0;
}

static int cmd_backup(config *cfg)
{
    char err[512] = "";
    ad_err e = backup_create(cfg, stdout, err, sizeof(err));

    if (e != AD_OK) {
        fprintf(stderr, "authd backup: %s\n", err[0] ? err : ad_err_message(e));
        return e == AD_EBADREQ ? 2 : 1;
    }
    return 0;
}

static int cmd_restore(config *cfg)
{
    char err[512] = "";
    ad_err e = backup_restore(cfg, stdout, err, sizeof(err));

    if (e != AD_OK) {
        fprintf(stderr, "authd restore: %s\n",
                err[0] ? err : ad_err_message(e));
        return e == AD_ECONFLICT ? 3 : e == AD_EBADREQ ? 2 : 1;
    }
    printf("data directory %s is restored; start authd serve on it\n",
           cfg->data);
    return 0;
}

static int cmd_admin_key(config *cfg)
{
    char err[512] = "";
    store *st = NULL;
    json_t *view = NULL;
    ad_err e;

    e = datadir_open_store(cfg, &st, err, sizeof(err));
    if (e == AD_OK)
        e = registry_apikey_create(st, "cli:admin-key", cfg->name, cfg->role,
                                   &view, err, sizeof(err));
    store_close(st);
    if (e != AD_OK) {
        fprintf(stderr, "authd admin-key: %s\n",
                err[0] ? err : ad_err_message(e));
        return e == AD_EFIELD ? 2 : 1;
    }
    /* The key itself goes to stdout only, for the operator to keep. */
    printf("%s\n", json_string_value(json_object_get(view, "key")));
    fprintf(stderr, "created API key id=%s name=%s role=%s\n",
            json_string_value(json_object_get(view, "id")), cfg->name,
            cfg->role);
    json_decref(view);
    return 0;
}

static int cmd_serve(config *cfg, int argc, char **argv)
{
    app a;
    http_server *srv = NULL;
    coaps_server *coaps = NULL;
    rl *limits = NULL;
    rl_config rc_limits;
    int lock_fd = -1;
    const http_route *routes;
    size_t nroutes;
    sigset_t sigs;
    char err[512] = "";
    int sig, rc = 1, fresh = 0;
    ad_err e;

    memset(&a, 0, sizeof(a));
    a.cfg = *cfg;
    atomic_store(&a.cert_days, cfg->cert_days);
    atomic_store(&a.server_cert_days, cfg->server_cert_days);

    /* Signals are taken by sigwait below; every thread started from here
     * on inherits this mask. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* The lock comes first: two daemons initialising one empty dir
     * would each make a CA. */
    e = datadir_lock(cfg->data, &lock_fd, err, sizeof(err));
    if (e == AD_OK) {
        /* Known before init fills the dir: only the start that created
         * it prints the summary below. */
        fresh = datadir_is_fresh(cfg);
        e = datadir_init(cfg, NULL, err, sizeof(err));
    }
    if (e == AD_OK)
        e = datadir_check_permissions(cfg->data, err, sizeof(err));
    if (e == AD_OK)
        e = datadir_load(&a, err, sizeof(err));
    /* A store from before the reference indexes gets them once. */
    if (e == AD_OK && (e = registry_refs_build(a.st)) != AD_OK)
        snprintf(err, sizeof(err), "building the reference indexes failed");
    if (e != AD_OK) {
        log_line("error", "event=start_failed code=%s message=\"%s\"",
                 ad_err_code(e), err[0] ? err : ad_err_message(e));
        datadir_unlock(lock_fd);
        return 1;
    }
    memset(&rc_limits, 0, sizeof(rc_limits));
    rc_limits.fail_window_s = (unsigned)cfg->rate_fail_window;
    rc_limits.device_burst = (unsigned)cfg->rate_fail_burst;
    rc_limits.source_burst = (unsigned)cfg->rate_source_burst;
    rc_limits.backoff_max_s = (unsigned)cfg->rate_backoff_max;
    rc_limits.table_size = (size_t)cfg->rate_table_size;
    rc_limits.parallel = (unsigned)cfg->argon2_parallel;
    e = rl_open(&rc_limits, &limits);
    if (e == AD_OK) {
        checker_opts co;

        co.ttl = cfg->check_ttl;
        co.trust_cn_only = (int)cfg->trust_cn_only;
        co.cache_bytes = (size_t)cfg->cache_memory_mb << 20;
        e = checker_open(a.st, &co, &a.checker);
    }
    if (e == AD_OK) {
        char dir[CONFIG_STR_MAX + 16], seal[CONFIG_STR_MAX + 16];
        tokens_config tc;

        snprintf(dir, sizeof(dir), "%s/tokens", cfg->data);
        snprintf(seal, sizeof(seal), "%s/seal.key", cfg->data);
        tc.dir = dir;
        tc.seal_key = seal;
        tc.issuer = cfg->token_issuer[0] ? cfg->token_issuer
                    : cfg->public_url[0] ? cfg->public_url
                                         : "authd";
        tc.audience = cfg->token_audience;
        tc.ttl = cfg->token_ttl;
        e = tokens_open(&tc, a.st, &a.tokens, err, sizeof(err));
    }
    if (e != AD_OK) {
        log_line("error", "event=start_failed code=%s message=\"%s\"",
                 ad_err_code(e), err);
        goto out;
    }
    checker_set_tokens(a.checker, a.tokens);
    checker_set_limits(a.checker, limits);
    e = events_open(4096, a.st, &a.events);
    if (e == AD_OK)
        e = revocation_open(a.st, a.ca, a.checker, cfg->crl_hours,
                            &a.revocation, err, sizeof(err));
    if (e != AD_OK) {
        log_line("error", "event=start_failed code=%s message=\"%s\"",
                 ad_err_code(e), err);
        goto out;
    }
    /* From here on every committed change, this node's or another's,
     * reaches the caches, the CRL and the event stream; what changed
     * while they were being opened is caught up once. */
    store_watch(a.st, changes_apply, &a);
    changes_catch_up(&a);
    routes = routes_table(&nroutes);
    e = http_start(&a, limits, routes, nroutes, &srv, err, sizeof(err));
    if (e != AD_OK) {
        log_line("error", "event=start_failed code=%s message=\"%s\"",
                 ad_err_code(e), err);
        goto out;
    }
    if (strcmp(cfg->coaps, "off") != 0) {
        coaps_limits cl;

        cl.max_sessions = (unsigned)cfg->coaps_max_sessions;
        cl.max_handshakes = (unsigned)cfg->coaps_max_handshakes;
        e = coaps_start(&a, cfg->coaps, &cl, &coaps, err, sizeof(err));
        if (e != AD_OK) {
            log_line("error", "event=start_failed code=%s message=\"%s\"",
                     ad_err_code(e), err);
            goto out;
        }
    }
    log_line("info",
             "event=started data=%s http=%s https=%s check=%s coaps=%s "
             "public_url=%s",
             cfg->data, cfg->http, cfg->https,
             cfg->check_socket[0] ? cfg->check_socket : cfg->check_http,
             cfg->coaps, cfg->public_url[0] ? cfg->public_url : "-");
    /* Written before /readyz says ready, so that whoever waits for
     * readiness (a script, systemd, a test) finds the summary complete. */
    if (fresh)
        datadir_summary(cfg, stderr);
    atomic_store(&a.ready, 1);

    for (unsigned ticks = 1;; ticks++) {
        /* Wake every second: caches that the change feed no longer keeps
         * exact expire (changes_tick); every 15 s, SSE keep-alives (which
         * also find dead event streams) and the CRL's refresh before it
         * grows stale. */
        struct timespec tick = {1, 0};
        sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig < 0) {
            changes_tick(&a, time(NULL));
            if (ticks % 15 == 0) {
                events_keepalive(a.events);
                revocation_tick(a.revocation, time(NULL));
            }
            continue;
        }
        if (sig == SIGHUP) {
            config reloaded;
            e = config_reload(&reloaded, argc, argv, err, sizeof(err));
            if (e != AD_OK) {
                log_line("warn", "event=reload_failed message=\"%s\"", err);
                continue;
            }
            /* Listeners and paths need a restart; lifetimes apply now,
             * and policies are compiled afresh from the store. */
            atomic_store(&a.cert_days, reloaded.cert_days);
            atomic_store(&a.server_cert_days, reloaded.server_cert_days);
            checker_forget_policies(a.checker);
            log_line("info", "event=reloaded cert_days=%ld",
                     reloaded.cert_days);
            continue;
        }
        log_line("info", "event=stopping signal=%s",
                 sig == SIGTERM ? "TERM" : "INT");
        break;
    }
    atomic_store(&a.ready, 0);
    rc = 0;
out:
    /* Event streams end first, or their connections would hold the
     * listeners open. */
    events_shutdown(a.events);
    coaps_stop(coaps);
    http_stop(srv, 10000);
    /* No change may reach the parts closed below. */
    if (a.st)
        store_watch(a.st, NULL, NULL);
    events_close(a.events);
    revocation_close(a.revocation);
    checker_close(a.checker);
    tokens_close(a.tokens);
    rl_close(limits);
    datadir_unload(&a);
    datadir_unlock(lock_fd);
    if (rc == 0)
        log_line("info", "event=stopped");
    return rc;
}

int main(int argc, char **argv)
{
    config cfg;
    char err[512] = "";
    const char *cmd;
    int rc;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("authd %s\n", AD_VERSION);
        return 0;
    }
    cmd = argv[1];
    /* "audit verify": one command of two words. */
    if (strcmp(cmd, "audit") == 0) {
        if (argc < 3 || strcmp(argv[2], "verify") != 0) {
            fprintf(stderr, "authd audit: the command is `audit verify`\n%s",
                    usage);
            return 2;
        }
        argv++;
        argc--;
    }
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "init") != 0 &&
        strcmp(cmd, "join") != 0 && strcmp(cmd, "admin-key") != 0 &&
        strcmp(cmd, "migrate") != 0 && strcmp(cmd, "audit") != 0 &&
        strcmp(cmd, "backup") != 0 && strcmp(cmd, "restore") != 0) {
        fprintf(stderr, "authd: unknown command %s\n%s", cmd, usage);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
    if (config_load(&cfg, argc - 2, argv + 2, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "authd %s: %s\n%s", cmd, err, usage);
        return 2;
    }
    if (ca_global_init() != AD_OK) {
        fprintf(stderr, "authd: cannot initialise OpenSSL\n");
        return 1;
    }
    if (strcmp(cmd, "init") == 0)
        rc = cmd_init(&cfg);
    else if (strcmp(cmd, "join") == 0)
        rc = cmd_join(&cfg);
    else if (strcmp(cmd, "admin-key") == 0)
        rc = cmd_admin_key(&cfg);
    else if (strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(&cfg);
    else if (strcmp(cmd, "audit") == 0)
        rc = cmd_audit_verify(&cfg);
    else if (strcmp(cmd, "backup") == 0)
        rc = cmd_backup(&cfg);
    else if (strcmp(cmd, "restore") == 0)
        rc = cmd_restore(&cfg);
    else
        rc = cmd_serve(&cfg, argc - 2, argv + 2);
    OPENSSL_cleanup();
    return rc;
}
