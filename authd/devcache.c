/* See devcache.h. Two caches on cache.c: device records by id, and
 * policy sets by their key — the JSON text of [policy names, group
 * names] as the device record lists them, which is all that decides what
 * a device's set contains. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "devcache.h"
#include "jsonflat.h"
#include "util.h"

enum {
    /* Sets are few (one per distinct combination of policies and
     * groups); this bounds them should a fleet give every device its
     * own. */
    SET_BUDGET_SHARE = 8, /* 1/8 of the device budget */
    SET_COST_BASE = 4096,
    ATTR_COST_PER_KEY = 64
};

struct polset {
    atomic_int refs;
    uint64_t policy_gen;   /* the generation it was read under */
    pol_set *shared;       /* NULL if the documents did not compile */
    unsigned uses;         /* pol_set_uses */
    json_t *docs;          /* [[name, document], ...] in source order */
    pol_source *sources;
    size_t nsources;
    json_t *group_names;   /* the device's groups, for ${group} */
    const char **groups;
    size_t ngroups;
};

/* A gateway's active children, for ${child.id}: sorted ids (the index
 * keeps them in byte order, which is strcmp's), in one block. */
struct chlist {
    atomic_int refs;
    size_t n;
    const char **ids; /* into the same block */
};

/* The per-device record: small and the same size for every device. */
typedef struct {
    polset *set;
    json_t *attributes;
    chlist *children;  /* NULL unless the set reads ${child.id} */
    char *gateway;     /* the device's gateway, or NULL */
    uint8_t status;
    uint8_t secret_known;
    uint8_t secret_mac[32];
    char incarnation[REGISTRY_INCARNATION_MAX];
} dev_rec;

struct devcache {
    store *st;
    cache *devices; /* id -> dev_rec */
    cache *sets;    /* key -> polset * */
    atomic_uint_fast64_t policy_gen;
    void (*race_hook)(void *arg);
    void *race_arg;
};

static void polset_release(polset *ps)
{
    if (ps == NULL || atomic_fetch_sub(&ps->refs, 1) != 1)
        return;
    pol_set_free(ps->shared);
    free(ps->sources);
    free(ps->groups);
    json_decref(ps->docs);
    json_decref(ps->group_names);
    free(ps);
}

static polset *polset_ref(polset *ps)
{
    atomic_fetch_add(&ps->refs, 1);
    return ps;
}

static void drop_set_slot(void *record)
{
    polset_release(*(polset **)record);
}

static void chlist_release(chlist *cl)
{
    if (cl != NULL && atomic_fetch_sub(&cl->refs, 1) == 1)
        free(cl);
}

static void drop_dev_rec(void *record)
{
    dev_rec *d = record;

    chlist_release(d->children);
    free(d->gateway);
    polset_release(d->set);
    json_decref(d->attributes);
    OPENSSL_cleanse(d->secret_mac, sizeof(d->secret_mac));
}

ad_err devcache_open(store *st, size_t budget, devcache **out)
{
    devcache *dc;
    ad_err e;

    *out = NULL;
    dc = calloc(1, sizeof(*dc));
    if (dc == NULL)
        return AD_ENOMEM;
    dc->st = st;
    atomic_init(&dc->policy_gen, 1);
    if ((e = cache_open(budget, sizeof(dev_rec), drop_dev_rec,
                        &dc->devices)) != AD_OK ||
        (e = cache_open(budget / SET_BUDGET_SHARE, sizeof(polset *),
                        drop_set_slot, &dc->sets)) != AD_OK) {
        devcache_close(dc);
        return e;
    }
    *out = dc;
    return AD_OK;
}

void devcache_close(devcache *dc)
{
    if (dc == NULL)
        return;
    /* Devices first: they hold references to sets. */
    cache_close(dc->devices);
    cache_close(dc->sets);
    free(dc);
}

void devcache_set_race_hook(devcache *dc, void (*hook)(void *arg), void *arg)
{
    dc->race_hook = hook;
    dc->race_arg = arg;
}

static void race_point(devcache *dc)
{
    if (dc->race_hook)
        dc->race_hook(dc->race_arg);
}

