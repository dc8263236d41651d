"""Where and in what order a node makes each Ready durable.

Blocking writes (append, hard state, fsync) run on the disk thread, one job
at a time, in order; a small write the reactor has nothing to overlap with
runs inline instead. The hard state goes first, held to what the durable log
backs, so a crash between two writes never leaves an impossible state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from leeky_twisted.core.messages import HardState, NodeId, Ready, Role
from leeky_twisted.interfaces import ILogStore, ISnapshotStore, IStableStore

if TYPE_CHECKING:
    from leeky_twisted.server.node import NodeSettings

#: writes bigger than this always go to the disk thread (see DiskWriter.inline)
INLINE_PERSIST_BYTES = 32 * 1024


def durable_part(hs: HardState) -> tuple[int, NodeId | None, bool, int]:
    """What of a hard state must be on disk before anything depending on it."""
    return hs.term, hs.voted_for, hs.abstaining, hs.storage_id


def _synchronous(fn: Callable[[], Any]) -> Deferred[Any]:
    return defer.maybeDeferred(fn)


class DiskWriter:
    """Make a node's Readies durable: snapshot, hard state and entries, in order.

    :param synced: the hard state known to be on disk at start.
    :param run_blocking: runs a job on the disk thread (default: at once).
    :param timer: times each write (default ``time.perf_counter``).
    :param on_persist: told ``(seconds, entries)`` of each write, on the disk thread.
    :param settings: the node's settings (``inline_persist_seconds``).
    :param stats: the node's counters; ``persists``, ``entries_persisted`` and
        ``persist_seconds`` are added to.
    """

    def __init__(
        self,
        log_store: ILogStore,
        stable_store: IStableStore,
        snapshot_store: ISnapshotStore,
        synced: HardState,
        stats: dict[str, Any],
        settings: NodeSettings,
        run_blocking: Callable[[Callable[[], Any]], Deferred[Any]] | None = None,
        timer: Callable[[], float] | None = None,
        on_persist: Callable[[float, int], None] | None = None,
    ) -> None:
        self._log_store = log_store
        self._stable_store = stable_store
        self._snapshot_store = snapshot_store
        #: the hard state on disk (its durable part)
        self.synced = synced
        self._stats = stats
        self._settings = settings
        self.run_blocking = run_blocking or _synchronous
        self.timer = timer or time.perf_counter
        self._on_persist = on_persist
        self._jobs = 0  #: jobs handed to the disk thread and not finished
        self._recent = 0.0  #: the slowest recent write, decaying (seconds)
        self._installing = b""  #: snapshot data read by the disk thread, to install

    def take_installed(self) -> bytes:
        """Return the data of the snapshot the last write stored, once."""
        data, self._installing = self._installing, b""
        return data

    def on_disk(self, job: Callable[[], Any]) -> Deferred[Any]:
        """Run ``job`` on the disk thread, counting it while it runs."""
        self._jobs += 1

        def finished(result: Any) -> Any:
            self._jobs -= 1
            return result

        return self.run_blocking(job).addBoth(finished)

    def inline(self, rd: Ready, leader: bool) -> bool:
        """Return True to write ``rd`` on the reactor thread, not the disk thread.

        ``leader``: this node leads. A trip to the disk thread and back costs two thread
        wake-ups, which on a busy machine is as long as a small fsync. It buys overlap
        only when the reactor has work to do meanwhile. A follower has none: its answer
        waits for this write, and entries arriving meanwhile are written together next
        time. Neither has a leader writing one entry, the low-load case where latency
        counts most. A leader's bigger batches go to the disk thread, so it keeps
        sending, reading requests and answering while the disk works, and so do big
        writes (over INLINE_PERSIST_BYTES), whose fsync is long enough to overlap the
        decoding of the next batch. Never inline while another disk job runs (the stores
        have one writer at a time), for a snapshot, or while recent writes were slow: a
        slow disk must not stall heartbeats and gossip.
        """
        budget = self._settings.inline_persist_seconds
        if budget <= 0 or self._jobs or rd.snapshot is not None:
            return False
        if self._recent > budget:
            return False
        if leader and len(rd.entries) > 1:
            return False
        size = 0
        for e in rd.entries:
            size += len(e.data)
        return size <= INLINE_PERSIST_BYTES

    def needs_disk(self, rd: Ready) -> bool:
        """Return True when the Ready has something that must be made durable.

        A change of the commit index alone is not fsynced (it is recovered from
        the leader after a restart), so it costs no trip to the disk thread.
        """
        if rd.entries or rd.snapshot is not None:
            return True
        hs = rd.hard_state
        return hs is not None and durable_part(hs) != durable_part(self.synced)

    def persist(self, rd: Ready) -> None:
        """Make the Ready's snapshot, entries and hard state durable (disk thread)."""
        started = self.timer()
        try:
            self.write(rd)
        finally:
            elapsed = self.timer() - started
            # Peak-hold with decay: one slow write moves the next ones to the
            # disk thread until about ten fast ones have passed.
            self._recent = max(elapsed, self._recent * 0.75)
            stats = self._stats
            stats["persists"] += 1
            stats["entries_persisted"] += len(rd.entries)
            stats["persist_seconds"] += elapsed
            on_persist = self._on_persist
            if on_persist is not None:
                on_persist(elapsed, len(rd.entries))

    def write(self, rd: Ready) -> None:
        """Make ``rd`` durable: snapshot, then hard state, then entries.

        The hard state goes first, so the saved term is never below the term
        of a stored entry (a crash between two writes leaves no entry of a
        term the node does not know it is in); its commit index is held to
        what the log already backs. Ending abstention waits for the entries
        that justify it, except for a new leader, whose election does.
        """
        if rd.snapshot is not None:
            # Read the installed snapshot here, on the disk thread, for the
            # node to restore on the reactor thread afterwards.
            self._installing = self._snapshot_store.open(rd.snapshot.index)
            self._log_store.reset(rd.snapshot.index + 1)
        hs = rd.hard_state
        synced = self.synced
        if hs is not None and durable_part(hs) != durable_part(synced):
            elected = rd.soft_state is not None and rd.soft_state.role is Role.LEADER
            # Backed already: entries before this batch's first one (those at and
            # past it may be an old leader's, about to be replaced).
            backed = self._log_store.last_index()
            if rd.entries:
                backed = min(backed, rd.entries[0].index - 1)
            ends_abstention = synced.abstaining and not hs.abstaining and not elected
            caught_up = 0
            if ends_abstention:
                # Say which entry ends it, so a crash before the last write
                # does not leave the node abstaining with that entry on disk.
                if rd.entries:
                    caught_up = rd.entries[-1].index
                elif rd.snapshot is not None:
                    caught_up = rd.snapshot.index
                else:
                    caught_up = self._log_store.last_index()
            first = HardState(
                hs.term,
                hs.voted_for,
                min(hs.commit, backed),
                hs.abstaining or ends_abstention,
                hs.storage_id,
                caught_up,
            )
            if durable_part(first) != durable_part(synced) or caught_up:
                self._stable_store.save(first)
                self.synced = synced = first
        if rd.entries:
            self._log_store.append(list(rd.entries))
        if hs is not None and durable_part(hs) != durable_part(synced):
            self._stable_store.save(hs)  # abstention ends once its entries are on disk
            self.synced = hs
