"""The Leeky Raft side of tools/coord_bench.py: the bundled Twisted client over AMP.

Nodes are ``twistd -n leekyraft`` (this tree's package, via PYTHONPATH) with the
project's defaults (fsync on), started by the shared yardstick's adapter. The
lock is the bundled recipe, ``leeky_twisted.client.recipes.acquire``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from coord_bench import (
    LOCK_NAME,
    WATCH_KEY,
    WATCH_WARM,
    CpuMeter,
    _value,
    increasing,
    latency_summary,
    watch_runs,
)
from harness import proc
from harness.adapters.leekyraft import LeekyRaftAdapter
from twisted.internet.defer import Deferred, gatherResults

from leeky_twisted.client.library import LeekyClient, with_timeout
from leeky_twisted.client.recipes import acquire

CLIENT = "Leeky Raft bundled Twisted client (LeekyClient, AMP), one connection per client"


def _gather(coros: list[Any]) -> Deferred[list[Any]]:
    return gatherResults([Deferred.fromCoroutine(c) for c in coros], consumeErrors=True)


async def watch_latency(
    reactor: Any, writer: LeekyClient, watchers: list[LeekyClient], puts: int
) -> dict[str, Any]:
    """See tools/coord_bench.py: ack-to-delivery latency of one key's puts."""
    n = len(watchers)
    arrivals: dict[int, list[float]] = {}
    complete: dict[int, Deferred[None]] = {}

    def on_events(events: list[Any]) -> None:
        now = time.perf_counter()
        for e in events:
            seq = int(e.value[:10])
            got = arrivals.setdefault(seq, [])
            got.append(now)
            d = complete.get(seq)
            if len(got) == n and d is not None and not d.called:
                d.callback(None)

    # every watch starts from the revision after a put all of them must see
    await writer.put(WATCH_KEY, _value(999_999_999))
    start = (await writer.get_kv(WATCH_KEY)).mod_revision
    watches = [w.watch(WATCH_KEY, on_events, start_revision=start) for w in watchers]
    first = complete[999_999_999] = Deferred()
    if len(arrivals.get(999_999_999, ())) < n:
        await with_timeout(first, 30, reactor)
    samples: list[float] = []
    from_send: list[float] = []
    early = 0
    warm = WATCH_WARM
    for seq in range(warm + puts):
        complete[seq] = Deferred()
        sent = time.perf_counter()
        await writer.put(WATCH_KEY, _value(seq))
        acked = time.perf_counter()
        if len(arrivals.get(seq, ())) < n:
            await with_timeout(complete[seq], 10, reactor)
        if seq >= warm:
            for t in arrivals[seq]:
                early += t < acked
                samples.append(max(0.0, t - acked))
                from_send.append(t - sent)
        del arrivals[seq]
    for w in watches:
        w.cancel()
    sent_summary = latency_summary(from_send)
    return {
        **latency_summary(samples),
        "early": early,
        "watchers": n,
        "send_p50_ms": sent_summary["p50_ms"],
        "send_p99_ms": sent_summary["p99_ms"],
    }


async def lock_cycles(clients: list[LeekyClient], seconds: float) -> dict[str, Any]:
    """8 contenders acquire and release one lock in a loop; count cycles."""
    tokens: list[int] = []
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def contender(c: LeekyClient) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            lock = await acquire(c, LOCK_NAME, ttl=int(seconds) + 60)
            tokens.append(lock.token)
            await lock.release()
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await _gather([contender(c) for c in clients])
    wall = time.perf_counter() - t0
    return {
        **latency_summary(lat),
        "per_s": len(lat) / wall,
        "token_order_ok": increasing(tokens),
        "contenders": len(clients),
    }


async def txn_rate(clients: list[LeekyClient], seconds: float, cap: int) -> dict[str, Any]:
    """64 in flight: each a txn of 4 value compares and 4 puts on the client's own keys."""
    lat: list[float] = []
    failed = 0
    warm = 3
    sent = [0]  # every txn, the warm-up ones included (for CPU per txn)
    count = [0]
    stop = [0.0]
    started: Deferred[None] = Deferred()
    warmed, begun = [0], [0.0]

    async def client(i: int) -> None:
        nonlocal failed
        c = clients[i]
        keys = [f"coordbench/txn/{i}/{j}" for j in range(4)]
        current = [_value(0)] * 4
        for k in keys:
            await c.put(k, current[0])
        seq = 0
        while True:
            if seq >= warm and (time.perf_counter() >= stop[0] or count[0] >= cap):
                return
            seq += 1
            new = _value(seq)
            cmps = [
                {"key": k, "target": "value", "op": "==", "value": v}
                for k, v in zip(keys, current, strict=True)
            ]
            puts = [{"type": "put", "key": k, "value": new} for k in keys]
            t0 = time.perf_counter()
            r = await c.txn(cmps, puts)
            sent[0] += 1
            if seq > warm:
                lat.append(time.perf_counter() - t0)
                count[0] += 1
            if not r.succeeded:
                failed += 1
            current = [new] * 4
            if seq == warm:
                warmed[0] += 1
                if warmed[0] == len(clients):
                    begun[0] = time.perf_counter()
                    stop[0] = begun[0] + seconds
                    started.callback(None)
                else:
                    # a Deferred may be awaited by one coroutine only: chain a fresh one
                    mine: Deferred[None] = Deferred()
                    started.addCallback(lambda _, d=mine: d.callback(None))
                    await mine

    await _gather([client(i) for i in range(len(clients))])
    wall = time.perf_counter() - begun[0]
    return {
        **latency_summary(lat),
        "per_s": len(lat) / wall,
        "failed": failed,
        "in_flight": len(clients),
        "all_txns": sent[0],
    }


