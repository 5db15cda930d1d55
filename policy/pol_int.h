/* Internal to policy/: the helpers shared between topic.c (MQTT syntax
 * and matching), doc.c (documents and variables) and compile.c (tries and
 * decisions). Nothing here is part of the public contract. */
#ifndef AUTHD_POL_INT_H
#define AUTHD_POL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/codec.h"
#include "policy.h"

/* One level of a topic or filter: a span into the caller's string, and
 * its hash (pol_hash), which lets a trie lookup compare one word before
 * touching the level's bytes. */
typedef struct {
    const char *p;
    uint32_t n;
    uint32_t h;
} pol_span;

#define POL_HASH_INIT 2166136261u
#define POL_HASH_MUL 16777619u

/* FNV-1a: cheap, and collisions only cost a memcmp (lookups are binary
 * searches, so no input can make them degrade). */
static inline uint32_t pol_hash_byte(uint32_t h, unsigned char c)
{
    return (h ^ c) * POL_HASH_MUL;
}

static inline uint32_t pol_hash(const char *s, size_t n)
{
    uint32_t h = POL_HASH_INIT;
    size_t i;

    for (i = 0; i < n; i++)
        h = pol_hash_byte(h, (unsigned char)s[i]);
    return h;
}

/* 1 if s[0..n) is a filter (wildcards allowed) or, with wild 0, a topic
 * name; "$share/" gets no special treatment here. */
int pol_body_valid(const char *s, size_t n, int wild);

/* The levels of a valid topic or filter, with a lone "#" read as the
 * equivalent "+/#" (there is no zero-level topic), so that '#' never
 * stands in the first level and the '$' rule only concerns '+'. Returns
 * the number of levels, or -1 if there are more than max. */
int pol_split(const char *s, size_t n, pol_span *lv, size_t max);

static inline int pol_span_is(pol_span l, char c)
{
    return l.n == 1 && l.p[0] == c;
}

/* The variable context of one statement check in doc.c: what kind of
 * pattern is being checked (topics or client ids). */
typedef enum { POL_PAT_TOPIC, POL_PAT_CLIENT_ID } pol_pat_kind;

/* The values a template's one-at-a-time variables are bound to: one
 * group for ${group}, one child for ${child.id} (NULL = unset). A
 * pattern reads the same binding in every level. */
typedef struct {
    const char *group;
    const char *child;
} pol_bind;

/* Expands the variables of template t[0..tn) into out (capacity cap,
 * NUL-terminated). bind gives ${group} and ${child.id} (NULL = both
 * unset). Returns 1 and *outn on success, 0 if a variable is unset or
 * its value is hostile ('/', '+', '#', NUL, and '*' for client ids) or
 * the result is longer than POL_TOPIC_MAX, -1 if the template is
 * malformed (unknown variable), -2 if cap (<= POL_TOPIC_MAX) was too
 * small: retry with a buffer of POL_TOPIC_MAX + 1 bytes. */
int pol_tmpl_expand(const char *t, size_t tn, pol_pat_kind kind,
                    const pol_vars *vars, const pol_bind *bind, char *out,
                    size_t cap, size_t *outn);

/* The same expansion compared with s[0..n) instead of copied, for
 * deciding on a shared set without a buffer: 1 if the expansion equals
 * s[0..n) (with prefix, if it is a prefix of it; its length then in
 * *outn, which may be NULL), 0 if not or if it would not expand (unset,
 * hostile, too long, malformed). */
int pol_tmpl_compare(const char *t, size_t tn, pol_pat_kind kind,
                     const pol_vars *vars, const pol_bind *bind,
                     const char *s, size_t n, int prefix, size_t *outn);

/* The same expansion only measured: 1 with its length (*outn) and first
 * byte (*first, -1 if empty) if it expands to valid UTF-8 of at most
 * POL_TOPIC_MAX bytes, else 0. */
int pol_tmpl_measure(const char *t, size_t tn, pol_pat_kind kind,
                     const pol_vars *vars, const pol_bind *bind,
                     size_t *outn, int *first);

/* 1 if the template reads ${child.id} exactly once: it is t[0..*pre),
 * the variable, then t[*post..tn). A shared set looks such a level up
 * in the sorted children instead of trying each child. */
int pol_tmpl_child_split(const char *t, size_t tn, size_t *pre,
                         size_t *post);

/* The POL_USES_* bits of the variables the template reads. */
unsigned pol_tmpl_uses(const char *t, size_t tn);

/* Parses one statement (validated as in pol_doc_validate); the arrays
 * point into the JSON. 0 or an AD_EFIELD message naming the statement. */
typedef struct {
    int allow;
    unsigned actions;         /* pol_action bits */
    const json_t *topics;     /* array or NULL */
    const json_t *client_ids; /* array or NULL */
    const char *policy;       /* the "policy" key, if any */
    long long index;          /* the "index" key, or -1 */
} pol_stmt_view;

ad_err pol_stmt_parse(const json_t *st, size_t idx, pol_stmt_view *out,
                      char *err, size_t errlen);

/* The "statements" array of a document, validated; NULL if absent. */
ad_err pol_doc_statements(const json_t *doc, const json_t **out, char *err,
                          size_t errlen);

enum {
    POL_STATEMENTS_MAX = 256,
    POL_PATTERNS_MAX = 256,   /* topics or client_ids of one statement */
    POL_ATTR_KEY_MAX = 128
};

#endif
