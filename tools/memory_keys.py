"""Resident memory of each node after N distinct small keys, for leekyraft and etcd.

    python tools/memory_keys.py [KEYS] [SYSTEM ...]

Uses the shared bench harness (../shared/bench) to start a 3-node cluster of each
system, writes KEYS distinct keys (100-byte values) with 64 clients in flight, and
prints every node's VmRSS.
"""

import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench"))

from harness.adapters import load_adapter


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def fill(adapter, keys: int) -> float:
    leader = await adapter.wait_leader()
    clients = [await adapter.open_client(leader) for _ in range(64)]
    value = b"x" * 100
    counter = iter(range(keys))
    started = time.perf_counter()

    async def loop(c):
        for i in counter:
            await c.put(f"mem/{i:08d}", value)

    await asyncio.gather(*(loop(c) for c in clients))
    for c in clients:
        await c.close()
    return time.perf_counter() - started


def main() -> None:
    keys = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    systems = sys.argv[2:] or ["leekyraft", "etcd"]
    for name in systems:
        with tempfile.TemporaryDirectory(prefix=f"mem-{name}-") as d:
            adapter = load_adapter(name)(3, d, {})
            adapter.start()
            try:
                took = asyncio.run(fill(adapter, keys))
                rss = [rss_mib(p.pid) for p in adapter.procs]
                print(
                    f"{name}: {keys} keys written in {took:.0f} s; node RSS "
                    + ", ".join(f"{r:.0f} MiB" for r in rss),
                    flush=True,
                )
            finally:
                adapter.stop()


if __name__ == "__main__":
    main()
