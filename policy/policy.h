/* The topic/ACL engine: parses and validates policy documents, matches
 * MQTT topics and filters, substitutes variables, and compiles a
 * device's statements into a trie that decides in time proportional to
 * the topic's depth. Pure functions over memory: no I/O, no clock, no
 * globals. The daemon and the mosquitto plugin link the same code, so a
 * decision is made the same way wherever it is made. */
#ifndef AUTHD_POLICY_H
#define AUTHD_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/err.h"

/* ---- topics and filters (MQTT 3.1.1 / 5.0) -------------------------- */

enum { POL_TOPIC_MAX = 65535, POL_LEVELS_MAX = 128 };

/* A topic name as published: non-empty, at most POL_TOPIC_MAX bytes,
 * valid UTF-8, no NUL, no '+' or '#'. */
int pol_topic_valid(const char *topic);
/* A topic filter: as a topic, but '+' may stand alone in a level and '#'
 * alone in the last level. A "$share/<group>/<filter>" prefix is
 * accepted when the group is non-empty without wildcards and the rest is
 * a valid filter. */
int pol_filter_valid(const char *filter);
/* The filter inside "$share/<group>/<filter>", or filter itself. */
const char *pol_filter_unshare(const char *filter);

/* Does pattern (a filter) match topic? `+` one level (possibly empty),
 * `#` zero or more trailing levels ("a/#" matches "a"), and a topic
 * whose first level starts with '$' is not matched by a wildcard in the
 * pattern's first level. 0 for invalid input. */
int pol_match(const char *pattern, const char *topic);
/* Does pattern cover filter: is every topic the filter can match also
 * matched by pattern? ("a/#" covers "a/+", "a/+" does not cover "a/#".) */
int pol_covers(const char *pattern, const char *filter);
/* Is there a topic both match? In pol_covers and pol_intersects the
 * filter may be "$share/<group>/<filter>" and is read as <filter>; the
 * pattern is always taken literally. Neither limits the depth. */
int pol_intersects(const char *pattern, const char *filter);

/* ---- policy documents ----------------------------------------------- */

typedef enum {
    POL_CONNECT = 1,
    POL_PUBLISH = 2,
    POL_SUBSCRIBE = 4,
    POL_RECEIVE = 8
} pol_action;

/* "connect" -> POL_CONNECT...; 0 for an unknown name. */
pol_action pol_action_parse(const char *name);
const char *pol_action_name(pol_action a);

/* Validates a policy document (docs/policies.md): an object with "statements",
 * a non-empty array (at most 256) of objects with "effect" ("allow" or
 * "deny"), "actions" (non-empty array of action names), and "topics"
 * (filters, possibly with variables) for publish/subscribe/receive and/or
 * "client_ids" (exact or trailing-'*' globs, possibly with variables) for
 * connect. Unknown keys, variables and types are refused, as are topics
 * of more than POL_LEVELS_MAX levels and "$share/" topics (a policy
 * names the filter). "policy" (string) and "index" (integer), which
 * pol_set_statements adds, are accepted; "${$}" stands for a literal '$'
 * (the export's escape for a "${" that came from a value). On error
 * returns AD_EFIELD with a message naming the statement, e.g.
 * "statement 2: unknown action \"fly\"". */
ad_err pol_doc_validate(const json_t *doc, char *err, size_t errlen);

/* ---- compiling and deciding ----------------------------------------- */

/* The values variables take for one identity. NULL or "" = unset. A
 * value containing '/', '+', '#' or NUL (or '*' in a client id) makes the
 * pattern using it not match; a value is inserted literally, never
 * expanded again. This holds for each group and each child too: a
 * hostile child id drops that child's patterns only. vars itself may be
 * NULL (everything unset).
 *
 * children must be sorted by strcmp: a shared set finds a child by
 * binary search (pol_decide_bound), so with an unsorted array it may
 * miss a child that pol_compile would expand, and so miss a deny too.
 * The caller sorts once per gateway, not per decision. */
typedef struct {
    const char *device_id;         /* ${device.id} */
    const char *client_id;         /* ${client_id} */
    const char *username;          /* ${username} */
    const char *cert_cn;           /* ${cert.cn} */
    const json_t *attributes;      /* ${device.attributes.<key>}: object of strings */
    const char *const *groups;     /* ${group}: one pattern per group */
    size_t group_count;
    const char *const *children;   /* ${child.id}: the connecting gateway's active
                                    * children, sorted by strcmp, no duplicates */
    size_t child_count;
} pol_vars;

/* One named, already validated policy document. */
typedef struct {
    const char *name;
    const json_t *doc;
} pol_source;

typedef struct pol_set pol_set; /* compiled, immutable, thread-safe to read */

