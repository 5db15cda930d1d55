"""§1 Processes and files: first start initialises the data dir, secrets
are private, data survives restarts, unsafe key permissions stop the
daemon, and the offline commands (init, admin-key) work."""

import datetime
import os
import signal
import stat
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authd_harness import (WRAPPER, Authd, assert_error, create_enrollment, enroll,
                           free_ports, http_request, key_pem, run, split_pem_chain,
                           store_args, uid)


def private_key_files(data_dir):
    """Every file under the data dir whose content holds a PEM private key
    (including the store, if keys live there)."""
    found = []
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                if b"PRIVATE KEY-----" in f.read():
                    found.append(path)
    return found


def standalone_key_files(data_dir):
    """Private key files proper (not the LMDB store)."""
    return [p for p in private_key_files(data_dir)
            if not p.endswith((".mdb", "-lock"))]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_first_start_creates_admin_key_and_private_key_files_mode_0600(spawn_authd):
    d = spawn_authd()
    key_path = os.path.join(d.data, "admin.key")
    assert os.path.isfile(key_path), "first start must write DIR/admin.key"
    assert mode(key_path) == 0o600, (
        "admin.key is a full-power credential; it must be 0600, is %o" % mode(key_path))
    with open(key_path) as f:
        content = f.read()
    assert content.strip() and len(content.strip().splitlines()) == 1, (
        "admin.key holds the key on one line: %r" % content)
    keys = private_key_files(d.data)
    assert standalone_key_files(d.data), (
        "first start must generate CA and TLS private keys under DIR; found none")
    for p in keys:
        assert mode(p) & 0o077 == 0, (
            "private key material must not be group/world readable: %s is %o" % (p, mode(p)))
    r = d.api(d.admin_key).get("/v1/enrollments")
    assert r.status == 200, "the key in admin.key must be an admin API key: %r" % r


def test_restart_keeps_ca_registry_and_admin_key(spawn_authd, tmp_path):
    d = spawn_authd()
    admin_key = d.admin_key
    api = d.api(admin_key)
    ca_before = d.ca_pem()
    dev_id = uid("keep-")
    api.put("/v1/groups/g1", {"policies": []})
    assert api.post("/v1/devices", {"id": dev_id, "groups": ["g1"]}).status == 201
    enr = create_enrollment(api, max_uses=5)
    devdir = str(tmp_path / "dev")
    os.mkdir(devdir)
    dev, r = enroll(d, enr["token"], uid("keepdev-"), devdir)
    assert r.status == 201, r
    d.stop_and_check()

    d2 = spawn_authd(data_dir=d.data)
    assert d2.admin_key == admin_key, "a restart must not replace admin.key"
    api2 = d2.api(admin_key)
    assert d2.ca_pem() == ca_before, "a restart must keep the same CA"
    r = api2.get("/v1/devices/" + dev_id)
    assert r.status == 200 and r.json["groups"] == ["g1"], (
        "devices must survive a restart: %r" % r)
    r = api2.get("/v1/certs/" + dev.serial)
    assert r.status == 200, "issued certificates must survive a restart: %r" % r
    r = api2.get("/v1/enrollments/" + enr["id"])
    assert r.status == 200 and r.json["used"] == 1, "enrollment use counts survive: %r" % r
    _, r = enroll(d2, enr["token"], uid("keepdev2-"), devdir)
    assert r.status == 201, "an enrollment token keeps working after a restart: %r" % r
    # The restarted HTTPS listener still presents a certificate of this CA.
    assert d2.request("GET", "/healthz", tls=True).status == 200


