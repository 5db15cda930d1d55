/* Compiling a device's statements into tries and deciding with them. Each
 * (effect, topic action) gets a trie over levels whose nodes remember the
 * lowest statement index ending there, so a decision walks at most the
 * topic's depth (branching only where both a literal and '+' child
 * exist) whatever the number of statements. Connect decisions use sorted
 * arrays of exact client ids and of glob prefixes. The set is immutable
 * once built; deciding reads it and allocates nothing. */
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"

/* "No statement": above every real index, so min() ignores it. */
#define NONE UINT32_MAX

enum {
    ARENA_FIRST = 1024,
    ARENA_CHUNK = 64 * 1024,
    N_TOPIC_ACTIONS = 3 /* publish, subscribe, receive */
};

/* ---- arena: nodes and strings live as long as the set --------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

static void *arena_alloc(chunk **head, size_t n)
{
    chunk *c = *head;
    size_t a = sizeof(max_align_t);
    void *p;

    n = (n + a - 1) / a * a;
    if (c == NULL || c->cap - c->used < n) {
        /* Start small and double: a device's set is a few KiB, and a
         * daemon caches one per device. */
        size_t cap = c == NULL ? ARENA_FIRST
                     : c->cap < ARENA_CHUNK ? c->cap * 2 : ARENA_CHUNK;

        if (cap < n)
            cap = n;

        c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(chunk *c)
{
    while (c != NULL) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ---- the set -------------------------------------------------------- */

typedef struct node node;

typedef struct {
    uint32_t h, n;   /* compared first: most lookups never touch s */
    const char *s;
    node *child;
} lit;

struct node {
    uint32_t term;   /* lowest statement whose pattern ends here */
    uint32_t hterm;  /* ... whose pattern is this prefix + "/#" */
    uint32_t submin; /* lowest statement anywhere in this subtree */
    uint32_t nlits, caplits;
    int lits_in_arena;
    lit *lits;       /* sorted by (h, n, bytes); on the heap while
                      * building, moved into the arena by trie_finish */
    node *plus;
};

typedef struct {
    const char *s;
    uint32_t n;
    uint32_t stmt;
} cid;

typedef struct {
    cid *v;
    size_t n, cap;
} cid_list;

typedef struct {
    const char *policy;
    int index;
    int allow;
    unsigned actions;
    size_t tfirst, tcount; /* into set->pats */
    size_t cfirst, ccount; /* into set->cids */
} stmt;

struct pol_set {
    chunk *arena;
    stmt *stmts;
    size_t nstmts, capstmts;
    const char **pats, **cidstr;
    size_t npats, cappats, ncids, capcids;
    node *trie[2][N_TOPIC_ACTIONS]; /* [allow][action slot] */
    cid_list exact[2], glob[2];
    uint32_t *glob_lens[2];         /* distinct glob prefix lengths */
    size_t nglob_lens[2];
};

static int action_slot(pol_action a)
{
    switch (a) {
    case POL_PUBLISH: return 0;
    case POL_SUBSCRIBE: return 1;
    case POL_RECEIVE: return 2;
    default: return -1;
    }
}

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    size_t ncap;
    void *p;

    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 8;
    p = realloc(*v, ncap * size);
    if (p == NULL)
        return -1;
    *v = p;
    *cap = ncap;
    return 0;
}

static int lit_cmp(const char *a, uint32_t an, const char *b, uint32_t bn)
{
    if (an != bn)
        return an < bn ? -1 : 1;
    return memcmp(a, b, an);
}

static int lit_order(const lit *a, const pol_span *l)
{
    if (a->h != l->h)
        return a->h < l->h ? -1 : 1;
    return lit_cmp(a->s, a->n, l->p, l->n);
}

/* Binary search; *pos gets the insertion point when absent. */
static node *lit_find(const node *nd, const pol_span *l, size_t *pos)
{
    size_t lo = 0, hi = nd->nlits;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = lit_order(&nd->lits[mid], l);

        if (c == 0)
            return nd->lits[mid].child;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos != NULL)
        *pos = lo;
    return NULL;
}

static node *node_new(pol_set *set)
{
    node *nd = arena_alloc(&set->arena, sizeof(*nd));

    if (nd != NULL) {
        memset(nd, 0, sizeof(*nd));
        nd->term = nd->hterm = nd->submin = NONE;
    }
    return nd;
}

