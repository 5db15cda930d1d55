/* authctl login: trust on first use made explicit, as `step ca
 * bootstrap` does. The CA chain is fetched without TLS verification and
 * kept only if its root has the SHA-256 fingerprint the operator read
 * from authd's first start (a public value: an exact compare), and every
 * other certificate in it is signed by that root; then the chain and a
 * profile (url, cacert, key_file) are saved for later commands. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "../../common/buf.h"
#include "../../common/codec.h"
#include "ctl.h"
#include "pki.h"
#include "profile.h"

enum { CHAIN_CERTS_MAX = 8 };

/* Reads "SHA256:ab:CD..." or plain hex into 32 bytes. 0 or -1. */
static int parse_fingerprint(const char *s, unsigned char out[32])
{
    char hex[65];
    size_t n = 0, got = 0;

    if (strncmp(s, "SHA256:", 7) == 0 || strncmp(s, "sha256:", 7) == 0)
        s += 7;
    for (; *s; s++) {
        if (*s == ':')
            continue;
        if (n == 64 || codec_hex_val((unsigned char)*s) < 0)
            return -1;
        hex[n++] = *s;
    }
    hex[n] = '\0';
    return n == 64 && codec_hex_decode(hex, 64, out, 32, &got) == 0 && got == 32
               ? 0
               : -1;
}

