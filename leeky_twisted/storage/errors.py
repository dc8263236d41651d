"""Exceptions raised by the storage adapters."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every storage failure."""


class StoreClosedError(StorageError):
    """Raised when a store is used after ``close()``."""


class StoreFailedError(StorageError):
    """Raised when a write is attempted after an earlier write failed.

    After a failed write or fsync the state on disk is uncertain, so the store
    refuses further writes; reopening it re-checks the files.
    """


class StoreLockedError(StorageError):
    """Raised when another store object or process already holds the directory."""


class CorruptStorageError(StorageError, ValueError):
    """Stored bytes fail their checks; never misread, so the node must stop.

    ``path`` names the file, ``offset`` the byte where the problem starts
    (``None`` when it concerns the whole file), ``reason`` what is wrong.
    """

    def __init__(self, path: str, offset: int | None, reason: str) -> None:
        where = path if offset is None else f"{path} at offset {offset}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class CorruptLogError(CorruptStorageError):
    """A log segment or the log's meta file is corrupt before its tail."""


class CorruptHardStateError(CorruptStorageError):
    """The saved HardState file is corrupt."""


class CorruptSnapshotError(CorruptStorageError):
    """A snapshot file fails its checksum or cannot be parsed."""
