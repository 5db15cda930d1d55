"""§5 Bulk import (fleet migration): POST /v1/devices:import takes NDJSON,
one POST /v1/devices body per line, writes the good lines in large batches
and answers {"created":N,"failed":[{"line","id","error"}]}; bad lines are
reported and skipped, never half written. `authctl device import FILE|-`
sends a file in chunks with progress. A real daemon, real HTTP clients and
the real authctl binary."""

import json
import os
import subprocess
import time

import pytest

from authd_harness import SANITIZER_MARKERS, assert_error, authd_bin, uid

NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(autouse=True)
def _named_records(admin):
    """The groups and policy these lines name: a line naming one that
    does not exist is that line's failure (§14)."""
    for g in ("sensors", "other", "fleet", "g"):
        admin.put("/v1/groups/" + g, {"policies": []})
    admin.put("/v1/policies/p1", {"statements": [
        {"effect": "allow", "actions": ["publish"], "topics": ["imp/x"]}]})


def post_import(api, body, headers=NDJSON, **kw):
    if isinstance(body, list):
        body = "".join(line + "\n" for line in body)
    return api.post("/v1/devices:import", body, headers=headers, **kw)


def device(admin, did):
    return admin.get("/v1/devices/" + did)


def failures(r):
    assert r.status == 200, "an acceptable import answers 200: %r" % r
    assert set(r.json) == {"created", "failed"}, (
        "the answer is {\"created\",\"failed\"}: %r" % r.json)
    for f in r.json["failed"]:
        assert isinstance(f["line"], int) and f["line"] >= 1, f
        err = f["error"]
        assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str) \
            and err["message"], "each failure carries a §3 error object: %r" % f
    lines = [f["line"] for f in r.json["failed"]]
    assert lines == sorted(lines), "failures come in line order: %r" % lines
    return {f["line"]: f for f in r.json["failed"]}


# ---------------------------------------------------------- good and bad ----

def test_good_lines_are_created_and_each_bad_line_is_reported_and_skipped(admin):
    existing = uid("imp-old-")
    assert admin.post("/v1/devices", {"id": existing}).status == 201
    good = [uid("imp-a-"), uid("imp-b-"), uid("imp-c-")]
    twice = uid("imp-twice-")
    unknown = uid("imp-unk-")
    lines = [
        json.dumps({"id": good[0], "groups": ["sensors"], "policies": ["p1"],
                    "attributes": {"site": "berlin"}}),          # 1
        '{"id": "%s", "groups": [' % uid("imp-broken-"),         # 2 malformed JSON
        json.dumps({"id": "bad id/with slash"}),                 # 3 invalid id
        "",                                                      # 4 blank: ignored
        json.dumps({"id": existing}),                            # 5 exists already
        json.dumps({"id": twice}),                               # 6
        json.dumps({"id": twice, "groups": ["other"]}),          # 7 twice in the file
        json.dumps({"id": unknown, "grups": ["typo"]}),          # 8 unknown field
        json.dumps({"id": good[1]}),                             # 9
        json.dumps({"id": uid("imp-g-"), "groups": "notalist"}), # 10 wrong type
        "[1, 2]",                                                # 11 not an object
        "   \t",                                                 # 12 blank
        json.dumps({"id": good[2], "attributes": {"k": "v"}}),   # 13
    ]
    r = post_import(admin, lines)
    f = failures(r)
    assert r.json["created"] == 4, "lines 1, 6, 9 and 13 are written: %r" % r.json
    assert sorted(f) == [2, 3, 5, 7, 8, 10, 11], "exactly the bad lines fail: %r" % r.json
    assert f[2]["error"]["code"] == "invalid_json"
    assert f[3]["error"]["code"] == "invalid_device_id"
    assert f[5]["error"]["code"] == "already_exists" and f[5]["id"] == existing
    assert f[7]["error"]["code"] == "already_exists" and f[7]["id"] == twice, (
        "a duplicate within the file fails on its second line")
    assert f[8]["error"]["code"] == "invalid_field" and "grups" in f[8]["error"]["message"], (
        "an unknown field is refused by name, not silently dropped: %r" % f[8])
    assert f[10]["error"]["code"] == "invalid_field"
    assert f[11]["error"]["code"] == "invalid_json"

    d = device(admin, good[0])
    assert d.status == 200, d
    assert d.json["status"] == "active"
    assert d.json["groups"] == ["sensors"] and d.json["policies"] == ["p1"]
    assert d.json["attributes"] == {"site": "berlin"}, "the fields given are stored: %r" % d.json
    assert d.json["certs"] == []
    assert device(admin, good[2]).json["attributes"] == {"k": "v"}
    assert device(admin, twice).json["groups"] == [], (
        "the first line of a duplicated id wins; the second does not touch it")
    assert device(admin, unknown).status == 404, "a refused line writes nothing"
    assert device(admin, existing).json["groups"] == [], "an existing device is left as it was"


