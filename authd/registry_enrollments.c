/* See registry_enrollments.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "registry_policies.h"
#include "registry_records.h"
#include "seal.h"
#include "util.h"

/* The additional data a sealed token is bound to, so that a sealed token
 * copied into another enrollment's record does not open there. */
static void token_aad(const char *id, char *aad, size_t len)
{
    snprintf(aad, len, "enrollment-token:%s", id);
}

ad_err registry_enrollment_decode(const json_t *rec, registry_enrollment *out)
{
    const char *id = json_string_value(json_object_get(rec, "id"));
    const char *pattern = json_string_value(json_object_get(rec, "id_pattern"));
    const char *exp = json_string_value(json_object_get(rec, "expires_at"));

    memset(out, 0, sizeof(*out));
    util_strlcpy(out->id, id ? id : "", sizeof(out->id));
    /* No pattern admits every id. */
    util_strlcpy(out->id_pattern, pattern ? pattern : "*",
                 sizeof(out->id_pattern));
    out->cert_days = (long)json_integer_value(json_object_get(rec, "cert_days"));
    if (out->cert_days < 0)
        out->cert_days = 0;
    /* An unreadable expiry reads as expired (time 0). */
    if (exp == NULL || util_parse_rfc3339(exp, &out->expires_at) != 0)
        out->expires_at = 0;
    out->used = json_integer_value(json_object_get(rec, "used"));
    out->max_uses = json_integer_value(json_object_get(rec, "max_uses"));
    return AD_OK;
}

ad_err registry_enrollment_usable(const registry_enrollment *enr, time_t now)
{
    if (now >= enr->expires_at)
        return AD_EENREXPIRED;
    if (enr->used >= enr->max_uses)
        return AD_EENRUSED;
    return AD_OK;
}

ad_err registry_enrollment_by_token(store *st, const char *token,
                                    registry_enrollment *out)
{
    store_txn *tx = NULL;
    char digest[65], id[64];
    const char *hash;
    json_t *rec = NULL;
    ad_err e;

    memset(out, 0, sizeof(*out));
    if (token == NULL || strncmp(token, "enr_", 4) != 0 ||
        strlen(token) > 200)
        return AD_EBADCRED;
    util_sha256_hex(token, strlen(token), digest);
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    e = store_index_first(tx, STORE_IX_ENROLLMENT_TOKENS, digest, id,
                          sizeof(id));
    if (e == AD_OK)
        e = store_get(tx, STORE_ENROLLMENTS, id, &rec);
    store_read_end(tx);
    if (e != AD_OK)
        return e == AD_ENOTFOUND ? AD_EBADCRED : e;
    hash = json_string_value(json_object_get(rec, "token_sha256"));
    if (hash == NULL || !util_secret_equal(digest, hash))
        e = AD_EBADCRED;
    else
        e = registry_enrollment_decode(rec, out);
    json_decref(rec);
    return e;
}

ad_err registry_enrollment_get(store *st, const char *id,
                               registry_enrollment *out)
{
    json_t *rec = NULL;
    ad_err e = registry_record_get(st, STORE_ENROLLMENTS, id, &rec);

    memset(out, 0, sizeof(*out));
    if (e == AD_OK)
        e = registry_enrollment_decode(rec, out);
    json_decref(rec);
    return e;
}

ad_err registry_enrollment_psk(store *st, const uint8_t *seal_key,
                               const char *id, registry_enrollment *out,
                               char token[REGISTRY_ENR_TOKEN_MAX])
{
    json_t *rec = NULL;
    const char *sealed, *hash;
    uint8_t *plain = NULL;
    size_t n = 0;
    char aad[REGISTRY_ID_MAX + 32], digest[65];
    ad_err e;

    memset(out, 0, sizeof(*out));
    memset(token, 0, REGISTRY_ENR_TOKEN_MAX);
    if (seal_key == NULL || id == NULL || strlen(id) >= REGISTRY_ID_MAX)
        return AD_ENOTFOUND;
    if ((e = registry_record_get(st, STORE_ENROLLMENTS, id, &rec)) != AD_OK)
        goto out;
    sealed = json_string_value(json_object_get(rec, "token_sealed"));
    hash = json_string_value(json_object_get(rec, "token_sha256"));
    if (sealed == NULL || hash == NULL) {
        e = AD_ENOTFOUND;
        goto out;
    }
    token_aad(id, aad, sizeof(aad));
    if ((e = seal_open(seal_key, aad, sealed, &plain, &n)) != AD_OK)
        goto out;
    /* The sealed copy must be the token whose hash the record keeps. */
    util_sha256_hex(plain, n, digest);
    if (n == 0 || n >= REGISTRY_ENR_TOKEN_MAX || strlen((char *)plain) != n ||
        !util_secret_equal(digest, hash)) {
        e = AD_ECRYPTO;
        goto out;
    }
    memcpy(token, plain, n);
    e = registry_enrollment_decode(rec, out);
out:
    if (plain != NULL) {
        OPENSSL_cleanse(plain, n);
        free(plain);
    }
    if (e != AD_OK) {
        memset(out, 0, sizeof(*out));
        OPENSSL_cleanse(token, REGISTRY_ENR_TOKEN_MAX);
    }
    json_decref(rec);
    return e;
}

