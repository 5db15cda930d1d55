/* `authd migrate`: moves a data dir's registry into another store (an
 * LMDB registry into PostgreSQL, when a fleet outgrows one node), offline,
 * and proves the copy by counting both sides independently of the copy. */
#ifndef AUTHD_MIGRATE_H
#define AUTHD_MIGRATE_H

#include <stdio.h>

#include "config.h"

/* Copies the store cfg->data uses (cfg->store, else what the data dir
 * remembers) into cfg->to, which must hold no devices or certificates
 * yet; counts every table, the audit log and the event log on both
 * sides, and only when they agree makes the data dir remember cfg->to.
 * Writes a count per table to out. The caller holds the data dir's
 * lock. Errors: AD_ECONFLICT (destination not empty), AD_ESTORE
 * (including counts that differ), AD_EBADREQ (no destination). */
ad_err migrate_store(const config *cfg, FILE *out, char *err, size_t errlen);

#endif
