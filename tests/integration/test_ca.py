"""§4 The CA as clients see it: /v1/ca and /v1/ca.pem (public, issuing CA
first then root) and the HTTPS listener's own certificate."""

import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from authd_harness import (cert_not_after, http_request, normalize_pem,
                           split_pem_chain, to_epoch)


def _signed_by(child, parent):
    parent.public_key().verify(child.signature, child.tbs_certificate_bytes,
                               ec.ECDSA(child.signature_hash_algorithm))
    return True


def test_ca_json_has_subject_not_after_and_chain_pem(authd):
    r = authd.request("GET", "/v1/ca")  # no credential: CA certs are public
    assert r.status == 200, r
    for field in ("subject", "not_after", "chain_pem"):
        assert field in r.json, "GET /v1/ca must carry %r: %r" % (field, r.json)
    chain = split_pem_chain(r.json["chain_pem"])
    assert len(chain) == 2, "chain_pem holds the issuing CA and the root"
    assert "CN=" in r.json["subject"] or "commonName" in r.json["subject"], r.json["subject"]
    issuing_cn = chain[0].subject.rfc4514_string()
    cn_value = issuing_cn.split("CN=")[1].split(",")[0]
    assert cn_value in r.json["subject"], (
        "subject is the issuing CA's subject: %r vs %r" % (r.json["subject"], issuing_cn))
    assert abs(to_epoch(r.json["not_after"]) - cert_not_after(chain[0])) <= 1, (
        "not_after is the issuing CA's notAfter")
    assert normalize_pem(r.json["chain_pem"]) == normalize_pem(authd.ca_pem()), (
        "/v1/ca chain_pem and /v1/ca.pem are the same chain")


def test_ca_pem_is_issuing_ca_first_then_self_signed_root(authd):
    r = authd.request("GET", "/v1/ca.pem")
    assert r.status == 200, r
    assert "pem" in r.headers.get("content-type", "") or "x509" in r.headers.get(
        "content-type", "") or "text/plain" in r.headers.get("content-type", ""), r.headers
    issuing, root = split_pem_chain(r.text)
    assert issuing.issuer == root.subject and issuing.subject != root.subject, (
        "the first certificate is the issuing CA, issued by the second")
    assert root.issuer == root.subject and _signed_by(root, root), "the second is a self-signed root"
    assert _signed_by(issuing, root), "the issuing CA's signature verifies with the root key"
    for c in (issuing, root):
        bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca, "both chain certificates are CAs"
        assert isinstance(c.public_key(), ec.EllipticCurvePublicKey) and \
            c.public_key().curve.name == "secp256r1", "the generated CA is ECDSA P-256"
        assert cert_not_after(c) > time.time() + 365 * 86400, "CA certificates are long-lived"


def test_https_listener_certificate_verifies_for_127_0_0_1_and_localhost(authd):
    # http_request verifies the chain against /v1/ca.pem and checks the
    # host name, so a 200 here proves the SANs are right.
    r = authd.request("GET", "/healthz", tls=True)
    assert r.status == 200, "HTTPS on 127.0.0.1 must verify against /v1/ca.pem: %r" % r
    r = http_request("localhost", authd.https_port, "GET", "/healthz", tls=True,
                     cadata=authd.ca_pem())
    assert r.status == 200, "the server certificate also names localhost: %r" % r


def test_ca_endpoints_are_served_over_https_too(authd):
    r = authd.request("GET", "/v1/ca.pem", tls=True)
    assert r.status == 200 and normalize_pem(r.text) == normalize_pem(authd.ca_pem())
