"""§4 POST /v1/server-certs (admin): certificates for brokers and gateways
with EKU serverAuth and DNS/IP SANs, usable as a real TLS server."""

import socket
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from authd_harness import (assert_error, cert_not_after, cert_not_before,
                           key_pem, load_cert, make_csr, run, split_pem_chain,
                           to_epoch, uid)

DAY = 86400


def issue(admin, **fields):
    key, csr = make_csr(fields.pop("cn", "broker"))
    body = {"csr": csr, "dns": ["broker.example"], "ips": ["127.0.0.1"], "days": 30}
    body.update(fields)
    return key, admin.post("/v1/server-certs", body)


def test_server_cert_has_server_auth_and_the_requested_sans(admin, authd, tmp_path):
    key, r = issue(admin, dns=["broker.example", "mqtt.internal"], ips=["127.0.0.1", "::1"])
    assert r.status == 201, r
    for f in ("serial", "certificate", "chain", "not_after"):
        assert f in r.json, "server-certs answers the enroll shape: %r" % r.json
    cert = load_cert(r.json["certificate"])
    assert int(r.json["serial"], 16) == cert.serial_number
    eku = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku, "a server certificate has EKU serverAuth"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["broker.example", "mqtt.internal"]
    assert sorted(map(str, san.get_values_for_type(x509.IPAddress))) == ["127.0.0.1", "::1"], (
        "IP SANs are iPAddress entries, not DNS names")
    life = cert_not_after(cert) - cert_not_before(cert)
    assert 29 * DAY <= life <= 31 * DAY, "days=30 sets the lifetime, got %.1f" % (life / DAY)
    assert abs(to_epoch(r.json["not_after"]) - cert_not_after(cert)) <= 1
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()

    issuing, root = split_pem_chain(authd.ca_pem())
    (tmp_path / "root.pem").write_text(root.public_bytes(serialization.Encoding.PEM).decode())
    (tmp_path / "issuing.pem").write_text(issuing.public_bytes(serialization.Encoding.PEM).decode())
    (tmp_path / "leaf.pem").write_text(r.json["certificate"])
    out = run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
               str(tmp_path / "issuing.pem"), "-purpose", "sslserver",
               str(tmp_path / "leaf.pem")], check=False)
    assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr


def test_server_cert_works_for_a_real_tls_server(admin, authd, tmp_path):
    key, r = issue(admin, dns=["broker.example"], ips=["127.0.0.1"])
    assert r.status == 201, r
    (tmp_path / "cert.pem").write_text(r.json["certificate"] + r.json["chain"])
    (tmp_path / "key.pem").write_text(key_pem(key))
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def serve():
        conn, _ = lsock.accept()
        try:
            with sctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(s.recv(16))
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cadata=authd.ca_pem())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with cctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"ping")
                assert s.recv(16) == b"ping", "a TLS client trusting ca.pem accepts the broker"
    finally:
        t.join(10)
        lsock.close()


def test_server_cert_refuses_bad_input(admin):
    assert_error(issue(admin, ips=["999.1.1.1"])[1], 400, ("invalid_field", "bad_request"))
    assert_error(issue(admin, ips=["not an ip"])[1], 400, ("invalid_field", "bad_request"))
    assert_error(issue(admin, dns="broker.example")[1], 400, ("invalid_field", "bad_request"))
    assert_error(issue(admin, days=-1)[1], 400, ("invalid_field", "bad_request"))
    r = admin.post("/v1/server-certs", {"csr": "garbage", "dns": ["a.example"]})
    assert_error(r, 400, "invalid_csr")
    r = admin.post("/v1/server-certs", {"csr": make_csr("w", "rsa1024")[1], "dns": ["a.example"]})
    assert_error(r, 400, "weak_key")


def test_server_cert_needs_an_admin_key(authd):
    _, csr = make_csr(uid("srv-"))
    r = authd.request("POST", "/v1/server-certs", {"csr": csr, "dns": ["x.example"]})
    assert_error(r, 401, ("unauthorized", "invalid_credential"))


def test_server_cert_serial_is_in_the_certificate_store(admin):
    _, r = issue(admin)
    assert r.status == 201, r
    c = admin.get("/v1/certs/" + r.json["serial"])
    assert c.status == 200 and c.json["status"] == "valid", (
        "server certificates are recorded too, so they can be revoked: %r" % c)

