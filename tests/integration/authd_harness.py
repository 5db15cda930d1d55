"""Runs a real authd and talks to it: free ports, readiness, clean shutdown,
a small HTTP(S) client that never raises on 4xx/5xx, and device keys/CSRs.

Shared by the integration tests (through conftest.py), the crash test and
the enrollment benchmark, so that all of them start and judge the daemon
the same way. Standard library plus Debian's python3-cryptography only."""

import base64
import http.client
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Markers that mean the sanitizer build found a bug. A leak makes the
# process exit nonzero as well, but the text says which one it was.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "UndefinedBehaviorSanitizer")

START_TIMEOUT = float(os.environ.get("AUTHD_START_TIMEOUT", "60"))
STOP_TIMEOUT = float(os.environ.get("AUTHD_STOP_TIMEOUT", "60"))
HTTP_TIMEOUT = float(os.environ.get("AUTHD_HTTP_TIMEOUT", "60"))
WRAPPER = shlex.split(os.environ.get("AUTHD_WRAPPER", ""))


def authd_bin():
    """The daemon binary: $AUTHD_BIN (set by meson) or a local build."""
    path = os.environ.get("AUTHD_BIN")
    if path:
        return path
    for build in sorted(os.listdir(REPO)):
        cand = os.path.join(REPO, build, "authd", "authd")
        if build.startswith("build") and os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("AUTHD_BIN is not set and no build*/authd/authd exists")


# ------------------------------------------------------------ backends ----
#
# AUTHD_TEST_STORE=postgres runs every daemon the harness starts on a
# PostgreSQL database of its own (one per data dir, so a restart on the
# same data dir finds its data again), on the server AUTHD_TEST_PG_URL
# names; without that URL, the first daemon starts a throwaway server
# (scripts/pg_test_server.sh) that lives until this process exits.

BACKEND = os.environ.get("AUTHD_TEST_STORE", "lmdb")
_pg = {"url": os.environ.get("AUTHD_TEST_PG_URL"), "dir": None, "dbs": {}}


def _pg_server_url():
    if _pg["url"]:
        return _pg["url"]
    import atexit
    d = tempfile.mkdtemp(prefix="authd-pg-")
    script = os.path.join(REPO, "scripts", "pg_test_server.sh")
    out = subprocess.run(["bash", script, "start", d], check=True,
                         capture_output=True, text=True, timeout=120)
    _pg["url"], _pg["dir"] = out.stdout.strip().splitlines()[-1], d
    atexit.register(lambda: subprocess.run(["bash", script, "stop", d],
                                           capture_output=True, timeout=120))
    return _pg["url"]


