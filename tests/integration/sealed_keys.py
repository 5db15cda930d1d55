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


def store_dir_of(data):
    """The LMDB directory a data dir uses: DATA/store.url, else DATA/store."""
    try:
        with open(os.path.join(data, "store.url")) as f:
            url = f.read().strip()
    except FileNotFoundError:
        url = "lmdb:"
    assert url.startswith("lmdb:"), "only LMDB stores can be read here: %r" % url
    return url[5:] or os.path.join(data, "store")


def token_key_records(data):
    """{kid: record} of the token keys in the store, and the signing kid."""
    meta = lmdb_table(store_dir_of(data), "meta")
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


def raw_store_bytes(store_dir):
    """Every byte of the LMDB files, for scans for secrets in clear."""
    blob = b""
    for name in sorted(os.listdir(store_dir)):
        with open(os.path.join(store_dir, name), "rb") as f:
            blob += f.read()
    return blob

