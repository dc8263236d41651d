"""A Deferred-returning client of a Leeky Raft cluster, over AMP.

:class:`LeekyClient` finds the leader by itself: it starts anywhere, follows
NotLeader hints to the leader's address, moves on to the next address when a
node cannot be reached, and remembers the leader for later calls. One node
costs a call at most about ``attempt_timeout`` (1 s by default): the time to
connect, then the longest silence of a connected node (:func:`call_while_alive`
probes a slow node with Status rather than give up on it), so a paused,
black-holed or half-open node, or an endpoint that is not Leeky Raft at all,
is left for the next. Every call ends within its timeout with a result or an
explicit error (``api.errors``):

- ``InvalidRequest``: refused input; never retried.
- ``Unavailable``: no node of the cluster could be reached (or no leader).
- ``CommitTimeout``: no answer in time; a write's outcome is unknown.
- ``SessionExpired``: the cluster kept refusing the client's session (rare:
  the client opens a new one by itself, see below).

Reads are always safe to retry. Writes are retried too, because each carries
the client's session ``(session id, seq, ack)``: the state machine applies a
given ``(session id, seq)`` at most once and answers a retry from its cache.

The session is opened (registered, one log entry) before the first write. A
cluster keeps a bounded number of sessions and drops the idle ones (see
docs/snapshots.md); a write in a dropped session is refused with
SessionExpired and changes nothing. The client then registers a new session
and sends the write again under it, but only when every earlier attempt of
that write was refused for certain (NotLeader, Unavailable, NotCommitted,
SessionExpired). If an earlier attempt's outcome was unknown (a timeout, a
lost connection), it may have been applied before the session was dropped,
and its result went with the session: the write ends with CommitTimeout
("outcome unknown") instead of being applied a second time.

:class:`AMPConnectionPool` (one cached AMP connection per address) is also
used by the servers to forward requests to the leader.

With mutual TLS, pass ``connect=tls_connector(reactor, credentials)`` (or
:func:`client_tls_connector` for a client certificate in a folder): each
connection is handed to AMP only after the TLS handshake, so a handshake that
fails is a connection error (the client tries the next node) and a node that
refuses our certificate afterwards ends the call with ``Unavailable``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import error
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted.ampframes import QuietAMP
from leeky_twisted.api import client_commands as cc
from leeky_twisted.api.errors import (
    CommitTimeout,
    LeekyError,
    NotCommitted,
    NotLeader,
    SessionExpired,
    Unavailable,
)
from leeky_twisted.statemachine.kv import (
    Event,
    KeyValue,
    RangeResult,
    TxnResult,
    range_result_from_json,
    txn_result_from_json,
)

if TYPE_CHECKING:
    from leeky_twisted.client.watch import Watch
    from leeky_twisted.tls import TLSCredentials

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "AMPConnectionPool",
    "Address",
    "CallTimedOut",
    "Connector",
    "LeekyClient",
    "NodeReport",
    "NodeUnresponsive",
    "NotLeekyRaft",
    "TLSHandshakeFailed",
    "TLSRefused",
    "call_while_alive",
    "client_tls_connector",
    "format_address",
    "parse_address",
    "tcp_connector",
    "tls_connector",
    "with_timeout",
]

T = TypeVar("T")
P = TypeVar("P", bound=Protocol)

Address = tuple[str, int]

#: Connect ``protocol`` to ``address``; fire with the protocol once connected.
Connector = Callable[[Address, amp.AMP], "Deferred[amp.AMP]"]


def parse_address(text: str) -> Address:
    """Parse ``"host:port"`` (``"[v6]:port"`` for IPv6) into (host, port).

    Raises ValueError when malformed.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def format_address(address: Address) -> str:
    """Return ``"host:port"``, bracketing IPv6 hosts."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class CallTimedOut(Exception):
    """A step did not finish within the time it was given."""


def _settle(out: Deferred[Any], result: object) -> None:
    """Fire ``out`` with ``result`` (a value or a Failure) unless it already fired."""
    if out.called:
        return
    if isinstance(result, Failure):
        out.errback(result)
    else:
        out.callback(result)


def with_timeout(d: Deferred[T], seconds: float, clock: IReactorTime) -> Deferred[T]:
    """Return a Deferred firing like ``d``, or failing with CallTimedOut after ``seconds``.

    ``d`` itself is never cancelled (cancelling an AMP call breaks the
    connection when the late answer arrives); a late result is dropped.
    """
    out: Deferred[T] = Deferred()

    def expire() -> None:
        if not out.called:
            out.errback(CallTimedOut(f"no answer within {seconds:g} s"))

    call = clock.callLater(max(seconds, 0.0), expire)

    def fire(result: object) -> None:
        if call.active():
            call.cancel()
        _settle(out, result)

    d.addBoth(fire)
    return out


class _OneShotFactory(Factory):
    """Hand one protocol to one connection, without Factory's start and stop log lines."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.one = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        """Return the protocol given."""
        return self.one


