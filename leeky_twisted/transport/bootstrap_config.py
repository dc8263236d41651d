"""The bootstrap configuration a node states in its peer Hello.

Every member of a static ``--peers`` cluster writes the same first entries
(one configuration entry per voter, at term 1) when it starts on an empty
folder. A member started with another ``--peers`` list (other ids, other
addresses, another order) writes other entries at the same index and term,
and Raft's Log Matching would break silently: no leader ever replaces them.
So each node states a digest of its bootstrap entries in its Hello, and a
node refuses a peer whose digest differs from its own, naming both
configurations in its log; the two never exchange a Raft message.

A node without a bootstrap configuration (one that ``--join``\\s, and learns
the cluster's entries from the leader) states none and is refused by nobody;
and it accepts anybody's.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

#: Longest description sent in a Hello (the whole box must stay small before it is accepted).
MAX_DESCRIPTION_BYTES = 1024
_LABEL = b"leeky-raft bootstrap v1"


@dataclass(frozen=True)
class BootstrapConfig:
    """A node's bootstrap entries: their digest (compared) and a description (logged)."""

    digest: str
    description: str

    @classmethod
    def of(cls, voters: Sequence[tuple[str, bytes]], description: str) -> BootstrapConfig | None:
        """Return the configuration of these bootstrap voters (id, context), or None if none.

        ``voters`` must be exactly what the node writes as its first entries,
        in order; ``description`` says it for people (e.g. the ``--peers`` list).
        """
        if not voters:
            return None
        digest = hashlib.sha256(_LABEL)
        for node_id, context in voters:
            for part in (node_id.encode("utf-8"), context):
                digest.update(struct.pack("!I", len(part)) + part)
        short = description.encode("utf-8")[:MAX_DESCRIPTION_BYTES].decode("utf-8", "ignore")
        return cls(digest.hexdigest(), short)

    def refusal(self, node_id: str, digest: str | None, description: str | None) -> str | None:
        """Return why ``node_id``'s stated configuration cannot join ours, or None.

        A peer that states none (a joiner, or an older node) is accepted.
        """
        if digest is None or digest == self.digest:
            return None
        return (
            f"node {node_id!r} was started with another bootstrap configuration "
            f"({description or 'digest ' + digest[:16]}) than ours ({self.description}): "
            "their first log entries would differ at the same index and term; start every "
            "member of a static cluster with the same --peers list, in the same order"
        )
