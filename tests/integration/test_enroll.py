"""§4 POST /v1/enroll: what a device being born gets (a verifiable client
certificate with the documented profile, a registry entry with the
enrollment's groups), and every refusal the contract lists, each with its
status and JSON error and without partial state."""

import json
import re
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authd_harness import (assert_error, cert_not_after, cert_not_before,
                           corrupt_csr_signature, create_enrollment, csr_der_from_pem, der_to_pem,
                           enroll, load_cert, make_csr, run, split_pem_chain,
                           to_epoch, uid)

DAY = 86400


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def chain_files(authd, tmp_path):
    issuing, root = split_pem_chain(authd.ca_pem())
    return (write(str(tmp_path / "root.pem"), root.public_bytes(serialization.Encoding.PEM).decode()),
            write(str(tmp_path / "issuing.pem"), issuing.public_bytes(serialization.Encoding.PEM).decode()))


def used(admin, enr_id):
    r = admin.get("/v1/enrollments/" + enr_id)
    assert r.status == 200, r
    return r.json["used"]


def post_enroll(authd, token, csr, device_id=None, **kw):
    body = {"csr": csr}
    if device_id is not None:
        body["device_id"] = device_id
    return authd.request("POST", "/v1/enroll", body, token=token, **kw)


# ------------------------------------------------------------ success ----

def test_enroll_returns_201_with_device_id_serial_certificate_chain_not_after(
        authd, make_enrollment, devdir):
    e = make_enrollment(id_pattern="SN-*")
    did = uid("SN-")
    dev, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, r
    for f in ("device_id", "serial", "certificate", "chain", "not_after"):
        assert f in r.json, "the enroll answer carries %r: %r" % (f, r.json)
    assert r.json["device_id"] == did
    cert = load_cert(r.json["certificate"])
    assert len(split_pem_chain(r.json["certificate"])) == 1, "certificate is the leaf alone"
    assert re.fullmatch(r"[0-9a-f]+", r.json["serial"]), (
        "serials are lowercase hex without separators: %r" % r.json["serial"])
    assert int(r.json["serial"], 16) == cert.serial_number, "serial names this certificate"
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        dev.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo), (
        "the certificate certifies the CSR's key, not another one")
    chain = split_pem_chain(r.json["chain"])
    assert chain and chain[0] == split_pem_chain(authd.ca_pem())[0], (
        "chain starts with the issuing CA that signed the certificate")
    assert abs(to_epoch(r.json["not_after"]) - cert_not_after(cert)) <= 1, (
        "not_after is the certificate's notAfter")


def test_enrolled_certificate_verifies_with_openssl_against_root_and_issuing_ca(
        authd, make_enrollment, devdir, tmp_path):
    e = make_enrollment()
    dev, r = enroll(authd, e["token"], uid("ver-"), devdir)
    assert r.status == 201, r
    root, issuing = chain_files(authd, tmp_path)
    leaf = write(str(tmp_path / "leaf.pem"), r.json["certificate"])
    out = run(["openssl", "verify", "-CAfile", root, "-untrusted", issuing,
               "-purpose", "sslclient", leaf], check=False)
    assert out.returncode == 0 and leaf + ": OK" in out.stdout, (
        "a device certificate must chain to the root and be fit for TLS client use: %s%s"
        % (out.stdout, out.stderr))