/* The most patterns pol_compile and pol_statements_bound expand for one
 * set: each pattern of the sources counts once, or with ${group} once
 * per group, with ${child.id} once per child, with both once per
 * (group, child) pair. */
enum { POL_EXPANSIONS_MAX = 1 << 20 };

/* Compiles the statements of sources (in order) with variables
 * substituted. Patterns whose variables cannot be substituted are
 * dropped (they match nothing; the statement's other patterns stay); a
 * pattern with ${group} becomes one pattern per group, one with
 * ${child.id} one per child, one with both one per (group, child) pair,
 * each reading the same group and child in every level. The documents
 * are validated again (AD_EFIELD as pol_doc_validate); more than
 * POL_EXPANSIONS_MAX patterns to expand is AD_EFIELD too ("...expand to
 * more than ... patterns"), because groups times children is the
 * caller's to bound and memory grows with it. Expanding and building
 * the tries grow about linearly with the patterns (a gateway with
 * 10,000 children compiles in tens of milliseconds). A statement
 * carrying "policy" and "index" is reported under those. On error *out
 * is NULL. */
ad_err pol_compile(const pol_source *sources, size_t n, const pol_vars *vars,
                   pol_set **out, char *err, size_t errlen);
void pol_set_free(pol_set *set);

/* The substituted statements as a JSON array of statement objects, each
 * with "policy" and "index" besides effect/actions/topics/client_ids; a
 * new reference. Compiling them again (as the single source of a
 * document {"statements": ...}, with no variables) decides identically:
 * this is what a broker plugin receives with an allowed connect.
 * Statements left without patterns are omitted, and one with more than
 * 256 patterns (from ${group} or ${child.id}) is split into consecutive
 * statements with the same policy and index; the array may then hold
 * more than a document's 256 statements (a gateway with 10,000 children
 * gets 40 per statement that reads ${child.id}), so a receiver compiles
 * it as consecutive documents of at most 256. NULL if out of memory. */
json_t *pol_set_statements(const pol_set *set);

typedef struct {
    int allow;             /* 1 allow, 0 deny */
    const char *policy;    /* deciding statement's policy name, or NULL */
    int statement;         /* its index in that document, or -1 */
    const char *reason;    /* short code: "allowed", "explicit_deny",
                            * "no_matching_allow", "invalid_topic" ... */
} pol_decision;

/* Decides action on subject (a topic for publish/receive, a filter for
 * subscribe, a client id for connect). Explicit deny wins; no allow
 * means deny. Publish/receive topics with wildcards and invalid
 * topics/filters are denied, and so are subjects of more than
 * POL_LEVELS_MAX levels. Subscribe is allowed only if some allow pattern
 * covers the filter and no deny pattern intersects it. The deciding
 * statement is the first matching deny, else the first covering/matching
 * allow, in source order. Reasons: "allowed", "explicit_deny",
 * "no_matching_allow", "invalid_topic", "invalid_filter",
 * "invalid_client_id", "unknown_action", "no_policy" (set NULL).
 * Thread-safe; allocates nothing. */
pol_decision pol_decide(const pol_set *set, pol_action action,
                        const char *subject);

/* Decides action on every topic a filter can match, for granting token
 * scopes ("publish:devices/d1/#"): as subscribe does, allowed only if an
 * allow pattern of that action covers the filter and no deny pattern
 * intersects it. Connect is decided as by pol_decide. Thread-safe;
 * allocates nothing. */
pol_decision pol_decide_filter(const pol_set *set, pol_action action,
                               const char *filter);

/* ---- sets shared by many devices ------------------------------------ */

