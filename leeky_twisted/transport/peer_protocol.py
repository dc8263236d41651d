"""The AMP protocol between Raft peers: handshake, validation and delivery.

The schema is in :mod:`~leeky_twisted.transport.peer_commands`; this module is
the behaviour behind it:

- :class:`PeerInbox` holds what every accepted connection shares: who we are,
  who may talk to us (and, with TLS, which node id each connection's
  certificate proves), the receiver callbacks and half-received snapshots.
- :class:`PeerLocator` holds the responders. They decode, check and deliver,
  and never raise: a bad message is logged and the connection dropped.
- :class:`PeerProtocol` is the AMP connection itself. It enforces the Hello
  handshake and a size bound on every box, and turns any malformed input
  into one clear log line and a dropped connection instead of an exception
  escaping to the reactor.
- :func:`frame_message` writes a one-way message box directly, so the sender
  can coalesce many of them into one ``writeSequence``.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IAddress, IConsumer, IDelayedCall, IReactorTime
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from leeky_twisted.protocol.ampframes import QuietAMP, between_boxes, split_box
from leeky_twisted.protocol.netutil import write_now
from leeky_twisted.transport.bootstrap_config import BootstrapConfig
from leeky_twisted.transport.codec import (
    CodecError,
    OutOfBounds,
    PeerMessage,
    decode,
    encode,
    put_large,
)
from leeky_twisted.transport.hello_auth import HelloAuthenticator
from leeky_twisted.transport.notices import RemovedNotice
from leeky_twisted.transport.peer_commands import (
    EAGER,
    AppendEntriesCmd,
    AppendEntriesResponseCmd,
    HeartbeatCmd,
    HeartbeatResponseCmd,
    Hello,
    HelloRefused,
    ReadIndexRequestCmd,
    ReadIndexResponseCmd,
    RemovedNoticeCmd,
    RequestVoteCmd,
    RequestVoteResponseCmd,
    SnapshotChunk,
    TimeoutNowCmd,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "HELLO_FRAME_BYTES",
    "MESSAGE_COMMANDS",
    "REFUSAL_LOG_INTERVAL",
    "Authenticator",
    "PeerInbox",
    "PeerLocator",
    "PeerProtocol",
    "PeerProtocolError",
    "PeerServerFactory",
    "certificate_node_id",
    "frame_message",
]

#: All a refused dialler is told: no cluster id, no reason (those go to our log).
HELLO_REFUSAL = "refused"

#: Largest box (all keys and values) accepted before the Hello succeeds.
HELLO_FRAME_BYTES = 4096
#: Largest box the dialling side accepts: only answers come back on it.
ANSWER_FRAME_BYTES = 64 * 1024
#: Default largest box after the Hello: bounds one AppendEntries or chunk.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Default largest snapshot a peer may stream to us.
DEFAULT_MAX_SNAPSHOT_BYTES = 1 << 30
#: At most one log line per peer in this many seconds about refused messages.
REFUSAL_LOG_INTERVAL = 60.0

#: The one-way command carrying each message type (InstallSnapshot rides on SnapshotChunk).
MESSAGE_COMMANDS: dict[type, type[amp.Command]] = {
    RequestVote: RequestVoteCmd,
    RequestVoteResponse: RequestVoteResponseCmd,
    AppendEntries: AppendEntriesCmd,
    AppendEntriesResponse: AppendEntriesResponseCmd,
    Heartbeat: HeartbeatCmd,
    HeartbeatResponse: HeartbeatResponseCmd,
    TimeoutNow: TimeoutNowCmd,
    ReadIndexRequest: ReadIndexRequestCmd,
    ReadIndexResponse: ReadIndexResponseCmd,
    RemovedNotice: RemovedNoticeCmd,
}
_COMMAND_NAMES: dict[type, bytes] = {
    cls: command.commandName for cls, command in MESSAGE_COMMANDS.items()
}
#: The answers that may say ``eager`` (an AMP argument beside ``m``: see peer_commands).
_EAGER_TYPES = (AppendEntriesResponse, HeartbeatResponse)
_TRUE = b"True"  # how amp.Boolean writes True
#: The message type each one-way command carries, for the receive fast path. A
#: RemovedNotice is left to AMP's parser and its responder, which delivers it only
#: when the Hello proved who sent it.
_COMMAND_TYPES: dict[bytes, type] = {
    name: cls for cls, name in _COMMAND_NAMES.items() if cls is not RemovedNotice
}
_ONE_WAY_KEYS = frozenset((amp.COMMAND, b"m"))
_EAGER_KEYS = frozenset((amp.COMMAND, b"m", EAGER))
#: what the fast path reads an ``eager`` value as (anything else goes to AMP's parser)
_EAGER_VALUES = {_TRUE: True, b"False": False}

Receiver = Callable[[PeerMessage], None]
SnapshotReceiver = Callable[[SnapshotMeta, bytes], "Deferred[Any] | None"]
#: Returns the node id an accepted connection's certificate proves, or None if none.
Authenticator = Callable[[Any], "NodeId | None"]


def certificate_node_id(transport: Any) -> NodeId | None:
    """Return the node id in the TLS peer certificate of ``transport``, or None.

    None when the transport is not TLS, the peer sent no certificate, or the
    certificate's role is not ``node`` (a client certificate proves no node id).
    The certificate chain itself was already checked against the cluster CA
    during the handshake (:class:`~leeky_twisted.security.tls.MutualTLSServerEndpoint`).
    """
    from leeky_twisted.security.certs import NODE_ROLE
    from leeky_twisted.security.tls import peer_identity

    identity = peer_identity(transport)
    if identity is None or identity[1] != NODE_ROLE or not identity[0]:
        return None
    return NodeId(identity[0])


class PeerProtocolError(Exception):
    """A peer broke the protocol; the connection it came on must be dropped."""


def frame_message(message: PeerMessage) -> bytes:
    """Return the serialized AMP box carrying ``message`` as a one-way command.

    The bytes are what ``callRemote`` would write for the message's command,
    without creating a Command, a tag or a Deferred. Raises CodecError for an
    ``InstallSnapshot`` (it travels as snapshot chunks) or an unencodable message.
    """
    name = _COMMAND_NAMES.get(type(message))
    if name is None:
        raise CodecError(f"{type(message).__name__} has no one-way command")
    box = amp.AmpBox()
    box[amp.COMMAND] = name
    put_large(box, b"m", encode(message))
    if isinstance(message, _EAGER_TYPES) and message.eager:
        box[EAGER] = _TRUE
    data: bytes = box.serialize()
    return data


def _describe_address(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"{host}:{port}"


# ------------------------------------------------------------------ shared state


@dataclass
class _PartialSnapshot:
    """Snapshot bytes received so far from one sender."""

    key: tuple[SnapshotMeta, int, int]  # meta, total, crc32
    data: bytearray = field(default_factory=bytearray)


class PeerInbox:
    """What every accepted peer connection shares, and where messages go.

    :param is_known: returns whether a node id may connect (a configured or
        known peer); called for each Hello.
    :param snapshot_receiver: called as ``snapshot_receiver(meta, data)`` when
        a streamed snapshot is complete, before its InstallSnapshot message is
        delivered. It may return a Deferred; the message is then delivered
        (and later messages on that connection held back) until it fires.
    :param clock: when given, an accepted connection that has not said Hello
        within ``hello_timeout`` seconds is dropped.
    :param authenticate: when given (TLS on), a Hello is accepted only if
        ``authenticate(transport)`` returns the node id the Hello claims; use
        :func:`certificate_node_id`. None: any known node id is believed.
    :param hello_auth: when given (a cluster key), a Hello is accepted only
        with a valid proof that the dialler holds the key.
    :param bootstrap: this node's bootstrap configuration, if it has one: a
        Hello stating another one is refused.
    """

    def __init__(
        self,
        cluster_id: str,
        node_id: NodeId,
        is_known: Callable[[NodeId], bool],
        snapshot_receiver: SnapshotReceiver,
        *,
        log: Logger | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        clock: IReactorTime | None = None,
        hello_timeout: float = 10.0,
        authenticate: Authenticator | None = None,
        hello_auth: HelloAuthenticator | None = None,
        bootstrap: BootstrapConfig | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.hello_auth = hello_auth
        self.bootstrap = bootstrap
        self.log = log if log is not None else Logger(namespace="leeky_twisted.transport.peers")
        self.max_frame_bytes = max_frame_bytes
        self.max_snapshot_bytes = max_snapshot_bytes
        self.clock = clock
        self.hello_timeout = hello_timeout
        self.receiver: Receiver | None = None
        #: called at the end of each read that delivered at least one message
        #: (the node handles them all in this reactor turn, as one batch)
        self.after_read: Callable[[], None] | None = None
        #: a read's messages are being delivered (``end_of_read`` follows)
        self.reading = False
        self._end_wanted = False  #: ``hold_for_end_of_read`` promised an ``end_of_read``
        #: messages handed to the receiver so far
        self.delivered = 0
        self.connections: set[PeerProtocol] = set()
        self._is_known = is_known
        self._authenticate = authenticate
        self._snapshot_receiver = snapshot_receiver
        self._partials: dict[NodeId, _PartialSnapshot] = {}
        #: Messages refused for out-of-bounds values, per sending peer, since start.
        self.refused: dict[NodeId, int] = {}
        #: RemovedNotices ignored because no Hello proves who sent them (no key, no TLS)
        self.unproven_notices = 0
        self._refusals_logged: dict[NodeId, tuple[float, int]] = {}  # peer: (when, count then)

    @property
    def authenticated(self) -> bool:
        """Whether every accepted Hello is proven (a cluster key, or TLS certificates)."""
        return self.hello_auth is not None or self._authenticate is not None

    def refusal(self, cluster_id: str, node_id: NodeId) -> str | None:
        """Return why a Hello from ``node_id`` of ``cluster_id`` is refused, or None."""
        if cluster_id != self.cluster_id:
            return f"node {node_id!r} is in cluster {cluster_id!r}, not ours ({self.cluster_id!r})"
        if node_id == self.node_id:
            return f"node id {node_id!r} is our own"
        try:
            known = bool(self._is_known(node_id))
        except Exception:
            self.log.failure("is_known({node_id!r}) raised", node_id=node_id)
            known = False
        if not known:
            return f"node id {node_id!r} is not a known peer of cluster {self.cluster_id!r}"
        return None

    def proof_refusal(self, cluster_id: str, node_id: NodeId, proof: bytes | None) -> str | None:
        """Return why a Hello's key ``proof`` is refused, or None (also None without a key)."""
        if self.hello_auth is None:
            return None
        return self.hello_auth.refusal(proof, cluster_id, node_id, self.node_id)

    def bootstrap_refusal(
        self, node_id: NodeId, digest: str | None, description: str | None
    ) -> str | None:
        """Return why ``node_id``'s bootstrap configuration differs from ours, or None."""
        if self.bootstrap is None:
            return None
        return self.bootstrap.refusal(node_id, digest, description)

    def identity_refusal(self, node_id: NodeId, transport: Any) -> str | None:
        """Return why ``transport`` may not speak for ``node_id``, or None.

        Without an authenticator every connection may (plaintext: node ids are
        believed). With one, the connection's certificate must name ``node_id``.
        """
        if self._authenticate is None:
            return None
        try:
            proven = self._authenticate(transport)
        except Exception:
            self.log.failure("authenticating a Hello from {node_id!r} raised", node_id=node_id)
            proven = None
        if proven is None:
            return f"Hello claims node {node_id!r} but the connection has no node certificate"
        if proven != node_id:
            return f"Hello claims node {node_id!r} but the certificate names node {proven!r}"
        return None

    def refuse_message(self, peer: NodeId, reason: str) -> None:
        """Count a message from ``peer`` refused for an out-of-bounds value.

        Logs the first refusal from each peer, then at most one line per peer
        every REFUSAL_LOG_INTERVAL seconds with the count since the last line
        (without a clock: only the first), never one line per message.
        """
        count = self.refused.get(peer, 0) + 1
        self.refused[peer] = count
        now = self.clock.seconds() if self.clock is not None else 0.0
        last = self._refusals_logged.get(peer)
        if last is not None and (self.clock is None or now - last[0] < REFUSAL_LOG_INTERVAL):
            return
        self._refusals_logged[peer] = (now, count)
        since = count - (last[1] if last is not None else 0)
        self.log.warn(
            "refused {since} message(s) from peer {peer} ({count} in all) holding impossible "
            "values; the latest: {reason}",
            since=since,
            peer=peer,
            count=count,
            reason=reason,
        )

    def deliver(self, message: PeerMessage) -> None:
        """Hand ``message`` to the receiver; log and drop it if there is none or it raises."""
        receiver = self.receiver
        if receiver is None:
            self.log.warn(
                "no receiver set; dropping {kind} from {sender}",
                kind=type(message).__name__,
                sender=message.sender,
            )
            return
        self.delivered += 1
        try:
            receiver(message)
        except Exception:
            self.log.failure(
                "receiver raised on {kind} from {sender}",
                kind=type(message).__name__,
                sender=message.sender,
            )

    def hold_for_end_of_read(self) -> bool:
        """Return True, and promise an ``end_of_read``, while a read is being delivered."""
        if self.reading:
            self._end_wanted = True
            return True
        return False

    def deliver_read(self, messages: list[PeerMessage]) -> None:
        """Deliver ``messages`` as one read: each in turn, then ``end_of_read``."""
        was_reading, self.reading = self.reading, True
        try:
            for message in messages:
                self.deliver(message)
        finally:
            self.reading = was_reading
            if not was_reading:
                self.end_of_read()

    def read_ended(self, delivered: int) -> None:
        """End a socket read: ``end_of_read`` if it delivered (``delivered`` was the count before)
        or someone is waiting for it."""
        self.reading = False
        if self.delivered != delivered or self._end_wanted:
            self.end_of_read()

    def end_of_read(self) -> None:
        """Tell ``after_read`` that a read's messages are all delivered; log if it raises."""
        self._end_wanted = False
        after_read = self.after_read
        if after_read is None:
            return
        try:
            after_read()
        except Exception:
            self.log.failure("after_read raised")

    def snapshot_chunk(
        self, message: InstallSnapshot, offset: int, total: int, crc32: int, data: bytes, done: bool
    ) -> int | Deferred[int]:
        """Add one chunk of the snapshot ``message`` names; return the bytes now held.

        A chunk at any offset other than the bytes already held is ignored (the
        answer tells the sender where to continue). When the last chunk
        completes the data and its checksum matches, call the snapshot
        receiver, then deliver ``message``; answer 0 (start over) when the
        checksum or the snapshot receiver fails.
        Raises PeerProtocolError on inconsistent sizes or flags.
        """
        if not 0 <= total <= self.max_snapshot_bytes:
            raise PeerProtocolError(
                f"snapshot of {total} bytes exceeds the limit of {self.max_snapshot_bytes}"
            )
        if not 0 <= offset <= total or offset + len(data) > total:
            raise PeerProtocolError(
                f"chunk [{offset}, {offset + len(data)}) lies outside a {total}-byte snapshot"
            )
        if done != (offset + len(data) == total):
            raise PeerProtocolError(f"done={done} disagrees with the chunk's end")
        if not 0 <= crc32 <= 0xFFFFFFFF:
            raise PeerProtocolError(f"crc32 {crc32} out of range")
        sender = message.sender
        key = (message.meta, total, crc32)
        partial = self._partials.get(sender)
        if partial is None or partial.key != key:
            partial = self._partials[sender] = _PartialSnapshot(key)
        held = len(partial.data)
        if offset != held:
            return held
        partial.data += data
        if not done:
            return len(partial.data)
        del self._partials[sender]
        if zlib.crc32(partial.data) != crc32:
            self.log.warn(
                "snapshot {index} from {sender} failed its checksum; asking to start over",
                index=message.meta.index,
                sender=sender,
            )
            return 0
        return self._store(message, bytes(partial.data))

    def _store(self, message: InstallSnapshot, data: bytes) -> int | Deferred[int]:
        meta = message.meta
        try:
            stored = self._snapshot_receiver(meta, data)
        except Exception:
            self.log.failure(
                "snapshot_receiver failed on snapshot {index} from {sender}",
                index=meta.index,
                sender=message.sender,
            )
            return 0
        if isinstance(stored, Deferred):

            def ok(_: object) -> int:
                self.deliver(message)
                return len(data)

            def failed(reason: Failure) -> int:
                self.log.failure(
                    "snapshot_receiver failed on snapshot {index} from {sender}",
                    reason,
                    index=meta.index,
                    sender=message.sender,
                )
                return 0

            return stored.addCallbacks(ok, failed)
        self.deliver(message)
        return len(data)

    def forget_snapshots(self) -> None:
        """Drop every half-received snapshot."""
        self._partials.clear()


