"""§12 gateways and §13's check mapping for CoAP: devices that sit behind a
gateway ("gateway" on the device record, GET /v1/devices/{id}/children),
${child.id} in a gateway's policy (one pattern per active child, exact at
once when a child is suspended, resumed, moved or deleted), on_behalf_of
at /v1/check (the child's own policy, only from its own gateway), the
policy_changed events the gateway's broker plugin gets, and
"protocol":"coap" checks (GET/observe = subscribe + receive, PUT/POST =
publish, DELETE = publish). All through the public HTTP API of a real
daemon, on whichever backend the suite runs on."""

import json
import re
import time

import pytest

from authd_harness import assert_error, enroll, uid
from test_authctl import ctl, ctl_env, js, ok  # noqa: F401 (fixtures)
from test_revocation import SseClient

# A gateway publishes telemetry and reads commands for exactly its
# current active children, and talks as itself under gateways/<id>/.
GATEWAY_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"],
     "topics": ["devices/${child.id}/telemetry/#", "gateways/${device.id}/status"]},
    {"effect": "allow", "actions": ["subscribe", "receive"],
     "topics": ["devices/${child.id}/cmd/#"]},
]}

# A child's own rights, as the §6 example gives them.
CHILD_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "allow", "actions": ["subscribe"], "topics": ["devices/${device.id}/cfg"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
]}


# ------------------------------------------------------------ helpers ----

@pytest.fixture(scope="module")
def policies(admin):
    gw, child = uid("pol-gw-"), uid("pol-child-")
    r = admin.put("/v1/policies/" + gw, GATEWAY_POLICY)
    assert r.status == 201, "a policy with ${child.id} is a valid policy: %r" % r
    assert admin.put("/v1/policies/" + child, CHILD_POLICY).status == 201
    return {"gateway": gw, "child": child}


@pytest.fixture
def gateway(admin, policies):
    """gateway() -> the id of a new gateway device."""

    def make(**fields):
        body = {"id": uid("gw-"), "policies": [policies["gateway"]]}
        body.update(fields)
        r = admin.post("/v1/devices", body)
        assert r.status == 201, "POST /v1/devices %r: %r" % (body, r)
        return body["id"]

    return make


@pytest.fixture
def child(admin, policies):
    """child(gateway_id) -> the id of a new active device behind it."""

    def make(gw, **fields):
        body = {"id": uid("ch-"), "policies": [policies["child"]], "gateway": gw}
        body.update(fields)
        r = admin.post("/v1/devices", body)
        assert r.status == 201, "POST /v1/devices %r: %r" % (body, r)
        assert r.json.get("gateway") == gw, "the created device shows its gateway: %r" % r
        return body["id"]

    return make


def check(authd, body):
    r = authd.request("POST", "/v1/check", body, port=authd.check_port)
    assert r.status == 200, "a decision is a 200, allow or deny: %r" % r
    return r.json


def publish(authd, gw, topic, **extra):
    """A publish by the gateway's connection (the broker names it by its
    username after the connect)."""
    body = {"action": "publish", "username": gw, "client_id": gw, "topic": topic}
    body.update(extra)
    return check(authd, body)


def allowed(d):
    return d["result"] == "allow"


def metric(authd, name, cache):
    text = authd.request("GET", "/metrics").text
    m = re.search(r'^%s\{cache="%s"\} (\d+)$' % (re.escape(name), cache), text, re.M)
    assert m, "/metrics has %s for %s" % (name, cache)
    return int(m.group(1))


# ----------------------------------------------- the gateway field ----

