"""The cluster key: a secret made with the cluster, that authenticates its members.

A cluster grown by gossip gets its key when it is created: ``--bootstrap``
writes 32 random bytes (as hex) to ``<data-dir>/cluster.key`` (or to the
``--gossip-key-file`` it is given, if that does not exist yet), mode 0600, and
logs where. Joiners are given the same file with ``--gossip-key-file``.
Every gossip datagram is signed with it (HMAC-SHA256), and datagrams without
a valid signature are dropped, so only key holders are ever added or promoted
by the autopilot; and every peer Hello carries a proof of it
(:mod:`leeky_twisted.transport.hello_auth`), so only key holders can send Raft
messages. Running gossip without a key takes an explicit ``--insecure``.

The cluster id, when not given, is derived from the key
(:func:`cluster_id_from_key`): every node that holds the key agrees on it
without coordination, it differs for every new cluster, and it reveals
nothing about the key. Without a key (a static ``--peers`` cluster started by
hand, whose nodes cannot agree on a random value) it stays ``leeky``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

KEY_FILE_NAME = "cluster.key"
KEY_BYTES = 32
DEFAULT_CLUSTER_ID = "leeky"  #: only for clusters without a key
_ID_LABEL = b"leeky-raft cluster id v1"


def create_key_file(path: str) -> bytes:
    """Write a new random key to ``path`` (mode 0600) and return it.

    The file appears whole or not at all (written aside, then linked into
    place); if another process created ``path`` meanwhile, its key is kept
    and returned. Raises OSError when the folder cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    key = secrets.token_hex(KEY_BYTES).encode("ascii")
    aside = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return read_key_file(path)
    finally:
        os.unlink(aside)
    return key


def read_key_file(path: str) -> bytes:
    """Return the key in ``path`` (surrounding whitespace removed).

    Raises OSError when it cannot be read and ValueError when it is empty.
    """
    with open(path, "rb") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"{path} is empty")
    return key


def cluster_id_from_key(key: bytes) -> str:
    """Return the cluster id every holder of ``key`` derives: ``k-`` + 20 hex digits."""
    return "k-" + hmac.new(key, _ID_LABEL, hashlib.sha256).hexdigest()[:20]


@dataclass(frozen=True)
class ResolvedKey:
    """Which key a node runs with, and what to tell the operator about it."""

    key: bytes | None
    path: str | None
    created: bool = False


def resolve_key(
    key_file: str | None, data_dir: str, bootstrap: bool, insecure: bool
) -> ResolvedKey:
    """Find (or, for a new cluster, create) the key a node runs with.

    In order: the ``--gossip-key-file`` given (created when missing, with
    ``bootstrap`` only); ``<data_dir>/cluster.key`` if it exists (a restart);
    a new ``<data_dir>/cluster.key`` for ``bootstrap`` unless ``insecure``;
    else no key. Raises OSError or ValueError when a key file is unusable.
    """
    if key_file:
        if bootstrap and not os.path.exists(key_file):
            return ResolvedKey(create_key_file(key_file), key_file, created=True)
        return ResolvedKey(read_key_file(key_file), key_file)
    beside = os.path.join(data_dir, KEY_FILE_NAME)
    if os.path.exists(beside):
        return ResolvedKey(read_key_file(beside), beside)
    if bootstrap and not insecure:
        return ResolvedKey(create_key_file(beside), beside, created=True)
    return ResolvedKey(None, None)
