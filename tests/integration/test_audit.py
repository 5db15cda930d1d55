"""The audit log (docs/audit.md): filters and newest-first paging with a
bounded scan, the <object>.<verb> actions and actor forms, the hash chain
(checked here from the entries themselves, then broken on disk with
mdb_dump/mdb_load or psql and caught by GET /v1/audit/verify and
`authd audit verify`), a chain kept under concurrent enrollments, and
`authctl audit` with filters and --follow."""

import calendar
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

from authd_harness import (BACKEND, SANITIZER_MARKERS, create_enrollment, make_csr,
                           enroll, quote, run, uid)

ZERO = "0" * 64
SCAN_MAX = 10000  # REGISTRY_AUDIT_SCAN_MAX, as docs/audit.md states it


def canonical(entry):
    """The canonical form docs/audit.md defines: every member, keys
    sorted, no spaces, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def entry_hash(entry):
    return hashlib.sha256(canonical(entry)).hexdigest()


def page(api, query):
    r = api.get("/v1/audit" + query)
    assert r.status == 200, "GET /v1/audit%s: %r" % (query, r)
    return r.json


def create_device(api, did):
    r = api.post("/v1/devices", {"id": did})
    assert r.status == 201, r


def admin_actor(api):
    """The admin key's actor as every entry it writes carries it."""
    did = uid("who-")
    create_device(api, did)
    items = page(api, "?target=%s&order=desc&limit=1" % did)["items"]
    assert items and items[0]["action"] == "device.create", items
    return items[0]["actor"]


# ---------------------------------------------------------- filters ----

def test_filters_each_narrow_the_log_and_combine(admin):
    a, b = uid("aud-a-"), uid("aud-b-")
    create_device(admin, a)
    create_device(admin, b)
    assert admin.patch("/v1/devices/" + a, {"attributes": {"k": "v"}}).status == 200
    assert admin.delete("/v1/devices/" + a).status in (200, 204)

    mine = admin.list_all("/v1/audit?target=" + a, limit=100)
    assert [e["action"] for e in mine] == ["device.create", "device.update",
                                           "device.delete"], mine
    assert [e["target"] for e in admin.list_all(
        "/v1/audit?action=device.delete&target=" + a, limit=100)] == [a]
    everything = admin.list_all("/v1/audit?action=device.*&target=" + b, limit=100)
    assert [e["action"] for e in everything] == ["device.create"], (
        "device.* takes every verb of the object: %r" % everything)

    actor = mine[0]["actor"]
    assert actor.startswith("apikey:admin/k_"), (
        "an API key acts as apikey:<name>/<id>: %r" % actor)
    assert len(admin.list_all("/v1/audit?actor=%s&target=%s" % (quote(actor), a),
                              limit=100)) == 3
    by_name = admin.list_all("/v1/audit?actor=apikey:admin&target=" + a, limit=100)
    assert len(by_name) == 3, "apikey:NAME takes every key of that name"
    assert admin.list_all("/v1/audit?actor=apikey:nobody&target=" + a, limit=100) == []
    assert admin.list_all("/v1/audit?actor=apikey:adm&target=" + a, limit=100) == [], (
        "a name is matched whole, not as a prefix")


def test_since_and_until_take_rfc3339_and_unix_seconds(admin):
    did = uid("aud-t-")
    create_device(admin, did)
    e = page(admin, "?target=%s" % did)["items"][0]
    t = e["time"]
    epoch = calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))
    for since in (t, str(epoch)):
        got = admin.list_all("/v1/audit?target=%s&since=%s" % (did, since), limit=10)
        assert [x["seq"] for x in got] == [e["seq"]], "since is inclusive"
        got = admin.list_all("/v1/audit?target=%s&until=%s" % (did, since), limit=10)
        assert got == [], "until is exclusive"
    got = admin.list_all("/v1/audit?target=%s&until=%d" % (did, epoch + 1), limit=10)
    assert [x["seq"] for x in got] == [e["seq"]]
    assert admin.list_all("/v1/audit?target=%s&since=%d" % (did, epoch + 3600),
                          limit=10) == []
    for bad in ("since=yesterday", "until=2026-13-01T00:00:00Z", "order=sideways",
                "after=x"):
        r = admin.get("/v1/audit?" + bad)
        assert r.status == 400, "%s: %r" % (bad, r)


