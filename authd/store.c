/* store.h's dispatch: picks a backend from the URL and forwards each call
 * to it (store_lmdb.c, store_pg.c), after the checks both backends share
 * (key bounds, write-only operations, out-parameters zeroed); and
 * store_copy, which moves a whole store from one backend to another. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#include "store_int.h"

const char *const store_table_names[STORE_TABLE__COUNT] = {
    "devices", "certs", "enrollments", "apikeys", "meta", "policies", "groups",
    "revoked_jtis", "device_secrets", "revoked_certs",
};
const char *const store_index_names[STORE_IX__COUNT] = {
    "ix_certs_by_device", "ix_certs_by_enrollment", "ix_certs_by_fpr",
    "ix_enrollment_tokens", "ix_apikey_hashes", "ix_children_by_gateway",
    "ix_active_children", "ix_devices_by_policy", "ix_devices_by_group",
    "ix_groups_by_policy", "ix_enrollments_by_group",
};

/* LMDB rejects empty keys and keys over 511 bytes; every key we store is
 * non-empty and bounded, in both backends alike. */
int store_key_ok(const char *key)
{
    size_t n = key ? strlen(key) : 0;

    return n > 0 && n <= 400;
}

/* ---- the change feed ----------------------------------------------- */

ad_err store_queue_and_wait(store *s, pthread_mutex_t *lock,
                            pthread_cond_t *queued, store_pending **head,
                            store_pending **tail, ad_err (*refused)(store *s),
                            store_write_fn fn, void *arg)
{
    store_pending p;
    ad_err e;

    memset(&p, 0, sizeof(p));
    p.fn = fn;
    p.arg = arg;
    pthread_cond_init(&p.answered, NULL);
    pthread_mutex_lock(lock);
    if ((e = refused(s)) != AD_OK) {
        pthread_mutex_unlock(lock);
        pthread_cond_destroy(&p.answered);
        return e;
    }
    if (*tail)
        (*tail)->next = &p;
    else
        *head = &p;
    *tail = &p;
    pthread_cond_signal(queued);
    while (!p.done)
        pthread_cond_wait(&p.answered, lock);
    pthread_mutex_unlock(lock);
    pthread_cond_destroy(&p.answered);
    return p.result;
}

store_pending *store_queue_take(pthread_mutex_t *lock, pthread_cond_t *queued,
                                store_pending **head, store_pending **tail,
                                const int *stopping, int *n)
{
    store_pending *batch, *p;

    while (*head == NULL && !*stopping)
        pthread_cond_wait(queued, lock);
    if (*head == NULL)
        return NULL;
    batch = p = *head;
    for (*n = 1; *n < STORE_BATCH_MAX && p->next != NULL; (*n)++)
        p = p->next;
    *head = p->next;
    if (*head == NULL)
        *tail = NULL;
    p->next = NULL;
    return batch;
}

void store_watcher_init(store_watcher *w)
{
    pthread_rwlock_init(&w->lock, NULL);
    w->fn = NULL;
    w->arg = NULL;
}

void store_watcher_destroy(store_watcher *w)
{
    pthread_rwlock_destroy(&w->lock);
}

void store_watcher_set(store_watcher *w, store_watch_fn fn, void *arg)
{
    pthread_rwlock_wrlock(&w->lock);
    w->fn = fn;
    w->arg = arg;
    pthread_rwlock_unlock(&w->lock);
}

store_watch_fn store_watcher_hold(store_watcher *w, void **arg)
{
    pthread_rwlock_rdlock(&w->lock);
    *arg = w->arg;
    return w->fn;
}

void store_watcher_release(store_watcher *w)
{
    pthread_rwlock_unlock(&w->lock);
}

int store_chg_append(store_chg **v, size_t *n, size_t *cap, store_table t,
                     const char *key)
{
    char *k;

    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        store_chg *nv = realloc(*v, ncap * sizeof(*nv));

        if (nv == NULL)
            return -1;
        *v = nv;
        *cap = ncap;
    }
    if ((k = strdup(key)) == NULL)
        return -1;
    (*v)[*n].t = t;
    (*v)[*n].key = k;
    (*n)++;
    return 0;
}

struct settle {
    const store_chg *c;
    size_t place;
};

/* By (table, key), then by place, so a key's last change ends its run. */
static int settle_cmp(const void *a, const void *b)
{
    const struct settle *x = a, *y = b;
    int c;

    if (x->c->t != y->c->t)
        return x->c->t < y->c->t ? -1 : 1;
    if ((c = strcmp(x->c->key, y->c->key)) != 0)
        return c;
    return x->place < y->place ? -1 : x->place > y->place;
}