/* A fleet has few distinct policy sets and millions of devices, so a
 * set is compiled once with its variables left in place and shared by
 * every device that has it; the variables are bound when deciding.
 *
 * pol_compile_shared compiles sources like pol_compile, keeping each
 * pattern's variables. pol_decide_bound(set, vars, action, subject)
 * then decides exactly as pol_decide(pol_compile(sources, vars), action,
 * subject) would: the same allow, policy, statement and reason, for
 * every vars (the no-injection rule included: a value with '/', '+',
 * '#', NUL, or '*' in a client id, an unset or empty value, or an
 * expansion that is invalid, longer than POL_TOPIC_MAX or starts with
 * "$share/" makes that pattern match nothing; ${group} takes one group
 * at a time and ${child.id} one child at a time, the same group and
 * child everywhere in one pattern). Its cost grows with the subject's
 * depth, not with the number of devices. On a set from pol_compile,
 * vars is ignored; pol_decide is pol_decide_bound with vars NULL.
 * Thread-safe; allocates nothing.
 *
 * A shared set holds only the patterns of its sources, not one per
 * group or child, and its client ids with variables are tried in
 * statement order (each expanded, per group with ${group}), so connect
 * costs grow with those; a topic level with variables is one trie
 * child, expanded and compared with the subject's level, and a '+' or
 * '#' in a subscribe filter meets every such child that expands
 * validly.
 *
 * ${child.id} is not tried child by child where it need not be: a topic
 * level, or an exact client id, that is literal text around one
 * ${child.id} (and reads no other variable) takes the child the
 * subject names, found by binary search in vars->children, so that a
 * gateway with 10,000 children decides in time proportional to the
 * topic's depth times log2 of the children (bench_policy: about 2.5
 * times the cost of one child). These try each child (and each group,
 * for ${group}) instead, costing time linear in the children: a level
 * or exact id reading ${child.id} with another variable or twice
 * ("${group}-${child.id}"), a client id glob reading ${child.id}
 * ("gw-${child.id}-*"), and a '+' or '#' in a subscribe filter meeting
 * a ${child.id} level of a deny when the deny reads a variable again
 * below that level or a child's pattern could pass POL_TOPIC_MAX (a
 * device's compiled set walks each child's literal there too). When
 * neither holds, as in "devices/${child.id}/secret", the children
 * differ below only in name, and the first child that expands validly
 * is walked for all of them. Allow patterns never cost that: a '+' or
 * '#' is covered by no one child's pattern (devices/c1/# does not cover
 * devices/+/#), exactly as pol_compile's expansion decides.
 *
 * pol_set_statements, pol_decide_filter, pol_scope_grant and
 * pol_emqx_acl take no variables: on a shared set they see only the
 * patterns without variables (a pattern with variables matches
 * nothing, as in a set compiled with vars NULL). For a connection's
 * export, compile a bound set with pol_compile. On error of
 * pol_compile_shared *out is NULL. */
ad_err pol_compile_shared(const pol_source *sources, size_t n, pol_set **out,
                          char *err, size_t errlen);
pol_decision pol_decide_bound(const pol_set *set, const pol_vars *vars,
                              pol_action action, const char *subject);

/* pol_set_statements(pol_compile(sources, vars)) without building the
 * tries: what a broker gets on an allowed connect, at a fraction of a
 * compile's cost. NULL on error or out of memory. */
json_t *pol_statements_bound(const pol_source *sources, size_t n,
                             const pol_vars *vars);

/* Which variables a set's patterns read, so that a cache keeps only the
 * per-device values a decision needs: POL_USES_* bits, 0 for a set from
 * pol_compile (its variables are substituted) or NULL. The "${$}"
 * escape is no variable. */
enum {
    POL_USES_DEVICE_ID = 1,
    POL_USES_CLIENT_ID = 2,
    POL_USES_USERNAME = 4,
    POL_USES_CERT_CN = 8,
    POL_USES_GROUP = 16,
    POL_USES_ATTRIBUTES = 32,
    POL_USES_CHILD = 64
};
unsigned pol_set_uses(const pol_set *set);

/* ---- token scopes and EMQX rules ----------------------------------- */

/* A scope is space-separated "action:filter" items (publish, subscribe
 * or receive; a valid filter). Minting and verifying share these
 * bounds, so no token is minted that a verifier refuses. */
enum { POL_SCOPE_MAX = 8192, POL_SCOPE_ITEMS_MAX = 128 };

/* Compiles scope into an allow-only set (an empty scope allows
 * nothing) and, if normalized is non-NULL, its canonical text (single
 * spaces, duplicates dropped; malloc). AD_EFIELD with a message for a
 * malformed item or a scope over the bounds; on error nothing is
 * written. */
ad_err pol_scope_compile(const char *scope, pol_set **set, char **normalized,
                         char *err, size_t errlen);

/* The scope to grant: the items of requested that policy allows in
 * full (pol_decide_filter), or with requested NULL or "" every filter
 * of the policy's allow statements that it allows in full. *granted is
 * malloc'd canonical text. AD_EFIELD for a malformed request or a grant
 * over the bounds, AD_EFORBIDDEN if nothing is left. */
ad_err pol_scope_grant(const pol_set *policy, const char *requested,
                       char **granted, char *err, size_t errlen);

/* The EMQX rule list ({"permission","action","topic"} objects) for a
 * session decided by policy: every deny first (EMQX takes the first
 * match), then the allows — the policy's own, or with a token scope
 * (non-NULL) only the scope items the policy allows in full — and last
 * a deny of everything, because EMQX's default for an unmatched topic
 * is allow. Receive has no EMQX rule. A new reference, NULL if out of
 * memory. */
json_t *pol_emqx_acl(const pol_set *policy, const char *scope);

#endif
