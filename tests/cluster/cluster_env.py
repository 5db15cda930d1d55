"""Several authd nodes on one PostgreSQL database, and haproxy in front of
them: a throwaway PostgreSQL 15 cluster (scripts/pg_test_server.sh), node
1 initialised with `authd init --store`, the others prepared with `authd
join --from`, every node on its own loopback ports, and haproxy (TCP mode,
round robin, health-checked on /readyz) started in the foreground.

Shared by the cluster suite (tests/cluster) and the cluster benchmark
(tests/bench/bench_cluster.py). The daemon itself is driven by the
integration harness (tests/integration/authd_harness.py)."""

import csv
import io
import os
import shutil
import stat
import subprocess
import tempfile
import time

from authd_harness import (Authd, authd_bin, free_ports, http_request, run)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PG_SCRIPT = os.environ.get("PG_TEST_SERVER") or os.path.join(REPO, "scripts", "pg_test_server.sh")
PGBIN = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")


def haproxy_bin():
    for path in (os.environ.get("HAPROXY"), shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if path and os.access(path, os.X_OK):
            return path
    return None


def missing_tools():
    """What this environment lacks to run a cluster (empty when ready)."""
    missing = []
    if not os.access(os.path.join(PGBIN, "pg_ctl"), os.X_OK):
        missing.append("postgresql-15 (%s/pg_ctl)" % PGBIN)
    if not os.access(PG_SCRIPT, os.X_OK):
        missing.append(PG_SCRIPT)
    if haproxy_bin() is None:
        missing.append("haproxy")
    return missing


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred until it returns a true value (returned) or timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


# ---------------------------------------------------------- PostgreSQL ----

class PgServer:
    """A throwaway PostgreSQL 15 cluster in its own directory, through
    scripts/pg_test_server.sh; kill() and restart() drive pg_ctl directly
    (an immediate stop is a crash: no checkpoint, clients cut)."""

    def __init__(self, base=None):
        # As root the server runs as `postgres`, which must reach the
        # directory: mkdtemp's 0700 parent is opened to traversal only.
        self.parent = tempfile.mkdtemp(prefix="authd-pg-", dir=base)
        os.chmod(self.parent, stat.S_IRWXU | stat.S_IXGRP | stat.S_IXOTH)
        self.dir = os.path.join(self.parent, "pg")
        self.url = None

    def start(self):
        p = run([PG_SCRIPT, "start", self.dir], timeout=120)
        self.url = p.stdout.strip().splitlines()[-1]
        return self

    def createdb(self, name):
        p = run([PG_SCRIPT, "createdb", self.dir, name], timeout=60)
        return p.stdout.strip().splitlines()[-1]

    def _pg_ctl(self, *args, check=True):
        cmd = [os.path.join(PGBIN, "pg_ctl"), "-D", os.path.join(self.dir, "data")] + list(args)
        if os.getuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return run(cmd, check=check, timeout=120)

    def kill(self):
        """pg_ctl stop -m immediate: every backend dies at once, as in a
        crash or a lost machine; the next start runs crash recovery."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def restart(self):
        """Starts the stopped server again with the options it was first
        started with (pg_ctl restart reads them from postmaster.opts), so
        it comes back on the same port."""
        self._pg_ctl("-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60", "restart")

    def stop(self):
        if os.path.isdir(self.dir):
            run([PG_SCRIPT, "stop", self.dir], check=False, timeout=120)
        shutil.rmtree(self.parent, ignore_errors=True)


# --------------------------------------------------------------- nodes ----

def init_node(data_dir, store_url, binary=None):
    """authd init --data DIR --store URL: the shared database's first node."""
    run([binary or authd_bin(), "init", "--data", data_dir, "--store", store_url], timeout=120)


def join_node(data_dir, store_url, from_dir, binary=None):
    """authd join: another node from an existing node's data dir."""
    run([binary or authd_bin(), "join", "--data", data_dir, "--store", store_url,
         "--from", from_dir], timeout=120)


def make_node(data_dir, store_url=None, binary=None):
    """An Authd on fixed ports (so that it comes back on the same ones after
    a kill and haproxy keeps finding it), serving store_url when given."""
    args = ["--store", store_url] if store_url else []
    return Authd(data_dir, binary, extra_args=args, ports=tuple(free_ports(3)))


def pg_nodes(pg, base, n, dbname, binary=None):
    """n nodes on a new database of pg: node 1 by init, the rest by join.
    Returned unstarted."""
    url = pg.createdb(dbname)
    nodes = []
    for i in range(n):
        data = os.path.join(base, "node%d" % (i + 1))
        if i == 0:
            init_node(data, url, binary)
        else:
            join_node(data, url, nodes[0].data, binary)
        nodes.append(make_node(data, url, binary))
    return url, nodes


def readyz(node, timeout=3):
    """The status of GET /readyz on node's plain listener, or None when it
    does not answer."""
    try:
        return http_request("127.0.0.1", node.http_port, "GET", "/readyz", timeout=timeout).status
    except OSError:
        return None


# ------------------------------------------------------------- haproxy ----

class Haproxy:
    """haproxy -db (foreground, no daemon, no system service) in TCP mode,
    round robin, in front of the nodes' HTTPS, plain HTTP and check
    listeners. A node is taken out after two failed GET /readyz (plain
    listener) 100 ms apart and put back after two good ones."""

    LISTENERS = ("https", "http", "check")

    def __init__(self, nodes, workdir):
        self.nodes = nodes
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.https_port, self.http_port, self.check_port, self.stats_port = free_ports(4)
        self.conf = os.path.join(workdir, "haproxy.cfg")
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.proc = None
        self._log = None

    def config(self):
        ports = {"https": self.https_port, "http": self.http_port, "check": self.check_port}
        lines = [
            "global",
            "  maxconn 4096",
            "defaults",
            "  mode tcp",
            "  timeout connect 1s",
            "  timeout client 120s",
            "  timeout server 120s",
            "  timeout check 1s",
            # A node that refuses the connection (killed, not yet marked
            # down) costs a retry on another node, not a failed request.
            "  retries 2",
            "  option redispatch",
            "",
            "frontend stats",
            "  mode http",
            "  bind 127.0.0.1:%d" % self.stats_port,
            "  stats enable",
            "  stats uri /stats",
        ]
        for name in self.LISTENERS:
            lines += [
                "",
                "frontend %s_in" % name,
                "  bind 127.0.0.1:%d" % ports[name],
                "  default_backend %s_nodes" % name,
                "backend %s_nodes" % name,
                "  balance roundrobin",
                "  option httpchk GET /readyz",
                "  http-check expect status 200",
                "  default-server inter 100 fastinter 100 downinter 200 fall 2 rise 2",
            ]
            for i, n in enumerate(self.nodes):
                port = {"https": n.https_port, "http": n.http_port, "check": n.check_port}[name]
                lines.append("  server node%d 127.0.0.1:%d check port %d" % (
                    i + 1, port, n.http_port))
        return "\n".join(lines) + "\n"

    def start(self, timeout=30):
        with open(self.conf, "w") as f:
            f.write(self.config())
        run([haproxy_bin(), "-c", "-f", self.conf])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([haproxy_bin(), "-f", self.conf, "-db"],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log)
        self.wait_states({i + 1: "UP" for i in range(len(self.nodes))}, timeout)
        return self

    def states(self):
        """{(backend, server): "UP"|"DOWN"|...} from the stats CSV."""
        if self.proc.poll() is not None:
            raise AssertionError("haproxy exited with %d:\n%s" % (self.proc.returncode,
                                                                   self.log()[-4000:]))
        try:
            r = http_request("127.0.0.1", self.stats_port, "GET", "/stats;csv", timeout=2)
        except OSError:
            return {}
        if r.status != 200:
            return {}
        rows = csv.reader(io.StringIO(r.text.lstrip("# ")))
        header = next(rows)
        px, sv, st = header.index("pxname"), header.index("svname"), header.index("status")
        return {(row[px], row[sv]): row[st].split(" ")[0] for row in rows
                if len(row) > st and row[sv] not in ("FRONTEND", "BACKEND")}

    def wait_states(self, want, timeout=15):
        """Waits until every backend sees node i in state want[i]."""
        def ok():
            s = self.states()
            return all(s.get(("%s_nodes" % b, "node%d" % i)) == st
                       for b in self.LISTENERS for i, st in want.items())
        wait_until(ok, timeout, "haproxy to see %r" % (want,))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
