"""§13 EST over secure CoAP (RFC 9148) with libcoap's own coap-client (the
GnuTLS build as the independent client, the OpenSSL build once): /est/sen
over DTLS-PSK (identity = enrollment id, key = its token), /est/sren with
the device's certificate, /est/crts block-wise on a server-authenticated
session, /.well-known/core, /est/att, every refusal with its CoAP code,
and a daemon that survives random datagrams."""

import os
import random
import re
import socket
import subprocess
import time

import pytest

from authd_harness import (Authd, Api, create_enrollment, csr_der_from_pem,
                           enroll, free_ports, make_csr, new_key, key_pem,
                           run, uid)

GNUTLS = "/usr/bin/coap-client-gnutls"
OPENSSL = "/usr/bin/coap-client-openssl"
CODE = re.compile(r"^v:1 t:(?:ACK|CON|NON) c:(\d\.\d\d) ", re.M)


@pytest.fixture(scope="module")
def coapd(binary, tmp_path_factory):
    for tool in (GNUTLS, OPENSSL):
        assert os.access(tool, os.X_OK), "%s (Debian libcoap3-bin) is needed" % tool
    data = str(tmp_path_factory.mktemp("coap") / "data")
    port = free_ports(1)[0]
    d = Authd(data, binary, ["--coaps", "127.0.0.1:%d" % port])
    d.coap_port = port
    d.start()
    yield d
    d.stop_and_check()
    d.cleanup_logs()


@pytest.fixture(scope="module")
def cadmin(coapd):
    return Api(coapd, coapd.admin_key)


@pytest.fixture
def files(tmp_path):
    def write(name, data):
        p = str(tmp_path / name)
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return p
    write.dir = str(tmp_path)
    return write


class Coap:
    """What coap-client reported: the last response code (None if no
    response came, e.g. the handshake failed), the body and the log."""

    def __init__(self, p, out_path):
        self.log = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        codes = CODE.findall(self.log)
        self.code = codes[-1] if codes else None
        self.body = b""
        if out_path and os.path.exists(out_path):
            with open(out_path, "rb") as f:
                self.body = f.read()

    def __repr__(self):
        return "<coap %s, %d bytes>\n%s" % (self.code, len(self.body), self.log[-2500:])


def coap(d, path, *args, client=GNUTLS, out=None, wait=10):
    """One request with coap-client (-v 7 prints each PDU, so the code of
    the answer is read from the log; -B bounds the wait)."""
    cmd = [client, "-v", "7", "-B", str(wait)] + list(args)
    if out:
        cmd += ["-o", out]
    cmd.append("coaps://127.0.0.1:%d%s" % (d.coap_port, path))
    p = subprocess.run(cmd, capture_output=True, timeout=wait + 30)
    return Coap(p, out)


def psk(enr, token=None):
    return ["-u", enr["id"], "-k", token if token is not None else enr["token"]]


def sen(d, files, enr, device_id, client=GNUTLS, token=None, extra=(), kind="p256"):
    key, csr = make_csr(device_id, kind)
    body = files(uid("csr-") + ".der", csr_der_from_pem(csr))
    out = os.path.join(files.dir, uid("p7-") + ".der")
    r = coap(d, "/est/sen", "-m", "post", "-t", "286", "-A", "281",
             "-f", body, *psk(enr, token), *extra, client=client, out=out)
    r.key = key
    r.out = out
    return r


def certs_of(d, files, r):
    """The certificates of a certs-only PKCS#7 answer, through the openssl
    command line, each verified against the CA chain."""
    p = run(["openssl", "pkcs7", "-inform", "DER", "-in", r.out, "-print_certs"])
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n",
                      p.stdout, re.S)
    assert pems, "the answer is a PKCS#7 with certificates:\n" + p.stdout
    ca = files(uid("ca-") + ".pem", d.ca_pem())
    for pem in pems:
        leaf = files(uid("leaf-") + ".pem", pem)
        v = run(["openssl", "verify", "-CAfile", ca, leaf], check=False)
        assert v.returncode == 0, "the certificate chains to our CA: %s%s" % (v.stdout, v.stderr)
    return pems


