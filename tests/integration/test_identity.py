"""One connection, one identity (API §8): whatever credentials a broker
passes on a connect — token, certificate (fingerprint, serial, PEM, CN),
device secret, username — they must all name the same device, or the
connect is denied. Brokers key every later decision by username, so a
client authenticated as A that calls itself B would act as B from then
on. These tests send each broker's real wire format and expect a deny
wherever two credentials disagree."""

import base64
import hashlib
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import serialization

from authd_harness import Api, create_enrollment, enroll, load_cert, uid

POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["u/${username}/#"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
]}

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def make_group(api):
    pol, grp = uid("pol-id-"), uid("grp-id-")
    assert api.put("/v1/policies/" + pol, POLICY).status == 201
    assert api.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    return grp


@pytest.fixture(scope="module")
def group(admin):
    return make_group(admin)


@pytest.fixture
def two_devices(authd, admin, group, devdir):
    """Devices A and B, each enrolled with a certificate and a secret."""
    enr = create_enrollment(admin, groups=[group])
    devs = []
    for prefix in ("ida-", "idb-"):
        dev, r = enroll(authd, enr["token"], uid(prefix), devdir)
        assert r.status == 201, r
        s = admin.post("/v1/devices/%s/secret" % dev.id)
        assert s.status in (200, 201), s
        dev.secret = s.json["secret"]
        devs.append(dev)
    return devs


def der(dev):
    return load_cert(dev.cert_pem).public_bytes(serialization.Encoding.DER)


def fpr(dev):
    return hashlib.sha256(der(dev)).hexdigest()


def mint(daemon, dev, scope=None):
    body = {"grant_type": "client_credentials"}
    if scope is not None:
        body["scope"] = scope
    r = daemon.request("POST", "/v1/token", urlencode(body), tls=True,
                       client_cert=dev.client_cert, headers=FORM)
    assert r.status == 200, "POST /v1/token over mTLS: %r" % r
    return r.json["access_token"]


def check(daemon, **body):
    body.setdefault("action", "connect")
    r = daemon.request("POST", "/v1/check", body, port=daemon.check_port)
    assert r.status == 200, "a check decision is always a 200: %r" % r
    return r.json


def compat(daemon, path, body):
    r = daemon.request("POST", path, body, port=daemon.check_port)
    assert r.status < 500, "a broker disconnects its client on a 5xx: %r" % r
    return r


def emqx_authn(daemon, **fields):
    body = {"username": "", "password": "", "clientid": "", "peerhost": "127.0.0.1",
            "cert_common_name": "", "cert_subject": ""}
    body.update(fields)
    r = compat(daemon, "/compat/emqx/authn", body)
    assert r.status == 200, r
    return r.json


def goauth_user(daemon, **fields):
    return compat(daemon, "/compat/mosquitto-go-auth/user", fields)


def vmq_register(daemon, **fields):
    body = {"peer_addr": "127.0.0.1", "peer_port": 50000, "mountpoint": "",
            "client_id": "", "username": "", "password": "", "clean_session": True}
    body.update(fields)
    r = compat(daemon, "/compat/vernemq/auth_on_register", body)
    assert r.status == 200, r
    return r.json


VMQ_DENY = {"result": {"error": "not_allowed"}}


# ------------------------------------------- username must be the device ----

@pytest.mark.parametrize("credential", ["token", "fingerprint", "serial"])
def test_a_connect_as_device_a_with_username_b_is_denied_at_check(authd, two_devices, credential):
    a, b = two_devices
    cred = {"token": lambda: {"password": mint(authd, a)},
            "fingerprint": lambda: {"cert_fingerprint": fpr(a)},
            "serial": lambda: {"cert_serial": a.serial}}[credential]()
    ok = check(authd, client_id=a.id, username=a.id, **cred)
    assert ok["result"] == "allow", "the same credential with its own name connects: %r" % ok
    bad = check(authd, client_id=a.id, username=b.id, **cred)
    assert bad["result"] == "deny" and bad["reason"] == "username_mismatch", (
        "authenticated as %s but calling itself %s: later checks would run as %s: %r"
        % (a.id, b.id, b.id, bad))