static void node_free(node *nd)
{
    uint32_t i;

    if (nd == NULL)
        return;
    for (i = 0; i < nd->nlits; i++)
        node_free(nd->lits[i].child);
    node_free(nd->plus);
    if (!nd->lits_in_arena)
        free(nd->lits);
}

static void set_min(uint32_t *a, uint32_t b)
{
    if (b < *a)
        *a = b;
}

/* Inserts a valid, expanded pattern (arena string) for statement si. */
static int trie_insert(pol_set *set, node **root, const char *pat, size_t n,
                       uint32_t si)
{
    pol_span lv[POL_LEVELS_MAX];
    int count = pol_split(pat, n, lv, POL_LEVELS_MAX), i;
    node *nd;

    if (count < 0)
        return 0; /* deeper than any decision looks: it can match nothing */
    if (*root == NULL && (*root = node_new(set)) == NULL)
        return -1;
    nd = *root;
    for (i = 0; i < count; i++) {
        node *next;
        size_t pos = 0;

        if (pol_span_is(lv[i], '#')) {
            set_min(&nd->hterm, si);
            return 0;
        }
        if (pol_span_is(lv[i], '+')) {
            if (nd->plus == NULL && (nd->plus = node_new(set)) == NULL)
                return -1;
            nd = nd->plus;
            continue;
        }
        next = lit_find(nd, &lv[i], &pos);
        if (next == NULL) {
            if ((next = node_new(set)) == NULL)
                return -1;
            if (nd->nlits == nd->caplits) {
                uint32_t ncap = nd->caplits ? nd->caplits * 2 : 2;
                lit *p = realloc(nd->lits, ncap * sizeof(*p));

                if (p == NULL)
                    return -1;
                nd->lits = p;
                nd->caplits = ncap;
            }
            memmove(nd->lits + pos + 1, nd->lits + pos,
                    (nd->nlits - pos) * sizeof(lit));
            nd->lits[pos].s = lv[i].p;
            nd->lits[pos].n = lv[i].n;
            nd->lits[pos].h = lv[i].h;
            nd->lits[pos].child = next;
            nd->nlits++;
        }
        nd = next;
    }
    set_min(&nd->term, si);
    return 0;
}

/* Computes submin, the lowest statement anywhere below each node. */
static uint32_t trie_finish(node *nd)
{
    uint32_t m, i;

    if (nd == NULL)
        return NONE;
    m = nd->term < nd->hterm ? nd->term : nd->hterm;
    set_min(&m, trie_finish(nd->plus));
    for (i = 0; i < nd->nlits; i++)
        set_min(&m, trie_finish(nd->lits[i].child));
    nd->submin = m;
    return m;
}

/* Moves each node's literal array into the arena, next to the nodes, so
 * that a lookup stays within few cache lines. */
static int trie_freeze(pol_set *set, node *nd)
{
    uint32_t i;
    lit *moved;

    if (nd == NULL)
        return 0;
    if (nd->nlits > 0) {
        size_t bytes = 0;
        char *text;

        /* The level texts go right after the array: the memcmp that
         * confirms a hash hit then reads a line already fetched. */
        for (i = 0; i < nd->nlits; i++)
            bytes += nd->lits[i].n;
        moved = arena_alloc(&set->arena, nd->nlits * sizeof(lit) + bytes);
        if (moved == NULL)
            return -1;
        memcpy(moved, nd->lits, nd->nlits * sizeof(lit));
        text = (char *)(moved + nd->nlits);
        for (i = 0; i < nd->nlits; i++) {
            memcpy(text, moved[i].s, moved[i].n);
            moved[i].s = text;
            text += moved[i].n;
        }
        free(nd->lits);
        nd->lits = moved;
        nd->lits_in_arena = 1;
    }
    for (i = 0; i < nd->nlits; i++)
        if (trie_freeze(set, nd->lits[i].child) != 0)
            return -1;
    return trie_freeze(set, nd->plus);
}

/* ---- connect: exact ids and trailing-'*' globs ---------------------- */

static int cid_cmp(const void *a, const void *b)
{
    const cid *x = a, *y = b;
    int c = lit_cmp(x->s, x->n, y->s, y->n);

    if (c != 0)
        return c;
    return x->stmt < y->stmt ? -1 : x->stmt > y->stmt;
}

