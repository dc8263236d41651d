"""Every default a node runs with, in one place.

The twistd options (``tap.py``), :class:`~leeky_twisted.server.service.NodeOptions`,
:class:`~leeky_twisted.server.node.NodeSettings` and the API's limits all read these,
so a default changes here and nowhere else. This module imports nothing.
"""

from __future__ import annotations

TICK_SECONDS = 0.05  #: seconds per Raft tick
HEARTBEAT_TICKS = 2  #: ticks between leader heartbeats
#: seconds after an entry commits before an idle follower is told so (an append
#: sent meanwhile carries the commit index for free)
COMMIT_NOTICE_SECONDS = 0.005
ELECTION_TICKS = 10  #: minimum election timeout, in ticks (each node draws from [T, 2T))
REQUEST_TIMEOUT = 5.0  #: seconds before a request ends as "timed out, outcome unknown"
SNAPSHOT_ENTRIES = 100_000  #: take a snapshot after this many applied entries
SNAPSHOT_BYTES = 64 * 1024 * 1024  #: ... or once the entries applied since hold this many bytes
SNAPSHOT_TRAILING = 1000  #: entries kept behind a snapshot for slow followers
#: seconds: small writes run on the reactor while recent ones are quicker
INLINE_WRITE_BUDGET = 0.002
MAX_KEY_BYTES = 1024  #: largest key, in UTF-8 bytes
MAX_VALUE_BYTES = 1024 * 1024  #: largest value, in UTF-8 bytes
MAX_CLIENT_ID_BYTES = 128  #: largest client (session) id, in UTF-8 bytes
WATCH_WINDOW = 10_000  #: recent events a node keeps for watches
#: seconds between two checks that the data folder is still the one the node opened
#: (not deleted, not replaced); a node whose folder is gone stops (docs/storage.md)
DATA_DIR_CHECK_SECONDS = 1.0
HTTP_BODY_HEADROOM = 65536  #: bytes a JSON-RPC body may hold beyond two values


def http_body_bytes(max_value_bytes: int = MAX_VALUE_BYTES) -> int:
    """Return the largest JSON-RPC request body for ``max_value_bytes`` values (a CAS holds two)."""
    return 2 * max_value_bytes + HTTP_BODY_HEADROOM