def test_an_import_is_audited_as_device_creation(admin):
    did = uid("imp-aud-")
    r = post_import(admin, [json.dumps({"id": did})])
    assert failures(r) == {} and r.json["created"] == 1
    entries = admin.list_all("/v1/audit?limit=1000")
    mine = [e for e in entries if e.get("target") == did]
    assert [e["action"] for e in mine] == ["device.create"], (
        "one device.create entry per imported device, as POST /v1/devices: %r" % mine)
    assert mine[0]["actor"].startswith("apikey:"), mine[0]


def test_a_bad_line_never_half_writes_and_the_same_rules_as_create_apply(admin):
    """Each refusal of POST /v1/devices is the same refusal on an import
    line, and nothing of a refused line is stored."""
    cases = [
        {"id": uid("imp-r-"), "attributes": {"k": 1}},
        {"id": uid("imp-r-"), "attributes": {"bad key": "v"}},
        {"id": uid("imp-r-"), "policies": [""]},
        {"id": uid("imp-r-"), "status": "suspended"},
        {"id": "x" * 129},
        {"groups": ["g"]},
    ]
    for body in cases:
        single = admin.post("/v1/devices", body)
        assert single.status == 400, "POST /v1/devices refuses %r: %r" % (body, single)
        r = post_import(admin, [json.dumps(body)])
        f = failures(r)
        assert r.json["created"] == 0 and list(f) == [1], r.json
        assert f[1]["error"]["code"] == single.json["error"]["code"], (
            "the same rule gives the same code: %r vs %r" % (f[1], single.json))
        if isinstance(body.get("id"), str) and len(body["id"]) <= 128:
            assert device(admin, body["id"]).status == 404


def test_crlf_lines_a_last_line_without_newline_and_an_empty_body(admin):
    a, b = uid("imp-crlf-"), uid("imp-crlf-")
    r = post_import(admin, '{"id":"%s"}\r\n\r\n{"id":"%s"}' % (a, b))
    assert failures(r) == {} and r.json["created"] == 2, r.json
    assert device(admin, a).status == 200 and device(admin, b).status == 200
    r = post_import(admin, "")
    assert failures(r) == {} and r.json["created"] == 0, "an empty import is no error"


def test_a_line_over_64_kib_fails_alone(admin):
    big = json.dumps({"id": uid("imp-big-"), "attributes": {"pad": "x" * (64 * 1024)}})
    ok = uid("imp-next-")
    r = post_import(admin, [big, json.dumps({"id": ok})])
    f = failures(r)
    assert list(f) == [1] and f[1]["error"]["code"] == "payload_too_large", r.json
    assert r.json["created"] == 1 and device(admin, ok).status == 200


# ------------------------------------------------------------ refusals ----

def test_non_admin_callers_are_refused(authd, role_key):
    body = json.dumps({"id": uid("imp-na-")}) + "\n"
    r = authd.request("POST", "/v1/devices:import", body, headers=NDJSON)
    assert_error(r, 401, "unauthorized")
    r = authd.request("POST", "/v1/devices:import", body, headers=NDJSON, token="ak_nonsense")
    assert_error(r, 401, "invalid_credential")
    for role in ("provisioner", "broker"):
        r = authd.request("POST", "/v1/devices:import", body, headers=NDJSON,
                          token=role_key(role))
        assert_error(r, 403, "forbidden")


def test_the_check_listener_does_not_serve_imports(authd, admin):
    r = authd.request("POST", "/v1/devices:import", json.dumps({"id": uid("imp-ck-")}),
                      headers=NDJSON, token=admin.token, port=authd.check_port)
    assert_error(r, 404, "not_found")