def test_an_empty_username_is_not_a_mismatch(authd, two_devices):
    a, _ = two_devices
    r = check(authd, client_id=a.id, username="", cert_fingerprint=fpr(a))
    assert r["result"] == "allow", r


def test_a_username_cannot_steer_a_username_variable_in_the_devices_own_policy(authd, two_devices):
    a, b = two_devices
    r = check(authd, client_id=a.id, username=b.id, cert_fingerprint=fpr(a))
    assert r["result"] == "deny", "an attacker-chosen ${username} must never reach a decision: %r" % r
    assert "statements" not in r, r


def test_go_auth_user_denies_a_token_of_a_under_username_b(authd, two_devices):
    a, b = two_devices
    tok = mint(authd, a)
    assert goauth_user(authd, username=a.id, password=tok, clientid=a.id).status == 200
    r = goauth_user(authd, username=b.id, password=tok, clientid=a.id)
    assert r.status == 403 and r.json == {"ok": False, "error": "username_mismatch"}, r


def test_go_auth_user_denies_the_secret_of_a_under_username_b(authd, two_devices):
    a, b = two_devices
    assert goauth_user(authd, username=a.id, password=a.secret, clientid=a.id).status == 200
    r = goauth_user(authd, username=b.id, password=a.secret, clientid=a.id)
    assert r.status == 403, "a's secret is not b's: %r" % r


def test_emqx_authn_denies_a_certificate_of_a_under_username_b(authd, two_devices):
    a, b = two_devices
    assert emqx_authn(authd, username=a.id, clientid=a.id, cert_pem=a.cert_pem)["result"] == "allow"
    assert emqx_authn(authd, username=b.id, clientid=a.id, cert_pem=a.cert_pem) == {"result": "deny"}
    tok = mint(authd, a)
    assert emqx_authn(authd, username=b.id, clientid=a.id, password=tok) == {"result": "deny"}


def test_vernemq_register_denies_a_token_of_a_under_username_b(authd, two_devices):
    a, b = two_devices
    tok = mint(authd, a)
    assert vmq_register(authd, username=a.id, password=tok, client_id=a.id) == {"result": "ok"}
    assert vmq_register(authd, username=b.id, password=tok, client_id=a.id) == VMQ_DENY


# --------------------------------- a bound token needs its own certificate ----

def test_a_bound_token_with_another_devices_serial_is_denied(authd, two_devices):
    a, b = two_devices
    tok = mint(authd, a)
    assert check(authd, client_id=a.id, password=tok, cert_serial=a.serial)["result"] == "allow"
    r = check(authd, client_id=a.id, password=tok, cert_serial=b.serial)
    assert r["result"] == "deny", "bound to a's certificate, presented with b's serial: %r" % r


def test_a_bound_token_with_its_devices_revoked_other_certificate_is_denied(
        authd, admin, two_devices, devdir):
    a, _ = two_devices
    r = authd.request("POST", "/v1/renew", {"csr": a.new_csr()}, tls=True,
                      client_cert=a.client_cert)
    assert r.status == 201, r
    old = a.with_cert(a.cert_pem)
    renewed = a.with_cert(r.json["certificate"])
    tok = mint(authd, renewed)
    assert admin.post("/v1/certs/%s/revoke" % old.serial, {"reason": "keyCompromise"}).status == 200
    r = check(authd, client_id=a.id, password=tok, cert_serial=old.serial)
    assert r["result"] == "deny", "the token is bound to another certificate: %r" % r


def test_a_bound_token_at_emqx_with_another_cn_is_denied(authd, two_devices):
    a, b = two_devices
    tok = mint(authd, a)
    assert emqx_authn(authd, clientid=a.id, password=tok,
                      cert_common_name=b.id) == {"result": "deny"}


