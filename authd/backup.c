/* See backup.h. The archive is written and read here with a small ustar
 * writer and a strict reader that accepts only the members a backup
 * holds, so a crafted file cannot write outside the data dir. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup.h"
#include "datadir.h"
#include "store.h"
#include "util.h"

#define PATH_MAX_LEN 1024
#define BLOCK 512
/* The ustar size field holds 11 octal digits. */
#define MEMBER_MAX ((UINT64_C(1) << 33) - 1)
/* Every member but the registry is a key, a certificate or a URL. */
#define SMALL_MEMBER_MAX (UINT64_C(1) << 20)
#define MANIFEST "authd-backup"
#define MANIFEST_LINE "authd-backup 1\n"
#define STORE_MEMBER "store/data.mdb"

/* out = a/b; 0 if that does not fit. */
static int path_of(char *out, const char *a, const char *b)
{
    return (size_t)snprintf(out, PATH_MAX_LEN, "%s/%s", a, b) < PATH_MAX_LEN;
}

/* ---- writing ---------------------------------------------------------- */

static void octal(char *field, size_t width, uint64_t v)
{
    /* width-1 digits and a NUL, as ustar writers do. */
    field[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0;) {
        field[i] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

static unsigned checksum(const unsigned char *h)
{
    unsigned sum = 0;

    for (size_t i = 0; i < BLOCK; i++)
        sum += (i >= 148 && i < 156) ? ' ' : h[i];
    return sum;
}

static ad_err put_header(FILE *f, const char *name, unsigned mode,
                         uint64_t size, char type, char *err, size_t errlen)
{
    unsigned char h[BLOCK];
    size_t n = strlen(name);

    if (n >= 100)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "name too long for the archive: %s", name);
    if (size > MEMBER_MAX)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "%s is larger than 8 GiB", name);
    memset(h, 0, sizeof(h));
    memcpy(h, name, n);
    octal((char *)h + 100, 8, mode);
    octal((char *)h + 108, 8, 0);
    octal((char *)h + 116, 8, 0);
    octal((char *)h + 124, 12, size);
    octal((char *)h + 136, 12, (uint64_t)time(NULL));
    h[156] = (unsigned char)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    octal((char *)h + 148, 7, checksum(h));
    h[155] = ' ';
    if (fwrite(h, 1, BLOCK, f) != BLOCK)
        return ad_errf(AD_EINTERNAL, err, errlen, "write failed: %s",
                       strerror(errno));
    return AD_OK;
}

static ad_err put_padding(FILE *f, uint64_t size, char *err, size_t errlen)
{
    static const unsigned char zero[BLOCK];
    size_t pad = (size_t)((BLOCK - size % BLOCK) % BLOCK);

    if (pad && fwrite(zero, 1, pad, f) != pad)
        return ad_errf(AD_EINTERNAL, err, errlen, "write failed: %s",
                       strerror(errno));
    return AD_OK;
}

static ad_err put_bytes(FILE *f, const char *name, const void *data,
                        size_t len, char *err, size_t errlen)
{
    ad_err e = put_header(f, name, 0600, len, '0', err, errlen);

    if (e == AD_OK && len && fwrite(data, 1, len, f) != len)
        e = ad_errf(AD_EINTERNAL, err, errlen, "write failed: %s",
                    strerror(errno));
    if (e == AD_OK)
        e = put_padding(f, len, err, errlen);
    return e;
}

/* Copies the regular file at path into the archive as name. */
static ad_err put_file(FILE *f, const char *path, const char *name,
                       char *err, size_t errlen)
{
    unsigned char chunk[65536];
    struct stat st;
    uint64_t left;
    int fd;
    ad_err e;

    if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return ad_errf(AD_EINTERNAL, err, errlen, "cannot open %s: %s",
                       path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ad_errf(AD_EINTERNAL, err, errlen,
                       "%s is not a regular file", path);
    }
    left = (uint64_t)st.st_size;
    e = put_header(f, name, (unsigned)(st.st_mode & 0700), left, '0', err,
                   errlen);
    while (e == AD_OK && left > 0) {
        size_t want = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);
        ssize_t got = read(fd, chunk, want);

        /* A file that shrank under us would leave the archive short. */
        if (got <= 0)
            e = ad_errf(AD_EINTERNAL, err, errlen,
                        "cannot read %s", path);
        else if (fwrite(chunk, 1, (size_t)got, f) != (size_t)got)
            e = ad_errf(AD_EINTERNAL, err, errlen, "write failed: %s",
                        strerror(errno));
        else
            left -= (uint64_t)got;
    }
    close(fd);
    if (e == AD_OK)
        e = put_padding(f, (uint64_t)st.st_size, err, errlen);
    return e;
}

