"""The client API over AMP, and the request handling it shares with JSON-RPC.

:class:`KeyValueFrontend` turns a client request into a call on an
:class:`~leeky_twisted.interfaces.IRaftNode`: it validates the input, encodes
the command (``statemachine.commands``), proposes it or reads, and turns the
state machine's result into an answer. When the node is not the leader and
knows who is, the frontend forwards the request to the leader's client AMP
address (at most one hop) instead of bouncing it. Every request ends within
``timeout`` (plus a small grace) with an answer or an error from
``protocol.errors``.

:class:`ClientLocator` holds the thin AMP responders; :func:`make_amp_factory`
builds the server factory the service listens with.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

from twisted.internet import error, task
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from leeky_twisted import defaults
from leeky_twisted.api import coord
from leeky_twisted.api import watch as watches
from leeky_twisted.api.leases import LeaseKeeper
from leeky_twisted.interfaces import IRaftNode
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.amperrors import describe_remote_error
from leeky_twisted.protocol.ampframes import receive_boxes
from leeky_twisted.protocol.connection import (
    DEFAULT_ATTEMPT_TIMEOUT,
    AMPConnectionPool,
    CallTimedOut,
    Connector,
    NodeUnresponsive,
    call_while_alive,
    parse_address,
    with_timeout,
)
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    Compacted,
    InvalidRequest,
    LeekyError,
    NotLeader,
    Removed,
    SessionExpired,
    Unavailable,
)
from leeky_twisted.protocol.netutil import buffered_bytes, no_delay, write_now
from leeky_twisted.protocol.sendlimit import SendLimit, clock_or_reactor
from leeky_twisted.protocol.txnframes import txn_answer, txn_arguments
from leeky_twisted.security.connlimits import RateLimitedLog
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.statemachine.kv import (
    CommandError,
    Event,
    KeyValue,
    KeyValueStateMachine,
    RangeResult,
    TxnResult,
    UnknownSession,
    range_result_from_json,
    txn_result_from_json,
)

__all__ = [
    "EXECUTOR_REFUSES_KV",
    "ClientAPIProtocol",
    "ClientLocator",
    "KeyValueFrontend",
    "LeaderForwarder",
    "RequestLimits",
    "make_amp_factory",
    "make_frontend",
]

T = TypeVar("T")

_log = Logger()

#: Extra time the frontend waits beyond the node's own timeout before it gives up.
TIMEOUT_GRACE = 1.0

#: Refused oversized requests, logged at most once a minute.
_refusals = RateLimitedLog()


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Size limits on client input, in UTF-8 bytes. Keys must not be empty."""

    max_key_bytes: int = defaults.MAX_KEY_BYTES
    max_value_bytes: int = defaults.MAX_VALUE_BYTES
    max_client_id_bytes: int = defaults.MAX_CLIENT_ID_BYTES

    @property
    def max_txn_bytes(self) -> int:
        """Return the most bytes a transaction's log entry may take: two values' worth.

        It then fits one request on either API, as a cas does.
        """
        return 2 * self.max_value_bytes

    @property
    def request_bytes(self) -> int:
        """Return the most bytes one request may take on the AMP wire.

        Room for a key, two values (a cas), a client id, and 64 KiB of
        argument names, framing and small fields.
        """
        return self.max_key_bytes + 2 * self.max_value_bytes + self.max_client_id_bytes + (1 << 16)


