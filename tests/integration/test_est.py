"""§4 EST (RFC 7030 as updated by RFC 8951): cacerts, simpleenroll with
the enrollment id and token as HTTP Basic (or Bearer), simplereenroll over
mutual TLS with a matching subject, csrattrs; base64 DER bodies, usable
with the openssl and curl command lines."""

import base64
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from authd_harness import (assert_error, basic, bearer, csr_der_from_pem,
                           make_csr, normalize_pem, run, split_pem_chain, uid)

EST = "/.well-known/est"
PKCS10 = {"Content-Type": "application/pkcs10"}


def b64_wrapped(der):
    b = base64.b64encode(der).decode()
    return "\r\n".join(b[i:i + 64] for i in range(0, len(b), 64)) + "\r\n"


def est_body(csr_pem):
    return b64_wrapped(csr_der_from_pem(csr_pem))


def certs_only(resp):
    """The certificates in a base64 PKCS#7 certs-only answer."""
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/pkcs7-mime"), "EST answers pkcs7-mime: %r" % ctype
    der = base64.b64decode(b"".join(resp.raw.split()))
    return pkcs7.load_der_pkcs7_certificates(der)


def cn(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_cacerts_decodes_with_the_openssl_command_line(authd):
    r = authd.request("GET", EST + "/cacerts")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/pkcs7-mime"), r.headers
    # Exactly the documented pipeline: base64 -d needs lines of at most
    # 64-76 characters, so the body must be wrapped.
    p = subprocess.run("openssl base64 -d | openssl pkcs7 -inform DER -print_certs",
                       shell=True, input=r.raw, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    text = p.stdout.decode()
    assert normalize_pem(text) == normalize_pem(authd.ca_pem()), (
        "cacerts holds the issuing CA and the root, as /v1/ca.pem:\n" + text)


def test_cacerts_matches_ca_pem(authd):
    r = authd.request("GET", EST + "/cacerts")
    certs = certs_only(r)
    assert certs == split_pem_chain(authd.ca_pem())


def test_simpleenroll_with_basic_enrollment_id_and_token(authd, admin, make_enrollment):
    e = make_enrollment(groups=["est"])
    did = uid("est-")
    key, csr = make_csr(did)
    hdrs = dict(PKCS10, **basic(e["id"], e["token"]))
    r = authd.request("POST", EST + "/simpleenroll", est_body(csr), headers=hdrs)
    assert r.status == 200, "RFC 7030 §4.2.3: success is 200: %r" % r
    assert "certs-only" in r.headers.get("content-type", ""), r.headers
    certs = certs_only(r)
    leaf = [c for c in certs if cn(c) == did]
    assert len(leaf) == 1, "the answer holds the new certificate: %r" % certs
    assert leaf[0].public_key().public_numbers() == key.public_key().public_numbers()
    assert admin.get("/v1/enrollments/" + e["id"]).json["used"] == 1, "EST enroll uses one max_uses"
    dev = admin.get("/v1/devices/" + did)
    assert dev.status == 200 and dev.json["groups"] == ["est"], dev


def test_simpleenroll_accepts_unwrapped_base64_and_bearer_token(authd, make_enrollment):
    e = make_enrollment()
    did = uid("estb-")
    _, csr = make_csr(did)
    body = base64.b64encode(csr_der_from_pem(csr)).decode()
    r = authd.request("POST", EST + "/simpleenroll", body,
                      headers=dict(PKCS10, **bearer(e["token"])))
    assert r.status == 200, r
    assert [cn(c) for c in certs_only(r)].count(did) == 1


def test_simpleenroll_with_a_wrong_password_or_id_is_401(authd, admin, make_enrollment):
    e = make_enrollment()
    other = make_enrollment()
    _, csr = make_csr(uid("estbad-"))
    for hdr in (basic(e["id"], "enr_wrong"), basic(e["id"], other["token"]),
                basic(uid("noenr"), e["token"]), {}):
        r = authd.request("POST", EST + "/simpleenroll", est_body(csr),
                          headers=dict(PKCS10, **hdr))
        assert_error(r, 401, ("invalid_credential", "unauthorized"))
        assert "www-authenticate" in r.headers, (
            "RFC 7235: a 401 names the scheme so EST clients retry with Basic: %r" % r.headers)
    assert admin.get("/v1/enrollments/" + e["id"]).json["used"] == 0


def test_simpleenroll_refuses_a_garbage_body(authd, make_enrollment):
    e = make_enrollment()
    hdrs = dict(PKCS10, **basic(e["id"], e["token"]))
    for body in ("!!!not base64!!!", base64.b64encode(b"not a csr").decode(), ""):
        r = authd.request("POST", EST + "/simpleenroll", body, headers=hdrs)
        assert_error(r, 400, ("invalid_csr", "bad_request"))


def test_simplereenroll_with_curl_client_certificate(enrolled, authd, tmp_path):
    dev, _ = enrolled()
    ca = tmp_path / "ca.pem"
    ca.write_text(authd.ca_pem())
    body = tmp_path / "csr.b64"
    body.write_text(est_body(dev.new_csr()))
    out = tmp_path / "out.p7"
    p = run(["curl", "-sS", "--cert", dev.cert_path, "--key", dev.key_path,
             "--cacert", str(ca), "-H", "Content-Type: application/pkcs10",
             "--data-binary", "@" + str(body), "-o", str(out), "-w", "%{http_code}",
             "https://127.0.0.1:%d%s/simplereenroll" % (authd.https_port, EST)])
    assert p.stdout == "200", "simplereenroll: %s %s" % (p.stdout, out.read_bytes()[:300])
    certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(b"".join(out.read_bytes().split())))
    leaf = [c for c in certs if cn(c) == dev.id]
    assert len(leaf) == 1 and format(leaf[0].serial_number, "x") != dev.serial, (
        "a new certificate for the same subject")


def test_simplereenroll_refuses_another_subject(enrolled, authd):
    dev, _ = enrolled()
    r = authd.request("POST", EST + "/simplereenroll", est_body(dev.new_csr(uid("other-"))),
                      headers=PKCS10, tls=True, client_cert=dev.client_cert)
    assert_error(r, 403, "subject_mismatch")


def test_simplereenroll_needs_a_client_certificate(enrolled, authd):
    dev, _ = enrolled()
    r = authd.request("POST", EST + "/simplereenroll", est_body(dev.new_csr()), headers=PKCS10)
    assert_error(r, 401, ("client_certificate_required", "unauthorized"))
    r = authd.request("POST", EST + "/simplereenroll", est_body(dev.new_csr()),
                      headers=PKCS10, tls=True)
    assert_error(r, 401, ("client_certificate_required", "unauthorized"))


def test_simplereenroll_refuses_a_suspended_device(enrolled, authd, admin):
    dev, _ = enrolled()
    assert admin.patch("/v1/devices/" + dev.id, {"status": "suspended"}).status == 200
    r = authd.request("POST", EST + "/simplereenroll", est_body(dev.new_csr()),
                      headers=PKCS10, tls=True, client_cert=dev.client_cert)
    assert_error(r, 403, "device_suspended")


def test_csrattrs_is_204(authd):
    r = authd.request("GET", EST + "/csrattrs")
    assert r.status == 204 and r.raw == b"", "no CSR attributes are required: %r" % r


def test_est_answers_over_https_as_well(authd):
    r = authd.request("GET", EST + "/cacerts", tls=True)
    assert r.status == 200 and certs_only(r) == split_pem_chain(authd.ca_pem())


def test_est_leaf_is_a_device_certificate(authd, make_enrollment):
    e = make_enrollment()
    did = uid("estp-")
    _, csr = make_csr(did)
    r = authd.request("POST", EST + "/simpleenroll", est_body(csr),
                      headers=dict(PKCS10, **basic(e["id"], e["token"])))
    assert r.status == 200, r
    leaf = [c for c in certs_only(r) if cn(c) == did][0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:device:" + did], (
        "EST issues the same device profile as /v1/enroll")
