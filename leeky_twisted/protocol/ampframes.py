"""Split AMP boxes out of received bytes by hand, for the client request path.

Twisted's AMP parser (``Int16StringReceiver`` plus ``BinaryBoxProtocol``)
delivers a box one key or value at a time through several method calls;
splitting whole boxes directly is several times cheaper. The wire format is
AMP's own: each key and value has a 2-byte big-endian length, keys are 1 to
255 bytes, and an empty key ends the box. :func:`receive_boxes` is the
``dataReceived`` loop both ends share (the node's client port and the
client's pooled connections).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.protocols import amp
from twisted.python.failure import Failure


def between_boxes(protocol: Any) -> bool:
    """Return True when an ``amp.BinaryBoxProtocol`` holds no part of a box.

    Only then may boxes be split by hand: AMP's parser has nothing buffered,
    is not paused, and has not handed the connection to another protocol.
    """
    return (
        not protocol._unprocessed
        and protocol.state == "init"
        and not protocol.paused
        and not protocol._locked
        and not protocol._justStartedTLS
        and protocol.innerProtocol is None
    )


def split_box(data: bytes, pos: int) -> tuple[dict[bytes, bytes], int] | None:
    """Return the box starting at ``data[pos]`` and the offset after it.

    None when the box is not all there yet, or is not valid AMP (a key over
    255 bytes): AMP's own parser then takes over at ``pos``, waiting for more
    or refusing the connection as it always does.
    """
    end = len(data)
    box: dict[bytes, bytes] = {}
    while True:
        if pos + 2 > end:
            return None
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if size == 0:
            return box, pos
        if size > 255 or pos + size + 2 > end:
            return None
        key = data[pos : pos + size]
        pos += size
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + size > end:
            return None
        box[key] = data[pos : pos + size]
        pos += size


def receive_boxes(protocol: Any, data: bytes, parse: Callable[[bytes], None]) -> None:
    """Dispatch the whole boxes at the start of ``data``; give the rest to ``parse``.

    ``protocol`` is an ``amp.BinaryBoxProtocol``; ``parse`` is its own
    ``dataReceived`` (AMP's parser, plus whatever the caller checks after it).
    Each box split by hand goes to ``protocol.ampBoxReceived``. The loop stops
    when the connection is gone (``protocol.transport`` is None: nothing more
    is read), or is paused or handed to another protocol (the bytes after that
    box go to ``parse``, which holds them as AMP does). ``parse`` gets all of
    ``data`` when AMP's parser holds part of a box (:func:`between_boxes`).
    """
    if not between_boxes(protocol):
        parse(data)
        return
    pos = 0
    end = len(data)
    received = protocol.ampBoxReceived
    while pos < end:
        split = split_box(data, pos)
        if split is None:
            break
        box, pos = split
        received(amp.AmpBox(box))
        if protocol.transport is None:  # the connection is gone
            return
        if protocol.paused or protocol._locked:
            break
    if pos < end:
        parse(data[pos:])


class QuietAMP(amp.AMP):
    """An AMP connection that does not log its opening and closing.

    Twisted's AMP logs two lines per connection ("connection established",
    "connection lost"); peers and pooled client connections say what matters
    themselves, at most once per connection.
    """

    def makeConnection(self, transport: Any) -> None:
        """Connect as AMP does, without its log line."""
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Disconnect as AMP does, without its log line."""
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
