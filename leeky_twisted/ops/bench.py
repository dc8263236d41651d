"""``leekyraft bench``: measure a running cluster from a user's seat.

Runs a bounded number of operations (and at most a time limit) with a number
of concurrent clients over the bundled AMP client library, shows a progress
line while it runs, and prints throughput and latency percentiles.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from twisted.internet import defer

from leeky_twisted.client.library import (
    DEFAULT_ATTEMPT_TIMEOUT,
    Address,
    Connector,
    LeekyClient,
)


@dataclass
class BenchResult:
    """What one benchmark run measured."""

    workload: str
    clients: int
    ops: int
    errors: int
    seconds: float
    latencies: list[float]
    #: When each successful operation started, in seconds since the clock
    #: started (same order as ``latencies``).
    starts: list[float] = field(default_factory=list)
    #: (start, seconds until it failed) of each failed operation.
    failures: list[tuple[float, float]] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """Return the nearest-rank percentile ``p`` (0-100) of latencies, in seconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def summary(self) -> str:
        """Return the human-readable result lines."""
        rate = self.ops / self.seconds if self.seconds else 0.0
        ms = [self.percentile(p) * 1000 for p in (50, 90, 99)]
        return (
            f"{self.workload}: {self.ops} ops ({self.errors} errors) in {self.seconds:.1f} s "
            f"with {self.clients} clients: {rate:,.0f} ops/s\n"
            f"latency p50 {ms[0]:.2f} ms  p90 {ms[1]:.2f} ms  p99 {ms[2]:.2f} ms  "
            f"max {max(self.latencies, default=0) * 1000:.2f} ms"
        )


class Progress:
    """Show how far a run is: a bar redrawn in place on a terminal, plain lines elsewhere.

    Written to a file or a pipe, ``\\r`` frames would pile up on one line, so
    there each update is a line of its own.
    """

    def __init__(self, out: TextIO | None, ops: int) -> None:
        self.out = out
        self.ops = ops
        isatty = getattr(out, "isatty", None)
        self.live = bool(isatty()) if isatty is not None else False

    def update(self, done: int, elapsed: float) -> None:
        """Show ``done`` of ``ops`` operations after ``elapsed`` seconds."""
        if self.out is None:
            return
        rate = done / max(elapsed, 1e-9)
        if self.live:
            width = 30
            filled = int(width * done / self.ops) if self.ops else width
            bar = f"[{'#' * filled}{'.' * (width - filled)}]"
            self.out.write(f"\r{bar} {done}/{self.ops} {rate:,.0f}/s ")
        else:
            self.out.write(f"{elapsed:.1f} s: {done}/{self.ops} ops, {rate:,.0f}/s\n")
        self.out.flush()

    def finish(self) -> None:
        """End the in-place bar with a newline (plain lines need none)."""
        if self.out is not None and self.live:
            self.out.write("\n")
            self.out.flush()


async def run_bench(
    reactor: Any,
    cluster: list[Address],
    workload: str = "put",
    clients: int = 16,
    ops: int = 5000,
    seconds: float = 30.0,
    value_size: int = 100,
    keys: int = 1000,
    out: TextIO | None = sys.stderr,
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    connect: Connector | None = None,
) -> BenchResult:
    """Drive ``clients`` concurrent loops of ``workload`` (put or get) against the cluster.

    Each client moves on from a node that cannot be reached or falls silent
    after ``attempt_timeout`` (see :class:`LeekyClient`); ``connect`` opens
    its connections (tests pass an in-memory one).
    """
    if workload not in ("put", "get"):
        raise ValueError("workload must be put or get")
    rng = random.Random()
    value = rng.randbytes(value_size // 2 + 1).hex()[:value_size]
    prefix = f"bench/{os.getpid()}/"
    conns = [
        LeekyClient(
            reactor, cluster, timeout=10.0, attempt_timeout=attempt_timeout, connect=connect
        )
        for _ in range(clients)
    ]
    if workload == "put":  # each writer registers its session (a log entry) before the clock
        await defer.gatherResults([c.open_session() for c in conns])
    if workload == "get":
        await conns[0].put(prefix + "0", value)
    latencies: list[float] = []
    starts: list[float] = []
    failures: list[tuple[float, float]] = []
    state = {"issued": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + seconds

    async def loop(client: LeekyClient) -> None:
        while state["issued"] < ops and time.perf_counter() < deadline:
            i = state["issued"]
            state["issued"] += 1
            key = prefix + str(i % keys if workload == "put" else 0)
            t = time.perf_counter()
            try:
                if workload == "put":
                    await client.put(key, value)
                else:
                    await client.get(key)
            except Exception:
                state["errors"] += 1
                failures.append((t - started, time.perf_counter() - t))
                continue
            latencies.append(time.perf_counter() - t)
            starts.append(t - started)

    shown = Progress(out, ops)

    def progress() -> None:
        shown.update(len(latencies) + state["errors"], time.perf_counter() - started)

    from twisted.internet import task

    ticker = task.LoopingCall(progress)
    ticker.clock = reactor
    ticker.start(0.25 if shown.live else 1.0)
    try:
        await defer.gatherResults([defer.Deferred.fromCoroutine(loop(c)) for c in conns])
    finally:
        ticker.stop()
        progress()
        shown.finish()
        for c in conns:
            c.close()
    return BenchResult(
        workload,
        clients,
        len(latencies),
        state["errors"],
        time.perf_counter() - started,
        latencies,
        starts,
        failures,
    )
