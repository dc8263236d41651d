"""A blocking client for programs that are not Twisted: standard library only.

:class:`BlockingClient` speaks JSON-RPC over HTTP to the nodes' HTTP ports
(``--http-port``) with the semantics of the Twisted client
(``client.library.LeekyClient``):

- it finds the leader by itself from a list of addresses, follows "not the
  leader" hints, moves on from a node it cannot reach, and gives every call
  ``timeout`` seconds in all (retries included);
- every write goes out in the client's session (``session``, ``seq``,
  ``ack``), so a retry after a lost answer is applied at most once and
  answers the first outcome. The session is opened before the first write;
  a session the cluster dropped is replaced by a new one, unless an earlier
  attempt of the write had an unknown outcome (then CommitTimeout,
  "outcome unknown", rather than a second application);
- errors are the classes of ``leeky_twisted.protocol.errors``: InvalidRequest
  (refused, never retried), Unavailable (no node reachable, no leader),
  CommitTimeout (outcome unknown), SessionExpired, Compacted, Removed (every
  node given was removed from the cluster: a removed node refuses every call
  at once, and the client moves on from it without asking it again).

Watches use the JSON-RPC long poll; :class:`Watch` is an iterator of
:class:`Event` that resumes on another node from the revision after the
last event it returned. :class:`Lock` is the lease + revision + watch lock
of ``client.recipes`` as a context manager, with its fencing token; a
client's locks share one session lease per ttl.

Importing this module imports no Twisted (``tests/client/test_blocking.py``
checks). One client may be shared by threads: each thread gets its own HTTP
connections.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from leeky_twisted.protocol.errors import (
    CommitTimeout,
    Compacted,
    InvalidRequest,
    LeekyError,
    NotCommitted,
    NotLeader,
    Removed,
    SessionExpired,
    Unavailable,
)

__all__ = [
    "BlockingClient",
    "Event",
    "KeyValue",
    "Lock",
    "RangeResult",
    "TxnResult",
    "Watch",
    "parse_address",
]

Address = tuple[str, int]
T = TypeVar("T")

#: A write whose session keeps being refused gets a new session at most this often.
MAX_SESSION_RENEWALS = 3
#: Longest wait of one watch long poll (the node's limit is 60 s).
MAX_POLL_WAIT = 60.0

_ERRORS: dict[int, type[LeekyError]] = {
    -32001: Unavailable,
    -32002: CommitTimeout,
    -32003: NotCommitted,
    -32004: SessionExpired,
    -32005: Compacted,
    -32006: Removed,
    -32600: InvalidRequest,
    -32602: InvalidRequest,
}


def parse_address(text: str) -> Address:
    """Parse ``"host:port"`` (``"[v6]:port"`` for IPv6); ValueError when malformed."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"not a HOST:PORT address: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


