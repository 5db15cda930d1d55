/* Micro-benchmark of the policy engine on the check path: compiles the
 * docs/policies.md example plus a group policy of a few dozen statements for 10k
 * distinct devices (as the daemon's per-device cache would), then times
 * pol_decide for publish and subscribe over those devices. Then the same
 * decisions on one shared set (pol_compile_shared) with each device's
 * variables bound when deciding (pol_decide_bound), which is what lets
 * a daemon serve a million devices from a few sets; the per-device
 * figures of the same run are its anchor. Prints µs/device for
 * compiling and ns/decision for deciding. Last, a gateway's
 * ${child.id} policy: decisions/s with 10,000 children beside the same
 * set with 1 child (the anchor) and with 100, whose ratio shows that a
 * decision grows only with the binary search (log2 of the children),
 * and the export's cost per child at 1,000 and 10,000 children, which
 * shows that it grows linearly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

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

/* Bytes in use on the heap, to weigh sets; 0 where glibc's counter is
 * missing (the figures then read 0). */
static size_t heap_used(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
    return mallinfo2().uordblks;
#else
    return 0;
#endif
}

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

/* One device's variables, kept for binding at decision time. */
typedef struct {
    char id[32], site[16], model[16], g1[16];
    const char *groups[2];
    json_t *attrs;
    pol_vars v;
} device;

static int device_init(device *dv, int d)
{
    snprintf(dv->id, sizeof(dv->id), "SN-%05d", d);
    snprintf(dv->site, sizeof(dv->site), "site%d", d % 50);
    snprintf(dv->model, sizeof(dv->model), "m%d", d % 7);
    snprintf(dv->g1, sizeof(dv->g1), "g%d", d % 20);
    dv->groups[0] = dv->g1;
    dv->groups[1] = "all";
    dv->attrs = json_pack("{s:s,s:s}", "site", dv->site, "model", dv->model);
    memset(&dv->v, 0, sizeof(dv->v));
    dv->v.device_id = dv->id;
    dv->v.client_id = dv->id;
    dv->v.attributes = dv->attrs;
    dv->v.groups = dv->groups;
    dv->v.group_count = 2;
    return dv->attrs != NULL;
}

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

/* With shared set, every device's decisions go to it with the device's
 * variables; without, to the device's own set. */
static double run(pol_set **sets, const pol_set *shared, const device *devs,
                  const subjects *subj, pol_action a, long *allowed,
                  long *count)
{
    double t0 = now_ns();
    int r, d, k;

    for (r = 0; r < ROUNDS; r++)
        for (d = 0; d < DEVICES; d++)
            for (k = 0; k < SUBJECTS; k++) {
                const char *s = a == POL_PUBLISH ? subj[d].pub[k]
                                                 : subj[d].sub[k];
                if (shared != NULL)
                    *allowed +=
                        pol_decide_bound(shared, &devs[d].v, a, s).allow;
                else
                    *allowed += pol_decide(sets[d], a, s).allow;
                (*count)++;
            }
    return now_ns() - t0;
}

/* The same per-device and shared runs, printed side by side. */
static void compare(pol_set **sets, const pol_set *shared,
                    const device *devs, const subjects *subj, pol_action a)
{
    long allowed = 0, count = 0, sallowed = 0, scount = 0;
    double ns = run(sets, NULL, devs, subj, a, &allowed, &count);
    double sns = run(NULL, shared, devs, subj, a, &sallowed, &scount);

    printf("%s: %.1f ns/decision per-device, %.1f ns/decision shared "
           "(%ld of %ld allowed; shared %ld)\n",
           pol_action_name(a), ns / (double)count, sns / (double)scount,
           allowed, count, sallowed);
}

enum { GW_CHILDREN = 10000, GW_SUBJECTS = 1024, GW_ROUNDS = 300 };

static const char gateway_doc[] =
    "{\"statements\":["
    "{\"effect\":\"allow\",\"actions\":[\"publish\"],"
    "\"topics\":[\"devices/${child.id}/telemetry/#\"]}]}";

/* ns per publish decision on the shared gateway set, for subjects
 * spread over the given children; *allowed counts the allows. */
static double gateway_run(const pol_set *shared, const pol_vars *v,
                          char (*subj)[SUBJECT_LEN], long *allowed,
                          long *count)
{
    double t0 = now_ns();
    int r, k;

    for (r = 0; r < GW_ROUNDS; r++)
        for (k = 0; k < GW_SUBJECTS; k++, (*count)++)
            *allowed += pol_decide_bound(shared, v, POL_PUBLISH,
                                         subj[k]).allow;
    return now_ns() - t0;
}

/* The export a gateway's connect answer carries, per child: with
 * `children` of them, in ns per child. -1 on failure. */
