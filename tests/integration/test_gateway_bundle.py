"""§12 offline gateway bundles: GET /v1/gateway/bundle fetched over HTTPS
with the gateway's client certificate (curl) and with its access token,
verified independently (python3-jwt against /.well-known/jwks.json), and
then the agreement that matters: thousands of random decisions for the
gateway, its children and unknown devices answered by the daemon
(/v1/policies/explain) and offline by `authd-gw decide --batch` must be
the same. Expired, tampered and unknown-key bundles are refused with exit
2. All through public interfaces of a real daemon and the real CLI."""

import base64
import json
import os
import random
import subprocess

import jwt
import pytest

from authd_harness import assert_error, basic, create_enrollment, enroll, run, uid

N_CHILDREN = 50
N_DECISIONS = 3000


def gw_bin():
    path = os.environ.get("AUTHD_GW_BIN")
    if not path:
        # Beside the daemon in the build tree, as meson lays it out.
        path = os.path.join(os.path.dirname(os.environ.get("AUTHD_BIN", "")),
                            "..", "clients", "gateway", "authd-gw")
    return os.path.abspath(path)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def gateway_policy():
    return {"statements": [
        {"effect": "allow", "actions": ["connect"],
         "client_ids": ["${device.id}", "${device.id}-*"]},
        {"effect": "allow", "actions": ["publish", "subscribe", "receive"],
         "topics": ["gateways/${device.id}/#"]},
        {"effect": "deny", "actions": ["publish", "subscribe"],
         "topics": ["gateways/${device.id}/secret/#"]},
        {"effect": "allow", "actions": ["publish"],
         "topics": ["devices/${child.id}/telemetry/#"]},
        {"effect": "allow", "actions": ["subscribe", "receive"],
         "topics": ["devices/${child.id}/cmd/+"]},
    ]}


def child_policy():
    return {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
        {"effect": "allow", "actions": ["publish"],
         "topics": ["devices/${device.id}/telemetry/#"]},
        {"effect": "deny", "actions": ["publish"],
         "topics": ["devices/${device.id}/telemetry/forbidden"]},
        {"effect": "allow", "actions": ["subscribe", "receive"],
         "topics": ["devices/${device.id}/cmd/+"]},
    ]}


def group_policy():
    return {"statements": [
        {"effect": "allow", "actions": ["publish", "subscribe", "receive"],
         "topics": ["groups/${group}/${device.id}/#", "fleet/${group}/+"]},
        {"effect": "deny", "actions": ["publish", "subscribe", "receive"],
         "topics": ["$SYS/#", "fleet/${group}/locked"]},
    ]}


class Fleet:
    pass