def test_a_device_shows_its_gateway_and_the_gateway_lists_its_children(admin, gateway, child):
    gw = gateway()
    kids = sorted(child(gw) for _ in range(3))
    r = admin.get("/v1/devices/" + kids[0])
    assert r.status == 200 and r.json["gateway"] == gw, "GET shows the gateway: %r" % r
    items = admin.list_all("/v1/devices/%s/children" % gw, limit=2)
    assert [i["id"] for i in items] == kids, "every child, in id order, across pages: %r" % items
    assert all(i["status"] == "active" for i in items), items
    plain = admin.post("/v1/devices", {"id": uid("plain-")}).json["id"]
    assert "gateway" not in admin.get("/v1/devices/" + plain).json, (
        "a device without a gateway carries none")


def test_children_of_a_device_that_does_not_exist_is_404(admin):
    assert_error(admin.get("/v1/devices/%s/children" % uid("nope-")), 404, "not_found")


def test_a_gateway_must_exist_be_a_device_id_and_not_the_device_itself(admin, gateway):
    r = admin.post("/v1/devices", {"id": uid("c-"), "gateway": uid("ghost-")})
    assert_error(r, 400, "unknown_gateway")
    did = uid("c-")
    assert_error(admin.post("/v1/devices", {"id": did, "gateway": did}), 400, "invalid_field")
    assert_error(admin.post("/v1/devices", {"id": uid("c-"), "gateway": "bad id"}), 400,
                 "invalid_field")
    assert_error(admin.post("/v1/devices", {"id": uid("c-"), "gateway": 7}), 400,
                 "invalid_field")
    assert admin.get("/v1/devices/" + did).status == 404, "a refused device is not created"


def test_patch_sets_moves_and_clears_the_gateway(admin, gateway):
    gw1, gw2 = gateway(), gateway()
    did = admin.post("/v1/devices", {"id": uid("c-")}).json["id"]
    r = admin.patch("/v1/devices/" + did, {"gateway": gw1})
    assert r.status == 200 and r.json["gateway"] == gw1, r
    assert [i["id"] for i in admin.list_all("/v1/devices/%s/children" % gw1)] == [did]
    r = admin.patch("/v1/devices/" + did, {"gateway": gw2})
    assert r.status == 200 and r.json["gateway"] == gw2, r
    assert admin.list_all("/v1/devices/%s/children" % gw1) == [], "moved away"
    assert [i["id"] for i in admin.list_all("/v1/devices/%s/children" % gw2)] == [did]
    assert_error(admin.patch("/v1/devices/" + did, {"gateway": did}), 400, "invalid_field")
    assert_error(admin.patch("/v1/devices/" + did, {"gateway": uid("ghost-")}), 400,
                 "unknown_gateway")
    assert admin.get("/v1/devices/" + did).json["gateway"] == gw2, "a refused patch changes nothing"
    r = admin.patch("/v1/devices/" + did, {"gateway": None})
    assert r.status == 200 and "gateway" not in r.json, "null clears it: %r" % r
    assert admin.list_all("/v1/devices/%s/children" % gw2) == []


def test_a_gateway_with_children_cannot_be_deleted_until_they_leave(admin, gateway, child):
    gw = gateway()
    kid = child(gw)
    assert_error(admin.delete("/v1/devices/" + gw), 409, "conflict")
    assert admin.delete("/v1/devices/" + kid).status == 204
    assert admin.list_all("/v1/devices/%s/children" % gw) == [], "a deleted child leaves"
    assert admin.delete("/v1/devices/" + gw).status == 204


def test_children_show_their_status(admin, gateway, child):
    gw = gateway()
    a, b, c = child(gw), child(gw), child(gw)
    assert admin.patch("/v1/devices/" + b, {"status": "suspended"}).status == 200
    assert admin.post("/v1/devices/%s/revoke" % c, {"reason": "keyCompromise"}).status == 200
    st = {i["id"]: i["status"] for i in admin.list_all("/v1/devices/%s/children" % gw)}
    assert st == {a: "active", b: "suspended", c: "revoked"}, st