/* ---- policy sets --------------------------------------------------------- */

/* The names in a record's array of strings, in order, non-strings left
 * out (as the registry never writes them). */
static json_t *names_of(const json_t *arr)
{
    json_t *out = json_array(), *v;
    size_t i;

    if (out == NULL)
        return NULL;
    json_array_foreach(arr, i, v)
        if (json_is_string(v) && json_array_append(out, v) != 0) {
            json_decref(out);
            return NULL;
        }
    return out;
}

/* Appends the named policy to docs unless it is already there. A name
 * with no policy (deleted, or not created yet) contributes nothing. */
static ad_err add_policy(store_txn *tx, json_t *docs, const char *name)
{
    json_t *pair, *rec = NULL, *doc;
    size_t i;
    ad_err e;

    json_array_foreach(docs, i, pair)
        if (strcmp(json_string_value(json_array_get(pair, 0)), name) == 0)
            return AD_OK;
    e = store_get(tx, STORE_POLICIES, name, &rec);
    if (e == AD_ENOTFOUND)
        return AD_OK;
    if (e != AD_OK)
        return e;
    doc = json_object_get(rec, "document");
    e = doc == NULL ? AD_OK
        : json_array_append_new(docs, json_pack("[s, O]", name, doc)) == 0
            ? AD_OK
            : AD_ENOMEM;
    json_decref(rec);
    return e;
}

/* Reads and compiles the set for these names from tx. */
static ad_err polset_build(store_txn *tx, const json_t *policies,
                           const json_t *groups, uint64_t policy_gen,
                           polset **out)
{
    polset *ps;
    json_t *v, *group, *p;
    char err[256];
    size_t i, j;
    ad_err e = AD_ENOMEM;

    *out = NULL;
    ps = calloc(1, sizeof(*ps));
    if (ps == NULL)
        return AD_ENOMEM;
    atomic_init(&ps->refs, 1);
    ps->policy_gen = policy_gen;
    if ((ps->docs = json_array()) == NULL ||
        (ps->group_names = json_deep_copy(groups)) == NULL)
        goto out;
    json_array_foreach(policies, i, v)
        if ((e = add_policy(tx, ps->docs, json_string_value(v))) != AD_OK)
            goto out;
    json_array_foreach(groups, i, v) {
        group = NULL;
        e = store_get(tx, STORE_GROUPS, json_string_value(v), &group);
        if (e == AD_ENOTFOUND)
            continue;
        if (e != AD_OK)
            goto out;
        json_array_foreach(json_object_get(group, "policies"), j, p)
            if (json_is_string(p) &&
                (e = add_policy(tx, ps->docs, json_string_value(p))) !=
                    AD_OK) {
                json_decref(group);
                goto out;
            }
        json_decref(group);
    }
    e = AD_ENOMEM;
    ps->nsources = json_array_size(ps->docs);
    ps->ngroups = json_array_size(ps->group_names);
    ps->sources = calloc(ps->nsources + 1, sizeof(*ps->sources));
    ps->groups = calloc(ps->ngroups + 1, sizeof(*ps->groups));
    if (ps->sources == NULL || ps->groups == NULL)
        goto out;
    for (i = 0; i < ps->nsources; i++) {
        json_t *pair = json_array_get(ps->docs, i);

        ps->sources[i].name = json_string_value(json_array_get(pair, 0));
        ps->sources[i].doc = json_array_get(pair, 1);
    }
    json_array_foreach(ps->group_names, i, v)
        ps->groups[i] = json_string_value(v);
    /* Documents are validated when stored; one that still fails leaves
     * the set without a compiled form, and every decision with it is a
     * deny ("policy_error"). */
    if (pol_compile_shared(ps->sources, ps->nsources, &ps->shared, err,
                           sizeof(err)) == AD_OK)
        ps->uses = pol_set_uses(ps->shared);
    e = AD_OK;
    *out = ps;
    ps = NULL;
out:
    polset_release(ps);
    return e;
}

static int take_set(void *record, void *arg)
{
    *(polset **)arg = polset_ref(*(polset **)record);
    return 0;
}

