"""Measure a node's data folder after N small writes, with and without compaction.

    python tools/disk_use.py [WRITES]

Starts a 3-node local cluster twice (default snapshotting, and snapshots
effectively off), writes WRITES 100-byte values over 1,000 keys with
`leekyraft bench`, and prints each node's data folder size.
"""

import os
import sys
import tempfile
from pathlib import Path

from leeky_twisted.ops.localcluster import LocalCluster


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(writes: int, extra: list[str]) -> list[int]:
    with tempfile.TemporaryDirectory() as d:
        c = LocalCluster(Path(d), 3, extra)
        try:
            c.start()
            c.wait_for_leader()
            c.bench("--clients", "32", "--ops", str(writes), "--seconds", "600")
        finally:
            c.stop()
        return [folder_size(n.folder / "data") for n in c.nodes]


def main() -> None:
    writes = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for label, extra in (
        ("with compaction (--snapshot-entries 10000)", ["--snapshot-entries", "10000"]),
        (
            "without compaction (--snapshot-entries 1000000000)",
            ["--snapshot-entries", "1000000000"],
        ),
    ):
        sizes = run(writes, extra)
        mib = ", ".join(f"{s / 2**20:.1f} MiB" for s in sizes)
        print(f"{writes} writes {label}: data folders {mib}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
