/* Compiling statements into tries and deciding with them. Each (effect,
 * topic action) gets a trie over levels whose nodes remember the lowest
 * statement index ending there, so a decision walks at most the topic's
 * depth (branching only where a node has more than one kind of child)
 * whatever the number of statements. Connect decisions use sorted arrays
 * of exact client ids and of glob prefixes.
 *
 * A set compiled for one device (pol_compile) holds expanded patterns
 * only. A shared set (pol_compile_shared) keeps each level that reads a
 * variable as a template child of its node; a decision expands it with
 * that decision's variables and compares the result with the topic's
 * level, through the same code that expands a device's patterns
 * (doc.c), so both kinds of set decide alike. The set is immutable once
 * built; deciding reads it and allocates nothing. */
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

/* The literal text around the one ${child.id} of a template that reads
 * no other variable ("${$}" escapes undone): such a template is decided
 * by looking the subject's middle up in the sorted children. */
typedef struct {
    const char *pre, *suf;
    uint32_t pre_n, suf_n;
    int ok;
} affix;

/* A level that reads variables (shared sets only): its text as written,
 * matched by expanding it with the decision's variables. */
typedef struct {
    const char *t;
    uint32_t tn;
    unsigned uses; /* POL_USES_* */
    affix aff;
    node *child;
} tmpl;

