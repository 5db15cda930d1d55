"""Abuse limits on credential checks (docs/api.md §3): a flood of wrong device
secrets, API keys or enrollment tokens is answered 429 with Retry-After
(the check and compat endpoints: a deny with reason "rate_limited"), the
daemon's memory stays bounded (argon2id's 19 MiB per run is mapped and
unmapped, and at most argon2_parallel runs at once), and other devices'
checks keep answering fast. Each test runs its own daemon."""

import concurrent.futures
import http.client
import json
import multiprocessing
import statistics
import threading
import time

from authd_harness import basic, connect_group, secret_device

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MIB = 1024 * 1024


class Answer:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.raw = raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<Answer %d %r>" % (self.status, self.raw[:300])


def request(port, method, path, body=None, headers=None, source="127.0.0.1",
            conn=None):
    """One request from a chosen loopback source address; reuses conn if
    given (keep-alive)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60,
                                          source_address=(source, 0))
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Answer(r.status, r.getheaders(), r.read())
    finally:
        if own:
            conn.close()


def proc_status(d, field):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no %s in /proc/%d/status" % (field, d.proc.pid))


def check_connect(port, device, secret, conn=None):
    return request(port, "POST", "/v1/check",
                   {"action": "connect", "username": device,
                    "client_id": device, "password": secret}, conn=conn)


def test_concurrent_wrong_secrets_at_token_are_limited_and_memory_stays_bounded(spawn_authd):
    d = spawn_authd()
    admin = d.api(d.admin_key)
    group = connect_group(admin, "abuse-")
    devices = [secret_device(admin, group, "abuse-") for _ in range(8)]
    good_id, good_secret = secret_device(admin, group, "abuse-")
    rss_before = proc_status(d, "VmRSS")

    def attack(i):
        dev = devices[i % len(devices)][0]
        return [request(d.http_port, "POST", "/v1/token",
                        "grant_type=client_credentials",
                        headers=dict(FORM, **basic(dev, "wrong-%d-%d" % (i, k))))
                for k in range(3)]

    # 96 attackers at once, each on its own connection (a thread each on
    # the main listener), three wrong secrets apiece.
    with concurrent.futures.ThreadPoolExecutor(96) as ex:
        answers = [a for batch in ex.map(attack, range(96)) for a in batch]
    grown = proc_status(d, "VmHWM") - rss_before
    assert grown < 100 * MIB, (
        "a flood of wrong secrets must not raise memory without bound: the "
        "peak grew by %d MiB" % (grown // MIB))
    assert {a.status for a in answers} <= {401, 429}, {a.status for a in answers}
    limited = [a for a in answers if a.status == 429]
    assert limited, "a flood from one address is answered 429 at some point"
    for a in limited:
        assert int(a.headers.get("retry-after", "0")) >= 1, (
            "429 says when to come back: %r" % a.headers)
        assert a.json and a.json.get("error") == "rate_limited" and \
            a.json.get("error_description"), (
                "/v1/token answers in OAuth 2.0's error form: %r" % a)
    # The good device, from another address, still gets its token.
    r = request(d.http_port, "POST", "/v1/token", "grant_type=client_credentials",
                headers=dict(FORM, **basic(good_id, good_secret)), source="127.0.0.2")
    assert r.status == 200 and r.json.get("access_token"), r
    metrics = request(d.http_port, "GET", "/metrics").raw.decode()
    assert 'authd_rate_limited_total{what="source"}' in metrics, metrics[-2000:]


def attacker_process(port, victims, index, stop, found):
    """Four threads guessing secrets for the victims on keep-alive
    connections until stop; puts the set of deny reasons seen."""
    reasons = set()

    def run(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = 0
        while not stop.is_set() and n < 5000:
            victim = victims[(i * 7 + n) % len(victims)]
            a = check_connect(port, victim, "guess-%d-%d" % (i, n), conn)
            reasons.add(a.json.get("reason") if a.json else a.status)
            n += 1
        conn.close()

    threads = [threading.Thread(target=run, args=(index * 4 + i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found.put(reasons)


def test_a_good_device_checks_fast_while_others_guess_secrets(spawn_authd):
    d = spawn_authd()
    admin = d.api(d.admin_key)
    group = connect_group(admin, "abuse-")
    victims = [secret_device(admin, group, "abuse-")[0] for _ in range(16)]
    good_id, good_secret = secret_device(admin, group, "abuse-")
    r = check_connect(d.check_port, good_id, good_secret)
    assert r.status == 200 and r.json["result"] == "allow", r

    # The attackers run in other processes, so that their Python threads
    # cannot delay the measuring thread (the GIL) and skew its latency.
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    found = ctx.Queue()
    procs = [ctx.Process(target=attacker_process,
                         args=(d.check_port, victims, i, stop, found))
             for i in range(2)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.5)
        lat = []
        conn = http.client.HTTPConnection("127.0.0.1", d.check_port, timeout=60)
        for _ in range(60):
            t0 = time.monotonic()
            a = check_connect(d.check_port, good_id, good_secret, conn)
            lat.append(time.monotonic() - t0)
            assert a.status == 200 and a.json["result"] == "allow", a
            time.sleep(0.03)
        conn.close()
    finally:
        stop.set()
        reasons = set()
        for p in procs:
            reasons |= found.get(timeout=60)
        for p in procs:
            p.join(30)
    lat.sort()
    med, p90 = statistics.median(lat), lat[int(len(lat) * 0.9)]
    # argon2id runs on the secret lane's own workers, never on the
    # connection threads that answer the other devices: neither the
    # typical check nor the slowest one waits for an attacker's run.
    # Measured here: with argon2 on the connection threads the slowest of
    # 60 checks took 68-464 ms (p90 up to 101 ms); on the lane 6-9 ms.
    assert med < 0.030 and lat[-1] < 0.060, (
        "eight attackers guessing secrets must not slow other devices' "
        "checks: median %.1f ms, p90 %.1f ms, max %.1f ms"
        % (med * 1000, p90 * 1000, lat[-1] * 1000))
    assert reasons <= {"invalid_credential", "rate_limited"}, reasons


def test_a_device_backs_off_on_check_and_compat_endpoints(spawn_authd):
    d = spawn_authd(extra_args=["--rate-fail-burst", "3", "--rate-backoff-max", "2"])
    admin = d.api(d.admin_key)
    group = connect_group(admin, "abuse-")
    did, secret = secret_device(admin, group, "abuse-")
    got = [check_connect(d.check_port, did, "wrong").json["reason"] for _ in range(3)]
    assert got == ["invalid_credential"] * 3, got
    a = check_connect(d.check_port, did, "wrong")
    assert a.json["result"] == "deny" and a.json["reason"] == "rate_limited", (
        "after rate_fail_burst failures the device backs off: %r" % a)
    a = request(d.check_port, "POST", "/compat/mosquitto-go-auth/user",
                {"username": did, "password": "wrong", "clientid": did})
    assert a.status == 403 and a.json == {"ok": False, "error": "rate_limited"}, a
    time.sleep(2.2)
    a = check_connect(d.check_port, did, secret)
    assert a.json["result"] == "allow", (
        "the block ends (rate_backoff_max 2 s) and the right secret works: %r" % a)


def test_a_device_backing_off_gets_429_with_retry_after_at_token(spawn_authd):
    """/v1/token speaks OAuth: a device whose secret is being guessed is
    told to come back later (429, Retry-After), not that its secret is
    wrong, even from a source address that has not failed before."""
    d = spawn_authd(extra_args=["--rate-fail-burst", "3"])
    admin = d.api(d.admin_key)
    group = connect_group(admin, "abuse-")
    did, secret = secret_device(admin, group, "abuse-")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for _ in range(3):
        a = request(d.http_port, "POST", "/v1/token", "grant_type=client_credentials",
                    headers=dict(form, **basic(did, "wrong")))
        assert a.status == 401, a
    a = request(d.http_port, "POST", "/v1/token", "grant_type=client_credentials",
                headers=dict(form, **basic(did, secret)), source="127.0.0.2")
    assert a.status == 429 and int(a.headers.get("retry-after", "0")) >= 1, a
    assert a.json.get("error") == "rate_limited" and a.json.get("error_description"), (
        "OAuth 2.0 error form: %r" % a)


def test_wrong_api_keys_and_enrollment_tokens_back_off_per_source(spawn_authd):
    d = spawn_authd(extra_args=["--rate-source-burst", "5"])
    key = d.admin_key
    seen = []
    for i in range(10):
        a = request(d.http_port, "GET", "/v1/devices",
                    headers={"Authorization": "Bearer ak_wrong%d" % i})
        seen.append(a.status)
    assert seen[:4] == [401] * 4, seen
    assert seen[-1] == 429, "wrong API keys from one address back off: %r" % seen
    a = request(d.http_port, "GET", "/v1/devices",
                headers={"Authorization": "Bearer ak_wrong"})
    assert a.status == 429 and int(a.headers["retry-after"]) >= 1, a
    assert a.json["error"]["code"] == "rate_limited" and a.json["error"]["message"], a
    a = request(d.http_port, "GET", "/v1/devices",
                headers={"Authorization": "Bearer " + key}, source="127.0.0.2")
    assert a.status == 200, "another address is not affected: %r" % a
    seen = []
    for i in range(10):
        a = request(d.http_port, "POST", "/v1/enroll", {"csr": "x"},
                    headers={"Authorization": "Bearer enr_wrong%d" % i},
                    source="127.0.0.3")
        seen.append(a.status)
    assert seen[:4] == [401] * 4 and seen[-1] == 429, (
        "wrong enrollment tokens back off too: %r" % seen)
    a = request(d.http_port, "GET", "/healthz", source="127.0.0.3")
    assert a.status == 200, "public endpoints stay open to a backing-off address"
