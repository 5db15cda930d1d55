"""Reading a data dir's store from outside the daemon: the records of an
LMDB store through mdb_dump (the LMDB tools), and the token-signing keys
the store keeps sealed with DATA/seal.key (AES-256-GCM, nonce || ciphertext
|| tag in base64, the kid as additional data), opened with
python3-cryptography. Lets tests check what is on disk, and forge tokens
with a real signing key, without trusting the daemon's own code."""

import base64
import json
import os
import shutil
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authd_harness import backend_store_url

MDB_DUMP = shutil.which("mdb_dump") or "/usr/bin/mdb_dump"


def lmdb_table(store_dir, table):
    """{key: value bytes} of one LMDB sub-database (store.c's table names:
    "meta", "apikeys", ...). mdb_dump's hex format: its print format does
    not escape a backslash, which JSON text holds."""
    out = subprocess.run([MDB_DUMP, "-s", table, store_dir],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, "mdb_dump %s: %s" % (store_dir, out.stderr)
    lines = out.stdout.split("\n")
    body = lines[lines.index("HEADER=END") + 1:]
    body = body[:body.index("DATA=END")]
    assert len(body) % 2 == 0, "mdb_dump pairs keys and values"
    return {bytes.fromhex(body[i][1:]).decode(): bytes.fromhex(body[i + 1][1:])
            for i in range(0, len(body), 2)}


def store_url_of(data):
    """The store a data dir uses: DATA/store.url, else the one the test
    backend gives it, else lmdb: (DATA/store)."""
    try:
        with open(os.path.join(data, "store.url")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return backend_store_url(data) or "lmdb:"


def store_dir_of(data):
    """The LMDB directory a data dir uses."""
    url = store_url_of(data)
    assert url.startswith("lmdb:"), "not an LMDB store: %r" % url
    return url[5:] or os.path.join(data, "store")


def pg_table(url, table):
    """{key: value bytes} of one table of a PostgreSQL store, read with
    psql (the schema names a table t_<name>)."""
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-AtqX", "-c",
                          "SELECT encode(convert_to(key, 'UTF8'), 'hex') || ' ' "
                          "|| encode(convert_to(doc, 'UTF8'), 'hex') FROM t_%s"
                          % table],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, "psql: %s" % out.stderr
    rows = [line.split(" ") for line in out.stdout.splitlines() if line]
    return {bytes.fromhex(k).decode(): bytes.fromhex(v) for k, v in rows}


def store_table(data, table):
    """{key: value bytes} of one table of a data dir's store, whichever
    backend holds it."""
    url = store_url_of(data)
    if url.startswith("lmdb:"):
        return lmdb_table(store_dir_of(data), table)
    return pg_table(url, table)


def token_key_records(data):
    """{kid: record} of the token keys in the store, and the signing kid."""
    meta = store_table(data, "meta")
    recs = {k[len("token_key:"):]: json.loads(v) for k, v in meta.items()
            if k.startswith("token_key:")}
    ring = json.loads(meta["token_keys"]) if "token_keys" in meta else {}
    return recs, ring.get("signing")


def unseal(data, sealed, aad):
    with open(os.path.join(data, "seal.key"), "rb") as f:
        key = f.read()
    frame = base64.b64decode(sealed, validate=True)
    return AESGCM(key).decrypt(frame[:12], frame[12:], aad.encode())


def signing_key(data, kid):
    """The private key of kid, unsealed from the store."""
    recs, _ = token_key_records(data)
    assert kid in recs, "kid %s is in the store: %r" % (kid, sorted(recs))
    pem = unseal(data, recs[kid]["sealed"], kid)
    return serialization.load_pem_private_key(pem, None)


def raw_store_bytes_of(data):
    """Every byte a data dir's store holds, for scans for secrets in
    clear: the LMDB files, or a pg_dump of the PostgreSQL database."""
    url = store_url_of(data)
    if url.startswith("lmdb:"):
        return raw_store_bytes(store_dir_of(data))
    out = subprocess.run(["pg_dump", url], capture_output=True, timeout=60)
    assert out.returncode == 0, "pg_dump: %r" % out.stderr
    return out.stdout


def raw_store_bytes(store_dir):
    """Every byte of the LMDB files, for scans for secrets in clear."""
    blob = b""
    for name in sorted(os.listdir(store_dir)):
        with open(os.path.join(store_dir, name), "rb") as f:
            blob += f.read()
    return blob

