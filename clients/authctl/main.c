/* authctl: the admin command line of authd. main() finds the command
 * words, parses the options against that command's table, connects the
 * API client from flags or AUTHD_* variables and runs the command; help
 * text is generated from the same tables so it cannot drift. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "ctl.h"
#include "pki.h"
#include "docdir.h"
#include "version.h"
#include "profile.h"

enum { ARGV_MAX = 512, KEY_FILE_MAX = 4096, DEFAULT_TIMEOUT = 60,
       DEFAULT_PAGE = 100 };

#define DEFAULT_SERVER "https://127.0.0.1:8443"

static const args_opt global_opts[] = {
    {"server", ARG_VALUE, "URL[,URL...]",
     "authd's URL, or several nodes' (tried in turn when one cannot be "
     "reached; env AUTHD_URL; default " DEFAULT_SERVER ")"},
    {"key-file", ARG_VALUE, "FILE",
     "file holding the API key (env AUTHD_KEY holds the key itself)"},
    {"cacert", ARG_VALUE, "FILE",
     "CA certificates (PEM) to verify HTTPS with (env AUTHD_CACERT)"},
    {"profile", ARG_VALUE, "NAME",
     "the authctl login profile to use (env AUTHCTL_PROFILE; default "
     "\"default\"): it gives what no flag or AUTHD_* variable does"},
    {"json", ARG_FLAG, NULL,
     "print the server's JSON (for scripts); empty answers print nothing"},
    {"timeout", ARG_VALUE, "S", "seconds per request (default 60)"},
    {"connect-timeout", ARG_VALUE, "MS",
     "milliseconds to connect to one node (default 300 with several URLs, "
     "10000 with one)"},
    {"page-size", ARG_VALUE, "N", "list items per request, 1..1000 (default 100)"},
    {"help", ARG_FLAG, NULL, "show help"},
    {NULL, 0, NULL, NULL},
};

enum { NTABLES = 4 };

typedef struct table {
    const ctl_cmd *cmds;
    size_t n;
} table;

static void load_tables(table t[NTABLES])
{
    t[0].cmds = cmd_registry_table(&t[0].n);
    t[1].cmds = cmd_pki_table(&t[1].n);
    t[2].cmds = cmd_provision_table(&t[2].n);
    t[3].cmds = cmd_login_table(&t[3].n);
}

/* Whether any command has this first word; *has_sub: it takes a second. */
static int group_known(const table t[NTABLES], const char *g, int *has_sub)
{
    size_t i, k;

    for (k = 0; k < NTABLES; k++)
        for (i = 0; i < t[k].n; i++)
            if (strcmp(t[k].cmds[i].group, g) == 0) {
                *has_sub = t[k].cmds[i].name != NULL;
                return 1;
            }
    return 0;
}

static const ctl_cmd *find_cmd(const table t[NTABLES], const char *g,
                               const char *n)
{
    size_t i, k;

    for (k = 0; k < NTABLES; k++)
        for (i = 0; i < t[k].n; i++) {
            const ctl_cmd *c = &t[k].cmds[i];
            if (strcmp(c->group, g) == 0 &&
                (c->name == NULL || (n && strcmp(c->name, n) == 0)))
                return c;
        }
    return NULL;
}

static void print_opts(FILE *f, const args_opt *o)
{
    char lhs[64];

    for (; o && o->name; o++) {
        snprintf(lhs, sizeof(lhs), "--%s%s%s%s", o->name, o->meta ? " " : "",
                 o->meta ? o->meta : "", o->kind == ARG_MULTI ? " ..." : "");
        fprintf(f, "  %-24s %s\n", lhs, o->help);
    }
}

static void cmd_line(FILE *f, const ctl_cmd *c)
{
    fprintf(f, "authctl %s%s%s %s", c->group, c->name ? " " : "",
            c->name ? c->name : "", c->usage);
}

static void help_cmd(const ctl_cmd *c)
{
    fputs("usage: ", stdout);
    cmd_line(stdout, c);
    printf("\n\n%s\n", c->summary);
    if (c->details)
        printf("\n%s\n", c->details);
    if (c->opts && c->opts->name) {
        puts("\noptions:");
        print_opts(stdout, c->opts);
    }
    puts("\nglobal options:");
    print_opts(stdout, global_opts);
}

/* Lists the commands (of one group, or all when g is NULL). */
static void list_cmds(FILE *f, const table t[NTABLES], const char *g)
{
    size_t i, k;

    for (k = 0; k < NTABLES; k++)
        for (i = 0; i < t[k].n; i++) {
            const ctl_cmd *c = &t[k].cmds[i];
            char line[96];
            if (g && strcmp(c->group, g) != 0)
                continue;
            snprintf(line, sizeof(line), "%s%s%s", c->group,
                     c->name ? " " : "", c->name ? c->name : "");
            fprintf(f, "  %-22s %s\n", line, c->summary);
        }
}