def test_enrolled_certificate_has_the_device_profile(authd, make_enrollment, devdir, tmp_path):
    e = make_enrollment()
    did = uid("prof-")
    dev, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, r
    leaf = write(str(tmp_path / "leaf.pem"), r.json["certificate"])
    text = run(["openssl", "x509", "-in", leaf, "-noout", "-text"]).stdout
    assert re.search(r"Subject: CN ?= ?%s\s*$" % re.escape(did), text, re.M), (
        "subject is exactly CN=<device id>:\n" + text)
    assert "URI:urn:device:" + did in text, "SAN URI urn:device:<id>:\n" + text
    assert "TLS Web Client Authentication" in text, "EKU clientAuth:\n" + text
    assert "TLS Web Server Authentication" not in text, "device certs are not server certs"
    assert "X509v3 Authority Key Identifier" in text and "X509v3 Subject Key Identifier" in text, (
        "AKI and SKI let verifiers build the chain:\n" + text)
    assert "CA:FALSE" in text, "a device certificate is not a CA"

    cert = load_cert(r.json["certificate"])
    assert cert.serial_number > 2 ** 120, (
        "serials carry 16+ random bytes (RFC 5280 §4.1.2.2, CA/B): %x" % cert.serial_number)
    issuing = split_pem_chain(authd.ca_pem())[0]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest, "AKI is the issuing CA's SKI"
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    issuing.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                ec.ECDSA(cert.signature_hash_algorithm))
    life = cert_not_after(cert) - cert_not_before(cert)
    assert 364 * DAY <= life <= 366 * DAY, "default lifetime is 365 days, got %.1f" % (life / DAY)


def test_serials_are_distinct_across_enrollments(authd, make_enrollment, devdir):
    e = make_enrollment()
    serials = set()
    for _ in range(5):
        _, r = enroll(authd, e["token"], uid("ser-"), devdir)
        assert r.status == 201, r
        serials.add(r.json["serial"])
    assert len(serials) == 5, "every certificate gets its own random serial"


def test_csr_subject_and_requested_extensions_are_ignored(authd, make_enrollment):
    """A device cannot ask for a server EKU, extra SANs or another subject;
    the profile decides what goes into the certificate."""
    e = make_enrollment()
    did = uid("evil-")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, did),
                                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), critical=False)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
           .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
           .sign(key, hashes.SHA256()))
    r = post_enroll(authd, e["token"], csr.public_bytes(serialization.Encoding.PEM).decode(), did)
    assert r.status == 201, r
    cert = load_cert(r.json["certificate"])
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, did)]), cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [], "requested DNS SANs are not copied"
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:device:" + did]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH], "only clientAuth, never serverAuth"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_cert_days_of_the_enrollment_sets_the_lifetime(authd, make_enrollment, devdir):
    e = make_enrollment(cert_days=30)
    _, r = enroll(authd, e["token"], uid("days-"), devdir)
    assert r.status == 201, r
    cert = load_cert(r.json["certificate"])
    life = cert_not_after(cert) - cert_not_before(cert)
    assert 29 * DAY <= life <= 31 * DAY, "cert_days=30 gives a 30-day certificate, got %.1f" % (life / DAY)
    assert cert_not_before(cert) <= time.time() + 1, "certificates are valid from now"


def test_device_id_defaults_to_the_csr_common_name(authd, make_enrollment, devdir):
    e = make_enrollment()
    did = uid("cn-")
    _, r = enroll(authd, e["token"], did, devdir, body_id=False)
    assert r.status == 201, r
    assert r.json["device_id"] == did, "without device_id the CSR CN is the id"


def test_enroll_creates_the_device_active_with_the_enrollment_groups(
        authd, admin, make_enrollment, devdir):
    e = make_enrollment(groups=["sensors", "line-3"])
    did = uid("grp-")
    dev, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, r
    g = admin.get("/v1/devices/" + did)
    assert g.status == 200, "enroll creates the device: %r" % g
    assert g.json["status"] == "active", g.json
    assert sorted(g.json["groups"]) == ["line-3", "sensors"], (
        "a new device gets the enrollment's groups: %r" % g.json)
    assert r.json["serial"] in json.dumps(g.json.get("certs")), (
        "the device lists its certificates: %r" % g.json)
    c = admin.get("/v1/certs/" + r.json["serial"])
    assert c.status == 200 and c.json["device_id"] == did and c.json["enrollment"] == e["id"], c


