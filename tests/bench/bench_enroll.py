#!/usr/bin/python3
"""Enrollment throughput: authd POST /v1/enroll (durable, group-committed
to LMDB) against cfssl's sign endpoint (no database), both on 127.0.0.1,
both driven by the same wrk script with the same pool of pre-generated
ECDSA P-256 CSRs. Only 200/201 answers count as issued.

Run through meson (`meson test --benchmark -C build` or `ninja -C build
benchmark`) or directly:

  AUTHD_BIN=build/authd/authd /usr/bin/python3 tests/bench/bench_enroll.py

Each round measures, one after another: authd on the plain disk, authd
with every flush delayed by FLUSH_DELAY_US (default 2000 us, through the
LD_PRELOAD shim FLUSHDELAY_SO, built as tests/bench/libflushdelay.so) and
cfssl, the anchor for both (cfssl stores nothing, so a slow disk does not
touch it). Medians of the rounds are reported.

With ENROLL_SEED=N (default 100000; 0 skips it) a third daemon runs on a
data dir seeded by seed_store (SEED_STORE) with N devices and N real
certificates: its enrollment rate beside the empty store's (goal: at most
5% lower at 1M), its start time to /readyz (goal < 2 s at 1M) and the time
of GET /v1/certs?limit=100 for the first page and pages deep in the
listing (constant time).

Knobs (environment): BENCH_DURATION (seconds per measured run, default
5), BENCH_ROUNDS (3), BENCH_WARMUP (default 2), BENCH_CONNECTIONS (32), BENCH_THREADS (2),
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

DURATION = int(os.environ.get("BENCH_DURATION", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
POOL = int(os.environ.get("BENCH_POOL", "2000"))
SEED = int(os.environ.get("ENROLL_SEED", "100000"))
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


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def start_authd(work, name, env=None):
    """An authd on its own data dir with an enrollment for the load."""
    authd = Authd(os.path.join(work, name), env=env).start()
    admin = authd.api(authd.admin_key)
    enr = create_enrollment(admin, name="bench", id_pattern="*", max_uses=100_000_000,
                            expires_in=86400, groups=["bench"], cert_days=365)
    return authd, admin, enr


def timed_ms(fn, n):
    """Median wall time of n calls of fn, in ms."""
    ts = []
    for _ in range(n):
        t = time.monotonic()
        fn()
        ts.append((time.monotonic() - t) * 1000)
    return median(ts)


def seeded_daemon(work, seeder, n):
    """A daemon on a data dir holding n seeded devices and certificates
    (plus its own bench enrollment), started; prints the scale figures."""
    authd, admin, enr = start_authd(work, "data-seeded")
    key = authd.admin_key
    authd.stop()
    t = time.monotonic()
    w0 = time.time()
    p = subprocess.run([seeder, authd.data, str(n), str(os.cpu_count() or 2)],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        sys.exit("bench_enroll: seed_store failed: %s %s" % (p.stdout, p.stderr))
    w1 = time.time()
    print("bench_enroll: seeded %d devices + %d certificates in %.1fs" % (
        n, n, time.monotonic() - t))
    starts = []
    for _ in range(3):
        t = time.monotonic()
        authd.start()
        starts.append(time.monotonic() - t)
        authd.stop()
    authd.start()
    admin = authd.api(key)

    def page(q):
        r = admin.get(q)
        if r.status != 200 or len(r.json["items"]) != 100:
            sys.exit("bench_enroll: %s answered %r" % (q, r))
    def serial_of(i):
        r = admin.get("/v1/devices/S-%08d" % i)
        if r.status != 200 or not r.json.get("certs"):
            sys.exit("bench_enroll: seeded device %d: %r" % (i, r))
        return r.json["certs"][0]["serial"]
    # Cursors deep in the listing: serials of devices seeded half way and
    # three quarters through (serials grow with issue time), and the
    # middle of the seeding time for the enrollment's index.
    mid, late = serial_of(n // 2), serial_of(n * 3 // 4)
    first = timed_ms(lambda: page("/v1/certs?limit=100"), 21)
    deep = timed_ms(lambda: page("/v1/certs?limit=100&after=" + mid), 21)
    deeper = timed_ms(lambda: page("/v1/certs?limit=100&after=" + late), 21)
    by_enr = timed_ms(lambda: page("/v1/certs?limit=100&enrollment=seed&after=%016x" % (
        int((w0 + w1) / 2) * 1000000)), 21)
    print("store at %d devices + %d certificates: start to /readyz %.2fs (median of 3: %s); "
          "GET /v1/certs?limit=100 first page %.1f ms, after the n/2-th %.1f ms, after the "
          "3n/4-th %.1f ms, enrollment=seed page at the middle %.1f ms (medians of 21)" % (
              n, n, median(starts), " ".join("%.2f" % x for x in starts), first, deep, deeper,
              by_enr))
    return authd, admin, enr, {"seed": n, "start_s": round(median(starts), 3),
                               "certs_first_page_ms": round(first, 2),
                               "certs_deep_page_ms": round(max(deep, deeper), 2),
                               "certs_by_enrollment_mid_page_ms": round(by_enr, 2)}


def main():
    wrk = tool("WRK", "wrk")
    cfssl = tool("CFSSL", "cfssl")
    shim = os.environ.get("FLUSHDELAY_SO", "")
    delay_us = int(os.environ.get("FLUSH_DELAY_US", "2000"))
    if shim and not os.access(shim, os.R_OK):
        sys.exit("bench_enroll: FLUSHDELAY_SO=%s not readable" % shim)
    work = tempfile.mkdtemp(prefix="authd-bench-")
    daemons = {}
    cfssl_proc = cfssl_log = None
    rc = 0
    try:
        pool = os.path.join(work, "pool.txt")
        t0 = time.monotonic()
        sample_csr = write_pool(pool)
        print("bench_enroll: %d P-256 CSRs generated in %.1fs" % (POOL, time.monotonic() - t0))

        variants = [("authd enroll", None)]
        if shim:
            # The same daemon, every flush 2 ms slower: a cloud volume.
            variants.append(("authd %gms-flush" % (delay_us / 1000),
                             {"LD_PRELOAD": shim, "FLUSH_DELAY_US": str(delay_us),
                              "FLUSH_DELAY_LOG": "1"}))
        else:
            print("bench_enroll: FLUSHDELAY_SO unset: no slow-flush variant")
        targets = []
        scale = None
        seeder = os.environ.get("SEED_STORE", "")
        if SEED > 0 and seeder and os.access(seeder, os.X_OK):
            authd, admin, enr, scale = seeded_daemon(work, seeder, SEED)
            name = "authd seeded %dk" % (SEED // 1000)
            daemons[name] = (authd, admin, enr)
            targets.append((name, "http://127.0.0.1:%d/v1/enroll" % authd.http_port, "authd",
                            enr["token"]))
        elif SEED > 0:
            print("bench_enroll: SEED_STORE unset: no seeded-store variant")
        for name, env in variants:
            authd, admin, enr = start_authd(work, "data-%d" % len(daemons), env)
            daemons[name] = (authd, admin, enr)
            # One request by hand first: a refusal here would make every
            # wrk request a non-2xx and the numbers meaningless.
            r = authd.request("POST", "/v1/enroll", {"csr": sample_csr, "device_id": "B-preflight"},
                              token=enr["token"])
            if r.status != 201:
                sys.exit("bench_enroll: %s refused the preflight enroll: %r" % (name, r))
            targets.append((name, "http://127.0.0.1:%d/v1/enroll" % authd.http_port, "authd",
                            enr["token"]))

        cfssl_proc, cfssl_port, cfssl_log = start_cfssl(cfssl, work)
        r = http_request("127.0.0.1", cfssl_port, "POST", "/api/v1/cfssl/sign",
                         {"certificate_request": sample_csr})
        if r.status != 200 or not (r.json or {}).get("success"):
            sys.exit("bench_enroll: cfssl refused the preflight sign: %r" % r)
        targets.append(("cfssl sign", "http://127.0.0.1:%d/api/v1/cfssl/sign" % cfssl_port,
                        "cfssl", None))

        # Rounds interleave the targets so that a slow spell of the
        # machine touches all of them; medians are reported.
        runs = {name: [] for name, _, _, _ in targets}
        for rnd in range(ROUNDS):
            for name, url, mode, token in targets:
                if WARMUP > 0:
                    run_wrk(wrk, url, mode, pool, token, "w%d" % rnd, WARMUP)
                runs[name].append(run_wrk(wrk, url, mode, pool, token, "m%d" % rnd, DURATION))

        print()
        print("enrollment throughput, %d connections, %d wrk threads, %d x %ds, %d-CSR pool, "
              "%d cores; medians of %d rounds" % (CONNECTIONS, THREADS, ROUNDS, DURATION, POOL,
                                                 os.cpu_count(), ROUNDS))
        print("%-20s %10s %9s %8s %9s %9s %9s  %s" % ("", "issued/s", "issued", "non-2xx",
                                                      "p50 ms", "p90 ms", "p99 ms", "rounds"))
        med = {}
        for name, rs in runs.items():
            med[name] = {k: median([x[k] for x in rs])
                         for k in ("rate", "ok", "p50_us", "p90_us", "p99_us")}
            m = med[name]
            print("%-20s %10.0f %9d %8d %9.2f %9.2f %9.2f  %s" % (
                name, m["rate"], sum(x["ok"] for x in rs),
                sum(x["non2xx"] + x["err_timeout"] for x in rs),
                m["p50_us"] / 1000, m["p90_us"] / 1000, m["p99_us"] / 1000,
                " ".join("%.0f" % x["rate"] for x in rs)))
        c = med["cfssl sign"]["rate"]
        summary = {"cfssl_sign_per_s": round(c, 1)}
        if scale:
            name = "authd seeded %dk" % (SEED // 1000)
            e, sd = med["authd enroll"]["rate"], med[name]["rate"]
            loss = (1 - sd / e) * 100 if e else 0
            print("%-20s %10.1f%% (rate lost at %d devices + %d certificates, same run)" % (
                "seeded vs empty", loss, SEED, SEED))
            scale["seeded_per_s"] = round(sd, 1)
            scale["seeded_loss_pct"] = round(loss, 1)
            summary["scale"] = scale
        for name, _ in variants:
            ratio = med[name]["rate"] / c if c else float("inf")
            print("%-20s %10.2fx" % (name.replace("authd ", "authd/cfssl "), ratio))
            key = name.replace("authd ", "").replace(" ", "_").replace(".", "_").replace("-", "_")
            summary["authd_%s_per_s" % key] = round(med[name]["rate"], 1)
            summary["ratio_%s" % key] = round(ratio, 3)
            summary["authd_%s_p99_ms" % key] = med[name]["p99_us"] / 1000
        print("authd durably committed each certificate before answering; cfssl keeps "
              "no record.")
        for name, rs in runs.items():
            for res in rs:
                if res["non2xx"] or any(res[k] for k in ("err_connect", "err_read", "err_write",
                                                         "err_timeout")):
                    print("%s: non-2xx=%d connect=%d read=%d write=%d timeout=%d first bad: %s" % (
                        name, res["non2xx"], res["err_connect"], res["err_read"],
                        res["err_write"], res["err_timeout"], res["bad_example"][:200]))
        for name, _ in variants:
            authd, admin, enr = daemons[name]
            used = admin.get("/v1/enrollments/" + enr["id"]).json["used"]
            ok = sum(x["ok"] for x in runs[name])
            print("%s: enrollment used=%d (preflight + warmups + measured; measured 201s %d)"
                  % (name, used, ok))
            if ok == 0:
                sys.exit("bench_enroll: %s issued nothing" % name)
            if used < ok:
                sys.exit("bench_enroll: %s answered %d 201s but its enrollment counts only %d"
                         % (name, ok, used))
        if c == 0:
            sys.exit("bench_enroll: cfssl issued nothing")
        print("BENCHJSON " + json.dumps(summary))
    finally:
        for name, (authd, _, _) in daemons.items():
            code = authd.stop()
            flushes = [ln for ln in authd.stderr().splitlines() if ln.startswith("flushdelay:")]
            if flushes:
                print("%s: delayed calls: %s" % (name, ", ".join(
                    ln[len("flushdelay: "):] for ln in flushes)))
            if code != 0 or authd.sanitizer_reports():
                print("bench_enroll: %s exit %r on SIGTERM:\n%s" % (
                    name, code, authd.stderr()[-3000:]))
                rc = 1
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