def test_desc_reads_from_the_newest_and_pages_backwards(admin):
    for _ in range(3):
        create_device(admin, uid("aud-d-"))
    newest = page(admin, "?order=desc&limit=1")
    assert len(newest["items"]) == 1 and newest["next"] is not None
    top = newest["items"][0]["seq"]
    asc = [e["seq"] for e in admin.list_all("/v1/audit", limit=1000)]
    assert top == asc[-1], "order=desc starts at the newest entry"
    desc = [e["seq"] for e in admin.list_all("/v1/audit?order=desc", limit=7)]
    # Other tests may append meanwhile; the part both saw must agree.
    assert [s for s in desc if s <= top] == [s for s in reversed(asc) if s <= top], (
        "desc pages are the asc list reversed")
    r = page(admin, "?order=desc&limit=2&after=%d" % top)
    assert [e["seq"] for e in r["items"]] == [top - 1, top - 2], (
        "after in desc order means older than")


def test_a_filter_scans_a_bounded_number_of_entries_per_request(spawn_authd):
    """11000 entries, one that matches at the end: the first page answers
    no items but a cursor past the bound; paging on finds the match."""
    d = spawn_authd()
    api = d.api(d.admin_key)
    prefix = uid("scan-")
    for batch in range(11):
        body = "".join(json.dumps({"id": "%s-%d-%d" % (prefix, batch, i)}) + "\n"
                       for i in range(1000))
        r = api.post("/v1/devices:import", body,
                     headers={"Content-Type": "application/x-ndjson"})
        assert r.status == 200 and r.json["created"] == 1000, r
    last = uid("scan-last-")
    create_device(api, last)
    first = page(api, "?target=%s&limit=10" % last)
    assert first["items"] == [] and first["next"] is not None, (
        "the bound stops the scan and says where to go on: %r" % first)
    assert int(first["next"]) == SCAN_MAX, first["next"]
    found = api.list_all("/v1/audit?target=" + last, limit=10)
    assert [e["action"] for e in found] == ["device.create"]
    # Newest first, the same filter is answered from the end at once.
    r = page(api, "?target=%s&order=desc&limit=1" % last)
    assert [e["target"] for e in r["items"]] == [last]


# ---------------------------------------------------- actions, actors ----

def test_token_key_rotation_and_token_revocation_are_audited(admin):
    actor = admin_actor(admin)
    r = admin.post("/v1/token-keys", {})
    assert r.status in (200, 201), r
    kid = r.json.get("kid")
    got = page(admin, "?action=token_key.rotate&order=desc&limit=1")["items"]
    assert got and got[0]["actor"] == actor and got[0]["target"] == kid, got
    jti = uid("jti-")
    assert admin.post("/v1/tokens/revoke", {"jti": jti}).status == 200
    got = page(admin, "?action=token.revoke&target=%s" % jti)["items"]
    assert [e["actor"] for e in got] == [actor], got


def test_every_action_is_object_dot_verb(admin):
    for e in admin.list_all("/v1/audit", limit=1000):
        obj, _, verb = e["action"].partition(".")
        assert obj and verb and "." not in verb, e
        assert e["actor"].split(":", 1)[0] in (
            "apikey", "device", "enrollment", "cli", "system"), e


# ------------------------------------------------------------ chain ----

def check_chain(entries):
    assert entries[0]["seq"] == 1
    assert entries[0]["prev_hash"] == ZERO
    for prev, cur in zip(entries, entries[1:]):
        assert cur["seq"] == prev["seq"] + 1
        assert cur["prev_hash"] == entry_hash(prev), (
            "prev_hash is SHA-256 of the previous entry's canonical form: %r" % cur)


def verify_cli(binary, data):
    p = subprocess.run([binary, "audit", "verify", "--data", data],
                       capture_output=True, text=True, timeout=120)
    assert not [m for m in SANITIZER_MARKERS if m in p.stderr], p.stderr
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None


