#!/usr/bin/python3
"""Enrollment throughput over EST/CoAP/DTLS (API §13) beside /v1/enroll
over HTTPS, one daemon, same run. Every figure counts real issuances only
(CoAP 2.04, HTTP 201), each durable before its answer.

  CoAP, one DTLS-PSK session reused for every enrollment
  CoAP, a new DTLS-PSK session (handshake) per enrollment
  CoAP, BENCH_PARALLEL clients at once, each reusing its session
  HTTPS /v1/enroll, one keep-alive connection (wrk -c1): the anchor for
           the sequential CoAP figures
  HTTPS /v1/enroll, BENCH_PARALLEL connections (wrk): the anchor for the
           parallel one

coaps_enroll_client (tests/bench/coaps_enroll_client.c, libcoap) sends one
request at a time, as coap-client would, but keeps its session; the CSRs
(ECDSA P-256, distinct CNs) are generated before the clock starts. Run
through meson (`meson test -C build --benchmark coaps_enroll -v`) or:

  AUTHD_BIN=build/authd/authd COAPS_CLIENT=build/tests/bench/coaps_enroll_client \\
    /usr/bin/python3 tests/bench/bench_coaps_enroll.py

Everything runs twice: on the disk as it is, then on a daemon whose every
flush is FLUSH_DELAY_US (2000) longer, through the LD_PRELOAD shim
FLUSHDELAY_SO (tests/bench/libflushdelay.so), each with its own anchors.

Knobs: BENCH_DURATION (seconds per run, default 4), BENCH_ROUNDS (3; the
medians are printed), BENCH_POOL (CSRs per CoAP run, 3000; a run stops
early when its pool is used up and says so), BENCH_PARALLEL (4)."""

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from authd_harness import (Authd, create_enrollment, csr_der_from_pem,  # noqa: E402
                           free_ports, make_csr, uid)