def test_an_import_line_may_name_a_gateway_even_one_earlier_in_the_import(admin, policies):
    gw, k1, k2, bad = uid("gwi-"), uid("ki-"), uid("ki-"), uid("ki-")
    lines = [{"id": gw, "policies": [policies["gateway"]]},
             {"id": k1, "gateway": gw}, {"id": k2, "gateway": gw},
             {"id": bad, "gateway": uid("ghost-")}]
    r = admin.post("/v1/devices:import", "".join(json.dumps(x) + "\n" for x in lines),
                   headers={"Content-Type": "application/x-ndjson"})
    assert r.status == 200, r
    assert r.json["created"] == 3, r
    assert [f["error"]["code"] for f in r.json["failed"]] == ["unknown_gateway"], r
    assert sorted(i["id"] for i in admin.list_all("/v1/devices/%s/children" % gw)) == sorted([k1, k2])


def test_a_device_enrolled_under_an_enrollment_with_a_gateway_sits_behind_it(
        authd, admin, gateway, make_enrollment, devdir):
    gw = gateway()
    assert_error(admin.post("/v1/enrollments", {"gateway": uid("ghost-")}), 400, "unknown_gateway")
    enr = make_enrollment(gateway=gw)
    assert enr.get("gateway") == gw, "the enrollment shows its gateway: %r" % enr
    dev, r = enroll(authd, enr["token"], uid("enr-ch-"), devdir)
    assert r.status == 201, r
    assert admin.get("/v1/devices/" + dev.id).json["gateway"] == gw
    assert dev.id in [i["id"] for i in admin.list_all("/v1/devices/%s/children" % gw)]
    assert allowed(publish(authd, gw, "devices/%s/telemetry/t" % dev.id)), (
        "an enrolled child is the gateway's child at once")
    # A gateway deleted after the enrollment was made: it refuses to
    # create devices behind a gateway that is gone.
    gone = gateway()
    enr = make_enrollment(gateway=gone)
    assert admin.delete("/v1/devices/" + gone).status == 204
    did = uid("enr-ch-")
    _, r = enroll(authd, enr["token"], did, devdir)
    assert_error(r, 400, "unknown_gateway")
    assert admin.get("/v1/devices/" + did).status == 404, "nothing was created"
    assert admin.get("/v1/enrollments/" + enr["id"]).json["used"] == 0, "no use was spent"


def test_authctl_adds_moves_and_lists_children(ctl, admin, gateway, make_enrollment):
    gw, gw2 = gateway(), gateway()
    kid = uid("ctl-ch-")
    ok(ctl("device", "add", kid, "--gateway", gw))
    assert admin.get("/v1/devices/" + kid).json["gateway"] == gw
    out = ok(ctl("device", "children", gw)).stdout
    assert kid in out and "active" in out, out
    ok(ctl("device", "update", kid, "--gateway", gw2))
    assert [i["id"] for i in js(ctl("--json", "device", "children", gw2))["items"]] == [kid]
    assert js(ctl("--json", "device", "children", gw))["items"] == []
    ok(ctl("device", "update", kid, "--no-gateway"))
    assert "gateway" not in admin.get("/v1/devices/" + kid).json
    p = ctl("device", "update", kid, "--gateway", gw, "--no-gateway")
    assert p.returncode != 0, "the two options exclude each other"
    p = ctl("device", "update", kid)
    assert p.returncode != 0, "nothing to change is a usage error"
    p = ctl("device", "add", uid("ctl-ch-"), "--gateway", uid("ghost-"))
    assert p.returncode != 0 and "unknown_gateway" in p.stderr + p.stdout, p
    enr = js(ctl("--json", "enroll", "create", "--gateway", gw))
    assert enr["gateway"] == gw, enr


# ------------------------------------------------------ ${child.id} ----