/* ca/, tls/ or tokens/: the directory and every regular file in it. */
static ad_err put_dir(FILE *f, const char *data, const char *sub, char *err,
                      size_t errlen)
{
    char p[PATH_MAX_LEN], name[PATH_MAX_LEN];
    struct dirent *de;
    DIR *d;
    ad_err e;

    if ((size_t)snprintf(p, sizeof(p), "%s/%s", data, sub) >= sizeof(p))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    if ((d = opendir(p)) == NULL)
        return errno == ENOENT ? AD_OK
                               : ad_errf(AD_EINTERNAL, err, errlen,
                                         "cannot read %s: %s", p,
                                         strerror(errno));
    if ((size_t)snprintf(name, sizeof(name), "%s/", sub) >= sizeof(name))
        e = AD_EBADREQ;
    else
        e = put_header(f, name, 0700, 0, '5', err, errlen);
    while (e == AD_OK && (de = readdir(d)) != NULL) {
        char fp[PATH_MAX_LEN];
        struct stat st;

        if (de->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(fp, sizeof(fp), "%s/%s", p, de->d_name) >=
                sizeof(fp) ||
            (size_t)snprintf(name, sizeof(name), "%s/%s", sub, de->d_name) >=
                sizeof(name))
            continue;
        if (lstat(fp, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        e = put_file(f, fp, name, err, errlen);
    }
    closedir(d);
    return e;
}

/* Removes an LMDB directory this file created (data.mdb, lock.mdb). */
static void remove_lmdb_dir(const char *dir)
{
    char p[PATH_MAX_LEN];

    if ((size_t)snprintf(p, sizeof(p), "%s/data.mdb", dir) < sizeof(p))
        unlink(p);
    if ((size_t)snprintf(p, sizeof(p), "%s/lock.mdb", dir) < sizeof(p))
        unlink(p);
    rmdir(dir);
}

/* Copies the data dir's registry, from one snapshot, into a new LMDB
 * database in snap_dir. */
static ad_err snapshot_store(const config *cfg, const char *snap_dir,
                             store_backend *backend, FILE *log, char *err,
                             size_t errlen)
{
    char url[PATH_MAX_LEN + 8];
    store_options o;
    store_copy_counts n;
    store *from = NULL, *to = NULL;
    ad_err e;

    if ((e = datadir_open_store(cfg, &from, err, errlen)) != AD_OK)
        return e;
    *backend = store_backend_of(from);
    memset(&o, 0, sizeof(o));
    o.data_dir = snap_dir;
    o.map_mb = (size_t)cfg->map_mb;
    snprintf(url, sizeof(url), "lmdb:%s", snap_dir);
    e = store_open_url(url, &o, &to, err, errlen);
    if (e == AD_OK)
        e = store_copy(from, to, &n, err, errlen);
    if (e == AD_OK && log) {
        fprintf(log, "registry snapshot:");
        for (int i = 0; i < STORE_TABLE__COUNT; i++)
            fprintf(log, " %s=%" PRIu64, store_table_name((store_table)i),
                    n.records[i]);
        fprintf(log, " audit=%" PRIu64 " events=%" PRIu64 "\n", n.audit,
                n.events);
    }
    store_close(to);
    store_close(from);
    return e;
}

ad_err backup_create(const config *cfg, FILE *log, char *err, size_t errlen)
{
    static const char *const files[] = {"seal.key", "admin.key", "store.url"};
    static const char *const dirs[] = {"ca", "tls", "tokens"};
    char tmp[PATH_MAX_LEN], snap[PATH_MAX_LEN], p[PATH_MAX_LEN];
    char manifest[128];
    store_backend backend = STORE_BACKEND_LMDB;
    FILE *f = NULL;
    int fd = -1, have_tmp = 0, have_snap = 0;
    ad_err e = AD_OK;
    size_t i;

    if (cfg->out[0] == '\0')
        return ad_errf(AD_EBADREQ, err, errlen,
                       "--out FILE names the backup to write");
    if (!path_of(p, cfg->data, "ca/issuing.key") || access(p, F_OK) != 0)
        return ad_errf(AD_EBADREQ, err, errlen,
                       "%s is not an initialised data directory", cfg->data);
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", cfg->out) >=
            sizeof(tmp) ||
        (size_t)snprintf(snap, sizeof(snap), "%s.store-XXXXXX", cfg->out) >=
            sizeof(snap))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    /* mkstemp makes the file 0600, so keys never sit in a readable file,
     * not even for a moment. */
    if ((fd = mkstemp(tmp)) < 0)
        return ad_errf(AD_EINTERNAL, err, errlen,
                       "cannot create a file next to %s: %s",
                       cfg->out, strerror(errno));
    have_tmp = 1;
    if ((f = fdopen(fd, "wb")) == NULL) {
        close(fd);
        e = ad_errf(AD_ENOMEM, err, errlen, "fdopen failed");
        goto out;
    }
    if (mkdtemp(snap) == NULL) {
        e = ad_errf(AD_EINTERNAL, err, errlen,
                    "cannot create a directory next to %s: %s",
                    cfg->out, strerror(errno));
        goto out;
    }
    have_snap = 1;
    if ((e = snapshot_store(cfg, snap, &backend, log, err, errlen)) != AD_OK)
        goto out;
    snprintf(manifest, sizeof(manifest), MANIFEST_LINE "source_store=%s\n",
             backend == STORE_BACKEND_POSTGRES ? "postgres" : "lmdb");
    e = put_bytes(f, MANIFEST, manifest, strlen(manifest), err, errlen);
    for (i = 0; e == AD_OK && i < sizeof(dirs) / sizeof(dirs[0]); i++)
        e = put_dir(f, cfg->data, dirs[i], err, errlen);
    for (i = 0; e == AD_OK && i < sizeof(files) / sizeof(files[0]); i++) {
        if (path_of(p, cfg->data, files[i]) && access(p, F_OK) == 0)
            e = put_file(f, p, files[i], err, errlen);
    }
    if (e == AD_OK)
        e = put_header(f, "store/", 0700, 0, '5', err, errlen);
    if (e == AD_OK)
        e = path_of(p, snap, "data.mdb")
                ? put_file(f, p, STORE_MEMBER, err, errlen)
                : ad_errf(AD_EBADREQ, err, errlen, "path too long");
    if (e == AD_OK) {
        static const unsigned char end[2 * BLOCK];

        if (fwrite(end, 1, sizeof(end), f) != sizeof(end) || fflush(f) != 0 ||
            fsync(fileno(f)) != 0)
            e = ad_errf(AD_EINTERNAL, err, errlen, "write failed: %s",
                        strerror(errno));
    }
    if (fclose(f) != 0 && e == AD_OK)
        e = ad_errf(AD_EINTERNAL, err, errlen, "write failed: %s",
                    strerror(errno));
    f = NULL;
    if (e != AD_OK)
        goto out;
    if (rename(tmp, cfg->out) != 0) {
        e = ad_errf(AD_EINTERNAL, err, errlen, "cannot rename to %s: %s",
                    cfg->out, strerror(errno));
        goto out;
    }
    have_tmp = 0;
    if (log)
        fprintf(log, "wrote %s (mode 0600)%s\n", cfg->out,
                backend == STORE_BACKEND_POSTGRES
                    ? "; the registry was copied out of PostgreSQL"
                    : "");
out:
    if (f)
        fclose(f);
    if (have_tmp)
        unlink(tmp);
    if (have_snap)
        remove_lmdb_dir(snap);
    return e;
}

/* ---- reading ---------------------------------------------------------- */

static int read_octal(const unsigned char *field, size_t width, uint64_t *v)
{
    size_t i = 0;

    *v = 0;
    while (i < width && field[i] == ' ')
        i++;
    if (i == width || field[i] < '0' || field[i] > '7')
        return 0;
    for (; i < width && field[i] >= '0' && field[i] <= '7'; i++) {
        if (*v > (UINT64_MAX >> 3))
            return 0;
        *v = (*v << 3) | (uint64_t)(field[i] - '0');
    }
    return i == width || field[i] == '\0' || field[i] == ' ';
}

static int plain_name(const char *s)
{
    if (s[0] == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
              *s == '-'))
            return 0;
    return 1;
}

