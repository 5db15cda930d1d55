"""README.md's quick start, run as a newcomer would: from `git clone`.

The source tree must be a git checkout; it is cloned with `git clone`
into a temp dir, exactly as the README's terminal-1 block says, and that
block's `bash scripts/run.sh` builds the clone (a full release build)
and starts authd on it. The blocks after `<!-- quickstart: NAME -->`
comments then run as written, each in the "terminal" the README names:

  terminal-1        in the background (authd), until its expected lines
                    (the first-start summary) have appeared
  terminal-2        one bash (-e, pipefail) fed the block on stdin; the
                    later terminal-2-* blocks go to the same shell, so the
                    exports, PATH and cwd carry over as in a real terminal
  terminal-3        in the background (mosquitto), until its expected
                    lines have appeared and its port accepts connections

Only two things are rewritten: `REPO_URL` becomes this checkout's path,
and the ports become free loopback ones: 8443, 8080 and 8181 after
`localhost:` or `127.0.0.1:`, and the broker's 8883. `scripts/run.sh`
takes no flags in the README, so the daemon gets its ports from its
documented environment (AUTHD_HTTPS, AUTHD_HTTP, AUTHD_CHECK_HTTP); every
other AUTHD_* variable is removed and HOME is an empty directory, as on a
fresh machine. Expected output, written as comment lines `#   TEXT`, must
appear in what its block prints, in that order; a command that fails
fails the test. The clone is of HEAD: commit before running this suite
(it refuses a README whose quick start differs from HEAD's)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))
from authd_harness import free_ports  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("NEWCOMER_SOURCE") or os.path.join(HERE, "..", "..")
BLOCK = re.compile(r"<!-- quickstart: ([a-z0-9-]+) -->\n```sh\n(.*?)```", re.S)
ORDER = ["terminal-1", "terminal-2", "terminal-3", "terminal-2-mqtt"]

BUILD_TIMEOUT = 1500  # the clone's release build on a busy 2-core machine
BLOCK_TIMEOUT = 180


def quickstart(readme_path):
    with open(readme_path, encoding="utf-8") as f:
        return dict(BLOCK.findall(f.read()))


def expected_lines(script):
    return [m.group(1).strip() for m in re.finditer(r"^#   (.*)$", script, re.M)]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def find_in_order(out, wants, start=0):
    """The offset after the last of wants found in order in out[start:],
    or (None, the first one missing)."""
    at = start
    for want in wants:
        i = out.find(want, at)
        if i < 0:
            return None, want
        at = i + len(want)
    return at, None


class Terminal:
    """One bash reading its commands from a pipe, output to a log file,
    in a session of its own so that everything it started can be ended."""

    def __init__(self, name, cwd, env, log_dir):
        self.name = name
        self.log_path = os.path.join(log_dir, name + ".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["bash", "-e", "-o", "pipefail"],
                                     stdin=subprocess.PIPE, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                     start_new_session=True)
        self.blocks = 0

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self):
        return "--- %s (exit %r) ---\n%s" % (self.name, self.proc.poll(),
                                            self.output()[-6000:])

    def send(self, text, close=False):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()
        if close:
            self.proc.stdin.close()

    def run_block(self, script, timeout=BLOCK_TIMEOUT):
        """Runs script to its end; returns what it printed."""
        self.blocks += 1
        marker = "@@quickstart-block-%d-done@@" % self.blocks
        start = len(self.output())
        self.send(script + "\necho %s\n" % marker)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if marker in out[start:]:
                return out[start:out.index(marker, start)]
            if self.proc.poll() is not None:
                raise AssertionError("a README command failed in %s:\n%s" % (
                    self.name, self.describe()))
            time.sleep(0.1)
        raise AssertionError("%s: block not done after %ds:\n%s" % (
            self.name, timeout, self.describe()))

    def wait_for(self, wants, timeout, ready=lambda: True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at, missing = find_in_order(self.output(), wants)
            if at is not None and ready():
                return
            if self.proc.poll() is not None:
                raise AssertionError("%s exited; waiting for %r:\n%s" % (
                    self.name, missing, self.describe()))
            time.sleep(0.2)
        raise AssertionError("%s: %r not seen after %ds:\n%s" % (
            self.name, missing, timeout, self.describe()))

    def stop(self):
        """Ends the whole session (bash and everything it started)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            # Whatever is left in the session (a child slow on SIGTERM).
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        self._log.close()