@pytest.fixture(scope="module")
def fleet(authd, admin, tmp_path_factory):
    """A gateway (enrolled: it has a certificate) with N_CHILDREN children
    under three policies; one child suspended, one revoked, one with a
    revoked certificate, and revoked jtis of the gateway and of a stranger."""
    f = Fleet()
    f.dir = str(tmp_path_factory.mktemp("gwbundle"))
    f.pol_gw, f.pol_child, f.pol_group = uid("bpol-gw-"), uid("bpol-ch-"), uid("bpol-grp-")
    for name, doc in ((f.pol_gw, gateway_policy()), (f.pol_child, child_policy()),
                      (f.pol_group, group_policy())):
        r = admin.put("/v1/policies/" + name, doc)
        assert r.status == 201, "PUT policy %s: %r" % (name, r)
    f.groups = [uid("bgrp-a-"), uid("bgrp-b-")]
    for g in f.groups:
        r = admin.put("/v1/groups/" + g, {"policies": [f.pol_group]})
        assert r.status in (200, 201), "PUT group %s: %r" % (g, r)

    # The gateway, enrolled over the API so that it holds a certificate.
    enr = create_enrollment(admin, groups=[f.groups[0]])
    f.gw = uid("bgw-")
    f.gw_dev, r = enroll(authd, enr["token"], f.gw, f.dir)
    assert r.status == 201, "enroll the gateway: %r" % r
    r = admin.patch("/v1/devices/" + f.gw, {"policies": [f.pol_gw]})
    assert r.status == 200, "give the gateway its policy: %r" % r

    f.children = []
    f.group_of = {f.gw: f.groups[0]}
    for i in range(N_CHILDREN - 1):
        cid = uid("bch-%02d-" % i)
        body = {"id": cid, "policies": [f.pol_child], "gateway": f.gw}
        if i % 3:
            body["groups"] = [f.groups[i % 2]]
        r = admin.post("/v1/devices", body)
        assert r.status == 201, "POST /v1/devices %r: %r" % (body, r)
        f.children.append(cid)
        if i % 3:
            f.group_of[cid] = f.groups[i % 2]
    # One child enrolled behind the gateway, whose certificate is revoked.
    enr2 = create_enrollment(admin, groups=[f.groups[1]], gateway=f.gw)
    f.cert_child = uid("bch-cert-")
    f.cert_child_dev, r = enroll(authd, enr2["token"], f.cert_child, f.dir)
    assert r.status == 201, "enroll a child behind the gateway: %r" % r
    r = admin.patch("/v1/devices/" + f.cert_child, {"policies": [f.pol_child]})
    assert r.status == 200 and r.json.get("gateway") == f.gw, \
        "the enrolled child sits behind the gateway: %r" % r
    f.children.append(f.cert_child)
    f.group_of[f.cert_child] = f.groups[1]
    r = admin.post("/v1/certs/%s/revoke" % f.cert_child_dev.serial,
                   {"reason": "keyCompromise"})
    assert r.status == 200, "revoke the child's certificate: %r" % r
    f.revoked_serial = f.cert_child_dev.serial

    f.suspended = f.children[4]
    r = admin.patch("/v1/devices/" + f.suspended, {"status": "suspended"})
    assert r.status == 200, "suspend a child: %r" % r
    f.revoked = f.children[7]
    r = admin.post("/v1/devices/%s/revoke" % f.revoked, {"reason": "superseded"})
    assert r.status == 200, "revoke a child: %r" % r

    # The gateway's tokens: one minted with a secret (a bearer token, no
    # cnf), one over mTLS (bound to its certificate).
    r = admin.post("/v1/devices/%s/secret" % f.gw)
    assert r.status in (200, 201), "a secret for the gateway: %r" % r
    f.gw_secret = r.json["secret"]
    f.scope = "publish:gateways/%s/status" % f.gw
    f.token = mint_basic(authd, f.gw, f.gw_secret, f.scope)
    r = authd.request("POST", "/v1/token", {"grant_type": "client_credentials",
                                            "scope": f.scope},
                      tls=True, client_cert=f.gw_dev.client_cert)
    assert r.status == 200, "a certificate-bound token: %r" % r
    f.bound_token = r.json["access_token"]

    # Revoked jtis: one of the gateway's named by the admin, one found
    # in the token cache (the token was introspected first), and a
    # stranger's, which the gateway's bundle must not carry.
    t1 = mint_basic(authd, f.gw, f.gw_secret, f.scope)
    t2 = mint_basic(authd, f.gw, f.gw_secret, f.scope)
    f.jti_named = jwt.decode(t1, options={"verify_signature": False})["jti"]
    f.jti_cached = jwt.decode(t2, options={"verify_signature": False})["jti"]
    r = admin.post("/v1/tokens/revoke", {"jti": f.jti_named, "sub": f.gw})
    assert r.status == 200, "revoke a jti naming its device: %r" % r
    r = admin.post("/v1/introspect", {"token": t2})
    assert r.status == 200 and r.json["active"], "introspect: %r" % r
    r = admin.post("/v1/tokens/revoke", {"jti": f.jti_cached})
    assert r.status == 200, "revoke a cached token's jti: %r" % r
    f.stranger = uid("bstranger-")
    assert admin.post("/v1/devices", {"id": f.stranger}).status == 201
    f.jti_stranger = uid("jti-stranger-")
    r = admin.post("/v1/tokens/revoke", {"jti": f.jti_stranger, "sub": f.stranger})
    assert r.status == 200, "revoke a stranger's jti: %r" % r
    r = admin.post("/v1/tokens/revoke", {"jti": f.jti_named, "sub": "bad/id"})
    assert_error(r, 400)

    f.jwks = authd.request("GET", "/.well-known/jwks.json").json
    f.jwks_path = os.path.join(f.dir, "jwks.json")
    with open(f.jwks_path, "w") as fh:
        json.dump(f.jwks, fh)
    return f


def mint_basic(authd, device, secret, scope=None):
    body = {"grant_type": "client_credentials"}
    if scope:
        # A gateway's default scope (every allowed filter, one per child)
        # is more than a token carries: ask for one item.
        body["scope"] = scope
    r = authd.request("POST", "/v1/token", body, headers=basic(device, secret))
    assert r.status == 200, "POST /v1/token with a secret: %r" % r
    return r.json["access_token"]