def connect_quietly(endpoint: Any, protocol: P) -> Deferred[P]:
    """Connect ``protocol`` through ``endpoint``, as ``connectProtocol`` does, logging nothing."""
    d: Deferred[P] = endpoint.connect(_OneShotFactory(protocol))
    return d


def tcp_connector(reactor: Any, timeout: float) -> Connector:
    """Return a Connector that opens TCP connections (names resolved) on ``reactor``."""

    def connect(address: Address, protocol: amp.AMP) -> Deferred[amp.AMP]:
        host, port = address
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
        return connect_quietly(endpoint, protocol)

    return connect


class TLSHandshakeFailed(error.ConnectError):
    """The TLS handshake with a node failed (its certificate or ours was not accepted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else "TLS handshake failed"


class TLSRefused(error.ConnectionLost):
    """A node ended the connection with a TLS error after the handshake: it refused us.

    With TLS 1.3 a server checks the client's certificate after the client
    considers the handshake done, so its refusal arrives as the first answer.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else "refused by TLS"


def _tls_reason(reason: Failure) -> str | None:
    """Return OpenSSL's reasons for ``reason``, or None when it is no TLS error."""
    from OpenSSL import SSL

    if not reason.check(SSL.Error):
        return None
    args = reason.value.args
    if args and isinstance(args[0], list):
        texts = [str(r[-1]) for r in args[0] if isinstance(r, tuple) and r and r[-1]]
        if texts:
            return "; ".join(texts)
    return reason.getErrorMessage() or "TLS error"


@implementer(IHandshakeListener)
class _AfterHandshake(Protocol):
    """Sit under TLS; connect ``wrapped`` only once the handshake completed.

    ``ready`` fires with ``wrapped`` after the handshake, or fails with
    TLSHandshakeFailed when the connection ends (or ``timeout`` passes)
    first. Afterwards a connection ending with a TLS error reaches
    ``wrapped`` as TLSRefused.
    """

    def __init__(
        self,
        wrapped: amp.AMP,
        ready: Deferred[amp.AMP],
        where: str,
        clock: IReactorTime,
        timeout: float,
    ) -> None:
        self.wrapped = wrapped
        self.ready = ready
        self.where = where
        self.done = False
        self._clock = clock
        self._timeout = timeout
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Start the handshake timer (the TLS layer started the handshake)."""
        self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if not self.done and self.transport is not None:
            self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        """Connect the AMP protocol and hand it over."""
        self._stop_timer()
        self.done = True
        self.wrapped.makeConnection(self.transport)
        if not self.ready.called:
            self.ready.callback(self.wrapped)

    def dataReceived(self, data: bytes) -> None:
        """Pass decrypted data to AMP."""
        if self.done:
            self.wrapped.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail ``ready`` if the handshake never finished; else tell AMP why it ended."""
        self._stop_timer()
        why = _tls_reason(reason)
        if not self.done:
            text = why or (
                "timed out" if reason.check(error.ConnectionAborted) else reason.getErrorMessage()
            )
            if not self.ready.called:
                self.ready.errback(
                    TLSHandshakeFailed(string=f"TLS handshake with {self.where} failed: {text}")
                )
            return
        if why is not None:
            reason = Failure(TLSRefused(f"{self.where} refused the TLS connection: {why}"))
        self.wrapped.connectionLost(reason)

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()


def tls_connector(
    reactor: Any,
    credentials: TLSCredentials,
    timeout: float = 5.0,
    server_name: str | None = None,
) -> Connector:
    """Return a Connector that opens mutual-TLS connections with ``credentials``.

    The server must present a certificate from the credentials' CA naming
    ``server_name`` (default: ``leeky-node``, which every node certificate
    carries). ``timeout`` bounds the TCP connect and the handshake each.
    A failed handshake fails the connection attempt with TLSHandshakeFailed.
    """
    from twisted.internet.endpoints import wrapClientTLS

    from leeky_twisted.certs import NODES_NAME

    options = credentials.client_options(server_name or NODES_NAME)

    def connect(address: Address, protocol: amp.AMP) -> Deferred[amp.AMP]:
        host, port = address
        endpoint = wrapClientTLS(options, HostnameEndpoint(reactor, host, port, timeout=timeout))
        ready: Deferred[amp.AMP] = Deferred()
        waiter = _AfterHandshake(protocol, ready, format_address(address), reactor, timeout)

        def failed(reason: Failure) -> None:
            if not ready.called:
                ready.errback(reason)

        connect_quietly(endpoint, waiter).addErrback(failed)
        return ready

    return connect


def client_tls_connector(
    reactor: Any, directory: str, name: str, timeout: float = 5.0
) -> Connector:
    """Return a TLS Connector using ``client-<name>.pem``/``.key`` and ``ca.pem`` in ``directory``.

    Raises OSError or ValueError when the files are missing or do not load.
    """
    from leeky_twisted.tls import TLSCredentials, TLSFiles

    credentials = TLSCredentials.load(TLSFiles.for_client(directory, name))
    return tls_connector(reactor, credentials, timeout)