@pytest.mark.parametrize("ctype", [None, "application/json", "text/plain",
                                   "application/x-ndjsonx"])
def test_another_content_type_is_415(admin, ctype):
    did = uid("imp-ct-")
    headers = {"Content-Type": ctype} if ctype else {}
    r = admin.post("/v1/devices:import", json.dumps({"id": did}) + "\n", headers=headers)
    assert_error(r, 415, "unsupported_media_type")
    assert device(admin, did).status == 404


def test_content_type_parameters_and_case_are_accepted(admin):
    did = uid("imp-ctp-")
    r = post_import(admin, [json.dumps({"id": did})],
                    headers={"Content-Type": "Application/X-NDJSON; charset=utf-8"})
    assert failures(r) == {} and r.json["created"] == 1


def test_more_than_100000_lines_is_413_and_writes_nothing(admin):
    first = uid("imp-many-")
    body = json.dumps({"id": first}) + "\n" + "\n" * 100000
    r = post_import(admin, body)
    assert_error(r, 413, "payload_too_large")
    assert device(admin, first).status == 404, "a refused request writes no line"


def test_body_over_import_body_max_is_413(spawn_authd):
    d = spawn_authd(extra_args=["--import-body-max", "65536"])
    api = d.api(d.admin_key)
    body = "".join(json.dumps({"id": "lim-%06d" % i}) + "\n" for i in range(4000))
    assert len(body) > 65536
    assert_error(post_import(api, body), 413, "payload_too_large")
    assert device(api, "lim-000000").status == 404


def test_only_an_admin_key_unlocks_the_large_body(authd, admin):
    """The 16 MiB limit is granted from the request header: without an
    admin key a body over 64 KiB is refused before it is read."""
    body = "".join(json.dumps({"id": uid("imp-anon-")}) + "\n" for _ in range(3000))
    assert len(body) > 64 * 1024
    r = authd.request("POST", "/v1/devices:import", body, headers=NDJSON)
    assert_error(r, 413, "payload_too_large")
    r = post_import(admin, body)
    assert failures(r) == {} and r.json["created"] == 3000


# ------------------------------------------------------------ scale ----

def test_20000_devices_in_one_request(admin):
    prefix = uid("imp-20k-") + "-"
    body = "".join(json.dumps({"id": "%s%05d" % (prefix, i), "groups": ["fleet"],
                               "attributes": {"n": str(i)}}) + "\n"
                   for i in range(20000))
    t0 = time.monotonic()
    r = post_import(admin, body, timeout=120)
    took = time.monotonic() - t0
    assert failures(r) == {} and r.json["created"] == 20000, r.json if r.json else r
    # A generous bound (ASan builds, a busy 2-core machine): batches of
    # 1000 make this well under a second on a plain build.
    assert took < 30, "20000 devices took %.1f s" % took
    page = admin.get("/v1/devices?prefix=%s&limit=1000" % prefix)
    assert len(page.json["items"]) == 1000 and page.json["next"], "they are listed"
    d = device(admin, "%s%05d" % (prefix, 19999))
    assert d.status == 200 and d.json["attributes"] == {"n": "19999"}


# ------------------------------------------------------------ authctl ----

def authctl_bin():
    path = os.environ.get("AUTHCTL_BIN")
    if path:
        return path
    build = os.path.dirname(os.path.dirname(os.path.abspath(authd_bin())))
    return os.path.join(build, "clients", "authctl", "authctl")


@pytest.fixture
def ctl(authd):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
    env.update({
        "AUTHD_URL": "https://127.0.0.1:%d" % authd.https_port,
        "AUTHD_CACERT": os.path.join(authd.data, "ca", "chain.pem"),
        "AUTHD_KEY": authd.admin_key,
    })

    def call(*argv, input=None):
        p = subprocess.run([authctl_bin()] + [str(a) for a in argv], env=env,
                           input=input, capture_output=True, text=True, timeout=300)
        found = [m for m in SANITIZER_MARKERS if m in p.stderr]
        assert not found, "authctl %s: sanitizer report:\n%s" % (argv, p.stderr)
        return p

    return call


