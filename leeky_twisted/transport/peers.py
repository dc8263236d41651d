"""``AMPPeerTransport``: the IPeerTransport that carries core messages over AMP.

Each peer gets one dialled connection (:class:`_PeerLink`), opened lazily on
the first send. Messages wait in a bounded per-peer queue (the oldest is
dropped when it is full: Raft retransmits) and are written once per reactor
turn, all queued boxes in one ``writeSequence``. A lost or refused connection
is retried with exponential backoff and jitter. Snapshots are streamed in
answered chunks, one in flight at a time, and resume where the receiver left
off after a reconnect. Incoming connections are accepted by
:meth:`AMPPeerTransport.server_factory` (or :meth:`AMPPeerTransport.listen`).

With TLS, peers are dialled through a ``connect_endpoint`` hook (e.g. a
:func:`~leeky_twisted.security.tls.client_endpoint` that checks the peer's node id in
its certificate), and an ``authenticate`` hook makes every accepted Hello
prove its node id with the connection's certificate
(:func:`~leeky_twisted.transport.peer_protocol.certificate_node_id`).
"""

from __future__ import annotations

import contextlib
import random
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IConsumer,
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from leeky_twisted.core.messages import InstallSnapshot, NodeId, SnapshotMeta
from leeky_twisted.interfaces import IPeerTransport
from leeky_twisted.transport.bootstrap_config import BootstrapConfig
from leeky_twisted.transport.codec import CodecError, PeerMessage, encode
from leeky_twisted.transport.hello_auth import HelloAuthenticator
from leeky_twisted.transport.peer_commands import SnapshotChunk
from leeky_twisted.transport.peer_protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_SNAPSHOT_BYTES,
    Authenticator,
    PeerInbox,
    PeerProtocol,
    PeerServerFactory,
    Receiver,
    SnapshotReceiver,
    frame_message,
)

__all__ = ["AMPPeerTransport", "Address", "AddressBook", "EndpointMaker", "SnapshotSource"]

#: A peer's (host, port).
Address = tuple[str, int]
#: Where a peer can be reached: a callable or a live mapping (e.g. a dict the node updates).
AddressBook = Callable[[NodeId], Address | None] | Mapping[NodeId, Address]
#: Returns the data of the snapshot ``meta`` names (or a Deferred of it), or None.
SnapshotSource = Callable[[SnapshotMeta], "bytes | Deferred[bytes | None] | None"]
#: Returns the endpoint that dials peer ``peer_id`` at (host, port), e.g. over TLS.
EndpointMaker = Callable[[str, int, NodeId], IStreamClientEndpoint]

#: A snapshot stream gives up after this many failed chunks or connection attempts in a row.
SNAPSHOT_MAX_FAILURES = 8
#: ... or after the receiver sent it back this many times (lost data, bad checksum).
SNAPSHOT_MAX_REWINDS = 3
#: A working connection that closes is dialled again at once (a refusal then
#: tells the node its peer's process is gone), at most once per this many seconds.
GONE_PROBE_SECONDS = 1.0


class _SnapshotStream:
    """One snapshot being streamed to one peer."""

    def __init__(self, message: InstallSnapshot) -> None:
        self.message = message


class _LinkFactory(ClientFactory):
    """Build the dialled protocol of one link and report failed attempts."""

    noisy = False

    def __init__(self, link: _PeerLink) -> None:
        self.link = link

    def buildProtocol(self, addr: IAddress | None) -> PeerProtocol:
        """Return a dialling PeerProtocol wired to the link."""
        protocol = PeerProtocol(None, self.link.log)
        protocol.factory = self
        protocol.on_made = self.link.connected
        protocol.on_lost = self.link.lost
        return protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """Tell the link that the attempt failed."""
        self.link.connect_failed(self, reason)


class _EndpointAttempt:
    """One connection attempt through an endpoint; stands in for an IConnector.

    The link only ever calls ``stopConnecting`` on a connector: here it
    cancels the endpoint's Deferred (a no-op once it fired).
    """

    def __init__(self, link: _PeerLink, factory: _LinkFactory, attempt: Deferred[Any]) -> None:
        self._attempt = attempt
        attempt.addErrback(self._failed, link, factory)

    @staticmethod
    def _failed(reason: Failure, link: _PeerLink, factory: _LinkFactory) -> None:
        link.connect_failed(factory, reason)

    def stopConnecting(self) -> None:
        """Abandon the attempt if it is still under way."""
        self._attempt.cancel()


