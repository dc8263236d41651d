"""Small durable-file helpers: fsync, atomic replace, directory locks."""

from __future__ import annotations

import contextlib
import fcntl
import os

from leeky_twisted.storage.errors import StoreLockedError

TEMP_SUFFIX = ".tmp"

if hasattr(os, "fdatasync"):
    fdatasync = os.fdatasync
else:  # pragma: no cover - macOS has no fdatasync
    fdatasync = os.fsync


def fsync_dir(directory: str) -> None:
    """Fsync ``directory`` so created, renamed and removed names are durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset``, looping over short writes."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def preallocate(fd: int, size: int) -> None:
    """Reserve disk blocks for the file up to ``size`` bytes (they read as zeros).

    Appends inside reserved space leave the file size alone, so their
    fdatasync need not commit a metadata change: measurably cheaper on ext4.
    Best effort: a file system without fallocate just grows on append.
    """
    with contextlib.suppress(OSError):  # e.g. not supported; ENOSPC shows at the append
        os.posix_fallocate(fd, 0, size)


def atomic_write(path: str, data: bytes) -> None:
    """Replace the file at ``path`` by ``data`` atomically and durably.

    Write ``path + ".tmp"``, fsync it, rename it over ``path`` and fsync the
    directory: after a crash ``path`` holds either the old or the new bytes.
    """
    tmp = path + TEMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def atomic_write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Like :func:`atomic_write`, for the file ``name`` in the folder open as ``dir_fd``.

    The write lands in that folder even if it was renamed since it was opened,
    and fails (FileNotFoundError) if it was deleted: never in another folder
    created at its old path.
    """
    tmp = name + TEMP_SUFFIX
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.fsync(dir_fd)


def open_dir(directory: str) -> int:
    """Return a read-only descriptor of ``directory`` (for ``dir_fd`` and fsync)."""
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def remove_temp_files(directory: str) -> list[str]:
    """Delete leftover ``*.tmp`` files (half-written by a crash); return their names."""
    removed = sorted(name for name in os.listdir(directory) if name.endswith(TEMP_SUFFIX))
    for name in removed:
        os.unlink(os.path.join(directory, name))
    if removed:
        fsync_dir(directory)
    return removed


class DirectoryLock:
    """An exclusive ``flock`` on a file, so two stores never share a directory.

    The kernel drops the lock when the process dies, so a crash never leaves
    a stale lock behind.
    """

    def __init__(self, path: str) -> None:
        """Take the lock at ``path``; raise StoreLockedError when it is held."""
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise StoreLockedError(f"{path} is locked by another store") from None
        stat = os.fstat(self._fd)
        #: (device, inode) of the file the lock is held on
        self.identity: tuple[int, int] = (stat.st_dev, stat.st_ino)

    def release(self) -> None:
        """Drop the lock; a second call does nothing."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