/* Whether name (without a trailing '/') is a member a backup holds: a
 * directory (is_dir) or a file. */
static int allowed_member(const char *name, int is_dir)
{
    static const char *const dirs[] = {"ca", "tls", "tokens", "store"};
    static const char *const files[] = {MANIFEST, "seal.key", "admin.key",
                                        "store.url", STORE_MEMBER};
    const char *slash = strchr(name, '/');
    size_t i;

    if (is_dir) {
        for (i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
            if (strcmp(name, dirs[i]) == 0)
                return 1;
        return 0;
    }
    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
        if (strcmp(name, files[i]) == 0)
            return 1;
    if (slash == NULL || strchr(slash + 1, '/') != NULL)
        return 0;
    for (i = 0; i < 3; i++)
        if ((size_t)(slash - name) == strlen(dirs[i]) &&
            strncmp(name, dirs[i], strlen(dirs[i])) == 0)
            return plain_name(slash + 1);
    return 0;
}

static int dir_is_empty(const char *dir)
{
    struct dirent *de;
    DIR *d = opendir(dir);
    int empty = 1;

    if (d == NULL)
        return errno == ENOENT;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            empty = 0;
    closedir(d);
    return empty;
}

/* Writes size bytes from the archive to DIR/name (created, never
 * replaced). Certificates are 0644, everything else 0600. */
static ad_err extract_file(FILE *f, const char *dir, const char *name,
                           uint64_t size, char *err, size_t errlen)
{
    unsigned char chunk[65536];
    char p[PATH_MAX_LEN];
    size_t n = strlen(name);
    unsigned mode = n > 4 && strcmp(name + n - 4, ".pem") == 0 ? 0644 : 0600;
    uint64_t left = size;
    int fd;
    ad_err e = AD_OK;

    if ((size_t)snprintf(p, sizeof(p), "%s/%s", dir, name) >= sizeof(p))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return ad_errf(AD_EINTERNAL, err, errlen, "cannot create %s: %s",
                       p, strerror(errno));
    while (e == AD_OK && left > 0) {
        size_t want = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);

        if (fread(chunk, 1, want, f) != want)
            e = ad_errf(AD_EBADREQ, err, errlen,
                        "the backup is cut short (it ends inside %s)", name);
        else if (write(fd, chunk, want) != (ssize_t)want)
            e = ad_errf(AD_EINTERNAL, err, errlen,
                        "cannot write %s: %s", p, strerror(errno));
        else
            left -= want;
    }
    if (e == AD_OK && fsync(fd) != 0)
        e = ad_errf(AD_EINTERNAL, err, errlen, "cannot write %s: %s",
                    p, strerror(errno));
    close(fd);
    if (e == AD_OK && size % BLOCK &&
        fseek(f, (long)(BLOCK - size % BLOCK), SEEK_CUR) != 0)
        e = ad_errf(AD_EBADREQ, err, errlen, "the backup is cut short");
    return e;
}

