"""The Debian package (issue 13): dpkg-buildpackage builds it from a
scratch copy of the source tree (so neither the tree nor its build*/
directories are touched or used), `dpkg -x` unpacks it into a scratch
root, and the programs, man pages, unit, completion and config found
there are run or checked from that root. The package is never installed
on this machine (no maintainer script runs here)."""

import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_SECONDS = 480


def project_version():
    with open(os.path.join(SRC, "meson.build"), encoding="utf-8") as f:
        m = re.search(r"project\('authd'.*?version\s*:\s*'([^']+)'", f.read(), re.S)
    return m.group(1)


def ignore(directory, names):
    """What the copy leaves out: build trees, git, debhelper's leftovers."""
    skip = set()
    for n in names:
        if n in (".git", "__pycache__", ".pytest_cache"):
            skip.add(n)
        elif directory == SRC and (n.startswith("build") or n.startswith("obj-")):
            skip.add(n)
        elif os.path.basename(directory) == "debian" and n in (
                "authd", ".debhelper", "tmp", "files", "debhelper-build-stamp"):
            skip.add(n)
    return skip


@pytest.fixture(scope="module")
def unpacked():
    for tool in ("dpkg-buildpackage", "dh", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip("%s is not installed (scripts/deps.sh test installs "
                        "dpkg-dev and debhelper)" % tool)
    work = tempfile.mkdtemp(prefix="authd-deb-")
    try:
        src = os.path.join(work, "authd")
        shutil.copytree(SRC, src, ignore=ignore, symlinks=True)
        env = dict(os.environ)
        # No tests (debian/rules skips them anyway), no debug package, the
        # machine's two cores; git must not find a repository above the
        # copy (the version then comes from meson.build).
        env["DEB_BUILD_OPTIONS"] = "nocheck noautodbgsym parallel=2"
        env["GIT_CEILING_DIRECTORIES"] = work
        for k in list(env):
            if k.startswith(("MESON", "AUTHD_", "ASAN_", "UBSAN_", "TSAN_")):
                del env[k]
        r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src,
                           env=env, capture_output=True, text=True,
                           timeout=BUILD_SECONDS)
        assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
        debs = glob.glob(os.path.join(work, "authd_*.deb"))
        assert len(debs) == 1, os.listdir(work)
        root = os.path.join(work, "root")
        subprocess.run(["dpkg-deb", "-x", debs[0], root], check=True, timeout=60)
        yield {"deb": debs[0], "root": root, "work": work, "src": src}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_source_tree_is_left_alone(unpacked):
    # The build happened in the copy: no debhelper output in the tree.
    for leftover in ("debian/authd", "debian/.debhelper", "debian/files",
                     "debian/debhelper-build-stamp"):
        assert not os.path.exists(os.path.join(SRC, leftover)), leftover
    assert not glob.glob(os.path.join(SRC, "obj-*"))
    assert os.path.isdir(os.path.join(unpacked["src"], "debian", "authd"))


def test_installed_programs_print_the_version(unpacked):
    want = "authd %s\n" % project_version()
    for prog in ("authd", "authctl", "authd-gw"):
        path = os.path.join(unpacked["root"], "usr", "bin", prog)
        r = subprocess.run([path, "--version"], capture_output=True, text=True,
                           timeout=10, env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, (prog, r.stderr)
        assert r.stdout == want, (prog, r.stdout)


def test_package_holds_everything(unpacked):
    root = unpacked["root"]
    unit = [p for p in ("lib/systemd/system/authd.service",
                        "usr/lib/systemd/system/authd.service")
            if os.path.exists(os.path.join(root, p))]
    assert unit, "no systemd unit"
    for path in ("usr/share/man/man8/authd.8.gz",
                 "usr/share/man/man1/authctl.1.gz",
                 "usr/share/man/man5/authd.conf.5.gz",
                 "usr/share/bash-completion/completions/authctl",
                 "etc/authd/authd.conf",
                 "usr/share/doc/authd/examples/authd.conf.example",
                 "usr/share/doc/authd/examples/grafana-authd.json",
                 "usr/share/doc/authd/copyright",
                 "usr/share/doc/authd/README.md",
                 "usr/share/doc/authd/SECURITY.md"):
        assert os.path.isfile(os.path.join(root, path)), path
    # The whole reference, uncompressed so that its links between pages
    # hold, and where the programs' --help says it is.
    docs = os.path.join(SRC, "docs")
    for page in os.listdir(docs):
        assert os.path.isfile(os.path.join(root, "usr/share/doc/authd/docs", page)), page
    for prog in ("authd", "authctl"):
        r = subprocess.run([os.path.join(root, "usr", "bin", prog), "--help"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, (prog, r.stderr)
        assert "/usr/share/doc/authd/docs/README.md" in r.stdout, (prog, r.stdout)
    plugins = glob.glob(os.path.join(root, "usr/lib/*/mosquitto/authd_mosquitto.so"))
    assert len(plugins) == 1, "no mosquitto plugin"
    # No test binaries or headers ride along.
    for dirpath, _, files in os.walk(root):
        for f in files:
            assert not f.startswith("test_"), os.path.join(dirpath, f)


def test_control_data(unpacked):
    info = subprocess.run(["dpkg-deb", "-f", unpacked["deb"]], capture_output=True,
                          text=True, check=True, timeout=30).stdout
    assert re.search(r"(?m)^Package: authd$", info)
    assert re.search(r"(?m)^Version: %s$" % re.escape(project_version()), info)
    depends = re.search(r"(?m)^Depends: (.*)$", info).group(1)
    for lib in ("adduser", "libssl3", "libmicrohttpd12", "liblmdb0", "libpq5"):
        assert lib in depends, depends
    ctl = os.path.join(unpacked["work"], "control")
    subprocess.run(["dpkg-deb", "-e", unpacked["deb"], ctl], check=True, timeout=30)
    with open(os.path.join(ctl, "conffiles"), encoding="utf-8") as f:
        assert "/etc/authd/authd.conf" in f.read().split()
    with open(os.path.join(ctl, "postinst"), encoding="utf-8") as f:
        postinst = f.read()
    # The system user the unit runs as, and its data directory.
    assert re.search(r"adduser --system --group .*authd", postinst.replace("\\\n", " "))
    assert "/var/lib/authd" in postinst
    assert "authd.service" in postinst, "dh_installsystemd did not add the unit"
    # Removal stops the service (debhelper writes no stop for --no-start).
    with open(os.path.join(ctl, "prerm"), encoding="utf-8") as f:
        assert "stop authd.service" in f.read()
    for script in ("postinst", "prerm", "postrm"):
        r = subprocess.run(["sh", "-n", os.path.join(ctl, script)],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, (script, r.stderr)


def test_installed_config_loads_and_man_pages_render(unpacked, tmp_path):
    root = unpacked["root"]
    r = subprocess.run([os.path.join(root, "usr/bin/authd"), "init", "--config",
                        os.path.join(root, "etc/authd/authd.conf"),
                        "--data", str(tmp_path / "data")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if not shutil.which("man"):
        return
    for page in ("man8/authd.8.gz", "man1/authctl.1.gz", "man5/authd.conf.5.gz"):
        r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l",
                            os.path.join(root, "usr/share/man", page)],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANWIDTH="80", HOME=str(tmp_path)))
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
        # The version placeholder was filled in at build time.
        assert "@VERSION@" not in r.stdout and project_version() in r.stdout, page
