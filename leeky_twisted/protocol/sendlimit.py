"""Bound the answers a client connection holds unsent (a client that never reads).

A client may pipeline requests (gets of a large value) and never read the
answers: each answer then waits in the node's memory. :class:`SendLimit`
stops reading a connection's requests while it holds more than
:data:`PAUSE_UNSENT_BYTES` unsent, and reads again once under half that
(looked at every :data:`RESUME_POLL` seconds, only while paused); and it
aborts the connection once it holds more than :data:`MAX_UNSENT_BYTES`
besides the answer just written (requests read before the pause may still
be answered). One answer larger than the cap still goes to a client that reads.

The check runs only when an answer could not go on the socket at once
(:func:`~leeky_twisted.protocol.netutil.write_now` returned True): an answer
sent whole costs one test of a boolean. And it looks at the buffer only once
:data:`CHECK_BYTES` more were left in it (every answer under TLS is): the
bounds are kept to within that.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from leeky_twisted.protocol.netutil import buffered_bytes
from leeky_twisted.security.connlimits import GuardedProtocol, RateLimitedLog

__all__ = [
    "CHECK_BYTES",
    "MAX_UNSENT_BYTES",
    "PAUSE_UNSENT_BYTES",
    "RESUME_POLL",
    "SendLimit",
    "clock_or_reactor",
]

#: Unsent bytes over which a connection's requests are no longer read.
PAUSE_UNSENT_BYTES = 1 << 20
#: Unsent bytes (not counting the answer just written) over which a connection
#: is aborted: four of the largest answers (a range is cut at 4 MiB), sixteen 1 MiB values.
MAX_UNSENT_BYTES = 16 << 20
#: Seconds between looks at a paused connection's unsent bytes.
RESUME_POLL = 0.05
#: Bytes left in a connection's buffer between two looks at its size.
CHECK_BYTES = 64 << 10

_log = Logger()
#: Aborts of unguarded connections (tests, embedding), logged once a minute per peer.
_aborts = RateLimitedLog()


class SendLimit:
    """One connection's bound on unsent answers; see the module docstring.

    :param transport: the protocol's transport (a connection guard's wrapper,
        TLS, or TCP): it is paused, resumed and aborted.
    :param clock: for the resume poll.
    :param port: the port's name in the log line (``client``, ``http``).
    """

    __slots__ = (
        "_holds",
        "_timer",
        "_unchecked",
        "aborted",
        "check_bytes",
        "clock",
        "max_unsent",
        "pause_unsent",
        "paused",
        "port",
        "transport",
    )

    def __init__(
        self,
        transport: Any,
        clock: IReactorTime,
        port: str,
        *,
        pause_unsent: int = PAUSE_UNSENT_BYTES,
        max_unsent: int = MAX_UNSENT_BYTES,
        check_bytes: int = CHECK_BYTES,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.port = port
        self.pause_unsent = pause_unsent
        self.max_unsent = max_unsent
        self.check_bytes = check_bytes
        self._unchecked = 0  # bytes left in the buffer since the last look
        #: reading is paused because too much is unsent
        self.paused = False
        #: the connection was aborted: further answers are dropped
        self.aborted = False
        self._holds = 0  # reasons reading is paused (this one, the protocol's own)
        self._timer: IDelayedCall | None = None

    def hold_reading(self) -> None:
        """Pause reading for one more reason (the protocol's own: pipelined requests)."""
        self._holds += 1
        if self._holds == 1 and not self.aborted:
            self.transport.pauseProducing()

    def release_reading(self) -> None:
        """Drop one reason to pause reading; read again when none is left."""
        self._holds -= 1
        if self._holds == 0 and not self.aborted:
            self.transport.resumeProducing()

    def queued(self, size: int) -> None:
        """Check the connection after an answer of ``size`` bytes was left in its buffer."""
        unchecked = self._unchecked + size
        if unchecked < self.check_bytes:
            self._unchecked = unchecked
            return
        self._unchecked = 0
        if self.aborted:
            return
        unsent = buffered_bytes(self.transport)
        if unsent - size > self.max_unsent:
            self._abort(unsent)
        elif unsent > self.pause_unsent and not self.paused:
            self.paused = True
            self.hold_reading()
            self._timer = self.clock.callLater(RESUME_POLL, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if self.aborted:
            return
        if buffered_bytes(self.transport) > self.pause_unsent // 2:
            self._timer = self.clock.callLater(RESUME_POLL, self._poll)
            return
        self.paused = False
        self.release_reading()

    def stop(self, resume: bool = False) -> None:
        """Stop polling: the connection is gone (or, with ``resume``, handed over:
        this pause is released)."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.paused:
            self.paused = False
            self._holds -= 1
            if resume and self._holds == 0 and not self.aborted:
                self.transport.resumeProducing()

    def _abort(self, unsent: int) -> None:
        self.aborted = True
        self.stop()
        transport = self.transport
        guarded = _guarded(transport)
        if guarded is not None:
            guarded.factory.guard.unsent_overflow(guarded.host, unsent, self.max_unsent)
        else:
            peer = _peer(transport)
            _aborts.warn(
                f"unsent {peer}",
                "{port} port: aborted the connection from {host}: it held {unsent} bytes"
                " of answers unsent (limit {limit}); the client does not read them",
                port=self.port,
                host=peer,
                unsent=unsent,
                limit=self.max_unsent,
            )
        transport.abortConnection()


def clock_or_reactor(clock: IReactorTime | None) -> IReactorTime:
    """Return ``clock``, or the global reactor when it is None."""
    if clock is not None:
        return clock
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


def _guarded(transport: Any) -> GuardedProtocol | None:
    """Return the connection guard's wrapper under ``transport`` (TLS, role checks), or None."""
    for _ in range(8):  # a few wrappers at most
        if type(transport) is GuardedProtocol:
            return transport
        if not isinstance(transport, ProtocolWrapper):
            return None
        transport = transport.transport
    return None


def _peer(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "unknown"
    return str(getattr(peer, "host", peer))
