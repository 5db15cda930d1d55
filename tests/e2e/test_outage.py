"""The broker while authd is down: connected clients keep the grants they
were given (decided locally, no HTTP per message), new connections are
refused (fail closed), the outage is logged once, and everything comes
back when authd does. Uses its own authd and broker, since it stops
authd."""

import os
import time

import pytest

from authd_harness import Api, Authd, authd_bin
from mqtt_env import (CONNACK_NOT_AUTHORIZED, Broker, Client, World, console_session,
                      sensor_session)


@pytest.fixture
def own(workdir):
    base = os.path.join(workdir, "outage")
    os.makedirs(base, exist_ok=True)
    daemons = [Authd(os.path.join(base, "data"), authd_bin()).start()]
    world = World(daemons[0], Api(daemons[0], daemons[0].admin_key),
                  os.path.join(base, "pki"))
    b = Broker(os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto"),
               os.environ.get("AUTHD_PLUGIN") or pytest.skip("AUTHD_PLUGIN is not set"),
               world, os.path.join(base, "broker"))
    b.start()
    yield daemons, world, b
    try:
        b.stop_and_check()
    finally:
        for d in daemons:
            if d.proc and d.proc.poll() is None:
                d.stop_and_check()
            d.cleanup_logs()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_while_authd_is_down_sessions_keep_their_grants_and_new_clients_are_refused(own):
    daemons, world, broker = own
    authd = daemons[0]
    dev, sensor = sensor_session(broker, world)
    _, console = console_session(broker, world)
    latecomer = world.cert_device()
    try:
        assert console.subscribe("devices/+/telemetry/#") == 1
        ports = (authd.http_port, authd.https_port, authd.check_port)
        authd.stop_and_check()
        wait_for(lambda: "event stream lost" in broker.log(), 5, "the plugin to notice")

        sensor.publish("devices/%s/telemetry/t" % dev.id, b"during")
        sensor.publish("devices/%s/cmd/x" % dev.id, b"still-denied")
        got = console.drain(1.0)
        assert got == [("devices/%s/telemetry/t" % dev.id, b"during")], (
            "cached grants keep deciding, both ways, without authd: %r" % got)

        for i in range(3):
            c = Client(broker, "tls", latecomer.id, device=latecomer)
            assert c.connect() == CONNACK_NOT_AUTHORIZED, (
                "without authd a new connection cannot be checked: refused (fail closed)")
        assert broker.count("unreachable") == 1, (
            "the outage is logged once, not per refused client:\n" + broker.log()[-3000:])

        back = Authd(authd.data, authd_bin(), ports=ports).start()
        daemons.append(back)
        wait_for(lambda: "reachable again" in broker.log(), 10, "the plugin to see authd back")
        c = Client(broker, "tls", latecomer.id, device=latecomer)
        try:
            assert c.connect() == 0, "once authd is back the same device connects"
        finally:
            c.close()
    finally:
        sensor.close()
        console.close()
