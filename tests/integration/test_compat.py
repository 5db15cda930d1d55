"""§8 compat endpoints: the wire formats the brokers already ship, sent
exactly as they send them — mosquitto-go-auth's HTTP backend (JSON and
form bodies), EMQX 5's HTTP authenticator and authorizer, and VerneMQ's
webhooks. Every endpoint decides as /v1/check does; a deny is never a
5xx, because a broker disconnects its client on a backend error."""

import json
import re
import socket
from urllib.parse import urlencode

import pytest

from authd_harness import cert_not_after, enroll, load_cert, uid

# Publish telemetry; subscribe to and receive commands; publish and receive
# on an echo subtree (for go-auth's acc 3); $SYS denied; one explicit deny
# inside the allowed telemetry subtree.
POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "allow", "actions": ["publish", "receive"], "topics": ["devices/${device.id}/echo/#"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
    {"effect": "deny", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/secret"]},
]}

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def group(admin):
    pol, grp = uid("pol-compat-"), uid("grp-compat-")
    assert admin.put("/v1/policies/" + pol, POLICY).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    return grp


@pytest.fixture
def device(admin, group):
    """A device created by hand (no certificate) in the compat group."""
    did = uid("cmp-")
    assert admin.post("/v1/devices", {"id": did, "groups": [group]}).status == 201
    return did


@pytest.fixture
def cert_device(authd, make_enrollment, devdir, group):
    enr = make_enrollment(groups=[group])
    dev, r = enroll(authd, enr["token"], uid("cmpc-"), devdir)
    assert r.status == 201, r
    return dev


def post(authd, path, body, form=False, headers=None, **kw):
    """POST on the check listener, as JSON or as a form."""
    hdrs = dict(headers or {})
    if form:
        hdrs.update(FORM)
        body = urlencode(body)
    return authd.request("POST", path, body, headers=hdrs, port=authd.check_port, **kw)


def assert_not_5xx(r):
    assert r.status < 500, "a broker disconnects its client on a 5xx; a deny must not be one: %r" % r


# ---------------------------------------------------- mosquitto-go-auth ----

def goauth(authd, endpoint, body, form):
    r = post(authd, "/compat/mosquitto-go-auth/" + endpoint, body, form=form)
    assert_not_5xx(r)
    assert isinstance(r.json, dict) and set(r.json) == {"ok", "error"}, (
        "go-auth's json response mode reads {\"ok\",\"error\"}: %r" % r)
    if r.status == 200:
        assert r.json == {"ok": True, "error": ""}, r
    else:
        assert r.status == 403, "go-auth's status mode reads a non-200 as deny: %r" % r
        assert r.json["ok"] is False and isinstance(r.json["error"], str) and r.json["error"], (
            "a deny says why: %r" % r.json)
    return r


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_goauth_user_with_only_a_username_is_403_for_lack_of_a_credential(authd, device, form):
    r = goauth(authd, "user", {"username": device, "password": "", "clientid": device}, form)
    assert r.status == 403 and r.json["error"] == "no_credential", r


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_goauth_user_with_a_jwt_password_is_denied_not_an_error(authd, device, form):
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    r = goauth(authd, "user", {"username": device, "password": jwt, "clientid": device}, form)
    assert r.status == 403, r


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_goauth_superuser_is_always_403(authd, device, form):
    for name in (device, "admin", "root", ""):
        r = goauth(authd, "superuser", {"username": name}, form)
        assert r.status == 403, "devices are never superusers: %r" % r


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_goauth_acl_maps_acc_to_actions(authd, device, form):
    d = device
    table = [
        # acc 2 = write = publish
        (2, "devices/%s/telemetry/t" % d, 200),
        (2, "devices/%s/cmd/reboot" % d, 403),
        (2, "devices/%s/telemetry/secret" % d, 403),   # explicit deny wins
        # acc 1 = read = delivery of a message (receive)
        (1, "devices/%s/cmd/reboot" % d, 200),
        (1, "devices/%s/telemetry/t" % d, 403),
        # acc 3 = read and write: both must be allowed
        (3, "devices/%s/echo/x" % d, 200),
        (3, "devices/%s/telemetry/t" % d, 403),
        (3, "devices/%s/cmd/reboot" % d, 403),
        # acc 4 = subscribe, decided on the filter
        (4, "devices/%s/cmd/+" % d, 200),
        (4, "devices/%s/cmd/#" % d, 403),
        (4, "devices/%s/telemetry/#" % d, 403),
        (1, "$SYS/broker/load", 403),
    ]
    wrong = []
    for acc, topic, want in table:
        for acc_value in (acc, str(acc)):
            body = {"username": d, "clientid": d, "topic": topic, "acc": acc_value}
            r = goauth(authd, "acl", body, form)
            if r.status != want:
                wrong.append((acc_value, topic, want, r.status, r.json))
    assert not wrong, "acl answers that differ (acc, topic, want, got, body): %r" % wrong


