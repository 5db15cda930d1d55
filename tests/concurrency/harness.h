/* Shared scaffolding of the concurrency suite: a temporary data
 * directory, a time budget for the hammering loops, and starting and
 * joining a group of threads. Each test is one program that drives the
 * daemon's real modules from several threads; ThreadSanitizer (the
 * `tsan` test setup) turns any data race into a failure, and the
 * assertions check that no update was lost or answered wrongly. */
#ifndef AUTHD_TESTS_HARNESS_H
#define AUTHD_TESTS_HARNESS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../unit/tap.h"

/* Seconds each hammering phase runs (CONC_SECONDS overrides, 1..60).
 * Loops also stop at an iteration cap, so a slow sanitizer build takes
 * about as long as a plain one and a fast machine does not run away. */
static inline double conc_budget(void)
{
    const char *s = getenv("CONC_SECONDS");
    char *end = NULL;
    double v = 2.0;

    if (s != NULL && *s != '\0') {
        v = strtod(s, &end);
        if (end == s || *end != '\0' || v < 1.0 || v > 60.0)
            v = 2.0;
    }
    return v;
}

static inline double conc_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A deadline shared by the threads of one phase. */
typedef struct {
    double end;
} conc_deadline;

static inline conc_deadline conc_deadline_in(double seconds)
{
    conc_deadline d;

    d.end = conc_now() + seconds;
    return d;
}

static inline int conc_expired(const conc_deadline *d)
{
    return conc_now() >= d->end;
}

/* Makes a fresh directory under /tmp named after the test; 0 on success. */
static inline int conc_tmpdir(const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "/tmp/authd-conc-%s-XXXXXX", name);

    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return mkdtemp(out) != NULL ? 0 : -1;
}

static inline void conc_rmdir(const char *dir)
{
    char cmd[600];
    int n = snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);

    if (n > 0 && (size_t)n < sizeof(cmd) && strstr(dir, "/tmp/authd-conc-") ==
                                                 dir && system(cmd) == 0)
        return;
    tap_diag("could not remove %s", dir);
}

/* Runs fn(args + i * argsize) on n threads and joins them all. Returns
 * the number of threads that could not be started (0 is success). */
static inline int conc_run(size_t n, void *(*fn)(void *), void *args,
                           size_t argsize)
{
    enum { THREADS_MAX = 32 };
    pthread_t th[THREADS_MAX];
    size_t i, started = 0;

    if (n > THREADS_MAX)
        return (int)n;
    for (i = 0; i < n; i++) {
        if (pthread_create(&th[i], NULL, fn, (char *)args + i * argsize) != 0)
            break;
        started++;
    }
    for (i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    return (int)(n - started);
}

#endif
