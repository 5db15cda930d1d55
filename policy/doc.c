/* Policy documents (docs/policies.md): action names, the strict validation an
 * operator sees when a document is refused, and the ${...} variables
 * that make one document serve every device. Validation and compilation
 * share pol_stmt_parse, so a document that validates always compiles. */
#include <stdlib.h>
#include <string.h>

#include "pol_int.h"

static const struct {
    const char *name;
    pol_action action;
} action_names[] = {
    {"connect", POL_CONNECT},
    {"publish", POL_PUBLISH},
    {"subscribe", POL_SUBSCRIBE},
    {"receive", POL_RECEIVE},
};

enum {
    N_ACTIONS = sizeof(action_names) / sizeof(action_names[0]),
    TOPIC_ACTIONS = POL_PUBLISH | POL_SUBSCRIBE | POL_RECEIVE,
    ECHO_MAX = 80 /* how much of a bad value an error message quotes */
};

pol_action pol_action_parse(const char *name)
{
    size_t i;

    if (name == NULL)
        return 0;
    for (i = 0; i < N_ACTIONS; i++)
        if (strcmp(name, action_names[i].name) == 0)
            return action_names[i].action;
    return 0;
}

const char *pol_action_name(pol_action a)
{
    size_t i;

    for (i = 0; i < N_ACTIONS; i++)
        if (action_names[i].action == a)
            return action_names[i].name;
    return NULL;
}

/* ---- variables ------------------------------------------------------ */

static const char attr_prefix[] = "device.attributes.";
enum { ATTR_PREFIX_LEN = sizeof(attr_prefix) - 1 };

static int name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(name, lit, n) == 0;
}

static int attr_key_valid(const char *k, size_t n)
{
    size_t i;

    if (n == 0 || n > POL_ATTR_KEY_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
              c == ':'))
            return 0;
    }
    return 1;
}

/* Resolves one variable name: -1 unknown, 0 unset, 1 set (*val, *vlen).
 * With vars NULL (validation) every known variable reads as "v". */
static int var_value(const char *name, size_t n, const pol_vars *vars,
                     const pol_bind *bind, int validating, const char **val,
                     size_t *vlen)
{
    const char *v = NULL;

    if (name_is(name, n, "$")) {
        /* The escape pol_set_statements writes for a literal "${" that
         * came from a value, so re-compiling it cannot expand it. */
        *val = "$";
        *vlen = 1;
        return 1;
    }
    if (name_is(name, n, "device.id")) {
        v = vars ? vars->device_id : NULL;
    } else if (name_is(name, n, "client_id")) {
        v = vars ? vars->client_id : NULL;
    } else if (name_is(name, n, "username")) {
        v = vars ? vars->username : NULL;
    } else if (name_is(name, n, "cert.cn")) {
        v = vars ? vars->cert_cn : NULL;
    } else if (name_is(name, n, "group")) {
        v = bind ? bind->group : NULL;
    } else if (name_is(name, n, "child.id")) {
        v = bind ? bind->child : NULL;
    } else if (n > ATTR_PREFIX_LEN &&
               memcmp(name, attr_prefix, ATTR_PREFIX_LEN) == 0 &&
               attr_key_valid(name + ATTR_PREFIX_LEN, n - ATTR_PREFIX_LEN)) {
        char key[POL_ATTR_KEY_MAX + 1];
        const json_t *s;

        if (!validating && vars != NULL && json_is_object(vars->attributes)) {
            memcpy(key, name + ATTR_PREFIX_LEN, n - ATTR_PREFIX_LEN);
            key[n - ATTR_PREFIX_LEN] = '\0';
            s = json_object_get(vars->attributes, key);
            if (json_is_string(s)) {
                *val = json_string_value(s);
                /* The JSON length, not strlen: an embedded NUL must be
                 * seen (and refused) rather than silently truncate. */
                *vlen = json_string_length(s);
                return *vlen > 0;
            }
        }
        if (!validating)
            return 0;
    } else {
        return -1;
    }
    if (validating) {
        *val = "v";
        *vlen = 1;
        return 1;
    }
    if (v == NULL || v[0] == '\0')
        return 0; /* empty reads as unset: "a//b" is not what was meant */
    *val = v;
    *vlen = strlen(v);
    return 1;
}

static int value_hostile(const char *v, size_t n, pol_pat_kind kind)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char c = v[i];
        if (c == '/' || c == '+' || c == '#' || c == '\0' ||
            (c == '*' && kind == POL_PAT_CLIENT_ID))
            return 1;
    }
    return 0;
}

