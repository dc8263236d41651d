"""The ILogStore contract, run against every implementation (memory, file, tiny segments)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from leeky_twisted.core.messages import Entry, EntryKind
from leeky_twisted.interfaces import ILogStore
from leeky_twisted.storage.errors import StoreClosedError
from leeky_twisted.storage.files import FileLogStore
from leeky_twisted.storage.memory import MemoryLogStore


class Stores:
    """Open a store of one kind; ``reopen`` simulates a restart (a no-op for memory)."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.current: MemoryLogStore | FileLogStore | None = None

    def open(self) -> MemoryLogStore | FileLogStore:
        if self.kind == "memory":
            if self.current is None:
                self.current = MemoryLogStore()
            return self.current
        if self.current is not None:
            self.current.close()
        segment_size = 256 if self.kind == "file-tiny-segments" else 64 * 1024
        self.current = FileLogStore(self.directory, segment_size=segment_size)
        return self.current

    reopen = open


@pytest.fixture(params=["memory", "file", "file-tiny-segments"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(request.param, tmp_path / "log")
    yield opened
    if opened.current is not None:
        opened.current.close()


def entry(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    return Entry(
        index, term, EntryKind.NORMAL, f"e{index}t{term}".encode() if data is None else data
    )


def run(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [entry(index, term) for index in range(lo, hi)]


def test_log_store_provides_interface(stores: Stores) -> None:
    """Every log store provides ILogStore."""
    assert verifyObject(ILogStore, stores.open())


def test_new_log_is_empty_and_starts_at_one(stores: Stores) -> None:
    """A fresh log has first_index 1 and last_index 0, also after a restart."""
    store = stores.open()
    assert (store.first_index(), store.last_index()) == (1, 0)
    assert store.entries(1, 1) == []
    store = stores.reopen()
    assert (store.first_index(), store.last_index()) == (1, 0)


def test_appended_entries_read_back_in_order(stores: Stores) -> None:
    """Entries of every kind read back exactly, in whole or in part, before and after restart."""
    written = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(2, 1, EntryKind.NORMAL, b"set x=1"),
        Entry(3, 2, EntryKind.CONFIG, bytes(range(256))),
        *run(4, 40, term=2),
    ]
    store = stores.open()
    store.append(written[:3])
    store.append(tuple(written[3:]))
    for restart in (False, True):
        current = stores.reopen() if restart else store
        assert current.last_index() == 39
        assert current.entries(1, 40) == written
        assert current.entries(3, 5) == written[2:4]
        assert current.entries(39, 40) == written[-1:]
        assert current.entries(40, 40) == []


def test_entries_rejects_compacted_missing_and_inverted_ranges(stores: Stores) -> None:
    """Reading below first_index or past last_index is an IndexError; lo > hi a ValueError."""
    store = stores.open()
    store.append(run(1, 11))
    store.compact(3)
    with pytest.raises(IndexError):
        store.entries(3, 5)
    with pytest.raises(IndexError):
        store.entries(9, 12)
    with pytest.raises(IndexError):
        store.entries(20, 20)
    with pytest.raises(ValueError):
        store.entries(6, 5)
    assert [e.index for e in store.entries(4, 11)] == list(range(4, 11))


def test_append_replaces_conflicting_suffix(stores: Stores) -> None:
    """An entry at index i replaces every stored entry >= i, durably."""
    store = stores.open()
    store.append(run(1, 31))
    store.append(run(12, 15, term=2))
    expected = run(1, 12) + run(12, 15, term=2)
    assert store.last_index() == 14
    assert store.entries(1, 15) == expected
    store = stores.reopen()
    assert store.last_index() == 14
    assert store.entries(1, 15) == expected
    store.append(run(15, 18, term=2))
    assert stores.reopen().entries(1, 18) == expected + run(15, 18, term=2)


def test_append_can_replace_from_the_first_index(stores: Stores) -> None:
    """Replacing from first_index keeps nothing of the old log."""
    store = stores.open()
    store.append(run(1, 20))
    store.compact(4)
    store.append(run(5, 8, term=3))
    assert (store.first_index(), store.last_index()) == (5, 7)
    assert stores.reopen().entries(5, 8) == run(5, 8, term=3)


def test_append_replacing_the_last_entry_keeps_the_rest(stores: Stores) -> None:
    """An append at last_index replaces exactly one entry."""
    store = stores.open()
    store.append(run(1, 10))
    store.append([entry(9, 2)])
    assert stores.reopen().entries(1, 10) == [*run(1, 9), entry(9, 2)]


def test_append_rejects_gaps_and_non_consecutive_batches(stores: Stores) -> None:
    """A gap after last_index, a hole inside the batch or index 0 raise ValueError."""
    store = stores.open()
    store.append(run(1, 4))
    with pytest.raises(ValueError):
        store.append([entry(5)])
    with pytest.raises(ValueError):
        store.append([entry(4), entry(6)])
    with pytest.raises(ValueError):
        store.append([entry(0)])
    assert store.last_index() == 3
    store.append([entry(4)])
    assert store.last_index() == 4


def test_append_skips_entries_already_compacted(stores: Stores) -> None:
    """Entries below first_index are covered by a snapshot and are dropped, not stored."""
    store = stores.open()
    store.append(run(1, 11))
    store.compact(6)
    store.append(run(5, 13))
    assert (store.first_index(), store.last_index()) == (7, 12)
    store.append(run(2, 5))
    assert stores.reopen().entries(7, 13) == run(7, 13)


def test_empty_append_changes_nothing(stores: Stores) -> None:
    """Appending no entries is allowed and changes nothing."""
    store = stores.open()
    store.append([])
    store.append(())
    assert (store.first_index(), store.last_index()) == (1, 0)


def test_compact_drops_the_prefix_durably(stores: Stores) -> None:
    """compact(upto) drops entries <= upto; the rest stays readable after restart."""
    store = stores.open()
    store.append(run(1, 51))
    store.compact(20)
    assert (store.first_index(), store.last_index()) == (21, 50)
    store = stores.reopen()
    assert (store.first_index(), store.last_index()) == (21, 50)
    assert store.entries(21, 51) == run(21, 51)
    store.compact(10)
    assert store.first_index() == 21
    store.compact(49)
    assert stores.reopen().entries(50, 51) == [entry(50)]


def test_compact_through_last_index_leaves_an_empty_log_after_it(stores: Stores) -> None:
    """Compacting at or past last_index empties the log, which then starts at upto + 1."""
    store = stores.open()
    store.append(run(1, 11))
    store.compact(10)
    assert (store.first_index(), store.last_index()) == (11, 10)
    store.append([entry(11)])
    store.compact(20)
    assert (store.first_index(), store.last_index()) == (21, 20)
    store = stores.reopen()
    assert (store.first_index(), store.last_index()) == (21, 20)
    store.append(run(21, 23))
    assert stores.reopen().entries(21, 23) == run(21, 23)


def test_reset_drops_everything_and_sets_the_next_index(stores: Stores) -> None:
    """reset(n) empties the log so that the next entry must be n, durably."""
    store = stores.open()
    store.append(run(1, 31))
    store.reset(100)
    assert (store.first_index(), store.last_index()) == (100, 99)
    with pytest.raises(ValueError):
        store.append([entry(101)])
    store = stores.reopen()
    assert (store.first_index(), store.last_index()) == (100, 99)
    store.append(run(100, 103, term=5))
    store.reset(50)
    store.append([entry(50, 6)])
    store = stores.reopen()
    assert (store.first_index(), store.last_index()) == (50, 50)
    assert store.entries(50, 51) == [entry(50, 6)]


def test_reset_rejects_indexes_below_one(stores: Stores) -> None:
    """The first index of a log is at least 1."""
    with pytest.raises(ValueError):
        stores.open().reset(0)


def test_term_at_answers_for_stored_entries_only(stores: Stores) -> None:
    """term_at returns the term of a stored entry and raises IndexError otherwise."""
    store = stores.open()
    store.append(run(1, 5) + run(5, 9, term=3))
    store.compact(2)
    assert [store.term_at(index) for index in range(3, 9)] == [1, 1, 3, 3, 3, 3]
    with pytest.raises(IndexError):
        store.term_at(2)
    with pytest.raises(IndexError):
        store.term_at(9)


def test_max_bytes_limits_a_read_but_returns_at_least_one_entry(stores: Stores) -> None:
    """entries(..., max_bytes) stops before the sizes sum past the limit, never below one."""
    store = stores.open()
    written = [entry(index, data=bytes(76)) for index in range(1, 21)]  # size() == 100 each
    store.append(written)
    assert store.entries(1, 21, max_bytes=1) == written[:1]
    assert store.entries(1, 21, max_bytes=299) == written[:2]
    assert store.entries(1, 21, max_bytes=300) == written[:3]
    assert store.entries(5, 21, max_bytes=10**9) == written[4:]
    with pytest.raises(ValueError):
        store.entries(1, 2, max_bytes=0)


def test_closed_store_rejects_further_calls(stores: Stores) -> None:
    """After close(), every call raises StoreClosedError."""
    store = stores.open()
    store.append(run(1, 3))
    store.close()
    for call in (
        store.first_index,
        store.last_index,
        lambda: store.entries(1, 2),
        lambda: store.append([entry(3)]),
        lambda: store.compact(1),
        lambda: store.reset(5),
    ):
        with pytest.raises(StoreClosedError):
            call()
    stores.current = None


def test_readers_see_a_consistent_log_while_a_writer_appends(stores: Stores) -> None:
    """A reader thread never sees a torn or inconsistent log while another thread writes."""
    store = stores.open()
    store.append(run(1, 2))
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for start in range(2, 400, 8):
                store.append(run(start, start + 8, term=start))
                if start % 64 == 2:
                    store.append(run(start + 4, start + 8, term=start + 1))
                if start % 96 == 2:
                    store.compact(start - 20)
        except BaseException as error:
            errors.append(error)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    try:
        for _ in range(10**6):  # bounded; ends as soon as the writer is done
            if done.is_set() and reads > 0:
                break
            first, last = store.first_index(), store.last_index()
            try:
                got = store.entries(max(first, last - 30), last + 1)
            except IndexError:
                continue  # compacted or truncated between the two calls
            assert [e.index for e in got] == list(range(max(first, last - 30), last + 1))
            assert all(e.data == f"e{e.index}t{e.term}".encode() for e in got)
            reads += 1
            done.wait(0.001)  # let the writer take the GIL and the lock, as a reactor would
    finally:
        writer.join(timeout=60)
    assert not errors
    assert store.last_index() == 401
