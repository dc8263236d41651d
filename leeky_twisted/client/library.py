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
- ``Removed``: every node given was removed from the cluster. A removed node
  refuses every request at once; the client moves on to the next node and
  does not ask that one again in the same call.

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
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.protocols import amp
from twisted.python.failure import Failure

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.amperrors import describe_remote_error
from leeky_twisted.protocol.connection import (
    DEFAULT_ATTEMPT_TIMEOUT,
    Address,
    AMPConnectionPool,
    CallTimedOut,
    Connector,
    NodeUnresponsive,
    NotLeekyRaft,
    TLSHandshakeFailed,
    TLSRefused,
    call_while_alive,
    client_tls_connector,
    format_address,
    parse_address,
    tcp_connector,
    tls_connector,
    with_timeout,
)
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    InvalidRequest,
    LeekyError,
    NotCommitted,
    NotLeader,
    Removed,
    SessionExpired,
    Unavailable,
)
from leeky_twisted.protocol.kvresults import (
    Event,
    KeyValue,
    RangeResult,
    TxnResult,
    range_result_from_json,
    txn_result_from_json,
)

if TYPE_CHECKING:
    from leeky_twisted.client.watch import Watch

__all__ = [
    "DEFAULT_ATTEMPT_TIMEOUT",
    "AMPConnectionPool",
    "Address",
    "CallTimedOut",
    "Connector",
    "LeekyClient",
    "NoLeader",
    "NoLeaderOutcomeUnknown",
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


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one node said about itself, or why it could not be asked."""

    address: str
    status: dict[str, Any] | None
    error: str | None = None


class NoLeader(Unavailable):
    """Nodes answered, but none knew a leader: the cluster has lost its majority of
    voters, or is electing a leader. Nothing of the call was applied.

    ``reason`` is the message without what it means for a write.
    """

    def __init__(self, message: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else self.message


class NoLeaderOutcomeUnknown(CommitTimeout):
    """No leader any more, and an earlier attempt of the write may have been applied."""

    def __init__(self, message: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else self.message


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
        self._watches: set[Watch] = set()
        #: the lease sessions of the lock recipe (``client.recipes``), by ttl
        self.lock_sessions: dict[int, Any] = {}

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

        The events come on the client's own connection to the node (no
        connection per watch). One client holds at most 100 watches at once
        (``client.watch.MAX_WATCHES_PER_CONNECTION``): one more raises
        InvalidRequest.
        """
        from leeky_twisted.client.watch import (
            DEFAULT_SILENCE_TIMEOUT,
            MAX_WATCHES_PER_CONNECTION,
        )
        from leeky_twisted.client.watch import Watch as _Watch

        if len(self._watches) >= MAX_WATCHES_PER_CONNECTION:
            raise InvalidRequest(
                f"this client holds {len(self._watches)} watches, the most one connection"
                " carries (a node takes at most that many per connection); cancel one,"
                " or watch through another LeekyClient"
            )
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
        self._watches.add(watch)

        def ended(result: T) -> T:
            self._watches.discard(watch)
            return result

        watch.done.addBoth(ended)
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

    def members_seen_by_leader(self) -> Deferred[list[dict[str, Any]]]:
        """Fire with every member as the leader sees it, else as the first answering node does.

        Only the leader hears from every member, so only its view says which
        members answer (``reachable``, ``last_contact``). The first answering
        node names the leader (``raft == "leader"``) and its client address;
        if that leader cannot be asked within ``attempt_timeout``, the first
        view is what this fires with.
        """

        async def ask() -> list[dict[str, Any]]:
            first: list[dict[str, Any]] = await self.members()
            me = next((m for m in first if m.get("this_node")), None)
            if me is None or me.get("raft") == "leader":
                return first
            leader = next((m for m in first if m.get("raft") == "leader"), None)
            try:
                address = parse_address(str(((leader or {}).get("addresses") or {})["client"]))
            except (KeyError, ValueError):
                return first
            clock = self._clock
            try:
                proto = await with_timeout(
                    self._pool.connection(address), self.attempt_timeout, clock
                )
                response = await call_while_alive(
                    proto,
                    clock,
                    cc.Members,
                    {},
                    self.attempt_timeout,
                    clock.seconds() + self.attempt_timeout,
                )
                seen: list[dict[str, Any]] = json.loads(response["members"])
            except Exception:
                return first  # the first answer stands; it says who answered it
            return seen

        return Deferred.fromCoroutine(ask())

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

    def open_session(self, deadline: float | None = None) -> Deferred[str]:
        """Fire with the client's session id, registering a session first if it has none.

        Writes call this by themselves; call it ahead to keep the registration
        (one log entry) out of the first write's latency. Concurrent callers
        share one registration, which gives up at ``deadline`` (a clock time;
        default: the client's timeout from now).
        """
        if self.session_id is not None:
            return succeed(self.session_id)
        waiter: Deferred[str] = Deferred()
        self._session_waiters.append(waiter)
        if len(self._session_waiters) == 1:
            d = Deferred.fromCoroutine(
                self._attempt(cc.RegisterSession, {}, True, False, deadline=deadline)
            )
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
        """Cancel the watches, stop keeping lock sessions alive, close every connection.

        Fire when the connections are closed.
        """
        for watch in list(self._watches):
            watch.close()
        for session in list(self.lock_sessions.values()):
            session.stop()
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
                return NodeReport(shown, None, f"connected but sent nothing: {e}{_SILENT_HINT}")
            except (LeekyError, error.ConnectionClosed) as e:
                return NodeReport(shown, None, _describe(e))
            except amp.RemoteAmpError as e:
                return NodeReport(shown, None, _describe(e))
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
        (NoLeader when the nodes knew no leader): nothing was applied, never
        "outcome unknown". A registration this call starts gives up at
        ``deadline`` by itself; one that another write started earlier has an
        earlier deadline, so the timer here is only a backstop.
        """
        if self.session_id is not None:  # the usual case: no timer, no Deferred
            return self.session_id
        remaining = deadline - self._clock.seconds()
        not_sent = "the write was not sent to any node, so it was not applied"
        try:
            return await with_timeout(
                self.open_session(deadline), max(remaining, 0.0) + self.attempt_timeout, self._clock
            )
        except (NoLeader, NoLeaderOutcomeUnknown) as e:
            raise NoLeader(f"{e.reason}; {not_sent}", e.reason) from None
        except (CallTimedOut, CommitTimeout):
            reason = (
                f"could not open a client session: no leader committed it within "
                f"{self.timeout:g} s (the cluster has lost its majority of voters, or is "
                "overloaded)"
            )
            raise NoLeader(f"{reason}; {not_sent}", reason) from None

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
        #: the nodes whose last answer was "I know no leader"
        leaderless: set[Address] = set()
        removed: set[Address] = set()  # said they were removed from the cluster: never again

        async def move_on(failed: Address) -> Address:
            """Count ``failed`` as unreachable this round; return the next address to try."""
            nonlocal full_rounds
            unreachable.add(failed)
            if failed == self._leader:
                self._leader = None
            if set(self.addresses) <= unreachable | removed:
                unreachable.clear()
                full_rounds += 1
                if full_rounds >= 2:
                    raise self._unreachable(write and unknown, last)
                await pause()
            return next_after(failed)

        def next_after(after: Address) -> Address:
            """Return the next address, passing over nodes that fell silent or were removed."""
            address = self._next_address(after)
            skip = silent | removed
            if set(self.addresses) <= skip:
                skip = removed
            for _ in range(len(self.addresses)):
                if address not in skip:
                    break
                address = self._next_address(address)
            return address

        while True:
            remaining = deadline - clock.seconds()
            if remaining <= 0:
                raise self._gave_up(write, answered, unknown, last, leaderless)
            shown = format_address(address)
            try:
                # the usual case, a connection already open, needs no timer
                open_now = self._pool.connected(address)
                proto = (
                    open_now
                    if open_now is not None
                    else await with_timeout(
                        self._pool.connection(address), min(self.attempt_timeout, remaining), clock
                    )
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
                last = NodeUnresponsive(f"{shown} connected but sent nothing: {e}{_SILENT_HINT}")
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
            except Removed as e:
                answered = True
                last = Removed(f"{shown}: {e}")
                removed.add(address)
                if address == self._leader:
                    self._leader = None
                if set(self.addresses) <= removed:
                    raise last from None
                address = next_after(address)
                continue
            except NotLeader as e:
                answered = True
                last = e
                self._leader = None
                if e.leader_id is None:
                    leaderless.add(address)
                else:
                    leaderless.discard(address)
                hint = _parse_hint(e.leader_address)
                if (
                    hint is not None
                    and hint != address
                    and hint not in silent
                    and hint not in removed
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
                        " (not an AMP client port: a peer port, or a TLS port reached"
                        " without TLS?)"
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
                raise self._gave_up(write, answered, unknown or write, last, leaderless) from None
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
                raise LeekyError(f"{shown}: {_describe(e)}") from None
            except Exception as e:
                # Not AMP at all (amp.TooLong from an SSH or HTTP server, a parse error).
                last = NotLeekyRaft(_not_leeky(shown, e, proto))
                address = await move_on(address)
                continue
            if not any_node:
                self._leader = address
            return response

    def _gave_up(
        self,
        write: bool,
        answered: bool,
        unknown: bool,
        last: Exception | None,
        leaderless: set[Address],
    ) -> LeekyError:
        """Return the error of a call whose deadline passed.

        ``leaderless`` holds the nodes whose last answer was that they know no
        leader: the error then says so plainly (NoLeader, or
        NoLeaderOutcomeUnknown when an attempt of the write may have been applied).
        """
        reason = _NO_LEADER
        if leaderless:
            reason = (
                f"no leader: {_count(len(leaderless), 'node')} answered, and none knew a "
                f"leader within {self.timeout:g} s ({_NO_LEADER_WHY})"
            )
        if write and unknown:
            if leaderless:
                return NoLeaderOutcomeUnknown(
                    f"{reason}; the write reached a node before that and may or may not "
                    "have been applied (outcome unknown)",
                    reason,
                )
            return CommitTimeout()
        if not answered:
            return self._unreachable(False, last)
        if leaderless or write or isinstance(last, NotLeader | Unavailable):
            if not leaderless:
                seen = f": {_describe(last)}" if isinstance(last, Unavailable) else ""
                reason = f"no leader found within {self.timeout:g} s{seen}"
            if write:
                return NoLeader(
                    f"{reason}; no node accepted the write, so it was not applied", reason
                )
            return NoLeader(reason)
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
    # An AmpError (TooLong, a parse error) says only that the bytes were not AMP.
    what = "" if isinstance(e, amp.AmpError) else f": {_describe(e)}"
    return (
        f"{shown} does not speak Leeky Raft's client protocol{sent}{what}; "
        "is it a node's client (AMP) port?"
    )


def _parse_hint(address: str | None) -> Address | None:
    if address is None:
        return None
    try:
        return parse_address(address)
    except ValueError:
        return None


def _count(n: int, noun: str) -> str:
    """Return ``n noun``, plural unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


#: what it means when no node knows a leader
_NO_LEADER_WHY = "the cluster has lost its majority of voters, or is electing a leader"
_NO_LEADER = f"no leader: {_NO_LEADER_WHY}"

#: why a port may accept a connection and say nothing
_SILENT_HINT = (
    " (a paused or overloaded node, or not an AMP client port: an HTTP port, for one, "
    "waits for an HTTP request)"
)


def _describe(e: BaseException) -> str:
    if isinstance(e, amp.RemoteAmpError):
        return describe_remote_error(e)
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(e, error.DNSLookupError):
        return "unknown host name"
    text = str(e).strip()
    return text or type(e).__name__