/* Sorts and keeps the lowest statement of each distinct string. */
static void cid_finish(cid_list *l)
{
    size_t i, o = 0;

    if (l->n == 0)
        return;
    qsort(l->v, l->n, sizeof(cid), cid_cmp);
    for (i = 0; i < l->n; i++)
        if (o == 0 || lit_cmp(l->v[o - 1].s, l->v[o - 1].n, l->v[i].s,
                              l->v[i].n) != 0)
            l->v[o++] = l->v[i];
    l->n = o;
}

static uint32_t cid_find(const cid_list *l, const char *s, uint32_t n)
{
    size_t lo = 0, hi = l->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = lit_cmp(l->v[mid].s, l->v[mid].n, s, n);

        if (c == 0)
            return l->v[mid].stmt;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NONE;
}

/* ---- compiling ------------------------------------------------------ */

void pol_set_free(pol_set *set)
{
    int e, a;

    if (set == NULL)
        return;
    for (e = 0; e < 2; e++) {
        for (a = 0; a < N_TOPIC_ACTIONS; a++)
            node_free(set->trie[e][a]);
        free(set->exact[e].v);
        free(set->glob[e].v);
        free(set->glob_lens[e]);
    }
    free(set->stmts);
    free(set->pats);
    free(set->cidstr);
    arena_free(set->arena);
    free(set);
}

static char *arena_strdup(pol_set *set, const char *s, size_t n)
{
    char *p = arena_alloc(&set->arena, n + 1);

    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Adds one expanded pattern of statement si to the set. */
static int add_pattern(pol_set *set, stmt *st, uint32_t si, pol_pat_kind kind,
                       const char *buf, size_t n)
{
    char *s;
    int slot;
    unsigned a;

    if (kind == POL_PAT_TOPIC) {
        /* A value may have made the filter invalid (bad UTF-8 joined at a
         * boundary cannot happen, but length or a "$share/" start can);
         * such a pattern matches nothing. */
        if (!pol_body_valid(buf, n, 1) ||
            (n >= 7 && memcmp(buf, "$share/", 7) == 0))
            return 0;
        if ((s = arena_strdup(set, buf, n)) == NULL ||
            grow((void **)&set->pats, &set->cappats, set->npats,
                 sizeof(char *)) != 0)
            return -1;
        set->pats[set->npats++] = s;
        st->tcount++;
        for (a = POL_PUBLISH; a <= POL_RECEIVE; a <<= 1) {
            if (!(st->actions & a))
                continue;
            slot = action_slot((pol_action)a);
            if (trie_insert(set, &set->trie[st->allow][slot], s, n, si) != 0)
                return -1;
        }
        return 0;
    } else {
        int glob = n > 0 && buf[n - 1] == '*';
        cid_list *l = glob ? &set->glob[st->allow] : &set->exact[st->allow];

        if (!codec_utf8_valid(buf, n))
            return 0;
        if ((s = arena_strdup(set, buf, n)) == NULL ||
            grow((void **)&set->cidstr, &set->capcids, set->ncids,
                 sizeof(char *)) != 0 ||
            grow((void **)&l->v, &l->cap, l->n, sizeof(cid)) != 0)
            return -1;
        set->cidstr[set->ncids++] = s;
        st->ccount++;
        l->v[l->n].s = s;
        l->v[l->n].n = (uint32_t)(glob ? n - 1 : n);
        l->v[l->n].stmt = si;
        l->n++;
        return 0;
    }
}

/* Expansion space: nearly every pattern fits the small buffer; the big
 * one (a whole topic's worth) is allocated only when one does not. */
typedef struct {
    char small[512];
    char *big;
} scratch;

static ad_err add_patterns(pol_set *set, stmt *st, uint32_t si,
                           const json_t *arr, pol_pat_kind kind,
                           const pol_vars *vars, scratch *sc)
{
    char *buf;
    size_t i, g, n, groups;
    const char *t;
    size_t tn;
    int r;

    for (i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);

        t = json_string_value(v);
        tn = json_string_length(v);
        /* ${group} makes one pattern per group the device is in. */
        groups = 1;
        if (pol_tmpl_uses_group(t, tn))
            groups = vars ? vars->group_count : 0;
        for (g = 0; g < groups; g++) {
            const char *group = NULL;

            if (vars != NULL && vars->groups != NULL && g < vars->group_count)
                group = vars->groups[g];
            buf = sc->small;
            r = pol_tmpl_expand(t, tn, kind, vars, group, buf,
                                sizeof(sc->small), &n);
            if (r == -2) {
                if (sc->big == NULL &&
                    (sc->big = malloc(POL_TOPIC_MAX + 1)) == NULL)
                    return AD_ENOMEM;
                buf = sc->big;
                r = pol_tmpl_expand(t, tn, kind, vars, group, buf,
                                    POL_TOPIC_MAX + 1, &n);
            }
            if (r < 0)
                return AD_EFIELD;
            if (r == 0)
                continue; /* unset or hostile: this pattern matches nothing */
            if (add_pattern(set, st, si, kind, buf, n) != 0)
                return AD_ENOMEM;
        }
    }
    return AD_OK;
}