/* The current set for these names (key: their JSON text), built from
 * tx if it is not cached. */
static ad_err polset_for(devcache *dc, store_txn *tx, const char *key,
                         const char *policies, const char *groups,
                         uint64_t policy_gen, polset **out)
{
    json_t *pj = NULL, *gj = NULL, *pnames = NULL, *gnames = NULL;
    polset *ps = NULL;
    ad_err e = AD_ENOMEM;

    *out = NULL;
    if (cache_use(dc->sets, key, take_set, &ps) != CACHE_MISS &&
        ps->policy_gen == policy_gen) {
        *out = ps;
        return AD_OK;
    }
    polset_release(ps);
    ps = NULL;
    if ((pj = json_loads(policies, 0, NULL)) == NULL ||
        (gj = json_loads(groups, 0, NULL)) == NULL ||
        (pnames = names_of(pj)) == NULL || (gnames = names_of(gj)) == NULL)
        goto out;
    if ((e = polset_build(tx, pnames, gnames, policy_gen, &ps)) != AD_OK)
        goto out;
    /* Sets are stamped with the policy generation they were read
     * under, and one older than the current generation is never used,
     * so the cache needs no generation of its own here: a set that a
     * policy change makes stale while it is built is cached and then
     * ignored (and the device load that asked for it reads again). */
    /* The cache's reference is taken before the entry is visible: once
     * it is, another thread may replace it and drop that reference. */
    polset_ref(ps);
    if (cache_put(dc->sets, key, &ps, SET_COST_BASE + strlen(key),
                  cache_note(dc->sets, key)) != 1)
        polset_release(ps);
    *out = ps;
out:
    json_decref(pj);
    json_decref(gj);
    json_decref(pnames);
    json_decref(gnames);
    return e;
}

/* ---- devices ------------------------------------------------------------- */

static size_t attributes_cost(const json_t *attrs)
{
    const char *k;
    json_t *v;
    size_t n = 0;

    json_object_foreach((json_t *)attrs, k, v)
        n += ATTR_COST_PER_KEY + strlen(k) + json_string_length(v);
    return n;
}

enum {
    CHILDREN_PAGE = 1000,
    /* Bounds what one gateway's entry holds; past it the load fails and
     * every decision for the gateway is a deny, never a partial list. */
    CHILDREN_MAX = REGISTRY_CHILDREN_MAX
};

/* Reads gateway id's active children from tx into one block: the
 * array of pointers, then the ids. *cost is its size for the budget. */