class LeaderForwarder:
    """Pass a client request on to the leader over AMP, at most once.

    A leader that cannot be reached, or falls silent (paused, half-open),
    costs ``attempt_timeout``, not the whole ``timeout``: the client then
    tries again, by when the cluster may have elected another leader.
    """

    def __init__(
        self,
        pool: AMPConnectionPool,
        clock: IReactorTime,
        timeout: float,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    ) -> None:
        self._pool = pool
        self._clock = clock
        self._timeout = timeout
        self._attempt_timeout = min(attempt_timeout, timeout)

    async def call(
        self, leader_address: str, command: type[amp.Command], arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Run ``command`` on the leader, marked as forwarded; return its response.

        Raises Unavailable when the leader cannot be reached, CommitTimeout
        when it does not answer in time or the connection drops after sending,
        and the leader's own errors (e.g. NotLeader) as they are.
        """
        try:
            address = parse_address(leader_address)
        except ValueError:
            raise Unavailable(f"leader address {leader_address!r} is malformed") from None
        clock = self._clock
        deadline = clock.seconds() + self._timeout
        try:
            proto = await with_timeout(self._pool.connection(address), self._attempt_timeout, clock)
        except (error.ConnectError, error.DNSLookupError, OSError, CallTimedOut) as e:
            raise Unavailable(f"leader at {leader_address} unreachable: {e}") from None
        try:
            response: dict[str, Any] = await call_while_alive(
                proto,
                clock,
                command,
                {**arguments, "forwarded": True},
                self._attempt_timeout,
                deadline,
            )
        except NodeUnresponsive:
            raise CommitTimeout(
                f"the leader at {leader_address} is not answering; outcome unknown"
            ) from None
        except CallTimedOut:
            raise CommitTimeout() from None
        except error.ConnectionClosed:
            raise CommitTimeout("connection to the leader lost; outcome unknown") from None
        except amp.RemoteAmpError as e:  # not one of ours: AMP's own, or a newer node's
            raise LeekyError(describe_remote_error(e, f"the leader at {leader_address}")) from None
        return response

    def close(self) -> Deferred[None]:
        """Close the connections to leaders."""
        return self._pool.close()


class KeyValueFrontend:
    """Validate, propose or read, interpret results, forward to the leader.

    :param node: the local node.
    :param clock: for the frontend's own guard timeout.
    :param forwarder: where to send requests when this node is not the
        leader; None to answer NotLeader instead.
    :param timeout: seconds given to the node (``propose``/``read``).
    """

    def __init__(
        self,
        node: IRaftNode,
        clock: IReactorTime,
        *,
        forwarder: LeaderForwarder | None = None,
        limits: RequestLimits | None = None,
        timeout: float = defaults.REQUEST_TIMEOUT,
        watch_window: int = watches.DEFAULT_WINDOW,
        lease_extension: float = 1.0,
    ) -> None:
        if not IRaftNode.providedBy(node):
            raise TypeError(f"{node!r} does not provide IRaftNode")
        self.node = node
        self.limits = limits if limits is not None else RequestLimits()
        self.timeout = timeout
        self._clock = clock
        self._forwarder = forwarder
        #: the node applies entries in an executor process: no key-value store here
        machine = node.local_state_machine()
        self.executor = machine is None
        #: the node's window of recent events and its watchers (None: nothing to watch)
        self.watches: watches.WatchHub | None = None
        #: the leader's lease deadlines (None: no key-value store); start() it to expire leases
        self.leases: LeaseKeeper | None = None
        if isinstance(machine, KeyValueStateMachine):
            self.watches = watches.WatchHub(
                clock, machine.revision, window=watch_window, on_watching=node.want_eager_commits
            )
            self._detach = watches.attach(machine, self.watches)
            node.on_removed(self._node_removed)
            self.leases = LeaseKeeper(
                clock, node, machine, extension=lease_extension, timeout=timeout
            )

    def _node_removed(self, error: Exception) -> None:
        """The node learned it was removed: its open watches end with the error that new
        requests get (clients then move on to another node, or give up with it)."""
        if self.watches is not None:
            self.watches.end_all(cc.WATCH_ENDED_REMOVED + str(error))

    def close(self) -> Deferred[None]:
        """End every watch; close the forwarding connections, if any."""
        if self.watches is not None:
            self.watches.close()
        if self.leases is not None:
            self.leases.stop()
        if self._forwarder is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        return self._forwarder.close()

    # ----------------------------------------------------------- validation

    def _key_value_only(self) -> None:
        """Refuse a key-value request on a cluster whose state machine is an executor."""
        if self.executor:
            raise InvalidRequest(EXECUTOR_REFUSES_KV)

    def _check_text(self, value: object, what: str, limit: int, *, empty: bool = True) -> str:
        if not isinstance(value, str):
            raise InvalidRequest(f"{what} must be a string, not {_json_type(value)}")
        if value.isascii():  # the usual case: its length is its size, no copy to measure
            size = len(value)
        else:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidRequest(f"{what} is not valid UTF-8") from None
        if not empty and size == 0:
            raise InvalidRequest(f"{what} must not be empty")
        if size > limit:
            raise InvalidRequest(f"{what} is {size} bytes; the limit is {limit}")
        return value

    def _key(self, key: object) -> str:
        return self._check_text(key, "key", self.limits.max_key_bytes, empty=False)

    def _value(self, value: object, what: str = "value") -> str:
        return self._check_text(value, what, self.limits.max_value_bytes)

    def _session(self, client_id: object, seq: object, ack: object) -> kv.Session | None:
        if client_id is None and seq is None and ack is None:
            return None
        if client_id is None or seq is None:
            raise InvalidRequest("a session needs both client_id and seq")
        cid = self._check_text(client_id, "client_id", self.limits.max_client_id_bytes, empty=False)
        if not _is_int(seq) or (ack is not None and not _is_int(ack)):
            raise InvalidRequest("seq and ack must be integers")
        try:
            return kv.Session(cid, seq, seq if ack is None else ack)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None

    # ------------------------------------------------------------ requests

    async def put(
        self,
        key: object,
        value: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
        lease: object = None,
    ) -> None:
        """Set ``key`` to ``value``. ``session`` is (client_id, seq, ack) or None.

        With ``lease``, the key belongs to that lease (deleted when it ends).
        """
        self._key_value_only()
        command = kv.Put(
            self._key(key),
            self._value(value),
            self._session(*(session or _NONE3)),
            self._lease_id(lease, optional=True),
        )
        wire: dict[str, Any] = {"key": command.key, "value": command.value}
        if command.lease:
            wire["lease"] = command.lease
        await self._write(command, cc.Put, wire, lambda r: None, forwarded)

    def _lease_id(self, lease: object, optional: bool = False) -> int:
        if lease is None and optional:
            return 0
        if not (_is_int(lease) and 1 <= lease <= cc.MAX_SEQ):
            raise InvalidRequest(f"lease must be a lease id (an integer from 1 to {cc.MAX_SEQ})")
        return lease

    # -------------------------------------------------------------- leases

    def _keeper(self) -> Any:
        self._key_value_only()
        if self.leases is None:
            raise InvalidRequest("this node keeps no leases")
        return self.leases

    async def lease_grant(
        self,
        ttl: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
    ) -> int:
        """Create a lease of ``ttl`` seconds (one log entry); return its id."""
        self._keeper()
        if not (_is_int(ttl) and 1 <= ttl <= kv.MAX_LEASE_TTL):
            raise InvalidRequest(f"ttl must be an integer from 1 to {kv.MAX_LEASE_TTL} seconds")
        command = kv.LeaseGrant(ttl, self._session(*(session or _NONE3)))
        lease: int = await self._write(
            command, cc.LeaseGrant, {"ttl": ttl}, _field("lease"), forwarded
        )
        return lease

    async def lease_revoke(
        self,
        lease: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
    ) -> bool:
        """End a lease and delete its keys (one log entry); return whether it existed."""
        self._keeper()
        command = kv.LeaseRevoke(self._lease_id(lease), self._session(*(session or _NONE3)))
        wire = {"lease": command.lease}
        existed: bool = await self._write(
            command, cc.LeaseRevoke, wire, _field("existed"), forwarded
        )
        return existed

    async def lease_keepalive(self, lease: object, *, forwarded: bool = False) -> int:
        """Renew a lease for its ttl (on the leader); return the ttl."""
        keeper = self._keeper()
        lease_id = self._lease_id(lease)
        where, value = await self._local_or_forward(
            lambda: maybeDeferred(keeper.keepalive, lease_id),
            forwarded,
            cc.LeaseKeepalive,
            {"lease": lease_id},
        )
        return int(value["ttl"] if where == "forwarded" else value)

    async def lease_ttl(self, lease: object, *, forwarded: bool = False) -> dict[str, Any]:
        """Return ``{"id", "ttl", "remaining", "keys"}`` of a lease (the leader's view)."""
        keeper = self._keeper()
        lease_id = self._lease_id(lease)
        where, value = await self._local_or_forward(
            lambda: maybeDeferred(keeper.ttl, lease_id),
            forwarded,
            cc.LeaseTTL,
            {"lease": lease_id},
        )
        if where == "forwarded":
            return json.loads(value["result"])  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    async def delete(
        self,
        key: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
    ) -> bool:
        """Remove ``key``; return whether it existed."""
        self._key_value_only()
        command = kv.Delete(self._key(key), self._session(*(session or _NONE3)))
        wire = {"key": command.key}
        existed: bool = await self._write(command, cc.Delete, wire, _field("existed"), forwarded)
        return existed

    async def cas(
        self,
        key: object,
        expected: object,
        new: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
    ) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: absent); return swapped."""
        self._key_value_only()
        command = kv.Cas(
            self._key(key),
            None if expected is None else self._value(expected, "expected"),
            self._value(new, "new"),
            self._session(*(session or _NONE3)),
        )
        wire = {"key": command.key, "expected": command.expected, "new": command.new}
        swapped: bool = await self._write(command, cc.Cas, wire, _field("swapped"), forwarded)
        return swapped

    async def append(
        self,
        key: object,
        suffix: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
    ) -> int:
        """Append ``suffix`` to the value of ``key``; return the new length."""
        self._key_value_only()
        command = kv.Append(
            self._key(key), self._value(suffix, "suffix"), self._session(*(session or _NONE3))
        )
        wire = {"key": command.key, "suffix": command.suffix}
        length: int = await self._write(command, cc.Append, wire, _field("length"), forwarded)
        return length

    async def get(self, key: object, *, stale: bool = False, forwarded: bool = False) -> str | None:
        """Return the value of ``key`` or None; linearizable (ReadIndex) unless ``stale``."""
        self._key_value_only()
        request = kv.Get(self._key(key))
        where, value = await self._local_or_forward(
            lambda: self.node.read(request, not stale, self.timeout),
            forwarded,
            cc.Get,
            {"key": request.key, "stale": stale},
        )
        if where == "forwarded":
            return value.get("value")  # type: ignore[no-any-return]
        if value is not None and not isinstance(value, str):
            raise LeekyError(f"state machine answered a read with {type(value).__name__}")
        return value

    async def range(
        self,
        start: object,
        end: object = None,
        *,
        prefix: object = False,
        limit: object = 0,
        keys_only: object = False,
        count_only: object = False,
        stale: bool = False,
        forwarded: bool = False,
    ) -> RangeResult:
        """Read the keys in [``start``, ``end``) (or with ``prefix``), sorted, at a revision.

        Linearizable (ReadIndex, as ``get``) unless ``stale``.
        """
        self._key_value_only()
        request = coord.range_request(
            self,
            start,
            end,
            prefix=prefix,
            limit=limit,
            keys_only=keys_only,
            count_only=count_only,
        )
        wire = {
            "start": request.start,
            "end": request.end,
            "limit": request.limit,
            "keys_only": request.keys_only,
            "count_only": request.count_only,
            "stale": stale,
        }
        where, value = await self._local_or_forward(
            lambda: self.node.read(request, not stale, self.timeout), forwarded, cc.Range, wire
        )
        if where == "forwarded":
            try:
                return range_result_from_json(json.loads(value["result"]))
            except (KeyError, TypeError, ValueError) as e:
                raise LeekyError(f"the leader answered a malformed range: {e}") from None
        if not isinstance(value, RangeResult):
            raise LeekyError(f"state machine answered a range with {type(value).__name__}")
        return value

    async def get_kv(
        self, key: object, *, stale: bool = False, forwarded: bool = False
    ) -> tuple[KeyValue | None, int]:
        """Return ``key`` with its revisions (None when absent) and the revision read at."""
        checked = self._key(key)
        result = await self.range(checked, checked + "\0", stale=stale, forwarded=forwarded)
        return (result.kvs[0] if result.kvs else None), result.revision

    async def txn(
        self,
        document: object,
        session: tuple[object, object, object] | None = None,
        *,
        forwarded: bool = False,
    ) -> TxnResult:
        """Run a transaction (``api.coord`` describes the document) as one log entry."""
        command, data = self._txn_entry(document, session)

        def wire() -> dict[str, Any]:  # built only when the request is forwarded
            return {"txn": json.dumps(coord.txn_document(command), ensure_ascii=False)}

        def from_response(response: dict[str, Any]) -> TxnResult:
            try:
                return txn_result_from_json(json.loads(response["result"]))
            except (KeyError, TypeError, ValueError) as e:
                raise LeekyError(f"the leader answered a malformed txn result: {e}") from None

        result = await self._write(command, cc.Txn, wire, from_response, forwarded, data)
        return _txn_result(result)

    def _txn_entry(
        self, document: object, session: tuple[object, object, object] | None
    ) -> tuple[kv.Txn, bytes]:
        """Return the checked transaction and its log entry (encoded once).

        InvalidRequest when it is malformed or too large for one entry.
        """
        self._key_value_only()
        command = coord.parse_txn(self, document, self._session(*(session or _NONE3)))
        try:
            data = kv.encode_command(command)
        except ValueError as e:
            raise InvalidRequest(str(e)) from None
        if len(data) > self.limits.max_txn_bytes:
            raise InvalidRequest(
                f"transaction too large for one log entry: {len(data)} bytes encoded;"
                f" the limit is {self.limits.max_txn_bytes}"
            )
        return command, data

    def start_watch(
        self,
        start: object,
        end: object,
        prefix: object,
        start_revision: object,
        sink: watches.WatchSink,
    ) -> watches.Watcher:
        """Start a watch served by this node's own applied state (any node serves watches).

        Raises InvalidRequest for a malformed range, Compacted when
        ``start_revision`` is older than the node's window, Removed on a
        removed node (its state no longer moves).
        """
        self._key_value_only()
        removed = self.node.removed()
        if removed is not None:
            raise removed
        hub = self.watches
        if hub is None:
            raise InvalidRequest("this node keeps no events to watch")
        request = coord.range_request(self, start, end, prefix=prefix)
        if start_revision is not None and not (
            _is_int(start_revision) and 0 <= start_revision <= coord.MAX_REVISION
        ):
            raise InvalidRequest(
                f"start revision must be an integer from 0 to {coord.MAX_REVISION}"
            )
        return hub.watch(request.start, request.end, start_revision or None, sink)

    async def poll_watch(
        self,
        start: object,
        end: object = None,
        *,
        prefix: object = False,
        from_revision: object = None,
        wait: object = 20.0,
        limit: object = 1000,
    ) -> tuple[list[Event], int]:
        """Long-poll a watch: the matching events from ``from_revision`` (None: the next).

        Answers at once when the node holds some; else waits up to ``wait``
        seconds for the first. Returns (events, next_revision): poll again
        from ``next_revision``. At most ``limit`` events, in whole revisions.
        """
        if not (isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= 60):
            raise InvalidRequest("wait must be a number of seconds from 0 to 60")
        if not (_is_int(limit) and 1 <= limit <= 10_000):
            raise InvalidRequest("limit must be an integer from 1 to 10000")
        sink = _PollSink()
        watcher = self.start_watch(start, end, prefix, from_revision, sink)
        hub = self.watches
        assert hub is not None
        hub.cancel(watcher)  # what was held is in the sink; wait afresh if nothing
        if sink.taken:
            events = sink.taken[: _whole_revisions(sink.taken, limit)]
            return events, events[-1].revision + 1
        sink = _PollSink()
        watcher = hub.watch(watcher.start, watcher.end, watcher.next_revision, sink)
        timer = self._clock.callLater(wait, sink.fire)
        try:
            await sink.ready
        finally:
            if timer.active():
                timer.cancel()
            hub.cancel(watcher)
        if sink.ended is not None:
            if sink.ended.startswith(cc.WATCH_ENDED_REMOVED):
                raise Removed(sink.ended[len(cc.WATCH_ENDED_REMOVED) :])
            raise Compacted(sink.ended) if "compacted" in sink.ended else Unavailable(sink.ended)
        if sink.taken:
            events = sink.taken[: _whole_revisions(sink.taken, limit)]
            return events, events[-1].revision + 1
        return [], watcher.next_revision

    async def submit(self, command: object, *, forwarded: bool = False) -> Any:
        """Replicate a raw command string and return the state machine's result.

        With the built-in store the original's strings work (``PUT key value...``,
        ``DELETE key``); with a remote executor, its own commands (``ADD f``).
        """
        text = self._value(command, "command")
        if not text.strip():
            raise InvalidRequest("command must not be empty")
        data = text.encode("utf-8")
        if not self.executor:
            self._check_raw_command(data)
        where, result = await self._local_or_forward(
            lambda: self.node.propose(data, self.timeout),
            forwarded,
            cc.Submit,
            {"command": text},
        )
        if where == "forwarded":
            return json.loads(result["result"])
        return _checked(result)

    async def register_session(self, *, forwarded: bool = False) -> str:
        """Open a client session (one log entry); return its id.

        The leader that proposes it adds a random nonce, so ids stay unique
        even across clusters rebuilt from nothing.
        """
        self._key_value_only()
        data = kv.encode_command(kv.RegisterSession(secrets.token_hex(8)))
        where, result = await self._local_or_forward(
            lambda: self.node.propose(data, self.timeout), forwarded, cc.RegisterSession, {}
        )
        if where == "forwarded":
            return result["session"]  # type: ignore[no-any-return]
        if isinstance(result, CommandError):
            raise InvalidRequest(f"this state machine has no sessions: {result.message}")
        if not isinstance(result, str):
            raise LeekyError(f"state machine answered a registration with {result!r:.80}")
        return result

    async def query(self, request: object, *, forwarded: bool = False) -> Any:
        """Answer a raw read-only request, linearizably (``GET key``, or ``READ f``)."""
        text = self._value(request, "request")
        if not self.executor:
            words = text.split()
            if not words or words[0].upper() != "GET":
                name = repr(words[0][:40]) if words else "(empty)"
                raise InvalidRequest(
                    f"unknown query {name}: the key-value store answers GET <key> "
                    "(READ <name> and LIST are the example executor's queries, and this "
                    "cluster runs the key-value store)"
                )
            if len(words) != 2:
                raise InvalidRequest("the key-value store answers queries like: GET <key>")
            question: object = kv.Get(self._key(words[1]))
        else:
            question = text
        where, result = await self._local_or_forward(
            lambda: self.node.read(question, True, self.timeout),
            forwarded,
            cc.Query,
            {"request": text},
        )
        if where == "forwarded":
            return json.loads(result["result"])
        return result

    def _check_raw_command(self, data: bytes) -> None:
        """Hold a raw key-value command to the limits of the typed requests.

        ``PUT <key> <value>`` or a raw JSON command must not carry a key, a
        value or a client id that ``put`` (or ``cas``, ``append``) would refuse.
        """
        try:
            command = kv.decode_command(data)
        except kv.CommandDecodeError as e:
            raise InvalidRequest(str(e)) from None
        if not isinstance(command, kv.Put | kv.Delete | kv.Cas | kv.Append | kv.Get):
            raise InvalidRequest(
                "submit takes put, delete, cas, append and get commands: use"
                " register_session, txn and the lease methods for the others"
            )
        self._key(command.key)
        if isinstance(command, kv.Put):
            self._value(command.value)
        elif isinstance(command, kv.Cas):
            if command.expected is not None:
                self._value(command.expected, "expected")
            self._value(command.new, "new")
        elif isinstance(command, kv.Append):
            self._value(command.suffix, "suffix")
        session = getattr(command, "session", None)
        if session is not None:
            self._check_text(
                session.client_id, "client_id", self.limits.max_client_id_bytes, empty=False
            )

    # ----------------------------------------------- fast paths (no coroutine)

    def put_now(
        self,
        key: object,
        value: object,
        session: tuple[object, object, object] | None = None,
        lease: object = None,
    ) -> Deferred[None]:
        """Like :meth:`put`, on the hot path: straight to the node.

        Only when the node refuses (not leader, or no leader yet) does the call
        fall back to the full path, which waits for a leader or forwards.
        """
        try:
            self._key_value_only()
            command = kv.Put(
                self._key(key),
                self._value(value),
                self._session(*(session or _NONE3)),
                self._lease_id(lease, optional=True),
            )
            data = kv.encode_command(command)
        except ValueError as e:
            return fail(InvalidRequest(str(e)))
        except InvalidRequest as e:
            return fail(e)
        d = self.node.propose(data, self.timeout)
        d.addCallbacks(
            _no_command_error, self._put_slowly, errbackArgs=(key, value, session, lease)
        )
        return d

    def _put_slowly(
        self,
        failure: Failure,
        key: object,
        value: object,
        session: tuple[object, object, object] | None,
        lease: object = None,
    ) -> Any:
        if failure.check(NotLeader, Unavailable):  # refused: it was never proposed
            return Deferred.fromCoroutine(self.put(key, value, session, lease=lease))
        return failure

    def txn_now(
        self, document: object, session: tuple[object, object, object] | None = None
    ) -> Deferred[TxnResult]:
        """Like :meth:`txn`, on the hot path: straight to the node.

        Only when the node refuses (not leader, or no leader yet) does the call
        fall back to the full path, which waits for a leader or forwards.
        """
        try:
            _, data = self._txn_entry(document, session)
            d = self.node.propose(data, self.timeout)
        except Exception:  # as from the coroutine: an error fails the Deferred, never raises
            return fail()
        d.addCallbacks(_txn_result, self._txn_slowly, errbackArgs=(document, session))
        return d

    def _txn_slowly(
        self,
        failure: Failure,
        document: object,
        session: tuple[object, object, object] | None,
    ) -> Any:
        if failure.check(NotLeader, Unavailable):  # refused: it was never proposed
            return Deferred.fromCoroutine(self.txn(document, session))
        return failure

    def get_now(self, key: object, stale: bool = False) -> Deferred[str | None]:
        """Like :meth:`get`, on the hot path: straight to the node unless it refuses."""
        try:
            self._key_value_only()
            request = kv.Get(self._key(key))
        except InvalidRequest as e:
            return fail(e)
        d = self.node.read(request, not stale, self.timeout)
        d.addErrback(self._get_slowly, key, stale)
        return d

    def _get_slowly(self, failure: Failure, key: object, stale: bool) -> Any:
        if failure.check(NotLeader, Unavailable):
            return Deferred.fromCoroutine(self.get(key, stale=stale))
        return failure

    def status(self) -> dict[str, Any]:
        """Return the node's status dictionary, with the store's ``revision`` when it has one."""
        status = self.node.status().to_json()
        revision = getattr(self.node.local_state_machine(), "revision", None)
        if isinstance(revision, int):
            status["revision"] = revision
        return status

    # ------------------------------------------------------------ internals

    async def _write(
        self,
        command: kv.WriteCommand,
        amp_command: type[amp.Command],
        wire: dict[str, Any] | Callable[[], dict[str, Any]],
        from_response: Callable[[dict[str, Any]], Any],
        forwarded: bool,
        data: bytes | None = None,
    ) -> Any:
        """Propose ``command`` (``data``: its encoding, when already made) or forward it.

        ``wire`` holds the forwarded request's arguments, or makes them: it is
        called only when the request is forwarded.
        """
        if data is None:
            try:
                data = kv.encode_command(command)
            except ValueError as e:
                raise InvalidRequest(str(e)) from None
        entry = data
        session = command.session

        def arguments() -> dict[str, Any]:
            made = wire() if callable(wire) else wire
            if session is None:
                return made
            return {**made, "client_id": session.client_id, "seq": session.seq, "ack": session.ack}

        where, result = await self._local_or_forward(
            lambda: self.node.propose(entry, self.timeout), forwarded, amp_command, arguments
        )
        if where == "forwarded":
            return from_response(result)
        return _checked(result)

    async def _local_or_forward(
        self,
        attempt: Callable[[], Deferred[Any]],
        forwarded: bool,
        command: type[amp.Command],
        arguments: dict[str, Any] | Callable[[], dict[str, Any]],
    ) -> tuple[str, Any]:
        """Run on the local node, or forward to the leader it names.

        ``arguments`` (or what it returns, when callable) are the forwarded request's.

        A leader hint can be stale (leadership just moved): the node it names
        then refuses the forwarded request, which was therefore never
        proposed, so it is safe to ask again after a short wait.
        """
        for round_ in range(FORWARD_ROUNDS):
            try:
                return "local", await self._local(attempt, forwarded)
            except NotLeader as e:
                if forwarded or self._forwarder is None or e.leader_address is None:
                    raise
                if callable(arguments):
                    arguments = arguments()
                try:
                    return "forwarded", await self._forward(e, forwarded, command, arguments)
                except NotLeader:
                    if round_ == FORWARD_ROUNDS - 1:
                        raise
                except Removed as gone:  # a stale hint: this node is not the removed one
                    if round_ == FORWARD_ROUNDS - 1:
                        raise Unavailable(f"the leader this node knew of is gone: {gone}") from None
            await task.deferLater(self._clock, LEADER_WAIT * (round_ + 1), lambda: None)
        raise AssertionError("unreachable")

    async def _forward(
        self,
        not_leader: NotLeader,
        forwarded: bool,
        command: type[amp.Command],
        arguments: dict[str, Any],
    ) -> dict[str, Any]:
        if forwarded or self._forwarder is None or not_leader.leader_address is None:
            raise not_leader
        return await self._forwarder.call(not_leader.leader_address, command, arguments)

    async def _local(self, attempt: Callable[[], Deferred[T]], forwarded: bool) -> T:
        """Run ``attempt`` on the local node; while no leader (or its address) is
        known yet, as during an election, wait a little and try again.

        Retrying is safe: a refused request was never appended to the log.
        """
        deadline = self._clock.seconds() + min(self.timeout, LEADER_WAIT_LIMIT)
        while True:
            try:
                return await self._guard(attempt())
            except (NotLeader, Unavailable) as e:
                # e.g. a lease's NotLeader: a removed node would wait for a leader in vain
                removed = self.node.removed()
                if removed is not None:
                    raise removed from None
                known = isinstance(e, NotLeader) and e.leader_address is not None
                if known or forwarded or self._clock.seconds() + LEADER_WAIT > deadline:
                    raise
            await task.deferLater(self._clock, LEADER_WAIT, lambda: None)

    def guarded(self, d: Deferred[T]) -> Deferred[T]:
        """Return ``d``, failing with CommitTimeout if the node has not answered in time.

        The node answers every request by its own deadline; this is the
        frontend's backstop, a little later, in case it does not.
        """
        out = with_timeout(d, self.timeout + TIMEOUT_GRACE, self._clock)
        out.addErrback(_commit_timeout)
        return out

    async def _guard(self, d: Deferred[T]) -> T:
        return await self.guarded(d)


_NONE3: tuple[None, None, None] = (None, None, None)
#: The answer to a key-value request on a cluster that runs an executor.
EXECUTOR_REFUSES_KV = (
    "this cluster runs an executor, not the key-value store: use submit/query "
    "(e.g. leekyraft submit 'ADD f 100', leekyraft query 'READ f')"
)
LEADER_WAIT = 0.05  #: seconds between attempts while no leader is known
LEADER_WAIT_LIMIT = 1.5  #: give up waiting for a leader after this (clients may retry)
FORWARD_ROUNDS = 4  #: forwards tried when leader hints turn out stale


def _field(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda response: response[name]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def make_frontend(
    node: IRaftNode,
    reactor: Any,
    *,
    forward: bool = True,
    limits: RequestLimits | None = None,
    timeout: float = defaults.REQUEST_TIMEOUT,
    connect: Connector | None = None,
    watch_window: int = watches.DEFAULT_WINDOW,
    lease_extension: float = 1.0,
) -> KeyValueFrontend:
    """Build the frontend both APIs share; with ``forward``, it forwards to the leader.

    ``reactor`` provides IReactorTime, and IReactorTCP unless ``connect`` is given.
    Call ``frontend.close()`` on shutdown.
    """
    forwarder = None
    if forward:
        pool = AMPConnectionPool(reactor, connect, connect_timeout=timeout)
        forwarder = LeaderForwarder(pool, reactor, timeout + TIMEOUT_GRACE)
    return KeyValueFrontend(
        node,
        reactor,
        forwarder=forwarder,
        limits=limits,
        timeout=timeout,
        watch_window=watch_window,
        lease_extension=lease_extension,
    )


class ClientLocator(amp.CommandLocator):
    """The AMP responders of the client API; each one decodes, calls the frontend, encodes."""

    def __init__(self, frontend: KeyValueFrontend) -> None:
        super().__init__()
        self.frontend = frontend

    def locateResponder(self, name: bytes) -> Any:
        """Return the responder of ``name``; malformed arguments get INVALID_REQUEST."""
        return cc.refuse_malformed(name, super().locateResponder(name))

    def _run(
        self, coroutine: Coroutine[Any, Any, T], encode: Callable[[T], dict[str, Any]]
    ) -> Deferred[dict[str, Any]]:
        return self._answer(Deferred.fromCoroutine(coroutine), encode)

    @staticmethod
    def _answer(d: Deferred[T], encode: Callable[[T], dict[str, Any]]) -> Deferred[dict[str, Any]]:
        d.addErrback(_known_errors_only)
        return d.addCallback(encode)

    @cc.RegisterSession.responder
    def register_session(self, forwarded: bool | None) -> Deferred[dict[str, Any]]:
        """Answer RegisterSession with the new session's id."""
        coroutine = self.frontend.register_session(forwarded=bool(forwarded))
        return self._run(coroutine, lambda session_id: {"session": session_id})

    @cc.Put.responder
    def put(
        self,
        key: str,
        value: str,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
        lease: int | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Answer Put."""
        if forwarded:  # from a follower: never forward again
            coroutine = self.frontend.put(
                key, value, (client_id, seq, ack), forwarded=True, lease=lease
            )
            return self._run(coroutine, _empty)
        d = self.frontend.put_now(key, value, (client_id, seq, ack), lease)
        return self._answer(self.frontend.guarded(d), _empty)

    @cc.LeaseGrant.responder
    def lease_grant(
        self,
        ttl: int,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer LeaseGrant with the new lease's id."""
        coroutine = self.frontend.lease_grant(ttl, (client_id, seq, ack), forwarded=bool(forwarded))
        return self._run(coroutine, lambda lease: {"lease": lease})

    @cc.LeaseRevoke.responder
    def lease_revoke(
        self,
        lease: int,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer LeaseRevoke with whether the lease existed."""
        coroutine = self.frontend.lease_revoke(
            lease, (client_id, seq, ack), forwarded=bool(forwarded)
        )
        return self._run(coroutine, lambda existed: {"existed": existed})

    @cc.LeaseKeepalive.responder
    def lease_keepalive(self, lease: int, forwarded: bool | None) -> Deferred[dict[str, Any]]:
        """Answer LeaseKeepalive with the lease's ttl."""
        coroutine = self.frontend.lease_keepalive(lease, forwarded=bool(forwarded))
        return self._run(coroutine, lambda ttl: {"ttl": ttl})

    @cc.LeaseTTL.responder
    def lease_ttl(self, lease: int, forwarded: bool | None) -> Deferred[dict[str, Any]]:
        """Answer LeaseTTL with the lease's ttl, remaining seconds and keys as JSON."""
        coroutine = self.frontend.lease_ttl(lease, forwarded=bool(forwarded))
        return self._run(coroutine, lambda info: {"result": json.dumps(info, ensure_ascii=False)})

    @cc.Get.responder
    def get(self, key: str, stale: bool | None, forwarded: bool | None) -> Deferred[dict[str, Any]]:
        """Answer Get."""
        if forwarded:
            coroutine = self.frontend.get(key, stale=bool(stale), forwarded=True)
            return self._run(coroutine, _value)
        d = self.frontend.get_now(key, stale=bool(stale))
        return self._answer(self.frontend.guarded(d), _value)

    @cc.Delete.responder
    def delete(
        self,
        key: str,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer Delete."""
        coroutine = self.frontend.delete(key, (client_id, seq, ack), forwarded=bool(forwarded))
        return self._run(coroutine, lambda existed: {"existed": existed})

    @cc.Cas.responder
    def cas(
        self,
        key: str,
        expected: str | None,
        new: str,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer Cas."""
        coroutine = self.frontend.cas(
            key, expected, new, (client_id, seq, ack), forwarded=bool(forwarded)
        )
        return self._run(coroutine, lambda swapped: {"swapped": swapped})

    @cc.Append.responder
    def append(
        self,
        key: str,
        suffix: str,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer Append."""
        coroutine = self.frontend.append(
            key, suffix, (client_id, seq, ack), forwarded=bool(forwarded)
        )
        return self._run(coroutine, lambda length: {"length": length})

    @cc.Range.responder
    def range(
        self,
        start: str,
        end: str | None,
        prefix: bool | None,
        limit: int | None,
        keys_only: bool | None,
        count_only: bool | None,
        stale: bool | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer Range with the result as JSON text."""
        coroutine = self.frontend.range(
            start,
            end,
            prefix=bool(prefix),
            limit=limit or 0,
            keys_only=bool(keys_only),
            count_only=bool(count_only),
            stale=bool(stale),
            forwarded=bool(forwarded),
        )
        return self._run(coroutine, _json_result)

    @cc.Txn.responder
    def txn(
        self,
        txn: str,
        client_id: str | None,
        seq: int | None,
        ack: int | None,
        forwarded: bool | None,
    ) -> Deferred[dict[str, Any]]:
        """Answer Txn with the result as JSON text.

        From a client, straight to the node (:meth:`KeyValueFrontend.txn_now`);
        from a follower, the full path, which never forwards again.
        """
        try:
            document = json.loads(txn)
        except (ValueError, RecursionError) as e:
            return self._answer(fail(InvalidRequest(f"txn is not a JSON document: {e}")), _empty)
        if forwarded:
            coroutine = self.frontend.txn(document, (client_id, seq, ack), forwarded=True)
            return self._run(coroutine, _json_result)
        d = self.frontend.txn_now(document, (client_id, seq, ack))
        return self._answer(self.frontend.guarded(d), _json_result)

    @cc.Status.responder
    def status(self) -> Deferred[dict[str, Any]]:
        """Answer Status with the node's status as JSON text."""

        async def status() -> dict[str, Any]:
            return self.frontend.status()

        return self._run(status(), lambda s: {"status": json.dumps(s, default=str)})

    # ------------------------------------------------------------ membership

    @cc.Submit.responder
    def submit(self, command: str, forwarded: bool | None) -> Deferred[dict[str, Any]]:
        """Answer Submit with the result as JSON text."""
        coroutine = self.frontend.submit(command, forwarded=bool(forwarded))
        return self._run(coroutine, lambda r: {"result": json.dumps(r, default=str)})

    @cc.Query.responder
    def query(self, request: str, forwarded: bool | None) -> Deferred[dict[str, Any]]:
        """Answer Query with the result as JSON text."""
        coroutine = self.frontend.query(request, forwarded=bool(forwarded))
        return self._run(coroutine, lambda r: {"result": json.dumps(r, default=str)})

    @cc.Members.responder
    def members(self) -> Deferred[dict[str, Any]]:
        """Answer Members with this node's view of every member."""

        async def members() -> list[dict[str, Any]]:
            return list(self.frontend.node.members())

        return self._run(members(), lambda m: {"members": json.dumps(m, default=str)})

    @cc.AddServer.responder
    def add_server(
        self, node_id: str, address: str | None, voter: bool | None
    ) -> Deferred[dict[str, Any]]:
        """Answer AddServer once the change is committed."""

        async def add() -> None:
            await self.frontend.node.add_server(node_id, address, bool(voter))

        return self._run(add(), lambda _: {})

    @cc.RemoveServer.responder
    def remove_server(self, node_id: str) -> Deferred[dict[str, Any]]:
        """Answer RemoveServer once the change is committed."""

        async def remove() -> None:
            await self.frontend.node.remove_server(node_id)

        return self._run(remove(), lambda _: {})

    @cc.TransferLeader.responder
    def transfer_leader(self, node_id: str) -> Deferred[dict[str, Any]]:
        """Answer TransferLeader once the transfer has started."""

        async def transfer() -> None:
            self.frontend.node.transfer_leader(node_id)

        return self._run(transfer(), lambda _: {})


def _checked(result: T) -> T:
    """Return a state machine's result, or raise the error it stands for."""
    if isinstance(result, UnknownSession):
        raise SessionExpired(result.message)
    if isinstance(result, CommandError):
        raise InvalidRequest(result.message)
    return result


def _txn_result(result: object) -> TxnResult:
    """Return the state machine's answer to a txn, or raise the error it stands for."""
    result = _checked(result)
    if not isinstance(result, TxnResult):
        raise LeekyError(f"state machine answered a txn with {type(result).__name__}")
    return result


def _no_command_error(result: object) -> None:
    _checked(result)
    return None


def _commit_timeout(failure: Failure) -> Failure:
    failure.trap(CallTimedOut)
    return Failure(CommitTimeout())


def _empty(_: object) -> dict[str, Any]:
    return {}


def _value(value: object) -> dict[str, Any]:
    return {"value": value}


class _PollSink:
    """A watch sink for one long poll: fires ``ready`` at the first events (or the end)."""

    def __init__(self) -> None:
        self.taken: list[Event] = []
        self.ended: str | None = None
        self.ready: Deferred[None] = Deferred()

    def fire(self) -> None:
        if not self.ready.called:
            self.ready.callback(None)

    def events(self, watcher: watches.Watcher, events: list[Event]) -> None:
        self.taken.extend(events)
        self.fire()

    def progress(self, watcher: watches.Watcher, revision: int) -> None:
        """Nothing to do: the poll answers its next revision itself."""

    def cancelled(self, watcher: watches.Watcher, reason: str) -> None:
        self.ended = reason
        self.fire()


def _whole_revisions(events: list[Event], limit: int) -> int:
    """Return how many of ``events`` to send: at most ``limit``, never half a revision."""
    n = min(limit, len(events))
    while n < len(events) and events[n].revision == events[n - 1].revision:
        n += 1
    return n


#: One encoder for every answer (json.dumps with options builds a new one per call).
_RESULT_JSON = json.JSONEncoder(ensure_ascii=False)


def _json_result(result: RangeResult | TxnResult) -> dict[str, Any]:
    return {"result": _RESULT_JSON.encode(result.to_json())}


def _known_errors_only(failure: Failure) -> Failure:
    """Let LeekyErrors through; log anything else and answer a generic error.

    An unmapped exception would make AMP drop the whole connection.
    """
    if failure.check(LeekyError):
        return failure
    _log.failure("client request failed", failure)
    return Failure(LeekyError(f"internal error: {failure.getErrorMessage()}"))


class ClientAPIProtocol(amp.AMP):
    """The AMP connection of one client, with two shortcuts on the hot path.

    Whole boxes are split by hand (:func:`~leeky_twisted.protocol.ampframes.split_box`)
    and handed to AMP's usual dispatch, instead of going through AMP's
    string-at-a-time parser; a partial or invalid box is left to that parser.
    And AMP writes each answer through ``transport.write``, which waits for
    the next reactor turn (and registers the socket for writability); like
    the HTTP server, this sends at once when nothing is queued.

    One request (box) may hold at most ``max_request_bytes`` (default: what
    the locator's limits allow, :attr:`RequestLimits.request_bytes`). Once the
    bytes held for an unfinished box pass that, the request is answered
    INVALID_REQUEST (when its ``_ask`` tag has arrived), what was held is
    dropped, and the connection is closed: a large value is never buffered
    whole before it is refused.

    Answers a client leaves unread are bounded (:class:`SendLimit`): its
    requests are not read while many bytes are unsent, and the connection is
    aborted past ``sendlimit.MAX_UNSENT_BYTES``.
    """

    #: this connection's bound on unsent answers (set on connection)
    send_limit: SendLimit

    def __init__(self, *args: Any, max_request_bytes: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        frontend = getattr(self.locator, "frontend", None)
        limits = frontend.limits if frontend is not None else RequestLimits()
        if max_request_bytes is None:
            max_request_bytes = limits.request_bytes
        self.max_request_bytes = max_request_bytes
        #: named in the refusal of an oversized request (the limit users set)
        self.max_value_bytes = limits.max_value_bytes
        self._held = 0  # bytes of keys and values of the unfinished box in AMP's parser
        self._oversized = False
        #: this connection's watches, by id
        self.watchers: dict[int, watches.Watcher] = {}
        frontend = getattr(self.locator, "frontend", None)
        if frontend is not None:
            self.locator = _WatchLocator(self, self.locator, frontend)
        self._boxes = 0  # boxes received whole on this connection
        #: watches stop when this connection holds more bytes not yet sent (see _AMPWatchSink)
        self.max_watch_buffer_bytes = MAX_WATCH_BUFFER_BYTES

    def makeConnection(self, transport: Any) -> None:
        """Connect without AMP's log line: a client churning connections would flood the log.

        Nagle is off: answers and pushed watch events go out back to back.
        """
        self._transportPeer = transport.getPeer()
        self._transportHost = transport.getHost()
        no_delay(transport)
        frontend = getattr(self.locator, "frontend", None)
        clock = frontend._clock if frontend is not None else None
        self.send_limit = SendLimit(transport, clock_or_reactor(clock), "client")
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """End this connection's watches; disconnect without AMP's log line."""
        watched, self.watchers = self.watchers, {}
        limit: SendLimit | None = getattr(self, "send_limit", None)
        if limit is not None:
            limit.stop()
        hub = getattr(getattr(self.locator, "frontend", None), "watches", None)
        for watcher in watched.values():
            if hub is not None:
                hub.cancel(watcher)
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None

    def dataReceived(self, data: bytes) -> None:
        """Dispatch the whole boxes at the start of ``data``; AMP's parser gets the rest."""
        if self._oversized:
            return
        receive_boxes(self, data, self._parse)

    def _parse(self, data: bytes) -> None:
        """Feed AMP's own parser, then check what it holds for an unfinished box."""
        super().dataReceived(data)
        self._check_held()

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        """Count the box, then dispatch it (a client's Txn directly, see :meth:`_take_txn`)."""
        self._boxes += 1
        if box.get(b"_command") == b"Txn" and self._take_txn(box):
            return
        super().ampBoxReceived(box)

    def _take_txn(self, box: amp.AmpBox) -> bool:
        """Answer a client's Txn request without AMP's command machinery; False: let AMP.

        The same responder runs (:meth:`ClientLocator.txn`), with the
        arguments AMP would give it (``protocol.txnframes``); the answer is
        AMP's bytes, and an error is answered as AMP answers it (the
        command's own error codes; anything else logged and the connection
        closed). A forwarded request, a value split over several keys, an
        argument AMP would refuse, all go AMP's usual way.
        """
        ask = box.get(amp.ASK)
        shared = getattr(self.locator, "shared", None)
        if (
            ask is None
            or not isinstance(shared, ClientLocator)
            or self._locked
            or self._startingTLSBuffer is not None
        ):
            return False
        arguments = txn_arguments(box)
        if arguments is None:
            return False
        try:
            d = shared.txn(**arguments)
        except Exception:
            d = fail()
        d.addCallbacks(self._txn_answered, self._txn_failed, (ask,), None, (ask,))
        d.addErrback(self.unhandledError)
        return True

    def _txn_answered(self, response: dict[str, Any], ask: bytes) -> None:
        data = txn_answer(ask, response["result"])
        transport = self.transport
        if data is None or self._locked or self._startingTLSBuffer is not None:
            answer = cc.Txn.makeResponse(response, self)
            answer[amp.ANSWER] = ask
            self._safeEmit(answer)
        elif transport is not None and not self.send_limit.aborted and write_now(transport, data):
            self.send_limit.queued(len(data))

    def _txn_failed(self, failure: Failure, ask: bytes) -> None:
        """Answer as AMP's ``_commandReceived`` does: a known error by its code, else UNKNOWN."""
        errors: dict[type[Exception], bytes] = cc.Txn.allErrors  # type: ignore[attr-defined]
        known = failure.check(*errors)
        box: amp.AmpBox
        if known is not None:
            code = errors[known]
            description = str(failure.value).encode("utf-8", "replace")
            box = amp.QuitBox() if known in cc.Txn.fatalErrors else amp.AmpBox()
        else:
            _log.failure("while answering a txn", failure)
            code, description, box = amp.UNKNOWN_ERROR_CODE, b"Unknown Error", amp.QuitBox()
        box[amp.ERROR] = ask
        box[amp.ERROR_DESCRIPTION] = description
        box[amp.ERROR_CODE] = code
        self._safeEmit(box)

    def unfinished_request(self) -> int | None:
        """Return the number of the box partly received, or None (for the connection guard)."""
        if self._oversized or (not self._unprocessed and self._currentBox is None):
            return None
        return self._boxes

    def held_bytes(self) -> int:
        """Return the bytes held for the box partly received (for the connection guard)."""
        return 0 if self._oversized else self._held + len(self._unprocessed)

    def proto_value(self, string: bytes) -> str:
        """Count each key and value of an unfinished box."""
        self._held += len(self._currentKey or b"") + len(string) + 4
        return super().proto_value(string)  # type: ignore[no-any-return]

    def proto_key(self, string: bytes) -> str:
        """Forget the count when a box ends."""
        if not string:
            self._held = 0
        return super().proto_key(string)  # type: ignore[no-any-return]

    def _check_held(self) -> None:
        held = self._held + len(self._unprocessed)
        if held <= self.max_request_bytes or self.transport is None:
            return
        self._oversized = True
        box = self._currentBox
        tag = box.get(amp.ASK) if box is not None else None
        # Give the memory back now: nothing of this request is kept.
        self._currentBox = None
        self._unprocessed = b""
        self._held = 0
        message = (
            f"request larger than {self.max_request_bytes} bytes, the most one request may"
            f" take (a value may have at most {self.max_value_bytes} bytes: the node's"
            " --max-value-bytes); connection closed"
        )
        _refusals.warn(
            "oversized",
            "closing AMP client connection from {peer}: {message}",
            peer=_peer_of(self.transport),
            message=message,
        )
        if tag is not None:
            self.sendBox(
                amp.AmpBox(
                    {
                        amp.ERROR: tag,
                        amp.ERROR_CODE: cc.CLIENT_ERRORS[InvalidRequest],
                        amp.ERROR_DESCRIPTION: message.encode("ascii"),
                    }
                )
            )
        self.transport.loseConnection()

    def sendBox(self, box: amp.AmpBox) -> None:
        """Write ``box`` now, as ``BinaryBoxProtocol.sendBox`` would later."""
        if self._locked or self._startingTLSBuffer is not None or self.transport is None:
            super().sendBox(box)
            return
        limit = self.send_limit
        if limit.aborted:
            return  # the connection is going: nothing more is buffered for it
        data = box.serialize()
        if write_now(self.transport, data):
            limit.queued(len(data))

    def push_watch_events(
        self, watch_id: int, events: bytes, next_revision: int, ask: bool = True
    ) -> Deferred[amp.AmpBox] | None:
        """Send a WatchEvents box now; fire with the client's answer (its acknowledgement).

        The box's bytes after the watch id are built once per batch for every
        watcher it goes to (:func:`_watch_events_tail`); only ``_ask`` and
        ``watch_id`` are this connection's. Without ``ask`` (a client that
        acknowledges with WatchAck) the box asks for no answer: None.
        """
        transport = self.transport
        if (
            self._locked
            or self._startingTLSBuffer is not None
            or transport is None
            or self._failAllReason is not None
            or self.send_limit.aborted
        ):
            return cc.send_watch_events(self, watch_id, events, next_revision, ask)
        if not ask:
            data = cc.watch_events_box(None, watch_id, _watch_events_tail(events, next_revision))
            if write_now(transport, data):
                self.send_limit.queued(len(data))
            return None
        tag = self._nextTag()
        d: Deferred[amp.AmpBox] = Deferred()
        self._outstandingRequests[tag] = d
        data = cc.watch_events_box(tag, watch_id, _watch_events_tail(events, next_revision))
        if write_now(transport, data):
            self.send_limit.queued(len(data))
        return d


#: The last (events, next_revision, tail) of :func:`_watch_events_tail`.
_last_tail: tuple[bytes, int, bytes] = (b"", 0, b"")


def _watch_events_tail(events: bytes, next_revision: int) -> bytes:
    """Return ``cc.watch_events_tail``, kept for the next watcher of the same batch.

    ``events`` is the hub's encoding of the batch (``WatchHub.encoded``),
    the same bytes object for every watcher it goes to.
    """
    global _last_tail
    last, revision, tail = _last_tail
    if events is last and next_revision == revision:
        return tail
    tail = cc.watch_events_tail(events, next_revision)
    _last_tail = (events, next_revision, tail)
    return tail


class _WatchLocator(amp.CommandLocator):
    """One connection's responders for Watch and CancelWatch; the shared locator does the rest."""

    def __init__(
        self, proto: ClientAPIProtocol, shared: amp.CommandLocator, frontend: KeyValueFrontend
    ) -> None:
        super().__init__()
        self.proto = proto
        self.shared = shared
        self.frontend = frontend

    def locateResponder(self, name: bytes) -> Any:
        """Return this connection's responder of ``name``, else the shared one."""
        own = super().locateResponder(name)
        if own is not None:
            return cc.refuse_malformed(name, own)
        return self.shared.locateResponder(name)

    @cc.Watch.responder
    def watch(
        self,
        start: str,
        end: str | None,
        prefix: bool | None,
        start_revision: int | None,
        batched_acks: bool | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Start a watch; its events follow this answer as WatchEvents.

        With ``batched_acks``, they ask no answer: the client acknowledges
        them with WatchAck, at least every ``ack_every`` events (in the answer).
        """
        if len(self.proto.watchers) >= MAX_WATCHES_PER_CONNECTION:
            return fail(
                InvalidRequest(
                    f"at most {MAX_WATCHES_PER_CONNECTION} watches per connection; cancel one"
                )
            )
        hub = self.frontend.watches
        ack_every = watch_ack_every(hub.max_backlog) if batched_acks and hub is not None else 0
        sink = _AMPWatchSink(self.proto, hub, ack_every > 0)  # type: ignore[arg-type]
        try:
            watcher = self.frontend.start_watch(start, end, bool(prefix), start_revision, sink)
        except LeekyError as e:
            return fail(e)
        self.proto.watchers[watcher.id] = watcher
        self.frontend._clock.callLater(0, sink.open)
        answer: dict[str, Any] = {"watch_id": watcher.id, "start_revision": watcher.origin}
        if ack_every:
            answer["ack_every"] = ack_every
        d: Deferred[dict[str, Any]] = Deferred()
        d.callback(answer)
        return d

    @cc.WatchAck.responder
    def watch_ack(self, watch_id: int, count: int) -> dict[str, Any]:
        """The client took ``count`` more events of one of this connection's watches.

        Only a watch answered with ``ack_every`` takes it. A count over what the
        node sent and has not yet been told of ends the watch: such acks would
        keep its backlog at 0 while the client reads nothing, and the node would
        buffer its events without bound.
        """
        hub = self.frontend.watches
        watcher = self.proto.watchers.get(watch_id)
        if watcher is None or hub is None or not getattr(watcher.sink, "batched_acks", False):
            return {}
        if count > watcher.backlog:
            hub.cancel(
                watcher,
                f"the client acknowledged {count} events, but only {watcher.backlog} were "
                f"sent and not yet acknowledged; resume from revision {watcher.next_revision}",
            )
            return {}
        hub.acked(watcher, count)
        return {}

    @cc.CancelWatch.responder
    def cancel_watch(self, watch_id: int) -> dict[str, Any]:
        """End one of this connection's watches."""
        watcher = self.proto.watchers.pop(watch_id, None)
        if watcher is not None and self.frontend.watches is not None:
            self.frontend.watches.cancel(watcher)
        return {}


class _AMPWatchSink:
    """Sends a watcher's events over its AMP connection; the client's answers are the acks.

    Events wait (``held``) until the Watch answer has gone out, so they never
    arrive before it.
    """

    def __init__(
        self, proto: ClientAPIProtocol, hub: watches.WatchHub, batched_acks: bool = False
    ) -> None:
        self.proto = proto
        self.hub = hub
        #: the client acknowledges with WatchAck: events ask for no answer
        self.batched_acks = batched_acks
        self.held: list[Event] | None = []
        self._watcher: watches.Watcher | None = None

    def open(self) -> None:
        held, self.held = self.held, None
        if held and self._watcher is not None:
            self._send(self._watcher, held)

    def events(self, watcher: watches.Watcher, events: list[Event]) -> None:
        self._watcher = watcher
        if self.held is not None:
            self.held.extend(events)
            return
        self._send(watcher, events)

    def _send(self, watcher: watches.Watcher, events: list[Event]) -> None:
        if len(events) == 1:  # one message, and the list the hub gave every watcher
            self._push(watcher, events)
            return
        for batch in watches.batches(events, WATCH_MESSAGE_CHARS):
            if not self._push(watcher, batch):
                return

    def _push(self, watcher: watches.Watcher, batch: list[Event]) -> bool:
        """Send one WatchEvents box; False (and the watch cancelled) if it cannot go.

        It cannot when the connection is gone, or when the connection already
        holds more than ``max_watch_buffer_bytes`` not yet sent (the client
        does not read its socket): the watch is then cancelled as slow, to
        resume from this box's first revision (every box before it was written).
        """
        proto = self.proto
        transport = proto.transport
        if transport is None:
            self.hub.cancel(watcher)
            return False
        held = buffered_bytes(transport)
        if held > proto.max_watch_buffer_bytes:
            self.hub.cancelled_slow += 1
            self.hub.cancel(
                watcher,
                f"watcher fell behind: its connection holds {held} bytes not yet sent (limit"
                f" {proto.max_watch_buffer_bytes}); resume from revision {batch[0].revision}",
            )
            return False
        payload = self.hub.encoded(batch)
        d = proto.push_watch_events(
            watcher.id, payload, batch[-1].revision + 1, not self.batched_acks
        )
        if d is not None:
            d.addCallbacks(
                _acker(self.hub, watcher, len(batch)), self._broken, errbackArgs=(watcher,)
            )
        return True

    def _broken(self, _: object, watcher: watches.Watcher) -> None:
        self.hub.cancel(watcher)

    def progress(self, watcher: watches.Watcher, revision: int) -> None:
        if self.held is not None:
            return
        arguments = {"watch_id": watcher.id, "events": "[]", "next_revision": revision}
        self._call(watcher, cc.WatchEvents, arguments, lambda _: None)

    def cancelled(self, watcher: watches.Watcher, reason: str) -> None:
        self.proto.watchers.pop(watcher.id, None)
        if self.proto.transport is not None:
            self.proto.callRemote(cc.WatchEnded, watch_id=watcher.id, reason=reason)

    def _call(
        self,
        watcher: watches.Watcher,
        command: type[amp.Command],
        arguments: dict[str, Any],
        done: Callable[[object], None],
    ) -> None:
        if self.proto.transport is None:
            self.hub.cancel(watcher)
            return
        d = self.proto.callRemote(command, **arguments)
        d.addCallbacks(done, lambda _: self.hub.cancel(watcher))


#: The most watches one client connection may hold (the node's own cap is WatchHub's).
MAX_WATCHES_PER_CONNECTION = 100
#: A WatchEvents message holds about this many characters of events (whole revisions).
WATCH_MESSAGE_CHARS = 1 << 20
#: Bytes one client connection may hold not yet sent before its watches stop: a
#: watch whose next events box finds more queued is cancelled as slow (so the
#: node holds at most this plus one box per connection). Room for four full
#: WatchEvents messages; it bounds what acknowledgements cannot (WatchAck counts
#: events, and a client may acknowledge events it never reads).
MAX_WATCH_BUFFER_BYTES = 4 * WATCH_MESSAGE_CHARS
#: Events a client acknowledging with WatchAck may hold unacknowledged (at most a
#: quarter of the node's backlog limit, so a client that keeps up is never cancelled).
WATCH_ACK_EVERY = 64


def watch_ack_every(max_backlog: int) -> int:
    """Return the ``ack_every`` a node with backlog limit ``max_backlog`` answers."""
    return max(1, min(WATCH_ACK_EVERY, max_backlog // 4))


def _acker(hub: watches.WatchHub, watcher: watches.Watcher, count: int) -> Callable[[object], None]:
    return lambda _: hub.acked(watcher, count)


def _peer_of(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "unknown"
    host = getattr(peer, "host", None)
    return f"{host}:{getattr(peer, 'port', '?')}" if host is not None else str(peer)


class _ClientAPIFactory(ServerFactory):
    """Build one AMP protocol per client connection, all sharing one locator."""

    def __init__(self, locator: ClientLocator) -> None:
        self.locator = locator

    def buildProtocol(self, addr: object) -> amp.AMP:
        """Return an AMP protocol answering with the client API."""
        proto = ClientAPIProtocol(locator=self.locator)
        proto.factory = self
        return proto


def make_amp_factory(
    node_or_frontend: IRaftNode | KeyValueFrontend, reactor: Any = None, **frontend_options: Any
) -> ServerFactory:
    """Return the server factory of the client AMP API.

    Pass the shared :class:`KeyValueFrontend`, or a node plus ``reactor`` (and
    any :func:`make_frontend` options) to build one.
    """
    if isinstance(node_or_frontend, KeyValueFrontend):
        frontend = node_or_frontend
    else:
        if reactor is None:
            raise TypeError("a reactor is needed to build a frontend")
        frontend = make_frontend(node_or_frontend, reactor, **frontend_options)
    return _ClientAPIFactory(ClientLocator(frontend))