static void help_main(FILE *f, const table t[NTABLES])
{
    fputs("usage: authctl [global options] COMMAND [SUBCOMMAND] [args]\n\n"
          "The admin command line of authd: devices, groups, policies,\n"
          "enrollments, certificates, revocation, tokens and API keys.\n\n"
          "commands:\n", f);
    list_cmds(f, t, NULL);
    fputs("\nglobal options (anywhere on the line):\n", f);
    print_opts(f, global_opts);
    fputs("\nenvironment: AUTHD_URL, AUTHD_KEY (the API key itself),\n"
          "AUTHD_KEY_FILE, AUTHD_CACERT; flags win over the environment,\n"
          "the environment over the profile (AUTHCTL_PROFILE or --profile,\n"
          "default \"default\", in $XDG_CONFIG_HOME/authctl/config, else\n"
          "~/.config/authctl/config; `authctl login` writes it).\n"
          "--server and AUTHD_URL take several URLs separated by commas or\n"
          "spaces: each request starts at the node that answered last.\n"
          "\nexit status: 0 success, 1 refused by the server (its message\n"
          "goes to stderr) or a local failure, 2 usage error, 3 cannot\n"
          "reach the server (connection refused, TLS failure, timeout).\n"
          "\n'authctl COMMAND [SUBCOMMAND] --help' describes one command;\n"
          "'authctl --version' prints the version.\n"
          "\nReference: docs/README.md in the source tree, installed as\n"
          "  " AD_DOCDIR "/docs/README.md\n"
          "(docs/api.md: the HTTP API every command calls;\n"
          "docs/policies.md: the policy language), and authctl(1).\n",
          f);
}

static const args_opt *find_global(const char *s)
{
    const args_opt *o;

    for (o = global_opts; o->name; o++)
        if (strcmp(s, o->name) == 0)
            return o;
    return NULL;
}

/* Index of the next command word at or after *i in argv, skipping the
 * options before it and the values of global options; -1 if none. */
static int next_word(int argc, char **argv, int i)
{
    for (; i < argc; i++) {
        const args_opt *o;
        if (strcmp(argv[i], "--") == 0)
            return -1;
        if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0)
            return i;
        if (strncmp(argv[i], "--", 2) == 0 && strchr(argv[i], '=') == NULL &&
            (o = find_global(argv[i] + 2)) != NULL && o->kind != ARG_FLAG)
            i++;
    }
    return -1;
}

/* Reads the API key from a file: one line, surrounding space dropped. */
static int read_key(const char *path, char **out)
{
    char *buf = NULL, err[256], *s, *e;
    size_t len;

    *out = NULL;
    if (pki_read_file(path, KEY_FILE_MAX, &buf, &len, err, sizeof(err)) != 0) {
        fprintf(stderr, "authctl: key file %s\n", err);
        return -1;
    }
    for (s = buf; *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'; s++)
        ;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' ||
                     e[-1] == '\r'))
        *--e = '\0';
    if ((*out = strdup(s)) == NULL)
        fprintf(stderr, "authctl: out of memory\n");
    pki_free_secret(buf);
    return *out ? 0 : -1;
}

