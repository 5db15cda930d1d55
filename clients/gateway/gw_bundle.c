/* Offline gateway bundles: JWKS parsing, the bundle's payload read into
 * one compiled policy set per active device, and decisions with policy/
 * as the daemon makes them. The compact JWS itself (ES256) is checked by
 * common/jws, the same code that checks the daemon's access tokens; what
 * is the gateway's own is the JWKS (a gateway holds only public keys,
 * never a key ring) and the payload. */
#include "gw_bundle.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>

#include "../../common/codec.h"
#include "../../common/jws.h"

/* Kids are read by common/jws, which bounds them the same way. */
_Static_assert((int)GW_KID_MAX == (int)JWS_KID_MAX, "a kid has one maximum");

enum {
    COORD_LEN = JWS_COORD_LEN, /* a P-256 coordinate */
    DEVICE_ID_MAX = 128,  /* the registry's device id limit */
    DOC_STATEMENTS_MAX = 256, /* pol_doc_validate's limit per document */
    SERIAL_MAX = 64,      /* hex digits of a certificate serial */
    JTI_MAX = 128
};

typedef struct {
    char kid[GW_KID_MAX];
    size_t kid_len;
    EC_KEY *ec; /* public only; ECDSA_do_verify just reads it */
} jwk;

struct gw_jwks {
    jwk keys[GW_JWKS_KEYS_MAX];
    size_t n;
};

typedef enum { DEV_ACTIVE, DEV_SUSPENDED, DEV_REVOKED } dev_status;

typedef struct {
    const char *id;   /* inside claims */
    dev_status status;
    pol_set *set;     /* active devices only */
} gw_dev;

struct gw_bundle {
    json_t *claims;
    const char *iss, *gateway;
    char kid[GW_KID_MAX];
    int64_t iat, exp;
    gw_dev *devs;     /* sorted by id (strcmp) */
    size_t ndevs;
    const char **serials; /* lowercase copies, sorted */
    size_t nserials;
    const char **jtis;    /* inside claims, sorted */
    size_t njtis;
};

/* ---- the JWKS ----------------------------------------------------- */

/* v is a JSON string equal to s (an embedded NUL never equals). */
static int str_eq(const json_t *v, const char *s)
{
    size_t n = strlen(s);

    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

/* Kids are printable ASCII, as the daemon mints them. */
static int kid_ok(const char *kid, size_t n)
{
    size_t i;

    if (n == 0 || n >= GW_KID_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)kid[i] < 0x21 || (unsigned char)kid[i] > 0x7e)
            return 0;
    return 1;
}

/* A base64url coordinate of exactly COORD_LEN bytes. */
static int coord(const json_t *v, uint8_t out[COORD_LEN])
{
    size_t got;

    return json_is_string(v) &&
           codec_b64_decode(json_string_value(v), json_string_length(v), out,
                            COORD_LEN, &got, CODEC_B64_URL) == 0 &&
           got == COORD_LEN;
}

/* The public key at (x, y) on P-256, as common/jws verifies with it;
 * NULL if the point is not on the curve
 * (EC_KEY_set_public_key_affine_coordinates checks it). */
static EC_KEY *p256_public(const uint8_t x[COORD_LEN],
                           const uint8_t y[COORD_LEN])
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1), *ret = NULL;
    BIGNUM *bx = BN_bin2bn(x, COORD_LEN, NULL);
    BIGNUM *by = BN_bin2bn(y, COORD_LEN, NULL);

    if (ec == NULL || bx == NULL || by == NULL ||
        EC_KEY_set_public_key_affine_coordinates(ec, bx, by) != 1 ||
        EC_KEY_check_key(ec) != 1)
        goto out;
    ret = ec;
    ec = NULL;
out:
    if (ret == NULL)
        ERR_clear_error();
    EC_KEY_free(ec);
    BN_free(bx);
    BN_free(by);
    return ret;
}

