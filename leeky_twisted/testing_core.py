"""A small, explicit, step-by-step harness of RaftCores for readable scenario tests.

Unlike :mod:`leeky_twisted.simulation`, nothing here happens by chance unless a
test asks for it: messages wait in :attr:`Network.queue` until the test
delivers, drops or reorders them (:attr:`Network.filters` lose chosen messages
on delivery, :meth:`Network.isolate`/:meth:`Network.partition` cut links); time
passes only through :meth:`Network.tick`. Each node drives its core the way the
node service does (send ``messages``, persist, send ``messages_after_persist``,
apply, advance), synchronously, so its disk holds everything the core handed
out. :meth:`Network.pause` stalls a node's disk: its core keeps running but
nothing is persisted or sent. A crash loses whatever was not handed to the disk;
:meth:`Network.restart` rebuilds the core from the disk.

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

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    ConfChange,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    NodeId,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
)
from leeky_twisted.core.raft import RaftCore, bootstrap_entries

__all__ = ["Disk", "Network", "Node"]


@dataclass
class Disk:
    """What survives a crash: hard state, log entries, and the latest snapshot."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    snapshot_data: tuple[bytes, ...] = ()


class Node:
    """One server: a core, its disk, and its state machine (the applied commands)."""

    def __init__(self, net: Network, nid: NodeId, disk: Disk) -> None:
        self.net = net
        self.id = nid
        self.disk = disk
        self.core: RaftCore | None = None
        self.incarnation = 0
        self.state: list[bytes] = []  #: applied NORMAL commands, in order
        self.applied_index = 0
        self.read_states: list[ReadState] = []
        self.dropped_reads: list[object] = []
        self.readies: list[Ready] = []  #: every Ready handled (for tests that inspect them)
        self.staged_snapshot: dict[int, tuple[bytes, ...]] = {}
        self.paused = False  #: a stalled disk: no Ready is taken until resumed

    @property
    def up(self) -> bool:
        """Return True while the node runs."""
        return self.core is not None

    def start(self) -> None:
        """Build the core from what is on disk."""
        self.incarnation += 1
        rng = random.Random(f"{self.net.seed}/{self.id}/{self.incarnation}")
        self.state = list(self.disk.snapshot_data) if self.disk.snapshot else []
        self.applied_index = self.disk.snapshot.index if self.disk.snapshot else 0
        self.read_states = []
        self.dropped_reads = []
        self.core = RaftCore(
            self.net.core_config(self.id),
            rng,
            self.disk.hard_state,
            self.disk.snapshot,
            list(self.disk.entries),
        )

    def crash(self) -> None:
        """Stop, losing everything the core had not handed to storage."""
        self.core = None
        self.paused = False

    def process(self) -> None:
        """Handle Ready batches until the core has none, in the service's order."""
        core = self.core
        while core is not None and not self.paused and core.has_ready():
            rd = core.ready()
            self.readies.append(rd)
            for m in rd.messages:
                self.net.send(m)
            if rd.snapshot is not None:
                data = self.staged_snapshot.pop(rd.snapshot.index)
                self.disk.snapshot = rd.snapshot
                self.disk.snapshot_data = data
                self.disk.entries = []
                self.state = list(data)
                self.applied_index = rd.snapshot.index
            if rd.entries:
                first = rd.entries[0].index
                self.disk.entries = [e for e in self.disk.entries if e.index < first]
                self.disk.entries.extend(rd.entries)
            if rd.hard_state is not None:
                self.disk.hard_state = rd.hard_state
            for m in rd.messages_after_persist:
                self.net.send(m)
            for e in rd.committed_entries:
                self._apply(e)
            self.read_states.extend(rd.read_states)
            self.dropped_reads.extend(rd.dropped_reads)
            core.advance(rd)
            self.net.check_leader(self)

    def _apply(self, e: Entry) -> None:
        if e.index != self.applied_index + 1:
            raise AssertionError(f"{self.id} applied {e.index} after {self.applied_index}")
        self.net.check_applied(self, e)
        self.applied_index = e.index
        if e.kind is EntryKind.NORMAL:
            self.state.append(e.data)

    def take_snapshot(self, keep: int = 0) -> SnapshotMeta:
        """Snapshot the state machine at its applied index and compact the log,
        keeping ``keep`` entries before that index."""
        core = self.core
        assert core is not None
        meta = core.snapshot_meta_at(core.applied)
        self.disk.snapshot = meta
        self.disk.snapshot_data = tuple(self.state)
        core.compact(meta, meta.index - keep)
        self.disk.entries = [e for e in self.disk.entries if e.index > core.log.start]
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
        self.config: dict[str, Any] = {"election_ticks": 10, "heartbeat_ticks": 2, **config}
        self.queue: list[Message] = []
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        #: predicates; a message any of them selects is lost when it is delivered
        self.filters: list[Callable[[Message], bool]] = []
        self.sent: Counter[str] = Counter()  #: messages sent, by type name
        self.delivered = 0
        self.leaders: dict[int, NodeId] = {}  #: the leader of each term seen
        self.committed: dict[int, Entry] = {}  #: every entry applied anywhere, by index
        self._snapshot_data: dict[tuple[NodeId, int], tuple[bytes, ...]] = {}
        ids = [NodeId(v) for v in voters]
        boot = bootstrap_entries([(nid, b"") for nid in ids])
        self.nodes: dict[NodeId, Node] = {}
        for nid in ids:
            self.nodes[nid] = Node(self, nid, Disk(HardState(1, None, len(boot)), list(boot)))
        for s in spares:
            self.nodes[NodeId(s)] = Node(self, NodeId(s), Disk())
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
            if src.disk.snapshot is None or src.disk.snapshot.index != m.meta.index:
                return  # the snapshot moved on; the leader will send the newer one
            self._snapshot_data[(m.sender, m.meta.index)] = src.disk.snapshot_data
        self.queue.append(m)

    def _deliver(self, m: Message) -> None:
        if (m.sender, m.recipient) in self.blocked or any(f(m) for f in self.filters):
            return
        node = self.nodes.get(m.recipient)
        if node is None or node.core is None:
            return
        if isinstance(m, InstallSnapshot):
            node.staged_snapshot[m.meta.index] = self._snapshot_data[(m.sender, m.meta.index)]
        self.delivered += 1
        node.core.step(m)
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
                if node.core is not None:
                    node.core.tick()
                    node.process()
            if settle:
                self.stabilize()

    def elect(self, nid: str, limit: int = 100) -> None:
        """Make ``nid`` time out (ticking only it) and campaign, then deliver until
        quiet; fail unless it becomes the leader. Nodes that heard from a leader
        (or, with lease reads, started) less than an election timeout ago ignore
        it; use :meth:`run_until_leader` when that matters."""
        core = self.core(nid)
        for _ in range(limit):
            if core.role is not Role.FOLLOWER:
                break
            core.tick()
            self.nodes[NodeId(nid)].process()
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

    def pause(self, nid: str) -> None:
        """Stall ``nid``'s disk: its core keeps running but no Ready is handled, so
        nothing it does is persisted or sent until :meth:`resume` (or lost in a crash)."""
        self.nodes[NodeId(nid)].paused = True

    def resume(self, nid: str) -> None:
        """Let ``nid`` handle its pending Ready batches again."""
        node = self.nodes[NodeId(nid)]
        node.paused = False
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

    def states(self) -> dict[NodeId, list[bytes]]:
        """Return each running node's applied commands."""
        return {nid: list(n.state) for nid, n in self.nodes.items() if n.core is not None}