def test_a_gateway_publishes_for_its_active_children_only(authd, gateway, child):
    gw = gateway()
    kid = child(gw)
    other_gw = gateway()
    stranger = child(other_gw)
    assert allowed(publish(authd, gw, "devices/%s/telemetry/x" % kid)), "its child: allow"
    assert allowed(publish(authd, gw, "devices/%s/telemetry/a/b" % kid))
    d = publish(authd, gw, "devices/%s/telemetry/x" % stranger)
    assert not allowed(d), "another gateway's child: deny %r" % d
    assert not allowed(publish(authd, gw, "devices/%s/telemetry/x" % uid("none-")))
    assert not allowed(publish(authd, gw, "devices/%s/cmd/x" % kid)), "only what the statement names"
    sub = check(authd, {"action": "subscribe", "username": gw, "topic": "devices/%s/cmd/#" % kid})
    assert allowed(sub), sub
    assert allowed(publish(authd, gw, "gateways/%s/status" % gw)), "its own variables still bind"


def test_a_child_suspended_drops_out_at_once_and_resumed_comes_back(authd, admin, gateway, child):
    gw = gateway()
    kid, other = child(gw), child(gw)
    topic = "devices/%s/telemetry/x" % kid
    assert allowed(publish(authd, gw, topic))   # cached now
    assert admin.patch("/v1/devices/" + kid, {"status": "suspended"}).status == 200
    assert not allowed(publish(authd, gw, topic)), "suspension takes effect before the PATCH returns"
    assert allowed(publish(authd, gw, "devices/%s/telemetry/x" % other)), "the others stay"
    assert admin.patch("/v1/devices/" + kid, {"status": "active"}).status == 200
    assert allowed(publish(authd, gw, topic)), "resumed: allowed again at once"


def test_a_child_moved_is_denied_to_the_old_gateway_and_allowed_to_the_new(
        authd, admin, gateway, child):
    old, new = gateway(), gateway()
    kid = child(old)
    topic = "devices/%s/telemetry/x" % kid
    assert allowed(publish(authd, old, topic))
    assert not allowed(publish(authd, new, topic))
    assert admin.patch("/v1/devices/" + kid, {"gateway": new}).status == 200
    assert not allowed(publish(authd, old, topic)), "the old gateway lost it at once"
    assert allowed(publish(authd, new, topic)), "the new gateway has it at once"


def test_a_child_deleted_or_revoked_is_denied(authd, admin, gateway, child):
    gw = gateway()
    gone, revoked = child(gw), child(gw)
    for kid in (gone, revoked):
        assert allowed(publish(authd, gw, "devices/%s/telemetry/x" % kid))
    assert admin.delete("/v1/devices/" + gone).status == 204
    assert admin.post("/v1/devices/%s/revoke" % revoked, {"reason": "keyCompromise"}).status == 200
    for kid in (gone, revoked):
        assert not allowed(publish(authd, gw, "devices/%s/telemetry/x" % kid)), kid


def test_connect_exports_the_statements_with_one_pattern_per_child(authd, admin, gateway, child):
    gw = gateway()
    kids = sorted(child(gw) for _ in range(3))
    secret = admin.post("/v1/devices/%s/secret" % gw).json["secret"]
    d = check(authd, {"action": "connect", "client_id": gw, "username": gw, "password": secret})
    assert allowed(d), d
    text = json.dumps(d["statements"])
    assert "${child.id}" not in text, "every variable is substituted: %s" % text
    for k in kids:
        assert "devices/%s/telemetry/#" % k in text, "a pattern for child %s: %s" % (k, text)
    assert "gateways/%s/status" % gw in text
    assert admin.patch("/v1/devices/" + kids[0], {"status": "suspended"}).status == 200
    d = check(authd, {"action": "connect", "client_id": gw, "username": gw, "password": secret})
    text = json.dumps(d["statements"])
    assert "devices/%s/telemetry/#" % kids[0] not in text, "a suspended child is not exported"
    assert "devices/%s/telemetry/#" % kids[1] in text


