#!/usr/bin/python3
"""Fleet scale: does authd answer POST /v1/check as fast, and as promptly,
for a device among a million as for one among a thousand, in how much
memory, and how fast does it come back up with a million devices?

One real authd: FLEET_DEVICES devices are created through the bulk import
POST /v1/devices:import (FLEET_CREATE=import, the default: NDJSON chunks
of FLEET_IMPORT_BATCH lines over FLEET_IMPORTERS keep-alive connections)
or one POST /v1/devices each (FLEET_CREATE=api) (ids fl-0000000,
fl-0000001, ... so the wrk script can compute them), all
in one group whose policy allows connect as ${device.id} and publish to
devices/${device.id}/telemetry/#, and denies $SYS/#. Then wrk sends
publish decisions to the check listener, each for a device picked at
random among the first 1,000 ("1k") or among all of them ("all"), the two
spreads interleaved (1k, all, 1k, all, ...) on the same daemon. Afterwards
the daemon's RssAnon is read from /proc, the daemon is stopped with
SIGTERM and started again on the same data dir, timed until /readyz
answers 200.

Goals (issue 10), printed beside the figures and never failing the run:
all/1k rate >= 0.95, p99 all <= 2 x p99 1k, RssAnon <= 512 MiB at 1M
devices, restart < 2 s. Exit status is non-zero only for errors (a
non-2xx answer, a deny, a failed create).

Run through meson (`meson test -C build --benchmark fleet -v`) or
directly:

  AUTHD_BIN=build/authd/authd /usr/bin/python3 tests/bench/bench_fleet.py

FLEET_COMPARE=N (default 0) then times N more devices created each way on
the same daemon, first through the API, then through the import, and
prints both rates: the two paths measured in one run, at the same store
size.

Knobs (environment): FLEET_DEVICES (1000000), FLEET_SECONDS (10 per wrk
run), FLEET_ROUNDS (2: each round is one 1k run and one all run),
FLEET_HOT (1000), FLEET_CONNECTIONS (32), FLEET_THREADS (2),
FLEET_CREATORS (4 processes creating devices), FLEET_CREATOR_CONNS (8
keep-alive connections each), FLEET_CREATE (import), FLEET_IMPORT_BATCH
(10000 lines per request), FLEET_IMPORTERS (2 connections), FLEET_COMPARE
(0). Needs wrk; installs nothing."""

import http.client
import json
import multiprocessing
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

from authd_harness import Authd, http_request  # noqa: E402

DEVICES = int(os.environ.get("FLEET_DEVICES", "1000000"))
SECONDS = int(os.environ.get("FLEET_SECONDS", "10"))
ROUNDS = int(os.environ.get("FLEET_ROUNDS", "2"))
HOT = min(int(os.environ.get("FLEET_HOT", "1000")), DEVICES)
CONNECTIONS = int(os.environ.get("FLEET_CONNECTIONS", "32"))
THREADS = int(os.environ.get("FLEET_THREADS", "2"))
CREATORS = int(os.environ.get("FLEET_CREATORS", "4"))
CREATOR_CONNS = int(os.environ.get("FLEET_CREATOR_CONNS", "8"))
CREATE_MODE = os.environ.get("FLEET_CREATE", "import")
IMPORT_BATCH = int(os.environ.get("FLEET_IMPORT_BATCH", "10000"))
IMPORTERS = int(os.environ.get("FLEET_IMPORTERS", "2"))
COMPARE = int(os.environ.get("FLEET_COMPARE", "0"))
PREFIX = "fl-"
LUA = os.path.join(HERE, "fleet.lua")
# Bounds: a create that stalls this long, or a restart this slow, is an
# error rather than a figure.
CREATE_TIMEOUT = float(os.environ.get("FLEET_CREATE_TIMEOUT", "1800"))
READY_TIMEOUT = float(os.environ.get("FLEET_READY_TIMEOUT", "300"))