# ------------------------------------------------------------------- responders


def _dropped(reason: str) -> Deferred[Any]:
    """Return the result of a responder whose connection is being dropped.

    For an answered command AMP turns this fatal error into an error box and
    closes the connection; for a one-way command it reaches
    ``PeerProtocol.unhandledError``, which ignores it on a closing connection.
    """
    return fail(amp.RemoteAmpError(b"PROTOCOL_ERROR", reason, fatal=True))


class PeerLocator(amp.CommandLocator):
    """The responders of one peer connection.

    Each decodes its message, checks it against the Hello (sender) and this
    node (recipient), and delivers it through the inbox. None of them raises:
    a violation drops the connection with a log line. On a dialled
    (outgoing) connection, where ``inbox`` is None, every command is refused.
    """

    def __init__(self, protocol: PeerProtocol, inbox: PeerInbox | None) -> None:
        self._protocol = protocol
        self._inbox = inbox

    def locateResponder(self, name: bytes) -> Callable[[amp.AmpBox], Any]:
        """Return a responder for ``name`` that never raises (unknown names drop the connection)."""
        protocol = self._protocol
        responder = None
        if self._inbox is not None:
            responder = super().locateResponder(name)

        def respond(box: amp.AmpBox) -> Any:
            if responder is None:
                reason = f"unexpected command {name!r}"
                protocol.drop(reason)
                return _dropped(reason)
            try:
                return responder(box)
            except Exception as e:  # the box's arguments did not parse
                reason = f"malformed {name.decode('ascii', 'replace')} arguments: {e!r}"
                protocol.drop(reason)
                return _dropped(reason)

        return respond

    @Hello.responder
    def hello(
        self,
        cluster_id: str,
        node_id: str,
        proof: bytes | None = None,
        bootstrap: str | None = None,
        bootstrap_peers: str | None = None,
    ) -> dict[str, str]:
        """Accept a known node of our cluster, or refuse it with HELLO_REFUSED.

        With TLS, the node id claimed must also be the one in the connection's
        certificate, so one node's key cannot speak for another node. A node
        that states another bootstrap configuration than ours is refused. A
        refusal tells the dialler nothing (not our cluster id, not which
        check failed): the reason goes to this node's log only.
        """
        protocol = self._protocol
        inbox = self._inbox
        assert inbox is not None  # only accepting connections have responders
        if protocol.peer_id is not None:
            reason = "second Hello on one connection"
            protocol.refuse(reason)
            raise HelloRefused(HELLO_REFUSAL)
        reason_or_none = inbox.refusal(cluster_id, NodeId(node_id))
        if reason_or_none is None:
            reason_or_none = inbox.proof_refusal(cluster_id, NodeId(node_id), proof)
        if reason_or_none is None:
            reason_or_none = inbox.identity_refusal(NodeId(node_id), protocol.transport)
        if reason_or_none is None:
            reason_or_none = inbox.bootstrap_refusal(NodeId(node_id), bootstrap, bootstrap_peers)
        if reason_or_none is not None:
            protocol.refuse(reason_or_none)
            raise HelloRefused(HELLO_REFUSAL)
        protocol.accept(NodeId(node_id), inbox.max_frame_bytes)
        return {"cluster_id": inbox.cluster_id, "node_id": inbox.node_id}

    def _message(self, payload: bytes, expected: type) -> PeerMessage | None:
        """Decode and check ``payload``; return None when it must not be delivered.

        A message with out-of-bounds values is refused alone (counted, logged
        at most once per interval); any other violation drops the connection.
        """
        protocol = self._protocol
        inbox = self._inbox
        assert inbox is not None
        try:
            message = decode(payload)
        except OutOfBounds as e:  # well-formed, but holding impossible values: drop it alone
            if protocol.peer_id is None:  # cannot happen: messages wait for the Hello
                protocol.drop(str(e))
            else:
                inbox.refuse_message(protocol.peer_id, str(e))
            return None
        except CodecError as e:
            protocol.drop(f"undecodable {expected.__name__}: {e}")
            return None
        if type(message) is not expected:
            protocol.drop(f"{type(message).__name__} sent as a {expected.__name__} command")
            return None
        if message.sender != protocol.peer_id:
            protocol.drop(
                f"message claims sender {message.sender!r} but Hello said {protocol.peer_id!r}"
            )
            return None
        if message.recipient != inbox.node_id:
            protocol.drop(f"message for {message.recipient!r} reached {inbox.node_id!r}")
            return None
        return message

    def _one_way(self, payload: bytes, expected: type, eager: bool | None = None) -> dict[str, Any]:
        assert self._inbox is not None
        message = self._message(payload, expected)
        if message is not None:
            if eager and isinstance(message, _EAGER_TYPES):
                # the codec leaves it out of ``m``: see peer_commands
                message = replace(message, eager=True)
            self._inbox.deliver(message)
        return {}

    @RequestVoteCmd.responder
    def request_vote(self, m: bytes) -> dict[str, Any]:
        """Deliver a RequestVote."""
        return self._one_way(m, RequestVote)

    @RequestVoteResponseCmd.responder
    def request_vote_response(self, m: bytes) -> dict[str, Any]:
        """Deliver a RequestVoteResponse."""
        return self._one_way(m, RequestVoteResponse)

    @AppendEntriesCmd.responder
    def append_entries(self, m: bytes) -> dict[str, Any]:
        """Deliver an AppendEntries."""
        return self._one_way(m, AppendEntries)

    @AppendEntriesResponseCmd.responder
    def append_entries_response(self, m: bytes, eager: bool | None = None) -> dict[str, Any]:
        """Deliver an AppendEntriesResponse."""
        return self._one_way(m, AppendEntriesResponse, eager)

    @HeartbeatCmd.responder
    def heartbeat(self, m: bytes) -> dict[str, Any]:
        """Deliver a Heartbeat."""
        return self._one_way(m, Heartbeat)

    @HeartbeatResponseCmd.responder
    def heartbeat_response(self, m: bytes, eager: bool | None = None) -> dict[str, Any]:
        """Deliver a HeartbeatResponse."""
        return self._one_way(m, HeartbeatResponse, eager)

    @TimeoutNowCmd.responder
    def timeout_now(self, m: bytes) -> dict[str, Any]:
        """Deliver a TimeoutNow."""
        return self._one_way(m, TimeoutNow)

    @ReadIndexRequestCmd.responder
    def read_index_request(self, m: bytes) -> dict[str, Any]:
        """Deliver a ReadIndexRequest."""
        return self._one_way(m, ReadIndexRequest)

    @ReadIndexResponseCmd.responder
    def read_index_response(self, m: bytes) -> dict[str, Any]:
        """Deliver a ReadIndexResponse."""
        return self._one_way(m, ReadIndexResponse)

    @RemovedNoticeCmd.responder
    def removed_notice(self, m: bytes) -> dict[str, Any]:
        """Deliver a RemovedNotice, only if the Hello proved who sent it."""
        inbox = self._inbox
        assert inbox is not None
        if not inbox.authenticated:
            message = self._message(m, RemovedNotice)
            if message is not None:
                inbox.unproven_notices += 1
                if inbox.unproven_notices == 1:
                    inbox.log.warn(
                        "ignored a notice from {peer} that this node was removed: without a "
                        "cluster key or TLS, a Hello does not prove who sent it",
                        peer=message.sender,
                    )
            return {}
        return self._one_way(m, RemovedNotice)

    @SnapshotChunk.responder
    def snapshot_chunk(
        self, message: bytes, offset: int, total: int, crc32: int, data: bytes, done: bool
    ) -> Any:
        """Store a chunk; with the last one, store the snapshot and deliver InstallSnapshot."""
        protocol = self._protocol
        inbox = self._inbox
        assert inbox is not None
        install = self._message(message, InstallSnapshot)
        if install is None:  # the chunk must be answered: drop the connection instead
            reason = "bad InstallSnapshot in SnapshotChunk"
            protocol.drop(reason)
            return _dropped(reason)
        assert isinstance(install, InstallSnapshot)
        try:
            received = inbox.snapshot_chunk(install, offset, total, crc32, data, done)
        except PeerProtocolError as e:
            protocol.drop(str(e))
            return _dropped(str(e))
        if not isinstance(received, Deferred):
            return {"received": received}
        fired: list[int] = []
        received.addCallbacks(fired.append, lambda _: fired.append(0))
        if fired:  # stored synchronously after all
            return {"received": fired[0]}
        # Hold back later boxes until the snapshot is stored and InstallSnapshot
        # delivered, so every message keeps its place in order.
        protocol.pauseProducing()
        answer: Deferred[dict[str, int]] = Deferred()

        def stored(_: object) -> None:
            answer.callback({"received": fired[0] if fired else 0})
            protocol.resume()

        received.addBoth(stored)
        return answer


