"""§14 Operations: what a first start tells the operator (and only the
first start), authctl login and profiles, and hot backup / restore."""

import hashlib
import os
import re
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from authd_harness import WRAPPER, authd_bin, run, store_args


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
