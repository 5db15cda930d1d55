/* `authd backup` and `authd restore`: one file (a POSIX ustar archive,
 * mode 0600) that holds a data directory's keys and a consistent copy of
 * its registry, taken while the daemon serves.
 *
 * The registry is copied from one read snapshot of the store (an LMDB
 * read transaction, or a PostgreSQL REPEATABLE READ transaction) into a
 * fresh LMDB database, whatever the backend, so that every backup has the
 * same shape and can be restored onto either backend. The archive holds:
 *   authd-backup            "authd-backup 1" and the source backend
 *   ca/ tls/ tokens/        every regular file in them
 *   seal.key admin.key store.url   when present
 *   store/data.mdb          the registry snapshot (LMDB)
 * Members larger than 8 GiB are refused (the ustar size field). */
#ifndef AUTHD_BACKUP_H
#define AUTHD_BACKUP_H

#include <stdio.h>

#include "config.h"

/* Writes the backup of data dir cfg->data to cfg->out: built in a
 * temporary file next to it (mode 0600), flushed and renamed into place,
 * so cfg->out is either the old file or the whole new one. Takes no
 * lock: it runs beside a serving daemon. Writes what it copied to log
 * (may be NULL). On error cfg->out is unchanged. */
ad_err backup_create(const config *cfg, FILE *log, char *err, size_t errlen);

/* Restores the backup file cfg->from into data dir cfg->data, which must
 * be missing or empty (AD_ECONFLICT otherwise, nothing written). Keys
 * and secrets are written 0600, directories 0700. The registry goes to
 * DIR/store (LMDB), or, with cfg->store set, is copied into that store
 * (which must hold no devices or certificates) and remembered in
 * DIR/store.url. Holds DIR/lock while it writes. On error DIR may be
 * partly filled (the message says so). */
ad_err backup_restore(const config *cfg, FILE *log, char *err,
                      size_t errlen);

#endif