ad_err gw_jwks_parse(const char *text, size_t len, gw_jwks **out, char *err,
                     size_t errlen)
{
    json_t *doc = NULL, *keys, *k;
    gw_jwks *j = NULL;
    uint8_t x[COORD_LEN], y[COORD_LEN];
    size_t i, m;
    const char *kid;
    ad_err e = AD_EFIELD;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (text == NULL || len > GW_JWKS_MAX) {
        ad_errf(e, err, errlen, "the JWKS is missing or longer than %d bytes",
                GW_JWKS_MAX);
        goto out;
    }
    if ((doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL)) == NULL ||
        !json_is_array(keys = json_object_get(doc, "keys"))) {
        ad_errf(e, err, errlen, "the JWKS is not a JSON object with \"keys\"");
        goto out;
    }
    if ((j = calloc(1, sizeof(*j))) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    json_array_foreach(keys, i, k) {
        const json_t *alg = json_object_get(k, "alg");

        if (!json_is_object(k)) {
            ad_errf(e, err, errlen, "key %zu is not an object", i);
            goto out;
        }
        /* Keys for other algorithms are someone else's business. */
        if (!str_eq(json_object_get(k, "kty"), "EC") ||
            !str_eq(json_object_get(k, "crv"), "P-256") ||
            (alg != NULL && !str_eq(alg, "ES256")))
            continue;
        kid = json_string_value(json_object_get(k, "kid"));
        m = kid ? json_string_length(json_object_get(k, "kid")) : 0;
        if (!kid_ok(kid ? kid : "", m) || strlen(kid) != m) {
            ad_errf(e, err, errlen, "key %zu has no valid kid", i);
            goto out;
        }
        if (!coord(json_object_get(k, "x"), x) ||
            !coord(json_object_get(k, "y"), y)) {
            ad_errf(e, err, errlen, "key %s: x and y must be 32 bytes of base64url",
                    kid);
            goto out;
        }
        for (m = 0; m < j->n; m++)
            if (strcmp(j->keys[m].kid, kid) == 0) {
                ad_errf(e, err, errlen, "kid %s appears twice", kid);
                goto out;
            }
        if (j->n == GW_JWKS_KEYS_MAX) {
            ad_errf(e, err, errlen, "more than %d keys", GW_JWKS_KEYS_MAX);
            goto out;
        }
        if ((j->keys[j->n].ec = p256_public(x, y)) == NULL) {
            ad_errf(e, err, errlen, "key %s is not a point on P-256", kid);
            goto out;
        }
        j->keys[j->n].kid_len = strlen(kid);
        memcpy(j->keys[j->n].kid, kid, j->keys[j->n].kid_len + 1);
        j->n++;
    }
    *out = j;
    j = NULL;
    e = AD_OK;
out:
    gw_jwks_free(j);
    json_decref(doc);
    return e;
}

void gw_jwks_free(gw_jwks *jwks)
{
    size_t i;

    if (jwks == NULL)
        return;
    for (i = 0; i < jwks->n; i++)
        EC_KEY_free(jwks->keys[i].ec);
    free(jwks);
}

size_t gw_jwks_count(const gw_jwks *jwks)
{
    return jwks ? jwks->n : 0;
}

static const jwk *find_kid(const gw_jwks *jwks, const char *kid, size_t n)
{
    size_t i;

    for (i = 0; i < jwks->n; i++)
        if (jwks->keys[i].kid_len == n && memcmp(jwks->keys[i].kid, kid, n) == 0)
            return &jwks->keys[i];
    return NULL;
}

/* ---- the payload -------------------------------------------------- */