# --------------------------------------------------------------------- protocol


class PeerProtocol(QuietAMP):
    """One AMP connection between two peers, either accepted or dialled.

    An accepted connection (``inbox`` given) takes nothing but a Hello until
    the Hello succeeds, and boxes of at most HELLO_FRAME_BYTES until then,
    ``max_frame_bytes`` after. A dialled connection (``inbox`` None) takes only
    answers. Any violation logs one line and drops the connection; nothing
    raises out of ``dataReceived``.
    """

    def __init__(self, inbox: PeerInbox | None, log: Logger) -> None:
        super().__init__(locator=PeerLocator(self, inbox))
        self.inbox = inbox
        self.log = log
        #: The peer's node id once the Hello succeeded (or, dialling, the node we want).
        self.peer_id: NodeId | None = None
        #: True once the connection is being dropped; later input is ignored.
        self.closing = False
        #: Called with self once the connection is made.
        self.on_made: Callable[[PeerProtocol], None] | None = None
        #: Called with (self, reason) when the connection is lost.
        self.on_lost: Callable[[PeerProtocol, Failure], None] | None = None
        self._box_bytes = 0
        self._box_limit = HELLO_FRAME_BYTES if inbox is not None else ANSWER_FRAME_BYTES
        self._hello_timer: IDelayedCall | None = None

    def describe(self) -> str:
        """Return the peer's id and address for log lines."""
        transport = self.transport
        address = _describe_address(transport.getPeer()) if transport is not None else "?"
        if self.peer_id is None:
            return address
        return f"{self.peer_id} ({address})"

    # ------------------------------------------------------------ lifecycle

    def connectionMade(self) -> None:
        """Register an accepted connection, start its Hello timer, and tell ``on_made``."""
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:  # we coalesce writes ourselves; Nagle only adds latency
            with contextlib.suppress(Exception):
                set_no_delay(True)
        inbox = self.inbox
        if inbox is not None:
            inbox.connections.add(self)
            if inbox.clock is not None:
                self._hello_timer = inbox.clock.callLater(
                    inbox.hello_timeout, self._hello_timed_out
                )
        if self.on_made is not None:
            try:
                self.on_made(self)
            except Exception:
                self.log.failure("on_made callback raised")
                self.drop("internal error on connect")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail outstanding calls, unregister, and tell ``on_lost``."""
        self.closing = True
        self._cancel_hello_timer()
        try:
            super().connectionLost(reason)
        except Exception:
            self.log.failure("error while closing peer connection")
        if self.inbox is not None:
            self.inbox.connections.discard(self)
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            try:
                callback(self, reason)
            except Exception:
                self.log.failure("on_lost callback raised")

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self.peer_id is None:
            assert self.inbox is not None
            self.drop(f"no Hello within {self.inbox.hello_timeout} seconds")

    def _cancel_hello_timer(self) -> None:
        timer, self._hello_timer = self._hello_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def accept(self, peer_id: NodeId, max_frame_bytes: int) -> None:
        """Record a successful Hello from ``peer_id`` and raise the box limit."""
        self._cancel_hello_timer()
        self.peer_id = peer_id
        self._box_limit = max_frame_bytes
        self.log.info("peer connection from {peer} accepted", peer=self.describe())

    def refuse(self, reason: str) -> None:
        """Log a refused Hello and ignore further input; the HELLO_REFUSED answer closes."""
        if self.closing:
            return
        self.closing = True
        self.paused = True
        self.log.error(
            "refused peer connection from {peer}: {reason}", peer=self.describe(), reason=reason
        )

    def drop(self, reason: str) -> None:
        """Log ``reason`` and close the connection, ignoring any further input."""
        if self.closing:
            return
        self.closing = True
        self.paused = True  # stop parsing what is already buffered
        self.log.error(
            "dropping peer connection {peer}: {reason}", peer=self.describe(), reason=reason
        )
        self.lose_connection()

    def lose_connection(self) -> None:
        """Close the transport, unregistering its producer first.

        A TLS transport does not close while a producer is registered (it
        waits for it to unregister), and a dialled link registers itself.
        """
        transport = self.transport
        if transport is None:
            return
        with contextlib.suppress(Exception):  # none registered
            cast(IConsumer, transport).unregisterProducer()
        transport.loseConnection()

    def resume(self) -> None:
        """Resume parsing after ``pauseProducing``, unless the connection is closing."""
        if self.closing or self.transport is None:
            return
        try:
            self.resumeProducing()
        except Exception:
            self.log.failure("error resuming peer connection {peer}", peer=self.describe())
            self.drop("internal error while resuming")

    # -------------------------------------------------------------- sending

    def write_frames(self, frames: list[bytes]) -> bool:
        """Write already-serialized boxes in one call; return False when closed."""
        transport = self.transport
        if transport is None or self.closing:
            return False
        write_now(transport, b"".join(frames))
        return True

    def hello(
        self,
        cluster_id: str,
        node_id: NodeId,
        expected: NodeId,
        proof: bytes | None = None,
        bootstrap: BootstrapConfig | None = None,
    ) -> Deferred[bool]:
        """Send our Hello on a dialled connection; fire True if ``expected`` answered.

        ``proof`` (with a cluster key) shows that we hold the key;
        ``bootstrap`` states our bootstrap configuration. Messages may be
        written right behind the Hello (they are processed after it). The
        Deferred never fails: a refusal or a wrong peer is logged, the
        connection dropped, and it fires False.
        """
        self.peer_id = expected
        extra: dict[str, Any] = {} if proof is None else {"proof": proof}
        if bootstrap is not None:
            extra["bootstrap"] = bootstrap.digest
            extra["bootstrap_peers"] = bootstrap.description
        d: Deferred[dict[str, str]] = self.callRemote(
            Hello, cluster_id=cluster_id, node_id=node_id, **extra
        )

        def check(answer: dict[str, str]) -> bool:
            if answer["cluster_id"] != cluster_id or answer["node_id"] != expected:
                self.drop(
                    f"address reached node {answer['node_id']!r} of cluster "
                    f"{answer['cluster_id']!r}, expected {expected!r} of {cluster_id!r}"
                )
                return False
            return True

        def failed(reason: Failure) -> bool:
            if reason.check(HelloRefused):
                self.log.error(
                    "peer {peer} refused our Hello: {why}", peer=self.describe(), why=reason.value
                )
            elif not self.closing:
                self.log.warn(
                    "Hello to {peer} failed: {why}", peer=self.describe(), why=reason.value
                )
            self.closing = True
            self.lose_connection()
            return False

        return d.addCallbacks(check, failed)

    # ------------------------------------------------------------ receiving

    def dataReceived(self, data: bytes) -> None:
        """Parse boxes; drop the connection instead of raising on anything unexpected."""
        if self.closing:
            return
        inbox = self.inbox
        if inbox is None or inbox.reading:  # a dialled connection; or never: nested
            self._parse(data)
            return
        delivered = inbox.delivered
        inbox.reading = True
        try:
            self._parse(data)
        finally:
            inbox.read_ended(delivered)

    def _parse(self, data: bytes) -> None:
        try:
            if self.peer_id is not None and self.inbox is not None and between_boxes(self):
                data = self._receive_messages(data)
                if not data or self.closing:
                    return
            super().dataReceived(data)
        except Exception:
            self.log.failure("unexpected error on peer connection {peer}", peer=self.describe())
            self.drop("internal error while parsing")

    def _receive_messages(self, data: bytes) -> bytes:
        """Deliver the whole one-way message boxes at the start of ``data``; return the rest.

        The fast path of an accepted connection after its Hello: the same AMP
        boxes, split by hand instead of by AMP's string-at-a-time parser and
        handed straight to the locator's checks and the inbox (about 15 µs
        less per message, twice on a sequential put's critical path: the
        follower's AppendEntries and the leader's answer). It stops at the
        first box that is incomplete, over the size limit, or anything but a
        one-way message with a single value and at most an ``eager`` flag
        (a Hello, a snapshot chunk, a value split over several keys): AMP's
        own parser takes it from there, at a box boundary, so both paths see
        every box in order.
        """
        end = len(data)
        pos = 0
        limit = self._box_limit
        locator = self.locator
        while not self.closing and not self.paused:
            split = split_box(data, pos)
            if split is None:
                return data[pos:]
            box, after = split
            kind = _COMMAND_TYPES.get(box.get(amp.COMMAND, b""))
            if kind is None or after - pos > limit:  # as AMP counts: its end key too
                return data[pos:]
            keys = box.keys()
            if keys == _ONE_WAY_KEYS:
                locator._one_way(box[b"m"], kind)
            elif keys == _EAGER_KEYS and kind in _EAGER_TYPES and box[EAGER] in _EAGER_VALUES:
                locator._one_way(box[b"m"], kind, _EAGER_VALUES[box[EAGER]])
            else:
                return data[pos:]
            pos = after
            if pos == end:
                return b""
        return b"" if self.closing else data[pos:]

    def stringReceived(self, string: bytes) -> None:
        """Count each key and value toward the box size limit."""
        if self.closing:
            return
        self._box_bytes += len(string) + 2
        if self._box_bytes > self._box_limit:
            self.drop(f"box larger than {self._box_limit} bytes")
            return
        super().stringReceived(string)

    def lengthLimitExceeded(self, length: int) -> None:
        """Drop a connection whose key length prefix is over 255 (not AMP)."""
        self.drop(f"AMP key length {length} over 255 (not an AMP peer?)")

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """Check a complete box against the handshake, then dispatch it."""
        self._box_bytes = 0
        if self.closing:
            return
        command = box.get(amp.COMMAND)
        if self.inbox is not None:
            if command is None:
                self.drop("box without a command")
                return
            if self.peer_id is None and command != Hello.commandName:
                self.drop(f"{command.decode('ascii', 'replace')} before Hello")
                return
        elif command is not None:
            self.drop(f"command {command.decode('ascii', 'replace')} on a dialled connection")
            return
        try:
            super().ampBoxReceived(box)
        except Exception as e:
            self.drop(f"malformed box: {e!r}")

    def unhandledError(self, failure: Failure) -> None:
        """Close the connection on a failure no errback handled; log it unless expected."""
        if not self.closing:
            self.log.failure(
                "unhandled failure on peer connection {peer}", failure, peer=self.describe()
            )
            self.drop("internal error")
        else:
            self.lose_connection()


class PeerServerFactory(ServerFactory):
    """Build accepting :class:`PeerProtocol` connections that share one inbox."""

    noisy = False

    def __init__(self, inbox: PeerInbox) -> None:
        self.inbox = inbox

    def buildProtocol(self, addr: IAddress | None) -> PeerProtocol:
        """Return a new accepting connection."""
        protocol = PeerProtocol(self.inbox, self.inbox.log)
        protocol.factory = self
        return protocol
