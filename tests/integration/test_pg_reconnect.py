"""A PostgreSQL server that goes away and comes back (a crash, a
restart, a failover, a network fault) costs the clients nothing once
/readyz is 200 again: no read and no write is then answered 503 because
it was handed a pooled connection that died while it sat idle.
(PostgreSQL runs only: the daemon reaches its database through a TCP
relay here, which cuts every connection at once without a word.)"""

import re
import socket
import threading
import time

import pytest

from authd_harness import BACKEND, backend_store_url, http_request, uid

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="PostgreSQL store only")


class Relay:
    """127.0.0.1:port -> the PostgreSQL server. cut() closes every relayed
    connection at once, as a crashed server's host does; new connections
    are relayed again right away."""

    def __init__(self, host, port):
        self.upstream = (host, port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.socks = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(self.upstream)
            with self.lock:
                self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            socks, self.socks = self.socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        return len(socks) // 2

    def close(self):
        self.closed = True
        self.lsock.close()
        self.cut()


def ready(d):
    try:
        return http_request("127.0.0.1", d.http_port, "GET", "/readyz", timeout=2).status == 200
    except OSError:
        return False


def test_reads_and_writes_after_every_connection_was_cut(spawn_authd, tmp_path):
    data = str(tmp_path / "data")
    url = backend_store_url(data)
    m = re.match(r"^(postgres(?:ql)?://[^@/]*@)([^:/]+):(\d+)(/.*)$", url)
    assert m, url
    relay = Relay(m.group(2), int(m.group(3)))
    try:
        d = spawn_authd(data_dir=data, extra_args=[
            "--store", "%s127.0.0.1:%d%s" % (m.group(1), relay.port, m.group(4))])
        api = d.api(d.admin_key)
        did = uid("rc-")
        assert api.post("/v1/devices", {"id": did}).status == 201
        # Reads at once from several threads, so the pool holds several
        # idle connections.
        def reads():
            for _ in range(5):
                assert api.get("/v1/devices/" + did).status == 200
        ts = [threading.Thread(target=reads) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)

        assert relay.cut() >= 3, "the writer, the feed and pooled readers were relayed"
        # The node notices (its probe runs every second) and is ready
        # again well within the 10 s the contract allows.
        time.sleep(1.5)
        deadline = time.monotonic() + 10
        while not ready(d):
            assert time.monotonic() < deadline, "/readyz not 200 again within 10 s"
            time.sleep(0.1)

        # From several threads again: the pool hands out every idle
        # connection it holds, not just the one used last.
        got = []

        def reads_again():
            for _ in range(5):
                got.append(api.get("/v1/devices/" + did).status)
        ts = [threading.Thread(target=reads_again) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert got == [200] * 20, "reads once ready again: %r" % got
        assert api.post("/v1/devices", {"id": uid("rc-")}).status == 201
        assert api.get("/v1/devices?limit=5").status == 200
    finally:
        relay.close()
