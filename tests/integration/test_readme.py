"""README.md's worked examples run as written.

Each fenced block after an `<!-- example: NAME -->` comment is run with
bash (-e, pipefail) in a fresh directory beside a daemon whose data dir
is ./authd-data there, as a reader who followed the README would have
it. Only the ports change (the suite picks free ones): localhost:8080,
localhost:8443, localhost:8181 and 127.0.0.1:5684 become the daemon's.
The example's expected output, written as comment lines `#   TEXT`, must
appear in what the block prints, in that order."""

import os
import re
import subprocess

import pytest

from authd_harness import Authd, free_ports

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
BLOCK = re.compile(r"<!-- example: ([a-z0-9-]+) -->\n```sh\n(.*?)```", re.S)


def examples():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return dict(BLOCK.findall(f.read()))


def tool_dirs():
    """Where authctl and authd-gw were built (meson passes their paths)."""
    dirs = []
    for var in ("AUTHCTL_BIN", "AUTHD_GW_BIN"):
        path = os.environ.get(var)
        assert path and os.access(path, os.X_OK), "%s is set by meson" % var
        dirs.append(os.path.dirname(path))
    return dirs


def expected_lines(script):
    return [m.group(1).strip() for m in re.finditer(r"^#   (.*)$", script, re.M)]


def run_example(name, tmp_path, coaps=False):
    script = examples()[name]
    cwd = tmp_path / "work"
    cwd.mkdir()
    extra, coap_port = [], None
    if coaps:
        coap_port = free_ports(1)[0]
        extra = ["--coaps", "127.0.0.1:%d" % coap_port]
    d = Authd(str(cwd / "authd-data"), extra_args=extra)
    d.start()
    try:
        ported = (script.replace("localhost:8080", "localhost:%d" % d.http_port)
                  .replace("localhost:8443", "localhost:%d" % d.https_port)
                  .replace("localhost:8181", "localhost:%d" % d.check_port))
        if coap_port:
            ported = ported.replace("127.0.0.1:5684", "127.0.0.1:%d" % coap_port)
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(tool_dirs() + [env.get("PATH", "")])
        for var in ("AUTHD_URL", "AUTHD_KEY", "AUTHD_KEY_FILE", "AUTHD_CACERT"):
            env.pop(var, None)
        p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", ported],
                           cwd=str(cwd), env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, "example %s failed:\n%s\n%s" % (
            name, p.stdout[-3000:], p.stderr[-3000:])
        out, at = p.stdout, 0
        for want in expected_lines(script):
            i = out.find(want, at)
            assert i >= 0, "example %s: expected %r after offset %d in:\n%s" % (
                name, want, at, out)
            at = i + len(want)
    finally:
        d.stop_and_check()
        d.cleanup_logs()
    return p


def test_the_readme_has_the_worked_examples():
    assert {"gateway", "coap"} <= set(examples())


def test_the_gateway_example_runs_as_written(tmp_path):
    p = run_example("gateway", tmp_path)
    # The suspended child is refused offline as well (the example's last
    # command prints this only when authd-gw denied).
    assert "denied: ble-0002 is suspended in the bundle too" in p.stdout


def test_the_coap_example_runs_as_written(tmp_path):
    for tool in ("/usr/bin/coap-client-gnutls",):
        if not os.access(tool, os.X_OK):
            pytest.fail("%s (Debian libcoap3-bin) is needed" % tool)
    run_example("coap", tmp_path, coaps=True)