@pytest.mark.parametrize("acc", [0, "x", "", 9, -1, "2.0"])
def test_goauth_acl_with_a_bad_acc_is_a_deny(authd, device, acc):
    body = {"username": device, "clientid": device,
            "topic": "devices/%s/telemetry/t" % device, "acc": acc}
    r = goauth(authd, "acl", body, False)
    assert r.status == 403, "an acc we do not understand grants nothing: %r" % r


def test_goauth_acl_for_an_unknown_or_suspended_device_is_403(authd, admin, device):
    ghost = uid("ghost-")
    r = goauth(authd, "acl", {"username": ghost, "clientid": ghost,
                              "topic": "devices/%s/telemetry/t" % ghost, "acc": 2}, False)
    assert r.status == 403, r
    body = {"username": device, "clientid": device,
            "topic": "devices/%s/telemetry/t" % device, "acc": 2}
    assert goauth(authd, "acl", body, False).status == 200
    assert admin.patch("/v1/devices/" + device, {"status": "suspended"}).status == 200
    r = goauth(authd, "acl", body, False)
    assert r.status == 403 and r.json["error"] == "device_suspended", r


def test_goauth_form_values_are_url_decoded(authd, device):
    # '/' and '#' arrive percent-encoded in a form; '+' is a space.
    raw = "username=%s&clientid=%s&topic=devices%%2F%s%%2Fcmd%%2F%%2B&acc=4" % (device, device, device)
    r = authd.request("POST", "/compat/mosquitto-go-auth/acl", raw, headers=FORM,
                      port=authd.check_port)
    assert r.status == 200 and r.json == {"ok": True, "error": ""}, r
    raw = "username=%s&clientid=%s&topic=devices%%2F%s%%2Fcmd%%2F%%23&acc=4" % (device, device, device)
    r = authd.request("POST", "/compat/mosquitto-go-auth/acl", raw, headers=FORM,
                      port=authd.check_port)
    assert r.status == 403, "cmd/# is wider than the granted cmd/+: %r" % r


@pytest.mark.parametrize("raw", ["", "garbage", "acc=%ZZ&username=x", "&&&=", "{", "username=a%00b&acc=2"],
                         ids=["empty", "no-pairs", "bad-escape", "separators", "broken-json", "nul"])
def test_goauth_malformed_bodies_never_allow_and_never_5xx(authd, raw):
    for ep in ("user", "superuser", "acl"):
        r = authd.request("POST", "/compat/mosquitto-go-auth/" + ep, raw, headers=FORM,
                          port=authd.check_port)
        assert_not_5xx(r)
        assert r.status != 200, "garbage must not be allowed: %s %r" % (ep, r)


# ------------------------------------------------------------------ EMQX ----

def emqx_authn_body(**fields):
    """EMQX renders its body template with every placeholder as a string,
    and "" for what it does not have."""
    body = {"username": "", "password": "", "clientid": "", "peerhost": "127.0.0.1",
            "cert_common_name": "", "cert_subject": ""}
    body.update(fields)
    return body


