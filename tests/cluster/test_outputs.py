"""What a change on one node does to the other nodes' outputs besides
checks: OCSP and the CRL (the same answer and the same CRL number on every
node), token introspection after a jti is revoked elsewhere, and a token
key rotated on one node signing on all of them. Each within 1 s of the
answer on the node that made the change (docs/api.md §15)."""

import base64
import json
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from authd_harness import split_pem_chain
from test_cluster import WITHIN, enroll_on, enrollment, seconds_until  # noqa: F401 (a fixture)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def issuer_of(node):
    r = node.request("GET", "/v1/ca.pem")
    assert r.status == 200, r
    return split_pem_chain(r.text)[0]


def ocsp_status(node, cert, issuer):
    """Our responder's answer for cert, as python's cryptography reads it."""
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    r = node.request("POST", "/v1/ocsp", req.public_bytes(serialization.Encoding.DER),
                     headers={"Content-Type": "application/ocsp-request"})
    assert r.status == 200, r
    resp = ocsp.load_der_ocsp_response(r.raw)
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, resp.response_status
    return resp.certificate_status


def crl_of(node):
    r = node.request("GET", "/v1/crl")
    assert r.status == 200, r
    crl = x509.load_der_x509_crl(r.raw)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return number, {e.serial_number for e in crl}


def test_a_revocation_on_node1_shows_in_ocsp_and_the_crl_of_every_node(
        cluster, enrollment, devdir):
    n1, n2, n3 = cluster.node(1), cluster.node(2), cluster.node(3)
    dev = enroll_on(n1, enrollment()["token"], devdir)
    cert = x509.load_pem_x509_certificate(dev.cert_pem.encode())
    issuer = issuer_of(n2)
    assert ocsp_status(n2, cert, issuer) == ocsp.OCSPCertStatus.GOOD

    r = cluster.api(1).post("/v1/certs/%s/revoke" % dev.serial, {"reason": "keyCompromise"})
    assert r.status == 200, r
    dt = seconds_until(lambda: ocsp_status(n2, cert, issuer) == ocsp.OCSPCertStatus.REVOKED, 5)
    print("\nrevoke on node 1 -> OCSP revoked on node 2: %s" % (
        "%.0f ms" % (dt * 1000) if dt is not None else "never (5 s)"))
    assert dt is not None and dt <= WITHIN, "OCSP on node 2 within 1 s: %r" % dt

    def crls_agree():
        crls = [crl_of(n) for n in (n1, n2, n3)]
        return (len({c[0] for c in crls}) == 1 and len({frozenset(c[1]) for c in crls}) == 1
                and cert.serial_number in crls[0][1])
    dt = seconds_until(crls_agree, 5)
    crls = [crl_of(n) for n in (n1, n2, n3)]
    print("the three CRLs agree after %s: numbers %s" % (
        "%.0f ms" % (dt * 1000) if dt is not None else "never", [c[0] for c in crls]))
    assert dt is not None and dt <= WITHIN, (
        "every node serves one CRL (same number, same entries, the new one "
        "listed) within 1 s: %r" % [(c[0], len(c[1])) for c in crls])

    before = crls[0][0]
    dev2 = enroll_on(n3, enrollment()["token"], devdir)
    assert cluster.api(2).post("/v1/certs/%s/revoke" % dev2.serial, {}).status == 200
    assert seconds_until(lambda: crl_of(n1)[0] > before, 5) is not None, (
        "a revocation on another node gives a higher CRL number everywhere")


def token_for(node, dev):
    r = node.request("POST", "/v1/token", "grant_type=client_credentials", headers=FORM,
                     tls=True, client_cert=dev.client_cert)
    assert r.status == 200, r
    return r.json["access_token"]


def introspect(node, token):
    r = node.request("POST", "/v1/introspect", "token=" + token, headers=FORM,
                     port=node.check_port)
    assert r.status == 200, r
    return r.json["active"]


def kid_of(token):
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]


def test_a_token_revoked_on_node1_is_inactive_on_node3_within_1s(cluster, enrollment, devdir):
    n1, n3 = cluster.node(1), cluster.node(3)
    dev = enroll_on(n1, enrollment()["token"], devdir)
    token = token_for(n1, dev)
    assert introspect(n3, token) is True
    jti = json.loads(base64.urlsafe_b64decode(
        token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))["jti"]
    r = cluster.api(1).post("/v1/tokens/revoke", {"jti": jti})
    assert r.status == 200, r
    dt = seconds_until(lambda: introspect(n3, token) is False, 5)
    print("\nrevoke jti on node 1 -> inactive on node 3: %s" % (
        "%.0f ms" % (dt * 1000) if dt is not None else "never (5 s)"))
    assert dt is not None and dt <= WITHIN, dt


def test_a_key_rotated_on_node2_signs_on_node1_and_verifies_on_node3(
        cluster, enrollment, devdir):
    n1, n3 = cluster.node(1), cluster.node(3)
    dev = enroll_on(n1, enrollment()["token"], devdir)
    old = token_for(n1, dev)
    r = cluster.api(2).post("/v1/token-keys")
    assert r.status == 201, r
    kid = r.json["kid"]
    t0 = time.monotonic()
    dt = seconds_until(lambda: kid_of(token_for(n1, dev)) == kid, 5)
    print("\nrotate on node 2 -> node 1 signs with the new kid: %s" % (
        "%.0f ms" % (dt * 1000) if dt is not None else "never (5 s)"))
    assert dt is not None and dt <= WITHIN, dt
    assert time.monotonic() - t0 < 5
    new = token_for(n1, dev)
    assert introspect(n3, new) is True, "node 3 verifies a token of the new key"
    assert introspect(n3, old) is True, "and still one of the old key"
    keys = n3.request("GET", "/v1/jwks").json["keys"]
    assert kid in {k["kid"] for k in keys}, "node 3 publishes the new key"
