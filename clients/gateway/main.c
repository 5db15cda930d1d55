/* authd-gw: a gateway's offline decisions from a bundle it fetched from
 * GET /v1/gateway/bundle (docs/gateway-bundles.md). It reads the bundle
 * and the daemon's JWKS from files, verifies the bundle against them at
 * the current time (or --now) and answers allow or deny as the daemon
 * would. Exit status: 0 allow (or success), 1 deny, 2 anything else (a
 * refused bundle, a usage error, an unreadable file). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "../../common/codec.h"
#include "gw_bundle.h"
#include "docdir.h"
#include "version.h"

enum {
    EXIT_ALLOW = 0,
    EXIT_DENY = 1,
    EXIT_REFUSED = 2,
    /* A batch line: device, action and a subject of up to a topic's
     * length, with room for the separators. */
    LINE_MAX_LEN = POL_TOPIC_MAX + 256,
    /* The file that holds the bundle may be the route's JSON answer. */
    BUNDLE_FILE_MAX = GW_BUNDLE_MAX + 4096
};

static const char usage_text[] =
    "usage: authd-gw --version\n"
    "       authd-gw decide --bundle FILE --jwks FILE [--device ID]\n"
    "                       [--now UNIX] [--issuer ISS] ACTION SUBJECT\n"
    "       authd-gw decide --bundle FILE --jwks FILE [--now UNIX]\n"
    "                       [--issuer ISS] --batch FILE|-\n"
    "       authd-gw verify --bundle FILE --jwks FILE [--now UNIX] [--issuer ISS]\n"
    "\n"
    "decide prints allow or deny (exit 0 or 1); ACTION is connect, publish,\n"
    "subscribe or receive, SUBJECT a topic, a filter or a client id; --device\n"
    "defaults to the gateway. --batch reads lines \"DEVICE ACTION SUBJECT\"\n"
    "(DEVICE \"-\" is the gateway; SUBJECT is the rest of the line) and prints\n"
    "\"allow REASON\" or \"deny REASON\" for each, in order (exit 0).\n"
    "verify prints the bundle's gateway, children count, iat, exp and kid.\n"
    "FILE holds the compact JWS, or the route's JSON answer {\"bundle\":...}.\n"
    "A refused bundle (expired, tampered, unknown key...), a usage error or\n"
    "an unreadable file: a message on stderr and exit 2.\n"
    "Reference: docs/gateway-bundles.md in the source tree, installed as\n"
    "  " AD_DOCDIR "/docs/gateway-bundles.md\n";

static int usage(const char *why)
{
    if (why != NULL)
        fprintf(stderr, "authd-gw: %s\n", why);
    fputs(usage_text, stderr);
    return EXIT_REFUSED;
}

/* Reads a whole file (or stdin for "-") of at most max bytes into a
 * malloc()ed NUL-terminated buffer. Returns 0, or -1 with a message. */
static int read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    char *p = NULL, *np;
    size_t n = 0, cap = 0, got;
    int rc = -1;

    *out = NULL;
    *len = 0;
    if (f == NULL) {
        fprintf(stderr, "authd-gw: %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                fprintf(stderr, "authd-gw: %s: longer than %zu bytes\n", path,
                        max);
                goto out;
            }
            cap = cap ? cap * 2 : 65536;
            if ((np = realloc(p, cap + 1)) == NULL) {
                fprintf(stderr, "authd-gw: out of memory\n");
                goto out;
            }
            p = np;
        }
        got = fread(p + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f) || n > max) {
        fprintf(stderr, "authd-gw: %s: %s\n", path,
                n > max ? "too long" : "read error");
        goto out;
    }
    p[n] = '\0';
    *out = p;
    *len = n;
    p = NULL;
    rc = 0;
out:
    free(p);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* The compact JWS from the bundle file: the route's JSON answer's
 * "bundle", or the file's text without one final line end (what a
 * shell's echo or an editor adds). Anything else stays and is refused by
 * gw_bundle_open. Returns a malloc()ed string or NULL. */
