"""§7 access tokens and device secrets, §8 checks with a JWT password.

A device trades its client certificate (mTLS) or its device secret (HTTP
Basic) for a short-lived ES256 JWT; brokers verify it against the JWKS,
ask /v1/introspect, or pass it as the MQTT password to /v1/check. Every
token here is verified with PyJWT against the published JWKS, so these
tests do not trust the daemon's own verifier to judge its own tokens.
Forged tokens are built with PyJWT and python3-cryptography; a token we
sign ourselves with the daemon's real key and correct claims is the
control that shows each forgery is refused for the reason it names."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import sealed_keys  # noqa: E402
from authd_harness import (Api, assert_error, basic, create_enrollment,
                           enroll, load_cert, uid)

# Telemetry to publish, commands to subscribe to and receive, $SYS denied,
# and a "state" subtree that is allowed except for one topic, so that a
# scope asking for the whole subtree is not allowed in full.
POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/state/#"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
    {"effect": "deny", "actions": ["publish"], "topics": ["devices/${device.id}/state/locked"]},
]}

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope", "client_id")
DEFAULT_ISSUER = "authd"      # no public_url, no token_issuer
DEFAULT_AUDIENCE = "authd"
DEFAULT_TTL = 3600


# ------------------------------------------------------------ fixtures ----

def make_group(api):
    pol, grp = uid("pol-tok-"), uid("grp-tok-")
    r = api.put("/v1/policies/" + pol, POLICY)
    assert r.status == 201, "PUT policy: %r" % r
    r = api.put("/v1/groups/" + grp, {"policies": [pol]})
    assert r.status == 201, "PUT group: %r" % r
    return grp


@pytest.fixture(scope="module")
def group(admin):
    return make_group(admin)


def enroll_in(daemon, api, grp, devdir, prefix="tok-"):
    enr = create_enrollment(api, groups=[grp])
    dev, r = enroll(daemon, enr["token"], uid(prefix), devdir)
    assert r.status == 201, "POST /v1/enroll: %r" % r
    return dev


@pytest.fixture
def cert_device(authd, admin, group, devdir):
    """cert_device() -> an enrolled Device in the token group."""
    return lambda: enroll_in(authd, admin, group, devdir)


def add_secret(api, device_id):
    r = api.post("/v1/devices/%s/secret" % device_id)
    assert r.status == 201, "POST /v1/devices/{id}/secret: %r" % r
    assert r.json.get("device_id") == device_id, r
    return r.json["secret"]


@pytest.fixture
def secret_device(admin, group):
    """secret_device() -> (device id, secret): a device without a
    certificate, in the token group, with a fresh device secret."""

    def make():
        did = uid("sec-")
        r = admin.post("/v1/devices", {"id": did, "groups": [group]})
        assert r.status == 201, "POST /v1/devices: %r" % r
        return did, add_secret(admin, did)

    return make


# ------------------------------------------------------------- helpers ----

def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(obj):
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def leaf_der(dev):
    return load_cert(dev.cert_pem).public_bytes(serialization.Encoding.DER)


def thumbprint(dev):
    """RFC 8705 x5t#S256: base64url SHA-256 of the certificate DER."""
    return b64url(hashlib.sha256(leaf_der(dev)).digest())


def fingerprint_hex(dev):
    return hashlib.sha256(leaf_der(dev)).hexdigest()


def token_request(daemon, body, *, client_cert=None, headers=None, tls=True, form=True):
    hdrs = dict(headers or {})
    if form and isinstance(body, dict):
        from urllib.parse import urlencode
        body = urlencode(body)
        hdrs.update(FORM)
    return daemon.request("POST", "/v1/token", body, tls=tls,
                          client_cert=client_cert, headers=hdrs)


def mint(daemon, dev, scope=None, form=True):
    """An mTLS token for dev; returns the 200 body."""
    body = {"grant_type": "client_credentials"}
    if scope is not None:
        body["scope"] = scope
    r = token_request(daemon, body, client_cert=dev.client_cert, form=form)
    assert r.status == 200, "POST /v1/token with the device certificate: %r" % r
    return r.json


def mint_basic(daemon, device_id, secret, scope=None):
    body = {"grant_type": "client_credentials"}
    if scope is not None:
        body["scope"] = scope
    r = token_request(daemon, body, tls=False, headers=basic(device_id, secret))
    assert r.status == 200, "POST /v1/token with Basic device-id:secret: %r" % r
    return r.json


