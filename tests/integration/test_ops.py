"""§14 Operations: what a first start tells the operator (and only the
first start), authctl login and profiles, and hot backup / restore."""

import hashlib
import os
import re
import stat
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authd_harness import (WRAPPER, authd_bin, backend_store_url, create_enrollment,
                           enroll, run, split_pem_chain, store_args,
                           uid)


def root_fingerprint(data_dir):
    with open(os.path.join(data_dir, "ca", "root.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def summary_part(stderr):
    """The plain (not key=value) lines of the daemon's stderr."""
    return "\n".join(line for line in stderr.splitlines()
                     if not re.match(r"^\S*\s*(ts|level)=", line) and "event=" not in line)


def test_first_start_prints_paths_fingerprint_exports_and_next_command(spawn_authd, tmp_path):
    data = str(tmp_path / "data")
    d = spawn_authd(data_dir=data)
    err = d.stderr()
    real = os.path.realpath(data)
    fpr = root_fingerprint(data)
    text = summary_part(err)
    assert fpr in text, "the root fingerprint is printed for `authctl login`:\n" + err
    for rel in ("ca/root.pem", "ca/chain.pem", "tls/server.pem", "admin.key"):
        assert os.path.join(real, rel) in text, "the path of %s is printed:\n%s" % (rel, err)
    assert "export AUTHD_URL=https://127.0.0.1:%d" % d.https_port in text, err
    assert "export AUTHD_CACERT=%s/ca/chain.pem" % real in text, err
    assert "export AUTHD_KEY_FILE=%s/admin.key" % real in text, err
    assert "authctl device list" in text, "the next command to run is named:\n" + err
    assert "public_url is unset" in text, "an unset public_url is warned about:\n" + err
    assert d.admin_key not in err, "the admin key itself must never reach the log"

    # The printed exports work as they are: authctl reaches the daemon
    # over verified HTTPS with the printed key file.
    env = dict(os.environ)
    for m in re.finditer(r"^\s*export (AUTHD_[A-Z_]+)=(\S+)$", text, re.M):
        env[m.group(1)] = m.group(2)
    ctl = os.environ.get("AUTHCTL_BIN") or os.path.join(
        os.path.dirname(os.path.dirname(authd_bin())), "clients", "authctl", "authctl")
    r = subprocess.run([ctl, "device", "list"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, "the printed exports must work: %s %s" % (r.stdout, r.stderr)

    # A later start on the same dir says nothing of the kind.
    d.stop_and_check()
    d.cleanup_logs()
    d.start()
    later = d.stderr()
    assert fpr not in later and "export AUTHD_URL" not in later, (
        "only the start that created the dir prints the summary:\n" + later)
    assert d.admin_key not in later


def test_first_start_with_public_url_does_not_warn(spawn_authd, tmp_path):
    data = str(tmp_path / "data")
    d = spawn_authd(data_dir=data, extra_args=["--public-url", "https://authd.example.test"])
    text = summary_part(d.stderr())
    assert "export AUTHD_URL=https://authd.example.test" in text, text
    assert "public_url is unset" not in text, text


def test_init_prints_the_summary_once(tmp_path):
    data = str(tmp_path / "data")
    r = run(WRAPPER + [authd_bin(), "init", "--data", data] + store_args(data))
    fpr = root_fingerprint(data)
    with open(os.path.join(data, "admin.key")) as f:
        key = f.read().strip()
    assert fpr in r.stderr and "export AUTHD_KEY_FILE=" in r.stderr, r.stderr
    assert key not in r.stderr and key not in r.stdout, "the key is never printed"
    again = run(WRAPPER + [authd_bin(), "init", "--data", data] + store_args(data))
    assert fpr not in again.stderr, "a second init created nothing: " + again.stderr


# ------------------------------------------------------------ backup ----

def _records(api):
    """Everything a restore must bring back, keyed for comparison."""
    out = {}
    for path, key in (("/v1/devices", "id"), ("/v1/certs", "serial"),
                      ("/v1/enrollments", "id"), ("/v1/policies", "name"),
                      ("/v1/groups", "name"), ("/v1/apikeys", "id")):
        out[path] = {item[key]: item for item in api.list_all(path, limit=200)}
    out["/v1/audit"] = api.list_all("/v1/audit", limit=500)
    return out


def _enroll_until(d, token, devdir, prefix, stop, acked, errors, limit=80):
    import time as _t
    for i in range(limit):
        if stop.is_set():
            return
        dev_id = "%s-%03d" % (prefix, i)
        try:
            _dev, r = enroll(d, token, dev_id, devdir)
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append("%s: %r" % (dev_id, e))
            return
        if r.status != 201:
            errors.append("%s: %r" % (dev_id, r))
            return
        acked.append((_t.monotonic(), dev_id, r.json["serial"]))


def test_hot_backup_during_enrollments_restores_every_acknowledged_record(
        spawn_authd, tmp_path):
    import threading
    import time as _t

    d = spawn_authd(data_dir=str(tmp_path / "src"))
    api = d.api(d.admin_key)
    pol, grp = uid("pol-bk-"), uid("grp-bk-")
    assert api.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    ]}).status == 201
    assert api.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    enrs = [create_enrollment(api, groups=[grp]) for _ in range(2)]
    devdir = str(tmp_path / "devs")
    os.makedirs(devdir)

    stop = threading.Event()
    acked, errors = [], []
    threads = [threading.Thread(target=_enroll_until,
                                args=(d, enrs[i % 2]["token"], devdir, "bk%d" % i,
                                      stop, acked, errors))
               for i in range(4)]
    for t in threads:
        t.start()
    deadline = _t.monotonic() + 60
    while len(acked) < 12 and _t.monotonic() < deadline and not errors:
        _t.sleep(0.05)
    before = _records(api)
    started = _t.monotonic()
    out = str(tmp_path / "backup.tar")
    r = run(WRAPPER + [authd_bin(), "backup", "--data", d.data, "--out", out],
            timeout=300)
    during = len(acked)
    stop.set()
    for t in threads:
        t.join(120)
    assert not errors, "enrollments failed while the backup ran: %s" % errors[:3]
    assert during > 12, "enrollments went on while the backup ran"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600, "the backup holds keys: 0600"
    assert not [f for f in os.listdir(str(tmp_path)) if ".tmp-" in f or ".store-" in f], (
        "no temporary file is left next to the backup")
    with open(os.path.join(d.data, "admin.key"), "rb") as f:
        assert f.read().strip() not in r.stdout.encode() + r.stderr.encode()
    acked_before = [(dev, serial) for ts, dev, serial in list(acked) if ts < started]
    after = _records(api)

    new = str(tmp_path / "restored")
    restore = WRAPPER + [authd_bin(), "restore", "--data", new, "--from", out]
    pg = backend_store_url(new)
    if pg:
        restore += ["--store", pg]
    run(restore, timeout=300)
    for rel in ("ca/root.key", "ca/issuing.key", "tls/server.key", "seal.key", "admin.key"):
        assert stat.S_IMODE(os.stat(os.path.join(new, rel)).st_mode) == 0o600, rel
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o700
    rd = spawn_authd(data_dir=new)
    got = _records(rd.api(rd.admin_key))

    # Every record acknowledged before the backup began is back, as it was.
    for dev, serial in acked_before:
        assert dev in got["/v1/devices"], "acknowledged device %s lost" % dev
        assert serial in got["/v1/certs"], "acknowledged certificate %s lost" % serial
    for path in ("/v1/devices", "/v1/certs", "/v1/policies", "/v1/groups"):
        for k, v in before[path].items():
            assert got[path].get(k) == v, "%s %s differs after restore" % (path, k)
        # Nothing is invented: whatever is restored existed on the source.
        for k, v in got[path].items():
            assert after[path].get(k) == v, "%s %s is not the source's" % (path, k)
    assert set(got["/v1/apikeys"]) == set(after["/v1/apikeys"])
    assert len(before["/v1/audit"]) <= len(got["/v1/audit"]) <= len(after["/v1/audit"])
    assert got["/v1/audit"] == after["/v1/audit"][:len(got["/v1/audit"])], (
        "the restored audit log is a prefix of the source's")

    # One snapshot: every certificate's device exists, and each
    # enrollment's `used` equals the certificates issued under it.
    per_enr = {}
    for c in got["/v1/certs"].values():
        if c.get("kind") == "server":
            continue
        assert c["device_id"] in got["/v1/devices"], "cert %s has no device" % c["serial"]
        per_enr[c["enrollment"]] = per_enr.get(c["enrollment"], 0) + 1
    for e in enrs:
        assert got["/v1/enrollments"][e["id"]]["used"] == per_enr.get(e["id"], 0), (
            "enrollment %s used %r, certificates %r" % (
                e["id"], got["/v1/enrollments"][e["id"]]["used"], per_enr.get(e["id"])))

    # The restored node serves: a new device enrolls and is checked.
    _dev, r = enroll(rd, enrs[0]["token"], uid("after-"), devdir)
    assert r.status == 201, r


def test_restore_refuses_a_non_empty_dir_and_a_foreign_file(spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "src"))
    out = str(tmp_path / "b.tar")
    run(WRAPPER + [authd_bin(), "backup", "--data", d.data, "--out", out])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    r = run(WRAPPER + [authd_bin(), "restore", "--data", str(busy), "--from", out],
            check=False)
    assert r.returncode == 3 and "not empty" in r.stderr, r.stderr
    assert os.listdir(str(busy)) == ["something"], "nothing is written into it"

    # A tar that tries to leave the data dir is refused.
    import io
    import tarfile
    evil = str(tmp_path / "evil.tar")
    with tarfile.open(evil, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in (("authd-backup", b"authd-backup 1\n"), ("../escape", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    r = run(WRAPPER + [authd_bin(), "restore", "--data", str(tmp_path / "n1"),
                       "--from", evil], check=False)
    assert r.returncode == 2 and "unexpected member" in r.stderr, r.stderr
    assert not (tmp_path / "escape").exists()
    r = run(WRAPPER + [authd_bin(), "restore", "--data", str(tmp_path / "n2"),
                       "--from", os.path.join(d.data, "ca", "root.pem")], check=False)
    assert r.returncode == 2 and "not an authd backup" in r.stderr, r.stderr
    # A backup cut short (a full disk, a broken copy) is refused, not
    # half-restored into a directory that then looks usable.
    cut = str(tmp_path / "cut.tar")
    with open(out, "rb") as f, open(cut, "wb") as g:
        data = f.read()
        g.write(data[:len(data) - 4096])
    r = run(WRAPPER + [authd_bin(), "restore", "--data", str(tmp_path / "n3"),
                       "--from", cut], check=False)
    assert r.returncode == 2 and "cut short" in r.stderr and "partly filled" in r.stderr, (
        r.stderr)


# ------------------------------------------------------- authctl login ----

def _authctl():
    return os.environ.get("AUTHCTL_BIN") or os.path.join(
        os.path.dirname(os.path.dirname(authd_bin())), "clients", "authctl", "authctl")


def _ctl(args, xdg, **env_extra):
    """authctl with no AUTHD_* or AUTHCTL_* from the caller's environment."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTHD_", "AUTHCTL_"))}
    env["XDG_CONFIG_HOME"] = str(xdg)
    env["HOME"] = str(xdg) + "-home"
    env.update(env_extra)
    return subprocess.run([_authctl()] + list(args), env=env, capture_output=True,
                          text=True, timeout=60)


def test_login_with_the_right_fingerprint_saves_a_profile_that_later_commands_use(
        spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "data"))
    xdg = tmp_path / "xdg"
    url = "https://127.0.0.1:%d" % d.https_port
    fpr = root_fingerprint(d.data)
    # The colon form (as openssl prints it) is accepted too.
    colon = ":".join(fpr[i:i + 2] for i in range(0, 64, 2)).upper()
    r = _ctl(["login", "--url", url, "--ca-fingerprint", "SHA256:" + colon,
              "--key-file", os.path.join(d.data, "admin.key")], xdg)
    assert r.returncode == 0, r.stderr
    conf = xdg / "authctl" / "config"
    assert stat.S_IMODE(os.stat(str(conf)).st_mode) == 0o600, "the profile is private"
    text = conf.read_text()
    assert "[default]" in text and "url = " + url in text, text
    assert d.admin_key not in text, "the profile names the key file, never the key"
    def ders(pem):
        return [c.public_bytes(serialization.Encoding.DER)
                for c in split_pem_chain(pem)]
    with open(os.path.join(d.data, "ca", "chain.pem")) as f:
        want = ders(f.read())
    got = ders((xdg / "authctl" / "default-ca.pem").read_text())
    assert sorted(got) == sorted(want), "the saved chain is the daemon's CA chain"

    # No flag, no environment: the profile is enough, over verified TLS.
    r = _ctl(["device", "list"], xdg)
    assert r.returncode == 0, "the profile must be used without env: " + r.stderr

    # A named profile beside it, chosen by flag or by AUTHCTL_PROFILE.
    r = _ctl(["login", "--profile", "lab", "--url", url, "--ca-fingerprint", fpr,
              "--key-file", os.path.join(d.data, "admin.key")], xdg)
    assert r.returncode == 0, r.stderr
    assert "[default]" in conf.read_text(), "other profiles are kept"
    assert _ctl(["--profile", "lab", "device", "list"], xdg).returncode == 0
    assert _ctl(["device", "list"], xdg, AUTHCTL_PROFILE="lab").returncode == 0
    r = _ctl(["device", "list"], xdg, AUTHCTL_PROFILE="nosuch")
    assert r.returncode == 2 and "no profile nosuch" in r.stderr, r.stderr

    # The environment wins over the profile, and a flag over both.
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("ak_notakey\n")
    r = _ctl(["device", "list"], xdg, AUTHD_KEY_FILE=str(bad_key))
    assert r.returncode == 1, "AUTHD_KEY_FILE must win over the profile's key_file"
    closed = "https://127.0.0.1:%d" % d.check_port  # answers no HTTPS
    r = _ctl(["device", "list"], xdg, AUTHD_URL=closed)
    assert r.returncode == 3, "AUTHD_URL must win over the profile's url: " + r.stderr
    r = _ctl(["--server", url, "device", "list"], xdg, AUTHD_URL=closed)
    assert r.returncode == 0, "--server wins over AUTHD_URL: " + r.stderr


def test_login_with_a_wrong_fingerprint_is_refused_and_writes_nothing(
        spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "data"))
    xdg = tmp_path / "xdg"
    fpr = root_fingerprint(d.data)
    wrong = ("0" if fpr[0] != "0" else "1") + fpr[1:]
    r = _ctl(["login", "--url", "https://127.0.0.1:%d" % d.https_port,
              "--ca-fingerprint", wrong], xdg)
    assert r.returncode == 1 and "refused, nothing written" in r.stderr, r.stderr
    assert not xdg.exists(), "nothing may be written on a mismatch"
    # The issuing CA's fingerprint is not the root's: refused as well.
    with open(os.path.join(d.data, "ca", "issuing.pem"), "rb") as f:
        iss = x509.load_pem_x509_certificate(f.read())
    r = _ctl(["login", "--url", "https://127.0.0.1:%d" % d.https_port, "--ca-fingerprint",
              hashlib.sha256(iss.public_bytes(serialization.Encoding.DER)).hexdigest()], xdg)
    assert r.returncode == 1 and not xdg.exists(), r.stderr
    r = _ctl(["login", "--url", "https://127.0.0.1:%d" % d.https_port,
              "--ca-fingerprint", "abc"], xdg)
    assert r.returncode == 2, "a malformed fingerprint is a usage error"


def test_an_untrusted_server_certificate_gets_a_hint(spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "data"))
    url = "https://127.0.0.1:%d" % d.https_port
    r = _ctl(["--server", url, "device", "list"], tmp_path / "xdg",
             AUTHD_KEY_FILE=os.path.join(d.data, "admin.key"))
    assert r.returncode == 3, r.stderr
    assert "not trusted" in r.stderr and "authctl login --url %s" % url in r.stderr, r.stderr
    assert "--cacert" in r.stderr and "ca/chain.pem" in r.stderr, r.stderr


def _ca(name, signer=None):
    """(cert, key): a CA certificate, self-signed or signed by signer."""
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = signer if signer else (None, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                           critical=False)
            .sign(issuer_key, hashes.SHA256()))
    return cert, key


def _serve_ca_pem(tmp_path, chain_certs):
    """An HTTPS server on 127.0.0.1 answering GET /v1/ca.pem with the given
    certificates, as a man in the middle would. Returns (url, stop)."""
    import http.server
    import ssl
    import threading

    cert, key = _ca("mitm-tls")
    cf, kf = tmp_path / "mitm.pem", tmp_path / "mitm.key"
    cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain_certs)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/v1/ca.pem"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/x-pem-file")
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cf), str(kf))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop():
        srv.shutdown()
        srv.server_close()
    return "https://127.0.0.1:%d" % srv.server_address[1], stop


def test_login_refuses_a_chain_holding_a_certificate_the_root_did_not_sign(tmp_path):
    # The right root beside a CA of the attacker's: pinning the root must
    # not make the attacker's CA trusted too.
    root = _ca("pinned-root")
    issuing = _ca("issuing", signer=root)
    foreign = _ca("attacker-ca")
    fpr = hashlib.sha256(root[0].public_bytes(serialization.Encoding.DER)).hexdigest()

    url, stop = _serve_ca_pem(tmp_path, [foreign[0], root[0]])
    try:
        xdg = tmp_path / "xdg"
        r = _ctl(["login", "--url", url, "--ca-fingerprint", fpr], xdg)
        assert r.returncode == 1, r.stderr
        assert "its root did not sign: refused, nothing written" in r.stderr, r.stderr
        assert not xdg.exists(), "nothing may be written"
    finally:
        stop()

    # The same server with an honest chain: accepted (so the refusal above
    # was the signature check, not this server).
    url, stop = _serve_ca_pem(tmp_path, [issuing[0], root[0]])
    try:
        xdg = tmp_path / "xdg2"
        r = _ctl(["login", "--url", url, "--ca-fingerprint", fpr], xdg)
        assert r.returncode == 0, r.stderr
        assert (xdg / "authctl" / "config").exists()
    finally:
        stop()