DURATION = float(os.environ.get("BENCH_DURATION", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
POOL = int(os.environ.get("BENCH_POOL", "3000"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "4"))
LUA = os.path.join(HERE, "post_pool.lua")


def tool(env, name):
    path = os.environ.get(env) or shutil.which(name) or ""
    if not os.access(path, os.X_OK):
        sys.exit("bench_coaps_enroll: %s not found (set %s)" % (name, env))
    return path


def der_pool(path, n, tag):
    """n DER CSRs with distinct CNs (the device ids), length-prefixed."""
    with open(path, "wb") as f:
        for i in range(n):
            _, pem = make_csr("c%s-%05d" % (tag, i))
            der = csr_der_from_pem(pem)
            f.write(struct.pack(">H", len(der)) + der)


def pem_pool(path, n):
    with open(path, "w") as f:
        for i in range(n):
            _, pem = make_csr("h-%05d" % i)
            f.write(json.dumps(pem)[1:-1] + "\n")


def coap_runs(client, port, admin, work, mode, nclients, tag):
    """nclients coaps_enroll_client processes at once, each with its own
    enrollment (PSK) and CSR pool; returns (issued/s, detail)."""
    procs = []
    for k in range(nclients):
        enr = create_enrollment(admin, name=uid("bench-"), max_uses=100_000_000,
                                expires_in=86400, groups=["bench"])
        pool = os.path.join(work, "pool-%s-%d.bin" % (tag, k))
        der_pool(pool, POOL // nclients if nclients > 1 else POOL, "%s%d" % (tag, k))
        procs.append((enr, pool))
    running = [subprocess.Popen([client, "127.0.0.1", str(port), enr["id"], enr["token"],
                                 pool, mode, str(DURATION)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for enr, pool in procs]
    ok = failed = 0
    longest = 0.0
    notes = []
    for p in running:
        out, err = p.communicate(timeout=DURATION + 120)
        line = [l for l in out.splitlines() if l.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            sys.exit("bench_coaps_enroll: client failed (%d): %s %s" % (p.returncode, out, err))
        res = json.loads(line[0][len("RESULT "):])
        ok += res["ok"]
        failed += res["failed"]
        longest = max(longest, res["seconds"])
        if res["pool_used_up"]:
            notes.append("pool used up")
        if res["first_bad"]:
            notes.append("first failure: " + res["first_bad"])
    if ok == 0:
        sys.exit("bench_coaps_enroll: no CoAP enrollment succeeded (%s)" % notes)
    return ok / longest, "%d issued, %d failed in %.1fs%s" % (
        ok, failed, longest, (" (" + "; ".join(sorted(set(notes))) + ")") if notes else "")


def https_run(wrk, daemon, token, pool, conns, tag):
    cmd = [wrk, "-t1" if conns == 1 else "-t2", "-c%d" % conns, "-d%ds" % max(1, int(DURATION)),
           "--timeout", "10s", "-s", LUA,
           "https://127.0.0.1:%d/v1/enroll" % daemon.https_port, "--", "authd", pool, token, tag]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 120)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("WRKRESULT "):
            res = json.loads(line[len("WRKRESULT "):])
    if p.returncode != 0 or res is None:
        sys.exit("bench_coaps_enroll: wrk failed: %s %s" % (p.stdout, p.stderr))
    rate = res["ok"] / (res["duration_us"] / 1e6)
    return rate, "%d issued, %d refused" % (res["ok"], res.get("non2xx", 0))


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def measure(client, wrk, work, label, env=None):
    """Every variant, ROUNDS times, on one daemon (started with env added);
    prints each run and the medians with their same-run ratios."""
    port = free_ports(1)[0]
    daemon = Authd(os.path.join(work, "data-" + label.split()[0]),
                   extra_args=["--coaps", "127.0.0.1:%d" % port,
                               "--coaps-max-sessions", "4096"], env=env).start()
    try:
        admin = daemon.api(daemon.admin_key)
        http_enr = create_enrollment(admin, name="bench-https", max_uses=100_000_000,
                                     expires_in=86400, groups=["bench"])
        pem = os.path.join(work, "pool.pem.txt")
        if not os.path.exists(pem):
            pem_pool(pem, 2000)
        names = ["coap_reuse", "coap_new_session", "coap_parallel", "https_c1",
                 "https_parallel"]
        rates = {n: [] for n in names}
        for rnd in range(ROUNDS):
            for name in names:
                tag = "%s%d" % (name[:6], rnd)
                if name == "coap_reuse":
                    r, detail = coap_runs(client, port, admin, work, "reuse", 1, "r%d" % rnd)
                elif name == "coap_new_session":
                    r, detail = coap_runs(client, port, admin, work, "new", 1, "n%d" % rnd)
                elif name == "coap_parallel":
                    r, detail = coap_runs(client, port, admin, work, "reuse", PARALLEL,
                                          "p%d" % rnd)
                elif name == "https_c1":
                    r, detail = https_run(wrk, daemon, http_enr["token"], pem, 1, tag)
                else:
                    r, detail = https_run(wrk, daemon, http_enr["token"], pem, PARALLEL, tag)
                rates[name].append(r)
                print("%s round %d %-17s %8.1f enrollments/s  (%s)" % (
                    label, rnd + 1, name, r, detail), flush=True)
        m = {n: median(v) for n, v in rates.items()}
        print("\nmedians of %d rounds of %.0fs (one daemon, LMDB, %s, this machine):" % (
            ROUNDS, DURATION, label))
        print("  CoAP/DTLS-PSK, one session reused     %8.1f /s   %.2fx HTTPS -c1" % (
            m["coap_reuse"], m["coap_reuse"] / m["https_c1"]))
        print("  CoAP/DTLS-PSK, a handshake each time  %8.1f /s   %.2fx HTTPS -c1, "
              "%.2fx session reuse" % (m["coap_new_session"], m["coap_new_session"] / m["https_c1"],
                                       m["coap_new_session"] / m["coap_reuse"]))
        print("  CoAP/DTLS-PSK, %d clients at once      %8.1f /s   %.2fx HTTPS -c%d" % (
            PARALLEL, m["coap_parallel"], m["coap_parallel"] / m["https_parallel"], PARALLEL))
        print("  HTTPS /v1/enroll, 1 connection        %8.1f /s   (anchor)" % m["https_c1"])
        print("  HTTPS /v1/enroll, %d connections       %8.1f /s   (anchor)\n" % (
            PARALLEL, m["https_parallel"]), flush=True)
    finally:
        daemon.stop()
        daemon.cleanup_logs()


def main():
    client = tool("COAPS_CLIENT", "coaps_enroll_client")
    wrk = tool("WRK", "wrk")
    work = tempfile.mkdtemp(prefix="bench-coaps-")
    try:
        measure(client, wrk, work, "disk as it is")
        # The same on a disk whose every flush takes 2 ms longer (a cloud
        # volume): the CoAP thread waits for each flush in turn, HTTPS
        # requests share theirs, so this is where the two part.
        shim = os.environ.get("FLUSHDELAY_SO", "")
        if shim and os.access(shim, os.R_OK):
            delay_us = os.environ.get("FLUSH_DELAY_US", "2000")
            measure(client, wrk, work, "%gms-flush" % (int(delay_us) / 1000),
                    {"LD_PRELOAD": shim, "FLUSH_DELAY_US": delay_us})
        else:
            print("bench_coaps_enroll: FLUSHDELAY_SO unset: no slow-flush variant")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