def test_events_tell_the_gateways_plugin_when_a_child_changes(authd, admin, gateway, child):
    gw, gw2 = gateway(), gateway()
    kids = [child(gw) for _ in range(4)]
    sse = SseClient(authd.check_port)
    try:
        time.sleep(0.2)

        def expect_policy_changed(gateway_id, what):
            ev = sse.wait_for(lambda e: e.get("event") == "policy_changed"
                              and e["data"].get("device") == gateway_id
                              and e["id"] > expect_policy_changed.last)
            assert ev, "the gateway's plugin hears policy_changed when a child is %s: %r" % (
                what, sse.events[-5:])
            expect_policy_changed.last = ev["id"]
        expect_policy_changed.last = 0

        assert admin.patch("/v1/devices/" + kids[0], {"status": "suspended"}).status == 200
        expect_policy_changed(gw, "suspended")
        assert admin.post("/v1/devices/%s/revoke" % kids[1], {"reason": "keyCompromise"}).status == 200
        expect_policy_changed(gw, "revoked")
        assert admin.delete("/v1/devices/" + kids[2]).status == 204
        expect_policy_changed(gw, "deleted")
        last = expect_policy_changed.last
        assert admin.patch("/v1/devices/" + kids[3], {"gateway": gw2}).status == 200
        expect_policy_changed(gw, "moved away")
        expect_policy_changed.last = last
        expect_policy_changed(gw2, "moved in")
    finally:
        sse.close()


# ------------------------------------------------------ on_behalf_of ----

def on_behalf(authd, gw, kid, action, topic=None, **extra):
    body = {"action": action, "username": gw, "on_behalf_of": kid}
    if topic is not None:
        body["topic"] = topic
    body.update(extra)
    return check(authd, body)


def test_on_behalf_of_decides_with_the_childs_own_policy(authd, gateway, child):
    gw = gateway()
    kid = child(gw)
    d = on_behalf(authd, gw, kid, "publish", "devices/%s/telemetry/t" % kid)
    assert allowed(d) and d["device"] == kid, "the child's own policy, the answer names it: %r" % d
    d = on_behalf(authd, gw, kid, "subscribe", "devices/%s/cfg" % kid)
    assert allowed(d), "a right only the child's policy grants: %r" % d
    d = on_behalf(authd, gw, kid, "publish", "gateways/%s/status" % gw)
    assert not allowed(d), "the gateway's own rights are not the child's: %r" % d
    other = child(gw)
    d = on_behalf(authd, gw, kid, "publish", "devices/%s/telemetry/t" % other)
    assert not allowed(d), "${device.id} is the child, not a sibling: %r" % d


def test_on_behalf_of_a_device_that_is_not_its_child_is_not_gateway(authd, gateway, child, admin):
    gw, other = gateway(), gateway()
    stranger = child(other)
    plain = admin.post("/v1/devices", {"id": uid("plain-"), "policies": []}).json["id"]
    for kid in (stranger, plain, uid("nobody-")):
        d = on_behalf(authd, gw, kid, "publish", "devices/%s/telemetry/t" % kid)
        assert d["result"] == "deny" and d["reason"] == "not_gateway", (
            "only the child's own gateway acts for it (an unknown id answers the same): %r" % d)


def test_on_behalf_of_an_inactive_child_or_from_an_inactive_gateway_is_denied(
        authd, admin, gateway, child):
    gw = gateway()
    kid = child(gw)
    topic = "devices/%s/telemetry/t" % kid
    assert allowed(on_behalf(authd, gw, kid, "publish", topic))
    assert admin.patch("/v1/devices/" + kid, {"status": "suspended"}).status == 200
    d = on_behalf(authd, gw, kid, "publish", topic)
    assert d["result"] == "deny" and d["reason"] == "device_suspended", d
    assert admin.patch("/v1/devices/" + kid, {"status": "active"}).status == 200
    assert allowed(on_behalf(authd, gw, kid, "publish", topic))
    assert admin.patch("/v1/devices/" + gw, {"status": "suspended"}).status == 200
    d = on_behalf(authd, gw, kid, "publish", topic)
    assert d["result"] == "deny" and d["reason"] == "gateway_suspended", (
        "a suspended gateway acts for nobody: %r" % d)
    assert admin.patch("/v1/devices/" + gw, {"status": "active"}).status == 200
    assert admin.post("/v1/devices/%s/revoke" % kid, {"reason": "keyCompromise"}).status == 200
    d = on_behalf(authd, gw, kid, "publish", topic)
    assert d["result"] == "deny" and d["reason"] == "device_revoked", d


