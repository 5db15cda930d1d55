/* What the check path knows about each device, cached within a memory
 * budget (cache.h): a small fixed-size record per device — status,
 * incarnation, a reference to its policy set, the last verified secret's
 * MAC, and its attributes only when its policies read them. No device
 * carries a compiled policy of its own.
 *
 * A policy set is the ordered policy documents a device gets from its
 * own policies and then its groups'. Every device with the same policy
 * and group names shares one set, compiled once with its variables left
 * in place (pol_compile_shared) and bound per decision. A cache miss for
 * a device therefore costs one store read, not a compile. Sets are
 * stamped with the policy generation they were read under; a policy or
 * group change bumps it, after which a device whose set is older is read
 * again on its next use. */
#ifndef AUTHD_DEVCACHE_H
#define AUTHD_DEVCACHE_H

#include <stdint.h>

#include <jansson.h>

#include "../policy/policy.h"
#include "cache.h"
#include "registry.h"
#include "store.h"

typedef struct devcache devcache;
typedef struct polset polset;
typedef struct chlist chlist;

/* A device as one decision sees it, copied out of the cache: the set
 * and attributes are references (dev_view_release). */
typedef struct {
    registry_device_status status;
    char incarnation[REGISTRY_INCARNATION_MAX]; /* "" for old records */
    polset *set;
    json_t *attributes; /* NULL unless the set reads attributes */
    chlist *children;   /* a gateway's active children: NULL unless the
                         * set reads ${child.id} */
    const char *gateway; /* the device's gateway or NULL: inside a
                          * devcache_use callback only (NULL in a
                          * dev_view_ref copy) */
} dev_view;

/* budget: bytes for device records; sets get a share of their own. */
ad_err devcache_open(store *st, size_t budget, devcache **out);
void devcache_close(devcache *dc);

/* Test hook: called between a load's store read and its cache insert. */
void devcache_set_race_hook(devcache *dc, void (*hook)(void *arg), void *arg);

/* The device, loaded from the store on a miss. AD_ENOTFOUND if there is
 * no such device, AD_ESTORE/AD_ENOMEM on failure. */
ad_err devcache_get(devcache *dc, const char *id, dev_view *out);
void dev_view_release(dev_view *v);

/* Runs fn(view, arg) with the device, loaded from the store on a miss,
 * and sets *result to what it returns. The view is valid during the
 * call only (it holds no references: a hit takes no shared counter), and
 * fn runs under the lock of the device's cache shard, so it must be
 * short and must not call back into this cache. Errors as
 * devcache_get; fn is not called then. */
ad_err devcache_use(devcache *dc, const char *id,
                    int (*fn)(const dev_view *v, void *arg), void *arg,
                    int *result);

/* A counted copy of v, for use after a devcache_use callback returns. */
void dev_view_ref(const dev_view *v, dev_view *out);

/* Variables for deciding as device id (pol_vars of policy.h): the
 * device's groups, attributes and active children (sorted) from v, the
 * connection's from the arguments (NULL = unset). */
void dev_view_vars(const dev_view *v, const char *device_id,
                   const char *client_id, const char *username,
                   const char *cert_cn, pol_vars *out);

/* The device's shared compiled set, or NULL if its documents did not
 * compile (a deny). Valid while v is held. */
const pol_set *dev_view_policy(const dev_view *v);

/* The statements a broker gets on an allowed connect, with vars
 * substituted (pol_statements_bound: no tries built). */
json_t *dev_view_statements(const dev_view *v, const pol_vars *vars);

/* The set compiled with vars bound (pol_compile), for what needs
 * substituted statements: the export to brokers on connect, token
 * scopes, EMQX rules. Free with pol_set_free. */
ad_err dev_view_bind(const dev_view *v, const pol_vars *vars, pol_set **out);

/* Device secrets: the MAC (keyed, never the secret) of the last secret
 * verified for the device. devcache_secret_known is 1 if mac is it.
 * devcache_note is noted before reading the secret's hash from the
 * store; devcache_secret_remember records mac only if the device was not
 * invalidated since. */
int devcache_secret_known(devcache *dc, const char *id, const uint8_t mac[32]);
uint64_t devcache_note(devcache *dc, const char *id);
void devcache_secret_remember(devcache *dc, const char *id, uint64_t noted,
                              const uint8_t mac[32]);

/* Invalidation (the rule of cache.h). */
void devcache_forget(devcache *dc, const char *id);
void devcache_forget_policies(devcache *dc);
void devcache_forget_all(devcache *dc); /* devices and policy sets */

typedef struct {
    cache_stats devices, sets;
} devcache_stats;
void devcache_get_stats(devcache *dc, devcache_stats *out);

#endif