def test_emqx_authn_allows_a_device_by_its_verified_certificate(authd, cert_device):
    dev = cert_device
    body = emqx_authn_body(username=dev.id, clientid=dev.id, cert_common_name=dev.id,
                           cert_subject="CN=" + dev.id, cert_pem=dev.cert_pem)
    r = post(authd, "/compat/emqx/authn", body)
    assert r.status == 200 and r.headers.get("content-type", "").startswith("application/json"), r
    a = r.json
    assert a["result"] == "allow", a
    assert a["is_superuser"] is False, "devices are never superusers: %r" % a
    assert a["expire_at"] == int(cert_not_after(load_cert(dev.cert_pem))), (
        "EMQX ends the session when the certificate expires: %r" % a)

    acl = a["acl"]
    assert isinstance(acl, list) and acl, a
    for rule in acl:
        assert rule["permission"] in ("allow", "deny") and rule["action"] in (
            "publish", "subscribe", "all") and isinstance(rule["topic"], str), (
            "EMQX rule objects: {permission, action, topic}: %r" % rule)
        assert "${" not in rule["topic"], "EMQX gets concrete topics: %r" % rule
    assert acl[-1] == {"permission": "deny", "action": "all", "topic": "#"}, (
        "the list closes with a deny-all (EMQX's no_match default is allow): %r" % acl)
    perms = [x["permission"] for x in acl[:-1]]
    assert perms == sorted(perms, key=lambda p: p != "deny"), (
        "EMQX takes the first matching rule, so every deny must come first: %r" % perms)
    rules = {(x["permission"], x["action"], x["topic"]) for x in acl}
    assert ("allow", "publish", "devices/%s/telemetry/#" % dev.id) in rules, rules
    assert ("allow", "subscribe", "devices/%s/cmd/+" % dev.id) in rules, rules
    assert ("deny", "publish", "$SYS/#") in rules and ("deny", "subscribe", "$SYS/#") in rules, rules
    assert ("deny", "publish", "devices/%s/telemetry/secret" % dev.id) in rules, rules


@pytest.mark.parametrize("case", ["unknown-cn", "cn-without-cert", "username-only",
                                  "nothing", "hostile-cn", "cn-client-id-mismatch"])
def test_emqx_authn_denies(authd, device, cert_device, case):
    dev = cert_device
    body = {
        "unknown-cn": emqx_authn_body(cert_common_name=uid("ghost-"), clientid="x"),
        # A device without a certificate has nothing EMQX could have verified.
        "cn-without-cert": emqx_authn_body(cert_common_name=device, clientid=device),
        "username-only": emqx_authn_body(username=dev.id, clientid=dev.id),
        "nothing": emqx_authn_body(),
        "hostile-cn": emqx_authn_body(cert_common_name="../" + dev.id, clientid=dev.id),
        "cn-client-id-mismatch": emqx_authn_body(cert_common_name=dev.id, clientid="someone-else"),
    }[case]
    r = post(authd, "/compat/emqx/authn", body)
    assert r.status == 200, "EMQX reads a deny from the body, never from a 4xx/5xx: %r" % r
    assert r.json["result"] == "deny", "%s must be refused: %r" % (case, r.json)
    assert "acl" not in r.json, "a refused client gets no rules: %r" % r.json


def test_emqx_authn_denies_a_suspended_device_with_a_valid_certificate(authd, admin, cert_device):
    dev = cert_device
    body = emqx_authn_body(cert_common_name=dev.id, clientid=dev.id, cert_pem=dev.cert_pem)
    assert post(authd, "/compat/emqx/authn", body).json["result"] == "allow"
    assert admin.patch("/v1/devices/" + dev.id, {"status": "suspended"}).status == 200
    assert post(authd, "/compat/emqx/authn", body).json == {"result": "deny"}


