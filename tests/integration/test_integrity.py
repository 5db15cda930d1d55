"""§14 Referential integrity: a policy or group that a device or group
still names cannot be deleted (409 in_use, naming who uses it) unless
?force=true, and a device or group may only name policies and groups that
exist (400 unknown_policy / unknown_group): through POST and PATCH
/v1/devices, each import line, an enrollment's groups and PUT /v1/groups.
The check is made inside the write, so racing a create that names a
policy against that policy's delete never leaves a dangling name."""

import json
import threading

from authd_harness import assert_error, create_enrollment, enroll, uid

NDJSON = {"Content-Type": "application/x-ndjson"}
DOC = {"statements": [{"effect": "allow", "actions": ["publish"], "topics": ["t/#"]}]}


def policy(admin):
    name = uid("ipol-")
    assert admin.put("/v1/policies/" + name, DOC).status == 201
    return name


def group(admin, policies=()):
    name = uid("igrp-")
    r = admin.put("/v1/groups/" + name, {"policies": list(policies)})
    assert r.status == 201, r
    return name


def test_unknown_policy_or_group_in_a_device_is_refused(admin):
    pol, grp = policy(admin), group(admin)
    missing = uid("nopol-")
    r = admin.post("/v1/devices", {"id": uid("idev-"), "policies": [pol, missing]})
    assert_error(r, 400, "unknown_policy")
    assert missing in r.json["error"]["message"]
    did = uid("idev-")
    assert_error(admin.post("/v1/devices", {"id": did, "groups": [uid("nogrp-")]}),
                 400, "unknown_group")
    assert admin.get("/v1/devices/" + did).status == 404, "nothing was written"
    assert admin.post("/v1/devices", {"id": did, "policies": [pol], "groups": [grp]}).status == 201
    assert_error(admin.patch("/v1/devices/" + did, {"policies": [missing]}), 400, "unknown_policy")
    assert_error(admin.patch("/v1/devices/" + did, {"groups": ["x" + missing]}), 400, "unknown_group")
    assert admin.get("/v1/devices/" + did).json["policies"] == [pol]


def test_unknown_policy_in_a_group_and_unknown_group_in_an_enrollment(admin):
    assert_error(admin.put("/v1/groups/" + uid("igrp-"), {"policies": [uid("nopol-")]}),
                 400, "unknown_policy")
    body = {"name": uid("enr-"), "id_pattern": "*", "max_uses": 5, "expires_in": 600,
            "groups": [uid("nogrp-")], "cert_days": 30}
    assert_error(admin.post("/v1/enrollments", body), 400, "unknown_group")


def enrollment(admin, groups):
    body = {"name": uid("ienr-"), "id_pattern": "*", "max_uses": 5, "expires_in": 600,
            "groups": list(groups), "cert_days": 30}
    r = admin.post("/v1/enrollments", body)
    assert r.status == 201, r
    return r.json["id"]


def test_a_group_an_enrollment_names_cannot_be_deleted_unless_forced(admin):
    # The devices an enrollment creates join its groups: deleting one of
    # them would leave a factory batch failing every device it enrolls.
    grp = group(admin)
    eid = enrollment(admin, [grp])
    r = admin.delete("/v1/groups/" + grp)
    assert_error(r, 409, "in_use")
    assert "enrollments " + eid in r.json["error"]["message"], r.json
    # An update that drops the group, or deleting the enrollment, frees it.
    assert admin.patch("/v1/enrollments/" + eid, {"groups": []}).status == 200
    assert admin.delete("/v1/groups/" + grp).status == 204
    grp2 = group(admin)
    eid2 = enrollment(admin, [grp2])
    assert_error(admin.delete("/v1/groups/" + grp2), 409, "in_use")
    assert admin.patch("/v1/enrollments/" + eid2, {"groups": [grp2]}).status == 200
    assert_error(admin.delete("/v1/groups/" + grp2), 409, "in_use")
    assert admin.delete("/v1/enrollments/" + eid2).status in (200, 204)
    assert admin.delete("/v1/groups/" + grp2).status == 204
    grp3 = group(admin)
    enrollment(admin, [grp3])
    assert admin.delete("/v1/groups/%s?force=true" % grp3).status == 204


