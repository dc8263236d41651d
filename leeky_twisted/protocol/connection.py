"""Connecting to a node: addresses, connectors (TCP, TLS), pooled AMP calls with deadlines.

Shared by the client library and by the servers, which forward requests to the
leader with the same :class:`AMPConnectionPool`.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from twisted.internet import error
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.ampframes import QuietAMP, receive_boxes
from leeky_twisted.protocol.errors import (
    Unavailable,
)
from leeky_twisted.protocol.netutil import write_now
from leeky_twisted.protocol.txnframes import txn_request, txn_response

if TYPE_CHECKING:
    from leeky_twisted.security.tls import TLSCredentials

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
    args = reason.value.args if reason.value is not None else ()
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
            cast(ITCPTransport, self.transport).abortConnection()

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

    from leeky_twisted.security.certs import NODES_NAME

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
    from leeky_twisted.security.tls import TLSCredentials, TLSFiles

    credentials = TLSCredentials.load(TLSFiles.for_client(directory, name))
    return tls_connector(reactor, credentials, timeout)


class WatchReceiver(typing.Protocol):
    """One watch carried by a pooled connection (``client.watch.Watch``)."""

    def watch_events(self, events: str, next_revision: int) -> None:
        """The node sent ``events`` (a JSON list) of this watch."""

    def watch_ended(self, reason: str) -> None:
        """The node ended this watch for ``reason``."""

    def watch_lost(self) -> None:
        """The connection carrying this watch closed."""


class _PooledAMP(QuietAMP):
    """An AMP client connection that tells its pool when it closes.

    It notes when it last received an AMP box (``last_heard``: the node is
    alive) and the first bytes it received, to say what answered when they
    were no AMP (an SSH or HTTP server). It also carries the client's watches
    (``watches``, by the id the node gave each): the node pushes their
    events on this connection beside the answers to requests.
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
        #: the watches this connection carries, by watch id
        self.watches: dict[int, WatchReceiver] = {}

    @cc.WatchEvents.responder
    def _watch_events(self, watch_id: int, events: str, next_revision: int) -> dict[str, Any]:
        receiver = self.watches.get(watch_id)
        if receiver is None:  # cancelled here, or started by a call given up on: end it there
            self.callRemote(cc.CancelWatch, watch_id=watch_id).addErrback(lambda _: None)
        else:
            receiver.watch_events(events, next_revision)
        return {}  # the answer is the acknowledgement the node counts its backlog by

    @cc.WatchEnded.responder
    def _watch_ended(self, watch_id: int, reason: str) -> dict[str, Any]:
        receiver = self.watches.pop(watch_id, None)
        if receiver is not None:
            receiver.watch_ended(reason)
        return {}

    def callRemote(self, commandType: Any, *a: Any, **arguments: Any) -> Any:
        """Call ``command``; a Txn in a session is framed directly (``protocol.txnframes``).

        The same bytes as AMP's, and the same answers: the result as AMP's
        parser gives it, an error as the command's exception.
        """
        if commandType is cc.Txn and not a and len(arguments) == 4:
            d = self._call_txn(arguments)
            if d is not None:
                return d
        return super().callRemote(commandType, *a, **arguments)

    def _call_txn(self, arguments: dict[str, Any]) -> Deferred[Any] | None:
        transport = self.transport
        if (
            transport is None
            or self._failAllReason is not None
            or self._locked
            or self._startingTLSBuffer is not None
        ):
            return None
        tag = self._nextTag()
        data = txn_request(
            tag,
            arguments.get("txn"),
            arguments.get("client_id"),
            arguments.get("seq"),
            arguments.get("ack"),
        )
        if data is None:
            return None
        d: Deferred[amp.AmpBox] = Deferred()
        self._outstandingRequests[tag] = d
        write_now(transport, data)
        return d.addCallbacks(self._txn_response, _txn_error)

    def _txn_response(self, box: amp.AmpBox) -> dict[str, Any]:
        response = txn_response(box)
        if response is None:
            return cc.Txn.parseResponse(box, self)  # type: ignore[no-any-return]
        return response

    def connectionMade(self) -> None:
        """Turn Nagle off (requests, answers to pushed events and cancels go back to back)."""
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):  # not a TCP socket after all
                set_no_delay(True)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """Keep the first bytes (for error messages), then parse as AMP.

        Whole boxes at the start of ``data`` are split by hand
        (:func:`~leeky_twisted.protocol.ampframes.receive_boxes`, as the node
        does) instead of by AMP's key-at-a-time parser; the rest, a partial box
        or bytes that are not AMP, goes to that parser as before.
        """
        if self.boxes == 0 and len(self.first_bytes) < _FIRST_BYTES:
            self.first_bytes += data[: _FIRST_BYTES - len(self.first_bytes)]
        receive_boxes(self, data, super().dataReceived)

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """Note that the node is alive, then dispatch the box.

        WatchEvents, one per watcher per event, skip AMP's responder lookup
        and argument objects (several times the work of the box itself).
        """
        self.boxes += 1
        self.last_heard = self._clock.seconds()
        if box.get(b"_command") == b"WatchEvents" and self._take_watch_events(box):
            return
        super().ampBoxReceived(box)

    def _take_watch_events(self, box: amp.AmpBox) -> bool:
        """Hand a well-formed WatchEvents box to its watch and answer it; False if malformed."""
        try:
            watch_id = int(box[b"watch_id"])
            next_revision = int(box[b"next_revision"])
            pieces = [box[b"events"]]
        except (KeyError, ValueError):
            return False  # AMP's own dispatch answers the error
        n = 1
        while (piece := box.get(b"events.%d" % n)) is not None:
            pieces.append(piece)
            n += 1
        events = b"".join(pieces).decode("utf-8", "surrogateescape")
        self._watch_events(watch_id, events, next_revision)
        ask = box.get(b"_ask")
        if ask is not None and self.transport is not None:
            if self._locked or self._startingTLSBuffer is not None or len(ask) > 255:
                answer = amp.AmpBox()
                answer[b"_answer"] = ask
                self.sendBox(answer)
            else:  # the same bytes as AmpBox({"_answer": ask}).serialize()
                self.transport.write(b"%s%c%s\x00\x00" % (_ANSWER_KEY, len(ask), ask))
        return True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget this connection, then fail the calls still waiting on it."""
        self.is_lost = True
        self._on_lost(self)
        super().connectionLost(reason)
        watches, self.watches = self.watches, {}
        for receiver in watches.values():
            receiver.watch_lost()
        self.lost.callback(None)


def _txn_error(failure: Failure) -> Failure:
    """Turn an error answer into the Txn's exception, as ``Command._doCommand`` does."""
    failure.trap(amp.RemoteAmpError)
    remote = cast(amp.RemoteAmpError, failure.value)
    reverse: dict[bytes, type[Exception]] = cc.Txn.reverseErrors  # type: ignore[attr-defined]
    kind = reverse.get(remote.errorCode, amp.UnknownRemoteError)
    return Failure(kind(remote.description))


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

    def connected(self, address: Address) -> amp.AMP | None:
        """Return the open connection to ``address``, or None (then use :meth:`connection`)."""
        if self._closed:
            return None
        return self._connected.get(address)

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
#: The key of an AMP answer box, with its length, and the high byte of its value's length.
_ANSWER_KEY = b"\x00\x07_answer\x00"


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
                cast(ITCPTransport, proto.transport).abortConnection()
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


#: Seconds one node may cost a call: to connect, and to stay silent once connected.
DEFAULT_ATTEMPT_TIMEOUT = 1.0