static ad_err compile_stmt(pol_set *set, const char *name, size_t idx,
                           const pol_stmt_view *sv, const pol_vars *vars,
                           scratch *sc, char *err, size_t errlen)
{
    stmt *st;
    uint32_t si;
    ad_err e;

    if (set->nstmts >= NONE - 1)
        return ad_errf(AD_EFIELD, err, errlen, "too many statements");
    if (grow((void **)&set->stmts, &set->capstmts, set->nstmts,
             sizeof(stmt)) != 0)
        return ad_errf(AD_ENOMEM, err, errlen, "out of memory");
    si = (uint32_t)set->nstmts;
    st = &set->stmts[set->nstmts++];
    memset(st, 0, sizeof(*st));
    st->policy = name;
    st->index = (int)idx;
    if (sv->policy != NULL && sv->index >= 0) {
        /* A statement exported by pol_set_statements keeps its origin. */
        if ((st->policy = arena_strdup(set, sv->policy,
                                       strlen(sv->policy))) == NULL)
            return ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        st->index = (int)sv->index;
    }
    st->allow = sv->allow;
    st->actions = sv->actions;
    st->tfirst = set->npats;
    st->cfirst = set->ncids;
    if (sv->topics != NULL &&
        (e = add_patterns(set, st, si, sv->topics, POL_PAT_TOPIC, vars,
                          sc)) != AD_OK)
        return ad_errf(e, err, errlen, "statement %zu: cannot compile", idx);
    if (sv->client_ids != NULL &&
        (e = add_patterns(set, st, si, sv->client_ids, POL_PAT_CLIENT_ID,
                          vars, sc)) != AD_OK)
        return ad_errf(e, err, errlen, "statement %zu: cannot compile", idx);
    return AD_OK;
}

static int finish_globs(pol_set *set, int e)
{
    cid_list *l = &set->glob[e];
    size_t i;

    cid_finish(&set->exact[e]);
    cid_finish(l);
    if (l->n == 0)
        return 0;
    set->glob_lens[e] = malloc(l->n * sizeof(uint32_t));
    if (set->glob_lens[e] == NULL)
        return -1;
    /* Sorted by length first, so distinct lengths come out ascending. */
    for (i = 0; i < l->n; i++)
        if (set->nglob_lens[e] == 0 ||
            set->glob_lens[e][set->nglob_lens[e] - 1] != l->v[i].n)
            set->glob_lens[e][set->nglob_lens[e]++] = l->v[i].n;
    return 0;
}