def test_on_behalf_of_a_child_moved_away_is_the_new_gateways_only(authd, admin, gateway, child):
    old, new = gateway(), gateway()
    kid = child(old)
    topic = "devices/%s/telemetry/t" % kid
    assert allowed(on_behalf(authd, old, kid, "publish", topic))
    assert admin.patch("/v1/devices/" + kid, {"gateway": new}).status == 200
    assert on_behalf(authd, old, kid, "publish", topic)["reason"] == "not_gateway"
    assert allowed(on_behalf(authd, new, kid, "publish", topic))


def test_on_behalf_of_connect_is_the_childs_connect_with_its_statements(authd, admin, gateway, child):
    gw = gateway()
    kid = child(gw)
    secret = admin.post("/v1/devices/%s/secret" % gw).json["secret"]
    d = check(authd, {"action": "connect", "client_id": gw, "username": gw, "password": secret,
                      "on_behalf_of": kid})
    assert allowed(d) and d["device"] == kid, d
    text = json.dumps(d["statements"])
    assert "devices/%s/telemetry/#" % kid in text and "${" not in text, (
        "the child's statements, substituted for the child: %s" % text)
    d = check(authd, {"action": "connect", "client_id": gw, "username": gw, "password": "wrong",
                      "on_behalf_of": kid})
    assert d["result"] == "deny", "the gateway's own credential is checked first: %r" % d


def test_on_behalf_of_with_a_username_of_another_device_is_denied(authd, gateway, child):
    gw = gateway()
    kid = child(gw)
    d = check(authd, {"action": "connect", "client_id": kid, "username": kid,
                      "password": "x", "on_behalf_of": kid})
    assert d["result"] == "deny", "a child cannot act on behalf of itself without a gateway: %r" % d


def test_on_behalf_of_in_a_batch_and_malformed(authd, gateway, child):
    gw = gateway()
    kid = child(gw)
    r = authd.request("POST", "/v1/check/batch", {"checks": [
        {"action": "publish", "username": gw, "on_behalf_of": kid,
         "topic": "devices/%s/telemetry/t" % kid},
        {"action": "publish", "username": gw, "on_behalf_of": uid("x-"),
         "topic": "devices/x/telemetry/t"},
        {"action": "publish", "username": gw, "on_behalf_of": 5, "topic": "a"},
    ]}, port=authd.check_port)
    assert r.status == 200, r
    res = r.json["results"]
    assert res[0]["result"] == "allow" and res[0]["device"] == kid, res
    assert res[1]["reason"] == "not_gateway", res
    assert res[2]["result"] == "deny" and res[2]["reason"] == "invalid_request", res
    assert_error(authd.request("POST", "/v1/check", {"action": "publish", "username": gw,
                                                     "topic": "a", "on_behalf_of": "bad id"},
                               port=authd.check_port), 400, "invalid_field")


# ------------------------------------------------------- CoAP checks ----

def coap(authd, dev, method, path, observe=None, **extra):
    body = {"protocol": "coap", "method": method, "path": path, "username": dev}
    if observe is not None:
        body["observe"] = observe
    body.update(extra)
    return check(authd, body)