static int login(ctl *c, const args *a)
{
    const char *url = args_get(a, "url"), *fp = args_get(a, "ca-fingerprint");
    const char *key_file = args_get(a, "key-file");
    const char *name = c->profile;
    unsigned char want[32], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen;
    char err[512], ca_path[PROFILE_STR_MAX], file[PROFILE_NAME_MAX + 16];
    X509 *certs[CHAIN_CERTS_MAX];
    size_t ncerts = 0, i, root = CHAIN_CERTS_MAX;
    api_config cfg;
    api *fetch = NULL;
    api_resp r;
    BIO *in = NULL, *pem = NULL;
    profile p;
    char *out_pem = NULL;
    long out_len;
    int rc = CTL_FAILED;

    memset(&r, 0, sizeof(r));
    if (url == NULL || fp == NULL)
        return ctl_usage(a, "--url and --ca-fingerprint are required");
    if (parse_fingerprint(fp, want) != 0)
        return ctl_usage(a, "--ca-fingerprint wants 64 hex digits (SHA-256), "
                            "as authd printed it");
    memset(&cfg, 0, sizeof(cfg));
    cfg.url = url;
    cfg.timeout = 30;
    cfg.insecure = 1;
    if (api_open(&cfg, &fetch, err, sizeof(err)) != 0)
        return ctl_usage(a, "%s", err);
    if ((rc = api_raw(fetch, "GET", "/v1/ca.pem", NULL, NULL, 0, &r)) !=
        CTL_OK)
        goto out;
    rc = CTL_FAILED;
    if (r.status != 200) {
        fprintf(stderr, "authctl: GET %s/v1/ca.pem answered %ld\n", url,
                r.status);
        goto out;
    }
    if ((in = BIO_new_mem_buf(r.body, (int)r.len)) == NULL)
        goto out;
    while (ncerts < CHAIN_CERTS_MAX &&
           (certs[ncerts] = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL)
        ncerts++;
    for (i = 0; i < ncerts; i++) {
        mdlen = 0;
        if (X509_digest(certs[i], EVP_sha256(), md, &mdlen) == 1 &&
            mdlen == 32 && memcmp(md, want, 32) == 0)
            root = i;
    }
    if (root == CHAIN_CERTS_MAX ||
        X509_check_issued(certs[root], certs[root]) != X509_V_OK) {
        fprintf(stderr,
                "authctl: the CA at %s does not have the root fingerprint "
                "given: refused, nothing written (someone may be between "
                "you and the server, or the fingerprint is of another "
                "authd)\n",
                url);
        goto out;
    }
    /* A certificate the root did not sign would become a trust anchor
     * of its own in the CA file: such a chain is refused whole. */
    if ((pem = BIO_new(BIO_s_mem())) == NULL)
        goto out;
    for (i = 0; i < ncerts; i++) {
        EVP_PKEY *rk = X509_get0_pubkey(certs[root]);

        if (rk == NULL || X509_verify(certs[i], rk) != 1) {
            fprintf(stderr, "authctl: the CA chain at %s holds a "
                            "certificate its root did not sign: refused, "
                            "nothing written\n",
                    url);
            goto out;
        }
        if (PEM_write_bio_X509(pem, certs[i]) != 1)
            goto out;
    }
    out_len = BIO_get_mem_data(pem, &out_pem);
    snprintf(file, sizeof(file), "%s-ca.pem", name);
    if (profile_path(ca_path, sizeof(ca_path), file) != 0) {
        fprintf(stderr, "authctl: set HOME or XDG_CONFIG_HOME\n");
        goto out;
    }
    if (profile_load(name, &p, err, sizeof(err)) < 0) {
        fprintf(stderr, "authctl: %s\n", err);
        goto out;
    }
    if (strlen(url) >= sizeof(p.url)) {
        fprintf(stderr, "authctl: URL too long\n");
        goto out;
    }
    memcpy(p.url, url, strlen(url) + 1);
    memcpy(p.cacert, ca_path, strlen(ca_path) + 1);
    if (key_file) {
        char abs[PATH_MAX];

        /* Absolute, so that the profile works from any directory. */
        if (realpath(key_file, abs) == NULL ||
            strlen(abs) >= sizeof(p.key_file)) {
            fprintf(stderr, "authctl: key file %s cannot be found\n", key_file);
            goto out;
        }
        memcpy(p.key_file, abs, strlen(abs) + 1);
    }
    if (profile_mkdir(err, sizeof(err)) != 0 ||
        pki_write_file(ca_path, out_pem, (size_t)out_len, 0644, err,
                       sizeof(err)) != 0 ||
        profile_save(name, &p, err, sizeof(err)) != 0) {
        fprintf(stderr, "authctl: %s\n", err);
        goto out;
    }
    if (c->json) {
        json_t *j = json_pack("{s:s,s:s,s:s,s:s?}", "profile", name, "url",
                              url, "cacert", ca_path, "key_file",
                              p.key_file[0] ? p.key_file : NULL);
        ctl_print(c, j, NULL);
        json_decref(j);
    } else {
        printf("profile %s: %s, trusting the CA in %s%s%s\n", name, url,
               ca_path, p.key_file[0] ? ", key in " : "",
               p.key_file[0] ? p.key_file : "");
        if (!p.key_file[0])
            printf("set key_file with --key-file, or AUTHD_KEY_FILE\n");
    }
    rc = CTL_OK;
out:
    for (i = 0; i < ncerts; i++)
        X509_free(certs[i]);
    BIO_free(in);
    BIO_free(pem);
    api_resp_clear(&r);
    api_close(fetch);
    return rc;
}

static const args_opt login_opts[] = {
    {"url", ARG_VALUE, "URL", "authd's URL"},
    {"ca-fingerprint", ARG_VALUE, "SHA256",
     "the root CA's SHA-256 fingerprint, as authd printed it"},
    {NULL, 0, NULL, NULL},
};

static const ctl_cmd cmds[] = {
    {"login", NULL,
     "--url URL --ca-fingerprint SHA256 [--key-file F] [--profile N]",
     "Fetches and pins authd's CA, and saves a profile.",
     "The CA chain is fetched from URL/v1/ca.pem without verification and "
     "kept only if its root has the fingerprint given. It goes to "
     "~/.config/authctl/<profile>-ca.pem; the profile (url, cacert, "
     "key_file) to ~/.config/authctl/config (mode 0600; XDG_CONFIG_HOME "
     "is honoured). Later commands use the profile for what no flag or "
     "AUTHD_* variable gives.",
     login_opts, 0, 0, login},
};

const ctl_cmd *cmd_login_table(size_t *n)
{
    *n = sizeof(cmds) / sizeof(cmds[0]);
    return cmds;
}
