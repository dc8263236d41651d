"""Lock cycles of the bundled recipe, with the time of each step (a diagnostic).

    PYTHONPATH=$PWD python tools/lock_steps.py [--seconds 6] [--contenders 8] [--bench-dir DIR]

Starts a 3-node cluster (the shared yardstick's adapter, fsync on), runs
``--contenders`` clients that acquire and release one lock in a loop, and
prints cycles per second and the p50/p90 of each step: the creating txn, the
wait for the predecessor's delete, the queue reads, the release.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from coord_bench import _bench_dir


def _timed(steps: dict[str, list[float]], name: str, fn: Any) -> Any:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            steps[name].append(time.perf_counter() - started)

    return timed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lock_steps.py", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--contenders", type=int, default=8)
    p.add_argument("--bench-dir", default=None, help="the shared yardstick (../shared/bench)")
    a = p.parse_args(argv)
    if a.seconds <= 0 or a.contenders < 1:
        p.error("--seconds must be positive and --contenders at least 1")
    sys.path.insert(0, str(_bench_dir(a.bench_dir)))
    from harness import proc
    from harness.adapters.leekyraft import LeekyRaftAdapter
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, gatherResults

    from leeky_twisted.client import recipes
    from leeky_twisted.client.library import LeekyClient

    steps: dict[str, list[float]] = collections.defaultdict(list)
    for name in ("_create", "_deleted"):
        setattr(recipes, name, _timed(steps, name.strip("_"), getattr(recipes, name)))

    async def run(addresses: list[tuple[str, int]]) -> None:
        clients = [LeekyClient(reactor, addresses) for _ in range(a.contenders)]
        for c in clients:
            c.range_prefix = _timed(steps, "queue read", c.range_prefix)  # type: ignore[method-assign]
        stop = time.perf_counter() + a.seconds
        cycles = [0]

        async def contender(c: LeekyClient) -> None:
            while time.perf_counter() < stop:
                lock = await recipes.acquire(c, "lock-steps", ttl=60)
                started = time.perf_counter()
                await lock.release()
                steps["release"].append(time.perf_counter() - started)
                cycles[0] += 1

        started = time.perf_counter()
        await gatherResults([Deferred.fromCoroutine(contender(c)) for c in clients])
        print(f"{cycles[0] / (time.perf_counter() - started):.1f} cycles/s")
        for name, values in steps.items():
            v = sorted(values)
            p50, p90 = v[len(v) // 2] * 1e3, v[int(len(v) * 0.9)] * 1e3
            print(f"{name}: {len(v)} times, p50 {p50:.1f} ms, p90 {p90:.1f} ms")
        for c in clients:
            c.close()

    workdir = tempfile.mkdtemp(prefix="lock-steps-")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    adapter = LeekyRaftAdapter(nodes=3, workdir=workdir, options={"twistd": twistd})
    try:
        adapter.start()
        leader = asyncio.run(adapter.wait_leader())
        order = [leader] + [i for i in range(3) if i != leader]
        addresses = [(proc.LOOPBACK, adapter.client_ports[i]) for i in order]
        failed: list[Any] = []

        def finish(result: Any) -> None:
            if result is not None:
                failed.append(result)
            reactor.stop()

        reactor.callWhenRunning(lambda: Deferred.fromCoroutine(run(addresses)).addBoth(finish))
        reactor.run()
        if failed:
            print(f"lock_steps: the run failed: {failed[0]}", file=sys.stderr)
            return 1
        return 0
    finally:
        adapter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
