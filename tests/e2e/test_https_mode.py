"""The plugin talking to authd's main HTTPS listener instead of the check
listener: the server certificate is verified against plugin_opt_cacert
and every call (check and events) carries the broker API key."""

import os
import time

import pytest

from mqtt_env import CONNACK_NOT_AUTHORIZED, Broker, Client


@pytest.fixture
def https_broker(authd, admin, world, workdir):
    r = admin.post("/v1/apikeys", {"name": "e2e-broker", "role": "broker"})
    assert r.status == 201, "POST /v1/apikeys: %r" % r
    url = "https://127.0.0.1:%d" % authd.https_port
    b = Broker(os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto"),
               os.environ.get("AUTHD_PLUGIN") or pytest.skip("AUTHD_PLUGIN is not set"),
               world, os.path.join(workdir, "https-broker"),
               plugin_opts=["plugin_opt_url " + url,
                            "plugin_opt_cacert " + world.chain_path,
                            "plugin_opt_key " + r.json["key"]])
    b.start()
    yield b
    b.stop_and_check()


def test_over_https_with_a_broker_key_devices_are_checked_and_revocations_arrive(
        https_broker, world, admin):
    dev = world.cert_device()
    c = Client(https_broker, "tls", dev.id, device=dev)
    try:
        assert c.connect() == 0, "the connect check works over HTTPS with the broker key"
        assert c.subscribe("devices/%s/cmd/+" % dev.id) == 1
        t0 = time.monotonic()
        assert admin.post("/v1/devices/%s/revoke" % dev.id, {}).status == 200
        gone = c.wait_disconnected(5)
        assert gone is not None and gone - t0 <= 1.0, (
            "the event stream over HTTPS delivers the revocation (%r)" % (gone and gone - t0))
    finally:
        c.close()
    assert Client(https_broker, "tls", dev.id, device=dev).connect() == CONNACK_NOT_AUTHORIZED
