"""A big gateway through mosquitto: a gateway device whose policy reads
${child.id}, with 10,000 children imported under it, connects through the
plugin (its connect answer carries one pattern per child and statement,
about a megabyte), publishes for a child and is refused for a stranger,
and loses a child's rights within a second of that child's suspension
(authd's policy_changed event for the gateway reaches the plugin) while
its other children keep theirs."""

import json
import os
import time

import pytest

from mqtt_env import CONNACK_NOT_AUTHORIZED, Broker, Client, console_session

IMPORT_CHUNK = 50000  # lines per POST /v1/devices:import (the route takes 100,000)
QUIET = 1.0           # how long "nothing arrives" is watched for

GATEWAY_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"],
     "topics": ["devices/${child.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"],
     "topics": ["devices/${child.id}/cmd/#"]},
    {"effect": "allow", "actions": ["publish"],
     "topics": ["devices/${child.id}/status"]}]}


class Gateway:
    def __init__(self, gw, secret, children, fmt):
        self.id = gw
        self.secret = secret
        self.children = children
        self.fmt = fmt

    def child(self, i):
        return self.fmt % i


# 10,000 children: a connect answer of 0.8 MB. 100,000: 8 MB, the size
# the plugin's answer bound is meant for (three ${child.id} statements).
SIZES = [(10000, "gw-1", "c-%05d"), (100000, "gw-2", "b-%06d")]


@pytest.fixture(scope="module")
def gateway_policy(admin):
    r = admin.put("/v1/policies/e2e-gateway", GATEWAY_POLICY)
    assert r.status in (200, 201), "PUT /v1/policies/e2e-gateway: %r" % r


@pytest.fixture(scope="module", params=SIZES, ids=["10000-children", "100000-children"])
def gateway(request, authd, admin, gateway_policy):
    """A gateway with its device secret and its active children."""
    children, gw, fmt = request.param
    r = admin.post("/v1/devices", {"id": gw, "policies": ["e2e-gateway"]})
    assert r.status == 201, "POST /v1/devices: %r" % r
    r = admin.post("/v1/devices/%s/secret" % gw)
    assert r.status == 201, "POST /v1/devices/{id}/secret: %r" % r
    secret = r.json["secret"]
    for start in range(1, children + 1, IMPORT_CHUNK):
        end = min(start + IMPORT_CHUNK, children + 1)
        body = "".join(json.dumps({"id": fmt % i, "gateway": gw}) + "\n"
                       for i in range(start, end))
        r = admin.post("/v1/devices:import", body,
                       headers={"Content-Type": "application/x-ndjson"})
        assert r.status == 200, "POST /v1/devices:import: %r" % r
        assert r.json["created"] == end - start and r.json["failed"] == [], (
            "every child line is written: %r" % (r.json["failed"][:3],))
    return Gateway(gw, secret, children, fmt)


def gateway_session(broker, g):
    c = Client(broker, "plain", g.id, username=g.id, password=g.secret)
    t0 = time.monotonic()
    rc = c.connect(timeout=30)
    took = time.monotonic() - t0
    return c, rc, took


def delivered(console, sender, topic, payload):
    """Publishes through sender and says whether console received it."""
    sender.publish(topic, payload)
    return (topic, payload) in console.drain(QUIET)


def test_a_big_gateway_connects_and_publishes_for_its_children_only(
        broker, world, gateway):
    g = gateway
    seen = len(broker.log())
    c, rc, took = gateway_session(broker, g)
    try:
        assert rc == 0, (
            "a gateway whose connect answer carries %d children's patterns connects "
            "(CONNACK %r); broker log:\n%s" % (g.children, rc, broker.log()[seen:][-3000:]))
        print("\ngateway connect with %d children took %.3f s" % (g.children, took))
        _, console = console_session(broker, world)
        try:
            assert console.subscribe("devices/+/telemetry/#") == 1
            one = g.child(4242)
            assert delivered(console, c, "devices/%s/telemetry/x" % one, b"child"), (
                "a publish for one of the gateway's children is allowed and delivered")
            assert delivered(console, c, "devices/%s/telemetry/x" % g.child(g.children),
                             b"last"), "the last child is there too"
            assert not delivered(console, c, "devices/stranger/telemetry/x", b"forged"), (
                "a publish for a device that is not its child is dropped")
            assert c.subscribe("devices/%s/cmd/#" % g.child(1)) == 1, (
                "subscribe to a child's commands is granted")
            assert c.subscribe("devices/stranger/cmd/#") == 0x80, (
                "and refused for a stranger's")
        finally:
            console.close()
    finally:
        c.close()


