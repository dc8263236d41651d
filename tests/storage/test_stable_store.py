"""The IStableStore contract (memory and file) and the file store's corruption checks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from leeky_twisted.core.messages import HardState, NodeId
from leeky_twisted.interfaces import IStableStore
from leeky_twisted.storage import files, fsutil
from leeky_twisted.storage.errors import CorruptHardStateError, StoreClosedError
from leeky_twisted.storage.files import FileStableStore
from leeky_twisted.storage.memory import MemoryStableStore


class Stores:
    """Open a stable store of one kind; ``reopen`` simulates a restart."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.current: MemoryStableStore | FileStableStore | None = None

    def open(self) -> MemoryStableStore | FileStableStore:
        if self.kind == "memory":
            if self.current is None:
                self.current = MemoryStableStore()
            return self.current
        if self.current is not None:
            self.current.close()
        self.current = FileStableStore(self.path)
        return self.current

    reopen = open


@pytest.fixture(params=["memory", "file"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    opened = Stores(request.param, tmp_path / "state" / "hard_state")
    yield opened
    if opened.current is not None:
        opened.current.close()


def test_stable_store_provides_interface(stores: Stores) -> None:
    """Every stable store provides IStableStore."""
    assert verifyObject(IStableStore, stores.open())


def test_nothing_saved_loads_the_initial_hard_state(stores: Stores) -> None:
    """load() before any save() returns HardState()."""
    assert stores.open().load() == HardState()


def test_saved_hard_state_survives_a_restart(stores: Stores) -> None:
    """The last saved HardState, with or without a vote, is what load() returns."""
    store = stores.open()
    store.save(HardState(3, NodeId("n2"), 17))
    assert store.load() == HardState(3, NodeId("n2"), 17)
    assert stores.reopen().load() == HardState(3, NodeId("n2"), 17)
    store = stores.reopen()
    store.save(HardState(4, None, 17))
    store.save(HardState(4, NodeId("ñode-é"), 20))
    assert stores.reopen().load() == HardState(4, NodeId("ñode-é"), 20)


def test_save_rejects_other_types(stores: Stores) -> None:
    """save() takes a HardState only."""
    with pytest.raises(TypeError):
        stores.open().save((1, None, 0))


def test_closed_stable_store_rejects_calls(stores: Stores) -> None:
    """After close(), load and save raise StoreClosedError."""
    store = stores.open()
    store.close()
    with pytest.raises(StoreClosedError):
        store.load()
    with pytest.raises(StoreClosedError):
        store.save(HardState(1))
    stores.current = None


def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    """Any single damaged byte makes load() raise CorruptHardStateError naming the file."""
    path = tmp_path / "hard_state"
    FileStableStore(path).save(HardState(7, NodeId("n1"), 3))
    original = path.read_bytes()
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptHardStateError) as caught:
            FileStableStore(path).load()
        assert caught.value.path == str(path)


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    """A file cut short at any length (even empty) is reported, never read as a state."""
    path = tmp_path / "hard_state"
    FileStableStore(path).save(HardState(7, NodeId("n1"), 3))
    original = path.read_bytes()
    for length in range(len(original)):
        path.write_bytes(original[:length])
        with pytest.raises(CorruptHardStateError):
            FileStableStore(path).load()


def test_half_written_temp_file_is_ignored(tmp_path: Path) -> None:
    """A crash before the rename leaves the old state, and the temp file is removed."""
    path = tmp_path / "hard_state"
    FileStableStore(path).save(HardState(2, NodeId("n1"), 1))
    temp = tmp_path / "hard_state.tmp"
    temp.write_bytes(b"LKHS\x00\x00\x00\x01 half")
    assert FileStableStore(path).load() == HardState(2, NodeId("n1"), 1)
    assert not temp.exists()


def test_unchanged_state_is_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saving the state already on disk costs no write or fsync."""
    writes: list[str] = []
    real = fsutil.atomic_write_at

    def counting(dir_fd: int, name: str, data: bytes) -> None:
        writes.append(name)
        real(dir_fd, name, data)

    monkeypatch.setattr(files, "atomic_write_at", counting)
    store = FileStableStore(tmp_path / "hard_state")
    store.save(HardState(1, NodeId("a"), 0))
    store.save(HardState(1, NodeId("a"), 0))
    store.save(HardState(1, NodeId("a"), 1))
    assert len(writes) == 2


def test_the_storage_identity_round_trips(stores):
    """A saved storage identity (and abstention) is what load() returns, after reopening."""
    store = stores.open()
    store.save(HardState(2, None, 5, abstaining=True, storage_id=2**40 + 7, caught_up=9))
    assert stores.reopen().load() == HardState(2, None, 5, True, 2**40 + 7, 9)


def test_a_storage_identity_out_of_bounds_is_refused(stores):
    """An identity no message could carry is never saved."""
    with pytest.raises(ValueError):
        stores.open().save(HardState(2, None, 5, storage_id=2**62 + 1))


def test_a_save_after_the_folder_was_replaced_lands_in_the_folder_opened(tmp_path: Path) -> None:
    """The folder is moved away and a new one made at its path while the node runs.

    The vote must go where the node's log is (the folder it opened), never into
    the new folder: a new folder holding a vote and a term but no log would
    restart as a voter that is not new (so it does not abstain) with a blank log.
    """
    data = tmp_path / "data"
    store = FileStableStore(data / "hardstate")
    store.save(HardState(3, NodeId("a"), 2))
    data.rename(tmp_path / "moved")
    data.mkdir()
    store.save(HardState(4, NodeId("b"), 2))
    assert list(data.iterdir()) == []
    assert FileStableStore(tmp_path / "moved" / "hardstate").load() == HardState(4, NodeId("b"), 2)
    store.close()


def test_a_save_after_the_folder_was_deleted_fails(tmp_path: Path) -> None:
    """rm -rf of the folder: the save fails (the node stops) instead of writing elsewhere."""
    data = tmp_path / "data"
    store = FileStableStore(data / "hardstate")
    store.save(HardState(3, NodeId("a"), 2))
    shutil.rmtree(data)
    with pytest.raises(FileNotFoundError):
        store.save(HardState(4, NodeId("b"), 2))
    data.mkdir()
    with pytest.raises(FileNotFoundError):
        store.save(HardState(4, NodeId("b"), 2))
    assert list(data.iterdir()) == []
    store.close()
