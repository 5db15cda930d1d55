/* See revocation.h. The CRL is an immutable snapshot swapped under a
 * mutex; readers copy it out. The CRL number lives in the store so it
 * only ever grows, across restarts and across nodes. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "registry.h"
#include "revocation.h"
#include "util.h"

struct crl_snapshot {
    uint8_t *der;
    size_t len;
    char *pem;
    uint64_t number;
    time_t this_update;
};

struct revocation {
    store *st;
    const ca *ca;
    checker *chk;
    long crl_seconds;
    pthread_mutex_t lock;         /* guards cur */
    pthread_mutex_t refresh_lock; /* one rebuild at a time; guards list */
    struct crl_snapshot cur;
    /* Every revoked certificate, loaded once from the store and then
     * appended to as revocations commit: a rebuild never rescans the
     * store, so revoking one by one stays linear, not quadratic. */
    ca_revoked *list;
    size_t n, cap;
    /* The serials in list, so that a change reported twice (or a resync
     * racing a report) never lists a certificate twice: an open-addressed
     * set of serial hashes, at most half full. */
    uint64_t *seen;
    size_t seen_cap;
};

static uint64_t serial_hash(const char *serial)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a; 0 marks a free slot */

    for (; *serial; serial++)
        h = (h ^ (unsigned char)*serial) * 1099511628211ull;
    return h ? h : 1;
}

/* Adds h to the set: 1 if new, 0 if present, -1 out of memory. */
static int seen_add(revocation *rv, uint64_t h)
{
    size_t i;

    if ((rv->n + 1) * 2 > rv->seen_cap) {
        size_t ncap = rv->seen_cap ? rv->seen_cap * 2 : 2048, j;
        uint64_t *ns = calloc(ncap, sizeof(*ns));

        if (ns == NULL)
            return -1;
        for (j = 0; j < rv->seen_cap; j++) {
            if (rv->seen[j] == 0)
                continue;
            for (i = rv->seen[j] & (ncap - 1); ns[i]; i = (i + 1) & (ncap - 1))
                ;
            ns[i] = rv->seen[j];
        }
        free(rv->seen);
        rv->seen = ns;
        rv->seen_cap = ncap;
    }
    for (i = h & (rv->seen_cap - 1); rv->seen[i];
         i = (i + 1) & (rv->seen_cap - 1))
        if (rv->seen[i] == h)
            return 0;
    rv->seen[i] = h;
    return 1;
}

static void snapshot_free(struct crl_snapshot *s)
{
    free(s->der);
    free(s->pem);
    memset(s, 0, sizeof(*s));
}

/* Appends one entry (serial hex, RFC 3339 time, reason name) to the
 * in-memory list (under refresh_lock). Entries that do not parse are
 * skipped: they cannot have come from us. */
static ad_err list_add(revocation *rv, const char *serial, const char *at,
                       const char *reason_name)
{
    ca_reason reason = CA_REASON_UNSPECIFIED;
    ca_revoked *e;
    time_t t = 0;

    if (rv->n == rv->cap) {
        size_t ncap = rv->cap ? rv->cap * 2 : 1024;
        ca_revoked *nl;

        if (ncap > CA_CRL_MAX_ENTRIES)
            return AD_ETOOBIG;
        nl = realloc(rv->list, ncap * sizeof(*nl));
        if (nl == NULL)
            return AD_ENOMEM;
        rv->list = nl;
        rv->cap = ncap;
    }
    e = &rv->list[rv->n];
    if (serial == NULL ||
        ca_serial_from_hex(serial, e->serial, &e->serial_len) != AD_OK)
        return AD_OK;
    switch (seen_add(rv, serial_hash(serial))) {
    case 0:
        return AD_OK; /* listed already */
    case -1:
        return AD_ENOMEM;
    default:
        break;
    }
    if (at)
        util_parse_rfc3339(at, &t);
    if (reason_name)
        ca_reason_from_name(reason_name, &reason);
    /* removeFromCRL belongs to delta CRLs; show it unspecified. */
    if (reason == CA_REASON_REMOVE_FROM_CRL)
        reason = CA_REASON_UNSPECIFIED;
    e->revoked_at = (int64_t)t;
    e->reason = reason;
    rv->n++;
    return AD_OK;
}

/* Reads every revoked certificate from the CRL table: at start, and
 * again when the change feed may have missed some. */