def subject_cn(files, pem):
    p = run(["openssl", "x509", "-noout", "-subject", "-serial", "-nameopt", "multiline",
             "-in", files(uid("c-") + ".pem", pem)])
    cn = re.search(r"commonName\s*=\s*(\S+)", p.stdout).group(1)
    serial = re.search(r"serial=([0-9A-Fa-f]+)", p.stdout).group(1).lower().lstrip("0")
    return cn, serial


def test_sen_with_psk_issues_a_certificate_that_is_durable_and_audited(coapd, cadmin, files):
    e = create_enrollment(cadmin, groups=["coap"])
    did = uid("coap-")
    r = sen(coapd, files, e, did)
    assert r.code == "2.04", "RFC 9148: a successful simpleenroll is 2.04: %r" % r
    pems = certs_of(coapd, files, r)
    assert len(pems) == 1, "the answer holds the new certificate only"
    cn, serial = subject_cn(files, pems[0])
    assert cn == did, "the certificate is for the CSR's CN"
    # Durable before it left: the very next read sees it.
    certs = cadmin.list_all("/v1/certs?enrollment=" + e["id"])
    assert [c["serial"].lstrip("0") for c in certs] == [serial], (
        "the certificate was committed before the answer: %r" % certs)
    dev = cadmin.get("/v1/devices/" + did)
    assert dev.status == 200 and dev.json["groups"] == ["coap"], dev
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 1, "sen uses one max_uses"
    audit = cadmin.list_all("/v1/audit?action=cert.enroll&limit=1000")
    mine = [a for a in audit if a.get("actor") == "enrollment:" + e["id"]]
    assert len(mine) == 1, "one cert.enroll entry by the enrollment: %r" % audit[-3:]


