"""§8 POST /v1/check and /v1/check/batch: how a broker learns who a client
is (certificate fingerprint or serial, else the username for messages)
and whether it may connect, publish, subscribe or receive; who may ask
(anyone on the check listener, broker/admin keys on the main listeners);
and HTTP/1.1 keep-alive and pipelining, which brokers rely on for
throughput (EMQX pipelines up to 100 requests per connection)."""

import hashlib
import json
import re
import socket
import time

import pytest
from cryptography.hazmat.primitives import serialization

from authd_harness import (assert_error, cert_not_after, enroll, load_cert,
                           uid)

# The §6 example document, the policy every test here gives its devices.
EXAMPLE_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
]}

CHECK_FIELDS = ("result", "reason", "device", "ttl")


# ------------------------------------------------------------ helpers ----

def check(authd, body, **kw):
    """POST /v1/check on the check listener (no credential) unless a port
    is given."""
    kw.setdefault("port", authd.check_port)
    return authd.request("POST", "/v1/check", body, **kw)


def decision(authd, body):
    """The 200 answer of a check, its shape verified."""
    r = check(authd, body)
    assert r.status == 200, "a decision, allow or deny, is always a 200: %r" % r
    assert_decision_shape(r.json)
    return r.json


def assert_decision_shape(d):
    assert isinstance(d, dict), d
    for f in CHECK_FIELDS:
        assert f in d, "every decision carries %r: %r" % (f, d)
    assert d["result"] in ("allow", "deny"), d
    assert isinstance(d["reason"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", d["reason"]), (
        "reason is a short snake_case code brokers can log: %r" % d)
    assert isinstance(d["ttl"], int) and d["ttl"] >= 0, d
    if d["result"] == "deny":
        assert d["ttl"] == 0, "a deny must never be cached by the broker: %r" % d


def fingerprint(dev):
    """SHA-256 of the certificate DER, lowercase hex, as a broker computes it."""
    der = load_cert(dev.cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def with_colons(hexstr):
    return ":".join(hexstr[i:i + 2] for i in range(0, len(hexstr), 2))


@pytest.fixture(scope="module")
def example_group(admin):
    """A group bound to the §6 example policy."""
    pol, grp = uid("pol-ex-"), uid("grp-ex-")
    assert admin.put("/v1/policies/" + pol, EXAMPLE_POLICY).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    return grp


@pytest.fixture
def cert_device(authd, make_enrollment, devdir, example_group):
    """cert_device() -> (Device, enroll answer): an enrolled device in the
    example group, holding a fresh certificate."""

    def make():
        enr = make_enrollment(groups=[example_group])
        dev, r = enroll(authd, enr["token"], uid("chk-"), devdir)
        assert r.status == 201, "POST /v1/enroll: %r" % r
        return dev, r.json

    return make


@pytest.fixture
def plain_device(admin, example_group):
    """plain_device(**fields) -> id of a device created by hand (no
    certificate) in the example group."""

    def make(**fields):
        body = {"id": uid("msg-"), "groups": [example_group]}
        body.update(fields)
        r = admin.post("/v1/devices", body)
        assert r.status == 201, "POST /v1/devices %r: %r" % (body, r)
        return body["id"]

    return make


# ---------------------------------------------------- connect by certificate ----

def test_connect_with_the_certificate_fingerprint_is_allowed_with_statements_and_expire_at(
        authd, cert_device):
    dev, _ = cert_device()
    d = decision(authd, {"action": "connect", "client_id": dev.id,
                         "cert_fingerprint": fingerprint(dev)})
    assert d["result"] == "allow", "a device with a valid cert and a matching client id connects: %r" % d
    assert d["device"] == dev.id, "the broker learns which device this is: %r" % d
    assert d["ttl"] > 0, "an allow may be cached: %r" % d

    # expire_at is the certificate's notAfter: the broker must drop the
    # session when the credential ends.
    not_after = int(cert_not_after(load_cert(dev.cert_pem)))
    assert d.get("expire_at") == not_after, (
        "expire_at must be the cert notAfter %d: %r" % (not_after, d))
    assert d["ttl"] <= d["expire_at"] - time.time() + 1, "a cached allow never outlives the cert"

    # The statements are what a broker plugin decides with locally, so
    # they must come with every variable already replaced.
    st = d.get("statements")
    assert isinstance(st, list) and st, "an allowed connect carries the statements: %r" % d
    text = json.dumps(st)
    assert "${" not in text, "no variable may be left unsubstituted: %s" % text
    assert "devices/%s/telemetry/#" % dev.id in text, (
        "${device.id} is replaced by the device's id: %s" % text)
    for s in st:
        assert s.get("effect") in ("allow", "deny") and isinstance(s.get("actions"), list), s
        assert isinstance(s.get("policy"), str) and isinstance(s.get("index"), int), (
            "each statement says where it came from (policy, index): %r" % s)
    denies = [s for s in st if s["effect"] == "deny"]
    assert any("$SYS/#" in s.get("topics", []) for s in denies), (
        "deny statements are handed over too, or the plugin would allow too much: %s" % text)


@pytest.mark.parametrize("spelling", ["lower", "upper", "colons", "upper-colons"])
def test_the_fingerprint_is_accepted_in_any_case_and_with_colons(authd, cert_device, spelling):
    dev, _ = cert_device()
    fpr = fingerprint(dev)
    fpr = {"lower": fpr, "upper": fpr.upper(), "colons": with_colons(fpr),
           "upper-colons": with_colons(fpr.upper())}[spelling]
    d = decision(authd, {"action": "connect", "client_id": dev.id, "cert_fingerprint": fpr})
    assert d["result"] == "allow" and d["device"] == dev.id, (
        "brokers print fingerprints in different spellings (%s): %r" % (spelling, d))


def test_connect_with_the_certificate_serial_is_allowed(authd, cert_device):
    dev, enr = cert_device()
    d = decision(authd, {"action": "connect", "client_id": dev.id, "cert_serial": enr["serial"]})
    assert d["result"] == "allow" and d["device"] == dev.id, (
        "the serial from enroll names the device as well as the fingerprint: %r" % d)
    assert d["expire_at"] == int(cert_not_after(load_cert(dev.cert_pem))), d


def test_a_serial_is_a_number_so_its_spelling_does_not_matter(authd, cert_device):
    # Brokers print serials as numbers: with or without leading zeros
    # (Go's big.Int.Text(16), Erlang's integer_to_list(N, 16), OpenSSL's
    # sign-padded 00 octet), in either case, with or without colons. All
    # name the same certificate.
    dev, enr = cert_device()
    serial = enr["serial"]
    for spelling in ("00" + serial, "0" + serial, serial.upper(),
                     ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)),
                     serial.lstrip("0")):
        d = decision(authd, {"action": "connect", "client_id": dev.id, "cert_serial": spelling})
        assert d["result"] == "allow" and d["device"] == dev.id, (
            "serial %s is the same number as %s: %r" % (spelling, serial, d))