/* Where an expansion goes. Copying is what compiling a device's set does;
 * comparing with a given text and measuring are what deciding on a
 * shared set does, without a buffer, so that a decision allocates
 * nothing however long the level. All three run the one loop in
 * expand(), so a value is refused or accepted the same way in each. */
typedef enum { SINK_COPY, SINK_COMPARE, SINK_MEASURE } sink_mode;

typedef struct {
    sink_mode mode;
    char *out;          /* COPY: the buffer and its capacity */
    size_t cap;
    const char *s;      /* COMPARE: the text, and whether a prefix of it */
    size_t sn;          /* is enough */
    int prefix;
    size_t o;           /* bytes produced so far */
    unsigned char pend[4]; /* MEASURE: an unfinished UTF-8 sequence, */
    size_t npend, need;    /* which may be completed by the next piece */
    int first;          /* the first byte, or -1 */
} sink;

/* The UTF-8 check of codec_utf8_valid, fed piece by piece: two values
 * side by side can complete each other's sequence. 0 if invalid. */
static int sink_utf8(sink *k, const char *p, size_t n)
{
    size_t i;
    uint32_t cp;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        if (k->npend == 0) {
            if (c == 0)
                return 0;
            if (c < 0x80)
                continue;
            k->need = c >= 0xc2 && c <= 0xdf   ? 2
                      : c >= 0xe0 && c <= 0xef ? 3
                      : c >= 0xf0 && c <= 0xf4 ? 4
                                               : 0;
            if (k->need == 0)
                return 0;
        }
        k->pend[k->npend++] = c;
        if (k->npend == k->need) {
            if (codec_utf8_decode(k->pend, k->need, &cp) != k->need ||
                cp == 0)
                return 0;
            k->npend = 0;
        }
    }
    return 1;
}

/* Appends p[0..n): 1, or what expand() returns for a failure. */
static int sink_put(sink *k, const char *p, size_t n)
{
    switch (k->mode) {
    case SINK_COPY:
        if (n >= k->cap - k->o)
            return k->cap > POL_TOPIC_MAX ? 0 : -2; /* too long, or retry */
        memcpy(k->out + k->o, p, n);
        break;
    case SINK_COMPARE:
        if (n > k->sn - k->o || memcmp(k->s + k->o, p, n) != 0)
            return 0;
        break;
    case SINK_MEASURE:
        if (n > POL_TOPIC_MAX - k->o || !sink_utf8(k, p, n))
            return 0;
        if (k->o == 0 && n > 0)
            k->first = (unsigned char)p[0];
        break;
    }
    k->o += n;
    return 1;
}

static int sink_end(sink *k, size_t *outn)
{
    switch (k->mode) {
    case SINK_COPY:
        k->out[k->o] = '\0';
        break;
    case SINK_COMPARE:
        if (!k->prefix && k->o != k->sn)
            return 0;
        break;
    case SINK_MEASURE:
        if (k->npend != 0)
            return 0;
        break;
    }
    *outn = k->o;
    return 1;
}

/* The one expansion of a template; validating substitutes "v". Runs of
 * literal text go to the sink whole, so comparing costs one memcmp per
 * run rather than one per byte. */
static int expand(const char *t, size_t tn, pol_pat_kind kind,
                  const pol_vars *vars, const pol_bind *bind, int validating,
                  sink *k, size_t *outn)
{
    size_t i = 0, j;
    const char *val;
    size_t vlen;
    int r;

    while (i < tn) {
        if (t[i] == '$' && i + 1 < tn && t[i + 1] == '{') {
            const char *close = memchr(t + i + 2, '}', tn - i - 2);

            if (close == NULL)
                return -1;
            j = (size_t)(close - (t + i + 2));
            r = var_value(t + i + 2, j, vars, bind, validating, &val, &vlen);
            if (r <= 0)
                return r;
            /* The "$" escape is ours and safe; every other value is
             * checked so an id cannot inject a wildcard or a level. */
            if (!name_is(t + i + 2, j, "$") && value_hostile(val, vlen, kind))
                return 0;
            i += j + 3;
        } else {
            /* Up to the next "${" (a '$' not followed by '{' is text). */
            for (j = i + 1; j < tn; j++)
                if (t[j] == '$' && j + 1 < tn && t[j + 1] == '{')
                    break;
            val = t + i;
            vlen = j - i;
            i = j;
        }
        if ((r = sink_put(k, val, vlen)) != 1)
            return r;
    }
    return sink_end(k, outn);
}