def pg_database_url(name):
    """The URL of database `name` on the test server, created if new."""
    base = _pg_server_url()
    if name not in _pg["dbs"]:
        r = subprocess.run(["psql", base, "-v", "ON_ERROR_STOP=1", "-qc",
                            'CREATE DATABASE "%s"' % name],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and "already exists" not in r.stderr:
            raise AssertionError("cannot create database %s: %s"
                                 % (name, r.stderr))
        _pg["dbs"][name] = re.sub(r"/[^/?]*(\?|$)", "/%s\\1" % name,
                                  base.split("://", 1)[1], count=1)
        _pg["dbs"][name] = base.split("://", 1)[0] + "://" + _pg["dbs"][name]
    return _pg["dbs"][name]


def backend_store_url(data_dir):
    """The store the backend under test gives data_dir: its PostgreSQL
    database, or None for the LMDB default."""
    if BACKEND != "postgres":
        return None
    import hashlib
    name = "authd_" + hashlib.sha256(
        os.path.abspath(data_dir).encode()).hexdigest()[:20]
    return pg_database_url(name)


def store_args(data_dir):
    """The --store arguments for a daemon (or `authd init`) on data_dir
    under the backend under test. None when the data dir remembers a
    store already (init, join or a first start wrote DATA/store.url): a
    test that chose one keeps it."""
    url = backend_store_url(data_dir)
    if url is None or os.path.exists(os.path.join(data_dir, "store.url")):
        return []
    return ["--store", url]


def copy_data_dir(src, dst):
    """A second, independent node with the same keys and registry: cp -a of
    a stopped daemon's data dir, and, when it remembers a PostgreSQL
    store, a copy of that database (CREATE DATABASE ... TEMPLATE) that the
    copy remembers instead."""
    subprocess.run(["cp", "-a", src, dst], check=True)
    url_file = os.path.join(src, "store.url")
    if not os.path.exists(url_file):
        return
    with open(url_file) as f:
        url = f.read().strip()
    if not url.startswith(("postgres://", "postgresql://")):
        return
    old = url.rsplit("/", 1)[1].split("?", 1)[0]
    new = "authd_copy_" + uuid.uuid4().hex[:16]
    r = subprocess.run(["psql", _pg_server_url(), "-v", "ON_ERROR_STOP=1", "-qc",
                        'CREATE DATABASE "%s" TEMPLATE "%s"' % (new, old)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, "cannot copy database %s: %s" % (old, r.stderr)
    with open(os.open(os.path.join(dst, "store.url"),
                      os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600), "w") as f:
        f.write(pg_database_url(new) + "\n")


def uid(prefix=""):
    """A short unique token so tests sharing one daemon never collide."""
    return prefix + uuid.uuid4().hex[:12]


def free_ports(n):
    """n distinct free 127.0.0.1 TCP ports, found by binding port 0. The
    sockets are held until all are chosen so the ports are distinct."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------- HTTP ----

class Resp:
    """One HTTP answer. Unpacks as (status, headers, body) where body is the
    decoded JSON when the answer is JSON, else the raw bytes."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.raw = raw
        self.json = None
        ctype = self.headers.get("content-type", "")
        if raw and ("json" in ctype or raw[:1] in (b"{", b"[")):
            try:
                self.json = json.loads(raw)
            except ValueError:
                self.json = None

    @property
    def body(self):
        return self.json if self.json is not None else self.raw

    @property
    def text(self):
        return self.raw.decode("utf-8", "replace")

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def __repr__(self):
        return "<Resp %d %s>" % (self.status, self.text[:300])


def _ssl_context(cadata=None, client_cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is not None:
        ctx.load_verify_locations(cadata=cadata)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        certfile, keyfile = client_cert
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


def http_request(host, port, method, path, body=None, *, headers=None,
                 tls=False, cadata=None, client_cert=None,
                 timeout=HTTP_TIMEOUT):
    """Sends one request on a fresh connection and returns a Resp; 4xx and
    5xx are answers, not exceptions. body may be bytes, str, or any other
    value (sent as JSON with Content-Type application/json)."""
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    if tls:
        ctx = _ssl_context(cadata, client_cert)
        # The server certificate is checked against host (an address or
        # a name), exactly as a client that connects by that name would.
        conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                           context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (e.g. 413) and close before reading
            # the whole body; the answer is still there to read.
            pass
        r = conn.getresponse()
        raw = r.read()
        return Resp(r.status, r.getheaders(), raw)
    finally:
        conn.close()


def bearer(token):
    return {"Authorization": "Bearer " + token}


def basic(user, password):
    cred = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    return {"Authorization": "Basic " + cred}


def error_code(resp):
    """The JSON error code of an answer, or None if it has none."""
    if isinstance(resp.json, dict) and isinstance(resp.json.get("error"), dict):
        return resp.json["error"].get("code")
    return None


def assert_error(resp, status, code=None):
    """Checks the §3 error contract: the status, and a JSON body
    {"error":{"code":<snake_case>,"message":<text>}}. code may be a string
    or a tuple of acceptable codes."""
    assert resp.status == status, (
        "expected HTTP %d, got %d: %s" % (status, resp.status, resp.text[:500]))
    assert isinstance(resp.json, dict), (
        "every error answer must be a JSON object, got %r" % resp.raw[:200])
    err = resp.json.get("error")
    assert isinstance(err, dict), "error body must be {\"error\":{...}}: %r" % resp.json
    assert isinstance(err.get("code"), str) and re.fullmatch(r"[a-z][a-z0-9_]*", err["code"]), (
        "error.code must be snake_case: %r" % err)
    assert isinstance(err.get("message"), str) and err["message"], (
        "error.message must be human text: %r" % err)
    if code is not None:
        codes = (code,) if isinstance(code, str) else tuple(code)
        assert err["code"] in codes, (
            "expected error code %s, got %r (%s)" % ("|".join(codes), err["code"], err["message"]))


# -------------------------------------------------------------- daemon ----

class Authd:
    """One authd process on a data dir with three free loopback ports."""

    def __init__(self, data_dir, binary=None, extra_args=(), env=None,
                 argv=None, ports=None):
        """argv replaces the whole serve command line (then ports gives
        the (http, https, check) ports it uses); env adds variables."""
        self.data = data_dir
        self.binary = binary or authd_bin()
        self.extra_args = list(extra_args)
        self.env = env
        self.argv = argv
        self.fixed_ports = ports
        self.proc = None
        self.stderr_path = None
        self.http_port = self.https_port = self.check_port = None
        self._ca_pem = None
        self._stderr_f = None

    # -- lifecycle --
    def cmdline(self):
        # AUTHD_WRAPPER (e.g. "valgrind --error-exitcode=1 --leak-check=full")
        # runs the daemon under a tool; meson's exe_wrapper would wrap
        # python3 instead.
        if self.argv is not None:
            return WRAPPER + [self.binary] + list(self.argv)
        return WRAPPER + [self.binary, "serve", "--data", self.data,
                "--http", "127.0.0.1:%d" % self.http_port,
                "--https", "127.0.0.1:%d" % self.https_port,
                "--check-http", "127.0.0.1:%d" % self.check_port,
                ] + store_args(self.data) + self.extra_args

    def spawn(self):
        """Starts the process without waiting for readiness."""
        self.http_port, self.https_port, self.check_port = (
            self.fixed_ports or free_ports(3))
        fd, self.stderr_path = tempfile.mkstemp(prefix="authd-stderr-",
                                                suffix=".log")
        self._stderr_f = os.fdopen(fd, "wb")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(self.cmdline(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self._stderr_f, env=env)
        self._ca_pem = None
        return self

    def start(self, timeout=START_TIMEOUT):
        """Starts and waits for GET /readyz to answer 200. Free ports are
        found by binding port 0 and letting go, so another process may take
        one before the daemon binds it: then it starts again on new ports
        (unless the test fixed them)."""
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready(timeout)
                return self
            except AssertionError:
                lost_race = (self.fixed_ports is None and self.proc.poll() is not None
                             and "address in use" in self.stderr())
                if not lost_race or attempt == 2:
                    raise
                self._close_stderr()
                self.cleanup_logs()
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("authd exited with %d before it was ready:\n%s"
                                     % (rc, self.stderr()[-4000:]))
            try:
                r = http_request("127.0.0.1", self.http_port, "GET", "/readyz",
                                 timeout=2)
                if r.status == 200:
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("authd not ready after %.0fs (last: %r):\n%s"
                             % (timeout, last, self.stderr()[-4000:]))

    def stderr(self):
        if not self.stderr_path or not os.path.exists(self.stderr_path):
            return ""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def sanitizer_reports(self):
        text = self.stderr()
        return [m for m in SANITIZER_MARKERS if m in text]

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, return the exit status (None if not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._close_stderr()
                raise AssertionError("authd did not exit within %.0fs of SIGTERM:\n%s"
                                     % (timeout, self.stderr()[-4000:]))
        self._close_stderr()
        return self.proc.returncode

    def kill9(self):
        self.proc.kill()  # SIGKILL: no chance to flush anything
        self.proc.wait()
        self._close_stderr()

    def _close_stderr(self):
        if self._stderr_f is not None:
            self._stderr_f.close()
            self._stderr_f = None

    def assert_clean_exit(self, rc):
        """The teardown contract: SIGTERM exits 0 (a leak under LSan is a
        nonzero exit) and no sanitizer said anything."""
        found = self.sanitizer_reports()
        assert not found, "authd stderr has sanitizer reports %s:\n%s" % (
            found, self.stderr()[-8000:])
        assert rc == 0, "authd must exit 0 on SIGTERM, got %r:\n%s" % (
            rc, self.stderr()[-4000:])

    def stop_and_check(self):
        rc = self.stop()
        self.assert_clean_exit(rc)

    def cleanup_logs(self):
        if self.stderr_path and os.path.exists(self.stderr_path):
            os.unlink(self.stderr_path)

    # -- files --
    @property
    def admin_key(self):
        with open(os.path.join(self.data, "admin.key")) as f:
            return f.read().strip()

    # -- HTTP --
    def request(self, method, path, body=None, *, token=None, headers=None,
                tls=False, client_cert=None, port=None, host="127.0.0.1",
                timeout=HTTP_TIMEOUT):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs.update(bearer(token))
        if tls:
            port = port or self.https_port
            return http_request(host, port, method, path, body,
                                headers=hdrs, tls=True, cadata=self.ca_pem(),
                                client_cert=client_cert, timeout=timeout)
        return http_request(host, port or self.http_port, method, path,
                            body, headers=hdrs, timeout=timeout)

    def ca_pem(self):
        """The chain from GET /v1/ca.pem, fetched over plain HTTP once."""
        if self._ca_pem is None:
            r = http_request("127.0.0.1", self.http_port, "GET", "/v1/ca.pem")
            assert r.status == 200, "GET /v1/ca.pem: %r" % r
            self._ca_pem = r.text
        return self._ca_pem

    def api(self, token):
        return Api(self, token)


class Api:
    """Requests with one bearer credential."""

    def __init__(self, daemon, token):
        self.d = daemon
        self.token = token

    def get(self, path, **kw):
        return self.d.request("GET", path, token=self.token, **kw)

    def post(self, path, body=None, **kw):
        return self.d.request("POST", path, body, token=self.token, **kw)

    def put(self, path, body=None, **kw):
        return self.d.request("PUT", path, body, token=self.token, **kw)

    def patch(self, path, body=None, **kw):
        return self.d.request("PATCH", path, body, token=self.token, **kw)

    def delete(self, path, **kw):
        return self.d.request("DELETE", path, token=self.token, **kw)

    def list_all(self, path, limit=None, max_pages=10000):
        """Follows the {"items","next"} cursor until next is null and
        returns every item."""
        items = []
        after = None
        sep = "&" if "?" in path else "?"
        for _ in range(max_pages):
            q = path
            params = []
            if limit:
                params.append("limit=%d" % limit)
            if after is not None:
                params.append("after=" + quote(after))
            if params:
                q = path + sep + "&".join(params)
            r = self.get(q)
            assert r.status == 200, "GET %s: %r" % (q, r)
            assert isinstance(r.json, dict) and isinstance(r.json.get("items"), list), (
                "lists answer {\"items\":[...],\"next\":...}: %r" % r)
            assert "next" in r.json, "lists always carry \"next\" (null at the end): %r" % r
            items.extend(r.json["items"])
            nxt = r.json["next"]
            if nxt is None:
                return items
            assert nxt != after, "the cursor must advance, got %r twice" % nxt
            after = nxt
        raise AssertionError("list %s did not end after %d pages" % (path, max_pages))


def quote(s):
    from urllib.parse import quote as q
    return q(str(s), safe="")


# ------------------------------------------------------- keys and CSRs ----

def new_key(kind="p256"):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537,
                                        key_size=int(kind[3:]))
    raise ValueError(kind)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def csr_for(key, cn):
    """A PEM CSR with subject CN=cn (no length check: ids may be 128 bytes,
    longer than X.520's 64)."""
    b = x509.CertificateSigningRequestBuilder()
    if cn is not None:
        b = b.subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)]))
    else:
        b = b.subject_name(x509.Name([]))
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = b.sign(key, algo)
    return csr


def make_csr(cn, kind="p256"):
    """(key, csr_pem) for a fresh key of the given kind."""
    key = new_key(kind)
    csr = csr_for(key, cn)
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_der_from_pem(pem):
    return x509.load_pem_x509_csr(pem.encode()).public_bytes(
        serialization.Encoding.DER)


def der_to_pem(der, label="CERTIFICATE REQUEST"):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


def corrupt_csr_signature(pem):
    """The same CSR with the last byte of its signature flipped: still a
    well-formed CSR, but the self-signature no longer verifies."""
    der = bytearray(csr_der_from_pem(pem))
    der[-1] ^= 0x01
    return der_to_pem(bytes(der))


def load_cert(pem):
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def split_pem_chain(pem):
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                        pem, re.S)
    return [x509.load_pem_x509_certificate(b.encode()) for b in blocks]


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def normalize_pem(pem):
    """PEM compared by its DER content (line breaks may differ)."""
    return [c.public_bytes(serialization.Encoding.DER) for c in split_pem_chain(pem)]


