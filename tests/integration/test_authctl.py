"""authctl, the admin CLI (docs/api.md §6-§12), end to end: the real binary
against a real authd over HTTPS verified with the daemon's CA, its admin
key from AUTHD_KEY (or --key-file). Checks exit statuses (0 ok, 1 refused,
2 usage, 3 unreachable), the human output, --json output parsed here,
and the files `provision` and `cert server` write, judged by openssl."""

import json
import os
import re
import stat
import subprocess
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authd_harness import (SANITIZER_MARKERS, authd_bin, create_enrollment, free_ports,
                           load_cert, run, uid)

SUBCOMMANDS = [
    "device add", "device list", "device show", "device suspend",
    "device resume", "device rm", "device secret", "group put", "group show",
    "group list", "group rm", "policy put", "policy get", "policy list",
    "policy rm", "policy test", "enroll create", "enroll list", "enroll show",
    "enroll rm", "cert list", "cert show", "cert server", "revoke cert",
    "revoke device", "token revoke", "token rotate-key", "apikey create",
    "apikey list", "apikey rm", "audit", "crl", "provision",
]

POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "deny", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/secret"]},
]}


def authctl_bin():
    """$AUTHCTL_BIN (set by meson), else next to the daemon's build."""
    path = os.environ.get("AUTHCTL_BIN")
    if path:
        return path
    build = os.path.dirname(os.path.dirname(os.path.abspath(authd_bin())))
    return os.path.join(build, "clients", "authctl", "authctl")


@pytest.fixture(scope="session")
def ctl_env(authd):
    """The environment a script would set: URL, CA and the admin key."""
    assert os.access(authctl_bin(), os.X_OK), "authctl not built: %s" % authctl_bin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHD_")}
    env.update({
        "AUTHD_URL": "https://127.0.0.1:%d" % authd.https_port,
        "AUTHD_CACERT": os.path.join(authd.data, "ca", "chain.pem"),
        "AUTHD_KEY": authd.admin_key,
    })
    return env


@pytest.fixture
def ctl(ctl_env):
    """ctl(*args, env=None, input=None, unset=()) -> CompletedProcess; env
    adds or overrides variables, unset removes them."""

    def call(*argv, env=None, input=None, unset=()):
        e = dict(ctl_env)
        e.update(env or {})
        for k in unset:
            e.pop(k, None)
        p = subprocess.run([authctl_bin()] + [str(a) for a in argv], env=e,
                           input=input, capture_output=True, text=True,
                           timeout=120)
        found = [m for m in SANITIZER_MARKERS if m in p.stderr]
        assert not found, "authctl %s: sanitizer report:\n%s" % (argv, p.stderr)
        return p

    return call


def ok(p):
    assert p.returncode == 0, "expected success, got %d:\n%s\n%s" % (
        p.returncode, p.stdout, p.stderr)
    return p


def js(p):
    """The --json output of a successful command, parsed."""
    return json.loads(ok(p).stdout)


def refused(p, text=None):
    assert p.returncode == 1, "a refusal exits 1, got %d:\n%s\n%s" % (
        p.returncode, p.stdout, p.stderr)
    if text:
        assert text in p.stderr, "the server's message goes to stderr: %r" % p.stderr
    return p


def usage(p):
    assert p.returncode == 2, "a usage error exits 2, got %d:\n%s\n%s" % (
        p.returncode, p.stdout, p.stderr)
    assert p.stderr.strip(), "a usage error says what is wrong"
    return p


def openssl_verify(chain, cert, purpose=None):
    cmd = ["openssl", "verify", "-CAfile", chain]
    if purpose:
        cmd += ["-purpose", purpose]
    out = run(cmd + [cert], check=False)
    assert out.returncode == 0 and ": OK" in out.stdout, out.stdout + out.stderr


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------- basics ----

