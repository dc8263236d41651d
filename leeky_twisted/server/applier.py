"""Appliers: what turns a node's committed entries into results.

A node is given one applier when it is built: :class:`LocalApplier` runs the
in-process state machine; :class:`~leeky_twisted.server.executor_applier.ExecutorApplier`
feeds a remote executor process. The Ready loop calls the same methods on
either, so it never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from leeky_twisted.core.messages import Entry
from leeky_twisted.interfaces import ExecutorStatus, IStateMachine
from leeky_twisted.protocol.errors import Unavailable

if TYPE_CHECKING:
    from leeky_twisted.server.node import RaftNode
    from leeky_twisted.server.snapshots import Snapshots

log = Logger()


class Applier(Protocol):
    """Applies committed NORMAL entries and answers queries, for one node."""

    def attach(self, node: RaftNode) -> None:
        """Bind to ``node`` (once, before it recovers its state)."""

    def local_state_machine(self) -> IStateMachine | None:
        """Return the in-process state machine, or None when another process applies."""

    def restore_base(self, index: int, state: bytes) -> None:
        """Start from the snapshot state at ``index`` (the node recovers it at start)."""

    def start(self) -> None:
        """Start applying (the node starts ticking)."""

    def stop(self) -> Deferred[None]:
        """Stop; fire once every resource is released."""

    def tick(self) -> None:
        """Check health once per tick."""

    def refusal(self) -> Unavailable | None:
        """Return the error for a new request this node cannot serve now, or None."""

    def apply(self, entry: Entry) -> None:
        """Apply a committed NORMAL entry and answer the request waiting on it."""

    def committed(self, entries: Sequence[Entry]) -> None:
        """Note a batch of committed entries (of every kind), after they were applied."""

    def read_ready(self, index: int) -> None:
        """Note that a safe read waits for ``index`` to be applied."""

    def readable_index(self, applied: int) -> int:
        """Return the index reads see, given the node's ``applied`` index."""

    def query(self, request: object) -> Deferred[Any]:
        """Answer a read-only question from the applied state."""

    def answer_into(self, request: object, d: Deferred[Any]) -> None:
        """Answer a read-only question into ``d`` (a safe read being served)."""

    def install(self, index: int, state: bytes) -> None:
        """Replace the applied state with a received snapshot's, at ``index``."""

    def capture(self) -> Iterator[bytes] | None:
        """Capture the state now, as pieces to serialize; None when not in process."""

    def take_snapshot(self, snapshots: Snapshots, base: int) -> None:
        """Start a snapshot (one is due, the last one is at ``base``)."""

    def compaction_limit(self, upto: int, kept: int) -> int:
        """Return how far the log may be compacted, at most ``upto``."""

    def status(self) -> ExecutorStatus | None:
        """Return the remote executor's figures, or None."""


class LocalApplier:
    """Apply entries to an in-process, deterministic state machine."""

    def __init__(self, state_machine: IStateMachine) -> None:
        self.state_machine = state_machine
        self._node: RaftNode | None = None

    def attach(self, node: RaftNode) -> None:
        """Answer the requests of ``node``."""
        self._node = node

    def local_state_machine(self) -> IStateMachine | None:
        """Return the state machine."""
        return self.state_machine

    def restore_base(self, index: int, state: bytes) -> None:
        """Restore the state machine."""
        self.state_machine.restore(state)

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> Deferred[None]:
        """Nothing to release."""
        return defer.succeed(None)

    def tick(self) -> None:
        """Nothing to check."""

    def refusal(self) -> Unavailable | None:
        """Never refuse: the state machine is always there."""
        return None

    def apply(self, entry: Entry) -> None:
        """Apply ``entry``; a state machine that raises fails its request."""
        result: Any
        try:
            result = self.state_machine.apply(entry.index, entry.data)
        except Exception as exc:
            log.failure("state machine failed on entry {index}", index=entry.index)
            result = exc
        assert self._node is not None
        self._node.pending.answer(entry.index, entry.term, result)

    def committed(self, entries: Sequence[Entry]) -> None:
        """Nothing more to do: each entry was applied."""

    def read_ready(self, index: int) -> None:
        """Nothing to wait for: the node serves reads after each apply."""

    def readable_index(self, applied: int) -> int:
        """Return ``applied``: the state machine reflects it."""
        return applied

    def query(self, request: object) -> Deferred[Any]:
        """Ask the state machine."""
        return defer.maybeDeferred(self.state_machine.query, request)

    def answer_into(self, request: object, d: Deferred[Any]) -> None:
        """Ask the state machine and fire ``d`` with its answer (or its exception).

        The same outcome as ``query(request).chainDeferred(d)``, without the
        intermediate Deferred: a read served on the leader's hot path.
        """
        try:
            result = self.state_machine.query(request)
        except Exception:
            d.errback()
            return
        if isinstance(result, Deferred):
            result.chainDeferred(d)
        else:
            d.callback(result)

    def install(self, index: int, state: bytes) -> None:
        """Restore the state machine."""
        self.state_machine.restore(state)

    def capture(self) -> Iterator[bytes] | None:
        """Return the state's pieces (its ``snapshot_chunks`` when it has them)."""
        chunks = getattr(self.state_machine, "snapshot_chunks", None)
        pieces: Iterator[bytes] = (
            iter(chunks()) if chunks is not None else iter([self.state_machine.snapshot()])
        )
        return pieces

    def take_snapshot(self, snapshots: Snapshots, base: int) -> None:
        """Snapshot the state at the applied index."""
        snapshots.snapshot_now()

    def compaction_limit(self, upto: int, kept: int) -> int:
        """Return ``upto``: nothing reads the log back."""
        return upto

    def status(self) -> ExecutorStatus | None:
        """Return None: no executor."""
        return None
