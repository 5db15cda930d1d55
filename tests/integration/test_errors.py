"""§3 errors and §10 observability: every refusal is a JSON error with the
right status, oversized and malformed input is refused without harm, and
the health, readiness and metrics endpoints answer."""

import re
import socket
import threading

import pytest

from authd_harness import assert_error, uid


def raw_exchange(port, data, timeout=20):
    """Sends raw bytes and returns everything the server answers until it
    closes or goes quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                m = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if m and len(body) >= int(m.group(1)):
                    break
        return b"".join(chunks)
    finally:
        s.close()


def status_of(raw):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", raw)
    return int(m.group(1)) if m else None


# ------------------------------------------------------- body limits ----

def test_body_over_64_kib_is_413_json(authd, admin):
    big = '{"id":"%s","attributes":{"pad":"%s"}}' % (uid("big-"), "x" * (64 * 1024 + 100))
    r = admin.post("/v1/devices", big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    r = authd.request("POST", "/v1/enroll", big, headers={"Content-Type": "application/json",
                                                          "Authorization": "Bearer enr_x"})
    assert r.status in (401, 413), "an oversized enroll is refused either way: %r" % r
    assert_error(r, r.status)


def test_exactly_64_kib_is_not_refused_for_size(admin):
    did = uid("lim-")
    head = '{"id":"%s","attributes":{"pad":"' % did
    tail = '"}}'
    body = head + "x" * (64 * 1024 - len(head) - len(tail)) + tail
    assert len(body) == 64 * 1024
    r = admin.post("/v1/devices", body, headers={"Content-Type": "application/json"})
    assert r.status != 413, "64 KiB is the limit, not over it: %r" % r


def test_announced_huge_body_is_refused_without_waiting_for_it(authd):
    raw = raw_exchange(authd.http_port, (
        "POST /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
        % authd.admin_key).encode())
    assert status_of(raw) == 413, "a 100 MB Content-Length is refused at once: %r" % raw[:300]
    assert b'"payload_too_large"' in raw, raw[:500]


def test_chunked_body_over_64_kib_is_413(authd):
    """Without a Content-Length the limit is found while reading. The
    client sends a complete chunked body one byte over 64 KiB; the server
    drops what is over the limit and answers 413 once the body ends
    (libmicrohttpd cannot answer in the middle of a body)."""
    sizes = [8192] * 8 + [1]
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in sizes) + b"0\r\n\r\n"
    raw = raw_exchange(authd.http_port, (
        "POST /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        % authd.admin_key).encode() + body, timeout=10)
    assert status_of(raw) == 413, "chunked bodies have the same limit: %r" % raw[:300]
    assert b'"payload_too_large"' in raw, raw[:500]


# ------------------------------------------------------- bad requests ----

@pytest.mark.parametrize("body", ["{", "not json", '{"id": }', "[1,2", '{"id":"a"} trailing',
                                  "\xff\xfe", '{"id":"\\ud800"}'],
                         ids=["open-brace", "text", "missing-value", "open-array", "trailing",
                              "bad-utf8", "lone-surrogate"])
def test_invalid_json_is_400_invalid_json(admin, body):
    r = admin.post("/v1/devices", body.encode("latin-1") if "\xff" in body else body,
                   headers={"Content-Type": "application/json"})
    assert_error(r, 400, ("invalid_json", "invalid_device_id") if "ud800" in body else "invalid_json")


def test_invalid_json_on_enrollments_and_enroll(authd, admin, make_enrollment):
    assert_error(admin.post("/v1/enrollments", "{oops"), 400, "invalid_json")
    e = make_enrollment()
    assert_error(authd.request("POST", "/v1/enroll", "{oops", token=e["token"]), 400, "invalid_json")


@pytest.mark.parametrize("body", ["[]", "42", '"str"', "null", '{"id":["a"]}', '{"id":{"a":1}}'])
def test_json_of_the_wrong_shape_is_400(admin, body):
    r = admin.post("/v1/devices", body, headers={"Content-Type": "application/json"})
    assert_error(r, 400, ("invalid_json", "invalid_field", "bad_request", "invalid_device_id"))


def test_deeply_nested_json_is_refused_without_crashing(authd, admin):
    for body in ("[" * 20000 + "]" * 20000, '{"a":' * 5000 + "1" + "}" * 5000):
        r = admin.post("/v1/devices", body, headers={"Content-Type": "application/json"})
        assert r.status in (400, 413), r
        assert_error(r, r.status)
    assert authd.request("GET", "/healthz").status == 200


def test_unknown_path_is_404_json(authd, admin):
    for path in ("/nope", "/v1/nope", "/v1/devices/x/y/z", "/.well-known/est/nope", "/v2/ca"):
        assert_error(admin.get(path), 404, "not_found")
    assert_error(authd.request("GET", "/nope"), 404, "not_found")


def test_wrong_method_is_405_json(admin):
    for method, path in (("DELETE", "/v1/ca"), ("PUT", "/v1/ca.pem"), ("GET", "/v1/enroll"),
                         ("PATCH", "/v1/enrollments")):
        r = admin.d.request(method, path, token=admin.token)
        assert r.status in (404, 405), "%s %s: %r" % (method, path, r)
        assert_error(r, r.status, ("method_not_allowed", "not_found"))


def test_malformed_http_does_not_hurt_the_daemon(authd):
    junk = [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET " + b"/a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 20000 + b"\r\n\r\n",
        b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!!\r\n\r\n",
        b"GET /v1/devices HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + b"QQ==" * 3 + b"\r\n\r\n",
        b"GET /v1/devices/%00%ff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nabc",
        b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,
    ]
    # All at once: some of them leave the server waiting for more bytes
    # until its timeout, and the daemon must keep serving meanwhile.
    jobs = [(authd.http_port, d) for d in junk] + [(authd.https_port, d) for d in junk[:3]]
    threads = [threading.Thread(target=raw_exchange, args=(port, d, 3)) for port, d in jobs]
    for t in threads:
        t.start()
    assert authd.request("GET", "/healthz", timeout=10).status == 200, (
        "half-sent requests must not block other clients")
    for t in threads:
        t.join(30)
    assert authd.request("GET", "/healthz").status == 200, "the daemon survives garbage"
    assert authd.request("GET", "/healthz", tls=True).status == 200


def test_keep_alive_serves_several_requests_on_one_connection(authd):
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", authd.http_port), timeout=10)
    try:
        s.sendall(req * 5)  # pipelined
        data = b""
        while data.count(b"HTTP/1.1 200") < 5:
            b = s.recv(65536)
            if not b:
                break
            data += b
    finally:
        s.close()
    assert data.count(b"HTTP/1.1 200") == 5, "keep-alive + pipelining answer every request: %r" % data


# ------------------------------------------------------- observability ----

def test_healthz_and_readyz_are_200_without_credentials(authd):
    for path in ("/healthz", "/readyz"):
        r = authd.request("GET", path)
        assert r.status == 200, "%s: %r" % (path, r)
        assert authd.request("GET", path, tls=True).status == 200
        assert authd.request("GET", path, port=authd.check_port).status == 200, (
            "the check listener serves health endpoints too")


def _metric_samples(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        assert m, "not Prometheus text exposition: %r" % line
        out.append((m.group(1), m.group(2) or "", float(m.group(3))))
    return out


def _requests_total(samples):
    return sum(v for name, labels, v in samples
               if "request" in name and name.endswith("_total") and "status" in labels)


def test_metrics_are_prometheus_text_with_request_counters(authd, admin):
    r = authd.request("GET", "/metrics")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers
    assert "# TYPE" in r.text and "# HELP" in r.text, "Prometheus exposition has TYPE/HELP lines"
    before = _metric_samples(r.text)
    assert any("status" in labels for _, labels, _ in before), "requests are counted by status"
    for _ in range(5):
        authd.request("GET", "/healthz")
    admin.get("/v1/" + uid("nothing-"))
    after = _metric_samples(authd.request("GET", "/metrics").text)
    assert _requests_total(after) >= _requests_total(before) + 6, (
        "request counters count requests (%s -> %s)" % (_requests_total(before), _requests_total(after)))
    assert any('status="404"' in labels for _, labels, _ in after), "404s are counted by status"
    names = {n for n, _, _ in after}
    assert any("issu" in n for n in names), "issuances are counted: %s" % sorted(names)
    assert any(n.endswith("_bucket") for n in names), "latency histograms are exported"


def test_errors_carry_json_content_type(admin):
    r = admin.get("/v1/devices/" + uid("none-"))
    assert_error(r, 404, "not_found")
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers


# ------------------------------------------------------- check listener ----

def test_check_listener_does_not_serve_the_admin_api(authd):
    for method, path in (("GET", "/v1/devices"), ("GET", "/v1/enrollments"),
                         ("POST", "/v1/apikeys"), ("GET", "/v1/audit")):
        r = authd.request(method, path, {} if method == "POST" else None,
                          token=authd.admin_key, port=authd.check_port)
        assert r.status in (403, 404), (
            "the unauthenticated check listener must never reach %s %s: %r" % (method, path, r))
        assert_error(r, r.status)


def test_metrics_show_how_the_store_commits_and_flushes(authd, admin):
    admin.post("/v1/devices", {"id": uid("m-")})
    by = {n: v for n, _, v in _metric_samples(authd.request("GET", "/metrics").text)}
    for name in ("authd_store_commits_total", "authd_store_writes_total",
                 "authd_store_syncs_total", "authd_store_sync_seconds_total"):
        assert name in by, "%s is exported" % name
    assert by["authd_store_writes_total"] >= 1 and by["authd_store_commits_total"] >= 1
    assert by["authd_store_syncs_total"] + by["authd_store_commits_total"] >= 1, (
        "a write was made durable by a flush")


def test_metrics_show_the_check_caches_within_their_budget(authd, admin):
    samples = _metric_samples(authd.request("GET", "/metrics").text)
    by = {(n, labels): v for n, labels, v in samples}
    for cache in ("devices", "policy_sets", "certificates"):
        label = '{cache="%s"}' % cache
        for name in ("authd_cache_entries", "authd_cache_bytes", "authd_cache_hits_total",
                     "authd_cache_misses_total", "authd_cache_evictions_total"):
            assert (name, label) in by, "%s%s is exported" % (name, label)
        assert 0 < by[("authd_cache_budget_bytes", label)], "each cache has a budget"
        assert by[("authd_cache_bytes", label)] <= by[("authd_cache_budget_bytes", label)], (
            "the %s cache stays within its budget" % cache)
