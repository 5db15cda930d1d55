"""authctl with several authd URLs (docs/api.md §14, contract §11): each
request starts at the node that answered last and moves on when a node
cannot be reached, within a second; an HTTP answer, whatever its status,
is final, and a request that is not idempotent is never sent twice once it
may have reached a node.

Two real daemons answer the same without the cluster mode: the second
runs on a copy of the first one's data dir (same CA, admin key and
registry at the moment of the copy; each has its own ports and lock).
A node that dies after the request reached it is a small TCP peer here
that reads the whole request and resets the connection."""

import json
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from authd_harness import SANITIZER_MARKERS, Api, authd_bin, free_ports, uid


def authctl_bin():
    path = os.environ.get("AUTHCTL_BIN")
    if path:
        return path
    build = os.path.dirname(os.path.dirname(os.path.abspath(authd_bin())))
    return os.path.join(build, "clients", "authctl", "authctl")


def url(d):
    return "https://127.0.0.1:%d" % d.https_port


@pytest.fixture
def pair(spawn_authd, tmp_path):
    """(a, b): two daemons on copies of one data dir."""
    a = spawn_authd(str(tmp_path / "a"))
    a.stop_and_check()
    subprocess.run(["cp", "-a", a.data, str(tmp_path / "b")], check=True)
    a.start()
    b = spawn_authd(str(tmp_path / "b"))
    return a, b


@pytest.fixture
def ctl(pair):
    """ctl(*argv, env=None) -> CompletedProcess, with the pair's CA and
    admin key (the same on both) and no AUTHD_URL unless env gives one."""
    a, _ = pair
    assert os.access(authctl_bin(), os.X_OK), "authctl not built: %s" % authctl_bin()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
    base.update({"AUTHD_CACERT": os.path.join(a.data, "ca", "chain.pem"),
                 "AUTHD_KEY": a.admin_key})

    def call(*argv, env=None):
        e = dict(base)
        e.update(env or {})
        p = subprocess.run([authctl_bin()] + [str(x) for x in argv], env=e,
                           capture_output=True, text=True, timeout=120)
        found = [m for m in SANITIZER_MARKERS if m in p.stderr]
        assert not found, "authctl %s: sanitizer report:\n%s" % (argv, p.stderr)
        return p

    call.env = base
    return call


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def ok(p):
    assert p.returncode == 0, "expected success, got %d:\n%s\n%s" % (
        p.returncode, p.stdout, p.stderr)
    return p


def only_on(daemon, did):
    """Creates device did on one daemon only (the copies diverge)."""
    r = Api(daemon, daemon.admin_key).post("/v1/devices", {"id": did})
    assert r.status == 201, "POST /v1/devices: %r" % r


def exists(daemon, did):
    r = Api(daemon, daemon.admin_key).get("/v1/devices/" + did)
    assert r.status in (200, 404), "GET /v1/devices/{id}: %r" % r
    return r.status == 200


class Blackhole:
    """A port whose SYNs are dropped: a listening socket with a full
    backlog, as a node whose machine is gone looks (connect times out)."""

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


