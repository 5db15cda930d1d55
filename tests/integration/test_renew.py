"""§4 POST /v1/renew: a device proves itself with its certificate over
mutual TLS and gets a new certificate for the same id; without a client
certificate (or over plain HTTP) it is 401, a suspended device is 403."""

import datetime
import json
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authd_harness import (assert_error, corrupt_csr_signature, key_pem,
                           load_cert, make_csr, run)


def renew(authd, dev, csr=None, **kw):
    return authd.request("POST", "/v1/renew", {"csr": csr or dev.new_csr()},
                         tls=True, client_cert=dev.client_cert, **kw)


def test_renew_over_mtls_issues_a_new_certificate_for_the_same_device(enrolled, authd, admin):
    dev, _ = enrolled()
    r = renew(authd, dev)
    assert r.status == 201, r
    for f in ("device_id", "serial", "certificate", "chain", "not_after"):
        assert f in r.json, "renew answers the enroll shape: %r" % r.json
    assert r.json["device_id"] == dev.id, "renewal keeps the device id"
    assert r.json["serial"] != dev.serial, "renewal issues a new certificate"
    cert = load_cert(r.json["certificate"])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == dev.id
    old = admin.get("/v1/certs/" + dev.serial)
    assert old.status == 200 and old.json["status"] == "valid", (
        "the old certificate stays valid until it expires: %r" % old)
    new = admin.get("/v1/certs/" + r.json["serial"])
    assert new.status == 200 and new.json["device_id"] == dev.id, new


def test_renew_with_curl_and_a_new_key(enrolled, authd, tmp_path):
    """The documented command line, with a fresh key (re-keying)."""
    dev, _ = enrolled()
    ca = tmp_path / "ca.pem"
    ca.write_text(authd.ca_pem())
    newkey, csr = make_csr(dev.id)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"csr": csr}))
    out = run(["curl", "-sS", "--cert", dev.cert_path, "--key", dev.key_path,
               "--cacert", str(ca), "-X", "POST",
               "-H", "Content-Type: application/json",
               "https://127.0.0.1:%d/v1/renew" % authd.https_port,
               "--data-binary", "@" + str(body), "-w", "\n%{http_code}"])
    text, status = out.stdout.rsplit("\n", 1)
    assert status == "201", "curl renew: %s %s" % (status, text)
    cert = load_cert(json.loads(text)["certificate"])
    assert cert.public_key().public_numbers() == newkey.public_key().public_numbers(), (
        "the new certificate certifies the new key")


def test_renewed_certificate_can_renew_again_and_the_old_one_still_works(enrolled, authd):
    dev, _ = enrolled()
    r = renew(authd, dev)
    assert r.status == 201, r
    renewed = dev.with_cert(r.json["certificate"], r.json.get("chain", ""))
    assert renew(authd, renewed).status == 201, "the renewed certificate authenticates"
    assert renew(authd, dev).status == 201, "the old certificate stays valid"


def test_renew_over_plain_http_is_401_json(enrolled, authd):
    dev, _ = enrolled()
    r = authd.request("POST", "/v1/renew", {"csr": dev.new_csr()})
    assert_error(r, 401, ("client_certificate_required", "unauthorized"))


def test_renew_over_https_without_a_client_certificate_is_401(enrolled, authd):
    dev, _ = enrolled()
    r = authd.request("POST", "/v1/renew", {"csr": dev.new_csr()}, tls=True)
    assert_error(r, 401, ("client_certificate_required", "unauthorized"))


def test_renew_refuses_a_suspended_device(enrolled, authd, admin):
    dev, _ = enrolled()
    assert admin.patch("/v1/devices/" + dev.id, {"status": "suspended"}).status == 200
    assert_error(renew(authd, dev), 403, "device_suspended")
    assert admin.patch("/v1/devices/" + dev.id, {"status": "active"}).status == 200
    assert renew(authd, dev).status == 201, "reactivation restores renewal"


def test_renew_refuses_a_bad_or_weak_csr(enrolled, authd):
    dev, _ = enrolled()
    assert_error(renew(authd, dev, corrupt_csr_signature(dev.new_csr())), 400, "bad_csr_signature")
    assert_error(renew(authd, dev, make_csr(dev.id, "rsa1024")[1]), 400, "weak_key")
    assert_error(renew(authd, dev, "garbage"), 400, "invalid_csr")


def test_renew_refuses_a_certificate_from_another_ca(enrolled, authd, tmp_path):
    """A self-made certificate naming a real device must not renew it."""
    dev, _ = enrolled()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dev.id)])
    now = datetime.datetime.now(datetime.timezone.utc)
    fake = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(int(dev.serial, 16))
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    cp, kp = tmp_path / "fake.pem", tmp_path / "fake.key"
    cp.write_text(fake.public_bytes(serialization.Encoding.PEM).decode())
    kp.write_text(key_pem(key))
    try:
        r = authd.request("POST", "/v1/renew", {"csr": dev.new_csr()}, tls=True,
                          client_cert=(str(cp), str(kp)))
    except (ssl.SSLError, ConnectionError):
        return  # refused in the handshake: fine
    assert r.status in (401, 403), "a foreign certificate must not authenticate: %r" % r
    assert_error(r, r.status)
