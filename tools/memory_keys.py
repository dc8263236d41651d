"""Resident memory of each node after N distinct small keys, for leekyraft and etcd.

    python tools/memory_keys.py [KEYS] [SYSTEM ...]

Uses the shared bench harness (../shared/bench) to start a 3-node cluster of each
system, writes KEYS distinct keys (100-byte values) with 64 clients in flight, and
prints every node's VmRSS right after the last write, then settled: the lowest of each
node's VmRSS sampled every 0.5 s for the next SETTLE seconds (default 15; environment
variable MEMORY_SETTLE_S). A snapshot under way when the writes end holds shallow copies of
the key maps (about 100 MB at a million keys) until it is written; the settled figure is
the footprint of the state itself.
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


async def settle(pids: list[int], rss: list[float], seconds: float) -> list[float]:
    """Return each process's lowest VmRSS, sampled every 0.5 s for ``seconds``."""
    lowest = list(rss)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        lowest = [min(low, rss_mib(pid)) for low, pid in zip(lowest, pids, strict=True)]
    return lowest


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
                seconds = float(os.environ.get("MEMORY_SETTLE_S", "15"))
                settled = asyncio.run(settle([p.pid for p in adapter.procs], rss, seconds))
                print(
                    f"{name}: {keys} keys written in {took:.0f} s; node RSS "
                    + ", ".join(f"{r:.0f} MiB" for r in rss)
                    + "; settled "
                    + ", ".join(f"{r:.0f} MiB" for r in settled),
                    flush=True,
                )
            finally:
                adapter.stop()


if __name__ == "__main__":
    main()
