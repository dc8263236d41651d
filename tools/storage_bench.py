"""Measure durable appends per second: our segmented log vs SQLite WAL vs a plain file.

Every case makes each batch durable before the next (fdatasync, or a SQLite
commit with ``synchronous=FULL``), writes 100-byte entries and runs for a
fixed time. Run from the repository root::

    python tools/storage_bench.py --seconds 3 --dir .

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
MAX_BATCHES = 10_000_000


@dataclass(frozen=True)
class Result:
    """One measured case."""

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


def timed(name: str, batch: int, seconds: float, write_batch: Callable[[int], None]) -> Result:
    """Call ``write_batch(first_index)`` for ``seconds`` (bounded) and count the batches."""
    start = time.perf_counter()
    deadline = start + seconds
    batches = 0
    index = 1
    now = start
    while now < deadline and batches < MAX_BATCHES:
        write_batch(index)
        index += batch
        batches += 1
        now = time.perf_counter()
    return Result(name, batch, batches, now - start)


def bench_segmented_log(directory: str, batch: int, seconds: float) -> Result:
    """Append ``batch`` entries per FileLogStore.append (one fdatasync each)."""
    store = FileLogStore(os.path.join(directory, f"log-{batch}"))
    data = os.urandom(ENTRY_SIZE)

    def write_batch(first: int) -> None:
        store.append([Entry(index, 1, data=data) for index in range(first, first + batch)])

    try:
        return timed("segmented log (FileLogStore)", batch, seconds, write_batch)
    finally:
        store.close()


def bench_sqlite(directory: str, batch: int, seconds: float) -> Result:
    """Insert ``batch`` rows per transaction into SQLite in WAL mode with synchronous=FULL."""
    connection = sqlite3.connect(os.path.join(directory, f"log-{batch}.sqlite"))
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute(
        "CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER, kind INTEGER, data BLOB)"
    )
    data = os.urandom(ENTRY_SIZE)

    def write_batch(first: int) -> None:
        with connection:
            connection.executemany(
                "INSERT INTO log VALUES (?, 1, 0, ?)",
                ((index, data) for index in range(first, first + batch)),
            )

    try:
        return timed("SQLite WAL, synchronous=FULL", batch, seconds, write_batch)
    finally:
        connection.close()


def bench_plain_file(directory: str, batch: int, seconds: float) -> Result:
    """Append ``batch`` raw 100-byte records to one file, then fdatasync: the floor."""
    fd = os.open(os.path.join(directory, f"plain-{batch}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    payload = os.urandom(ENTRY_SIZE) * batch

    def write_batch(first: int) -> None:
        os.write(fd, payload)
        fdatasync(fd)

    try:
        return timed("plain file + fdatasync", batch, seconds, write_batch)
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
    """Run every case and print a Markdown table with the machine's description."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each case")
    parser.add_argument("--dir", default=".", help="directory on the disk to measure")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir)
    cases = [
        (bench_segmented_log, 1),
        (bench_segmented_log, 64),
        (bench_sqlite, 1),
        (bench_sqlite, 64),
        (bench_plain_file, 1),
        (bench_plain_file, 64),
    ]
    try:
        results = [bench(directory, batch, args.seconds) for bench, batch in cases]
    finally:
        shutil.rmtree(directory)
    print(f"- CPU: {cpu_model()}, nproc {os.cpu_count()}")
    print(f"- filesystem: {filesystem(args.dir)}; Python {platform.python_version()}, ", end="")
    print(f"SQLite {sqlite3.sqlite_version}; {ENTRY_SIZE}-byte entries, {args.seconds:g} s per case")
    print()
    print("| store | entries per sync | syncs/s | entries/s |")
    print("|---|---:|---:|---:|")
    for result in results:
        print(
            f"| {result.name} | {result.batch} | {result.batches_per_second:,.0f} "
            f"| {result.entries_per_second:,.0f} |"
        )


if __name__ == "__main__":
    main()
