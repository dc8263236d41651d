"""The snapshot policy of a node: when to snapshot, what to keep, how to write it.

A snapshot is due after ``snapshot_entries`` applied entries, or once the
entries applied since the last one hold ``snapshot_bytes`` of data. It keeps
up to ``snapshot_trailing`` entries in the log behind it for slow followers
(no more than a quarter of ``snapshot_bytes`` of them). The state is captured
at once and serialized a piece per reactor turn; the file is written and the
log compacted on the disk thread.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from leeky_twisted.core.messages import SnapshotMeta
from leeky_twisted.core.raft import RaftCore
from leeky_twisted.interfaces import ILogStore, ISnapshotStore
from leeky_twisted.server.snapshot_write import write_in_slices

if TYPE_CHECKING:
    from leeky_twisted.server.addresses import AddressBook
    from leeky_twisted.server.applier import Applier
    from leeky_twisted.server.node import NodeSettings

log = Logger()


def encode_snapshot(addresses: Mapping[str, Mapping[str, str]], state: bytes) -> bytes:
    """Wrap the state machine's snapshot with the node's address book."""
    head = json.dumps(addresses, sort_keys=True).encode()
    return struct.pack(">I", len(head)) + head + state


def decode_snapshot(data: bytes) -> tuple[dict[str, dict[str, str]], bytes]:
    """Split a node snapshot into (address book, state machine bytes)."""
    if len(data) < 4:
        raise ValueError("snapshot too short")
    (n,) = struct.unpack(">I", data[:4])
    return json.loads(data[4 : 4 + n]), data[4 + n :]


class Snapshots:
    """Decide when a node snapshots, take the snapshot and compact the log."""

    def __init__(
        self,
        reactor: Any,
        settings: NodeSettings,
        core: RaftCore,
        log_store: ILogStore,
        snapshot_store: ISnapshotStore,
        addresses: AddressBook,
        applier: Applier,
        on_disk: Callable[[Callable[[], Any]], Deferred[Any]],
        stopped: Callable[[], bool],
        applied_index: Callable[[], int],
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._core = core
        self._log_store = log_store
        self._snapshot_store = snapshot_store
        self._addresses = addresses
        self._applier = applier
        self._on_disk = on_disk
        self._stopped = stopped
        self._applied_index = applied_index
        self.taking = False  #: a snapshot is being taken
        self._trailing = settings.snapshot_trailing
        #: bytes of entry data applied since start, and that count when the latest
        #: snapshot (or the one being taken) was taken: cheap to keep on the hot path
        self.applied_bytes = 0
        self.bytes_at_snapshot = 0
        self._bytes_mark = 0

    def note_applied(self, data_bytes: int) -> None:
        """Count ``data_bytes`` of entry data just applied."""
        self.applied_bytes += data_bytes

    def installed(self) -> None:
        """A received snapshot replaced the state: count from here."""
        self.bytes_at_snapshot = self.applied_bytes

    def due(self, applied: int, base: int) -> bool:
        """Whether the log since the snapshot at ``base`` is long or large enough to compact."""
        if applied <= base:
            return False
        if applied - base >= self._settings.snapshot_entries:
            return True
        return self.applied_bytes - self.bytes_at_snapshot >= self._settings.snapshot_bytes

    def maybe_snapshot(self) -> None:
        """Start a snapshot if one is due and none is being taken."""
        core = self._core
        base = core.snapshot_meta.index if core.snapshot_meta else 0
        if self.taking or not self.due(core.applied, base):
            return
        self._applier.take_snapshot(self, base)

    def snapshot_now(self, trailing: int | None = None) -> bool:
        """Start a snapshot of the state at the applied index; False if one can't start now.

        ``trailing`` entries (default: the settings') stay in the log behind it.
        """
        core = self._core
        if self.taking or self._stopped():
            return False
        if self._applied_index() != core.applied or core.applied <= core.log.start:
            return False  # a received snapshot is not restored yet, or nothing new
        # The state is captured now (consistent at meta.index); serializing it
        # happens a piece per reactor turn so a large state never stalls
        # heartbeats (a stall would look like a dead leader).
        pieces = self._applier.capture()
        if pieces is None:
            return False  # the state is in another process
        meta = core.snapshot_meta_at(core.applied)
        self.begin()
        parts = [encode_snapshot(self._addresses.as_dict(), b"")]
        self._trailing = self._settings.snapshot_trailing if trailing is None else trailing
        self._serialize_step(meta, pieces, parts)
        return True

    def begin(self) -> None:
        """Mark a snapshot as being taken of what is applied now."""
        self.taking = True
        self._bytes_mark = self.applied_bytes

    def abandon(self) -> None:
        """The snapshot being taken will not be written."""
        self.taking = False

    def trailing_entries(self, index: int, trailing: int) -> int:
        """Return how many of the ``trailing`` entries up to ``index`` to keep.

        At most ``trailing``, and no more than a quarter of ``snapshot_bytes``
        of data: large values must not keep gigabytes behind each snapshot.
        Reads the in-memory log once per snapshot, never on the hot path.
        """
        budget = self._settings.snapshot_bytes // 4
        log_ = self._core.log
        kept = 0
        i = index
        while kept < trailing and i > log_.start:
            budget -= len(log_.entry_at(i).data)
            if budget < 0:
                break
            kept += 1
            i -= 1
        return kept

    def _serialize_step(
        self, meta: SnapshotMeta, pieces: Iterator[bytes], parts: list[bytes]
    ) -> None:
        if self._stopped():
            self.taking = False
            return
        for piece in pieces:
            parts.append(piece)
            self._reactor.callLater(0, self._serialize_step, meta, pieces, parts)
            return
        self.write(meta, parts)

    def write(self, meta: SnapshotMeta, parts: list[bytes]) -> None:
        """Write the snapshot of the concatenated ``parts`` at ``meta`` (a slice per
        disk job, see snapshot_write), then compact the log behind it."""
        trailing, self._trailing = self._trailing, self._settings.snapshot_trailing
        kept = self.trailing_entries(meta.index, trailing)
        upto = self._applier.compaction_limit(max(meta.index - kept, 0), kept)
        mark = self._bytes_mark
        store = self._snapshot_store

        def done(_: object) -> Deferred[Any]:
            self._core.compact(meta, upto)
            start = self._core.log.start
            return self._on_disk(lambda: self._log_store.compact(start))

        def finished(result: object) -> None:
            self.taking = False
            self.bytes_at_snapshot = max(self.bytes_at_snapshot, mark)
            log.info(
                "snapshot at {index} ({size} bytes); log compacted to {upto}",
                index=meta.index,
                size=sum(len(p) for p in parts),
                upto=upto,
            )

        def failed(f: Failure) -> None:
            self.taking = False
            log.failure("snapshot failed", f)

        d = write_in_slices(self._on_disk, store, meta, parts)
        d.addCallback(done)
        d.addCallbacks(finished, failed)