def test_authctl_device_import_a_file_in_chunks_with_progress(ctl, admin, tmp_path):
    prefix = uid("ctl-imp-") + "-"
    lines = [json.dumps({"id": "%s%04d" % (prefix, i)}) for i in range(2500)]
    path = tmp_path / "fleet.ndjson"
    path.write_text("\n".join(lines) + "\n")
    p = ctl("device", "import", str(path), "--batch", "1000")
    assert p.returncode == 0, "a clean import exits 0: %s %s" % (p.stdout, p.stderr)
    assert "imported 1000/2500" in p.stderr and "imported 2500/2500" in p.stderr, (
        "progress per chunk on stderr: %r" % p.stderr)
    assert "2500 created" in p.stdout, p.stdout
    assert device(admin, prefix + "2499").status == 200


def test_authctl_device_import_reports_bad_lines_with_file_line_numbers(ctl, admin, tmp_path):
    prefix = uid("ctl-bad-") + "-"
    lines = [json.dumps({"id": "%s%02d" % (prefix, i)}) for i in range(10)]
    lines[3] = "{not json"
    lines[7] = json.dumps({"id": prefix + "01"})  # a duplicate, in another chunk
    path = tmp_path / "bad.ndjson"
    path.write_text("\n".join(lines) + "\n")
    p = ctl("device", "import", str(path), "--batch", "3")
    assert p.returncode == 1, "a failed line makes the exit status 1: %s %s" % (p.stdout, p.stderr)
    assert "line 4:" in p.stdout and "invalid_json" in p.stdout, p.stdout
    assert "line 8:" in p.stdout and "already_exists" in p.stdout, (
        "line numbers are the file's, across chunks: %r" % p.stdout)
    assert "8 created, 2 failed" in p.stdout, p.stdout
    assert device(admin, prefix + "09").status == 200
    assert device(admin, prefix + "03").status == 404

    j = ctl("--json", "device", "import", str(path))
    assert j.returncode == 1
    out = json.loads(j.stdout)
    assert out["created"] == 0 and len(out["failed"]) == 10, (
        "a second run finds them all: %r" % out)
    assert {f["error"]["code"] for f in out["failed"]} == {"already_exists", "invalid_json"}


def test_authctl_device_import_from_stdin(ctl, admin):
    prefix = uid("ctl-stdin-") + "-"
    text = "".join(json.dumps({"id": "%s%d" % (prefix, i), "groups": ["g"]}) + "\n"
                   for i in range(5))
    p = ctl("device", "import", "-", input=text)
    assert p.returncode == 0, p.stderr
    assert "imported 5 lines" in p.stderr, "from stdin there is no total: %r" % p.stderr
    assert device(admin, prefix + "4").json["groups"] == ["g"]


def test_authctl_device_import_missing_file_and_usage(ctl, tmp_path):
    p = ctl("device", "import", str(tmp_path / "nope.ndjson"))
    assert p.returncode == 1 and "nope.ndjson" in p.stderr, p.stderr
    assert ctl("device", "import").returncode == 2
    assert ctl("device", "import", "x", "--batch", "0").returncode == 2


def test_every_failed_line_is_reported_even_when_its_message_would_be_cut_mid_character(admin):
    """Messages quote the line (an unknown field's name, the parser's
    'near ...'); cut to their length or copied from bytes that are not
    UTF-8 they must still produce an entry, never vanish from the answer."""
    ok_id = uid("imp-utf8-")
    lines = [
        json.dumps({"id": uid("imp-u-"), "a" + "\u00e9" * 40: "v"}, ensure_ascii=False),
        json.dumps({"id": uid("imp-u-"), "\u00e9" * 100: "v"}, ensure_ascii=False),
        '{"id":"%s", "x": tru\xe9}' % uid("imp-u-"),
        json.dumps({"id": ok_id}),
    ]
    r = post_import(admin, "".join(l + "\n" for l in lines).encode("utf-8"))
    f = failures(r)
    assert sorted(f) == [1, 2, 3], "each bad line has its entry: %r" % r.json
    assert f[1]["error"]["code"] == "invalid_field" and f[2]["error"]["code"] == "invalid_field"
    assert f[3]["error"]["code"] == "invalid_json"
    assert "id" not in f[3], "a line that does not parse names no id: %r" % f[3]
    assert r.json["created"] == 1 and device(admin, ok_id).status == 200
    single = admin.post("/v1/devices", lines[0].encode("utf-8"),
                        headers={"Content-Type": "application/json"})
    assert_error(single, 400, "invalid_field")
