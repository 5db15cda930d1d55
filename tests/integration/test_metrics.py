"""GET /metrics (docs/api.md §14): every series the page lists is served
with sane values after real checks, enrollments and revocations; check
decisions are counted by result and a bounded reason label; a flood of
bad credentials shows in authd_rate_limited_total; metrics_token puts
/metrics behind a bearer token (401 without it, 200 with it); and the
Grafana dashboard in dist/ asks only for series authd serves."""

import json
import os
import re
import time

from authd_harness import (BACKEND, assert_error, bearer, connect_group,
                           secret_device, uid)

from test_revocation import SseClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARD = os.path.join(REPO, "dist", "grafana-authd.json")


def served_reasons():
    """The values the reason label may take: authd/http.c's table (the
    check reasons, and "other" for any reason not in it)."""
    with open(os.path.join(REPO, "authd", "http.c"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("check_reasons[] = {"):]
    return set(re.findall(r'"([a-z_]+)"', table[:table.index("};")]))


REASONS = served_reasons()


def samples(text):
    """[(name, {label: value}, float)] of a Prometheus text page."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$', line)
        assert m, "not Prometheus text exposition: %r" % line
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                 m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def scrape(d, port=None, token=None):
    r = d.request("GET", "/metrics", port=port,
                  headers=bearer(token) if token else None)
    assert r.status == 200, r
    return samples(r.text)


def value(ss, name, **labels):
    """The value of the one sample of name with (at least) these labels."""
    got = [v for n, ls, v in ss
           if n == name and all(ls.get(k) == want for k, want in labels.items())]
    assert len(got) == 1, "%s%r: %d samples" % (name, labels, len(got))
    return got[0]


def decisions(ss, result, reason):
    got = [v for n, ls, v in ss if n == "authd_check_decisions_total"
           and ls.get("result") == result and ls.get("reason") == reason]
    return got[0] if got else 0.0


def check(d, body):
    r = d.request("POST", "/v1/check", body, port=d.check_port)
    assert r.status == 200 and r.json, r
    return r.json


def connect(d, device, secret):
    return check(d, {"action": "connect", "username": device,
                     "client_id": device, "password": secret})


def test_every_series_is_served_with_sane_values(authd, admin, enrolled):
    group = connect_group(admin, "m-")
    did, secret = secret_device(admin, group, "m-")
    before = scrape(authd)

    assert connect(authd, did, secret)["result"] == "allow"
    assert connect(authd, did, secret)["result"] == "allow"
    a = connect(authd, did, "wrong-" + secret)
    assert a["result"] == "deny" and a["reason"] == "invalid_credential", a
    a = check(authd, {"action": "publish", "username": did, "client_id": did,
                      "password": secret, "topic": "t/elsewhere"})
    assert a["result"] == "deny" and a["reason"] == "no_matching_allow", a
    a = connect(authd, uid("nobody-"), "x")
    assert a["result"] == "deny" and a["reason"] == "unknown_device", a
    dev, _ = enrolled()
    r = admin.post("/v1/certs/%s/revoke" % dev.serial, {"reason": "keyCompromise"})
    assert r.status == 200, r

    ss = scrape(authd)
    for result, reason, n in (("allow", "allowed", 2), ("deny", "invalid_credential", 1),
                              ("deny", "no_matching_allow", 1),
                              ("deny", "unknown_device", 1)):
        assert decisions(ss, result, reason) >= decisions(before, result, reason) + n, (
            "each check is counted under its result and reason (%s, %s)" % (result, reason))
    labels = [ls for n, ls, _ in ss if n == "authd_check_decisions_total"]
    assert all(set(ls) == {"result", "reason"} and ls["result"] in ("allow", "deny")
               and ls["reason"] in REASONS for ls in labels), (
        "the decision labels stay within the documented set: %r" % labels)

    assert value(ss, "authd_certificates_issued_total") >= 1
    assert value(ss, "authd_revocations_total") >= 1

    used = value(ss, "authd_store_used_bytes")
    limit = value(ss, "authd_store_limit_bytes")
    if BACKEND == "postgres":
        # pg_database_size, measured by the database probe about once in
        # 10 s; no limit of authd's.
        assert limit == 0, limit
        deadline = time.monotonic() + 15
        while used == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            used = value(scrape(authd), "authd_store_used_bytes")
        assert used > 1 << 20, "a PostgreSQL database is megabytes: %r" % used
    else:
        # The map size is map_mb (4096 MiB by default); a store in use
        # holds a few pages at least.
        assert limit == 4096 << 20, limit
        assert 4096 * 4 <= used < limit, used

    now = time.time()
    issuing = value(ss, "authd_ca_not_after_seconds", ca="issuing")
    root = value(ss, "authd_ca_not_after_seconds", ca="root")
    assert now + 365 * 86400 < issuing <= root, (
        "the generated CAs last years, the root outlives the issuing CA: %r %r"
        % (issuing, root))

    age = value(ss, "authd_crl_age_seconds")
    assert 0 <= age < 3600, "a revocation just rebuilt the CRL: %r" % age

    assert value(ss, "authd_event_subscribers") >= 0
    build = [ls for n, ls, v in ss if n == "authd_build_info" and v == 1]
    assert len(build) == 1 and build[0]["version"], build
    for what in ("device_secret", "busy", "source"):
        assert value(ss, "authd_rate_limited_total", what=what) >= 0


def test_build_info_carries_the_version_authd_prints(authd, binary):
    import subprocess
    out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    ss = scrape(authd)
    version = [ls["version"] for n, ls, _ in ss if n == "authd_build_info"][0]
    assert version in out, "authd_build_info{version=%r} vs --version %r" % (version, out)


def test_event_subscribers_count_open_streams(authd):
    base = value(scrape(authd), "authd_event_subscribers")
    clients = [SseClient(authd.check_port) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        n = base
        while n < base + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            n = value(scrape(authd), "authd_event_subscribers")
        assert n >= base + 2, "two open streams are counted (%r -> %r)" % (base, n)
    finally:
        for c in clients:
            c.close()


def test_a_flood_of_bad_credentials_counts_in_rate_limited(spawn_authd):
    d = spawn_authd(extra_args=["--rate-fail-burst", "2", "--rate-source-burst", "3"])
    admin = d.api(d.admin_key)
    did, secret = secret_device(admin, connect_group(admin, "m-"), "m-")
    before = scrape(d)

    reasons = [connect(d, did, "guess-%d" % i)["reason"] for i in range(8)]
    assert "rate_limited" in reasons, reasons
    for i in range(10):
        r = d.request("GET", "/v1/devices", token="adk_wrong_%d" % i)
        if r.status == 429:
            break
    assert r.status == 429, "bad API keys from one address back off: %r" % r

    after = scrape(d)
    assert (value(after, "authd_rate_limited_total", what="device_secret")
            > value(before, "authd_rate_limited_total", what="device_secret")), (
        "a device backing off after wrong secrets is counted")
    assert (value(after, "authd_rate_limited_total", what="source")
            > value(before, "authd_rate_limited_total", what="source")), (
        "a source address backing off is counted")
    assert decisions(after, "deny", "rate_limited") >= reasons.count("rate_limited"), (
        "rate-limited checks are counted as decisions with their reason")


def test_metrics_token_guards_metrics(spawn_authd):
    token = "mt-" + uid()
    d = spawn_authd(extra_args=["--metrics-token", token])
    for port in (d.http_port, d.check_port):
        r = d.request("GET", "/metrics", port=port)
        assert_error(r, 401, "unauthorized")
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), r.headers
        r = d.request("GET", "/metrics", port=port, headers=bearer(token + "x"))
        assert_error(r, 401, "invalid_credential")
        r = d.request("GET", "/metrics", port=port, headers=bearer(token[:-1]))
        assert_error(r, 401, "invalid_credential")
        r = d.request("GET", "/metrics", port=port, headers=bearer(d.admin_key))
        assert_error(r, 401, "invalid_credential")
        ss = scrape(d, port=port, token=token)
        assert any(n == "authd_build_info" for n, _, _ in ss)
    # The health probes stay open.
    assert d.request("GET", "/healthz").status == 200
    assert d.request("GET", "/readyz").status == 200


def test_metrics_are_open_without_a_token(authd):
    assert authd.request("GET", "/metrics").status == 200


def expr_metric_names(node):
    """Every authd_* name used in an "expr" field of the dashboard."""
    names = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                names.update(re.findall(r"\bauthd_[a-z0-9_]+", v))
            else:
                names |= expr_metric_names(v)
    elif isinstance(node, list):
        for v in node:
            names |= expr_metric_names(v)
    return names


def test_the_grafana_dashboard_uses_only_served_series(authd, admin, enrolled):
    # Activity first, so every family has its samples (histograms and
    # per-reason counters appear once something is counted).
    group = connect_group(admin, "m-")
    did, secret = secret_device(admin, group, "m-")
    connect(authd, did, secret)
    connect(authd, did, "wrong")
    enrolled()
    served = {n for n, _, _ in scrape(authd)}
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    used = expr_metric_names(dash)
    assert len(used) >= 10, "the dashboard charts the series: %s" % sorted(used)
    unknown = sorted(used - served)
    assert not unknown, "the dashboard asks for series authd does not serve: %s" % unknown
    for name in ("authd_check_decisions_total", "authd_store_used_bytes",
                 "authd_store_limit_bytes", "authd_ca_not_after_seconds",
                 "authd_crl_age_seconds", "authd_event_subscribers",
                 "authd_rate_limited_total", "authd_build_info"):
        assert name in used, "the dashboard shows %s" % name


def test_api_md_lists_every_served_series(authd):
    with open(os.path.join(REPO, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## 14. Health and metrics"):text.index("## 15.")]
    r = authd.request("GET", "/metrics")
    families = set(re.findall(r"(?m)^# TYPE (\S+) ", r.text))
    assert "authd_build_info" in families, sorted(families)
    missing = sorted(f for f in families if "`%s`" % f not in section)
    assert not missing, "series served but not listed in docs/api.md §14: %s" % missing


def test_every_reason_a_check_can_answer_has_its_own_label_value():
    """The reason label's table is a list of its own beside the reasons
    the checker answers: a reason missing from it would hide as "other".
    Every reason literal the daemon and policy/ answer with, and every
    reason docs/api.md §10.3 lists, must be in it."""
    emitted = set()
    for d in ("authd", "policy"):
        for name in os.listdir(os.path.join(REPO, d)):
            if name.endswith(".c"):
                with open(os.path.join(REPO, d, name), encoding="utf-8") as f:
                    src = f.read()
                emitted |= set(re.findall(r'check_result_deny\([^,]+,\s*"([a-z_]+)"', src))
                emitted |= set(re.findall(r'\breason\s*=\s*"([a-z_]+)"', src))
    # "deferred" is never answered: the request is run again on the
    # secret lane, which answers the real reason.
    emitted.discard("deferred")
    assert len(emitted) > 20, emitted
    assert emitted <= REASONS, "answered but not a label value: %s" % sorted(emitted - REASONS)
    with open(os.path.join(REPO, "docs", "api.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc[doc.index("### 10.3 Reasons"):doc.index("### 10.4")]
    listed = set()
    for cell in re.findall(r"^\| ([^|]+) \|", section, re.M):
        listed |= set(re.findall(r"`([a-z_]+)`", cell))
    assert len(listed) > 30, listed
    assert listed <= REASONS, "documented but not a label value: %s" % sorted(listed - REASONS)