size_t store_chg_settle(store_chg *v, size_t n)
{
    struct settle *s;
    size_t i, out = 0;

    if (n < 2)
        return n;
    /* Out of memory: repeats stay, which only costs a watcher a second
     * look at the same key. */
    if ((s = malloc(n * sizeof(*s))) == NULL)
        return n;
    for (i = 0; i < n; i++) {
        s[i].c = &v[i];
        s[i].place = i;
    }
    qsort(s, n, sizeof(*s), settle_cmp);
    /* An earlier change of a key that changes again later is dropped.
     * Marked first, freed after: the sorted entries point into v. */
    for (i = 0; i + 1 < n; i++)
        if (s[i].c->t == s[i + 1].c->t &&
            strcmp(s[i].c->key, s[i + 1].c->key) == 0)
            s[i].place = n; /* dropped */
    for (i = 0; i < n; i++)
        if (s[i].place == n)
            v[s[i].c - v].t = STORE_TABLE__COUNT;
    free(s);
    for (i = 0; i < n; i++) {
        if (v[i].t == STORE_TABLE__COUNT)
            free(v[i].key);
        else
            v[out++] = v[i];
    }
    return out;
}

/* ---- opening ------------------------------------------------------- */

static int has_scheme(const char *url, const char *scheme)
{
    return strncmp(url, scheme, strlen(scheme)) == 0;
}

ad_err store_open_url(const char *url, const store_options *opt, store **out,
                      char *err, size_t errlen)
{
    static const store_options none = {NULL, 0, 0};
    char path[4096];

    *out = NULL;
    if (opt == NULL)
        opt = &none;
    if (url == NULL)
        return ad_errf(AD_EFIELD, err, errlen, "no store URL");
    if (has_scheme(url, "lmdb:")) {
        const char *p = url + strlen("lmdb:");

        if (*p == '\0') {
            if (opt->data_dir == NULL || *opt->data_dir == '\0')
                return ad_errf(AD_EFIELD, err, errlen,
                               "store URL \"lmdb:\" needs a data directory");
            if ((size_t)snprintf(path, sizeof(path), "%s/store",
                                 opt->data_dir) >= sizeof(path))
                return ad_errf(AD_EFIELD, err, errlen,
                               "data directory path too long");
            p = path;
        }
        return store_lmdb_open(p, opt->map_mb, out, err, errlen);
    }
    if (has_scheme(url, "postgres://") || has_scheme(url, "postgresql://"))
        return store_pg_open(url, opt, out, err, errlen);
    /* Name only the scheme: the rest may hold a password. */
    return ad_errf(AD_EFIELD, err, errlen,
                   "store URL: unknown scheme (use lmdb: or postgresql://)");
}

ad_err store_open(const char *dir, size_t map_mb, store **out, char *err,
                  size_t errlen)
{
    return store_lmdb_open(dir, map_mb, out, err, errlen);
}

store_backend store_backend_of(store *s)
{
    return s->ops->backend;
}

int store_ready(store *s)
{
    return s->ops->ready(s);
}

void store_close(store *s)
{
    if (s != NULL)
        s->ops->close(s);
}

void store_watch(store *s, store_watch_fn fn, void *arg)
{
    s->ops->watch(s, fn, arg);
}

void store_test_sync_hook(store *s, int (*hook)(void *arg), void *arg)
{
    s->ops->test_sync_hook(s, hook, arg);
}

void store_commit_stats(store *s, store_stats *out)
{
    memset(out, 0, sizeof(*out));
    s->ops->commit_stats(s, out);
}

/* ---- transactions --------------------------------------------------- */

ad_err store_read_begin(store *s, store_txn **out)
{
    *out = NULL;
    return s->ops->read_begin(s, out);
}

void store_read_end(store_txn *tx)
{
    if (tx != NULL)
        tx->s->ops->read_end(tx);
}

ad_err store_write(store *s, store_write_fn fn, void *arg)
{
    return s->ops->write(s, fn, arg);
}

/* ---- records --------------------------------------------------------- */

ad_err store_get_raw(store_txn *tx, store_table t, const char *key,
                     const char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    if ((unsigned)t >= STORE_TABLE__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key))
        return AD_ENOTFOUND;
    return tx->s->ops->get_raw(tx, t, key, text, len);
}

