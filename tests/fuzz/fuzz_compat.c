/* Fuzz target for the compat endpoints' bodies: form_params on
 * arbitrary bytes, then the field reads the handlers in
 * authd/routes_check.c make (mosquitto-go-auth user/acl, EMQX
 * authn/authz, VerneMQ register/publish/subscribe). Whatever the body,
 * every string a handler can hand to the checker is UTF-8 with no NUL
 * inside, no integer is left for a handler to misread as absent, and
 * go-auth's "acc" can only select one of its four access types (1..4)
 * or none: a body never turns into an allow by a mangled number. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../common/codec.h"
#include "../../authd/form.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 80 * 1024, TOPICS_MAX = 1000 };

#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c))                                                            \
            abort();                                                         \
    } while (0)

/* A string as the checker would get it: NULL, or UTF-8 without NUL. */
static void check_text(const json_t *v)
{
    const char *s = json_string_value(v);

    if (s == NULL)
        return;
    CHECK(strlen(s) == json_string_length(v));
    CHECK(*s == '\0' || codec_utf8_valid(s, strlen(s)));
}

/* routes_check.c's param(): "" when absent or not a string. */
static const char *param(const json_t *obj, const char *key)
{
    const char *v = json_string_value(json_object_get(obj, key));

    return v ? v : "";
}

/* go-auth acl: the value of acc the handler switches on. */
static void check_acc(const json_t *obj)
{
    const char *text = param(obj, "acc");
    uint64_t acc = 0;
    size_t i;

    if (codec_parse_u64(text, 4, &acc) != 0) {
        CHECK(acc == 0); /* untouched on failure */
        return;
    }
    /* Only digits, and a value the switch knows (0 falls to deny). */
    CHECK(acc <= 4);
    CHECK(*text != '\0');
    for (i = 0; text[i]; i++)
        CHECK(text[i] >= '0' && text[i] <= '9');
    CHECK(strtoull(text, NULL, 10) == acc);
}

/* VerneMQ auth_on_subscribe: each entry's topic. */
static void check_topics(const json_t *obj)
{
    const json_t *topics = json_object_get(obj, "topics"), *t;
    size_t i;

    if (!json_is_array(topics) || json_array_size(topics) > TOPICS_MAX)
        return;
    json_array_foreach(topics, i, t) {
        json_t *entry = json_is_object(t) ? json_deep_copy(t) : NULL;

        check_text(json_object_get(t, "topic"));
        /* A refused filter keeps its place with the failure code. */
        if (entry == NULL)
            entry = json_pack("{s:s}", "topic", "");
        CHECK(entry != NULL &&
              json_object_set_new(entry, "qos", json_integer(135)) == 0);
        json_decref(entry);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {
        "username", "password", "clientid", "client_id", "topic", "acc",
        "action", "cert_common_name", "cert_pem", "client_cert"};
    char err[256] = "";
    json_t *obj = NULL, *v;
    const char *k;
    char *in;
    ad_err e;
    size_t i;

    if (size > INPUT_MAX)
        return 0;
    in = malloc(size ? size : 1);
    CHECK(in != NULL);
    if (size)
        memcpy(in, data, size);

    e = form_params(in, size, &obj, err, sizeof(err));
    if (e != AD_OK) {
        /* Only JSON can be refused, with a reason for the broker's log. */
        CHECK(e == AD_EJSON && obj == NULL && err[0] != '\0');
        free(in);
        return 0;
    }
    CHECK(json_is_object(obj));
    json_object_foreach(obj, k, v) {
        CHECK(!json_is_integer(v));
        check_text(v);
    }
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        check_text(json_object_get(obj, keys[i]));
    check_acc(obj);
    check_topics(obj);
    json_decref(obj);
    free(in);
    return 0;
}
