"""Small helpers for writing to Twisted TCP transports on the hot path."""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper

from leeky_twisted.security.connlimits import GuardedProtocol

_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport: Any, data: bytes) -> bool:
    """Write ``data``, sending it on the socket at once when nothing is queued.

    Twisted's TCP transport queues every write for the next reactor turn and
    registers the socket for writability first: two extra system calls and a
    turn of latency per answer. When the transport's buffer is empty, sending
    directly keeps the byte order and skips that; whatever the kernel does not
    take goes through the normal, buffered path. TLS transports and anything
    without a plain socket always take the normal path. A connection guard's
    wrapper (:class:`~leeky_twisted.security.connlimits.GuardedProtocol`) adds no bytes,
    so writes go through it to the transport underneath.

    Return False when the socket took all of ``data``, True when some of it
    went to the transport's buffer (for :class:`~leeky_twisted.protocol.sendlimit.SendLimit`).
    """
    if type(transport) is GuardedProtocol:
        transport = transport.transport
    # Only a plain TCP connection: wrappers (TLS) forward attribute lookups to
    # the socket underneath, and bytes sent there would bypass the encryption.
    # (Twisted also turns a tcp.Server itself into TLS with startTLS: its TLS flag.)
    plain = type(transport) in _PLAIN_TCP and not getattr(transport, "TLS", True)
    sock = transport.socket if plain else None
    if (
        sock is not None
        and not getattr(transport, "_tempDataLen", 1)
        and getattr(transport, "dataBuffer", b"x") == b""
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # let the normal path see and report the error
        if sent == len(data):
            return False
        data = data[sent:]
    transport.write(data)
    return True


def no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off on ``transport``'s socket, when it has one.

    An RPC connection that also carries pushed events (a watch's) sends small
    boxes back to back; with Nagle the second waits for the peer's delayed
    acknowledgement (40 ms on Linux) whenever the peer has nothing to send.
    """
    if type(transport) is GuardedProtocol:
        transport = transport.transport
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        with contextlib.suppress(OSError):  # not a TCP socket after all
            set_no_delay(True)


def buffered_bytes(transport: Any) -> int:
    """Return the bytes written to ``transport`` that its socket has not yet taken.

    Wrappers are looked through: a connection guard's
    (:class:`~leeky_twisted.security.connlimits.GuardedProtocol`, any Twisted
    ``ProtocolWrapper``) holds nothing. TLS (``TLSMemoryBIOProtocol``, as a
    wrapper or through ``startTLS``) encrypts each write at once into the TCP
    transport's buffer, counted there (the ciphertext: the plaintext plus a few
    bytes per 16 KiB record); it keeps plaintext itself only while a handshake
    is under way, and for one reactor turn from small writes, counted too
    (:func:`_tls_plaintext`). A TCP transport
    (Twisted's ``FileDescriptor``) holds ``dataBuffer`` from ``offset`` plus
    ``_tempDataLen``. Anything else (an in-memory test transport) counts 0.
    """
    total = 0
    for _ in range(8):  # TLS and guard layers, a few at most; never loop on a strange chain
        if isinstance(transport, ProtocolWrapper):
            # (a wrapper forwards unknown attributes: dataBuffer would be the socket's)
            total += _tls_plaintext(transport)
            if transport.transport is None:
                return total
            transport = transport.transport
            continue
        data = getattr(transport, "dataBuffer", None)
        if not isinstance(data, bytes):
            return total
        total += len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
        if getattr(transport, "TLS", False):  # startTLS: the TLS layer is the protocol
            total += _tls_plaintext(getattr(transport, "protocol", None))
        return total
    return total


def _tls_plaintext(layer: Any) -> int:
    """Return the plaintext a ``TLSMemoryBIOProtocol`` holds (0 for anything else).

    That is what waits for a handshake (``_appSendBuffer``), and what Twisted's
    ``BufferingTLSTransport`` gathers from small writes until the next reactor
    turn (its ``_aggregator``, at most 64 KB).
    """
    if not isinstance(layer, ProtocolWrapper):
        return 0
    # Its own attributes only: a wrapper forwards unknown ones to the layer below.
    own = vars(layer)
    total = 0
    aggregator = own.get("_aggregator")
    for waiting in (own.get("_appSendBuffer"), getattr(aggregator, "_buffer", None)):
        if isinstance(waiting, list):
            total += sum(len(chunk) for chunk in waiting)
    return total