class _PooledAMP(QuietAMP):
    """An AMP client connection that tells its pool when it closes.

    It notes when it last received an AMP box (``last_heard``: the node is
    alive) and the first bytes it received, to say what answered when they
    were no AMP (an SSH or HTTP server).
    """

    def __init__(self, on_lost: Callable[[_PooledAMP], None], clock: IReactorTime) -> None:
        super().__init__()
        self._on_lost = on_lost
        self._clock = clock
        self.lost: Deferred[None] = Deferred()
        self.is_lost = False
        self.boxes = 0
        self.last_heard = float("-inf")
        self.first_bytes = b""

    def dataReceived(self, data: bytes) -> None:
        """Keep the first bytes (for error messages), then parse as AMP."""
        if self.boxes == 0 and len(self.first_bytes) < _FIRST_BYTES:
            self.first_bytes += data[: _FIRST_BYTES - len(self.first_bytes)]
        super().dataReceived(data)

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """Note that the node is alive, then dispatch the box."""
        self.boxes += 1
        self.last_heard = self._clock.seconds()
        super().ampBoxReceived(box)

    def connectionLost(self, reason: Failure) -> None:
        """Forget this connection, then fail the calls still waiting on it."""
        self.is_lost = True
        self._on_lost(self)
        super().connectionLost(reason)
        self.lost.callback(None)


