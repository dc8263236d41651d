"""Deterministic simulation of whole Raft clusters, checking safety after every step.

One seed decides everything: cluster size, fault rates, schedule. A failing
seed replays exactly with ``python -m leeky_twisted.simulation --seed SEED``,
and ``--seeds 100000`` soaks. The simulated nodes drive :class:`RaftCore` the
way the node service does: send ``messages`` at once, persist (taking a random
while), then send ``messages_after_persist``, apply, serve reads, advance.
Crashes lose everything not yet persisted.

Checked after every step: Election Safety, Leader Append-Only, Log Matching,
Leader Completeness, State Machine Safety, and that every read returns a state
at least as new as everything committed before the read was issued. Liveness:
once faults stop, a leader is elected and a fresh proposal commits within a
bounded number of ticks, and every earlier proposal is resolved.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    NodeId,
    Ready,
    Role,
    SnapshotMeta,
)
from leeky_twisted.core.raft import RaftCore, RaftError, bootstrap_entries

SUBSTEPS = 10  # network/disk steps per tick


class SafetyViolation(AssertionError):
    """A Raft safety property failed in a simulated run."""


@dataclass
class FaultSettings:
    """How unkind the simulated world is; drawn from the seed."""

    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: int = 3  #: substeps
    long_delay: float = 0.0  #: chance of a delay of up to 5 election timeouts
    partition_rate: float = 0.0  #: chance per tick of a new partition
    crash_rate: float = 0.0  #: chance per tick of crashing a node
    max_persist_delay: int = 3
    propose_rate: float = 0.3
    read_rate: float = 0.1
    config_rate: float = 0.0
    transfer_rate: float = 0.0
    compact_rate: float = 0.0


@dataclass
class Disk:
    """What survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: tuple[SnapshotMeta, dict[str, str]] | None = None


class SimNode:
    """One simulated server: a core, its disk, its state machine."""

    def __init__(self, sim: Simulation, nid: NodeId, disk: Disk) -> None:
        self.sim = sim
        self.id = nid
        self.disk = disk
        self.up = False
        self.core: RaftCore | None = None
        self.kv: dict[str, str] = {}
        self.applied = 0
        self.inflight: Ready | None = None
        self.persist_at = 0
        self.staged: dict[int, dict[str, str]] = {}
        self.leader_last: tuple[int, int, int] | None = None  # (term, last index, last term)

    def start(self) -> None:
        """Recover from disk."""
        snap_meta = None
        self.kv = {}
        self.applied = 0
        if self.disk.snapshot is not None:
            snap_meta, data = self.disk.snapshot
            self.kv = dict(data)
            self.applied = snap_meta.index
        self.core = RaftCore(
            self.sim.core_config(self.id),
            random.Random(self.sim.rng.random()),
            self.disk.hard_state,
            snap_meta,
            list(self.disk.entries),
            logger=self.sim.trace if self.sim.verbose else None,
        )
        self.inflight = None
        self.up = True
        self.leader_last = None

    def crash(self) -> None:
        """Lose everything not persisted."""
        self.up = False
        self.core = None
        self.inflight = None

    def pump(self) -> None:
        """Handle the next Ready if none is in flight."""
        core = self.core
        if not self.up or core is None:
            return
        if self.inflight is not None:
            # As the node does: leader messages go out while the disk is busy.
            for m in core.take_messages():
                self.sim.send(self, m)
            return
        if not core.has_ready():
            return
        rd = core.ready()
        for m in rd.messages:
            self.sim.send(self, m)
        self.inflight = rd
        delay = (
            self.sim.rng.randint(0, self.sim.faults.max_persist_delay) if rd.must_persist() else 0
        )
        self.persist_at = self.sim.now + delay
        if delay == 0:
            self.finish()

    def finish(self) -> None:
        """Complete the in-flight Ready: persist, send, apply, advance."""
        rd = self.inflight
        core = self.core
        assert rd is not None and core is not None
        if rd.snapshot is not None:
            data = self.staged.pop(rd.snapshot.index, None)
            if data is None:
                raise SafetyViolation(f"{self.id}: snapshot {rd.snapshot.index} data missing")
            self.disk.snapshot = (rd.snapshot, dict(data))
            self.disk.entries = []
            self.kv = dict(data)
            self.applied = rd.snapshot.index
        if rd.entries:
            first = rd.entries[0].index
            self.disk.entries = [e for e in self.disk.entries if e.index < first]
            self.disk.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.disk.hard_state = rd.hard_state
        for m in rd.messages_after_persist:
            self.sim.send(self, m)
        for e in rd.committed_entries:
            self.apply(e)
        for rs in rd.read_states:
            self.sim.serve_read(self, rs.index, rs.context)
        for ctx in rd.dropped_reads:
            self.sim.reads.pop(ctx, None)  # type: ignore[call-overload]
        core.advance(rd)
        self.inflight = None
        self.sim.check_node(self)

    def apply(self, e: Entry) -> None:
        """Apply a committed entry and check State Machine Safety."""
        if e.index != self.applied + 1:
            raise SafetyViolation(f"{self.id}: applied {e.index} after {self.applied}")
        self.sim.check_applied(self, e)
        self.applied = e.index
        if e.kind is EntryKind.NORMAL:
            key, _, value = e.data.decode().partition("=")
            self.kv[key] = value

    def compact(self) -> None:
        """Snapshot the state machine and drop the log prefix."""
        core = self.core
        if core is None or self.inflight is not None or core.applied <= core.log.start + 2:
            return
        meta = core.snapshot_meta_at(core.applied)
        self.disk.snapshot = (meta, dict(self.kv))
        keep = self.sim.rng.randint(0, 3)
        upto = max(meta.index - keep, core.log.start)
        core.compact(meta, upto)
        self.disk.entries = [e for e in self.disk.entries if e.index > core.log.start]


