"""Bounds on the connections of every listening port.

A :class:`ConnectionGuard` watches one listening port:

- a **cap** on open connections, and on open connections from one source
  address; a connection over either is closed at once (its factory returns
  None, so Twisted closes the accepted socket before any protocol exists),
  counted, and logged at most once per ``log_interval``;
- a **first-bytes timeout**: a connection that sends nothing within
  ``handshake_timeout`` seconds is aborted (TLS ports also abort a connection
  whose handshake has not completed by then: see :mod:`leeky_twisted.security.tls`);
- an **idle timeout**: a connection that has neither received nor sent
  anything for ``idle_timeout`` seconds is aborted (a streamed answer, such as
  the dashboard's events, keeps its connection busy by what it sends). None
  disables it (the peer port: a peer's Hello has its own timeout, and a
  connected peer is never idle while a leader heartbeats);
- a **request read timeout**: a request whose first bytes have arrived must
  be whole within ``request_read_timeout`` seconds, or the connection is
  aborted, so a client that drips one byte per idle timeout into an
  unfinished request cannot hold it forever. The guard asks the protocol
  under it (through any wrappers, such as TLS) after each read; a protocol
  takes part by having :meth:`unfinished_request` (see
  :class:`RequestReader`): the client AMP and HTTP protocols do;
- a **budget of held bytes**: what all unfinished requests of one port hold
  together (each at most one request's byte bound) may not pass
  ``max_held_bytes``; the connection whose read passes it is aborted, so a
  port full of unfinished large requests cannot take its cap times the
  request bound of memory (4,096 times 2 MiB by default).

:class:`GuardedFactory` wraps the factory a port listens with (outside TLS,
so a refused connection never costs a handshake). The wrapper adds no bytes:
:func:`leeky_twisted.protocol.netutil.write_now` writes through it to the socket.

The caps are sized from the descriptor limit (:func:`plan_caps`), which
:func:`raise_descriptor_limit` raises to its hard limit at start, so that
accepted connections can never take the descriptors that the disk, the
outgoing peer links and the forwarding connections need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_HELD_BYTES",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_REQUEST_READ_TIMEOUT",
    "RESERVED_DESCRIPTORS",
    "CapPlan",
    "ConnectionGuard",
    "GuardedFactory",
    "GuardedProtocol",
    "PortCaps",
    "RateLimitedLog",
    "RequestReader",
    "plan_caps",
    "raise_descriptor_limit",
]

log = Logger()

#: Seconds a client connection may stay silent before it is closed.
DEFAULT_IDLE_TIMEOUT = 300.0
#: Seconds a new connection has to send its first bytes (and finish a TLS handshake).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds a client request may take to arrive whole once its first bytes did.
DEFAULT_REQUEST_READ_TIMEOUT = 30.0
#: Bytes the unfinished requests of one client port may hold together (at
#: least four requests of the largest size are always let in: see service.py).
DEFAULT_HELD_BYTES = 256 * 1024 * 1024
#: Descriptors never given to accepted connections: log segments, snapshots,
#: the hard state, outgoing peer and forwarding connections, gossip, epoll, pipes.
RESERVED_DESCRIPTORS = 128
#: Largest default cap on the peer port, and on each client port.
MAX_DEFAULT_PEER_CONNECTIONS = 256
MAX_DEFAULT_CLIENT_CONNECTIONS = 4096
#: Smallest cap a port gets, whatever the descriptor limit.
MIN_CAP = 8
#: Seconds between two log lines about the same kind of refusal on one port.
LOG_INTERVAL = 60.0


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    An unlimited hard limit is raised to 65,536 only; a limit the system
    refuses is left as it was (the caps are then sized from it).
    """
    try:
        import resource
    except ImportError:  # not POSIX: no limit to raise
        return 1024 + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warn(
                "cannot raise the open-files limit from {soft} to {target}: {why}",
                soft=soft,
                target=target,
                why=e,
            )
        else:
            soft = target
    return 65536 if soft == resource.RLIM_INFINITY else int(soft)


@dataclass(frozen=True)
class PortCaps:
    """How many connections one port accepts, in all and from one source address."""

    max_connections: int
    max_per_host: int

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_host < 1:
            raise ValueError("connection caps must be at least 1")


@dataclass(frozen=True)
class CapPlan:
    """The caps of a node's ports, and any warning about how they were sized."""

    peer: PortCaps
    client: PortCaps  #: for the AMP client port and the HTTP port, each
    warnings: tuple[str, ...] = ()