def curl_bundle(authd, fleet, dev):
    """GET /v1/gateway/bundle with curl and the device's certificate."""
    ca = os.path.join(fleet.dir, "ca.pem")
    with open(ca, "w") as fh:
        fh.write(authd.ca_pem())
    p = run(["curl", "-sS", "--fail-with-body", "--cacert", ca,
             "--cert", dev.cert_path, "--key", dev.key_path,
             "https://127.0.0.1:%d/v1/gateway/bundle" % authd.https_port])
    return json.loads(p.stdout)


def verify_independently(fleet, bundle):
    """python3-jwt against the JWKS: ES256, a kid of the JWKS, our typ."""
    header = jwt.get_unverified_header(bundle)
    assert header["alg"] == "ES256" and header["typ"] == "authd-bundle+jwt", \
        "the header says what the bundle is: %r" % header
    keys = {k["kid"]: k for k in fleet.jwks["keys"]}
    assert header["kid"] in keys, "the kid is in /.well-known/jwks.json"
    key = jwt.PyJWK(keys[header["kid"]], algorithm="ES256")
    return jwt.decode(bundle, key.key, algorithms=["ES256"],
                      options={"verify_aud": False, "require": ["exp", "iat"]})


def write(fleet, name, text):
    path = os.path.join(fleet.dir, name)
    with open(path, "w") as fh:
        fh.write(text)
    return path