@implementer(IPushProducer)
class _PeerLink:
    """The one dialled connection to one peer, its send queue and snapshot stream.

    States: idle (nothing to send), connecting (``connector``), connected
    (``protocol``) or waiting out a backoff (``retry``); at most one at a time.
    It is the push producer of its connection: while the socket buffer is full
    the queue is not flushed, so it fills and drops its oldest messages.
    """

    def __init__(self, owner: AMPPeerTransport, peer_id: NodeId) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.log = owner.log
        self.queue: deque[PeerMessage] = deque(maxlen=owner.max_queue)
        self.dropped = 0
        self.failures = 0
        self.protocol: PeerProtocol | None = None
        self.hello_ok = False  #: the current connection's Hello was answered
        self.connector: IConnector | None = None
        self.factory: _LinkFactory | None = None
        self.retry: IDelayedCall | None = None
        self.flush_call: IDelayedCall | None = None
        self.paused = False
        self.closed = False
        self.snapshot: _SnapshotStream | None = None
        self._waiters: list[Deferred[PeerProtocol]] = []
        self._lost_waiters: list[Deferred[None]] = []
        self.probed_at = float("-inf")  #: when a closed connection was last redialled at once
        #: a working connection closed and we have not yet learnt whether the peer's
        #: process is gone: dial until a Hello is answered or a dial fails
        self.probing = False

    # ------------------------------------------------------------- sending

    def enqueue(self, message: PeerMessage, later: bool = True) -> None:
        """Queue ``message`` and make sure a flush or a connection is on its way.

        ``later=False``: schedule no flush; the caller calls :meth:`flush_now`
        once it has queued the whole batch.
        """
        queue = self.queue
        if len(queue) == queue.maxlen:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8, ...: not every time
                self.log.warn(
                    "send queue to {peer} is full; dropped {count} oldest messages so far",
                    peer=self.peer_id,
                    count=self.dropped,
                )
        queue.append(message)
        protocol = self.protocol
        if protocol is not None and not protocol.closing:
            if later and self.flush_call is None and not self.paused:
                self.flush_call = self.owner.clock.callLater(0, self.flush)
        else:
            self.ensure_connecting()

    def flush(self) -> None:
        """Write every queued message in one ``writeSequence``."""
        self.flush_call = None
        protocol = self.protocol
        queue = self.queue
        if protocol is None or protocol.closing or self.paused or not queue:
            return
        frames = []
        limit = self.owner.max_frame_bytes
        while queue:
            message = queue.popleft()
            try:
                frame = frame_message(message)
            except CodecError as e:
                self.log.error(
                    "cannot encode {kind} for {peer}, dropped: {error}",
                    kind=type(message).__name__,
                    peer=self.peer_id,
                    error=e,
                )
                continue
            if len(frame) > limit:  # the peer would drop the connection over it
                self.log.error(
                    "{kind} for {peer} is {size} bytes, over max_frame_bytes {limit}; dropped",
                    kind=type(message).__name__,
                    peer=self.peer_id,
                    size=len(frame),
                    limit=limit,
                )
                continue
            frames.append(frame)
        if frames:
            protocol.write_frames(frames)

    def flush_now(self) -> None:
        """Write the queue now, dropping a flush still scheduled for later."""
        call = self.flush_call
        if call is not None:
            if call.active():
                call.cancel()
            self.flush_call = None
        self.flush()

    def pauseProducing(self) -> None:
        """Stop flushing: the connection's write buffer is full."""
        self.paused = True

    def resumeProducing(self) -> None:
        """Flush again once the write buffer drained."""
        self.paused = False
        if self.queue and self.protocol is not None and self.flush_call is None:
            self.flush_call = self.owner.clock.callLater(0, self.flush)

    def stopProducing(self) -> None:
        """Do nothing: ``lost`` handles the end of the connection."""

    # ---------------------------------------------------------- connecting

    def ensure_connecting(self) -> None:
        """Dial now unless connected, already dialling or waiting out a backoff."""
        if self.closed or self.connector is not None or self.retry is not None:
            return
        if self.protocol is not None:
            return
        self.connect()

    def connect(self) -> None:
        """Dial the peer's current address; back off if it has none or dialling fails."""
        self.retry = None
        address = self.owner.address_of(self.peer_id)
        if address is None:
            if self.failures == 0:
                self.log.warn("no address for peer {peer}; will retry", peer=self.peer_id)
            self.backoff()
            return
        host, port = address
        factory = self.factory = _LinkFactory(self)
        make_endpoint = self.owner.connect_endpoint
        try:
            if make_endpoint is None:
                self.connector = self.owner.reactor.connectTCP(
                    host, port, factory, timeout=self.owner.connect_timeout
                )
            else:
                endpoint = make_endpoint(host, port, self.peer_id)
                attempt = _EndpointAttempt(self, factory, endpoint.connect(factory))
                if self.factory is factory and self.protocol is None:  # still under way
                    self.connector = attempt  # type: ignore[assignment]
        except Exception:
            self.log.failure(
                "cannot dial peer {peer} at {host}:{port}", peer=self.peer_id, host=host, port=port
            )
            self.connector = None
            self.factory = None
            self.backoff()

    def connect_failed(self, factory: _LinkFactory, reason: Failure) -> None:
        """Back off after a failed attempt (ignored if stale or closed)."""
        if factory is not self.factory:
            return
        self.connector = None
        self.factory = None
        if self.closed:
            return
        if self.failures == 0:
            self.log.warn(
                "cannot connect to peer {peer}: {reason}; retrying with backoff",
                peer=self.peer_id,
                reason=reason.getErrorMessage(),
            )
        self.probing = False  # a refusal answers it; other failures say nothing
        if reason.check(ConnectionRefusedError) is not None:
            self.owner.report_gone(self.peer_id)
        self.backoff()

    def backoff(self) -> None:
        """Schedule the next attempt after an exponential, jittered delay."""
        self.failures += 1
        if self.failures >= SNAPSHOT_MAX_FAILURES:
            self._fail_waiters(Failure(ConnectionError(f"{self.failures} failed attempts")))
        delay = self.owner.backoff_delay(self.failures)
        self.retry = self.owner.clock.callLater(delay, self._retry_due)

    def _retry_due(self) -> None:
        self.retry = None
        if self.closed:
            return
        if self.queue or self._waiters or self.probing:
            self.connect()
        # Otherwise stay idle; the next send dials at once (the backoff is over).

    def connected(self, protocol: PeerProtocol) -> None:
        """Send our Hello, flush the queue behind it and wake snapshot streams."""
        if self.factory is None or protocol.factory is not self.factory:
            protocol.drop("stale connection")
            return
        self.connector = None
        if self.closed:
            protocol.drop("transport closed")
            return
        self.protocol = protocol
        self.hello_ok = False
        self.paused = False
        transport = protocol.transport
        try:
            cast(IConsumer, transport).registerProducer(self, True)
        except Exception:  # flow control is an optimisation; carry on without it
            self.log.failure("cannot register producer for {peer}", peer=self.peer_id)
        owner = self.owner
        auth = owner.hello_auth
        proof = None if auth is None else auth.proof(owner.cluster_id, owner.node_id, self.peer_id)
        protocol.hello(
            owner.cluster_id, owner.node_id, self.peer_id, proof, owner.bootstrap
        ).addCallback(self._hello_answered, protocol)
        self.flush()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(protocol)

    def _hello_answered(self, ok: bool, protocol: PeerProtocol) -> None:
        if ok and protocol is self.protocol:
            self.hello_ok = True
            self.probing = False
            if self.failures:
                self.log.info(
                    "connected to peer {peer} again after {n} failures",
                    peer=self.peer_id,
                    n=self.failures,
                )
            self.failures = 0

    def lost(self, protocol: PeerProtocol, reason: Failure) -> None:
        """Forget the connection and, unless closed, reconnect after a backoff."""
        if protocol is not self.protocol:
            return
        was_up, self.hello_ok = self.hello_ok, False
        if not was_up and self.failures == 0 and not self.closed:
            # E.g. a TLS handshake that failed: the peer's certificate is not
            # the one expected, or the peer refused ours. Once per outage.
            self.log.warn(
                "connection to peer {peer} closed before our Hello was answered: "
                "{reason}; retrying with backoff",
                peer=self.peer_id,
                reason=_reason_text(reason),
            )
        self.protocol = None
        self.factory = None
        if self.flush_call is not None and self.flush_call.active():
            self.flush_call.cancel()
        self.flush_call = None
        lost_waiters, self._lost_waiters = self._lost_waiters, []
        for waiter in lost_waiters:
            waiter.callback(None)
        if self.closed:
            return
        now = self.owner.clock.seconds()
        if was_up and now - self.probed_at >= GONE_PROBE_SECONDS:
            # The peer may have died (a crash closes its connections at once):
            # dial now, so that a refusal tells the node within a round trip.
            # A dying process may still accept that dial (its listening socket
            # closes after some of its connections) and then reset it: until a
            # Hello is answered or a dial fails, dial again after each backoff.
            self.probed_at = now
            self.probing = True
            self.connect()
            return
        self.backoff()

    def when_connected(self) -> Deferred[PeerProtocol]:
        """Return a Deferred firing with a live connection (dialling if needed).

        Fails with CancelledError when the link closes, or ConnectionError after
        SNAPSHOT_MAX_FAILURES failed attempts in a row.
        """
        protocol = self.protocol
        if protocol is not None and not protocol.closing:
            return succeed(protocol)
        waiter: Deferred[PeerProtocol] = Deferred()
        self._waiters.append(waiter)
        self.ensure_connecting()
        return waiter

    def _fail_waiters(self, reason: Failure) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(reason)

    def close(self) -> Deferred[None]:
        """Stop dialling, drop the queue and close the connection; fire when it is gone."""
        self.closed = True
        self.snapshot = None
        self.queue.clear()
        for call in (self.retry, self.flush_call):
            if call is not None and call.active():
                call.cancel()
        self.retry = self.flush_call = None
        if self.connector is not None:
            with contextlib.suppress(Exception):  # already connected or failed
                self.connector.stopConnecting()
            self.connector = None
        self._fail_waiters(Failure(CancelledError("peer transport closed")))
        protocol = self.protocol
        if protocol is None or protocol.transport is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._lost_waiters.append(done)
        protocol.closing = True
        protocol.lose_connection()
        return done

    # ----------------------------------------------------------- snapshots

    def start_snapshot(self, message: InstallSnapshot) -> None:
        """Stream the snapshot ``message`` names, unless that one is already under way."""
        current = self.snapshot
        if current is not None and current.message == message:
            return
        stream = self.snapshot = _SnapshotStream(message)
        Deferred.fromCoroutine(self._stream(stream)).addErrback(
            lambda f: self.log.failure("snapshot stream to {peer} crashed", f, peer=self.peer_id)
        )

    async def _stream(self, stream: _SnapshotStream) -> None:
        """Send the snapshot chunk by chunk, each after the previous one's answer."""
        try:
            await self._send_chunks(stream)
        finally:
            if self.snapshot is stream:
                self.snapshot = None

    async def _send_chunks(self, stream: _SnapshotStream) -> None:
        owner = self.owner
        message = stream.message
        meta = message.meta
        # Leave send() at once: fetching the data may be slow.
        await deferLater(owner.clock, 0, lambda: None)
        if self.snapshot is not stream:
            return
        data = await owner.fetch_snapshot(meta)
        if data is None:
            return
        total = len(data)
        crc = zlib.crc32(data)
        payload = encode(message)
        chunk_size = owner.chunk_size
        offset = 0
        failures = 0
        rewinds = 0
        while self.snapshot is stream:
            try:
                protocol = await self.when_connected()
            except Exception as e:
                if not self.closed:
                    self.log.warn(
                        "giving up snapshot {index} to {peer}: {error}",
                        index=meta.index,
                        peer=self.peer_id,
                        error=e,
                    )
                break
            if self.snapshot is not stream:
                break
            end = min(total, offset + chunk_size)
            try:
                answer = await protocol.callRemote(
                    SnapshotChunk,
                    message=payload,
                    offset=offset,
                    total=total,
                    crc32=crc,
                    data=data[offset:end],
                    done=end == total,
                )
            except Exception as e:
                failures += 1
                if failures >= SNAPSHOT_MAX_FAILURES or self.closed:
                    self.log.warn(
                        "giving up snapshot {index} to {peer} after {n} failed chunks: {error}",
                        index=meta.index,
                        peer=self.peer_id,
                        n=failures,
                        error=e,
                    )
                    break
                continue  # resume on the next connection, where the receiver says
            failures = 0
            received = answer["received"]
            if not 0 <= received <= total:
                self.log.error(
                    "peer {peer} answered offset {received} for a {total}-byte snapshot",
                    peer=self.peer_id,
                    received=received,
                    total=total,
                )
                break
            if received == total:
                self.log.info(
                    "sent snapshot {index} ({total} bytes) to {peer}",
                    index=meta.index,
                    total=total,
                    peer=self.peer_id,
                )
                break
            if received < end:
                rewinds += 1
                if rewinds > SNAPSHOT_MAX_REWINDS:
                    self.log.warn(
                        "giving up snapshot {index} to {peer}: sent back {n} times",
                        index=meta.index,
                        peer=self.peer_id,
                        n=rewinds,
                    )
                    break
            offset = received