def test_help_lists_every_subcommand_and_each_has_its_own_help(ctl):
    top = ok(ctl("--help")).stdout
    for sub in SUBCOMMANDS:
        assert sub in top, "authctl --help lists %r" % sub
        h = ok(ctl(*sub.split(), "--help"))
        assert h.stdout.startswith("usage: authctl " + sub), (
            "%s --help prints its usage on stdout: %r" % (sub, h.stdout[:200]))
        assert "--server" in h.stdout, "per-command help shows the global options"
    assert "device add" in ok(ctl("device", "--help")).stdout, (
        "a group's --help lists its subcommands")


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["device"],
    ["device", "explode", "x"],
    ["device", "show"],
    ["device", "show", "a", "b"],
    ["device", "list", "--bogus"],
    ["device", "list", "--limit", "ten"],
    ["device", "list", "--limit"],
    ["device", "add", "d", "--attr", "novalue"],
    ["policy", "test", "dev", "fly", "topic"],
    ["enroll", "create", "--max-uses", "-3"],
    ["apikey", "create", "--name", "x"],
    ["cert", "server", "--dns", "h"],
    ["provision", "--count", "2", "--prefix", "SN-", "--out", "/tmp/x"],
    ["provision", "--enrollment-token", "t", "--count", "2", "--prefix", "a/b",
     "--out", "/tmp/x"],
    ["--timeout", "0", "device", "list"],
    ["--server", "ftp://example.org", "device", "list"],
], ids=lambda a: " ".join(a) or "nothing")
def test_bad_usage_exits_2_without_calling_the_server(ctl, argv):
    # An unreachable server would make any request exit 3, so exit 2 also
    # shows that nothing was sent.
    usage(ctl(*argv, env={"AUTHD_URL": "http://127.0.0.1:%d" % free_ports(1)[0]}))


def test_an_unreachable_server_exits_3(ctl):
    port = free_ports(1)[0]
    p = ctl("--server", "https://127.0.0.1:%d" % port, "device", "list")
    assert p.returncode == 3, "connection refused exits 3: %d %s" % (p.returncode, p.stderr)
    assert "cannot reach" in p.stderr


def test_a_server_certificate_we_do_not_trust_exits_3(ctl, tmp_path):
    # The daemon's CA is not in the system store: without --cacert the TLS
    # handshake must fail, never fall back to an unverified connection.
    p = ctl("device", "list", unset=["AUTHD_CACERT"])
    assert p.returncode == 3, "a TLS verification failure exits 3: %d %s" % (
        p.returncode, p.stderr)


def test_cacert_flag_and_plain_http_url_both_work(ctl, ctl_env, authd):
    ok(ctl("--cacert", ctl_env["AUTHD_CACERT"], "device", "list",
           unset=["AUTHD_CACERT"]))
    ok(ctl("--server", "http://127.0.0.1:%d" % authd.http_port, "device", "list"))


def test_key_file_is_read_and_a_missing_credential_is_refused(ctl, authd, tmp_path):
    key = tmp_path / "admin.key"
    key.write_text(authd.admin_key + "\n")
    ok(ctl("--key-file", key, "apikey", "list", unset=["AUTHD_KEY"]))
    refused(ctl("apikey", "list", unset=["AUTHD_KEY"]))
    refused(ctl("apikey", "list", env={"AUTHD_KEY": "ak_wrong"}))
    usage(ctl("--key-file", tmp_path / "missing", "apikey", "list"))


# ------------------------------------------------------------ devices ----

def test_device_add_show_suspend_resume_rm(ctl, admin):
    dev, grp = uid("ctl-dev-"), uid("ctl-grp-")
    ok(ctl("group", "put", grp))  # devices may name existing groups only
    p = ok(ctl("device", "add", dev, "--group", grp, "--attr", "room=12",
               "--attr", "floor=2"))
    assert dev in p.stdout and "room=12" in p.stdout, p.stdout
    rec = admin.get("/v1/devices/" + dev).json
    assert rec["groups"] == [grp] and rec["attributes"] == {"room": "12", "floor": "2"}

    shown = js(ctl("--json", "device", "show", dev))
    assert shown["id"] == dev and shown["status"] == "active"
    human = ok(ctl("device", "show", dev)).stdout
    assert "status:" in human and "active" in human

    ok(ctl("device", "suspend", dev))
    assert admin.get("/v1/devices/" + dev).json["status"] == "suspended"
    assert js(ctl("device", "resume", dev, "--json"))["status"] == "active", (
        "--json may come after the arguments too")
    assert admin.get("/v1/devices/" + dev).json["status"] == "active"

    ok(ctl("device", "rm", dev))
    assert admin.get("/v1/devices/" + dev).status == 404


