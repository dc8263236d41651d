"""The owner name a node gives its executor: ``cluster/node/token``.

An executor applies one node's log and keeps that log's indexes as its own
(``last_applied``). Anyone else who writes into it (a hand-driven ``curl``, a
second node given the same ``--executor-url``) makes its state diverge from
the other replicas for good, and a linearizable ``query`` then answers
differently depending on who leads. The executor binds itself to the first
owner that changes it and refuses every other owner, so the owner must be a
name nobody else uses by accident: ``cluster/node`` alone is guessable (and the
docs used to show it), so a random token created once with the node's data is
added. A node whose data folder is new gets a new token, and so needs a new
(empty) executor: its old executor refuses it instead of being silently reused.
"""

from __future__ import annotations

import os
import re
import secrets

from leeky_twisted.storage.fsutil import atomic_write

__all__ = ["OWNER_FILE", "OwnerFileError", "node_executor_owner"]

#: The file in a node's data folder that holds its executor owner token.
OWNER_FILE = "executor-owner"
_TOKEN = re.compile(r"[0-9a-f]{32}")


class OwnerFileError(ValueError):
    """The owner token file is damaged; the node must not guess a new one."""


def node_executor_owner(data_dir: str, cluster_id: str, node_id: str) -> str:
    """Return ``cluster/node/token``, creating the token in ``data_dir`` the first time.

    Raises OwnerFileError naming the file when it holds something else than a token.
    """
    path = os.path.join(data_dir, OWNER_FILE)
    try:
        with open(path, "rb") as f:
            token = f.read().decode("ascii", "replace").strip()
    except FileNotFoundError:
        token = secrets.token_hex(16)
        os.makedirs(data_dir, exist_ok=True)
        atomic_write(path, token.encode("ascii") + b"\n")
    if not _TOKEN.fullmatch(token):
        raise OwnerFileError(
            f"{path} does not hold an executor owner token (32 hex digits); if it was "
            "damaged, move it away and give this node a new, empty executor"
        )
    return f"{cluster_id}/{node_id}/{token}"