struct node {
    uint32_t term;   /* lowest statement whose pattern ends here */
    uint32_t hterm;  /* ... whose pattern is this prefix + "/#" */
    uint32_t submin; /* lowest statement anywhere in this subtree; with
                      * templates below, only a lower bound for a
                      * given set of variables */
    uint32_t nlits, caplits;
    uint32_t ntmpls, captmpls;
    int32_t sublen;  /* bytes the longest pattern below adds to this
                      * node's prefix (see trie_finish) */
    uint8_t in_arena;   /* lits and tmpls have been moved to the arena */
    uint8_t tmpl_below; /* a template at or under this node */
    uint8_t big;        /* building: lits unsorted, found through
                         * set->bidx (see lit_child) */
    lit *lits;       /* sorted by (h, n, bytes); on the heap while
                      * building, moved into the arena by trie_freeze */
    tmpl *tmpls;     /* in statement order of their first pattern */
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

/* A client id that reads variables (shared sets only), exact or a
 * trailing-'*' glob, kept in statement order. */
typedef struct {
    const char *t;
    uint32_t tn;
    uint32_t stmt;
    int glob;
    unsigned uses; /* POL_USES_* */
    affix aff;     /* exact ids only */
} tcid;

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
    tcid *tcids[2];                 /* client ids with variables */
    size_t ntcids[2], captcids[2];
    unsigned uses;                  /* POL_USES_* of those templates */
    size_t expansions;              /* patterns tried by pol_compile */
    struct bslot *bidx;             /* building: big nodes' literals */
    size_t nbidx, capbidx;
    int over_limit;                 /* ... more than POL_EXPANSIONS_MAX */
    int export_only;  /* pol_statements_bound: no tries */
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

static int lit_sort(const void *a, const void *b)
{
    const lit *y = b;
    pol_span l;

    l.p = y->s;
    l.n = y->n;
    l.h = y->h;
    return lit_order(a, &l);
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
    for (i = 0; i < nd->ntmpls; i++)
        node_free(nd->tmpls[i].child);
    node_free(nd->plus);
    if (!nd->in_arena) {
        free(nd->lits);
        free(nd->tmpls);
    }
}

static void set_min(uint32_t *a, uint32_t b)
{
    if (b < *a)
        *a = b;
}

/* One level of a pattern being inserted. */
typedef enum { LV_LIT, LV_PLUS, LV_HASH, LV_TMPL } lv_kind;

typedef struct {
    lv_kind kind;
    unsigned uses;  /* LV_TMPL: POL_USES_* */
    affix aff;      /* LV_TMPL */
    pol_span sp;    /* the literal's text, or the template's */
} plevel;

/* Building only: the literal children of nodes that have many of them
 * (a gateway's node above its children's ids has one per child) are
 * found through one open-addressing table of the set instead of a
 * sorted array, whose insertions would move O(n) entries each; the
 * arrays are sorted once, by trie_freeze. Small nodes, nearly all,
 * keep the sorted array. */
enum { BIG_LITS = 32 };

struct bslot {
    node *parent; /* NULL: empty */
    uint32_t pos; /* into parent->lits */
};

static size_t bidx_slot(const pol_set *set, const node *parent, uint32_t h)
{
    uint64_t k = (uint64_t)(uintptr_t)parent * 0x9e3779b97f4a7c15ull ^ h;

    return (size_t)(k ^ (k >> 29)) & (set->capbidx - 1);
}

static int bidx_add(pol_set *set, node *parent, uint32_t pos)
{
    size_t i;

    if ((set->nbidx + 1) * 2 > set->capbidx) {
        size_t ncap = set->capbidx ? set->capbidx * 2 : 256, old = set->capbidx;
        struct bslot *o = set->bidx, *t = calloc(ncap, sizeof(*t));

        if (t == NULL)
            return -1;
        set->bidx = t;
        set->capbidx = ncap;
        for (i = 0; i < old; i++) {
            size_t j;

            if (o[i].parent == NULL)
                continue;
            j = bidx_slot(set, o[i].parent, o[i].parent->lits[o[i].pos].h);
            while (t[j].parent != NULL)
                j = (j + 1) & (ncap - 1);
            t[j] = o[i];
        }
        free(o);
    }
    i = bidx_slot(set, parent, parent->lits[pos].h);
    while (set->bidx[i].parent != NULL)
        i = (i + 1) & (set->capbidx - 1);
    set->bidx[i].parent = parent;
    set->bidx[i].pos = pos;
    set->nbidx++;
    return 0;
}

static node *big_child(pol_set *set, node *nd, const pol_span *l)
{
    size_t i = bidx_slot(set, nd, l->h);
    node *next;

    for (; set->bidx[i].parent != NULL; i = (i + 1) & (set->capbidx - 1)) {
        const lit *c = &nd->lits[set->bidx[i].pos];

        if (set->bidx[i].parent == nd && lit_order(c, l) == 0)
            return c->child;
    }
    if ((next = node_new(set)) == NULL)
        return NULL;
    if (nd->nlits == nd->caplits) {
        uint32_t ncap = nd->caplits * 2;
        lit *p = realloc(nd->lits, ncap * sizeof(*p));

        if (p == NULL)
            return NULL;
        nd->lits = p;
        nd->caplits = ncap;
    }
    nd->lits[nd->nlits].s = l->p;
    nd->lits[nd->nlits].n = l->n;
    nd->lits[nd->nlits].h = l->h;
    nd->lits[nd->nlits].child = next;
    if (bidx_add(set, nd, nd->nlits) != 0)
        return NULL;
    nd->nlits++;
    return next;
}

static node *lit_child(pol_set *set, node *nd, const pol_span *l)
{
    size_t pos = 0;
    node *next;
    uint32_t i;

    if (nd->big)
        return big_child(set, nd, l);
    if ((next = lit_find(nd, l, &pos)) != NULL)
        return next;
    if ((next = node_new(set)) == NULL)
        return NULL;
    if (nd->nlits == nd->caplits) {
        uint32_t ncap = nd->caplits ? nd->caplits * 2 : 2;
        lit *p = realloc(nd->lits, ncap * sizeof(*p));

        if (p == NULL)
            return NULL;
        nd->lits = p;
        nd->caplits = ncap;
    }
    memmove(nd->lits + pos + 1, nd->lits + pos,
            (nd->nlits - pos) * sizeof(lit));
    nd->lits[pos].s = l->p;
    nd->lits[pos].n = l->n;
    nd->lits[pos].h = l->h;
    nd->lits[pos].child = next;
    nd->nlits++;
    if (nd->nlits == BIG_LITS) {
        for (i = 0; i < nd->nlits; i++)
            if (bidx_add(set, nd, i) != 0)
                return NULL;
        nd->big = 1;
    }
    return next;
}

/* Patterns written alike share a template child; a policy has few
 * distinct templates at one level, so a linear search does. */
static node *tmpl_child(pol_set *set, node *nd, const plevel *l)
{
    uint32_t k;
    node *next;

    for (k = 0; k < nd->ntmpls; k++)
        if (nd->tmpls[k].tn == l->sp.n &&
            memcmp(nd->tmpls[k].t, l->sp.p, l->sp.n) == 0)
            return nd->tmpls[k].child;
    if ((next = node_new(set)) == NULL)
        return NULL;
    if (nd->ntmpls == nd->captmpls) {
        uint32_t ncap = nd->captmpls ? nd->captmpls * 2 : 2;
        tmpl *p = realloc(nd->tmpls, ncap * sizeof(*p));

        if (p == NULL)
            return NULL;
        nd->tmpls = p;
        nd->captmpls = ncap;
    }
    nd->tmpls[k].t = l->sp.p;
    nd->tmpls[k].tn = l->sp.n;
    nd->tmpls[k].uses = l->uses;
    nd->tmpls[k].aff = l->aff;
    nd->tmpls[k].child = next;
    nd->ntmpls++;
    return next;
}

/* Inserts the levels of a pattern (texts in the arena) for statement si. */
static int trie_insert(pol_set *set, node **root, const plevel *lv,
                       int count, uint32_t si)
{
    node *nd;
    int i;

    if (*root == NULL && (*root = node_new(set)) == NULL)
        return -1;
    nd = *root;
    for (i = 0; i < count; i++) {
        switch (lv[i].kind) {
        case LV_HASH:
            set_min(&nd->hterm, si);
            return 0;
        case LV_PLUS:
            if (nd->plus == NULL && (nd->plus = node_new(set)) == NULL)
                return -1;
            nd = nd->plus;
            break;
        case LV_TMPL:
            if ((nd = tmpl_child(set, nd, &lv[i])) == NULL)
                return -1;
            break;
        case LV_LIT:
            if ((nd = lit_child(set, nd, &lv[i].sp)) == NULL)
                return -1;
            break;
        }
    }
    set_min(&nd->term, si);
    return 0;
}

static void max_i32(int32_t *a, int64_t b)
{
    if (b > *a)
        *a = (int32_t)b;
}

/* Computes submin, the lowest statement anywhere below each node, and
 * for subtrees without templates sublen: the longest pattern below is
 * the node's prefix (its levels with their '/', as the walks count
 * them) plus sublen bytes, so that a walk can tell whether every
 * pattern below is short enough without visiting them. */
static uint32_t trie_finish(node *nd)
{
    uint32_t m, i;
    int32_t len = INT32_MIN;
    int below = nd != NULL && nd->ntmpls > 0;

    if (nd == NULL)
        return NONE;
    m = nd->term < nd->hterm ? nd->term : nd->hterm;
    if (nd->term != NONE)
        len = -1; /* "a/b" is counted as "a/b/" */
    if (nd->hterm != NONE)
        len = 1;  /* "a/b/" + "#" */
    if (nd->plus != NULL) {
        set_min(&m, trie_finish(nd->plus));
        max_i32(&len, 2 + (int64_t)nd->plus->sublen);
        below |= nd->plus->tmpl_below;
    }
    for (i = 0; i < nd->nlits; i++) {
        node *c = nd->lits[i].child;

        set_min(&m, trie_finish(c));
        max_i32(&len, (int64_t)nd->lits[i].n + 1 + c->sublen);
        below |= c->tmpl_below;
    }
    for (i = 0; i < nd->ntmpls; i++)
        set_min(&m, trie_finish(nd->tmpls[i].child));
    nd->submin = m;
    nd->sublen = len;
    nd->tmpl_below = (uint8_t)below;
    return m;
}

/* Moves each node's child arrays into the arena, next to the nodes, so
 * that a lookup stays within few cache lines. */
static int trie_freeze(pol_set *set, node *nd)
{
    uint32_t i;
    lit *moved = NULL;
    tmpl *tm = NULL;
    size_t bytes = 0;
    char *text;

    if (nd == NULL)
        return 0;
    if (nd->big) {
        qsort(nd->lits, nd->nlits, sizeof(lit), lit_sort);
        nd->big = 0;
    }
    /* Both arrays are allocated before either is moved, so that on
     * failure the node still owns its heap arrays (node_free). */
    for (i = 0; i < nd->nlits; i++)
        bytes += nd->lits[i].n;
    if ((nd->nlits > 0 &&
         (moved = arena_alloc(&set->arena,
                              nd->nlits * sizeof(lit) + bytes)) == NULL) ||
        (nd->ntmpls > 0 &&
         (tm = arena_alloc(&set->arena, nd->ntmpls * sizeof(tmpl))) == NULL))
        return -1;
    if (moved != NULL) {
        /* The level texts go right after the array: the memcmp that
         * confirms a hash hit then reads a line already fetched. */
        memcpy(moved, nd->lits, nd->nlits * sizeof(lit));
        text = (char *)(moved + nd->nlits);
        for (i = 0; i < nd->nlits; i++) {
            memcpy(text, moved[i].s, moved[i].n);
            moved[i].s = text;
            text += moved[i].n;
        }
        free(nd->lits);
        nd->lits = moved;
    }
    if (tm != NULL) {
        memcpy(tm, nd->tmpls, nd->ntmpls * sizeof(tmpl));
        free(nd->tmpls);
        nd->tmpls = tm;
    }
    nd->in_arena = 1;
    for (i = 0; i < nd->nlits; i++)
        if (trie_freeze(set, nd->lits[i].child) != 0)
            return -1;
    for (i = 0; i < nd->ntmpls; i++)
        if (trie_freeze(set, nd->tmpls[i].child) != 0)
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
        free(set->tcids[e]);
    }
    free(set->bidx);
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

/* Inserts the levels of one pattern into the tries of st's actions. */
static int insert_levels(pol_set *set, const stmt *st, uint32_t si,
                         const plevel *lv, int count)
{
    unsigned a;

    for (a = POL_PUBLISH; a <= POL_RECEIVE; a <<= 1)
        if ((st->actions & a) &&
            trie_insert(set, &set->trie[st->allow][action_slot((pol_action)a)],
                        lv, count, si) != 0)
            return -1;
    return 0;
}

/* Adds one expanded pattern of statement si to the set. */
static int add_pattern(pol_set *set, stmt *st, uint32_t si, pol_pat_kind kind,
                       const char *buf, size_t n)
{
    char *s;

    if (kind == POL_PAT_TOPIC) {
        pol_span sp[POL_LEVELS_MAX];
        plevel lv[POL_LEVELS_MAX];
        int count, i;

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
        if (set->export_only)
            return 0;
        count = pol_split(s, n, sp, POL_LEVELS_MAX);
        if (count < 0)
            return 0; /* deeper than any decision looks: matches nothing */
        for (i = 0; i < count; i++) {
            lv[i].kind = pol_span_is(sp[i], '#')   ? LV_HASH
                         : pol_span_is(sp[i], '+') ? LV_PLUS
                                                   : LV_LIT;
            lv[i].uses = 0;
            lv[i].sp = sp[i];
        }
        return insert_levels(set, st, si, lv, count);
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

/* A buffer that holds an expansion of at most n bytes, NULL if out of
 * memory. */
static char *scratch_for(scratch *sc, size_t n, size_t *cap)
{
    if (n < sizeof(sc->small)) {
        *cap = sizeof(sc->small);
        return sc->small;
    }
    if (sc->big == NULL && (sc->big = malloc(POL_TOPIC_MAX + 1)) == NULL)
        return NULL;
    *cap = POL_TOPIC_MAX + 1;
    return sc->big;
}

static int has_var(const char *t, size_t n)
{
    size_t i;

    for (i = 0; i + 1 < n; i++)
        if (t[i] == '$' && t[i + 1] == '{')
            return 1;
    return 0;
}

/* Fills *aff when t reads ${child.id} once and nothing else but the
 * "${$}" escape; aff->ok stays 0 otherwise. -1 if out of memory. */
static int child_affix(pol_set *set, const char *t, size_t tn,
                       pol_pat_kind kind, scratch *sc, affix *aff)
{
    size_t pre, post, n[2], cap;
    const char *part[2];
    char *buf;
    int j;

    memset(aff, 0, sizeof(*aff));
    if (!pol_tmpl_child_split(t, tn, &pre, &post))
        return 0;
    for (j = 0; j < 2; j++) {
        const char *p = j == 0 ? t : t + post;
        size_t pn = j == 0 ? pre : tn - post;
        char *s;

        if ((buf = scratch_for(sc, pn, &cap)) == NULL)
            return -1;
        /* With no variables, only the escape expands. */
        if (pol_tmpl_expand(p, pn, kind, NULL, NULL, buf, cap, &n[j]) != 1)
            return 0;
        if ((s = arena_strdup(set, buf, n[j])) == NULL)
            return -1;
        part[j] = s;
    }
    aff->pre = part[0];
    aff->pre_n = (uint32_t)n[0];
    aff->suf = part[1];
    aff->suf_n = (uint32_t)n[1];
    aff->ok = 1;
    return 0;
}

/* Adds a topic pattern that reads variables to a shared set: its levels
 * without variables become literals (the "${$}" escape undone), the
 * others template children. It is not exported (pol_set_statements
 * lists what matches with no variables, as pol_compile with vars NULL
 * would). */
static ad_err add_topic_template(pol_set *set, const stmt *st, uint32_t si,
                                 const char *t, size_t tn, scratch *sc)
{
    pol_span sp[POL_LEVELS_MAX];
    plevel lv[POL_LEVELS_MAX];
    char *copy, *buf, *s;
    size_t cap, n;
    int count, i, r;

    if ((copy = arena_strdup(set, t, tn)) == NULL)
        return AD_ENOMEM;
    count = pol_split(copy, tn, sp, POL_LEVELS_MAX);
    if (count < 0)
        return AD_OK; /* as in add_pattern: deeper than any decision */
    memset(lv, 0, (size_t)count * sizeof(lv[0]));
    for (i = 0; i < count; i++) {
        lv[i].sp = sp[i];
        if (pol_span_is(sp[i], '#')) {
            lv[i].kind = LV_HASH;
            continue;
        }
        if (pol_span_is(sp[i], '+')) {
            lv[i].kind = LV_PLUS;
            continue;
        }
        lv[i].kind = LV_LIT;
        if (!has_var(sp[i].p, sp[i].n))
            continue;
        /* With no variables set, only a level whose sole variable is the
         * "${$}" escape expands: it is a literal. */
        if ((buf = scratch_for(sc, sp[i].n, &cap)) == NULL)
            return AD_ENOMEM;
        r = pol_tmpl_expand(sp[i].p, sp[i].n, POL_PAT_TOPIC, NULL, NULL,
                            buf, cap, &n);
        if (r < 0)
            return AD_EFIELD;
        if (r == 0) {
            lv[i].kind = LV_TMPL;
            lv[i].uses = pol_tmpl_uses(sp[i].p, sp[i].n);
            if ((lv[i].uses & POL_USES_CHILD) &&
                child_affix(set, sp[i].p, sp[i].n, POL_PAT_TOPIC, sc,
                            &lv[i].aff) != 0)
                return AD_ENOMEM;
            continue;
        }
        if ((s = arena_strdup(set, buf, n)) == NULL)
            return AD_ENOMEM;
        lv[i].sp.p = s;
        lv[i].sp.n = (uint32_t)n;
        lv[i].sp.h = pol_hash(s, n);
    }
    return insert_levels(set, st, si, lv, count) != 0 ? AD_ENOMEM : AD_OK;
}

static ad_err add_cid_template(pol_set *set, const stmt *st, uint32_t si,
                               const char *t, size_t tn, scratch *sc)
{
    int e = st->allow;
    tcid *c;
    char *copy;

    if ((copy = arena_strdup(set, t, tn)) == NULL ||
        grow((void **)&set->tcids[e], &set->captcids[e], set->ntcids[e],
             sizeof(tcid)) != 0)
        return AD_ENOMEM;
    c = &set->tcids[e][set->ntcids[e]++];
    c->t = copy;
    c->tn = (uint32_t)tn;
    c->stmt = si;
    /* A '*' that ends the text is the glob's: a variable ends in '}'. */
    c->glob = copy[tn - 1] == '*';
    c->uses = pol_tmpl_uses(t, tn);
    memset(&c->aff, 0, sizeof(c->aff));
    /* Globs try each child (their cost is documented in policy.h). */
    if ((c->uses & POL_USES_CHILD) && !c->glob &&
        child_affix(set, copy, tn, POL_PAT_CLIENT_ID, sc, &c->aff) != 0)
        return AD_ENOMEM;
    return AD_OK;
}

/* One pattern of a shared set: with no variables (but the escape) it is
 * added as pol_compile adds it, else as a template. */
static ad_err add_shared(pol_set *set, stmt *st, uint32_t si,
                         pol_pat_kind kind, const char *t, size_t tn,
                         scratch *sc)
{
    char *buf;
    size_t cap, n;
    int r;

    if ((buf = scratch_for(sc, tn, &cap)) == NULL)
        return AD_ENOMEM;
    r = pol_tmpl_expand(t, tn, kind, NULL, NULL, buf, cap, &n);
    if (r < 0)
        return AD_EFIELD;
    if (r == 1)
        return add_pattern(set, st, si, kind, buf, n) != 0 ? AD_ENOMEM
                                                           : AD_OK;
    set->uses |= pol_tmpl_uses(t, tn);
    if (kind == POL_PAT_CLIENT_ID)
        return add_cid_template(set, st, si, t, tn, sc);
    return add_topic_template(set, st, si, t, tn, sc);
}

/* The value of the i-th group or child; NULL if there is none. */
static const char *nth(const char *const *v, size_t count, long i)
{
    if (v == NULL || i < 0 || (size_t)i >= count)
        return NULL;
    return v[i];
}

/* One expansion of template t with bind, added to the set; an unset or
 * hostile value leaves the pattern out (it matches nothing). */
static ad_err add_expanded(pol_set *set, stmt *st, uint32_t si,
                           pol_pat_kind kind, const char *t, size_t tn,
                           const pol_vars *vars, const pol_bind *bind,
                           scratch *sc)
{
    char *buf = sc->small;
    size_t n;
    int r;

    r = pol_tmpl_expand(t, tn, kind, vars, bind, buf, sizeof(sc->small), &n);
    if (r == -2) {
        if (sc->big == NULL && (sc->big = malloc(POL_TOPIC_MAX + 1)) == NULL)
            return AD_ENOMEM;
        buf = sc->big;
        r = pol_tmpl_expand(t, tn, kind, vars, bind, buf, POL_TOPIC_MAX + 1,
                            &n);
    }
    if (r < 0)
        return AD_EFIELD;
    if (r == 0)
        return AD_OK;
    return add_pattern(set, st, si, kind, buf, n) != 0 ? AD_ENOMEM : AD_OK;
}

static ad_err add_patterns(pol_set *set, stmt *st, uint32_t si,
                           const json_t *arr, pol_pat_kind kind,
                           const pol_vars *vars, int shared, scratch *sc)
{
    size_t i, g, c, groups, children;
    const char *t;
    size_t tn;
    unsigned uses;
    ad_err e;

    for (i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);

        t = json_string_value(v);
        tn = json_string_length(v);
        if (shared) {
            if ((e = add_shared(set, st, si, kind, t, tn, sc)) != AD_OK)
                return e;
            continue;
        }
        /* ${group} makes one pattern per group the device is in,
         * ${child.id} one per child of the gateway, and both one per
         * (group, child) pair. */
        uses = pol_tmpl_uses(t, tn);
        groups = children = 1;
        if (uses & POL_USES_GROUP)
            groups = vars ? vars->group_count : 0;
        if (uses & POL_USES_CHILD)
            children = vars ? vars->child_count : 0;
        /* Bounded, because groups times children can be large: the
         * shared set (pol_decide_bound) has no such limit. */
        if ((children > 0 && groups > POL_EXPANSIONS_MAX / children) ||
            groups * children > POL_EXPANSIONS_MAX - set->expansions) {
            set->over_limit = 1;
            return AD_EFIELD;
        }
        set->expansions += groups * children;
        for (g = 0; g < groups; g++) {
            for (c = 0; c < children; c++) {
                pol_bind bind;

                bind.group = vars ? nth(vars->groups, vars->group_count,
                                        (long)g) : NULL;
                bind.child = vars ? nth(vars->children, vars->child_count,
                                        (long)c) : NULL;
                if ((e = add_expanded(set, st, si, kind, t, tn, vars, &bind,
                                      sc)) != AD_OK)
                    return e;
            }
        }
    }
    return AD_OK;
}

static ad_err compile_stmt(pol_set *set, const char *name, size_t idx,
                           const pol_stmt_view *sv, const pol_vars *vars,
                           int shared, scratch *sc, char *err, size_t errlen)
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
    if ((sv->topics != NULL &&
         (e = add_patterns(set, st, si, sv->topics, POL_PAT_TOPIC, vars,
                           shared, sc)) != AD_OK) ||
        (sv->client_ids != NULL &&
         (e = add_patterns(set, st, si, sv->client_ids, POL_PAT_CLIENT_ID,
                           vars, shared, sc)) != AD_OK)) {
        if (set->over_limit)
            return ad_errf(e, err, errlen,
                           "statement %zu: ${group} and ${child.id} expand "
                           "to more than %d patterns", idx,
                           POL_EXPANSIONS_MAX);
        return ad_errf(e, err, errlen, "statement %zu: cannot compile", idx);
    }
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

enum { COMPILE_BOUND, COMPILE_SHARED, COMPILE_EXPORT };

static ad_err compile(const pol_source *sources, size_t n,
                      const pol_vars *vars, int mode, pol_set **out,
                      char *err, size_t errlen)
{
    int shared = mode == COMPILE_SHARED;
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
    set->export_only = mode == COMPILE_EXPORT;
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
                (rc = compile_stmt(set, name, i, &sv, vars, shared, &sc, err,
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
    free(set->bidx); /* only building needed it */
    set->bidx = NULL;
    set->nbidx = set->capbidx = 0;
    *out = set;
    set = NULL;
out:
    free(sc.big);
    pol_set_free(set);
    return rc;
}

ad_err pol_compile(const pol_source *sources, size_t n, const pol_vars *vars,
                   pol_set **out, char *err, size_t errlen)
{
    return compile(sources, n, vars, COMPILE_BOUND, out, err, errlen);
}

ad_err pol_compile_shared(const pol_source *sources, size_t n, pol_set **out,
                          char *err, size_t errlen)
{
    return compile(sources, n, NULL, COMPILE_SHARED, out, err, errlen);
}

json_t *pol_statements_bound(const pol_source *sources, size_t n,
                             const pol_vars *vars)
{
    pol_set *set = NULL;
    json_t *out;
    char err[256];

    /* The same expansion and the same export as pol_compile followed by
     * pol_set_statements; only the tries, which nothing here decides
     * with, are not built. */
    if (compile(sources, n, vars, COMPILE_EXPORT, &set, err, sizeof(err)) !=
        AD_OK)
        return NULL;
    out = pol_set_statements(set);
    pol_set_free(set);
    return out;
}

unsigned pol_set_uses(const pol_set *set)
{
    return set != NULL ? set->uses : 0;
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

/* What one decision walks with: the subject's levels and the variables
 * that bind the templates. Besides its node and level, each step
 * carries acc, the length the pattern's levels above have expanded to
 * (each with its '/'), because the expanded pattern must fit
 * POL_TOPIC_MAX; and b, the group and the child ${group} and
 * ${child.id} are bound to on this path (-1: none yet), because a
 * pattern reads one group and one child throughout. */
typedef struct {
    const pol_vars *vars;
    const pol_span *lv;
    size_t n;
} walk;

typedef struct {
    long g, c; /* indexes into vars->groups and vars->children, or -1 */
} bnd;

typedef void walk_fn(const walk *w, const node *nd, size_t i, size_t acc,
                     bnd b, uint32_t *best);

static walk_fn walk_match, walk_covers;

static int dollar_first(const pol_span *lv, size_t i)
{
    return i == 0 && lv[0].n > 0 && lv[0].p[0] == '$';
}

/* The pattern ending at nd: acc counts a '/' after its last level. */
static void take_term(const node *nd, size_t acc, uint32_t *best)
{
    if (acc <= (size_t)POL_TOPIC_MAX + 1)
        set_min(best, nd->term);
}

/* The pattern "<prefix>/#" at nd. */
static void take_hterm(const node *nd, size_t acc, uint32_t *best)
{
    if (acc + 1 <= POL_TOPIC_MAX)
        set_min(best, nd->hterm);
}

static pol_bind bind_of(const pol_vars *vars, bnd b)
{
    pol_bind pb = {NULL, NULL};

    if (vars != NULL) {
        pb.group = nth(vars->groups, vars->group_count, b.g);
        pb.child = nth(vars->children, vars->child_count, b.c);
    }
    return pb;
}

/* The values one variable is tried with, [*v0, *v1): the path's own
 * when the template does not read it or it is already bound, else each
 * of the identity's (the patterns pol_compile makes, one per value). */
static void var_range(unsigned reads, long bound, size_t count, long *v0,
                      long *v1)
{
    if (!reads || bound >= 0) {
        *v0 = bound;
        *v1 = bound + 1;
    } else {
        *v0 = 0;
        *v1 = (long)count;
    }
}

static size_t group_count(const pol_vars *vars)
{
    return vars != NULL ? vars->group_count : 0;
}

static size_t child_count(const pol_vars *vars)
{
    return vars != NULL ? vars->child_count : 0;
}

/* s[0..n) against the string z, in strcmp's order (unsigned bytes).
 * s holds no NUL, so strncmp stops at the first difference or after n
 * bytes, never reading past either string. */
static int span_strcmp(const char *s, size_t n, const char *z)
{
    int c = strncmp(s, z, n);

    if (c != 0)
        return c;
    return z[n] == '\0' ? 0 : -1;
}

/* The index of the child whose id is s[0..n), or -1: a binary search of
 * the children, which the caller keeps sorted by strcmp (a NULL entry
 * reads as "", which no pattern accepts). */
static long child_find(const pol_vars *vars, const char *s, size_t n)
{
    size_t lo = 0, hi;

    if (vars == NULL || vars->children == NULL)
        return -1;
    hi = vars->child_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *z = vars->children[mid] ? vars->children[mid] : "";
        int c = span_strcmp(s, n, z);

        if (c == 0)
            return (long)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

/* The child a template "<pre>${child.id}<suf>" must be bound to for its
 * expansion to be s[0..n): the middle of s looked up, -1 if none. */
static long affix_child(const pol_vars *vars, const affix *a, const char *s,
                        size_t n)
{
    if (n < (size_t)a->pre_n + a->suf_n ||
        memcmp(s, a->pre, a->pre_n) != 0 ||
        memcmp(s + n - a->suf_n, a->suf, a->suf_n) != 0)
        return -1;
    return child_find(vars, s + a->pre_n, n - a->pre_n - a->suf_n);
}

static int is_share(const pol_span *l)
{
    return l->n == 6 && memcmp(l->p, "$share", 6) == 0;
}

/* Walks fn into t's child if t, bound by b, expands to the subject's
 * level i; 1 if it does. */
static int tmpl_eq_one(const walk *w, const tmpl *t, size_t i, size_t acc,
                       bnd b, uint32_t *best, walk_fn *fn)
{
    const pol_span *l = &w->lv[i];
    pol_bind pb = bind_of(w->vars, b);

    if (!pol_tmpl_compare(t->t, t->tn, POL_PAT_TOPIC, w->vars, &pb, l->p,
                          l->n, 0, NULL))
        return 0;
    if (i == 0 && is_share(l)) {
        /* An expansion starting "$share/" is dropped: here only the
         * pattern that ends at this level is left. It meets a subject
         * that ends here too, or (intersecting) whose next and last
         * level is '#'. */
        if (i + 1 == w->n ||
            (fn != walk_match && fn != walk_covers && i + 2 == w->n &&
             pol_span_is(w->lv[i + 1], '#')))
            set_min(best, t->child->term);
    } else {
        fn(w, t->child, i + 1, acc + l->n + 1, b, best);
    }
    return 1;
}

/* Walks fn into each template child of nd that expands to the subject's
 * level i (a topic level, or a filter's literal one). */
static void tmpl_walk_eq(const walk *w, const node *nd, size_t i, size_t acc,
                         bnd b, uint32_t *best, walk_fn *fn)
{
    const pol_span *l = &w->lv[i];
    uint32_t k;
    long g, c, g0, g1, c0, c1;

    for (k = 0; k < nd->ntmpls; k++) {
        const tmpl *t = &nd->tmpls[k];
        int free_g = (t->uses & POL_USES_GROUP) && b.g < 0;
        int free_c = (t->uses & POL_USES_CHILD) && b.c < 0;

        if (t->child->submin >= *best)
            continue;
        var_range(t->uses & POL_USES_GROUP, b.g, group_count(w->vars), &g0,
                  &g1);
        var_range(t->uses & POL_USES_CHILD, b.c, child_count(w->vars), &c0,
                  &c1);
        if (free_c && t->aff.ok) {
            /* The only child this level can be is looked up, so that a
             * gateway's thousands of children cost a binary search. */
            if ((c0 = affix_child(w->vars, &t->aff, l->p, l->n)) < 0)
                continue;
            c1 = c0 + 1;
            free_c = 0;
        }
        for (g = g0; g < g1; g++) {
            for (c = c0; c < c1; c++) {
                bnd nb;

                nb.g = g;
                nb.c = c;
                if (!tmpl_eq_one(w, t, i, acc, nb, best, fn))
                    continue;
                /* With one value free, only one gives this text (its
                 * length fixes the value's, the rest being bound), so
                 * another is the same. With both free, "a"+"bc" and
                 * "ab"+"c" both give "abc" and bind the rest of the
                 * pattern differently: each is walked. */
                if (!(free_g && free_c))
                    goto next;
            }
        }
    next:;
    }
}

/* Walks fn into each template child of nd that has a valid expansion,
 * for a '+' or '#' in a filter, which meets any of them: with an
 * unbound ${child.id}, each child in turn, as a device's compiled set
 * holds one literal per child. */
static void tmpl_walk_any(const walk *w, const node *nd, size_t i,
                          size_t acc, bnd b, uint32_t *best, walk_fn *fn)
{
    uint32_t k;
    long g, c, g0, g1, c0, c1;
    size_t len;
    int first;

    for (k = 0; k < nd->ntmpls; k++) {
        const tmpl *t = &nd->tmpls[k];

        var_range(t->uses & POL_USES_GROUP, b.g, group_count(w->vars), &g0,
                  &g1);
        var_range(t->uses & POL_USES_CHILD, b.c, child_count(w->vars), &c0,
                  &c1);
        for (g = g0; g < g1; g++) {
            for (c = c0; c < c1; c++) {
                bnd nb;
                pol_bind pb;

                /* Nothing below can lower best any more. */
                if (t->child->submin >= *best)
                    goto next;
                nb.g = g;
                nb.c = c;
                pb = bind_of(w->vars, nb);
                if (!pol_tmpl_measure(t->t, t->tn, POL_PAT_TOPIC, w->vars,
                                      &pb, &len, &first))
                    continue;
                /* A '+' in the first level meets no '$' level; so it
                 * never meets "$share" either ('#' is never the first
                 * level). */
                if (i == 0 && first == '$')
                    continue;
                fn(w, t->child, i + 1, acc + len + 1, nb, best);
                /* Bindings differ below only in length when nothing
                 * below reads a variable: if no pattern below was too
                 * long with this one, none reaches more with another,
                 * so a deny's '+' meets 10,000 children in one walk. */
                if (!t->child->tmpl_below &&
                    (int64_t)acc + (int64_t)len + 1 + t->child->sublen <=
                        POL_TOPIC_MAX)
                    goto next;
            }
        }
    next:;
    }
}

/* Lowest statement among the patterns at or below nd that are valid
 * with these variables: what a '#' in a filter meets. */
static void walk_below(const walk *w, const node *nd, size_t i, size_t acc,
                       bnd b, uint32_t *best)
{
    uint32_t k;

    if (nd == NULL || nd->submin >= *best)
        return;
    if (!nd->tmpl_below && (int64_t)acc + nd->sublen <= POL_TOPIC_MAX) {
        set_min(best, nd->submin); /* every pattern below is valid */
        return;
    }
    take_term(nd, acc, best);
    take_hterm(nd, acc, best);
    for (k = 0; k < nd->nlits; k++)
        walk_below(w, nd->lits[k].child, i + 1, acc + nd->lits[k].n + 1, b,
                   best);
    walk_below(w, nd->plus, i + 1, acc + 2, b, best);
    tmpl_walk_any(w, nd, i, acc, b, best, walk_below);
}

/* Lowest statement whose pattern matches the topic levels lv[i..n). */
static void walk_match(const walk *w, const node *nd, size_t i, size_t acc,
                       bnd b, uint32_t *best)
{
    while (nd != NULL && nd->submin < *best) {
        take_hterm(nd, acc, best); /* never at the root: see pol_split */
        if (i == w->n) {
            take_term(nd, acc, best);
            return;
        }
        if (nd->plus != NULL && !dollar_first(w->lv, i))
            walk_match(w, nd->plus, i + 1, acc + 2, b, best);
        if (nd->ntmpls > 0)
            tmpl_walk_eq(w, nd, i, acc, b, best, walk_match);
        acc += w->lv[i].n + 1;
        nd = lit_find(nd, &w->lv[i], NULL);
        i++;
    }
}

/* Lowest statement whose pattern covers the filter levels lv[i..n). */
static void walk_covers(const walk *w, const node *nd, size_t i, size_t acc,
                        bnd b, uint32_t *best)
{
    while (nd != NULL && nd->submin < *best) {
        take_hterm(nd, acc, best);
        if (i == w->n) {
            take_term(nd, acc, best);
            return;
        }
        if (pol_span_is(w->lv[i], '#'))
            return; /* only a '#' covers a '#' */
        if (pol_span_is(w->lv[i], '+')) {
            /* A literal never covers '+', nor a template: one child's
             * pattern does not cover the level of every other. */
            nd = nd->plus;
            acc += 2;
        } else {
            if (nd->plus != NULL && !dollar_first(w->lv, i))
                walk_covers(w, nd->plus, i + 1, acc + 2, b, best);
            if (nd->ntmpls > 0)
                tmpl_walk_eq(w, nd, i, acc, b, best, walk_covers);
            acc += w->lv[i].n + 1;
            nd = lit_find(nd, &w->lv[i], NULL);
        }
        i++;
    }
}

/* Lowest statement whose pattern intersects the filter levels lv[i..n). */
static void walk_intersects(const walk *w, const node *nd, size_t i,
                            size_t acc, bnd b, uint32_t *best)
{
    uint32_t k;

    while (nd != NULL && nd->submin < *best) {
        take_hterm(nd, acc, best);
        if (i == w->n) {
            take_term(nd, acc, best);
            return;
        }
        if (pol_span_is(w->lv[i], '#')) {
            walk_below(w, nd, i, acc, b, best); /* all share a topic */
            return;
        }
        if (pol_span_is(w->lv[i], '+')) {
            /* Deny tries are small; a '+' in a subscription must meet
             * every literal and template under it. */
            for (k = 0; k < nd->nlits; k++)
                if (!(i == 0 && nd->lits[k].n > 0 &&
                      nd->lits[k].s[0] == '$'))
                    walk_intersects(w, nd->lits[k].child, i + 1,
                                    acc + nd->lits[k].n + 1, b, best);
            if (nd->ntmpls > 0)
                tmpl_walk_any(w, nd, i, acc, b, best, walk_intersects);
            nd = nd->plus;
            acc += 2;
        } else {
            if (nd->plus != NULL && !dollar_first(w->lv, i))
                walk_intersects(w, nd->plus, i + 1, acc + 2, b, best);
            if (nd->ntmpls > 0)
                tmpl_walk_eq(w, nd, i, acc, b, best, walk_intersects);
            acc += w->lv[i].n + 1;
            nd = lit_find(nd, &w->lv[i], NULL);
        }
        i++;
    }
}

static void walk_root(const node *root, const pol_vars *vars,
                      const pol_span *lv, int count, walk_fn *fn,
                      uint32_t *best)
{
    walk w;
    bnd b = {-1, -1};

    w.vars = vars;
    w.lv = lv;
    w.n = (size_t)count;
    fn(&w, root, 0, 0, b, best);
}

/* Does the client id template c, expanded with vars, accept id[0..n)? */
static int tcid_match(const tcid *c, const pol_vars *vars, const char *id,
                      size_t n)
{
    long g, g0, g1, h, h0, h1;
    size_t k;

    var_range(c->uses & POL_USES_GROUP, -1, group_count(vars), &g0, &g1);
    var_range(c->uses & POL_USES_CHILD, -1, child_count(vars), &h0, &h1);
    if ((c->uses & POL_USES_CHILD) && c->aff.ok) {
        /* An exact id names its child: looked up, not searched for. */
        if ((h0 = affix_child(vars, &c->aff, id, n)) < 0)
            return 0;
        h1 = h0 + 1;
    }
    for (g = g0; g < g1; g++) {
        for (h = h0; h < h1; h++) {
            bnd b;
            pol_bind pb;

            b.g = g;
            b.c = h;
            pb = bind_of(vars, b);
            if (!c->glob) {
                if (pol_tmpl_compare(c->t, c->tn, POL_PAT_CLIENT_ID, vars,
                                     &pb, id, n, 0, NULL))
                    return 1;
                continue;
            }
            /* "P*" accepts ids starting with P. The expansion must be
             * valid UTF-8 and at most POL_TOPIC_MAX bytes: P, a prefix
             * of the (valid) id, must end on a character boundary of
             * it. */
            if (pol_tmpl_compare(c->t, c->tn - 1, POL_PAT_CLIENT_ID, vars,
                                 &pb, id, n, 1, &k) &&
                k < POL_TOPIC_MAX &&
                (k == n || ((unsigned char)id[k] & 0xc0) != 0x80))
                return 1;
        }
    }
    return 0;
}

static uint32_t connect_find(const pol_set *set, const pol_vars *vars,
                             int allow, const char *id, size_t n)
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
    /* In statement order: the first that accepts is the lowest. */
    for (k = 0; k < set->ntcids[allow]; k++) {
        const tcid *c = &set->tcids[allow][k];

        if (c->stmt >= best)
            break;
        if (tcid_match(c, vars, id, n)) {
            best = c->stmt;
            break;
        }
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
static pol_decision decide_filter(const pol_set *set, const pol_vars *vars,
                                  int slot, const char *subject)
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
    walk_root(set->trie[0][slot], vars, lv, count, walk_intersects, &deny_at);
    if (deny_at == NONE)
        walk_root(set->trie[1][slot], vars, lv, count, walk_covers,
                  &allow_at);
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
    return decide_filter(set, NULL, slot, filter);
}

pol_decision pol_decide_bound(const pol_set *set, const pol_vars *vars,
                              pol_action action, const char *subject)
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
        deny_at = connect_find(set, vars, 0, subject, n);
        if (deny_at == NONE)
            allow_at = connect_find(set, vars, 1, subject, n);
        return decision(set, allow_at, deny_at);
    }
    if (slot < 0) {
        d.reason = "unknown_action";
        return d;
    }
    if (action == POL_SUBSCRIBE)
        return decide_filter(set, vars, slot, subject);
    count = subject ? scan(subject, 0, lv) : -1;
    if (count < 0) {
        d.reason = "invalid_topic"; /* wildcards included */
        return d;
    }
    walk_root(set->trie[0][slot], vars, lv, count, walk_match, &deny_at);
    if (deny_at == NONE)
        walk_root(set->trie[1][slot], vars, lv, count, walk_match, &allow_at);
    return decision(set, allow_at, deny_at);
}

pol_decision pol_decide(const pol_set *set, pol_action action,
                        const char *subject)
{
    return pol_decide_bound(set, NULL, action, subject);
}
