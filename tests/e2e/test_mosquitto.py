"""A real mosquitto with authd_mosquitto.so in front of a real authd: what
devices may connect, publish, subscribe and receive, and how fast a
revocation or suspension ends a live session. Each test makes its own
devices, so the tests share one authd and one broker."""

import time

from mqtt_env import (CONNACK_NOT_AUTHORIZED, SUBACK_FAILURE, Client, console_session,
                      jwt_claims, sensor_session)

QUIET = 1.0  # how long "nothing arrives" is watched for


# ------------------------------------------------------ publish/receive ----

def test_an_allowed_publish_is_delivered_to_an_allowed_subscriber(broker, world):
    dev, sensor = sensor_session(broker, world)
    _, console = console_session(broker, world)
    try:
        assert console.subscribe("devices/+/telemetry/#") == 1, (
            "the dashboard policy covers devices/+/telemetry/#")
        sensor.publish("devices/%s/telemetry/temp" % dev.id, b"21.5")
        got = console.next_message(5)
        assert got == ("devices/%s/telemetry/temp" % dev.id, b"21.5"), (
            "a publish the policy allows reaches a subscriber allowed to receive it: %r" % (got,))
    finally:
        sensor.close()
        console.close()


def test_a_denied_publish_is_not_delivered(broker, world):
    dev, sensor = sensor_session(broker, world)
    other = world.cert_device()
    _, console = console_session(broker, world)
    try:
        assert console.subscribe("devices/+/telemetry/#") == 1
        # Another device's telemetry and its own command topic are not
        # the sensor's to publish to.
        sensor.publish("devices/%s/telemetry/temp" % other.id, b"forged")
        sensor.publish("devices/%s/cmd/reboot" % dev.id, b"self-command")
        sensor.publish("devices/%s/telemetry/ok" % dev.id, b"allowed")
        got = console.drain(QUIET)
        assert got == [("devices/%s/telemetry/ok" % dev.id, b"allowed")], (
            "only the allowed publish may be delivered, the denied ones are dropped: %r" % got)
    finally:
        sensor.close()
        console.close()


def test_an_allowed_subscribe_receives_commands(broker, world):
    dev, sensor = sensor_session(broker, world)
    _, console = console_session(broker, world)
    try:
        assert sensor.subscribe("devices/%s/cmd/+" % dev.id) == 1, (
            "the sensor policy allows devices/<id>/cmd/+")
        console.publish("devices/%s/cmd/reboot" % dev.id, b"now")
        got = sensor.next_message(5)
        assert got == ("devices/%s/cmd/reboot" % dev.id, b"now"), (
            "a command published by an allowed sender reaches the device: %r" % (got,))
    finally:
        sensor.close()
        console.close()


def test_a_subscribe_whose_filter_is_not_covered_is_refused(broker, world):
    dev, sensor = sensor_session(broker, world)
    other = world.cert_device()
    try:
        for filt in ("devices/%s/cmd/#" % dev.id,   # cmd/+ does not cover cmd/#
                     "devices/+/cmd/+",              # other devices' commands
                     "devices/%s/cmd/+" % other.id,
                     "devices/%s/telemetry/#" % dev.id):  # publish-only
            assert sensor.subscribe(filt) == SUBACK_FAILURE, (
                "SUBACK must refuse (0x80) a filter no allow covers: %s" % filt)
        assert sensor.subscribe("devices/%s/cmd/+" % dev.id) == 1, (
            "refusals do not end the session; the allowed filter is still granted")
    finally:
        sensor.close()


def test_sys_topics_are_never_granted_even_through_a_wildcard(broker, world):
    dev = world.cert_device("monitors", prefix="monitor-")
    _, mon = sensor_session(broker, world, dev)
    dev2, sensor = sensor_session(broker, world)
    try:
        assert sensor.subscribe("#") == SUBACK_FAILURE, (
            "a sensor may not subscribe to everything")
        assert mon.subscribe("$SYS/#") == SUBACK_FAILURE, "$SYS/# is denied explicitly"
        assert mon.subscribe("#") == 1, "the monitor policy allows # (which excludes $SYS)"
        sensor.publish("devices/%s/telemetry/x" % dev2.id, b"1")
        # sys_interval is 1 s: $SYS messages are published meanwhile.
        got = mon.drain(2.5)
        assert ("devices/%s/telemetry/x" % dev2.id, b"1") in got, (
            "the monitor does receive ordinary topics: %r" % got)
        sys_topics = [t for t, _ in got if t.startswith("$")]
        assert not sys_topics, "no $SYS topic may be delivered through #: %r" % sys_topics
    finally:
        mon.close()
        sensor.close()


