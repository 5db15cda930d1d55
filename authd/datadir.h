/* The data directory: what `authd init` (or a first start) creates, the
 * permission check made before serving, and loading it into an app.
 *
 *   DIR/ca/{root,issuing}.{pem,key}, DIR/ca/chain.pem (issuing, root)
 *   DIR/tls/server.{pem,key}    the HTTPS listener's certificate
 *   DIR/seal.key                 the cluster's sealing key (32 bytes):
 *                                token-signing keys are in the store,
 *                                sealed with it (tokens.h)
 *   DIR/tokens/<kid>.key         token-signing keys of the older layout,
 *                                imported into the store on first start
 *   DIR/store/                   LMDB (with the store URL "lmdb:")
 *   DIR/store.url                the store URL init/join remembered
 *   DIR/admin.key                the first admin API key
 * Private keys, seal.key, store.url and admin.key are 0600, directories
 * 0700. */
#ifndef AUTHD_DATADIR_H
#define AUTHD_DATADIR_H

#include <stdio.h>

#include "app.h"

/* Creates whatever is missing in cfg->data (idempotent). With
 * cfg->ca_cert/ca_key set, imports that issuing CA instead of generating
 * one (refused if a CA already exists). If log is non-NULL, says what it
 * created there. */
ad_err datadir_init(const config *cfg, FILE *log, char *err, size_t errlen);

/* 1 if cfg->data has no CA yet, so that datadir_init would create one:
 * the first start, which datadir_summary then describes. */
int datadir_is_fresh(const config *cfg);

/* Prints for a person, on out, what a first start created: the paths of
 * the CA, the HTTPS certificate and admin.key (never the key itself), the
 * root CA's SHA-256 fingerprint, export lines for authctl, the next
 * command to run, and a warning if public_url is unset. Reads only. */
void datadir_summary(const config *cfg, FILE *out);

/* Prepares data dir cfg->data as another node of the cluster that the
 * node with data dir cfg->from belongs to: copies its CA (certificates
 * and keys), admin.key and seal.key, uses cfg->store or else the store
 * URL the source remembers (and remembers it), copies the sealed token
 * keys and the admin key's record into that store if it is not the
 * source's, checks that the token keys open, and issues this node its own
 * HTTPS certificate. AD_ECONFLICT if cfg->data already holds a CA. */
ad_err datadir_join(const config *cfg, FILE *log, char *err, size_t errlen);

/* The store URL for cfg: cfg->store if set, else what DIR/store.url
 * says, else "lmdb:". */
ad_err datadir_store_url(const config *cfg, char *out, size_t outlen,
                         char *err, size_t errlen);

/* Writes url to DIR/store.url (0600: it may carry a password), after
 * checking its scheme. For init, join and migrate. */
ad_err datadir_remember_store(const char *dir, const char *url, char *err,
                              size_t errlen);

/* Refuses (AD_EFORBIDDEN) if any private key or admin.key in dir is
 * readable or writable by group or others, or if DIR/ca, DIR/tls or
 * DIR/tokens is writable by group or others. */
ad_err datadir_check_permissions(const char *dir, char *err, size_t errlen);

/* Opens the store and the CA and reads the TLS material into a. On
 * error whatever was opened is closed again. */
ad_err datadir_load(app *a, char *err, size_t errlen);
/* Closes what datadir_load opened. */
void datadir_unload(app *a);

/* Takes DIR/lock (creating DIR if needed) so that one daemon serves a
 * data dir: AD_ECONFLICT, naming the lock and the holder's pid, if
 * another process holds it. *fd is the lock, held until
 * datadir_unlock(*fd); -1 on error. */
ad_err datadir_lock(const char *dir, int *fd, char *err, size_t errlen);
void datadir_unlock(int fd); /* accepts -1 */

/* Opens just the store of a data dir (for offline commands): the one
 * datadir_store_url names. */
ad_err datadir_open_store(const config *cfg, store **out, char *err,
                          size_t errlen);

#endif