def test_the_cert_cn_variable_is_the_cn_of_the_certificate_that_identified_the_client(
        authd, admin, make_enrollment, devdir):
    pol, grp = uid("pol-cn-"), uid("grp-cn-")
    assert admin.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${cert.cn}"]},
        {"effect": "allow", "actions": ["publish"], "topics": ["cn/${cert.cn}/#"]}]}).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    dev, r = enroll(authd, make_enrollment(groups=[grp])["token"], uid("cn-"), devdir)
    assert r.status == 201, r
    fpr = fingerprint(dev)
    d = decision(authd, {"action": "connect", "client_id": dev.id, "cert_fingerprint": fpr})
    assert d["result"] == "allow", (
        "the certificate's CN (%s) is known once its fingerprint named it, so "
        "client_ids [${cert.cn}] must admit it: %r" % (dev.id, d))
    assert "cn/%s/#" % dev.id in json.dumps(d["statements"]), d
    d = decision(authd, {"action": "publish", "client_id": dev.id, "cert_fingerprint": fpr,
                         "topic": "cn/%s/x" % dev.id})
    assert d["result"] == "allow", "the same holds for a publish checked by certificate: %r" % d


def test_connect_with_a_client_id_the_policy_does_not_allow_is_denied(authd, cert_device):
    dev, _ = cert_device()
    d = decision(authd, {"action": "connect", "client_id": dev.id + "-other",
                         "cert_fingerprint": fingerprint(dev)})
    assert d["result"] == "deny", (
        "client_ids [${device.id}] admits exactly the device's own id: %r" % d)
    assert "statements" not in d and "expire_at" not in d, (
        "a refused connect hands out no statements: %r" % d)


