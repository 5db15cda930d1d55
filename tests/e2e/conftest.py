"""Fixtures for the end-to-end suite: a real authd (fresh data dir, free
loopback ports), the policies of docs/policies.md, devices enrolled by CSR with
the openssl CLI, a broker certificate issued by authd, and a real
mosquitto loading authd_mosquitto.so with three listeners: TLS with
require_certificate, plain MQTT with username/password, and websockets.

Environment (set by meson): AUTHD_BIN, AUTHD_PLUGIN (the .so), MOSQUITTO
(default /usr/sbin/mosquitto); AUTHD_SANITIZED=1 in the ASan setup, where
the instrumented plugin is loaded into the uninstrumented broker with
libasan preloaded."""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
sys.path.insert(0, HERE)

from authd_harness import Api, Authd, authd_bin  # noqa: E402
from mqtt_env import Broker, World  # noqa: E402


def _plugin_path():
    path = os.environ.get("AUTHD_PLUGIN")
    if path:
        return path
    repo = os.path.dirname(os.path.dirname(HERE))
    for build in sorted(os.listdir(repo)):
        cand = os.path.join(repo, build, "clients", "mosquitto", "authd_mosquitto.so")
        if build.startswith("build") and os.path.exists(cand):
            return cand
    pytest.skip("AUTHD_PLUGIN is not set and no build*/ has authd_mosquitto.so")


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="authd-e2e-")
    yield d
    # AUTHD_E2E_KEEP=1 keeps the configs, certificates and broker log.
    if os.environ.get("AUTHD_E2E_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def authd(workdir):
    d = Authd(os.path.join(workdir, "data"), authd_bin())
    d.start()
    yield d
    try:
        d.stop_and_check()
    finally:
        d.cleanup_logs()


@pytest.fixture(scope="session")
def admin(authd):
    return Api(authd, authd.admin_key)


@pytest.fixture(scope="session")
def world(authd, admin, workdir):
    """Policies, groups and the enrollment every test draws devices from."""
    return World(authd, admin, os.path.join(workdir, "pki"))


@pytest.fixture(scope="session")
def broker(world, workdir):
    mosquitto = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
    if not os.access(mosquitto, os.X_OK):
        pytest.skip("mosquitto is not installed (%s)" % mosquitto)
    b = Broker(mosquitto, _plugin_path(), world, os.path.join(workdir, "broker"))
    b.start()
    yield b
    b.stop_and_check()


@pytest.fixture(autouse=True)
def _broker_still_alive(request):
    """A broker crash (or a sanitizer report from the plugin) is charged
    to the test during which it happened."""
    if "broker" not in request.fixturenames:
        yield
        return
    b = request.getfixturevalue("broker")
    seen = len(b.log())
    yield
    b.check_alive(since=seen)
