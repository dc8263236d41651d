"""The state machine in a separate process, reached over JSON-RPC.

Two parts, both asynchronous:

:class:`RemoteStateMachineExecutor`
    The JSON-RPC client (treq) of one executor process (protocol:
    :mod:`leeky_twisted.protocol.executor_wire`; example server:
    :mod:`leeky_twisted.executor`). It provides :class:`IAsyncStateMachine`.

:class:`ExecutorFeed`
    What the node drives instead of calling ``IStateMachine.apply``: it takes
    committed entries as they come (:meth:`ExecutorFeed.enqueue`, never
    blocks), and delivers them to an :class:`IAsyncStateMachine` in index
    order, in batches, one call at a time, reporting each result through
    ``on_applied(index, result)``. Delivery is at least once: a batch whose
    answer was lost is sent again, and the executor, which keeps its last
    applied index durably, skips (and answers from its result cache) what it
    has applied already. At start, and after every failure, the feed asks the
    executor for its last applied index and resumes from there, so either side
    may restart at any time. While the executor cannot be reached the feed
    holds entries back and retries with exponential backoff; the node keeps
    replicating and committing meanwhile, and ``commit_index -
    applied_index`` (:attr:`ExecutorFeed.lag`) grows, then shrinks as the
    feed catches up.

Invariants the feed keeps:

- ``on_applied`` is called once per entry with data, in index order, never
  twice for one index (even when the executor is asked twice).
- :attr:`ExecutorFeed.applied_index` never passes an entry whose effect the
  executor has not confirmed; every entry at or below it is in the executor's
  state. Reads wait for it (:meth:`ExecutorFeed.wait_applied`).
- Only one call to the executor is in flight; snapshots and restores are
  ordered with the entries around them.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from leeky_twisted.protocol import executor_wire as wire

__all__ = [
    "CommandFailed",
    "ExecutorError",
    "ExecutorFeed",
    "ExecutorRemoteError",
    "ExecutorUnavailable",
    "IAsyncStateMachine",
    "RemoteStateMachineExecutor",
    "ResultUnknown",
]

log = Logger()


# ------------------------------------------------------------------ errors


class ExecutorError(Exception):
    """Base of the errors of a remote state machine."""


class ExecutorUnavailable(ExecutorError):
    """The executor could not be reached, or did not answer in time; try again."""


class ExecutorRemoteError(ExecutorError):
    """The executor answered the call with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"executor error {code}: {message}")
        self.code = code
        self.message = message


class CommandFailed(ExecutorError):
    """The state machine refused a committed command (the refusal is its result)."""


class ResultUnknown(ExecutorError):
    """The entry was applied, once, but its result is no longer known."""


# --------------------------------------------------------------- interface


class IAsyncStateMachine(Interface):
    """A state machine applied asynchronously (proposed for ``interfaces.py``).

    Like ``IStateMachine`` it must be deterministic. Unlike it, it keeps its
    own last applied index durably and skips entries at or below it, so
    delivering an entry more than once is safe.
    """

    def last_applied() -> Deferred[int]:
        """Fire with the index of the last entry whose effect is in the state (0: none)."""

    def apply_batch(entries: Sequence[tuple[int, bytes]]) -> Deferred[list[object]]:
        """Apply ``(index, command)`` pairs (strictly increasing indexes) in order.

        Fires once their effects are durable, with one outcome per entry: the
        command's result, or a :class:`CommandFailed` / :class:`ResultUnknown`
        instance (values, not failures). Errbacks with
        :class:`ExecutorUnavailable` when the outcome of the call is unknown
        (some, all or none may have been applied).
        """

    def query(request: object) -> Deferred[object]:
        """Answer a read-only request from the current state."""

    def snapshot() -> Deferred[tuple[int, bytes]]:
        """Fire with ``(last_applied, data)``: the whole state and the index it reflects."""

    def restore(index: int, data: bytes) -> Deferred[None]:
        """Replace the whole state by ``data`` taken at ``index``; durable when it fires."""


# ------------------------------------------------------------------ client


def _index(value: object, what: str) -> int:
    try:
        return wire.decode_index(value, what)
    except ValueError as e:
        raise ExecutorError(f"malformed answer from the executor: {e}") from None