static ad_err load_revoked(revocation *rv)
{
    char cursor[CA_SERIAL_HEX_MAX + 1] = "";
    const char *after = NULL;
    store_txn *tx = NULL;
    json_t *items = NULL, *v;
    size_t i;
    int more = 1;
    ad_err e = AD_OK;

    if ((e = store_read_begin(rv->st, &tx)) != AD_OK)
        return e;
    while (more && e == AD_OK) {
        e = store_list(tx, STORE_REVOKED_CERTS, "", after, 1000, &items,
                       &more);
        if (e != AD_OK)
            break;
        json_array_foreach(items, i, v) {
            const char *serial = json_string_value(json_object_get(v, "serial"));

            if (serial == NULL)
                continue;
            util_strlcpy(cursor, serial, sizeof(cursor));
            e = list_add(rv, serial,
                         json_string_value(json_object_get(v, "revoked_at")),
                         json_string_value(json_object_get(v, "reason")));
            if (e != AD_OK)
                break;
        }
        json_decref(items);
        items = NULL;
        after = cursor;
    }
    store_read_end(tx);
    return e;
}

/* Builds a CRL with the given number from the in-memory list (under
 * refresh_lock). */
static ad_err rebuild_locked(revocation *rv, uint64_t number, char *err,
                             size_t errlen)
{
    struct crl_snapshot fresh, old;
    time_t now = time(NULL);
    uint64_t t0 = util_now_ns();
    ad_err e;

    memset(&fresh, 0, sizeof(fresh));
    fresh.number = number;
    e = ca_crl_build(rv->ca, rv->list, rv->n, fresh.number, (int64_t)now,
                         (int64_t)now + rv->crl_seconds, &fresh.der,
                         &fresh.len, err, errlen);
    if (e == AD_OK) {
        fresh.pem = ca_crl_pem(fresh.der, fresh.len);
        if (fresh.pem == NULL)
            e = AD_ENOMEM;
    }
    fresh.this_update = now;
    if (e != AD_OK) {
        snapshot_free(&fresh);
        return e;
    }
    pthread_mutex_lock(&rv->lock);
    old = rv->cur;
    rv->cur = fresh;
    pthread_mutex_unlock(&rv->lock);
    snapshot_free(&old);
    log_line("info", "event=crl_built number=%llu entries=%zu dur_us=%llu",
             (unsigned long long)fresh.number, rv->n,
             (unsigned long long)((util_now_ns() - t0) / 1000));
    return AD_OK;
}

static ad_err advance_write(store_txn *tx, void *arg)
{
    return registry_crl_advance(tx, arg);
}

ad_err revocation_open(store *st, const ca *c, checker *chk, long crl_hours,
                       revocation **out, char *err, size_t errlen)
{
    revocation *rv;
    uint64_t number = 0;
    ad_err e;

    *out = NULL;
    rv = calloc(1, sizeof(*rv));
    if (rv == NULL)
        return AD_ENOMEM;
    rv->st = st;
    rv->ca = c;
    rv->chk = chk;
    rv->crl_seconds = (crl_hours > 0 ? crl_hours : 168) * 3600;
    pthread_mutex_init(&rv->lock, NULL);
    pthread_mutex_init(&rv->refresh_lock, NULL);
    /* A new CRL gets a new number, taken from the store's one sequence;
     * other nodes rebuild with it when its change reaches them. */
    if ((e = load_revoked(rv)) == AD_OK &&
        (e = store_write(st, advance_write, &number)) == AD_OK) {
        pthread_mutex_lock(&rv->refresh_lock);
        e = rebuild_locked(rv, number, err, errlen);
        pthread_mutex_unlock(&rv->refresh_lock);
    }
    if (e != AD_OK) {
        revocation_close(rv);
        return e;
    }
    *out = rv;
    return AD_OK;
}

void revocation_close(revocation *rv)
{
    if (rv == NULL)
        return;
    snapshot_free(&rv->cur);
    free(rv->list);
    free(rv->seen);
    pthread_mutex_destroy(&rv->lock);
    pthread_mutex_destroy(&rv->refresh_lock);
    free(rv);
}

static void log_build_failed(ad_err e, const char *err)
{
    log_line("error", "event=crl_build_failed code=%s message=\"%s\"",
             ad_err_code(e), err);
}

/* Rebuilds with the store's number if it is newer than ours, or always
 * (resync: then the whole revoked table is read again first; the set
 * drops what is listed already). */
static void rebuild_from_store(revocation *rv, int resync)
{
    char err[256] = "";
    uint64_t number = 0, have;
    ad_err e = AD_OK;

    pthread_mutex_lock(&rv->refresh_lock);
    pthread_mutex_lock(&rv->lock);
    have = rv->cur.number;
    pthread_mutex_unlock(&rv->lock);
    if (resync && (e = load_revoked(rv)) != AD_OK)
        util_strlcpy(err, "cannot read the revoked certificates", sizeof(err));
    if (e == AD_OK)
        e = registry_crl_number(rv->st, &number);
    if (e == AD_OK && (number > have || resync))
        e = rebuild_locked(rv, number > have ? number : have, err,
                           sizeof(err));
    pthread_mutex_unlock(&rv->refresh_lock);
    if (e != AD_OK)
        log_build_failed(e, err);
}

