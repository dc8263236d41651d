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

from collections.abc import Callable, Generator, Iterator, Sequence
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from leeky_twisted.interfaces import ISnapshotSink, ISnapshotStore

__all__ = ["SNAPSHOT_SLICE_BYTES", "slices", "write_in_slices"]

#: bytes of snapshot data per disk job
SNAPSHOT_SLICE_BYTES = 1 << 20

RunBlocking = Callable[[Callable[[], Any]], "Deferred[Any]"]


def slices(parts: Sequence[bytes], slice_bytes: int) -> Iterator[list[memoryview]]:
    """Group ``parts``, in order, into runs of at most ``slice_bytes`` (big parts are cut)."""
    if slice_bytes < 1:
        raise ValueError("slice_bytes must be positive")
    run: list[memoryview] = []
    room = slice_bytes
    for part in parts:
        view = memoryview(part)
        while len(view):
            piece = view[:room]
            run.append(piece)
            view = view[len(piece) :]
            room -= len(piece)
            if room == 0:
                yield run
                run = []
                room = slice_bytes
    if run:
        yield run


@inlineCallbacks
def write_in_slices(
    run: RunBlocking,
    store: ISnapshotStore,
    meta: object,
    parts: Sequence[bytes],
    slice_bytes: int = SNAPSHOT_SLICE_BYTES,
) -> Generator[Deferred[Any], Any, None]:
    """Create, write and close the snapshot ``meta`` of the concatenated ``parts``.

    Each slice is handed to ``run`` only once the previous one is done, so jobs
    queued meanwhile run first. The returned Deferred fires once the snapshot
    is durable and visible, or fails with the store's error, the partial
    snapshot discarded.
    """
    pending = slices(parts, slice_bytes)
    sink: ISnapshotSink = yield run(lambda: store.create(meta))

    def write(group: list[memoryview]) -> None:
        for piece in group:
            sink.write(bytes(piece))  # on the disk thread: a copy of one slice

    try:
        for group in pending:
            yield run(partial(write, group))
        yield run(sink.close)
    except Exception:
        run(sink.cancel).addErrback(lambda _: None)
        raise