def jwks(daemon, path="/.well-known/jwks.json", port=None):
    r = daemon.request("GET", path, port=port)
    assert r.status == 200, "GET %s: %r" % (path, r)
    assert isinstance(r.json, dict) and isinstance(r.json.get("keys"), list), r
    return r.json


def jwk_for(daemon, token):
    kid = jwt.get_unverified_header(token)["kid"]
    keys = [k for k in jwks(daemon)["keys"] if k.get("kid") == kid]
    assert len(keys) == 1, "exactly one JWKS key has kid %r: %r" % (kid, jwks(daemon))
    return keys[0]


def pyjwt_verify(daemon, token, audience=DEFAULT_AUDIENCE, issuer=DEFAULT_ISSUER):
    """Verifies like an independent resource server: the JWKS key named by
    kid, ES256 only, signature, exp/nbf/iat, aud and iss required."""
    key = jwt.PyJWK(jwk_for(daemon, token), algorithm="ES256").key
    return jwt.decode(token, key, algorithms=["ES256"], audience=audience,
                      issuer=issuer,
                      options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})


def introspect(daemon, access_token, form=True, api_key=None, port=None):
    """POST /v1/introspect, on the check listener (no credential needed)
    unless a port is given."""
    port = port or daemon.check_port
    if form:
        from urllib.parse import urlencode
        return daemon.request("POST", "/v1/introspect", urlencode({"token": access_token}),
                              headers=FORM, token=api_key, port=port)
    return daemon.request("POST", "/v1/introspect", {"token": access_token},
                          token=api_key, port=port)


def active(daemon, token):
    r = introspect(daemon, token)
    assert r.status == 200, "introspection always answers 200 for a token: %r" % r
    assert isinstance(r.json.get("active"), bool), r
    return r.json


def check(daemon, body):
    r = daemon.request("POST", "/v1/check", body, port=daemon.check_port)
    assert r.status == 200, "a check decision is always a 200: %r" % r
    return r.json


def connect_with(daemon, device_id, password, **extra):
    body = {"action": "connect", "client_id": device_id, "password": password}
    body.update(extra)
    return check(daemon, body)


def signing_key(daemon, kid):
    """The daemon's private key for kid, unsealed from the store with
    DATA/seal.key: lets the tests forge tokens that differ from real ones
    in one claim."""
    return sealed_keys.signing_key(daemon.data, kid)


def claims_for(device_id, **override):
    now = int(time.time())
    c = {"iss": DEFAULT_ISSUER, "sub": device_id, "aud": DEFAULT_AUDIENCE,
         "iat": now, "nbf": now, "exp": now + 600, "jti": uid("forged-"),
         "scope": "publish:devices/%s/telemetry/#" % device_id,
         "client_id": device_id}
    c.update(override)
    return c


def es256(claims, key, kid):
    return jwt.encode(claims, key, algorithm="ES256",
                      headers={"kid": kid, "typ": "at+jwt"})


# --------------------------------------------------- minting with mTLS ----

@pytest.mark.parametrize("form", [True, False], ids=["form", "json"])
def test_a_device_trades_its_certificate_for_a_bearer_token(authd, cert_device, form):
    dev = cert_device()
    body = mint(authd, dev, form=form)
    assert set(body) >= {"access_token", "token_type", "expires_in", "scope"}, (
        "the RFC 6749 token answer: %r" % body)
    assert body["token_type"] == "Bearer", body
    assert body["expires_in"] == DEFAULT_TTL, "token_ttl defaults to 3600 s: %r" % body
    assert isinstance(body["access_token"], str) and body["access_token"].count(".") == 2, (
        "the token is a compact JWS: %r" % body)


def test_the_token_verifies_with_an_independent_jwt_library_against_the_jwks(authd, cert_device):
    dev = cert_device()
    body = mint(authd, dev)
    tok = body["access_token"]

    hdr = jwt.get_unverified_header(tok)
    assert hdr.get("alg") == "ES256" and hdr.get("typ") == "at+jwt", (
        "RFC 9068 access tokens say typ at+jwt; we sign ES256 only: %r" % hdr)
    assert isinstance(hdr.get("kid"), str) and hdr["kid"], "brokers pick the key by kid: %r" % hdr

    claims = pyjwt_verify(authd, tok)  # signature, exp, nbf, iat, aud, iss
    for c in CLAIMS + ("cnf", "acl"):
        assert c in claims, "claim %r must be present: %r" % (c, claims)
    assert claims["sub"] == dev.id and claims["client_id"] == dev.id, (
        "the subject is the device that authenticated: %r" % claims)
    assert claims["exp"] - claims["iat"] == body["expires_in"], (
        "expires_in is the token's real lifetime: %r vs %r" % (body, claims))
    assert claims["nbf"] <= time.time() + 1 and abs(claims["iat"] - time.time()) < 60, claims
    assert claims["scope"] == body["scope"], "the answer's scope is the token's scope"

    other = pyjwt_verify(authd, mint(authd, dev)["access_token"])
    assert other["jti"] != claims["jti"], "every token has its own jti, or revoking one revokes both"