def test_connect_with_an_unknown_certificate_is_denied(authd):
    d = decision(authd, {"action": "connect", "client_id": "x",
                         "cert_fingerprint": hashlib.sha256(uid().encode()).hexdigest()})
    assert d["result"] == "deny", "a certificate we never issued identifies nobody: %r" % d
    d = decision(authd, {"action": "connect", "client_id": "x", "cert_serial": "0123456789abcdef0123"})
    assert d["result"] == "deny", "an unknown serial identifies nobody: %r" % d


@pytest.mark.parametrize("fpr", ["zz", "abc", "g" * 64, "ab" * 33, ":::"],
                         ids=["non-hex", "short", "not-hex-64", "too-long", "only-colons"])
def test_a_malformed_fingerprint_is_a_deny_not_an_error(authd, fpr):
    d = decision(authd, {"action": "connect", "client_id": "x", "cert_fingerprint": fpr})
    assert d["result"] == "deny", "garbage from a broker must not authenticate: %r" % d


def test_connect_with_only_a_username_is_denied_for_lack_of_a_credential(authd, plain_device):
    did = plain_device()
    d = decision(authd, {"action": "connect", "client_id": did, "username": did})
    assert d["result"] == "deny", "a username is a claim, not a credential: %r" % d
    assert d["reason"] == "no_credential", d
    assert d["ttl"] == 0


def test_connect_with_a_forged_jwt_password_is_denied(authd, plain_device):
    did = plain_device()
    jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    d = decision(authd, {"action": "connect", "client_id": did, "username": did, "password": jwt})
    assert d["result"] == "deny", "an unverified token must not let anyone in: %r" % d
    assert d["reason"] == "invalid_token", d


def test_a_check_with_no_identity_at_all_is_denied(authd):
    d = decision(authd, {"action": "publish", "topic": "a/b"})
    assert d["result"] == "deny", "nobody is allowed nothing: %r" % d


# ----------------------------------------------------- messages by username ----

def test_publish_subscribe_receive_by_username_follow_the_policy(authd, plain_device):
    did = plain_device()
    cases = [
        ("publish", "devices/%s/telemetry/temp" % did, "allow"),
        ("publish", "devices/%s/telemetry" % did, "allow"),        # a/# matches a
        ("publish", "devices/%s/cmd/reboot" % did, "deny"),         # not a publish topic
        ("publish", "devices/other/telemetry/temp", "deny"),       # another device's topic
        ("subscribe", "devices/%s/cmd/+" % did, "allow"),
        ("subscribe", "devices/%s/cmd/#" % did, "deny"),            # wider than granted
        ("receive", "devices/%s/cmd/reboot" % did, "allow"),
        ("receive", "devices/%s/telemetry/temp" % did, "deny"),
        ("publish", "$SYS/broker/uptime", "deny"),
    ]
    for action, topic, want in cases:
        d = decision(authd, {"action": action, "username": did, "client_id": did, "topic": topic})
        assert d["result"] == want, "%s %s: expected %s: %r" % (action, topic, want, d)
        assert d["device"] == did, "the username names the device: %r" % d
        if want == "allow":
            assert d["ttl"] > 0, "allows may be cached by the broker: %r" % d
            assert "statements" not in d, "only connects carry statements: %r" % d


def test_an_unknown_username_is_denied(authd):
    ghost = uid("ghost-")
    d = decision(authd, {"action": "publish", "username": ghost,
                         "topic": "devices/%s/telemetry/x" % ghost})
    assert d["result"] == "deny", "a device that does not exist may do nothing: %r" % d


