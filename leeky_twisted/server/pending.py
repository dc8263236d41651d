"""Requests waiting on the log: proposals by index, reads by id, and their deadlines.

Every request ends in a result, a clear error, or "timed out, outcome unknown":
the node registers each one here with its deadline, answers it when its entry
is applied (or its read is served), and sweeps the deadlines once per tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from leeky_twisted.protocol.errors import CommitTimeout, NotCommitted, Unavailable


@dataclass
class Waiter:
    """A proposal waiting for its entry to be applied, in the term it was proposed."""

    term: int
    deferred: Deferred[Any]


class PendingRequests:
    """The proposals and linearizable reads a node has not answered yet."""

    def __init__(self) -> None:
        #: proposals by log index
        self.waiters: dict[int, Waiter] = {}
        #: linearizable reads by read id: (request, deferred)
        self.reads: dict[int, tuple[object, Deferred[Any]]] = {}
        # (deadline, is_read, index or read id, deferred), in arrival order
        self._deadlines: deque[tuple[float, bool, int, Deferred[Any]]] = deque()
        #: (index, read id) of reads the core has made safe, waiting for apply
        self.ready_reads: list[tuple[int, int]] = []
        self._read_seq = 0

    # -------------------------------------------------------------- proposals

    def wait_for(self, index: int, term: int, deadline: float) -> Deferred[Any]:
        """Return a Deferred answered when ``index`` is applied, or at ``deadline``.

        An older request waiting on the same index (proposed in an earlier
        term, since replaced) is told so.
        """
        d: Deferred[Any] = Deferred()
        self.fail_waiter(index, NotCommitted(f"entry {index} was replaced by a new leader"))
        self.waiters[index] = Waiter(term, d)
        self._deadlines.append((deadline, False, index, d))
        return d

    def answer(self, index: int, term: int, result: object) -> None:
        """Answer the proposal waiting on the entry at ``index`` of ``term``, if any.

        A waiter of another term learns its entry was replaced; an exception
        as ``result`` fails it.
        """
        w = self.waiters.pop(index, None)
        if w is None:
            return
        if w.term != term:
            w.deferred.errback(NotCommitted(f"entry {index} was replaced by a new leader"))
        elif isinstance(result, Exception):
            w.deferred.errback(result)
        else:
            w.deferred.callback(result)

    def fail_waiter(self, index: int, error: Exception) -> None:
        """Fail the proposal waiting on ``index``, if any."""
        w = self.waiters.pop(index, None)
        if w is None:
            return
        w.deferred.errback(error)

    # ------------------------------------------------------------------ reads

    def next_read_id(self) -> int:
        """Return a new read id (the context of a ReadIndex request)."""
        self._read_seq += 1
        return self._read_seq

    def add_read(self, ctx: int, request: object, deadline: float) -> Deferred[Any]:
        """Return a Deferred answered when read ``ctx`` is served, or at ``deadline``."""
        d: Deferred[Any] = Deferred()
        self.reads[ctx] = (request, d)
        self._deadlines.append((deadline, True, ctx, d))
        return d

    def read_ready(self, index: int, ctx: int) -> None:
        """Note that read ``ctx`` may be served once ``index`` is applied."""
        self.ready_reads.append((index, ctx))

    def serve_reads(
        self, applied: int, answer_into: Callable[[object, Deferred[Any]], None]
    ) -> None:
        """Answer every safe read whose index ``applied`` reaches.

        ``answer_into(request, d)`` fires the read's Deferred ``d`` with the answer.
        """
        if not self.ready_reads:
            return
        keep = []
        for index, ctx in self.ready_reads:
            if index > applied:
                keep.append((index, ctx))
                continue
            entry = self.reads.pop(ctx, None)
            if entry is None:
                continue
            request, d = entry
            answer_into(request, d)
        self.ready_reads = keep

    def fail_read(self, ctx: int, error: Exception) -> None:
        """Fail read ``ctx``, if it still waits."""
        entry = self.reads.pop(ctx, None)
        if entry is None:
            return
        _, d = entry
        d.errback(error)

    # -------------------------------------------------------------- deadlines

    def expire(self, now: float) -> None:
        """Fail requests past their deadline with "timed out, outcome unknown".

        Deadlines are checked once per tick (cheaper than a timer per request),
        so a request may outlive its timeout by up to one tick.
        """
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, is_read, key, d = deadlines.popleft()
            if is_read:
                self.fail_read(key, CommitTimeout())
            else:
                w = self.waiters.get(key)
                if w is not None and w.deferred is d:  # not a later request at that index
                    self.fail_waiter(key, CommitTimeout())

    def fail_all(self, read_error: str) -> None:
        """Fail every waiting proposal (outcome unknown) and read (the node stops)."""
        for index in list(self.waiters):
            self.fail_waiter(index, CommitTimeout("node stopped; outcome unknown"))
        for ctx in list(self.reads):
            self.fail_read(ctx, Unavailable(read_error))