def test_delete_of_a_used_policy_is_in_use_unless_forced(admin):
    pol = policy(admin)
    grp = group(admin, [pol])
    devs = [uid("iuse-") for _ in range(23)]
    for d in devs:
        assert admin.post("/v1/devices", {"id": d, "policies": [pol]}).status == 201
    r = admin.delete("/v1/policies/" + pol)
    assert_error(r, 409, "in_use")
    msg = r.json["error"]["message"]
    # A bounded list: the first 20 devices, then "and more", and the group.
    assert sum(d in msg for d in devs) == 20 and "and more" in msg and grp in msg, msg
    assert admin.get("/v1/policies/" + pol).status == 200
    # The group's use alone still holds it.
    for d in devs:
        assert admin.patch("/v1/devices/" + d, {"policies": []}).status == 200
    r = admin.delete("/v1/policies/" + pol)
    assert_error(r, 409, "in_use")
    assert grp in r.json["error"]["message"] and devs[0] not in r.json["error"]["message"]
    assert admin.put("/v1/groups/" + grp, {"policies": []}).status == 200
    assert admin.delete("/v1/policies/" + pol).status == 204


def test_force_deletes_and_the_device_keeps_the_missing_name(admin):
    pol, grp = policy(admin), group(admin)
    did = uid("iforce-")
    assert admin.post("/v1/devices", {"id": did, "policies": [pol], "groups": [grp]}).status == 201
    assert_error(admin.delete("/v1/groups/" + grp), 409, "in_use")
    assert_error(admin.delete("/v1/groups/" + grp + "?force=maybe"), 400)
    assert admin.delete("/v1/groups/" + grp + "?force=true").status == 204
    assert admin.delete("/v1/policies/" + pol + "?force=true").status == 204
    dev = admin.get("/v1/devices/" + did).json
    assert dev["policies"] == [pol] and dev["groups"] == [grp]
    # Put back, the name is in use again (the index still knows the device).
    assert admin.put("/v1/policies/" + pol, DOC).status == 201
    assert_error(admin.delete("/v1/policies/" + pol), 409, "in_use")
    # A deleted device no longer holds anything.
    assert admin.delete("/v1/devices/" + did).status in (200, 204)
    assert admin.delete("/v1/policies/" + pol).status == 204


def test_import_line_with_an_unknown_policy_is_that_lines_error(admin):
    pol = policy(admin)
    good, bad, bad_grp = uid("iimp-"), uid("iimp-"), uid("iimp-")
    lines = [json.dumps({"id": good, "policies": [pol]}),
             json.dumps({"id": bad, "policies": [uid("nopol-")]}),
             json.dumps({"id": bad_grp, "groups": [uid("nogrp-")]})]
    r = admin.post("/v1/devices:import", "".join(l + "\n" for l in lines), headers=NDJSON)
    assert r.status == 200, r
    assert r.json["created"] == 1, r.json
    failed = {f["line"]: f["error"]["code"] for f in r.json["failed"]}
    assert failed == {2: "unknown_policy", 3: "unknown_group"}, r.json
    assert admin.get("/v1/devices/" + good).status == 200
    assert admin.get("/v1/devices/" + bad).status == 404
    assert_error(admin.delete("/v1/policies/" + pol), 409, "in_use")


def test_enrolled_device_holds_its_enrollments_groups(authd, admin, devdir):
    grp = group(admin)
    enr = create_enrollment(admin, groups=[grp])
    did = uid("ienr-")
    _, r = enroll(authd, enr["token"], did, devdir)
    assert r.status == 201, r
    assert_error(admin.delete("/v1/groups/" + grp), 409, "in_use")
    # A group force-deleted after the enrollment was made refuses new
    # devices rather than giving them a dangling name.
    assert admin.delete("/v1/groups/" + grp + "?force=true").status == 204
    _, r = enroll(authd, enr["token"], uid("ienr-"), devdir)
    assert_error(r, 400, "unknown_group")