/* The registry's device ids: 1-128 bytes of [A-Za-z0-9._:-]. */
static int device_id_ok(const json_t *v)
{
    const char *s = json_string_value(v);
    size_t i, n = s ? json_string_length(v) : 0;

    if (n == 0 || n > DEVICE_ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* An integer NumericDate (the daemon writes whole seconds). */
static int claim_int(const json_t *c, const char *name, int64_t *out)
{
    const json_t *v = json_object_get(c, name);

    if (!json_is_integer(v))
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Compiles a device's statements as a broker plugin compiles an allowed
 * connect's export: in documents of at most DOC_STATEMENTS_MAX
 * statements (deny-wins and allow-needed hold across sources), with no
 * variables, since the daemon substituted them. */
static ad_err compile_statements(const json_t *sts, pol_set **out, char *err,
                                 size_t errlen)
{
    size_t n = json_array_size(sts), nsrc, i, j;
    pol_source *src = NULL;
    json_t **docs = NULL, *part;
    ad_err e = AD_ENOMEM;

    *out = NULL;
    if (!json_is_array(sts) || n > GW_DEVICE_STATEMENTS_MAX)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "statements are not an array of at most %d",
                       GW_DEVICE_STATEMENTS_MAX);
    /* No statements still compiles: an empty set denies everything with
     * the reasons the daemon gives. */
    nsrc = (n + DOC_STATEMENTS_MAX - 1) / DOC_STATEMENTS_MAX;
    if (nsrc > 0 && ((src = calloc(nsrc, sizeof(*src))) == NULL ||
                     (docs = calloc(nsrc, sizeof(*docs))) == NULL))
        goto out;
    for (i = 0; i < nsrc; i++) {
        if ((part = json_array()) == NULL)
            goto out;
        for (j = i * DOC_STATEMENTS_MAX; j < n && j < (i + 1) * DOC_STATEMENTS_MAX;
             j++)
            if (json_array_append(part, json_array_get(sts, j)) != 0) {
                json_decref(part);
                goto out;
            }
        if ((docs[i] = json_pack("{s:o}", "statements", part)) == NULL)
            goto out;
        src[i].name = "statements";
        src[i].doc = docs[i];
    }
    if ((e = pol_compile(src, nsrc, NULL, out, err, errlen)) != AD_OK &&
        e != AD_ENOMEM)
        e = AD_EBADCRED;
out:
    if (docs != NULL)
        for (i = 0; i < nsrc; i++)
            json_decref(docs[i]);
    free(docs);
    free(src);
    return e;
}

static int dev_cmp(const void *a, const void *b)
{
    return strcmp(((const gw_dev *)a)->id, ((const gw_dev *)b)->id);
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const gw_dev *find_dev(const gw_bundle *b, const char *id)
{
    gw_dev key;

    key.id = id;
    return b->ndevs ? bsearch(&key, b->devs, b->ndevs, sizeof(*b->devs),
                              dev_cmp)
                    : NULL;
}

/* Reads one device: id, status and statements, compiled if active. */
static ad_err read_device(const json_t *o, int is_gateway, gw_dev *d,
                          char *err, size_t errlen)
{
    const json_t *st;
    char why[200];
    ad_err e;

    if (!json_is_object(o) || !device_id_ok(json_object_get(o, "id")))
        return ad_errf(AD_EBADCRED, err, errlen,
                       "a device entry has no valid \"id\"");
    d->id = json_string_value(json_object_get(o, "id"));
    if (is_gateway) {
        d->status = DEV_ACTIVE;
    } else {
        st = json_object_get(o, "status");
        if (str_eq(st, "active"))
            d->status = DEV_ACTIVE;
        else if (str_eq(st, "suspended"))
            d->status = DEV_SUSPENDED;
        else if (str_eq(st, "revoked"))
            d->status = DEV_REVOKED;
        else
            return ad_errf(AD_EBADCRED, err, errlen,
                           "device %s has no valid \"status\"", d->id);
    }
    /* Only an active device's statements ever decide anything. */
    if (d->status != DEV_ACTIVE)
        return AD_OK;
    why[0] = '\0';
    e = compile_statements(json_object_get(o, "statements"), &d->set, why,
                           sizeof(why));
    if (e == AD_EBADCRED)
        return ad_errf(e, err, errlen, "device %s: %s", d->id, why);
    return e;
}

/* A sorted copy of the strings of array (at most GW_REVOKED_MAX, each
 * 1..maxlen bytes), lowercased when lower is set (hex serials). */
static ad_err read_list(const json_t *arr, const char *name, size_t maxlen,
                        int lower, const char ***out, size_t *n, char *err,
                        size_t errlen)
{
    size_t i, k, len;
    const char **v;
    const json_t *s;
    char *copy;

    *out = NULL;
    *n = 0;
    if (arr == NULL)
        return AD_OK;
    if (!json_is_array(arr) || json_array_size(arr) > GW_REVOKED_MAX)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "\"%s\" is not an array of at most %d strings", name,
                       GW_REVOKED_MAX);
    if (json_array_size(arr) == 0)
        return AD_OK;
    if ((v = calloc(json_array_size(arr), sizeof(*v))) == NULL)
        return AD_ENOMEM;
    json_array_foreach(arr, i, s) {
        len = json_is_string(s) ? json_string_length(s) : 0;
        if (len == 0 || len > maxlen || strlen(json_string_value(s)) != len) {
            if (lower)
                for (k = 0; k < i; k++)
                    free((char *)v[k]);
            free(v);
            return ad_errf(AD_EBADCRED, err, errlen,
                           "\"%s\" holds a value that is not a string of "
                           "1-%zu bytes", name, maxlen);
        }
        if (!lower) {
            v[i] = json_string_value(s);
            continue;
        }
        if ((copy = strdup(json_string_value(s))) == NULL) {
            for (k = 0; k < i; k++)
                free((char *)v[k]);
            free(v);
            return AD_ENOMEM;
        }
        for (k = 0; k < len; k++)
            if (copy[k] >= 'A' && copy[k] <= 'Z')
                copy[k] = (char)(copy[k] - 'A' + 'a');
        v[i] = copy;
    }
    qsort(v, json_array_size(arr), sizeof(*v), str_cmp);
    *out = v;
    *n = json_array_size(arr);
    return AD_OK;
}

static ad_err read_payload(gw_bundle *b, int64_t now, const char *issuer,
                           char *err, size_t errlen)
{
    const json_t *c = b->claims, *gw, *children, *ch;
    size_t i, nch;
    ad_err e;

    if (!json_is_object(c))
        return ad_errf(AD_EBADCRED, err, errlen, "the payload is not a JSON object");
    if (claim_int(c, "exp", &b->exp) != 0 || claim_int(c, "iat", &b->iat) != 0)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "exp and iat must be integers");
    if (!(b->exp > now))
        return ad_errf(AD_EBADCRED, err, errlen, "expired");
    /* The difference in unsigned arithmetic: no overflow for any clock. */
    if (b->iat > now && (uint64_t)b->iat - (uint64_t)now > GW_IAT_SKEW)
        return ad_errf(AD_EBADCRED, err, errlen, "issued in the future (iat)");
    if ((b->iss = json_string_value(json_object_get(c, "iss"))) == NULL)
        return ad_errf(AD_EBADCRED, err, errlen, "no iss");
    if (issuer != NULL && !str_eq(json_object_get(c, "iss"), issuer))
        return ad_errf(AD_EBADCRED, err, errlen, "wrong issuer");

    gw = json_object_get(c, "gateway");
    children = json_object_get(c, "children");
    if (!json_is_object(gw) || !json_is_array(children) ||
        (nch = json_array_size(children)) > GW_CHILDREN_MAX)
        return ad_errf(AD_EBADCRED, err, errlen,
                       "the payload needs \"gateway\" (object) and "
                       "\"children\" (array of at most %d)", GW_CHILDREN_MAX);
    if ((b->devs = calloc(nch + 1, sizeof(*b->devs))) == NULL)
        return AD_ENOMEM;
    if ((e = read_device(gw, 1, &b->devs[0], err, errlen)) != AD_OK)
        return e;
    b->ndevs = 1;
    b->gateway = b->devs[0].id;
    json_array_foreach(children, i, ch) {
        if ((e = read_device(ch, 0, &b->devs[b->ndevs], err, errlen)) != AD_OK)
            return e;
        b->ndevs++;
    }
    qsort(b->devs, b->ndevs, sizeof(*b->devs), dev_cmp);
    /* One id, one answer: a device listed twice could be decided either
     * way depending on which entry a reader finds. */
    for (i = 1; i < b->ndevs; i++)
        if (strcmp(b->devs[i - 1].id, b->devs[i].id) == 0)
            return ad_errf(AD_EBADCRED, err, errlen, "device %s appears twice",
                           b->devs[i].id);

    if ((e = read_list(json_object_get(c, "revoked_serials"), "revoked_serials",
                       SERIAL_MAX, 1, &b->serials, &b->nserials, err,
                       errlen)) != AD_OK ||
        (e = read_list(json_object_get(c, "revoked_jtis"), "revoked_jtis",
                       JTI_MAX, 0, &b->jtis, &b->njtis, err, errlen)) != AD_OK)
        return e;
    return AD_OK;
}

ad_err gw_bundle_open(const gw_jwks *jwks, const char *jws, size_t len,
                      int64_t now, const char *issuer, gw_bundle **out,
                      char *err, size_t errlen)
{
    /* Required, so that no other JWS the same keys sign (an access
     * token, typ "at+jwt") can pass for a bundle. */
    static const char *const typs[] = {GW_BUNDLE_TYP, NULL};
    char kid[GW_KID_MAX];
    size_t kid_len, got;
    uint8_t sig[JWS_SIG_LEN], *payload = NULL;
    jws_parts parts;
    const jwk *key = NULL;
    gw_bundle *b = NULL;
    ad_err e = AD_EBADCRED;

    *out = NULL;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (jwks == NULL || jws == NULL || len == 0)
        return ad_errf(e, err, errlen, "no bundle or no JWKS");
    if ((e = jws_split(jws, len, GW_BUNDLE_MAX, "bundle", &parts, err,
                       errlen)) != AD_OK ||
        (e = jws_header(&parts, typs, 1, kid, &kid_len, err, errlen)) != AD_OK)
        goto out;
    if ((key = find_kid(jwks, kid, kid_len)) == NULL) {
        e = ad_errf(AD_EBADCRED, err, errlen, "unknown kid");
        goto out;
    }
    /* The signature before the payload is even decoded: nothing unsigned
     * is parsed. */
    if ((e = jws_sig_decode(&parts, sig, err, errlen)) != AD_OK ||
        (e = jws_verify(&parts, sig, key->ec, err, errlen)) != AD_OK ||
        (e = jws_payload_alloc(&parts, &payload, &got, err, errlen)) != AD_OK)
        goto out;
    if ((b = calloc(1, sizeof(*b))) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    memcpy(b->kid, key->kid, key->kid_len + 1);
    /* Duplicates refused, so that no other reader of the same bytes sees
     * another exp or another status. */
    if ((b->claims = json_loadb((const char *)payload, got,
                                JSON_REJECT_DUPLICATES, NULL)) == NULL) {
        e = ad_errf(AD_EBADCRED, err, errlen, "the payload is not JSON");
        goto out;
    }
    if ((e = read_payload(b, now, issuer, err, errlen)) != AD_OK)
        goto out;
    *out = b;
    b = NULL;
out:
    free(payload);
    gw_bundle_free(b);
    return e;
}

void gw_bundle_free(gw_bundle *b)
{
    size_t i;

    if (b == NULL)
        return;
    for (i = 0; i < b->ndevs; i++)
        pol_set_free(b->devs[i].set);
    free(b->devs);
    for (i = 0; i < b->nserials; i++)
        free((char *)b->serials[i]);
    free(b->serials);
    free(b->jtis);
    json_decref(b->claims);
    free(b);
}

const char *gw_bundle_gateway(const gw_bundle *b) { return b->gateway; }
const char *gw_bundle_issuer(const gw_bundle *b) { return b->iss; }
size_t gw_bundle_child_count(const gw_bundle *b) { return b->ndevs - 1; }
int64_t gw_bundle_exp(const gw_bundle *b) { return b->exp; }
int64_t gw_bundle_iat(const gw_bundle *b) { return b->iat; }
const char *gw_bundle_kid(const gw_bundle *b) { return b->kid; }

int gw_bundle_serial_revoked(const gw_bundle *b, const char *serial_hex)
{
    char low[SERIAL_MAX + 1];
    const char *key = low;
    size_t i, n = serial_hex ? strnlen(serial_hex, SERIAL_MAX + 1) : 0;

    if (n == 0 || n > SERIAL_MAX || b->nserials == 0)
        return 0;
    for (i = 0; i < n; i++)
        low[i] = (serial_hex[i] >= 'A' && serial_hex[i] <= 'Z')
                     ? (char)(serial_hex[i] - 'A' + 'a')
                     : serial_hex[i];
    low[n] = '\0';
    return bsearch(&key, b->serials, b->nserials, sizeof(*b->serials),
                   str_cmp) != NULL;
}

int gw_bundle_jti_revoked(const gw_bundle *b, const char *jti)
{
    if (jti == NULL || b->njtis == 0)
        return 0;
    return bsearch(&jti, b->jtis, b->njtis, sizeof(*b->jtis), str_cmp) != NULL;
}

pol_decision gw_decide(const gw_bundle *b, const char *device_id,
                       pol_action action, const char *subject)
{
    pol_decision d = {0, NULL, -1, "unknown_device"};
    const gw_dev *dev;

    if (b == NULL)
        return d;
    if ((dev = find_dev(b, device_id ? device_id : b->gateway)) == NULL)
        return d;
    if (dev->status != DEV_ACTIVE) {
        d.reason = dev->status == DEV_SUSPENDED ? "device_suspended"
                                                : "device_revoked";
        return d;
    }
    return pol_decide(dev->set, action, subject ? subject : "");
}