def _profile(
    name: str, pids: dict[str, int], seconds: float | None
) -> list[subprocess.Popen[bytes]]:
    """With $COORD_BENCH_PYSPY=DIR, sample each pid with py-spy for ``seconds`` (measuring only).

    ``seconds`` None: until the sampler is sent SIGINT (:func:`_stop_profiles`).
    """
    where = os.environ.get("COORD_BENCH_PYSPY")
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not where:
        return []
    os.makedirs(where, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                *(["--duration", str(int(seconds))] if seconds is not None else []),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                os.path.join(where, f"{name}-{who}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for who, pid in pids.items()
    ]


async def _leader_stats(writer: LeekyClient) -> dict[str, float]:
    """Return the leader's counters (Readies, disk writes, entries written, messages sent)."""
    status = await writer.status()
    return {k: v for k, v in status.get("stats", {}).items() if isinstance(v, int | float)}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Return how much each counter grew."""
    return {k: round(after[k] - before.get(k, 0), 6) for k in after}


def _stop_profiles(spies: list[subprocess.Popen[bytes]]) -> None:
    """End open-ended samplers (SIGINT: py-spy writes its file) and wait for them."""
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(timeout=60)


async def _run(
    reactor: Any, args: argparse.Namespace, addresses: list[tuple[str, int]], pids: dict[str, int]
) -> dict[str, Any]:
    def clients(n: int, only: int | None = None) -> list[LeekyClient]:
        chosen = addresses if only is None else [addresses[only]]
        return [LeekyClient(reactor, chosen) for _ in range(n)]

    result: dict[str, Any] = {"system": "leekyraft", "client": CLIENT}
    made: list[LeekyClient] = []
    writer = clients(1)[0]
    made.append(writer)
    profiled = {k: pids[k] for k in ("leader", "follower1", "client")}
    for name, n, puts, follows in watch_runs(args):
        ws = clients(n, only=1 if follows else 0)
        made += ws
        watching = _profile(name, profiled, None)
        meter = CpuMeter(pids)
        result[name] = await watch_latency(reactor, writer, ws, puts)
        result[name].update(meter.read(puts + WATCH_WARM))
        _stop_profiles(watching)
    spies: list[subprocess.Popen[bytes]] = []
    if "lock" in args.workloads:
        cs = clients(args.lock_contenders)
        made += cs
        spies += _profile("lock", profiled, args.lock_seconds)
        meter = CpuMeter(pids)
        result["lock"] = await lock_cycles(cs, args.lock_seconds)
        result["lock"].update(meter.read())
    if "txn" in args.workloads:
        ts = clients(args.txn_clients)
        made += ts
        spies += _profile("txn", profiled, args.txn_seconds)
        before = await _leader_stats(writer)
        meter = CpuMeter(pids)
        result["txn"] = await txn_rate(ts, args.txn_seconds, args.txn_ops)
        result["txn"].update(meter.read(result["txn"]["all_txns"]))
        result["txn"]["leader_stats"] = _delta(before, await _leader_stats(writer))
    for c in made:
        c.close()
    for spy in spies:
        spy.wait(timeout=60)
    return result


def run_leeky(args: argparse.Namespace) -> dict[str, Any]:
    """Start 3 nodes, run the workloads on the Twisted reactor, stop them; return the result."""
    workdir = tempfile.mkdtemp(prefix="bench-coord-leeky-")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    adapter = LeekyRaftAdapter(nodes=3, workdir=workdir, options={"twistd": twistd})
    try:
        adapter.start()
        leader = asyncio.run(adapter.wait_leader())
        ports = adapter.client_ports
        # the leader first: writes go to it straight away, as the etcd clients' do
        order = [leader] + [i for i in range(3) if i != leader]
        addresses = [(proc.LOOPBACK, ports[i]) for i in order]
        pids = {"leader": adapter.procs[leader].pid, "client": os.getpid()}
        pids.update({f"follower{k}": adapter.procs[order[k]].pid for k in (1, 2)})
        from twisted.internet import reactor

        out: dict[str, Any] = {}

        def finish(r: Any) -> None:
            out["result"] = r
            reactor.stop()

        reactor.callWhenRunning(
            lambda: Deferred.fromCoroutine(_run(reactor, args, addresses, pids)).addBoth(finish)
        )
        reactor.run()
        r = out.get("result")
        if not isinstance(r, dict):
            raise RuntimeError(f"the Leeky Raft run failed: {r}")
        r["describe"] = {**adapter.describe(), "client": CLIENT}
        return r
    finally:
        adapter.stop()
        shutil.rmtree(workdir, ignore_errors=True)
