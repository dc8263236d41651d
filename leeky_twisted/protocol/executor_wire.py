"""The executor's JSON-RPC 2.0 protocol: what the node and the executor share.

Requests are JSON-RPC 2.0 calls with named params, ``POST``\\ed to ``/jsonrpc``:

``status()``
    ``{"last_applied": int, "owner": str | null, "format": str}``.
``execute_batch(owner, entries)``
    Apply ``entries`` (a list of encoded entries, strictly increasing indexes)
    in order. An entry at or below ``last_applied`` is not applied again: its
    result is answered from the executor's cache of recent results (marked
    ``"replayed": true``), or ``"unknown": true`` when it is too old. Answers
    ``{"last_applied": int, "results": [result, ...]}`` once the new state is
    durable; one result per entry: ``{"index": i, "result": value}`` or
    ``{"index": i, "error": message}`` for a command the state machine refused
    (deterministically: the refusal is part of the replicated history).
``query(request)``
    Answer a read-only request from the current state; changes nothing.
``snapshot()``
    ``{"index": last_applied, "data": base64}``: the whole state.
``restore(owner, index, data)``
    Replace the whole state by a ``snapshot()``'s data taken at ``index``.

``owner`` names the one Raft node an executor serves (``cluster/node/token``,
the token made once with the node's data: see
:mod:`leeky_twisted.statemachine.owner`). The first mutating call binds the
executor to it; calls from any other owner are refused with
:data:`OWNER_MISMATCH`, so neither a second node nor a hand-driven call can
write into a node's executor.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from leeky_twisted.core.messages import MAX_INDEX
from leeky_twisted.protocol.jsonrpc_codes import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

__all__ = [
    "COMMAND_REJECTED",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "OWNER_MISMATCH",
    "PARSE_ERROR",
    "decode_entry",
    "decode_index",
    "decode_snapshot_data",
    "encode_entry",
    "encode_snapshot_data",
]

#: The executor is bound to another node.
OWNER_MISMATCH = -32010
#: Used by ``query`` when the request itself is refused.
COMMAND_REJECTED = -32011


def encode_entry(index: int, command: bytes) -> dict[str, Any]:
    """Return the JSON form of one entry.

    A command that is valid UTF-8 travels as text (``"command"``), so a human
    can read it and send it with curl; any other bytes travel as base64
    (``"command_b64"``).
    """
    try:
        return {"index": index, "command": command.decode("utf-8")}
    except UnicodeDecodeError:
        return {"index": index, "command_b64": base64.b64encode(command).decode("ascii")}


def decode_index(value: object, what: str, minimum: int = 0) -> int:
    """Return ``value`` if it is an integer log index in [``minimum``, MAX_INDEX].

    Raises ValueError naming ``what`` otherwise (indexes beyond any log are
    refused on both sides of the wire).
    """
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_INDEX:
        raise ValueError(f"{what} must be an integer from {minimum} to {MAX_INDEX}")
    return value


def decode_entry(value: object) -> tuple[int, bytes]:
    """Return ``(index, command)`` from :func:`encode_entry`'s form.

    Raises ValueError for anything else (an integer index in [1, MAX_INDEX]
    and exactly one of ``command``/``command_b64`` are required).
    """
    if not isinstance(value, dict):
        raise ValueError("an entry must be an object")
    index = decode_index(value.get("index"), "an entry's index", 1)
    keys = set(value) - {"index"}
    if keys == {"command"} and isinstance(value["command"], str):
        return index, value["command"].encode("utf-8")
    if keys == {"command_b64"} and isinstance(value["command_b64"], str):
        try:
            return index, base64.b64decode(value["command_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("command_b64 is not valid base64") from None
    raise ValueError('an entry needs exactly one of "command" (text) or "command_b64"')


def encode_snapshot_data(data: bytes) -> str:
    """Return snapshot bytes as base64 text."""
    return base64.b64encode(data).decode("ascii")


def decode_snapshot_data(text: object) -> bytes:
    """Return the bytes of :func:`encode_snapshot_data`'s text; ValueError when malformed."""
    if not isinstance(text, str):
        raise ValueError("snapshot data must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("snapshot data is not valid base64") from None
