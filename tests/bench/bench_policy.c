/* Micro-benchmark of the policy engine on the check path: compiles the
 * docs/policies.md example plus a group policy of a few dozen statements for 10k
 * distinct devices (as the daemon's per-device cache would), then times
 * pol_decide for publish and subscribe over those devices. Prints
 * µs/device for compiling and ns/decision for deciding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../policy/policy.h"

enum {
    DEVICES = 10000,
    SUBJECTS = 6,      /* per device and action */
    ROUNDS = 40,       /* passes over every device's subjects */
    SUBJECT_LEN = 96,
    GROUP_STATEMENTS = 24
};

static const char base_doc[] =
    "{\"statements\":["
    "{\"effect\":\"allow\",\"actions\":[\"connect\"],"
    "\"client_ids\":[\"${device.id}\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
    "\"topics\":[\"devices/${device.id}/telemetry/#\"]},"
    "{\"effect\":\"allow\",\"actions\":[\"subscribe\",\"receive\"],"
    "\"topics\":[\"devices/${device.id}/cmd/+\"]},"
    "{\"effect\":\"deny\",\"actions\":[\"publish\",\"subscribe\",\"receive\"],"
    "\"topics\":[\"$SYS/#\"]}]}";

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* A fleet policy shared by every group: per-group, per-site and
 * per-model topics, a block of application topics, and some denies. */
static json_t *group_doc(void)
{
    json_t *sts = json_array(), *doc;
    char t[128];
    int i;

    json_array_append_new(sts, json_pack(
        "{s:s,s:[s,s],s:[s,s]}", "effect", "allow", "actions", "publish",
        "receive", "topics", "fleet/${group}/status/${device.id}",
        "sites/${device.attributes.site}/sensors/${device.id}/+"));
    json_array_append_new(sts, json_pack(
        "{s:s,s:[s,s],s:[s,s]}", "effect", "allow", "actions", "subscribe",
        "receive", "topics", "broadcast/${group}/+",
        "firmware/${device.attributes.model}/#"));
    json_array_append_new(sts, json_pack(
        "{s:s,s:[s,s,s],s:[s,s]}", "effect", "deny", "actions", "publish",
        "subscribe", "receive", "topics", "fleet/+/admin/#", "$SYS/#"));
    json_array_append_new(sts, json_pack(
        "{s:s,s:[s],s:[s]}", "effect", "deny", "actions", "publish",
        "topics", "sites/+/sensors/+/calibration"));
    for (i = 0; i < GROUP_STATEMENTS; i++) {
        snprintf(t, sizeof(t), "app/%d/data/${device.id}/+", i);
        json_array_append_new(sts, json_pack(
            "{s:s,s:[s,s],s:[s,s]}", "effect", "allow", "actions",
            "publish", "subscribe", "topics", t, "app/${group}/shared/#"));
    }
    doc = json_pack("{s:o}", "statements", sts);
    return doc;
}

typedef struct {
    char pub[SUBJECTS][SUBJECT_LEN];
    char sub[SUBJECTS][SUBJECT_LEN];
} subjects;

static void make_subjects(subjects *s, int dev, const char *id)
{
    snprintf(s->pub[0], SUBJECT_LEN, "devices/%s/telemetry/temp", id);
    snprintf(s->pub[1], SUBJECT_LEN, "sites/site%d/sensors/%s/t", dev % 50, id);
    snprintf(s->pub[2], SUBJECT_LEN, "app/%d/data/%s/v", dev % GROUP_STATEMENTS,
             id);
    snprintf(s->pub[3], SUBJECT_LEN, "devices/other/telemetry/temp");
    snprintf(s->pub[4], SUBJECT_LEN, "$SYS/broker/load");
    snprintf(s->pub[5], SUBJECT_LEN, "fleet/g%d/admin/reset", dev % 20);
    snprintf(s->sub[0], SUBJECT_LEN, "devices/%s/cmd/+", id);
    snprintf(s->sub[1], SUBJECT_LEN, "devices/%s/cmd/#", id);
    snprintf(s->sub[2], SUBJECT_LEN, "broadcast/g%d/+", dev % 20);
    snprintf(s->sub[3], SUBJECT_LEN, "firmware/m%d/#", dev % 7);
    snprintf(s->sub[4], SUBJECT_LEN, "$SYS/#");
    snprintf(s->sub[5], SUBJECT_LEN, "app/g%d/#", dev % 20);
}