def gw_run(*args, input=None):
    return subprocess.run([gw_bin()] + list(args), input=input,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def bundle(authd, fleet):
    answer = curl_bundle(authd, fleet, fleet.gw_dev)
    assert set(answer) == {"bundle", "exp"}, "the answer: %r" % answer
    fleet.bundle_path = write(fleet, "bundle.jws", answer["bundle"] + "\n")
    return answer


def test_the_bundle_verifies_independently_and_says_what_the_contract_says(authd, fleet, bundle):
    claims = verify_independently(fleet, bundle["bundle"])
    assert claims["exp"] == bundle["exp"], "exp in the answer is the bundle's"
    assert 86400 - 5 <= claims["exp"] - claims["iat"] <= 86400, \
        "bundle_ttl defaults to 24 h: %r" % claims
    assert claims["gateway"]["id"] == fleet.gw
    kids = {c["id"]: c for c in claims["children"]}
    assert set(kids) == set(fleet.children), "every child, whatever its status"
    assert kids[fleet.suspended]["status"] == "suspended"
    assert kids[fleet.revoked]["status"] == "revoked"
    assert kids[fleet.children[0]]["status"] == "active"
    gw_topics = [t for s in claims["gateway"]["statements"] for t in s.get("topics", [])]
    assert "devices/%s/telemetry/#" % fleet.children[0] in gw_topics, \
        "${child.id} is bound to the active children"
    assert "devices/%s/telemetry/#" % fleet.suspended not in gw_topics and \
        "devices/%s/telemetry/#" % fleet.revoked not in gw_topics, \
        "a suspended or revoked child drops out of its gateway's rights"
    assert not any("${" in t for t in gw_topics), "every variable is substituted"
    c0 = [t for s in kids[fleet.children[0]]["statements"] for t in s.get("topics", [])]
    assert "devices/%s/telemetry/#" % fleet.children[0] in c0, \
        "a child's statements are substituted as that child"
    assert fleet.revoked_serial.lower() in [s.lower() for s in claims["revoked_serials"]], \
        "the revoked certificate of a child is listed"
    assert fleet.jti_named in claims["revoked_jtis"], "a revoked jti naming the gateway"
    assert fleet.jti_cached in claims["revoked_jtis"], \
        "a revoked jti whose subject came from the token cache"
    assert fleet.jti_stranger not in claims["revoked_jtis"], \
        "a stranger's revoked jti is not the gateway's business"


def test_the_gateway_token_fetches_the_same_bundle(authd, fleet, bundle):
    r = authd.request("GET", "/v1/gateway/bundle", token=fleet.token)
    assert r.status == 200, "a gateway's own token fetches its bundle: %r" % r
    claims = verify_independently(fleet, r.json["bundle"])
    first = verify_independently(fleet, bundle["bundle"])
    for k in ("iat", "exp"):
        claims.pop(k)
        first.pop(k)
    assert claims == first, "token or certificate, the same content"


def test_a_bound_token_needs_its_certificate(authd, fleet):
    r = authd.request("GET", "/v1/gateway/bundle", token=fleet.bound_token)
    assert_error(r, 401)
    r = authd.request("GET", "/v1/gateway/bundle", token=fleet.bound_token, tls=True,
                      client_cert=fleet.cert_child_dev.client_cert)
    assert_error(r, 401)
    r = authd.request("GET", "/v1/gateway/bundle", token=fleet.bound_token, tls=True,
                      client_cert=fleet.gw_dev.client_cert)
    assert r.status == 200, "with its certificate: %r" % r


def test_no_or_bad_credential_is_refused(authd, fleet):
    assert_error(authd.request("GET", "/v1/gateway/bundle"), 401)
    assert_error(authd.request("GET", "/v1/gateway/bundle", tls=True), 401)
    assert_error(authd.request("GET", "/v1/gateway/bundle", token=fleet.token + "x"), 401)
    r = authd.request("GET", "/v1/gateway/bundle", tls=True,
                      client_cert=fleet.cert_child_dev.client_cert)
    assert r.status in (401, 403), "a revoked certificate fetches nothing: %r" % r
    r = authd.request("GET", "/v1/gateway/bundle", token=fleet.token,
                      port=authd.check_port)
    assert r.status == 404, "not on the check listener: %r" % r


def test_a_device_without_children_gets_an_empty_list(authd, admin, fleet):
    lone = uid("blone-")
    assert admin.post("/v1/devices", {"id": lone, "policies": [fleet.pol_child]}).status == 201
    r = admin.post("/v1/devices/%s/secret" % lone)
    token = mint_basic(authd, lone, r.json["secret"])
    r = authd.request("GET", "/v1/gateway/bundle", token=token)
    assert r.status == 200, "any device may fetch its bundle: %r" % r
    claims = verify_independently(fleet, r.json["bundle"])
    assert claims["gateway"]["id"] == lone and claims["children"] == []


def test_suspended_gateway_gets_no_bundle(authd, admin, fleet):
    lone = uid("bsusp-")
    assert admin.post("/v1/devices", {"id": lone, "policies": [fleet.pol_child]}).status == 201
    r = admin.post("/v1/devices/%s/secret" % lone)
    token = mint_basic(authd, lone, r.json["secret"])
    assert admin.patch("/v1/devices/" + lone, {"status": "suspended"}).status == 200
    r = authd.request("GET", "/v1/gateway/bundle", token=token)
    assert r.status in (401, 403), "a suspended device gets no bundle: %r" % r


def random_case(rng, fleet):
    devices = [fleet.gw] + fleet.children
    # The gateway a quarter of the time: its ${child.id} rights are the
    # part most worth checking.
    pick = rng.random()
    device = (uid("bunknown-") if pick < 0.04 else fleet.gw if pick < 0.3
              else rng.choice(fleet.children))
    action = rng.choice(["connect", "publish", "publish", "subscribe", "receive"])
    # Mostly the names a device's own policies speak of (its own id, or
    # for the gateway its children's), sometimes anyone's: both answers
    # must come up often.
    if rng.random() < 0.2:
        d = rng.choice(devices)
    elif device == fleet.gw:
        d = rng.choice(fleet.children)
    else:
        d = device
    g = fleet.group_of.get(device) if rng.random() < 0.7 else None
    g = g or rng.choice(fleet.groups + ["nogroup"])
    x = rng.choice(["a", "b/c", "x" * rng.randint(1, 5), "1", "", "temp/1"])
    if action == "connect":
        subject = rng.choice([d, d + "-" + x.replace("/", ""), d + "x", fleet.gw,
                              fleet.gw + "-7", "*", uid("noise-")])
        return device, action, subject or "z"
    if rng.random() < 0.6:
        # The shapes the policies allow for this action, on the device's
        # own names.
        y = x.replace("/", "") or "y"
        shapes = {
            "publish": ["devices/%s/telemetry/%s" % (d, x), "gateways/%s/%s" % (fleet.gw, y),
                        "groups/%s/%s/%s" % (g, device, x), "fleet/%s/%s" % (g, y)],
            "subscribe": ["devices/%s/cmd/+" % d, "devices/%s/cmd/%s" % (d, y),
                          "gateways/%s/#" % fleet.gw, "groups/%s/%s/#" % (g, device),
                          "fleet/%s/+" % g, "gateways/%s/x/+" % fleet.gw],
            "receive": ["devices/%s/cmd/%s" % (d, y), "gateways/%s/%s" % (fleet.gw, y),
                        "groups/%s/%s/%s" % (g, device, x), "fleet/%s/%s" % (g, y)],
        }
        return device, action, rng.choice(shapes[action])
    shapes = [
        "devices/%s/telemetry/%s" % (d, x), "devices/%s/telemetry/forbidden" % d,
        "devices/%s/telemetry/#" % d, "devices/%s/telemetry" % d,
        "devices/%s/cmd/%s" % (d, x), "devices/%s/cmd/+" % d, "devices/%s/#" % d,
        "devices/+/telemetry/#", "devices/%s/cmd/a/b" % d,
        "gateways/%s/%s" % (fleet.gw, x), "gateways/%s/secret/%s" % (fleet.gw, x),
        "gateways/%s/#" % fleet.gw, "gateways/%s/+" % fleet.gw, "gateways/%s/secret" % fleet.gw,
        "groups/%s/%s/%s" % (g, d, x), "groups/%s/%s/#" % (g, d), "groups/+/%s/x" % d,
        "fleet/%s/%s" % (g, x), "fleet/%s/locked" % g, "fleet/%s/#" % g, "fleet/%s/+" % g,
        "$SYS/x", "$SYS/#", "#", "+/+", "+", d, "/%s" % d, "devices//telemetry/x",
        uid("noise/"), "devices/%s/telemetry/a b" % d,
    ]
    subject = rng.choice(shapes)
    return device, action, subject or "z"


def daemon_decides(admin, device, action, subject):
    key = "client_id" if action == "connect" else "topic"
    r = admin.post("/v1/policies/explain", {"device": device, "action": action, key: subject})
    if r.status == 404:
        return "deny"  # unknown device
    assert r.status == 200, "explain %s %s %r: %r" % (device, action, subject, r)
    return r.json["result"]


def test_thousands_of_random_decisions_agree_with_the_daemon(admin, fleet, bundle):
    rng = random.Random(12)
    cases = [random_case(rng, fleet) for _ in range(N_DECISIONS)]
    lines = "".join("%s %s %s\n" % c for c in cases)
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path,
               "--batch", "-", input=lines)
    assert p.returncode == 0, "authd-gw decide --batch: %r %r" % (p.returncode, p.stderr)
    offline = p.stdout.splitlines()
    assert len(offline) == len(cases), "one answer per line"
    online = [daemon_decides(admin, *c) for c in cases]
    mismatches = [(c, on, off) for c, on, off in zip(cases, online, offline)
                  if off.split(" ")[0] != on]
    assert not mismatches, "%d of %d decisions differ, e.g. %r" % (
        len(mismatches), len(cases), mismatches[:10])
    allows = sum(1 for o in online if o == "allow")
    print("%d of %d decisions agree, %d allows" % (len(cases), len(cases), allows))
    assert N_DECISIONS // 5 < allows < N_DECISIONS * 4 // 5, \
        "the cases exercise both answers (allows: %d)" % allows


