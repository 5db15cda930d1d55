"""Fixtures for the integration suite: a real authd on a fresh temp data
dir and free loopback ports, judged on the way out (SIGTERM exits 0, no
sanitizer report), plus helpers to create enrollments, API keys and
enrolled devices through the public API only."""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from authd_harness import (Api, Authd, authd_bin, create_enrollment,  # noqa: E402
                           enroll, uid)


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
    """A crash of the shared daemon is charged to the test that caused it,
    not to whichever test happens to run next."""
    yield
    if "authd" in request.fixturenames:
        d = request.getfixturevalue("authd")
        rc = d.proc.poll()
        assert rc is None, "authd died during this test (exit %r):\n%s" % (
            rc, d.stderr()[-6000:])
        found = d.sanitizer_reports()
        assert not found, "sanitizer report during this test %s:\n%s" % (
            found, d.stderr()[-8000:])


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