@pytest.mark.parametrize("name", ["a/b", "+", "#", "a b", "x" * 129])
def test_a_username_that_cannot_be_a_device_id_is_denied(authd, name):
    d = decision(authd, {"action": "publish", "username": name, "topic": "devices/a/telemetry/x"})
    assert d["result"] == "deny", "only valid device ids can name a device: %r" % d


def test_a_suspended_device_is_denied_until_it_is_active_again(authd, admin, cert_device):
    dev, _ = cert_device()
    fpr = fingerprint(dev)
    conn = {"action": "connect", "client_id": dev.id, "cert_fingerprint": fpr}
    pub = {"action": "publish", "username": dev.id, "topic": "devices/%s/telemetry/t" % dev.id}
    assert decision(authd, conn)["result"] == "allow"
    assert decision(authd, pub)["result"] == "allow", "warm the cache first"

    assert admin.patch("/v1/devices/" + dev.id, {"status": "suspended"}).status == 200
    for body in (conn, pub):
        d = decision(authd, body)
        assert d["result"] == "deny" and d["reason"] == "device_suspended", (
            "suspension bites on the very next check, cached or not: %r" % d)

    assert admin.patch("/v1/devices/" + dev.id, {"status": "active"}).status == 200
    assert decision(authd, conn)["result"] == "allow", "reactivation is immediate too"
    assert decision(authd, pub)["result"] == "allow"


def test_a_deleted_device_is_denied_by_certificate_and_by_username(authd, admin, cert_device):
    dev, _ = cert_device()
    conn = {"action": "connect", "client_id": dev.id, "cert_fingerprint": fingerprint(dev)}
    pub = {"action": "publish", "username": dev.id, "topic": "devices/%s/telemetry/t" % dev.id}
    assert decision(authd, conn)["result"] == "allow"
    assert decision(authd, pub)["result"] == "allow"
    assert admin.delete("/v1/devices/" + dev.id).status == 204
    d = decision(authd, conn)
    assert d["result"] == "deny", "its certificate no longer authenticates anything: %r" % d
    d = decision(authd, pub)
    assert d["result"] == "deny", "a deleted device may not publish: %r" % d


# ------------------------------------------------------------ bad input ----

@pytest.mark.parametrize("body", [
    {"action": "fly", "username": "a", "topic": "t"},
    {"username": "a", "topic": "t"},
    {"action": 2, "username": "a", "topic": "t"},
    {"action": "publish", "username": "a"},
    {"action": "subscribe", "username": "a"},
    {"action": "receive", "username": "a"},
    {"action": "publish", "username": 7, "topic": "t"},
    {"action": "publish", "username": "a", "topic": ["t"]},
], ids=["unknown-action", "no-action", "numeric-action", "publish-no-topic",
        "subscribe-no-topic", "receive-no-topic", "numeric-username", "array-topic"])
def test_a_malformed_check_is_a_400_json_error(authd, body):
    r = check(authd, body)
    assert_error(r, 400, ("invalid_field", "bad_request"))


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\"check\"", b"null"],
                         ids=["empty", "truncated", "array", "string", "null"])
def test_a_body_that_is_not_a_json_object_is_a_400(authd, raw):
    r = authd.request("POST", "/v1/check", raw, port=authd.check_port,
                      headers={"Content-Type": "application/json"})
    assert_error(r, 400)


# ----------------------------------------------------------------- batch ----

def test_batch_answers_every_check_in_order(authd, plain_device):
    did = plain_device()
    ghost = uid("ghost-")
    checks = [
        {"action": "publish", "username": did, "topic": "devices/%s/telemetry/a" % did},
        {"action": "publish", "username": did, "topic": "devices/%s/cmd/a" % did},
        {"action": "publish", "username": ghost, "topic": "devices/%s/telemetry/a" % ghost},
        {"action": "subscribe", "username": did, "topic": "devices/%s/cmd/+" % did},
        {"action": "connect", "username": did, "client_id": did},
    ]
    r = authd.request("POST", "/v1/check/batch", {"checks": checks}, port=authd.check_port)
    assert r.status == 200, r
    res = r.json.get("results")
    assert isinstance(res, list) and len(res) == len(checks), "one result per check: %r" % r.json
    for d in res:
        assert_decision_shape(d)
    assert [d["result"] for d in res] == ["allow", "deny", "deny", "allow", "deny"], (
        "results come back in the order of the checks: %r" % res)
    assert [d["device"] for d in res] == [did, did, ghost, did, did], res
    for i, c in enumerate(checks):
        single = decision(authd, c)
        assert (single["result"], single["reason"]) == (res[i]["result"], res[i]["reason"]), (
            "a batched check decides exactly as the single one: %r vs %r" % (single, res[i]))


