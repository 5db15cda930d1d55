"""Cluster mode, the data dir side: `authd join` prepares a node from an
existing node's data dir (the same CA, admin.key and sealing key, its own
HTTPS certificate), the store URL is remembered in DATA/store.url, and the
token-signing keys live in the store sealed with DATA/seal.key, never in
clear. Two nodes on one PostgreSQL database wait for that backend; here two
nodes share one LMDB store (lmdb:PATH), or each has its own.

The store is read from outside with mdb_dump and the sealed keys opened
with python3-cryptography (sealed_keys.py), so nothing here trusts the
daemon's own reading of its files."""

import os
import shutil
import stat
import subprocess

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import sealed_keys  # noqa: E402
from authd_harness import BACKEND, Api
from test_tokens import active, enroll_in, make_group, mint, pyjwt_verify


def run(binary, *args):
    return subprocess.run([binary] + list(args), capture_output=True,
                          text=True, timeout=120)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def first_cert(path):
    return x509.load_pem_x509_certificate(read(path))


# ------------------------------------------------------------------ join ----

def test_join_copies_the_ca_admin_key_and_seal_key_and_issues_its_own_https_cert(
        spawn_authd, binary, tmp_path):
    a = spawn_authd(data_dir=str(tmp_path / "a"))
    b_dir = str(tmp_path / "b")
    r = run(binary, "join", "--data", b_dir, "--from", a.data)
    assert r.returncode == 0, "authd join: %s" % r.stderr
    for rel in ("ca/root.pem", "ca/issuing.pem", "ca/chain.pem", "ca/root.key",
                "ca/issuing.key", "admin.key", "seal.key"):
        assert read(os.path.join(b_dir, rel)) == read(os.path.join(a.data, rel)), (
            "the joined node has the cluster's %s" % rel)
    for rel in ("ca/root.key", "ca/issuing.key", "tls/server.key", "admin.key",
                "seal.key", "store.url"):
        assert mode(os.path.join(b_dir, rel)) == 0o600, "%s is 0600" % rel
    ca, cb = (first_cert(os.path.join(d, "tls/server.pem")) for d in (a.data, b_dir))
    assert ca.serial_number != cb.serial_number, "the node has its own HTTPS certificate"
    assert read(os.path.join(a.data, "tls/server.key")) != read(
        os.path.join(b_dir, "tls/server.key")), "and its own HTTPS key"
    v = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(a.data, "ca/root.pem"),
                        "-untrusted", os.path.join(a.data, "ca/issuing.pem"),
                        os.path.join(b_dir, "tls/server.pem")],
                       capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, "its certificate chains to the cluster's root: %s" % (
        v.stdout + v.stderr)
    sans = cb.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName), "names localhost"

    b = spawn_authd(data_dir=b_dir)
    r = b.request("GET", "/v1/devices", token=a.admin_key, tls=True)
    assert r.status == 200, "the cluster's admin.key works on the joined node, over " \
                            "HTTPS with its own certificate: %r" % r
    assert {k["kid"] for k in b.request("GET", "/v1/jwks").json["keys"]} == {
        k["kid"] for k in a.request("GET", "/v1/jwks").json["keys"]}, (
        "both nodes publish the same token keys")


def test_join_refuses_a_data_dir_that_already_holds_a_ca(spawn_authd, binary, tmp_path):
    a = spawn_authd(data_dir=str(tmp_path / "a"))
    c = str(tmp_path / "c")
    r = run(binary, "init", "--data", c)
    assert r.returncode == 0, r.stderr
    before = {rel: read(os.path.join(c, rel)) for rel in
              ("ca/chain.pem", "ca/issuing.key", "admin.key", "seal.key")}
    r = run(binary, "join", "--data", c, "--from", a.data)
    assert r.returncode != 0, "joining over an initialised data dir must fail"
    assert "already holds a CA" in r.stderr, r.stderr
    for rel, data in before.items():
        assert read(os.path.join(c, rel)) == data, "%s is left as it was" % rel


def test_join_refuses_a_source_that_is_not_a_data_dir(binary, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run(binary, "join", "--data", str(tmp_path / "n"), "--from", str(empty))
    assert r.returncode != 0 and "not an initialised data dir" in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "n" / "ca" / "chain.pem"), "nothing is copied"


# ------------------------------------------------- keys sealed in the store ----

