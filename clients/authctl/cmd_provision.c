/* authctl provision: the factory-station batch. For each id <prefix><n>
 * it makes a key here, enrolls a CSR with the enrollment token and
 * writes DIR/<id>/{key.pem,chain.pem,cert.pem}. key.pem is written before
 * the request, so a certificate is never issued for a key that is not on
 * disk, and cert.pem last, so a directory with cert.pem is complete: a
 * rerun skips those and reuses the key of any that are not. A few worker
 * threads, each with its own connection, enroll in parallel. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "pki.h"

enum {
    ID_MAX = 128,
    DIR_MAX = 3072,
    COUNT_MAX = 1000000,
    WORKERS_MAX = 16,
    KEY_MAX = 16 * 1024,
    BAR_WIDTH = 30
};

typedef struct batch {
    const api *base;
    const char *token, *prefix, *dir;
    long start, count, width;
    int tty;

    pthread_mutex_t mu; /* guards everything below */
    long next;          /* index of the next device to hand out */
    int stop;           /* a failure: hand out no more */
    long enrolled, skipped, failed;
    int worst;          /* CTL_FAILED or CTL_UNREACHABLE once one failed */
    json_t *failures;   /* [{"device_id","error"}] */
} batch;

/* Set by SIGINT/SIGTERM: hand out no more devices, but let the requests
 * in flight finish, so every key on disk whose request was answered has
 * its certificate. Lock-free, so the handler may store to it. */
static atomic_int interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    atomic_store(&interrupted, 1);
}

static int id_char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == ':' ||
           ch == '-';
}

static void make_id(const batch *b, long i, char *id, size_t len)
{
    snprintf(id, len, "%s%0*ld", b->prefix, (int)b->width, b->start + i);
}

/* Redraws the progress bar (tty) or prints one line per device. Called
 * with b->mu held. */
static void report(batch *b, const char *id, const char *what,
                   const char *detail)
{
    long done = b->enrolled + b->skipped + b->failed;
    int fill = (int)(done * BAR_WIDTH / b->count), i;

    if (!b->tty || strcmp(what, "failed") == 0)
        fprintf(stderr, "%s%s: %s%s%s\n", b->tty ? "\r\033[K" : "", id, what,
                detail ? ": " : "", detail ? detail : "");
    if (b->tty) {
        fputs("\r[", stderr);
        for (i = 0; i < BAR_WIDTH; i++)
            fputc(i < fill ? '#' : '.', stderr);
        fprintf(stderr, "] %ld/%ld  enrolled %ld  skipped %ld  failed %ld",
                done, b->count, b->enrolled, b->skipped, b->failed);
    }
}

static void fail(batch *b, const char *id, int rc, const char *msg)
{
    pthread_mutex_lock(&b->mu);
    b->failed++;
    b->stop = 1;
    if (rc == CTL_UNREACHABLE || b->worst == CTL_OK)
        b->worst = rc;
    json_array_append_new(b->failures, json_pack("{s:s, s:s}", "device_id",
                                                 id, "error", msg));
    report(b, id, "failed", msg);
    pthread_mutex_unlock(&b->mu);
}

/* Provisions one device and reports it. Returns CTL_OK (enrolled or
 * skipped) or the failure it reported. */
