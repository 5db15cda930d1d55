/* Unit tests of the sealed enrollment token that DTLS-PSK needs
 * (registry_enrollment_psk, docs/coap.md): it opens to the token shown at
 * creation, only with the cluster's seal key, only in its own record, only
 * if it still hashes to the stored hash; enrollments created without a
 * seal key keep no copy; and the public view never shows it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "../../authd/registry_enrollments.h"
#include "../../authd/registry_records.h"
#include "../../authd/seal.h"
#include "tap.h"

static store *st;
static uint8_t key[SEAL_KEY_LEN];

/* Creates an enrollment; its id and token into id and token. */
static int create(const uint8_t *seal_key, char id[64], char token[64])
{
    registry_enrollment_new n;
    json_t *view = NULL;
    int rc = -1;

    memset(&n, 0, sizeof(n));
    n.id_pattern = "*";
    n.max_uses = 3;
    n.expires_in = 3600;
    n.cert_days = 30;
    n.seal_key = seal_key;
    if (registry_enrollment_create(st, "test", &n, &view) == AD_OK) {
        snprintf(id, 64, "%s", json_string_value(json_object_get(view, "id")));
        snprintf(token, 64, "%s",
                 json_string_value(json_object_get(view, "token")));
        rc = json_object_get(view, "token_sealed") == NULL ? 0 : -2;
    }
    json_decref(view);
    return rc;
}

struct field_copy {
    const char *from, *to, *field;
};

/* Copies one field of enrollment record from into record to. */
static ad_err copy_field(store_txn *tx, void *arg)
{
    struct field_copy *c = arg;
    json_t *a = NULL, *b = NULL;
    ad_err e = store_get(tx, STORE_ENROLLMENTS, c->from, &a);

    if (e == AD_OK)
        e = store_get(tx, STORE_ENROLLMENTS, c->to, &b);
    if (e == AD_OK)
        e = json_object_set(b, c->field, json_object_get(a, c->field)) == 0
                ? store_put(tx, STORE_ENROLLMENTS, c->to, b, 0)
                : AD_ENOMEM;
    json_decref(a);
    json_decref(b);
    return e;
}

static void test_the_sealed_token_opens_to_the_token_shown_once(void)
{
    char id[64], token[64], got[REGISTRY_ENR_TOKEN_MAX];
    registry_enrollment enr;
    json_t *view = NULL;

    ok(create(key, id, token) == 0,
       "an enrollment is created; its creation answer holds no sealed copy");
    ok(registry_enrollment_psk(st, key, id, &enr, got) == AD_OK &&
           strcmp(got, token) == 0 && strcmp(enr.id, id) == 0 &&
           enr.max_uses == 3,
       "the PSK lookup unseals exactly the token, with the enrollment");
    ok(registry_enrollment_view_get(st, id, &view) == AD_OK &&
           json_object_get(view, "token_sealed") == NULL &&
           json_object_get(view, "token_sha256") == NULL,
       "the public view shows neither the hash nor the sealed token");
    json_decref(view);
    OPENSSL_cleanse(got, sizeof(got));
}

static void test_only_the_seal_key_opens_it(void)
{
    char id[64], token[64], got[REGISTRY_ENR_TOKEN_MAX];
    uint8_t other[SEAL_KEY_LEN];
    registry_enrollment enr;

    memset(other, 0x55, sizeof(other));
    create(key, id, token);
    ok(registry_enrollment_psk(st, other, id, &enr, got) == AD_ECRYPTO &&
           got[0] == '\0' && enr.id[0] == '\0',
       "another key does not open it, and nothing is returned");
    ok(registry_enrollment_psk(st, NULL, id, &enr, got) == AD_ENOTFOUND,
       "without a seal key there is no PSK");
    ok(registry_enrollment_psk(st, key, "e_0000000000000000", &enr, got) ==
           AD_ENOTFOUND,
       "an unknown identity has no key");
}

static void test_an_enrollment_without_a_sealed_copy_has_no_psk(void)
{
    char id[64], token[64], got[REGISTRY_ENR_TOKEN_MAX];
    registry_enrollment enr;

    create(NULL, id, token);
    ok(registry_enrollment_psk(st, key, id, &enr, got) == AD_ENOTFOUND,
       "created without a seal key (as before CoAP): no PSK, the handshake "
       "fails");
    ok(registry_enrollment_by_token(st, token, &enr) == AD_OK,
       "its token still works over HTTP");
}

static void test_a_sealed_token_moved_to_another_record_does_not_open(void)
{
    char a[64], ta[64], b[64], tb[64], got[REGISTRY_ENR_TOKEN_MAX];
    registry_enrollment enr;
    struct field_copy c;

    create(key, a, ta);
    create(key, b, tb);
    c.from = a;
    c.to = b;
    c.field = "token_sealed";
    ok(store_write(st, copy_field, &c) == AD_OK, "A's sealed token into B");
    ok(registry_enrollment_psk(st, key, b, &enr, got) == AD_ECRYPTO,
       "it is bound to A's id: B's identity does not get A's token");
    /* And A's hash beside A's sealed token in B: the id binding refuses it
     * before the hash is compared. */
    c.field = "token_sha256";
    store_write(st, copy_field, &c);
    ok(registry_enrollment_psk(st, key, b, &enr, got) == AD_ECRYPTO,
       "still refused with the hash copied too");
}

static void test_a_sealed_token_must_match_the_stored_hash(void)
{
    char a[64], ta[64], b[64], tb[64], got[REGISTRY_ENR_TOKEN_MAX];
    registry_enrollment enr;
    struct field_copy c;

    create(key, a, ta);
    create(key, b, tb);
    c.from = b;
    c.to = a;
    c.field = "token_sha256";
    ok(store_write(st, copy_field, &c) == AD_OK, "B's hash into A");
    ok(registry_enrollment_psk(st, key, a, &enr, got) == AD_ECRYPTO &&
           got[0] == '\0',
       "a sealed token whose hash is not the record's is refused");
}

int main(void)
{
    char dir[] = "/tmp/authd-psk-XXXXXX", cmd[300], err[256] = "";

    if (mkdtemp(dir) == NULL || store_open(dir, 64, &st, err, sizeof(err)) !=
                                    AD_OK) {
        tap_diag("store_open: %s", err);
        return 1;
    }
    memset(key, 0x2a, sizeof(key));
    test_the_sealed_token_opens_to_the_token_shown_once();
    test_only_the_seal_key_opens_it();
    test_an_enrollment_without_a_sealed_copy_has_no_psk();
    test_a_sealed_token_moved_to_another_record_does_not_open();
    test_a_sealed_token_must_match_the_stored_hash();
    store_close(st);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
    return tap_done();
}
