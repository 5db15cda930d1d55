"""The plugin with several authd nodes in plugin_opt_url: when the node it
talks to dies (SIGKILL), the next CONNECT is checked by another node
within a second, and the event stream reconnects to another node with
Last-Event-ID, so that an event it had not yet heard is still acted on.

Without the cluster mode two daemons answer the same when the second
runs on a copy of the first one's data dir (same CA, devices and
policies at the moment of the copy; its own ports and lock). Event ids
are per process today; the test gives both nodes the same first event,
as a shared event log would, so that "resume after id 1" means the same
on both."""

import os
import socket
import subprocess
import tempfile
import time

import pytest

from authd_harness import Api, Authd, authd_bin
from mqtt_env import CONNACK_NOT_AUTHORIZED, Broker, Client, World


@pytest.fixture
def cluster(workdir):
    """(a, b, world, make_broker): two nodes on copies of one data dir,
    with the devices the test needs enrolled before the copy."""
    base = tempfile.mkdtemp(prefix="failover-", dir=workdir)
    a = Authd(os.path.join(base, "data-a"), authd_bin()).start()
    daemons = [a]
    brokers = []
    world = World(a, Api(a, a.admin_key), os.path.join(base, "pki"))
    devices = {name: world.cert_device() for name in ("gone", "quiet", "late", "later")}
    a.stop_and_check()
    subprocess.run(["cp", "-a", a.data, os.path.join(base, "data-b")], check=True)
    a.start()
    b = Authd(os.path.join(base, "data-b"), authd_bin()).start()
    daemons.append(b)

    def make_broker(spec):
        br = Broker(os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto"),
                    os.environ.get("AUTHD_PLUGIN") or pytest.skip("AUTHD_PLUGIN is not set"),
                    world, os.path.join(base, "broker-%d" % len(brokers)),
                    plugin_opts=["plugin_opt_url " + spec])
        brokers.append(br)
        br.start()
        return br

    yield a, b, world, devices, make_broker
    try:
        for br in brokers:
            br.stop_and_check()
    finally:
        for d in daemons:
            if d.proc and d.proc.poll() is None:
                d.stop_and_check()
            d.cleanup_logs()


class Blackhole:
    """A port whose SYNs are dropped (a listening socket with a full
    backlog): how a node whose machine is gone looks. Connects time out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fill = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fill.append(c)
        time.sleep(0.1)

    def close(self):
        for c in self.fill:
            c.close()
        self.sock.close()


def check_url(d):
    return "http://127.0.0.1:%d" % d.check_port


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def test_when_the_first_node_dies_checks_and_the_event_stream_move_to_the_second(cluster):
    a, b, world, dev, make_broker = cluster
    admin_a, admin_b = Api(a, a.admin_key), Api(b, b.admin_key)
    broker = make_broker("%s,%s" % (check_url(a), check_url(b)))
    assert "following events at %s/v1/events" % check_url(a) in broker.log(), (
        "the stream starts at the first node:\n" + broker.log()[-2000:])

    gone = Client(broker, "tls", dev["gone"].id, device=dev["gone"])
    quiet = Client(broker, "tls", dev["quiet"].id, device=dev["quiet"])
    late = Client(broker, "tls", dev["late"].id, device=dev["late"])
    try:
        assert gone.connect() == 0 and quiet.connect() == 0, "node a allows both"
        # Event 1 on node a: the plugin hears it (and acts on it).
        assert admin_a.post("/v1/devices/%s/revoke" % dev["gone"].id, {}).status == 200
        assert gone.wait_disconnected(5) is not None, "the plugin follows node a's events"
        # Node b gets the same event 1 and then event 2, which the plugin
        # has not heard: with a shared event log this is what a change
        # made on another node looks like.
        assert admin_b.post("/v1/devices/%s/revoke" % dev["gone"].id, {}).status == 200
        assert admin_b.patch("/v1/devices/" + dev["quiet"].id, {"status": "suspended"}).status == 200
        time.sleep(0.3)
        assert quiet.disconnected_at is None, "nothing reaches the plugin from node b yet"

        a.kill9()
        t0 = time.monotonic()
        assert late.connect() == 0, (
            "the CONNECT after node a died is checked by node b:\n" + broker.log()[-3000:])
        took = time.monotonic() - t0
        assert took < 1.0, "the check moved to node b in %.2fs" % took

        # The stream reconnects to node b with Last-Event-ID: 1 and gets
        # event 2, which disconnects the quiet (idle) session. Without the
        # header node b would send only new events, and the quiet client
        # would stay connected until its next publish.
        gone_at = quiet.wait_disconnected(5)
        assert gone_at is not None, (
            "the event missed while switching nodes was replayed by node b:\n"
            + broker.log()[-3000:])
        assert gone_at - t0 < 2.0, "within %.2fs of the kill" % (gone_at - t0)
        wait_for(lambda: "following events at %s/v1/events" % check_url(b) in broker.log(),
                 5, "the log to name node b as the event source")
        assert broker.count("checks now go to %s" % check_url(b)) == 1, (
            "the switch of the check node is logged once:\n" + broker.log()[-3000:])
        assert "unreachable" not in broker.log(), (
            "a failover is not an outage: no connection was refused")
    finally:
        for c in (gone, quiet, late):
            c.close()
    again = Client(broker, "tls", dev["quiet"].id, device=dev["quiet"])
    assert again.connect() == CONNACK_NOT_AUTHORIZED, "node b knows it is suspended"


def test_nodes_may_be_separated_by_spaces_and_a_dead_first_node_costs_little(cluster):
    a, b, world, dev, make_broker = cluster
    a.kill9()
    world.authd, world.admin = b, Api(b, b.admin_key)  # the broker's certificate
    # The old single-URL form is a list of one; spaces separate as well.
    broker = make_broker("%s %s" % (check_url(a), check_url(b)))
    assert "following events at %s/v1/events" % check_url(b) in broker.log(), (
        "the stream skips the dead node:\n" + broker.log()[-2000:])
    c = Client(broker, "tls", dev["later"].id, device=dev["later"])
    try:
        t0 = time.monotonic()
        assert c.connect() == 0, "node b answers the check:\n" + broker.log()[-3000:]
        assert time.monotonic() - t0 < 1.0, "a refused node costs no noticeable time"
    finally:
        c.close()


def test_a_first_node_that_never_answers_costs_one_short_connect_timeout(cluster):
    a, b, world, dev, make_broker = cluster
    hole = Blackhole()
    try:
        broker = make_broker("http://127.0.0.1:%d,%s" % (hole.port, check_url(b)))
        c = Client(broker, "tls", dev["later"].id, device=dev["later"])
        try:
            t0 = time.monotonic()
            assert c.connect() == 0, "node b answers:\n" + broker.log()[-3000:]
            took = time.monotonic() - t0
        finally:
            c.close()
        # plugin_opt_timeout_ms is 5000 here: without a short connect
        # timeout per node the CONNECT would wait that long on the hole.
        assert took < 1.0, "the silent node was given up quickly: %.2fs" % took
    finally:
        hole.close()