# -------------------------------------------------- revoke and suspend ----

def test_revoking_a_device_disconnects_its_live_session_within_one_second(broker, world, admin):
    dev, sensor = sensor_session(broker, world)
    try:
        assert sensor.subscribe("devices/%s/cmd/+" % dev.id) == 1
        t0 = time.monotonic()
        r = admin.post("/v1/devices/%s/revoke" % dev.id, {"reason": "keyCompromise"})
        assert r.status == 200, "POST /v1/devices/{id}/revoke: %r" % r
        gone = sensor.wait_disconnected(5)
        assert gone is not None, "the revoked device's session must be closed by the broker"
        assert gone - t0 <= 1.0, "within 1 s of the revocation, took %.3f s" % (gone - t0)
    finally:
        sensor.close()
    again = Client(broker, "tls", dev.id, device=dev)
    assert again.connect() == CONNACK_NOT_AUTHORIZED, (
        "a revoked certificate is refused at CONNECT even though TLS accepts it")


def test_suspending_a_device_disconnects_it_and_resuming_lets_it_back(broker, world, admin):
    dev, sensor = sensor_session(broker, world)
    try:
        t0 = time.monotonic()
        r = admin.patch("/v1/devices/" + dev.id, {"status": "suspended"})
        assert r.status == 200, "PATCH status suspended: %r" % r
        gone = sensor.wait_disconnected(5)
        assert gone is not None and gone - t0 <= 1.0, (
            "a suspended device is disconnected within 1 s (%r)" % (gone and gone - t0))
    finally:
        sensor.close()
    again = Client(broker, "tls", dev.id, device=dev)
    assert again.connect() == CONNACK_NOT_AUTHORIZED, "a suspended device may not reconnect"

    assert admin.patch("/v1/devices/" + dev.id, {"status": "active"}).status == 200
    back = Client(broker, "tls", dev.id, device=dev)
    try:
        assert back.connect() == 0, "once resumed the same certificate connects again"
    finally:
        back.close()


def test_a_policy_change_applies_to_live_sessions(broker, world, admin):
    dev, sensor = sensor_session(broker, world)
    try:
        assert sensor.subscribe("devices/%s/status" % dev.id) == SUBACK_FAILURE
        # A direct policy on the device: authd announces policy_changed.
        r = admin.put("/v1/policies/e2e-status-" + dev.id, {"statements": [
            {"effect": "allow", "actions": ["subscribe", "receive"],
             "topics": ["devices/${device.id}/status"]}]})
        assert r.status in (200, 201), r
        r = admin.patch("/v1/devices/" + dev.id, {"policies": ["e2e-status-" + dev.id]})
        assert r.status == 200, r
        deadline = time.monotonic() + 3
        granted = SUBACK_FAILURE
        while time.monotonic() < deadline and granted == SUBACK_FAILURE:
            time.sleep(0.1)
            granted = sensor.subscribe("devices/%s/status" % dev.id)
        assert granted == 1, "the new statement is used without reconnecting"
    finally:
        sensor.close()


# ------------------------------------------------ tokens and secrets ----

def test_a_token_bound_to_a_certificate_is_refused_from_another_certificate(broker, world):
    owner, thief = world.cert_device(), world.cert_device()
    token = world.token(owner)
    stolen = Client(broker, "tls", owner.id, username=owner.id, password=token,
                    tls_device=thief)
    assert stolen.connect() == CONNACK_NOT_AUTHORIZED, (
        "RFC 8705: a bound token presented with another certificate is refused")
    own = Client(broker, "tls", owner.id, username=owner.id, password=token,
                 tls_device=owner)
    try:
        assert own.connect() == 0, "the same token with its own certificate connects"
    finally:
        own.close()


