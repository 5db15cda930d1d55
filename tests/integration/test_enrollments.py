"""§4 enrollments (factory batches) and §2 who may manage them: the token
is shown once, reads never reveal it, and each role gets exactly its
rights; missing or bad credentials are 401, wrong role 403."""

import time

import pytest

from authd_harness import assert_error, create_enrollment, enroll, to_epoch, uid


ENR_FIELDS = ("id", "name", "id_pattern", "max_uses", "used", "expires_at",
              "groups", "cert_days")


def test_create_enrollment_returns_201_with_a_one_time_enr_token(admin):
    admin.put("/v1/groups/sensors", {"policies": []})
    body = {"name": uid("batch-"), "id_pattern": "SN-*", "max_uses": 1000,
            "expires_in": 86400, "groups": ["sensors"], "cert_days": 365}
    before = time.time()
    r = admin.post("/v1/enrollments", body)
    assert r.status == 201, r
    e = r.json
    assert isinstance(e.get("id"), str) and e["id"], "the enrollment has an id: %r" % e
    assert isinstance(e.get("token"), str) and e["token"].startswith("enr_"), (
        "the token is shown once at creation and starts with enr_: %r" % e)
    assert len(e["token"]) >= 4 + 32, "the token carries enough randomness: %r" % e["token"]
    assert e["name"] == body["name"]
    g = admin.get("/v1/enrollments/" + e["id"])
    assert g.status == 200, g
    for f in ENR_FIELDS:
        assert f in g.json, "GET /v1/enrollments/{id} carries %r: %r" % (f, g.json)
    assert g.json["id_pattern"] == "SN-*" and g.json["max_uses"] == 1000
    assert g.json["used"] == 0, "a new enrollment has been used 0 times"
    assert g.json["groups"] == ["sensors"] and g.json["cert_days"] == 365
    exp = g.json["expires_at"]
    assert before + 86400 - 5 <= to_epoch(exp) <= time.time() + 86400 + 5, (
        "expires_at = creation + expires_in: %r" % exp)


def test_enrollment_token_is_never_shown_again(admin):
    e = create_enrollment(admin)
    token = e["token"]
    g = admin.get("/v1/enrollments/" + e["id"])
    assert g.status == 200 and "token" not in g.json, "GET must not return the token: %r" % g.json
    assert token not in g.text and token[4:] not in g.text, "not even embedded in another field"
    items = admin.list_all("/v1/enrollments")
    mine = [i for i in items if i.get("id") == e["id"]]
    assert len(mine) == 1, "the list holds the new enrollment exactly once"
    assert all("token" not in i for i in items), "list items never carry a token"
    r = admin.get("/v1/enrollments")
    assert token[4:] not in r.text


def test_delete_enrollment_removes_it_and_its_token_stops_working(authd, admin, devdir):
    e = create_enrollment(admin)
    r = admin.delete("/v1/enrollments/" + e["id"])
    assert r.status in (200, 204), r
    assert_error(admin.get("/v1/enrollments/" + e["id"]), 404, "not_found")
    assert_error(admin.delete("/v1/enrollments/" + e["id"]), 404, "not_found")
    _, r = enroll(authd, e["token"], uid("gone-"), devdir)
    assert_error(r, 401, ("invalid_credential", "unauthorized"))


def test_unknown_enrollment_is_404(admin):
    assert_error(admin.get("/v1/enrollments/" + uid("nope")), 404, "not_found")


@pytest.mark.parametrize("field,value", [
    ("max_uses", "ten"), ("max_uses", -1), ("expires_in", "soon"),
    ("groups", "sensors"), ("cert_days", -5), ("id_pattern", 7), ("name", 12)])
def test_create_enrollment_with_a_bad_field_is_400(admin, field, value):
    body = {"name": uid("bad-"), "id_pattern": "*", "max_uses": 5,
            "expires_in": 3600, "groups": [], "cert_days": 30}
    body[field] = value
    r = admin.post("/v1/enrollments", body)
    assert_error(r, 400, ("invalid_field", "bad_request"))


def test_no_credential_is_401(authd):
    for method, path in (("GET", "/v1/enrollments"), ("POST", "/v1/enrollments"),
                         ("GET", "/v1/devices"), ("GET", "/v1/apikeys"),
                         ("GET", "/v1/certs"), ("GET", "/v1/audit")):
        r = authd.request(method, path, {} if method == "POST" else None)
        assert_error(r, 401, ("unauthorized", "invalid_credential"))


def test_bad_credential_is_401(authd):
    for hdr in ("Bearer nope", "Bearer " + "A" * 43, "Bearer ", "Basic Zm9vOmJhcg==",
                "Token abc"):
        r = authd.request("GET", "/v1/enrollments", headers={"Authorization": hdr})
        assert_error(r, 401, ("invalid_credential", "unauthorized"))


def test_enrollment_token_is_not_an_api_key(authd, admin):
    e = create_enrollment(admin)
    r = authd.request("GET", "/v1/enrollments", token=e["token"])
    assert r.status in (401, 403), "an enrollment token must not read the registry: %r" % r
    assert_error(r, r.status)


