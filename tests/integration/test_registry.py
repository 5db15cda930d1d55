"""§5 The registry (admin): devices, cursor pagination, certificates,
groups, policies, API keys and the audit log."""

import json
import time

import pytest

from authd_harness import assert_error, enroll, normalize_pem, quote, to_epoch, uid


def _device(admin, **fields):
    body = {"id": uid("dev-"), "groups": [], "policies": [], "attributes": {}}
    body.update(fields)
    r = admin.post("/v1/devices", body)
    assert r.status == 201, "POST /v1/devices %r: %r" % (body, r)
    return body["id"], r


# ------------------------------------------------------------- devices ----

def test_create_and_get_a_device(admin):
    for g in ("sensors", "hall-1"):
        admin.put("/v1/groups/" + g, {"policies": []})
    did, r = _device(admin, groups=["sensors", "hall-1"], attributes={"site": "berlin"})
    assert r.json["id"] == did, "the answer is the device: %r" % r.json
    g = admin.get("/v1/devices/" + did)
    assert g.status == 200, g
    d = g.json
    assert d["id"] == did
    assert d["status"] == "active", "new devices are active"
    assert sorted(d["groups"]) == ["hall-1", "sensors"]
    assert d["attributes"] == {"site": "berlin"}
    assert d["certs"] == [], "a device created by hand has no certificates"


def test_duplicate_device_is_409(admin):
    did, _ = _device(admin)
    r = admin.post("/v1/devices", {"id": did})
    assert_error(r, 409, ("already_exists", "conflict"))


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "caf\u00e9", "x" * 129, "a#b", "a+b",
                                 "a\tb", "a?b", "a%b", "a*b", 42, None],
                         ids=["empty", "space", "slash", "utf8", "129", "hash", "plus",
                              "tab", "query", "percent", "star", "number", "null"])
def test_invalid_device_ids_are_400(admin, bad):
    r = admin.post("/v1/devices", {"id": bad})
    assert_error(r, 400, ("invalid_device_id", "invalid_field"))
    if isinstance(bad, str) and bad:
        assert r.json["error"]["code"] == "invalid_device_id", r


@pytest.mark.parametrize("good", ["A", "0", "sn.1_2:3-4", "128", "a..b", "-lead", ":"],
                         ids=["one-letter", "one-digit", "all-classes", "128-bytes",
                              "dots", "leading-dash", "colon"])
def test_valid_device_ids_are_accepted(admin, good):
    # One-character ids are used only here; the others get a unique part so
    # the shared registry never collides.
    did = {"128": uid() + "x" * 116, "A": "A", "0": "0", ":": ":"}.get(good, good + uid())
    r = admin.post("/v1/devices", {"id": did})
    assert r.status == 201, "%r is a valid id (1-128 of [A-Za-z0-9._:-]): %r" % (did, r)
    assert admin.get("/v1/devices/" + did).status == 200
    assert admin.delete("/v1/devices/" + did).status in (200, 204)


def test_patch_changes_status_groups_and_attributes(admin):
    for g in ("a", "b", "c"):
        admin.put("/v1/groups/" + g, {"policies": []})
    did, _ = _device(admin, groups=["a"], attributes={"k": "v"})
    r = admin.patch("/v1/devices/" + did, {"status": "suspended"})
    assert r.status == 200, r
    d = admin.get("/v1/devices/" + did).json
    assert d["status"] == "suspended"
    assert d["groups"] == ["a"] and d["attributes"] == {"k": "v"}, (
        "PATCH changes only the fields it names: %r" % d)
    r = admin.patch("/v1/devices/" + did, {"status": "active", "groups": ["b", "c"],
                                           "attributes": {"floor": "3"}})
    assert r.status == 200, r
    d = admin.get("/v1/devices/" + did).json
    assert d["status"] == "active" and sorted(d["groups"]) == ["b", "c"]
    assert d["attributes"] == {"floor": "3"}


def test_patch_refuses_bad_values_and_unknown_devices(admin):
    did, _ = _device(admin)
    assert_error(admin.patch("/v1/devices/" + did, {"status": "banana"}), 400,
                 ("invalid_field", "bad_request"))
    assert_error(admin.patch("/v1/devices/" + did, {"groups": "a"}), 400,
                 ("invalid_field", "bad_request"))
    assert_error(admin.patch("/v1/devices/" + did, "{nope"), 400, "invalid_json")
    assert admin.get("/v1/devices/" + did).json["status"] == "active", "a refused PATCH changes nothing"
    assert_error(admin.patch("/v1/devices/" + uid("ghost-"), {"status": "suspended"}), 404, "not_found")


def test_delete_device(admin):
    did, _ = _device(admin)
    r = admin.delete("/v1/devices/" + did)
    assert r.status in (200, 204), r
    assert_error(admin.get("/v1/devices/" + did), 404, "not_found")
    assert_error(admin.delete("/v1/devices/" + did), 404, "not_found")
    assert admin.post("/v1/devices", {"id": did}).status == 201, "a deleted id can be created again"