class ResettingPeer:
    """Reads each whole HTTP request and resets the connection without a
    byte of answer: a node that died after the request reached it (and
    may have applied it). Records each request line."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                    want = int(m.group(1)) if m else 0
                    while len(body) < want:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                except OSError:
                    continue
                if head:
                    self.requests.append(head.split(b"\r\n")[0].decode("latin-1"))
                # RST instead of FIN: the connection dies under the client.
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


# ------------------------------------------------------------- tests ----

def test_a_dead_first_url_costs_less_than_a_second_and_the_second_node_answers(ctl, pair):
    a, b = pair
    did = uid("fo-b-")
    only_on(b, did)
    dead = free_ports(1)[0]
    _, direct = timed(ok, ctl("--server", url(b), "device", "show", did))
    p, took = timed(ctl, "--server", "http://127.0.0.1:%d,%s" % (dead, url(b)),
                    "device", "show", did)
    ok(p)
    assert did in p.stdout, "the answer is the second node's (only it has %s)" % did
    assert took - direct < 1.0, (
        "a refused connection moves on at once: %.2fs vs %.2fs direct" % (took, direct))


def test_a_first_node_that_drops_connects_is_given_up_after_a_short_connect_timeout(ctl, pair):
    _, b = pair
    hole = Blackhole()
    try:
        _, direct = timed(ok, ctl("--server", url(b), "device", "list"))
        p, took = timed(ctl, "--server", "http://127.0.0.1:%d,%s" % (hole.port, url(b)),
                        "device", "list")
        ok(p)
        assert took - direct < 1.0, (
            "a node that never answers the TCP handshake costs one short connect "
            "timeout, not the 10 s of a single URL: %.2fs vs %.2fs" % (took, direct))
    finally:
        hole.close()


def test_the_environment_takes_a_list_separated_by_spaces_or_commas(ctl, pair):
    a, b = pair
    did = uid("fo-env-")
    only_on(b, did)
    dead = free_ports(2)
    for spec in ("http://127.0.0.1:%d %s" % (dead[0], url(b)),
                 "http://127.0.0.1:%d, http://127.0.0.1:%d,%s" % (dead[0], dead[1], url(b))):
        p = ok(ctl("device", "show", did, env={"AUTHD_URL": spec}))
        assert did in p.stdout, "AUTHD_URL=%r reaches the live node" % spec


def test_when_no_node_answers_every_url_is_named_and_the_exit_status_is_3(ctl):
    dead = free_ports(2)
    spec = ",".join("http://127.0.0.1:%d" % p for p in dead)
    p = ctl("--server", spec, "device", "list")
    assert p.returncode == 3, "unreachable everywhere exits 3: %d %s" % (p.returncode, p.stderr)
    for port in dead:
        assert "127.0.0.1:%d" % port in p.stderr, (
            "the message names each node that failed:\n" + p.stderr)


def test_a_list_with_a_bad_url_is_a_usage_error(ctl, pair):
    _, b = pair
    p = ctl("--server", "%s,ftp://127.0.0.1:1" % url(b), "device", "list")
    assert p.returncode == 2, "a typo in one URL is refused before any request: %d %s" % (
        p.returncode, p.stderr)


def test_an_error_answer_from_the_first_node_is_final_and_the_post_is_not_repeated(ctl, pair):
    a, b = pair
    did = uid("fo-dup-")
    only_on(a, did)
    p = ctl("--server", "%s,%s" % (url(a), url(b)), "device", "add", did)
    assert p.returncode == 1, (
        "the first node answered 409: that is the answer, exit 1: %d\n%s" % (
            p.returncode, p.stderr))
    assert "409" in p.stderr, "its refusal is printed: " + p.stderr
    assert not exists(b, did), (
        "a POST that a node answered must never be sent to another node")


def test_a_post_whose_connection_dies_after_sending_is_not_sent_again(ctl, pair):
    _, b = pair
    peer = ResettingPeer()
    did = uid("fo-reset-")
    try:
        p = ctl("--server", "http://127.0.0.1:%d,%s" % (peer.port, url(b)),
                "device", "add", did)
    finally:
        peer.close()
    assert peer.requests == ["POST /v1/devices HTTP/1.1"], (
        "the request reached the first node: %r" % peer.requests)
    assert p.returncode == 3, (
        "no answer to a POST that may have been applied: exit 3, not a retry "
        "elsewhere: %d\n%s" % (p.returncode, p.stderr))
    assert not exists(b, did), "the POST was not sent to the second node"


def test_a_get_whose_connection_dies_before_the_answer_moves_on(ctl, pair):
    _, b = pair
    did = uid("fo-get-")
    only_on(b, did)
    peer = ResettingPeer()
    try:
        p = ctl("--server", "http://127.0.0.1:%d,%s" % (peer.port, url(b)),
                "device", "show", did)
    finally:
        peer.close()
    assert peer.requests == ["GET /v1/devices/%s HTTP/1.1" % did], peer.requests
    ok(p)
    assert did in p.stdout, "a GET is safe to repeat: the second node answered"


def test_the_first_node_killed_mid_run_the_next_request_goes_to_the_second(ctl, pair):
    a, b = pair
    first, second = uid("fo-run1-"), uid("fo-run2-")
    # One line per request from a pipe: the test decides when each is sent.
    proc = subprocess.Popen([authctl_bin(), "--server", "%s,%s" % (url(a), url(b)),
                             "device", "import", "-", "--batch", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ctl.env, text=True)
    try:
        proc.stdin.write(json.dumps({"id": first}) + "\n")
        proc.stdin.flush()
        # Its progress line says the answer came back: killing node a
        # earlier could lose the answer to a POST it had applied, which
        # authctl must then not repeat (another test).
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "no progress from authctl within 30 s"
        line = proc.stderr.readline()
        assert line.startswith("authctl: imported 1 lines"), "progress: %r" % line
        assert exists(a, first), "the first line went to node a"
        a.kill9()
        t0 = time.monotonic()
        proc.stdin.write(json.dumps({"id": second}) + "\n")
        proc.stdin.flush()
        while not exists(b, second):
            assert time.monotonic() - t0 < 10, "the second line never reached node b"
            time.sleep(0.01)
        took = time.monotonic() - t0
        _, err = proc.communicate(timeout=60)  # closes stdin: the end of the file
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "the import finishes on the second node: %d\n%s" % (
        proc.returncode, err)
    assert not [m for m in SANITIZER_MARKERS if m in err], err
    assert took < 1.0, "the request after the kill reached node b in %.2fs" % took
    assert not exists(b, first), "the first line went to node a only (no repeat)"