ad_err pol_compile(const pol_source *sources, size_t n, const pol_vars *vars,
                   pol_set **out, char *err, size_t errlen)
{
    pol_set *set = NULL;
    scratch sc;
    const json_t *sts;
    pol_stmt_view sv;
    size_t s, i;
    int e, a;
    ad_err rc = AD_OK;

    *out = NULL;
    if (n > 0 && sources == NULL)
        return ad_errf(AD_EFIELD, err, errlen, "no sources");
    sc.big = NULL;
    set = calloc(1, sizeof(*set));
    if (set == NULL) {
        rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    for (s = 0; s < n; s++) {
        const char *name = NULL;

        if (sources[s].name != NULL &&
            (name = arena_strdup(set, sources[s].name,
                                 strlen(sources[s].name))) == NULL) {
            rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
            goto out;
        }
        /* Validated again here: a document the caller forgot to check
         * must fail loudly, never compile into something looser. */
        if ((rc = pol_doc_statements(sources[s].doc, &sts, err, errlen)) !=
            AD_OK)
            goto out;
        for (i = 0; i < json_array_size(sts); i++) {
            if ((rc = pol_stmt_parse(json_array_get(sts, i), i, &sv, err,
                                     errlen)) != AD_OK ||
                (rc = compile_stmt(set, name, i, &sv, vars, &sc, err,
                                   errlen)) != AD_OK)
                goto out;
        }
    }
    for (e = 0; e < 2; e++) {
        for (a = 0; a < N_TOPIC_ACTIONS; a++) {
            trie_finish(set->trie[e][a]);
            if (trie_freeze(set, set->trie[e][a]) != 0) {
                rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
                goto out;
            }
        }
        if (finish_globs(set, e) != 0) {
            rc = ad_errf(AD_ENOMEM, err, errlen, "out of memory");
            goto out;
        }
    }
    *out = set;
    set = NULL;
out:
    free(sc.big);
    pol_set_free(set);
    return rc;
}

/* ---- exporting ------------------------------------------------------ */

/* A literal "${" in an expanded pattern (from a value) is written as
 * "${$}{" so that compiling the export cannot read it as a variable. */
static json_t *escaped(const char *s)
{
    size_t n = strlen(s), i, o = 0, extra = 0;
    json_t *j;
    char *b;

    for (i = 0; i + 1 < n; i++)
        if (s[i] == '$' && s[i + 1] == '{')
            extra += 3;
    if (extra == 0)
        return json_string(s);
    b = malloc(n + extra + 1);
    if (b == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
            memcpy(b + o, "${$}", 4);
            o += 4;
        } else {
            b[o++] = s[i];
        }
    }
    b[o] = '\0';
    j = json_string(b);
    free(b);
    return j;
}