static double gateway_export(const pol_source *src, pol_vars *v,
                             size_t children)
{
    enum { REPEAT = 5 };
    double t0;
    json_t *sts;
    int r;

    v->child_count = children;
    t0 = now_ns();
    for (r = 0; r < REPEAT; r++) {
        if ((sts = pol_statements_bound(src, 1, v)) == NULL)
            return -1;
        json_decref(sts);
    }
    return (now_ns() - t0) / REPEAT / (double)children;
}

static int gateway_bench(void)
{
    /* The anchor (1 child), a small gateway, and the big one. */
    static const int counts[3] = {1, 100, GW_CHILDREN};
    char (*names)[16] = calloc(GW_CHILDREN, sizeof(*names));
    char (*subj)[GW_SUBJECTS][SUBJECT_LEN] = calloc(3, sizeof(*subj));
    const char **kids = calloc(GW_CHILDREN, sizeof(char *));
    json_t *doc = json_loads(gateway_doc, 0, NULL);
    pol_source src = {"gateway", doc};
    pol_set *shared = NULL;
    pol_vars v;
    char err[256];
    double best[3] = {0, 0, 0}, e1k, e10k;
    long allowed[3] = {0, 0, 0}, n[3] = {0, 0, 0};
    int i, c, rc = 1;

    if (names == NULL || subj == NULL || kids == NULL || doc == NULL ||
        pol_compile_shared(&src, 1, &shared, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "bench_policy: gateway setup failed\n");
        goto out;
    }
    for (i = 0; i < GW_CHILDREN; i++) {
        snprintf(names[i], sizeof(names[i]), "dev-%05d", i); /* sorted */
        kids[i] = names[i];
    }
    /* Spread over each gateway's children; every 8th subject names no
     * child, so a stranger is looked up too. */
    for (c = 0; c < 3; c++)
        for (i = 0; i < GW_SUBJECTS; i++)
            snprintf(subj[c][i], SUBJECT_LEN, "devices/%s%s/telemetry/temp",
                     names[(i * 7919) % counts[c]], i % 8 == 7 ? "x" : "");
    memset(&v, 0, sizeof(v));
    v.device_id = "gw-1";
    v.children = kids;
    /* Interleaved, best of 5: other work on the machine then weighs on
     * no size more than another. */
    for (i = 0; i < 5; i++) {
        for (c = 0; c < 3; c++) {
            long a = 0, k = 0;
            double t;

            v.child_count = (size_t)counts[c];
            t = gateway_run(shared, &v, subj[c], &a, &k);
            if (i == 0 || t < best[c])
                best[c] = t, allowed[c] = a, n[c] = k;
        }
    }
    printf("gateway publish, devices/${child.id}/telemetry/#, shared:");
    for (c = 0; c < 3; c++)
        printf("%s %d %s %.1f ns/decision (%.2f M/s, %ld of %ld allowed)",
               c ? " |" : "", counts[c], counts[c] == 1 ? "child" : "children",
               best[c] / (double)n[c], (double)n[c] / best[c] * 1e3,
               allowed[c], n[c]);
    printf(" | ratio %d:1 children %.2f\n", GW_CHILDREN,
           (best[2] / (double)n[2]) / (best[0] / (double)n[0]));
    e1k = gateway_export(&src, &v, GW_CHILDREN / 10);
    e10k = gateway_export(&src, &v, GW_CHILDREN);
    if (e1k < 0 || e10k < 0) {
        fprintf(stderr, "bench_policy: gateway export failed\n");
        goto out;
    }
    printf("gateway export (pol_statements_bound): %d children %.0f "
           "ns/child | %d children %.0f ns/child | ratio %.2f\n",
           GW_CHILDREN / 10, e1k, GW_CHILDREN, e10k, e10k / e1k);
    rc = 0;
out:
    pol_set_free(shared);
    json_decref(doc);
    free(names);
    free(subj);
    free(kids);
    return rc;
}

