"""The applier of a node whose state machine is a remote executor process.

Committed entries go to the executor through an
:class:`~leeky_twisted.statemachine.remote.ExecutorFeed`, in order, at its
pace; the request waiting on an entry is answered when the executor's outcome
comes back. A leader whose executor stops answering refuses new requests and
hands leadership on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from leeky_twisted.core.messages import Entry, EntryKind, Role, SnapshotMeta
from leeky_twisted.interfaces import ExecutorStatus, IStateMachine
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    InvalidRequest,
    LeekyError,
    NotCommitted,
    Unavailable,
)
from leeky_twisted.protocol.executor_wire import COMMAND_REJECTED
from leeky_twisted.server.snapshots import decode_snapshot, encode_snapshot
from leeky_twisted.statemachine.remote import (
    CommandFailed,
    ExecutorFeed,
    ExecutorRemoteError,
    ExecutorUnavailable,
    ResultUnknown,
)

if TYPE_CHECKING:
    from leeky_twisted.server.node import RaftNode
    from leeky_twisted.server.snapshots import Snapshots

log = Logger()


class ExecutorApplier:
    """Apply entries through a remote executor (an IAsyncStateMachine)."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.feed: ExecutorFeed | None = None
        self._node: RaftNode | None = None
        self._base_snapshot: tuple[int, bytes] | None = None
        self._handoff_at = -1e18  #: when leadership was last handed on for it
        self._entry_terms: dict[int, int] = {}  # NORMAL entries waiting on the executor

    def _bound(self) -> tuple[RaftNode, ExecutorFeed]:
        assert self._node is not None and self.feed is not None
        return self._node, self.feed

    def attach(self, node: RaftNode) -> None:
        """Feed ``node``'s committed entries to the executor."""
        self._node = node
        self.feed = ExecutorFeed(
            node.reactor,
            self.executor,
            self._applied,
            fetch=self._fetch,
            snapshot_source=self._latest_snapshot_state,
        )

    def local_state_machine(self) -> IStateMachine | None:
        """Return None: another process holds the state."""
        return None

    def restore_base(self, index: int, state: bytes) -> None:
        """Keep the snapshot to hand to the executor at start."""
        self._base_snapshot = (index, state)

    def start(self) -> None:
        """Start the feed from the recovered snapshot."""
        _, feed = self._bound()
        feed.start(base_snapshot=self._base_snapshot)
        self._base_snapshot = None

    def stop(self) -> Deferred[None]:
        """Stop the feed, then close the executor's connection."""
        _, feed = self._bound()
        d: Deferred[Any] = feed.stop()
        d.addCallback(lambda _: self.executor.close())
        d.addCallback(lambda _: None)
        return d

    # ------------------------------------------------------------- health

    def refusal(self) -> Unavailable | None:
        """The error for a request this leader cannot serve: its executor is down."""
        node, feed = self._bound()
        if node.core.role is not Role.LEADER:
            return None
        stalled = feed.stalled_for()
        if stalled < node.settings.executor_down_after:
            return None
        why = feed.last_error or "no answer"
        return Unavailable(
            f"executor down: this leader's executor has not answered for {stalled:.1f}s "
            f"({why}); leadership moves to another voter if one can take it, retry"
        )

    def tick(self) -> None:
        """While this leader's executor is down, hand leadership to another voter.

        A leader whose executor does not apply can commit but answer nobody:
        clients would only see timeouts. The best-placed voter (recently heard
        from, longest log) takes over; the core brings it up to date first. Its
        executor's health is not known here: if it is down too, that node hands
        leadership on in its turn. At most one attempt per ``executor_down_after``.
        """
        node, feed = self._bound()
        core = node.core
        if core.role is not Role.LEADER or core.transferee is not None:
            return
        down_after = node.settings.executor_down_after
        if feed.stalled_for() < down_after:
            return
        pending = node.pending
        for index in [i for i in pending.waiters if i in self._entry_terms]:  # committed
            term = self._entry_terms.pop(index)
            if pending.waiters[index].term != term:
                pending.fail_waiter(index, NotCommitted(f"entry {index} was replaced"))
                continue
            pending.fail_waiter(
                index,
                CommitTimeout(
                    f"entry {index} is committed, but this leader's executor is down: it is "
                    "applied once the executor is back; its result is unknown"
                ),
            )
        now = node.reactor.seconds()
        if now - self._handoff_at < down_after:
            return
        candidates = [
            (pr.match, nid)
            for nid, pr in core.progress.items()
            if nid != node.node_id and nid in core.configuration.voters and pr.recent_active
        ]
        if not candidates:
            return  # none heard from lately (or a single voter): clients get Unavailable
        self._handoff_at = now
        _, target = max(candidates)
        log.warn("executor down: handing leadership to {target}", target=target)
        try:
            node.transfer_leadership(target)
        except (LeekyError, ValueError) as e:
            log.warn("could not hand leadership on: {why}", why=str(e))

    # -------------------------------------------------------------- apply

    def apply(self, entry: Entry) -> None:
        """Remember the term of an entry a request waits on; the feed applies it."""
        node, _ = self._bound()
        if entry.index in node.pending.waiters:
            self._entry_terms[entry.index] = entry.term  # answered by _applied

    def committed(self, entries: Sequence[Entry]) -> None:
        """Queue the committed entries for the executor (non-NORMAL ones as gaps)."""
        _, feed = self._bound()
        if entries:
            normal = EntryKind.NORMAL
            feed.enqueue((e.index, e.data if e.kind is normal else None) for e in entries)

    def _applied(self, index: int, outcome: object) -> None:
        """Answer the request waiting on ``index`` with the executor's outcome."""
        node, _ = self._bound()
        waiters = node.pending.waiters
        term = self._entry_terms.pop(index, None)
        w = waiters.get(index)
        if w is not None and term is not None:
            del waiters[index]
            if w.term != term:
                w.deferred.errback(NotCommitted())
            elif isinstance(outcome, CommandFailed):
                w.deferred.errback(InvalidRequest(str(outcome)))
            elif isinstance(outcome, ResultUnknown):
                w.deferred.errback(CommitTimeout(f"executor outcome unknown: {outcome}"))
            else:
                w.deferred.callback(outcome)
        node.serve_reads()

    def _fetch(self, lo: int, hi: int) -> list[tuple[int, bytes | None]]:
        """Return committed entries lo <= index < hi for the feed."""
        node, _ = self._bound()
        hi = min(hi, node.core.commit + 1)
        return [
            (e.index, e.data if e.kind is EntryKind.NORMAL else None)
            for e in node.core.log.slice(lo, hi)
        ]

    # -------------------------------------------------------------- reads

    def read_ready(self, index: int) -> None:
        """Serve the node's reads once the executor has applied ``index``."""
        node, feed = self._bound()
        feed.wait_applied(index).addBoth(lambda _: node.serve_reads())

    def readable_index(self, applied: int) -> int:
        """Return the index the executor has applied."""
        _, feed = self._bound()
        return feed.applied_index

    def query(self, request: object) -> Deferred[Any]:
        """Ask the executor; its refusals and absence become clear errors."""

        def unavailable(f: Failure) -> Failure:
            e = f.value
            if isinstance(e, ExecutorUnavailable):
                raise Unavailable(f"this node's executor cannot answer: {e}")
            if isinstance(e, ExecutorRemoteError) and e.code == COMMAND_REJECTED:
                raise InvalidRequest(e.message)  # the executor refused the query itself
            return f

        return self.executor.query(request).addErrback(unavailable)  # type: ignore[no-any-return]

    def answer_into(self, request: object, d: Deferred[Any]) -> None:
        """Ask the executor; fire ``d`` with what :meth:`query` gives."""
        self.query(request).chainDeferred(d)

    # ---------------------------------------------------------- snapshots

    def install(self, index: int, state: bytes) -> None:
        """Hand a received snapshot to the executor."""
        _, feed = self._bound()
        feed.install_snapshot(index, state)

    def capture(self) -> Iterator[bytes] | None:
        """Return None: the state is in another process."""
        return None

    def take_snapshot(self, snapshots: Snapshots, base: int) -> None:
        """Snapshot the executor's state at the index it has applied."""
        node, feed = self._bound()
        if not snapshots.due(feed.applied_index, base):
            return
        snapshots.begin()
        d = feed.snapshot()

        def taken(result: tuple[int, bytes]) -> None:
            index, state = result
            core = node.core
            if index <= base or index > core.applied or index < core.log.start:
                snapshots.abandon()
                return
            meta = core.snapshot_meta_at(index)
            snapshots.write(meta, [encode_snapshot(node.addresses.as_dict(), state)])

        def failed(f: Failure) -> None:
            snapshots.abandon()
            log.info("executor snapshot not taken: {why}", why=f.getErrorMessage())

        d.addCallbacks(taken, failed)

    def compaction_limit(self, upto: int, kept: int) -> int:
        """Never compact past what the feed may still read back."""
        _, feed = self._bound()
        return max(min(upto, feed.applied_index - kept), 0)

    def _latest_snapshot_state(self) -> Deferred[tuple[int, bytes] | None]:
        """Fire with the newest durable snapshot's (index, state), read on the disk thread."""
        node, _ = self._bound()
        store = node.snapshot_store

        def read() -> tuple[int, bytes] | None:
            meta = store.latest()
            if meta is None:
                return None
            assert isinstance(meta, SnapshotMeta)
            _, state = decode_snapshot(store.open(meta.index))
            return meta.index, state

        return node.on_disk(read)

    def status(self) -> ExecutorStatus | None:
        """Return the feed's figures."""
        _, feed = self._bound()
        return ExecutorStatus(
            applied_index=feed.applied_index,
            lag=feed.lag,
            reachable=feed.reachable,
            failures=feed.failures,
            error=feed.last_error,
        )
