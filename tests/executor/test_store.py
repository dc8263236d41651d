"""The executor's durable state: replays skipped, results cached, owner bound, crash-safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leeky_twisted.executor import store as store_module
from leeky_twisted.executor.store import DurableExecutorState, OwnerMismatch
from leeky_twisted.storage.errors import StoreLockedError


def reopen(state: DurableExecutorState) -> DurableExecutorState:
    """Close ``state`` and open its directory again (a restart)."""
    state.close()
    return DurableExecutorState(state.directory)


def test_applied_entries_survive_a_restart(tmp_path: Path) -> None:
    """The state and last applied index after a batch are on disk when it returns."""
    s = DurableExecutorState(str(tmp_path))
    results = s.execute_batch("c/1", [(3, b"ADD a"), (4, b"READ a"), (6, b"READ nope")])
    assert [r["index"] for r in results] == [3, 4, 6]
    assert results[1]["result"]["reads"] == 1
    assert "no such file" in results[2]["error"]
    s = reopen(s)
    assert s.last_applied == 6
    assert s.owner == "c/1"
    assert s.machine.query("READ a")["reads"] == 1
    s.close()


def test_replayed_entries_are_not_applied_again_and_answer_cached_results(tmp_path: Path) -> None:
    """Entries at or below last_applied are skipped, answered from the cache, even after restart."""
    s = DurableExecutorState(str(tmp_path))
    first = s.execute_batch("c/1", [(1, b"ADD a"), (2, b"READ a")])
    s = reopen(s)
    again = s.execute_batch("c/1", [(1, b"ADD a"), (2, b"READ a"), (3, b"READ a")])
    assert again[0] == {"replayed": True, **first[0]}
    assert again[1] == {"replayed": True, **first[1]}
    assert again[2]["result"]["reads"] == 2  # the replayed READ did not count
    s.close()


def test_results_older_than_the_cache_are_unknown(tmp_path: Path, monkeypatch) -> None:
    """A replay older than the result cache is answered as unknown, and still not applied."""
    monkeypatch.setattr(store_module, "RESULT_CACHE_SIZE", 2)
    s = DurableExecutorState(str(tmp_path))
    s.execute_batch("c/1", [(1, b"ADD a"), (2, b"READ a"), (3, b"READ a")])
    answer = s.execute_batch("c/1", [(1, b"ADD a")])
    assert answer == [{"index": 1, "replayed": True, "unknown": True}]
    assert s.machine.query("READ a")["reads"] == 2
    s.close()


def test_indexes_must_increase(tmp_path: Path) -> None:
    """A batch whose indexes do not strictly increase is refused before anything applies."""
    s = DurableExecutorState(str(tmp_path))
    with pytest.raises(ValueError, match="increase"):
        s.execute_batch("c/1", [(2, b"ADD a"), (2, b"ADD b")])
    assert s.last_applied == 0 and s.owner is None
    s.close()


def test_the_first_change_binds_the_owner(tmp_path: Path) -> None:
    """Once bound, calls from another owner are refused and change nothing."""
    s = DurableExecutorState(str(tmp_path))
    s.execute_batch("c/1", [(1, b"ADD a")])
    with pytest.raises(OwnerMismatch):
        s.execute_batch("c/2", [(2, b"ADD b")])
    with pytest.raises(OwnerMismatch):
        s.restore("c/2", 5, s.snapshot()[1])
    assert s.last_applied == 1
    s.close()


def test_snapshot_and_restore(tmp_path: Path) -> None:
    """restore replaces the state and the last applied index, durably; bad data changes nothing."""
    a = DurableExecutorState(str(tmp_path / "a"))
    a.execute_batch("c/1", [(1, b"ADD x 3"), (2, b"READ x")])
    index, data = a.snapshot()
    assert index == 2
    b = DurableExecutorState(str(tmp_path / "b"))
    b.execute_batch("c/2", [(1, b"ADD y")])
    b.restore("c/2", 10, data)
    b = reopen(b)
    assert b.last_applied == 10
    assert b.machine.to_json() == a.machine.to_json()
    with pytest.raises(ValueError):
        b.restore("c/2", 11, b"not json")
    assert b.last_applied == 10
    a.close()
    b.close()


def test_a_failed_save_rolls_back_to_the_saved_state(tmp_path: Path, monkeypatch) -> None:
    """When the state cannot be saved the batch fails and memory goes back to the disk state."""
    s = DurableExecutorState(str(tmp_path))
    s.execute_batch("c/1", [(1, b"ADD a")])

    def broken(path: str, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "atomic_write", broken)
    with pytest.raises(OSError):
        s.execute_batch("c/1", [(2, b"READ a")])
    assert s.last_applied == 1
    assert s.machine.query("READ a")["reads"] == 0
    s.close()


def test_half_written_files_are_removed_and_the_directory_is_locked(tmp_path: Path) -> None:
    """A leftover temporary file is deleted at open; a second opener is refused."""
    s = DurableExecutorState(str(tmp_path))
    s.execute_batch("c/1", [(1, b"ADD a")])
    s.close()
    (tmp_path / "state.json.tmp").write_bytes(b'{"torn')
    s = DurableExecutorState(str(tmp_path))
    assert not (tmp_path / "state.json.tmp").exists()
    assert s.last_applied == 1
    with pytest.raises(StoreLockedError):
        DurableExecutorState(str(tmp_path))
    s.close()


def test_a_foreign_state_file_is_refused(tmp_path: Path) -> None:
    """A state.json of another format is an error, not an empty state."""
    (tmp_path / "state.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError):
        DurableExecutorState(str(tmp_path))
