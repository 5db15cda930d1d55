/* Fuzz target for policy documents: bytes -> JSON -> pol_doc_validate;
 * a valid document is compiled with fixed (partly hostile) variables,
 * groups and gateway children, and decided on a few subjects, and its
 * export (pol_set_statements) must validate, compile without variables
 * and decide identically. An export longer than a document's 256
 * statements is compiled as consecutive documents, as the broker plugin
 * does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 64 * 1024 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

static const char *const subjects[] = {
    "dev1", "devices/dev1/telemetry/t", "devices/dev1/cmd/+", "#", "$SYS/x",
    "$SYS/#", "a/b", "a/+", "a/#", "g/g1/x", "$share/s/a/#", "u${x}",
    "s1/a", "SN-1", "", "+/+", "a//b", "/", "c1", "gw-c1",
    "devices/c1/telemetry/t", "devices/+/telemetry/t", "c${1}", "x*",
    "devices/x*/t",
};

enum { DOC_STATEMENTS = 256, EXPORT_DOCS = 64 };

static int same(pol_decision a, pol_decision b)
{
    return a.allow == b.allow && a.statement == b.statement &&
           strcmp(a.reason, b.reason) == 0 &&
           ((a.policy == NULL) == (b.policy == NULL)) &&
           (a.policy == NULL || strcmp(a.policy, b.policy) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const groups[] = {"g1", "g/2", "+", "g${3}"};
    /* Sorted by strcmp, as pol_vars requires; four are hostile. */
    static const char *const children[] = {"#",  "+",    "a/b", "c${1}",
                                           "c1", "dev1", "x*"};
    json_t *doc = NULL, *attrs = NULL, *exp = NULL;
    json_t *doc2[EXPORT_DOCS] = {NULL};
    pol_set *set = NULL, *set2 = NULL;
    pol_vars vars;
    pol_source src, src2[EXPORT_DOCS];
    char err[256];
    size_t i, j, ndocs;
    unsigned a;

    if (size > INPUT_MAX)
        return 0;
    doc = json_loadb((const char *)data, size, JSON_ALLOW_NUL, NULL);
    if (doc == NULL)
        return 0;
    if (pol_doc_validate(doc, err, sizeof(err)) != AD_OK) {
        /* Refused documents must not compile either. */
        src.name = "fuzz";
        src.doc = doc;
        CHECK(pol_compile(&src, 1, NULL, &set, err, sizeof(err)) != AD_OK &&
              set == NULL);
        goto out;
    }
    attrs = json_pack("{s:s,s:s,s:s%}", "site", "s1", "bad", "a/b", "nul",
                      "x\0y", (size_t)3);
    memset(&vars, 0, sizeof(vars));
    vars.device_id = "dev1";
    vars.client_id = "SN-1";
    vars.username = "u${x}";
    vars.cert_cn = "dev1";
    vars.attributes = attrs;
    vars.groups = groups;
    vars.group_count = sizeof(groups) / sizeof(groups[0]);
    vars.children = children;
    vars.child_count = sizeof(children) / sizeof(children[0]);
    src.name = "fuzz";
    src.doc = doc;
    CHECK(pol_compile(&src, 1, &vars, &set, err, sizeof(err)) == AD_OK);
    exp = pol_set_statements(set);
    CHECK(exp != NULL);
    {
        /* The export without the tries is the same. */
        json_t *light = pol_statements_bound(&src, 1, &vars);

        CHECK(light != NULL && json_equal(light, exp));
        json_decref(light);
    }
    if (json_array_size(exp) == 0) {
        /* Everything was dropped: the export is an empty list, which is
         * not a valid document, and the set must deny everything. */
        for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1)
            for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++)
                CHECK(!pol_decide(set, (pol_action)a, subjects[i]).allow);
        goto out;
    }
    ndocs = (json_array_size(exp) + DOC_STATEMENTS - 1) / DOC_STATEMENTS;
    CHECK(ndocs <= EXPORT_DOCS);
    for (j = 0; j < ndocs; j++) {
        json_t *part = json_array();

        CHECK(part != NULL);
        for (i = j * DOC_STATEMENTS;
             i < json_array_size(exp) && i < (j + 1) * DOC_STATEMENTS; i++)
            json_array_append(part, json_array_get(exp, i));
        doc2[j] = json_pack("{s:o}", "statements", part);
        CHECK(doc2[j] != NULL);
        CHECK(pol_doc_validate(doc2[j], err, sizeof(err)) == AD_OK);
        src2[j].name = "export";
        src2[j].doc = doc2[j];
    }
    CHECK(pol_compile(src2, ndocs, NULL, &set2, err, sizeof(err)) == AD_OK);
    for (a = POL_CONNECT; a <= POL_RECEIVE; a <<= 1)
        for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++)
            CHECK(same(pol_decide(set, (pol_action)a, subjects[i]),
                       pol_decide(set2, (pol_action)a, subjects[i])));
out:
    pol_set_free(set);
    pol_set_free(set2);
    json_decref(exp);
    for (j = 0; j < EXPORT_DOCS; j++)
        json_decref(doc2[j]);
    json_decref(attrs);
    json_decref(doc);
    return 0;
}