def test_no_token_private_key_is_in_the_store_in_clear(spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "a"))
    r = Api(d, d.admin_key).post("/v1/token-keys")
    assert r.status == 201, "rotation: %r" % r
    d.stop_and_check()
    assert mode(os.path.join(d.data, "seal.key")) == 0o600, "seal.key is 0600"
    assert os.path.getsize(os.path.join(d.data, "seal.key")) == 32
    recs, signing = sealed_keys.token_key_records(d.data)
    assert len(recs) == 2 and signing == r.json["kid"], (
        "both keys are in the store, the new one signs: %r %r" % (sorted(recs), signing))
    blob = sealed_keys.raw_store_bytes_of(d.data)
    assert b"PRIVATE KEY" not in blob, "no PEM private key in the LMDB files"
    for kid in recs:
        key = sealed_keys.signing_key(d.data, kid)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        der = key.private_bytes(serialization.Encoding.DER,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        assert scalar not in blob, "the raw scalar of %s is not in the store" % kid
        assert der not in blob, "nor its PKCS#8 DER"
        assert set(recs[kid]) == {"kid", "created", "sealed", "public_jwk"}, recs[kid]
        pub = recs[kid]["public_jwk"]
        assert pub["kid"] == kid and "d" not in pub, "the JWK is public only: %r" % pub


def test_a_seal_key_of_another_cluster_does_not_open_the_keys(spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "a"))
    d.stop_and_check()
    path = os.path.join(d.data, "seal.key")
    os.chmod(path, 0o600)
    with open(path, "wb") as f:
        f.write(os.urandom(32))
    again = spawn_authd(data_dir=d.data, wait=False)
    rc = again.proc.wait(30)
    assert rc != 0, "a node whose seal.key opens no key must not start"
    assert "seal.key" in again.stderr(), again.stderr()[-2000:]


def test_a_store_with_keys_but_no_seal_key_asks_for_join(spawn_authd, tmp_path):
    d = spawn_authd(data_dir=str(tmp_path / "a"))
    d.stop_and_check()
    os.unlink(os.path.join(d.data, "seal.key"))
    again = spawn_authd(data_dir=d.data, wait=False)
    rc = again.proc.wait(30)
    assert rc != 0, "a new seal.key would open nothing: the start must fail"
    assert "join" in again.stderr(), again.stderr()[-2000:]
    assert not os.path.exists(os.path.join(d.data, "seal.key")), "none is made up"


# ---------------------------------------------- two nodes, one LMDB store ----