def test_suspending_a_child_removes_it_from_the_live_gateway_session_within_one_second(
        broker, world, admin, gateway):
    g = gateway
    child, other = g.child(777), g.child(778)
    c, rc, _ = gateway_session(broker, g)
    try:
        assert rc == 0, "the gateway connects"
        _, console = console_session(broker, world)
        try:
            assert console.subscribe("devices/+/telemetry/#") == 1
            assert delivered(console, c, "devices/%s/telemetry/x" % child, b"before")
            t0 = time.monotonic()
            r = admin.patch("/v1/devices/" + child, {"status": "suspended"})
            assert r.status == 200, "PATCH status suspended: %r" % r
            # The plugin hears policy_changed for the gateway; its next
            # publish fetches the gateway's statements again.
            left = 1.0 - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
            assert not delivered(console, c, "devices/%s/telemetry/x" % child, b"after"), (
                "1 s after the suspension the gateway's publish for that child is refused")
            assert delivered(console, c, "devices/%s/telemetry/x" % other, b"other"), (
                "another child still works, in the same session")
            assert c.wait_disconnected(0) is None, (
                "a child's suspension does not disconnect its gateway")
            r = admin.patch("/v1/devices/" + child, {"status": "active"})
            assert r.status == 200, "PATCH status active: %r" % r
            time.sleep(1.0)
            assert delivered(console, c, "devices/%s/telemetry/x" % child, b"back"), (
                "once resumed the child is the gateway's again")
        finally:
            console.close()
    finally:
        c.close()


# ------------------------------------------------- over the answer bound ----

@pytest.fixture(scope="module")
def small_broker(world, workdir, broker):
    """A second broker on the same authd whose plugin takes check answers
    of at most 1 MiB (plugin_opt_answer_max_mb 1)."""
    b = Broker(broker.binary, broker.plugin, world, os.path.join(workdir, "broker-1mb"),
               plugin_opts=["plugin_opt_url http://127.0.0.1:%d" % world.authd.check_port,
                            "plugin_opt_answer_max_mb 1"])
    b.start()
    yield b
    b.stop_and_check()


def import_children(admin, gw, ids):
    body = "".join(json.dumps({"id": i, "gateway": gw}) + "\n" for i in ids)
    r = admin.post("/v1/devices:import", body,
                   headers={"Content-Type": "application/x-ndjson"})
    assert r.status == 200 and r.json["failed"] == [], "POST /v1/devices:import: %r" % r


def test_a_gateway_grown_past_the_answer_bound_is_refused_not_left_on_its_old_grant(
        small_broker, world, admin, gateway_policy):
    """A live gateway session whose re-check answer no longer fits the
    plugin's bound must fail closed: before, the oversized answer was
    taken for an outage and the stale grant kept serving, so a child
    suspended meanwhile stayed the gateway's until cache_ttl."""
    b = small_broker
    gw = "gw-3"
    r = admin.post("/v1/devices", {"id": gw, "policies": ["e2e-gateway"]})
    assert r.status == 201, r
    r = admin.post("/v1/devices/%s/secret" % gw)
    assert r.status == 201, r
    g = Gateway(gw, r.json["secret"], 10000, "e-%05d")
    import_children(admin, gw, [g.child(i) for i in range(1, 10001)])
    c, rc, _ = gateway_session(b, g)
    try:
        assert rc == 0, "10,000 children (0.8 MB) fit 1 MiB: %s" % b.log()[-2000:]
        _, console = console_session(b, world)
        try:
            assert console.subscribe("devices/+/telemetry/#") == 1
            assert delivered(console, c, "devices/e-00777/telemetry/x", b"before")
            # 5,000 more children: the next answer is about 1.2 MB.
            import_children(admin, gw, [g.child(i) for i in range(10001, 15001)])
            seen = len(b.log())
            t0 = time.monotonic()
            r = admin.patch("/v1/devices/e-00777", {"status": "suspended"})
            assert r.status == 200, r
            left = 1.0 - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
            assert not delivered(console, c, "devices/e-00777/telemetry/x", b"after"), (
                "a suspended child is not left on the gateway's old grant")
            assert c.wait_disconnected(2) is not None, (
                "a gateway whose answer cannot be used is refused everything and "
                "disconnected (fail closed)")
            log = b.log()[seen:]
            assert "plugin_opt_answer_max_mb" in log, (
                "the log says which bound refused it:\n%s" % log[-3000:])
        finally:
            console.close()
    finally:
        c.close()
    again, rc, _ = gateway_session(b, g)
    again.close()
    assert rc == CONNACK_NOT_AUTHORIZED, "it cannot connect again through this broker"
    assert "unreachable" not in b.log(), (
        "an answer over the bound is no outage:\n%s" % b.log()[-3000:])
