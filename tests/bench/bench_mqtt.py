"""mosquitto throughput with authd_mosquitto.so against mosquitto's own
dynamic-security plugin and against no authorization at all, under the
same load in the same run: N clients (username/password on a plain
loopback listener) each publishing QoS 1 to its own telemetry topic with
a bounded in-flight window (tests/bench/mqtt_load.c). Every publish is
authorized by the plugin under test; the plugin decides locally from the
statements authd returned at CONNECT, so authd is idle during the run.

The configurations run in rounds, interleaved, and the median of each is
reported, with the ratio plugin/dynsec (goal: >= 0.95).

Environment: AUTHD_BIN, AUTHD_PLUGIN, MQTT_LOAD (set by meson);
MOSQUITTO (/usr/sbin/mosquitto), DYNSEC (Debian's path), MQTT_CLIENTS
(20), MQTT_SECONDS (4), MQTT_WARMUP (1), MQTT_WINDOW (10), MQTT_ROUNDS (7).
The broker runs on CPU 0 and the load generator on CPU 1 (taskset).
"""

import base64
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from authd_harness import Api, Authd, authd_bin, free_ports  # noqa: E402

MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
DYNSEC = os.environ.get("DYNSEC", "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
CLIENTS = int(os.environ.get("MQTT_CLIENTS", "20"))
SECONDS = float(os.environ.get("MQTT_SECONDS", "4"))
WARMUP = float(os.environ.get("MQTT_WARMUP", "1"))
WINDOW = int(os.environ.get("MQTT_WINDOW", "10"))
ROUNDS = int(os.environ.get("MQTT_ROUNDS", "7"))


def pinned(cpu, argv):
    """argv pinned to one CPU when there are two or more: the broker and
    the load generator then do not compete for the same core."""
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) >= 2:
        return [taskset, "-c", str(cpu)] + argv
    return argv

# A device policy of the usual shape: telemetry, events and shadow
# publishes, commands/shadow delta/broadcast receives, and denies.
POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"],
     "topics": ["devices/${device.id}/telemetry/#", "devices/${device.id}/events/+"]},
    {"effect": "allow", "actions": ["publish"],
     "topics": ["devices/${device.id}/shadow/update", "devices/${device.id}/shadow/get"]},
    {"effect": "allow", "actions": ["subscribe", "receive"],
     "topics": ["devices/${device.id}/cmd/+", "devices/${device.id}/shadow/delta",
                "fleet/broadcast/#"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"],
     "topics": ["$SYS/#", "devices/${device.id}/telemetry/secret/#"]}]}


def dynsec_role(dev):
    """The same ACL as POLICY for one device, in dynsec's terms."""
    acls = []
    for t in ("$SYS/#", "devices/%s/telemetry/secret/#" % dev):
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern"):
            acls.append({"acltype": kind, "topic": t, "priority": 10, "allow": False})
    for t in ("devices/%s/telemetry/#" % dev, "devices/%s/events/+" % dev,
              "devices/%s/shadow/update" % dev, "devices/%s/shadow/get" % dev):
        acls.append({"acltype": "publishClientSend", "topic": t, "priority": 0, "allow": True})
    for t in ("devices/%s/cmd/+" % dev, "devices/%s/shadow/delta" % dev, "fleet/broadcast/#"):
        for kind in ("publishClientReceive", "subscribePattern"):
            acls.append({"acltype": kind, "topic": t, "priority": 0, "allow": True})
    return {"rolename": "dev-" + dev, "acls": acls}