def test_an_unknown_device_exits_1_with_the_servers_message(ctl):
    p = refused(ctl("device", "show", uid("nope-")), "no such device")
    assert p.stdout == "", "nothing on stdout when the server refuses"
    refused(ctl("--json", "device", "suspend", uid("nope-")), "no such device")
    refused(ctl("device", "rm", uid("nope-")))


def test_adding_a_device_twice_is_refused(ctl):
    dev = uid("ctl-dup-")
    ok(ctl("device", "add", dev))
    refused(ctl("device", "add", dev), "already exists")
    refused(ctl("device", "add", "bad/id"))


def test_device_list_follows_the_cursor_through_every_page(ctl):
    prefix = uid("ctl-page-")
    ids = sorted("%s-%d" % (prefix, i) for i in range(7))
    for d in ids:
        ok(ctl("device", "add", d))
    every = js(ctl("--json", "--page-size", "2", "device", "list", "--prefix", prefix))
    assert sorted(d["id"] for d in every["items"]) == ids, (
        "all pages are fetched by default, 2 per request here")
    assert every["next"] is None, "the whole list ends with next null"
    capped = js(ctl("--json", "--page-size", "2", "device", "list", "--prefix",
                    prefix, "--limit", "3"))
    assert len(capped["items"]) == 3, "--limit caps the number of items"
    assert capped["next"], "a capped list says where to go on from"
    table = ok(ctl("device", "list", "--prefix", prefix)).stdout.splitlines()
    assert table[0].split()[:2] == ["ID", "STATUS"], table[0]
    assert len(table) == 1 + len(ids), "one row per device under a header"


def test_device_secret_is_printed_once_and_only_by_the_secret_command(ctl, authd):
    dev = uid("ctl-sec-")
    ok(ctl("device", "add", dev))
    out = js(ctl("--json", "device", "secret", dev))
    secret = out["secret"]
    assert len(secret) >= 32
    human = ok(ctl("device", "secret", dev))
    assert "secret:" in human.stdout and "only this once" in human.stderr
    assert secret not in ok(ctl("device", "show", dev)).stdout
    # The first secret was replaced by the second call.
    r = authd.request("POST", "/v1/check", {"action": "connect", "client_id": dev,
                                            "username": dev, "password": secret},
                      port=authd.check_port)
    assert r.json["result"] == "deny", "a new secret replaces the old one: %r" % r
    refused(ctl("device", "secret", uid("nope-")), "no such device")


# ---------------------------------------------------- groups, policies ----

def test_group_put_show_list_rm(ctl, admin):
    grp, pol = uid("ctl-g-"), uid("ctl-p-")
    refused(ctl("group", "put", grp, "--policy", pol), "unknown_policy")
    assert admin.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["publish"], "topics": ["g/x"]}]}).status == 201
    ok(ctl("group", "put", grp, "--policy", pol))
    assert js(ctl("--json", "group", "show", grp))["policies"] == [pol]
    assert grp in ok(ctl("group", "list")).stdout
    ok(ctl("group", "rm", grp))
    refused(ctl("group", "show", grp), "not found")


def test_policy_put_from_file_and_stdin_get_list_rm(ctl, tmp_path):
    name = uid("ctl-pol-")
    f = tmp_path / "p.json"
    f.write_text(json.dumps(POLICY))
    ok(ctl("policy", "put", name, f))
    assert js(ctl("policy", "get", name)) == POLICY, "get round-trips the put"
    listed = js(ctl("--json", "policy", "list"))["items"]
    assert any(p["name"] == name for p in listed)
    small = {"statements": POLICY["statements"][:1]}
    ok(ctl("policy", "put", name, "-", input=json.dumps(small)))
    assert js(ctl("policy", "get", name)) == small, "- reads stdin"
    ok(ctl("policy", "rm", name))
    refused(ctl("policy", "get", name))


