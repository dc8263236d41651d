"""In-memory stores: the reference implementations used by tests and simulations.

Each store holds a lock, so one writer thread may run beside reactor-thread
readers, as etcd's ``MemoryStorage`` does. Nothing here survives a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from zope.interface import implementer

from leeky_twisted.core.messages import Entry, HardState, SnapshotMeta
from leeky_twisted.interfaces import ILogStore, ISnapshotSink, ISnapshotStore, IStableStore
from leeky_twisted.storage.errors import StorageError, StoreClosedError
from leeky_twisted.storage.logrules import (
    check_append,
    check_max_bytes,
    check_next_index,
    check_range,
    check_snapshot_meta,
    hard_state_error,
)


@implementer(ILogStore)
class MemoryLogStore:
    """Keep log entries in a list; a fresh log is empty and starts at index 1."""

    def __init__(self) -> None:
        """Create an empty log."""
        self._lock = threading.Lock()
        self._first_index = 1
        self._entries: list[Entry] = []
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("MemoryLogStore is closed")

    def first_index(self) -> int:
        """Return the index of the first stored entry, or last_index()+1 when empty."""
        with self._lock:
            self._check_open()
            return self._first_index

    def last_index(self) -> int:
        """Return the index of the last stored entry, or first_index()-1 when empty."""
        with self._lock:
            self._check_open()
            return self._first_index + len(self._entries) - 1

    def term_at(self, index: int) -> int:
        """Return the term of the stored entry at ``index``; IndexError when not stored."""
        with self._lock:
            self._check_open()
            check_range(index, index + 1, self._first_index, self._last_locked())
            return self._entries[index - self._first_index].term

    def _last_locked(self) -> int:
        return self._first_index + len(self._entries) - 1

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Return entries with lo <= index < hi, in order.

        With ``max_bytes``, stop before the entry that would take the summed
        ``Entry.size()`` past it, but return at least one entry. Raise
        IndexError when part of the range is compacted or missing.
        """
        check_max_bytes(max_bytes)
        with self._lock:
            self._check_open()
            check_range(lo, hi, self._first_index, self._last_locked())
            base = self._first_index
            selected = self._entries[lo - base : hi - base]
        if max_bytes is None:
            return selected
        total = 0
        for count, entry in enumerate(selected):
            total += entry.size()
            if total > max_bytes and count > 0:
                return selected[:count]
        return selected

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``; an entry at index i replaces every stored entry >= i.

        Raise ValueError for non-consecutive indexes or a gap after
        last_index(); entries below first_index() are dropped as compacted.
        """
        with self._lock:
            self._check_open()
            batch = check_append(entries, self._first_index, self._last_locked())
            if not batch:
                return
            keep = batch[0].index - self._first_index
            del self._entries[keep:]
            self._entries.extend(batch)

    def compact(self, upto: int) -> None:
        """Drop entries with index <= ``upto``; an emptied log starts at ``upto + 1``."""
        check_next_index(max(upto, 0) + 1)
        with self._lock:
            self._check_open()
            if upto < self._first_index:
                return
            drop = upto - self._first_index + 1
            del self._entries[:drop]
            self._first_index = upto + 1

    def reset(self, next_index: int) -> None:
        """Drop every entry; the next appended entry will be ``next_index``."""
        check_next_index(next_index)
        with self._lock:
            self._check_open()
            self._entries = []
            self._first_index = next_index

    def close(self) -> None:
        """Mark the store closed; further calls raise StoreClosedError."""
        with self._lock:
            self._closed = True


@implementer(IStableStore)
class MemoryStableStore:
    """Keep the last saved HardState in memory."""

    def __init__(self, hard_state: HardState | None = None) -> None:
        """Start with ``hard_state`` (default: nothing saved, so load() gives HardState())."""
        self._lock = threading.Lock()
        self._hard_state = hard_state if hard_state is not None else HardState()
        self._closed = False

    def load(self) -> HardState:
        """Return the last saved HardState, or HardState() when none was saved."""
        with self._lock:
            if self._closed:
                raise StoreClosedError("MemoryStableStore is closed")
            return self._hard_state

    def save(self, hard_state: object) -> None:
        """Remember ``hard_state``."""
        if not isinstance(hard_state, HardState):
            raise TypeError(f"expected a HardState, got {type(hard_state).__name__}")
        problem = hard_state_error(hard_state)
        if problem is not None:
            raise ValueError(f"refusing to save hard state: {problem}")
        with self._lock:
            if self._closed:
                raise StoreClosedError("MemoryStableStore is closed")
            self._hard_state = hard_state

    def close(self) -> None:
        """Mark the store closed; further calls raise StoreClosedError."""
        with self._lock:
            self._closed = True


@implementer(ISnapshotSink)
class MemorySnapshotSink:
    """Collect a snapshot's bytes; hand them to the store on ``close``."""

    def __init__(self, store: MemorySnapshotStore, meta: SnapshotMeta) -> None:
        """Start an empty snapshot described by ``meta`` for ``store``."""
        self.meta = meta
        self._store = store
        self._chunks: list[bytes] = []
        self._state = "open"

    def write(self, data: bytes) -> None:
        """Append ``data``; StorageError after close() or cancel()."""
        if self._state != "open":
            raise StorageError(f"snapshot sink is {self._state}")
        self._chunks.append(bytes(data))

    def close(self) -> None:
        """Make the snapshot visible in the store."""
        if self._state != "open":
            raise StorageError(f"snapshot sink is {self._state}")
        self._state = "closed"
        self._store._put(self.meta, b"".join(self._chunks))
        self._chunks = []

    def cancel(self) -> None:
        """Discard everything written; does nothing after close()."""
        if self._state == "open":
            self._state = "cancelled"
            self._chunks = []