def _outcome(item: object) -> object:
    if not isinstance(item, dict):
        raise ExecutorError(f"malformed result from the executor: {item!r:.100}")
    _index(item.get("index"), "a result's index")
    if "error" in item:
        return CommandFailed(str(item["error"]))
    if item.get("unknown"):
        return ResultUnknown(f"entry {item['index']} was applied earlier; its result is gone")
    return item.get("result")


@implementer(IAsyncStateMachine)
class RemoteStateMachineExecutor:
    """The JSON-RPC client of one executor process.

    :param url: the executor's JSON-RPC URL, e.g. ``http://127.0.0.1:7070/jsonrpc``.
    :param owner: the node this executor serves (``cluster/node``); the
        executor refuses calls from any other owner once bound.
    :param http: a ``treq.client.HTTPClient`` (or ``treq.testing.StubTreq``);
        by default one over a persistent connection pool on ``reactor``.
        Pass one built on a TLS-configured ``Agent`` for HTTPS.
    :param timeout: seconds before a call counts as failed (outcome unknown).
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        owner: str,
        *,
        http: Any = None,
        timeout: float = 10.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.reactor = reactor
        self.url = url
        self.owner = owner
        self.timeout = timeout
        self._pool: Any = None
        if http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent

            from leeky_twisted.protocol.httppool import quiet_http_pool

            self._pool = quiet_http_pool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 2
            http = HTTPClient(Agent(reactor, pool=self._pool))
        self._http = http
        self._ids = itertools.count(1)

    def close(self) -> Deferred[None]:
        """Close idle pooled connections."""
        if self._pool is None:
            return defer.succeed(None)
        d: Deferred[None] = self._pool.closeCachedConnections()
        return d

    def call(self, method: str, **params: Any) -> Deferred[Any]:
        """Call ``method`` with named ``params``; fire with its ``result``.

        Errbacks with ExecutorRemoteError for a JSON-RPC error and with
        ExecutorUnavailable when the executor cannot be reached, fails
        (HTTP 5xx), or does not answer within the timeout.
        """
        d = Deferred.fromCoroutine(self._call(method, params))
        d.addTimeout(self.timeout, self.reactor)

        def unavailable(failure: Any) -> Any:
            if failure.check(ExecutorError):
                return failure
            why = failure.getErrorMessage() or failure.type.__name__
            if failure.check(defer.TimeoutError, CancelledError):
                why = f"no answer within {self.timeout}s"
            raise ExecutorUnavailable(f"{method}: {why}")

        return d.addErrback(unavailable)

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        body = json.dumps(request, separators=(",", ":")).encode("utf-8")
        response = await self._http.post(
            self.url,
            data=body,
            headers={b"Content-Type": [b"application/json"]},
        )
        content = await response.content()
        if response.code >= 500:
            raise ExecutorUnavailable(f"{method}: HTTP {response.code}")
        try:
            answer = json.loads(content)
        except ValueError:
            raise ExecutorError(f"{method}: HTTP {response.code}, not JSON") from None
        if not isinstance(answer, dict):
            raise ExecutorError(f"{method}: malformed answer {answer!r:.100}")
        error = answer.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise ExecutorError(f"{method}: malformed error {error!r:.100}")
            code = error.get("code", 0)
            if not isinstance(code, int) or isinstance(code, bool) or not -(2**31) <= code < 2**31:
                raise ExecutorError(f"{method}: malformed error {error!r:.100}")
            raise ExecutorRemoteError(code, str(error.get("message", ""))[:1000])
        if "result" not in answer:
            raise ExecutorError(f"{method}: answer without a result")
        return answer["result"]

    # ---------------------------------------------------- IAsyncStateMachine

    def last_applied(self) -> Deferred[int]:
        """Fire with the executor's durable last applied index.

        Errbacks with ExecutorRemoteError (OWNER_MISMATCH) when the executor is
        bound to another owner: its index counts someone else's entries.
        """

        def pick(status: Any) -> int:
            if not isinstance(status, dict):
                raise ExecutorError(f"malformed status: {status!r:.100}")
            owner = status.get("owner")
            if owner is not None and owner != self.owner:
                # Its last_applied counts someone else's log: never position on it.
                message = f"this executor serves {str(owner)[:300]!r}, not {self.owner!r}"
                raise ExecutorRemoteError(wire.OWNER_MISMATCH, message)
            return _index(status.get("last_applied"), "last_applied")

        return self.call("status").addCallback(pick)

    def apply_batch(self, entries: Sequence[tuple[int, bytes]]) -> Deferred[list[object]]:
        """Send ``entries`` in one ``execute_batch`` call; fire with one outcome each."""
        encoded = [wire.encode_entry(i, c) for i, c in entries]

        def outcomes(answer: Any) -> list[object]:
            results = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(results, list) or len(results) != len(entries):
                raise ExecutorError("execute_batch answered the wrong number of results")
            out = [_outcome(r) for r in results]
            for (index, _), r in zip(entries, results, strict=True):
                if r["index"] != index:
                    raise ExecutorError(f"result for {r['index']} where {index} was expected")
            return out

        d = self.call("execute_batch", owner=self.owner, entries=encoded)
        return d.addCallback(outcomes)

    def execute(self, index: int, command: bytes) -> Deferred[object]:
        """Apply one command; fire with its result (errback CommandFailed when refused)."""

        def unwrap(outcomes: list[object]) -> object:
            (outcome,) = outcomes
            if isinstance(outcome, ExecutorError):
                raise outcome
            return outcome

        return self.apply_batch([(index, command)]).addCallback(unwrap)

    def query(self, request: object) -> Deferred[object]:
        """Answer a read-only request (a string such as ``READ f`` for the example)."""
        return self.call("query", request=request)

    def snapshot(self) -> Deferred[tuple[int, bytes]]:
        """Fire with ``(last_applied, data)`` of the whole state."""

        def unpack(answer: Any) -> tuple[int, bytes]:
            if not isinstance(answer, dict):
                raise ExecutorError(f"malformed snapshot answer: {answer!r:.100}")
            index = _index(answer.get("index"), "the snapshot's index")
            try:
                return index, wire.decode_snapshot_data(answer.get("data"))
            except ValueError as e:
                raise ExecutorError(str(e)) from None

        return self.call("snapshot").addCallback(unpack)

    def restore(self, index: int, data: bytes) -> Deferred[None]:
        """Replace the executor's state by ``data`` taken at ``index``."""
        d = self.call(
            "restore", owner=self.owner, index=index, data=wire.encode_snapshot_data(data)
        )
        return d.addCallback(lambda _: None)


