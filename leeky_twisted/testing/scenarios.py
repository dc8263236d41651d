"""A small, explicit, step-by-step harness of shipped RaftNodes for readable scenario tests.

Unlike :mod:`leeky_twisted.testing.simulation`, nothing here happens by chance unless a
test asks for it: messages wait in :attr:`Network.queue` until the test
delivers, drops or reorders them (:attr:`Network.filters` lose chosen messages
on delivery, :meth:`Network.isolate`/:meth:`Network.partition` cut links); time
passes only through :meth:`Network.tick`. Each node is a real
:class:`~leeky_twisted.server.node.RaftNode` (its Ready loop, persistence order, apply
and snapshot code) over the in-memory stores, whose disk work completes at
once, so its stores hold everything the core handed out. :meth:`Network.pause`
stalls a node's disk: its writes wait (the node keeps running, and sends what
may leave before a write) until :meth:`Network.resume`. A crash loses whatever
was not written; :meth:`Network.restart` starts the node again from its stores.

The harness checks Election Safety and State Machine Safety as it goes and
raises :class:`AssertionError` when either breaks; :meth:`Network.check_logs`
checks Log Matching on demand. Every node's RNG is seeded from ``seed``.

Typical use::

    net = Network(["n1", "n2", "n3"])
    leader = net.run_until_leader()
    index, _ = net.propose(leader, b"x=1")
    net.sync()  # deliver until quiet, then a heartbeat carries the commit index
    assert net.committed_on_all(index)
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    ConfChange,
    Entry,
    InstallSnapshot,
    Message,
    NodeId,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
)
from leeky_twisted.core.raft import RaftCore
from leeky_twisted.interfaces import IStateMachine
from leeky_twisted.server.node import NodeHooks, NodeSettings, RaftNode
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from leeky_twisted.testing.hosts import NodeClock, SimReactor, SimTransport

__all__ = ["Network", "Node"]


@implementer(IStateMachine)
class CommandList:
    """The state machine of the scenarios: the list of applied commands."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def apply(self, index: int, command: bytes) -> object:
        self.commands.append(command)
        return index

    def query(self, request: object) -> object:
        return list(self.commands)

    def snapshot(self) -> bytes:
        return json.dumps([c.decode("latin-1") for c in self.commands]).encode()

    def restore(self, data: bytes) -> None:
        self.commands = [c.encode("latin-1") for c in json.loads(data)]