@pytest.mark.parametrize("kind", ["p384", "ed25519", "rsa2048"])
def test_enroll_accepts_p384_ed25519_and_rsa2048_keys(authd, make_enrollment, devdir, kind):
    e = make_enrollment()
    _, r = enroll(authd, e["token"], uid(kind + "-"), devdir, kind=kind)
    assert r.status == 201, "%s CSRs are accepted: %r" % (kind, r)


def test_reenrolling_an_active_device_issues_another_certificate(authd, admin, make_enrollment, devdir):
    e = make_enrollment()
    did = uid("again-")
    _, r1 = enroll(authd, e["token"], did, devdir)
    _, r2 = enroll(authd, e["token"], did, devdir)
    assert r1.status == 201 and r2.status == 201, (r1, r2)
    assert r1.json["serial"] != r2.json["serial"]
    assert used(admin, e["id"]) == 2


def test_enroll_works_over_https(authd, make_enrollment, devdir):
    e = make_enrollment()
    _, r = enroll(authd, e["token"], uid("tls-"), devdir, tls=True)
    assert r.status == 201, r


# ------------------------------------------------------------ refusals ----

def assert_refused_without_trace(authd, admin, e, did, r, status, code):
    assert_error(r, status, code)
    assert used(admin, e["id"]) == 0, "a refused enrollment must not use up max_uses"
    assert_error(admin.get("/v1/devices/" + did), 404, "not_found")


def test_enroll_refuses_a_csr_whose_signature_does_not_verify(authd, admin, make_enrollment):
    e = make_enrollment()
    did = uid("sig-")
    _, csr = make_csr(did)
    r = post_enroll(authd, e["token"], corrupt_csr_signature(csr), did)
    assert_refused_without_trace(authd, admin, e, did, r, 400, "bad_csr_signature")


@pytest.mark.parametrize("csr", [
    "hello",
    "-----BEGIN CERTIFICATE REQUEST-----\nZm9vYmFy\n-----END CERTIFICATE REQUEST-----\n",
    "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
    "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
    "",
], ids=["text", "not-der", "truncated", "bad-base64", "empty"])
def test_enroll_refuses_a_garbage_csr(authd, admin, make_enrollment, csr):
    e = make_enrollment()
    did = uid("junk-")
    r = post_enroll(authd, e["token"], csr, did)
    assert_refused_without_trace(authd, admin, e, did, r, 400, ("invalid_csr", "invalid_field"))