def test_two_nodes_on_one_store_share_the_key_ring_and_its_rotation(
        spawn_authd, binary, devdir, tmp_path):
    shared = str(tmp_path / "shared-store")
    a_dir, b_dir = str(tmp_path / "a"), str(tmp_path / "b")
    r = run(binary, "init", "--data", a_dir, "--store", "lmdb:" + shared)
    assert r.returncode == 0, r.stderr
    a = spawn_authd(data_dir=a_dir)
    # Joined while the first node serves; --store comes from a's store.url.
    r = run(binary, "join", "--data", b_dir, "--from", a_dir)
    assert r.returncode == 0, r.stderr
    assert read(os.path.join(b_dir, "store.url")).strip() == b"lmdb:" + shared.encode(), (
        "the joined node remembers the cluster's store")
    assert not os.path.exists(os.path.join(b_dir, "store")), "it has no store of its own"

    api = Api(a, a.admin_key)
    dev = enroll_in(a, api, make_group(api), devdir)
    old = mint(a, dev)["access_token"]
    r = api.post("/v1/token-keys")
    assert r.status == 201, r
    new_kid = r.json["kid"]
    new = mint(a, dev)["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    a.stop_and_check()

    b = spawn_authd(data_dir=b_dir)
    for tok in (old, new):
        pyjwt_verify(b, tok)
        assert active(b, tok)["active"] is True, (
            "tokens the other node minted, before and after its rotation, verify here")
    assert jwt.get_unverified_header(mint(b, dev)["access_token"])["kid"] == new_kid, (
        "a rotation on one node makes the new key sign on every node")
    r = Api(b, b.admin_key).post("/v1/token-keys")
    assert r.status == 201, "and any node may rotate: %r" % r
    b.stop_and_check()
    a = spawn_authd(data_dir=a_dir)
    assert jwt.get_unverified_header(mint(a, dev)["access_token"])["kid"] == r.json["kid"], (
        "the rotation persists for the whole cluster")
    pyjwt_verify(a, old)


# ----------------------------------------------------------- store URL ----

def test_serve_uses_the_remembered_store_url_and_store_overrides_it(
        spawn_authd, binary, tmp_path):
    d = str(tmp_path / "d")
    elsewhere = str(tmp_path / "elsewhere")
    r = run(binary, "init", "--data", d, "--store", "lmdb:" + elsewhere)
    assert r.returncode == 0, r.stderr
    url = os.path.join(d, "store.url")
    assert read(url).strip() == b"lmdb:" + elsewhere.encode()
    assert mode(url) == 0o600, "store.url is 0600: a URL may carry a password"
    a = spawn_authd(data_dir=d)
    admin = Api(a, a.admin_key)
    assert admin.post("/v1/devices", {"id": "remembered-1"}).status == 201
    a.stop_and_check()
    assert not os.path.exists(os.path.join(d, "store")), "DATA/store is not used"
    assert "remembered-1" in sealed_keys.lmdb_table(elsewhere, "devices"), (
        "the device is in the remembered store")

    o = spawn_authd(data_dir=d, extra_args=["--store", "lmdb:"])
    assert os.path.isdir(os.path.join(d, "store")), "--store lmdb: opens DATA/store"
    assert o.request("GET", "/v1/devices/remembered-1",
                     token=o.admin_key).status in (401, 404), (
        "another store: neither the device nor the admin key's record is there")
    o.stop_and_check()
    assert read(url).strip() == b"lmdb:" + elsewhere.encode(), (
        "serve --store overrides for one run; it does not change what is remembered")


# ------------------------------------------------------ older data dirs ----

def _strip_token_records(store_dir, into):
    """Copies an LMDB store without its token key records (mdb_dump |
    mdb_load): the store of a data dir from before keys moved there.
    Empty tables are left out (this mdb_load refuses them; the daemon
    creates them again)."""
    dump = subprocess.run(["mdb_dump", "-a", store_dir], capture_output=True,
                          text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    out = []
    for section in dump.stdout.split("DATA=END\n"):
        if "HEADER=END\n" not in section:
            continue
        header, body = section.split("HEADER=END\n")
        rows = body.split("\n")[:-1]
        kept = []
        for k in range(0, len(rows), 2):
            key = bytes.fromhex(rows[k][1:]).decode("latin-1")
            if "database=meta\n" in header and (
                    key.startswith("token_key:") or key == "token_keys"):
                continue
            kept += rows[k:k + 2]
        if kept:
            out.append(header + "HEADER=END\n" + "\n".join(kept) + "\nDATA=END\n")
    os.makedirs(into, mode=0o700)
    load = subprocess.run(["mdb_load", into], input="".join(out), text=True,
                          capture_output=True, timeout=60)
    assert load.returncode == 0, load.stderr


# Data dirs from before token keys moved into the store only ever had an
# LMDB store (the test builds one by stripping an LMDB store's key records).
@pytest.mark.skipif(BACKEND == "postgres", reason="the older layout is LMDB only")
def test_an_older_data_dir_with_keys_in_files_is_imported_and_old_tokens_verify(
        spawn_authd, devdir, tmp_path):
    data = str(tmp_path / "old")
    d = spawn_authd(data_dir=data)
    api = Api(d, d.admin_key)
    dev = enroll_in(d, api, make_group(api), devdir)
    old = mint(d, dev)["access_token"]
    kid = jwt.get_unverified_header(old)["kid"]
    d.stop_and_check()

    # The older layout: DATA/tokens/<kid>.key and DATA/tokens/active, no
    # seal.key, no keys in the store.
    key = sealed_keys.signing_key(data, kid)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(os.path.join(data, "tokens", kid + ".key"),
                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with open(os.path.join(data, "tokens", "active"), "w") as f:
        f.write(kid + "\n")
    os.chmod(os.path.join(data, "tokens", "active"), 0o600)
    os.unlink(os.path.join(data, "seal.key"))
    _strip_token_records(os.path.join(data, "store"), os.path.join(data, "store.new"))
    shutil.rmtree(os.path.join(data, "store"))
    os.rename(os.path.join(data, "store.new"), os.path.join(data, "store"))
    assert sealed_keys.token_key_records(data) == ({}, None), "the store holds no key"

    d2 = spawn_authd(data_dir=data)
    assert active(d2, old)["active"] is True, "a token of the older layout verifies"
    pyjwt_verify(d2, old)
    assert jwt.get_unverified_header(mint(d2, dev)["access_token"])["kid"] == kid, (
        "the key the active file named still signs")
    recs, signing = sealed_keys.token_key_records(data)
    assert set(recs) == {kid} and signing == kid, "imported into the store: %r" % recs
    assert mode(os.path.join(data, "seal.key")) == 0o600, "a seal.key was made, 0600"
    assert sealed_keys.signing_key(data, kid).private_numbers() == key.private_numbers(), (
        "the same key, sealed")
    d2.stop_and_check()
    d3 = spawn_authd(data_dir=data)
    assert active(d3, old)["active"] is True, "and it keeps verifying after a restart"
