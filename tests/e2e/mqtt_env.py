"""The end-to-end world: authd's policies and devices (set up through its
public API and the openssl CLI), a mosquitto with the plugin, and a small
synchronous MQTT client over Debian's python3-paho-mqtt (1.6)."""

import base64
import json
import os
import pwd
import queue
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import urlencode

import paho.mqtt.client as mqtt

from authd_harness import SANITIZER_MARKERS, free_ports, run, uid

# docs/policies.md, with a client-id glob so a device may hold a second session.
SENSOR_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"],
     "client_ids": ["${device.id}", "${device.id}-*"]},
    {"effect": "allow", "actions": ["publish"],
     "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"],
     "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"],
     "topics": ["$SYS/#"]}]}

# An operator console: reads every device's telemetry, sends commands.
DASHBOARD_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"],
     "client_ids": ["${device.id}", "${device.id}-*"]},
    {"effect": "allow", "actions": ["subscribe", "receive"],
     "topics": ["devices/+/telemetry/#"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/+/cmd/+"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"],
     "topics": ["$SYS/#"]}]}

# Everything but the broker's own $SYS tree.
MONITOR_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"],
     "client_ids": ["${device.id}", "${device.id}-*"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["#"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"],
     "topics": ["$SYS/#"]}]}

SUBACK_FAILURE = 0x80
CONNACK_NOT_AUTHORIZED = 5


class CertDevice:
    """A device whose key and CSR were made by the openssl CLI and whose
    certificate authd issued through POST /v1/enroll."""

    def __init__(self, device_id, key_path, cert_path):
        self.id = device_id
        self.key_path = key_path
        self.cert_path = cert_path


