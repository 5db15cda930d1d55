/* Local key material for authctl: P-256 keys and CSRs made on this
 * machine (private keys never go over the network), and the files they
 * are written to, each replaced atomically. */
#ifndef AUTHCTL_PKI_H
#define AUTHCTL_PKI_H

#include <stddef.h>
#include <sys/types.h>

/* Makes a SHA-256-signed CSR with subject CN=cn for the PEM private key
 * key_in, or for a new P-256 key when key_in is NULL. On success returns
 * 0 and hands over two malloc'd PEM strings: the key (PKCS#8; free it
 * with pki_free_secret) and the CSR. On failure returns -1 with a
 * message in err and both out-params NULL. */
int pki_key_and_csr(const char *cn, const char *key_in, char **key_pem,
                    char **csr_pem, char *err, size_t errlen);

/* Reads a whole file of at most max bytes into a malloc'd NUL-terminated
 * string ("-" is stdin). Returns 0, or -1 with a message in err and *out
 * NULL. */
int pki_read_file(const char *path, size_t max, char **out, size_t *len,
                  char *err, size_t errlen);

/* Wipes and frees a secret string; accepts NULL. */
void pki_free_secret(char *s);

/* Writes len bytes to path through a temporary file in the same
 * directory (created with mode, synced, then renamed over path, and the
 * directory synced), so path is either the old file or the whole new
 * one. Returns 0, or -1 with a message in err; on failure path is left
 * as it was and the temporary file is removed. */
int pki_write_file(const char *path, const void *data, size_t len,
                   mode_t mode, char *err, size_t errlen);

/* Creates directory path with mode unless it is already a directory.
 * 0, or -1 with a message in err. */
int pki_mkdir(const char *path, mode_t mode, char *err, size_t errlen);

/* Whether path exists (as anything). */
int pki_exists(const char *path);

#endif