def test_device_list_pages_with_limit_and_after_cursor(admin):
    prefix = uid("pg-") + "-"
    ids = sorted(prefix + "%02d" % i for i in range(7))
    for i in ids:
        assert admin.post("/v1/devices", {"id": i}).status == 201
    admin.post("/v1/devices", {"id": uid("other-")})

    r = admin.get("/v1/devices?prefix=%s&limit=3" % prefix)
    assert r.status == 200, r
    assert len(r.json["items"]) == 3, "limit bounds the page: %r" % r.json
    assert isinstance(r.json["next"], str) and r.json["next"], "a full page has a next cursor"
    pages = [r.json["items"]]
    nxt = r.json["next"]
    while nxt is not None:
        r = admin.get("/v1/devices?prefix=%s&limit=3&after=%s" % (prefix, quote(nxt)))
        assert r.status == 200, r
        pages.append(r.json["items"])
        nxt = r.json["next"]
        assert len(pages) < 10, "the cursor must come to an end"
    got = [d["id"] for p in pages for d in p]
    assert sorted(got) == ids, "pages together list each matching device exactly once: %r" % got
    assert [len(p) for p in pages][:3] == [3, 3, 1], [len(p) for p in pages]
    assert sorted(d["id"] for d in admin.list_all("/v1/devices?prefix=" + prefix)) == ids, (
        "prefix= selects exactly the matching devices")
    r = admin.get("/v1/devices?prefix=" + prefix + "&limit=100")
    assert r.json["next"] is None, "the last page says next: null"


# -------------------------------------------------------- certificates ----

def test_certificate_record_fields(authd, admin, make_enrollment, devdir):
    e = make_enrollment()
    did = uid("crt-")
    dev, r = enroll(authd, e["token"], did, devdir)
    assert r.status == 201, r
    serial = r.json["serial"]
    c = admin.get("/v1/certs/" + serial)
    assert c.status == 200, c
    for f in ("serial", "device_id", "enrollment", "not_before", "not_after", "status",
              "revoked_at", "reason", "pem"):
        assert f in c.json, "GET /v1/certs/{serial} carries %r: %r" % (f, c.json)
    assert c.json["serial"] == serial and c.json["device_id"] == did
    assert c.json["enrollment"] == e["id"]
    assert c.json["status"] == "valid"
    assert c.json["revoked_at"] in (None, "", 0) and c.json["reason"] in (None, "")
    assert normalize_pem(c.json["pem"]) == normalize_pem(r.json["certificate"]), (
        "the stored PEM is the certificate that was handed out")
    assert to_epoch(c.json["not_before"]) <= time.time() + 1 < to_epoch(c.json["not_after"])


def test_unknown_certificate_is_404(admin):
    assert_error(admin.get("/v1/certs/" + "ab" * 20), 404, "not_found")
    r = admin.get("/v1/certs/not-hex")
    assert r.status in (400, 404), r
    assert_error(r, r.status)


def test_certificate_list_filters_by_device_enrollment_and_status(authd, admin, make_enrollment, devdir):
    e1, e2 = make_enrollment(), make_enrollment()
    d1, d2 = uid("f1-"), uid("f2-")
    s = {}
    for tok, did in ((e1["token"], d1), (e1["token"], d1), (e2["token"], d2)):
        _, r = enroll(authd, tok, did, devdir)
        assert r.status == 201, r
        s.setdefault(did, []).append(r.json["serial"])
    by_dev = admin.list_all("/v1/certs?device=" + d1)
    assert sorted(c["serial"] for c in by_dev) == sorted(s[d1]), "device= lists that device's certs"
    assert all(c["device_id"] == d1 for c in by_dev)
    by_enr = admin.list_all("/v1/certs?enrollment=" + e2["id"])
    assert [c["serial"] for c in by_enr] == s[d2], "enrollment= lists that enrollment's certs"
    paged = admin.list_all("/v1/certs?device=" + d1, limit=1)
    assert sorted(c["serial"] for c in paged) == sorted(s[d1]), "limit=1 pages through all"
    valid = admin.list_all("/v1/certs?device=%s&status=valid" % d1)
    assert len(valid) == 2
    revoked = admin.list_all("/v1/certs?device=%s&status=revoked" % d1)
    assert revoked == [], "nothing is revoked yet"
    dev = admin.get("/v1/devices/" + d1).json
    assert all(sn in json.dumps(dev["certs"]) for sn in s[d1]), "the device lists its certs"


# -------------------------------------------------- groups and policies ----

POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
]}


def test_groups_put_get_delete(admin):
    name = uid("grp-")
    for p in ("p1", "p2"):
        admin.put("/v1/policies/" + p, {"statements": [
            {"effect": "allow", "actions": ["publish"], "topics": ["g/x"]}]})
    r = admin.put("/v1/groups/" + name, {"policies": ["p1"]})
    assert r.status in (200, 201, 204), r
    g = admin.get("/v1/groups/" + name)
    assert g.status == 200 and g.json["policies"] == ["p1"], g
    r = admin.put("/v1/groups/" + name, {"policies": ["p1", "p2"]})
    assert r.status in (200, 201, 204), "PUT replaces: %r" % r
    assert admin.get("/v1/groups/" + name).json["policies"] == ["p1", "p2"]
    assert admin.delete("/v1/groups/" + name).status in (200, 204)
    assert_error(admin.get("/v1/groups/" + name), 404, "not_found")