def test_the_jwks_publishes_p256_public_keys_only_on_every_listener(authd):
    doc = jwks(authd)
    assert doc["keys"], "at least the signing key is published"
    for k in doc["keys"]:
        assert k.get("kty") == "EC" and k.get("crv") == "P-256", k
        assert k.get("alg") == "ES256" and k.get("use") == "sig" and k.get("kid"), k
        assert "d" not in k, "the private scalar must never be published: %r" % k
        assert len(base64.urlsafe_b64decode(k["x"] + "==")) == 32, k
    for path, port in (("/v1/jwks", None), ("/.well-known/jwks.json", authd.check_port),
                       ("/v1/jwks", authd.check_port)):
        assert jwks(authd, path, port) == doc, (
            "brokers fetch the same key set at %s on port %s" % (path, port))


def test_cnf_binds_the_token_to_the_sha256_of_the_client_certificate(authd, cert_device):
    dev = cert_device()
    claims = pyjwt_verify(authd, mint(authd, dev)["access_token"])
    assert claims.get("cnf") == {"x5t#S256": thumbprint(dev)}, (
        "RFC 8705: x5t#S256 is base64url SHA-256 of the certificate DER (%s): %r"
        % (thumbprint(dev), claims.get("cnf")))


# ------------------------------------------------------------- scopes ----

def test_without_a_requested_scope_the_token_gets_all_the_policy_grants_in_full(authd, cert_device):
    dev = cert_device()
    d = dev.id
    scope = mint(authd, dev)["scope"].split(" ")
    assert scope == ["publish:devices/%s/telemetry/#" % d, "subscribe:devices/%s/cmd/+" % d,
                     "receive:devices/%s/cmd/+" % d], (
        "every allowed publish/subscribe/receive filter, in policy order; "
        "state/# is left out because a deny cuts into it: %r" % scope)


def test_a_requested_scope_is_narrowed_to_what_the_policy_allows_in_full(authd, cert_device):
    dev = cert_device()
    d = dev.id
    asked = " ".join(["publish:devices/%s/telemetry/temp" % d,
                      "subscribe:devices/%s/cmd/+" % d,
                      "publish:devices/other/telemetry/temp",    # not this device's
                      "publish:devices/%s/state/#" % d,          # a deny cuts into it
                      "publish:devices/%s/state/temp" % d])
    body = mint(authd, dev, scope=asked)
    assert body["scope"].split(" ") == ["publish:devices/%s/telemetry/temp" % d,
                                        "subscribe:devices/%s/cmd/+" % d,
                                        "publish:devices/%s/state/temp" % d], (
        "granted = requested items the policy allows for every topic they match: %r" % body)
    assert pyjwt_verify(authd, body["access_token"])["scope"] == body["scope"]


def test_a_check_with_a_token_is_decided_by_scope_and_policy_together(authd, cert_device):
    dev = cert_device()
    d = dev.id
    tok = mint(authd, dev, scope="publish:devices/%s/telemetry/temp" % d)["access_token"]

    def pub(topic):
        return check(authd, {"action": "publish", "client_id": d, "password": tok, "topic": topic})

    r = pub("devices/%s/telemetry/temp" % d)
    assert r["result"] == "allow" and r["device"] == d, "inside scope and policy: %r" % r
    r = pub("devices/%s/telemetry/humidity" % d)
    assert r["result"] == "deny" and r["reason"] == "outside_token_scope", (
        "the policy allows it, the narrower token does not: %r" % r)
    r = pub("devices/other/telemetry/temp")
    assert r["result"] == "deny" and r["reason"] != "outside_token_scope", (
        "the policy itself refuses this one, so it is not a scope matter: %r" % r)


def test_a_scope_the_policy_allows_none_of_is_403(authd, cert_device):
    dev = cert_device()
    r = token_request(authd, {"grant_type": "client_credentials",
                              "scope": "publish:elsewhere/# subscribe:$SYS/#"},
                      client_cert=dev.client_cert)
    assert_error(r, 403, "forbidden")