def test_a_bound_token_at_emqx_with_only_a_cn_is_refused(authd, admin, two_devices):
    """A CN cannot say which of the device's certificates was presented:
    a thief holding the token and a sibling certificate revoked for
    keyCompromise would pass. Binding needs the certificate itself."""
    a, _ = two_devices
    r = authd.request("POST", "/v1/renew", {"csr": a.new_csr()}, tls=True,
                      client_cert=a.client_cert)
    assert r.status == 201, r
    renewed = a.with_cert(r.json["certificate"])
    tok = mint(authd, renewed)
    assert admin.post("/v1/certs/%s/revoke" % a.serial, {"reason": "keyCompromise"}).status == 200
    assert emqx_authn(authd, clientid=a.id, password=tok,
                      cert_common_name=a.id) == {"result": "deny"}
    assert emqx_authn(authd, clientid=a.id, password=tok, cert_common_name=a.id,
                      cert_pem=renewed.cert_pem)["result"] == "allow"


def test_emqx_cert_pem_binds_a_token_to_that_exact_certificate(authd, two_devices):
    a, b = two_devices
    tok = mint(authd, a)
    assert emqx_authn(authd, clientid=a.id, password=tok, cert_pem=a.cert_pem,
                      cert_common_name=a.id)["result"] == "allow"
    assert emqx_authn(authd, clientid=a.id, password=tok, cert_pem=b.cert_pem) == {"result": "deny"}


def test_vernemq_client_cert_binds_a_token_to_that_exact_certificate(authd, two_devices):
    a, b = two_devices
    tok = mint(authd, a)
    assert vmq_register(authd, username=a.id, password=tok, client_id=a.id,
                        client_cert=a.cert_pem) == {"result": "ok"}
    assert vmq_register(authd, username=a.id, password=tok, client_id=a.id,
                        client_cert=b.cert_pem) == VMQ_DENY


def test_vernemq_client_cert_alone_identifies_the_device(authd, admin, two_devices):
    a, _ = two_devices
    assert vmq_register(authd, username=a.id, client_id=a.id,
                        client_cert=a.cert_pem) == {"result": "ok"}
    assert admin.post("/v1/certs/%s/revoke" % a.serial, {"reason": "keyCompromise"}).status == 200
    assert vmq_register(authd, username=a.id, client_id=a.id,
                        client_cert=a.cert_pem) == VMQ_DENY


def test_a_certificate_not_issued_here_is_unknown(authd, two_devices):
    a, _ = two_devices
    raw = bytearray(der(a))
    raw[-5] ^= 0xFF  # another signature: a certificate this CA never issued
    forged = "-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % (
        base64.b64encode(bytes(raw)).decode())
    assert emqx_authn(authd, clientid=a.id, cert_pem=forged) == {"result": "deny"}


@pytest.mark.parametrize("garbage", ["", "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
                                     "not a pem", "-----BEGIN CERTIFICATE-----\nQQ=\n"])
def test_a_malformed_cert_pem_is_a_deny_not_an_error(authd, two_devices, garbage):
    a, _ = two_devices
    body = emqx_authn(authd, clientid=a.id, cert_pem=garbage)
    assert body == {"result": "deny"}, body


# ------------------------------------------------ EMQX acl = scope ∩ policy ----

def test_emqx_authn_acl_for_a_scoped_token_is_only_the_scope(authd, two_devices):
    a, _ = two_devices
    topic = "devices/%s/telemetry/temp" % a.id
    tok = mint(authd, a, scope="publish:" + topic)
    ans = emqx_authn(authd, clientid=a.id, password=tok, cert_pem=a.cert_pem)
    assert ans["result"] == "allow", ans
    allows = [(x["action"], x["topic"]) for x in ans["acl"] if x["permission"] == "allow"]
    assert allows == [("publish", topic)], (
        "a token scoped to one topic must not get the whole policy's rules: %r" % ans["acl"])