def test_a_device_secret_works_on_the_plain_listener_and_a_wrong_one_does_not(broker, world):
    did, secret = world.secret_device("dashboards")
    c = Client(broker, "plain", did, username=did, password=secret)
    try:
        assert c.connect() == 0, "username = device id, password = its secret"
        assert c.subscribe("devices/+/telemetry/#") == 1, "and its policy applies"
    finally:
        c.close()
    bad = Client(broker, "plain", did + "-2", username=did, password=secret + "x")
    assert bad.connect() == CONNACK_NOT_AUTHORIZED, "a wrong secret is refused"
    anon = Client(broker, "plain", did + "-3")
    assert anon.connect() == CONNACK_NOT_AUTHORIZED, "no credential, no session"


def test_a_token_works_on_the_websockets_listener_within_its_scope(broker, world):
    dev = world.cert_device()
    token = world.token(dev, scope="publish:devices/%s/telemetry/#" % dev.id)
    # One connection, one identity: a username other than the token's
    # device is refused; the device's own id (or none) is accepted.
    other = Client(broker, "ws", dev.id + "-ws2", username="anything", password=token)
    try:
        assert other.connect() == CONNACK_NOT_AUTHORIZED, (
            "a token of one device under another username is refused")
    finally:
        other.close()
    ws = Client(broker, "ws", dev.id + "-ws", username=dev.id, password=token)
    _, console = console_session(broker, world)
    try:
        assert ws.connect() == 0, "a token as the password opens the websockets listener"
        assert console.subscribe("devices/+/telemetry/#") == 1
        ws.publish("devices/%s/telemetry/t" % dev.id, b"ws")
        assert console.next_message(5) == ("devices/%s/telemetry/t" % dev.id, b"ws"), (
            "a publish inside the token's scope is delivered")
        assert ws.subscribe("devices/%s/cmd/+" % dev.id) == SUBACK_FAILURE, (
            "the policy allows it but the token's scope does not: scope ∩ policy")
    finally:
        ws.close()
        console.close()


def test_revoking_a_token_disconnects_the_session_that_used_it(broker, world, admin):
    dev = world.cert_device()
    token = world.token(dev)
    ws = Client(broker, "ws", dev.id + "-ws", username=dev.id, password=token)
    try:
        assert ws.connect() == 0
        t0 = time.monotonic()
        r = admin.post("/v1/tokens/revoke", {"jti": jwt_claims(token)["jti"]})
        assert r.status == 200, "POST /v1/tokens/revoke: %r" % r
        gone = ws.wait_disconnected(5)
        assert gone is not None and gone - t0 <= 1.0, (
            "the token's session ends within 1 s of its revocation (%r)" % (gone and gone - t0))
    finally:
        ws.close()
    again = Client(broker, "ws", dev.id + "-ws2", username=dev.id, password=token)
    assert again.connect() == CONNACK_NOT_AUTHORIZED, "a revoked token opens nothing"


# ------------------------------------------- use_identity_as_username ----

def test_with_identity_as_username_the_certificate_is_checked_at_the_first_acl_check(
        broker, world):
    dev = world.cert_device()
    c = Client(broker, "tls-id", dev.id, device=dev)
    _, console = console_session(broker, world)
    try:
        assert c.connect() == 0, "mosquitto accepts the CONNECT without asking the plugin"
        assert c.subscribe("devices/%s/cmd/+" % dev.id) == 1, "its policy applies"
        assert c.subscribe("devices/%s/cmd/#" % dev.id) == SUBACK_FAILURE
        console.publish("devices/%s/cmd/ping" % dev.id, b"1")
        assert c.next_message(5) == ("devices/%s/cmd/ping" % dev.id, b"1")
    finally:
        c.close()
        console.close()


def test_with_identity_as_username_a_revoked_device_is_refused_and_disconnected(
        broker, world, admin):
    dev = world.cert_device()
    r = admin.post("/v1/devices/%s/revoke" % dev.id, {"reason": "keyCompromise"})
    assert r.status == 200, r
    c = Client(broker, "tls-id", dev.id, device=dev)
    try:
        assert c.connect() == 0, "TLS and CONNECT succeed: mosquitto reads no CRL"
        t0 = time.monotonic()
        assert c.subscribe("devices/%s/cmd/+" % dev.id) == SUBACK_FAILURE, (
            "the first ACL check asks authd, which refuses the revoked certificate")
        gone = c.wait_disconnected(5)
        assert gone is not None and gone - t0 <= 1.0, (
            "and the client is disconnected right after (%r)" % (gone and gone - t0))
    finally:
        c.close()