void revocation_revoked_changed(revocation *rv, const char *serial)
{
    store_txn *tx = NULL;
    json_t *rec = NULL;
    ad_err e;

    if ((e = store_read_begin(rv->st, &tx)) == AD_OK)
        e = store_get(tx, STORE_REVOKED_CERTS, serial, &rec);
    store_read_end(tx);
    if (e == AD_OK) {
        pthread_mutex_lock(&rv->refresh_lock);
        e = list_add(rv, serial,
                     json_string_value(json_object_get(rec, "revoked_at")),
                     json_string_value(json_object_get(rec, "reason")));
        pthread_mutex_unlock(&rv->refresh_lock);
    }
    json_decref(rec);
    if (e != AD_OK && e != AD_ENOTFOUND)
        log_build_failed(e, "cannot list a revoked certificate");
}

void revocation_number_changed(revocation *rv)
{
    rebuild_from_store(rv, 0);
}

void revocation_resync(revocation *rv)
{
    rebuild_from_store(rv, 1);
}

void revocation_tick(revocation *rv, time_t now)
{
    time_t built;
    uint64_t number;
    ad_err e;

    pthread_mutex_lock(&rv->lock);
    built = rv->cur.this_update;
    pthread_mutex_unlock(&rv->lock);
    /* The new number's change makes every node (this one included)
     * rebuild. */
    if (now - built > rv->crl_seconds / 2 &&
        (e = store_write(rv->st, advance_write, &number)) != AD_OK)
        log_build_failed(e, "cannot advance the CRL number");
}

time_t revocation_crl_built(revocation *rv)
{
    time_t built;

    pthread_mutex_lock(&rv->lock);
    built = rv->cur.this_update;
    pthread_mutex_unlock(&rv->lock);
    return built;
}

ad_err revocation_crl_der(revocation *rv, uint8_t **der, size_t *len)
{
    ad_err e = AD_OK;

    pthread_mutex_lock(&rv->lock);
    *der = malloc(rv->cur.len ? rv->cur.len : 1);
    if (*der == NULL)
        e = AD_ENOMEM;
    else
        memcpy(*der, rv->cur.der, rv->cur.len);
    *len = rv->cur.len;
    pthread_mutex_unlock(&rv->lock);
    return e;
}

ad_err revocation_crl_pem(revocation *rv, char **pem)
{
    pthread_mutex_lock(&rv->lock);
    *pem = rv->cur.pem ? strdup(rv->cur.pem) : NULL;
    pthread_mutex_unlock(&rv->lock);
    return *pem ? AD_OK : AD_ENOMEM;
}

static void error_response(ca_ocsp_error status, uint8_t **resp,
                           size_t *resp_len)
{
    *resp = malloc(CA_OCSP_ERROR_LEN);
    *resp_len = *resp ? ca_ocsp_error_response(status, *resp) : 0;
}

void revocation_ocsp(revocation *rv, const uint8_t *req, size_t len,
                     uint8_t **resp, size_t *resp_len)
{
    ca_ocsp_request *parsed;
    ca_ocsp_answer answers[CA_OCSP_MAX_IDS];
    int64_t now = (int64_t)time(NULL);
    size_t i, ours = 0;

    *resp = NULL;
    *resp_len = 0;
    /* About 8 KiB: keep it off the (small) connection thread stacks. */
    parsed = malloc(sizeof(*parsed));
    if (parsed == NULL)
        return;
    if (ca_ocsp_request_parse(req, len, parsed, NULL, 0) != AD_OK) {
        error_response(CA_OCSP_MALFORMED_REQUEST, resp, resp_len);
        goto out;
    }
    memset(answers, 0, sizeof(answers));
    for (i = 0; i < parsed->count; i++) {
        int revoked = 0, reason = 0;
        int64_t revoked_at = 0;

        answers[i].this_update = now;
        answers[i].next_update = 0; /* we always know the latest */
        answers[i].status = CA_OCSP_UNKNOWN;
        if (!ca_ocsp_id_is_ours(rv->ca, &parsed->ids[i]))
            continue;
        ours++;
        if (checker_cert_status(rv->chk, parsed->ids[i].serial_hex, &revoked,
                                &revoked_at, &reason) != AD_OK)
            continue; /* never issued by us: unknown */
        if (revoked) {
            answers[i].status = CA_OCSP_REVOKED;
            answers[i].revoked_at = revoked_at;
            answers[i].reason = (ca_reason)reason;
        } else {
            answers[i].status = CA_OCSP_GOOD;
        }
    }
    if (ours == 0) {
        /* Not a CA we answer for (RFC 6960 2.3). */
        error_response(CA_OCSP_UNAUTHORIZED, resp, resp_len);
        goto out;
    }
    if (ca_ocsp_respond(rv->ca, parsed, answers, now, resp, resp_len, NULL,
                        0) != AD_OK)
        error_response(CA_OCSP_INTERNAL_ERROR, resp, resp_len);
out:
    free(parsed);
}
