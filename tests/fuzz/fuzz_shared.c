/* Fuzz target for shared policy sets: the input is NUL-separated parts,
 * a policy document, the variables (device id, client id, username,
 * cert CN, attributes "k" and "j", a count byte and the groups, then
 * the gateway's children) and subjects. The count byte's value mod 4 is
 * the number of groups, its value / 4 mod 7 that of children (sorted
 * and made unique here, as pol_vars requires). A valid document is
 * compiled shared and, with those variables, for the device; pol_decide_bound on the first must equal
 * pol_decide on the second in every field, for every action on every
 * subject, and the shared set with no variables must decide as the set
 * compiled with none. A part "\x01" stands for an unset value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    INPUT_MAX = 64 * 1024,
    PARTS_MAX = 24,
    GROUPS_MAX = 3,
    CHILDREN_MAX = 6,
    P_DOC = 0, P_ID, P_CID, P_USER, P_CN, P_ATTR_K, P_ATTR_J, P_NGROUPS,
    P_GROUPS /* then the groups, then the subjects */
};

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static int same(pol_decision a, pol_decision b)
{
    return a.allow == b.allow && a.statement == b.statement &&
           strcmp(a.reason, b.reason) == 0 &&
           ((a.policy == NULL) == (b.policy == NULL)) &&
           (a.policy == NULL || strcmp(a.policy, b.policy) == 0);
}

static int strcmp_p(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char *value(char *const *part, const size_t *len, size_t n,
                         size_t i)
{
    if (i >= n || (len[i] == 1 && part[i][0] == '\x01'))
        return NULL;
    return part[i];
}

static void check_subject(const pol_set *shared, const pol_set *bound,
                          const pol_set *none, const pol_vars *v,
                          const char *subject)
{
    unsigned a;

    for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1) {
        CHECK(same(pol_decide_bound(shared, v, (pol_action)a, subject),
                   pol_decide(bound, (pol_action)a, subject)));
        CHECK(same(pol_decide(shared, (pol_action)a, subject),
                   pol_decide(none, (pol_action)a, subject)));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = NULL, *part[PARTS_MAX], err[256];
    size_t len[PARTS_MAX], nparts = 0, i, ngroups = 0, first_subject;
    size_t nkids = 0, nchildren = 0;
    const char *groups[GROUPS_MAX], *children[CHILDREN_MAX];
    json_t *doc = NULL, *attrs = NULL;
    pol_set *shared = NULL, *bound = NULL, *none = NULL;
    pol_source src;
    pol_vars v;

    if (size > INPUT_MAX)
        return 0;
    /* A copy with a terminating NUL, cut at every NUL into parts. */
    buf = malloc(size + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    part[0] = buf;
    for (i = 0; i <= size && nparts < PARTS_MAX; i++) {
        if (buf[i] != '\0')
            continue;
        len[nparts] = (size_t)(buf + i - part[nparts]);
        nparts++;
        if (nparts < PARTS_MAX)
            part[nparts] = buf + i + 1;
    }
    doc = json_loadb(part[P_DOC], len[P_DOC], 0, NULL);
    if (doc == NULL)
        goto out;
    src.name = "fuzz";
    src.doc = doc;
    if (pol_doc_validate(doc, err, sizeof(err)) != AD_OK) {
        /* A refused document compiles neither way. */
        CHECK(pol_compile_shared(&src, 1, &shared, err, sizeof(err)) !=
                  AD_OK &&
              shared == NULL);
        goto out;
    }
    memset(&v, 0, sizeof(v));
    v.device_id = value(part, len, nparts, P_ID);
    v.client_id = value(part, len, nparts, P_CID);
    v.username = value(part, len, nparts, P_USER);
    v.cert_cn = value(part, len, nparts, P_CN);
    attrs = json_object();
    CHECK(attrs != NULL);
    /* Attributes unchecked, as a store may hand over any bytes. */
    if (value(part, len, nparts, P_ATTR_K) != NULL)
        json_object_set_new(attrs, "k",
                            json_stringn_nocheck(part[P_ATTR_K],
                                                 len[P_ATTR_K]));
    if (value(part, len, nparts, P_ATTR_J) != NULL)
        json_object_set_new(attrs, "j",
                            json_stringn_nocheck(part[P_ATTR_J],
                                                 len[P_ATTR_J]));
    v.attributes = attrs;
    if (nparts > P_NGROUPS && len[P_NGROUPS] > 0) {
        unsigned char c = (unsigned char)part[P_NGROUPS][0];

        ngroups = c % (GROUPS_MAX + 1);
        nkids = (size_t)(c / (GROUPS_MAX + 1)) % (CHILDREN_MAX + 1);
    }
    for (i = 0; i < ngroups; i++)
        groups[i] = value(part, len, nparts, P_GROUPS + i);
    v.groups = groups;
    v.group_count = ngroups;
    /* The children: strings (an unset part is skipped), sorted, unique. */
    for (i = 0; i < nkids; i++) {
        const char *c = value(part, len, nparts, P_GROUPS + ngroups + i);

        if (c != NULL)
            children[nchildren++] = c;
    }
    qsort(children, nchildren, sizeof(children[0]), strcmp_p);
    v.child_count = 0;
    for (i = 0; i < nchildren; i++)
        if (v.child_count == 0 ||
            strcmp(children[v.child_count - 1], children[i]) != 0)
            children[v.child_count++] = children[i];
    v.children = children;
    first_subject = P_GROUPS + ngroups + nkids;

    CHECK(pol_compile_shared(&src, 1, &shared, err, sizeof(err)) == AD_OK);
    CHECK(pol_compile(&src, 1, &v, &bound, err, sizeof(err)) == AD_OK);
    CHECK(pol_compile(&src, 1, NULL, &none, err, sizeof(err)) == AD_OK);
    for (i = first_subject; i < nparts; i++)
        check_subject(shared, bound, none, &v, part[i]);
    /* The values themselves, which the templates expand to. */
    for (i = P_ID; i < first_subject && i < nparts; i++)
        check_subject(shared, bound, none, &v, part[i]);
out:
    pol_set_free(shared);
    pol_set_free(bound);
    pol_set_free(none);
    json_decref(attrs);
    json_decref(doc);
    free(buf);
    return 0;
}