def test_sen_with_the_openssl_client_too(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    r = sen(coapd, files, e, uid("coapo-"), client=OPENSSL)
    assert r.code == "2.04", r
    certs_of(coapd, files, r)


def test_sen_refuses_when_the_budget_is_used_up(coapd, cadmin, files):
    e = create_enrollment(cadmin, max_uses=1)
    assert sen(coapd, files, e, uid("b1-")).code == "2.04"
    r = sen(coapd, files, e, uid("b2-"))
    assert r.code == "4.03", "a used-up enrollment is forbidden, as /v1/enroll's 403: %r" % r
    assert "enrollment_used_up" in r.log, r
    assert len(cadmin.list_all("/v1/certs?enrollment=" + e["id"])) == 1, "nothing more was issued"


def test_sen_refuses_a_device_id_outside_the_pattern(coapd, cadmin, files):
    e = create_enrollment(cadmin, id_pattern="plant7-*")
    r = sen(coapd, files, e, uid("elsewhere-"))
    assert r.code == "4.03" and "id_not_allowed" in r.log, r


def test_sen_refuses_a_revoked_device(coapd, cadmin, files, tmp_path):
    e = create_enrollment(cadmin)
    did = uid("rv-")
    assert sen(coapd, files, e, did).code == "2.04"
    assert cadmin.patch("/v1/devices/" + did, {"status": "suspended"}).status == 200
    r = sen(coapd, files, e, did)
    assert r.code == "4.03" and "device_suspended" in r.log, r


def test_unknown_psk_identity_fails_the_handshake(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    r = sen(coapd, files, dict(e, id="e_0000000000000000"), uid("u-"), extra=("-B", "4"))
    assert r.code is None, "no CoAP answer without a known identity: %r" % r
    assert not r.body
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 0


def test_wrong_psk_key_fails_the_handshake(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    wrong = e["token"][:-4] + ("AAAA" if not e["token"].endswith("AAAA") else "BBBB")
    r = sen(coapd, files, e, uid("w-"), token=wrong, extra=("-B", "4"))
    assert r.code is None, "a wrong key never gets an answer: %r" % r
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 0


def test_sen_without_psk_is_unauthorized(coapd, cadmin, files):
    key, csr = make_csr(uid("np-"))
    body = files("c.der", csr_der_from_pem(csr))
    r = coap(coapd, "/est/sen", "-m", "post", "-t", "286", "-f", body)
    assert r.code == "4.01", "a server-authenticated session cannot enroll: %r" % r


def test_sen_garbage_csr_is_bad_request(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    body = files("g.der", b"\x30\x82\x01\x00 this is not a CSR")
    r = coap(coapd, "/est/sen", "-m", "post", "-t", "286", "-f", body, *psk(e))
    assert r.code == "4.00" and "invalid_csr" in r.log, r
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 0


def test_sen_wrong_content_format_is_415(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    key, csr = make_csr(uid("cf-"))
    body = files("c.der", csr_der_from_pem(csr))
    for cf in ("0", "50"):
        r = coap(coapd, "/est/sen", "-m", "post", "-t", cf, "-f", body, *psk(e))
        assert r.code == "4.15", "content format %s is refused: %r" % (cf, r)
    r = coap(coapd, "/est/sen", "-m", "post", "-f", body, *psk(e))
    assert r.code == "4.15", "no content format is refused: %r" % r


def test_sen_accepting_another_format_is_406(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    key, csr = make_csr(uid("acc-"))
    body = files("c.der", csr_der_from_pem(csr))
    r = coap(coapd, "/est/sen", "-m", "post", "-t", "286", "-A", "0", "-f", body, *psk(e))
    assert r.code == "4.06", "only certs-only PKCS#7 (281) is answered: %r" % r
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 0, "nothing issued"


def test_sen_oversized_body_is_413(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    body = files("big.der", os.urandom(40000))
    r = coap(coapd, "/est/sen", "-m", "post", "-t", "286", "-b", "1024", "-f", body, *psk(e))
    assert r.code == "4.13", "a body over the limit is refused block-wise: %r" % r


def test_sen_with_a_block_wise_request_body(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    r = sen(coapd, files, e, uid("blk-"), extra=("-b", "64"))
    assert r.code == "2.04", "a CSR sent in 64-byte Block1 pieces is put together: %r" % r
    assert len(CODE.findall(r.log)) > 3 and "2.31" in CODE.findall(r.log), (
        "the request really went block-wise: %r" % r)
    certs_of(coapd, files, r)


def test_sen_with_an_rsa_4096_csr_in_blocks(coapd, cadmin, files):
    """An RSA-4096 CSR (over 1 KiB) in 256-byte Block1 pieces; its
    certificate (under 1 KiB with our EC CA) comes back in one answer."""
    e = create_enrollment(cadmin)
    r = sen(coapd, files, e, uid("rsa-"), kind="rsa4096", extra=("-b", "256"))
    assert r.code == "2.04", r
    assert "Block1:4/_/256" in r.log, "the CSR went up in five pieces: %r" % r
    assert len(r.body) > 900, "the whole PKCS#7 arrived (%d bytes)" % len(r.body)
    certs_of(coapd, files, r)


def test_sren_with_the_device_certificate_renews(coapd, cadmin, files, devdir):
    e = create_enrollment(cadmin)
    dev, r = enroll(coapd, e["token"], uid("sr-"), devdir)
    assert r.status == 201, r
    body = files("re.der", csr_der_from_pem(dev.new_csr()))
    ca = files("ca.pem", coapd.ca_pem())
    out = os.path.join(files.dir, "renewed.der")
    r = coap(coapd, "/est/sren", "-m", "post", "-t", "286", "-f", body,
             "-c", dev.cert_path, "-j", dev.key_path, "-R", ca, out=out)
    assert r.code == "2.04", r
    r.out = out
    pems = certs_of(coapd, files, r)
    cn, serial = subject_cn(files, pems[0])
    assert cn == dev.id
    assert serial != dev.serial.lstrip("0"), "a new certificate"
    audit = cadmin.list_all("/v1/audit?action=cert.renew&limit=1000")
    assert any(a.get("actor") == "device:" + dev.id for a in audit), "renewal is audited"


def test_sren_refuses_a_csr_for_another_subject(coapd, cadmin, files, devdir):
    e = create_enrollment(cadmin)
    dev, r = enroll(coapd, e["token"], uid("srs-"), devdir)
    body = files("re.der", csr_der_from_pem(dev.new_csr(cn=uid("someone-else-"))))
    r = coap(coapd, "/est/sren", "-m", "post", "-t", "286", "-f", body,
             "-c", dev.cert_path, "-j", dev.key_path)
    assert r.code == "4.03" and "subject_mismatch" in r.log, r


def test_sren_refuses_a_revoked_certificate(coapd, cadmin, files, devdir):
    e = create_enrollment(cadmin)
    dev, r = enroll(coapd, e["token"], uid("srr-"), devdir)
    rv = cadmin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "keyCompromise"})
    assert rv.status == 200, rv
    body = files("re.der", csr_der_from_pem(dev.new_csr()))
    r = coap(coapd, "/est/sren", "-m", "post", "-t", "286", "-f", body,
             "-c", dev.cert_path, "-j", dev.key_path)
    assert r.code in ("4.01", "4.03"), "a revoked certificate cannot renew: %r" % r
    assert not r.body


def test_sren_refuses_a_certificate_of_another_ca(coapd, cadmin, files, devdir):
    """A self-signed certificate naming a real device does not pass the
    handshake's chain check (the OpenSSL client presents it whatever CA
    the server asks for; GnuTLS's would not send it at all)."""
    e = create_enrollment(cadmin)
    dev, r = enroll(coapd, e["token"], uid("sro-"), devdir)
    key = files("k.pem", key_pem(new_key()))
    cert = os.path.join(files.dir, "self.pem")
    run(["openssl", "req", "-x509", "-new", "-key", key, "-subj", "/CN=" + dev.id,
         "-days", "2", "-out", cert])
    body = files("re.der", csr_der_from_pem(dev.new_csr()))
    r = coap(coapd, "/est/sren", "-m", "post", "-t", "286", "-f", body,
             "-c", cert, "-j", key, client=OPENSSL, wait=5)
    assert r.code is None, "the handshake refuses an unknown CA: %r" % r
    assert "unknown ca" in r.log, r
    assert not r.body, "no certificate for a foreign certificate"


def test_sren_on_a_psk_session_is_unauthorized(coapd, cadmin, files):
    e = create_enrollment(cadmin)
    key, csr = make_csr(uid("ps-"))
    body = files("c.der", csr_der_from_pem(csr))
    r = coap(coapd, "/est/sren", "-m", "post", "-t", "286", "-f", body, *psk(e))
    assert r.code == "4.01", "re-enrollment needs the device's certificate: %r" % r


def test_crts_block_wise_on_a_server_authenticated_session(coapd, files):
    out = os.path.join(files.dir, "crts.der")
    ca = files("ca.pem", coapd.ca_pem())
    r = coap(coapd, "/est/crts", "-m", "get", "-b", "64", "-R", ca, out=out)
    assert r.code == "2.05", r
    codes = CODE.findall(r.log)
    assert codes.count("2.05") > 3, "the chain came in 64-byte Block2 pieces: %r" % r
    assert "Content-Format:application/pkcs7-mime" in r.log or "Content-Format:281" in r.log, r
    r.out = out
    pems = certs_of(coapd, files, r)
    norm = lambda s: "".join(s.split())
    assert norm("".join(pems)) == norm(coapd.ca_pem()), "the chain, issuing CA first"


def test_well_known_core_lists_the_resources(coapd):
    r = coap(coapd, "/.well-known/core", "-m", "get")
    assert r.code == "2.05", r
    for res, ct in (("/est/crts", "281"), ("/est/sen", "286"), ("/est/sren", "286"),
                    ("/est/att", "285")):
        m = re.search(r"<%s>;[^,]*ct=\"?[0-9 ]*%s" % (re.escape(res), ct), r.log)
        assert m, "%s is listed with ct=%s:\n%s" % (res, ct, r.log[-1500:])


def test_att_answers_like_the_http_route(coapd):
    r = coap(coapd, "/est/att", "-m", "get")
    assert r.code == "2.04", "no attributes required: 2.04 as HTTP's 204: %r" % r


def test_unknown_path_and_wrong_method(coapd):
    assert coap(coapd, "/est/nothing", "-m", "get").code == "4.04"
    assert coap(coapd, "/est/crts", "-m", "put", "-e", "x").code == "4.05"
    assert coap(coapd, "/est/sen", "-m", "get").code == "4.05"


def test_the_sealed_token_never_shows(coapd, cadmin):
    e = create_enrollment(cadmin)
    view = cadmin.get("/v1/enrollments/" + e["id"]).json
    assert "token_sealed" not in view and "token" not in view, view
    listed = cadmin.list_all("/v1/enrollments")
    assert all("token_sealed" not in x for x in listed)


def test_random_datagrams_then_a_valid_enrollment(coapd, cadmin, files):
    rnd = random.Random(12)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(600):
            n = rnd.randrange(1, 1500)
            data = bytes(rnd.getrandbits(8) for _ in range(n))
            if i % 3 == 0:
                # A DTLS 1.2 handshake record header, then garbage.
                data = b"\x16\xfe\xfd\x00\x00" + data
            elif i % 3 == 1:
                # A CoAP header, then garbage.
                data = b"\x40\x01" + data
            s.sendto(data, ("127.0.0.1", coapd.coap_port))
    finally:
        s.close()
    time.sleep(0.5)
    assert coapd.proc.poll() is None, "the daemon survives random datagrams"
    e = create_enrollment(cadmin)
    r = sen(coapd, files, e, uid("after-"))
    assert r.code == "2.04", r
    h = coapd.request("GET", "/healthz")
    assert h.status == 200, h


def test_zz_daemon_is_healthy_after_everything(coapd):
    assert coapd.proc.poll() is None
    assert coapd.request("GET", "/healthz").status == 200
    assert coap(coapd, "/est/att", "-m", "get").code == "2.04"


def test_coaps_is_off_by_default(authd):
    started = [l for l in authd.stderr().splitlines() if "event=started" in l]
    assert started and "coaps=off" in started[-1], started


@pytest.mark.parametrize("flag,value", [("--coaps-max-sessions", "0"),
                                        ("--coaps-max-handshakes", "0"),
                                        ("--coaps-max-handshakes", "5000")])
def test_coaps_limits_must_be_limits(binary, tmp_path, flag, value):
    p = subprocess.run([binary, "serve", "--data", str(tmp_path / "d"), flag, value],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, "0 would mean no bound in libcoap: %s" % p.stderr
    assert flag[2:].replace("-", "_") in p.stderr, p.stderr


def test_a_bad_coaps_address_stops_the_start(spawn_authd):
    d = spawn_authd(extra_args=["--coaps", "localhost"], wait=False)
    rc = d.proc.wait(60)
    assert rc != 0, "a listener that cannot be opened is a start failure"
    assert "coaps address localhost" in d.stderr(), d.stderr()[-2000:]


def dup_client():
    """tests/integration/coaps_dup.c, built by meson (COAPS_DUP), or the
    default build dir's when run by hand."""
    path = os.environ.get("COAPS_DUP") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "tests",
        "integration", "coaps_dup")
    assert os.access(path, os.X_OK), "coaps_dup is built with the tests (meson): %s" % path
    return path


def test_a_retransmitted_sen_is_answered_again_not_issued_twice(coapd, cadmin, files):
    """A device whose 2.04 was lost sends the same request (same message
    id) again: it gets the same certificate, and no second use or
    certificate is spent (RFC 7252 §4.5 deduplication)."""
    e = create_enrollment(cadmin, max_uses=1)
    key, csr = make_csr(uid("dup-"))
    body = files("d.der", csr_der_from_pem(csr))
    seen = len(coapd.stderr())
    p = run([dup_client(), "127.0.0.1", str(coapd.coap_port), e["id"], e["token"], body,
             "whole"], check=False)
    answers = re.findall(r"^ANSWER (\S+)", p.stdout, re.M)
    assert answers[:1] == ["2.04"], "the first request is issued: %s %s" % (p.stdout, p.stderr)
    time.sleep(0.3)
    log = coapd.stderr()[seen:]
    assert "event=coap_replayed path=/est/sen" in log, (
        "the retransmission reached the server and was answered from the "
        "recent answers: %s\n%s" % (p.stdout, log))
    assert "4.03" not in answers, "not refused as used up: %r" % answers
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 1, "one use only"
    assert len(cadmin.list_all("/v1/certs?enrollment=" + e["id"])) == 1, "one certificate only"


def test_a_block1_piece_sent_twice_is_not_a_broken_body(coapd, cadmin, files):
    """A device whose 2.31 was lost sends that piece again; the body is
    still put together right."""
    e = create_enrollment(cadmin)
    key, csr = make_csr(uid("dupb-"))
    body = files("d.der", csr_der_from_pem(csr))
    p = run([dup_client(), "127.0.0.1", str(coapd.coap_port), e["id"], e["token"], body,
             "piece"], check=False)
    answers = re.findall(r"^ANSWER (\S+)", p.stdout, re.M)
    assert p.returncode == 0 and answers[-1] == "2.04", (
        "the CSR is issued despite the repeated piece: %r %s" % (answers, p.stderr))
    # 2.31 for each piece but the last, and for the repeated one.
    pieces = (len(csr_der_from_pem(csr)) + 63) // 64
    assert answers == ["2.31"] * pieces + ["2.04"], (
        "every piece, the repeated one too, is answered 2.31 Continue, "
        "never 4.08: %r" % answers)
    assert cadmin.get("/v1/enrollments/" + e["id"]).json["used"] == 1


def test_a_handshake_flood_does_not_lock_a_device_out(spawn_authd, files):
    """24 clients holding handshakes open with a wrong key (each
    retransmits for seconds) stay within the default 64 handshakes: a
    device with the right key still enrolls during the flood. (Above the
    cap the oldest handshakes are dropped, so a flood larger than
    coaps_max_handshakes delays devices until it stops: docs/coap.md.)"""
    port = free_ports(1)[0]
    d = spawn_authd(extra_args=["--coaps", "127.0.0.1:%d" % port])
    d.coap_port = port
    admin = Api(d, d.admin_key)
    e = create_enrollment(admin)
    key, csr = make_csr(uid("fl-"))
    body = files("f.der", csr_der_from_pem(csr))
    flood = [subprocess.Popen([GNUTLS, "-B", "6", "-m", "post", "-t", "286", "-f", body,
                               "-u", e["id"], "-k", e["token"][:-3] + "zzz",
                               "coaps://127.0.0.1:%d/est/sen" % port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(24)]
    try:
        time.sleep(1.0)
        r = sen(d, files, e, uid("fl-ok-"))
        assert r.code == "2.04", "the device enrolls during the flood: %r" % r
    finally:
        for p in flood:
            p.wait(30)
    assert d.proc.poll() is None
    assert d.request("GET", "/healthz").status == 200
    assert admin.get("/v1/enrollments/" + e["id"]).json["used"] == 1, (
        "no wrong-key client got anything")