class AMPConnectionPool:
    """At most one AMP connection per address, opened on demand, reopened after loss."""

    def __init__(
        self,
        reactor: Any,
        connect: Connector | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._connect = connect if connect is not None else tcp_connector(reactor, connect_timeout)
        self._clock: IReactorTime = reactor
        self._connected: dict[Address, _PooledAMP] = {}
        self._waiting: dict[Address, list[Deferred[amp.AMP]]] = {}
        self._closed = False

    def connection(self, address: Address) -> Deferred[amp.AMP]:
        """Return a Deferred firing with a connected AMP protocol to ``address``.

        Concurrent callers share one connection attempt. Fails with the
        connector's error (ConnectError, OSError, ...) when it cannot connect.
        """
        if self._closed:
            return _failed(Unavailable("client is closed"))
        proto = self._connected.get(address)
        if proto is not None:
            return succeed(proto)
        waiter: Deferred[amp.AMP] = Deferred()
        waiters = self._waiting.get(address)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._waiting[address] = [waiter]
        proto = _PooledAMP(lambda p: self._forget(address, p), self._clock)
        try:
            attempt = self._connect(address, proto)
        except Exception:
            attempt = _failed(Failure())

        def connected(p: amp.AMP) -> None:
            pending = self._waiting.pop(address, [])
            if self._closed or proto.is_lost:
                if not proto.is_lost and proto.transport is not None:
                    proto.transport.loseConnection()
                for w in pending:
                    w.errback(error.ConnectionLost("connection closed while opening"))
                return
            self._connected[address] = proto
            for w in pending:
                w.callback(proto)

        def failed(reason: Failure) -> None:
            for w in self._waiting.pop(address, []):
                w.errback(reason)

        attempt.addCallbacks(connected, failed)
        return waiter

    def _forget(self, address: Address, proto: _PooledAMP) -> None:
        if self._connected.get(address) is proto:
            del self._connected[address]

    def close(self) -> Deferred[None]:
        """Close every connection; fire when all are closed. Later calls fail."""
        self._closed = True
        protos = list(self._connected.values())
        self._connected.clear()
        for proto in protos:
            if proto.transport is not None:
                proto.transport.loseConnection()
        d = gatherResults([p.lost for p in protos if not p.is_lost])
        return d.addCallback(lambda _: None)


#: How many of the first bytes an endpoint sent are kept to describe it.
_FIRST_BYTES = 40


class NodeUnresponsive(Exception):
    """A node accepted the connection but sent nothing for a whole attempt timeout.

    It may be paused (SIGSTOP), overloaded, or the connection half-open.
    """


class NotLeekyRaft(Exception):
    """The endpoint answered with something that is not Leeky Raft's client AMP."""


def call_while_alive(
    proto: amp.AMP,
    clock: IReactorTime,
    command: type[amp.Command],
    arguments: dict[str, Any],
    attempt_timeout: float,
    deadline: float,
) -> Deferred[dict[str, Any]]:
    """Call ``command`` on ``proto``; give up when the node falls silent or at ``deadline``.

    A slow answer is waited for as long as the node shows it is alive: when
    nothing has come back for half of ``attempt_timeout``, a Status probe
    goes out, and any AMP box received counts. After ``attempt_timeout``
    of silence the call fails with NodeUnresponsive (the connection is
    aborted); at ``deadline`` with CallTimedOut. The call itself is never
    cancelled: a late answer is dropped. ``proto`` should be a pooled
    connection (it keeps ``last_heard``); any other AMP is judged by the
    answer alone.
    """
    out: Deferred[dict[str, Any]] = Deferred()
    sent = clock.seconds()
    half = attempt_timeout / 2
    timer: IDelayedCall | None = None
    probing = False

    def heard() -> float:
        return max(sent, getattr(proto, "last_heard", sent))

    def fire(result: object) -> None:
        if timer is not None and timer.active():
            timer.cancel()
        _settle(out, result)

    def probed(_: object) -> None:
        nonlocal probing
        probing = False

    def check() -> None:
        nonlocal timer, probing
        timer = None
        if out.called:
            return
        now = clock.seconds()
        silent = now - heard()
        if now >= deadline:
            out.errback(CallTimedOut(f"no answer within {deadline - sent:g} s"))
            return
        if silent >= attempt_timeout:
            if proto.transport is not None:
                proto.transport.abortConnection()
            out.errback(NodeUnresponsive(f"no answer within {attempt_timeout:g} s"))
            return
        if silent >= half and not probing:
            probing = True
            proto.callRemote(cc.Status).addBoth(probed)
        next_check = heard() + (attempt_timeout if silent >= half else half)
        timer = clock.callLater(max(min(next_check, deadline) - now, 0.0), check)

    timer = clock.callLater(max(min(sent + half, deadline) - sent, 0.0), check)
    try:
        call = proto.callRemote(command, **arguments)
    except Exception:
        call = _failed(Failure())
    call.addBoth(fire)
    return out


def _failed(reason: Exception | Failure) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(reason)
    return d


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one node said about itself, or why it could not be asked."""

    address: str
    status: dict[str, Any] | None
    error: str | None = None


#: Seconds one node may cost a call: to connect, and to stay silent once connected.
DEFAULT_ATTEMPT_TIMEOUT = 1.0

#: New sessions a write opens, at most, when the cluster keeps refusing its session.
MAX_SESSION_RENEWALS = 3

#: Errors while opening a connection: try another node.
_CONNECT_ERRORS = (
    error.ConnectError,
    error.DNSLookupError,
    error.ConnectionClosed,
    OSError,
    CallTimedOut,
)


class LeekyClient:
    """A client of a whole cluster: finds and follows the leader, retries what is safe.

    :param reactor: provides IReactorTime (and IReactorTCP unless ``connect``
        is given).
    :param addresses: the nodes' client (AMP) addresses.
    :param timeout: the overall time limit of each call, retries included
        (opening a session included).
    :param session_id: a session registered earlier (by this program) to go
        on with; by default the client registers one before its first write.
        Two clients must never share a session.
    :param connect: how to open connections (tests pass an in-memory one).
    :param attempt_timeout: what one node may cost a call when it cannot be
        reached or falls silent: the time to connect, then the longest
        silence of a connected node (a slow answer from a node that still
        answers Status probes is waited for, up to ``timeout``). The client
        then tries the next node. A write left on a silent node has an
        unknown outcome: it is sent again elsewhere in its session (applied
        at most once) or, without a session (``submit``), ends with
        CommitTimeout at once.
    """

    def __init__(
        self,
        reactor: Any,
        addresses: Iterable[Address],
        timeout: float = 10.0,
        session_id: str | None = None,
        *,
        connect: Connector | None = None,
        connect_timeout: float | None = None,
        retry_delay: float = 0.05,
        max_retry_delay: float = 1.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        self.addresses: list[Address] = list(addresses)
        if not self.addresses:
            raise ValueError("a client needs at least one address")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be positive")
        self.timeout = timeout
        self.attempt_timeout = min(attempt_timeout, timeout)
        #: The session the next write goes out in; None until one is registered.
        self.session_id = session_id
        self._session_waiters: list[Deferred[str]] = []
        self._clock: IReactorTime = reactor
        self._pool = AMPConnectionPool(
            reactor,
            connect,
            connect_timeout if connect_timeout is not None else self.attempt_timeout,
        )
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._seq = 0
        self._pending: set[int] = set()
        self._leader: Address | None = None
        self._cursor = 0

    @property
    def leader(self) -> Address | None:
        """Return the address of the last node that answered a request, if any."""
        return self._leader

    # ------------------------------------------------------------ public API

    def put(self, key: str, value: str, lease: int | None = None) -> Deferred[None]:
        """Set ``key`` to ``value``; fire with None once committed and applied.

        With ``lease``, the key belongs to that lease: it is deleted when the
        lease is revoked or expires.
        """
        arguments: dict[str, Any] = {"key": key, "value": value}
        if lease is not None:
            arguments["lease"] = lease
        return self._write(cc.Put, arguments).addCallback(lambda _: None)

    def lease_grant(self, ttl: int) -> Deferred[int]:
        """Create a lease of ``ttl`` seconds; fire with its id.

        Keep it alive with :meth:`lease_keepalive` (every ttl/3, say); the
        cluster deletes its keys when no keepalive came for ``ttl`` seconds
        (docs/coordination.md gives the bound).
        """
        return self._write(cc.LeaseGrant, {"ttl": ttl}).addCallback(lambda r: r["lease"])

    def lease_revoke(self, lease: int) -> Deferred[bool]:
        """End ``lease`` now and delete its keys; fire with whether it was live."""
        return self._write(cc.LeaseRevoke, {"lease": lease}).addCallback(lambda r: r["existed"])

    def lease_keepalive(self, lease: int) -> Deferred[int]:
        """Renew ``lease`` for its ttl from now; fire with the ttl.

        Fails with InvalidRequest ("lease N not found") once it expired or
        was revoked: its keys are gone.
        """
        d = self._call(cc.LeaseKeepalive, {"lease": lease}, write=False)
        return d.addCallback(lambda r: r["ttl"])

    def lease_ttl(self, lease: int) -> Deferred[dict[str, Any]]:
        """Fire with ``{"id", "ttl", "remaining", "keys"}`` of ``lease`` (the leader's view)."""
        d = self._call(cc.LeaseTTL, {"lease": lease}, write=False)
        return d.addCallback(lambda r: json.loads(r["result"]))

    def get(self, key: str, stale: bool = False) -> Deferred[str | None]:
        """Fire with the value of ``key``, or None when absent.

        Linearizable by default; ``stale=True`` lets any node answer from its
        own, possibly outdated, state.
        """
        d = self._call(cc.Get, {"key": key, "stale": stale}, write=False, any_node=stale)
        return d.addCallback(lambda r: r.get("value"))

    def get_kv(self, key: str, stale: bool = False) -> Deferred[KeyValue | None]:
        """Fire with ``key``, its value and revisions (a ``KeyValue``), or None when absent."""
        d = self.range(key, key + "\0", stale=stale)
        return d.addCallback(lambda r: r.kvs[0] if r.kvs else None)

    def range(
        self,
        start: str,
        end: str | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        stale: bool = False,
    ) -> Deferred[RangeResult]:
        """Fire with the keys in [``start``, ``end``) (``end`` None: to the last key),
        sorted, with the revision they were read at (a ``RangeResult``).

        With ``prefix``, every key starting with ``start``. ``limit`` (0:
        none) caps the keys returned; ``count`` still counts the whole range
        and ``more`` says keys were left out. Linearizable unless ``stale``.
        """
        arguments: dict[str, Any] = {
            "start": start,
            "end": end,
            "prefix": prefix,
            "limit": limit,
            "keys_only": keys_only,
            "count_only": count_only,
            "stale": stale,
        }
        d = self._call(cc.Range, arguments, write=False, any_node=stale)
        return d.addCallback(lambda r: _decoded(range_result_from_json, r))

    def range_prefix(self, prefix: str, **options: Any) -> Deferred[RangeResult]:
        """Fire with every key that starts with ``prefix`` (options as :meth:`range`)."""
        return self.range(prefix, prefix=True, **options)

    def txn(
        self,
        compare: Sequence[dict[str, Any]] = (),
        success: Sequence[dict[str, Any]] = (),
        failure: Sequence[dict[str, Any]] = (),
    ) -> Deferred[TxnResult]:
        """If every compare holds, apply ``success``, else ``failure``: one log entry.

        The items are the JSON objects ``leeky_twisted.api.coord`` describes,
        e.g. ``{"key": "k", "target": "version", "op": "==", "value": 0}`` and
        ``{"type": "put", "key": "k", "value": "v"}`` (a put may add ``"lease": ID``). Fires with a
        ``TxnResult``; applied at most once, like every write of the client.
        """
        document = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        text = json.dumps(document, ensure_ascii=False)
        d = self._write(cc.Txn, {"txn": text})
        return d.addCallback(lambda r: _decoded(txn_result_from_json, r))

    def watch(
        self,
        start: str,
        on_events: Callable[[list[Event]], object],
        *,
        end: str | None = None,
        prefix: bool = False,
        start_revision: int | None = None,
        silence_timeout: float | None = None,
    ) -> Watch:
        """Watch the key ``start`` (or with ``prefix``, every key starting with it; with
        ``end``, the keys in [start, end)) from ``start_revision`` (None: the next).

        ``on_events`` gets each batch of new events (``Event``: revision,
        kind "put"/"delete", key, value), in revision order, each event once,
        across node failures (the watch resumes on another node from the
        revision after the last it saw). Returns a ``Watch``: ``cancel()``
        stops it; its ``done`` fails with Compacted when the cluster no longer
        holds the events it needs.
        """
        from leeky_twisted.client.watch import DEFAULT_SILENCE_TIMEOUT
        from leeky_twisted.client.watch import Watch as _Watch

        if end is None and not prefix:
            end = start + "\0"  # exactly the key
        watch = _Watch(
            self,
            start,
            end,
            prefix,
            start_revision,
            on_events,
            DEFAULT_SILENCE_TIMEOUT if silence_timeout is None else silence_timeout,
        )
        return watch.start()

    def delete(self, key: str) -> Deferred[bool]:
        """Remove ``key``; fire with True when it existed."""
        return self._write(cc.Delete, {"key": key}).addCallback(lambda r: r["existed"])

    def cas(self, key: str, expected: str | None, new: str) -> Deferred[bool]:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: absent); fire with swapped."""
        arguments = {"key": key, "expected": expected, "new": new}
        return self._write(cc.Cas, arguments).addCallback(lambda r: r["swapped"])

    def append(self, key: str, suffix: str) -> Deferred[int]:
        """Append ``suffix`` to the value of ``key``; fire with the new length."""
        d = self._write(cc.Append, {"key": key, "suffix": suffix})
        return d.addCallback(lambda r: r["length"])

    def status(self) -> Deferred[dict[str, Any]]:
        """Fire with the status of the first node that answers."""
        d = self._call(cc.Status, {}, write=False, any_node=True)
        return d.addCallback(lambda r: json.loads(r["status"]))

    def submit(self, command: str) -> Deferred[Any]:
        """Replicate a raw command (``PUT k v``, or an executor's own, e.g. ``ADD f``).

        Fire with the state machine's result. A submitted command carries no
        session: after an unknown outcome it is not retried (CommitTimeout).
        """
        d = self._call(cc.Submit, {"command": command}, write=True, retry_unknown=False)
        return d.addCallback(lambda r: json.loads(r["result"]))

    def query(self, request: str) -> Deferred[Any]:
        """Answer a read-only request (``GET k``, or an executor's own, e.g. ``READ f``)."""
        d = self._call(cc.Query, {"request": request}, write=False)
        return d.addCallback(lambda r: json.loads(r["result"]))

    def members(self) -> Deferred[list[dict[str, Any]]]:
        """Fire with the first answering node's view of every member."""
        d = self._call(cc.Members, {}, write=False, any_node=True)
        return d.addCallback(lambda r: json.loads(r["members"]))

    def add_server(self, node_id: str, address: str | None, voter: bool) -> Deferred[None]:
        """Add a node as learner (or voter); fire once the change is committed."""
        args: dict[str, Any] = {"node_id": node_id, "voter": voter}
        if address is not None:
            args["address"] = address
        return self._call(cc.AddServer, args, write=True).addCallback(lambda _: None)

    def remove_server(self, node_id: str) -> Deferred[None]:
        """Remove a node from the configuration; fire once committed."""
        d = self._call(cc.RemoveServer, {"node_id": node_id}, write=True)
        return d.addCallback(lambda _: None)

    def transfer_leader(self, node_id: str) -> Deferred[None]:
        """Ask the leader to hand leadership to ``node_id``."""
        d = self._call(cc.TransferLeader, {"node_id": node_id}, write=True)
        return d.addCallback(lambda _: None)

    def open_session(self) -> Deferred[str]:
        """Fire with the client's session id, registering a session first if it has none.

        Writes call this by themselves; call it ahead to keep the registration
        (one log entry) out of the first write's latency. Concurrent callers
        share one registration.
        """
        if self.session_id is not None:
            return succeed(self.session_id)
        waiter: Deferred[str] = Deferred()
        self._session_waiters.append(waiter)
        if len(self._session_waiters) == 1:
            d = self._call(cc.RegisterSession, {}, write=True)
            d.addBoth(self._registered)
        return waiter

    def _registered(self, outcome: dict[str, Any] | Failure) -> None:
        waiters, self._session_waiters = self._session_waiters, []
        if isinstance(outcome, Failure):
            for waiter in waiters:
                waiter.errback(outcome)
            return
        self.session_id = outcome["session"]
        for waiter in waiters:
            waiter.callback(outcome["session"])

    def status_all(self) -> Deferred[list[NodeReport]]:
        """Ask every address for its status, in parallel; fire with one report each."""
        return gatherResults([self._report(address) for address in self.addresses])

    def close(self) -> Deferred[None]:
        """Close every connection; fire when they are closed."""
        return self._pool.close()

    # ------------------------------------------------------------- internals

    def _report(self, address: Address) -> Deferred[NodeReport]:
        shown = format_address(address)

        async def ask() -> NodeReport:
            clock = self._clock
            deadline = clock.seconds() + self.timeout
            try:
                proto = await with_timeout(
                    self._pool.connection(address), self.attempt_timeout, clock
                )
            except CallTimedOut:
                return NodeReport(shown, None, f"no connection within {self.attempt_timeout:g} s")
            except Exception as e:
                return NodeReport(shown, None, _describe(e))
            try:
                response = await call_while_alive(
                    proto, clock, cc.Status, {}, self.attempt_timeout, deadline
                )
                return NodeReport(shown, json.loads(response["status"]))
            except CallTimedOut:
                return NodeReport(shown, None, "timed out")
            except NodeUnresponsive as e:
                return NodeReport(shown, None, f"connected but sent nothing: {e}")
            except (LeekyError, error.ConnectionClosed) as e:
                return NodeReport(shown, None, _describe(e))
            except amp.RemoteAmpError as e:
                return NodeReport(shown, None, f"server error: {_describe(e)}")
            except Exception as e:
                return NodeReport(shown, None, _not_leeky(shown, e, proto))

        return Deferred.fromCoroutine(ask())

    def _write(self, command: type[amp.Command], arguments: dict[str, Any]) -> Deferred[Any]:
        self._seq += 1
        seq = self._seq
        self._pending.add(seq)

        def done(result: T) -> T:
            self._pending.discard(seq)
            return result

        d = Deferred.fromCoroutine(self._write_in_session(command, arguments, seq))
        return d.addBoth(done)

    async def _write_in_session(
        self, command: type[amp.Command], arguments: dict[str, Any], seq: int
    ) -> dict[str, Any]:
        """Send a write in the client's session; in a new one if the cluster dropped it.

        ``_attempt`` lets SessionExpired through only when no attempt of this
        write had an unknown outcome, so the write was never applied: sending
        it again in a new session is safe. ``seq`` stays: it is at or above
        every ``ack`` sent since it was issued.
        """
        clock = self._clock
        deadline = clock.seconds() + self.timeout
        renewals = 0
        while True:
            session_id = await self._session_before(deadline)
            in_session = {**arguments, "client_id": session_id, "seq": seq}
            in_session["ack"] = min(self._pending)
            try:
                return await self._attempt(command, in_session, True, False, deadline=deadline)
            except SessionExpired:
                if self.session_id == session_id:
                    self.session_id = None
                renewals += 1
                if renewals > MAX_SESSION_RENEWALS:
                    raise

    async def _session_before(self, deadline: float) -> str:
        """Return the session id, registering one if needed, by ``deadline``.

        The write has not been sent yet, so a failure here is Unavailable
        (nothing was applied), never "outcome unknown".
        """
        if self.session_id is not None:  # the usual case: no timer, no Deferred
            return self.session_id
        remaining = deadline - self._clock.seconds()
        try:
            return await with_timeout(self.open_session(), max(remaining, 0.0), self._clock)
        except (CallTimedOut, CommitTimeout) as e:
            raise Unavailable(
                f"could not open a client session ({_describe(e)}); the write was not sent"
            ) from None

    def _call(
        self,
        command: type[amp.Command],
        arguments: dict[str, Any],
        *,
        write: bool,
        any_node: bool = False,
        retry_unknown: bool = True,
    ) -> Deferred[dict[str, Any]]:
        return Deferred.fromCoroutine(
            self._attempt(command, arguments, write, any_node, retry_unknown)
        )

    def _next_address(self, after: Address | None) -> Address:
        if after in self.addresses:
            self._cursor = self.addresses.index(after) + 1
        address = self.addresses[self._cursor % len(self.addresses)]
        self._cursor += 1
        return address

    async def _attempt(
        self,
        command: type[amp.Command],
        arguments: dict[str, Any],
        write: bool,
        any_node: bool,
        retry_unknown: bool = True,
        *,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        """Send ``command`` to the leader (or any node), moving on from what fails.

        Each attempt has ``attempt_timeout`` to connect and then to hear from
        the node (see :func:`call_while_alive`): a paused, black-holed or
        half-open node costs one attempt timeout, not the whole call.
        """
        clock = self._clock
        if deadline is None:
            deadline = clock.seconds() + self.timeout
        delay = self._retry_delay
        hops = 0

        async def pause() -> None:
            nonlocal delay, hops
            hops = 0
            wait = min(delay, max(deadline - clock.seconds(), 0.0))
            delay = min(delay * 2, self._max_retry_delay)
            await deferLater(clock, wait, lambda: None)

        address = self._leader if self._leader is not None else self._next_address(None)
        unreachable: set[Address] = set()  # failed this round: no connection, silent, not Leeky
        silent: set[Address] = set()  # fell silent during this call: hints to them are ignored
        full_rounds = 0
        answered = False  # some node answered (with a result or a Leeky error)
        unknown = False  # an attempt of this write may have been applied
        last: Exception | None = None

        async def move_on(failed: Address) -> Address:
            """Count ``failed`` as unreachable this round; return the next address to try."""
            nonlocal full_rounds
            unreachable.add(failed)
            if failed == self._leader:
                self._leader = None
            if set(self.addresses) <= unreachable:
                unreachable.clear()
                full_rounds += 1
                if full_rounds >= 2:
                    raise self._unreachable(write and unknown, last)
                await pause()
            return next_after(failed)

        def next_after(after: Address) -> Address:
            """Return the next address, passing over nodes that fell silent in this call."""
            address = self._next_address(after)
            if set(self.addresses) <= silent:
                return address
            while address in silent:
                address = self._next_address(address)
            return address

        while True:
            remaining = deadline - clock.seconds()
            if remaining <= 0:
                raise self._gave_up(write, answered, unknown, last)
            shown = format_address(address)
            try:
                proto = await with_timeout(
                    self._pool.connection(address), min(self.attempt_timeout, remaining), clock
                )
            except _CONNECT_ERRORS as e:
                if isinstance(e, CallTimedOut):
                    e = CallTimedOut(f"{shown}: no connection within {self.attempt_timeout:g} s")
                last = e
                address = await move_on(address)
                continue
            try:
                response = await call_while_alive(
                    proto, clock, command, arguments, self.attempt_timeout, deadline
                )
            except NodeUnresponsive as e:
                last = NodeUnresponsive(f"{shown} connected but sent nothing: {e}")
                silent.add(address)
                if write:  # it may be applied when the node wakes up
                    if not retry_unknown:
                        raise CommitTimeout(
                            f"outcome unknown: {last}; the write may or may not be applied"
                        ) from None
                    unknown = True
                address = await move_on(address)
                continue
            except TLSRefused as e:
                # The node refused our certificate: not something a retry mends.
                raise Unavailable(str(e)) from None
            except NotLeader as e:
                answered = True
                last = e
                self._leader = None
                hint = _parse_hint(e.leader_address)
                if (
                    hint is not None
                    and hint != address
                    and hint not in silent
                    and hops < len(self.addresses)
                ):
                    hops += 1
                    address = hint
                else:
                    address = next_after(address)
                    await pause()
                continue
            except (Unavailable, CommitTimeout, NotCommitted, error.ConnectionClosed) as e:
                # Retrying is safe: reads change nothing, writes carry a session.
                # A write without a session whose outcome is unknown is not retried.
                closed = isinstance(e, error.ConnectionClosed)
                if isinstance(e, CommitTimeout) or closed:
                    if write and not retry_unknown:
                        if closed:
                            raise CommitTimeout(
                                f"outcome unknown: the connection to {shown} was lost"
                            ) from None
                        raise
                    unknown = unknown or write
                if closed and getattr(proto, "boxes", 1) == 0:
                    # Closed before it ever answered: as good as unreachable.
                    last = error.ConnectionClosed(
                        f"{shown} closed the connection without answering"
                        " (a TLS port, reached without TLS?)"
                    )
                    address = await move_on(address)
                    continue
                answered = True
                last = e
                if not isinstance(e, CommitTimeout):
                    address = next_after(address)
                await pause()
                continue
            except CallTimedOut:
                answered = answered or getattr(proto, "boxes", 1) > 0
                raise self._gave_up(write, answered, unknown or write, last) from None
            except SessionExpired as e:
                if unknown:  # an earlier attempt may have been applied, its result is gone
                    raise CommitTimeout(
                        "outcome unknown: an earlier attempt timed out and the session has"
                        f" since expired ({e}); the write may or may not have been applied"
                    ) from None
                raise
            except LeekyError:
                raise
            except amp.RemoteAmpError as e:
                if e.errorCode == amp.UNHANDLED_ERROR_CODE:
                    # An AMP server, but not ours (or far too old): it does not know the command.
                    last = NotLeekyRaft(f"{shown} is not a Leeky Raft client port: {_describe(e)}")
                    address = await move_on(address)
                    continue
                raise LeekyError(f"server error: {_describe(e)}") from None
            except Exception as e:
                # Not AMP at all (amp.TooLong from an SSH or HTTP server, a parse error).
                last = NotLeekyRaft(_not_leeky(shown, e, proto))
                address = await move_on(address)
                continue
            if not any_node:
                self._leader = address
            return response

    def _gave_up(
        self, write: bool, answered: bool, unknown: bool, last: Exception | None
    ) -> LeekyError:
        """Return the error of a call whose deadline passed."""
        if write and unknown:
            return CommitTimeout()
        if not answered:
            return self._unreachable(False, last)
        if write or isinstance(last, NotLeader | Unavailable):
            return Unavailable(f"no leader found within {self.timeout:g} s")
        return CommitTimeout(f"timed out after {self.timeout:g} s")

    def _unreachable(self, unknown: bool, last: Exception | None) -> LeekyError:
        """Return the error of a call no node answered: Unavailable, or outcome unknown."""
        reason = f": {_describe(last)}" if last is not None else ""
        if unknown:
            return CommitTimeout(
                f"outcome unknown: the write was sent but no node answered{reason}"
            )
        where = ", ".join(format_address(a) for a in self.addresses)
        return Unavailable(f"cannot reach any node of the cluster ({where}){reason}")


def _decoded(parse: Callable[[Any], T], response: dict[str, Any]) -> T:
    """Return ``parse`` of a response's JSON ``result``; LeekyError when malformed."""
    try:
        return parse(json.loads(response["result"]))
    except (KeyError, TypeError, ValueError) as e:
        raise LeekyError(f"the node sent a malformed answer: {e}") from None


def _not_leeky(shown: str, e: BaseException, proto: Any) -> str:
    """Describe an endpoint whose answer was not Leeky Raft's AMP."""
    first = getattr(proto, "first_bytes", b"")
    sent = f" (it sent {first.decode('ascii', 'replace')!r})" if first else ""
    what = type(e).__name__ if isinstance(e, amp.AmpError) else _describe(e)
    return f"{shown} does not speak Leeky Raft's client protocol{sent}: {what}"


def _parse_hint(address: str | None) -> Address | None:
    if address is None:
        return None
    try:
        return parse_address(address)
    except ValueError:
        return None


def _describe(e: BaseException) -> str:
    if isinstance(e, amp.RemoteAmpError):
        return f"{e.errorCode.decode('ascii', 'replace')} {e.description!r}"
    text = str(e).strip()
    return text or type(e).__name__
