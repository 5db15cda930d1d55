"""What a system install ships besides the programs (issue 13): the man
pages, dist/authd.service, dist/authd.conf.example and the bash
completion of authctl. Each is held to the code it describes: the config
key table in authd/config.c, `authctl --help` and `authd --help`, so a
key, command or flag added without its documentation fails here."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAN = os.path.join(SRC, "man")
DIST = os.path.join(SRC, "dist")


def authd_bin():
    path = os.environ.get("AUTHD_BIN") or os.path.join(SRC, "build", "authd", "authd")
    assert os.access(path, os.X_OK), "authd not built: %s" % path
    return os.path.abspath(path)


def authctl_bin():
    path = os.environ.get("AUTHCTL_BIN") or os.path.join(
        SRC, "build", "clients", "authctl", "authctl")
    assert os.access(path, os.X_OK), "authctl not built: %s" % path
    return os.path.abspath(path)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)


def config_keys():
    """The keys of the option table in authd/config.c."""
    with open(os.path.join(SRC, "authd", "config.c"), encoding="utf-8") as f:
        text = f.read()
    table = text[text.index("static const struct opt opts[]"):]
    table = table[:table.index("};")]
    keys = re.findall(r"\b(?:STR|LONG|BOOL)_OPT\((\w+),", table)
    assert len(keys) > 30, keys
    return keys


def authctl_commands():
    """["device add", ..., "audit", ...] from `authctl --help`."""
    r = run([authctl_bin(), "--help"])
    assert r.returncode == 0, r.stderr
    block = r.stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    cmds = []
    for line in block.splitlines():
        # "  group sub   Summary" (one space inside the name, two or more
        # before the summary) or "  group   Summary".
        m = re.match(r"  ([a-z-]+(?: [a-z-]+)?)  ", line)
        assert m, line
        cmds.append(m.group(1))
    assert len(cmds) > 20, cmds
    return cmds


def help_flags(args):
    r = run(args + ["--help"])
    assert r.returncode == 0, (args, r.stderr)
    return sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", r.stdout)))


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def tp_tags(page):
    """The tag line of every .TP paragraph of a man page, in plain text
    (font escapes and roff's \\- removed)."""
    lines = read(os.path.join(MAN, page)).splitlines()
    tags = []
    for i, line in enumerate(lines[:-1]):
        if line.startswith(".TP"):
            tag = lines[i + 1]
            tag = re.sub(r"\\f[BIRP]", "", tag).replace("\\-", "-")
            tag = re.sub(r'^\.[BIR]{1,2}\s+', "", tag).replace('"', "")
            tags.append(tag)
    return tags


# ---- man pages -----------------------------------------------------------

PAGES = ["authd.8", "authctl.1", "authd.conf.5"]


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page, tmp_path):
    path = os.path.join(MAN, page)
    if shutil.which("man"):
        # man-db: -l reads the file, --warnings turns groff's warnings on.
        cmd = ["man", "--warnings", "-E", "UTF-8", "-l", path]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", "-ww", path]
    else:
        pytest.skip("neither man (man-db) nor groff is installed")
    env = dict(os.environ, MANWIDTH="80", MAN_DISABLE_SECCOMP="1",
               HOME=str(tmp_path))
    r = run(cmd, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", "%s: %s" % (page, r.stderr)
    text = re.sub(r".\x08", "", r.stdout)
    assert "NAME" in text and "SEE ALSO" in text, text[:400]
    assert len(text) > 1500, text


def test_the_render_check_sees_a_broken_page(tmp_path):
    # The check above would be worthless if a bad macro went unnoticed.
    if not shutil.which("man"):
        pytest.skip("man (man-db) is not installed")
    bad = tmp_path / "bad.1"
    bad.write_text(".TH BAD 1\n.SH NAME\nbad \\- a page\n.NOSUCHMACRO x\n")
    r = run(["man", "--warnings", "-E", "UTF-8", "-l", str(bad)],
            env=dict(os.environ, MANWIDTH="80", HOME=str(tmp_path)))
    assert "NOSUCHMACRO" in r.stderr


def test_authd_conf_5_describes_every_config_key():
    tagged = set()
    for tag in tp_tags("authd.conf.5"):
        tagged.update(re.findall(r"[a-z0-9_]+", tag.split("(")[0]))
    missing = [k for k in config_keys() if k not in tagged]
    assert not missing, "keys without an entry in man/authd.conf.5: %s" % missing


def test_authctl_1_describes_every_command_and_flag():
    tags = tp_tags("authctl.1")
    page = read(os.path.join(MAN, "authctl.1")).replace("\\-", "-")
    missing = []
    for cmd in authctl_commands():
        if not any(t == cmd or t.startswith(cmd + " ") for t in tags):
            missing.append(cmd)
        for flag in help_flags([authctl_bin()] + cmd.split()):
            if flag not in page:
                missing.append("%s %s" % (cmd, flag))
    for flag in help_flags([authctl_bin()]):
        if flag not in page:
            missing.append(flag)
    assert "--version" in page
    assert not missing, "not in man/authctl.1: %s" % missing


def test_authd_8_describes_every_command_and_flag():
    r = run([authd_bin(), "--help"])
    assert r.returncode == 0, r.stderr
    commands = re.findall(r"authd ([a-z][a-z-]+)", r.stdout)
    assert "serve" in commands and "migrate" in commands, commands
    tags = tp_tags("authd.8")
    page = read(os.path.join(MAN, "authd.8")).replace("\\-", "-")
    missing = [c for c in set(commands) if not any(t.startswith(c) for t in tags)]
    missing += [f for f in help_flags([authd_bin()]) if f not in page]
    assert not missing, "not in man/authd.8: %s" % missing


# ---- dist/authd.conf.example ---------------------------------------------

def example_keys():
    keys = []
    for line in read(os.path.join(DIST, "authd.conf.example")).splitlines():
        m = re.match(r"#?([a-z0-9_]+) =", line)
        if m:
            keys.append(m.group(1))
    return keys


def test_example_config_names_every_key_once():
    got = example_keys()
    assert sorted(got) == sorted(set(got)), "a key is listed twice"
    assert sorted(got) == sorted(config_keys())


def test_example_config_with_every_line_uncommented_loads(tmp_path):
    # Each listed value must be one authd accepts for its key: turn every
    # "#key = value" on and let `authd init` read the file.
    text = read(os.path.join(DIST, "authd.conf.example"))
    on = re.sub(r"(?m)^#([a-z0-9_]+ =)", r"\1", text)
    conf = tmp_path / "authd.conf"
    conf.write_text(on)
    data = tmp_path / "data"
    r = run([authd_bin(), "init", "--config", str(conf), "--data", str(data)])
    assert r.returncode == 0, r.stderr
    assert (data / "admin.key").exists()
    # And a key the table does not have is refused, naming the line.
    conf.write_text(on + "no_such_key = 1\n")
    r = run([authd_bin(), "init", "--config", str(conf),
             "--data", str(tmp_path / "data2")])
    assert r.returncode == 2 and "no_such_key" in r.stderr, r.stderr


def test_example_config_points_at_the_packaged_data_dir():
    assert re.search(r"(?m)^data = /var/lib/authd$",
                     read(os.path.join(DIST, "authd.conf.example")))


# ---- dist/authd.service --------------------------------------------------

HARDENING = {
    "User": "authd",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "MemoryDenyWriteExecute": "yes",
    "ReadWritePaths": "/var/lib/authd",
    "StateDirectory": "authd",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "ExecStart": "/usr/bin/authd serve --config /etc/authd/authd.conf",
}


def unit_settings():
    settings = {}
    for line in read(os.path.join(DIST, "authd.service")).splitlines():
        m = re.match(r"([A-Za-z]+)=(.*)$", line)
        if m:
            settings.setdefault(m.group(1), []).append(m.group(2))
    return settings


def test_unit_is_hardened():
    s = unit_settings()
    for key, want in HARDENING.items():
        assert s.get(key) == [want], (key, s.get(key))
    assert "@system-service" in s["SystemCallFilter"]
    assert "DynamicUser" not in s


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart's program exists: point it at this
    # build's authd, the one thing changed. --man=no: the pages are not
    # installed on the build machine (the render test covers them).
    unit = read(os.path.join(DIST, "authd.service")).replace(
        "/usr/bin/authd", authd_bin())
    path = tmp_path / "authd.service"
    path.write_text(unit)
    r = run(["systemd-analyze", "verify", "--man=no", str(path)])
    # verify exits 0 even for directives it ignores: any output is a fault.
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
    # The same check does see a bad directive.
    path.write_text(unit.replace("ProtectSystem=strict", "ProtectSystem=sometimes"))
    r = run(["systemd-analyze", "verify", "--man=no", str(path)])
    assert "ProtectSystem" in r.stderr or "protect system" in r.stderr, r.stderr


# ---- dist/authctl.bash-completion ----------------------------------------

def complete(*words):
    """COMPREPLY of the completion function for the command line `words`
    (the last one being completed), as bash computes it."""
    script = (
        "source %s\n"
        "COMP_WORDS=(\"$@\"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "_authctl\n"
        "printf '%%s\\n' \"${COMPREPLY[@]}\"\n"
    ) % os.path.join(DIST, "authctl.bash-completion")
    r = run(["bash", "-c", script, "bash", authctl_bin()] + list(words))
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.splitlines() if x)