def test_single_decisions_exit_0_allow_1_deny(fleet, bundle):
    child = fleet.children[0]
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path,
               "publish", "gateways/%s/status" % fleet.gw)
    assert (p.returncode, p.stdout) == (0, "allow\n"), "the gateway is the default: %r" % (p,)
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path,
               "--device", child, "publish", "devices/%s/telemetry/forbidden" % child)
    assert (p.returncode, p.stdout) == (1, "deny\n"), "an explicit deny: %r" % (p,)
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path,
               "--device", fleet.suspended, "publish",
               "devices/%s/telemetry/x" % fleet.suspended)
    assert (p.returncode, p.stdout) == (1, "deny\n"), "a suspended child: %r" % (p,)
    p = gw_run("verify", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path)
    assert p.returncode == 0 and "gateway=%s children=%d" % (fleet.gw, N_CHILDREN) in p.stdout, \
        "verify names the gateway and counts the children: %r" % (p,)
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path, "fly", "x")
    assert p.returncode == 2 and p.stderr, "a usage error is exit 2: %r" % (p,)


def test_expired_tampered_and_unknown_key_bundles_are_refused(fleet, bundle):
    jws = bundle["bundle"]
    args = ["publish", "gateways/%s/status" % fleet.gw]
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path,
               "--now", str(bundle["exp"]), *args)
    assert p.returncode == 2 and "expired" in p.stderr and p.stdout == "", \
        "at its exp the bundle is refused: %r" % (p,)
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", fleet.jwks_path,
               "--now", str(bundle["exp"] - 1), *args)
    assert p.returncode == 0, "a second before, it decides: %r" % (p,)

    # One payload byte flipped and re-encoded: the suspended child made
    # active, the kind of edit a thief of the gateway would try.
    h, pl, s = jws.split(".")
    raw = bytearray(b64url_decode(pl))
    i = raw.find(b'"status":"suspended"')
    assert i > 0
    raw[i + len('"status":"')] ^= 0x01
    tampered = write(fleet, "tampered.jws", "%s.%s.%s" % (h, b64url(bytes(raw)), s))
    p = gw_run("decide", "--bundle", tampered, "--jwks", fleet.jwks_path, *args)
    assert p.returncode == 2 and "signature" in p.stderr, "tampered: %r" % (p,)

    kid = jwt.get_unverified_header(jws)["kid"]
    others = {"keys": [k for k in fleet.jwks["keys"] if k["kid"] != kid]}
    other_jwks = write(fleet, "other-jwks.json", json.dumps(others))
    p = gw_run("decide", "--bundle", fleet.bundle_path, "--jwks", other_jwks, *args)
    assert p.returncode == 2 and "unknown kid" in p.stderr, "unknown key: %r" % (p,)
    # The same kid naming another key: the signature does not verify.
    from cryptography.hazmat.primitives.asymmetric import ec
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    forged = {"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
                        "x": b64url(pub.x.to_bytes(32, "big")),
                        "y": b64url(pub.y.to_bytes(32, "big"))}]}
    p = gw_run("decide", "--bundle", fleet.bundle_path,
               "--jwks", write(fleet, "forged-jwks.json", json.dumps(forged)), *args)
    assert p.returncode == 2 and "signature" in p.stderr, "another key, same kid: %r" % (p,)
    # An access token of the same key is no bundle.
    p = gw_run("decide", "--bundle", write(fleet, "token.jws", fleet.token),
               "--jwks", fleet.jwks_path, *args)
    assert p.returncode == 2 and "typ" in p.stderr, "a token as a bundle: %r" % (p,)