@implementer(ISnapshotStore)
class MemorySnapshotStore:
    """Keep the newest ``retain`` snapshots in memory, keyed by index."""

    def __init__(self, retain: int = 2) -> None:
        """Create an empty store that keeps ``retain`` (>= 1) snapshots."""
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain}")
        self._retain = retain
        self._lock = threading.Lock()
        self._snapshots: dict[int, tuple[SnapshotMeta, bytes]] = {}
        self._corrupt: set[int] = set()

    def create(self, meta: object) -> MemorySnapshotSink:
        """Return a sink for a snapshot described by ``meta``; nothing is visible until close."""
        if not isinstance(meta, SnapshotMeta):
            raise TypeError(f"expected a SnapshotMeta, got {type(meta).__name__}")
        check_snapshot_meta(meta)
        return MemorySnapshotSink(self, meta)

    def _put(self, meta: SnapshotMeta, data: bytes) -> None:
        with self._lock:
            self._snapshots[meta.index] = (meta, data)
            self._corrupt.discard(meta.index)
            for index in sorted(self._snapshots)[: -self._retain]:
                del self._snapshots[index]

    def latest(self) -> SnapshotMeta | None:
        """Return the meta of the newest sound snapshot, or None (corrupt ones are skipped)."""
        with self._lock:
            sound = [i for i in self._snapshots if i not in self._corrupt]
            if not sound:
                return None
            return self._snapshots[max(sound)][0]

    def open(self, index: int) -> bytes:
        """Return the data of the snapshot at ``index``; KeyError when there is none,
        ValueError when it is corrupt."""
        with self._lock:
            if index not in self._snapshots:
                raise KeyError(index)
            if index in self._corrupt:
                raise ValueError(f"snapshot {index} is corrupt")
            return self._snapshots[index][1]

    def corrupt(self, index: int) -> None:
        """Damage the snapshot at ``index``, as a bad disk would (for fault injection)."""
        with self._lock:
            if index in self._snapshots:
                self._corrupt.add(index)