GOAL_RATIO = 0.95
GOAL_P99_FACTOR = 2.0
GOAL_RSS_MIB = 512
GOAL_RESTART_S = 2.0

FLEET_POLICY = {"statements": [
    {"effect": "allow", "actions": ["connect"], "client_ids": ["${device.id}"]},
    {"effect": "allow", "actions": ["publish"], "topics": ["devices/${device.id}/telemetry/#"]},
    {"effect": "deny", "actions": ["publish", "subscribe", "receive"], "topics": ["$SYS/#"]},
]}


def die(msg):
    sys.exit("bench_fleet: " + msg)


def log(msg):
    print("bench_fleet: " + msg, flush=True)


def device_id(i, prefix=PREFIX):
    return "%s%07d" % (prefix, i)


# ------------------------------------------------------ creating devices --

def _recv_answer(sock, buf):
    """Reads one HTTP answer with a Content-Length body (authd's admin API
    always sends one). Returns (status, body, rest) or None when the peer
    closed first."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(buf) >= total:
                return status, buf[end + 4:total], buf[total:]
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk


_counter = None


def _init_creator(counter):
    global _counter
    _counter = counter
    # The pool ends its workers with SIGTERM: the parent's handler (which
    # stops the daemon) is not theirs.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def creator(k, port, admin_key, prefix, count):
    """Creates the devices i < count with i % CREATORS == k over CREATOR_CONNS
    keep-alive connections, one request in flight on each, multiplexed
    with a selector (a raw client: http.client would cost more CPU than
    the daemon on this machine). Returns (created, first error or None)."""
    ids = iter(range(k, count, CREATORS))
    head = ("POST /v1/devices HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Content-Length: " % (port, admin_key))
    sel = selectors.DefaultSelector()
    created = 0
    pending = 0

    def send(state):
        body = ('{"id":"%s","groups":["fleet"]}' % device_id(state["i"], prefix)).encode()
        state["sock"].sendall(head.encode() + str(len(body)).encode() + b"\r\n\r\n" + body)

    def connect():
        return socket.create_connection(("127.0.0.1", port), timeout=60)

    def next_request(state):
        i = next(ids, None)
        if i is None:
            sel.unregister(state["sock"])
            state["sock"].close()
            return False
        state["i"], state["tries"] = i, 0
        send(state)
        return True

    try:
        for _ in range(CREATOR_CONNS):
            state = {"sock": connect(), "buf": b""}
            sel.register(state["sock"], selectors.EVENT_READ, state)
            if next_request(state):
                pending += 1
            else:
                break
        while pending:
            for key, _ in sel.select(timeout=60):
                state = key.data
                ans = _recv_answer(state["sock"], state["buf"])
                if ans is None:
                    # The daemon closed a keep-alive connection: resend on
                    # a new one. The first attempt may have been committed,
                    # so already_exists then counts as created.
                    state["tries"] += 1
                    if state["tries"] > 3:
                        return created, "%s: connection closed 3 times" % device_id(state["i"], prefix)
                    sel.unregister(state["sock"])
                    state["sock"].close()
                    state["sock"], state["buf"] = connect(), b""
                    sel.register(state["sock"], selectors.EVENT_READ, state)
                    send(state)
                    continue
                status, body, state["buf"] = ans
                if status != 201 and not (status == 409 and state["tries"]):
                    return created, "%s: %d %r" % (device_id(state["i"], prefix), status, body[:200])
                created += 1
                if created % 1000 == 0:
                    with _counter.get_lock():
                        _counter.value += 1000
                if not next_request(state):
                    pending -= 1
        return created, None
    except Exception as e:  # noqa: BLE001 - handed to the parent
        return created, repr(e)
    finally:
        sel.close()


def create_devices_api(authd, prefix=PREFIX, count=DEVICES):
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    admin_key = authd.admin_key
    t0 = time.monotonic()
    # The progress counter is inherited through the initializer: shared
    # values cannot travel as task arguments.
    with ctx.Pool(CREATORS, _init_creator, (counter,)) as pool:
        res = pool.starmap_async(creator, [(k, authd.http_port, admin_key, prefix, count)
                                           for k in range(CREATORS)])
        last = t0
        while not res.ready():
            res.wait(1)
            now = time.monotonic()
            if now - t0 > CREATE_TIMEOUT:
                pool.terminate()
                die("creating devices took more than %.0fs" % CREATE_TIMEOUT)
            if now - last >= 10:
                last = now
                log("  %d devices created after %.0fs" % (counter.value, now - t0))
        results = res.get()
    total = sum(c for c, _ in results)
    errors = [e for _, e in results if e]
    if errors:
        die("creating devices failed after %d: %s" % (total, errors[0]))
    if total != count:
        die("created %d devices, not %d" % (total, count))
    return time.monotonic() - t0


def create_devices_import(authd, prefix=PREFIX, count=DEVICES):
    """POST /v1/devices:import in chunks of IMPORT_BATCH lines, IMPORTERS
    requests in flight (each on its own keep-alive connection, so the
    daemon parses one chunk while the writer commits another). Every
    line must be created."""
    chunks = [(s, min(s + IMPORT_BATCH, count)) for s in range(0, count, IMPORT_BATCH)]
    lock = threading.Lock()
    state = {"next": 0, "created": 0, "error": None}
    hdrs = {"Authorization": "Bearer " + authd.admin_key,
            "Content-Type": "application/x-ndjson"}

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", authd.http_port, timeout=300)
        try:
            while True:
                with lock:
                    if state["error"] or state["next"] >= len(chunks):
                        return
                    lo, hi = chunks[state["next"]]
                    state["next"] += 1
                body = "".join('{"id":"%s","groups":["fleet"]}\n' % device_id(i, prefix)
                               for i in range(lo, hi)).encode()
                conn.request("POST", "/v1/devices:import", body, hdrs)
                r = conn.getresponse()
                raw = r.read()
                ans = json.loads(raw) if r.status == 200 else None
                with lock:
                    if ans is None or ans.get("failed") or ans.get("created") != hi - lo:
                        state["error"] = "import of %s..%s: %d %r" % (
                            device_id(lo, prefix), device_id(hi - 1, prefix), r.status,
                            raw[:300])
                        return
                    state["created"] += hi - lo
        except Exception as e:  # noqa: BLE001 - reported by the caller
            with lock:
                state["error"] = state["error"] or repr(e)
        finally:
            conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, IMPORTERS))]
    for t in threads:
        t.start()
    last = t0
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(1)
        now = time.monotonic()
        if now - t0 > CREATE_TIMEOUT:
            die("importing devices took more than %.0fs" % CREATE_TIMEOUT)
        if now - last >= 10:
            last = now
            log("  %d devices imported after %.0fs" % (state["created"], now - t0))
    if state["error"]:
        die("importing devices failed after %d: %s" % (state["created"], state["error"]))
    if state["created"] != count:
        die("imported %d devices, not %d" % (state["created"], count))
    return time.monotonic() - t0


def create_devices(authd, mode, prefix=PREFIX, count=DEVICES):
    return (create_devices_import if mode == "import" else create_devices_api)(
        authd, prefix, count)


# -------------------------------------------------------------- checks ----

def check(port, did, topic, action="publish"):
    body = {"action": action, "username": did, "client_id": did}
    if topic is not None:
        body["topic"] = topic
    r = http_request("127.0.0.1", port, "POST", "/v1/check", body)
    if r.status != 200 or not isinstance(r.json, dict):
        die("check %r: %r" % (body, r))
    return r.json.get("result")


def preflight(port):
    """A few decisions by hand: if these are wrong, every number is."""
    first, last = device_id(0), device_id(DEVICES - 1)
    for did, action, topic, want in (
            (first, "publish", "devices/%s/telemetry/temp" % first, "allow"),
            (last, "publish", "devices/%s/telemetry/temp" % last, "allow"),
            (last, "publish", "$SYS/broker/load", "deny"),
            (last, "publish", "devices/%s/telemetry/temp" % first, "deny"),
            (device_id(DEVICES), "publish", "devices/%s/telemetry/temp" % device_id(DEVICES),
             "deny")):
        got = check(port, did, topic, action)
        if got != want:
            die("preflight: %s %s %s should be %s, got %r" % (did, action, topic, want, got))


def run_wrk(wrk, url, spread, seed):
    cmd = [wrk, "-t%d" % THREADS, "-c%d" % CONNECTIONS, "-d%ds" % SECONDS,
           "--timeout", "10s", "-s", LUA, url, "--", PREFIX, str(spread), str(seed)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 120)
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
    res["errors"] = res["non2xx"] + res["denies"] + sum(
        res[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    return res


def proc_status(pid):
    """RssAnon and VmHWM of a process, in KiB, from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "VmHWM", "VmRSS"):
                out[name] = int(value.split()[0])
    return out


