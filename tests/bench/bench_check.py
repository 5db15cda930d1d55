#!/usr/bin/python3
"""Broker check throughput: authd POST /v1/check publish decisions on the
check listener, for 10,000 distinct devices under realistic policies,
against nginx answering `return 200 "ok"` (the cost of HTTP alone on this
machine), both driven by wrk with the same threads, connections and Lua
script in the same run.

Policies: the docs/policies.md example as a group policy every device is in,
plus a policy listed on each device itself that uses an attribute
(`sites/${device.attributes.site}/...`) and an explicit deny. One request
in DENY_EVERY asks for a topic the policies deny ($SYS or another
device's telemetry); the rest are allowed.

Run through meson (`meson test --benchmark -C build` or `ninja -C build
benchmark`) or directly:

  AUTHD_BIN=build/authd/authd /usr/bin/python3 tests/bench/bench_check.py

Knobs (environment): BENCH_DURATION (seconds per measured run, default
10), BENCH_WARMUP (3), BENCH_CONNECTIONS (32), BENCH_THREADS (2),
BENCH_DEVICES (10000), BENCH_DENY_EVERY (8). Needs wrk and nginx
(Debian's wrk and nginx-light); installs nothing."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from authd_harness import Authd, free_ports, http_request  # noqa: E402

DURATION = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
DEVICES = int(os.environ.get("BENCH_DEVICES", "10000"))
DENY_EVERY = int(os.environ.get("BENCH_DENY_EVERY", "8"))
CREATORS = 32          # keep-alive connections creating devices
PREFIX = "bench-"
LUA = os.path.join(HERE, "check.lua")

FLEET_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"], "topics": ["devices/${device.id}/cmd/+"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
]}
SITE_POLICY = {"statements": [
    {"effect": "allow", "actions": ["publish", "receive"],
     "topics": ["sites/${device.attributes.site}/devices/${device.id}/#"]},
    {"effect": "allow", "actions": ["subscribe", "receive"],
     "topics": ["sites/${device.attributes.site}/broadcast/#"]},
    {"effect": "deny", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/secret/#"]},
]}


def die(msg):
    sys.exit("bench_check: " + msg)


def tool(env, name, paths=()):
    for path in [os.environ.get(env), shutil.which(name)] + list(paths):
        if path and os.access(path, os.X_OK):
            return path
    die("%s not found (apt-get install %s)" % (name, "nginx-light" if name == "nginx" else name))


def device_id(i):
    return "%s%05d" % (PREFIX, i)


def create_devices(authd, admin_key):
    """POST /v1/devices for every id, CREATORS keep-alive connections in
    parallel (the main listener group-commits concurrent writes)."""
    hdrs = {"Authorization": "Bearer " + admin_key, "Content-Type": "application/json"}
    errors = []
    lock = threading.Lock()
    nxt = [0]

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", authd.http_port, timeout=60)
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= DEVICES or errors:
                    return
                body = json.dumps({"id": device_id(i), "groups": ["fleet"],
                                   "policies": ["site"],
                                   "attributes": {"site": "site-%02d" % (i % 40)}})
                for attempt in (0, 1):
                    try:
                        conn.request("POST", "/v1/devices", body, hdrs)
                        r = conn.getresponse()
                        raw = r.read()
                        break
                    except (http.client.HTTPException, OSError):
                        # A dropped keep-alive connection: reconnect once.
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", authd.http_port, timeout=60)
                        if attempt:
                            raise
                if r.status != 201:
                    with lock:
                        errors.append("%s: %d %s" % (device_id(i), r.status, raw[:200]))
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(repr(e))
        finally:
            conn.close()

    workers = [threading.Thread(target=worker) for _ in range(CREATORS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        die("creating devices failed: %s" % errors[0])


def start_nginx(nginx, workdir):
    (port,) = free_ports(1)
    conf = os.path.join(workdir, "nginx.conf")
    tmp = lambda n: os.path.join(workdir, n)  # noqa: E731
    with open(conf, "w") as f:
        f.write("daemon off;\nworker_processes 2;\nerror_log %s;\npid %s;\n"
                "events {}\nhttp {\n  access_log off;\n"
                "  client_body_temp_path %s;\n  proxy_temp_path %s;\n"
                "  fastcgi_temp_path %s;\n  uwsgi_temp_path %s;\n  scgi_temp_path %s;\n"
                "  server {\n    listen 127.0.0.1:%d;\n"
                "    location / { return 200 \"ok\"; }\n  }\n}\n"
                % (tmp("e.log"), tmp("n.pid"), tmp("body"), tmp("proxy"), tmp("fastcgi"),
                   tmp("uwsgi"), tmp("scgi"), port))
    log = open(tmp("nginx.out"), "wb")
    # -e: the error log before the config is read, so a non-writable
    # /var/log/nginx never matters.
    proc = subprocess.Popen([nginx, "-p", workdir, "-c", conf, "-e", tmp("e.log")],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            with open(tmp("e.log"), "rb") as f:
                die("nginx exited with %d: %s" % (proc.returncode, f.read()[-2000:]))
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, port, log
        except OSError:
            time.sleep(0.05)
    die("nginx did not listen on %d" % port)


def run_wrk(wrk, url, duration):
    cmd = [wrk, "-t%d" % THREADS, "-c%d" % CONNECTIONS, "-d%ds" % duration,
           "--timeout", "10s", "-s", LUA, url, "--", PREFIX, str(DEVICES), str(DENY_EVERY)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if p.returncode != 0:
        die("wrk failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    res, bad = None, ""
    for line in p.stdout.splitlines():
        if line.startswith("WRKRESULT "):
            res = json.loads(line[len("WRKRESULT "):])
        elif line.startswith("WRKBAD "):
            bad = line[len("WRKBAD "):]
    if res is None:
        die("no result from wrk:\n" + p.stdout + p.stderr)
    res["bad_example"] = bad
    res["rate"] = res["ok"] / (res["duration_us"] / 1e6)
    return res


def preflight(authd):
    """A few decisions by hand: if these are wrong, every number is."""
    def check(body):
        r = http_request("127.0.0.1", authd.check_port, "POST", "/v1/check", body)
        if r.status != 200 or not isinstance(r.json, dict):
            die("preflight check %r: %r" % (body, r))
        return r.json

    last = device_id(DEVICES - 1)
    for did, topic, want in ((device_id(0), "devices/%s/telemetry/temp" % device_id(0), "allow"),
                             (last, "devices/%s/telemetry/temp" % last, "allow"),
                             (last, "sites/site-%02d/devices/%s/x" % ((DEVICES - 1) % 40, last),
                              "allow"),
                             (last, "devices/%s/telemetry/secret/x" % last, "deny"),
                             (last, "$SYS/broker/load", "deny"),
                             (last, "devices/%s/telemetry/temp" % device_id(0), "deny")):
        got = check({"action": "publish", "username": did, "client_id": did, "topic": topic})
        if got.get("result") != want:
            die("preflight: %s publish %s should be %s, got %r" % (did, topic, want, got))
    # The same request wrk sends, through curl, as an operator would try it.
    curl = shutil.which("curl")
    if curl:
        did = device_id(DEVICES // 2)
        body = json.dumps({"action": "publish", "client_id": did, "username": did,
                           "topic": "devices/%s/telemetry/temp" % did, "qos": 1, "retain": False})
        p = subprocess.run([curl, "-sS", "-H", "Content-Type: application/json", "-d", body,
                            "http://127.0.0.1:%d/v1/check" % authd.check_port],
                           capture_output=True, text=True, timeout=30)
        print("bench_check: curl preflight: %s" % p.stdout.strip())
        if '"allow"' not in p.stdout:
            die("curl preflight was not an allow: %s %s" % (p.stdout, p.stderr))


def main():
    wrk = tool("WRK", "wrk")
    nginx = tool("NGINX", "nginx", ["/usr/sbin/nginx"])
    work = tempfile.mkdtemp(prefix="authd-bench-check-")
    authd = nginx_proc = nginx_log = None
    t_start = time.monotonic()
    try:
        authd = Authd(os.path.join(work, "authd-data")).start()
        admin_key = authd.admin_key
        api = authd.api(admin_key)
        for path, body in (("/v1/policies/fleet", FLEET_POLICY), ("/v1/policies/site", SITE_POLICY),
                           ("/v1/groups/fleet", {"policies": ["fleet"]})):
            r = api.put(path, body)
            if r.status not in (200, 201):
                die("PUT %s: %r" % (path, r))

        t0 = time.monotonic()
        create_devices(authd, admin_key)
        t_create = time.monotonic() - t0
        print("bench_check: %d devices created through POST /v1/devices in %.1fs (%.0f/s)"
              % (DEVICES, t_create, DEVICES / t_create))
        preflight(authd)

        nginx_proc, nginx_port, nginx_log = start_nginx(nginx, work)
        r = http_request("127.0.0.1", nginx_port, "POST", "/v1/check", {"x": 1})
        if r.status != 200:
            die("nginx preflight: %r" % r)

        authd_url = "http://127.0.0.1:%d/v1/check" % authd.check_port
        nginx_url = "http://127.0.0.1:%d/v1/check" % nginx_port
        results = {}
        for name, url in (("authd check", authd_url), ("nginx return", nginx_url)):
            if WARMUP > 0:
                # For authd this also loads every device into the caches.
                run_wrk(wrk, url, WARMUP)
            results[name] = run_wrk(wrk, url, DURATION)
        a, n = results["authd check"], results["nginx return"]

        print()
        print("check throughput: POST /v1/check publish, %d devices, 1 in %d denied, "
              "%d connections, %d wrk threads, %ds, %d cores"
              % (DEVICES, DENY_EVERY, CONNECTIONS, THREADS, DURATION, os.cpu_count()))
        print("%-14s %10s %10s %8s %8s %8s %9s %9s %9s" % (
            "", "req/s", "requests", "non-2xx", "allows", "denies", "p50 ms", "p90 ms", "p99 ms"))
        for name, res in results.items():
            print("%-14s %10.0f %10d %8d %8s %8s %9.3f %9.3f %9.3f" % (
                name, res["rate"], res["ok"], res["non2xx"] + res["err_timeout"],
                res["allows"] if name.startswith("authd") else "-",
                res["denies"] if name.startswith("authd") else "-",
                res["p50_us"] / 1000, res["p90_us"] / 1000, res["p99_us"] / 1000))
        ratio = a["rate"] / n["rate"] if n["rate"] else float("inf")
        print("%-14s %10.2f   (authd req/s as a share of nginx's)" % ("authd/nginx", ratio))
        for name, res in results.items():
            if res["non2xx"] or any(res[k] for k in ("err_connect", "err_read", "err_write",
                                                     "err_timeout")):
                print("%s: non-2xx=%d connect=%d read=%d write=%d timeout=%d first bad: %s" % (
                    name, res["non2xx"], res["err_connect"], res["err_read"], res["err_write"],
                    res["err_timeout"], res["bad_example"][:200]))
        print("bench_check: total %.0fs" % (time.monotonic() - t_start))
        print("BENCHJSON " + json.dumps({
            "devices": DEVICES, "create_s": round(t_create, 2),
            "authd_check_per_s": round(a["rate"], 1), "nginx_per_s": round(n["rate"], 1),
            "ratio": round(ratio, 3),
            "authd_p50_ms": a["p50_us"] / 1000, "authd_p99_ms": a["p99_us"] / 1000,
            "nginx_p50_ms": n["p50_us"] / 1000, "nginx_p99_ms": n["p99_us"] / 1000,
            "authd_non2xx": a["non2xx"], "nginx_non2xx": n["non2xx"],
            "authd_allows": a["allows"], "authd_denies": a["denies"]}))

        if a["ok"] == 0 or n["ok"] == 0:
            die("a target answered nothing")
        if a["non2xx"]:
            die("authd answered %d checks with non-2xx" % a["non2xx"])
        if a["allows"] == 0:
            die("no check was allowed: the numbers measure refusals")
        # The script denies 1 in DENY_EVERY; far more denies means the
        # policies or the identities are not what the benchmark meant.
        expected_denies = a["ok"] / DENY_EVERY if DENY_EVERY else 0
        if a["denies"] > 1.5 * expected_denies + 100:
            die("%d denies where about %d were expected" % (a["denies"], expected_denies))
    finally:
        rc = None
        if nginx_proc is not None:
            nginx_proc.terminate()
            try:
                nginx_proc.wait(10)
            except subprocess.TimeoutExpired:
                nginx_proc.kill()
                nginx_proc.wait()
            nginx_log.close()
        if authd is not None:
            rc = authd.stop()
            if rc != 0 or authd.sanitizer_reports():
                print("bench_check: authd exit %r on SIGTERM:\n%s" % (rc, authd.stderr()[-3000:]))
            authd.cleanup_logs()
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