def lmdb_entries_edit(store_dir, edit):
    """Rewrites the audit database with edit(list of (seq, text)) applied,
    through mdb_dump / mdb_load of the whole environment."""
    dump = run(["mdb_dump", "-a", store_dir]).stdout
    sections, cur = [], None
    for line in dump.splitlines():
        if line.startswith("VERSION="):
            cur = {"head": [line], "pairs": [], "name": None}
            sections.append(cur)
        elif line.startswith("database="):
            cur["name"] = line.split("=", 1)[1]
            cur["head"].append(line)
        elif line == "DATA=END":
            pass
        elif line.startswith(" "):
            cur["pairs"].append(line[1:])
        else:
            cur["head"].append(line)
    out = []
    for s in sections:
        pairs = list(zip(s["pairs"][0::2], s["pairs"][1::2]))
        if s["name"] == "audit":
            entries = [(int(k, 16), bytes.fromhex(v).decode()) for k, v in pairs]
            entries = edit(entries)
            pairs = [("%016x" % seq, text.encode().hex()) for seq, text in entries]
        out += s["head"] + [" " + x for kv in pairs for x in kv] + ["DATA=END"]
    fresh = store_dir + ".new"
    os.mkdir(fresh)
    run(["mdb_load", "-f", "/dev/stdin", fresh], input="\n".join(out) + "\n")
    old = store_dir + ".old"
    os.rename(store_dir, old)
    os.rename(fresh, store_dir)
    shutil.rmtree(old)


def pg_sql(data, sql):
    with open(os.path.join(data, "store.url")) as f:
        url = f.read().strip()
    run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qc", sql])


def tamper(data, seq, how):
    """Changes (how="edit") or removes (how="delete") audit entry seq of a
    stopped daemon's store."""
    if BACKEND == "postgres":
        if how == "edit":
            pg_sql(data, "UPDATE audit SET doc = replace(doc, '\"target\":\"', "
                         "'\"target\":\"x') WHERE seq = %d" % seq)
        else:
            pg_sql(data, "DELETE FROM audit WHERE seq = %d" % seq)
        return

    def edit(entries):
        if how == "delete":
            return [(s, t) for s, t in entries if s != seq]
        return [(s, t.replace('"target":"', '"target":"x', 1) if s == seq else t)
                for s, t in entries]
    lmdb_entries_edit(os.path.join(data, "store"), edit)


@pytest.mark.parametrize("how", ["edit", "delete"])
def test_the_chain_holds_and_an_edited_or_deleted_entry_is_found(
        spawn_authd, binary, how):
    d = spawn_authd()
    api = d.api(d.admin_key)
    ids = [uid("chain-") for _ in range(6)]
    for did in ids:
        create_device(api, did)
    # The canonical form is the same text in C and in Python, also for
    # non-ASCII, control characters and slashes.
    r = api.patch("/v1/devices/" + ids[0],
                  {"attributes": {"k": "\u00e9\u2028\u0001\u001f/\"x\\"}})
    assert r.status == 200, r
    entries = api.list_all("/v1/audit", limit=3)
    check_chain(entries)
    n = len(entries)
    r = api.get("/v1/audit/verify")
    assert r.status == 200 and r.json["ok"] is True and r.json["entries"] == n, r
    assert r.json["head"] == entry_hash(entries[-1]), r.json
    assert d.request("GET", "/v1/audit/verify").status == 401

    d.stop_and_check()
    rc, out = verify_cli(binary, d.data)
    assert rc == 0 and out["ok"] is True and out["entries"] == n, out

    bad = next(e["seq"] for e in entries if e.get("target") == ids[2])
    tamper(d.data, bad, how)
    rc, out = verify_cli(binary, d.data)
    assert rc == 1 and out == {"ok": False, "first_bad": bad}, (rc, out)
    d.start()
    r = api.get("/v1/audit/verify")
    assert r.status == 200 and r.json == {"ok": False, "first_bad": bad}, r


def strip_prev_hash(data, seqs):
    """Writes entries seqs back without prev_hash, as an older authd wrote
    them (a stopped daemon's store)."""
    if BACKEND == "postgres":
        pg_sql(data, "UPDATE audit SET doc = (doc::jsonb - 'prev_hash')::text "
                     "WHERE seq IN (%s)" % ",".join(str(x) for x in seqs))
        return

    def edit(entries):
        out = []
        for seq, text in entries:
            if seq in seqs:
                e = json.loads(text)
                del e["prev_hash"]
                text = json.dumps(e)
            out.append((seq, text))
        return out
    lmdb_entries_edit(os.path.join(data, "store"), edit)


