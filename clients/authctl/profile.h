/* authctl's profiles: named sets of (url, cacert, key_file) in
 * $XDG_CONFIG_HOME/authctl/config (else ~/.config/authctl/config), as
 * `authctl login` writes them:
 *
 *   [default]
 *   url = https://authd.example:8443
 *   cacert = /home/me/.config/authctl/default-ca.pem
 *   key_file = /home/me/authd-admin.key
 *
 * A profile fills in what neither a flag nor an AUTHD_* variable gave. */
#ifndef AUTHCTL_PROFILE_H
#define AUTHCTL_PROFILE_H

#include <stddef.h>

enum { PROFILE_STR_MAX = 1024, PROFILE_NAME_MAX = 64 };

typedef struct profile {
    char url[PROFILE_STR_MAX];      /* "" when unset */
    char cacert[PROFILE_STR_MAX];
    char key_file[PROFILE_STR_MAX];
} profile;

/* Whether name may name a profile: 1-64 of [A-Za-z0-9._-]. */
int profile_name_valid(const char *name);

/* dir/<file> of authctl's config directory into out. 0, or -1 (no HOME
 * and no XDG_CONFIG_HOME, or too long). */
int profile_path(char *out, size_t len, const char *file);

/* Creates authctl's config directory (0700) and its parent if missing.
 * 0, or -1 with a message in err. */
int profile_mkdir(char *err, size_t errlen);

/* Reads profile name into *out (zeroed first). Returns 1 if found, 0 if
 * the file or the profile is absent, -1 with a message in err if the
 * file cannot be read or is malformed. */
int profile_load(const char *name, profile *out, char *err, size_t errlen);

/* Writes profile name (its empty fields left out), keeping the file's
 * other profiles: atomically, mode 0600, creating the directory (0700).
 * 0, or -1 with a message in err and the file unchanged. */
int profile_save(const char *name, const profile *p, char *err,
                 size_t errlen);

#endif