int main(void)
{
    json_t *base = NULL, *grp = NULL;
    pol_set **sets = NULL, *shared = NULL, *tmp = NULL;
    subjects *subj = NULL;
    device *devs = NULL;
    char err[256];
    double t0, compile_ns, ns;
    size_t heap0, heap1;
    long allowed = 0, count = 0, stmts = 0;
    int d, rc = 1, k, ndevs = 0;

    base = json_loads(base_doc, 0, NULL);
    grp = group_doc();
    sets = calloc(DEVICES, sizeof(*sets));
    subj = calloc(DEVICES, sizeof(*subj));
    devs = calloc(DEVICES, sizeof(*devs));
    if (base == NULL || grp == NULL || sets == NULL || subj == NULL ||
        devs == NULL || pol_doc_validate(grp, err, sizeof(err)) != AD_OK) {
        fprintf(stderr, "bench_policy: setup failed\n");
        goto out;
    }
    for (ndevs = 0; ndevs < DEVICES; ndevs++) {
        if (!device_init(&devs[ndevs], ndevs)) {
            fprintf(stderr, "bench_policy: setup failed\n");
            goto out;
        }
        make_subjects(&subj[ndevs], ndevs, devs[ndevs].id);
    }
    heap0 = heap_used();
    t0 = now_ns();
    for (d = 0; d < DEVICES; d++) {
        pol_source src[2] = {{"base", base}, {"fleet", grp}};

        if (pol_compile(src, 2, &devs[d].v, &sets[d], err, sizeof(err)) !=
            AD_OK) {
            fprintf(stderr, "bench_policy: compile: %s\n", err);
            goto out;
        }
    }
    compile_ns = now_ns() - t0;
    heap1 = heap_used();
    {
        json_t *sts = pol_set_statements(sets[0]);
        stmts = (long)json_array_size(sts);
        json_decref(sts);
    }
    printf("policy: %d devices, %ld substituted statements each\n", DEVICES,
           stmts);
    printf("compile: %.2f us/device, %.1f KiB/device\n",
           compile_ns / DEVICES / 1e3,
           (double)(heap1 - heap0) / DEVICES / 1024);

    ns = run(sets, NULL, devs, subj, POL_PUBLISH, &allowed, &count);
    printf("publish: %.1f ns/decision, %.2f M decisions/s (%ld of %ld allowed)\n",
           ns / (double)count, (double)count / ns * 1e3, allowed, count);
    allowed = count = 0;
    ns = run(sets, NULL, devs, subj, POL_SUBSCRIBE, &allowed, &count);
    printf("subscribe: %.1f ns/decision, %.2f M decisions/s (%ld of %ld allowed)\n",
           ns / (double)count, (double)count / ns * 1e3, allowed, count);
    /* The same decisions against one device's set, which stays in cache:
     * the cost of the walk itself, without the memory misses of 10k
     * devices' sets. */
    {
        double t1 = now_ns();
        long n = 0, hits = 0;
        int r;

        for (r = 0; r < ROUNDS * 1000; r++)
            for (k = 0; k < SUBJECTS; k++, n++)
                hits += pol_decide(sets[0], POL_PUBLISH, subj[0].pub[k]).allow;
        ns = now_ns() - t1;
        printf("publish, one hot device: %.1f ns/decision (%ld of %ld allowed)\n",
               ns / (double)n, hits, n);
    }

    /* One shared set for all of them. */
    {
        pol_source src[2] = {{"base", base}, {"fleet", grp}};
        enum { COMPILES = 2000 };

        t0 = now_ns();
        for (k = 0; k < COMPILES; k++) {
            if (pol_compile_shared(src, 2, &tmp, err, sizeof(err)) != AD_OK) {
                fprintf(stderr, "bench_policy: compile shared: %s\n", err);
                goto out;
            }
            pol_set_free(tmp);
            tmp = NULL;
        }
        ns = now_ns() - t0;
        heap0 = heap_used();
        if (pol_compile_shared(src, 2, &shared, err, sizeof(err)) != AD_OK) {
            fprintf(stderr, "bench_policy: compile shared: %s\n", err);
            goto out;
        }
        heap1 = heap_used();
        printf("shared: compile %.2f us/set, %.1f KiB/set (one set for all "
               "%d devices)\n", ns / COMPILES / 1e3,
               (double)(heap1 - heap0) / 1024, DEVICES);
    }
    compare(sets, shared, devs, subj, POL_PUBLISH);
    compare(sets, shared, devs, subj, POL_SUBSCRIBE);
    {
        double t1 = now_ns();
        long n = 0, hits = 0;
        int r;

        for (r = 0; r < ROUNDS * 1000; r++)
            for (k = 0; k < SUBJECTS; k++, n++)
                hits += pol_decide_bound(shared, &devs[0].v, POL_PUBLISH,
                                         subj[0].pub[k]).allow;
        ns = now_ns() - t1;
        printf("publish, one hot device, shared: %.1f ns/decision "
               "(%ld of %ld allowed)\n", ns / (double)n, hits, n);
    }
    rc = gateway_bench();
out:
    if (sets != NULL)
        for (d = 0; d < DEVICES; d++)
            pol_set_free(sets[d]);
    if (devs != NULL)
        for (d = 0; d < ndevs; d++)
            json_decref(devs[d].attrs);
    pol_set_free(shared);
    pol_set_free(tmp);
    free(sets);
    free(subj);
    free(devs);
    json_decref(base);
    json_decref(grp);
    return rc;
}
