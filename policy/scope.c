/* Token scopes and EMQX rule lists: the one implementation of how a
 * scope string is read, how a grant is cut down to what a policy allows,
 * and how a decision is handed to EMQX as a rule list. The daemon mints
 * and verifies with it and the mosquitto plugin decides with it, so a
 * token authd mints is always one that every verifier accepts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

/* One scope item, split in place: the action and the filter text. */
typedef struct {
    pol_action action;
    const char *name;   /* the action's name */
    char text[POL_SCOPE_MAX + 1];
    const char *filter; /* points into text */
} scope_item;

/* Reads the next item of *p into it. Returns 1 with an item, 0 at the
 * end, -1 (message in err) for a malformed item. */
static int scope_next(const char **p, scope_item *it, char *err, size_t errlen)
{
    size_t n;
    char *colon;

    while (**p == ' ')
        (*p)++;
    if (**p == '\0')
        return 0;
    n = strcspn(*p, " ");
    if (n > POL_SCOPE_MAX) {
        snprintf(err, errlen, "scope is longer than %d bytes", POL_SCOPE_MAX);
        return -1;
    }
    memcpy(it->text, *p, n);
    it->text[n] = '\0';
    *p += n;
    colon = strchr(it->text, ':');
    if (colon != NULL)
        *colon = '\0';
    it->action = colon ? pol_action_parse(it->text) : 0;
    /* "${" would be read as a variable when the scope is compiled and
     * silently match nothing: refused, so a scope means what it says. */
    if (it->action == 0 || it->action == POL_CONNECT ||
        !pol_filter_valid(colon + 1) || strstr(colon + 1, "${") != NULL) {
        if (colon != NULL)
            *colon = ':';
        snprintf(err, errlen,
                 "bad scope item \"%.64s\" (publish|subscribe|receive:filter)",
                 it->text);
        return -1;
    }
    it->name = it->text;
    it->filter = colon + 1;
    return 1;
}

/* A scope under construction: at most POL_SCOPE_MAX bytes and
 * POL_SCOPE_ITEMS_MAX items, duplicates dropped. */
typedef struct {
    char *text;
    size_t len, items;
} scope_text;

static int scope_text_init(scope_text *s)
{
    s->text = malloc(POL_SCOPE_MAX + 1);
    s->len = s->items = 0;
    if (s->text != NULL)
        s->text[0] = '\0';
    return s->text != NULL;
}