static int one(batch *b, api *conn, const char *id)
{
    char dir[DIR_MAX + ID_MAX + 2], path[sizeof(dir) + 16], err[640] = "";
    char *key = NULL, *old = NULL, *csr = NULL, *text = NULL;
    const json_t *cert, *chain;
    json_t *body = NULL, *j = NULL;
    json_error_t jerr;
    api_resp r = {0, NULL, 0};
    size_t len;
    int rc = CTL_FAILED, skipped = 0;

    snprintf(dir, sizeof(dir), "%s/%s", b->dir, id);
    snprintf(path, sizeof(path), "%s/cert.pem", dir);
    if (pki_exists(path)) {
        skipped = 1;
        rc = CTL_OK;
        goto out;
    }
    if (pki_mkdir(dir, 0755, err, sizeof(err)) != 0)
        goto out;
    /* A key left by an interrupted run may already have a certificate
     * on the server; reusing it keeps one key per device. An unreadable
     * one is replaced. */
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    if (!pki_exists(path) ||
        pki_read_file(path, KEY_MAX, &old, &len, err, sizeof(err)) != 0 ||
        pki_key_and_csr(id, old, &key, &csr, err, sizeof(err)) != 0) {
        if (pki_key_and_csr(id, NULL, &key, &csr, err, sizeof(err)) != 0 ||
            pki_write_file(path, key, strlen(key), 0600, err,
                           sizeof(err)) != 0)
            goto out;
    }
    body = json_pack("{s:s, s:s}", "csr", csr, "device_id", id);
    if (body == NULL || (text = json_dumps(body, JSON_COMPACT)) == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto out;
    }
    rc = api_raw(conn, "POST", "/v1/enroll", "application/json", text,
                 strlen(text), &r);
    if (rc != CTL_OK) {
        snprintf(err, sizeof(err), rc == CTL_UNREACHABLE
                                       ? "cannot reach the server"
                                       : "no usable answer");
        goto out;
    }
    rc = CTL_FAILED;
    if (r.status < 200 || r.status > 299) {
        api_error_message(&r, err, sizeof(err));
        goto out;
    }
    if ((j = json_loadb(r.body, r.len, 0, &jerr)) == NULL) {
        snprintf(err, sizeof(err), "the answer is not JSON: %s", jerr.text);
        goto out;
    }
    cert = json_object_get(j, "certificate");
    chain = json_object_get(j, "chain");
    if (!json_is_string(cert) || !json_is_string(chain)) {
        snprintf(err, sizeof(err), "the answer has no certificate or chain");
        goto out;
    }
    /* key.pem is already there; cert.pem goes last. */
    snprintf(path, sizeof(path), "%s/chain.pem", dir);
    if (pki_write_file(path, json_string_value(chain),
                       json_string_length(chain), 0644, err,
                       sizeof(err)) != 0)
        goto out;
    snprintf(path, sizeof(path), "%s/cert.pem", dir);
    if (pki_write_file(path, json_string_value(cert),
                       json_string_length(cert), 0644, err, sizeof(err)) != 0)
        goto out;
    rc = CTL_OK;
out:
    if (rc != CTL_OK) {
        fail(b, id, rc, err[0] ? err : "failed");
    } else {
        pthread_mutex_lock(&b->mu);
        if (skipped)
            b->skipped++;
        else
            b->enrolled++;
        report(b, id, skipped ? "skipped (cert.pem exists)" : "enrolled",
               NULL);
        pthread_mutex_unlock(&b->mu);
    }
    api_resp_clear(&r);
    pki_free_secret(key);
    pki_free_secret(old);
    free(csr);
    free(text);
    json_decref(body);
    json_decref(j);
    return rc;
}

static void *worker(void *arg)
{
    batch *b = arg;
    api *conn = NULL;
    char id[ID_MAX + 1], err[256];

    if (api_clone(b->base, b->token, &conn, err, sizeof(err)) != 0) {
        fail(b, "-", CTL_FAILED, err);
        return NULL;
    }
    for (;;) {
        long i;

        pthread_mutex_lock(&b->mu);
        i = b->stop || atomic_load(&interrupted) || b->next >= b->count
                ? -1
                : b->next++;
        pthread_mutex_unlock(&b->mu);
        if (i < 0)
            break;
        make_id(b, i, id, sizeof(id));
        one(b, conn, id);
    }
    api_close(conn);
    return NULL;
}

static const args_opt provision_opts[] = {
    {"enrollment-token", ARG_VALUE, "T",
     "the enrollment's token (env AUTHD_ENROLLMENT_TOKEN)"},
    {"count", ARG_VALUE, "N", "how many devices"},
    {"prefix", ARG_VALUE, "P", "device ids are P<number>"},
    {"start", ARG_VALUE, "N", "the first number (default 1)"},
    {"width", ARG_VALUE, "W", "zero-pad numbers to W digits (default 0)"},
    {"out", ARG_VALUE, "DIR", "where each DIR/<id>/ goes"},
    {"parallel", ARG_VALUE, "N", "requests in flight, 1..16 (default 4)"},
    {NULL, 0, NULL, NULL},
};

