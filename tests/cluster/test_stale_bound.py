"""A node that cannot hear the other nodes must not answer from its caches
for longer than check_ttl: while its change feed is down it cannot learn
of a revocation made elsewhere. One node on PostgreSQL, check_ttl = 3 s:
when the database dies, the allow it had cached holds for at most 3 s,
then checks deny; when the database returns, the device is allowed
again."""

import os
import time

from authd_harness import create_enrollment, enroll, uid
from cluster_env import PgServer, init_node, make_node, readyz, wait_until
from test_cluster import check, connect_check

TTL = 3


def test_cached_answers_end_check_ttl_after_the_feed_goes_down(tmp_path):
    pg = PgServer().start()
    node = None
    try:
        url = pg.createdb("stale_bound")
        data = str(tmp_path / "node")
        init_node(data, url)
        cfg = tmp_path / "authd.conf"
        cfg.write_text("check_ttl = %d\n" % TTL)
        node = make_node(data, url)
        node.extra_args += ["--config", str(cfg)]
        node.start()
        admin = node.api(node.admin_key)
        pol, grp = uid("pol-st-"), uid("grp-st-")
        assert admin.put("/v1/policies/" + pol, {"statements": [
            {"effect": "allow", "actions": ["connect"],
             "client_ids": ["${device.id}"]}]}).status == 201
        assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
        enr = create_enrollment(admin, groups=[grp])
        dev, r = enroll(node, enr["token"], uid("st-"), str(tmp_path))
        assert r.status == 201, r
        body = connect_check(dev)
        assert check(node, body) == "allow"  # now cached

        pg.kill()
        down_at = time.monotonic()
        wait_until(lambda: readyz(node) == 503, 10, "/readyz 503 without the database")
        answers = []
        while time.monotonic() - down_at < TTL + 4:
            answers.append((time.monotonic() - down_at, check(node, body, timeout=10)))
            time.sleep(0.1)
        last_allow = max((t for t, a in answers if a == "allow"), default=None)
        first_deny = min((t for t, a in answers if a == "deny"), default=None)
        print("\ncheck_ttl %d s: last allow %.2f s, first deny %.2f s after the database died"
              % (TTL, last_allow or -1, first_deny or -1))
        assert first_deny is not None, "checks must deny once check_ttl has passed: %r" % answers
        assert last_allow is None or last_allow <= TTL + 0.5, (
            "an answer from the cache outlived check_ttl by more than the tick: %r" % answers)
        assert all(a == "deny" for t, a in answers if t > TTL + 0.5), answers

        pg.restart()
        wait_until(lambda: readyz(node) == 200, 15, "/readyz 200 after the database returned")
        assert check(node, body) == "allow", "fresh answers once the database is back"
    finally:
        if node is not None and node.proc is not None:
            assert node.stop() == 0, node.stderr()[-3000:]
        pg.stop()