@pytest.mark.parametrize("body", [
    {},
    {"grant_type": "password"},
    {"grant_type": "authorization_code", "scope": "publish:x"},
    {"grant_type": "client_credentials", "scope": "no-colon-here"},
    {"grant_type": "client_credentials", "scope": "connect:x"},
    {"grant_type": "client_credentials", "scope": "publish:a/#/b"},
], ids=["no-grant", "password-grant", "code-grant", "scope-no-colon",
        "scope-connect", "scope-bad-filter"])
def test_a_bad_grant_or_scope_is_400(authd, cert_device, body):
    dev = cert_device()
    r = token_request(authd, body, client_cert=dev.client_cert)
    assert_error(r, 400, "invalid_field")


def test_without_a_credential_the_token_endpoint_is_401(authd):
    r = token_request(authd, {"grant_type": "client_credentials"})
    assert_error(r, 401)
    r = token_request(authd, {"grant_type": "client_credentials"}, tls=False)
    assert_error(r, 401)
    assert r.headers.get("www-authenticate", "").startswith("Basic"), (
        "a 401 names the scheme a device can use: %r" % r.headers)


def test_the_acl_claim_is_emqx_rules_with_the_policy_denies_first(authd, cert_device):
    dev = cert_device()
    d = dev.id
    claims = pyjwt_verify(authd, mint(authd, dev)["access_token"])
    acl = claims["acl"]
    want = [
        {"permission": "deny", "action": "publish", "topic": "$SYS/#"},
        {"permission": "deny", "action": "subscribe", "topic": "$SYS/#"},
        {"permission": "deny", "action": "publish", "topic": "devices/%s/state/locked" % d},
        {"permission": "allow", "action": "publish", "topic": "devices/%s/telemetry/#" % d},
        {"permission": "allow", "action": "subscribe", "topic": "devices/%s/cmd/+" % d},
        # EMQX's no_match default is allow: nothing else by omission.
        {"permission": "deny", "action": "all", "topic": "#"},
    ]
    assert acl == want, (
        "EMQX takes the first matching rule, so every deny comes before the "
        "granted allows; receive has no EMQX rule:\n got %s\nwant %s"
        % (json.dumps(acl), json.dumps(want)))


# ----------------------------------------------------- /v1/check + JWT ----

def test_connect_with_a_token_is_allowed_until_its_exp_and_carries_the_scope(authd, cert_device):
    dev = cert_device()
    body = mint(authd, dev)
    claims = pyjwt_verify(authd, body["access_token"])
    r = connect_with(authd, dev.id, body["access_token"])
    assert r["result"] == "allow" and r["device"] == dev.id, r
    assert r.get("expire_at") == claims["exp"], (
        "the broker ends the session when the token ends: %r" % r)
    assert r.get("scope") == claims["scope"], (
        "a plugin deciding locally narrows the statements by the scope: %r" % r)
    assert 0 < r["ttl"] <= claims["exp"] - time.time() + 1, r

    r = connect_with(authd, dev.id + "-x", body["access_token"])
    assert r["result"] == "deny", "the policy still decides the client id: %r" % r


def test_a_bound_token_with_another_certificates_fingerprint_is_refused(authd, cert_device):
    dev, other = cert_device(), cert_device()
    tok = mint(authd, dev)["access_token"]
    r = connect_with(authd, dev.id, tok, cert_fingerprint=fingerprint_hex(dev))
    assert r["result"] == "allow", "the token with its own certificate: %r" % r
    r = connect_with(authd, dev.id, tok, cert_fingerprint=fingerprint_hex(other))
    assert r["result"] == "deny" and r["reason"] == "token_certificate_mismatch", (
        "a stolen bound token is useless with another certificate: %r" % r)


# ------------------------------------------------------- introspection ----

def test_introspection_describes_an_active_token(authd, cert_device):
    dev = cert_device()
    tok = mint(authd, dev)["access_token"]
    claims = pyjwt_verify(authd, tok)
    for form in (True, False):
        r = introspect(authd, tok, form=form)
        assert r.status == 200, r
        got = r.json
        assert got.get("active") is True, "a fresh token is active (%s body): %r" % (
            "form" if form else "JSON", got)
        for f in ("sub", "scope", "exp", "iat", "jti", "client_id", "iss", "aud"):
            assert got.get(f) == claims[f], "introspection %r must equal the claim: %r vs %r" % (
                f, got, claims)
        assert got.get("cnf") == claims["cnf"] and got.get("token_type") == "Bearer", got