int main(int argc, char **argv)
{
    table t[NTABLES];
    const ctl_cmd *cmd = NULL;
    char *rest[ARGV_MAX], cmdname[96], err[256];
    char *key = NULL;
    const char *group = NULL, *name = NULL, *keyfile, *envkey;
    api_config cfg;
    profile prof;
    int named, found;
    ctl c;
    args a;
    int gi, ni = -1, has_sub = 0, nrest = 0, i, rc = CTL_USAGE, inited = 0;
    long timeout, connect_ms;

    memset(&c, 0, sizeof(c));
    memset(&a, 0, sizeof(a));
    load_tables(t);
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("authd %s\n", AD_VERSION);
        return CTL_OK;
    }
    if (argc > ARGV_MAX) {
        fprintf(stderr, "authctl: too many arguments\n");
        return CTL_USAGE;
    }
    gi = next_word(argc, argv, 1);
    if (gi < 0) {
        for (i = 1; i < argc; i++)
            if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                help_main(stdout, t);
                return CTL_OK;
            }
        help_main(stderr, t);
        return CTL_USAGE;
    }
    group = argv[gi];
    if (strcmp(group, "help") == 0) {
        help_main(stdout, t);
        return CTL_OK;
    }
    if (!group_known(t, group, &has_sub)) {
        fprintf(stderr, "authctl: unknown command '%s'\n", group);
        fprintf(stderr, "try 'authctl --help'\n");
        return CTL_USAGE;
    }
    if (has_sub) {
        ni = next_word(argc, argv, gi + 1);
        name = ni >= 0 ? argv[ni] : NULL;
        cmd = name ? find_cmd(t, group, name) : NULL;
        if (cmd == NULL) {
            int want_help = 0;
            for (i = 1; i < argc; i++)
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
                    want_help = 1;
            if (want_help && name == NULL) {
                printf("usage: authctl %s SUBCOMMAND [args]\n\n", group);
                list_cmds(stdout, t, group);
                return CTL_OK;
            }
            if (name)
                fprintf(stderr, "authctl: unknown subcommand '%s %s'\n",
                        group, name);
            else
                fprintf(stderr, "authctl: '%s' needs a subcommand\n", group);
            fprintf(stderr, "usage: authctl %s SUBCOMMAND [args]\n", group);
            list_cmds(stderr, t, group);
            return CTL_USAGE;
        }
    } else {
        cmd = find_cmd(t, group, NULL);
    }
    snprintf(cmdname, sizeof(cmdname), "%s%s%s", group, name ? " " : "",
             name ? name : "");
    for (i = 1; i < argc; i++)
        if (i != gi && i != ni)
            rest[nrest++] = argv[i];
    a.cmd = cmdname;
    if (args_parse(nrest, rest, cmd->opts, global_opts, &a, err,
                   sizeof(err)) != 0)
        return ctl_usage(&a, "%s", err);
    if (args_has(&a, "help")) {
        help_cmd(cmd);
        return CTL_OK;
    }
    if ((int)a.npos < cmd->min_pos || (int)a.npos > cmd->max_pos) {
        fputs("usage: ", stderr);
        cmd_line(stderr, cmd);
        fputc('\n', stderr);
        return ctl_usage(&a, "%s arguments",
                         (int)a.npos < cmd->min_pos ? "missing" : "too many");
    }
    if (args_long(&a, "timeout", 1, 3600, DEFAULT_TIMEOUT, &timeout, err,
                  sizeof(err)) != 0 ||
        args_long(&a, "connect-timeout", 1, 600000, 0, &connect_ms, err,
                  sizeof(err)) != 0 ||
        args_long(&a, "page-size", 1, 1000, DEFAULT_PAGE, &c.page_size, err,
                  sizeof(err)) != 0)
        return ctl_usage(&a, "%s", err);
    c.json = args_has(&a, "json");

    /* The profile is named by flag, else environment, else "default";
     * one named explicitly must exist (but for login, which makes it). */
    c.profile = args_get(&a, "profile");
    if (c.profile == NULL || *c.profile == '\0')
        c.profile = getenv("AUTHCTL_PROFILE");
    named = c.profile != NULL && *c.profile != '\0';
    if (!named)
        c.profile = "default";
    if (!profile_name_valid(c.profile))
        return ctl_usage(&a, "profile names are 1-64 of A-Z a-z 0-9 . _ -");
    found = profile_load(c.profile, &prof, err, sizeof(err));
    if (found < 0) {
        fprintf(stderr, "authctl: %s\n", err);
        return CTL_USAGE;
    }
    if (found == 0 && named && strcmp(group, "login") != 0)
        return ctl_usage(&a, "no profile %s: create it with authctl login "
                             "--profile %s",
                         c.profile, c.profile);

    /* Flags win over the environment, the environment over the profile;
     * a key file over a key in the environment. */
    keyfile = args_get(&a, "key-file");
    envkey = getenv("AUTHD_KEY");
    if (keyfile == NULL && (envkey == NULL || *envkey == '\0'))
        keyfile = getenv("AUTHD_KEY_FILE");
    if ((keyfile == NULL || *keyfile == '\0') &&
        (envkey == NULL || *envkey == '\0') && prof.key_file[0] &&
        strcmp(group, "login") != 0)
        keyfile = prof.key_file;
    if (keyfile && *keyfile && read_key(keyfile, &key) != 0)
        goto out;
    if (key == NULL && envkey && *envkey && (key = strdup(envkey)) == NULL)
        goto out;
    cfg.url = args_get(&a, "server");
    if (cfg.url == NULL)
        cfg.url = getenv("AUTHD_URL");
    if ((cfg.url == NULL || *cfg.url == '\0') && prof.url[0])
        cfg.url = prof.url;
    if (cfg.url == NULL || *cfg.url == '\0')
        cfg.url = DEFAULT_SERVER;
    cfg.cacert = args_get(&a, "cacert");
    if (cfg.cacert == NULL)
        cfg.cacert = getenv("AUTHD_CACERT");
    if ((cfg.cacert == NULL || *cfg.cacert == '\0') && prof.cacert[0])
        cfg.cacert = prof.cacert;
    if (cfg.cacert && *cfg.cacert == '\0')
        cfg.cacert = NULL;
    cfg.insecure = 0;
    cfg.bearer = key && *key ? key : NULL;
    cfg.timeout = timeout;
    cfg.connect_ms = connect_ms;
    if (api_global_init() != 0) {
        fprintf(stderr, "authctl: cannot initialise libcurl\n");
        rc = CTL_FAILED;
        goto out;
    }
    inited = 1;
    if (api_open(&cfg, &c.api, err, sizeof(err)) != 0) {
        rc = ctl_usage(&a, "%s", err);
        goto out;
    }
    rc = cmd->run(&c, &a);
    fflush(stdout);
    if (ferror(stdout) && rc == CTL_OK)
        rc = ctl_fail("cannot write the output");
out:
    api_close(c.api);
    if (inited)
        api_global_cleanup();
    pki_free_secret(key);
    return rc;
}