def test_a_log_from_before_the_chain_is_chained_from_its_next_entry(
        spawn_authd, binary):
    d = spawn_authd()
    api = d.api(d.admin_key)
    for _ in range(3):
        create_device(api, uid("old-"))
    old = api.list_all("/v1/audit", limit=100)
    d.stop_and_check()
    strip_prev_hash(d.data, [e["seq"] for e in old])
    d.start()
    create_device(api, uid("new-"))
    entries = api.list_all("/v1/audit", limit=100)
    assert "prev_hash" not in entries[len(old) - 1]
    assert entries[len(old)]["prev_hash"] == entry_hash(entries[len(old) - 1]), (
        "the first chained entry covers the last older one")
    r = api.get("/v1/audit/verify")
    assert r.json == {"ok": True, "entries": len(entries), "unchained": len(old),
                      "head": entry_hash(entries[-1])}, r.json
    # Once the chain has started, an entry without prev_hash is a change.
    create_device(api, uid("new-"))
    d.stop_and_check()
    strip_prev_hash(d.data, [len(old) + 1])
    rc, out = verify_cli(binary, d.data)
    assert rc == 1 and out == {"ok": False, "first_bad": len(old) + 1}, out


def test_concurrent_enrollments_keep_the_chain(spawn_authd, binary, tmp_path):
    d = spawn_authd()
    api = d.api(d.admin_key)
    enr = create_enrollment(api, max_uses=100)
    errors = []

    def worker(w):
        for i in range(5):
            did = uid("conc-%d-%d-" % (w, i))
            _, r = enroll(d, enr["token"], did, str(tmp_path))
            if r.status != 201:
                errors.append(r)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    entries = api.list_all("/v1/audit", limit=100)
    assert sum(e["action"] == "cert.enroll" for e in entries) == 40
    assert all(e["actor"] == "enrollment:" + enr["id"]
               for e in entries if e["action"] == "cert.enroll")
    check_chain(entries)
    r = api.get("/v1/audit/verify")
    assert r.json["ok"] is True and r.json["entries"] == len(entries), r
    d.stop_and_check()
    rc, out = verify_cli(binary, d.data)
    assert rc == 0 and out["entries"] == len(entries), out


# ---------------------------------------------------------- authctl ----

def authctl_bin(binary):
    path = os.environ.get("AUTHCTL_BIN")
    if path:
        return path
    build = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    return os.path.join(build, "clients", "authctl", "authctl")


@pytest.fixture
def ctl_env(authd, binary):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
    env.update({
        "AUTHD_URL": "https://127.0.0.1:%d" % authd.https_port,
        "AUTHD_CACERT": os.path.join(authd.data, "ca", "chain.pem"),
        "AUTHD_KEY": authd.admin_key,
    })
    return [authctl_bin(binary)], env


