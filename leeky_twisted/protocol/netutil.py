"""Small helpers for writing to Twisted TCP transports on the hot path."""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet import tcp

from leeky_twisted.security.connlimits import GuardedProtocol

_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data``, sending it on the socket at once when nothing is queued.

    Twisted's TCP transport queues every write for the next reactor turn and
    registers the socket for writability first: two extra system calls and a
    turn of latency per answer. When the transport's buffer is empty, sending
    directly keeps the byte order and skips that; whatever the kernel does not
    take goes through the normal, buffered path. TLS transports and anything
    without a plain socket always take the normal path. A connection guard's
    wrapper (:class:`~leeky_twisted.security.connlimits.GuardedProtocol`) adds no bytes,
    so writes go through it to the transport underneath.
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
            return
        data = data[sent:]
    transport.write(data)


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