static json_t *str_array(const char *const *v, size_t n)
{
    json_t *arr = json_array();
    size_t i;

    if (arr == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (json_array_append_new(arr, escaped(v[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* One exported statement: patterns [t0, t0+tn) and client ids
 * [c0, c0+cn) of st, with only the actions that still have patterns, so
 * that the export is itself a valid document. json_null() if none. */
static json_t *stmt_json(const pol_set *set, const stmt *st, size_t t0,
                         size_t tn, size_t c0, size_t cn)
{
    json_t *o = NULL, *acts = NULL, *res = NULL;
    unsigned a, keep = 0;

    for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1) {
        if (!(st->actions & a))
            continue;
        if ((a == POL_CONNECT && cn > 0) || (a != POL_CONNECT && tn > 0))
            keep |= a;
    }
    if (keep == 0)
        return json_null();
    if ((o = json_object()) == NULL || (acts = json_array()) == NULL)
        goto out;
    for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1)
        if ((keep & a) &&
            json_array_append_new(acts,
                                  json_string(pol_action_name(a))) != 0)
            goto out;
    if (json_object_set_new(o, "policy",
                            json_string(st->policy ? st->policy : "")) != 0 ||
        json_object_set_new(o, "index", json_integer(st->index)) != 0 ||
        json_object_set_new(o, "effect",
                            json_string(st->allow ? "allow" : "deny")) != 0 ||
        json_object_set(o, "actions", acts) != 0)
        goto out;
    if ((keep & ~(unsigned)POL_CONNECT) &&
        json_object_set_new(o, "topics",
                            str_array(set->pats + st->tfirst + t0, tn)) != 0)
        goto out;
    if ((keep & POL_CONNECT) &&
        json_object_set_new(o, "client_ids",
                            str_array(set->cidstr + st->cfirst + c0, cn)) != 0)
        goto out;
    res = o;
    o = NULL;
out:
    json_decref(acts);
    json_decref(o);
    return res;
}

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

json_t *pol_set_statements(const pol_set *set)
{
    json_t *arr = json_array(), *js;
    size_t i, k;

    if (arr == NULL || set == NULL)
        return arr;
    for (i = 0; i < set->nstmts; i++) {
        const stmt *st = &set->stmts[i];

        /* ${group} can expand a statement past the per-statement limit;
         * it is then split into consecutive statements with the same
         * policy and index, which decide exactly as the one did. */
        for (k = 0; k == 0 || k < st->tcount || k < st->ccount;
             k += POL_PATTERNS_MAX) {
            size_t tn = k < st->tcount ? min_sz(st->tcount - k,
                                                POL_PATTERNS_MAX) : 0;
            size_t cn = k < st->ccount ? min_sz(st->ccount - k,
                                                POL_PATTERNS_MAX) : 0;

            js = stmt_json(set, st, k, tn, k, cn);
            if (js == NULL) {
                json_decref(arr);
                return NULL;
            }
            if (json_is_null(js))
                continue;
            if (json_array_append_new(arr, js) != 0) {
                json_decref(arr);
                return NULL;
            }
        }
    }
    return arr;
}

/* ---- deciding ------------------------------------------------------- */

static int dollar_first(const pol_span *lv, size_t i)
{
    return i == 0 && lv[0].n > 0 && lv[0].p[0] == '$';
}

/* Lowest statement whose pattern matches the topic levels lv[i..n). */
static void walk_match(const node *nd, const pol_span *lv, size_t n, size_t i,
                       uint32_t *best)
{
    while (nd != NULL && nd->submin < *best) {
        set_min(best, nd->hterm); /* never at the root: see pol_split */
        if (i == n) {
            set_min(best, nd->term);
            return;
        }
        if (nd->plus != NULL && !dollar_first(lv, i))
            walk_match(nd->plus, lv, n, i + 1, best);
        nd = lit_find(nd, &lv[i], NULL);
        i++;
    }
}

/* Lowest statement whose pattern covers the filter levels lv[i..n). */
static void walk_covers(const node *nd, const pol_span *lv, size_t n,
                        size_t i, uint32_t *best)
{
    while (nd != NULL && nd->submin < *best) {
        set_min(best, nd->hterm);
        if (i == n) {
            set_min(best, nd->term);
            return;
        }
        if (pol_span_is(lv[i], '#'))
            return; /* only a '#' covers a '#' */
        if (pol_span_is(lv[i], '+')) {
            nd = nd->plus; /* a literal never covers '+' */
        } else {
            if (nd->plus != NULL && !dollar_first(lv, i))
                walk_covers(nd->plus, lv, n, i + 1, best);
            nd = lit_find(nd, &lv[i], NULL);
        }
        i++;
    }
}

/* Lowest statement whose pattern intersects the filter levels lv[i..n). */
static void walk_intersects(const node *nd, const pol_span *lv, size_t n,
                            size_t i, uint32_t *best)
{
    uint32_t k;

    while (nd != NULL && nd->submin < *best) {
        set_min(best, nd->hterm);
        if (i == n) {
            set_min(best, nd->term);
            return;
        }
        if (pol_span_is(lv[i], '#')) {
            set_min(best, nd->submin); /* everything below shares a topic */
            return;
        }
        if (pol_span_is(lv[i], '+')) {
            /* Deny tries are small; a '+' in a subscription must meet
             * every literal under it. */
            for (k = 0; k < nd->nlits; k++)
                if (!(i == 0 && nd->lits[k].n > 0 &&
                      nd->lits[k].s[0] == '$'))
                    walk_intersects(nd->lits[k].child, lv, n, i + 1, best);
            nd = nd->plus;
        } else {
            if (nd->plus != NULL && !dollar_first(lv, i))
                walk_intersects(nd->plus, lv, n, i + 1, best);
            nd = lit_find(nd, &lv[i], NULL);
        }
        i++;
    }
}

static uint32_t connect_find(const pol_set *set, int allow, const char *id,
                             size_t n)
{
    uint32_t best = cid_find(&set->exact[allow], id, (uint32_t)n), s;
    size_t k;

    for (k = 0; k < set->nglob_lens[allow]; k++) {
        uint32_t len = set->glob_lens[allow][k];

        if (len > n)
            break;
        s = cid_find(&set->glob[allow], id, len);
        set_min(&best, s);
    }
    return best;
}

static pol_decision decision(const pol_set *set, uint32_t allow_at,
                             uint32_t deny_at)
{
    pol_decision d = {0, NULL, -1, "no_matching_allow"};
    uint32_t at = deny_at != NONE ? deny_at : allow_at;

    if (at == NONE)
        return d;
    d.allow = deny_at == NONE;
    d.reason = d.allow ? "allowed" : "explicit_deny";
    d.policy = set->stmts[at].policy;
    d.statement = set->stmts[at].index;
    return d;
}

/* Validates and splits a topic (wild 0) or an unshared filter (wild 1)
 * in one pass, hashing each level: the same rules as pol_body_valid and
 * pol_split (a lone "#" reads as "+/#"), without reading the subject
 * three times. Returns the level count, or -1 if invalid or too deep. */
static int scan(const char *s, int wild, pol_span *lv)
{
    static const char plus_hash[] = "+/#";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, b = 0;
    uint32_t h = POL_HASH_INIT, cp;
    size_t k;
    int count = 0;

    if (u[0] == 0)
        return -1;
    if (wild && u[0] == '#' && u[1] == 0) {
        lv[0].p = plus_hash, lv[0].n = 1, lv[0].h = pol_hash("+", 1);
        lv[1].p = plus_hash + 2, lv[1].n = 1, lv[1].h = pol_hash("#", 1);
        return 2;
    }
    for (;;) {
        unsigned c = u[i];

        if (c == '/' || c == 0) {
            if (count == POL_LEVELS_MAX || i > POL_TOPIC_MAX)
                return -1;
            lv[count].p = s + b;
            lv[count].n = (uint32_t)(i - b);
            lv[count].h = h;
            count++;
            if (c == 0)
                return count;
            b = ++i;
            h = POL_HASH_INIT;
            continue;
        }
        if (c == '+' || c == '#') {
            /* A wildcard stands alone in its level, '#' only last. */
            if (!wild || i != b || (u[i + 1] != '/' && u[i + 1] != 0) ||
                (c == '#' && u[i + 1] != 0))
                return -1;
        } else if (c >= 0x80) {
            /* The terminating NUL is never a continuation byte, so the
             * sequence check cannot run past the end. */
            if ((k = codec_utf8_decode(u + i, 4, &cp)) == 0)
                return -1;
            while (k-- > 1)
                h = pol_hash_byte(h, u[i++]);
        }
        h = pol_hash_byte(h, u[i++]);
    }
}

/* Subscribe semantics on any topic action's tries: allowed when an
 * allow covers the filter and no deny intersects it. */
static pol_decision decide_filter(const pol_set *set, int slot,
                                  const char *subject)
{
    pol_decision d = {0, NULL, -1, "invalid_filter"};
    pol_span lv[POL_LEVELS_MAX];
    uint32_t allow_at = NONE, deny_at = NONE;
    int count;

    /* The $share group is checked by pol_filter_valid only when there is
     * one; ordinary filters go straight to scan(). */
    if (subject != NULL && strncmp(subject, "$share/", 7) == 0) {
        if (!pol_filter_valid(subject))
            return d;
        subject = pol_filter_unshare(subject);
    }
    count = subject ? scan(subject, 1, lv) : -1;
    if (count < 0)
        return d;
    walk_intersects(set->trie[0][slot], lv, (size_t)count, 0, &deny_at);
    if (deny_at == NONE)
        walk_covers(set->trie[1][slot], lv, (size_t)count, 0, &allow_at);
    return decision(set, allow_at, deny_at);
}

pol_decision pol_decide_filter(const pol_set *set, pol_action action,
                               const char *filter)
{
    pol_decision d = {0, NULL, -1, "no_policy"};
    int slot = action_slot(action);

    if (set == NULL)
        return d;
    if (slot < 0)
        return pol_decide(set, action, filter);
    return decide_filter(set, slot, filter);
}

pol_decision pol_decide(const pol_set *set, pol_action action,
                        const char *subject)
{
    pol_decision d = {0, NULL, -1, "no_matching_allow"};
    pol_span lv[POL_LEVELS_MAX];
    uint32_t allow_at = NONE, deny_at = NONE;
    int count, slot = action_slot(action);
    size_t n;

    if (set == NULL) {
        d.reason = "no_policy";
        return d;
    }
    if (action == POL_CONNECT) {
        n = subject ? strnlen(subject, POL_TOPIC_MAX + 1) : 0;
        if (subject == NULL || n > POL_TOPIC_MAX ||
            !codec_utf8_valid(subject, n)) {
            d.reason = "invalid_client_id";
            return d;
        }
        deny_at = connect_find(set, 0, subject, n);
        if (deny_at == NONE)
            allow_at = connect_find(set, 1, subject, n);
        return decision(set, allow_at, deny_at);
    }
    if (slot < 0) {
        d.reason = "unknown_action";
        return d;
    }
    if (action == POL_SUBSCRIBE)
        return decide_filter(set, slot, subject);
    count = subject ? scan(subject, 0, lv) : -1;
    if (count < 0) {
        d.reason = "invalid_topic"; /* wildcards included */
        return d;
    }
    walk_match(set->trie[0][slot], lv, (size_t)count, 0, &deny_at);
    if (deny_at == NONE)
        walk_match(set->trie[1][slot], lv, (size_t)count, 0, &allow_at);
    return decision(set, allow_at, deny_at);
}