class Node:
    """One server: a shipped RaftNode over in-memory stores that survive its crash."""

    def __init__(self, net: Network, nid: NodeId, bootstrap: list[tuple[str, bytes]]) -> None:
        self.net = net
        self.id = nid
        self.bootstrap = bootstrap
        self.log_store = MemoryLogStore()
        self.stable_store = MemoryStableStore()
        self.snapshot_store = MemorySnapshotStore()
        self.raft: RaftNode | None = None
        self.transport = SimTransport(net.send)  #: the running node's peer transport
        self.clock: NodeClock | None = None
        self.machine = CommandList()
        self.incarnation = 0
        self.read_states: list[ReadState] = []
        self.dropped_reads: list[object] = []
        self.readies: list[Ready] = []  #: every Ready handled (for tests that inspect them)
        self.paused = False  #: a stalled disk: writes wait until resumed
        self._held: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    @property
    def core(self) -> RaftCore | None:
        """Return the running node's core, or None while it is down."""
        return self.raft.core if self.raft is not None else None

    @property
    def up(self) -> bool:
        """Return True while the node runs."""
        return self.raft is not None

    @property
    def state(self) -> list[bytes]:
        """Return the commands applied to the state machine, in order."""
        return self.machine.commands

    @property
    def applied_index(self) -> int:
        """Return the index the state machine reflects."""
        return self.raft.applied_index if self.raft is not None else 0

    def start(self) -> None:
        """Start the node from its stores (ticks come from the test, not a timer)."""
        self.incarnation += 1
        rng = random.Random(f"{self.net.seed}/{self.id}/{self.incarnation}")
        self.read_states = []
        self.dropped_reads = []
        self.machine = CommandList()
        self.clock = NodeClock(self.net.reactor, self.crash)
        self.transport = SimTransport(self.net.send)
        self.raft = RaftNode(
            self.clock,
            self.net.core_config(self.id),
            self.log_store,
            self.stable_store,
            self.snapshot_store,
            self.transport,
            self.machine,
            settings=NodeSettings(inline_persist_seconds=0.0, bootstrap=self.bootstrap),
            rng=rng,
            run_blocking=self._run_blocking,
            monotonic=lambda: 0.0,  # one tick per tick(): time is the test's
            hooks=NodeHooks(on_ready=self._on_ready),
        )
        self._held = []

    def crash(self) -> None:
        """Stop, losing everything not yet written."""
        if self.clock is not None:
            self.clock.kill()
        if self.raft is not None:
            self.raft.stopped = True
        self.raft = None
        self.clock = None
        self.paused = False
        self._held = []

    def process(self) -> None:
        """Let the node handle everything it has to do now."""
        if self.raft is not None:
            self.raft.poke()
        self.net.reactor.run_until(self.net.reactor.now)

    def _run_blocking(self, job: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self._held.append((job, d))
        if not self.paused:
            self._flush_disk()
        return d

    def _flush_disk(self) -> None:
        while self._held and not self.paused:
            job, d = self._held.pop(0)
            d.callback(job())

    def _on_ready(self, rd: Ready) -> None:
        self.readies.append(rd)
        self.read_states.extend(rd.read_states)
        self.dropped_reads.extend(rd.dropped_reads)
        self.net.check_leader(self)
        expected = self.net._next_apply.get(self.id)
        if rd.snapshot is not None:
            expected = rd.snapshot.index + 1
        for e in rd.committed_entries:
            if expected is not None and e.index != expected:
                raise AssertionError(f"{self.id} applied {e.index} after {expected - 1}")
            self.net.check_applied(self, e)
            expected = e.index + 1
        if expected is not None:
            self.net._next_apply[self.id] = expected

    def take_snapshot(self, keep: int = 0) -> SnapshotMeta:
        """Snapshot the state machine at its applied index and compact the log,
        keeping ``keep`` entries before that index."""
        raft = self.raft
        assert raft is not None
        assert raft.snapshot_now(trailing=keep), "no snapshot can be taken now"
        self.process()
        meta = raft.core.snapshot_meta
        assert meta is not None
        return meta


class Network:
    """A cluster of :class:`Node` and the messages in flight between them."""

    def __init__(
        self,
        voters: Iterable[str],
        *,
        spares: Iterable[str] = (),
        seed: int = 0,
        **config: Any,
    ) -> None:
        self.seed = seed
        self.reactor = SimReactor()
        self._next_apply: dict[NodeId, int] = {}
        self.config: dict[str, Any] = {"election_ticks": 10, "heartbeat_ticks": 2, **config}
        self.queue: list[Message] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        #: predicates; a message any of them selects is lost when it is delivered
        self.filters: list[Callable[[Message], bool]] = []
        self.sent: Counter[str] = Counter()  #: messages sent, by type name
        self.delivered = 0
        self.leaders: dict[int, NodeId] = {}  #: the leader of each term seen
        self.committed: dict[int, Entry] = {}  #: every entry applied anywhere, by index
        self._snapshot_data: dict[tuple[NodeId, int], bytes] = {}
        ids = [NodeId(v) for v in voters]
        boot = [(str(nid), b"") for nid in ids]
        self.nodes: dict[NodeId, Node] = {}
        for nid in ids:
            self.nodes[nid] = Node(self, nid, boot)
        for s in spares:
            self.nodes[NodeId(s)] = Node(self, NodeId(s), [])
        for node in self.nodes.values():
            node.start()

    # ------------------------------------------------------------------ setup

    def core_config(self, nid: NodeId) -> CoreConfig:
        """Return the settings of ``nid``'s core."""
        return CoreConfig(nid, **self.config)

    def core(self, nid: str) -> RaftCore:
        """Return the running core of ``nid``."""
        core = self.nodes[NodeId(nid)].core
        assert core is not None, f"{nid} is down"
        return core

    def node(self, nid: str) -> Node:
        """Return the node ``nid``."""
        return self.nodes[NodeId(nid)]

    # ---------------------------------------------------------------- network

    def send(self, m: Message) -> None:
        """Queue ``m`` (called by nodes)."""
        self.sent[type(m).__name__] += 1
        if isinstance(m, InstallSnapshot):
            src = self.nodes[m.sender]
            try:
                data = src.snapshot_store.open(m.meta.index)
            except (KeyError, ValueError):
                return  # the snapshot moved on; the leader will send the newer one
            self._snapshot_data[(m.sender, m.meta.index)] = data
        self.queue.append(m)

    def _deliver(self, m: Message) -> None:
        if (m.sender, m.recipient) in self.blocked or any(f(m) for f in self.filters):
            return
        node = self.nodes.get(m.recipient)
        if node is None or node.raft is None:
            return
        if isinstance(m, InstallSnapshot):  # the transport stores it, then hands it over
            sink = node.snapshot_store.create(m.meta)
            sink.write(self._snapshot_data[(m.sender, m.meta.index)])
            sink.close()
        self.delivered += 1
        node.raft.receive(m)
        if node.raft is not None and node.raft.failure is not None:
            raise AssertionError(f"{node.id} stopped itself: {node.raft.failure}")
        node.process()

    def deliver(self, where: Callable[[Message], bool] | None = None) -> int:
        """Deliver the queued messages that ``where`` selects (all by default), in
        order; replies wait in the queue. Return how many were taken off the queue."""
        batch = [m for m in self.queue if where is None or where(m)]
        self.queue = [m for m in self.queue if not (where is None or where(m))]
        for m in batch:
            self._deliver(m)
        return len(batch)

    def drop(self, where: Callable[[Message], bool] | None = None) -> list[Message]:
        """Remove the queued messages ``where`` selects (all by default); return them."""
        gone = [m for m in self.queue if where is None or where(m)]
        self.queue = [m for m in self.queue if not (where is None or where(m))]
        return gone

    def deliver_random(
        self,
        rng: random.Random,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        hold: float = 0.0,
    ) -> None:
        """Deliver the queue in a random order: each message may be dropped,
        duplicated, or held back (delayed) for a later delivery round."""
        batch, self.queue = self.queue, []
        rng.shuffle(batch)
        for m in batch:
            r = rng.random()
            if r < drop:
                continue
            if r < drop + hold:
                self.queue.append(m)
                continue
            self._deliver(m)
            if rng.random() < duplicate:
                self._deliver(m)

    def stabilize(self, limit: int = 10_000) -> int:
        """Deliver until the queue is empty; return the messages delivered."""
        for n in self.nodes.values():
            n.process()
        total = 0
        while self.queue:
            total += self.deliver()
            if total > limit:
                raise AssertionError(f"no quiescence after {limit} messages")
        return total

    def sync(self) -> None:
        """Deliver until quiet, then tick one heartbeat interval so that followers
        learn the leader's commit index (the leader sends it with the next
        AppendEntries or heartbeat, §5.3)."""
        self.stabilize()
        self.tick(self.config["heartbeat_ticks"])

    def isolate(self, nid: str) -> None:
        """Cut ``nid`` off from everyone, both ways."""
        for other in self.nodes:
            if other != nid:
                self.blocked |= {(NodeId(nid), other), (other, NodeId(nid))}

    def partition(self, *groups: Iterable[str]) -> None:
        """Allow messages only within each group (nodes in no group are isolated)."""
        self.blocked = set()
        member = {NodeId(n): i for i, g in enumerate(groups) for n in g}
        for a in self.nodes:
            for b in self.nodes:
                if a != b and (a not in member or b not in member or member[a] != member[b]):
                    self.blocked.add((a, b))

    def heal(self) -> None:
        """Let every message through again."""
        self.blocked = set()

    # ------------------------------------------------------------------- time

    def tick(self, n: int = 1, nodes: Iterable[str] | None = None, settle: bool = True) -> None:
        """Tick ``nodes`` (every running node by default) ``n`` times; after each
        round, deliver until quiet unless ``settle`` is False."""
        for _ in range(n):
            for nid in list(nodes) if nodes is not None else list(self.nodes):
                node = self.nodes[NodeId(nid)]
                if node.raft is not None:
                    node.raft.tick()
                    node.process()
            if settle:
                self.stabilize()

    def elect(self, nid: str, limit: int = 100) -> None:
        """Make ``nid`` time out (ticking only it) and campaign, then deliver until
        quiet; fail unless it becomes the leader. Nodes that heard from a leader
        (or, with lease reads, started) less than an election timeout ago ignore
        it; use :meth:`run_until_leader` when that matters."""
        core = self.core(nid)
        node = self.nodes[NodeId(nid)]
        for _ in range(limit):
            if core.role is not Role.FOLLOWER:
                break
            assert node.raft is not None
            node.raft.tick()
            node.process()
        self.stabilize()
        assert core.role is Role.LEADER, f"{nid} did not win: {core.status()}"

    def run_until_leader(self, limit: int = 1000) -> NodeId:
        """Tick everyone until exactly one live node leads with its term current
        among the live nodes; return it."""
        for _ in range(limit):
            leader = self.leader()
            if leader is not None:
                return leader
            self.tick()
        raise AssertionError("no leader elected")

    def leader(self) -> NodeId | None:
        """Return the live leader of the highest term, if it leads that term."""
        live = [n.core for n in self.nodes.values() if n.core is not None]
        if not live:
            return None
        top = max(c.term for c in live)
        leaders = [c.id for c in live if c.role is Role.LEADER and c.term == top]
        return leaders[0] if leaders else None

    # ---------------------------------------------------------------- clients

    def propose(self, nid: str, data: bytes) -> tuple[int, int]:
        """Propose ``data`` at ``nid``; return its (index, term)."""
        out = self.core(nid).propose(data)
        self.nodes[NodeId(nid)].process()
        return out

    def change(self, nid: str, change: ConfChange) -> tuple[int, int]:
        """Propose a configuration change at ``nid``; return its (index, term)."""
        out = self.core(nid).propose_config_change(change)
        self.nodes[NodeId(nid)].process()
        return out

    def read(self, nid: str, context: object) -> None:
        """Ask ``nid`` for a ReadIndex read."""
        self.core(nid).read_index(context)
        self.nodes[NodeId(nid)].process()

    def transfer(self, nid: str, target: str) -> None:
        """Ask leader ``nid`` to hand leadership to ``target``."""
        self.core(nid).transfer_leadership(NodeId(target))
        self.nodes[NodeId(nid)].process()

    # ------------------------------------------------------------ lifecycle

    def crash(self, nid: str) -> None:
        """Crash ``nid``: unpersisted state is lost; messages to it are lost."""
        self.nodes[NodeId(nid)].crash()
        self._next_apply.pop(NodeId(nid), None)

    def report_gone(self, gone: str, to: Iterable[str] | None = None) -> None:
        """Tell the running nodes ``to`` (default: every other one), as their peer
        transport would after a refused dial, that the process of ``gone`` is
        gone, then let each handle it (nothing is delivered)."""
        for nid in list(to) if to is not None else [n for n in self.nodes if n != gone]:
            node = self.nodes[NodeId(nid)]
            callback = node.transport.peer_gone if node.raft is not None else None
            if callback is not None:
                callback(NodeId(gone))
                node.process()

    def pause(self, nid: str) -> None:
        """Stall ``nid``'s disk: its core keeps running but no Ready is handled, so
        nothing it does is persisted or sent until :meth:`resume` (or lost in a crash)."""
        self.nodes[NodeId(nid)].paused = True

    def resume(self, nid: str) -> None:
        """Let ``nid`` handle its pending Ready batches again."""
        node = self.nodes[NodeId(nid)]
        node.paused = False
        node._flush_disk()
        node.process()

    def restart(self, nid: str) -> None:
        """Start ``nid`` again from its disk."""
        node = self.nodes[NodeId(nid)]
        node.start()
        node.process()

    # --------------------------------------------------------------- checks

    def check_leader(self, node: Node) -> None:
        """Election Safety: at most one leader per term."""
        core = node.core
        if core is not None and core.role is Role.LEADER:
            other = self.leaders.setdefault(core.term, node.id)
            if other != node.id:
                raise AssertionError(f"two leaders in term {core.term}: {other}, {node.id}")

    def check_applied(self, node: Node, e: Entry) -> None:
        """State Machine Safety: every node applies the same entry at an index."""
        known = self.committed.setdefault(e.index, e)
        if known != e:
            raise AssertionError(f"{node.id} applied {e} where {known} was applied")

    def check_logs(self) -> None:
        """Log Matching: two logs with an entry of the same index and term agree
        on it and on every entry before it that both still hold."""
        logs = [n.core.log for n in self.nodes.values() if n.core is not None]
        for a in logs:
            for b in logs:
                common = min(a.last_index(), b.last_index())
                for i in range(common, max(a.start, b.start), -1):
                    if a.term_at(i) == b.term_at(i):
                        for j in range(i, max(a.start, b.start), -1):
                            if a.entry_at(j) != b.entry_at(j):
                                raise AssertionError(f"logs differ at {j} below match {i}")
                        break

    def committed_on_all(self, index: int, nodes: Iterable[str] | None = None) -> bool:
        """Return True when every listed (by default every running) node applied ``index``."""
        chosen = (
            [self.nodes[NodeId(n)] for n in nodes]
            if nodes is not None
            else [n for n in self.nodes.values() if n.core is not None]
        )
        return all(n.applied_index >= index for n in chosen)

    def committed_index(self, data: bytes) -> int:
        """Return the index at which the command ``data`` was committed."""
        return next(i for i, e in self.committed.items() if e.data == data)

    def states(self) -> dict[NodeId, list[bytes]]:
        """Return each running node's applied commands."""
        return {nid: list(n.state) for nid, n in self.nodes.items() if n.core is not None}