def _shown(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ----------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key with its revisions; ``value`` is None in a ``keys_only`` answer."""

    key: str
    value: str | None
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The keys of a range in order, read at ``revision`` (``count``: all; ``more``: cut)."""

    revision: int
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, at which revision, and each operation's answer
    (None for a put, existed for a delete, a RangeResult for a range)."""

    succeeded: bool
    revision: int
    responses: tuple[bool | RangeResult | None, ...]


class Event(NamedTuple):
    """One modification (the fields of the Twisted client's ``Event``)."""

    revision: int
    kind: str
    key: str
    value: str | None
    create_revision: int
    version: int


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(d["key"], d.get("value"), d["create_revision"], d["mod_revision"], d["version"])


def _range(d: dict[str, Any]) -> RangeResult:
    return RangeResult(d["revision"], tuple(_kv(k) for k in d["kvs"]), d["count"], d["more"])


def _txn(d: dict[str, Any]) -> TxnResult:
    responses = tuple(_range(r) if isinstance(r, dict) else r for r in d["responses"])
    return TxnResult(d["succeeded"], d["revision"], responses)


def _event(d: dict[str, Any]) -> Event:
    return Event(
        d["revision"], d["type"], d["key"], d.get("value"), d["create_revision"], d["version"]
    )


class _Unreachable(Exception):
    """No answer from this node, and the request surely did not reach it (or not Leeky)."""


class _Lost(Exception):
    """The request was sent but no answer came: its outcome is unknown."""


# ------------------------------------------------------------------ client


class BlockingClient:
    """A blocking client of a whole cluster over JSON-RPC/HTTP.

    :param addresses: the nodes' HTTP addresses, ``"host:port"`` or (host, port).
    :param timeout: each call's limit in seconds, retries included.
    :param connect_timeout: what an unreachable node may cost one attempt.
    :param answer_timeout: the longest wait for one node's answer (the node
        itself gives up on a commit after 5 s by default), capped by what
        is left of ``timeout``.
    :param session_id: a session registered earlier to go on with (never
        share one between two clients).
    """

    def __init__(
        self,
        addresses: Iterable[str | Address],
        timeout: float = 10.0,
        *,
        connect_timeout: float = 1.0,
        answer_timeout: float = 6.0,
        session_id: str | None = None,
        retry_delay: float = 0.05,
        max_retry_delay: float = 1.0,
    ) -> None:
        self.addresses: list[Address] = [
            parse_address(a) if isinstance(a, str) else (a[0], int(a[1])) for a in addresses
        ]
        if not self.addresses:
            raise ValueError("a client needs at least one address")
        if timeout <= 0 or connect_timeout <= 0 or answer_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.answer_timeout = answer_timeout
        #: the session the next write goes out in; None until one is registered
        self.session_id = session_id
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._seq = 0
        self._pending: set[int] = set()
        self._leader: Address | None = None
        self._cursor = 0
        self._spoke: set[Address] = set()  # answered JSON-RPC at least once
        self._client_to_http: dict[str, Address] = {}  # a node's AMP address -> its HTTP one
        self._local = threading.local()
        self._request_id = 0
        self._pause = threading.Event()  # never set: its wait() is the retry pause
        self._lock_sessions: dict[int, _LockSession] = {}

    @property
    def leader(self) -> Address | None:
        """The address of the last node that answered a leader's call, if any."""
        return self._leader

    # ------------------------------------------------------------ writes

    def put(self, key: str, value: str, lease: int | None = None) -> None:
        """Set ``key`` to ``value``; with ``lease``, the key goes when the lease ends."""
        options = [] if lease is None else [{"lease": lease}]
        self._write("put", [key, value], options)

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""
        return bool(self._write("delete", [key]))

    def cas(self, key: str, expected: str | None, new: str) -> bool:
        """Set ``key`` to ``new`` if it holds ``expected`` (None: absent); True when swapped."""
        return bool(self._write("cas", [key, expected, new]))

    def txn(
        self,
        compare: Iterable[dict[str, Any]] = (),
        success: Iterable[dict[str, Any]] = (),
        failure: Iterable[dict[str, Any]] = (),
    ) -> TxnResult:
        """If every compare holds apply ``success``, else ``failure``: one log entry.

        Items are the JSON objects of docs/coordination.md; a put may carry
        ``"lease"``.
        """
        document = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        return self._decoded(_txn, self._write("txn", [document]))

    def lease_grant(self, ttl: int) -> int:
        """Create a lease of ``ttl`` seconds (1 to 1,000,000); return its id."""
        return int(self._write("lease_grant", [ttl]))

    def lease_revoke(self, lease: int) -> bool:
        """End ``lease`` and delete its keys; return whether it was live."""
        return bool(self._write("lease_revoke", [lease]))

    def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease`` for its ttl; return the ttl. InvalidRequest when it is gone."""
        return int(self._call("lease_keepalive", [lease], write=False))

    def lease_ttl(self, lease: int) -> dict[str, Any]:
        """Return ``{"id", "ttl", "remaining", "keys"}`` of ``lease``."""
        result: dict[str, Any] = self._call("lease_ttl", [lease], write=False)
        return result

    def open_session(self) -> str:
        """Return the client's session id, registering one (a log entry) if it has none.

        Writes do this by themselves; call it ahead to keep it out of the first write.
        """
        return self._session_before(time.monotonic() + self.timeout)

    # ------------------------------------------------------------- reads

    def get(self, key: str, stale: bool = False) -> str | None:
        """Return the value of ``key`` or None (linearizable unless ``stale``)."""
        options = [{"stale": True}] if stale else []
        return self._call("get", [key, *options], write=False)  # type: ignore[no-any-return]

    def get_kv(self, key: str, stale: bool = False) -> KeyValue | None:
        """Return ``key`` with its revisions, or None when absent."""
        found = self._call("get", [key, {"stale": stale, "revisions": True}], write=False)
        kv = found.get("kv") if isinstance(found, dict) else None
        return None if kv is None else self._decoded(_kv, kv)

    def range(
        self,
        start: str,
        end: str | None = None,
        *,
        limit: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        stale: bool = False,
    ) -> RangeResult:
        """Return the keys in [start, end) (end None: to the last key), sorted."""
        options = {"limit": limit, "keys_only": keys_only, "count_only": count_only}
        result = self._call("range", [start, end, {**options, "stale": stale}], write=False)
        return self._decoded(_range, result)

    def range_prefix(self, prefix: str, **options: Any) -> RangeResult:
        """Return every key starting with ``prefix`` (options as :meth:`range`)."""
        result = self._call("range_prefix", [prefix, options], write=False)
        return self._decoded(_range, result)

    def status(self) -> dict[str, Any]:
        """Return the status of the first node that answers."""
        result: dict[str, Any] = self._call("status", [], write=False, any_node=True)
        return result

    def watch(
        self,
        key: str,
        *,
        prefix: bool = False,
        end: str | None = None,
        start_revision: int | None = None,
        poll_wait: float = 20.0,
    ) -> Watch:
        """Return an iterator of every modification of ``key`` (or the prefix, or
        [key, end)) from ``start_revision`` (None: the next revision); see :class:`Watch`."""
        return Watch(self, key, prefix, end, start_revision, poll_wait)

    def lock(self, name: str, ttl: int = 10, value: str = "") -> Lock:
        """Return the (not yet acquired) lock ``name``: ``with client.lock("jobs") as held:``."""
        return Lock(self, name, ttl, value)

    def campaign(self, name: str, proposal: str, ttl: int = 10) -> Lock:
        """Wait to lead election ``name`` with ``proposal``; return the held leadership.

        Resign with ``release()``; the oldest candidate leads (a lock holding its proposal).
        """
        return Lock(self, name, ttl, proposal).acquire()

    def leader_of(self, name: str) -> str | None:
        """Return the proposal of the current leader of election ``name``, or None."""
        listing = self.range_prefix(name + "/")
        oldest = min(listing.kvs, key=lambda kv: kv.create_revision, default=None)
        return None if oldest is None else oldest.value

    def _lock_session(self, ttl: int) -> _LockSession:
        """Return the live lock session of ``ttl`` seconds, starting one if needed."""
        with self._lock:
            session = self._lock_sessions.get(ttl)
            if session is None or session.ended:
                session = self._lock_sessions[ttl] = _LockSession(self, ttl)
            return session

    def end_lock_sessions(self) -> None:
        """Revoke the session leases of this client's locks now (keys still on them go too).

        Leaving ``with BlockingClient(...)`` does this; otherwise a session
        lease ends by itself ``ttl`` seconds after the program stopped.
        """
        with self._lock:
            sessions = list(self._lock_sessions.values())
        for session in sessions:
            session.give_up("the client ended its lock sessions")

    def close(self) -> None:
        """Close this thread's connections (others close when their threads end)."""
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()
        self._local.conns = {}

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_lock_sessions()
        self.close()

    # ----------------------------------------------------------- machinery

    @staticmethod
    def _decoded(parse: Callable[[Any], T], value: Any) -> T:
        try:
            return parse(value)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LeekyError(f"the node sent a malformed answer: {e!r:.200}") from None

    def _write(self, method: str, before: list[Any], after: Sequence[Any] = ()) -> Any:
        """Send a write in the client's session; in a new one if the cluster dropped it."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._pending.add(seq)
        try:
            deadline = time.monotonic() + self.timeout
            renewals = 0
            while True:
                session_id = self._session_before(deadline)
                with self._lock:
                    ack = min(self._pending)
                session = {"session": session_id, "seq": seq, "ack": ack}
                try:
                    return self._attempt(
                        method, [*before, session, *after], write=True, deadline=deadline
                    )
                except SessionExpired:
                    if self.session_id == session_id:
                        self.session_id = None
                    renewals += 1
                    if renewals > MAX_SESSION_RENEWALS:
                        raise
        finally:
            with self._lock:
                self._pending.discard(seq)

    def _session_before(self, deadline: float) -> str:
        """Return the session id, registering one (once for all threads) by ``deadline``."""
        if self.session_id is not None:
            return self.session_id
        with self._session_lock:
            if self.session_id is not None:  # another thread registered it meanwhile
                return self.session_id
            try:
                session = self._attempt("register_session", [], write=True, deadline=deadline)
            except CommitTimeout:
                # Only the session's own outcome is unknown (an unused one expires).
                raise Unavailable(
                    "the write was not sent to any node, so it was not applied: the client "
                    "could not open a session with the cluster, which it needs before its "
                    f"first write (no leader confirmed one within {self.timeout:g} s; the "
                    "cluster may have lost most of its nodes, or be overloaded). Check that "
                    "most nodes are running and reach each other (leekyraft status), then "
                    "try again"
                ) from None
            if not isinstance(session, str):
                raise LeekyError(f"the node sent a malformed session id: {session!r:.80}")
            self.session_id = session
            return session

    def _call(self, method: str, params: list[Any], *, write: bool, any_node: bool = False) -> Any:
        return self._attempt(
            method, params, write=write, deadline=time.monotonic() + self.timeout, any_node=any_node
        )

    def _next_address(self, after: Address | None) -> Address:
        if after in self.addresses:
            self._cursor = self.addresses.index(after) + 1
        address = self.addresses[self._cursor % len(self.addresses)]
        self._cursor += 1
        return address

    def _attempt(
        self,
        method: str,
        params: list[Any],
        *,
        write: bool,
        deadline: float,
        any_node: bool = False,
        extra_wait: float = 0.0,
        first: Address | None = None,
    ) -> Any:
        """Send one call to the leader (or any node), moving on from what fails, by ``deadline``.

        ``first``: the node to try first (else the leader, else the next address).
        This thread's ``self._local.answered_by`` is then the node that answered.
        """
        delay = self._retry_delay
        hops = 0
        address = first or self._leader or self._next_address(None)
        unreachable: set[Address] = set()
        removed: set[Address] = set()  # said they were removed from the cluster: never again
        full_rounds = 0
        answered = False
        unknown = False  # an attempt of this write may have been applied
        last: Exception | None = None

        def pause() -> None:
            nonlocal delay, hops
            hops = 0
            self._pause.wait(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, self._max_retry_delay)

        def move_on(failed: Address) -> Address:
            nonlocal full_rounds
            unreachable.add(failed)
            if failed == self._leader:
                self._leader = None
            if set(self.addresses) <= unreachable | removed:
                unreachable.clear()
                full_rounds += 1
                if full_rounds >= 2:
                    if write and unknown:
                        raise CommitTimeout(
                            f"outcome unknown: the write was sent but no node answered: {last}"
                        )
                    raise self._unreachable(last)
                pause()
            return next_after(failed)

        def next_after(after: Address) -> Address:
            """Return the next address that did not say it was removed."""
            address = self._next_address(after)
            for _ in range(len(self.addresses)):
                if address not in removed:
                    break
                address = self._next_address(address)
            return address

        while True:  # bounded: every pass sleeps or moves on, and the deadline ends it
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._gave_up(write, answered, unknown, last)
            try:
                result = self._rpc(address, method, params, remaining, extra_wait)
            except _Unreachable as e:
                last = e
                address = move_on(address)
                continue
            except _Lost as e:
                last = e
                unknown = unknown or write
                address = move_on(address)
                continue
            except Removed as e:
                answered, last = True, Removed(f"{_shown(address)}: {e}")
                removed.add(address)
                if address == self._leader:
                    self._leader = None
                if set(self.addresses) <= removed:
                    raise last from None
                address = next_after(address)
                continue
            except NotLeader as e:
                answered, last = True, e
                self._leader = None
                hint = self._hint(e)
                if (
                    hint is not None
                    and hint != address
                    and hint not in removed
                    and hops < len(self.addresses)
                ):
                    hops += 1
                    address = hint
                else:
                    address = next_after(address)
                    pause()
                continue
            except (Unavailable, CommitTimeout, NotCommitted) as e:
                answered, last = True, e
                if isinstance(e, CommitTimeout):
                    unknown = unknown or write
                else:
                    address = next_after(address)
                pause()
                continue
            except SessionExpired as e:
                if unknown:
                    raise CommitTimeout(
                        "outcome unknown: an earlier attempt got no answer and the session has"
                        f" since expired ({e}); the write may or may not have been applied"
                    ) from None
                raise
            if not any_node:
                self._leader = address
            self._local.answered_by = address
            return result

    def _gave_up(
        self, write: bool, answered: bool, unknown: bool, last: Exception | None
    ) -> LeekyError:
        if write and unknown:
            return CommitTimeout(
                f"outcome unknown: no answer within {self.timeout:g} s"
                + (f" ({last})" if last is not None else "")
            )
        if not answered:
            return self._unreachable(last)
        if write or isinstance(last, NotLeader | Unavailable):
            return Unavailable(f"no leader found within {self.timeout:g} s ({last})")
        return CommitTimeout(f"timed out after {self.timeout:g} s ({last})")

    def _unreachable(self, last: Exception | None) -> Unavailable:
        where = ", ".join(_shown(a) for a in self.addresses)
        reason = f": {last}" if last is not None else ""
        return Unavailable(f"cannot reach any node of the cluster ({where}){reason}")

    def _hint(self, e: NotLeader) -> Address | None:
        """Return the leader's HTTP address from a NotLeader (which names its AMP address)."""
        if e.leader_address is None:
            return None
        known = self._client_to_http.get(e.leader_address)
        if known is None:  # learn which HTTP address is which node (a status each, once)
            for address in self.addresses:
                if address in self._client_to_http.values():
                    continue
                try:
                    status = self._rpc(address, "status", [], self.connect_timeout, 0.0)
                except (LeekyError, _Unreachable, _Lost):
                    continue
                client = status.get("client_address") if isinstance(status, dict) else None
                if isinstance(client, str):
                    self._client_to_http[client] = address
            known = self._client_to_http.get(e.leader_address)
        return known

    def _connection(self, address: Address) -> http.client.HTTPConnection:
        conns: dict[Address, http.client.HTTPConnection] | None = getattr(
            self._local, "conns", None
        )
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(address)
        if conn is None:
            conn = conns[address] = http.client.HTTPConnection(
                address[0], address[1], timeout=self.connect_timeout
            )
        return conn

    def _drop(self, address: Address) -> None:
        conn = getattr(self._local, "conns", {}).pop(address, None)
        if conn is not None:
            conn.close()

    def _rpc(
        self, address: Address, method: str, params: list[Any], remaining: float, extra: float
    ) -> Any:
        """One JSON-RPC call to one node: its result, or the error it stands for."""
        shown = _shown(address)
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
            ensure_ascii=False,
        ).encode("utf-8")
        conn = self._connection(address)
        fresh = conn.sock is None
        try:
            if fresh:
                conn.timeout = min(self.connect_timeout, remaining)
                conn.connect()
        except OSError as e:
            self._drop(address)
            raise _Unreachable(f"{shown}: cannot connect ({e.strerror or e})") from None
        assert conn.sock is not None
        conn.sock.settimeout(max(0.01, min(self.answer_timeout + extra, remaining)))
        headers = {"Content-Type": "application/json"}
        try:
            conn.request("POST", "/jsonrpc", body, headers)
            response = conn.getresponse()
            data = response.read()
        except TimeoutError:
            self._drop(address)
            raise _Lost(f"{shown}: no answer in time") from None
        except (http.client.HTTPException, OSError) as e:
            self._drop(address)
            if not fresh:  # a kept-alive connection the node had closed: resend on a new one
                try:
                    return self._rpc(address, method, params, remaining, extra)
                except _Unreachable as again:  # the first sending may still have arrived
                    raise _Lost(str(again)) from None
            if address not in self._spoke:
                raise _Unreachable(
                    f"{shown} closed the connection without an HTTP answer"
                    " (not a Leeky Raft HTTP port? the AMP client port is not this one)"
                ) from None
            raise _Lost(f"{shown}: connection lost ({e or type(e).__name__})") from None
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or "jsonrpc" not in answer:
            self._drop(address)
            raise _Unreachable(
                f"{shown} is not a Leeky Raft HTTP (JSON-RPC) port: it answered HTTP"
                f" {response.status} {response.reason}"
            ) from None
        self._spoke.add(address)
        if response.will_close:
            self._drop(address)
        error = answer.get("error")
        if error is None:
            return answer.get("result")
        raise _error_from(error)


def _error_from(error: Any) -> LeekyError:
    """Return the exception of a JSON-RPC error object."""
    if not isinstance(error, dict):
        return LeekyError(f"malformed error: {error!r:.200}")
    code, message = error.get("code"), str(error.get("message", ""))
    if code == -32000:
        data = error.get("data") or {}
        return NotLeader(data.get("leader_id"), data.get("leader_address"))
    cls = _ERRORS.get(code)  # type: ignore[arg-type]
    if cls is not None:
        return cls(message)
    return LeekyError(f"{message} (JSON-RPC error {code})")


# ------------------------------------------------------------------- watch


class Watch:
    """An iterator of :class:`Event`: every modification of the watched keys from the
    start revision, each exactly once and in revision order.

    It long-polls any node (``watch`` over JSON-RPC) and remembers
    ``next_revision``; when a node dies or is unreachable it asks the next
    node from that revision, so nothing is missed or repeated. Iteration
    blocks until an event comes; :meth:`close` (or leaving a ``with``) ends
    it. :meth:`poll` returns what came within ``wait`` seconds (maybe
    nothing). Compacted when the revision is older than every node's window.
    """

    def __init__(
        self,
        client: BlockingClient,
        key: str,
        prefix: bool,
        end: str | None,
        start_revision: int | None,
        poll_wait: float,
    ) -> None:
        if not 0 < poll_wait <= MAX_POLL_WAIT:
            raise ValueError(f"poll_wait must be from 0 to {MAX_POLL_WAIT:g} seconds")
        self.client = client
        self.key = key
        self.prefix = prefix
        self.end = end
        #: every matching event below this revision has been returned (None: not started)
        self.next_revision = start_revision or None
        self.poll_wait = poll_wait
        self.closed = False
        #: the node the watch polls (any node serves watches); it moves on when that one fails
        self.node: Address | None = None
        self._held: deque[Event] = deque()

    def poll(self, wait: float | None = None) -> list[Event]:
        """Return the events that come within ``wait`` seconds (default ``poll_wait``)."""
        if self._held:
            events = list(self._held)
            self._held.clear()
            return events
        wait = self.poll_wait if wait is None else min(max(wait, 0.0), MAX_POLL_WAIT)
        options: dict[str, Any] = {"prefix": self.prefix, "wait": wait, "limit": 1000}
        if self.end is not None:
            options["end"] = self.end
        if self.next_revision is not None:
            options["from_revision"] = self.next_revision
        client = self.client
        found = client._attempt(
            "watch",
            [self.key, options],
            write=False,
            deadline=time.monotonic() + client.timeout + wait,
            any_node=True,
            extra_wait=wait,
            first=self.node,
        )
        self.node = client._local.answered_by
        try:
            events = [_event(e) for e in found["events"]]
            next_revision = int(found["next_revision"])
        except (KeyError, TypeError, ValueError) as e:
            raise LeekyError(f"the node sent a malformed watch answer: {e!r:.200}") from None
        if self.next_revision is not None:  # never twice, whatever a node sends
            events = [e for e in events if e.revision >= self.next_revision]
        if self.next_revision is None or next_revision > self.next_revision:
            self.next_revision = next_revision
        return events

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self._held:  # each pass is one bounded long poll
            if self.closed:
                raise StopIteration
            self._held.extend(self.poll())
        return self._held.popleft()

    def close(self) -> None:
        """End the iteration (after the current poll, when called from another thread)."""
        self.closed = True

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -------------------------------------------------------------------- lock


class _LockSession:
    """One lease of ``ttl`` seconds that a client's locks share (as ``client.recipes.Session``).

    Granted at the first acquisition, kept alive every ttl/3 by a daemon
    thread until the lease is found gone or :meth:`BlockingClient.end_lock_sessions`.
    """

    def __init__(self, client: BlockingClient, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self.lease = 0
        self.ended = False
        self.held: set[Lock] = set()
        self.names: set[str] = set()
        self._grant = threading.Lock()
        self._stop = threading.Event()
        #: until when (time.monotonic) the lease is known live; then it may be gone
        self.held_until = 0.0
        self._expiry: threading.Timer | None = None
        self._timing = threading.Lock()

    def lease_id(self) -> int:
        """Return the lease, granting it (and starting its keepalives) the first time."""
        with self._grant:
            if not self.lease:
                sent = time.monotonic()
                self.lease = self.client.lease_grant(self.ttl)
                self._live_until(sent + self.ttl)
                keeper = threading.Thread(
                    target=self._keep, name=f"lock session {self.lease}", daemon=True
                )
                keeper.start()
            return self.lease

    def _keep(self) -> None:
        interval = max(self.ttl / 3, 0.2)
        try:
            while not self._stop.wait(interval):  # ends with the session
                sent = time.monotonic()
                try:
                    ttl = self.client.lease_keepalive(self.lease)
                except InvalidRequest as e:
                    self.end(f"lease {self.lease} is gone: {e}")
                    return
                except LeekyError:
                    continue  # the cluster is busy or changing leader: again next interval
                self._live_until(sent + min(ttl, self.ttl))
        finally:
            self.client.close()  # this thread's connections

    def _live_until(self, when: float) -> None:
        """The lease is known live until ``when`` (counted from the keepalive's sending,
        the leader counts from its arrival): past it, end the session unless renewed."""
        with self._timing:
            if self.ended or when <= self.held_until:
                return
            self.held_until = when
            if self._expiry is not None:
                self._expiry.cancel()
            delay = max(when - time.monotonic(), 0.0)
            self._expiry = threading.Timer(delay, self._may_have_expired)
            self._expiry.daemon = True
            self._expiry.start()

    def _may_have_expired(self) -> None:
        if self.ended or time.monotonic() < self.held_until:
            return  # renewed meanwhile
        self.give_up(
            f"no keepalive of lease {self.lease} was answered for {self.ttl} s, "
            "so the lease may have expired (is the cluster reachable?)"
        )

    def end(self, reason: str) -> None:
        """The lease is gone, or given up: every lock held through it is lost."""
        self.ended = True
        self._stop.set()
        with self._timing:
            if self._expiry is not None:
                self._expiry.cancel()
        with self.client._lock:
            if self.client._lock_sessions.get(self.ttl) is self:
                del self.client._lock_sessions[self.ttl]
        for lock in list(self.held):
            lock._lost(reason)
        self.held.clear()

    def give_up(self, reason: str) -> None:
        """End the session and revoke its lease if the cluster lets us (else it expires)."""
        self.end(reason)
        if self.lease:
            with contextlib.suppress(LeekyError):
                self.client.lease_revoke(self.lease)


class Lock:
    """The lock ``name`` (as ``client.recipes``): a key on the client's session lease,
    a watch on the predecessor.

    :meth:`acquire` puts ``NAME/<lease id>`` on the client's session lease of
    ``ttl`` seconds (granted once per client and ttl, kept alive by a thread
    every ttl/3) and reads the queue, in one transaction, and holds the lock
    once no key under ``NAME/`` is older. Until then it watches only its
    predecessor's key for a delete (no polling; a release wakes one waiter).
    :meth:`release` deletes the key: a cycle is two log writes. ``token`` is
    the fencing token (the key's create revision): pass it with every
    protected write, and have the protected store refuse tokens lower than one
    it has seen. ``lost`` is set if a keepalive finds the lease gone: stop
    acting then. One client holds or awaits a given lock name once at a time.
    """

    def __init__(self, client: BlockingClient, name: str, ttl: int = 10, value: str = "") -> None:
        if not isinstance(name, str) or not name or "\0" in name:
            raise InvalidRequest("a lock name must be a non-empty string without NUL")
        self.client = client
        self.name = name
        self.ttl = ttl
        self.value = value
        self.lease = 0
        self.key = ""
        self.token = 0
        #: set when the lease was found gone while held (the reason is in ``lost_reason``)
        self.lost = threading.Event()
        self.lost_reason = ""
        self._session: _LockSession | None = None
        self._released = False

    def _lost(self, reason: str) -> None:
        if self._session is not None:
            self._session.names.discard(self.name)
        self.lost_reason = reason
        self.lost.set()

    def acquire(self, timeout: float | None = None) -> Lock:
        """Wait for the lock (at most ``timeout`` seconds: then TimeoutError); return self."""
        deadline = None if timeout is None else time.monotonic() + timeout
        client = self.client
        for attempt in range(3):
            session = client._lock_session(self.ttl)
            with client._lock:
                if self.name in session.names:
                    raise InvalidRequest(
                        f"this client already holds or awaits the lock {self.name!r};"
                        " release it first (or take it through another client)"
                    )
                session.names.add(self.name)
            try:
                lease = session.lease_id()
                listing = self._create(session, lease)
            except InvalidRequest as e:
                session.names.discard(self.name)
                if not session.lease or f"lease {session.lease} not found" not in str(e):
                    raise
                session.end(f"lease {session.lease} is gone: {e}")  # expired unnoticed
                if attempt == 2:
                    raise
                continue
            except LeekyError as e:
                session.names.discard(self.name)
                session.give_up(f"the creation of a key under {self.name}/ failed: {e}")
                raise
            self._session, self.lease = session, lease
            self.key = f"{self.name}/{lease:016x}"
            self._released = False
            self.lost.clear()
            try:
                self._wait_turn(listing, deadline)
            except BaseException:
                session.names.discard(self.name)
                if not session.ended:
                    try:
                        client.delete(self.key)
                    except LeekyError as e:
                        session.give_up(f"withdrawing {self.key} failed: {e}")
                raise
            session.held.add(self)
            return self
        raise AssertionError("unreachable")

    def _create(self, session: _LockSession, lease: int) -> RangeResult:
        key = f"{self.name}/{lease:016x}"
        put = {"type": "put", "key": key, "value": self.value, "lease": lease}
        created = self.client.txn(
            [{"key": key, "target": "create", "op": "==", "value": 0}],
            [put, {"type": "range", "prefix": self.name + "/", "keys_only": True}],
        )
        if not created.succeeded:
            raise InvalidRequest(f"lock key {key} exists already (written by another program?)")
        listing = created.responses[1]
        if not isinstance(listing, RangeResult):
            raise LeekyError(f"the lock transaction answered {listing!r:.80} for its range")
        if listing.more:  # more waiters than a transaction reads
            listing = self.client.range_prefix(self.name + "/", keys_only=True)
        return listing

    def _wait_turn(self, listing: RangeResult, deadline: float | None) -> None:
        while True:  # each pass waits for one predecessor to go
            mine = next((kv for kv in listing.kvs if kv.key == self.key), None)
            if mine is None:
                raise LeekyError(f"lock key {self.key} vanished: lease {self.lease} expired")
            self.token = mine.create_revision
            older = [kv for kv in listing.kvs if kv.create_revision < self.token]
            if not older:
                return
            predecessor = max(older, key=lambda kv: kv.create_revision)
            self._wait_deleted(predecessor.key, listing.revision + 1, deadline)
            # A node's own state decides (older keys only go) once it holds our key.
            listing = self.client.range_prefix(self.name + "/", keys_only=True, stale=True)
            if listing.revision < self.token:
                listing = self.client.range_prefix(self.name + "/", keys_only=True)

    def _wait_deleted(self, key: str, from_revision: int, deadline: float | None) -> None:
        watch = self.client.watch(key, start_revision=from_revision)
        while True:
            session = self._session
            if session is not None and session.ended:
                raise LeekyError(f"lock {self.name}: the session lease {self.lease} is gone")
            wait = watch.poll_wait
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError(f"lock {self.name} not acquired in time")
                wait = min(wait, watch.poll_wait)
            if any(e.kind == "delete" for e in watch.poll(wait)):
                return

    def release(self) -> None:
        """Give the lock up: delete its key (the next waiter wakes).

        Nothing to do once lost. When the delete cannot be committed, the
        session is given up (its lease expires, the key with it) and the
        error is raised.
        """
        session = self._session
        if session is None or self._released or self.lost.is_set():
            return
        self._released = True
        session.held.discard(self)
        try:
            self.client.delete(self.key)
        except LeekyError as e:
            session.give_up(f"the release of {self.key} failed: {e}")
            raise
        finally:
            session.names.discard(self.name)

    def __enter__(self) -> Lock:
        return self if self.token and not self._released else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
