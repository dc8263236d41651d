"""Append batches to a FileLogStore until killed, reporting each batch on stdout.

Run by ``test_file_log_kill.py`` as ``python log_writer_child.py DIR SEED TERM``.
Before each append it prints ``begin FIRST COUNT TERM``; once append() has
returned (the batch is fsynced) it prints ``ack``. Both lines are flushed, so
the parent knows every acknowledged batch and the one that may be in flight.
Some batches start below the last index, replacing a suffix. The loop is
bounded so an orphaned child still stops.
"""

from __future__ import annotations

import random
import sys

from leeky_twisted.core.messages import Entry
from leeky_twisted.storage.files import FileLogStore

MAX_BATCHES = 20_000
SEGMENT_SIZE = 16 * 1024


def payload(index: int, term: int) -> bytes:
    """Return the 100-byte data of the entry at ``index`` written in ``term``."""
    return f"{index}:{term}:".encode().ljust(100, b".")


def main() -> None:
    """Append random batches forever (bounded), printing begin/ack lines."""
    directory, seed, term = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    store = FileLogStore(directory, segment_size=SEGMENT_SIZE)
    print(f"ready {store.first_index()} {store.last_index()}", flush=True)
    for _ in range(MAX_BATCHES):
        term += 1
        first, last = store.first_index(), store.last_index()
        start = last + 1
        if rng.random() < 0.2:
            start = max(first, last + 1 - rng.randint(1, 80))
        count = rng.randint(1, 64)
        batch = [Entry(i, term, data=payload(i, term)) for i in range(start, start + count)]
        print(f"begin {start} {count} {term}", flush=True)
        store.append(batch)
        print("ack", flush=True)
    store.close()


if __name__ == "__main__":
    main()