static ad_err children_load(store_txn *tx, const char *id, chlist **out,
                            size_t *cost)
{
    json_t *all, *page = NULL, *v;
    chlist *cl;
    char after[REGISTRY_ID_MAX] = "";
    size_t i, bytes = 0, n;
    int more = 1;
    char *p;
    ad_err e = AD_OK;

    *out = NULL;
    *cost = 0;
    if ((all = json_array()) == NULL)
        return AD_ENOMEM;
    while (more) {
        if ((e = store_index_list(tx, STORE_IX_ACTIVE_CHILDREN, id, after,
                                  CHILDREN_PAGE, &page, &more)) != AD_OK)
            goto out;
        if (json_array_size(all) + json_array_size(page) > CHILDREN_MAX) {
            e = AD_ETOOBIG;
            goto out;
        }
        json_array_foreach(page, i, v) {
            bytes += json_string_length(v) + 1;
            util_strlcpy(after, json_string_value(v), sizeof(after));
        }
        if (json_array_extend(all, page) != 0) {
            e = AD_ENOMEM;
            goto out;
        }
        json_decref(page);
        page = NULL;
    }
    n = json_array_size(all);
    *cost = sizeof(*cl) + (n + 1) * sizeof(char *) + bytes;
    if ((cl = malloc(*cost)) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    atomic_init(&cl->refs, 1);
    cl->n = n;
    cl->ids = (const char **)(void *)(cl + 1);
    p = (char *)(cl->ids + n + 1);
    json_array_foreach(all, i, v) {
        size_t len = json_string_length(v) + 1;

        memcpy(p, json_string_value(v), len);
        cl->ids[i] = p;
        p += len;
    }
    cl->ids[n] = NULL;
    *out = cl;
out:
    json_decref(page);
    json_decref(all);
    return e;
}

/* The fields of a device record a decision needs. */
typedef struct {
    const char *status, *incarnation;
    const char *policies, *groups; /* raw JSON text of the arrays */
    const char *attributes;        /* raw JSON text of the object */
    const char *gateway;
} dev_fields;

static const char *raw_or(const jsonflat *f, const char *key,
                          jsonflat_type type, const char *dflt)
{
    const jsonflat_field *v = jsonflat_get(f, key);

    return v && v->type == type ? v->value : dflt;
}

/* A miss reads one record per device, so it reads only what it needs:
 * jsonflat's nested mode leaves policies, groups and attributes as text
 * (the set's key, parsed only when the set itself must be built). A
 * record it does not take is read with jansson. */
static int fields_fast(const char *raw, size_t len, char *scratch,
                       size_t scratch_len, jsonflat *f, dev_fields *out)
{
    if (jsonflat_parse_nested(raw, len, scratch, scratch_len, f) != 0)
        return -1;
    out->status = raw_or(f, "status", JSONFLAT_STRING, NULL);
    out->incarnation = raw_or(f, "incarnation", JSONFLAT_STRING, "");
    out->policies = raw_or(f, "policies", JSONFLAT_RAW, "[]");
    out->groups = raw_or(f, "groups", JSONFLAT_RAW, "[]");
    out->attributes = raw_or(f, "attributes", JSONFLAT_RAW, NULL);
    out->gateway = raw_or(f, "gateway", JSONFLAT_STRING, NULL);
    return 0;
}

/* The compact JSON text of a record's array, "[]" if it has none. */
static char *array_text(const json_t *v)
{
    return json_is_array(v) ? json_dumps(v, JSON_COMPACT) : strdup("[]");
}

/* Reads the device and its set. AD_ENOTFOUND if there is no device. */
static ad_err dev_load(devcache *dc, const char *id, dev_rec *rec,
                       size_t *extra)
{
    store_txn *tx = NULL;
    json_t *device = NULL, *attrs = NULL;
    char small[4096], *scratch = small, *key = NULL, *pj = NULL, *gj = NULL;
    const char *raw;
    size_t len, need, plen, glen;
    dev_fields f;
    jsonflat flat;
    uint64_t policy_gen;
    ad_err e;

    memset(rec, 0, sizeof(*rec));
    *extra = 0;
    /* Noted before the read: a policy change racing with it makes what
     * was read stale at once rather than silently old. */
    policy_gen = atomic_load(&dc->policy_gen);
    if ((e = store_read_begin(dc->st, &tx)) != AD_OK)
        return e;
    if ((e = store_get_raw(tx, STORE_DEVICES, id, &raw, &len)) != AD_OK)
        goto out;
    e = AD_ENOMEM;
    need = 2 * len + 4 * JSONFLAT_FIELDS_MAX;
    if (need > sizeof(small) && (scratch = malloc(need)) == NULL)
        goto out;
    if (fields_fast(raw, len, scratch, need, &flat, &f) != 0) {
        if ((device = json_loadb(raw, len, 0, NULL)) == NULL) {
            e = AD_ESTORE;
            goto out;
        }
        f.status = json_string_value(json_object_get(device, "status"));
        f.incarnation =
            json_string_value(json_object_get(device, "incarnation"));
        if (f.incarnation == NULL)
            f.incarnation = "";
        f.attributes = NULL;
        f.gateway = json_string_value(json_object_get(device, "gateway"));
        if ((pj = array_text(json_object_get(device, "policies"))) == NULL ||
            (gj = array_text(json_object_get(device, "groups"))) == NULL)
            goto out;
        f.policies = pj;
        f.groups = gj;
        attrs = json_incref(json_object_get(device, "attributes"));
    }
    /* The key is the arrays' text; names that are equal but written
     * differently only cost a second copy of the same set. */
    plen = strlen(f.policies);
    glen = strlen(f.groups);
    if ((key = malloc(plen + glen + 2)) == NULL)
        goto out;
    memcpy(key, f.policies, plen);
    key[plen] = '\n';
    memcpy(key + plen + 1, f.groups, glen + 1);
    if ((e = polset_for(dc, tx, key, f.policies, f.groups, policy_gen,
                        &rec->set)) != AD_OK)
        goto out;
    /* A status we did not write is not active: decisions deny. */
    rec->status = registry_device_status_parse(f.status);
    util_strlcpy(rec->incarnation, f.incarnation, sizeof(rec->incarnation));
    if (f.gateway) {
        if ((rec->gateway = strdup(f.gateway)) == NULL) {
            e = AD_ENOMEM;
            goto out;
        }
        *extra += strlen(f.gateway) + 1;
    }
    if ((rec->set->uses & POL_USES_ATTRIBUTES) && device == NULL &&
        f.attributes != NULL)
        attrs = json_loads(f.attributes, 0, NULL);
    if ((rec->set->uses & POL_USES_ATTRIBUTES) && json_is_object(attrs) &&
        json_object_size(attrs) > 0) {
        rec->attributes = json_incref(attrs);
        *extra = attributes_cost(attrs);
    }
    /* A gateway's children are read in the same transaction as its
     * record: every change of a child rewrites that record, so the
     * device's invalidation is the children's too, and the shared set
     * is not touched. */
    if (rec->set->uses & POL_USES_CHILD) {
        size_t cost;

        if ((e = children_load(tx, id, &rec->children, &cost)) != AD_OK)
            goto out;
        *extra += cost;
    }
    e = AD_OK;
out:
    store_read_end(tx);
    json_decref(device);
    json_decref(attrs);
    free(key);
    free(pj);
    free(gj);
    if (scratch != small)
        free(scratch);
    if (e != AD_OK)
        drop_dev_rec(rec);
    return e;
}

typedef struct {
    devcache *dc;
    int (*fn)(const dev_view *v, void *arg);
    void *arg;
    int stale;
} use_arg;

/* The view of a record, borrowing its references. */
static void view_borrow(dev_view *v, const dev_rec *d)
{
    v->status = (registry_device_status)d->status;
    memcpy(v->incarnation, d->incarnation, sizeof(v->incarnation));
    v->set = d->set;
    v->attributes = d->attributes;
    v->children = d->children;
    v->gateway = d->gateway;
}

static int use_record(void *record, void *arg)
{
    dev_rec *d = record;
    use_arg *ua = arg;
    dev_view v;

    if (d->set->policy_gen != atomic_load(&ua->dc->policy_gen)) {
        ua->stale = 1;
        return 0;
    }
    view_borrow(&v, d);
    return ua->fn(&v, ua->arg);
}

ad_err devcache_use(devcache *dc, const char *id,
                    int (*fn)(const dev_view *v, void *arg), void *arg,
                    int *result)
{
    use_arg ua = {dc, fn, arg, 0};
    dev_rec rec;
    dev_view v;
    size_t extra;
    uint64_t noted;
    int tries, r;
    ad_err e;

    for (tries = 0; tries < 4; tries++) {
        ua.stale = 0;
        r = cache_use(dc->devices, id, use_record, &ua);
        if (r != CACHE_MISS && !ua.stale) {
            *result = r;
            return AD_OK;
        }
        noted = cache_note(dc->devices, id);
        if ((e = dev_load(dc, id, &rec, &extra)) != AD_OK)
            return e;
        race_point(dc);
        /* An entry too big to cache (a gateway with a great many
         * children) is answered from this read, which began after the
         * last invalidation seen: reading again would cost as much and
         * end the same way. */
        if (!cache_fits(dc->devices, extra))
            break;
        /* Cached: the next turn answers from the entry, under its lock.
         * Not cached: an invalidation of the device or of any policy
         * landed while we read, so what we read may predate it and is
         * not answered; read again. */
        if (rec.set->policy_gen == atomic_load(&dc->policy_gen) &&
            cache_put(dc->devices, id, &rec, extra, noted) == 1)
            continue;
        drop_dev_rec(&rec);
    }
    /* A reader starved by a storm of invalidations (or by an entry
     * evicted as soon as it is cached) answers from a read that began
     * after the last invalidation it saw, without caching it. */
    if (tries == 4 && (e = dev_load(dc, id, &rec, &extra)) != AD_OK)
        return e;
    view_borrow(&v, &rec);
    *result = fn(&v, arg);
    drop_dev_rec(&rec);
    return AD_OK;
}

void dev_view_ref(const dev_view *v, dev_view *out)
{
    *out = *v;
    polset_ref(out->set);
    if (out->attributes)
        json_incref(out->attributes);
    if (out->children)
        atomic_fetch_add(&out->children->refs, 1);
    /* Borrowed from the cache entry: not in a copy that outlives it. */
    out->gateway = NULL;
}

static int take_view(const dev_view *v, void *arg)
{
    dev_view_ref(v, arg);
    return 0;
}

ad_err devcache_get(devcache *dc, const char *id, dev_view *out)
{
    int unused;

    memset(out, 0, sizeof(*out));
    return devcache_use(dc, id, take_view, out, &unused);
}

void dev_view_release(dev_view *v)
{
    polset_release(v->set);
    json_decref(v->attributes);
    chlist_release(v->children);
    v->set = NULL;
    v->attributes = NULL;
    v->children = NULL;
}

void dev_view_vars(const dev_view *v, const char *device_id,
                   const char *client_id, const char *username,
                   const char *cert_cn, pol_vars *out)
{
    memset(out, 0, sizeof(*out));
    out->device_id = device_id;
    out->client_id = client_id;
    out->username = username;
    out->cert_cn = cert_cn;
    out->attributes = v->attributes;
    out->groups = v->set->groups;
    out->group_count = v->set->ngroups;
    if (v->children) {
        out->children = v->children->ids;
        out->child_count = v->children->n;
    }
}

const pol_set *dev_view_policy(const dev_view *v)
{
    return v->set->shared;
}

json_t *dev_view_statements(const dev_view *v, const pol_vars *vars)
{
    return pol_statements_bound(v->set->sources, v->set->nsources, vars);
}

ad_err dev_view_bind(const dev_view *v, const pol_vars *vars, pol_set **out)
{
    char err[256];

    return pol_compile(v->set->sources, v->set->nsources, vars, out, err,
                       sizeof(err));
}

/* ---- secrets ------------------------------------------------------------- */

static int mac_matches(void *record, void *arg)
{
    dev_rec *d = record;

    return d->secret_known &&
           CRYPTO_memcmp(d->secret_mac, arg, sizeof(d->secret_mac)) == 0;
}

int devcache_secret_known(devcache *dc, const char *id, const uint8_t mac[32])
{
    return cache_use(dc->devices, id, mac_matches, (void *)mac) == 1;
}

uint64_t devcache_note(devcache *dc, const char *id)
{
    return cache_note(dc->devices, id);
}

static int mac_store(void *record, void *arg)
{
    dev_rec *d = record;

    memcpy(d->secret_mac, arg, sizeof(d->secret_mac));
    d->secret_known = 1;
    return 0;
}

void devcache_secret_remember(devcache *dc, const char *id, uint64_t noted,
                              const uint8_t mac[32])
{
    cache_use_since(dc->devices, id, noted, mac_store, (void *)mac);
}

/* ---- invalidation -------------------------------------------------------- */

void devcache_forget(devcache *dc, const char *id)
{
    cache_forget(dc->devices, id);
}

void devcache_forget_policies(devcache *dc)
{
    /* The generation first: from here on no device record holding an
     * older set is answered from, and no set read before is cached. */
    atomic_fetch_add(&dc->policy_gen, 1);
    cache_forget_all(dc->sets);
}

void devcache_forget_all(devcache *dc)
{
    devcache_forget_policies(dc);
    cache_forget_all(dc->devices);
}

void devcache_get_stats(devcache *dc, devcache_stats *out)
{
    cache_get_stats(dc->devices, &out->devices);
    cache_get_stats(dc->sets, &out->sets);
}
