"""§14 Idempotent re-enrollment: a device enrolling again under the same
enrollment with the same key gets its existing valid certificate back
(200, not 201) and spends no use, so an interrupted factory batch can be
run again from the start. A new key, or a revoked previous certificate,
gets a new certificate and spends a use."""

import threading

from authd_harness import Device, assert_error, create_enrollment, uid


def post_enroll(authd, token, dev, csr=None):
    return authd.request("POST", "/v1/enroll",
                         {"csr": csr or dev.csr_pem, "device_id": dev.id}, token=token)


def used(admin, enr):
    return admin.get("/v1/enrollments/" + enr["id"]).json["used"]


def test_interrupted_batch_replays_without_spending_uses(authd, admin, devdir):
    n = 6
    enr = create_enrollment(admin, max_uses=n)
    devs = [Device(devdir, uid("res-")) for _ in range(n)]
    first = {}
    # The batch is interrupted after four devices...
    for d in devs[:4]:
        r = post_enroll(authd, enr["token"], d)
        assert r.status == 201, r
        first[d.id] = r.json["serial"]
    assert used(admin, enr) == 4
    # ...and run again from the start: the first four get their
    # certificates back, the rest are enrolled, and the budget is exact.
    for d in devs:
        r = post_enroll(authd, enr["token"], d)
        if d.id in first:
            assert r.status == 200, r
            assert r.json["serial"] == first[d.id], r.json
        else:
            assert r.status == 201, r
            first[d.id] = r.json["serial"]
    assert used(admin, enr) == n
    # Used up, a replay still answers; a new device does not.
    r = post_enroll(authd, enr["token"], devs[0])
    assert r.status == 200 and r.json["serial"] == first[devs[0].id], r
    assert_error(post_enroll(authd, enr["token"], Device(devdir, uid("res-"))),
                 403, "enrollment_used_up")
    certs = admin.get("/v1/devices/" + devs[0].id).json["certs"]
    assert len(certs) == 1, "a replay records no certificate: %r" % certs


def test_a_different_key_gets_a_new_certificate_and_spends_a_use(authd, admin, devdir):
    enr = create_enrollment(admin, max_uses=5)
    did = uid("res-")
    a, b = Device(devdir, did), Device(devdir, did)
    r1 = post_enroll(authd, enr["token"], a)
    assert r1.status == 201, r1
    r2 = post_enroll(authd, enr["token"], b)
    assert r2.status == 201 and r2.json["serial"] != r1.json["serial"], r2
    assert used(admin, enr) == 2


def test_a_revoked_certificate_is_not_handed_back(authd, admin, devdir):
    enr = create_enrollment(admin, max_uses=5)
    dev = Device(devdir, uid("res-"))
    r1 = post_enroll(authd, enr["token"], dev)
    assert r1.status == 201, r1
    rv = admin.post("/v1/certs/%s/revoke" % r1.json["serial"], {"reason": "superseded"})
    assert rv.status == 200, rv
    r2 = post_enroll(authd, enr["token"], dev)
    assert r2.status == 201 and r2.json["serial"] != r1.json["serial"], r2
    assert used(admin, enr) == 2


def test_another_enrollment_is_not_a_replay(authd, admin, devdir):
    e1, e2 = create_enrollment(admin), create_enrollment(admin)
    dev = Device(devdir, uid("res-"))
    assert post_enroll(authd, e1["token"], dev).status == 201
    r = post_enroll(authd, e2["token"], dev)
    assert r.status == 201, r
    assert used(admin, e2) == 1


def test_concurrent_replays_spend_one_use(authd, admin, devdir):
    enr = create_enrollment(admin, max_uses=10)
    dev = Device(devdir, uid("res-"))
    out = []

    def go():
        out.append(post_enroll(authd, enr["token"], dev))

    ts = [threading.Thread(target=go) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert sorted(r.status for r in out) == [200] * 5 + [201], out
    assert len({r.json["serial"] for r in out}) == 1
    assert used(admin, enr) == 1