def test_introspection_on_the_main_listener_needs_a_broker_key(authd, cert_device, role_key):
    tok = mint(authd, cert_device())["access_token"]
    assert_error(introspect(authd, tok, port=authd.http_port), 401)
    r = introspect(authd, tok, port=authd.http_port, api_key=role_key("broker"))
    assert r.status == 200 and r.json.get("active") is True, r


@pytest.mark.parametrize("garbage", ["x", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA", "a.b.c.d",
                                     "eyJ" + "A" * 9000])
def test_introspection_of_garbage_is_inactive(authd, garbage):
    r = introspect(authd, garbage)
    assert r.status == 200 and r.json == {"active": False}, (
        "RFC 7662: anything not a valid token is just inactive, nothing more: %r" % r)


def test_introspection_without_a_token_is_400(authd):
    r = authd.request("POST", "/v1/introspect", "", headers=FORM, port=authd.check_port)
    assert_error(r, 400)


def test_a_revoked_jti_is_inactive_and_refused_even_after_a_cached_check(authd, admin, cert_device):
    dev = cert_device()
    tok = mint(authd, dev)["access_token"]
    sibling = mint(authd, dev)["access_token"]
    jti = pyjwt_verify(authd, tok)["jti"]
    assert connect_with(authd, dev.id, tok)["result"] == "allow", "warm the token cache first"

    r = admin.post("/v1/tokens/revoke", {"jti": jti})
    assert r.status == 200, "POST /v1/tokens/revoke: %r" % r
    assert active(authd, tok) == {"active": False}, "revocation bites at introspection at once"
    r = connect_with(authd, dev.id, tok)
    assert r["result"] == "deny" and r["reason"] == "token_revoked", (
        "a cached allow must not outlive a revocation: %r" % r)
    assert active(authd, sibling)["active"] is True, (
        "revoking one jti leaves the device's other tokens alone")


def test_revoking_without_a_jti_is_400(admin):
    assert_error(admin.post("/v1/tokens/revoke", {}), 400)
    assert_error(admin.post("/v1/tokens/revoke", {"jti": 42}), 400)


def test_suspending_a_device_deactivates_its_tokens_and_resuming_restores_them(
        authd, admin, cert_device):
    dev = cert_device()
    tok = mint(authd, dev)["access_token"]
    assert connect_with(authd, dev.id, tok)["result"] == "allow"

    assert admin.patch("/v1/devices/" + dev.id, {"status": "suspended"}).status == 200
    assert active(authd, tok) == {"active": False}, "a suspended device's tokens stop at once"
    r = connect_with(authd, dev.id, tok)
    assert r["result"] == "deny" and r["reason"] == "device_suspended", r
    assert_error(token_request(authd, {"grant_type": "client_credentials"},
                               client_cert=dev.client_cert), 403, "device_suspended")

    assert admin.patch("/v1/devices/" + dev.id, {"status": "active"}).status == 200
    assert active(authd, tok)["active"] is True, "the token was never revoked: resuming restores it"
    assert connect_with(authd, dev.id, tok)["result"] == "allow"


def test_revoking_a_device_ends_its_tokens_for_good(authd, admin, cert_device):
    dev = cert_device()
    tok = mint(authd, dev)["access_token"]
    assert connect_with(authd, dev.id, tok)["result"] == "allow", "cache it"
    r = admin.post("/v1/devices/%s/revoke" % dev.id, {"reason": "keyCompromise"})
    assert r.status == 200, "POST /v1/devices/{id}/revoke: %r" % r
    assert active(authd, tok) == {"active": False}, "a revoked device's tokens stop at once"
    r = connect_with(authd, dev.id, tok)
    assert r["result"] == "deny" and r["reason"] == "device_revoked", r


def test_deleting_a_device_ends_its_tokens_even_if_the_id_is_reused(
        authd, admin, group, cert_device):
    dev = cert_device()
    tok = mint(authd, dev)["access_token"]
    assert connect_with(authd, dev.id, tok)["result"] == "allow", "cache it"
    assert admin.delete("/v1/devices/" + dev.id).status in (200, 204)
    assert active(authd, tok) == {"active": False}, "a deleted device's token is over"
    assert connect_with(authd, dev.id, tok)["result"] == "deny"

    # Deleting revokes the certificates so that they cannot come back to
    # life under a new device of the same id; its tokens must not either.
    r = admin.post("/v1/devices", {"id": dev.id, "groups": [group]})
    assert r.status == 201, r
    got = active(authd, tok)["active"]
    r = connect_with(authd, dev.id, tok)
    assert got is False and r["result"] == "deny", (
        "a token minted for the deleted device must stay dead when the id is "
        "reused: introspect active=%r, check %s/%s" % (got, r["result"], r["reason"]))