static double run(pol_set **sets, const subjects *subj, pol_action a,
                  long *allowed, long *count)
{
    double t0 = now_ns();
    int r, d, k;

    for (r = 0; r < ROUNDS; r++)
        for (d = 0; d < DEVICES; d++)
            for (k = 0; k < SUBJECTS; k++) {
                const char *s = a == POL_PUBLISH ? subj[d].pub[k]
                                                 : subj[d].sub[k];
                *allowed += pol_decide(sets[d], a, s).allow;
                (*count)++;
            }
    return now_ns() - t0;
}

int main(void)
{
    json_t *base = NULL, *grp = NULL, *attrs = NULL;
    pol_set **sets = NULL;
    subjects *subj = NULL;
    char id[32], site[16], model[16], g1[16], err[256];
    const char *groups[2];
    double t0, compile_ns, ns;
    long allowed = 0, count = 0, stmts = 0;
    int d, rc = 1;

    base = json_loads(base_doc, 0, NULL);
    grp = group_doc();
    sets = calloc(DEVICES, sizeof(*sets));
    subj = calloc(DEVICES, sizeof(*subj));
    if (base == NULL || grp == NULL || sets == NULL || subj == NULL ||
        pol_doc_validate(grp, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "bench_policy: setup failed\n");
        goto out;
    }
    t0 = now_ns();
    for (d = 0; d < DEVICES; d++) {
        pol_source src[2] = {{"base", base}, {"fleet", grp}};
        pol_vars v;

        snprintf(id, sizeof(id), "SN-%05d", d);
        snprintf(site, sizeof(site), "site%d", d % 50);
        snprintf(model, sizeof(model), "m%d", d % 7);
        snprintf(g1, sizeof(g1), "g%d", d % 20);
        groups[0] = g1;
        groups[1] = "all";
        attrs = json_pack("{s:s,s:s}", "site", site, "model", model);
        memset(&v, 0, sizeof(v));
        v.device_id = id;
        v.client_id = id;
        v.attributes = attrs;
        v.groups = groups;
        v.group_count = 2;
        if (pol_compile(src, 2, &v, &sets[d], err, sizeof(err)) != AD_OK) {
            fprintf(stderr, "bench_policy: compile: %s\n", err);
            goto out;
        }
        json_decref(attrs);
        attrs = NULL;
    }
    compile_ns = now_ns() - t0;
    for (d = 0; d < DEVICES; d++) {
        snprintf(id, sizeof(id), "SN-%05d", d);
        make_subjects(&subj[d], d, id);
    }
    {
        json_t *sts = pol_set_statements(sets[0]);
        stmts = (long)json_array_size(sts);
        json_decref(sts);
    }
    printf("policy: %d devices, %ld substituted statements each\n", DEVICES,
           stmts);
    printf("compile: %.2f us/device\n", compile_ns / DEVICES / 1e3);

    ns = run(sets, subj, POL_PUBLISH, &allowed, &count);
    printf("publish: %.1f ns/decision, %.2f M decisions/s (%ld of %ld allowed)\n",
           ns / (double)count, (double)count / ns * 1e3, allowed, count);
    allowed = count = 0;
    ns = run(sets, subj, POL_SUBSCRIBE, &allowed, &count);
    printf("subscribe: %.1f ns/decision, %.2f M decisions/s (%ld of %ld allowed)\n",
           ns / (double)count, (double)count / ns * 1e3, allowed, count);
    /* The same decisions against one device's set, which stays in cache:
     * the cost of the walk itself, without the memory misses of 10k
     * devices' sets. */
    {
        double t1 = now_ns();
        long n = 0, hits = 0;
        int r, k;

        for (r = 0; r < ROUNDS * 1000; r++)
            for (k = 0; k < SUBJECTS; k++, n++)
                hits += pol_decide(sets[0], POL_PUBLISH, subj[0].pub[k]).allow;
        ns = now_ns() - t1;
        printf("publish, one hot device: %.1f ns/decision (%ld of %ld allowed)\n",
               ns / (double)n, hits, n);
    }
    rc = 0;
out:
    if (sets != NULL)
        for (d = 0; d < DEVICES; d++)
            pol_set_free(sets[d]);
    free(sets);
    free(subj);
    json_decref(attrs);
    json_decref(base);
    json_decref(grp);
    return rc;
}