def git_checkout(path):
    if shutil.which("git") is None:
        return None, "git is not installed"
    p = subprocess.run(["git", "-C", path, "rev-parse", "--show-toplevel"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return None, "the source tree %s is not a git checkout: nothing to clone (git: %s)" % (
            path, p.stderr.strip()[:300])
    top = p.stdout.strip()
    if os.path.realpath(top) != os.path.realpath(path):
        return None, "the source tree %s is inside the git checkout %s, not one" % (path, top)
    return top, None


def test_the_readme_quick_start_runs_as_written(tmp_path):
    source, why = git_checkout(SOURCE)
    if source is None:
        pytest.skip(why)
    committed = subprocess.run(["git", "-C", source, "show", "HEAD:README.md"],
                               capture_output=True, text=True, check=True).stdout
    head_blocks = dict(BLOCK.findall(committed))
    here_blocks = quickstart(os.path.join(source, "README.md"))
    assert here_blocks == head_blocks, (
        "README.md's quick start differs from HEAD's, and `git clone` takes "
        "HEAD: commit it first")
    assert set(head_blocks) == set(ORDER), (
        "README quick-start blocks %s, this test runs %s" % (sorted(head_blocks), ORDER))

    https, http, check, mqtt = free_ports(4)
    ports = {"8443": https, "8080": http, "8181": check}

    def ported(script):
        s = re.sub(r"\b(localhost|127\.0\.0\.1):(8443|8080|8181)\b",
                   lambda m: "%s:%d" % (m.group(1), ports[m.group(2)]), script)
        s = re.sub(r"\b8883\b", str(mqtt), s)
        return s.replace("REPO_URL", source)

    blocks = {name: ported(text) for name, text in head_blocks.items()}

    work = tmp_path / "newcomer"
    home = tmp_path / "home"
    logs = tmp_path / "logs"
    for d in (work, home, logs):
        d.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUTHD_") and k not in ("AUTHCTL_PROFILE", "MAKEFLAGS")}
    env["HOME"] = str(home)
    env["LC_ALL"] = "C.UTF-8"
    daemon_env = dict(env)
    daemon_env.update({"AUTHD_HTTPS": "127.0.0.1:%d" % https,
                       "AUTHD_HTTP": "127.0.0.1:%d" % http,
                       "AUTHD_CHECK_HTTP": "127.0.0.1:%d" % check})

    def interrupted(signum, frame):
        raise KeyboardInterrupt("SIGTERM (meson's timeout?)")

    # The terminals are sessions of their own, out of reach of whoever
    # ends this process's group: a SIGTERM must still run the cleanup.
    previous = signal.signal(signal.SIGTERM, interrupted)
    terminals = []
    started = time.monotonic()
    try:
        t1 = Terminal("terminal-1", str(work), daemon_env, str(logs))
        terminals.append(t1)
        t1.send(blocks["terminal-1"] + "\n", close=True)
        t1.wait_for(expected_lines(blocks["terminal-1"]), BUILD_TIMEOUT,
                    ready=lambda: port_open(https) and port_open(check))
        built = time.monotonic() - started
        clone = os.path.realpath(str(work / "authd"))

        # The README writes the export lines with $PWD for the path the
        # daemon printed: they must be the lines it printed.
        printed = re.findall(r"^  export (AUTHD_[A-Z_]+)=(\S+)$", t1.output(), re.M)
        written = re.findall(r"^export (AUTHD_[A-Z_]+)=(\S+)$", blocks["terminal-2"], re.M)
        assert printed, "no export lines in the first-start summary:\n" + t1.describe()
        assert [(k, v.replace("$PWD", clone)) for k, v in written] == printed, (
            "README's export lines %r are not what authd printed %r" % (written, printed))

        t2 = Terminal("terminal-2", str(work), env, str(logs))
        terminals.append(t2)
        out = t2.run_block(blocks["terminal-2"])
        at, missing = find_in_order(out, expected_lines(blocks["terminal-2"]))
        assert missing is None, "terminal-2: %r not printed:\n%s" % (missing, out)

        t3 = Terminal("terminal-3", str(work), env, str(logs))
        terminals.append(t3)
        t3.send(blocks["terminal-3"] + "\n", close=True)
        t3.wait_for(expected_lines(blocks["terminal-3"]), BLOCK_TIMEOUT,
                    ready=lambda: port_open(mqtt))

        out = t2.run_block(blocks["terminal-2-mqtt"])
        at, missing = find_in_order(out, expected_lines(blocks["terminal-2-mqtt"]))
        assert missing is None, "terminal-2: %r not printed:\n%s\n%s" % (
            missing, out, t3.describe())
        t2.send("exit 0\n", close=True)
        t2.proc.wait(30)
        assert t2.proc.returncode == 0, t2.describe()
        assert t1.proc.poll() is None, "authd died:\n" + t1.describe()
        assert t3.proc.poll() is None, "mosquitto died:\n" + t3.describe()
        print("quick start: clone and build %.0fs, the rest %.0fs" % (
            built, time.monotonic() - started - built))
    finally:
        for t in reversed(terminals):
            t.stop()
        signal.signal(signal.SIGTERM, previous)