def test_revoked_jtis_stay_revoked_after_a_restart(spawn_authd, devdir, tmp_path):
    data = str(tmp_path / "rev")
    d = spawn_authd(data_dir=data)
    api = Api(d, d.admin_key)
    dev = enroll_in(d, api, make_group(api), devdir)
    tok, keep = mint(d, dev)["access_token"], mint(d, dev)["access_token"]
    r = api.post("/v1/tokens/revoke", {"jti": pyjwt_verify(d, tok)["jti"]})
    assert r.status == 200, r
    d.stop_and_check()
    d2 = spawn_authd(data_dir=data)
    assert active(d2, tok) == {"active": False}, "revocations are stored, not only remembered"
    r = connect_with(d2, dev.id, tok)
    assert r["result"] == "deny" and r["reason"] == "token_revoked", r
    assert active(d2, keep)["active"] is True, "the other token is untouched"


def test_a_token_is_inactive_once_its_ttl_has_passed(spawn_authd, devdir):
    d = spawn_authd(extra_args=["--token-ttl", "2"])
    api = Api(d, d.admin_key)
    dev = enroll_in(d, api, make_group(api), devdir)
    body = mint(d, dev)
    assert body["expires_in"] == 2, "--token-ttl sets the lifetime: %r" % body
    claims = pyjwt_verify(d, body["access_token"])
    assert claims["exp"] - claims["iat"] == 2, claims
    assert active(d, body["access_token"])["active"] is True
    assert connect_with(d, dev.id, body["access_token"])["result"] == "allow", "cache it"

    time.sleep(max(0.0, claims["exp"] + 1.5 - time.time()))
    got = active(d, body["access_token"])["active"]
    r = connect_with(d, dev.id, body["access_token"])
    assert got is False, (
        "RFC 7662: a token past its exp (%d, now %d) is not active; the issuer "
        "is the only clock here, so clock-skew leeway does not apply: "
        "introspect active=%r, check %s/%s ttl %s expire_at %s"
        % (claims["exp"], time.time(), got, r["result"], r["reason"], r["ttl"],
           r.get("expire_at")))
    assert r["result"] == "deny" and r["reason"] == "token_expired", (
        "a broker must not admit a session with an expired token: %r" % r)


# ------------------------------------------------------ forged tokens ----

