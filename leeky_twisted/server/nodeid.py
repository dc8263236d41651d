"""A node's identity lives with its data: ``DATA-DIR/node-id``.

A container's host name changes whenever the container is re-created, but its
volume does not. The node id is therefore created once, stored in the data
folder, and read back at every start, so a re-created container comes back as
the same Raft member (etcd keeps its member id in the data directory too).
"""

from __future__ import annotations

import os
import secrets

from leeky_twisted.storage.fsutil import atomic_write

ID_FILE = "node-id"
#: what a data folder holds once a node has run in it (besides its node-id file)
_NODE_DATA = ("log", "hardstate", "snapshots")


class NodeIdError(ValueError):
    """The node id cannot be settled: the message says why and what to do."""


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` when it is a valid id; else raise NodeIdError.

    Valid: 1 to 64 UTF-8 bytes, no spaces or control characters, no ``,`` or
    ``=`` (the separators of ``--peers``).
    """
    if (
        not node_id
        or len(node_id.encode("utf-8")) > 64
        or any(c.isspace() or not c.isprintable() or c in ",=" for c in node_id)
    ):
        raise NodeIdError(
            f"bad node id {node_id!r}: use 1 to 64 bytes without spaces, control "
            "characters, ',' or '='"
        )
    return node_id


def new_node_id() -> str:
    """Return a fresh random id (``n-`` and 12 hex digits, 48 random bits)."""
    return "n-" + secrets.token_hex(6)


def resolve_node_id(data_dir: str, given: str | None, store: bool = True) -> str:
    """Return this node's id, stored in ``DATA-DIR/node-id`` (created when missing).

    - stored and ``given`` agree, or nothing given: the stored id;
    - stored and ``given`` differ: NodeIdError (the data belongs to another node);
    - nothing stored: ``given``, or a new random id when none is given, written
      to the file (when ``store``; else call :func:`store_node_id` later)
      before it is returned. A folder that already holds a node's data but no
      id file (written before ids were stored) needs ``given``.
    """
    path = os.path.join(data_dir, ID_FILE)
    stored = _read(path)
    if stored is not None:
        if given is not None and given != stored:
            raise NodeIdError(
                f"--id {given} differs from the id {stored} stored in {path}: this data "
                f"folder belongs to node {stored}. Start it without --id (or with --id "
                f"{stored}), or give node {given} its own data folder"
            )
        return stored
    if given is None:
        if any(os.path.exists(os.path.join(data_dir, name)) for name in _NODE_DATA):
            raise NodeIdError(
                f"{data_dir} holds a node's data but no {ID_FILE} file: give the node's "
                "id once with --id, and it is stored there"
            )
        given = new_node_id()
    check_node_id(given)
    if store:
        store_node_id(data_dir, given)
    return given


def store_node_id(data_dir: str, node_id: str) -> None:
    """Write ``node_id`` to ``DATA-DIR/node-id`` (atomically) unless it is there already."""
    path = os.path.join(data_dir, ID_FILE)
    if _read(path) == node_id:
        return
    os.makedirs(data_dir, exist_ok=True)
    atomic_write(path, check_node_id(node_id).encode("utf-8") + b"\n")


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(1024)
    except FileNotFoundError:
        return None
    try:
        text = raw.decode("utf-8").strip()
        return check_node_id(text)
    except (UnicodeDecodeError, NodeIdError):
        raise NodeIdError(
            f"{path} does not hold a valid node id; restore it from a backup of this "
            "node (or wipe the data folder and add the node again)"
        ) from None