def dynsec_config(creds):
    clients, roles = [], []
    for cid, user, password, _ in creds:
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
        clients.append({"username": user, "clientid": cid,
                        "roles": [{"rolename": "dev-" + user}],
                        "salt": base64.b64encode(salt).decode(),
                        "password": base64.b64encode(digest).decode(),
                        "iterations": 101})
        roles.append(dynsec_role(user))
    return {"defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False,
                                 "subscribe": False, "unsubscribe": True},
            "clients": clients, "groups": [], "roles": roles}


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_broker(conf_lines, workdir, name):
    port = free_ports(1)[0]
    conf = os.path.join(workdir, name + ".conf")
    with open(conf, "w") as f:
        f.write("\n".join(["user " + pwd.getpwuid(os.getuid()).pw_name,
                           "per_listener_settings false", "persistence false",
                           "log_dest stderr", "log_type error", "log_type warning",
                           "listener %d 127.0.0.1" % port] + conf_lines) + "\n")
    log = open(os.path.join(workdir, name + ".log"), "wb")
    proc = subprocess.Popen(pinned(0, [MOSQUITTO, "-c", conf]), stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("mosquitto (%s) did not start:\n%s" % (
                name, open(log.name).read()[-3000:]))
        time.sleep(0.05)
    return proc, port, log


def load(port, creds_path, broker_pid):
    """(msgs/s, broker CPU µs per message or None)."""
    out = subprocess.run(pinned(1, [os.environ["MQTT_LOAD"], "127.0.0.1", str(port),
                                    creds_path, str(SECONDS), str(WARMUP), str(WINDOW),
                                    str(broker_pid)]),
                         capture_output=True, text=True, timeout=SECONDS + WARMUP + 60)
    if out.returncode != 0:
        raise SystemExit("mqtt_load failed (%d): %s" % (out.returncode, out.stderr))
    fields = dict(kv.split("=") for kv in out.stdout.split())
    cpu = fields.get("broker_cpu_us_per_msg")
    return float(fields["msgs_per_s"]), float(cpu) if cpu else None


def main():
    for need in ("MQTT_LOAD", "AUTHD_PLUGIN"):
        if not os.environ.get(need):
            print("%s is not set (run through meson: ninja benchmark)" % need)
            return 77
    for path in (MOSQUITTO, DYNSEC):
        if not os.path.exists(path):
            print("skipped: %s is not installed" % path)
            return 77
    workdir = tempfile.mkdtemp(prefix="authd-bench-mqtt-")
    authd = Authd(os.path.join(workdir, "data"), authd_bin())
    try:
        authd.start()
        admin = Api(authd, authd.admin_key)
        assert admin.put("/v1/policies/bench-device", POLICY).status in (200, 201)
        assert admin.put("/v1/groups/bench", {"policies": ["bench-device"]}).status in (200, 201)
        creds = []
        for i in range(CLIENTS):
            dev = "bench-%04d" % i
            r = admin.post("/v1/devices", {"id": dev, "groups": ["bench"]})
            assert r.status == 201, r
            r = admin.post("/v1/devices/%s/secret" % dev)
            assert r.status == 201, r
            creds.append((dev, dev, r.json["secret"], "devices/%s/telemetry/temp" % dev))
        creds_path = os.path.join(workdir, "creds.txt")
        with open(creds_path, "w") as f:
            for c in creds:
                f.write(" ".join(c) + "\n")
        anon_path = os.path.join(workdir, "anon.txt")
        with open(anon_path, "w") as f:
            for c in creds:
                f.write("%s - - %s\n" % (c[0], c[3]))
        dynsec_path = os.path.join(workdir, "dynsec.json")
        with open(dynsec_path, "w") as f:
            json.dump(dynsec_config(creds), f)

        configs = [
            ("authd plugin", ["allow_anonymous false",
                              "plugin " + os.environ["AUTHD_PLUGIN"],
                              "plugin_opt_url http://127.0.0.1:%d" % authd.check_port],
             creds_path),
            ("dynsec", ["allow_anonymous false", "plugin " + DYNSEC,
                        "plugin_opt_config_file " + dynsec_path], creds_path),
            ("no auth", ["allow_anonymous true"], anon_path),
        ]
        results = {name: [] for name, _, _ in configs}
        cpu = {name: [] for name, _, _ in configs}
        print("mqtt: %d clients, QoS 1, window %d, %.0f s (+%.0f s warm-up), %d rounds"
              % (CLIENTS, WINDOW, SECONDS, WARMUP, ROUNDS))
        for rnd in range(ROUNDS):
            for name, lines, cpath in configs:
                proc, port, log = run_broker(lines, workdir, name.replace(" ", "_"))
                try:
                    rate, us = load(port, cpath, proc.pid)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(20)
                    log.close()
                results[name].append(rate)
                if us is not None:
                    cpu[name].append(us)
                print("  round %d  %-13s %9.0f msgs/s  %s" % (
                    rnd + 1, name, rate,
                    "%.2f µs broker CPU/msg" % us if us is not None else ""), flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        print("median msgs/s: authd plugin %.0f, dynsec %.0f, no auth %.0f"
              % (med["authd plugin"], med["dynsec"], med["no auth"]))
        ratio = med["authd plugin"] / med["dynsec"]
        print("ratio plugin/dynsec: %.3f (goal >= 0.95: %s); plugin/no-auth: %.3f"
              % (ratio, "met" if ratio >= 0.95 else "NOT met",
                 med["authd plugin"] / med["no auth"]))
        if all(cpu.values()):
            mc = {k: statistics.median(v) for k, v in cpu.items()}
            # Throughput moves with whatever else runs on the machine; the
            # broker's CPU per message much less. Its inverse ratio is the
            # throughput ratio an otherwise idle machine would show.
            print("median broker CPU per message: authd plugin %.2f µs, dynsec %.2f µs, "
                  "no auth %.2f µs" % (mc["authd plugin"], mc["dynsec"], mc["no auth"]))
            print("cost ratio dynsec/plugin (throughput-equivalent): %.3f"
                  % (mc["dynsec"] / mc["authd plugin"]))
        return 0
    finally:
        authd.stop()
        authd.cleanup_logs()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
