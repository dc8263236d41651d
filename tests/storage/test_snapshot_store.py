"""The ISnapshotStore contract (memory and file) and the file store's verification."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from leeky_twisted.core.messages import Configuration, NodeId, SnapshotMeta
from leeky_twisted.interfaces import ISnapshotSink, ISnapshotStore
from leeky_twisted.storage.errors import CorruptSnapshotError, StorageError
from leeky_twisted.storage.files import FileSnapshotStore
from leeky_twisted.storage.memory import MemorySnapshotStore

CONFIG = Configuration(frozenset({NodeId("a"), NodeId("b"), NodeId("c")}), frozenset({NodeId("d")}))


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index, term, CONFIG)


def data_for(index: int) -> bytes:
    return f"state at {index};".encode() * 50


@pytest.fixture(params=["memory", "file"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> MemorySnapshotStore | FileSnapshotStore:
    if request.param == "memory":
        return MemorySnapshotStore()
    return FileSnapshotStore(tmp_path / "snapshots")


def save(store: MemorySnapshotStore | FileSnapshotStore, index: int, term: int = 1) -> None:
    sink = store.create(meta(index, term))
    data = data_for(index)
    sink.write(data[:100])
    sink.write(data[100:])
    sink.close()


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("snapshot-*.snap"))


def test_snapshot_store_and_sink_provide_interfaces(
    store: MemorySnapshotStore | FileSnapshotStore,
) -> None:
    """Every snapshot store provides ISnapshotStore, and its sinks ISnapshotSink."""
    assert verifyObject(ISnapshotStore, store)
    sink = store.create(meta(1))
    assert verifyObject(ISnapshotSink, sink)
    sink.cancel()


def test_empty_store_has_no_snapshot(store: MemorySnapshotStore | FileSnapshotStore) -> None:
    """latest() is None and open() a KeyError before any snapshot is closed."""
    assert store.latest() is None
    with pytest.raises(KeyError):
        store.open(1)


def test_closed_snapshot_is_the_latest_and_reads_back(
    store: MemorySnapshotStore | FileSnapshotStore,
) -> None:
    """A closed snapshot's meta (with its configuration) and data come back exactly."""
    save(store, 10, term=3)
    assert store.latest() == meta(10, 3)
    assert store.open(10) == data_for(10)
    save(store, 25, term=4)
    assert store.latest() == meta(25, 4)
    assert store.open(10) == data_for(10)


def test_nothing_is_visible_before_close(store: MemorySnapshotStore | FileSnapshotStore) -> None:
    """A sink still being written is not a snapshot yet."""
    sink = store.create(meta(5))
    sink.write(b"partial")
    assert store.latest() is None
    with pytest.raises(KeyError):
        store.open(5)
    sink.close()
    assert store.open(5) == b"partial"


def test_cancel_discards_the_snapshot(store: MemorySnapshotStore | FileSnapshotStore) -> None:
    """A cancelled sink leaves nothing behind; writing to it afterwards is an error."""
    save(store, 3)
    sink = store.create(meta(7))
    sink.write(b"abandoned")
    sink.cancel()
    assert store.latest() == meta(3)
    with pytest.raises(StorageError):
        sink.write(b"more")
    with pytest.raises(StorageError):
        sink.close()


def test_closed_sink_rejects_writes(store: MemorySnapshotStore | FileSnapshotStore) -> None:
    """After close() the sink takes no more data; cancel() then does nothing."""
    sink = store.create(meta(4))
    sink.close()
    with pytest.raises(StorageError):
        sink.write(b"late")
    sink.cancel()
    assert store.open(4) == b""


def test_only_the_last_two_snapshots_are_kept(
    store: MemorySnapshotStore | FileSnapshotStore,
) -> None:
    """Creating a third snapshot deletes the oldest."""
    for index in (10, 20, 30):
        save(store, index)
    assert store.latest() == meta(30)
    assert store.open(20) == data_for(20)
    with pytest.raises(KeyError):
        store.open(10)