def test_emqx_authz_decides_publish_and_subscribe(authd, device):
    d = device
    table = [("publish", "devices/%s/telemetry/t" % d, "allow"),
             ("publish", "devices/%s/telemetry/secret" % d, "deny"),
             ("publish", "devices/%s/cmd/x" % d, "deny"),
             ("subscribe", "devices/%s/cmd/+" % d, "allow"),
             ("subscribe", "devices/%s/cmd/#" % d, "deny"),
             ("subscribe", "$share/g/devices/%s/cmd/+" % d, "allow"),
             ("publish", "$SYS/x", "deny")]
    wrong = []
    for action, topic, want in table:
        # EMQX renders ${qos} and ${retain} as strings in its template.
        body = {"username": d, "clientid": d, "action": action, "topic": topic,
                "qos": "1", "retain": "false"}
        r = post(authd, "/compat/emqx/authz", body)
        assert r.status == 200, r
        if r.json != {"result": want}:
            wrong.append((action, topic, want, r.json))
    assert not wrong, "authz answers that differ (action, topic, want, got): %r" % wrong


@pytest.mark.parametrize("body", [
    {"username": "x", "clientid": "x", "action": "all", "topic": "a", "qos": "0", "retain": "false"},
    {"username": "x", "clientid": "x", "action": "publish", "qos": "0", "retain": "false"},
    {"username": "x", "clientid": "x", "topic": "a"},
    {}], ids=["unknown-action", "no-topic", "no-action", "empty"])
def test_emqx_authz_malformed_is_a_200_deny(authd, body):
    r = post(authd, "/compat/emqx/authz", body)
    assert r.status == 200 and r.json == {"result": "deny"}, r


def test_emqx_authz_of_an_unknown_device_is_a_deny(authd):
    ghost = uid("ghost-")
    r = post(authd, "/compat/emqx/authz", {"username": ghost, "clientid": ghost,
                                           "action": "publish",
                                           "topic": "devices/%s/telemetry/t" % ghost,
                                           "qos": "0", "retain": "false"})
    assert r.status == 200 and r.json == {"result": "deny"}, r


# --------------------------------------------------------------- VerneMQ ----

NOT_ALLOWED = {"result": {"error": "not_allowed"}}


def vmq(authd, hook, body, via_header=False):
    """A VerneMQ webhook call: VerneMQ always sends the vernemq-hook header;
    the endpoint may be per hook or shared."""
    if via_header:
        r = post(authd, "/compat/vernemq", body, headers={"vernemq-hook": hook})
    else:
        r = post(authd, "/compat/vernemq/" + hook, body, headers={"vernemq-hook": hook})
    assert r.status == 200, "VerneMQ webhooks always answer 200: %r" % r
    return r.json


@pytest.mark.parametrize("via_header", [False, True], ids=["path", "header"])
@pytest.mark.parametrize("hook", ["auth_on_register", "auth_on_register_m5"])
def test_vernemq_register_with_only_a_username_is_not_allowed(authd, device, hook, via_header):
    body = {"peer_addr": "127.0.0.1", "peer_port": 50123, "username": device,
            "password": "", "mountpoint": "", "client_id": device, "clean_session": True}
    if hook.endswith("_m5"):
        body.pop("clean_session")
        body.update({"clean_start": True, "properties": {}})
    assert vmq(authd, hook, body, via_header) == NOT_ALLOWED, "no credential, no connection"


@pytest.mark.parametrize("via_header", [False, True], ids=["path", "header"])
@pytest.mark.parametrize("hook", ["auth_on_publish", "auth_on_publish_m5"])
def test_vernemq_publish(authd, device, hook, via_header):
    def body(topic):
        b = {"username": device, "client_id": device, "mountpoint": "", "qos": 1,
             "topic": topic, "payload": "aGVsbG8=", "retain": False}
        if hook.endswith("_m5"):
            b["properties"] = {}
        return b

    assert vmq(authd, hook, body("devices/%s/telemetry/t" % device), via_header) == {"result": "ok"}
    assert vmq(authd, hook, body("devices/%s/cmd/x" % device), via_header) == NOT_ALLOWED
    assert vmq(authd, hook, body("devices/%s/telemetry/secret" % device), via_header) == NOT_ALLOWED
    ghost = uid("ghost-")
    b = body("devices/%s/telemetry/t" % ghost)
    b["username"] = b["client_id"] = ghost
    assert vmq(authd, hook, b, via_header) == NOT_ALLOWED, "an unknown device may not publish"


