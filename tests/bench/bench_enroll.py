#!/usr/bin/python3
"""Enrollment throughput: authd POST /v1/enroll (durable, group-committed
to LMDB) against cfssl's sign endpoint (no database), both on 127.0.0.1,
both driven by the same wrk script with the same pool of pre-generated
ECDSA P-256 CSRs. Only 200/201 answers count as issued.

Run through meson (`meson test --benchmark -C build` or `ninja -C build
benchmark`) or directly:

  AUTHD_BIN=build/authd/authd /usr/bin/python3 tests/bench/bench_enroll.py

Knobs (environment): BENCH_DURATION (seconds per measured run, default
10), BENCH_WARMUP (default 2), BENCH_CONNECTIONS (32), BENCH_THREADS (2),
BENCH_POOL (CSRs in the pool, 2000). Needs wrk and cfssl (Debian's wrk
and golang-cfssl); installs nothing."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from authd_harness import (Authd, create_enrollment, free_ports,  # noqa: E402
                           http_request, make_csr)

DURATION = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
POOL = int(os.environ.get("BENCH_POOL", "2000"))
LUA = os.path.join(HERE, "post_pool.lua")


def tool(env, name):
    path = os.environ.get(env) or shutil.which(name) or "/usr/bin/" + name
    if not os.access(path, os.X_OK):
        sys.exit("bench_enroll: %s not found (apt-get install %s)" % (
            name, "golang-cfssl" if name == "cfssl" else name))
    return path


def write_pool(path):
    """POOL distinct P-256 CSRs, one JSON-escaped PEM per line."""
    with open(path, "w") as f:
        for i in range(POOL):
            _, pem = make_csr("bench-pool-%05d" % i)
            f.write(json.dumps(pem)[1:-1] + "\n")
    with open(path) as f:
        return json.loads('"%s"' % f.readline().rstrip("\n"))


def wait_port(port, proc, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("bench_enroll: %s exited with %d" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("bench_enroll: %s did not listen on %d" % (what, port))


def start_cfssl(cfssl, workdir):
    csr = os.path.join(workdir, "ca-csr.json")
    with open(csr, "w") as f:
        json.dump({"CN": "cfssl bench CA", "key": {"algo": "ecdsa", "size": 256},
                   "names": [{"O": "bench"}]}, f)
    p = subprocess.run([cfssl, "gencert", "-initca", csr], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        sys.exit("bench_enroll: cfssl gencert -initca failed: " + p.stderr)
    out = json.loads(p.stdout)
    ca, key = os.path.join(workdir, "ca.pem"), os.path.join(workdir, "ca-key.pem")
    with open(ca, "w") as f:
        f.write(out["cert"])
    with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(out["key"])
    (port,) = free_ports(1)
    log = open(os.path.join(workdir, "cfssl.log"), "wb")
    # loglevel 3 = errors only: per-request info logging would be a cost
    # authd does not pay either.
    proc = subprocess.Popen([cfssl, "serve", "-address", "127.0.0.1", "-port", str(port),
                             "-ca", ca, "-ca-key", key, "-loglevel", "3"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    wait_port(port, proc, "cfssl serve")
    return proc, port, log


def run_wrk(wrk, url, mode, pool, token, tag, duration):
    cmd = [wrk, "-t%d" % THREADS, "-c%d" % CONNECTIONS, "-d%ds" % duration,
           "--timeout", "10s", "-s", LUA, url, "--", mode, pool, token or "-", tag]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if p.returncode != 0:
        sys.exit("bench_enroll: wrk failed (%d): %s %s" % (p.returncode, p.stdout, p.stderr))
    res, bad = None, ""
    for line in p.stdout.splitlines():
        if line.startswith("WRKRESULT "):
            res = json.loads(line[len("WRKRESULT "):])
        elif line.startswith("WRKBAD "):
            bad = line[len("WRKBAD "):]
    if res is None:
        sys.exit("bench_enroll: no result from wrk:\n" + p.stdout + p.stderr)
    res["bad_example"] = bad
    res["rate"] = res["ok"] / (res["duration_us"] / 1e6)
    return res


def main():
    wrk = tool("WRK", "wrk")
    cfssl = tool("CFSSL", "cfssl")
    work = tempfile.mkdtemp(prefix="authd-bench-")
    authd = cfssl_proc = cfssl_log = None
    try:
        pool = os.path.join(work, "pool.txt")
        t0 = time.monotonic()
        sample_csr = write_pool(pool)
        print("bench_enroll: %d P-256 CSRs generated in %.1fs" % (POOL, time.monotonic() - t0))

        authd = Authd(os.path.join(work, "authd-data")).start()
        admin = authd.api(authd.admin_key)
        enr = create_enrollment(admin, name="bench", id_pattern="*", max_uses=100_000_000,
                                expires_in=86400, groups=["bench"], cert_days=365)
        # One request by hand first: a refusal here would make every wrk
        # request a non-2xx and the numbers meaningless.
        r = authd.request("POST", "/v1/enroll", {"csr": sample_csr, "device_id": "B-preflight"},
                          token=enr["token"])
        if r.status != 201:
            sys.exit("bench_enroll: authd refused the preflight enroll: %r" % r)

        cfssl_proc, cfssl_port, cfssl_log = start_cfssl(cfssl, work)
        r = http_request("127.0.0.1", cfssl_port, "POST", "/api/v1/cfssl/sign",
                         {"certificate_request": sample_csr})
        if r.status != 200 or not (r.json or {}).get("success"):
            sys.exit("bench_enroll: cfssl refused the preflight sign: %r" % r)

        authd_url = "http://127.0.0.1:%d/v1/enroll" % authd.http_port
        cfssl_url = "http://127.0.0.1:%d/api/v1/cfssl/sign" % cfssl_port
        results = {}
        for name, url, mode, token in (("authd enroll", authd_url, "authd", enr["token"]),
                                       ("cfssl sign", cfssl_url, "cfssl", None)):
            if WARMUP > 0:
                run_wrk(wrk, url, mode, pool, token, "w", WARMUP)
            results[name] = run_wrk(wrk, url, mode, pool, token, "m", DURATION)

        used = admin.get("/v1/enrollments/" + enr["id"]).json["used"]
        a, c = results["authd enroll"], results["cfssl sign"]

        print()
        print("enrollment throughput, %d connections, %d wrk threads, %ds, %d-CSR pool, "
              "%d cores" % (CONNECTIONS, THREADS, DURATION, POOL, os.cpu_count()))
        print("%-14s %10s %9s %8s %9s %9s %9s" % ("", "issued/s", "issued", "non-2xx",
                                                  "p50 ms", "p90 ms", "p99 ms"))
        for name, res in results.items():
            print("%-14s %10.0f %9d %8d %9.2f %9.2f %9.2f" % (
                name, res["rate"], res["ok"], res["non2xx"] + res["err_timeout"],
                res["p50_us"] / 1000, res["p90_us"] / 1000, res["p99_us"] / 1000))
        ratio = a["rate"] / c["rate"] if c["rate"] else float("inf")
        print("%-14s %10.2fx" % ("authd/cfssl", ratio))
        print("authd durably committed each certificate before answering; cfssl keeps "
              "no record.")
        print("authd enrollment used=%d (preflight 1 + warmup + measured; measured 201s %d)"
              % (used, a["ok"]))
        for name, res in results.items():
            if res["non2xx"] or any(res[k] for k in ("err_connect", "err_read", "err_write",
                                                     "err_timeout")):
                print("%s: non-2xx=%d connect=%d read=%d write=%d timeout=%d first bad: %s" % (
                    name, res["non2xx"], res["err_connect"], res["err_read"], res["err_write"],
                    res["err_timeout"], res["bad_example"][:200]))
        print("BENCHJSON " + json.dumps({"authd_enroll_per_s": round(a["rate"], 1),
                                         "cfssl_sign_per_s": round(c["rate"], 1),
                                         "ratio": round(ratio, 3),
                                         "authd_p50_ms": a["p50_us"] / 1000,
                                         "authd_p99_ms": a["p99_us"] / 1000,
                                         "cfssl_p50_ms": c["p50_us"] / 1000,
                                         "cfssl_p99_ms": c["p99_us"] / 1000,
                                         "authd_non2xx": a["non2xx"],
                                         "cfssl_non2xx": c["non2xx"]}))
        if a["ok"] == 0 or c["ok"] == 0:
            sys.exit("bench_enroll: a target issued nothing")
        if used < a["ok"]:
            sys.exit("bench_enroll: authd answered %d 201s but its enrollment counts only %d"
                     % (a["ok"], used))
    finally:
        rc = None
        if authd is not None:
            rc = authd.stop()
            if rc != 0 or authd.sanitizer_reports():
                print("bench_enroll: authd exit %r on SIGTERM:\n%s" % (rc, authd.stderr()[-3000:]))
            authd.cleanup_logs()
        if cfssl_proc is not None:
            cfssl_proc.terminate()
            try:
                cfssl_proc.wait(10)
            except subprocess.TimeoutExpired:
                cfssl_proc.kill()
                cfssl_proc.wait()
            cfssl_log.close()
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
