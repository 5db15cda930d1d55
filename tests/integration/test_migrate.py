"""`authd migrate`: an LMDB registry moves into PostgreSQL offline, the
copy is proven by counts taken on both sides, and the node then serves
the same registry from PostgreSQL: the same records, the same decisions,
the same CRL, and event ids that go on from where they were.

Runs in both backend passes: its source is always an LMDB data dir
(`init --store lmdb:`), its destination a fresh database on the test's
PostgreSQL server."""

import hashlib
import os
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authd_harness import (WRAPPER, Authd, create_enrollment, enroll,
                           pg_database_url, uid)
from test_check import EXAMPLE_POLICY
from test_revocation import SseClient


def run_authd(binary, *args):
    return subprocess.run(WRAPPER + [binary] + list(args), capture_output=True,
                          text=True, timeout=300)


def fingerprint(dev):
    der = x509.load_pem_x509_certificate(dev.cert_pem.encode()).public_bytes(
        serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def connect(d, dev):
    r = d.request("POST", "/v1/check", {"action": "connect", "client_id": dev.id,
                                        "cert_fingerprint": fingerprint(dev)},
                  port=d.check_port)
    assert r.status == 200, r
    return r.json["result"]


def crl_serials(d):
    r = d.request("GET", "/v1/crl")
    assert r.status == 200, r
    crl = x509.load_der_x509_crl(r.raw)
    return {format(e.serial_number, "x") for e in crl}, crl


def populate(d, tmp_path):
    """A registry with something in every table: policies, a group,
    devices enrolled by certificate, one revoked, one suspended."""
    admin = d.api(d.admin_key)
    pol, grp = uid("pol-mig-"), uid("grp-mig-")
    assert admin.put("/v1/policies/" + pol, EXAMPLE_POLICY).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    enr = create_enrollment(admin, groups=[grp])
    devs = []
    for _ in range(6):
        dev, r = enroll(d, enr["token"], uid("mig-"), str(tmp_path))
        assert r.status == 201, r
        devs.append(dev)
    assert admin.post("/v1/devices/%s/revoke" % devs[0].id,
                      {"reason": "keyCompromise"}).status == 200
    assert admin.patch("/v1/devices/" + devs[1].id,
                       {"status": "suspended"}).status == 200
    for i in range(5):
        assert admin.post("/v1/devices", {"id": uid("mig-plain-%d-" % i),
                                          "groups": [grp]}).status == 201
    return admin, enr, devs


def test_migrate_moves_an_lmdb_registry_into_postgresql_and_checks_agree(
        binary, tmp_path):
    data = str(tmp_path / "node")
    r = run_authd(binary, "init", "--data", data, "--store", "lmdb:")
    assert r.returncode == 0, r.stderr
    d = Authd(data, binary).start()
    sse = SseClient(d.check_port)
    try:
        time.sleep(0.2)
        admin, enr, devs = populate(d, tmp_path)
        before = {
            "devices": sorted(x["id"] for x in admin.list_all("/v1/devices")),
            "certs": sorted(x["serial"] for x in admin.list_all("/v1/certs")),
            "enrollment": admin.get("/v1/enrollments/" + enr["id"]).json,
            "decisions": [connect(d, dev) for dev in devs],
            "crl": crl_serials(d)[0],
        }
        assert sse.wait_for(lambda e: e["data"].get("device") == devs[1].id)
    finally:
        sse.close()
        assert d.stop() == 0
    assert before["decisions"][:2] == ["deny", "deny"], before["decisions"]
    assert set(before["decisions"][2:]) == {"allow"}, before["decisions"]

    url = pg_database_url(uid("authd_mig_"))
    r = run_authd(binary, "migrate", "--data", data, "--to", url)
    assert r.returncode == 0, "authd migrate: %s%s" % (r.stdout, r.stderr)
    counts = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            counts[parts[0]] = (int(parts[1]), int(parts[2]))
    assert counts.get("devices") == (11, 11), r.stdout
    assert counts.get("certs") == (6, 6), r.stdout
    assert all(src == dst for src, dst in counts.values()), (
        "migrate verifies by counting both sides: %s" % r.stdout)
    assert counts["audit"][0] > 0 and counts["events"][0] >= 2, r.stdout
    with open(os.path.join(data, "store.url")) as f:
        assert f.read().strip() == url, "the data dir now remembers PostgreSQL"
    assert url.split("@")[-1] not in r.stderr, "no store URL in the messages"

    # The same node, now on PostgreSQL: same registry, same answers.
    d2 = Authd(data, binary).start()
    try:
        admin2 = d2.api(d2.admin_key)
        assert sorted(x["id"] for x in admin2.list_all("/v1/devices")) == before["devices"]
        assert sorted(x["serial"] for x in admin2.list_all("/v1/certs")) == before["certs"]
        after_enr = admin2.get("/v1/enrollments/" + enr["id"]).json
        assert after_enr["used"] == before["enrollment"]["used"] == 6, after_enr
        for dev in devs:
            got = admin2.get("/v1/certs/" + dev.serial).json
            assert got["pem"].strip() == dev.cert_pem.strip(), "a sample record is byte-identical"
        assert [connect(d2, dev) for dev in devs] == before["decisions"]
        serials, crl = crl_serials(d2)
        assert serials == before["crl"] and devs[0].serial.lstrip("0") in {
            s.lstrip("0") for s in serials}, "the CRL lists the same certificates"
        # Event ids go on: a client that saw the last one misses nothing new.
        last = max(e["id"] for e in sse.events)
        resumed = SseClient(d2.check_port, last_event_id=last)
        try:
            assert admin2.patch("/v1/devices/" + devs[2].id,
                                {"status": "suspended"}).status == 200
            ev = resumed.wait_for(lambda e: e["data"].get("device") == devs[2].id)
            assert ev is not None and ev["id"] > last, resumed.events
            assert all(e["id"] > last for e in resumed.events), resumed.events
        finally:
            resumed.close()
        assert connect(d2, devs[2]) == "deny"
        # And the node keeps enrolling under the migrated budget.
        dev, r = enroll(d2, enr["token"], uid("mig-new-"), str(tmp_path))
        assert r.status == 201, r
        assert admin2.get("/v1/enrollments/" + enr["id"]).json["used"] == 7
    finally:
        assert d2.stop() == 0


def test_migrate_refuses_a_database_that_already_holds_a_registry(binary, tmp_path):
    url = pg_database_url(uid("authd_mig_full_"))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for data, store in ((a, url), (b, "lmdb:")):
        r = run_authd(binary, "init", "--data", data, "--store", store)
        assert r.returncode == 0, r.stderr
    d = Authd(a, binary).start()
    try:
        assert d.api(d.admin_key).post("/v1/devices", {"id": uid("full-")}).status == 201
    finally:
        assert d.stop() == 0
    db = Authd(b, binary).start()
    try:
        assert db.api(db.admin_key).post("/v1/devices", {"id": uid("src-")}).status == 201
    finally:
        assert db.stop() == 0
    r = run_authd(binary, "migrate", "--data", b, "--to", url)
    assert r.returncode == 3, "a database with devices is refused: %s%s" % (r.stdout, r.stderr)
    with open(os.path.join(b, "store.url")) as f:
        assert f.read().strip() == "lmdb:", "the data dir keeps its store"
    r = run_authd(binary, "migrate", "--data", b)
    assert r.returncode == 2 and "--to" in r.stderr, r.stderr
