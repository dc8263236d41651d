"""Moved to :mod:`leeky_twisted.protocol.executor_wire`; this name keeps old imports working."""

from leeky_twisted.protocol.executor_wire import (  # noqa: F401
    COMMAND_REJECTED,
    OWNER_MISMATCH,
    decode_entry,
    decode_index,
    decode_snapshot_data,
    encode_entry,
    encode_snapshot_data,
)