class Simulation:
    """A cluster of simulated nodes on a simulated network, driven by one seed."""

    def __init__(
        self,
        seed: int,
        nodes: int | None = None,
        ticks: int = 300,
        faults: FaultSettings | None = None,
        verbose: bool = False,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = nodes or self.rng.choice((3, 3, 5, 5, 7))
        self.ticks = ticks
        self.faults = faults or self._draw_faults()
        self.verbose = verbose
        self.now = 0
        self.tick_count = 0
        self.trace_lines: list[str] = []
        self.ids = [NodeId(f"n{i + 1}") for i in range(self.n)]
        self.spares = [NodeId(f"s{i + 1}") for i in range(2)]
        boot = bootstrap_entries([(nid, b"") for nid in self.ids])
        self.nodes: dict[NodeId, SimNode] = {}
        for nid in self.ids:
            disk = Disk(HardState(1, None, len(boot)), list(boot))
            self.nodes[nid] = SimNode(self, nid, disk)
        for nid in self.spares:
            self.nodes[nid] = SimNode(self, nid, Disk())
        self.network: list[tuple[int, int, Message, object]] = []
        self.msg_seq = 0
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        # global knowledge for the checks
        self.leaders: dict[int, NodeId] = {}
        self.committed: dict[int, Entry] = {}
        self.max_committed = 0
        self.proposals: dict[int, list[tuple[int, bytes]]] = {}  # index -> [(term, data)]
        self.outcomes = {"committed": 0, "failed": 0}
        self.reads: dict[int, int] = {}  # read id -> committed index when issued
        self.read_seq = 0
        self.reads_served = 0
        self.value_seq = 0
        self.messages_sent = 0

    # ------------------------------------------------------------ setup

    def _draw_faults(self) -> FaultSettings:
        r = self.rng
        level = r.choice(("calm", "lossy", "partitions", "crashes", "chaos", "membership"))
        f = FaultSettings(max_delay=r.randint(1, 6), compact_rate=r.choice((0.0, 0.02, 0.1)))
        if level in ("lossy", "chaos"):
            f.drop = r.choice((0.05, 0.1, 0.2))
            f.duplicate = r.choice((0.0, 0.05))
            f.max_delay = r.randint(2, 15)
            f.long_delay = r.choice((0.0, 0.02))
        if level in ("partitions", "chaos", "membership"):
            f.partition_rate = r.choice((0.01, 0.03))
        if level in ("crashes", "chaos", "membership"):
            f.crash_rate = r.choice((0.005, 0.02))
        if level in ("membership", "chaos"):
            f.config_rate = 0.03
            f.transfer_rate = 0.01
        else:
            f.transfer_rate = r.choice((0.0, 0.005))
        return f

    def core_config(self, nid: NodeId) -> CoreConfig:
        """Return the core settings every simulated node uses."""
        return CoreConfig(
            nid,
            election_ticks=10,
            heartbeat_ticks=2,
            max_inflight=8,
            max_msg_bytes=200,
            snapshot_retry_ticks=30,
        )

    def trace(self, line: str) -> None:
        """Record a line of the run's transcript."""
        self.trace_lines.append(f"t={self.now}: {line}")

    # ---------------------------------------------------------- network

    def send(self, src: SimNode, m: Message) -> None:
        """Put a message on the simulated network (maybe lost, duplicated, delayed)."""
        self.messages_sent += 1
        payload: object = None
        if isinstance(m, InstallSnapshot):
            snap = src.disk.snapshot
            if snap is None or snap[0].index != m.meta.index:
                return  # the snapshot moved on; the leader will retry
            payload = dict(snap[1])
        if self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            at = self.now + self.rng.randint(1, self.faults.max_delay)
            if self.rng.random() < self.faults.long_delay:
                at += self.rng.randint(1, 50 * SUBSTEPS)
            self.msg_seq += 1
            self.network.append((at, self.msg_seq, m, payload))

    def deliver_due(self) -> None:
        """Deliver every message whose time has come, in a seeded order."""
        due = [x for x in self.network if x[0] <= self.now]
        if not due:
            return
        self.network = [x for x in self.network if x[0] > self.now]
        self.rng.shuffle(due)
        for _, _, m, payload in due:
            if (m.sender, m.recipient) in self.blocked:
                continue
            node = self.nodes.get(m.recipient)
            if node is None or not node.up or node.core is None:
                continue
            if isinstance(m, InstallSnapshot) and isinstance(payload, dict):
                node.staged[m.meta.index] = payload
            node.core.step(m)
            node.pump()

    # ------------------------------------------------------------ checks

    def check_node(self, node: SimNode) -> None:
        """Check the per-node invariants after it changed."""
        core = node.core
        if core is None:
            return
        if core.role is Role.LEADER:
            other = self.leaders.setdefault(core.term, node.id)
            if other != node.id:
                raise SafetyViolation(f"two leaders in term {core.term}: {other} and {node.id}")
            last = core.log.last_index()
            if node.leader_last is None or node.leader_last[0] != core.term:
                self._check_leader_completeness(node)
            elif (
                last < node.leader_last[1]
                or core.log.term_at(node.leader_last[1]) != (node.leader_last[2])
            ):
                raise SafetyViolation(f"leader {node.id} rewrote its log in term {core.term}")
            node.leader_last = (core.term, last, core.log.last_term())
        else:
            node.leader_last = None
        # Log Matching on the tail: same (index, term) implies same entry.
        for e in core.log.entries[-4:]:
            known = self.committed.get(e.index)
            if known is not None and known.term == e.term and known != e:
                raise SafetyViolation(f"{node.id}: log matching broken at {e.index}")

    def _check_leader_completeness(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        for index, e in self.committed.items():
            if index <= core.log.start:
                continue
            try:
                mine = core.log.entry_at(index)
            except IndexError:
                raise SafetyViolation(
                    f"leader {node.id} of term {core.term} lacks committed entry {index}"
                ) from None
            if mine != e:
                raise SafetyViolation(
                    f"leader {node.id} of term {core.term} has {mine} where {e} committed"
                )

    def check_applied(self, node: SimNode, e: Entry) -> None:
        """State Machine Safety: every node applies the same entry at each index."""
        known = self.committed.get(e.index)
        if known is None:
            self.committed[e.index] = e
            self.max_committed = max(self.max_committed, e.index)
            for term, _ in self.proposals.pop(e.index, []):
                self.outcomes["committed" if term == e.term else "failed"] += 1
        elif known != e:
            raise SafetyViolation(f"{node.id} applied {e} where {known} was applied")

    def record_proposal(self, index: int, term: int, data: bytes) -> None:
        """Track a proposal until the entry at its index is applied somewhere."""
        known = self.committed.get(index)
        if known is not None:  # a stale leader proposed at an index already decided
            self.outcomes["committed" if known.term == term else "failed"] += 1
            return
        self.proposals.setdefault(index, []).append((term, data))

    def full_log_matching(self) -> None:
        """Check Log Matching across every pair of live logs."""
        seen: dict[tuple[int, int], tuple[Entry, int | None]] = {}
        for node in self.nodes.values():
            if node.core is None:
                continue
            log = node.core.log
            for e in log.entries:
                key = (e.index, e.term)
                prev = log.term_at(e.index - 1)
                got = seen.setdefault(key, (e, prev))
                if got[0] != e or (got[1] is not None and prev is not None and got[1] != prev):
                    raise SafetyViolation(f"log matching broken at {key} on {node.id}")

    def serve_read(self, node: SimNode, index: int, ctx: object) -> None:
        """Check a ReadIndex answer against what was committed when it was issued."""
        assert isinstance(ctx, int)
        issued = self.reads.pop(ctx, None)
        if issued is None:
            return
        if index < issued:
            raise SafetyViolation(
                f"{node.id} served read {ctx} at index {index}, but {issued} was committed"
            )
        if node.applied < index:
            raise SafetyViolation(f"{node.id} served read before applying {index}")
        self.reads_served += 1

    # ----------------------------------------------------------- actions

    def leaders_now(self) -> list[SimNode]:
        """Return the live nodes that believe they lead."""
        return [
            n
            for n in self.nodes.values()
            if n.up and n.core is not None and n.core.role is Role.LEADER
        ]

    def random_actions(self, faults_on: bool) -> None:
        """Do this tick's random client requests and faults."""
        r, f = self.rng, self.faults
        for leader in self.leaders_now():
            core = leader.core
            assert core is not None
            if r.random() < f.propose_rate:
                self.value_seq += 1
                data = f"k{r.randint(0, 2)}={self.value_seq}".encode()
                try:
                    index, term = core.propose(data)
                except RaftError:
                    pass
                else:
                    self.record_proposal(index, term, data)
            if r.random() < f.read_rate:
                self.read_seq += 1
                self.reads[self.read_seq] = self.max_committed
                try:
                    core.read_index(self.read_seq)
                except RaftError:
                    self.reads.pop(self.read_seq)
            if faults_on and r.random() < f.transfer_rate:
                target = r.choice(sorted(core.configuration.voters))
                with contextlib.suppress(RaftError, ValueError):
                    core.transfer_leadership(target)
            if faults_on and r.random() < f.config_rate:
                self._random_config_change(leader)
            leader.pump()
        for node in self.nodes.values():
            if node.up and r.random() < f.compact_rate:
                node.compact()
        if not faults_on:
            return
        if r.random() < f.partition_rate:
            self._random_partition()
        if self.blocked and r.random() < 0.05:
            self.blocked.clear()
        if r.random() < f.crash_rate:
            victim = self.nodes[r.choice(self.ids + self.spares)]
            if victim.up:
                victim.crash()
        for node in self.nodes.values():
            if not node.up and r.random() < 0.05 and (node.disk.entries or node.id in self.ids):
                node.start()

    def _random_config_change(self, leader: SimNode) -> None:
        core = leader.core
        assert core is not None
        cfg = core.configuration
        r = self.rng
        candidates = self.ids + self.spares
        nid = r.choice(candidates)
        if nid in cfg.learners:
            op = ConfChangeOp.ADD_VOTER
        elif nid in cfg.voters:
            if len(cfg.voters) <= 3:
                return
            op = ConfChangeOp.REMOVE
        else:
            op = ConfChangeOp.ADD_LEARNER
        try:
            core.propose_config_change(ConfChange(op, nid))
        except (RaftError, ValueError):
            return
        node = self.nodes[nid]
        if not node.up:
            node.start()

    def _random_partition(self) -> None:
        r = self.rng
        ids = [n for n in self.nodes]
        kind = r.choice(("split", "isolate", "oneway"))
        self.blocked.clear()
        if kind == "split":
            r.shuffle(ids)
            cut = r.randint(1, len(ids) - 1)
            a, b = set(ids[:cut]), set(ids[cut:])
            self.blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
        elif kind == "isolate":
            victim = r.choice(ids)
            self.blocked = {(victim, x) for x in ids} | {(x, victim) for x in ids}
        else:
            src, dst = r.sample(ids, 2)
            self.blocked = {(src, dst)}

    # -------------------------------------------------------------- run

    def step_substep(self) -> None:
        """Advance the world by one substep."""
        self.now += 1
        self.deliver_due()
        for node in self.nodes.values():
            if node.up and node.inflight is not None and self.now >= node.persist_at:
                node.finish()
            node.pump()

    def tick_all(self, faults_on: bool) -> None:
        """Tick every live node once, then act."""
        self.tick_count += 1
        for node in self.nodes.values():
            if node.up and node.core is not None:
                node.core.tick()
                node.pump()
        self.random_actions(faults_on)

    def run(self) -> SimResult:
        """Run the faulty phase, heal, and check liveness; raise SafetyViolation on failure."""
        for nid in self.ids:
            self.nodes[nid].start()
        try:
            for t in range(self.ticks):
                for _ in range(SUBSTEPS):
                    self.step_substep()
                self.tick_all(faults_on=True)
                if t % 25 == 0:
                    self.full_log_matching()
            self._heal()
            self._check_liveness()
            self.full_log_matching()
        except SafetyViolation as exc:
            raise SafetyViolation(f"{exc}\n  replay: {self.replay_command()}") from exc
        return SimResult(
            seed=self.seed,
            nodes=self.n,
            committed=self.max_committed,
            proposals=dict(self.outcomes),
            reads=self.reads_served,
            messages=self.messages_sent,
            elections=len(self.leaders),
        )

    def _heal(self) -> None:
        self.blocked.clear()
        self.faults.drop = 0.0
        self.faults.duplicate = 0.0
        for node in self.nodes.values():
            if not node.up:
                node.start()

    def _check_liveness(self, limit_ticks: int = 200) -> None:
        """After healing, a leader must commit a fresh proposal within ``limit_ticks``.

        A marker is proposed on the current leader every few ticks until one
        commits (a marker given to a leader that is already deposed may never
        be reached by the real log).
        """
        markers: list[tuple[int, int]] = []
        for t in range(limit_ticks):
            for _ in range(SUBSTEPS):
                self.step_substep()
            self.tick_count += 1
            for node in self.nodes.values():
                if node.up and node.core is not None:
                    node.core.tick()
                    node.pump()
            leaders = self.leaders_now()
            if leaders and t % 10 == 0:
                core = leaders[0].core
                assert core is not None
                try:
                    index, term = core.propose(b"liveness=1")
                except RaftError:
                    pass
                else:
                    self.record_proposal(index, term, b"liveness=1")
                    markers.append((index, term))
                leaders[0].pump()
            for index, term in markers:
                got = self.committed.get(index)
                if got is not None and got.term == term:
                    pending = [i for i in self.proposals if i <= index]
                    if pending:
                        raise SafetyViolation(f"proposals at {pending} never resolved")
                    return
        raise SafetyViolation(f"no progress within {limit_ticks} ticks after healing")

    def replay_command(self) -> str:
        """Return the one-line command that replays this run."""
        return f"python -m leeky_twisted.simulation --seed {self.seed} --ticks {self.ticks} -v"


@dataclass
class SimResult:
    """Summary of one simulated run."""

    seed: int
    nodes: int
    committed: int
    proposals: dict[str, int]
    reads: int
    messages: int
    elections: int


def run_seeds(
    seeds: range, ticks: int = 300, report: Callable[[str], None] | None = None
) -> list[SimResult]:
    """Run many seeds; raise on the first violation."""
    results = []
    for seed in seeds:
        results.append(Simulation(seed, ticks=ticks).run())
        if report and seed % 100 == 0:
            report(f"seed {seed} ok")
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: replay one seed or soak many."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, help="replay exactly this seed")
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument("-v", "--verbose", action="store_true", help="print the core's transcript")
    args = p.parse_args(argv)
    if args.seed is not None:
        sim = Simulation(args.seed, ticks=args.ticks, verbose=args.verbose)
        try:
            res = sim.run()
        except SafetyViolation as exc:
            if args.verbose:
                print("\n".join(sim.trace_lines[-400:]))
            print(f"FAIL seed {args.seed}: {exc}")
            return 1
        print(f"ok {res}")
        return 0
    started = time.perf_counter()
    done = 0
    for seed in range(args.start, args.start + args.seeds):
        try:
            Simulation(seed, ticks=args.ticks).run()
        except SafetyViolation as exc:
            print(f"FAIL seed {seed}: {exc}")
            return 1
        done += 1
        if done % 500 == 0:
            rate = done / (time.perf_counter() - started)
            print(f"{done} seeds ok ({rate:.1f} seeds/s)", file=sys.stderr)
    rate = done / (time.perf_counter() - started)
    print(f"{done} seeds ok from {args.start} ({rate:.1f} seeds/s, {args.ticks} ticks each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