/* The public record: everything but the token's hash and sealed copy. */
static json_t *enrollment_view(const json_t *enrollment)
{
    json_t *v = registry_view_without(enrollment, "token_sha256");

    if (v)
        json_object_del(v, "token_sealed");
    return v;
}

/* AD_EUNKGROUP unless each of groups (NULL: none) is a group. */
static ad_err enrollment_groups_exist(store *st, const json_t *groups)
{
    json_t *v, *rec = NULL;
    size_t i;
    ad_err e;

    json_array_foreach(groups, i, v) {
        if (!json_is_string(v))
            continue;
        e = registry_record_get(st, STORE_GROUPS, json_string_value(v), &rec);
        json_decref(rec);
        rec = NULL;
        if (e != AD_OK)
            return e == AD_ENOTFOUND ? AD_EUNKGROUP : e;
    }
    return AD_OK;
}

/* An enrollment names groups, which must exist when it is created (read
 * in the write: a racing delete either sees the reference or has already
 * committed) and cannot be deleted while it names them. */
static ad_err enrollment_follow(store_txn *tx, const char *id,
                                const json_t *old_rec, const json_t *new_rec)
{
    ad_err e = AD_OK;

    if (new_rec != NULL && old_rec == NULL)
        e = registry_refs_check(tx, NULL, json_object_get(new_rec, "groups"),
                                NULL, 0);
    if (e == AD_OK)
        e = registry_refs_follow(tx, REGISTRY_REFS_ENROLLMENT, id, old_rec,
                                 new_rec);
    return e;
}

static const registry_hashed_kind enrollments = {
    STORE_ENROLLMENTS,   STORE_IX_ENROLLMENT_TOKENS,
    "token_sha256",      "token",
    "enrollment.create", "enrollment.delete",
    enrollment_view,     enrollment_follow};

ad_err registry_enrollment_create(store *st, const char *actor,
                                  const registry_enrollment_new *n,
                                  json_t **view)
{
    char id[40], token[64], digest[65], now[32], exp[32];
    time_t t = time(NULL);
    json_t *rec;
    ad_err e;

    *view = NULL;
    if (util_random_hex(8, id + 2, sizeof(id) - 2) != AD_OK ||
        util_random_token("enr_", 32, token, sizeof(token)) != AD_OK)
        return AD_EINTERNAL;
    id[0] = 'e';
    id[1] = '_';
    util_sha256_hex(token, strlen(token), digest);
    util_time_rfc3339(t, now, sizeof(now));
    util_time_rfc3339(t + (time_t)n->expires_in, exp, sizeof(exp));
    rec = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:o, s:I, s:s, s:s}", "id",
                    id, "name", n->name ? n->name : id, "id_pattern",
                    n->id_pattern, "max_uses", (json_int_t)n->max_uses, "used",
                    (json_int_t)0, "expires_at", exp, "groups",
                    n->groups ? json_deep_copy(n->groups) : json_array(),
                    "cert_days", (json_int_t)n->cert_days, "created_at", now,
                    "token_sha256", digest);
    if (rec == NULL)
        return AD_ENOMEM;
    /* Checked here for a quick answer; the device an enrollment makes is
     * checked again in the issuing write, which holds the reference. */
    e = enrollment_groups_exist(st, n->groups);
    if (e != AD_OK) {
        OPENSSL_cleanse(token, sizeof(token));
        json_decref(rec);
        return e;
    }
    if (n->gateway) {
        json_t *gw = NULL;

        e = registry_record_get(st, STORE_DEVICES, n->gateway, &gw);
        json_decref(gw);
        if (e == AD_OK && json_object_set_new(rec, "gateway",
                                              json_string(n->gateway)) != 0)
            e = AD_ENOMEM;
        if (e != AD_OK) {
            OPENSSL_cleanse(token, sizeof(token));
            json_decref(rec);
            return e == AD_ENOTFOUND ? AD_EGATEWAY : e;
        }
    }
    if (n->seal_key != NULL) {
        char aad[64], *sealed = NULL;

        token_aad(id, aad, sizeof(aad));
        e = seal_seal(n->seal_key, aad, token, strlen(token), &sealed);
        if (e == AD_OK &&
            json_object_set_new(rec, "token_sealed", json_string(sealed)) != 0)
            e = AD_ENOMEM;
        free(sealed);
        if (e != AD_OK) {
            OPENSSL_cleanse(token, sizeof(token));
            json_decref(rec);
            return e;
        }
    }
    /* The token is shown this once; only its hash (and, with a seal key,
     * its sealed copy) is kept. */
    e = registry_hashed_create(st, &enrollments, actor, id, rec, token, view);
    OPENSSL_cleanse(token, sizeof(token));
    json_decref(rec);
    return e;
}