def test_file_snapshots_survive_a_restart(tmp_path: Path) -> None:
    """A new store object on the same directory finds the same snapshots."""
    save(FileSnapshotStore(tmp_path), 8, term=2)
    reopened = FileSnapshotStore(tmp_path)
    assert reopened.latest() == meta(8, 2)
    assert reopened.open(8) == data_for(8)
    assert len(snapshot_files(tmp_path)) == 1


def test_latest_falls_back_when_the_newest_is_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged newest snapshot is skipped (and logged); open() of it raises ValueError."""
    store = FileSnapshotStore(tmp_path)
    save(store, 10)
    save(store, 20)
    newest = snapshot_files(tmp_path)[-1]
    damaged = bytearray(newest.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    newest.write_bytes(bytes(damaged))
    reopened = FileSnapshotStore(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert reopened.latest() == meta(10)
    assert "checksum" in caplog.text
    with pytest.raises(CorruptSnapshotError) as caught:
        reopened.open(20)
    assert isinstance(caught.value, ValueError)
    assert reopened.open(10) == data_for(10)


def test_every_damaged_byte_or_truncation_of_a_snapshot_is_detected(tmp_path: Path) -> None:
    """Flips anywhere (header, meta, data, footer) and cuts at any length all fail verification."""
    store = FileSnapshotStore(tmp_path)
    sink = store.create(meta(3))
    sink.write(b"0123456789")
    sink.close()
    (path,) = snapshot_files(tmp_path)
    original = path.read_bytes()
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        assert FileSnapshotStore(tmp_path).latest() is None, offset
    for length in range(len(original)):
        path.write_bytes(original[:length])
        with pytest.raises(CorruptSnapshotError):
            FileSnapshotStore(tmp_path).open(3)


def test_half_written_snapshot_is_ignored_and_removed(tmp_path: Path) -> None:
    """A sink's temp file left by a crash is not a snapshot and is deleted on open."""
    store = FileSnapshotStore(tmp_path)
    save(store, 10)
    sink = store.create(meta(20))
    sink.write(data_for(20))  # the process "crashes" here, before close()
    assert FileSnapshotStore(tmp_path).latest() == meta(10)
    assert [p.name for p in tmp_path.iterdir()] == [snapshot_files(tmp_path)[0].name]


def test_snapshot_renamed_to_another_index_is_rejected(tmp_path: Path) -> None:
    """A file whose name disagrees with the index inside it is not trusted."""
    store = FileSnapshotStore(tmp_path)
    save(store, 10)
    (path,) = snapshot_files(tmp_path)
    path.rename(path.with_name("snapshot-00000000000000000099.snap"))
    reopened = FileSnapshotStore(tmp_path)
    assert reopened.latest() is None
    with pytest.raises(CorruptSnapshotError):
        reopened.open(99)


def test_all_snapshots_corrupt_gives_none(tmp_path: Path) -> None:
    """When no snapshot verifies, latest() is None rather than a bad snapshot."""
    store = FileSnapshotStore(tmp_path)
    save(store, 1)
    save(store, 2)
    for path in snapshot_files(tmp_path):
        path.write_bytes(path.read_bytes()[:-1])
    assert FileSnapshotStore(tmp_path).latest() is None


def test_a_file_sink_syncs_as_it_goes_so_close_has_little_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SNAPSHOT_SYNC_BYTES written, the sink syncs its file: a large snapshot
    written a slice per disk job never leaves the whole state for one fsync."""
    from leeky_twisted.storage import files

    synced: list[int] = []
    monkeypatch.setattr(files, "fdatasync", lambda fd: synced.append(fd))
    store = FileSnapshotStore(tmp_path / "snapshots")
    sink = store.create(meta(7))
    step = files.SNAPSHOT_SYNC_BYTES // 4
    for i in range(10):
        sink.write(bytes([i]) * step)
    assert len(synced) == 2  # after 4 and 8 slices; close() syncs the rest
    sink.close()
    assert store.open(7) == b"".join(bytes([i]) * step for i in range(10))