def test_every_emqx_acl_ends_with_a_deny_all(authd, two_devices):
    a, _ = two_devices
    for ans in (emqx_authn(authd, clientid=a.id, cert_pem=a.cert_pem),
                emqx_authn(authd, clientid=a.id, password=mint(authd, a), cert_pem=a.cert_pem)):
        assert ans["result"] == "allow", ans
        assert ans["acl"][-1] == {"permission": "deny", "action": "all", "topic": "#"}, (
            "EMQX's no_match default is allow: the list must close with a deny-all: %r"
            % ans["acl"])


# ----------------------------------------------------- go-auth acc bounds ----

@pytest.mark.parametrize("acc", ["5", "6", "7", "8", "9", "10", "11", "16", "0", "-1", "+1",
                                 "1.0", "", "x", "04 ", "18446744073709551617"])
def test_go_auth_acl_with_an_acc_outside_1_to_4_is_denied(authd, two_devices, acc):
    a, _ = two_devices
    r = compat(authd, "/compat/mosquitto-go-auth/acl",
               {"username": a.id, "clientid": a.id,
                "topic": "devices/%s/telemetry/t" % a.id, "acc": acc})
    assert r.status == 403 and r.json["ok"] is False, "acc %r is no access type: %r" % (acc, r)


def test_go_auth_acl_with_acc_2_still_allows_an_allowed_publish(authd, two_devices):
    a, _ = two_devices
    r = compat(authd, "/compat/mosquitto-go-auth/acl",
               {"username": a.id, "clientid": a.id,
                "topic": "devices/%s/telemetry/t" % a.id, "acc": 2})
    assert r.status == 200, r


# ------------------------------------------------------ CN-only connects ----

def test_emqx_cn_only_is_refused_by_default(authd, two_devices):
    a, _ = two_devices
    r = compat(authd, "/compat/emqx/authn",
               {"username": "", "password": "", "clientid": a.id, "peerhost": "127.0.0.1",
                "cert_common_name": a.id, "cert_subject": "CN=" + a.id})
    assert r.json == {"result": "deny"}, (
        "a CN cannot say which certificate was presented, revoked or not: %r" % r.json)


def test_vernemq_identity_as_username_without_client_cert_is_refused(authd, two_devices):
    a, _ = two_devices
    assert vmq_register(authd, username=a.id, client_id=a.id) == VMQ_DENY


def test_a_key_compromised_certificate_cannot_get_in_by_cn(authd, admin, two_devices, devdir):
    """The device renews (two valid certificates), then one is revoked for
    keyCompromise: the thief holding it must not get in through a path
    that only carries the CN."""
    a, _ = two_devices
    r = authd.request("POST", "/v1/renew", {"csr": a.new_csr()}, tls=True,
                      client_cert=a.client_cert)
    assert r.status == 201, r
    assert admin.post("/v1/certs/%s/revoke" % a.serial, {"reason": "keyCompromise"}).status == 200
    assert emqx_authn(authd, clientid=a.id, cert_common_name=a.id) == {"result": "deny"}
    assert emqx_authn(authd, clientid=a.id, cert_pem=a.cert_pem,
                      cert_common_name=a.id) == {"result": "deny"}
    assert emqx_authn(authd, clientid=a.id, cert_pem=r.json["certificate"],
                      cert_common_name=a.id)["result"] == "allow"


def test_cn_only_connects_work_when_the_operator_opts_in(spawn_authd, devdir):
    d = spawn_authd(extra_args=["--trust-cn-only", "true"])
    api = Api(d, d.admin_key)
    grp = make_group(api)
    enr = create_enrollment(api, groups=[grp])
    dev, r = enroll(d, enr["token"], uid("cn-"), devdir)
    assert r.status == 201, r
    ans = emqx_authn(d, clientid=dev.id, cert_common_name=dev.id)
    assert ans["result"] == "allow", "trust_cn_only = true restores CN-only connects: %r" % ans
    assert vmq_register(d, username=dev.id, client_id=dev.id) == {"result": "ok"}
    assert api.post("/v1/devices/%s/revoke" % dev.id, {"reason": "keyCompromise"}).status == 200
    assert emqx_authn(d, clientid=dev.id, cert_common_name=dev.id) == {"result": "deny"}