/* Unpacks every member into dir, checking each header and name. */
static ad_err extract_all(FILE *f, const char *dir, int *have_store,
                          char *err, size_t errlen)
{
    unsigned char h[BLOCK];
    int first = 1;

    *have_store = 0;
    for (;;) {
        char name[101];
        uint64_t size, sum;
        size_t n;
        int is_dir;
        ad_err e;

        if (fread(h, 1, BLOCK, f) != BLOCK)
            return ad_errf(AD_EBADREQ, err, errlen, "%s",
                           first ? "not an authd backup"
                                 : "the backup is cut short");
        for (n = 0; n < BLOCK && h[n] == 0; n++)
            ;
        if (n == BLOCK)
            break; /* the end-of-archive block */
        if (memcmp(h + 257, "ustar", 5) != 0 || !read_octal(h + 148, 8, &sum) ||
            sum != checksum(h) || !read_octal(h + 124, 12, &size) ||
            h[345] != 0)
            return ad_errf(AD_EBADREQ, err, errlen,
                           "%s", first ? "not an authd backup"
                                                : "a damaged archive header");
        memcpy(name, h, 100);
        name[100] = '\0';
        n = strlen(name);
        is_dir = h[156] == '5';
        if (is_dir && n > 0 && name[n - 1] == '/')
            name[--n] = '\0';
        if ((h[156] != '0' && h[156] != '\0' && !is_dir) ||
            !allowed_member(name, is_dir) || (is_dir && size != 0))
            return ad_errf(AD_EBADREQ, err, errlen,
                           "unexpected member \"%.100s\" in the backup",
                           name);
        if (first && strcmp(name, MANIFEST) != 0)
            return ad_errf(AD_EBADREQ, err, errlen,
                           "not an authd backup");
        if (!is_dir && strcmp(name, STORE_MEMBER) != 0 &&
            size > SMALL_MEMBER_MAX)
            return ad_errf(AD_EBADREQ, err, errlen,
                           "%s is implausibly large", name);
        if (first) {
            char text[256];

            if (size >= sizeof(text) || fread(text, 1, (size_t)size, f) != size)
                return ad_errf(AD_EBADREQ, err, errlen,
                               "not an authd backup");
            text[size] = '\0';
            if (strncmp(text, MANIFEST_LINE, strlen(MANIFEST_LINE)) != 0)
                return ad_errf(AD_EBADREQ, err, errlen,
                               "an unknown backup format");
            if (size % BLOCK &&
                fseek(f, (long)(BLOCK - size % BLOCK), SEEK_CUR) != 0)
                return ad_errf(AD_EBADREQ, err, errlen,
                               "the backup is cut short");
            first = 0;
            continue;
        }
        if (is_dir) {
            char p[PATH_MAX_LEN];

            if (!path_of(p, dir, name) ||
                (mkdir(p, 0700) != 0 && errno != EEXIST))
                return ad_errf(AD_EINTERNAL, err, errlen,
                               "cannot create %s: %s", p,
                               strerror(errno));
            continue;
        }
        if ((e = extract_file(f, dir, name, size, err, errlen)) != AD_OK)
            return e;
        if (strcmp(name, STORE_MEMBER) == 0)
            *have_store = 1;
    }
    if (first)
        return ad_errf(AD_EBADREQ, err, errlen, "not an authd backup");
    return AD_OK;
}

