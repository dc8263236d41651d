"""FileLogStore behaviour beyond the shared contract: segments, group commit, failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leeky_twisted.core.messages import Entry
from leeky_twisted.storage import files, fsutil
from leeky_twisted.storage.errors import StoreFailedError, StoreLockedError
from leeky_twisted.storage.files import FileLogStore


def run(lo: int, hi: int, term: int = 1, size: int = 40) -> list[Entry]:
    return [Entry(index, term, data=bytes([index % 256]) * size) for index in range(lo, hi)]


def segment_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("segment-"))


def test_segments_roll_over_at_the_configured_size(tmp_path: Path) -> None:
    """Segments stay within segment_size (bar one record) and reads span them."""
    store = FileLogStore(tmp_path, segment_size=1024)
    try:
        for start in range(1, 201, 10):
            store.append(run(start, start + 10))
        names = segment_files(tmp_path)
        assert len(names) > 5
        assert all(os.path.getsize(tmp_path / name) <= 1024 for name in names)
        assert store.entries(1, 201) == run(1, 201)
    finally:
        store.close()


def test_compaction_deletes_whole_segments_only(tmp_path: Path) -> None:
    """compact deletes the segments wholly below the new first index, no others."""
    store = FileLogStore(tmp_path, segment_size=1024)
    try:
        store.append(run(1, 201))
        before = segment_files(tmp_path)
        store.compact(100)
        after = segment_files(tmp_path)
        assert after == before[len(before) - len(after) :]
        assert len(before) > len(after) > 1
        assert store.entries(101, 201) == run(101, 201)
    finally:
        store.close()


def test_replacing_a_suffix_deletes_later_segments(tmp_path: Path) -> None:
    """A conflicting append far back removes every segment after the one it lands in."""
    store = FileLogStore(tmp_path, segment_size=1024)
    try:
        store.append(run(1, 201))
        store.append(run(10, 12, term=2))
        assert len(segment_files(tmp_path)) == 1
        assert store.entries(1, 12) == run(1, 10) + run(10, 12, term=2)
    finally:
        store.close()


def test_append_syncs_once_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: one append of many entries costs exactly one fdatasync."""
    calls: list[int] = []
    real = fsutil.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(files, "fdatasync", counting)
    store = FileLogStore(tmp_path)
    try:
        calls.clear()
        store.append(run(1, 65))
        assert len(calls) == 1
        store.append(run(65, 66))
        assert len(calls) == 2
    finally:
        store.close()


def test_second_store_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    """Two stores never share a directory; the lock goes away with close()."""
    store = FileLogStore(tmp_path)
    with pytest.raises(StoreLockedError):
        FileLogStore(tmp_path)
    store.close()
    FileLogStore(tmp_path).close()


def test_failed_sync_stops_writes_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an I/O error the store refuses writes; reopening recovers a valid log."""
    store = FileLogStore(tmp_path)
    store.append(run(1, 11))

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files, "fdatasync", broken)
    with pytest.raises(OSError):
        store.append(run(11, 21))
    monkeypatch.undo()
    with pytest.raises(StoreFailedError):
        store.append(run(11, 21))
    assert store.last_index() == 10
    assert store.entries(1, 11) == run(1, 11)
    store.close()
    store = FileLogStore(tmp_path)
    try:
        assert store.entries(1, 11) == run(1, 11)
        store.append(run(store.last_index() + 1, 31))
        assert store.entries(1, 31)[-1] == run(30, 31)[0]
    finally:
        store.close()


def test_bad_data_raises_before_anything_is_written(tmp_path: Path) -> None:
    """An entry that cannot be encoded is a TypeError and leaves the store usable."""
    store = FileLogStore(tmp_path)
    try:
        with pytest.raises(TypeError):
            store.append([Entry(1, 1, data="text")])  # type: ignore[arg-type]
        store.append(run(1, 3))
        assert store.last_index() == 2
    finally:
        store.close()


def test_segment_size_must_hold_a_record(tmp_path: Path) -> None:
    """A segment_size smaller than a header and one record header is refused."""
    with pytest.raises(ValueError):
        FileLogStore(tmp_path, segment_size=10)


def test_reads_during_a_rollover_see_only_published_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read between a mid-batch rollover and the batch's fsync sees the old log exactly."""
    store = FileLogStore(tmp_path, segment_size=1024)
    store.append(run(1, 11))
    seen: list[tuple[int, list[Entry], list[Entry]]] = []
    real = FileLogStore._add_segment

    def add_then_read(self: FileLogStore, segment: files._Segment) -> None:
        real(self, segment)
        last = self.last_index()
        seen.append((last, self.entries(1, last + 1), self.entries(1, last + 1, max_bytes=10**6)))

    monkeypatch.setattr(FileLogStore, "_add_segment", add_then_read)
    try:
        store.append(run(11, 61))
        assert seen
        for last, read, limited in seen:
            assert last == 10
            assert read == limited == run(1, 11)
        assert store.entries(1, 61) == run(1, 61)
    finally:
        store.close()