def test_policies_put_get_list_delete(admin):
    name = uid("pol-")
    r = admin.put("/v1/policies/" + name, POLICY)
    assert r.status in (200, 201, 204), r
    g = admin.get("/v1/policies/" + name)
    assert g.status == 200, g
    doc = g.json.get("document", g.json)
    assert doc["statements"] == POLICY["statements"], "GET returns the stored document: %r" % g.json
    names = [p.get("name", p.get("id")) if isinstance(p, dict) else p
             for p in admin.list_all("/v1/policies")]
    assert name in names, "GET /v1/policies lists it"
    assert admin.delete("/v1/policies/" + name).status in (200, 204)
    assert_error(admin.get("/v1/policies/" + name), 404, "not_found")


def test_invalid_policy_document_is_400(admin):
    for doc in ({"statements": "allow"}, {"statements": [{"effect": "maybe", "actions": ["publish"],
                                                          "topics": ["a"]}]},
                {"statements": [{"effect": "allow", "actions": ["fly"], "topics": ["a"]}]}):
        r = admin.put("/v1/policies/" + uid("badpol-"), doc)
        assert_error(r, 400)


# ------------------------------------------------------------ API keys ----

def test_api_key_is_shown_once_listed_without_secret_and_deletable(authd, admin):
    name = uid("key-")
    r = admin.post("/v1/apikeys", {"name": name, "role": "broker"})
    assert r.status in (200, 201), r
    kid, key = r.json["id"], r.json["key"]
    assert isinstance(key, str) and len(key) >= 32, "keys carry 32 random bytes: %r" % key
    # The new key authenticates: a broker reaching an admin route is 403, not 401.
    assert_error(authd.request("GET", "/v1/devices", token=key), 403, "forbidden")
    items = admin.list_all("/v1/apikeys")
    mine = [i for i in items if i.get("id") == kid]
    assert len(mine) == 1 and mine[0].get("name") == name and mine[0].get("role") == "broker", mine
    listing = admin.get("/v1/apikeys").text + json.dumps(items)
    assert key not in listing, "the key is shown once, never listed"
    for item in items:
        assert "key" not in item and "hash" not in item and "secret" not in item, (
            "list items carry neither the key nor its hash: %r" % item)
    r = admin.delete("/v1/apikeys/" + kid)
    assert r.status in (200, 204), r
    assert_error(authd.request("GET", "/v1/devices", token=key), 401,
                 ("invalid_credential", "unauthorized"))
    assert_error(admin.delete("/v1/apikeys/" + kid), 404, "not_found")


def test_api_key_roles(authd, admin):
    r = admin.post("/v1/apikeys", {"name": uid("adm-"), "role": "admin"})
    assert r.status in (200, 201), r
    assert authd.request("GET", "/v1/devices", token=r.json["key"]).status == 200
    assert_error(admin.post("/v1/apikeys", {"name": uid("x-"), "role": "root"}), 400,
                 ("invalid_field", "bad_request"))
    assert_error(admin.post("/v1/apikeys", {"name": uid("x-")}), 400,
                 ("invalid_field", "bad_request"))


# --------------------------------------------------------------- audit ----

def _time_of(entry):
    for k in ("time", "at", "ts", "timestamp"):
        if k in entry:
            return to_epoch(entry[k])
    raise AssertionError("audit entries carry a time: %r" % entry)


def test_audit_records_admin_changes_issuance_and_enrollment_use(authd, admin, make_enrollment, devdir):
    start = time.time()
    did, _ = _device(admin)
    e = make_enrollment()
    enr_dev = uid("aud-")
    _, r = enroll(authd, e["token"], enr_dev, devdir)
    assert r.status == 201, r
    serial = r.json["serial"]
    entries = admin.list_all("/v1/audit", limit=200)
    assert entries, "the audit log is not empty"
    for entry in entries:
        assert isinstance(entry.get("actor"), str) and entry["actor"], (
            "every audit entry names its actor: %r" % entry)
        _time_of(entry)
    about_dev = [x for x in entries if did in json.dumps(x)]
    assert about_dev, "creating a device is audited"
    about_cert = [x for x in entries if serial in json.dumps(x)]
    assert about_cert, "issuing a certificate is audited (with its serial)"
    about_enr = [x for x in entries if e["id"] in json.dumps(x)]
    assert about_enr, "creating and using an enrollment is audited"
    for x in about_dev + about_cert + about_enr:
        assert start - 5 <= _time_of(x) <= time.time() + 5, "audit time is the event time: %r" % x
    assert e["token"] not in json.dumps(entries), "the audit log holds no secrets"
    # Append-only: a second read starts with exactly the same entries.
    again = admin.list_all("/v1/audit", limit=200)
    assert again[:len(entries)] == entries, "audit entries are never changed or removed"
