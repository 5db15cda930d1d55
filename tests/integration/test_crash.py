"""§4 durability: "a certificate is returned only after its record is
durably committed" and "used always equals the number of certificates
issued". Sixteen clients enroll as fast as they can, the daemon is killed
with SIGKILL mid-load, restarted on the same data dir, and every
certificate any client received must be in the store, unchanged, with the
enrollment's counter matching the certificates under it. Three rounds on
the same data, so recovery after one crash is itself crash-tested."""

import http.client
import json
import random
import threading
import time

from cryptography.hazmat.primitives import serialization

from authd_harness import (bearer, create_enrollment, csr_for, new_key,
                           normalize_pem, quote)

ROUNDS = 3
CLIENTS = 16
MIN_CERTS_BEFORE_KILL = 32      # the kill only counts if load was real
MAX_WAIT_FOR_LOAD = 20.0        # seconds (slow sanitizer builds)
EXTRA_LOAD = (0.5, 1.0)         # keep loading this long after that, then kill
VERIFY_THREADS = 4


class KeepAlive:
    """One persistent HTTP/1.1 connection, reopened after a failure."""

    def __init__(self, port, timeout=30):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            return r.status, r.read()
        except Exception:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def load_then_kill(daemon, token, rnd):
    """Runs CLIENTS enrolling threads, SIGKILLs the daemon mid-load and
    returns ({serial: (device_id, pem)} received, {status: count} of
    non-201 answers, count received before the kill)."""
    received = {}
    unexpected = {}
    duplicates = []
    lock = threading.Lock()
    killed = threading.Event()
    hdrs = dict(bearer(token), **{"Content-Type": "application/json"})

    def client(t):
        key = new_key("p256")
        conn = KeepAlive(daemon.http_port)
        n = 0
        while not killed.is_set():
            n += 1
            did = "C-r%d-t%02d-%06d" % (rnd, t, n)
            csr = csr_for(key, did).public_bytes(serialization.Encoding.PEM).decode()
            try:
                status, raw = conn.request("POST", "/v1/enroll",
                                           json.dumps({"csr": csr, "device_id": did}), hdrs)
            except Exception:
                if killed.is_set():
                    break
                time.sleep(0.01)
                continue
            with lock:
                if status == 201:
                    body = json.loads(raw)
                    if body["serial"] in received:
                        duplicates.append(body["serial"])
                    received[body["serial"]] = (body["device_id"], body["certificate"])
                elif not killed.is_set():
                    unexpected[status] = unexpected.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + MAX_WAIT_FOR_LOAD
    while time.monotonic() < deadline:
        with lock:
            if len(received) >= MIN_CERTS_BEFORE_KILL:
                break
        time.sleep(0.02)
    time.sleep(random.uniform(*EXTRA_LOAD))
    with lock:
        before_kill = len(received)
    daemon.kill9()
    killed.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients hung after the kill"
    assert not duplicates, "serials handed out twice: %s" % duplicates[:5]
    return received, unexpected, before_kill


def fetch_all(daemon, admin_key, serials):
    """GET /v1/certs/{serial} for each serial over a few keep-alive
    connections; returns {serial: (status, json or None)}."""
    serials = list(serials)
    out = {}
    lock = threading.Lock()

    def worker(part):
        conn = KeepAlive(daemon.http_port)
        for s in part:
            status, raw = conn.request("GET", "/v1/certs/" + s, headers=bearer(admin_key))
            body = json.loads(raw) if status == 200 else None
            with lock:
                out[s] = (status, body)
        conn.close()

    parts = [serials[i::VERIFY_THREADS] for i in range(VERIFY_THREADS)]
    threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def verify_store(daemon, admin_key, enr_id, received):
    api = daemon.api(admin_key)
    got = fetch_all(daemon, admin_key, received)
    missing = sorted(s for s, (st, _) in got.items() if st != 200)
    assert not missing, (
        "%d of %d certificates handed out before the kill are not in the store, e.g. %s "
        "(answer %s)" % (len(missing), len(received), missing[:5], got[missing[0]][0]))
    for serial, (did, pem) in received.items():
        rec = got[serial][1]
        assert rec["device_id"] == did, "serial %s belongs to %s, got %r" % (serial, did, rec)
        assert normalize_pem(rec["pem"]) == normalize_pem(pem), (
            "the stored certificate %s differs from the one handed out" % serial)

    listed = api.list_all("/v1/certs?enrollment=" + quote(enr_id), limit=500)
    listed_serials = [c["serial"] for c in listed]
    assert len(listed_serials) == len(set(listed_serials)), "the certificate list repeats serials"
    absent = set(received) - set(listed_serials)
    assert not absent, "certificates missing from ?enrollment= listing: %s" % sorted(absent)[:5]

    r = api.get("/v1/enrollments/" + enr_id)
    assert r.status == 200, r
    assert r.json["used"] == len(listed_serials), (
        "used (%d) must equal the certificates issued under the enrollment (%d): the counter "
        "and the certificate go in one transaction" % (r.json["used"], len(listed_serials)))

    # Certificates committed but never answered (in flight at the kill)
    # must still be whole: their device exists.
    in_flight = [c for c in listed if c["serial"] not in received]
    for c in in_flight[:64]:
        d = api.get("/v1/devices/" + quote(c["device_id"]))
        assert d.status == 200, "committed certificate %s has no device %s: %r" % (
            c["serial"], c["device_id"], d)
    return len(listed_serials)


def test_certificates_handed_out_survive_sigkill_and_used_matches(spawn_authd):
    d = spawn_authd()
    admin_key = d.admin_key
    enr = create_enrollment(d.api(admin_key), max_uses=10_000_000, id_pattern="C-*",
                            expires_in=86400)
    received = {}
    report = []
    for rnd in range(ROUNDS):
        got, unexpected, before_kill = load_then_kill(d, enr["token"], rnd)
        found = d.sanitizer_reports()
        assert not found, "sanitizer report before the kill %s:\n%s" % (found, d.stderr()[-8000:])
        assert before_kill >= MIN_CERTS_BEFORE_KILL, (
            "round %d: only %d certificates before the kill; the crash test needs real load"
            % (rnd, before_kill))
        assert not unexpected, "round %d: non-201 answers under load before the kill: %r" % (
            rnd, unexpected)
        received.update(got)

        d = spawn_authd(data_dir=d.data)  # same data dir, after SIGKILL
        assert d.admin_key == admin_key
        total = verify_store(d, admin_key, enr["id"], received)
        report.append((rnd, len(got), total))
    print("crash rounds (round, received, stored under enrollment):", report)