def test_enroll_refuses_a_truncated_real_csr(authd, admin, make_enrollment):
    e = make_enrollment()
    did = uid("trunc-")
    _, csr = make_csr(did)
    der = csr_der_from_pem(csr)
    r = post_enroll(authd, e["token"], der_to_pem(der[:len(der) // 2]), did)
    assert_refused_without_trace(authd, admin, e, did, r, 400, "invalid_csr")


def test_enroll_refuses_a_body_without_csr(authd, admin, make_enrollment):
    e = make_enrollment()
    for body in ({}, {"csr": 5}, {"csr": None}, {"device_id": "x"}):
        r = authd.request("POST", "/v1/enroll", body, token=e["token"])
        assert_error(r, 400, ("invalid_field", "invalid_csr", "bad_request"))
    assert used(admin, e["id"]) == 0


def test_enroll_refuses_an_rsa_1024_key(authd, admin, make_enrollment):
    e = make_enrollment()
    did = uid("rsa1k-")
    _, csr = make_csr(did, "rsa1024")
    r = post_enroll(authd, e["token"], csr, did)
    assert_refused_without_trace(authd, admin, e, did, r, 400, "weak_key")


def test_enroll_refuses_an_id_outside_the_id_pattern(authd, admin, make_enrollment):
    e = make_enrollment(id_pattern="SN-*")
    did = uid("XX-")
    _, csr = make_csr(did)
    r = post_enroll(authd, e["token"], csr, did)
    assert_refused_without_trace(authd, admin, e, did, r, 403, "id_not_allowed")
    # Also when the id comes from the CSR CN.
    r = post_enroll(authd, e["token"], csr)
    assert_refused_without_trace(authd, admin, e, did, r, 403, "id_not_allowed")
    # The pattern is anchored: the prefix must be at the start.
    did2 = "x" + uid("SN-")
    _, csr2 = make_csr(did2)
    r = post_enroll(authd, e["token"], csr2, did2)
    assert_refused_without_trace(authd, admin, e, did2, r, 403, "id_not_allowed")


@pytest.mark.parametrize("bad_id", [
    "SN-a/b", "SN-a b", "SN-\u00e4", "SN-" + "x" * 126, "SN-a%2fb", "SN-a\nb", "SN-a\u0000b",
    "SN-a#b", "SN-a+b", "SN-*",
], ids=["slash", "space", "non-ascii", "129-bytes", "percent", "newline", "nul",
        "hash", "plus", "star"])
def test_enroll_refuses_an_invalid_device_id(authd, admin, make_enrollment, bad_id):
    e = make_enrollment(id_pattern="SN-*")
    _, csr = make_csr("SN-ok")
    r = post_enroll(authd, e["token"], csr, bad_id)
    # A NUL inside a JSON string may already be refused by the JSON parser.
    codes = ("invalid_device_id", "invalid_json") if "\0" in bad_id else "invalid_device_id"
    assert_error(r, 400, codes)
    assert used(admin, e["id"]) == 0, "a refused enrollment must not use up max_uses"


def test_enroll_refuses_an_invalid_id_taken_from_the_csr_cn(authd, admin, make_enrollment):
    e = make_enrollment()
    _, csr = make_csr("a/b")
    assert_error(post_enroll(authd, e["token"], csr), 400, "invalid_device_id")
    _, csr = make_csr(None)
    r = post_enroll(authd, e["token"], csr)
    assert_error(r, 400, ("invalid_device_id", "invalid_field", "invalid_csr"))
    assert used(admin, e["id"]) == 0


def test_enroll_accepts_a_128_byte_device_id(authd, make_enrollment, devdir):
    e = make_enrollment(id_pattern="SN-*")
    did = "SN-" + uid() + "x" * (128 - 3 - 12)
    assert len(did) == 128
    _, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, "128 bytes is the documented maximum: %r" % r
    assert r.json["device_id"] == did


def test_enroll_refuses_once_max_uses_is_reached(authd, admin, make_enrollment, devdir):
    e = make_enrollment(max_uses=2)
    for _ in range(2):
        _, r = enroll(authd, e["token"], uid("max-"), devdir)
        assert r.status == 201, r
    did = uid("max-")
    _, r = enroll(authd, e["token"], did, devdir)
    assert_error(r, 403, "enrollment_used_up")
    assert used(admin, e["id"]) == 2, "used stops at max_uses"
    assert_error(admin.get("/v1/devices/" + did), 404, "not_found")


def test_enroll_refuses_an_expired_enrollment(authd, admin, make_enrollment, devdir):
    e = make_enrollment(expires_in=1)
    time.sleep(2.2)
    did = uid("exp-")
    _, r = enroll(authd, e["token"], did, devdir)
    assert_error(r, 403, "enrollment_expired")
    assert used(admin, e["id"]) == 0
    assert_error(admin.get("/v1/devices/" + did), 404, "not_found")


def test_enroll_refuses_an_unknown_or_missing_token(authd, devdir):
    _, r = enroll(authd, "enr_" + "0" * 43, uid("unk-"), devdir)
    assert_error(r, 401, ("invalid_credential", "unauthorized"))
    _, r = enroll(authd, "enr_", uid("unk-"), devdir)
    assert_error(r, 401, ("invalid_credential", "unauthorized"))
    _, csr = make_csr("nobody")
    r = authd.request("POST", "/v1/enroll", {"csr": csr})
    assert_error(r, 401, ("unauthorized", "invalid_credential"))


def test_enroll_refuses_a_broker_api_key(authd, role_key):
    _, csr = make_csr(uid("brk-"))
    r = authd.request("POST", "/v1/enroll", {"csr": csr}, token=role_key("broker"))
    assert r.status in (401, 403), "a broker key is not an enrollment credential: %r" % r
    assert_error(r, r.status)


def test_enroll_refuses_a_suspended_device_until_it_is_reactivated(
        authd, admin, make_enrollment, devdir):
    e = make_enrollment()
    did = uid("susp-")
    _, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, r
    p = admin.patch("/v1/devices/" + did, {"status": "suspended"})
    assert p.status == 200, p
    _, r = enroll(authd, e["token"], did, devdir)
    assert_error(r, 403, "device_suspended")
    assert used(admin, e["id"]) == 1, "the refusal used nothing"
    assert admin.patch("/v1/devices/" + did, {"status": "active"}).status == 200
    _, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, "a reactivated device may enroll again: %r" % r


def test_enrollment_used_equals_the_certificates_issued_under_it(authd, admin, make_enrollment, devdir):
    e = make_enrollment(id_pattern="OK-*", max_uses=10)
    ok = []
    for _ in range(3):
        _, r = enroll(authd, e["token"], uid("OK-"), devdir)
        assert r.status == 201, r
        ok.append(r.json["serial"])
    # Failures of every kind in between must not count.
    _, csr = make_csr("OK-x")
    post_enroll(authd, e["token"], corrupt_csr_signature(csr), uid("OK-"))
    post_enroll(authd, e["token"], make_csr("OK-y", "rsa1024")[1], uid("OK-"))
    post_enroll(authd, e["token"], csr, uid("NO-"))
    post_enroll(authd, e["token"], csr, "OK-a/b")
    certs = admin.list_all("/v1/certs?enrollment=" + e["id"])
    assert sorted(c["serial"] for c in certs) == sorted(ok), (
        "the enrollment lists exactly its certificates")
    assert used(admin, e["id"]) == 3 == len(certs), "used == certificates issued"


def test_max_uses_holds_under_concurrent_enrollment(authd, admin, make_enrollment):
    e = make_enrollment(max_uses=5)
    csrs = [make_csr(uid("race-")) for _ in range(16)]
    results = [None] * len(csrs)
    barrier = threading.Barrier(len(csrs))

    def go(i):
        key, csr = csrs[i]
        barrier.wait()
        results[i] = post_enroll(authd, e["token"], csr)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(csrs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    statuses = [r.status for r in results]
    assert statuses.count(201) == 5, "exactly max_uses enrollments succeed: %r" % statuses
    for r in results:
        if r.status != 201:
            assert_error(r, 403, "enrollment_used_up")
    assert used(admin, e["id"]) == 5
    assert len(admin.list_all("/v1/certs?enrollment=" + e["id"])) == 5, (
        "no certificate beyond max_uses was stored")


def test_public_url_adds_crl_and_ocsp_locations_and_names_the_https_host(spawn_authd, devdir):
    url = "https://pki.example.test:9443"
    d = spawn_authd(extra_args=["--public-url", url])
    e = create_enrollment(d.api(d.admin_key))
    _, r = enroll(d, e["token"], uid("pub-"), devdir)
    assert r.status == 201, r
    cert = load_cert(r.json["certificate"])
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    uris = [n.value for dp in cdp for n in (dp.full_name or [])]
    assert uris and all(u.startswith(url + "/") for u in uris), (
        "the CRL distribution point lives under --public-url: %r" % uris)
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp = [a.access_location.value for a in aia
            if a.access_method == x509.oid.AuthorityInformationAccessOID.OCSP]
    assert ocsp and ocsp[0].startswith(url + "/"), "OCSP AIA lives under --public-url: %r" % ocsp
    # The daemon's own HTTPS certificate also names the public host.
    pem = ssl.get_server_certificate(("127.0.0.1", d.https_port))
    san = load_cert(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pki.example.test" in san.get_values_for_type(x509.DNSName), (
        "the HTTPS certificate covers the --public-url host: %r" % san)