def plan_caps(
    descriptors: int,
    max_client_connections: int | None = None,
    max_per_host: int | None = None,
) -> CapPlan:
    """Size the caps so that every port full still leaves RESERVED_DESCRIPTORS free.

    The peer port gets an eighth of what is left (at most 256); the AMP and
    HTTP ports share the rest (at most 4,096 each). A client cap asked for
    beyond that budget is lowered to it, with a warning. One source address
    may take half of a port's cap unless ``max_per_host`` says otherwise.
    """
    usable = max(descriptors - RESERVED_DESCRIPTORS, 3 * MIN_CAP)
    peer = min(MAX_DEFAULT_PEER_CONNECTIONS, max(MIN_CAP, usable // 8))
    budget = max(MIN_CAP, (usable - peer) // 2)
    warnings: list[str] = []
    if max_client_connections is None:
        client = min(MAX_DEFAULT_CLIENT_CONNECTIONS, budget)
    elif max_client_connections > budget:
        client = budget
        warnings.append(
            f"--max-client-connections {max_client_connections} lowered to {budget}: "
            f"the open-files limit is {descriptors} and {RESERVED_DESCRIPTORS + peer} "
            "descriptors are kept for the disk and the peers"
        )
    else:
        client = max_client_connections
    per_host = max(1, client // 2) if max_per_host is None else min(max_per_host, client)
    return CapPlan(PortCaps(peer, max(1, peer // 2)), PortCaps(client, per_host), tuple(warnings))


#: Kinds a RateLimitedLog remembers before it forgets those past their interval.
_MAX_KINDS = 1024


class RateLimitedLog:
    """Log one kind of event at most once per ``interval``, with how many were not logged.

    :param seconds: the clock, e.g. ``reactor.seconds`` (``time.monotonic`` by default).
    """

    def __init__(
        self, seconds: Callable[[], float] = time.monotonic, interval: float = LOG_INTERVAL
    ) -> None:
        self._seconds = seconds
        self._interval = interval
        self._next: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, kind: str, format: str, **fields: Any) -> None:
        """Log ``format`` now, or count it when ``kind`` was logged less than an interval ago."""
        now = self._seconds()
        if len(self._next) > _MAX_KINDS:  # kinds keyed by peer: forget the quiet ones
            self._next = {k: t for k, t in self._next.items() if t > now}
            self._quiet = {k: n for k, n in self._quiet.items() if k in self._next}
        if now < self._next.get(kind, float("-inf")):
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        self._next[kind] = now + self._interval
        quiet = self._quiet.pop(kind, 0)
        suffix = f" ({quiet} more like it not logged)" if quiet else ""
        log.warn(format + suffix, **fields)


class RequestReader(Protocol):
    """A protocol that tells its guard whether a request is partly received."""

    def unfinished_request(self) -> int | None:
        """Return the number of the request whose bytes are arriving, or None.

        None when no byte of an unfinished request is held. The number (for
        example how many requests were received whole before it) tells one
        unfinished request from the next.
        """

    def held_bytes(self) -> int:
        """Return the bytes held for the unfinished request (0 when there is none)."""


class ConnectionGuard:
    """Admission, timeouts and counters of one listening port.

    :param name: the port's name in log lines and metrics (``client``, ``http``, ``peer``).
    :param idle_timeout: seconds without received bytes before a connection
        is closed; None: never.
    :param handshake_timeout: seconds a new connection has to send its first
        bytes; None: no limit.
    :param request_read_timeout: seconds a request (of a :class:`RequestReader`)
        may take to arrive whole from its first bytes; None: no limit.
    :param max_held_bytes: bytes the unfinished requests of the port's
        :class:`RequestReader` connections may hold together; None: no limit.
    """

    def __init__(
        self,
        name: str,
        caps: PortCaps,
        clock: IReactorTime,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        request_read_timeout: float | None = None,
        max_held_bytes: int | None = None,
        log_interval: float = LOG_INTERVAL,
    ) -> None:
        if max_held_bytes is not None and max_held_bytes < 1:
            raise ValueError("max_held_bytes must be positive or None")
        for what, value in (
            ("idle_timeout", idle_timeout),
            ("handshake_timeout", handshake_timeout),
            ("request_read_timeout", request_read_timeout),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{what} must be positive or None")
        self.name = name
        self.caps = caps
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.request_read_timeout = request_read_timeout
        self.max_held_bytes = max_held_bytes
        #: Bytes held for unfinished requests on this port now, all connections together.
        self.held = 0
        self.open = 0
        self.by_host: dict[str, int] = {}
        #: Connections refused, by reason (``port_cap``, ``host_cap``; ``held_bytes``:
        #: aborted when its unfinished request took the port past ``max_held_bytes``).
        self.refused: dict[str, int] = {"port_cap": 0, "host_cap": 0, "held_bytes": 0}
        #: Connections closed by this guard, by reason (``idle``, ``handshake``,
        #: ``request``: a request not whole within the request read timeout;
        #: ``unsent``: aborted holding too many answers unsent, ``protocol.sendlimit``).
        self.closed: dict[str, int] = {"idle": 0, "handshake": 0, "request": 0, "unsent": 0}
        self.events = RateLimitedLog(clock.seconds, log_interval)

    def admit(self, host: str) -> bool:
        """Count a new connection from ``host`` in, or refuse it (counted and logged)."""
        held = self.by_host.get(host, 0)
        if self.open >= self.caps.max_connections:
            reason, cap = "port_cap", self.caps.max_connections
        elif held >= self.caps.max_per_host:
            reason, cap = "host_cap", self.caps.max_per_host
        else:
            self.open += 1
            self.by_host[host] = held + 1
            return True
        self.refused[reason] += 1
        where = "on the port" if reason == "port_cap" else f"from {host}"
        self.events.warn(
            reason,
            "{port} port: refused a connection from {host}: {cap} connections already open "
            + where,
            port=self.name,
            host=host,
            cap=cap,
        )
        return False

    def release(self, host: str) -> None:
        """Count a connection from ``host`` out."""
        self.open -= 1
        held = self.by_host.get(host, 0) - 1
        if held > 0:
            self.by_host[host] = held
        else:
            self.by_host.pop(host, None)

    def over_budget(self, host: str) -> None:
        """Count (and log, at most once per interval) a connection aborted over the budget."""
        self.refused["held_bytes"] += 1
        self.events.warn(
            "held_bytes",
            "{port} port: closed a connection from {host}: unfinished requests on the port "
            "held more than {budget} bytes",
            port=self.name,
            host=host,
            budget=self.max_held_bytes,
        )

    def timed_out(self, reason: str, host: str) -> None:
        """Count (and log, at most once per interval) a connection closed for ``reason``."""
        self.closed[reason] += 1
        seconds, what = {
            "idle": (self.idle_timeout, "received nothing for"),
            "handshake": (self.handshake_timeout, "sent nothing for"),
            "request": (self.request_read_timeout, "had not sent its request whole after"),
        }[reason]
        self.events.warn(
            reason,
            "{port} port: closed a connection from {host} that {what} {seconds} s",
            port=self.name,
            host=host,
            what=what,
            seconds=seconds,
        )

    def unsent_overflow(self, host: str, unsent: int, limit: int) -> None:
        """Count (and log, at most once per interval per host) a connection aborted
        for holding more than ``limit`` bytes of answers unsent."""
        self.closed["unsent"] += 1
        self.events.warn(
            f"unsent {host}",
            "{port} port: aborted a connection from {host} that held {unsent} bytes of"
            " answers unsent (limit {limit}); the client does not read them",
            port=self.name,
            host=host,
            unsent=unsent,
            limit=limit,
        )


#: Timers fire this close to their time or later; float sums may land just short.
_SLACK = 0.001


def _host(addr: IAddress | None) -> str:
    host = getattr(addr, "host", None)
    return str(host) if host is not None else str(addr)


class GuardedProtocol(ProtocolWrapper):
    """One admitted connection: enforces the guard's timeouts, releases its slot when lost."""

    factory: GuardedFactory

    def __init__(self, factory: GuardedFactory, wrapped: Any, host: str) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self.host = host
        guard = factory.guard
        self._guard = guard
        self._seconds = guard.clock.seconds
        #: When the last bytes arrived; None until the first do.
        self.last_received: float | None = None
        #: When bytes were last written through this wrapper (streamed answers).
        self.last_sent: float | None = None
        self._connected_at = 0.0
        self._timer: IDelayedCall | None = None
        #: The unfinished request being timed, and its deadline's timer.
        self._request: int | None = None
        self._request_timer: IDelayedCall | None = None
        self._held = 0  # this connection's share of the guard's held bytes
        self._found_reader: Any = False  # not looked for yet
        self._lost = False
        self._watch = guard.request_read_timeout is not None or guard.max_held_bytes is not None

    def makeConnection(self, transport: Any) -> None:
        """Start the first-bytes (or idle) timer, then connect the wrapped protocol."""
        guard = self._guard
        self._connected_at = self._seconds()
        delay = guard.handshake_timeout
        if delay is None:
            delay = guard.idle_timeout
        if delay is not None:
            self._timer = guard.clock.callLater(delay, self._check)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        """Note the time, pass ``data`` on, and time the request it left unfinished."""
        self.last_received = self._seconds()
        self.wrappedProtocol.dataReceived(data)
        if self._watch and not self._lost:
            reader = self._reader()
            if reader is not None:
                self._time_request(reader)
                self._count_held(reader)

    def _count_held(self, reader: Any) -> None:
        """Add this connection's held bytes to the port's; abort it when that passes the budget."""
        guard = self._guard
        if guard.max_held_bytes is None or not hasattr(reader, "held_bytes"):
            return
        held = int(reader.held_bytes())
        guard.held += held - self._held
        self._held = held
        if held and guard.held > guard.max_held_bytes:
            guard.over_budget(self.host)
            self._abort()

    def _reader(self) -> Any:
        """Return the RequestReader under this wrapper and any others (TLS), or None."""
        reader = self._found_reader
        if reader is False:
            reader = self.wrappedProtocol
            while reader is not None and not hasattr(reader, "unfinished_request"):
                reader = getattr(reader, "wrappedProtocol", None)
            self._found_reader = reader
        return reader

    def _time_request(self, reader: Any) -> None:
        """Start the deadline of a newly unfinished request; stop it once none is."""
        if self._guard.request_read_timeout is None:
            return
        current = reader.unfinished_request()
        if current is not None and current == self._request:
            return  # the same request is still arriving: its deadline stands
        timer, self._request_timer = self._request_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._request = current
        if current is not None:
            guard = self._guard
            assert guard.request_read_timeout is not None
            self._request_timer = guard.clock.callLater(
                guard.request_read_timeout, self._request_due
            )

    def _request_due(self) -> None:
        self._request_timer = None
        if self.transport is None or self.wrappedProtocol is None:
            return
        self._guard.timed_out("request", self.host)
        self._abort()

    def write(self, data: bytes) -> None:
        """Note the time and write ``data``."""
        self.last_sent = self._seconds()
        super().write(data)  # type: ignore[no-untyped-call]

    def writeSequence(self, data: Any) -> None:
        """Note the time and write ``data``."""
        self.last_sent = self._seconds()
        super().writeSequence(data)  # type: ignore[no-untyped-call]

    def _check(self) -> None:
        self._timer = None
        guard = self._guard
        if self.transport is None or self.wrappedProtocol is None:
            return
        last = self.last_received
        if last is None and guard.handshake_timeout is not None:
            guard.timed_out("handshake", self.host)
            self._abort()
            return
        if guard.idle_timeout is None:
            return
        if self.last_sent is not None:
            last = self.last_sent if last is None else max(last, self.last_sent)
        silent = self._seconds() - (self._connected_at if last is None else last)
        if silent >= guard.idle_timeout - _SLACK:
            guard.timed_out("idle", self.host)
            self._abort()
            return
        self._timer = guard.clock.callLater(guard.idle_timeout - silent, self._check)

    def _abort(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Stop the timers, give the slot back, and tell the wrapped protocol."""
        self._lost = True
        self._guard.held -= self._held
        self._held = 0
        for timer in (self._timer, self._request_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._request_timer = None
        self._guard.release(self.host)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class GuardedFactory(WrappingFactory):
    """Wrap a port's factory: admit connections through ``guard`` and watch their time.

    Put it outermost (outside TLS): a refused connection is closed before any
    protocol, TLS or other, is built for it.
    """

    protocol = GuardedProtocol
    noisy = False

    def __init__(self, wrapped: Any, guard: ConnectionGuard) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self.guard = guard

    def buildProtocol(self, addr: IAddress | None) -> GuardedProtocol | None:  # type: ignore[override]
        """Return a guarded protocol, or None (the socket is closed at once) over a cap."""
        host = _host(addr)
        if not self.guard.admit(host):
            return None
        try:
            inner = self.wrappedFactory.buildProtocol(addr)
        except BaseException:
            self.guard.release(host)
            raise
        if inner is None:
            self.guard.release(host)
            return None
        return GuardedProtocol(self, inner, host)


def guard_metrics(guards: list[ConnectionGuard]) -> Iterator[Any]:
    """Yield Prometheus metric families for ``guards`` (open, refused, timed out)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    open_ = GaugeMetricFamily(
        "leeky_connections_open", "Connections open on a listening port.", labels=["port"]
    )
    cap = GaugeMetricFamily(
        "leeky_connections_cap", "Most connections a listening port accepts.", labels=["port"]
    )
    refused = CounterMetricFamily(
        "leeky_connections_refused",
        "Connections closed at once because a cap was reached.",
        labels=["port", "reason"],
    )
    closed = CounterMetricFamily(
        "leeky_connections_timed_out",
        "Connections closed for silence (idle), no first bytes (handshake), a "
        "request not whole in time (request), or too many answers unsent (unsent).",
        labels=["port", "reason"],
    )
    for guard in guards:
        open_.add_metric([guard.name], guard.open)
        cap.add_metric([guard.name], guard.caps.max_connections)
        for reason, n in guard.refused.items():
            refused.add_metric([guard.name, reason], n)
        for reason, n in guard.closed.items():
            closed.add_metric([guard.name, reason], n)
    yield from (open_, cap, refused, closed)
