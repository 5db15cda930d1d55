"""Revocation (docs/api.md §12): revoking a certificate or a device locks it out
everywhere at once. Checked from the outside: `openssl ocsp` and `openssl
verify -crl_check` as independent clients, the check endpoint, token
introspection, and an SSE client on /v1/events."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authd_harness import assert_error, load_cert, run, uid

EXAMPLE_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
]}


# ------------------------------------------------------------ helpers ----

@pytest.fixture(scope="module")
def group(admin):
    pol, grp = uid("pol-rv-"), uid("grp-rv-")
    assert admin.put("/v1/policies/" + pol, EXAMPLE_POLICY).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    return grp


@pytest.fixture
def device(enrolled, group):
    """A freshly enrolled device in a group that may connect."""
    return lambda: enrolled(groups=[group])[0]


@pytest.fixture
def files(authd, tmp_path):
    """Paths of the CA chain pieces for the openssl CLI."""
    chain = authd.ca_pem()
    certs = ["-----BEGIN CERTIFICATE-----" + c for c in
             chain.split("-----BEGIN CERTIFICATE-----")[1:]]
    paths = {"chain": tmp_path / "chain.pem", "issuing": tmp_path / "issuing.pem",
             "root": tmp_path / "root.pem"}
    paths["chain"].write_text(chain)
    paths["issuing"].write_text(certs[0])
    paths["root"].write_text(certs[-1])
    return {k: str(v) for k, v in paths.items()}


def ocsp_status(authd, files, cert_path, tmp_path, method="POST"):
    """Asks our responder with `openssl ocsp` (it verifies the signed
    response against the CA chain and checks the nonce) and returns its
    report for the certificate."""
    url = "http://127.0.0.1:%d/v1/ocsp" % authd.http_port
    cmd = ["openssl", "ocsp", "-issuer", files["issuing"], "-cert", cert_path,
           "-url", url, "-CAfile", files["chain"], "-resp_text"]
    if method == "GET":
        cmd.append("-req_text")
    p = run(cmd, check=False)
    out = p.stdout + p.stderr
    assert "Response verify OK" in out, (
        "the response must be signed by our CA and carry our nonce:\n%s" % out)
    line = [l for l in out.splitlines() if l.startswith(cert_path + ":")]
    assert line, out
    return line[0].split(":", 1)[1].strip(), out


def crl_verify(authd, files, cert_path, tmp_path):
    """`openssl verify -crl_check` with the CRL fetched from /v1/crl (DER,
    converted by openssl itself)."""
    r = authd.request("GET", "/v1/crl")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/pkix-crl"), r.headers
    der = tmp_path / ("crl-%s.der" % uid())
    der.write_bytes(r.raw)
    pem = tmp_path / ("crl-%s.pem" % uid())
    run(["openssl", "crl", "-inform", "DER", "-in", str(der), "-out", str(pem)])
    return run(["openssl", "verify", "-crl_check", "-CAfile", files["root"],
                "-untrusted", files["issuing"], "-CRLfile", str(pem), cert_path],
               check=False)


def fingerprint(dev):
    der = load_cert(dev.cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def connect(authd, dev):
    r = authd.request("POST", "/v1/check", {"action": "connect", "client_id": dev.id,
                                            "cert_fingerprint": fingerprint(dev)},
                      port=authd.check_port)
    assert r.status == 200, r
    return r.json


class SseClient:
    """Reads /v1/events on a raw socket in a thread, collecting events."""

    def __init__(self, port, last_event_id=None):
        self.events = []
        self.raw = b""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        hdrs = "GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
        if last_event_id is not None:
            hdrs += "Last-Event-ID: %s\r\n" % last_event_id
        self.sock.sendall((hdrs + "\r\n").encode())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self.raw += chunk
                self._parse()
        except OSError:
            return

    def _parse(self):
        text = self.raw.decode(errors="replace")
        body = text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else ""
        events = []
        for block in body.replace("\r\n", "\n").split("\n\n"):
            ev = {}
            for line in block.split("\n"):
                if line.startswith("id: "):
                    ev["id"] = int(line[4:])
                elif line.startswith("event: "):
                    ev["event"] = line[7:]
                elif line.startswith("data: "):
                    try:
                        ev["data"] = json.loads(line[6:])
                    except ValueError:
                        pass
            if "data" in ev:
                events.append(ev)
        self.events = events

    def wait_for(self, pred, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            time.sleep(0.02)
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ------------------------------------------------------- certificates ----

def test_a_good_certificate_is_good_over_ocsp_and_passes_the_crl_check(
        authd, device, files, tmp_path):
    dev = device()
    status, _ = ocsp_status(authd, files, dev.cert_path, tmp_path)
    assert status == "good", "an unrevoked certificate we issued is good"
    p = crl_verify(authd, files, dev.cert_path, tmp_path)
    assert p.returncode == 0 and ": OK" in p.stdout, (
        "an unrevoked certificate passes -crl_check:\n%s%s" % (p.stdout, p.stderr))


def test_revoking_a_certificate_shows_in_ocsp_and_the_crl_at_once(
        authd, admin, device, files, tmp_path):
    dev = device()
    r = admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "keyCompromise"})
    assert r.status == 200, r
    assert r.json["status"] == "revoked" and r.json["reason"] == "keyCompromise", r
    status, out = ocsp_status(authd, files, dev.cert_path, tmp_path)
    assert status == "revoked", "OCSP must report the revocation at once:\n%s" % out
    assert "Key Compromise" in out or "keyCompromise" in out, (
        "the RFC 5280 reason travels with the OCSP answer:\n%s" % out)
    p = crl_verify(authd, files, dev.cert_path, tmp_path)
    assert p.returncode != 0 and "certificate revoked" in (p.stdout + p.stderr), (
        "the CRL is rebuilt on revocation, not at its next update:\n%s%s"
        % (p.stdout, p.stderr))


def test_the_crl_is_v2_signed_by_the_issuing_ca_with_number_and_reasons(
        authd, admin, device, files, tmp_path):
    dev = device()
    admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "superseded"})
    r = authd.request("GET", "/v1/crl.pem")
    assert r.status == 200 and r.text.startswith("-----BEGIN X509 CRL-----"), r
    crl = x509.load_pem_x509_crl(r.raw)
    issuing = x509.load_pem_x509_certificate(open(files["issuing"], "rb").read())
    assert crl.is_signature_valid(issuing.public_key()), "signed by the issuing CA"
    assert crl.issuer == issuing.subject
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number >= 1, "CRLs carry a CRL number"
    assert crl.next_update > crl.last_update, "thisUpdate < nextUpdate"
    entry = crl.get_revoked_certificate_by_serial_number(int(dev.serial, 16))
    assert entry is not None, "the revoked serial is listed"
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.superseded, "entries carry their reason code"


def test_the_crl_number_grows_with_every_revocation(authd, admin, device):
    def number():
        crl = x509.load_der_x509_crl(authd.request("GET", "/v1/crl").raw)
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    before = number()
    dev = device()
    admin.post("/v1/certs/%s/revoke" % dev.serial, {})
    assert number() > before, "a new CRL (new number) follows each revocation"


def test_ocsp_over_get_answers_like_post(authd, admin, device, files, tmp_path):
    dev = device()
    admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "cessationOfOperation"})
    req = tmp_path / "req.der"
    run(["openssl", "ocsp", "-issuer", files["issuing"], "-cert", dev.cert_path,
         "-no_nonce", "-reqout", str(req)])
    b64 = base64.b64encode(req.read_bytes()).decode()
    from urllib.parse import quote
    r = authd.request("GET", "/v1/ocsp/" + quote(b64, safe=""))
    assert r.status == 200, r
    assert r.headers.get("content-type") == "application/ocsp-response", r.headers
    resp = tmp_path / "resp.der"
    resp.write_bytes(r.raw)
    p = run(["openssl", "ocsp", "-respin", str(resp), "-issuer", files["issuing"],
             "-cert", dev.cert_path, "-CAfile", files["chain"]], check=False)
    assert "revoked" in p.stdout, "GET /v1/ocsp/{base64} works as RFC 6960 A.1 says:\n%s%s" % (
        p.stdout, p.stderr)


def test_a_garbage_ocsp_request_gets_a_malformed_request_answer_not_a_crash(authd):
    r = authd.request("POST", "/v1/ocsp", b"\x30\x03\x02\x01\x01",
                      headers={"Content-Type": "application/ocsp-request"})
    assert r.status == 200, "OCSP errors travel inside the OCSPResponse: %r" % r
    assert r.raw == bytes([0x30, 0x03, 0x0a, 0x01, 0x01]), (
        "malformedRequest (1) with no body: %r" % r.raw)


def test_a_certificate_we_never_issued_is_unknown_or_refused(authd, files, tmp_path):
    # A foreign CA's certificate: the responder does not answer for it.
    key = tmp_path / "k.pem"
    cert = tmp_path / "c.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=stranger",
         "-days", "1"])
    url = "http://127.0.0.1:%d/v1/ocsp" % authd.http_port
    p = run(["openssl", "ocsp", "-issuer", str(cert), "-cert", str(cert), "-url", url,
             "-CAfile", files["chain"]], check=False)
    out = p.stdout + p.stderr
    assert "unauthorized" in out.lower() or "unknown" in out, (
        "a CA we do not run is not vouched for:\n%s" % out)


def test_revoking_twice_is_a_conflict_and_an_unknown_serial_is_404(admin, device):
    dev = device()
    assert admin.post("/v1/certs/%s/revoke" % dev.serial, {}).status == 200
    assert_error(admin.post("/v1/certs/%s/revoke" % dev.serial, {}), 409)
    assert_error(admin.post("/v1/certs/%s/revoke" % ("7f" * 20), {}), 404)


def test_an_unknown_reason_name_is_refused(admin, device):
    dev = device()
    assert_error(admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "stolen"}), 400)
    assert admin.get("/v1/certs/" + dev.serial).json["status"] == "valid", (
        "a refused revocation leaves the certificate as it was")


def test_revocation_needs_the_admin_role(authd, role_key, device):
    dev = device()
    r = authd.request("POST", "/v1/certs/%s/revoke" % dev.serial, {},
                      token=role_key("provisioner"))
    assert_error(r, 403)
    assert_error(authd.request("POST", "/v1/certs/%s/revoke" % dev.serial, {}), 401)


# ------------------------------------------------------------ devices ----

def test_a_revoked_certificate_is_denied_at_the_next_check(authd, admin, device):
    dev = device()
    assert connect(authd, dev)["result"] == "allow", "the check caches this identity"
    admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "keyCompromise"})
    d = connect(authd, dev)
    assert d["result"] == "deny" and d["reason"] == "certificate_revoked", (
        "a cached identity must not outlive its revocation: %r" % d)


def test_revoking_a_device_revokes_its_certs_and_tokens_and_denies_it_at_once(
        authd, admin, device, files, tmp_path):
    dev = device()
    assert connect(authd, dev)["result"] == "allow"
    tok = authd.request("POST", "/v1/token", "grant_type=client_credentials",
                        headers={"Content-Type": "application/x-www-form-urlencoded"},
                        tls=True, client_cert=dev.client_cert)
    assert tok.status == 200, tok
    token = tok.json["access_token"]
    intro = authd.request("POST", "/v1/introspect", "token=" + token,
                          port=authd.check_port)
    assert intro.json["active"] is True

    r = admin.post("/v1/devices/%s/revoke" % dev.id, {"reason": "keyCompromise"})
    assert r.status == 200, r
    assert r.json["status"] == "revoked" and dev.serial.lstrip("0") in [
        s.lstrip("0") for s in r.json["revoked_certs"]], r
    assert admin.get("/v1/devices/" + dev.id).json["status"] == "revoked"

    d = connect(authd, dev)
    assert d["result"] == "deny", "the revoked device is denied at once: %r" % d
    intro = authd.request("POST", "/v1/introspect", "token=" + token,
                          port=authd.check_port)
    assert intro.json == {"active": False}, "its tokens stop being active: %r" % intro.json
    status, _ = ocsp_status(authd, files, dev.cert_path, tmp_path)
    assert status == "revoked", "its certificates are revoked"
    r = admin.patch("/v1/devices/" + dev.id, {"status": "active"})
    assert_error(r, 409)


def test_deleting_a_device_revokes_its_certificates(authd, admin, device, files, tmp_path):
    dev = device()
    assert admin.delete("/v1/devices/" + dev.id).status == 204
    status, out = ocsp_status(authd, files, dev.cert_path, tmp_path)
    assert status == "revoked", (
        "a deleted device's certificate must not come back with a new device "
        "of the same id:\n%s" % out)
    cert = admin.get("/v1/certs/" + dev.serial).json
    assert cert["status"] == "revoked" and cert["reason"] == "cessationOfOperation", cert


# ------------------------------------------------------------- events ----

def test_an_sse_client_receives_revocations_and_suspensions(authd, admin, device, plain_id):
    sse = SseClient(authd.check_port)
    try:
        time.sleep(0.2)
        dev = device()
        admin.post("/v1/devices/%s/revoke" % dev.id, {"reason": "keyCompromise"})
        ev = sse.wait_for(lambda e: e.get("event") == "revoked"
                          and e["data"].get("device") == dev.id)
        assert ev is not None, "the revocation is pushed to brokers: %r" % sse.raw[-2000:]
        assert ev["data"]["type"] == "revoked" and ev["id"] >= 1, ev
        other = plain_id()
        admin.patch("/v1/devices/" + other, {"status": "suspended"})
        ev2 = sse.wait_for(lambda e: e.get("event") == "suspended"
                           and e["data"].get("device") == other)
        assert ev2 is not None and ev2["id"] > ev["id"], "events are numbered in order"
    finally:
        sse.close()


def test_a_client_reconnecting_with_last_event_id_misses_nothing(authd, admin, plain_id):
    first = SseClient(authd.check_port)
    try:
        a = plain_id()
        admin.patch("/v1/devices/" + a, {"status": "suspended"})
        ev = first.wait_for(lambda e: e["data"].get("device") == a)
        assert ev is not None
    finally:
        first.close()
    # While disconnected, two more things happen.
    b, c = plain_id(), plain_id()
    admin.patch("/v1/devices/" + b, {"status": "suspended"})
    pol = uid("pol-ev-")
    admin.put("/v1/policies/" + pol, EXAMPLE_POLICY)
    again = SseClient(authd.check_port, last_event_id=ev["id"])
    try:
        got_b = again.wait_for(lambda e: e["data"].get("device") == b)
        got_p = again.wait_for(lambda e: e.get("event") == "policy_changed"
                               and e["data"].get("policy") == pol)
        assert got_b is not None and got_p is not None, (
            "Last-Event-ID resumes after the last event seen: %r" % again.events)
        assert all(e["id"] > ev["id"] for e in again.events), (
            "nothing at or before Last-Event-ID is sent again")
    finally:
        again.close()


def test_events_need_a_broker_key_on_the_main_listeners(authd, role_key):
    assert_error(authd.request("GET", "/v1/events"), 401)
    assert_error(authd.request("GET", "/v1/events", token=role_key("provisioner")), 403)


@pytest.fixture
def plain_id(admin):
    def make():
        did = uid("ev-")
        assert admin.post("/v1/devices", {"id": did}).status == 201
        return did
    return make
