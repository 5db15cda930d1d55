/* An LD_PRELOAD shim that makes every flush to stable storage cost what it
 * costs on a cloud volume: fsync, fdatasync, msync (MS_SYNC),
 * sync_file_range and syncfs return only after the real call and a sleep
 * of FLUSH_DELAY_US microseconds (default 2000). A write through a file
 * descriptor opened with O_SYNC or O_DSYNC is a flush too (LMDB writes
 * its meta page that way unless MDB_NOMETASYNC or MDB_NOSYNC), so such
 * descriptors are remembered at open and their writes delayed the same.
 *
 *   LD_PRELOAD=build/tests/bench/libflushdelay.so FLUSH_DELAY_US=2000 cmd
 *
 * FLUSH_DELAY_DSYNC=0 leaves O_SYNC/O_DSYNC writes undelayed.
 * FLUSH_DELAY_LOG=1 counts the delayed calls by kind and prints the counts
 * to stderr at exit, to see what a program really calls. */
/* The build defines _GNU_SOURCE; _FILE_OFFSET_BITS=64 would rename open
 * and pwrite to their 64-bit twins, which are wrapped on their own. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* File descriptors below this are tracked for O_SYNC/O_DSYNC. */
#define FD_TRACK_MAX 65536

enum { K_FSYNC, K_FDATASYNC, K_MSYNC, K_SFR, K_SYNCFS, K_DSYNC_WRITE, K__N };
static const char *const kind_names[K__N] = {
    "fsync", "fdatasync", "msync", "sync_file_range", "syncfs",
    "O_DSYNC write",
};

static atomic_uchar sync_fds[FD_TRACK_MAX];
static atomic_ulong counts[K__N];
static long delay_us = -1;
static int log_counts;
static int delay_dsync = 1;

static void report(void)
{
    int i;

    for (i = 0; i < K__N; i++)
        fprintf(stderr, "flushdelay: %s %lu\n", kind_names[i],
                (unsigned long)atomic_load(&counts[i]));
}

__attribute__((constructor)) static void flushdelay_init(void)
{
    const char *v = getenv("FLUSH_DELAY_US");
    char *end = NULL;

    delay_us = 2000;
    if (v && *v) {
        long n = strtol(v, &end, 10);
        if (end && *end == '\0' && n >= 0 && n <= 10000000)
            delay_us = n;
    }
    /* FLUSH_DELAY_DSYNC=0: O_DSYNC writes are not delayed, as a shim
     * that only wraps the flush calls would do. */
    v = getenv("FLUSH_DELAY_DSYNC");
    delay_dsync = !(v && strcmp(v, "0") == 0);
    v = getenv("FLUSH_DELAY_LOG");
    log_counts = v && strcmp(v, "1") == 0;
    if (log_counts)
        atexit(report);
}

static void delay(int kind)
{
    struct timespec ts;
    int saved = errno;

    atomic_fetch_add(&counts[kind], 1);
    if (delay_us > 0) {
        ts.tv_sec = delay_us / 1000000;
        ts.tv_nsec = (delay_us % 1000000) * 1000;
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    errno = saved;
}

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);

    if (f == NULL) {
        fprintf(stderr, "flushdelay: no %s\n", name);
        abort();
    }
    return f;
}

/* Function pointers and object pointers may not be converted by a cast in
 * ISO C; copying the bytes is what dlsym's own manual page suggests. */
static void load(void *fp, size_t n, const char *name)
{
    void *p = real(name);

    memcpy(fp, &p, n);
}

static void track(int fd, int flags)
{
    if (fd >= 0 && fd < FD_TRACK_MAX && delay_dsync)
        atomic_store(&sync_fds[fd], (flags & (O_SYNC | O_DSYNC)) ? 1 : 0);
}

static int is_sync_fd(int fd)
{
    return fd >= 0 && fd < FD_TRACK_MAX && atomic_load(&sync_fds[fd]);
}

int fsync(int fd)
{
    static int (*f)(int);
    int rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "fsync");
    rc = f(fd);
    delay(K_FSYNC);
    return rc;
}

int fdatasync(int fd)
{
    static int (*f)(int);
    int rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "fdatasync");
    rc = f(fd);
    delay(K_FDATASYNC);
    return rc;
}

int msync(void *addr, size_t len, int flags)
{
    static int (*f)(void *, size_t, int);
    int rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "msync");
    rc = f(addr, len, flags);
    /* MS_ASYNC only schedules writeback; it is not a flush. */
    if (flags & MS_SYNC)
        delay(K_MSYNC);
    return rc;
}

int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
    static int (*f)(int, off64_t, off64_t, unsigned int);
    int rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "sync_file_range");
    rc = f(fd, off, n, flags);
    delay(K_SFR);
    return rc;
}

int syncfs(int fd)
{
    static int (*f)(int);
    int rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "syncfs");
    rc = f(fd);
    delay(K_SYNCFS);
    return rc;
}

/* ---- descriptors opened for synchronous writes ---------------------- */

/* O_TMPFILE includes O_DIRECTORY; test it whole. */
static mode_t mode_arg(int flags, va_list ap)
{
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        return (mode_t)va_arg(ap, int);
    return 0;
}

int open(const char *path, int flags, ...)
{
    static int (*f)(const char *, int, ...);
    va_list ap;
    mode_t mode;
    int fd;

    if (f == NULL)
        load((void *)&f, sizeof(f), "open");
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    fd = f(path, flags, mode);
    track(fd, flags);
    return fd;
}

int open64(const char *path, int flags, ...)
{
    static int (*f)(const char *, int, ...);
    va_list ap;
    mode_t mode;
    int fd;

    if (f == NULL)
        load((void *)&f, sizeof(f), "open64");
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    fd = f(path, flags, mode);
    track(fd, flags);
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
    static int (*f)(int, const char *, int, ...);
    va_list ap;
    mode_t mode;
    int fd;

    if (f == NULL)
        load((void *)&f, sizeof(f), "openat");
    va_start(ap, flags);
    mode = mode_arg(flags, ap);
    va_end(ap);
    fd = f(dirfd, path, flags, mode);
    track(fd, flags);
    return fd;
}

int close(int fd)
{
    static int (*f)(int);

    if (f == NULL)
        load((void *)&f, sizeof(f), "close");
    track(fd, 0);
    return f(fd);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*f)(int, const void *, size_t, off_t);
    ssize_t rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "pwrite");
    rc = f(fd, buf, n, off);
    if (is_sync_fd(fd))
        delay(K_DSYNC_WRITE);
    return rc;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    static ssize_t (*f)(int, const void *, size_t, off64_t);
    ssize_t rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "pwrite64");
    rc = f(fd, buf, n, off);
    if (is_sync_fd(fd))
        delay(K_DSYNC_WRITE);
    return rc;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*f)(int, const void *, size_t);
    ssize_t rc;

    if (f == NULL)
        load((void *)&f, sizeof(f), "write");
    rc = f(fd, buf, n);
    if (is_sync_fd(fd))
        delay(K_DSYNC_WRITE);
    return rc;
}