def test_authctl_audit_filters(admin, ctl_env):
    cmd, env = ctl_env
    did = uid("ctl-aud-")
    create_device(admin, did)
    assert admin.delete("/v1/devices/" + did).status in (200, 204)
    p = subprocess.run(cmd + ["--json", "audit", "--target", did, "--desc",
                              "--limit", "1"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    items = json.loads(p.stdout)["items"]
    assert [e["action"] for e in items] == ["device.delete"], items
    p = subprocess.run(cmd + ["audit", "--action", "device.create", "--target", did],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "device.create" in p.stdout and \
        "device.delete" not in p.stdout, p.stdout
    p = subprocess.run(cmd + ["audit", "--since", "never"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "since" in p.stderr, (p.returncode, p.stderr)


def test_authctl_audit_follow_prints_new_entries_until_sigint(admin, ctl_env):
    cmd, env = ctl_env
    did = uid("follow-")
    p = subprocess.Popen(cmd + ["audit", "--follow", "--action", "device.*"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        time.sleep(1.5)  # it has read the newest seq and polls
        create_device(admin, uid("other-"))
        create_device(admin, did)
        admin.put("/v1/groups/" + uid("g-"), {"policies": []})
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")),
                                  daemon=True)
        reader.start()
        deadline = time.time() + 20
        while time.time() < deadline and not any(did in x for x in lines):
            time.sleep(0.1)
        time.sleep(1)  # the group change that follows must not show
        assert any(did in x and "device.create" in x for x in lines), lines
        assert not any("group." in x for x in lines), "the filter holds: %r" % lines
    finally:
        p.send_signal(signal.SIGINT)
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
    err = p.stderr.read()
    assert rc == 0, (rc, err)
    assert not [m for m in SANITIZER_MARKERS if m in err], err


# ------------------------------------------- every change is audited ----

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

# Every route through which an admin or a provisioner changes something,
# with the action of the entry it writes. A change route added to
# authd/routes.c without a row here fails the first test below.
CHANGE_ROUTES = {
    ("POST", "/v1/server-certs"): "cert.issue_server",
    ("POST", "/v1/devices"): "device.create",
    ("POST", "/v1/devices:import"): "device.create",
    ("PATCH", "/v1/devices/{}"): "device.update",
    ("DELETE", "/v1/devices/{}"): "device.delete",
    ("POST", "/v1/devices/{}/secret"): "device.set_secret",
    ("POST", "/v1/devices/{}/revoke"): "device.revoke",
    ("POST", "/v1/certs/{}/revoke"): "cert.revoke",
    ("POST", "/v1/enrollments"): "enrollment.create",
    ("PATCH", "/v1/enrollments/{}"): "enrollment.update",
    ("DELETE", "/v1/enrollments/{}"): "enrollment.delete",
    ("POST", "/v1/apikeys"): "apikey.create",
    ("DELETE", "/v1/apikeys/{}"): "apikey.delete",
    ("PUT", "/v1/policies/{}"): "policy.put",
    ("DELETE", "/v1/policies/{}"): "policy.delete",
    ("PUT", "/v1/groups/{}"): "group.put",
    ("DELETE", "/v1/groups/{}"): "group.delete",
    ("POST", "/v1/tokens/revoke"): "token.revoke",
    ("POST", "/v1/token-keys"): "token_key.rotate",
}
# Admin routes that take a body but change nothing.
READ_ONLY_ROUTES = {("POST", "/v1/policies/explain")}


def admin_change_routes():
    with open(os.path.join(SRC, "authd", "routes.c"), encoding="utf-8") as f:
        rows = re.findall(r'RF?\("([A-Z]+)",\s*"([^"]+)",\s*\w+,\s*(ACCESS_\w+)', f.read())
    assert len(rows) > 40, rows
    return {(m, p) for m, p, access in rows
            if m != "GET" and access in ("ACCESS_ADMIN", "ACCESS_PROVISIONER")}


def test_every_admin_change_route_has_an_audit_action():
    routes = admin_change_routes() - READ_ONLY_ROUTES
    assert routes == set(CHANGE_ROUTES), (
        "change routes without an audit action here: %s; rows for no route: %s" % (
            sorted(routes - set(CHANGE_ROUTES)), sorted(set(CHANGE_ROUTES) - routes)))
    with open(os.path.join(SRC, "docs", "audit.md"), encoding="utf-8") as f:
        doc = f.read()
    for (method, path), action in CHANGE_ROUTES.items():
        assert "`%s`" % action in doc, "docs/audit.md does not list " + action
        assert path.split("{")[0].rstrip("/") in doc, (
            "docs/audit.md does not name the route writing %s" % action)


def test_every_admin_change_writes_an_entry_naming_the_key(admin, enrolled):
    actor = admin_actor(admin)
    seen = {}

    def did(method, path, action, target, call):
        r = call()
        assert r.status in (200, 201, 204), (method, path, r)
        got = page(admin, "?action=%s&target=%s&order=desc&limit=1" % (action, quote(target)))
        assert got["items"] and got["items"][0]["actor"] == actor, (method, path, got)
        seen[(method, path)] = action

    pol, grp, dev = uid("aud-p-"), uid("aud-g-"), uid("aud-d-")
    stmt = {"effect": "allow", "actions": ["publish"], "topics": ["a/b"]}
    did("PUT", "/v1/policies/{}", "policy.put", pol,
        lambda: admin.put("/v1/policies/" + pol, {"statements": [stmt]}))
    did("PUT", "/v1/groups/{}", "group.put", grp,
        lambda: admin.put("/v1/groups/" + grp, {"policies": [pol]}))
    did("POST", "/v1/devices", "device.create", dev,
        lambda: admin.post("/v1/devices", {"id": dev}))
    imp = uid("aud-i-")
    did("POST", "/v1/devices:import", "device.create", imp,
        lambda: admin.post("/v1/devices:import", json.dumps({"id": imp}) + "\n",
                           headers={"Content-Type": "application/x-ndjson"}))
    did("PATCH", "/v1/devices/{}", "device.update", dev,
        lambda: admin.patch("/v1/devices/" + dev, {"groups": [grp]}))
    did("POST", "/v1/devices/{}/secret", "device.set_secret", dev,
        lambda: admin.post("/v1/devices/%s/secret" % dev))
    did("DELETE", "/v1/devices/{}", "device.delete", imp,
        lambda: admin.delete("/v1/devices/" + imp))

    key, csr = make_csr("audit-broker")
    r = admin.post("/v1/server-certs", {"csr": csr, "dns": ["broker.example"], "days": 30})
    assert r.status == 201, r
    got = page(admin, "?action=cert.issue_server&order=desc&limit=1")["items"]
    assert got and got[0]["actor"] == actor, got
    seen[("POST", "/v1/server-certs")] = "cert.issue_server"

    d1, enr = enrolled()
    d2, _ = enrolled()
    did("POST", "/v1/certs/{}/revoke", "cert.revoke", d1.serial,
        lambda: admin.post("/v1/certs/%s/revoke" % d1.serial, {"reason": "superseded"}))
    did("POST", "/v1/devices/{}/revoke", "device.revoke", d2.id,
        lambda: admin.post("/v1/devices/%s/revoke" % d2.id, {}))

    r = admin.post("/v1/enrollments", {"max_uses": 1})
    assert r.status == 201, r
    eid = r.json["id"]
    got = page(admin, "?action=enrollment.create&target=%s" % eid)["items"]
    assert [e["actor"] for e in got] == [actor], got
    seen[("POST", "/v1/enrollments")] = "enrollment.create"
    did("PATCH", "/v1/enrollments/{}", "enrollment.update", eid,
        lambda: admin.patch("/v1/enrollments/" + eid, {"max_uses": 2}))
    did("DELETE", "/v1/enrollments/{}", "enrollment.delete", eid,
        lambda: admin.delete("/v1/enrollments/" + eid))

    r = admin.post("/v1/apikeys", {"name": uid("aud-k-"), "role": "broker"})
    assert r.status in (200, 201), r
    kid = r.json["id"]
    got = page(admin, "?action=apikey.create&target=%s" % kid)["items"]
    assert [e["actor"] for e in got] == [actor], got
    seen[("POST", "/v1/apikeys")] = "apikey.create"
    did("DELETE", "/v1/apikeys/{}", "apikey.delete", kid,
        lambda: admin.delete("/v1/apikeys/" + kid))

    jti = uid("jti-")
    did("POST", "/v1/tokens/revoke", "token.revoke", jti,
        lambda: admin.post("/v1/tokens/revoke", {"jti": jti}))
    r = admin.post("/v1/token-keys", {})
    assert r.status in (200, 201), r
    got = page(admin, "?action=token_key.rotate&target=%s" % r.json["kid"])["items"]
    assert [e["actor"] for e in got] == [actor], got
    seen[("POST", "/v1/token-keys")] = "token_key.rotate"

    admin.patch("/v1/devices/" + dev, {"groups": []})
    did("DELETE", "/v1/groups/{}", "group.delete", grp,
        lambda: admin.delete("/v1/groups/" + grp))
    did("DELETE", "/v1/policies/{}", "policy.delete", pol,
        lambda: admin.delete("/v1/policies/" + pol))

    assert seen == CHANGE_ROUTES, sorted(set(CHANGE_ROUTES) - set(seen))
