/* Abuse limits for costly credential checks (docs/api.md §3): a gate that
 * lets at most N argon2id runs happen at once and fails fast beyond
 * that, and a bounded table of repeated failures per key ("dev:<id>",
 * "ip:<address>") that backs a key off exponentially. The table has a
 * fixed size chosen at open; a flood of new keys evicts old entries
 * instead of growing memory. */
#ifndef AUTHD_RATELIMIT_H
#define AUTHD_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"

typedef struct rl rl;

typedef struct {
    unsigned fail_window_s;  /* a full burst of failures drains in this */
    unsigned device_burst;   /* failures a device or token may make */
    unsigned source_burst;   /* failures a source address may make */
    unsigned backoff_max_s;  /* the longest single back-off */
    size_t table_size;       /* keys remembered at most (rounded up) */
    unsigned parallel;       /* concurrent costly checks (0: 1) */
} rl_config;

/* What was limited, for authd_rate_limited_total{what}. */
typedef enum {
    RL_WHAT_SECRET,  /* a device secret (argon2id) */
    RL_WHAT_BUSY,    /* the argon2id gate was full */
    RL_WHAT_SOURCE,  /* a source address that kept failing credentials */
    RL_WHAT__COUNT
} rl_what;

enum { RL_KEY_MAX = 160 };

/* Creates a limiter. On error *out is NULL. */
ad_err rl_open(const rl_config *cfg, rl **out);
void rl_close(rl *r); /* NULL-safe */

/* 0 if key may make an attempt at now_ms (a monotonic clock), else the
 * whole seconds (>= 1) until it may: the Retry-After value. */
unsigned rl_blocked(rl *r, const char *key, uint64_t now_ms);

/* Records a failed attempt for key at now_ms. Failures fill a bucket
 * that drains burst of them per fail_window_s; with burst failures in
 * the bucket the key is blocked for 1 s, and each further one doubles
 * that, up to backoff_max_s. In the long run a key so gets about burst
 * failures per window. Returns the block now in force in seconds (0 if
 * none). */
unsigned rl_fail(rl *r, const char *key, unsigned burst, uint64_t now_ms);

/* The configured bursts, for rl_fail. */
unsigned rl_device_burst(const rl *r);
unsigned rl_source_burst(const rl *r);

/* A successful attempt: forgets key's failures. */
void rl_success(rl *r, const char *key);

/* Takes a slot of the costly-check gate: 1 if taken (then call
 * rl_gate_leave once the work is done), 0 if parallel checks are already
 * running (the caller answers rate_limited rather than queueing). */
int rl_gate_enter(rl *r);
void rl_gate_leave(rl *r);

/* Counts a limited request for metrics, and reads the counts. */
void rl_count(rl *r, rl_what what);
uint64_t rl_counted(rl *r, rl_what what);
const char *rl_what_name(rl_what what);

/* The current monotonic time in milliseconds, for the calls above. */
uint64_t rl_now_ms(void);

#endif