def _forge(kind, authd, dev, real):
    hdr = jwt.get_unverified_header(real)
    kid = hdr["kid"]
    key = signing_key(authd, kid)
    if kind == "control":
        # Correct claims include the device incarnation the daemon binds
        # its tokens to (private claim authd_dev), copied from a real one.
        c = claims_for(dev.id)
        c["authd_dev"] = jwt.decode(real, options={"verify_signature": False})["authd_dev"]
        return es256(c, key, kid)
    if kind == "other-key-same-kid":
        return es256(claims_for(dev.id), ec.generate_private_key(ec.SECP256R1()), kid)
    if kind == "unknown-kid":
        return es256(claims_for(dev.id), key, "no-such-kid")
    if kind == "alg-none":
        head = b64url_json({"alg": "none", "typ": "at+jwt", "kid": kid})
        return head + "." + b64url_json(claims_for(dev.id)) + "."
    if kind == "hs256-with-public-key":
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input = (b64url_json({"alg": "HS256", "typ": "at+jwt", "kid": kid}) + "."
                         + b64url_json(claims_for(dev.id)))
        mac = hmac.new(pub, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url(mac)
    if kind == "expired":
        now = int(time.time())
        return es256(claims_for(dev.id, iat=now - 7200, nbf=now - 7200, exp=now - 3600), key, kid)
    if kind == "tampered-payload":
        h, p, s = real.split(".")
        claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        claims["scope"] = "publish:# subscribe:#"
        return h + "." + b64url_json(claims) + "." + s
    if kind == "other-audience":
        return es256(claims_for(dev.id, aud="some-other-service"), key, kid)
    if kind == "other-issuer":
        return es256(claims_for(dev.id, iss="https://issuer.example"), key, kid)
    if kind == "not-yet-valid":
        return es256(claims_for(dev.id, nbf=int(time.time()) + 3600), key, kid)
    if kind == "no-exp":
        c = claims_for(dev.id)
        del c["exp"]
        return es256(c, key, kid)
    raise ValueError(kind)


def test_a_token_signed_with_the_real_key_and_correct_claims_is_accepted(authd, cert_device):
    # The control for the forgeries below: the forging code itself is right.
    dev = cert_device()
    tok = _forge("control", authd, dev, mint(authd, dev)["access_token"])
    assert active(authd, tok)["active"] is True
    assert connect_with(authd, dev.id, tok)["result"] == "allow"


@pytest.mark.parametrize("kind", ["other-key-same-kid", "unknown-kid", "alg-none",
                                  "hs256-with-public-key", "expired", "tampered-payload",
                                  "other-audience", "other-issuer", "not-yet-valid",
                                  "no-exp"])
def test_a_forged_token_is_inactive_and_refused_at_check(authd, cert_device, kind):
    dev = cert_device()
    tok = _forge(kind, authd, dev, mint(authd, dev)["access_token"])
    assert active(authd, tok) == {"active": False}, "%s must be inactive" % kind
    r = connect_with(authd, dev.id, tok)
    want = "token_expired" if kind == "expired" else "invalid_token"
    assert r["result"] == "deny" and r["reason"] == want, (
        "%s must be refused as %s: %r" % (kind, want, r))
    r = check(authd, {"action": "publish", "client_id": dev.id, "password": tok,
                      "topic": "devices/%s/telemetry/x" % dev.id})
    assert r["result"] == "deny", "%s must not authorise a publish either: %r" % (kind, r)


# ------------------------------------------------------------ rotation ----

def test_rotation_signs_with_a_new_kid_keeps_old_tokens_valid_and_survives_restart(
        spawn_authd, devdir, tmp_path):
    data = str(tmp_path / "rot")
    d = spawn_authd(data_dir=data)
    api = Api(d, d.admin_key)
    dev = enroll_in(d, api, make_group(api), devdir)
    old = mint(d, dev)["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]

    r = api.post("/v1/token-keys")
    assert r.status == 201 and r.json.get("kid"), "POST /v1/token-keys: %r" % r
    new_kid = r.json["kid"]
    assert new_kid != old_kid, "a rotation makes a new key"
    recs, signing = sealed_keys.token_key_records(data)
    assert new_kid in recs and signing == new_kid, (
        "the new key is kept in the store and signs: %r %r" % (sorted(recs), signing))
    assert "PRIVATE KEY" not in json.dumps(recs[new_kid]), "it is kept sealed only"

    new = mint(d, dev)["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid, "new tokens carry the new kid"
    kids = {k["kid"] for k in jwks(d)["keys"]}
    assert {old_kid, new_kid} <= kids, "the JWKS lists the old key until its tokens end: %r" % kids
    for tok in (old, new):
        pyjwt_verify(d, tok)
        assert active(d, tok)["active"] is True
        assert connect_with(d, dev.id, tok)["result"] == "allow"

    d.stop_and_check()
    d2 = spawn_authd(data_dir=data)
    assert {old_kid, new_kid} <= {k["kid"] for k in jwks(d2)["keys"]}, "keys persist"
    for tok in (old, new):
        pyjwt_verify(d2, tok)
        assert active(d2, tok)["active"] is True, "tokens outlive a restart"
    assert jwt.get_unverified_header(mint(d2, dev)["access_token"])["kid"] == new_kid, (
        "the rotated key is still the signing key after a restart")


def test_only_an_admin_may_rotate_the_signing_key(authd, role_key):
    r = authd.request("POST", "/v1/token-keys", token=role_key("broker"))
    assert_error(r, 403, "forbidden")
    assert_error(authd.request("POST", "/v1/token-keys"), 401)


# ------------------------------------------------------- device secrets ----

def test_a_device_secret_is_shown_once_and_opens_check_and_the_compat_endpoints(
        authd, secret_device):
    did, secret = secret_device()
    assert isinstance(secret, str) and len(secret) >= 32, "a secret worth guessing: %r" % secret

    r = connect_with(authd, did, secret, username=did)
    assert r["result"] == "allow" and r["device"] == did, r
    r = connect_with(authd, did, secret + "x", username=did)
    assert r["result"] == "deny" and r["reason"] == "invalid_credential", r

    def post(path, body):
        return authd.request("POST", path, body, port=authd.check_port)

    r = post("/compat/mosquitto-go-auth/user", {"username": did, "password": secret, "clientid": did})
    assert r.status == 200 and r.json == {"ok": True, "error": ""}, r
    r = post("/compat/mosquitto-go-auth/user", {"username": did, "password": "wrong", "clientid": did})
    assert r.status == 403 and r.json.get("ok") is False, r

    emqx = {"username": did, "password": secret, "clientid": did, "peerhost": "127.0.0.1",
            "cert_common_name": "", "cert_subject": ""}
    r = post("/compat/emqx/authn", emqx)
    assert r.status == 200 and r.json.get("result") == "allow", r
    r = post("/compat/emqx/authn", dict(emqx, password="wrong"))
    assert r.status == 200 and r.json.get("result") == "deny", r

    vmq = {"peer_addr": "127.0.0.1", "peer_port": 50123, "username": did, "password": secret,
           "mountpoint": "", "client_id": did, "clean_session": True}
    r = post("/compat/vernemq/auth_on_register", vmq)
    assert r.status == 200 and r.json == {"result": "ok"}, r
    r = post("/compat/vernemq/auth_on_register", dict(vmq, password="wrong"))
    assert r.status == 200 and r.json == {"result": {"error": "not_allowed"}}, r


def test_secret_for_an_unknown_device_is_404(admin):
    assert_error(admin.post("/v1/devices/%s/secret" % uid("nobody-")), 404)


def test_a_new_secret_replaces_the_old_one(authd, admin, secret_device):
    did, old = secret_device()
    assert connect_with(authd, did, old, username=did)["result"] == "allow", "cache the old one"
    new = add_secret(admin, did)
    assert new != old
    r = connect_with(authd, did, old, username=did)
    assert r["result"] == "deny" and r["reason"] == "invalid_credential", (
        "the replaced secret stops working at once, cached or not: %r" % r)
    assert connect_with(authd, did, new, username=did)["result"] == "allow"
    assert_error(token_request(authd, {"grant_type": "client_credentials"}, tls=False,
                               headers=basic(did, old)), 401, "invalid_credential")


def test_basic_device_secret_at_the_token_endpoint_gives_a_token_without_cnf(
        authd, secret_device):
    did, secret = secret_device()
    for tls in (False, True):
        r = token_request(authd, {"grant_type": "client_credentials"}, tls=tls,
                          headers=basic(did, secret))
        assert r.status == 200, "Basic works on either main listener (tls=%s): %r" % (tls, r)
        claims = pyjwt_verify(authd, r.json["access_token"])
        assert claims["sub"] == did and "cnf" not in claims, (
            "no certificate, no binding: %r" % claims)
        got = active(authd, r.json["access_token"])
        assert got["active"] is True and "cnf" not in got, got
        assert connect_with(authd, did, r.json["access_token"])["result"] == "allow"

    r = token_request(authd, {"grant_type": "client_credentials"}, tls=False,
                      headers=basic(did, "not-the-secret"))
    assert_error(r, 401, "invalid_credential")
    assert r.headers.get("www-authenticate", "").startswith("Basic"), r.headers


def test_repeated_secret_checks_pay_argon2_only_once(authd, secret_device):
    did, secret = secret_device()
    body = json.dumps({"action": "connect", "client_id": did, "username": did,
                       "password": secret})
    conn = http.client.HTTPConnection("127.0.0.1", authd.check_port, timeout=30)
    try:
        def one():
            conn.request("POST", "/v1/check", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            got = json.loads(r.read())
            assert r.status == 200 and got["result"] == "allow", got

        t0 = time.monotonic()
        one()  # pays argon2id
        first = time.monotonic() - t0
        n = 20
        t0 = time.monotonic()
        for _ in range(n):
            one()
        avg = (time.monotonic() - t0) / n
    finally:
        conn.close()
    assert avg < 0.020, (
        "a known-good secret is answered from the MAC cache, not argon2id again: "
        "first %.1f ms, then %.1f ms on average" % (first * 1000, avg * 1000))


def test_a_token_for_a_policy_of_seventy_topics_is_accepted_where_it_is_checked(
        authd, admin, devdir):
    """Minting and verifying share one scope implementation and one bound:
    a token authd mints is never one its own check refuses."""
    pol, grp = uid("pol-70-"), uid("grp-70-")
    doc = {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
        {"effect": "allow", "actions": ["publish"],
         "topics": ["devices/${device.id}/t%d" % i for i in range(70)]}]}
    assert admin.put("/v1/policies/" + pol, doc).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    dev = enroll_in(authd, admin, grp, devdir, prefix="t70-")
    tok = mint(authd, dev)
    assert len(tok["scope"].split(" ")) == 70, tok["scope"]
    r = connect_with(authd, dev.id, tok["access_token"])
    assert r["result"] == "allow", "the verifier accepts what the minter granted: %r" % r
