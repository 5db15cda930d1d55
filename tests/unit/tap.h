/* A minimal TAP producer for the unit suites (meson `protocol: 'tap'`):
 * ok(cond, "why it matters", ...) prints one test point, tap_done()
 * prints the plan and returns the exit status (non-zero if any point
 * failed). Header-only so that each unit test stays one file. */
#ifndef AUTHD_TAP_H
#define AUTHD_TAP_H

#include <stdarg.h>
#include <stdio.h>

static int tap_count, tap_failed;

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static inline int tap_ok(int cond, const char *file, int line,
                         const char *fmt, ...)
{
    va_list ap;

    tap_count++;
    if (!cond)
        tap_failed++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_count);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond)
        printf("#   failed at %s:%d\n", file, line);
    fflush(stdout);
    return cond;
}

/* ok(cond, fmt, ...): one test point; evaluates to cond. */
#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

/* Runs a test function, announcing it as a TAP comment. */
#define TAP_RUN(fn) (tap_diag("%s", #fn), fn())

/* Prints the trailing plan; use as `return tap_done();` from main. */
static inline int tap_done(void)
{
    printf("1..%d\n", tap_count);
    if (tap_failed > 0)
        tap_diag("%d of %d failed", tap_failed, tap_count);
    return tap_failed > 0 ? 1 : 0;
}

#endif