def test_coap_get_and_observe_need_subscribe_and_receive(authd, gateway, child):
    kid = child(gateway())
    for observe in (None, False, True):
        d = coap(authd, kid, "GET", "devices/%s/cmd/reboot" % kid, observe)
        assert allowed(d) and d["device"] == kid, "subscribe and receive both allow: %r" % d
        d = coap(authd, kid, "GET", "devices/%s/cfg" % kid, observe)
        assert not allowed(d), "subscribe alone is not enough for a GET: %r" % d
        d = coap(authd, kid, "GET", "devices/%s/telemetry/t" % kid, observe)
        assert not allowed(d), "publish rights do not let it read: %r" % d


def test_coap_put_and_post_are_publish(authd, gateway, child):
    kid = child(gateway())
    for m in ("PUT", "POST"):
        assert allowed(coap(authd, kid, m, "devices/%s/telemetry/t" % kid)), m
        assert not allowed(coap(authd, kid, m, "devices/%s/cmd/x" % kid)), m


def test_coap_delete_is_allowed_only_where_publish_is(authd, gateway, child):
    kid = child(gateway())
    assert allowed(coap(authd, kid, "DELETE", "devices/%s/telemetry/t" % kid))
    d = coap(authd, kid, "DELETE", "devices/%s/cmd/x" % kid)
    assert not allowed(d), "no publish right there, no DELETE: %r" % d


def test_coap_on_behalf_of_a_child(authd, gateway, child):
    gw = gateway()
    kid = child(gw)
    d = coap(authd, gw, "POST", "devices/%s/telemetry/t" % kid, on_behalf_of=kid)
    assert allowed(d) and d["device"] == kid, d
    d = coap(authd, gw, "GET", "devices/%s/cmd/x" % kid, True, on_behalf_of=kid)
    assert allowed(d), d


@pytest.mark.parametrize("body", [
    {"protocol": "coap", "method": "FETCH", "path": "a/b"},
    {"protocol": "coap", "method": "get", "path": "a/b"},
    {"protocol": "coap", "method": "PUT", "path": "a/b", "action": "publish"},
    {"protocol": "coap", "method": "PUT", "path": "a/b", "topic": "a/b"},
    {"protocol": "coap", "method": "GET", "path": "/a/b"},
    {"protocol": "coap", "method": "PUT", "path": "a/b", "observe": True},
    {"protocol": "coap", "method": "GET", "path": "a/b", "observe": "yes"},
    {"protocol": "coap", "path": "a/b"},
    {"protocol": "coap", "method": "GET"},
    {"protocol": "http", "method": "GET", "path": "a/b"},
    {"action": "publish", "topic": "a/b", "method": "PUT"},
])
def test_a_malformed_coap_check_is_400_never_an_allow(authd, gateway, body):
    body = dict(body, username=gateway())
    r = authd.request("POST", "/v1/check", body, port=authd.check_port)
    assert_error(r, 400, "invalid_field")
    r = authd.request("POST", "/v1/check/batch", {"checks": [body]}, port=authd.check_port)
    assert r.status == 200 and r.json["results"][0]["result"] == "deny", (
        "in a batch: that item denied: %r" % r)


# ---------------------------------------------------------- scale ----

