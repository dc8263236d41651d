"""Tell whether a data folder is still the one a node opened.

On Linux a running process keeps writing to the files it holds open after
their folder is deleted (``rm -rf``) or moved away and replaced by a new one:
its writes succeed and its fsyncs return, but nothing of them will be there at
the next start. :class:`FolderIdentity` records, when the stores are opened,
the device and inode of the data folder, of its subfolders and of the lock
file the log store holds, and :meth:`FolderIdentity.change` says what differs
now. Each of them stays open while the identity lives, so a file system that
reuses inode numbers cannot give one of theirs to a new folder made at the
same path (a deleted folder and its replacement would then look the same).
A check only reads metadata (a few ``stat`` calls): cheap enough for every second.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class _Pinned:
    """A path and the (device, inode) it had when pinned."""

    path: str
    what: str  #: how a message names it, e.g. "the data folder"
    device: int
    inode: int


def _describe(device: int, inode: int) -> str:
    return f"device {device} inode {inode}"


class FolderIdentity:
    """The identity of a data folder as it was opened; :meth:`change` compares it to now.

    :param folder: the data folder.
    :param subfolders: folders inside it that the stores use (``log``, ``snapshots``).
    :param lock_path: the lock file the node holds.
    :param lock_identity: (device, inode) of the file the lock is held on (its
        descriptor's, so a lock file replaced before this object was made is
        caught too; held open by the lock, its inode is never reused).
    """

    def __init__(
        self,
        folder: str,
        subfolders: Sequence[str],
        lock_path: str,
        lock_identity: tuple[int, int],
    ) -> None:
        """Pin ``folder`` and ``subfolders`` as they are now, and the lock's file."""
        self.folder = os.path.abspath(folder)
        self._pinned = [_pin(self.folder, "the data folder", self)]
        for sub in subfolders:
            self._pinned.append(_pin(os.path.abspath(sub), "its folder", self))
        device, inode = lock_identity
        self._pinned.append(_Pinned(os.path.abspath(lock_path), "its lock file", device, inode))

    def change(self) -> str | None:
        """Return what changed since the folder was opened (one phrase), or None.

        The data folder is checked first, then its subfolders, then the lock
        file, so the phrase names the outermost change. A path that cannot be
        checked at all (permission denied, I/O error) counts as changed: the
        node cannot tell that its writes still land there.
        """
        for pinned in self._pinned:
            try:
                stat = os.stat(pinned.path)
            except FileNotFoundError:
                return f"{pinned.what} {pinned.path} was deleted"
            except OSError as error:
                return f"{pinned.what} {pinned.path} cannot be checked ({error.strerror})"
            if (stat.st_dev, stat.st_ino) != (pinned.device, pinned.inode):
                was = _describe(pinned.device, pinned.inode)
                now = _describe(stat.st_dev, stat.st_ino)
                return (
                    f"{pinned.what} {pinned.path} was replaced (moved away or deleted, "
                    f"and another made at its path: {was} then, {now} now)"
                )
        return None


def _pin(path: str, what: str, holder: object) -> _Pinned:
    """Pin the folder at ``path``: held open for the life of ``holder``, so its inode
    number cannot be given to a new folder made at the same path."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    weakref.finalize(holder, os.close, fd)
    stat = os.fstat(fd)
    return _Pinned(path, what, stat.st_dev, stat.st_ino)
