"""Fixtures for the cluster suite: one throwaway PostgreSQL 15, three authd
nodes on one database of it (node 1 by `authd init --store`, nodes 2 and 3
by `authd join --from` node 1's data dir), each on its own loopback ports,
and haproxy (TCP, round robin, /readyz health checks) in front of them.

Every node is judged on the way out like the integration suite's daemon
(SIGTERM exits 0, no sanitizer report); a node that dies during a test
that did not kill it fails that test and is restarted for the next.

Environment (set by meson): AUTHD_BIN, AUTHD_PLUGIN and MOSQUITTO (for
the MQTT test), PG_TEST_SERVER (default scripts/pg_test_server.sh),
HAPROXY, PGBIN (default /usr/lib/postgresql/15/bin)."""

import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "integration"))
sys.path.insert(0, os.path.join(TESTS, "e2e"))
sys.path.insert(0, HERE)

from authd_harness import SANITIZER_MARKERS, Api, authd_bin  # noqa: E402
from cluster_env import Haproxy, PgServer, missing_tools, pg_nodes  # noqa: E402

NODES = 3


class Cluster:
    def __init__(self, pg, url, nodes, lb):
        self.pg = pg
        self.url = url
        self.nodes = nodes
        self.lb = lb
        self.admin_key = nodes[0].admin_key
        # Nodes a test stopped on purpose (and restarts itself).
        self.expected_down = set()

    def node(self, i):
        """Node i, counted from 1 as in the test names."""
        return self.nodes[i - 1]

    def api(self, i):
        return Api(self.node(i), self.admin_key)


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="authd-cluster-")
    yield d
    # AUTHD_CLUSTER_KEEP=1 keeps the data dirs, configs and logs.
    if os.environ.get("AUTHD_CLUSTER_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    missing = missing_tools()
    if missing:
        pytest.skip("the cluster suite needs %s (scripts/deps.sh test)" % ", ".join(missing))
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(pg, workdir):
    binary = authd_bin()
    url, nodes = pg_nodes(pg, workdir, NODES, "authd_cluster", binary)
    lb = None
    try:
        for n in nodes:
            n.start()
        lb = Haproxy(nodes, os.path.join(workdir, "haproxy")).start()
        c = Cluster(pg, url, nodes, lb)
        yield c
    finally:
        if lb is not None:
            lb.stop()
        errors = []
        for i, n in enumerate(nodes):
            if n.proc is not None and n.proc.poll() is None:
                try:
                    n.stop_and_check()
                except AssertionError as e:
                    errors.append("node %d: %s" % (i + 1, e))
            n.cleanup_logs()
        assert not errors, "\n\n".join(errors)


@pytest.fixture(autouse=True)
def _nodes_still_alive(request):
    """A node that crashed or reported a sanitizer finding during a test
    is charged to that test, and restarted (same data dir, same ports) so
    one bug does not fail every later test."""
    if "cluster" not in request.fixturenames:
        yield
        return
    c = request.getfixturevalue("cluster")
    seen = [len(n.stderr()) for n in c.nodes]
    yield
    problems = []
    for i, n in enumerate(c.nodes):
        if (i + 1) in c.expected_down:
            continue
        new = n.stderr()[seen[i]:] if n.stderr_path else ""
        found = [m for m in SANITIZER_MARKERS if m in new]
        rc = n.proc.poll()
        if rc is not None:
            problems.append("node %d died (exit %r):\n%s" % (i + 1, rc, new[-6000:]))
            n.cleanup_logs()
            n.start()
        elif found:
            problems.append("node %d sanitizer report %s:\n%s" % (i + 1, found, new[-6000:]))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def devdir(tmp_path):
    p = tmp_path / "devices"
    p.mkdir()
    return str(p)