def test_ten_thousand_children_decide_fast_and_one_change_rebuilds_one_entry(
        authd, admin, policies):
    gw = uid("gwbig-")
    assert admin.post("/v1/devices", {"id": gw, "policies": [policies["gateway"]]}).status == 201
    kids = ["%s-c%05d" % (gw, i) for i in range(10000)]
    body = "".join(json.dumps({"id": k, "gateway": gw, "policies": [policies["child"]]}) + "\n"
                   for k in kids)
    r = admin.post("/v1/devices:import", body, headers={"Content-Type": "application/x-ndjson"},
                   timeout=300)
    assert r.status == 200 and r.json["created"] == 10000, r
    topics = ["devices/%s/telemetry/x" % kids[(i * 7919) % 10000] for i in range(200)]
    assert allowed(publish(authd, gw, topics[0]))   # warm: one load of 10,000 children
    # Other devices with entries of their own, cached now.
    others = kids[-50:]
    for k in others:
        assert allowed(check(authd, {"action": "publish", "username": k,
                                     "topic": "devices/%s/telemetry/x" % k}))
    batch = [{"action": "publish", "username": gw, "topic": t} for t in topics]
    t0 = time.monotonic()
    r = authd.request("POST", "/v1/check/batch", {"checks": batch}, port=authd.check_port)
    elapsed = time.monotonic() - t0
    assert r.status == 200 and all(x["result"] == "allow" for x in r.json["results"]), r
    assert elapsed < 1.0, "200 decisions of a 10,000-child gateway took %.3fs" % elapsed

    sets_missed = metric(authd, "authd_cache_misses_total", "policy_sets")
    dev_missed = metric(authd, "authd_cache_misses_total", "devices")
    assert admin.patch("/v1/devices/" + kids[0], {"status": "suspended"}).status == 200
    assert not allowed(publish(authd, gw, "devices/%s/telemetry/x" % kids[0]))
    for k in others:
        assert allowed(check(authd, {"action": "publish", "username": k,
                                     "topic": "devices/%s/telemetry/x" % k}))
    assert metric(authd, "authd_cache_misses_total", "policy_sets") == sets_missed, (
        "a child's change recompiles no shared policy set")
    assert metric(authd, "authd_cache_misses_total", "devices") - dev_missed <= 3, (
        "only the gateway's (and the changed child's) entries were read again, "
        "not the other devices'")
    t0 = time.monotonic()
    r = authd.request("POST", "/v1/check/batch", {"checks": batch}, port=authd.check_port)
    elapsed = time.monotonic() - t0
    assert r.status == 200, r
    assert elapsed < 1.0, "after a change: %.3fs" % elapsed


# ---------------------------------------------------------- migrate ----

def test_migrate_carries_the_children_indexes_into_postgresql(binary, tmp_path):
    from authd_harness import Authd, pg_database_url
    from test_migrate import run_authd

    data = str(tmp_path / "node")
    r = run_authd(binary, "init", "--data", data, "--store", "lmdb:")
    assert r.returncode == 0, r.stderr
    d = Authd(data, binary).start()
    try:
        admin = d.api(d.admin_key)
        assert admin.put("/v1/policies/gw", GATEWAY_POLICY).status == 201
        assert admin.put("/v1/policies/kid", CHILD_POLICY).status == 201
        assert admin.post("/v1/devices", {"id": "gw-m", "policies": ["gw"]}).status == 201
        for k in ("k1", "k2", "k3"):
            assert admin.post("/v1/devices", {"id": k, "gateway": "gw-m",
                                              "policies": ["kid"]}).status == 201
        assert admin.patch("/v1/devices/k2", {"status": "suspended"}).status == 200
        before = admin.list_all("/v1/devices/gw-m/children")
    finally:
        assert d.stop() == 0
    r = run_authd(binary, "migrate", "--data", data, "--to", pg_database_url(uid("authd_gwm_")))
    assert r.returncode == 0, "authd migrate: %s%s" % (r.stdout, r.stderr)
    d2 = Authd(data, binary).start()
    try:
        admin2 = d2.api(d2.admin_key)
        assert admin2.list_all("/v1/devices/gw-m/children") == before, "every child, same status"
        assert allowed(publish(d2, "gw-m", "devices/k1/telemetry/x")), "active children carried"
        assert not allowed(publish(d2, "gw-m", "devices/k2/telemetry/x")), "a suspended one is not"
        assert admin2.patch("/v1/devices/k2", {"status": "active"}).status == 200
        assert allowed(publish(d2, "gw-m", "devices/k2/telemetry/x"))
    finally:
        assert d2.stop() == 0
