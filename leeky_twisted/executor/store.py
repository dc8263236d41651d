"""The executor's durable state: the machine, its last applied index, recent results.

Everything lives in one JSON file, ``state.json``, replaced atomically (write a
temporary file, fsync, rename, fsync the directory) after every batch that
applied something, *before* the batch is answered. So after a crash the file
holds the state after some whole batch, and its ``last_applied`` is exactly
the last index whose effect is in that state: a replayed entry at or below it
is skipped, never applied twice. An entry answered to the node is durable.

Rewriting the whole file costs O(state) per batch. That is right for an
example whose state is a few thousand records; a large state machine would
append a journal and checkpoint it instead.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from twisted.logger import Logger

from leeky_twisted.executor.filemeta import CommandRejected, FileMetadataMachine
from leeky_twisted.protocol import executor_wire as wire
from leeky_twisted.storage.errors import CorruptStorageError
from leeky_twisted.storage.fsutil import DirectoryLock, atomic_write, remove_temp_files

__all__ = [
    "RESULT_CACHE_SIZE",
    "STATE_FORMAT",
    "DurableExecutorState",
    "FolderLostError",
    "OwnerMismatch",
]

log = Logger()

STATE_FORMAT = "leeky-executor-state/1"
#: Results kept for replayed entries (the node resends at most its last unanswered batch).
RESULT_CACHE_SIZE = 4096


class OwnerMismatch(Exception):
    """The executor is bound to another node."""


class FolderLostError(Exception):
    """The data folder is no longer the one opened: the executor applies nothing more."""


class DurableExecutorState:
    """A :class:`FileMetadataMachine` with a durable last applied index.

    Holds an exclusive lock on ``directory`` while open. Not thread-safe: the
    executor calls it from its reactor thread only.

    ``folder_check``, when set, is asked after a save failed: a reason means the
    folder is gone, and the state in memory is kept (an empty reload would
    answer as if nothing had been applied). Once :attr:`lost` is set, every
    change is refused with :class:`FolderLostError`.
    """

    folder_check: Callable[[], str | None] | None = None
    lost: str | None = None  #: why the executor stopped applying, once it did

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.path = os.path.join(directory, "state.json")
        self.lock = DirectoryLock(os.path.join(directory, "LOCK"))
        for name in remove_temp_files(directory):
            log.warn("removed half-written {name}", name=name)
        self.machine = FileMetadataMachine()
        self.last_applied = 0
        self.owner: str | None = None
        self._recent: OrderedDict[int, dict[str, Any]] = OrderedDict()
        try:
            self._load()
        except BaseException:
            self.lock.release()
            raise

    # ------------------------------------------------------------ disk

    def _load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
                raise ValueError(f"not a {STATE_FORMAT} file")
            machine = FileMetadataMachine.from_json(document["machine"])
            last_applied = wire.decode_index(document["last_applied"], "last_applied")
            owner = document.get("owner")
            if owner is not None and not isinstance(owner, str):
                raise ValueError(f"owner {owner!r:.40} is not a string")
            recent = OrderedDict(
                (wire.decode_index(i, "a recent result's index", 1), r)
                for i, r in document.get("recent", [])
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise CorruptStorageError(self.path, None, f"unreadable executor state: {e}") from None
        self.machine = machine
        self.last_applied = last_applied
        self.owner = owner
        self._recent = recent

    def _save(self) -> None:
        document = {
            "format": STATE_FORMAT,
            "owner": self.owner,
            "last_applied": self.last_applied,
            "machine": self.machine.to_json(),
            "recent": [[i, r] for i, r in self._recent.items()],
        }
        atomic_write(self.path, json.dumps(document, separators=(",", ":")).encode("utf-8"))

    def _reload_after_failure(self) -> None:
        """Throw away in-memory changes that could not be made durable."""
        self.machine = FileMetadataMachine()
        self.last_applied = 0
        self.owner = None
        self._recent = OrderedDict()
        self._load()

    def close(self) -> None:
        """Release the directory lock."""
        self.lock.release()

    # ------------------------------------------------------------ owner

    def check_owner(self, owner: str) -> bool:
        """Raise OwnerMismatch unless ``owner`` is (or may become) this executor's owner.

        Return True when the executor is not bound yet (the caller binds it
        with its next durable change).
        """
        if self.owner is None:
            return True
        if owner != self.owner:
            raise OwnerMismatch(f"this executor serves {self.owner!r}, not {owner!r}")
        return False

    # ------------------------------------------------------------ apply

    def execute_batch(
        self, owner: str, entries: Sequence[tuple[int, bytes]]
    ) -> list[dict[str, Any]]:
        """Apply the entries above ``last_applied`` in order, durably; return one result each.

        Entries at or below ``last_applied`` are answered from the result
        cache (``replayed``), or as ``unknown`` when their result is no
        longer kept. Raises ValueError (nothing applied) when the indexes are
        not strictly increasing, OwnerMismatch for a foreign owner, and
        whatever the disk raises (in-memory changes are rolled back).
        """
        self._refuse_if_lost()
        for (a, _), (b, _) in pairwise(entries):
            if b <= a:
                raise ValueError(f"entry indexes must increase: {a} then {b}")
        bind = self.check_owner(owner)
        results: list[dict[str, Any]] = []
        changed = False
        for index, command in entries:
            if index <= self.last_applied:
                cached = self._recent.get(index)
                if cached is None:
                    results.append({"index": index, "replayed": True, "unknown": True})
                else:
                    results.append({"index": index, "replayed": True, **cached})
                continue
            try:
                outcome: dict[str, Any] = {"result": self.machine.apply(index, command)}
            except CommandRejected as e:
                outcome = {"error": str(e)}
            self.last_applied = index
            self._remember(index, outcome)
            results.append({"index": index, **outcome})
            changed = True
        if changed:
            if bind:
                self.owner = owner
            self._durably()
        return results

    def _refuse_if_lost(self) -> None:
        if self.lost is not None:
            raise FolderLostError(f"the executor stopped: {self.lost}")

    def _remember(self, index: int, outcome: dict[str, Any]) -> None:
        self._recent[index] = outcome
        while len(self._recent) > RESULT_CACHE_SIZE:
            self._recent.popitem(last=False)

    def _durably(self) -> None:
        try:
            self._save()
        except BaseException:
            check = self.folder_check
            if check is not None and check() is not None:
                raise  # the folder is gone: stopping, with the state kept
            log.failure("could not save the executor state; rolling back to the last saved")
            self._reload_after_failure()
            raise

    # -------------------------------------------------------- snapshots

    def snapshot(self) -> tuple[int, bytes]:
        """Return ``(last_applied, state bytes)``: the whole machine at that index."""
        data = json.dumps(self.machine.to_json(), separators=(",", ":")).encode("utf-8")
        return self.last_applied, data

    def restore(self, owner: str, index: int, data: bytes) -> None:
        """Replace the machine by ``data`` (from :meth:`snapshot`) taken at ``index``; durably.

        Raises ValueError (nothing changes) when ``data`` is malformed.
        """
        self._refuse_if_lost()
        bind = self.check_owner(owner)
        if index < 0:
            raise ValueError("index must not be negative")
        try:
            machine = FileMetadataMachine.from_json(json.loads(data))
        except (ValueError, RecursionError) as e:
            raise ValueError(f"bad snapshot: {e}") from None
        self.machine = machine
        self.last_applied = index
        self._recent.clear()
        if bind:
            self.owner = owner
        self._durably()
        log.info("restored a snapshot at {index} ({n} files)", index=index, n=len(machine))