# -------------------------------------------------------------------- feed


@dataclass
class _Control:
    """A snapshot or restore, run by the feed between batches."""

    kind: str  # "snapshot" | "restore"
    deferred: Deferred[Any]
    index: int = 0
    data: bytes = b""
    retry: bool = False  #: keep trying on failure (restore) or fail the caller (snapshot)


@dataclass(order=True)
class _Wait:
    index: int
    seq: int
    deferred: Deferred[None] = field(compare=False)


Fetch = Callable[[int, int], Sequence[tuple[int, bytes | None]]]
SnapshotState = tuple[int, bytes] | None  #: (index, data) of a snapshot, or None


class ExecutorFeed:
    """Deliver committed entries to an :class:`IAsyncStateMachine`, in order, at least once.

    :param on_applied: called as ``on_applied(index, outcome)`` once per
        entry with data, in index order; ``outcome`` is the result or a
        :class:`CommandFailed` / :class:`ResultUnknown` instance.
    :param fetch: ``fetch(lo, hi)`` returns the committed entries with
        ``lo <= index < hi`` as ``(index, data or None)`` pairs (the node reads
        its log); raises IndexError when they are compacted. With it, the feed
        keeps at most ``max_buffered`` entries in memory while the executor
        is away, and can repair an executor that lost its state.
    :param snapshot_source: returns (or fires with) the node's latest
        ``(index, data)`` snapshot, or None; used when the executor lost state
        the log no longer holds.
    """

    def __init__(
        self,
        reactor: Any,
        executor: IAsyncStateMachine,
        on_applied: Callable[[int, object], None],
        *,
        fetch: Fetch | None = None,
        snapshot_source: Callable[[], SnapshotState | Deferred[SnapshotState]] | None = None,
        max_batch: int = 256,
        max_buffered: int = 10_000,
        min_retry: float = 0.05,
        max_retry: float = 5.0,
    ) -> None:
        if max_batch < 1 or max_buffered < 1 or not 0 < min_retry <= max_retry:
            raise ValueError("max_batch, max_buffered and retry delays must be positive")
        self.reactor = reactor
        self.executor = executor
        self.on_applied = on_applied
        self.fetch = fetch
        self.snapshot_source = snapshot_source
        self.max_batch = max_batch
        self.max_buffered = max_buffered
        self.min_retry = min_retry
        self.max_retry = max_retry
        #: Every entry at or below this index is in the executor's state.
        self.applied_index = 0
        #: The highest committed index handed to :meth:`enqueue`.
        self.committed_index = 0
        #: False from a failed call until the next successful one.
        self.reachable = False
        #: Consecutive failed calls.
        self.failures = 0
        #: Why the last call failed, until one succeeds (for the node's status).
        self.last_error: str | None = None
        self._ok_at: float | None = None  # when a call last succeeded (or the feed started)
        self._call_at = 0.0  # when the call in flight was sent
        self._buffer: deque[tuple[int, bytes | None]] = deque()
        self._spill_from: int | None = None
        self._reported = 0
        self._confirmed = 0  # the highest index the executor said it has applied
        self._controls: deque[_Control] = deque()
        self._waits: list[_Wait] = []
        self._wait_seq = itertools.count()
        self._base: tuple[int, bytes] | None = None
        self._positioned = False
        self._handshaken = False
        self._stopped = False
        self._wake: Deferred[None] | None = None
        self._sleeping: Deferred[None] | None = None
        self._current: Deferred[Any] | None = None
        self._loop: Deferred[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self, base_snapshot: tuple[int, bytes] | None = None) -> None:
        """Start delivering.

        :param base_snapshot: the node's recovered snapshot ``(index, data)``:
            restored into the executor first if the executor is behind it.
        """
        if self._loop is not None:
            raise RuntimeError("already started")
        self._base = base_snapshot
        self._ok_at = self.reactor.seconds()
        if base_snapshot is not None:
            # Entries up to the snapshot are in it: the node will not replay them.
            self.committed_index = max(self.committed_index, base_snapshot[0])
        self._loop = Deferred.fromCoroutine(self._run())
        self._loop.addErrback(lambda f: log.failure("executor feed stopped by an error", f))

    def stop(self) -> Deferred[None]:
        """Stop delivering; cancel the call in flight; fail whoever waits."""
        self._stopped = True
        for d in (self._current, self._wake, self._sleeping):
            if d is not None and not d.called:
                d.cancel()
        gone = ExecutorUnavailable("the executor feed stopped")
        while self._controls:
            control = self._controls.popleft()
            if not control.deferred.called:
                control.deferred.errback(gone)
        waits, self._waits = self._waits, []
        for w in waits:
            w.deferred.errback(gone)
        if self._loop is None:
            return defer.succeed(None)
        return self._loop

    # ---------------------------------------------------------------- inputs

    def enqueue(self, entries: Iterable[tuple[int, bytes | None]]) -> None:
        """Take newly committed entries, in index order; never blocks.

        ``data`` is None for entries the executor never sees (configuration
        changes, no-ops): they only move :attr:`applied_index` along. Indexes
        at or below :attr:`committed_index` are ignored.
        """
        for index, data in entries:
            if index <= self.committed_index:
                continue
            self.committed_index = index
            if self._spill_from is not None:
                continue
            if self.fetch is not None and len(self._buffer) >= self.max_buffered:
                self._spill_from = index
                continue
            self._buffer.append((index, data))
        self._kick()

    def install_snapshot(self, index: int, data: bytes) -> Deferred[None]:
        """Replace the executor's state by the snapshot at ``index`` (from the leader).

        Entries at or below ``index`` still waiting are dropped (their outcome
        is ResultUnknown). The restore is retried until it succeeds; applying
        waits for it. Skipped when the executor is at or past ``index``.
        """
        d: Deferred[None] = Deferred()
        self._controls.append(_Control("restore", d, index, data, retry=True))
        self._kick()
        return d

    def snapshot(self) -> Deferred[tuple[int, bytes]]:
        """Fire with the executor's ``(last_applied, data)``, taken between two batches.

        Errbacks (no retry) when the executor cannot be reached: try later.
        """
        d: Deferred[tuple[int, bytes]] = Deferred()
        self._controls.append(_Control("snapshot", d))
        self._kick()
        return d

    def wait_applied(self, index: int) -> Deferred[None]:
        """Fire once :attr:`applied_index` reaches ``index`` (a ReadIndex read waits here)."""
        if self.applied_index >= index:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        heapq.heappush(self._waits, _Wait(index, next(self._wait_seq), d))
        return d

    # ---------------------------------------------------------------- status

    @property
    def lag(self) -> int:
        """Committed entries not applied yet."""
        return max(self.committed_index - self.applied_index, 0)

    def stalled_for(self) -> float:
        """Seconds the executor has kept the feed waiting: 0 while it answers.

        Counted from the last successful call while calls fail, and from the
        sending of the call in flight while one hangs (a paused executor
        fails nothing until its call times out). The node judges the
        executor down from this (``NodeSettings.executor_down_after``).
        """
        if self._ok_at is None or self._stopped:
            return 0.0
        now = float(self.reactor.seconds())
        if not self.reachable:
            return now - self._ok_at
        if self._current is not None:
            return now - self._call_at
        return 0.0

    def status(self) -> dict[str, Any]:
        """Return the feed's figures for the node's status (JSON-able)."""
        return {
            "executor_applied_index": self.applied_index,
            "executor_lag": self.lag,
            "executor_reachable": self.reachable,
            "executor_failures": self.failures,
            "executor_error": self.last_error,
        }

    # ------------------------------------------------------------------ loop

    def _kick(self) -> None:
        if self._wake is not None and not self._wake.called:
            wake, self._wake = self._wake, None
            wake.callback(None)

    def _has_work(self) -> bool:
        return bool(
            self._controls or self._buffer or self._spill_from is not None or not self._handshaken
        )

    async def _run(self) -> None:
        while not self._stopped:
            if not self._has_work():
                self._wake = Deferred()
                try:
                    await self._wake
                except CancelledError:
                    return
                continue
            try:
                if not self._handshaken:
                    await self._handshake()
                    if self._has_work():
                        # It answers; a failure streak ends only once a call that
                        # changes something succeeds (no fast loop on a refusal).
                        self.reachable = True
                        continue
                elif self._controls:
                    await self._run_control(self._controls[0])
                else:
                    await self._deliver()
            except Exception as e:
                if self._stopped:
                    return
                self._failed(e)
                try:
                    await self._sleep(self._delay())
                except CancelledError:
                    return
                continue
            self._succeeded()

    async def _executor_call(self, d: Deferred[Any]) -> Any:
        self._current = d
        self._call_at = self.reactor.seconds()
        try:
            return await d
        finally:
            self._current = None

    def _delay(self) -> float:
        return float(min(self.min_retry * 2 ** (self.failures - 1), self.max_retry))

    async def _sleep(self, seconds: float) -> None:
        self._sleeping = task.deferLater(self.reactor, seconds, lambda: None)
        try:
            await self._sleeping
        finally:
            self._sleeping = None

    def _failed(self, e: Exception) -> None:
        self.failures += 1
        self._handshaken = False
        self.last_error = str(e)
        if isinstance(e, ExecutorRemoteError) and e.code == wire.OWNER_MISMATCH:
            self.last_error = f"the executor refuses this node: {e.message}"
            if self.reachable or self.failures == 1:
                log.critical(
                    "the executor refuses this node ({why}): it is bound to another owner, "
                    "so its state was written by someone else (by hand, or another node) "
                    "and is not this node's log. Give this node its own executor with an "
                    "empty --data-dir: it catches up from the log or a snapshot. Retrying.",
                    why=e.message,
                )
        elif isinstance(e, ExecutorUnavailable):
            if self.reachable or self.failures == 1:
                log.warn(
                    "executor unreachable ({why}); holding back {lag} entries, retrying",
                    why=str(e),
                    lag=self.lag,
                )
        else:
            log.error("executor call failed: {why}; retrying", why=str(e))
        self.reachable = False

    def _succeeded(self) -> None:
        if self.failures:
            log.info(
                "executor reachable again after {n} failed calls; {lag} entries to apply",
                n=self.failures,
                lag=self.lag,
            )
        self.failures = 0
        self.last_error = None
        self.reachable = True
        self._ok_at = self.reactor.seconds()

    # ------------------------------------------------------------ handshake

    async def _handshake(self) -> None:
        """Learn where the executor is; resume from there (or repair it)."""
        index = await self._executor_call(self.executor.last_applied())
        if not self._positioned:
            base = self._base
            if base is not None and index < base[0]:
                log.info(
                    "executor at {index} is behind snapshot {snap}: restoring it",
                    index=index,
                    snap=base[0],
                )
                await self._executor_call(self.executor.restore(base[0], base[1]))
                index = base[0]
            self._positioned = True
            self._confirmed = index
            self._base = None
            log.info("executor resumes after index {index}", index=index)
            self._advance(index)
        elif index < self._confirmed:
            await self._repair(index)
        self._handshaken = True

    async def _repair(self, index: int) -> None:
        """The executor went back to ``index``: redeliver from there, or restore a snapshot."""
        log.error(
            "executor went back from {applied} to {index} (it lost durable state): repairing",
            applied=self._confirmed,
            index=index,
        )
        restart = index + 1
        try:
            if self.fetch is None:
                raise IndexError("no log to fetch from")
            self.fetch(restart, restart + 1)
        except IndexError:
            snap = None
            if self.snapshot_source is not None:
                snap = await defer.maybeDeferred(self.snapshot_source)
            if snap is None or snap[0] < index:
                log.critical(
                    "cannot repair the executor: entries after {index} are gone", index=index
                )
                return
            await self._executor_call(self.executor.restore(snap[0], snap[1]))
            restart = snap[0] + 1
        self.applied_index = self._confirmed = restart - 1
        self._buffer.clear()
        self._spill_from = restart if restart <= self.committed_index else None

    # -------------------------------------------------------------- controls

    async def _run_control(self, control: _Control) -> None:
        try:
            if control.kind == "snapshot":
                result: Any = await self._executor_call(self.executor.snapshot())
            else:
                if self.applied_index < control.index:
                    await self._executor_call(self.executor.restore(control.index, control.data))
                    self._confirmed = control.index
                self.committed_index = max(self.committed_index, control.index)
                self._advance(control.index)
                result = None
        except Exception as e:
            if control.retry or self._stopped:
                raise
            self._controls.popleft()
            control.deferred.errback(e)
            raise
        self._controls.popleft()
        control.deferred.callback(result)

    # -------------------------------------------------------------- entries

    def _refill(self) -> None:
        if self._buffer or self._spill_from is None:
            return
        assert self.fetch is not None
        lo = self._spill_from
        hi = min(lo + self.max_buffered, self.committed_index + 1)
        self._buffer.extend(self.fetch(lo, hi))
        self._spill_from = hi if hi <= self.committed_index else None

    async def _deliver(self) -> None:
        self._refill()
        self._drop_through(self.applied_index)
        if not self._buffer:
            return
        batch = list(itertools.islice(self._buffer, self.max_batch))
        send = [(i, d) for i, d in batch if d is not None]
        outcomes: list[object] = []
        if send:
            outcomes = await self._executor_call(self.executor.apply_batch(send))
            if len(outcomes) != len(send):
                raise ExecutorError("the executor answered the wrong number of outcomes")
            self._confirmed = max(self._confirmed, send[-1][0])
        for _ in batch:
            self._buffer.popleft()
        for (index, _), outcome in zip(send, outcomes, strict=True):
            self._report(index, outcome)
        self._advance(batch[-1][0])

    def _drop_through(self, index: int) -> None:
        """Drop waiting entries at or below ``index``: the executor has them already."""
        while self._buffer and self._buffer[0][0] <= index:
            i, data = self._buffer.popleft()
            if data is not None:
                self._report(i, ResultUnknown(f"entry {i} was applied before this feed started"))
        if self._spill_from is not None and self._spill_from <= index:
            nxt = index + 1
            self._spill_from = nxt if nxt <= self.committed_index else None

    def _report(self, index: int, outcome: object) -> None:
        if index <= self._reported:
            return
        self._reported = index
        try:
            self.on_applied(index, outcome)
        except Exception:
            log.failure("on_applied failed for entry {index}", index=index)

    def _advance(self, index: int) -> None:
        if index > self.applied_index:
            self.applied_index = index
        self._drop_through(self.applied_index)
        while self._waits and self._waits[0].index <= self.applied_index:
            heapq.heappop(self._waits).deferred.callback(None)
