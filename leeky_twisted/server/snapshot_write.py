"""Write a snapshot on the disk thread one slice per job.

The node has one disk thread, which runs its jobs in order. A snapshot written
in one job holds that thread for as long as the whole state takes to write and
fsync (0.4-0.6 s for 65 MB on a busy machine), and every Ready queued behind it
waits: a follower's acknowledgements and heartbeat answers go out only after
its Ready is persisted, so a leader whose followers all snapshot at once hears
nothing for that long and steps down (issue 18). One slice per job lets the
Readies that arrive meanwhile run between slices; the sink syncs as it goes
(``FileSnapshotSink``), so no single job flushes the whole state.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from leeky_twisted.interfaces import ISnapshotSink, ISnapshotStore

__all__ = ["SNAPSHOT_SLICE_BYTES", "write_in_slices"]

#: bytes of snapshot data per disk job
SNAPSHOT_SLICE_BYTES = 1 << 20

RunBlocking = Callable[[Callable[[], Any]], "Deferred[Any]"]


@inlineCallbacks
def write_in_slices(
    run: RunBlocking,
    store: ISnapshotStore,
    meta: object,
    data: bytes,
    slice_bytes: int = SNAPSHOT_SLICE_BYTES,
) -> Generator[Deferred[Any], Any, None]:
    """Create, write and close the snapshot ``meta`` with ``data`` through ``run``.

    Each slice is handed to ``run`` only once the previous one is done, so jobs
    queued meanwhile run first. The returned Deferred fires once the snapshot
    is durable and visible, or fails with the store's error, the partial
    snapshot discarded.
    """
    if slice_bytes < 1:
        raise ValueError("slice_bytes must be positive")
    sink: ISnapshotSink = yield run(lambda: store.create(meta))
    view = memoryview(data)
    try:
        for start in range(0, len(view), slice_bytes):
            piece = view[start : start + slice_bytes]
            yield run(lambda piece=piece: sink.write(piece))
        yield run(sink.close)
    except Exception:
        run(sink.cancel).addErrback(lambda _: None)
        raise