static char *bundle_text(char *text, size_t len, size_t *out_len)
{
    json_t *doc;
    const char *jws;
    char *copy = NULL;

    if (len > 0 && text[0] == '{') {
        if ((doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL)) != NULL &&
            (jws = json_string_value(json_object_get(doc, "bundle"))) != NULL &&
            (copy = strdup(jws)) != NULL)
            *out_len = strlen(copy);
        json_decref(doc);
        if (copy == NULL)
            fprintf(stderr, "authd-gw: refused: the file is JSON without a "
                            "\"bundle\" string\n");
        return copy;
    }
    if (len > 0 && text[len - 1] == '\n')
        len--;
    if (len > 0 && text[len - 1] == '\r')
        len--;
    if ((copy = malloc(len + 1)) == NULL)
        return NULL;
    memcpy(copy, text, len);
    copy[len] = '\0';
    *out_len = len;
    return copy;
}

/* Reads, verifies and opens the bundle; prints why not and returns NULL. */
static gw_bundle *open_bundle(const char *bundle_path, const char *jwks_path,
                              int64_t now, const char *issuer)
{
    char *jtext = NULL, *btext = NULL, *jws = NULL, err[256];
    size_t jlen, blen, jwslen = 0;
    gw_jwks *jwks = NULL;
    gw_bundle *b = NULL;
    ad_err e;

    if (read_file(jwks_path, GW_JWKS_MAX, &jtext, &jlen) != 0 ||
        read_file(bundle_path, BUNDLE_FILE_MAX, &btext, &blen) != 0)
        goto out;
    if (gw_jwks_parse(jtext, jlen, &jwks, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "authd-gw: refused: %s: %s\n", jwks_path, err);
        goto out;
    }
    if ((jws = bundle_text(btext, blen, &jwslen)) == NULL)
        goto out;
    if ((e = gw_bundle_open(jwks, jws, jwslen, now, issuer, &b, err,
                            sizeof(err))) != AD_OK)
        fprintf(stderr, "authd-gw: refused: %s: %s\n", bundle_path,
                e == AD_ENOMEM ? "out of memory" : err);
out:
    free(jws);
    free(btext);
    free(jtext);
    gw_jwks_free(jwks);
    return b;
}

/* One answer per line of the batch file: "allow REASON" or "deny REASON".
 * Returns 0, or EXIT_REFUSED for an unreadable file or a line too long. */
