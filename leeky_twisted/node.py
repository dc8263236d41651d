"""Moved to :mod:`leeky_twisted.server.node`: the old name still imports."""

from leeky_twisted.server.node import (  # noqa: F401
    INLINE_PERSIST_BYTES,
    NodeSettings,
    RaftNode,
    UnrecoverableStateError,
    check_peer_address,
    decode_snapshot,
    encode_snapshot,
    new_storage_id,
)