ad_err store_get(store_txn *tx, store_table t, const char *key, json_t **out)
{
    json_error_t jerr;
    const char *text;
    size_t len;
    ad_err e;

    *out = NULL;
    if ((e = store_get_raw(tx, t, key, &text, &len)) != AD_OK)
        return e;
    *out = json_loadb(text, len, 0, &jerr);
    return *out ? AD_OK : AD_ESTORE;
}

ad_err store_put_text(store_txn *tx, store_table t, const char *key,
                      const char *text, size_t len, int flags)
{
    if (!tx->writable || (unsigned)t >= STORE_TABLE__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key))
        return AD_EFIELD;
    if (len > STORE_RECORD_MAX)
        return AD_ETOOBIG;
    return tx->s->ops->put_text(tx, t, key, text, len, flags);
}

ad_err store_put(store_txn *tx, store_table t, const char *key,
                 const json_t *val, int flags)
{
    char *text;
    ad_err e;

    if (!tx->writable)
        return AD_EINTERNAL;
    text = json_dumps(val, JSON_COMPACT);
    if (text == NULL)
        return AD_ENOMEM;
    e = store_put_text(tx, t, key, text, strlen(text), flags);
    free(text);
    return e;
}

ad_err store_del(store_txn *tx, store_table t, const char *key)
{
    if (!tx->writable || (unsigned)t >= STORE_TABLE__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key))
        return AD_ENOTFOUND;
    return tx->s->ops->del(tx, t, key);
}

ad_err store_list(store_txn *tx, store_table t, const char *prefix,
                  const char *after, size_t limit, json_t **items, int *more)
{
    *items = NULL;
    *more = 0;
    if ((unsigned)t >= STORE_TABLE__COUNT)
        return AD_EINTERNAL;
    return tx->s->ops->list(tx, t, prefix ? prefix : "", after, limit, items,
                            more);
}

ad_err store_count(store_txn *tx, store_table t, uint64_t *n)
{
    char after[512] = "";
    json_t *pairs = NULL;
    int more = 1;
    ad_err e = AD_OK;

    *n = 0;
    if ((unsigned)t >= STORE_TABLE__COUNT)
        return AD_EINTERNAL;
    while (more && e == AD_OK) {
        size_t len;
        const char *last;

        more = 0;
        e = tx->s->ops->table_scan(tx, t, after, 1000, &pairs, &more);
        len = json_array_size(pairs);
        if (e == AD_OK && len > 0) {
            *n += len;
            last = json_string_value(
                json_array_get(json_array_get(pairs, len - 1), 0));
            if (last == NULL || strlen(last) >= sizeof(after))
                e = AD_ESTORE;
            else
                memcpy(after, last, strlen(last) + 1);
        }
        json_decref(pairs);
        pairs = NULL;
    }
    return e;
}

const char *store_table_name(store_table t)
{
    return (unsigned)t < STORE_TABLE__COUNT ? store_table_names[t] : "?";
}

/* ---- indexes --------------------------------------------------------- */

ad_err store_index_add(store_txn *tx, store_index ix, const char *key,
                       const char *val)
{
    if (!tx->writable || (unsigned)ix >= STORE_IX__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key) || !store_key_ok(val))
        return AD_EFIELD;
    return tx->s->ops->index_add(tx, ix, key, val);
}

ad_err store_index_del(store_txn *tx, store_index ix, const char *key,
                       const char *val)
{
    if (!tx->writable || (unsigned)ix >= STORE_IX__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key))
        return AD_ENOTFOUND;
    if (val != NULL && !store_key_ok(val))
        return AD_OK; /* no such value can be stored */
    return tx->s->ops->index_del(tx, ix, key, val);
}

ad_err store_index_list(store_txn *tx, store_index ix, const char *key,
                        const char *after, size_t limit, json_t **values,
                        int *more)
{
    *values = NULL;
    *more = 0;
    if ((unsigned)ix >= STORE_IX__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key)) {
        *values = json_array();
        return *values ? AD_OK : AD_ENOMEM;
    }
    return tx->s->ops->index_list(tx, ix, key, after, limit, values, more);
}

ad_err store_index_first(store_txn *tx, store_index ix, const char *key,
                         char *out, size_t outlen)
{
    if (outlen)
        out[0] = '\0';
    if ((unsigned)ix >= STORE_IX__COUNT)
        return AD_EINTERNAL;
    if (!store_key_ok(key))
        return AD_ENOTFOUND;
    return tx->s->ops->index_first(tx, ix, key, out, outlen);
}