def test_refuses_to_start_when_a_private_key_is_group_or_world_readable(spawn_authd):
    d = spawn_authd()
    d.stop_and_check()
    keys = standalone_key_files(d.data)
    assert keys, "expected private key files under the data dir"
    for path in keys:
        os.chmod(path, 0o644)
        bad = Authd(d.data, d.binary)
        bad.spawn()
        try:
            rc = bad.proc.wait(60)
        except subprocess.TimeoutExpired:
            bad.proc.kill()
            bad.proc.wait()
            rc = None
        finally:
            bad._close_stderr()
        err = bad.stderr()
        bad.cleanup_logs()
        assert rc not in (None, 0), (
            "authd must refuse to start with %s mode 0644 (got %s)" % (
                os.path.relpath(path, d.data), "still running" if rc is None else "exit 0"))
        assert not [m for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:") if m in err], err
        os.chmod(path, 0o600)
    # With the modes fixed the same data dir starts again, so the refusals
    # above were about the permissions and nothing else.
    spawn_authd(data_dir=d.data)


def test_init_command_initialises_without_serving(binary, spawn_authd, tmp_path):
    data = str(tmp_path / "initdata")
    run(WRAPPER + [binary, "init", "--data", data] + store_args(data), timeout=120)
    assert os.path.isfile(os.path.join(data, "admin.key")), "init must write admin.key"
    assert mode(os.path.join(data, "admin.key")) == 0o600
    assert standalone_key_files(data), "init must create the CA keys"
    d = spawn_authd(data_dir=data)
    assert d.api(d.admin_key).get("/v1/enrollments").status == 200, (
        "serve on an init'ed dir uses the admin key init wrote")


def _offline_ca(tmp_path):
    """An offline root and an issuing CA signed by it, as an operator's
    own PKI would provide."""
    now = datetime.datetime.now(datetime.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Offline Root " + uid())])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
            .sign(root_key, hashes.SHA256()))
    iss_key = ec.generate_private_key(ec.SECP256R1())
    iss_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Offline Issuing " + uid()),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Factory")])
    iss = (x509.CertificateBuilder().subject_name(iss_name).issuer_name(root_name)
           .public_key(iss_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(days=1))
           .not_valid_after(now + datetime.timedelta(days=1825))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(iss_key.public_key()), critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
           .sign(root_key, hashes.SHA256()))
    paths = {}
    for name, content in (("root.pem", root.public_bytes(serialization.Encoding.PEM).decode()),
                          ("issuing.pem", iss.public_bytes(serialization.Encoding.PEM).decode())):
        paths[name] = str(tmp_path / name)
        with open(paths[name], "w") as f:
            f.write(content)
    paths["issuing.key"] = str(tmp_path / "issuing.key")
    with open(os.open(paths["issuing.key"], os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(key_pem(iss_key))
    return iss, paths


def test_init_imports_an_issuing_ca_signed_by_an_offline_root(binary, spawn_authd, tmp_path):
    iss, paths = _offline_ca(tmp_path)
    data = str(tmp_path / "imported")
    run(WRAPPER + [binary, "init", "--data", data] + store_args(data) + ["--ca-cert", paths["issuing.pem"],
         "--ca-key", paths["issuing.key"]], timeout=120)
    d = spawn_authd(data_dir=data)
    chain = split_pem_chain(d.ca_pem())
    assert chain and chain[0] == iss, (
        "with an imported CA, /v1/ca.pem must start with that issuing certificate")
    enr = create_enrollment(d.api(d.admin_key))
    devdir = str(tmp_path / "dev")
    os.mkdir(devdir)
    dev, r = enroll(d, enr["token"], uid("imp-"), devdir)
    assert r.status == 201, r
    # Device certificates chain to the offline root through the imported CA.
    leaf = str(tmp_path / "leaf.pem")
    with open(leaf, "w") as f:
        f.write(dev.cert_pem)
    out = run(["openssl", "verify", "-CAfile", paths["root.pem"], "-untrusted",
               paths["issuing.pem"], leaf], check=False)
    assert out.returncode == 0 and "OK" in out.stdout, (
        "device cert must verify against the offline root: %s %s" % (out.stdout, out.stderr))


def test_admin_key_command_mints_working_keys_while_the_daemon_runs(binary, spawn_authd):
    d = spawn_authd()
    p = run(WRAPPER + [binary, "admin-key", "--data", d.data, "--name", uid("recovery-"),
             "--role", "admin"], timeout=60)
    key = p.stdout.strip()
    assert key and len(key.splitlines()) == 1, "admin-key prints the key on one line: %r" % p.stdout
    assert key != d.admin_key, "each admin-key call mints a new key"
    r = d.api(key).get("/v1/devices")
    assert r.status == 200, "a key minted offline works against the running daemon: %r" % r

    p = run(WRAPPER + [binary, "admin-key", "--data", d.data, "--name", uid("station-"),
             "--role", "provisioner"], timeout=60)
    prov = p.stdout.strip()
    assert d.api(prov).get("/v1/enrollments").status == 200, "provisioner may list enrollments"
    assert_error(d.api(prov).get("/v1/devices"), 403, "forbidden")


def test_sigterm_exits_zero(spawn_authd):
    d = spawn_authd()
    assert d.request("GET", "/healthz").status == 200
    rc = d.stop()
    d.assert_clean_exit(rc)


def test_options_come_from_config_file_and_environment_and_flags_win(binary, tmp_path):
    p_http, p_https, p_check, p_loser = free_ports(4)
    data = str(tmp_path / "cfgdata")
    cfg = tmp_path / "authd.conf"
    # The file names the data dir and a plain HTTP address the flag
    # overrides; the environment supplies HTTPS.
    cfg.write_text("# authd config\ndata = %s\nhttp = 127.0.0.1:%d\n" % (data, p_loser))
    d = Authd(data, binary,
              argv=["serve", "--config", str(cfg), "--http", "127.0.0.1:%d" % p_http,
                    "--check-http", "off"],
              ports=(p_http, p_https, p_check),
              env={"AUTHD_HTTPS": "127.0.0.1:%d" % p_https})
    d.start()
    try:
        assert os.path.isfile(os.path.join(data, "admin.key")), "data came from the config file"
        assert d.request("GET", "/healthz", tls=True).status == 200, (
            "HTTPS address came from AUTHD_HTTPS")
        try:
            http_request("127.0.0.1", p_loser, "GET", "/healthz", timeout=2)
            assert False, "the --http flag must win over the config file's http"
        except OSError:
            pass
    finally:
        rc = d.stop()
        d.cleanup_logs()
    d.assert_clean_exit(rc)


def test_sighup_keeps_serving_and_sigint_exits_zero(spawn_authd):
    d = spawn_authd()
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert d.proc.poll() is None, "SIGHUP reloads; it does not stop the daemon"
    assert d.request("GET", "/readyz").status == 200
    d.proc.send_signal(signal.SIGINT)
    rc = d.proc.wait(60)
    d._close_stderr()
    d.assert_clean_exit(rc)
