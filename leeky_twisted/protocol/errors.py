"""Exceptions shared by the node, the client APIs and the client library.

Each exception must survive a trip over AMP, where an error is only a tag and a
description string: the receiving side rebuilds it as ``cls(description)``.
Every class here therefore accepts its own ``str()`` as its only argument and
rebuilds the same exception from it (``NotLeader`` parses the leader hint back).
"""

from __future__ import annotations

import json

__all__ = [
    "CommitTimeout",
    "Compacted",
    "InvalidRequest",
    "LeekyError",
    "NotCommitted",
    "NotLeader",
    "Removed",
    "SessionExpired",
    "Unavailable",
    "WatchCancelled",
    "removed_message",
]


class LeekyError(Exception):
    """Base of every error a client of Leeky Raft is expected to handle."""

    default_message = "error"

    def __init__(self, message: str | None = None) -> None:
        self.message = self.default_message if message is None else message
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


_NOT_LEADER_PREFIX = "not the leader; leader "


class NotLeader(LeekyError):
    """This node is not the leader; the leader, when known, is elsewhere.

    ``leader_id`` is the leader's node id and ``leader_address`` its *client*
    AMP address (``"host:port"``); either may be None when unknown. The
    description (``str(exc)``) carries both as JSON, so ``NotLeader(str(exc))``
    rebuilds an equal exception on the far side of an AMP connection.
    """

    def __init__(self, leader_id: str | None = None, leader_address: str | None = None) -> None:
        if leader_address is None and leader_id is not None:
            parsed = _parse_not_leader(leader_id)
            if parsed is not None:
                leader_id, leader_address = parsed
        self.leader_id = leader_id
        self.leader_address = leader_address
        hint = json.dumps({"id": leader_id, "address": leader_address}, sort_keys=True)
        super().__init__(_NOT_LEADER_PREFIX + hint)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NotLeader):
            return NotImplemented
        return (self.leader_id, self.leader_address) == (other.leader_id, other.leader_address)

    def __hash__(self) -> int:
        return hash((NotLeader, self.leader_id, self.leader_address))

    def __repr__(self) -> str:
        return f"NotLeader(leader_id={self.leader_id!r}, leader_address={self.leader_address!r})"


def _parse_not_leader(description: str) -> tuple[str | None, str | None] | None:
    """Return (leader_id, leader_address) from a NotLeader description, or None."""
    if not description.startswith(_NOT_LEADER_PREFIX):
        return None
    try:
        hint = json.loads(description[len(_NOT_LEADER_PREFIX) :])
    except ValueError:
        return None
    if not isinstance(hint, dict):
        return None
    leader_id, address = hint.get("id"), hint.get("address")
    if not (leader_id is None or isinstance(leader_id, str)):
        leader_id = str(leader_id)
    if not (address is None or isinstance(address, str)):
        address = None
    return leader_id, address


class CommitTimeout(LeekyError):
    """The request was not answered in time: it may or may not have been applied."""

    default_message = "timed out, outcome unknown"


class InvalidRequest(LeekyError):
    """The request was refused before reaching the log (bad key, value or argument)."""

    default_message = "invalid request"


class Unavailable(LeekyError):
    """No leader is known or reachable right now; retrying later may succeed."""

    default_message = "no leader known"


class Removed(LeekyError):
    """This node was removed from the cluster: it serves no request, ever, as it is.

    Not a reason to retry this node: a client tries another node instead. The
    message says what to do (use another node; add this one back, or wipe it
    and add it as a new node).
    """

    default_message = "this node was removed from the cluster: use another node"


def removed_message(node_id: str, index: int) -> str:
    """Return what a node removed at ``index`` answers every client request with."""
    return (
        f"node {node_id} was removed from the cluster (configuration change at {index}) and "
        "serves no requests: use another node. To bring it back, add it back "
        f"(`leekyraft add-server {node_id} PEER-ADDRESS` on a member), or stop it, wipe its "
        "data folder and add it as a new node"
    )


class NotCommitted(LeekyError):
    """The write was replaced by another leader's entry: it was definitely not applied.

    Unlike CommitTimeout, the outcome is known; retrying is safe.
    """

    default_message = "not committed: a new leader replaced the entry; safe to retry"


class SessionExpired(LeekyError):
    """The write names a session the cluster does not hold: it was not applied.

    The session was never registered, or it expired or was evicted (see
    docs/snapshots.md). The outcome of *this* attempt is known (nothing
    changed); register a new session to go on. An earlier attempt of the same
    write whose outcome was unknown may still have been applied: resending it
    in a new session could apply it twice.
    """

    default_message = "session unknown or expired: register a new session"


class Compacted(LeekyError):
    """A watch asked for events older than the node's window: they are gone.

    The message names the oldest revision still available ("compacted, oldest
    is R"); read the current state (a range) and watch from its revision.
    """

    default_message = "compacted: the revision asked for is older than the event window"


class WatchCancelled(LeekyError):
    """The node ended a watch (it fell too far behind, or the node is stopping).

    The message says why and the revision to resume from.
    """

    default_message = "watch cancelled"