/* ---- audit and events ------------------------------------------------ */

ad_err store_audit(store_txn *tx, const char *actor, const char *action,
                   const char *target, const json_t *detail)
{
    if (!tx->writable)
        return AD_EINTERNAL;
    return tx->s->ops->audit(tx, actor, action, target, detail);
}

ad_err store_audit_list(store_txn *tx, uint64_t after, size_t limit,
                        json_t **items, int *more)
{
    *items = NULL;
    *more = 0;
    return tx->s->ops->audit_list(tx, after, limit, items, more);
}

ad_err store_audit_rlist(store_txn *tx, uint64_t before, size_t limit,
                         json_t **items, int *more)
{
    *items = NULL;
    *more = 0;
    return tx->s->ops->audit_rlist(tx, before, limit, items, more);
}

char *store_audit_canonical(const json_t *entry)
{
    /* Sorted keys and no spaces: one text per entry whatever order its
     * members were written in; jansson writes UTF-8 as is. */
    char *text = json_dumps(entry, JSON_COMPACT | JSON_SORT_KEYS), *p;

    /* jansson writes \u001F, most others (Python's json) \u001f: lower
     * case, so that anyone can recompute the form. Outside strings JSON
     * has no backslash; inside, each one starts an escape. */
    for (p = text; p && *p; p++) {
        if (*p != '\\')
            continue;
        if (*++p == '\0')
            break;
        if (*p == 'u') {
            int i;

            for (i = 1; i <= 4 && p[i]; i++)
                if (p[i] >= 'A' && p[i] <= 'F')
                    p[i] = (char)(p[i] - 'A' + 'a');
            p += i - 1;
        }
    }
    return text;
}

ad_err store_audit_hash(const json_t *entry, char hex[STORE_AUDIT_HASH_HEX])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char *text = store_audit_canonical(entry);
    int i, ok;

    hex[0] = '\0';
    if (text == NULL)
        return AD_ENOMEM;
    ok = EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL);
    free(text);
    if (ok != 1 || mdlen != sizeof(md))
        return AD_ECRYPTO;
    for (i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return AD_OK;
}

/* Entries read per snapshot step while verifying. */
enum { VERIFY_PAGE = 1000 };

ad_err store_audit_verify(store *st, store_audit_check *out)
{
    store_txn *tx = NULL;
    json_t *items = NULL;
    uint64_t after = 0, want = 1;
    char prev[STORE_AUDIT_HASH_HEX] = "";
    int more = 1, chained = 0;
    ad_err e;

    memset(out, 0, sizeof(*out));
    out->ok = 1;
    /* One snapshot: entries appended meanwhile are not half seen. */
    if ((e = store_read_begin(st, &tx)) != AD_OK)
        return e;
    while (more && out->ok) {
        size_t i;
        json_t *it;

        json_decref(items);
        items = NULL;
        if ((e = store_audit_list(tx, after, VERIFY_PAGE, &items, &more)) !=
            AD_OK)
            goto out;
        json_array_foreach(items, i, it) {
            json_int_t seq = json_integer_value(json_object_get(it, "seq"));
            const char *ph = json_string_value(json_object_get(it, "prev_hash"));

            if (seq <= 0 || (uint64_t)seq != want) {
                out->ok = 0;
                out->first_bad = want; /* missing (or renumbered) */
                break;
            }
            if (ph != NULL) {
                chained = 1;
                if (strcmp(ph, want == 1 ? STORE_AUDIT_ZERO_HASH : prev) != 0) {
                    out->ok = 0;
                    out->first_bad = want == 1 ? 1 : want - 1;
                    break;
                }
            } else if (chained) {
                out->ok = 0;
                out->first_bad = want;
                break;
            } else {
                out->unchained++;
            }
            if ((e = store_audit_hash(it, prev)) != AD_OK)
                goto out;
            out->entries++;
            after = want++;
        }
    }
    if (out->ok)
        memcpy(out->head, prev, sizeof(out->head));
    else
        out->entries = 0;
out:
    json_decref(items);
    store_read_end(tx);
    return e;
}

ad_err store_event_append(store_txn *tx, const char *type, const json_t *data)
{
    if (!tx->writable || type == NULL)
        return AD_EINTERNAL;
    return tx->s->ops->event_append(tx, type, data);
}

ad_err store_event_list(store_txn *tx, uint64_t after, size_t limit,
                        json_t **items, int *more)
{
    *items = NULL;
    *more = 0;
    return tx->s->ops->event_list(tx, after, limit, items, more);
}