static int provision(ctl *c, const args *a)
{
    pthread_t th[WORKERS_MAX];
    struct sigaction sa, old_int, old_term;
    sigset_t block, old_mask;
    batch b;
    char err[256], first[ID_MAX + 64], last[ID_MAX + 64];
    long nworkers, i, started = 0;
    const char *p;
    json_t *summary;
    int rc;

    memset(&b, 0, sizeof(b));
    b.base = c->api;
    b.token = args_get(a, "enrollment-token");
    if (b.token == NULL)
        b.token = getenv("AUTHD_ENROLLMENT_TOKEN");
    b.prefix = args_get(a, "prefix");
    b.dir = args_get(a, "out");
    if (b.token == NULL || *b.token == '\0' || b.prefix == NULL ||
        b.dir == NULL || !args_has(a, "count"))
        return ctl_usage(a, "--enrollment-token, --count, --prefix and --out "
                            "are required");
    if (args_long(a, "count", 1, COUNT_MAX, 0, &b.count, err, sizeof(err)) ||
        args_long(a, "start", 0, 999999999999L, 1, &b.start, err,
                  sizeof(err)) ||
        args_long(a, "width", 0, 20, 0, &b.width, err, sizeof(err)) ||
        args_long(a, "parallel", 1, WORKERS_MAX, 4, &nworkers, err,
                  sizeof(err)))
        return ctl_usage(a, "%s", err);
    if (strlen(b.dir) > DIR_MAX)
        return ctl_usage(a, "--out is too long");
    /* Ids become directory names: only id characters, so no '/'. */
    for (p = b.prefix; *p; p++)
        if (!id_char(*p))
            return ctl_usage(a, "--prefix may hold only [A-Za-z0-9._:-]");
    make_id(&b, 0, first, sizeof(first));
    make_id(&b, b.count - 1, last, sizeof(last));
    if (strlen(last) > ID_MAX || strlen(first) > ID_MAX)
        return ctl_usage(a, "device ids would be longer than %d bytes",
                         ID_MAX);
    if (pki_mkdir(b.dir, 0755, err, sizeof(err)) != 0)
        return ctl_fail("%s", err);
    if ((b.failures = json_array()) == NULL)
        return ctl_fail("out of memory");
    b.tty = isatty(2);
    b.worst = CTL_OK;
    pthread_mutex_init(&b.mu, NULL);
    if (nworkers > b.count)
        nworkers = b.count;
    /* Ctrl-C stops handing out devices; a second one (SA_RESETHAND)
     * kills as usual. The workers block the signals, so only this
     * thread, waiting in pthread_join, takes them and no request in
     * flight is cut. */
    atomic_store(&interrupted, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old_mask);
    for (i = 0; i < nworkers; i++) {
        if (pthread_create(&th[i], NULL, worker, &b) != 0)
            break;
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (started == 0)
        worker(&b);
    for (i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (b.tty)
        fputc('\n', stderr);
    rc = b.worst;
    if (atomic_load(&interrupted)) {
        fprintf(stderr, "authctl: interrupted: the requests in flight were "
                        "finished; run the same command again to go on\n");
        if (rc == CTL_OK)
            rc = CTL_FAILED;
    }
    if (c->json) {
        summary = json_pack("{s:s, s:I, s:I, s:I, s:I, s:O}", "out", b.dir,
                            "enrolled", (json_int_t)b.enrolled, "skipped",
                            (json_int_t)b.skipped, "failed",
                            (json_int_t)b.failed, "not_attempted",
                            (json_int_t)(b.count - b.enrolled - b.skipped -
                                         b.failed),
                            "failures", b.failures);
        out_json(summary);
        json_decref(summary);
    } else {
        printf("enrolled %ld, skipped %ld, failed %ld, not attempted %ld "
               "(%s .. %s in %s)\n",
               b.enrolled, b.skipped, b.failed,
               b.count - b.enrolled - b.skipped - b.failed, first, last,
               b.dir);
    }
    pthread_mutex_destroy(&b.mu);
    json_decref(b.failures);
    return rc;
}

static const ctl_cmd cmds[] = {
    {"provision", NULL,
     "--enrollment-token T --count N --prefix P [--start 1] [--width W] "
     "--out DIR [--parallel N]",
     "Factory batch: makes keys here and enrolls them, writing "
     "DIR/<id>/{key.pem,cert.pem,chain.pem}.",
     "Ids are <prefix><number> from --start. Keys (0600) never leave this "
     "machine. Resumable: ids whose DIR/<id>/cert.pem exists are skipped, "
     "and an interrupted id reuses its key.pem. The first failure stops "
     "the batch (requests in flight finish). Progress goes to stderr: a bar "
     "on a terminal, else one line per device.",
     provision_opts, 0, 0, provision},
};

const ctl_cmd *cmd_provision_table(size_t *n)
{
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