def test_a_gateway_with_10000_children_gets_its_bundle(authd, admin, fleet):
    """The contract's scale: 10,000 children (imported in one request), a
    bundle that carries them all and opens offline."""
    import time
    n = 10000
    gw = uid("bbig-")
    assert admin.post("/v1/devices", {"id": gw, "policies": [fleet.pol_gw]}).status == 201
    kids = ["%s-c%05d" % (gw, i) for i in range(n)]
    body = "".join(json.dumps({"id": k, "policies": [fleet.pol_child], "gateway": gw}) + "\n"
                   for k in kids)
    r = admin.post("/v1/devices:import", body,
                   headers={"Content-Type": "application/x-ndjson"}, timeout=300)
    assert r.status == 200 and r.json["created"] == n, "import: %r" % r
    secret = admin.post("/v1/devices/%s/secret" % gw).json["secret"]
    token = mint_basic(authd, gw, secret, "publish:gateways/%s/status" % gw)
    t0 = time.monotonic()
    r = authd.request("GET", "/v1/gateway/bundle", token=token, timeout=300)
    took = time.monotonic() - t0
    assert r.status == 200, "the bundle of a gateway with %d children: %r" % (n, r)
    path = write(fleet, "big.jws", r.json["bundle"])
    p = gw_run("verify", "--bundle", path, "--jwks", fleet.jwks_path)
    assert p.returncode == 0 and "children=%d" % n in p.stdout, "verify: %r" % (p,)
    lines = "".join("%s publish devices/%s/telemetry/t\n%s publish devices/%s/telemetry/t\n"
                    % (gw, k, k, k) for k in kids[::97])
    p = gw_run("decide", "--bundle", path, "--jwks", fleet.jwks_path, "--batch", "-",
               input=lines)
    assert p.returncode == 0 and set(p.stdout.split("\n")[:-1]) == {"allow allowed"}, \
        "the gateway and each child may publish the child's telemetry: %r" % (p.stdout[:500],)
    print("bundle of %d children: %d bytes in %.2f s" % (n, len(r.json["bundle"]), took))