def race(create, delete, out):
    """Runs create and delete at once; their answers, out["c"], out["d"]."""
    ts = [threading.Thread(target=create), threading.Thread(target=delete)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return out["c"], out["d"]


def test_create_racing_delete_never_leaves_a_dangling_reference(admin):
    """Creates naming a policy race its delete: whichever order the
    writes take, a device that was created holds a policy that exists,
    or the delete was refused."""
    for _ in range(15):
        pol = policy(admin)
        did = uid("irace-")
        out = {}

        def create():
            out["c"] = admin.post("/v1/devices", {"id": did, "policies": [pol]})

        def delete():
            out["d"] = admin.delete("/v1/policies/" + pol)

        c, d = race(create, delete, out)
        if c.status == 201:
            assert d.status == 409, "the delete must see the new reference: %r %r" % (c, d)
        else:
            assert_error(c, 400, "unknown_policy")
            assert d.status == 204


def test_enrollment_racing_its_groups_delete_never_leaves_a_dangling_group(admin):
    """The same for an enrollment naming a group: an enrollment that was
    created names a group that exists, or the delete was refused."""
    for _ in range(15):
        grp = group(admin)
        out = {}
        body = {"name": uid("irace-"), "id_pattern": "*", "max_uses": 5,
                "expires_in": 600, "groups": [grp], "cert_days": 30}

        def create():
            out["c"] = admin.post("/v1/enrollments", body)

        def delete():
            out["d"] = admin.delete("/v1/groups/" + grp)

        c, d = race(create, delete, out)
        if c.status == 201:
            assert d.status == 409, "the delete must see the new reference: %r %r" % (c, d)
            assert admin.get("/v1/groups/" + grp).status == 200
        else:
            assert_error(c, 400, "unknown_group")
            assert d.status == 204


def test_a_store_from_before_the_indexes_gets_them_at_start(spawn_authd):
    """A data dir written by a daemon without the reference indexes (made
    here by copying an LMDB store without them and without the marker)
    is indexed once when authd starts."""
    import os
    import shutil
    import subprocess

    import pytest

    from authd_harness import BACKEND

    if BACKEND != "lmdb" or not shutil.which("mdb_dump") or not shutil.which("mdb_load"):
        pytest.skip("needs the LMDB backend and lmdb-utils")
    d = spawn_authd()
    api = d.api(d.admin_key)
    pol = policy(api)
    grp = group(api, [pol])
    did = uid("iold-")
    assert api.post("/v1/devices", {"id": did, "policies": [pol], "groups": [grp]}).status == 201
    egrp = group(api)
    eid = enrollment(api, [egrp])
    d.stop_and_check()
    store = os.path.join(d.data, "store")
    dump = subprocess.run(["mdb_dump", "-a", "-p", store], capture_output=True,
                          text=True, check=True).stdout
    # Drop the reference index databases and their markers (those of
    # version 1, without the enrollments' groups, and of version 2), as an
    # old store was.
    kept = []
    sections = dump.split("VERSION=")
    for sec in sections[1:]:
        name = [l for l in sec.splitlines() if l.startswith("database=")]
        if name and name[0].split("=", 1)[1] in (
                "ix_devices_by_policy", "ix_devices_by_group", "ix_groups_by_policy",
                "ix_enrollments_by_group"):
            continue
        lines = sec.splitlines()
        if name and name[0] == "database=meta":
            i, filtered = 0, []
            while i < len(lines):
                if lines[i] in (" refs_index", " refs_index_2"):
                    i += 2  # the key and its value
                    continue
                filtered.append(lines[i])
                i += 1
            lines = filtered
        kept.append("VERSION=" + "\n".join(lines) + "\n")
    assert len(kept) in (len(sections) - 4, len(sections) - 5), "the indexes were found"
    old = "".join(kept)
    assert "refs_index" not in old
    for f in os.listdir(store):
        os.unlink(os.path.join(store, f))
    subprocess.run(["mdb_load", "-f", "/dev/stdin", store], input=old, text=True, check=True)
    d2 = spawn_authd(data_dir=d.data)
    api2 = d2.api(d.admin_key)
    assert_error(api2.delete("/v1/policies/" + pol), 409, "in_use")
    assert_error(api2.delete("/v1/groups/" + grp), 409, "in_use")
    assert did in api2.delete("/v1/groups/" + grp).json["error"]["message"]
    r = api2.delete("/v1/groups/" + egrp)
    assert_error(r, 409, "in_use")
    assert eid in r.json["error"]["message"]