def du_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total / 2**20


def restart(authd):
    """SIGTERM, then a new daemon on the same data dir: (stop seconds,
    seconds from exec to /readyz 200, the new Authd)."""
    t0 = time.monotonic()
    rc = authd.stop()
    t_stop = time.monotonic() - t0
    if rc != 0:
        die("authd exited %r on SIGTERM:\n%s" % (rc, authd.stderr()[-3000:]))
    authd.cleanup_logs()
    again = Authd(authd.data)
    t0 = time.monotonic()
    again.spawn()
    deadline = t0 + READY_TIMEOUT
    while True:
        rc = again.proc.poll()
        if rc is not None:
            die("authd exited with %d on restart:\n%s" % (rc, again.stderr()[-3000:]))
        try:
            r = http_request("127.0.0.1", again.http_port, "GET", "/readyz", timeout=5)
            if r.status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            again.stop()
            die("authd not ready %.0fs after a restart" % READY_TIMEOUT)
        time.sleep(0.01)
    return t_stop, time.monotonic() - t0, again


def main():
    wrk = None
    for path in (os.environ.get("WRK"), shutil.which("wrk")):
        if path and os.access(path, os.X_OK):
            wrk = path
            break
    if wrk is None:
        die("wrk not found (apt-get install wrk)")
    if DEVICES < 1 or SECONDS < 1 or ROUNDS < 1 or IMPORT_BATCH < 1 or COMPARE < 0:
        die("FLEET_DEVICES, FLEET_SECONDS, FLEET_ROUNDS and FLEET_IMPORT_BATCH must be "
            "positive, FLEET_COMPARE not negative")
    if CREATE_MODE not in ("import", "api"):
        die("FLEET_CREATE must be import or api, not %r" % CREATE_MODE)
    work = tempfile.mkdtemp(prefix="authd-bench-fleet-")
    authd = None
    t_start = time.monotonic()
    try:
        authd = Authd(os.path.join(work, "authd-data")).start()
        api = authd.api(authd.admin_key)
        for path, body in (("/v1/policies/fleet", FLEET_POLICY),
                           ("/v1/groups/fleet", {"policies": ["fleet"]})):
            r = api.put(path, body)
            if r.status not in (200, 201):
                die("PUT %s: %r" % (path, r))

        how = ("POST /v1/devices:import (%d lines a request, %d connections)"
               % (IMPORT_BATCH, IMPORTERS) if CREATE_MODE == "import" else
               "POST /v1/devices (%d processes x %d keep-alive connections)"
               % (CREATORS, CREATOR_CONNS))
        log("creating %d devices through %s" % (DEVICES, how))
        t_create = create_devices(authd, CREATE_MODE)
        log("%d devices created through %s in %.1fs (%.0f/s)"
            % (DEVICES, how, t_create, DEVICES / t_create))
        compare = {}
        for mode in ("api", "import") if COMPARE else ():
            compare[mode] = create_devices(authd, mode, "cmp-%s-" % mode, COMPARE)
            log("compare: %d more devices through %s in %.1fs (%.0f/s)"
                % (COMPARE, mode, compare[mode], COMPARE / compare[mode]))
        mem_created = proc_status(authd.proc.pid)
        preflight(authd.check_port)

        url = "http://127.0.0.1:%d/v1/check" % authd.check_port
        runs = []
        for rnd in range(ROUNDS):
            for name, spread in (("1k", HOT), ("all", DEVICES)):
                res = run_wrk(wrk, url, spread, rnd + 1)
                res["name"], res["round"], res["spread"] = name, rnd + 1, spread
                runs.append(res)
                log("round %d %-3s over %7d devices: %8.0f req/s, p99 %.3f ms, errors %d"
                    % (rnd + 1, name, spread, res["rate"], res["p99_us"] / 1000, res["errors"]))

        mem = proc_status(authd.proc.pid)
        data_mib = du_mib(authd.data)
        t_stop, t_ready, authd = restart(authd)
        mem_restart = proc_status(authd.proc.pid)
        # The restarted daemon still knows the whole fleet.
        last = device_id(DEVICES - 1)
        if check(authd.check_port, last, "devices/%s/telemetry/temp" % last) != "allow":
            die("after the restart %s is no longer allowed" % last)

        def agg(name):
            rs = [r for r in runs if r["name"] == name]
            ok = sum(r["ok"] for r in rs)
            dur = sum(r["duration_us"] for r in rs) / 1e6
            return {"rate": ok / dur, "ok": ok, "errors": sum(r["errors"] for r in rs),
                    # The worst round: a cold first pass is part of serving
                    # a big fleet, not noise to average away.
                    "p50_ms": max(r["p50_us"] for r in rs) / 1000,
                    "p99_ms": max(r["p99_us"] for r in rs) / 1000}
        hot, full = agg("1k"), agg("all")
        ratio = full["rate"] / hot["rate"] if hot["rate"] else 0.0
        p99_factor = full["p99_ms"] / hot["p99_ms"] if hot["p99_ms"] else float("inf")
        rss_mib = mem.get("RssAnon", 0) / 1024

        def goal(ok):
            return "met" if ok else "MISSED"

        print()
        print("fleet: POST /v1/check publish, %d devices, random device per request, "
              "%d connections, %d wrk threads, %ds per run, %d rounds, %d cores"
              % (DEVICES, CONNECTIONS, THREADS, SECONDS, ROUNDS, os.cpu_count()))
        print("%-10s %8s %10s %10s %7s %9s %9s %9s" % (
            "run", "devices", "req/s", "requests", "errors", "p50 ms", "p90 ms", "p99 ms"))
        for r in runs:
            print("%-10s %8d %10.0f %10d %7d %9.3f %9.3f %9.3f" % (
                "%d %s" % (r["round"], r["name"]), r["spread"], r["rate"], r["ok"],
                r["errors"], r["p50_us"] / 1000, r["p90_us"] / 1000, r["p99_us"] / 1000))
        for name, a, spread in (("1k", hot, HOT), ("all", full, DEVICES)):
            print("%-10s %8d %10.0f %10d %7d %9s %9s %9.3f   (p99: worst round)" % (
                name, spread, a["rate"], a["ok"], a["errors"], "", "", a["p99_ms"]))
        print("%-28s %10.3f   goal >= %.2f: %s" % ("rate all/1k", ratio, GOAL_RATIO,
                                                   goal(ratio >= GOAL_RATIO)))
        print("%-28s %10.2f   goal <= %.1f: %s" % ("p99 all/1k", p99_factor, GOAL_P99_FACTOR,
                                                   goal(p99_factor <= GOAL_P99_FACTOR)))
        print("%-28s %10.1f   goal <= %d at 1M: %s" % (
            "RssAnon after runs (MiB)", rss_mib, GOAL_RSS_MIB,
            goal(rss_mib <= GOAL_RSS_MIB) if DEVICES >= 1000000 else "n/a below 1M"))
        print("%-28s %10.1f" % ("RssAnon after create (MiB)",
                                mem_created.get("RssAnon", 0) / 1024))
        print("%-28s %10.1f" % ("VmHWM after runs (MiB)", mem.get("VmHWM", 0) / 1024))
        print("%-28s %10.1f" % ("RssAnon after restart (MiB)",
                                mem_restart.get("RssAnon", 0) / 1024))
        print("%-28s %10.3f   goal < %.0f: %s" % ("restart to /readyz (s)", t_ready,
                                                  GOAL_RESTART_S,
                                                  goal(t_ready < GOAL_RESTART_S)))
        print("%-28s %10.3f" % ("SIGTERM to exit (s)", t_stop))
        print("%-28s %10.1f   (%.0f/s, %s)" % ("create devices (s)", t_create,
                                                DEVICES / t_create, CREATE_MODE))
        for mode, t in compare.items():
            print("%-28s %10.1f   (%.0f/s)" % ("compare %d by %s (s)" % (COMPARE, mode), t,
                                                COMPARE / t))
        print("%-28s %10.1f" % ("data dir (MiB)", data_mib))
        for r in runs:
            if r["errors"]:
                print("%d %s: non-2xx=%d denies=%d connect=%d read=%d write=%d timeout=%d "
                      "first bad: %s" % (r["round"], r["name"], r["non2xx"], r["denies"],
                                         r["err_connect"], r["err_read"], r["err_write"],
                                         r["err_timeout"], r["bad_example"][:200]))
        log("total %.0fs" % (time.monotonic() - t_start))
        print("BENCHJSON " + json.dumps({
            "devices": DEVICES, "hot": HOT, "seconds": SECONDS, "rounds": ROUNDS,
            "connections": CONNECTIONS, "create_mode": CREATE_MODE,
            "create_s": round(t_create, 2),
            "compare": {m: {"devices": COMPARE, "s": round(t, 2),
                            "per_s": round(COMPARE / t, 1)} for m, t in compare.items()},
            "create_per_s": round(DEVICES / t_create, 1),
            "rate_1k_per_s": round(hot["rate"], 1), "rate_all_per_s": round(full["rate"], 1),
            "ratio_all_1k": round(ratio, 3),
            "p99_1k_ms": hot["p99_ms"], "p99_all_ms": full["p99_ms"],
            "p99_factor": round(p99_factor, 2),
            "rss_anon_mib": round(rss_mib, 1),
            "rss_anon_after_create_mib": round(mem_created.get("RssAnon", 0) / 1024, 1),
            "vm_hwm_mib": round(mem.get("VmHWM", 0) / 1024, 1),
            "rss_anon_after_restart_mib": round(mem_restart.get("RssAnon", 0) / 1024, 1),
            "restart_ready_s": round(t_ready, 3), "stop_s": round(t_stop, 3),
            "data_dir_mib": round(data_mib, 1),
            "runs": [{"name": r["name"], "round": r["round"], "rate": round(r["rate"], 1),
                      "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                      "errors": r["errors"]} for r in runs]}), flush=True)

        bad = [r for r in runs if r["errors"] or r["ok"] == 0]
        if bad:
            die("%d run(s) had errors or no answers (first: %d %s)"
                % (len(bad), bad[0]["round"], bad[0]["name"]))
    finally:
        rc = None
        if authd is not None:
            rc = authd.stop()
            if rc != 0 or authd.sanitizer_reports():
                print("bench_fleet: authd exit %r on SIGTERM:\n%s" % (rc, authd.stderr()[-3000:]))
            authd.cleanup_logs()
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0:
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_fleet: terminated"))
    main()