int pol_tmpl_expand(const char *t, size_t tn, pol_pat_kind kind,
                    const pol_vars *vars, const pol_bind *bind, char *out,
                    size_t cap, size_t *outn)
{
    sink k;

    memset(&k, 0, sizeof(k));
    k.mode = SINK_COPY;
    k.out = out;
    k.cap = cap;
    return expand(t, tn, kind, vars, bind, 0, &k, outn);
}

int pol_tmpl_compare(const char *t, size_t tn, pol_pat_kind kind,
                     const pol_vars *vars, const pol_bind *bind,
                     const char *s, size_t n, int prefix, size_t *outn)
{
    sink k;
    size_t dummy;

    memset(&k, 0, sizeof(k));
    k.mode = SINK_COMPARE;
    k.s = s;
    k.sn = n;
    k.prefix = prefix;
    return expand(t, tn, kind, vars, bind, 0, &k,
                  outn ? outn : &dummy) == 1;
}

int pol_tmpl_measure(const char *t, size_t tn, pol_pat_kind kind,
                     const pol_vars *vars, const pol_bind *bind,
                     size_t *outn, int *first)
{
    sink k;

    memset(&k, 0, sizeof(k));
    k.mode = SINK_MEASURE;
    k.first = -1;
    if (expand(t, tn, kind, vars, bind, 0, &k, outn) != 1)
        return 0;
    *first = k.first;
    return 1;
}

/* The POL_USES_* bit of one variable name (0 for "$" and unknown ones). */
static unsigned var_uses(const char *name, size_t n)
{
    if (name_is(name, n, "device.id"))
        return POL_USES_DEVICE_ID;
    if (name_is(name, n, "client_id"))
        return POL_USES_CLIENT_ID;
    if (name_is(name, n, "username"))
        return POL_USES_USERNAME;
    if (name_is(name, n, "cert.cn"))
        return POL_USES_CERT_CN;
    if (name_is(name, n, "group"))
        return POL_USES_GROUP;
    if (name_is(name, n, "child.id"))
        return POL_USES_CHILD;
    if (n > ATTR_PREFIX_LEN && memcmp(name, attr_prefix, ATTR_PREFIX_LEN) == 0)
        return POL_USES_ATTRIBUTES;
    return 0;
}

unsigned pol_tmpl_uses(const char *t, size_t tn)
{
    unsigned u = 0;
    size_t i = 0, j;

    /* The same reading of "${...}" as expand(). */
    while (i < tn) {
        if (t[i] == '$' && i + 1 < tn && t[i + 1] == '{') {
            const char *close = memchr(t + i + 2, '}', tn - i - 2);

            if (close == NULL)
                break;
            j = (size_t)(close - (t + i + 2));
            u |= var_uses(t + i + 2, j);
            i += j + 3;
        } else {
            i++;
        }
    }
    return u;
}

int pol_tmpl_child_split(const char *t, size_t tn, size_t *pre, size_t *post)
{
    static const char child[] = "child.id";
    size_t i = 0, j;
    int found = 0;

    /* The same reading of "${...}" as expand(), so that the split is at
     * the variable expand() would substitute. */
    while (i < tn) {
        if (t[i] == '$' && i + 1 < tn && t[i + 1] == '{') {
            const char *close = memchr(t + i + 2, '}', tn - i - 2);

            if (close == NULL)
                return 0;
            j = (size_t)(close - (t + i + 2));
            if (name_is(t + i + 2, j, child)) {
                if (found++)
                    return 0;
                *pre = i;
                *post = i + j + 3;
            }
            i += j + 3;
        } else {
            i++;
        }
    }
    return found == 1;
}

/* ---- validation ----------------------------------------------------- */

static int has_key(const json_t *obj, const char *const *keys, size_t n,
                   const char **unknown)
{
    const char *k;
    json_t *v;
    size_t i;

    json_object_foreach((json_t *)obj, k, v) {
        (void)v;
        for (i = 0; i < n; i++)
            if (strcmp(k, keys[i]) == 0)
                break;
        if (i == n) {
            *unknown = k;
            return 0;
        }
    }
    return 1;
}

static size_t levels_of(const char *s, size_t n)
{
    size_t i, count = 1;

    for (i = 0; i < n; i++)
        count += s[i] == '/';
    return count;
}