static int run_batch(const gw_bundle *b, const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    char *line = NULL, *dev, *act, *subj, *sp;
    size_t n, lineno = 0;
    pol_decision d;
    int rc = EXIT_REFUSED;

    if (f == NULL) {
        fprintf(stderr, "authd-gw: %s: %s\n", path, strerror(errno));
        return EXIT_REFUSED;
    }
    if ((line = malloc(LINE_MAX_LEN + 2)) == NULL)
        goto out;
    while (fgets(line, LINE_MAX_LEN + 2, f) != NULL) {
        lineno++;
        n = strlen(line);
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        else if (!feof(f)) {
            fprintf(stderr, "authd-gw: %s:%zu: longer than %d bytes\n", path,
                    lineno, LINE_MAX_LEN);
            goto out;
        }
        if (n > 0 && line[n - 1] == '\r')
            line[--n] = '\0';
        /* Device and action end at the first two spaces; the subject is
         * the rest, spaces included (topics may hold them). */
        dev = line;
        if ((sp = strchr(dev, ' ')) == NULL) {
            fprintf(stderr, "authd-gw: %s:%zu: expected DEVICE ACTION SUBJECT\n",
                    path, lineno);
            goto out;
        }
        *sp = '\0';
        act = sp + 1;
        if ((sp = strchr(act, ' ')) == NULL) {
            fprintf(stderr, "authd-gw: %s:%zu: expected DEVICE ACTION SUBJECT\n",
                    path, lineno);
            goto out;
        }
        *sp = '\0';
        subj = sp + 1;
        d = gw_decide(b, strcmp(dev, "-") == 0 ? NULL : dev,
                      pol_action_parse(act), subj);
        printf("%s %s\n", d.allow ? "allow" : "deny",
               d.reason ? d.reason : (d.allow ? "allowed" : "denied"));
    }
    if (ferror(f)) {
        fprintf(stderr, "authd-gw: %s: read error\n", path);
        goto out;
    }
    rc = fflush(stdout) == 0 ? 0 : EXIT_REFUSED;
out:
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd, *bundle = NULL, *jwks = NULL, *device = NULL;
    const char *issuer = NULL, *batch = NULL, *pos[2];
    int64_t now = (int64_t)time(NULL);
    size_t npos = 0;
    gw_bundle *b = NULL;
    pol_decision d;
    pol_action action = 0;
    int i, rc;

    if (argc < 2)
        return usage(NULL);
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("authd %s\n", AD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "decide") != 0 && strcmp(cmd, "verify") != 0)
        return usage("unknown command");
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--bundle") == 0   ? &bundle
                            : strcmp(a, "--jwks") == 0   ? &jwks
                            : strcmp(a, "--device") == 0 ? &device
                            : strcmp(a, "--issuer") == 0 ? &issuer
                            : strcmp(a, "--batch") == 0  ? &batch
                                                         : NULL;

        if (strcmp(a, "--now") == 0) {
            if (i + 1 == argc ||
                codec_parse_i64(argv[++i], 0, INT64_MAX / 2, &now) != 0)
                return usage("--now takes Unix seconds");
        } else if (slot != NULL) {
            if (i + 1 == argc)
                return usage("an option is missing its value");
            if (*slot != NULL)
                return usage("an option is given twice");
            *slot = argv[++i];
        } else if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (npos == 2)
                    return usage("too many arguments");
                pos[npos++] = argv[i];
            }
        } else if (a[0] == '-' && a[1] == '-') {
            return usage("unknown option");
        } else {
            if (npos == 2)
                return usage("too many arguments");
            pos[npos++] = a;
        }
    }
    if (bundle == NULL || jwks == NULL)
        return usage("--bundle and --jwks are required");
    if (strcmp(cmd, "verify") == 0 && (npos != 0 || device || batch))
        return usage("verify takes no ACTION, SUBJECT, --device or --batch");
    if (strcmp(cmd, "decide") == 0 && batch != NULL && (npos != 0 || device))
        return usage("--batch takes no ACTION, SUBJECT or --device");
    if (strcmp(cmd, "decide") == 0 && batch == NULL && npos != 2)
        return usage("decide needs ACTION and SUBJECT");
    if (strcmp(cmd, "decide") == 0 && batch == NULL &&
        (action = pol_action_parse(pos[0])) == 0)
        return usage("ACTION is connect, publish, subscribe or receive");

    if ((b = open_bundle(bundle, jwks, now, issuer)) == NULL)
        return EXIT_REFUSED;
    if (strcmp(cmd, "verify") == 0) {
        printf("gateway=%s children=%zu iat=%lld exp=%lld kid=%s iss=%s\n",
               gw_bundle_gateway(b), gw_bundle_child_count(b),
               (long long)gw_bundle_iat(b), (long long)gw_bundle_exp(b),
               gw_bundle_kid(b), gw_bundle_issuer(b));
        rc = 0;
    } else if (batch != NULL) {
        rc = run_batch(b, batch);
    } else {
        action = pol_action_parse(pos[0]);
        d = gw_decide(b, device, action, pos[1]);
        printf("%s\n", d.allow ? "allow" : "deny");
        rc = d.allow ? EXIT_ALLOW : EXIT_DENY;
    }
    gw_bundle_free(b);
    return rc;
}
