/* See changes.h. */
#include <string.h>

#include "changes.h"
#include "checker.h"
#include "events.h"
#include "log.h"
#include "revocation.h"
#include "tokens.h"

/* A certificate record changed (issued, revoked): its cache entries go,
 * both the one by serial and the one by fingerprint, which only the
 * record knows. */
static void cert_changed(app *a, const char *serial)
{
    store_txn *tx = NULL;
    const char *text;
    size_t len;
    json_t *rec = NULL;

    if (store_read_begin(a->st, &tx) == AD_OK &&
        store_get_raw(tx, STORE_CERTS, serial, &text, &len) == AD_OK)
        rec = json_loadb(text, len, 0, NULL);
    store_read_end(tx);
    checker_forget_cert(a->checker, serial,
                        json_string_value(json_object_get(rec, "fingerprint")));
    json_decref(rec);
}

static void record_changed(app *a, store_table t, const char *key)
{
    switch (t) {
    case STORE_DEVICES:
    case STORE_DEVICE_SECRETS:
        if (a->checker)
            checker_forget_device(a->checker, key);
        break;
    case STORE_CERTS:
        if (a->checker)
            cert_changed(a, key);
        break;
    case STORE_REVOKED_CERTS:
        if (a->revocation)
            revocation_revoked_changed(a->revocation, key);
        break;
    case STORE_POLICIES:
    case STORE_GROUPS:
        if (a->checker)
            checker_forget_policies(a->checker);
        break;
    case STORE_REVOKED_JTIS:
        if (a->tokens)
            tokens_note_revoked(a->tokens, key);
        break;
    case STORE_META:
        /* Every revocation advances the CRL number in its transaction. */
        if (strcmp(key, "crl") == 0 && a->revocation)
            revocation_number_changed(a->revocation);
        /* A rotation on any node: sign and verify with the new ring. */
        else if (strcmp(key, "token_keys") == 0 && a->tokens &&
                 tokens_reload(a->tokens) != AD_OK)
            log_line("error", "event=token_keys_reload_failed");
        break;
    default:
        break; /* enrollments, API keys: read from the store on each use */
    }
}

/* Changes may have been missed (why: for the log): nothing cached may be
 * trusted. */
static void resync(app *a, const char *why)
{
    if (a->checker)
        checker_forget_all(a->checker);
    if (a->tokens && tokens_reload_revoked(a->tokens) != AD_OK)
        log_line("error", "event=resync_failed what=revoked_jtis");
    if (a->tokens && tokens_reload(a->tokens) != AD_OK)
        log_line("error", "event=resync_failed what=token_keys");
    if (a->revocation)
        revocation_resync(a->revocation);
    if (a->events && events_catch_up(a->events) != AD_OK)
        log_line("error", "event=resync_failed what=events");
    log_line("info", "event=caches_resynced why=%s", why);
}

void changes_apply(void *arg, const store_change *c)
{
    app *a = arg;

    switch (c->kind) {
    case STORE_CHANGE_RECORD:
        record_changed(a, c->table, c->key);
        break;
    case STORE_CHANGE_EVENTS:
        if (a->events && events_catch_up(a->events) != AD_OK)
            log_line("error", "event=events_catch_up_failed");
        break;
    case STORE_CHANGE_UNKNOWN:
        resync(a, "change_feed_gap");
        break;
    }
}

void changes_tick(app *a, time_t now)
{
    long ttl = a->cfg.check_ttl > 0 ? a->cfg.check_ttl : 1;

    if (store_ready(a->st)) {
        if (a->feed_down_since != 0)
            log_line("info", "event=change_feed_back down_s=%lld",
                     (long long)(now - a->feed_down_since));
        a->feed_down_since = 0;
        return;
    }
    if (a->feed_down_since == 0) {
        a->feed_down_since = now;
        log_line("warn", "event=change_feed_down");
    }
    /* Dropped a second early, as this runs once a second: nothing is
     * answered from before the outage for longer than check_ttl. */
    if (now - a->feed_down_since + 1 < ttl)
        return;
    if (a->checker)
        checker_forget_all(a->checker);
    /* The database may answer while the feed is down: jtis revoked on
     * another node meanwhile are read from it (a failure here is the
     * outage itself, already logged). */
    if (a->tokens)
        (void)tokens_reload_revoked(a->tokens);
}

void changes_catch_up(app *a)
{
    resync(a, "start");
}
