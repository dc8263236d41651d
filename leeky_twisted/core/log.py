"""The core's in-memory view of the replicated log.

Every entry after the last compaction point is kept in memory (compaction
keeps that bounded); the node's log store holds the durable copy. The log also
tracks which suffix is not yet handed to storage (``unstable_from``) and which
prefix is durable (``stable``), and the configuration entries it contains
(configurations take effect when appended, as in §4.1 of the dissertation).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

from leeky_twisted.core.messages import (
    ConfChange,
    Configuration,
    Entry,
    EntryKind,
    SnapshotMeta,
)


class RaftLog:
    """Entries (start, last], the term at ``start``, and the configurations in the log."""

    def __init__(
        self,
        start: int = 0,
        start_term: int = 0,
        base_config: Configuration | None = None,
        entries: Sequence[Entry] = (),
    ) -> None:
        self.start = start
        self.start_term = start_term
        self.entries: list[Entry] = []
        self.base_config = base_config or Configuration(frozenset())
        self.configs: list[tuple[int, Configuration]] = []
        self.stable = start
        self.unstable_from = start + 1
        if entries:
            self.append(entries)
            self.stable = self.last_index()
            self.unstable_from = self.stable + 1

    # ------------------------------------------------------------------ reads

    def last_index(self) -> int:
        """Return the index of the last entry (``start`` when empty)."""
        return self.start + len(self.entries)

    def last_term(self) -> int:
        """Return the term of the last entry."""
        return self.entries[-1].term if self.entries else self.start_term

    def term_at(self, index: int) -> int | None:
        """Return the term at ``index``; None when compacted away or beyond the end."""
        if index == self.start:
            return self.start_term
        offset = index - self.start - 1
        if offset < 0 or offset >= len(self.entries):
            return None
        return self.entries[offset].term

    def entry_at(self, index: int) -> Entry:
        """Return the entry at ``index``; raise IndexError when absent."""
        offset = index - self.start - 1
        if offset < 0 or offset >= len(self.entries):
            raise IndexError(index)
        return self.entries[offset]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Return entries lo <= index < hi, cut after ``max_bytes`` (at least one)."""
        if lo <= self.start:
            raise IndexError(f"index {lo} is compacted (log starts after {self.start})")
        a = lo - self.start - 1
        b = min(hi, self.last_index() + 1) - self.start - 1
        if a >= b:
            return []
        if max_bytes is None:
            return self.entries[a:b]
        out: list[Entry] = []
        size = 0
        for i in range(a, b):
            e = self.entries[i]
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Return True when a log ending at (last_index, last_term) is at least as
        up to date as this one (§5.4.1)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def first_index_of_term(self, index: int) -> int:
        """Return the first index holding the same term as ``index`` (for rejection hints)."""
        term = self.term_at(index)
        if term is None:
            return index
        hi = index - self.start - 1
        pos = bisect_left(self.entries, term, 0, hi, key=lambda e: e.term)
        if pos == 0 and self.start_term == term:
            return self.start
        return self.start + 1 + pos

    def last_index_of_term(self, term: int, upto: int) -> int | None:
        """Return the last index <= ``upto`` whose term is ``term``, or None."""
        upto = min(upto, self.last_index())
        if upto < self.start:
            return None
        hi = upto - self.start  # entries[:hi] are indexes start+1..upto
        pos = bisect_left(self.entries, term + 1, 0, hi, key=lambda e: e.term)
        # entries[pos-1] is the last with term <= term
        if pos > 0:
            e = self.entries[pos - 1]
            return e.index if e.term == term else None
        return self.start if self.start_term == term else None

    def config(self) -> Configuration:
        """Return the latest configuration in the log (committed or not)."""
        return self.configs[-1][1] if self.configs else self.base_config

    def config_index(self) -> int:
        """Return the index of the latest configuration entry (``start`` if none)."""
        return self.configs[-1][0] if self.configs else self.start

    def config_at(self, index: int) -> Configuration:
        """Return the configuration in force at ``index``."""
        cfg = self.base_config
        for i, c in self.configs:
            if i > index:
                break
            cfg = c
        return cfg

    def unstable(self) -> list[Entry]:
        """Return the entries not yet handed to storage."""
        if self.unstable_from > self.last_index():
            return []
        return self.entries[self.unstable_from - self.start - 1 :]

    # ----------------------------------------------------------------- writes

    def append(self, entries: Iterable[Entry]) -> None:
        """Append entries; the first must follow the current last entry."""
        for e in entries:
            if e.index != self.last_index() + 1:
                raise ValueError(f"entry {e.index} does not follow {self.last_index()}")
            self.entries.append(e)
            if e.kind is EntryKind.CONFIG:
                self._track_config(e)

    def truncate_from(self, index: int) -> None:
        """Drop every entry with index >= ``index`` (a conflicting suffix)."""
        if index <= self.start:
            raise ValueError(f"cannot truncate at {index}: compacted up to {self.start}")
        del self.entries[index - self.start - 1 :]
        while self.configs and self.configs[-1][0] >= index:
            self.configs.pop()
        self.unstable_from = min(self.unstable_from, index)
        self.stable = min(self.stable, index - 1)

    def handed_to_storage(self) -> list[Entry]:
        """Return the unstable entries and mark them as being written."""
        out = self.unstable()
        self.unstable_from = self.last_index() + 1
        return out

    def stable_to(self, index: int) -> None:
        """Record that entries up to ``index`` (as handed out) are durable."""
        self.stable = max(self.stable, min(index, self.unstable_from - 1))

    def compact(self, upto: int) -> None:
        """Forget entries with index <= ``upto``; they must be durable."""
        if upto <= self.start:
            return
        if upto > self.stable:
            raise ValueError(f"cannot compact unstable entry {upto}")
        term = self.term_at(upto)
        assert term is not None
        self.base_config = self.config_at(upto)
        self.configs = [(i, c) for i, c in self.configs if i > upto]
        del self.entries[: upto - self.start]
        self.start = upto
        self.start_term = term

    def restore(self, meta: SnapshotMeta) -> None:
        """Replace the whole log with the state after a snapshot."""
        self.entries = []
        self.configs = []
        self.start = meta.index
        self.start_term = meta.term
        self.base_config = meta.config
        self.stable = meta.index
        self.unstable_from = meta.index + 1

    def _track_config(self, entry: Entry) -> None:
        try:
            change = ConfChange.decode(entry.data)
            cfg = self.config().apply(change)
        except ValueError:
            return  # an invalid change is ignored identically on every replica
        self.configs.append((entry.index, cfg))