@pytest.mark.parametrize("via_header", [False, True], ids=["path", "header"])
def test_vernemq_subscribe_marks_each_denied_filter_128(authd, device, via_header):
    topics = [{"topic": "devices/%s/cmd/+" % device, "qos": 1},
              {"topic": "devices/%s/cmd/#" % device, "qos": 2},
              {"topic": "$SYS/#", "qos": 0},
              {"topic": "devices/%s/cmd/reboot" % device, "qos": 2}]
    body = {"username": device, "client_id": device, "mountpoint": "", "topics": topics}
    a = vmq(authd, "auth_on_subscribe", body, via_header)
    assert a == {"result": "ok", "topics": [
        {"topic": topics[0]["topic"], "qos": 1},
        {"topic": topics[1]["topic"], "qos": 128},
        {"topic": "$SYS/#", "qos": 128},
        {"topic": topics[3]["topic"], "qos": 2}]}, (
        "each filter keeps its place; granted ones keep their qos, refused ones get 0x80: %r" % a)


def test_vernemq_subscribe_m5_answers_in_modifiers_with_135(authd, device):
    topics = [{"topic": "devices/%s/cmd/+" % device, "qos": 1},
              {"topic": "devices/other/cmd/+", "qos": 1}]
    body = {"username": device, "client_id": device, "mountpoint": "", "topics": topics,
            "properties": {}}
    a = vmq(authd, "auth_on_subscribe_m5", body)
    assert a == {"result": "ok", "modifiers": {"topics": [
        {"topic": topics[0]["topic"], "qos": 1},
        {"topic": "devices/other/cmd/+", "qos": 135}]}}, (
        "MQTT 5 refuses with reason code 0x87 (not authorized): %r" % a)


def test_vernemq_answers_say_how_long_vernemq_may_cache_them(authd, device):
    """VerneMQ's webhooks cache an answer only for the max-age it carries:
    an allow for the check's ttl, a deny never."""
    def cache_control(hook, body):
        r = post(authd, "/compat/vernemq/" + hook, body, headers={"vernemq-hook": hook})
        assert r.status == 200, r
        return r.headers.get("cache-control")

    ok_pub = {"username": device, "client_id": device, "mountpoint": "", "qos": 0,
              "topic": "devices/%s/telemetry/t" % device, "payload": "", "retain": False}
    assert cache_control("auth_on_publish", ok_pub) == "max-age=30", (
        "an allowed publish may be cached for the check ttl (30 s)")
    bad_pub = dict(ok_pub, topic="devices/%s/cmd/x" % device)
    assert cache_control("auth_on_publish", bad_pub) == "max-age=0", "a deny is not cached"
    sub = {"username": device, "client_id": device, "mountpoint": "",
           "topics": [{"topic": "devices/%s/cmd/+" % device, "qos": 1}]}
    assert cache_control("auth_on_subscribe", sub) == "max-age=30"
    sub["topics"].append({"topic": "$SYS/#", "qos": 0})
    assert cache_control("auth_on_subscribe", sub) == "max-age=0", (
        "an answer that refuses any filter is not cached")


def test_vernemq_subscribe_m5_with_every_filter_allowed_is_a_plain_ok(authd, device):
    """VerneMQ resets the options an answer leaves out: with nothing to
    refuse, the answer must change nothing."""
    topics = [{"topic": "devices/%s/cmd/+" % device, "qos": 1, "no_local": True,
               "rap": True, "retain_handling": "dont_send"}]
    body = {"username": device, "client_id": device, "mountpoint": "", "topics": topics,
            "properties": {"p_subscription_id": [7]}}
    assert vmq(authd, "auth_on_subscribe_m5", body) == {"result": "ok"}
    assert vmq(authd, "auth_on_subscribe", {"username": device, "client_id": device,
                                            "mountpoint": "", "topics": [
                                                {"topic": topics[0]["topic"], "qos": 1}]}
               ) == {"result": "ok"}