def test_provisioner_may_create_and_list_enrollments_but_not_the_registry(authd, role_key):
    prov = authd.api(role_key("provisioner"))
    e = create_enrollment(prov)
    assert e["token"].startswith("enr_"), "a provisioner creates enrollments (factory station)"
    r = prov.get("/v1/enrollments")
    assert r.status == 200, "a provisioner lists enrollments: %r" % r
    assert prov.get("/v1/ca").status == 200
    for method, path, body in (("GET", "/v1/devices", None),
                               ("POST", "/v1/devices", {"id": uid("p-")}),
                               ("GET", "/v1/apikeys", None),
                               ("POST", "/v1/apikeys", {"name": "x", "role": "admin"}),
                               ("GET", "/v1/certs", None),
                               ("GET", "/v1/audit", None),
                               ("POST", "/v1/server-certs", {"csr": "x", "dns": ["a"]})):
        r = authd.request(method, path, body, token=role_key("provisioner"))
        assert_error(r, 403, "forbidden")


def test_broker_may_not_manage_enrollments_or_the_registry(authd, role_key):
    broker = role_key("broker")
    for method, path, body in (("POST", "/v1/enrollments", {"name": uid("b-"), "max_uses": 1}),
                               ("GET", "/v1/enrollments", None),
                               ("GET", "/v1/devices", None),
                               ("POST", "/v1/devices", {"id": uid("b-")}),
                               ("POST", "/v1/apikeys", {"name": "x", "role": "admin"}),
                               ("GET", "/v1/apikeys", None),
                               ("POST", "/v1/server-certs", {"csr": "x", "dns": ["a"]})):
        r = authd.request(method, path, body, token=broker)
        assert_error(r, 403, "forbidden")


def test_secrets_never_appear_in_the_log(authd, admin, devdir):
    e = create_enrollment(admin)
    _, r = enroll(authd, e["token"], uid("log-"), devdir)
    assert r.status == 201, r
    r = admin.post("/v1/apikeys", {"name": uid("logkey-"), "role": "broker"})
    assert r.status in (200, 201), r
    log = authd.stderr()
    assert log.strip(), "the daemon logs events to stderr"
    for secret in (authd.admin_key, e["token"], r.json["key"]):
        assert secret not in log, "secrets must never be logged (found %s...)" % secret[:8]


# ------------------------------------------------- PATCH (contract §14) ----

def test_patch_changes_max_uses_expiry_and_groups_audited(authd, admin, devdir):
    grp = uid("pg-")
    assert admin.put("/v1/groups/" + grp, {"policies": []}).status == 201
    enr = create_enrollment(admin, max_uses=1, expires_in=3600)
    dev, r = enroll(authd, enr["token"], uid("pe-"), devdir)
    assert r.status == 201, r
    _, r = enroll(authd, enr["token"], uid("pe-"), devdir)
    assert_error(r, 403, "enrollment_used_up")
    r = admin.patch("/v1/enrollments/" + enr["id"],
                    {"max_uses": 3, "expires_in": 7200, "groups": [grp]})
    assert r.status == 200, r
    assert r.json["max_uses"] == 3 and r.json["groups"] == [grp] and r.json["used"] == 1
    assert "token_sha256" not in r.json and "token" not in r.json
    assert to_epoch(r.json["expires_at"]) > to_epoch(enr["expires_at"]) + 3000
    did = uid("pe-")
    _, r = enroll(authd, enr["token"], did, devdir)
    assert r.status == 201, "the raised budget can be used: %r" % r
    assert admin.get("/v1/devices/" + did).json["groups"] == [grp]
    items = admin.list_all("/v1/audit?action=enrollment.update&limit=1000")
    assert any(a.get("action") == "enrollment.update" and a.get("target") == enr["id"]
               for a in items), "the change is audited"


def test_patch_is_validated_like_create(authd, admin, devdir):
    enr = create_enrollment(admin, max_uses=5)
    for _ in range(2):
        assert enroll(authd, enr["token"], uid("pv-"), devdir)[1].status == 201
    path = "/v1/enrollments/" + enr["id"]
    assert_error(admin.patch(path, {"max_uses": 1}), 400, "invalid_field")
    assert admin.patch(path, {"max_uses": 2}).status == 200, "down to the uses made"
    assert_error(admin.patch(path, {"max_uses": 0}), 400, "invalid_field")
    assert_error(admin.patch(path, {"expires_in": -1}), 400, "invalid_field")
    assert_error(admin.patch(path, {"groups": "sensors"}), 400, "invalid_field")
    assert_error(admin.patch(path, {"groups": [uid("nogrp-")]}), 400, "unknown_group")
    assert_error(admin.patch(path, {"id_pattern": "*"}), 400, "invalid_field")
    assert_error(admin.patch("/v1/enrollments/e_nope", {"max_uses": 3}), 404, "not_found")
    assert admin.get(path).json["max_uses"] == 2


def test_patch_needs_an_admin(authd, admin, role_key):
    enr = create_enrollment(admin)
    r = authd.request("PATCH", "/v1/enrollments/" + enr["id"], {"max_uses": 9},
                      token=role_key("provisioner"))
    assert_error(r, 403, "forbidden")