def test_completion_registers_for_authctl():
    r = run(["bash", "-c", "source %s; complete -p authctl"
             % os.path.join(DIST, "authctl.bash-completion")])
    assert r.returncode == 0 and "_authctl" in r.stdout, r.stderr


def test_completion_of_commands_and_subcommands():
    groups = sorted({c.split()[0] for c in authctl_commands()} | {"help"})
    assert complete("") == groups
    assert complete("de") == ["device"]
    assert complete("device", "s") == ["secret", "show", "suspend"]
    assert complete("token", "r") == ["revoke", "rotate-key"]
    # Global options and their values before the command are skipped.
    assert complete("--json", "--server", "https://127.0.0.1:1", "enroll", "") == \
        ["create", "list", "rm", "show", "update"]
    # Every subcommand authctl lists is offered.
    for cmd in authctl_commands():
        if " " in cmd:
            group, sub = cmd.split()
            assert sub in complete(group, ""), cmd


def test_completion_of_flags_and_values():
    assert complete("--ser") == ["--server"]
    assert "--version" in complete("--")
    flags = complete("enroll", "create", "--")
    for f in ("--pattern", "--max-uses", "--expires-in", "--group", "--json"):
        assert f in flags, flags
    assert complete("cert", "list", "--st") == ["--status"]
    assert complete("cert", "list", "--status", "r") == ["revoked"]
    assert complete("apikey", "create", "--role", "") == ["admin", "broker", "provisioner"]
    assert complete("device", "list", "--limit", "") == []
    # A value after a flag that takes one is not a command word.
    assert complete("device", "list", "--limit", "5", "--pre") == ["--prefix"]
    d = tempfile.mkdtemp()
    try:
        open(os.path.join(d, "key.pem"), "w").close()
        assert complete("--key-file", os.path.join(d, "k")) == [os.path.join(d, "key.pem")]
    finally:
        shutil.rmtree(d)


