"""The etcd side of tools/coord_bench.py: native gRPC (grpc.aio + aetcd's protobufs).

The lock is etcd's ``concurrency.Mutex`` recipe (clientv3/concurrency, 3.4),
written out over the raw RPCs: a session lease per contender (granted once),
``Txn(if create_revision(key) == 0 then put(key, lease) else get(key);
get(prefix, first create))``, and, unless its key is the oldest, a watch for
the delete of the key created just before its own; unlock is ``Delete(key)``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
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
from harness.adapters.etcd import EtcdAdapter

CLIENT = "etcd native gRPC: grpc.aio + aetcd's etcd protobufs, one channel per client"


class Grpc:
    """One gRPC channel to one etcd node, with the stubs the workloads use."""

    def __init__(self, port: int) -> None:
        import grpc
        from aetcd.rpc import rpc_pb2, rpc_pb2_grpc

        self.pb = rpc_pb2
        self.channel = grpc.aio.insecure_channel(f"{proc.LOOPBACK}:{port}")
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)

    async def ready(self) -> Grpc:
        await asyncio.wait_for(self.channel.channel_ready(), 10)
        return self


async def _watcher(c: Grpc, key: bytes, on_event: Any, created: asyncio.Event) -> None:
    pb = c.pb
    call = c.watch.Watch()
    await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=key)))
    async for resp in call:
        if resp.created:
            created.set()
        for ev in resp.events:
            on_event(ev.kv.value)


async def watch_latency(writer: Grpc, watchers: list[Grpc], puts: int) -> dict[str, Any]:
    """See tools/coord_bench.py: ack-to-delivery latency of one key's puts."""
    pb = writer.pb
    n = len(watchers)
    arrivals: dict[int, list[float]] = {}
    complete: dict[int, asyncio.Event] = {}

    def on_event(value: bytes) -> None:
        now = time.perf_counter()
        seq = int(value[:10])
        got = arrivals.setdefault(seq, [])
        got.append(now)
        if len(got) == n and seq in complete:
            complete[seq].set()

    tasks, ready = [], []
    for w in watchers:
        created = asyncio.Event()
        ready.append(created)
        tasks.append(asyncio.ensure_future(_watcher(w, WATCH_KEY.encode(), on_event, created)))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), 30)
    samples: list[float] = []
    from_send: list[float] = []
    early = 0
    warm = WATCH_WARM
    for seq in range(warm + puts):
        complete[seq] = asyncio.Event()
        sent = time.perf_counter()
        await writer.kv.Put(pb.PutRequest(key=WATCH_KEY.encode(), value=_value(seq).encode()))
        acked = time.perf_counter()
        if len(arrivals.get(seq, ())) < n:
            await asyncio.wait_for(complete[seq].wait(), 10)
        if seq >= warm:
            for t in arrivals[seq]:
                early += t < acked
                samples.append(max(0.0, t - acked))
                from_send.append(t - sent)
        del arrivals[seq]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sent_summary = latency_summary(from_send)
    return {
        **latency_summary(samples),
        "early": early,
        "watchers": n,
        "send_p50_ms": sent_summary["p50_ms"],
        "send_p99_ms": sent_summary["p99_ms"],
    }


class Mutex:
    """etcd's concurrency.Mutex over raw gRPC, for one contender with its session lease."""

    def __init__(self, c: Grpc, lease: int) -> None:
        self.c = c
        self.pfx = (LOCK_NAME + "/").encode()
        self.key = self.pfx + b"%x" % lease
        self.lease = lease

    async def lock(self) -> int:
        pb = self.c.pb
        end = _prefix_end(self.pfx)
        cmp = pb.Compare(
            key=self.key, result=pb.Compare.EQUAL, target=pb.Compare.CREATE, create_revision=0
        )
        put = pb.RequestOp(request_put=pb.PutRequest(key=self.key, value=b"", lease=self.lease))
        get = pb.RequestOp(request_range=pb.RangeRequest(key=self.key))
        owner = pb.RequestOp(
            request_range=pb.RangeRequest(
                key=self.pfx,
                range_end=end,
                sort_target=pb.RangeRequest.CREATE,
                sort_order=pb.RangeRequest.ASCEND,
                limit=1,
            )
        )
        r = await self.c.kv.Txn(
            pb.TxnRequest(compare=[cmp], success=[put, owner], failure=[get, owner])
        )
        my_rev = (
            r.header.revision
            if r.succeeded
            else r.responses[0].response_range.kvs[0].create_revision
        )
        kvs = r.responses[1].response_range.kvs
        if not kvs or kvs[0].create_revision == my_rev:
            return my_rev
        await self._wait_deletes(end, my_rev - 1)
        return my_rev

    async def _wait_deletes(self, end: bytes, max_rev: int) -> None:
        pb = self.c.pb
        for _ in range(10_000):
            r = await self.c.kv.Range(
                pb.RangeRequest(
                    key=self.pfx,
                    range_end=end,
                    sort_target=pb.RangeRequest.CREATE,
                    sort_order=pb.RangeRequest.DESCEND,
                    limit=1,
                    max_create_revision=max_rev,
                )
            )
            if not r.kvs:
                return
            await self._deleted(r.kvs[0].key, r.header.revision + 1)
        raise RuntimeError("lock: too many predecessors")

    async def _deleted(self, key: bytes, rev: int) -> None:
        pb = self.c.pb
        call = self.c.watch.Watch()
        await call.write(
            pb.WatchRequest(
                create_request=pb.WatchCreateRequest(
                    key=key, start_revision=rev, filters=[pb.WatchCreateRequest.NOPUT]
                )
            )
        )
        try:
            async for resp in call:
                if any(ev.type == ev.DELETE for ev in resp.events):
                    return
        finally:
            call.cancel()

    async def unlock(self) -> None:
        await self.c.kv.DeleteRange(self.c.pb.DeleteRangeRequest(key=self.key))