def test_a_malformed_batch_element_is_a_deny_that_does_not_fail_the_others(authd, plain_device):
    did = plain_device()
    good = {"action": "publish", "username": did, "topic": "devices/%s/telemetry/x" % did}
    checks = [good, {"action": "fly", "username": did, "topic": "x"}, "not an object",
              {"action": "publish", "username": did}, 42, None, good]
    r = authd.request("POST", "/v1/check/batch", {"checks": checks}, port=authd.check_port)
    assert r.status == 200, "one bad element must not fail the whole batch: %r" % r
    res = r.json["results"]
    assert len(res) == len(checks), res
    assert res[0]["result"] == "allow" and res[-1]["result"] == "allow", (
        "the good checks around the bad ones are still decided: %r" % res)
    for bad in res[1:-1]:
        assert bad["result"] == "deny" and bad["reason"] == "invalid_request", (
            "a malformed element is denied as invalid_request: %r" % bad)


def test_an_empty_batch_has_no_results(authd):
    r = authd.request("POST", "/v1/check/batch", {"checks": []}, port=authd.check_port)
    assert r.status == 200 and r.json == {"results": []}, r


@pytest.mark.parametrize("body", [{}, {"checks": "x"}, {"checks": {"a": 1}}, [1]],
                         ids=["no-checks", "string", "object", "array-body"])
def test_a_batch_without_a_checks_array_is_a_400(authd, body):
    r = authd.request("POST", "/v1/check/batch", body, port=authd.check_port)
    assert_error(r, 400)


# ----------------------------------------------------------- who may ask ----

def test_the_check_listener_needs_no_credential(authd, plain_device):
    did = plain_device()
    d = decision(authd, {"action": "publish", "username": did,
                         "topic": "devices/%s/telemetry/x" % did})
    assert d["result"] == "allow", "the check listener is the broker's private door: %r" % d


@pytest.mark.parametrize("path", ["/v1/check", "/v1/check/batch"])
def test_the_main_listener_needs_a_broker_or_admin_key(authd, admin, role_key, plain_device, path):
    did = plain_device()
    one = {"action": "publish", "username": did, "topic": "devices/%s/telemetry/x" % did}
    body = one if path == "/v1/check" else {"checks": [one]}

    r = authd.request("POST", path, body)
    assert_error(r, 401, "unauthorized")
    assert "bearer" in r.headers.get("www-authenticate", "").lower(), (
        "a 401 says which scheme to use: %r" % r.headers)
    r = authd.request("POST", path, body, token="not-a-key")
    assert_error(r, 401)
    r = authd.request("POST", path, body, token=role_key("provisioner"))
    assert_error(r, 403, "forbidden")
    for role, key in (("broker", role_key("broker")), ("admin", admin.token)):
        r = authd.request("POST", path, body, token=key)
        assert r.status == 200, "a %s key may check on the main listener: %r" % (role, r)
        d = r.json if path == "/v1/check" else r.json["results"][0]
        assert d["result"] == "allow", d


def test_the_check_listener_does_not_serve_the_admin_api(authd, admin):
    r = authd.request("GET", "/v1/devices", token=admin.token, port=authd.check_port)
    assert r.status in (403, 404), (
        "an unauthenticated listener must not expose the registry, even with a key: %r" % r)
    assert_error(r, r.status)
    r = authd.request("PUT", "/v1/policies/" + uid("p-"), {"statements": []}, port=authd.check_port)
    assert r.status in (403, 404, 405), r


