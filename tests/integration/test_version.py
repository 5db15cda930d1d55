"""--version (issue 13): authd, authctl and authd-gw each print one line,
"authd VERSION", from the one generated definition (common/version.h.in
through meson's vcs_tag): the project version in meson.build, or the
`git describe` of a v* release tag when the build had one."""

import os
import re
import subprocess

from authd_harness import authd_bin

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def project_version():
    with open(os.path.join(SRC, "meson.build"), encoding="utf-8") as f:
        m = re.search(r"project\('authd'.*?version\s*:\s*'([^']+)'", f.read(), re.S)
    assert m, "no version in meson.build's project()"
    return m.group(1)


def programs():
    daemon = os.path.abspath(authd_bin())
    build = os.path.dirname(os.path.dirname(daemon))
    return {
        "authd": daemon,
        "authctl": os.environ.get("AUTHCTL_BIN") or
        os.path.join(build, "clients", "authctl", "authctl"),
        "authd-gw": os.environ.get("AUTHD_GW_BIN") or
        os.path.join(build, "clients", "gateway", "authd-gw"),
    }


def test_version_line_is_the_same_for_every_program():
    want = project_version()
    seen = {}
    for name, path in programs().items():
        r = subprocess.run([path, "--version"], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0, (name, r.stderr)
        assert r.stderr == "", (name, r.stderr)
        m = re.fullmatch(r"authd (\S+)\n", r.stdout)
        assert m, (name, r.stdout)
        # Either the project version or a release tag's describe
        # (v0.2.0, v0.2.0-3-gabc1234, v0.2.0+ when dirty).
        v = m.group(1)
        assert v == want or re.match(r"v\d", v), (name, v, want)
        seen[name] = v
    assert len(set(seen.values())) == 1, seen


def test_version_is_in_each_help():
    for name, path in programs().items():
        r = subprocess.run([path, "--help"], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 0, (name, r.stderr)
        assert "--version" in r.stdout, name


def test_version_does_not_need_a_data_dir_or_config():
    # AUTHD_* point nowhere: --version must answer before any option,
    # config file or data directory is read.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "AUTHD_CONFIG": "/nonexistent/authd.conf",
           "AUTHD_DATA": "/nonexistent"}
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    r = subprocess.run([programs()["authd"], "--version"], capture_output=True,
                       text=True, env=env, timeout=10, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("authd ")