def _prefix_end(prefix: bytes) -> bytes:
    b = bytearray(prefix)
    b[-1] += 1
    return bytes(b)


async def lock_cycles(clients: list[Grpc], seconds: float) -> dict[str, Any]:
    """8 contenders acquire and release one lock in a loop; count cycles."""
    pb = clients[0].pb
    leases = [
        (await c.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=int(seconds) + 60))).ID for c in clients
    ]
    tokens: list[int] = []
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def contender(i: int) -> None:
        m = Mutex(clients[i], leases[i])
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            tokens.append(await m.lock())
            await m.unlock()
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(contender(i) for i in range(len(clients))))
    wall = time.perf_counter() - t0
    for c, lease in zip(clients, leases, strict=True):
        await c.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease))
    return {
        **latency_summary(lat),
        "per_s": len(lat) / wall,
        "token_order_ok": increasing(tokens),
        "contenders": len(clients),
    }


async def txn_rate(clients: list[Grpc], seconds: float, cap: int) -> dict[str, Any]:
    """64 in flight: each a txn of 4 value compares and 4 puts on the client's own keys."""
    pb = clients[0].pb
    lat: list[float] = []
    failed = 0
    warm = 3
    sent = [0]  # every txn, the warm-up ones included (for CPU per txn)
    count = [0]
    stop = [0.0]

    async def client(i: int) -> None:
        nonlocal failed
        c = clients[i]
        keys = [f"coordbench/txn/{i}/{j}".encode() for j in range(4)]
        current = [_value(0).encode()] * 4
        for k in keys:
            await c.kv.Put(pb.PutRequest(key=k, value=current[0]))
        seq = 0
        while True:
            if seq >= warm and (time.perf_counter() >= stop[0] or count[0] >= cap):
                return
            seq += 1
            new = _value(seq).encode()
            cmps = [
                pb.Compare(key=k, result=pb.Compare.EQUAL, target=pb.Compare.VALUE, value=v)
                for k, v in zip(keys, current, strict=True)
            ]
            puts = [pb.RequestOp(request_put=pb.PutRequest(key=k, value=new)) for k in keys]
            t0 = time.perf_counter()
            r = await c.kv.Txn(pb.TxnRequest(compare=cmps, success=puts))
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
                    started.set()
                await started.wait()

    started = asyncio.Event()
    warmed, begun = [0], [0.0]
    await asyncio.gather(*(client(i) for i in range(len(clients))))
    wall = time.perf_counter() - begun[0]
    return {
        **latency_summary(lat),
        "per_s": len(lat) / wall,
        "failed": failed,
        "in_flight": len(clients),
        "all_txns": sent[0],
    }


async def _run(args: argparse.Namespace, adapter: EtcdAdapter) -> dict[str, Any]:
    leader = await adapter.wait_leader()
    port = adapter.client_ports[leader]

    follower = adapter.client_ports[(leader + 1) % 3]
    pids = {"leader": adapter.procs[leader].pid, "client": os.getpid()}
    pids.update({f"follower{k}": adapter.procs[(leader + k) % 3].pid for k in (1, 2)})

    async def clients(n: int, on: int = port) -> list[Grpc]:
        return [await Grpc(on).ready() for _ in range(n)]

    result: dict[str, Any] = {"system": "etcd", "client": CLIENT, "describe": adapter.describe()}
    writer = (await clients(1))[0]
    for name, n, puts, follows in watch_runs(args):
        ws = await clients(n, follower if follows else port)
        meter = CpuMeter(pids)
        result[name] = await watch_latency(writer, ws, puts)
        result[name].update(meter.read(puts + WATCH_WARM))
        for w in ws:
            await w.channel.close()
    cs: list[Grpc] = []
    ts: list[Grpc] = []
    if "lock" in args.workloads:
        cs = await clients(args.lock_contenders)
        meter = CpuMeter(pids)
        result["lock"] = await lock_cycles(cs, args.lock_seconds)
        result["lock"].update(meter.read())
    if "txn" in args.workloads:
        ts = await clients(args.txn_clients)
        meter = CpuMeter(pids)
        result["txn"] = await txn_rate(ts, args.txn_seconds, args.txn_ops)
        result["txn"].update(meter.read(result["txn"]["all_txns"]))
    for c in [writer, *cs, *ts]:
        await c.channel.close()
    return result


def run_etcd(args: argparse.Namespace) -> dict[str, Any]:
    """Start 3 etcd nodes, run the workloads, stop them; return the result."""
    workdir = tempfile.mkdtemp(prefix="bench-coord-etcd-")
    adapter = EtcdAdapter(nodes=3, workdir=workdir, options={"client": "grpc"})
    try:
        adapter.start()
        return asyncio.run(_run(args, adapter))
    finally:
        adapter.stop()
        shutil.rmtree(workdir, ignore_errors=True)
