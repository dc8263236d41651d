"""A snapshot is written a slice per disk job, and followers keep answering meanwhile (issue 18).

The cluster test runs shipped RaftNodes on the deterministic hosts of
:mod:`leeky_twisted.testing.hosts`, on a disk whose jobs take time in proportion
to the bytes they write: with a snapshot written in one job, every node's disk
was busy with it for longer than an election timeout at the same moment, the
followers' answers waited behind it, and the leader stepped down.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import Configuration, Message, NodeId, Role, SnapshotMeta
from leeky_twisted.server.node import NodeSettings
from leeky_twisted.server.snapshot_write import SNAPSHOT_SLICE_BYTES, slices, write_in_slices
from leeky_twisted.storage.errors import StorageError
from leeky_twisted.storage.memory import MemorySnapshotSink, MemorySnapshotStore
from leeky_twisted.testing.hosts import NodeHost, SimReactor

META = SnapshotMeta(9, 2, Configuration(frozenset({NodeId("a")}), frozenset()))


class HeldDisk:
    """A disk thread that runs each job only when the test says so, in order."""

    def __init__(self) -> None:
        self.jobs: deque[tuple[str, Callable[[], Any], Deferred[Any]]] = deque()
        self.done: list[str] = []

    def run(self, job: Callable[[], Any], name: str = "slice") -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((name, job, d))
        return d

    def step(self) -> None:
        name, job, d = self.jobs.popleft()
        try:
            result = job()
        except Exception:
            d.errback(Failure())
            return
        self.done.append(name)
        d.callback(result)


def test_slices_cut_big_parts_and_group_small_ones() -> None:
    parts = [b"ab", b"c" * 7, b"", b"d", b"e" * 3]
    runs = [b"".join(bytes(v) for v in run) for run in slices(parts, 4)]
    assert runs == [b"abcc", b"cccc", b"cdee", b"e"]
    assert list(slices([], 4)) == []
    with pytest.raises(ValueError, match="positive"):
        list(slices(parts, 0))


def test_a_job_queued_during_a_snapshot_runs_before_its_next_slice() -> None:
    """The next slice is handed to the disk only when the previous one is done."""
    disk = HeldDisk()
    store = MemorySnapshotStore()
    data = [b"x" * (SNAPSHOT_SLICE_BYTES + 10), b"y" * SNAPSHOT_SLICE_BYTES]
    written: list[None] = []
    write_in_slices(disk.run, store, META, data).addCallback(written.append)
    disk.step()  # create
    disk.run(lambda: None, "ready")  # a Ready arrives while the first slice is written
    disk.step()  # first slice
    disk.step()  # the Ready goes before the second slice
    assert disk.done == ["slice", "slice", "ready"]
    while disk.jobs:
        disk.step()
    assert written == [None]
    assert disk.done.count("slice") == 5  # create, three slices, close
    assert store.open(9) == b"".join(data)


class FailingStore(MemorySnapshotStore):
    """Sinks whose second write fails, as on a full disk."""

    def create(self, meta: object) -> MemorySnapshotSink:
        sink = super().create(meta)
        write = sink.write
        calls: list[int] = []

        def failing(data: bytes) -> None:
            calls.append(len(data))
            if len(calls) == 2:
                raise StorageError("disk full")
            write(data)

        sink.write = failing  # type: ignore[method-assign]
        return sink


def test_a_failed_slice_discards_the_partial_snapshot() -> None:
    disk = HeldDisk()
    store = FailingStore()
    failures: list[Failure] = []
    d = write_in_slices(disk.run, store, META, [b"z" * (3 * SNAPSHOT_SLICE_BYTES)])
    d.addErrback(failures.append)
    while disk.jobs:
        disk.step()  # create, one slice, the failing slice, then the cancel
    assert len(failures) == 1 and failures[0].check(StorageError)
    assert store.latest() is None
    assert disk.done == ["slice", "slice", "slice"]


# ----------------------------------------------------------- the cluster

TICK = 1.0
DELAY = 0.1
#: disk time per byte written: a 1 MiB slice takes 2 s, the whole 8 MB state 16 s,
#: longer than the election timeout (10 ticks)
SECONDS_PER_BYTE = 2e-6
VALUE = 100_000
SNAPSHOT_BYTES = 8_000_000


class SlowDisk:
    """A host's disk thread: jobs run in order, each taking time per byte it writes."""

    def __init__(self, reactor: SimReactor, host: NodeHost) -> None:
        self.reactor = reactor
        self.written = 0
        self.snapshot_writes = 0
        self.queue: deque[tuple[Callable[[], Any], Deferred[Any]]] = deque()
        self.busy = False
        log = host.disk.log
        append = log.append

        def counting_append(entries: Any) -> None:
            self.written += sum(len(e.data) for e in entries)
            append(entries)

        log.append = counting_append  # type: ignore[method-assign]
        create = host.disk.snapshots.create

        def counting_create(meta: object) -> MemorySnapshotSink:
            sink = create(meta)
            write = sink.write

            def counting_write(data: bytes) -> None:
                self.written += len(data)
                self.snapshot_writes += 1
                write(data)

            sink.write = counting_write  # type: ignore[method-assign]
            return sink

        host.disk.snapshots.create = counting_create  # type: ignore[method-assign]
        host._run_blocking = self.run  # type: ignore[method-assign]

    def run(self, job: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queue.append((job, d))
        if not self.busy:
            self._next()
        return d

    def _next(self) -> None:
        if not self.queue:
            self.busy = False
            return
        self.busy = True
        job, d = self.queue.popleft()
        before = self.written
        try:
            result = job()
        except Exception:
            failure = Failure()
            self.reactor.callLater(0, self._finish, d, failure)
            return
        cost = (self.written - before) * SECONDS_PER_BYTE
        self.reactor.callLater(cost, self._finish, d, result)

    def _finish(self, d: Deferred[Any], result: Any) -> None:
        d.callback(result)  # may queue the next slice, behind what waits already
        self._next()


class SlowDiskCluster:
    """Three shipped nodes on slow disks; messages take DELAY seconds."""

    def __init__(self) -> None:
        self.reactor = SimReactor()
        self.ids = [NodeId(i) for i in ("a", "b", "c")]
        rng = random.Random(3)
        self.hosts = {
            nid: NodeHost(
                self.reactor,
                nid,
                lambda n: CoreConfig(n, election_ticks=10, heartbeat_ticks=2),
                self.settings,
                random.Random(rng.random()),
                self.send,
            )
            for nid in self.ids
        }
        self.disks = {nid: SlowDisk(self.reactor, host) for nid, host in self.hosts.items()}
        for host in self.hosts.values():
            host.start()

    def settings(self, nid: NodeId) -> NodeSettings:
        return NodeSettings(
            tick_interval=TICK,
            request_timeout=60.0,
            snapshot_bytes=SNAPSHOT_BYTES,
            bootstrap=[(str(i), b"") for i in self.ids],
        )

    def send(self, src: NodeHost, m: Message) -> None:
        self.reactor.callLater(DELAY, self._deliver, m)

    def _deliver(self, m: Message) -> None:
        host = self.hosts.get(m.recipient)
        if host is not None and host.up:
            host.deliver(m)

    def run(self, seconds: float) -> None:
        self.reactor.run_until(self.reactor.now + seconds)

    def roles(self) -> dict[str, Role]:
        return {str(nid): h.node.core.role for nid, h in self.hosts.items() if h.node is not None}


def test_followers_keep_answering_while_every_node_writes_a_big_snapshot() -> None:
    """Under steady writes of 100 KB values, all three nodes snapshot an 8 MB state at
    about the same index, on disks that need 16 s to write it (the election timeout is
    10 s): no leader steps down and no election starts, every write commits."""
    c = SlowDiskCluster()
    for _ in range(30):
        c.run(TICK)
        if Role.LEADER in c.roles().values():
            break
    leader = next(n for n, r in c.roles().items() if r is Role.LEADER)
    node = c.hosts[NodeId(leader)].node
    assert node is not None
    term = node.core.term
    c.run(3 * TICK)  # every follower has heard of the leader
    before = {
        nid: (h.node.elections, h.node.leader_changes) for nid, h in c.hosts.items() if h.node
    }
    results: list[Any] = []
    for i in range(110):
        node.propose(f"k{i}={'v' * VALUE}".encode(), 60.0).addBoth(results.append)
        c.run(0.5)
    c.run(20)
    for host in c.hosts.values():
        assert host.node is not None
        assert host.node.core.snapshot_meta is not None, "no snapshot: the test proves nothing"
        assert host.node.core.term == term, f"{host.id} saw an election"
        assert (host.node.elections, host.node.leader_changes) == before[host.id]
    assert all(d.snapshot_writes > 1 for d in c.disks.values())
    assert c.roles()[leader] is Role.LEADER
    assert len(results) == 110 and all(isinstance(r, int) for r in results)