/* Moves the restored LMDB registry (DIR/store) into cfg->store. */
static ad_err restore_into(const config *cfg, FILE *log, char *err,
                           size_t errlen)
{
    char dir[PATH_MAX_LEN], url[PATH_MAX_LEN + 8];
    store_options o;
    store_copy_counts n;
    store *from = NULL, *to = NULL;
    ad_err e;

    if (!path_of(dir, cfg->data, "store"))
        return ad_errf(AD_EBADREQ, err, errlen, "path too long");
    snprintf(url, sizeof(url), "lmdb:%s", dir);
    memset(&o, 0, sizeof(o));
    o.data_dir = cfg->data;
    o.map_mb = (size_t)cfg->map_mb;
    e = store_open_url(url, &o, &from, err, errlen);
    if (e == AD_OK)
        e = store_open_url(cfg->store, &o, &to, err, errlen);
    if (e == AD_OK)
        e = store_copy(from, to, &n, err, errlen);
    store_close(to);
    store_close(from);
    if (e != AD_OK)
        return e;
    remove_lmdb_dir(dir);
    if (log)
        fprintf(log, "copied the registry into the store --store names\n");
    return datadir_remember_store(cfg->data, cfg->store, err, errlen);
}

ad_err backup_restore(const config *cfg, FILE *log, char *err, size_t errlen)
{
    FILE *f = NULL;
    int lock_fd = -1, have_store = 0;
    ad_err e;

    if (cfg->from[0] == '\0')
        return ad_errf(AD_EBADREQ, err, errlen,
                       "--from FILE names the backup to restore");
    if (!dir_is_empty(cfg->data))
        return ad_errf(AD_ECONFLICT, err, errlen,
                       "%s is not empty: restore only into a new data "
                       "directory",
                       cfg->data);
    if ((f = fopen(cfg->from, "rb")) == NULL)
        return ad_errf(AD_EBADREQ, err, errlen, "cannot open %s: %s",
                       cfg->from, strerror(errno));
    /* Creates DIR (0700) and keeps a daemon off it while it is filled. */
    if ((e = datadir_lock(cfg->data, &lock_fd, err, errlen)) != AD_OK)
        goto out;
    if ((e = extract_all(f, cfg->data, &have_store, err, errlen)) != AD_OK)
        goto out;
    if (!have_store) {
        e = ad_errf(AD_EBADREQ, err, errlen,
                    "the backup holds no registry");
        goto out;
    }
    if (cfg->store[0] && strcmp(cfg->store, "lmdb:") != 0) {
        e = restore_into(cfg, log, err, errlen);
    } else {
        /* The registry stays in DIR/store; a remembered URL of the
         * source (another database, another path) must not be used. */
        char p[PATH_MAX_LEN];

        if (path_of(p, cfg->data, "store.url"))
            unlink(p);
    }
    if (e == AD_OK)
        e = datadir_check_permissions(cfg->data, err, errlen);
out:
    fclose(f);
    datadir_unlock(lock_fd);
    if (e != AD_OK && err && errlen && lock_fd >= 0) {
        size_t used = strlen(err);

        snprintf(err + used, errlen - used,
                 " (%s may be partly filled: empty it before trying again)",
                 cfg->data);
    }
    return e;
}