static int scope_text_has(const scope_text *s, const char *item, size_t n)
{
    const char *p = s->text;

    while ((p = strstr(p, item)) != NULL) {
        if ((p == s->text || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
        p++;
    }
    return 0;
}

/* Appends "action:filter" unless it is already there; AD_EFIELD if a
 * bound would be passed. */
static ad_err scope_text_add(scope_text *s, const char *action,
                             const char *filter, char *err, size_t errlen)
{
    size_t a = strlen(action), f = strlen(filter), n = a + 1 + f;
    size_t at = s->len ? s->len + 1 : 0;
    char *item = s->text + at;

    if (at + n > POL_SCOPE_MAX) {
        snprintf(err, errlen,
                 "the scope would exceed %d bytes: ask for a narrower scope",
                 POL_SCOPE_MAX);
        return AD_EFIELD;
    }
    /* The candidate is written after the terminated text, so the
     * duplicate search needs no second buffer. */
    memcpy(item, action, a);
    item[a] = ':';
    memcpy(item + a + 1, filter, f + 1);
    if (s->len > 0 && scope_text_has(s, item, n))
        return AD_OK;
    if (s->items >= POL_SCOPE_ITEMS_MAX) {
        snprintf(err, errlen,
                 "the scope would exceed %d items: ask for a narrower scope",
                 POL_SCOPE_ITEMS_MAX);
        return AD_EFIELD;
    }
    if (s->len > 0)
        s->text[s->len] = ' ';
    s->len = at + n;
    s->items++;
    return AD_OK;
}

ad_err pol_scope_compile(const char *scope, pol_set **set, char **normalized,
                         char *err, size_t errlen)
{
    json_t *stmts = json_array(), *doc = NULL;
    scope_item *it = malloc(sizeof(*it));
    scope_text norm = {NULL, 0, 0};
    const char *p = scope ? scope : "";
    pol_source src;
    ad_err e = AD_OK;
    int r;

    *set = NULL;
    if (normalized)
        *normalized = NULL;
    if (stmts == NULL || it == NULL || !scope_text_init(&norm)) {
        e = AD_ENOMEM;
        goto out;
    }
    if (strlen(p) > POL_SCOPE_MAX) {
        snprintf(err, errlen, "scope is longer than %d bytes", POL_SCOPE_MAX);
        e = AD_EFIELD;
        goto out;
    }
    while ((r = scope_next(&p, it, err, errlen)) == 1) {
        size_t before = norm.items;

        if ((e = scope_text_add(&norm, it->name, it->filter, err, errlen)) !=
            AD_OK)
            goto out;
        if (norm.items == before)
            continue; /* a duplicate item */
        if (json_array_append_new(stmts, json_pack("{s:s, s:[s], s:[s]}",
                                                   "effect", "allow",
                                                   "actions", it->name,
                                                   "topics", it->filter)) !=
            0) {
            e = AD_ENOMEM;
            goto out;
        }
    }
    if (r < 0) {
        e = AD_EFIELD;
        goto out;
    }
    /* An empty scope compiles to a set that allows nothing. */
    doc = json_pack("{s:O}", "statements", stmts);
    if (doc == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    src.name = "scope";
    src.doc = doc;
    if ((e = pol_compile(&src, 1, NULL, set, err, errlen)) != AD_OK)
        goto out;
    if (normalized) {
        *normalized = norm.text;
        norm.text = NULL;
    }
out:
    json_decref(doc);
    json_decref(stmts);
    free(norm.text);
    free(it);
    return e;
}

/* Adds to s every publish/subscribe/receive filter of the allow
 * statements that policy allows in full. */
static ad_err grant_all(const pol_set *policy, scope_text *s, char *err,
                        size_t errlen)
{
    json_t *stmts = pol_set_statements(policy), *st, *act, *topic;
    size_t i, j, k;
    ad_err e = AD_OK;

    if (stmts == NULL)
        return AD_ENOMEM;
    json_array_foreach(stmts, i, st) {
        const char *eff = json_string_value(json_object_get(st, "effect"));

        if (eff == NULL || strcmp(eff, "allow") != 0)
            continue;
        json_array_foreach(json_object_get(st, "actions"), j, act) {
            pol_action a = pol_action_parse(json_string_value(act));

            if (a == 0 || a == POL_CONNECT)
                continue;
            json_array_foreach(json_object_get(st, "topics"), k, topic) {
                const char *f = json_string_value(topic);

                /* A scope is space-separated and has no variables: a
                 * filter with a space or a "${" cannot be written into
                 * one. */
                if (f == NULL || strchr(f, ' ') != NULL ||
                    strstr(f, "${") != NULL ||
                    !pol_decide_filter(policy, a, f).allow)
                    continue;
                if ((e = scope_text_add(s, pol_action_name(a), f, err,
                                        errlen)) != AD_OK)
                    goto out;
            }
        }
    }
out:
    json_decref(stmts);
    return e;
}

ad_err pol_scope_grant(const pol_set *policy, const char *requested,
                       char **granted, char *err, size_t errlen)
{
    scope_item *it = NULL;
    scope_text s = {NULL, 0, 0};
    const char *p = requested;
    ad_err e = AD_OK;
    int r;

    *granted = NULL;
    if (!scope_text_init(&s) || (it = malloc(sizeof(*it))) == NULL) {
        e = AD_ENOMEM;
        goto out;
    }
    if (requested == NULL || *requested == '\0') {
        if ((e = grant_all(policy, &s, err, errlen)) != AD_OK)
            goto out;
    } else {
        if (strlen(requested) > POL_SCOPE_MAX) {
            snprintf(err, errlen, "scope is longer than %d bytes",
                     POL_SCOPE_MAX);
            e = AD_EFIELD;
            goto out;
        }
        /* Validate the whole request before granting any of it. */
        while ((r = scope_next(&p, it, err, errlen)) == 1)
            ;
        if (r < 0) {
            e = AD_EFIELD;
            goto out;
        }
        p = requested;
        while (scope_next(&p, it, err, errlen) == 1)
            if (pol_decide_filter(policy, it->action, it->filter).allow &&
                (e = scope_text_add(&s, it->name, it->filter, err, errlen)) !=
                    AD_OK)
                goto out;
    }
    if (s.items == 0) {
        snprintf(err, errlen,
                 "the policy allows nothing of the requested scope");
        e = AD_EFORBIDDEN;
        goto out;
    }
    *granted = s.text;
    s.text = NULL;
out:
    free(s.text);
    free(it);
    return e;
}

/* ---- EMQX rule lists ---------------------------------------------------- */

/* EMQX decides publish and subscribe only; it has no rule for delivery. */
static int emqx_action(pol_action a)
{
    return a == POL_PUBLISH || a == POL_SUBSCRIBE;
}

static int emqx_rule(json_t *acl, const char *permission, const char *action,
                     const char *topic)
{
    return json_array_append_new(acl, json_pack("{s:s, s:s, s:s}",
                                                "permission", permission,
                                                "action", action, "topic",
                                                topic)) == 0;
}

/* Appends a rule for each publish/subscribe topic of the statements
 * with this effect. */
static int emqx_statement_rules(const json_t *stmts, const char *effect,
                                json_t *acl)
{
    const json_t *st, *act, *topic;
    size_t i, j, k;

    json_array_foreach(stmts, i, st) {
        const char *eff = json_string_value(json_object_get(st, "effect"));

        if (eff == NULL || strcmp(eff, effect) != 0)
            continue;
        json_array_foreach(json_object_get(st, "actions"), j, act) {
            pol_action a = pol_action_parse(json_string_value(act));

            if (!emqx_action(a))
                continue;
            json_array_foreach(json_object_get(st, "topics"), k, topic)
                if (json_is_string(topic) &&
                    !emqx_rule(acl, effect, pol_action_name(a),
                               json_string_value(topic)))
                    return 0;
        }
    }
    return 1;
}

json_t *pol_emqx_acl(const pol_set *policy, const char *scope)
{
    json_t *acl = json_array(), *stmts = pol_set_statements(policy);
    scope_item *it = malloc(sizeof(*it));
    const char *p = scope;
    char err[128];
    int ok = acl && stmts && it;

    /* EMQX takes the first rule that matches: every deny goes first. */
    ok = ok && emqx_statement_rules(stmts, "deny", acl);
    if (ok && scope == NULL) {
        ok = emqx_statement_rules(stmts, "allow", acl);
    } else if (ok) {
        /* A token session may do what its scope and the policy both
         * allow: only the scope's items the policy still allows in full
         * become allow rules. */
        while (ok && scope_next(&p, it, err, sizeof(err)) == 1)
            if (emqx_action(it->action) &&
                pol_decide_filter(policy, it->action, it->filter).allow)
                ok = emqx_rule(acl, "allow", it->name, it->filter);
    }
    /* EMQX answers a topic no rule matches with authorization.no_match,
     * which is allow by default: close the list so nothing else is
     * granted by omission. */
    ok = ok && emqx_rule(acl, "deny", "all", "#");
    json_decref(stmts);
    free(it);
    if (!ok) {
        json_decref(acl);
        return NULL;
    }
    return acl;
}
