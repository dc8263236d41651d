"""Measure durable appends per second: our segmented log vs SQLite WAL vs a plain file.

Every case makes each batch durable before the next (fdatasync, or a SQLite
commit with ``synchronous=FULL``), writes 100-byte entries and runs for a
fixed time. Run from the repository root::

    python tools/storage_bench.py --seconds 2 --repeat 3 --dir .

and paste the printed Markdown into docs/storage.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from leeky_twisted.core.messages import Entry
from leeky_twisted.storage.files import FileLogStore
from leeky_twisted.storage.fsutil import fdatasync

ENTRY_SIZE = 100
PAYLOAD = os.urandom(ENTRY_SIZE)
MAX_BATCHES = 10_000_000


@dataclass(frozen=True)
class Result:
    """One measured run: ``batches`` durable batches of ``batch`` entries in ``seconds``."""

    name: str
    batch: int
    batches: int
    seconds: float

    @property
    def batches_per_second(self) -> float:
        return self.batches / self.seconds

    @property
    def entries_per_second(self) -> float:
        return self.batches * self.batch / self.seconds


Writer = Callable[[list[Entry]], None]


def make_batch(first: int, batch: int) -> list[Entry]:
    """Return ``batch`` consecutive 100-byte entries starting at ``first``."""
    return [Entry(index, 1, data=PAYLOAD) for index in range(first, first + batch)]


def timed(name: str, batch: int, seconds: float, write: Writer) -> Result:
    """Call ``write`` with fresh batches for about ``seconds`` (bounded); time only ``write``.

    Building the Entry objects is left out: the node already holds them.
    """
    deadline = time.perf_counter() + seconds
    writing = 0.0
    batches = 0
    index = 1
    while time.perf_counter() < deadline and batches < MAX_BATCHES:
        entries = make_batch(index, batch)
        started = time.perf_counter()
        write(entries)
        writing += time.perf_counter() - started
        index += batch
        batches += 1
    return Result(name, batch, batches, writing)


def bench_segmented_log(directory: str, batch: int, seconds: float) -> Result:
    """Append ``batch`` entries per FileLogStore.append (one fdatasync each)."""
    store = FileLogStore(tempfile.mkdtemp(prefix="log-", dir=directory))
    try:
        return timed("segmented log (FileLogStore)", batch, seconds, store.append)
    finally:
        store.close()


def bench_sqlite(directory: str, batch: int, seconds: float) -> Result:
    """Insert ``batch`` rows per transaction into SQLite in WAL mode with synchronous=FULL."""
    _, path = tempfile.mkstemp(prefix="log-", suffix=".sqlite", dir=directory)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(
        "CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, kind INTEGER, data BLOB)"
    )

    def write(entries: list[Entry]) -> None:
        with connection:  # one transaction: BEGIN ... COMMIT (fsync of the WAL)
            connection.executemany(
                "INSERT INTO log VALUES (?, ?, ?, ?)",
                [(e.index, e.term, int(e.kind), e.data) for e in entries],
            )

    try:
        return timed("SQLite WAL, synchronous=FULL", batch, seconds, write)
    finally:
        connection.close()


def bench_plain_file(directory: str, batch: int, seconds: float) -> Result:
    """Append the batch's raw data to one file, then fdatasync: the floor for any log."""
    fd, _ = tempfile.mkstemp(prefix="plain-", dir=directory)

    def write(entries: list[Entry]) -> None:
        os.write(fd, b"".join(e.data for e in entries))
        fdatasync(fd)

    try:
        return timed("plain file + fdatasync", batch, seconds, write)
    finally:
        os.close(fd)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem(path: str) -> str:
    """Return "device fstype" of the mount holding ``path`` (Linux), or "unknown"."""
    path = os.path.realpath(path)
    best = ("", "unknown")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount_point, fstype, *_ = line.split()
                inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best[0]):
                    best = (mount_point, f"{device} {fstype}")
    except OSError:
        pass
    return best[1]


def main() -> None:
    """Run every case ``--repeat`` times, interleaved, and print the medians as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median shown)")
    parser.add_argument("--dir", default=".", help="directory on the disk to measure")
    args = parser.parse_args()
    cases = [
        (bench_segmented_log, 1),
        (bench_segmented_log, 64),
        (bench_sqlite, 1),
        (bench_sqlite, 64),
        (bench_plain_file, 1),
        (bench_plain_file, 64),
    ]
    runs: list[list[Result]] = [[] for _ in cases]
    directory = tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir)
    try:
        for _ in range(args.repeat):
            for position, (bench, batch) in enumerate(cases):
                runs[position].append(bench(directory, batch, args.seconds))
    finally:
        shutil.rmtree(directory)
    print(f"- CPU: {cpu_model()}, nproc {os.cpu_count()}")
    print(f"- filesystem: {filesystem(args.dir)}")
    print(f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"- {ENTRY_SIZE}-byte entries; median of {args.repeat} runs of {args.seconds:g} s")
    print()
    print("| store | entries per sync | syncs/s | entries/s |")
    print("|---|---:|---:|---:|")
    for results in runs:
        result = sorted(results, key=lambda r: r.batches_per_second)[len(results) // 2]
        print(
            f"| {result.name} | {result.batch} | {result.batches_per_second:,.0f} "
            f"| {result.entries_per_second:,.0f} |"
        )


if __name__ == "__main__":
    main()