# ------------------------------------------------ keep-alive and pipelining ----

def _raw_request(path, body):
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data))) + data


def _read_response(f):
    """(status, body bytes) of one HTTP/1.1 response from a buffered reader."""
    line = f.readline()
    assert line, "the server closed the connection instead of answering"
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", line)
    assert m, "not an HTTP/1.1 status line: %r" % line
    headers = {}
    while True:
        h = f.readline()
        assert h, "connection closed inside the headers"
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            chunk = f.read(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        raise AssertionError("a keep-alive answer needs a length: %r" % headers)
    assert headers.get("connection", "").lower() != "close", (
        "the server must keep the connection open: %r" % headers)
    return int(m.group(1)), body


def test_a_hundred_pipelined_checks_on_one_connection_are_answered_in_order(authd, plain_device):
    known = [plain_device() for _ in range(5)]
    expected = []
    wire = b""
    for i in range(100):
        if i % 5 == 0:
            did, want = known[(i // 5) % len(known)], "allow"
            topic = "devices/%s/telemetry/n%d" % (did, i)
        elif i % 5 == 1:
            did, want = known[i % len(known)], "deny"
            topic = "devices/%s/cmd/n%d" % (did, i)
        else:
            did, want = uid("pipe%02d-" % i), "deny"
            topic = "devices/%s/telemetry/n%d" % (did, i)
        expected.append((did, want))
        wire += _raw_request("/v1/check", {"action": "publish", "username": did, "topic": topic})

    with socket.create_connection(("127.0.0.1", authd.check_port), timeout=30) as s:
        # One write: the server sees all 100 requests in its buffer at once,
        # as it does behind EMQX's HTTP client, which pipelines up to 100.
        s.sendall(wire)
        f = s.makefile("rb")
        for i, (did, want) in enumerate(expected):
            status, body = _read_response(f)
            assert status == 200, "pipelined request %d: %d %r" % (i, status, body[:300])
            d = json.loads(body)
            assert (d["device"], d["result"]) == (did, want), (
                "answer %d must belong to request %d (%s, %s): %r" % (i, i, did, want, d))
        # The connection survives the burst and serves the next request.
        s.sendall(_raw_request("/v1/check", {"action": "publish", "username": known[0],
                                             "topic": "devices/%s/telemetry/after" % known[0]}))
        status, body = _read_response(f)
        assert status == 200 and json.loads(body)["result"] == "allow", body


def test_keep_alive_serves_many_sequential_checks_on_one_connection(authd, plain_device):
    import http.client
    did = plain_device()
    conn = http.client.HTTPConnection("127.0.0.1", authd.check_port, timeout=30)
    try:
        conn.connect()
        sock = conn.sock
        for i in range(20):
            topic = "devices/%s/%s/x" % (did, "telemetry" if i % 2 == 0 else "cmd")
            conn.request("POST", "/v1/check",
                         json.dumps({"action": "publish", "username": did, "topic": topic}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            d = json.loads(r.read())
            assert r.status == 200 and d["result"] == ("allow" if i % 2 == 0 else "deny"), d
            assert conn.sock is sock, "request %d needed a new connection" % i
    finally:
        conn.close()


def test_a_bad_request_in_a_pipeline_does_not_break_the_ones_after_it(authd, plain_device):
    did = plain_device()
    ok = {"action": "publish", "username": did, "topic": "devices/%s/telemetry/x" % did}
    wire = (_raw_request("/v1/check", ok) + _raw_request("/v1/check", {"action": "fly"})
            + _raw_request("/v1/check/batch", {"checks": [ok]}) + _raw_request("/v1/check", ok))
    with socket.create_connection(("127.0.0.1", authd.check_port), timeout=30) as s:
        s.sendall(wire)
        f = s.makefile("rb")
        got = [_read_response(f) for _ in range(4)]
    assert [st for st, _ in got] == [200, 400, 200, 200], got
    assert json.loads(got[0][1])["result"] == "allow"
    assert json.loads(got[2][1])["results"][0]["result"] == "allow"
    assert json.loads(got[3][1])["result"] == "allow"
