"""The coordination workloads (watch, lock, lease), run through the bundled Twisted client.

A separate process with its own reactor (``python -m
leeky_twisted.chaos.coordwork``), so the thread-based rig and tests never share
a reactor with it. It runs one workload against the cluster until the file
``--stop-file`` appears (or ``--max-seconds`` pass), then finishes (final
reads, retried until the cluster answers or ``--settle`` seconds pass) and
writes its record as JSON to ``--out``, for
:mod:`leeky_twisted.checker.coordination`:

* **watch**: writers put and delete keys under a prefix through one-operation
  transactions (which answer their revision); watchers on the prefix start at
  different revisions (some in the past), and every few seconds cancel and
  resume from the revision after the last event they saw (a client
  reconnect; the client also resumes by itself when a node fails). At the end a
  sentinel put marks the last revision; the committed events are read over
  JSON-RPC's long-poll watch (another path than the AMP push) from the lowest
  start revision.
* **lock**: contenders take the lock with :func:`~leeky_twisted.client.recipes.acquire`
  and make protected writes: a transaction that puts a log key holding the
  fencing token only if the holder's lock key still has that create revision.
  Some holders stall past their lease first (keepalives stopped), as a paused
  process would; their late write must be refused.
* **lease**: holders grant a lease, put keys on it, keep it alive for a while,
  then are cut off (keepalives stop); a reader polls the keys with
  linearizable gets until they are gone.

Every loop is bounded by the stop file, a deadline and a count.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from leeky_twisted.chaos.workload import Endpoint, call_jsonrpc
from leeky_twisted.checker.history import Outcome
from leeky_twisted.client.library import LeekyClient
from leeky_twisted.client.recipes import acquire
from leeky_twisted.protocol.errors import InvalidRequest, LeekyError

__all__ = ["WORKLOADS", "lease_bound", "main"]

WORKLOADS = ("watch", "lock", "lease")
#: The watch workload's writers stop after this many writes, so that every event
#: stays in the nodes' watch window (``--watch-window``, 10,000 by default).
MAX_WATCH_WRITES = 5000
#: Seconds a client call may take, retries included.
CALL_TIMEOUT = 5.0
_MAX_LOOPS = 100_000


def lease_bound(election_timeout: float, commit_allowance: float = 1.0) -> float:
    """Return the seconds after ``ttl`` within which a cut-off lease's keys are gone.

    docs/coordination.md: ``extension (2 x election timeout) + election timeout
    (at most 2 x the option, randomized) + 0.25 s`` plus the time to commit one
    entry (``commit_allowance``).
    """
    return 4 * election_timeout + 0.25 + commit_allowance


class _Run:
    def __init__(self, reactor: Any, args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.args = args
        self.rng = random.Random(args.seed)
        self.addresses = [_address(a) for a in args.amp.split(",")]
        self.http = [Endpoint(str(i), *_address(a)) for i, a in enumerate(args.http.split(","))]
        self.origin = time.monotonic()
        self.stop_file = Path(args.stop_file)
        self.clients: list[LeekyClient] = []

    def now(self) -> float:
        return time.monotonic() - self.origin

    def stopping(self) -> bool:
        return self.stop_file.exists() or self.now() > self.args.max_seconds

    def client(self) -> LeekyClient:
        c = LeekyClient(self.reactor, self.addresses, timeout=CALL_TIMEOUT)
        self.clients.append(c)
        return c

    def sleep(self, seconds: float) -> Deferred[None]:
        return task.deferLater(self.reactor, max(0.0, seconds), lambda: None)

    async def until_stopped(self) -> None:
        while not self.stopping():
            await self.sleep(0.05)

    async def retry(self, call: Any, what: str) -> Any:
        """Call ``call()`` until it answers; give up after ``--settle`` seconds."""
        deadline = self.now() + self.args.settle
        for _ in range(_MAX_LOOPS):
            try:
                return await call()
            except LeekyError as e:
                if self.now() > deadline:
                    raise RuntimeError(
                        f"{what}: no answer within {self.args.settle} s: {e}"
                    ) from None
                await self.sleep(0.2)
        raise RuntimeError(f"{what}: too many attempts")

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    # ------------------------------------------------------------- watch

    async def watch(self) -> dict[str, Any]:
        prefix = self.args.prefix + "/"
        keys = [f"{prefix}k{i}" for i in range(5)]
        writer = self.client()
        first = await self.retry(lambda: writer.range_prefix(prefix), "first read")
        base = first.revision + 1
        writes: list[dict[str, Any]] = []
        watchers: list[dict[str, Any]] = []

        async def write_loop(w: int) -> None:
            client = self.client()
            for n in range(_MAX_LOOPS):
                if self.stopping() or len(writes) >= MAX_WATCH_WRITES:
                    return
                key = self.rng.choice(keys)
                if self.rng.random() < 0.8:
                    rec = {"kind": "put", "key": key, "value": f"w{w}.{n}"}
                    op = {"type": "put", "key": key, "value": rec["value"]}
                else:
                    rec = {"kind": "delete", "key": key, "value": None}
                    op = {"type": "delete", "key": key}
                writes.append(rec)
                try:
                    res = await client.txn(success=[op])
                except InvalidRequest as e:
                    rec.update(outcome="fail", error=str(e))
                except LeekyError as e:
                    rec.update(outcome="unknown", error=str(e))
                else:
                    rec.update(outcome="ok", revision=res.revision)
                    if rec["kind"] == "delete":
                        rec["existed"] = bool(res.responses[0])
                await self.sleep(self.rng.uniform(0.01, 0.05))

        async def watcher(i: int) -> None:
            await self.sleep(i * 1.0)
            client = self.client()
            if i == 0:
                start = base
            else:
                now = await self.retry(lambda: client.range_prefix(prefix), "watch start")
                start = max(base, now.revision + 1 - self.rng.randrange(0, 30))
            rec: dict[str, Any] = {
                "id": i,
                "start_revision": start,
                "events": [],
                "restarts": 0,
                "error": None,
            }
            watchers.append(rec)
            events: list[list[Any]] = rec["events"]

            def seen(batch: list[Any]) -> None:
                events.extend([e.revision, e.kind, e.key, e.value] for e in batch)

            for _ in range(_MAX_LOOPS):
                resume = events[-1][0] + 1 if events else start
                w = client.watch(prefix, seen, prefix=True, start_revision=resume)
                failed: list[str] = []
                w.done.addErrback(lambda f, failed=failed: failed.append(f.getErrorMessage()))
                until = self.now() + self.rng.uniform(1.5, 3.5)
                while self.now() < until and not self.stopping() and not failed:
                    await self.sleep(0.05)
                if failed:
                    rec["error"] = failed[0]
                    return
                if self.stopping():
                    self._watches.append(w)
                    return
                w.cancel()
                rec["restarts"] += 1

        self._watches: list[Any] = []
        loops = [write_loop(w) for w in range(3)] + [watcher(i) for i in range(3)]
        await gatherResults([Deferred.fromCoroutine(c) for c in loops])
        sentinel = f"{prefix}k0"
        done = await self.retry(
            lambda: writer.txn(success=[{"type": "put", "key": sentinel, "value": "end"}]),
            "sentinel",
        )
        final = done.revision
        writes.append(
            {"kind": "put", "key": sentinel, "value": "end", "outcome": "ok", "revision": final}
        )
        deadline = self.now() + self.args.settle
        for rec in watchers:
            while not rec["error"] and self.now() < deadline:
                if rec["events"] and rec["events"][-1][0] >= final:
                    break
                await self.sleep(0.05)
        for w in self._watches:
            w.cancel()
        kvs = await self.retry(lambda: writer.range_prefix(prefix), "final range")
        committed = await self._committed(prefix, base, final)
        return {
            "workload": "watch",
            "prefix": prefix,
            "writes": writes,
            "watchers": watchers,
            "committed": committed,
            "final_revision": final,
            "final_kvs": [[kv.key, kv.value] for kv in kvs.kvs],
        }

    async def _committed(self, prefix: str, start: int, final: int) -> list[list[Any]]:
        """Read the prefix's events [start, final] over JSON-RPC's long-poll watch."""
        out: list[list[Any]] = []
        nxt = start
        deadline = self.now() + self.args.settle
        for _ in range(_MAX_LOOPS):
            if nxt > final:
                return out
            if self.now() > deadline:
                raise RuntimeError("could not read the committed events in time")
            endpoint = self.rng.choice(self.http)
            options = {"prefix": True, "from_revision": nxt, "wait": 1.0, "limit": 1000}
            res = await deferToThread(
                call_jsonrpc,
                endpoint,
                "watch",
                [prefix, options],
                connect_timeout=1.0,
                timeout=5.0,
            )
            if res.outcome is not Outcome.OK:
                await self.sleep(0.2)
                continue
            for e in res.result["events"]:
                if e["revision"] <= final:
                    out.append([e["revision"], e["type"], e["key"], e["value"]])
            nxt = max(nxt, int(res.result["next_revision"]))
        raise RuntimeError("too many reads of the committed events")

    # -------------------------------------------------------------- lock

    async def lock(self) -> dict[str, Any]:
        name = self.args.prefix + "/lock"
        log_prefix = self.args.prefix + "/log/"
        ttl = 1
        acquisitions: list[dict[str, Any]] = []
        writes: list[dict[str, Any]] = []
        stalls = [0]

        async def contender(c: int) -> None:
            client = self.client()
            for n in range(_MAX_LOOPS):
                if self.stopping():
                    return
                try:
                    held = await acquire(client, name, ttl=ttl)
                except LeekyError:
                    await self.sleep(0.1)
                    continue
                acquisitions.append({"contender": c, "token": held.token, "at": self.now()})
                for m in range(self.rng.randint(1, 3)):
                    if self.rng.random() < 0.15:
                        held._stop()  # a paused holder: keepalives stop, the lease runs out
                        stalls[0] += 1
                        await self.sleep(ttl + self.args.lease_bound + 0.5)
                    key = f"{log_prefix}{c}.{n}.{m}"
                    rec: dict[str, Any] = {"contender": c, "token": held.token, "key": key}
                    writes.append(rec)
                    compare = {"key": held.key, "target": "create", "op": "==", "value": held.token}
                    put = {"type": "put", "key": key, "value": str(held.token)}
                    try:
                        res = await client.txn(compare=[compare], success=[put])
                    except LeekyError as e:
                        rec.update(outcome="unknown", error=str(e))
                    else:
                        rec.update(outcome="ok", succeeded=res.succeeded, revision=res.revision)
                        if not res.succeeded:
                            break
                with contextlib.suppress(LeekyError):
                    await held.release()
                await self.sleep(self.rng.uniform(0.0, 0.05))

        await gatherResults([Deferred.fromCoroutine(contender(c)) for c in range(4)])
        reader = self.client()
        log = await self.retry(lambda: reader.range_prefix(log_prefix), "log read")
        return {
            "workload": "lock",
            "name": name,
            "acquisitions": acquisitions,
            "writes": writes,
            "stalls": stalls[0],
            "log": [[kv.create_revision, int(kv.value), kv.key] for kv in log.kvs],
        }

    # ------------------------------------------------------------- lease

    async def _leaders(
        self, seen: list[list[Any]], done: list[bool], outages: list[list[float]] | None = None
    ) -> None:
        """Record when each term's leader is first seen (polling every node's status), and
        in ``outages`` each ``[start, end]`` of polls that found no leader at all."""
        terms: set[int] = set()
        no_leader_since: float | None = None
        for _ in range(_MAX_LOOPS):
            if done[0]:
                return
            asked = self.now()
            polls = [
                deferToThread(call_jsonrpc, e, "status", [], connect_timeout=0.2, timeout=0.3)
                for e in self.http
            ]
            leader_seen = False
            for res in await gatherResults(polls):
                st = res.result if res.outcome is Outcome.OK else None
                if isinstance(st, dict) and st.get("role") == "leader":
                    leader_seen = True
                    term = int(st.get("term", 0))
                    if term not in terms:
                        terms.add(term)
                        seen.append([self.now(), term, st.get("leader")])
            if outages is not None:
                if not leader_seen and no_leader_since is None:
                    no_leader_since = asked
                elif leader_seen and no_leader_since is not None:
                    outages.append([no_leader_since, self.now()])
                    no_leader_since = None
            await self.sleep(0.1)

    async def lease(self) -> dict[str, Any]:
        ttl = 2
        leases: list[dict[str, Any]] = []
        reader = self.client()
        leaders: list[list[Any]] = []
        outages: list[list[float]] = []
        polled = [False]
        polling = Deferred.fromCoroutine(self._leaders(leaders, polled, outages))

        async def read_until_gone(rec: dict[str, Any], key: str, stop: list[bool]) -> None:
            for _ in range(_MAX_LOOPS):
                if stop[0] and rec.get("cut_at") is not None:
                    cut_deadline = rec["cut_at"] + ttl + self.args.lease_bound + 3.0
                    gone = any(not p and i > rec["cut_at"] for i, _, p in rec["reads"])
                    if gone or self.now() > cut_deadline + self.args.settle:
                        return
                invoke = self.now()
                try:
                    value = await reader.get(key)
                except LeekyError:
                    await self.sleep(0.1)
                    continue
                rec["reads"].append([invoke, self.now(), value is not None])
                await self.sleep(0.1)

        async def holder(h: int) -> None:
            client = self.client()
            for n in range(_MAX_LOOPS):
                if self.stopping():
                    return
                granted = self.now()
                try:
                    lease = await client.lease_grant(ttl)
                except LeekyError:
                    await self.sleep(0.2)
                    continue
                rec: dict[str, Any] = {
                    "id": lease,
                    "granted": granted,
                    "put_acked": None,
                    "keepalives": [],
                    "cut_at": None,
                    "reads": [],
                }
                leases.append(rec)
                key = f"{self.args.prefix}/h{h}.{n}"
                try:
                    await client.put(key, "held", lease=lease)
                except LeekyError:
                    continue
                rec["put_acked"] = self.now()
                stop = [False]
                reading = Deferred.fromCoroutine(read_until_gone(rec, key, stop))
                hold_until = self.now() + self.rng.uniform(1.0, 4.0)
                while self.now() < hold_until and not self.stopping():
                    await self.sleep(ttl / 3)
                    sent = self.now()
                    try:
                        await client.lease_keepalive(lease)
                    except LeekyError:
                        rec["keepalives"].append([sent, None])
                    else:
                        rec["keepalives"].append([sent, self.now()])
                rec["cut_at"] = self.now()  # cut off: no more keepalives
                stop[0] = True
                await reading

        await gatherResults([Deferred.fromCoroutine(holder(h)) for h in range(3)])
        polled[0] = True
        await polling
        return {
            "workload": "lease",
            "ttl": ttl,
            "bound": self.args.lease_bound,
            "extension": 2 * self.args.election_timeout,
            "leaders": leaders,
            "outages": outages,
            "leases": leases,
        }


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one workload (see the module docstring); 0 when it wrote its record."""
    parser = argparse.ArgumentParser(prog="python -m leeky_twisted.chaos.coordwork")
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--amp", required=True, help="AMP addresses HOST:PORT,...")
    parser.add_argument("--http", required=True, help="JSON-RPC addresses HOST:PORT,...")
    parser.add_argument("--prefix", required=True, help="the keys' prefix (its own)")
    parser.add_argument("--out", required=True, help="where to write the JSON record")
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--election-timeout", type=float, default=1.0)
    parser.add_argument("--lease-bound", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.lease_bound is None:
        args.lease_bound = lease_bound(args.election_timeout)

    async def run(reactor: Any) -> None:
        r = _Run(reactor, args)
        try:
            record = await getattr(r, args.workload)()
            record["seconds"] = r.now()
            Path(args.out).write_text(json.dumps(record))
        finally:
            await r.close()

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