def test_policy_put_refuses_bad_documents(ctl, tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("{not json")
    p = refused(ctl("policy", "put", uid("ctl-bad-"), f))
    assert "line 1" in p.stderr, "a local JSON error says where: %r" % p.stderr
    f.write_text(json.dumps({"statements": [{"effect": "maybe"}]}))
    refused(ctl("policy", "put", uid("ctl-bad-"), f))
    refused(ctl("policy", "put", uid("ctl-bad-"), tmp_path / "missing.json"))


def test_policy_test_prints_the_decision_and_the_deciding_statement(ctl):
    pol, grp, dev = uid("ctl-tp-"), uid("ctl-tg-"), uid("ctl-td-")
    ok(ctl("policy", "put", pol, "-", input=json.dumps(POLICY)))
    ok(ctl("group", "put", grp, "--policy", pol))
    ok(ctl("device", "add", dev, "--group", grp))

    allow = ok(ctl("policy", "test", dev, "publish", "devices/%s/telemetry/t" % dev)).stdout
    assert allow.startswith("allow") and pol in allow and "statement 1" in allow, allow
    deny = js(ctl("--json", "policy", "test", dev, "publish",
                  "devices/%s/telemetry/secret" % dev))
    assert deny["result"] == "deny" and deny["statement"] == {"policy": pol, "index": 2}, (
        "an explicit deny wins and is named: %r" % deny)
    nomatch = ok(ctl("policy", "test", dev, "subscribe", "other/#")).stdout
    assert nomatch.startswith("deny") and "no statement" in nomatch
    conn = js(ctl("--json", "policy", "test", dev, "connect", dev))
    assert conn["result"] == "allow" and conn["client_id"] == dev, (
        "connect sends the client id, not a topic: %r" % conn)
    refused(ctl("policy", "test", uid("nope-"), "publish", "a"), "no such device")


# -------------------------------------------------------- enrollments ----

def test_enroll_create_list_show_rm(ctl, admin):
    name, grp = uid("ctl-batch-"), uid("ctl-eg-")
    ok(ctl("group", "put", grp))  # enrollments may name existing groups only
    enr = js(ctl("--json", "enroll", "create", "--name", name, "--pattern", "CTL-*",
                 "--max-uses", "5", "--expires-in", "600", "--group", grp,
                 "--cert-days", "30"))
    assert enr["token"].startswith("enr_")
    assert (enr["name"], enr["id_pattern"], enr["max_uses"], enr["groups"],
            enr["cert_days"]) == (name, "CTL-*", 5, [grp], 30), enr
    listed = ok(ctl("enroll", "list")).stdout
    assert enr["id"] in listed and enr["token"] not in listed, (
        "lists show enrollments, never their tokens")
    assert js(ctl("--json", "enroll", "show", enr["id"]))["used"] == 0
    human = ok(ctl("enroll", "create", "--name", uid("ctl-b2-")))
    assert "token:" in human.stdout and "only this once" in human.stderr
    ok(ctl("enroll", "rm", enr["id"]))
    refused(ctl("enroll", "show", enr["id"]), "not found")
    refused(ctl("enroll", "create", "--max-uses", "999999999999"))


# ---------------------------------------------------------- provision ----

def provision(ctl, token, prefix, out, count, *extra):
    return ctl("provision", "--enrollment-token", token, "--count", count,
               "--prefix", prefix, "--out", out, *extra)


def test_provision_writes_private_keys_and_verifiable_certs_and_resumes(
        ctl, authd, admin, make_enrollment, tmp_path):
    grp = uid("ctl-pg-")
    prefix = uid("SN") + "-"
    enr = make_enrollment(id_pattern=prefix + "*", max_uses=10, groups=[grp])
    out = tmp_path / "batch"
    first = json.loads(ok(provision(ctl, enr["token"], prefix, out, 3,
                                    "--width", "4", "--json")).stdout)
    assert (first["enrolled"], first["skipped"], first["failed"]) == (3, 0, 0), first
    ids = ["%s%04d" % (prefix, n) for n in (1, 2, 3)]
    assert sorted(os.listdir(out)) == ids, "--width zero-pads, --start defaults to 1"
    chain = str(out / ids[0] / "chain.pem")
    for d in ids:
        key_path, cert_path = out / d / "key.pem", out / d / "cert.pem"
        assert mode(key_path) == 0o600, "private keys are 0600"
        openssl_verify(chain, str(cert_path))
        cert = load_cert(cert_path.read_text())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == d
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers(), (
            "the certificate is for the key generated locally")
        assert admin.get("/v1/devices/" + d).json["groups"] == [grp]
    assert not [f for f in os.listdir(out / ids[0]) if "tmp" in f], "no temp files left"

    before = {d: (out / d / "cert.pem").read_text() for d in ids}
    second = json.loads(ok(provision(ctl, enr["token"], prefix, out, 4,
                                     "--width", "4", "--json")).stdout)
    assert (second["enrolled"], second["skipped"]) == (1, 3), (
        "a rerun skips devices whose cert.pem exists: %r" % second)
    assert all((out / d / "cert.pem").read_text() == before[d] for d in ids)
    assert admin.get("/v1/enrollments/" + enr["id"]).json["used"] == 4, (
        "skipped devices use no enrollment")


def test_provision_reuses_the_key_of_an_interrupted_device(ctl, make_enrollment, tmp_path):
    prefix = uid("IR") + "-"
    enr = make_enrollment(id_pattern=prefix + "*", max_uses=5)
    out = tmp_path / "b"
    ok(provision(ctl, enr["token"], prefix, out, 1))
    d = out / (prefix + "1")
    key = (d / "key.pem").read_bytes()
    (d / "cert.pem").unlink()  # as if killed before the cert was written
    ok(provision(ctl, enr["token"], prefix, out, 1))
    cert = load_cert((d / "cert.pem").read_text())
    k = serialization.load_pem_private_key(key, None)
    assert (d / "key.pem").read_bytes() == key
    assert cert.public_key().public_numbers() == k.public_key().public_numbers()


def test_provision_prints_plain_progress_lines_when_stderr_is_not_a_terminal(
        ctl, make_enrollment, tmp_path):
    prefix = uid("PL") + "-"
    enr = make_enrollment(id_pattern=prefix + "*", max_uses=5)
    p = ok(provision(ctl, enr["token"], prefix, tmp_path / "o", 3, "--start", "7",
                     "--parallel", "2"))
    for n in (7, 8, 9):
        assert "%s%d: enrolled" % (prefix, n) in p.stderr, p.stderr
    assert "\r" not in p.stderr, "no progress bar when stderr is a file"
    assert "enrolled 3" in p.stdout


def test_provision_stops_on_a_refusal_and_exits_1(ctl, make_enrollment, tmp_path):
    enr = make_enrollment(id_pattern="ONLY-*", max_uses=5)
    out = tmp_path / "o"
    p = refused(provision(ctl, enr["token"], "OTHER-", out, 3, "--json"),
                "id_not_allowed")
    summary = json.loads(p.stdout)
    assert summary["enrolled"] == 0 and summary["failed"] >= 1, summary
    assert not any(os.path.exists(out / d / "cert.pem") for d in os.listdir(out))
    refused(provision(ctl, "enr_not-a-token", "X-", tmp_path / "o2", 1))


def test_provision_to_an_unreachable_server_exits_3(ctl, tmp_path):
    p = ctl("--server", "http://127.0.0.1:%d" % free_ports(1)[0], "provision",
            "--enrollment-token", "enr_x", "--count", "2", "--prefix", "U-",
            "--out", tmp_path / "o")
    assert p.returncode == 3, p.stderr


# ------------------------------------------------------- certificates ----

def test_cert_list_and_show(ctl, enrolled):
    dev, _ = enrolled()
    listed = js(ctl("--json", "cert", "list", "--device", dev.id))["items"]
    assert [c["serial"] for c in listed] == [dev.serial]
    assert dev.serial in ok(ctl("cert", "list", "--device", dev.id,
                                "--status", "valid")).stdout
    shown = js(ctl("--json", "cert", "show", dev.serial))
    assert shown["device_id"] == dev.id and shown["status"] == "valid"
    human = ok(ctl("cert", "show", dev.serial)).stdout
    assert "-----BEGIN CERTIFICATE-----" in human and "device_id:" in human
    refused(ctl("cert", "show", "00ff"), "not found")
    refused(ctl("cert", "list", "--status", "sideways"))


def test_cert_server_writes_a_key_and_a_server_auth_cert_that_verify(ctl, tmp_path):
    out = tmp_path / "broker"
    p = ok(ctl("cert", "server", "--dns", "broker.example", "--dns", "mqtt.internal",
               "--ip", "127.0.0.1", "--days", "20", "--out", out))
    assert "cert.pem" in p.stdout
    assert sorted(os.listdir(out)) == ["cert.pem", "chain.pem", "key.pem"]
    assert mode(out / "key.pem") == 0o600, "the server key is 0600"
    openssl_verify(str(out / "chain.pem"), str(out / "cert.pem"), "sslserver")
    cert = load_cert((out / "cert.pem").read_text())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in list(eku)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["broker.example", "mqtt.internal"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    refused(ctl("cert", "server", "--ip", "not-an-ip", "--out", tmp_path / "x"))


def test_cert_server_keeps_existing_files_unless_force(ctl, tmp_path):
    out = tmp_path / "broker"
    ok(ctl("cert", "server", "--dns", "broker.example", "--out", out))
    before = {n: (out / n).read_bytes() for n in ("key.pem", "cert.pem", "chain.pem")}
    p = refused(ctl("cert", "server", "--dns", "broker.example", "--out", out), "--force")
    assert "key.pem" in p.stderr, p.stderr
    assert {n: (out / n).read_bytes() for n in before} == before, "nothing was replaced"
    # One file alone is enough to refuse.
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "chain.pem").write_text("keep me")
    refused(ctl("cert", "server", "--dns", "broker.example", "--out", lone), "chain.pem")
    assert (lone / "chain.pem").read_text() == "keep me"
    ok(ctl("cert", "server", "--dns", "broker.example", "--out", out, "--force"))
    assert (out / "key.pem").read_bytes() != before["key.pem"], "--force replaces"


def test_enroll_update_changes_budget_expiry_and_groups(ctl, admin):
    grp = uid("ctl-ug-")
    enr = js(ctl("--json", "enroll", "create", "--max-uses", "2", "--expires-in", "86400"))
    usage(ctl("enroll", "update", enr["id"]))
    refused(ctl("enroll", "update", enr["id"], "--group", grp), "unknown_group")
    ok(ctl("group", "put", grp))
    got = js(ctl("--json", "enroll", "update", enr["id"], "--max-uses", "7",
                 "--expires-in", "172800", "--group", grp))
    assert got["max_uses"] == 7 and got["groups"] == [grp], got
    assert got["expires_at"] > enr["expires_at"], (got, enr)
    assert "token" not in got and "token_sha256" not in got


# --------------------------------------------------------- revocation ----

def test_revoke_cert_shows_in_cert_show_and_the_crl(ctl, enrolled, tmp_path):
    dev, _ = enrolled()
    ok(ctl("revoke", "cert", dev.serial, "--reason", "keyCompromise"))
    shown = js(ctl("--json", "cert", "show", dev.serial))
    assert shown["status"] == "revoked" and shown["reason"] == "keyCompromise", shown
    refused(ctl("revoke", "cert", dev.serial))

    pem = ok(ctl("crl")).stdout
    assert pem.startswith("-----BEGIN X509 CRL-----")
    ok(ctl("crl", "--der", "--out", tmp_path / "crl.der"))
    text = run(["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "crl.der"),
                "-noout", "-text"]).stdout
    assert dev.serial.upper().lstrip("0") in text.replace(":", "").upper(), (
        "the revoked serial is on the CRL")
    assert "Key Compromise" in text
    ok(ctl("crl", "--out", tmp_path / "crl.pem"))
    assert (tmp_path / "crl.pem").read_text().startswith("-----BEGIN X509 CRL-----")


def test_revoke_device_revokes_it_and_its_certs(ctl, enrolled):
    dev, _ = enrolled()
    ok(ctl("revoke", "device", dev.id, "--reason", "cessationOfOperation"))
    shown = js(ctl("--json", "device", "show", dev.id))
    assert shown["status"] == "revoked"
    assert js(ctl("--json", "cert", "show", dev.serial))["status"] == "revoked"
    refused(ctl("device", "resume", dev.id), "revoked")
    refused(ctl("revoke", "device", uid("nope-")))
    refused(ctl("revoke", "cert", "abcd", "--reason", "becauseISaidSo"))


# ----------------------------------------------------- tokens, apikeys ----

def test_token_rotate_key_adds_a_jwks_key_and_token_revoke_is_accepted(ctl, authd):
    kid = js(ctl("--json", "token", "rotate-key"))["kid"]
    kids = [k["kid"] for k in authd.request("GET", "/v1/jwks").json["keys"]]
    assert kid in kids, "the new key is published"
    jti = uuid.uuid4().hex  # the shape authd mints: 32 lowercase hex digits
    assert "revoked token " + jti in ok(ctl("token", "revoke", jti)).stdout
    # A malformed jti (a typo, a whole token pasted) never reaches the server.
    for bad in ("x" * 200, uid("jti-"), jti[:-1], jti.upper(), jti + "0", "eyJhbGciOi.x.y"):
        p = usage(ctl("token", "revoke", bad))
        assert "32 lowercase hex" in p.stderr, p.stderr


def test_apikey_create_prints_the_key_once_and_rm_disables_it(ctl, authd):
    made = js(ctl("--json", "apikey", "create", "--name", uid("ctl-k-"),
                  "--role", "admin"))
    key = made["key"]
    ok(ctl("device", "list", "--limit", "1", env={"AUTHD_KEY": key}))
    listed = ok(ctl("apikey", "list")).stdout
    assert made["id"] in listed and key not in listed, "lists never show keys"
    ok(ctl("apikey", "rm", made["id"]))
    refused(ctl("device", "list", env={"AUTHD_KEY": key}))
    refused(ctl("apikey", "create", "--name", uid("k-"), "--role", "emperor"))
    human = ok(ctl("apikey", "create", "--name", uid("ctl-k-"), "--role", "broker"))
    assert "key:" in human.stdout and "only this once" in human.stderr


def test_audit_lists_admin_changes_with_paging(ctl):
    dev = uid("ctl-aud-")
    ok(ctl("device", "add", dev))
    entries = js(ctl("--json", "--page-size", "50", "audit"))["items"]
    mine = [e for e in entries if e.get("target") == dev]
    assert mine and mine[0]["action"] == "device.create", "every admin change is audited"
    seq = mine[0]["seq"]
    after = js(ctl("--json", "audit", "--after", seq - 1, "--limit", "1"))
    assert [e["seq"] for e in after["items"]] == [seq], "--after starts past that seq"
    assert "device.create" in ok(ctl("audit", "--after", seq - 1, "--limit", "1")).stdout
    usage(ctl("audit", "--after", "yesterday"))


# ------------------------------------------------ safety rails (§14) ----

def on_pty(ctl_env, argv, answer):
    """Runs authctl with stdin (and stdout, stderr) on a pseudo-terminal,
    types answer when it asks, and returns (exit status, output)."""
    import pty
    import select
    import time as _time

    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes authctl
        try:
            os.execve(authctl_bin(), [authctl_bin()] + [str(a) for a in argv], ctl_env)
        finally:
            os._exit(127)
    out = b""
    sent = False
    deadline = _time.monotonic() + 60
    while _time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if fd in r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        if not sent and b"[y/N]" in out:
            os.write(fd, answer.encode() + b"\r")
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_destructive_commands_ask_on_a_terminal(ctl, ctl_env, admin, enrolled):
    dev = uid("ctl-ask-")
    ok(ctl("device", "add", dev))
    code, out = on_pty(ctl_env, ["device", "rm", dev], "n")
    assert "[y/N]" in out and code == 1, (code, out)
    assert admin.get("/v1/devices/" + dev).status == 200, "'n' aborts"
    code, out = on_pty(ctl_env, ["device", "rm", dev], "y")
    assert code == 0 and "deleted device" in out, (code, out)
    assert admin.get("/v1/devices/" + dev).status == 404, "'y' proceeds"

    d, _ = enrolled()
    code, out = on_pty(ctl_env, ["revoke", "cert", d.serial], "")
    assert code == 1 and admin.get("/v1/certs/" + d.serial).json["status"] == "valid", out
    code, out = on_pty(ctl_env, ["revoke", "device", d.id], "no")
    assert code == 1 and admin.get("/v1/devices/" + d.id).json["status"] == "active", out
    code, out = on_pty(ctl_env, ["revoke", "cert", d.serial, "--yes"], "y")
    assert code == 0 and "[y/N]" not in out, "--yes does not ask: %r" % out
    assert admin.get("/v1/certs/" + d.serial).json["status"] == "revoked"
    code, out = on_pty(ctl_env, ["revoke", "device", d.id], "yes")
    assert code == 0 and admin.get("/v1/devices/" + d.id).json["status"] == "revoked", out
    # Not a terminal (a script): no question, as before.
    other = uid("ctl-ask-")
    ok(ctl("device", "add", other))
    p = ok(ctl("device", "rm", other, input=""))
    assert "[y/N]" not in p.stderr


def test_device_show_and_policy_test_mark_missing_names(ctl, admin):
    pol, grp, dev = uid("ctl-mp-"), uid("ctl-mg-"), uid("ctl-md-")
    assert admin.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["publish"], "topics": ["m/x"]}]}).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": []}).status == 201
    ok(ctl("device", "add", dev, "--policy", pol, "--group", grp))
    assert "(missing)" not in ok(ctl("device", "show", dev)).stdout
    refused(ctl("policy", "rm", pol), "in_use")
    ok(ctl("policy", "rm", pol, "--force"))
    refused(ctl("group", "rm", grp), "in_use")
    ok(ctl("group", "rm", grp, "--force"))
    out = ok(ctl("device", "show", dev)).stdout
    assert "policy %s (missing)" % pol in out and "group %s (missing)" % grp in out, out
    out = ok(ctl("policy", "test", dev, "publish", "m/x")).stdout
    assert "deny" in out and "policy %s (missing)" % pol in out, out