def to_epoch(v):
    """A time field as Unix seconds: accepts integers and RFC 3339 text."""
    if isinstance(v, (int, float)):
        return float(v)
    assert isinstance(v, str) and v, "time field must be a number or RFC 3339: %r" % v
    s = v.replace("Z", "+00:00")
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def cert_not_after(cert):
    try:
        return cert.not_valid_after_utc.timestamp()
    except AttributeError:
        return cert.not_valid_after.replace(tzinfo=timezone.utc).timestamp()


def cert_not_before(cert):
    try:
        return cert.not_valid_before_utc.timestamp()
    except AttributeError:
        return cert.not_valid_before.replace(tzinfo=timezone.utc).timestamp()


def run(cmd, input=None, check=True, timeout=60):
    """Runs a CLI tool (openssl, curl); returns CompletedProcess text."""
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                       text=isinstance(input, str) or input is None)
    if check:
        assert p.returncode == 0, "%s failed (%d):\n%s\n%s" % (
            " ".join(cmd), p.returncode, p.stdout, p.stderr)
    return p


class Device:
    """A device key and, once enrolled, its certificate, written to files so
    both Python's ssl and curl can present it."""

    def __init__(self, dirpath, device_id, kind="p256"):
        self.id = device_id
        self.dir = dirpath
        self.key, self.csr_pem = make_csr(device_id, kind)
        # File names do not use the id: tests also try ids that are not
        # valid file names.
        base = os.path.join(dirpath, uuid.uuid4().hex)
        self.key_path = base + ".key.pem"
        with open(os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(key_pem(self.key))
        self.cert_path = base + ".cert.pem"
        self.cert_pem = None
        self.serial = None

    def new_csr(self, cn=None):
        csr = csr_for(self.key, cn or self.id)
        return csr.public_bytes(serialization.Encoding.PEM).decode()

    def set_cert(self, cert_pem_text, chain_pem=""):
        self.cert_pem = cert_pem_text
        with open(self.cert_path, "w") as f:
            f.write(cert_pem_text)
            if chain_pem:
                # Present the issuing CA too, as a real device would.
                f.write(chain_pem)
        self.serial = format(load_cert(cert_pem_text).serial_number, "x")

    def with_cert(self, cert_pem_text, chain_pem=""):
        """The same key with another certificate, in its own file."""
        other = Device.__new__(Device)
        other.__dict__.update(self.__dict__)
        other.cert_path = os.path.join(self.dir, uuid.uuid4().hex + ".cert.pem")
        other.set_cert(cert_pem_text, chain_pem)
        return other

    @property
    def client_cert(self):
        return (self.cert_path, self.key_path)


# ------------------------------------------------------ API shortcuts ----

def create_enrollment(api, **fields):
    body = {"name": uid("enr-"), "id_pattern": "*", "max_uses": 1000,
            "expires_in": 3600, "groups": ["sensors"], "cert_days": 365}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    # Enrollments may only name groups that exist (unknown_group).
    for g in body.get("groups") or []:
        if isinstance(g, str) and api.get("/v1/groups/" + g).status == 404:
            api.put("/v1/groups/" + g, {"policies": []})
    r = api.post("/v1/enrollments", body)
    assert r.status == 201, "POST /v1/enrollments %r: %r" % (body, r)
    return r.json


def enroll(daemon, token, device_id, dirpath, kind="p256", body_id=True,
           csr_cn=None, tls=False):
    """Generates a key, enrolls it by CSR and returns (Device, Resp). The
    device's files are set only on success."""
    dev = Device(dirpath, device_id, kind)
    csr = dev.csr_pem if csr_cn is None else dev.new_csr(csr_cn)
    body = {"csr": csr}
    if body_id:
        body["device_id"] = device_id
    r = daemon.request("POST", "/v1/enroll", body, token=token, tls=tls)
    if r.status == 201:
        dev.set_cert(r.json["certificate"], r.json.get("chain", ""))
    return dev, r


def connect_group(admin, prefix="cg-"):
    """A fresh group whose policy lets a device connect as itself and
    publish to t/<its id>: the least a device needs to pass a check."""
    pol, grp = uid("pol-" + prefix), uid("grp-" + prefix)
    assert admin.put("/v1/policies/" + pol, {"statements": [
        {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
        {"effect": "allow", "actions": ["publish"], "topics": ["t/${device.id}"]},
    ]}).status == 201
    assert admin.put("/v1/groups/" + grp, {"policies": [pol]}).status == 201
    return grp


def secret_device(admin, group, prefix="sd-"):
    """(device id, secret): a new device in group with a device secret."""
    did = uid(prefix)
    assert admin.post("/v1/devices", {"id": did, "groups": [group]}).status == 201
    r = admin.post("/v1/devices/%s/secret" % did)
    assert r.status == 201, r
    return did, r.json["secret"]