def test_vernemq_subscribe_m5_keeps_the_options_of_allowed_filters(authd, device):
    allowed = {"topic": "devices/%s/cmd/+" % device, "qos": 2, "no_local": True,
               "rap": True, "retain_handling": "send_retain_if_new_sub"}
    body = {"username": device, "client_id": device, "mountpoint": "",
            "topics": [allowed, {"topic": "$SYS/#", "qos": 0, "no_local": False,
                                 "rap": False, "retain_handling": "send_retain"}]}
    a = vmq(authd, "auth_on_subscribe_m5", body)
    got = a["modifiers"]["topics"]
    assert got[0] == allowed, "an allowed filter keeps every option it was sent with: %r" % got
    assert got[1]["topic"] == "$SYS/#" and got[1]["qos"] == 135, got


@pytest.mark.parametrize("hook,body", [
    ("auth_on_publish", {"username": "x", "client_id": "x"}),
    ("auth_on_subscribe", {"username": "x", "client_id": "x", "topics": "a/b"}),
    ("auth_on_register", {}),
    ("auth_on_publish", "not json"),
], ids=["publish-no-topic", "subscribe-topics-not-array", "register-empty", "not-json"])
def test_vernemq_malformed_hooks_are_refused_with_200(authd, hook, body):
    r = post(authd, "/compat/vernemq/" + hook, body)
    assert_not_5xx(r)
    if r.status == 200:
        assert r.json["result"] != "ok", "malformed input must not be allowed: %r" % r


# ----------------------------------------------------------- who may ask ----

@pytest.mark.parametrize("path", ["/compat/mosquitto-go-auth/acl", "/compat/emqx/authz",
                                  "/compat/emqx/authn", "/compat/vernemq/auth_on_publish"])
def test_compat_endpoints_on_the_main_listener_need_a_broker_key(authd, role_key, device, path):
    body = {"username": device, "clientid": device, "client_id": device, "action": "publish",
            "topic": "devices/%s/telemetry/t" % device, "acc": 2, "qos": 0}
    r = authd.request("POST", path, body)
    assert r.status == 401, "the main listener is not the broker's private door: %r" % r
    r = authd.request("POST", path, body, token=role_key("provisioner"))
    assert r.status == 403, r
    r = authd.request("POST", path, body, token=role_key("broker"))
    assert r.status in (200, 403), r
    if path != "/compat/emqx/authn":
        assert "ok" in r.text or "allow" in r.text, "a broker key gets the real decision: %r" % r


def test_emqx_authz_pipelined_a_hundred_deep_answers_in_order(authd, device):
    # EMQX's HTTP authorizer pipelines up to 100 requests per connection.
    wire, want = b"", []
    for i in range(100):
        allowed = i % 3 == 0
        topic = "devices/%s/%s/%d" % (device, "telemetry" if allowed else "cmd", i)
        body = json.dumps({"username": device, "clientid": device, "action": "publish",
                           "topic": topic, "qos": "0", "retain": "false"}).encode()
        wire += (b"POST /compat/emqx/authz HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
        want.append("allow" if allowed else "deny")
    got = []
    with socket.create_connection(("127.0.0.1", authd.check_port), timeout=30) as s:
        s.sendall(wire)
        f = s.makefile("rb")
        for _ in want:
            status = f.readline()
            assert re.match(rb"HTTP/1\.1 200 ", status), status
            length = None
            while True:
                h = f.readline()
                assert h, "the connection closed mid-pipeline"
                if h in (b"\r\n", b"\n"):
                    break
                k, _, v = h.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            assert length is not None, "pipelined answers need a Content-Length"
            got.append(json.loads(f.read(length))["result"])
    assert got == want, "answers out of order or wrong: %r" % [
        (i, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g]