def test_provision_finishes_requests_in_flight_on_sigint(ctl_env, admin, tmp_path):
    import signal
    import time as _time

    count = 5000
    enr = create_enrollment(admin, max_uses=count, id_pattern="INT-*")
    out = tmp_path / "batch"
    p = subprocess.Popen(
        [authctl_bin(), "provision", "--enrollment-token", enr["token"], "--count",
         str(count), "--prefix", "INT-" + uid() + "-", "--out", str(out),
         "--parallel", "4"],
        env=ctl_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = _time.monotonic() + 60
    while _time.monotonic() < deadline:
        if out.exists() and sum((d / "cert.pem").exists() for d in out.iterdir()) >= 10:
            break
        _time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 1, "an interrupted batch exits non-zero: %d\n%s" % (p.returncode, stderr)
    assert "interrupted" in stderr, stderr
    m = re.search(r"enrolled (\d+), skipped (\d+), failed (\d+), not attempted (\d+)", stdout)
    assert m, "the summary is printed: %r" % stdout
    enrolled, _, failed, not_attempted = (int(x) for x in m.groups())
    assert failed == 0 and enrolled >= 10 and not_attempted > 0, stdout
    dirs = list(out.iterdir())
    complete = [d for d in dirs if (d / "cert.pem").exists()]
    # Every request in flight was finished: no key whose certificate was
    # issued is left without it, and the server counted exactly these.
    assert len(complete) == enrolled, (len(complete), stdout)
    assert all((d / "cert.pem").exists() for d in dirs if (d / "key.pem").exists()), (
        "a key.pem without its cert.pem: a request was cut")
    assert admin.get("/v1/enrollments/" + enr["id"]).json["used"] == enrolled
