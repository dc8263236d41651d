"""The Txn request and its answer as bytes, without AMP's command machinery.

AMP turns each call into argument objects, several Deferreds and a box built
key by key (its argument-name conversions alone cost more than the box); a
transaction is the hot path of both ends, so they frame it directly: the
client its request (:func:`txn_request`), the node its answer
(:func:`txn_answer`) after reading the request with :func:`txn_arguments`.
The bytes are AMP's own, key for key (tests compare them with what AMP
writes), and anything unusual (a value over 65,535 bytes, a forwarded
request, an argument AMP would refuse) returns None: the caller then takes
AMP's usual path, which answers it as it always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from struct import pack
from typing import Any

from twisted.protocols import amp

from leeky_twisted.protocol import commands as cc

__all__ = ["txn_answer", "txn_arguments", "txn_request", "txn_response"]

_MAX = amp.MAX_VALUE_LENGTH
#: the keys a Txn request may hold for the direct path
_REQUEST_KEYS = frozenset(
    {b"_command", b"_ask", b"txn", b"client_id", b"seq", b"ack", b"forwarded"}
)
_SEQ = cc.BoundedInteger()


def _ascii_int(value: object) -> bytes | None:
    if type(value) is not int or not 0 <= value <= cc.MAX_SEQ:
        return None
    return b"%d" % value


def txn_request(
    tag: bytes, txn: object, client_id: object, seq: object, ack: object
) -> bytes | None:
    """Return the bytes AMP would write for ``Txn`` (asking ``tag``), or None.

    None when an argument is not the usual kind (text, integers in bounds) or
    a value would need more than one AMP value: then call AMP as usual.
    """
    if type(txn) is not str or type(client_id) is not str:
        return None
    seq_bytes, ack_bytes = _ascii_int(seq), _ascii_int(ack)
    if seq_bytes is None or ack_bytes is None:
        return None
    txn_bytes = txn.encode("utf-8", "surrogateescape")
    client = client_id.encode("utf-8", "surrogateescape")
    if len(txn_bytes) > _MAX or len(client) > _MAX or len(tag) > 255:
        return None
    # keys in sorted order, as AmpBox.serialize writes them
    return b"".join(
        (
            b"\x00\x04_ask",
            pack("!H", len(tag)),
            tag,
            b"\x00\x08_command\x00\x03Txn\x00\x03ack",
            pack("!H", len(ack_bytes)),
            ack_bytes,
            b"\x00\x09client_id",
            pack("!H", len(client)),
            client,
            b"\x00\x03seq",
            pack("!H", len(seq_bytes)),
            seq_bytes,
            b"\x00\x03txn",
            pack("!H", len(txn_bytes)),
            txn_bytes,
            b"\x00\x00",
        )
    )


def txn_response(box: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    """Return ``{"result": text}`` from an answer box in one piece, else None (let AMP parse)."""
    result = box.get(b"result")
    if result is None or b"result.1" in box:
        return None
    return {"result": result.decode("utf-8", "surrogateescape")}


def txn_arguments(box: Mapping[bytes, bytes]) -> dict[str, Any] | None:
    """Return the Txn responder's keyword arguments from a client's request box, or None.

    None for anything AMP's own parsing should see: an unknown or split key,
    a missing ``txn``, a malformed or out-of-bounds number, a forwarded
    request, a session half given.
    """
    for key in box:
        if key not in _REQUEST_KEYS:
            return None
    txn = box.get(b"txn")
    if txn is None or box.get(b"forwarded", b"False") != b"False":
        return None
    client, seq, ack = box.get(b"client_id"), box.get(b"seq"), box.get(b"ack")
    arguments: dict[str, Any] = {
        "txn": txn.decode("utf-8", "surrogateescape"),
        "client_id": None,
        "seq": None,
        "ack": None,
        "forwarded": False,
    }
    if client is None and seq is None and ack is None:  # no session
        return arguments
    if client is None or seq is None or ack is None:
        return None
    try:
        arguments["seq"], arguments["ack"] = _SEQ.fromString(seq), _SEQ.fromString(ack)
    except ValueError:
        return None
    arguments["client_id"] = client.decode("utf-8", "surrogateescape")
    return arguments


def txn_answer(tag: bytes, result: str) -> bytes | None:
    """Return the bytes of the answer ``{"result": result}`` to request ``tag``, or None.

    None when ``result`` needs more than one AMP value (then answer as AMP does).
    """
    data = result.encode("utf-8", "surrogateescape")
    if len(data) > _MAX or len(tag) > 255:
        return None
    return b"".join(
        (
            b"\x00\x07_answer",
            pack("!H", len(tag)),
            tag,
            b"\x00\x06result",
            pack("!H", len(data)),
            data,
            b"\x00\x00",
        )
    )