class World:
    def __init__(self, authd, admin, pki_dir):
        self.authd = authd
        self.admin = admin
        self.dir = pki_dir
        os.makedirs(pki_dir, exist_ok=True)
        for name, doc in (("e2e-sensor", SENSOR_POLICY),
                          ("e2e-dashboard", DASHBOARD_POLICY),
                          ("e2e-monitor", MONITOR_POLICY)):
            r = admin.put("/v1/policies/" + name, doc)
            assert r.status in (200, 201), "PUT /v1/policies/%s: %r" % (name, r)
        for group, policy in (("sensors", "e2e-sensor"),
                              ("dashboards", "e2e-dashboard"),
                              ("monitors", "e2e-monitor")):
            r = admin.put("/v1/groups/" + group, {"policies": [policy]})
            assert r.status in (200, 201), "PUT /v1/groups/%s: %r" % (group, r)
        self.enrollments = {}
        self.chain_path = os.path.join(pki_dir, "ca-chain.pem")
        with open(self.chain_path, "w") as f:
            f.write(authd.ca_pem())

    def _enrollment(self, group):
        if group not in self.enrollments:
            r = self.admin.post("/v1/enrollments", {
                "name": uid("e2e-"), "id_pattern": "*", "max_uses": 1000,
                "expires_in": 3600, "groups": [group], "cert_days": 30})
            assert r.status == 201, "POST /v1/enrollments: %r" % r
            self.enrollments[group] = r.json["token"]
        return self.enrollments[group]

    def _openssl_key_and_csr(self, cn, base):
        key, csr = base + ".key.pem", base + ".csr.pem"
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
             "-subj", "/CN=" + cn, "-out", csr])
        os.chmod(key, 0o600)
        with open(csr) as f:
            return key, f.read()

    def cert_device(self, group="sensors", prefix="sensor-"):
        """A device enrolled by CSR into group, with key and certificate files."""
        did = uid(prefix)
        base = os.path.join(self.dir, did)
        key, csr = self._openssl_key_and_csr(did, base)
        r = self.authd.request("POST", "/v1/enroll", {"csr": csr, "device_id": did},
                               token=self._enrollment(group))
        assert r.status == 201, "POST /v1/enroll: %r" % r
        cert = base + ".cert.pem"
        with open(cert, "w") as f:
            f.write(r.json["certificate"])
        return CertDevice(did, key, cert)

    def secret_device(self, group="dashboards", prefix="console-"):
        """(device id, secret) of a certificate-less device in group."""
        did = uid(prefix)
        r = self.admin.post("/v1/devices", {"id": did, "groups": [group]})
        assert r.status == 201, "POST /v1/devices: %r" % r
        r = self.admin.post("/v1/devices/%s/secret" % did)
        assert r.status == 201, "POST /v1/devices/{id}/secret: %r" % r
        return did, r.json["secret"]

    def token(self, dev, scope=None):
        """An access token minted by dev over mTLS (bound to its certificate)."""
        body = {"grant_type": "client_credentials"}
        if scope:
            body["scope"] = scope
        r = self.authd.request("POST", "/v1/token", urlencode(body), tls=True,
                               client_cert=(dev.cert_path, dev.key_path),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 200, "POST /v1/token: %r" % r
        return r.json["access_token"]

    def server_cert(self, out_dir):
        """key.pem and cert.pem (leaf + chain) for the broker, issued by
        authd's POST /v1/server-certs from a CSR made here."""
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.join(out_dir, "server")
        key, csr = self._openssl_key_and_csr("localhost", base)
        r = self.admin.post("/v1/server-certs", {"csr": csr, "dns": ["localhost"],
                                                 "ips": ["127.0.0.1"], "days": 30})
        assert r.status == 201, "POST /v1/server-certs: %r" % r
        cert = base + ".cert.pem"
        with open(cert, "w") as f:
            f.write(r.json["certificate"] + r.json.get("chain", ""))
        return key, cert


# ------------------------------------------------------------ broker ----

def _sanitizer_runtime(plugin):
    """The ASan runtime the plugin was linked with (from ldd), or None if
    it was built without it."""
    p = subprocess.run(["ldd", plugin], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("libasan.so") and len(parts) >= 3:
            return parts[2]
    return None


class Broker:
    """mosquitto -c <conf> with the plugin and three loopback listeners."""

    def __init__(self, binary, plugin, world, out_dir, plugin_opts=None):
        """plugin_opts replaces the plugin_opt_url line (and adds others):
        by default the plugin talks to authd's check listener."""
        self.plugin_opts = plugin_opts
        self.binary = binary
        self.plugin = plugin
        self.world = world
        self.dir = out_dir
        os.makedirs(out_dir, exist_ok=True)
        self.tls_port, self.plain_port, self.ws_port, self.id_port = free_ports(4)
        self.key, self.cert = world.server_cert(out_dir)
        self.conf = os.path.join(out_dir, "mosquitto.conf")
        self.log_path = os.path.join(out_dir, "mosquitto.log")
        self.proc = None

    def config(self):
        a = self.world.authd
        return "\n".join([
            # Started as root, mosquitto would switch to the "mosquitto"
            # user, which cannot read the test's private temp dirs.
            "user " + pwd.getpwuid(os.getuid()).pw_name,
            "per_listener_settings false",
            "allow_anonymous false",
            "persistence false",
            "sys_interval 1",
            "log_dest stderr",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "plugin " + self.plugin,
        ] + (self.plugin_opts or ["plugin_opt_url http://127.0.0.1:%d" % a.check_port]) + [
            "plugin_opt_timeout_ms 5000",
            "plugin_opt_cache_ttl 300",
            "",
            "# Devices with a certificate issued by authd.",
            "listener %d 127.0.0.1" % self.tls_port,
            "cafile " + self.world.chain_path,
            "certfile " + self.cert,
            "keyfile " + self.key,
            "require_certificate true",
            "",
            "# Username/password: a device secret or an access token.",
            "listener %d 127.0.0.1" % self.plain_port,
            "",
            "# Browsers and gateways: a token as the password.",
            "listener %d 127.0.0.1" % self.ws_port,
            "protocol websockets",
            "",
            "# The certificate's CN as the username: mosquitto skips the",
            "# password step, the plugin checks at the first ACL check.",
            "listener %d 127.0.0.1" % self.id_port,
            "cafile " + self.world.chain_path,
            "certfile " + self.cert,
            "keyfile " + self.key,
            "require_certificate true",
            "use_identity_as_username true",
            ""])

    def start(self, timeout=30):
        with open(self.conf, "w") as f:
            f.write(self.config())
        env = dict(os.environ)
        if os.environ.get("AUTHD_SANITIZED") == "1":
            # The plugin is instrumented, mosquitto is not: the ASan
            # runtime has to come first, so it is preloaded. Leaks are
            # still reported (mosquitto unloads its plugins on SIGTERM),
            # except the broker's own (lsan.supp).
            asan = _sanitizer_runtime(self.plugin)
            if asan:
                # Only the runtime: preloading the plugin too (so that its
                # frames stay symbolized in leak reports after mosquitto
                # unloads it) made exit hang in p11-kit's destructor, a
                # dependency of libcurl, under ASan. Plugin leaks are still
                # reported, with unnamed plugin frames.
                env["LD_PRELOAD"] = asan
            env["ASAN_OPTIONS"] = "abort_on_error=1:halt_on_error=1:detect_leaks=1"
            env["LSAN_OPTIONS"] = "print_suppressions=0:suppressions=" + os.path.join(
                os.path.dirname(os.path.abspath(__file__)), "lsan.supp")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("mosquitto exited with %d:\n%s" % (
                    self.proc.returncode, self.log()[-4000:]))
            if "authd: following events" in self.log() and all(
                    _port_open(p) for p in (self.tls_port, self.plain_port, self.ws_port,
                                            self.id_port)):
                return
            time.sleep(0.05)
        raise AssertionError("mosquitto not ready after %ds:\n%s" % (timeout, self.log()[-4000:]))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_alive(self, since=0):
        new = self.log()[since:]
        found = [m for m in SANITIZER_MARKERS if m in new]
        assert not found, "sanitizer report from the broker %s:\n%s" % (found, new[-8000:])
        assert self.proc.poll() is None, "mosquitto died (exit %r):\n%s" % (
            self.proc.returncode, new[-8000:])

    def count(self, text):
        return self.log().count(text)

    def stop_and_check(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("mosquitto did not stop on SIGTERM:\n%s" % self.log()[-4000:])
        self._log.close()
        text = self.log()
        found = [m for m in SANITIZER_MARKERS if m in text]
        assert not found, "sanitizer report from the broker %s:\n%s" % (found, text[-8000:])
        assert self.proc.returncode == 0, "mosquitto must exit 0 on SIGTERM, got %r:\n%s" % (
            self.proc.returncode, text[-4000:])


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ------------------------------------------------------------ client ----

class Client:
    """One MQTT 3.1.1 connection driven synchronously: every call waits for
    the broker's answer (CONNACK, SUBACK, PUBACK) or a timeout."""

    def __init__(self, broker, listener, client_id, username=None, password=None,
                 device=None, tls_device=None):
        self.broker = broker
        self.client_id = client_id
        transport = "websockets" if listener == "ws" else "tcp"
        self.port = {"tls": broker.tls_port, "plain": broker.plain_port,
                     "ws": broker.ws_port, "tls-id": broker.id_port}[listener]
        self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311,
                             transport=transport, clean_session=True)
        if username is not None:
            self.c.username_pw_set(username, password)
        if listener in ("tls", "tls-id"):
            dev = tls_device or device
            self.c.tls_set(ca_certs=broker.world.chain_path,
                           certfile=dev.cert_path if dev else None,
                           keyfile=dev.key_path if dev else None)
        self.cond = threading.Condition()
        self.connack = None
        self.subacks = {}
        self.pubacks = set()
        self.messages = queue.Queue()
        self.disconnected_at = None
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect

    # paho callbacks (its network thread)
    def _on_connect(self, c, u, flags, rc):
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, granted):
        with self.cond:
            self.subacks[mid] = list(granted)
            self.cond.notify_all()

    def _on_publish(self, c, u, mid):
        with self.cond:
            self.pubacks.add(mid)
            self.cond.notify_all()

    def _on_message(self, c, u, msg):
        self.messages.put((msg.topic, msg.payload))

    def _on_disconnect(self, c, u, rc):
        with self.cond:
            if self.disconnected_at is None:
                self.disconnected_at = time.monotonic()
            self.cond.notify_all()

    def _wait(self, pred, timeout):
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def connect(self, timeout=10):
        """The CONNACK return code (0 accepted, 5 not authorized), or None
        if the broker closed the connection without one."""
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        self._wait(lambda: self.connack is not None or self.disconnected_at is not None,
                   timeout)
        if self.connack != 0:
            self.close()
        return self.connack

    def subscribe(self, topic_filter, qos=1, timeout=10):
        """The granted QoS, or 0x80 when refused."""
        rc, mid = self.c.subscribe(topic_filter, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, "SUBSCRIBE not sent: %r" % rc
        assert self._wait(lambda: mid in self.subacks, timeout), "no SUBACK for %s" % topic_filter
        return self.subacks[mid][0]

    def publish(self, topic, payload, qos=1, timeout=10):
        info = self.c.publish(topic, payload, qos)
        if qos:
            assert self._wait(lambda: info.mid in self.pubacks, timeout), (
                "no PUBACK for %s" % topic)

    def next_message(self, timeout):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self, seconds):
        """Every message received within seconds."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            m = self.next_message(left)
            if m is not None:
                got.append(m)

    def wait_disconnected(self, timeout):
        self._wait(lambda: self.disconnected_at is not None, timeout)
        return self.disconnected_at

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()


def sensor_session(broker, world, dev=None):
    """A sensor connected over TLS with its certificate (no password)."""
    dev = dev or world.cert_device()
    c = Client(broker, "tls", dev.id, device=dev)
    assert c.connect() == 0, "an enrolled, active device with its own certificate connects"
    return dev, c


def console_session(broker, world):
    """A dashboard connected on the plain listener with its device secret."""
    did, secret = world.secret_device("dashboards")
    c = Client(broker, "plain", did, username=did, password=secret)
    assert c.connect() == 0, "a device secret opens the plain listener"
    return did, c


def jwt_claims(token):
    """The claims of a JWT, unverified (authd verified it)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