static ad_err check_pattern(const json_t *v, size_t si, const char *what,
                            size_t pi, pol_pat_kind kind, char *err,
                            size_t errlen)
{
    /* A variable never expands to more than its own text when validating,
     * so the template's length bounds the buffer; short ones (nearly all)
     * need no allocation, which keeps compiling cheap. */
    char small[256], *buf = small, *heap = NULL;
    const char *t;
    size_t tn, n;
    ad_err e = AD_OK;
    sink k;
    int r;

    if (!json_is_string(v))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: %s %zu must be a string", si, what, pi);
    t = json_string_value(v);
    tn = json_string_length(v);
    if (tn != strlen(t))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: %s %zu contains a NUL byte", si, what,
                       pi);
    if (tn == 0 || tn > POL_TOPIC_MAX || !codec_utf8_valid(t, tn))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: %s %zu must be 1-%d bytes of UTF-8",
                       si, what, pi, POL_TOPIC_MAX);
    if (tn >= sizeof(small)) {
        heap = malloc(tn + 1);
        if (heap == NULL)
            return ad_errf(AD_ENOMEM, err, errlen, "out of memory");
        buf = heap;
    }
    memset(&k, 0, sizeof(k));
    k.mode = SINK_COPY;
    k.out = buf;
    k.cap = tn + 1;
    r = expand(t, tn, kind, NULL, NULL, 1, &k, &n);
    if (r < 0) {
        e = ad_errf(AD_EFIELD, err, errlen,
                    "statement %zu: %s \"%.*s\": unknown or unterminated "
                    "variable", si, what, ECHO_MAX, t);
    } else if (r == 0) {
        e = ad_errf(AD_EFIELD, err, errlen,
                    "statement %zu: %s \"%.*s\" is too long", si, what,
                    ECHO_MAX, t);
    } else if (kind == POL_PAT_TOPIC) {
        if (!pol_body_valid(buf, n, 1))
            e = ad_errf(AD_EFIELD, err, errlen,
                        "statement %zu: invalid topic filter \"%.*s\"", si,
                        ECHO_MAX, t);
        else if (levels_of(buf, n) > POL_LEVELS_MAX)
            /* Variables cannot add levels (a '/' in a value is refused),
             * so this bounds every expansion: each fits the trie. */
            e = ad_errf(AD_EFIELD, err, errlen,
                        "statement %zu: topic \"%.*s\" has more than %d "
                        "levels", si, ECHO_MAX, t, POL_LEVELS_MAX);
        else if (n >= 7 && memcmp(buf, "$share/", 7) == 0)
            e = ad_errf(AD_EFIELD, err, errlen,
                        "statement %zu: topic \"%.*s\": a policy names the "
                        "filter, not a $share/ subscription", si, ECHO_MAX, t);
    } else {
        char *star = memchr(buf, '*', n);

        if (star != NULL && star != buf + n - 1)
            e = ad_errf(AD_EFIELD, err, errlen,
                        "statement %zu: client id \"%.*s\": '*' is only "
                        "allowed at the end", si, ECHO_MAX, t);
    }
    free(heap);
    return e;
}

static ad_err check_patterns(const json_t *arr, size_t si, const char *key,
                             pol_pat_kind kind, char *err, size_t errlen)
{
    const char *what = kind == POL_PAT_TOPIC ? "topic" : "client id";
    size_t i;
    ad_err e;

    if (!json_is_array(arr) || json_array_size(arr) == 0 ||
        json_array_size(arr) > POL_PATTERNS_MAX)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"%s\" must be an array of 1-%d "
                       "strings", si, key, POL_PATTERNS_MAX);
    for (i = 0; i < json_array_size(arr); i++) {
        e = check_pattern(json_array_get(arr, i), si, what, i, kind, err,
                          errlen);
        if (e != AD_OK)
            return e;
    }
    return AD_OK;
}

