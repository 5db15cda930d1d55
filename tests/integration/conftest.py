"""Fixtures for the integration suite: a real authd on a fresh temp data
dir and free loopback ports, judged on the way out (SIGTERM exits 0, no
sanitizer report), plus helpers to create enrollments, API keys and
enrolled devices through the public API only."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from authd_harness import (SANITIZER_MARKERS, Api, Authd, authd_bin,  # noqa: E402
                           create_enrollment, enroll, uid)


@pytest.fixture(scope="session")
def binary():
    path = authd_bin()
    assert os.access(path, os.X_OK), "AUTHD_BIN=%s is not executable" % path
    return path


@pytest.fixture(scope="session")
def authd(binary):
    """One daemon shared by the tests that only need the API. Every test
    uses its own unique names, so they do not see each other's data."""
    data = tempfile.mkdtemp(prefix="authd-it-")
    d = Authd(os.path.join(data, "data"), binary)
    d.start()
    yield d
    try:
        d.stop_and_check()
    finally:
        d.cleanup_logs()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(autouse=True)
def _shared_daemon_still_alive(request):
    """A crash or sanitizer report of the shared daemon is charged to the
    test during which it happened. A dead daemon is restarted on the same
    data dir (keys and data persist), so one bug does not turn every later
    test into an error."""
    if "authd" not in request.fixturenames:
        yield
        return
    d = request.getfixturevalue("authd")
    seen = len(d.stderr())
    yield
    new = d.stderr()[seen:]
    found = [m for m in SANITIZER_MARKERS if m in new]
    if found:
        # With halt_on_error the process is still writing its report and
        # aborting; let it finish so the next test does not see it die.
        try:
            d.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        new = d.stderr()[seen:]
    rc = d.proc.poll()
    if rc is not None:
        d.cleanup_logs()
        d.start()
        pytest.fail("authd died during this test (exit %r); restarted for the next tests:\n%s"
                    % (rc, new[-8000:]), pytrace=False)
    if found:
        pytest.fail("sanitizer report during this test %s:\n%s" % (found, new[-8000:]),
                    pytrace=False)


@pytest.fixture(scope="session")
def admin(authd):
    return Api(authd, authd.admin_key)


@pytest.fixture
def spawn_authd(binary, tmp_path):
    """Factory for daemons private to one test: spawn_authd(data_dir=None,
    extra_args=(), wait=True). Those still running at the end are stopped
    with SIGTERM and must exit 0 without sanitizer reports."""
    started = []

    def spawn(data_dir=None, extra_args=(), wait=True):
        if data_dir is None:
            data_dir = str(tmp_path / ("data-%d" % len(started)))
        d = Authd(data_dir, binary, extra_args)
        started.append(d)
        if wait:
            d.start()
        else:
            d.spawn()
        return d

    yield spawn
    errors = []
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.stop_and_check()
            except AssertionError as e:
                errors.append(str(e))
        d.cleanup_logs()
    assert not errors, "\n\n".join(errors)


@pytest.fixture(scope="session")
def role_key(admin):
    """role_key("broker") -> an API key of that role (created once)."""
    cache = {}

    def get(role):
        if role not in cache:
            r = admin.post("/v1/apikeys", {"name": uid("it-" + role + "-"), "role": role})
            assert r.status in (200, 201), "POST /v1/apikeys: %r" % r
            cache[role] = r.json["key"]
        return cache[role]

    return get


@pytest.fixture
def make_enrollment(admin):
    """make_enrollment(**fields) -> the 201 body (with the one-time token)."""
    return lambda **fields: create_enrollment(admin, **fields)


@pytest.fixture
def devdir(tmp_path):
    p = tmp_path / "devices"
    p.mkdir()
    return str(p)


@pytest.fixture
def enrolled(authd, make_enrollment, devdir):
    """enrolled(device_id=None, **enrollment_fields) -> (Device, enrollment),
    a device with a fresh certificate from a new enrollment."""

    def make(device_id=None, **fields):
        enr = make_enrollment(**fields)
        dev, r = enroll(authd, enr["token"], device_id or uid("dev-"), devdir)
        assert r.status == 201, "POST /v1/enroll: %r" % r
        return dev, enr

    return make

