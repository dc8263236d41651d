"""FolderIdentity: what changed in a data folder since the node opened it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeky_twisted.storage.files import FileLogStore, FileSnapshotStore
from leeky_twisted.storage.folderwatch import FolderIdentity


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[tuple[Path, FolderIdentity]]:
    """A data folder with a log store (holding its lock) and a snapshot store, pinned."""
    data = tmp_path / "data"
    log_store = FileLogStore(data / "log", preallocate=False)
    FileSnapshotStore(data / "snapshots")
    identity = FolderIdentity(
        str(data),
        [str(data / "log"), str(data / "snapshots")],
        log_store.lock.path,
        log_store.lock.identity,
    )
    yield data, identity
    log_store.close()


def test_an_untouched_folder_has_not_changed(opened: tuple[Path, FolderIdentity]) -> None:
    """Writes inside the folder change nothing that is compared."""
    data, identity = opened
    (data / "hardstate").write_bytes(b"x")
    (data / "log" / "other").write_bytes(b"y")
    assert identity.change() is None
    assert identity.folder == str(data)


def test_a_deleted_folder_is_named(opened: tuple[Path, FolderIdentity]) -> None:
    """rm -rf DATA-DIR: the folder is gone."""
    data, identity = opened
    shutil.rmtree(data)
    assert identity.change() == f"the data folder {data} was deleted"


def test_a_replaced_folder_is_named_with_both_inodes(opened: tuple[Path, FolderIdentity]) -> None:
    """Moved away and a new empty folder made at the same path: another inode."""
    data, identity = opened
    before = os.stat(data)
    data.rename(data.parent / "moved")
    data.mkdir()
    after = os.stat(data)
    change = identity.change()
    assert change is not None
    assert change.startswith(f"the data folder {data} was replaced")
    assert f"inode {before.st_ino} then" in change and f"inode {after.st_ino} now" in change


@pytest.mark.parametrize("sub", ["log", "snapshots"])
def test_a_replaced_subfolder_is_named(opened: tuple[Path, FolderIdentity], sub: str) -> None:
    """The folder is the same, but a folder the stores use inside it is another."""
    data, identity = opened
    shutil.rmtree(data / sub)
    assert identity.change() == f"its folder {data / sub} was deleted"
    (data / sub).mkdir()
    assert f"its folder {data / sub} was replaced" in (identity.change() or "")


def test_a_deleted_or_replaced_lock_file_is_named(opened: tuple[Path, FolderIdentity]) -> None:
    """The lock file is gone (so another process could lock a new one), or is another file."""
    data, identity = opened
    lock = data / "log" / "LOCK"
    lock.unlink()
    assert identity.change() == f"its lock file {lock} was deleted"
    lock.write_bytes(b"")
    assert f"its lock file {lock} was replaced" in (identity.change() or "")


def test_a_folder_that_cannot_be_checked_counts_as_changed(
    opened: tuple[Path, FolderIdentity],
) -> None:
    """A stat that fails for another reason than absence: the node cannot vouch for its writes."""
    data, identity = opened
    if os.geteuid() == 0:
        pytest.skip("root reads any folder")
    data.chmod(0)
    try:
        change = identity.change()
    finally:
        data.chmod(0o755)
    assert change is not None and "cannot be checked (Permission denied)" in change