ad_err pol_stmt_parse(const json_t *st, size_t si, pol_stmt_view *out,
                      char *err, size_t errlen)
{
    static const char *const keys[] = {"effect", "actions", "topics",
                                       "client_ids", "policy", "index"};
    const json_t *effect, *actions, *v;
    const char *unknown = NULL;
    pol_action a;
    size_t i;
    ad_err e;

    memset(out, 0, sizeof(*out));
    out->index = -1;
    if (!json_is_object(st))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: must be an object", si);
    if (!has_key(st, keys, sizeof(keys) / sizeof(keys[0]), &unknown))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: unknown key \"%.*s\"", si, ECHO_MAX,
                       unknown);
    effect = json_object_get(st, "effect");
    if (json_is_string(effect) &&
        strcmp(json_string_value(effect), "allow") == 0)
        out->allow = 1;
    else if (!json_is_string(effect) ||
             strcmp(json_string_value(effect), "deny") != 0)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"effect\" must be \"allow\" or "
                       "\"deny\"", si);
    actions = json_object_get(st, "actions");
    if (!json_is_array(actions) || json_array_size(actions) == 0)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"actions\" must be a non-empty array "
                       "of action names", si);
    for (i = 0; i < json_array_size(actions); i++) {
        v = json_array_get(actions, i);
        if (!json_is_string(v))
            return ad_errf(AD_EFIELD, err, errlen,
                           "statement %zu: action %zu must be a string", si,
                           i);
        a = pol_action_parse(json_string_value(v));
        if (a == 0)
            return ad_errf(AD_EFIELD, err, errlen,
                           "statement %zu: unknown action \"%.*s\"", si,
                           ECHO_MAX, json_string_value(v));
        if (out->actions & a)
            return ad_errf(AD_EFIELD, err, errlen,
                           "statement %zu: duplicate action \"%s\"", si,
                           pol_action_name(a));
        out->actions |= a;
    }
    out->topics = json_object_get(st, "topics");
    out->client_ids = json_object_get(st, "client_ids");
    if ((out->actions & TOPIC_ACTIONS) && out->topics == NULL)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"topics\" is required for publish, "
                       "subscribe and receive", si);
    if (!(out->actions & TOPIC_ACTIONS) && out->topics != NULL)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"topics\" given without a publish, "
                       "subscribe or receive action", si);
    if ((out->actions & POL_CONNECT) && out->client_ids == NULL)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"client_ids\" is required for "
                       "connect", si);
    if (!(out->actions & POL_CONNECT) && out->client_ids != NULL)
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"client_ids\" given without the "
                       "connect action", si);
    if (out->topics != NULL &&
        (e = check_patterns(out->topics, si, "topics", POL_PAT_TOPIC, err,
                            errlen)) != AD_OK)
        return e;
    if (out->client_ids != NULL &&
        (e = check_patterns(out->client_ids, si, "client_ids",
                            POL_PAT_CLIENT_ID, err, errlen)) != AD_OK)
        return e;
    /* "policy" and "index" are what pol_set_statements adds; they are
     * kept so a broker plugin's decisions name the original statement. */
    v = json_object_get(st, "policy");
    if (v != NULL && !json_is_string(v))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"policy\" must be a string", si);
    out->policy = v ? json_string_value(v) : NULL;
    v = json_object_get(st, "index");
    if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                      json_integer_value(v) > 1000000))
        return ad_errf(AD_EFIELD, err, errlen,
                       "statement %zu: \"index\" must be a small non-negative "
                       "integer", si);
    if (v != NULL)
        out->index = json_integer_value(v);
    return AD_OK;
}

ad_err pol_doc_statements(const json_t *doc, const json_t **out, char *err,
                          size_t errlen)
{
    static const char *const keys[] = {"statements"};
    const char *unknown = NULL;
    const json_t *sts;

    *out = NULL;
    if (!json_is_object(doc))
        return ad_errf(AD_EFIELD, err, errlen,
                       "a policy document must be a JSON object");
    if (!has_key(doc, keys, 1, &unknown))
        return ad_errf(AD_EFIELD, err, errlen, "unknown key \"%.*s\"",
                       ECHO_MAX, unknown);
    sts = json_object_get(doc, "statements");
    if (!json_is_array(sts) || json_array_size(sts) == 0 ||
        json_array_size(sts) > POL_STATEMENTS_MAX)
        return ad_errf(AD_EFIELD, err, errlen,
                       "\"statements\" must be an array of 1-%d statements",
                       POL_STATEMENTS_MAX);
    *out = sts;
    return AD_OK;
}

ad_err pol_doc_validate(const json_t *doc, char *err, size_t errlen)
{
    const json_t *sts;
    pol_stmt_view sv;
    size_t i;
    ad_err e;

    if ((e = pol_doc_statements(doc, &sts, err, errlen)) != AD_OK)
        return e;
    for (i = 0; i < json_array_size(sts); i++)
        if ((e = pol_stmt_parse(json_array_get(sts, i), i, &sv, err,
                                errlen)) != AD_OK)
            return e;
    return AD_OK;
}