def _reason_text(reason: Failure) -> str:
    """Return a short text for why a connection ended (OpenSSL errors made readable)."""
    args = getattr(reason.value, "args", ())
    if args and isinstance(args[0], list):  # OpenSSL.SSL.Error: [(lib, func, reason), ...]
        texts = [str(r[-1]) for r in args[0] if isinstance(r, tuple) and r and r[-1]]
        if texts:
            return "; ".join(texts)
    return reason.getErrorMessage()


@implementer(IPeerTransport)
class AMPPeerTransport:
    """Carry core messages to and from the other nodes of one cluster over AMP.

    :param reactor: provides IReactorTCP and IReactorTime.
    :param addresses: the address book: a callable or a mapping from node id
        to (host, port), read at each connection attempt.
    :param is_known: whether a node id may connect to us (checked on Hello).
    :param snapshot_source: returns the data (or a Deferred of it) of the
        snapshot a sent InstallSnapshot names, or None to drop it.
    :param snapshot_receiver: stores a received snapshot; called before its
        InstallSnapshot is delivered to the receiver (may return a Deferred).
    :param rng: source of backoff jitter.
    :param max_queue: messages kept per peer while not connected or
        congested; the oldest is dropped beyond it.
    :param chunk_size: bytes of snapshot data per SnapshotChunk.
    :param max_frame_bytes: largest AMP box accepted from a peer, and sent to
        one (larger messages are dropped with an error). Keep it equal on all nodes.
    :param initial_backoff, max_backoff: reconnect delay bounds in seconds;
        each delay is drawn from [d/2, d) where d doubles per failure up to the cap.
    :param hello_timeout: seconds an accepted connection has to say Hello.
    :param connect_endpoint: how to dial a peer: called as
        ``connect_endpoint(host, port, peer_id)`` for each attempt, it returns
        an IStreamClientEndpoint (with TLS: one that checks the certificate
        names ``peer_id``). None dials plain TCP with ``reactor.connectTCP``.
    :param authenticate: with TLS, returns the node id an accepted
        connection's certificate proves; a Hello claiming any other id is
        refused (see :class:`~leeky_twisted.transport.peer_protocol.PeerInbox`).
    :param hello_auth: with a cluster key, our Hellos carry a proof that we
        hold it, and Hellos without a valid one are refused
        (:mod:`~leeky_twisted.transport.hello_auth`).
    :param bootstrap: this node's bootstrap configuration, stated in our
        Hellos; peers stating another one are refused
        (:mod:`~leeky_twisted.transport.bootstrap_config`).

    Raises ValueError on inconsistent limits.
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        cluster_id: str,
        node_id: NodeId,
        addresses: AddressBook,
        is_known: Callable[[NodeId], bool],
        snapshot_source: SnapshotSource,
        snapshot_receiver: SnapshotReceiver,
        *,
        rng: random.Random | None = None,
        log: Logger | None = None,
        max_queue: int = 1024,
        chunk_size: int = 256 * 1024,
        connect_timeout: float = 5.0,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.5,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        hello_timeout: float = 10.0,
        connect_endpoint: EndpointMaker | None = None,
        authenticate: Authenticator | None = None,
        hello_auth: HelloAuthenticator | None = None,
        bootstrap: BootstrapConfig | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if not 0 < chunk_size <= max_frame_bytes - 64 * 1024:
            raise ValueError("chunk_size must be positive and leave 64 KiB of max_frame_bytes")
        if not 0 < initial_backoff <= max_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        self.reactor = IReactorTCP(reactor)
        self.clock = IReactorTime(reactor)
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.log = log if log is not None else Logger(namespace=__name__)
        self.max_queue = max_queue
        self.chunk_size = chunk_size
        self.max_frame_bytes = max_frame_bytes
        self.connect_timeout = connect_timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.connect_endpoint = connect_endpoint
        self.hello_auth = hello_auth
        self.bootstrap = bootstrap
        self._rng = rng if rng is not None else random.Random()
        if isinstance(addresses, Mapping):
            self._lookup: Callable[[NodeId], Address | None] = addresses.get
        else:
            self._lookup = addresses
        self._snapshot_source = snapshot_source
        self._inbox = PeerInbox(
            cluster_id,
            node_id,
            is_known,
            snapshot_receiver,
            log=self.log,
            max_frame_bytes=max_frame_bytes,
            max_snapshot_bytes=max_snapshot_bytes,
            clock=self.clock,
            hello_timeout=hello_timeout,
            authenticate=authenticate,
            hello_auth=hello_auth,
            bootstrap=bootstrap,
        )
        self._factory = PeerServerFactory(self._inbox)
        self._links: dict[NodeId, _PeerLink] = {}
        self._peer_gone: Callable[[NodeId], None] | None = None
        self._local: list[PeerMessage] = []  #: messages to this node, for the next turn
        self._ports: list[IListeningPort] = []
        self._closed = False

    # -------------------------------------------------------- IPeerTransport

    def flush(self) -> None:
        """Write every queued message now instead of at the end of this reactor turn.

        The node calls this after handing over a whole batch: the batch still
        goes out as one write per peer, a turn sooner.
        """
        for link in self._links.values():
            call = link.flush_call
            if call is not None and call.active():
                call.cancel()
                link.flush()

    def send(self, message: PeerMessage) -> None:
        """Send ``message`` to ``message.recipient``; never raises, may drop.

        Cheap: it queues the message for a write at the end of this reactor
        turn. A message to this node itself is delivered on the next turn. An
        InstallSnapshot starts a snapshot stream (once per snapshot and peer).
        """
        if not self._closed:
            self._send(message, True)

    def send_batch(self, messages: Iterable[PeerMessage]) -> None:
        """Send each of ``messages`` as :meth:`send` does, writing each peer's share now.

        One write per peer, in this reactor turn, and no timer: the node's
        way to hand over a whole Ready (``send`` then ``flush`` costs a
        ``callLater(0)`` and its cancellation per peer).
        """
        if self._closed:
            return
        touched: dict[_PeerLink, None] = {}
        send = self._send
        for message in messages:
            link = send(message, False)
            if link is not None:
                touched[link] = None
        for link in touched:
            try:
                link.flush_now()
            except Exception:
                self.log.failure("flushing to {peer} failed", peer=link.peer_id)

    def _send(self, message: PeerMessage, later: bool) -> _PeerLink | None:
        """Queue ``message``; return the link it waits in for a flush, if any."""
        try:
            recipient = message.recipient
            if recipient == self.node_id:
                self._deliver_locally(message)
                return None
            link = self._links.get(recipient)
            if link is None:
                link = self._links[recipient] = _PeerLink(self, recipient)
            if type(message) is InstallSnapshot:
                link.start_snapshot(message)
                return None
            link.enqueue(message, later)
            return link
        except Exception:
            self.log.failure("send({kind}) failed; dropped", kind=type(message).__name__)
            return None

    def _deliver_locally(self, message: PeerMessage) -> None:
        """Deliver a message to this node on the next turn, with the others of this turn.

        They are delivered as one read (then ``after_read``): one timer per
        turn, and the node handles them in the turn they arrive.
        """
        local = self._local
        local.append(message)
        if len(local) == 1:
            self.clock.callLater(0, self._deliver_local)

    def _deliver_local(self) -> None:
        messages, self._local = self._local, []
        if not self._closed:
            self._inbox.deliver_read(messages)

    def defer_to_end_of_read(self) -> bool:
        """Return True while a read's messages are being delivered.

        ``after_read`` is then sure to run once they are: the node leaves its
        work to it instead of scheduling (and then cancelling) a call.
        """
        return self._inbox.hold_for_end_of_read()

    def set_receiver(self, receiver: Receiver) -> None:
        """Deliver every incoming message by calling ``receiver(message)``."""
        self._inbox.receiver = receiver

    def set_after_read(self, after_read: Callable[[], None]) -> None:
        """Call ``after_read()`` once the messages of one read are all delivered.

        A node handles what they ask for in the same reactor turn (as one batch)
        instead of the next one.
        """
        self._inbox.after_read = after_read

    def set_peer_gone(self, peer_gone: Callable[[NodeId], None]) -> None:
        """Call ``peer_gone(peer)`` when a dial to ``peer`` is refused: no process
        listens at its address (it crashed, was killed or stopped). A working
        connection that closes is redialled at once to find out."""
        self._peer_gone = peer_gone

    def report_gone(self, peer_id: NodeId) -> None:
        """Tell the node that ``peer_id`` refused a dial (see :meth:`set_peer_gone`)."""
        peer_gone = self._peer_gone
        if peer_gone is None or self._closed:
            return
        try:
            peer_gone(peer_id)
        except Exception:
            self.log.failure("the node failed on peer {peer} gone", peer=peer_id)

    def close(self) -> Deferred[None]:
        """Stop listening, close every connection; fire when all are closed."""
        self._closed = True
        waits: list[Deferred[Any]] = [maybeDeferred(port.stopListening) for port in self._ports]
        self._ports = []
        for link in self._links.values():
            waits.append(link.close())
        self._links = {}
        for protocol in list(self._inbox.connections):
            if protocol.transport is None:
                continue
            lost: Deferred[None] = Deferred()
            protocol.on_lost = lambda _p, _r, lost=lost: lost.callback(None)
            protocol.closing = True
            protocol.lose_connection()
            waits.append(lost)
        self._inbox.forget_snapshots()
        return gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    # ------------------------------------------------------------- serving

    def server_factory(self) -> PeerServerFactory:
        """Return the factory for accepted peer connections (to listen on)."""
        return self._factory

    def listen(self, port: int, interface: str = "") -> IListeningPort:
        """Listen for peers on TCP ``port``; ``close`` stops it."""
        listening = self.reactor.listenTCP(port, self._factory, interface=interface)
        self._ports.append(listening)
        return listening

    def disconnect(self, node_id: NodeId) -> Deferred[None]:
        """Close the connection to ``node_id`` and forget its queue.

        The next send dials again, at the address book's current address: call
        this when a peer's address changed or it left the cluster.
        """
        link = self._links.pop(node_id, None)
        if link is None:
            return succeed(None)
        return link.close()

    def peer_status(self) -> dict[NodeId, dict[str, object]]:
        """Return, per dialled peer: connected, queued, dropped and failed attempts."""
        return {
            node_id: {
                "connected": link.protocol is not None,
                "queued": len(link.queue),
                "dropped": link.dropped,
                "failures": link.failures,
                "snapshot": link.snapshot.message.meta.index if link.snapshot else None,
            }
            for node_id, link in self._links.items()
        }

    def refused_messages(self) -> dict[NodeId, int]:
        """Return, per peer, how many of its messages were refused for out-of-bounds values."""
        return dict(self._inbox.refused)

    # ------------------------------------------------------------- helpers

    def address_of(self, node_id: NodeId) -> Address | None:
        """Return the current (host, port) of ``node_id``, or None (never raises)."""
        try:
            address = self._lookup(node_id)
        except Exception:
            self.log.failure("address book lookup of {peer} raised", peer=node_id)
            return None
        if address is None:
            return None
        try:
            host, port = address
        except (TypeError, ValueError):
            self.log.error("bad address {address!r} for {peer}", address=address, peer=node_id)
            return None
        if not isinstance(host, str) or not isinstance(port, int):
            self.log.error("bad address {address!r} for {peer}", address=address, peer=node_id)
            return None
        return host, port

    def backoff_delay(self, failures: int) -> float:
        """Return the delay after ``failures`` failures in a row.

        It is drawn from [d/2, d) with d = min(max_backoff, initial_backoff * 2**(failures-1)).
        """
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** min(failures - 1, 32))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def fetch_snapshot(self, meta: SnapshotMeta) -> bytes | None:
        """Return the data of snapshot ``meta`` from the snapshot source, or None (logged)."""
        try:
            data = self._snapshot_source(meta)
            if isinstance(data, Deferred):
                data = await data
        except Exception:
            self.log.failure("snapshot_source failed for snapshot {index}", index=meta.index)
            return None
        if data is None:
            self.log.warn("no data for snapshot {index}; InstallSnapshot dropped", index=meta.index)
            return None
        return data if isinstance(data, bytes) else bytes(data)