ad_err registry_enrollment_view_get(store *st, const char *id, json_t **view)
{
    return registry_hashed_get(st, &enrollments, id, view);
}

ad_err registry_enrollments_list(store *st, const registry_page *pg,
                                 registry_list *out)
{
    return registry_hashed_list(st, &enrollments, pg, out);
}

ad_err registry_enrollment_delete(store *st, const char *actor, const char *id)
{
    return registry_hashed_delete(st, &enrollments, actor, id);
}

struct enrollment_update {
    const char *actor, *id;
    long long max_uses, expires_in;
    const json_t *groups;
    json_t *result; /* the record after the write */
    char *why;
    size_t whylen;
};

static ad_err enrollment_update_write(store_txn *tx, void *arg)
{
    struct enrollment_update *u = arg;
    json_t *rec = NULL, *detail = NULL;
    json_int_t used;
    char exp[32];
    ad_err e;

    json_decref(u->result); /* a retried write starts afresh */
    u->result = NULL;
    if ((e = store_get(tx, STORE_ENROLLMENTS, u->id, &rec)) != AD_OK)
        return e;
    used = json_integer_value(json_object_get(rec, "used"));
    if ((detail = json_object()) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    /* Read in this write, so a use racing the change is counted. */
    if (u->max_uses > 0 && u->max_uses < used) {
        e = ad_errf(AD_EFIELD, u->why, u->whylen,
                    "max_uses must be at least the uses made (%lld)",
                    (long long)used);
        goto out;
    }
    if (u->groups &&
        (e = registry_refs_check(tx, NULL, u->groups, u->why, u->whylen)) !=
            AD_OK)
        goto out;
    if (u->max_uses > 0) {
        json_object_set_new(rec, "max_uses", json_integer(u->max_uses));
        json_object_set_new(detail, "max_uses", json_integer(u->max_uses));
    }
    if (u->expires_in > 0) {
        util_time_rfc3339(time(NULL) + (time_t)u->expires_in, exp,
                          sizeof(exp));
        json_object_set_new(rec, "expires_at", json_string(exp));
        json_object_set_new(detail, "expires_at", json_string(exp));
    }
    if (u->groups) {
        json_t *old = json_pack("{s:O*}", "groups",
                                json_object_get(rec, "groups"));

        json_object_set_new(rec, "groups", json_deep_copy(u->groups));
        json_object_set_new(detail, "groups", json_deep_copy(u->groups));
        e = old ? registry_refs_follow(tx, REGISTRY_REFS_ENROLLMENT, u->id,
                                       old, rec)
                : AD_ENOMEM;
        json_decref(old);
        if (e != AD_OK)
            goto out;
    }
    e = store_put(tx, STORE_ENROLLMENTS, u->id, rec, 0);
    if (e == AD_OK)
        e = store_audit(tx, u->actor, "enrollment.update", u->id, detail);
    if (e == AD_OK && (u->result = enrollment_view(rec)) == NULL)
        e = AD_ENOMEM;
out:
    json_decref(detail);
    json_decref(rec);
    return e;
}

ad_err registry_enrollment_update(store *st, const char *actor,
                                  const char *id, long long max_uses,
                                  long long expires_in, const json_t *groups,
                                  json_t **view, char *why, size_t whylen)
{
    struct enrollment_update u;
    ad_err e;

    *view = NULL;
    if (whylen)
        why[0] = '\0';
    memset(&u, 0, sizeof(u));
    u.actor = actor;
    u.id = id;
    u.max_uses = max_uses;
    u.expires_in = expires_in;
    u.groups = groups;
    u.why = why;
    u.whylen = whylen;
    e = store_write(st, enrollment_update_write, &u);
    if (e == AD_OK)
        *view = u.result;
    else
        json_decref(u.result);
    return e;
}
