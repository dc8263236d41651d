"""Moved to :mod:`leeky_twisted.protocol.errors`; this name keeps old imports working."""

from leeky_twisted.protocol.errors import (  # noqa: F401
    CommitTimeout,
    Compacted,
    InvalidRequest,
    LeekyError,
    NotCommitted,
    NotLeader,
    SessionExpired,
    Unavailable,
    WatchCancelled,
)
