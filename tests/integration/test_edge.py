"""The HTTP edge (docs/api.md §4): per-address connection
limits, a deadline for a whole request that a client cannot stretch by
sending a byte at a time, conflicting Content-Length refused, one daemon
per data dir, writable key directories refused, the compat body limit,
and compat endpoints reached by GET. Each test runs its own daemon with
the limits it needs, and talks raw sockets where the point is the wire."""

import http.client
import json
import os
import socket
import stat
import time
from urllib.parse import urlencode

import pytest

from authd_harness import Authd, uid


def connect(port, source="127.0.0.1", timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def get_from(port, path, source, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def read_all(s, limit=10.0):
    """Everything the server sends until it closes (or limit seconds)."""
    data = b""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            return data, True
        data += chunk
    return data, False


def closed_within(s, seconds):
    """True if the peer closed (EOF or reset) within seconds."""
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# ------------------------------------------------------ connection limits ----

def test_half_open_connections_from_one_address_do_not_lock_out_another(spawn_authd, tmp_path):
    d = spawn_authd(extra_args=["--max-connections", "120",
                                "--max-connections-per-ip", "20"])
    held = []
    try:
        for port in (d.http_port, d.check_port):
            # More idle connections than the listener has slots, all from
            # 127.0.0.1, none sending a byte.
            for _ in range(130):
                try:
                    held.append(connect(port))
                except OSError:
                    pass
            t0 = time.monotonic()
            status, _ = get_from(port, "/healthz", "127.0.0.2")
            assert status == 200, (
                "another address must still be served while 127.0.0.1 holds "
                "its connections (port %d)" % port)
            assert time.monotonic() - t0 < 3, "and at once, not after a timeout"
    finally:
        for s in held:
            s.close()


# ------------------------------------------------------- request deadline ----

def test_a_client_sending_one_byte_at_a_time_is_cut_at_the_deadline(spawn_authd):
    d = spawn_authd(extra_args=["--request-timeout", "2"])
    request = (b"POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: "
               b"application/json\r\nContent-Length: 200\r\n\r\n" + b" " * 200)
    for port in (d.http_port, d.check_port):
        s = connect(port)
        t0 = time.monotonic()
        cut = None
        try:
            for i in range(len(request)):
                s.sendall(request[i:i + 1])
                time.sleep(0.25)
                if time.monotonic() - t0 > 8:
                    break
        except (BrokenPipeError, ConnectionResetError):
            cut = time.monotonic() - t0
        if cut is None and closed_within(s, 2):
            cut = time.monotonic() - t0
        s.close()
        assert cut is not None, (
            "a request dribbled a byte every 0.25 s must not outlive the "
            "2 s deadline (MHD's idle timeout restarts with every byte)")
        assert cut < 5, "cut near the deadline, not later: %.1f s" % cut
    assert get_from(d.http_port, "/healthz", "127.0.0.1")[0] == 200


def test_kept_alive_connections_and_event_streams_outlive_the_deadline(spawn_authd):
    d = spawn_authd(extra_args=["--request-timeout", "1"])
    # A broker's kept-alive connection, idle between two checks longer
    # than the request deadline, is not cut for being idle.
    conn = http.client.HTTPConnection("127.0.0.1", d.check_port, timeout=5)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    time.sleep(2.5)
    conn.request("GET", "/healthz")
    r = conn.getresponse()
    r.read()
    assert r.status == 200, "idle keep-alive has its own, longer allowance"
    conn.close()
    # An event stream, once answered, lives past the deadline.
    s = connect(d.check_port)
    s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert not closed_within(s, 3), "an answered event stream is exempt"
    s.close()


# --------------------------------------------------------- Content-Length ----

def test_conflicting_content_length_is_400_and_closes_the_connection(spawn_authd):
    d = spawn_authd()
    smuggled = b"GET /v1/ca HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"{}   " + smuggled
    for port in (d.http_port, d.check_port):
        s = connect(port)
        s.sendall(b"POST /v1/check HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: 5\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        data, closed = read_all(s)
        s.close()
        assert data.startswith(b"HTTP/1.1 400"), (
            "two different Content-Lengths are a 400: %r" % data[:200])
        assert data.count(b"HTTP/1.1 ") == 1, (
            "exactly one answer: the rest must not be read as a second "
            "(smuggled) request: %r" % data)
        head, _, payload = data.partition(b"\r\n\r\n")
        assert json.loads(payload)["error"]["code"] == "bad_request", payload
        assert closed, "and the connection is closed"


# -------------------------------------------------------------- data dir ----

def test_a_second_daemon_on_the_same_data_dir_exits_naming_the_lock(spawn_authd):
    first = spawn_authd()
    second = spawn_authd(data_dir=first.data, wait=False)
    try:
        rc = second.proc.wait(15)
    except Exception:
        second.proc.kill()
        second.proc.wait()
        pytest.fail("a second authd on a data dir in use must exit at once")
    assert rc != 0, "the second daemon must fail"
    err = second.stderr()
    assert os.path.join(first.data, "lock") in err, (
        "the message names the lock: %s" % err[-2000:])
    assert first.request("GET", "/readyz").status == 200, "the first serves on"


@pytest.mark.parametrize("sub", ["tokens", "ca"])
def test_a_group_writable_key_directory_is_refused(spawn_authd, sub):
    d = spawn_authd()
    assert d.stop() == 0
    path = os.path.join(d.data, sub)
    os.chmod(path, 0o770)
    again = spawn_authd(data_dir=d.data, wait=False)
    try:
        rc = again.proc.wait(15)
    except Exception:
        again.proc.kill()
        again.proc.wait()
        pytest.fail("a group-writable %s must stop the start" % sub)
    assert rc != 0
    assert path in again.stderr(), "the message names %s: %s" % (
        path, again.stderr()[-2000:])
    os.chmod(path, 0o700)


# ---------------------------------------------------------- body limits ----

def test_compat_bodies_have_their_own_limit_and_the_api_keeps_64_kib(spawn_authd):
    d = spawn_authd()
    admin = d.api(d.admin_key)
    dev = uid("big-")
    assert admin.post("/v1/devices", {"id": dev}).status == 201
    payload = "A" * (200 * 1024)
    body = {"username": dev, "client_id": dev, "mountpoint": "", "qos": 1,
            "topic": "devices/%s/t" % dev, "payload": payload, "retain": False}
    r = d.request("POST", "/compat/vernemq/auth_on_publish", body,
                  headers={"vernemq-hook": "auth_on_publish"}, port=d.check_port)
    assert r.status == 200, (
        "a 200 KB VerneMQ publish (a ~150 KB message in base64) is a "
        "broker's real message, not a 413: %r" % r)
    assert isinstance(r.json, dict) and "result" in r.json, r
    r = admin.post("/v1/devices", {"id": uid("big-"), "attributes": {"x": payload}})
    assert r.status == 413, "other routes keep 64 KiB: %r" % r
    assert r.json["error"]["code"] == "payload_too_large", r


# ----------------------------------------------------------- compat GET ----

def test_goauth_and_emqx_accept_get_with_a_query_string(spawn_authd):
    d = spawn_authd()
    admin = d.api(d.admin_key)
    pol, grp, dev = uid("pol-"), uid("grp-"), uid("get-")
    assert admin.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
        {"effect": "allow", "actions": ["publish"], "topics": ["t/${device.id}/#"]}]}).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    assert admin.post("/v1/devices", {"id": dev, "groups": [grp]}).status == 201
    r = admin.post("/v1/devices/%s/secret" % dev)
    assert r.status == 201, r
    secret = r.json["secret"]

    def get(path, **q):
        return d.request("GET", path + "?" + urlencode(q), port=d.check_port)

    r = get("/compat/mosquitto-go-auth/user", username=dev, password=secret, clientid=dev)
    assert r.status == 200 and r.json == {"ok": True, "error": ""}, r
    r = get("/compat/mosquitto-go-auth/user", username=dev, password=secret + "x", clientid=dev)
    assert r.status == 403 and r.json["ok"] is False, r
    # One spelling, one value: a %00 in a query value must not cut it
    # short, so "<secret>%00junk" is not the secret (as in a form body).
    r = d.request("GET", "/compat/mosquitto-go-auth/user?" + urlencode(
        {"username": dev, "clientid": dev}) + "&password=" + secret + "%00junk",
        port=d.check_port)
    assert r.status == 403 and r.json["ok"] is False, r
    r = get("/compat/mosquitto-go-auth/acl", username=dev, clientid=dev,
            topic="t/%s/x" % dev, acc="2")
    assert r.status == 200, r
    r = get("/compat/emqx/authn", username=dev, password=secret, clientid=dev)
    assert r.status == 200 and r.json["result"] == "allow", r
    r = get("/compat/emqx/authn", username=dev, password="nope", clientid=dev)
    assert r.status == 200 and r.json["result"] == "deny", r
    r = get("/compat/emqx/authz", username=dev, clientid=dev, action="publish",
            topic="t/%s/x" % dev, qos="0", retain="false")
    assert r.status == 200 and r.json["result"] == "allow", r