def docs_named_in(text):
    """The docs/ pages a help text names, e.g. ["README.md", "api.md"]."""
    return sorted(set(re.findall(r"docs/([A-Za-z0-9-]+\.(?:md|json))", text)))


@pytest.mark.parametrize("prog", ["authd", "authctl"])
def test_help_points_into_the_docs_directory(prog):
    # --help sends readers to the reference in the repository (and where
    # an install put it), never anywhere outside it.
    path = authd_bin() if prog == "authd" else authctl_bin()
    r = run([path, "--help"])
    assert r.returncode == 0, r.stderr
    pages = docs_named_in(r.stdout)
    assert "README.md" in pages, r.stdout
    for page in pages:
        assert os.path.isfile(os.path.join(SRC, "docs", page)), page
    assert "/share/doc/authd/docs/README.md" in r.stdout
    assert "shared" not in r.stdout


def test_docs_index_lists_every_page():
    docs = os.path.join(SRC, "docs")
    with open(os.path.join(docs, "README.md"), encoding="utf-8") as f:
        index = f.read()
    for page in sorted(os.listdir(docs)):
        if page != "README.md" and page.endswith((".md", ".json")):
            assert "](%s)" % page in index, "docs/README.md does not list " + page


def test_docs_config_md_describes_every_config_key():
    with open(os.path.join(SRC, "docs", "config.md"), encoding="utf-8") as f:
        # The first cell of a table row: `key`, or several (`a`, `b`).
        cells = re.findall(r"^\| ((?:`[a-z0-9_]+`(?:, )?)+) \|", f.read(), re.M)
    listed = {k for cell in cells for k in re.findall(r"`([a-z0-9_]+)`", cell)}
    # `config_file` is an alias the `config` row names.
    listed.add("config_file")
    missing = [k for k in config_keys() if k not in listed]
    assert not missing, "docs/config.md has no row for: %s" % missing
