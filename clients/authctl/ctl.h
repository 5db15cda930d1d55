/* What every authctl command shares: the exit statuses scripts rely on,
 * the context a command runs with, and the shape of the command table
 * that main() dispatches on and prints help from. */
#ifndef AUTHCTL_CTL_H
#define AUTHCTL_CTL_H

#include <stddef.h>

#include "api.h"
#include "args.h"
#include "out.h"

/* Exit statuses (documented in `authctl --help`). A local failure such as
 * an unwritable output directory counts as "the operation failed" (1). */
enum {
    CTL_OK = 0,
    CTL_FAILED = 1,      /* refused by the server, or a local failure */
    CTL_USAGE = 2,       /* bad command line */
    CTL_UNREACHABLE = 3  /* connection refused, TLS failure, timeout */
};

typedef struct ctl {
    api *api;          /* talks to the server with the admin credential */
    int json;          /* --json: print the server's JSON */
    long page_size;    /* items per list request */
    const char *profile; /* --profile, AUTHCTL_PROFILE or "default" */
} ctl;

typedef struct ctl_cmd {
    const char *group;   /* "device" */
    const char *name;    /* "add", or NULL for one-word commands */
    const char *usage;   /* the arguments after the command words */
    const char *summary; /* one line */
    const char *details; /* more help text, or NULL */
    const args_opt *opts;/* terminated by a {NULL} entry */
    int min_pos, max_pos;
    int (*run)(ctl *c, const args *a);
} ctl_cmd;

/* The command tables of each command module; *n is set to the count. */
const ctl_cmd *cmd_registry_table(size_t *n);
const ctl_cmd *cmd_pki_table(size_t *n);
const ctl_cmd *cmd_provision_table(size_t *n);
const ctl_cmd *cmd_login_table(size_t *n);

/* Prints "authctl: <message>" to stderr and returns CTL_USAGE, with a
 * pointer to the command's --help. */
int ctl_usage(const args *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prints "authctl: <message>" to stderr and returns CTL_FAILED. */
int ctl_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* Builds prefix + escaped segment + suffix into buf (API_PATH_MAX).
 * Returns 0, or -1 when it does not fit. */
int ctl_path(char *buf, size_t len, const char *prefix, const char *segment,
             const char *suffix);

/* Prints a record: its JSON with --json, else its fields but skip. */
void ctl_print(const ctl *c, const json_t *j, const char *const *skip);

/* Runs a list command: --limit from a (0: every page), the given start
 * cursor, then a table of cols or the JSON. Returns the exit status. */
int ctl_list(ctl *c, const args *a, const char *path, const char *after,
             const out_col *cols, size_t ncols);

/* Prints, for a device record, each name in its "policies" and "groups"
 * that the server does not have (a policy or group deleted with
 * ?force=true), as "policy NAME (missing)" lines to stdout. Returns how
 * many were missing, or -1 if the server could not be asked. */
int ctl_missing_names(ctl *c, const json_t *device);

/* Asks "<question> [y/N] " on stderr when stdin is a terminal and --yes
 * was not given: 1 to go on (also when stdin is no terminal, as scripts
 * expect), 0 when the answer is not y/yes. */
int ctl_confirm(const args *a, const char *question, const char *subject);

/* The --yes option of commands that ask before destroying something. */
#define CTL_OPT_YES \
    {"yes", ARG_FLAG, NULL, "do not ask for confirmation on a terminal"}

/* The --limit option every list command has. */
#define CTL_OPT_LIMIT \
    {"limit", ARG_VALUE, "N", "print at most N items (default: all pages)"}

#endif
