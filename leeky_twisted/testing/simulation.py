"""Deterministic simulation of whole clusters of the shipped node, checking safety throughout.

Each simulated server runs the real :class:`~leeky_twisted.server.node.RaftNode` (its
Ready loop, persistence order, request tracking, apply, snapshot and stop code)
on a deterministic clock, over the real in-memory stores and a simulated
network (:mod:`leeky_twisted.testing.hosts`). One seed decides everything:
cluster size, which faults happen and how often, the schedule. A failing seed
replays exactly with ``python -m leeky_twisted.simulation --seed SEED``, and
``--seeds 20000`` soaks.

Faults: lost, duplicated, delayed and reordered messages; partitions and
one-way link loss; crashes at any point (also between a write and the messages
that depend on it, and in the middle of an append: a torn write); failing and
slow disks; graceful stops; reactor stalls longer than an election timeout
(with lease reads on in some seeds); a voter's disk wiped and the node started
again under the same id; a voter's data folder deleted or replaced while it
runs (it must stop itself, then starts again on the new folder); the newest
snapshot corrupt at restart; snapshots installed while other writes are in
flight; a cluster bootstrapped as a single voter and grown with learners and
voters; leadership transfers.

Checked as it runs: Election Safety, Leader Append-Only, Log Matching, Leader
Completeness, State Machine Safety; that every write a client was told
succeeded is the committed entry at its index (and in the final log); that no
read saw a state older than a write committed before the read started; that no
node stopped itself because of a broken rule; that a node whose data folder was
swapped stopped itself within a check interval of its reactor. Liveness: once
faults stop, a leader commits a fresh write within a bounded time, and every
request a running node took has been answered.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.python.failure import Failure

from leeky_twisted import defaults
from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    BOOTSTRAP_TERM,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    InstallSnapshot,
    Message,
    NodeId,
    Ready,
    Role,
)
from leeky_twisted.server.node import NodeSettings
from leeky_twisted.testing.hosts import DiskFaults, NodeHost, SimReactor

TICK = 1.0  #: seconds of simulated time per node tick
SUBSTEP = TICK / 10  #: the unit of message delays


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
    oneway_rate: float = 0.0  #: chance per tick that a node's answers start being lost
    crash_rate: float = 0.0  #: chance per tick of crashing a node
    stop_rate: float = 0.0  #: chance per tick of a graceful stop
    stall_rate: float = 0.0  #: chance per tick of a reactor stall past an election timeout
    wipe_rate: float = 0.0  #: chance per tick of losing a voter's disk
    folder_swap_rate: float = 0.0  #: chance per tick of a voter's folder deleted or replaced
    corrupt_snapshot: float = 0.0  #: chance that a restart finds its newest snapshot corrupt
    disk_fail: float = 0.0  #: per write
    disk_tear: float = 0.0  #: per write
    crash_after_write: float = 0.0  #: per write: durable, but the process dies before going on
    max_disk_delay: float = 0.3  #: seconds per disk job (more than a tick: a slow disk)
    propose_rate: float = 0.3
    read_rate: float = 0.1
    config_rate: float = 0.0
    transfer_rate: float = 0.0
    compact_rate: float = 0.0
    snapshot_entries: int = 10**9  #: the node's own snapshot policy
    lease_read: bool = False
    single_voter: bool = False  #: bootstrap one voter; the others join
    #: chance that each running node is told (a refused dial) that a crashed or
    #: stopped peer's process is gone (``RaftNode.peer_gone``)
    gone_report: float = 0.0
    #: chance per tick of a false report: a node told a live peer is gone
    false_gone: float = 0.0


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


class Simulation:
    """A cluster of shipped nodes on a simulated network, driven by one seed."""

    def __init__(
        self,
        seed: int,
        nodes: int | None = None,
        ticks: int = 300,
        faults: FaultSettings | None = None,
        verbose: bool = False,
        batch_reads: bool | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        #: draws of the folder fault, kept apart so seeds without it replay as before
        self.folder_rng = random.Random(f"{seed}/folder")
        #: draws of the peer-gone reports, apart so seeds without them replay as before
        self.gone_rng = random.Random(f"{seed}/gone")
        #: half the seeds also read at followers (ReadIndexRequest to the leader);
        #: drawn apart so the other half replay as before
        self.follower_reads_rng = random.Random(f"{seed}/follower-reads")
        self.follower_reads = self.follower_reads_rng.random() < 0.5
        #: a quarter of the seeds run without CheckQuorum (never with lease reads):
        #: a leader cut off with a follower then keeps leading it, and the follower's
        #: reads must still wait for a round the majority confirms; drawn apart
        self.check_quorum = random.Random(f"{seed}/check-quorum").random() >= 0.25
        #: half the seeds read as production nodes do (batched reads, then
        #: ``process_received``); drawn apart so the other half replay as before
        drawn = random.Random(f"{seed}/reads").random() < 0.5
        self.batch_reads = drawn if batch_reads is None else batch_reads
        self._reads_forced = self.batch_reads != drawn
        self.n = nodes or self.rng.choice((3, 3, 5, 5, 7))
        self.ticks = ticks
        self.faults = faults or self._draw_faults()
        self.verbose = verbose
        self.reactor = SimReactor()
        self.tick_count = 0
        self.trace_lines: list[str] = []
        self.ids = [NodeId(f"n{i + 1}") for i in range(self.n)]
        self.spares = [NodeId(f"s{i + 1}") for i in range(2)]
        f = self.faults
        self.disk_faults = DiskFaults(
            random.Random(self.rng.random()),
            fail=f.disk_fail,
            tear=f.disk_tear,
            crash_after_write=f.crash_after_write,
            max_delay=f.max_disk_delay,
        )
        founders = self.ids[:1] if f.single_voter else self.ids
        self._bootstrap = [(str(nid), b"") for nid in founders]
        #: nodes that lost their disk where bootstrapping again would found a
        #: second cluster (a single founder): they start again as joiners
        self.rejoin: set[NodeId] = set()
        self.hosts: dict[NodeId, NodeHost] = {}
        for nid in self.ids + self.spares:
            self.hosts[nid] = NodeHost(
                self.reactor,
                nid,
                self.core_config,
                self.node_settings,
                random.Random(self.rng.random()),
                self.send,
                self.observe,
                self.disk_faults,
                self.batch_reads,
            )
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        self.mute_until: dict[NodeId, float] = {}  #: one-way loss: answers from it are lost
        # global knowledge for the checks
        self.leaders: dict[int, NodeId] = {}
        self.committed: dict[int, Entry] = {}
        #: the term of the node that first saw each index committed: it was
        #: committed in that term or earlier (Leader Completeness binds leaders
        #: of later terms only; a leader of an older term may still win late)
        self.commit_term: dict[int, int] = {}
        self.max_committed = 0
        self.max_committed_write = 0
        self.next_apply: dict[NodeId, int] = {}
        self.leader_last: dict[NodeId, tuple[int, int, int]] = {}
        self.formed: set[NodeId] = set()  #: nodes that have held an entry of a leader
        self.formed_once: set[NodeId] = set()
        self.acked: dict[int, bytes] = {}
        self.pending: dict[int, tuple[NodeHost, object]] = {}  #: op -> (host, node)
        self.violations: list[str] = []  #: found inside callbacks, raised at the next tick
        self.op_seq = 0
        self.outcomes = {"committed": 0, "failed": 0}
        self.reads_served = 0
        self.value_seq = 0
        self.messages_sent = 0
        self.folder_swaps = 0
        self.folder_stops = 0  #: nodes that stopped themselves over a swapped folder

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
        # The fault classes of the shipped node, each on in a share of the seeds.
        if r.random() < 0.25:
            f.stop_rate = r.choice((0.005, 0.02))
        if r.random() < 0.25:
            f.crash_after_write = r.choice((0.002, 0.01))
            f.disk_tear = r.choice((0.0, 0.002, 0.01))
        if r.random() < 0.1:
            f.disk_fail = 0.002
        if r.random() < 0.2:
            f.max_disk_delay = r.choice((2.0, 5.0))  # a slow disk: writes take ticks
        if r.random() < 0.2:
            f.oneway_rate = r.choice((0.01, 0.03))
        if r.random() < 0.25:
            f.lease_read = True
        if r.random() < 0.25:
            f.stall_rate = r.choice((0.005, 0.02))
        if r.random() < 0.15:
            f.wipe_rate = r.choice((0.005, 0.02))
        if r.random() < 0.2:
            f.corrupt_snapshot = 0.5
            f.compact_rate = max(f.compact_rate, 0.05)
        if r.random() < 0.2:
            f.snapshot_entries = r.choice((10, 30))
        if r.random() < 0.15:
            f.single_voter = True
            f.config_rate = max(f.config_rate, 0.05)
        fr = self.folder_rng
        if fr.random() < 0.15:
            f.folder_swap_rate = fr.choice((0.005, 0.02))
        gr = self.gone_rng
        if gr.random() < 0.5:
            f.gone_report = gr.choice((0.5, 1.0))
            f.false_gone = gr.choice((0.0, 0.01, 0.05))
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
            lease_read=self.faults.lease_read,
            check_quorum=self.check_quorum or self.faults.lease_read,
        )

    def node_settings(self, nid: NodeId) -> NodeSettings:
        """Return the node settings: one-second ticks, the seed's snapshot policy."""
        f = self.faults
        return NodeSettings(
            tick_interval=TICK,
            snapshot_entries=f.snapshot_entries,
            snapshot_trailing=self.rng.randint(0, 3),
            request_timeout=30 * TICK,
            inline_persist_seconds=0.0 if f.max_disk_delay > TICK else 0.002,
            bootstrap=self._bootstrap if nid in self.ids and nid not in self.rejoin else [],
        )

    def trace(self, line: str) -> None:
        """Record a line of the run's transcript."""
        if self.verbose:
            self.trace_lines.append(f"t={self.reactor.now:.1f}: {line}")

    # ---------------------------------------------------------- network

    def send(self, src: NodeHost, m: Message) -> None:
        """Put a message on the simulated network (maybe lost, duplicated, delayed)."""
        self.messages_sent += 1
        payload: bytes | None = None
        if isinstance(m, InstallSnapshot):
            try:
                payload = src.disk.snapshots.open(m.meta.index)
            except (KeyError, ValueError):
                return  # the snapshot moved on; the leader will retry
        r, f = self.rng, self.faults
        if r.random() < f.drop:
            return
        if self.mute_until.get(m.sender, -1.0) > self.reactor.now:
            return
        copies = 2 if r.random() < f.duplicate else 1
        for _ in range(copies):
            delay = r.randint(1, f.max_delay) * SUBSTEP
            if r.random() < f.long_delay:
                delay += r.randint(1, 50) * SUBSTEP
            self.reactor.callLater(delay, self._deliver, m, payload)

    def _deliver(self, m: Message, payload: bytes | None) -> None:
        if (m.sender, m.recipient) in self.blocked:
            return
        host = self.hosts.get(m.recipient)
        if host is None or not host.up:
            return
        if payload is not None and isinstance(m, InstallSnapshot):
            # As the peer transport does: store the snapshot, then hand over the message.
            sink = host.disk.snapshots.create(m.meta)
            sink.write(payload)
            sink.close()
        host.deliver(m)

    # ------------------------------------------------------------ checks

    def observe(self, host: NodeHost, rd: Ready) -> None:
        """Check a Ready the node took: leaders, committed entries, its log."""
        node = host.node
        if node is None:
            return
        core = node.core
        nid = host.id
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            other = self.leaders.setdefault(rd.soft_state.term, nid)
            if other != nid:
                raise SafetyViolation(f"two leaders in term {rd.soft_state.term}: {other}, {nid}")
            self.trace(f"{nid} leads term {rd.soft_state.term}")
        if core.role is Role.LEADER:
            self._check_leader(host)
        else:
            self.leader_last.pop(nid, None)
        if rd.snapshot is not None:
            self.next_apply[nid] = rd.snapshot.index + 1
        for e in rd.committed_entries:
            want = self.next_apply.get(nid)
            if want is not None and e.index != want:
                raise SafetyViolation(f"{nid}: committed {e.index} after {want - 1}")
            self.next_apply[nid] = e.index + 1
            self.check_committed(nid, e)
        if core.log.last_term() > BOOTSTRAP_TERM:
            self.formed.add(nid)
            self.formed_once.add(nid)
        for e in core.log.entries[-4:]:
            known = self.committed.get(e.index)
            if known is not None and known.term == e.term and known != e:
                raise SafetyViolation(f"{nid}: log matching broken at {e.index}")

    def _check_leader(self, host: NodeHost) -> None:
        assert host.node is not None
        core = host.node.core
        last = core.log.last_index()
        seen = self.leader_last.get(host.id)
        if seen is None or seen[0] != core.term:
            for index, e in self.committed.items():
                if index <= core.log.start or self.commit_term[index] >= core.term:
                    continue
                mine = core.log.entry_at(index) if index <= last else None
                if mine != e:
                    raise SafetyViolation(
                        f"leader {host.id} of term {core.term} has {mine} where {e} committed"
                    )
        elif last < seen[1] or core.log.term_at(seen[1]) != seen[2]:
            raise SafetyViolation(f"leader {host.id} rewrote its log in term {core.term}")
        self.leader_last[host.id] = (core.term, last, core.log.last_term())

    def check_committed(self, nid: NodeId, e: Entry) -> None:
        """State Machine Safety: every node commits the same entry at each index."""
        known = self.committed.get(e.index)
        if known is None:
            self.committed[e.index] = e
            host = self.hosts[nid]
            self.commit_term[e.index] = host.node.core.term if host.node else 0
            self.max_committed = max(self.max_committed, e.index)
            if e.kind is EntryKind.NORMAL:
                self.max_committed_write = max(self.max_committed_write, e.index)
        elif known != e:
            raise SafetyViolation(f"{nid} committed {e} where {known} was committed")

    def full_log_matching(self) -> None:
        """Check Log Matching across every pair of live logs."""
        seen: dict[tuple[int, int], tuple[Entry, int | None]] = {}
        for host in self.hosts.values():
            if host.node is None:
                continue
            log = host.node.core.log
            for e in log.entries:
                key = (e.index, e.term)
                prev = log.term_at(e.index - 1)
                got = seen.setdefault(key, (e, prev))
                if got[0] != e or (got[1] is not None and prev is not None and got[1] != prev):
                    raise SafetyViolation(f"log matching broken at {key} on {host.id}")

    def _check_failures(self) -> None:
        for host in self.hosts.values():
            node = host.node
            if node is not None and node.failure is not None:
                if "broke the core" in node.failure:
                    raise SafetyViolation(f"{host.id} stopped itself: {node.failure}")
                if node is host.swapped_node:
                    self.folder_stops += 1
                    self.trace(f"{host.id} stopped itself: {node.failure}")
                host.crash()  # a failed disk: the process exits; it is restarted later
            self._check_swapped(host)

    def _check_swapped(self, host: NodeHost) -> None:
        """A node whose data folder was swapped stops itself within one check
        interval of its reactor (a stalled reactor checks when it wakes: when its
        stall ends, or when the calls it postponed run if the heal lifted it)."""
        node = host.swapped_node
        if node is None or host.node is not node or not host.up:
            return
        assert host.clock is not None
        since = max(host.swapped_at, host.clock.stalled_until, host.clock.waking)
        if self.reactor.now > since + defaults.DATA_DIR_CHECK_SECONDS + TICK:
            raise SafetyViolation(
                f"{host.id} went on running {self.reactor.now - host.swapped_at:.1f}s "
                "after its data folder was swapped"
            )

    # ----------------------------------------------------------- clients

    def _track(self, host: NodeHost, d: Any, on_ok: Callable[[Any], None]) -> None:
        self.op_seq += 1
        op = self.op_seq
        pending = self.pending
        pending[op] = (host, host.node)

        def ok(result: Any) -> None:
            pending.pop(op, None)
            try:
                on_ok(result)
            except SafetyViolation as e:
                self.violations.append(str(e))

        def failed(f: Failure) -> None:
            pending.pop(op, None)
            self.outcomes["failed"] += 1

        d.addCallbacks(ok, failed)

    def _propose(self, host: NodeHost, data: bytes) -> None:
        node = host.node
        if node is None or node.stopped:
            return

        def acknowledged(index: Any) -> None:
            known = self.committed.get(index)
            if known is None or known.data != data:
                raise SafetyViolation(f"write {data!r} acknowledged at {index}, committed {known}")
            self.acked[index] = data
            self.outcomes["committed"] += 1

        self._track(host, node.propose(data, 30 * TICK), acknowledged)

    def _read(self, host: NodeHost) -> None:
        node = host.node
        if node is None or node.stopped:
            return
        floor = self.max_committed_write

        def answered(result: Any) -> None:
            version, _ = result
            if version < floor:
                raise SafetyViolation(
                    f"{host.id} served a read from the state at {version}, "
                    f"but write {floor} was committed before the read started"
                )
            self.reads_served += 1

        self._track(host, node.read("k0", True, 30 * TICK), answered)

    def _on_host(self, host: NodeHost, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the host's reactor (a stalled node takes it when it wakes)."""
        if host.clock is not None:
            host.clock.callLater(0, fn)

    # ----------------------------------------------------------- actions

    def leaders_now(self) -> list[NodeHost]:
        """Return the running nodes that believe they lead."""
        return [h for h in self.hosts.values() if h.up and h.node.core.role is Role.LEADER]  # type: ignore[union-attr]

    def random_actions(self, faults_on: bool) -> None:
        """Do this tick's random client requests and faults."""
        r, f = self.rng, self.faults
        for leader in self.leaders_now():
            if r.random() < f.propose_rate:
                self.value_seq += 1
                data = f"k{r.randint(0, 2)}={self.value_seq}".encode()
                self._on_host(leader, lambda h=leader, d=data: self._propose(h, d))
            if r.random() < f.read_rate:
                self._on_host(leader, lambda h=leader: self._read(h))
            if faults_on and r.random() < f.transfer_rate:
                node = leader.node
                assert node is not None
                target = r.choice(sorted(node.core.configuration.voters))
                with contextlib.suppress(Exception):
                    node.transfer_leadership(target)
            if faults_on and r.random() < f.config_rate:
                self._random_config_change(leader)
        fr = self.follower_reads_rng
        if self.follower_reads and fr.random() < 2 * f.read_rate:
            followers = [
                h
                for h in self.hosts.values()
                if h.up and h.node.core.role is Role.FOLLOWER  # type: ignore[union-attr]
            ]
            if followers:
                host = fr.choice(followers)
                self._on_host(host, lambda h=host: self._read(h))
        for host in self.hosts.values():
            if host.up and r.random() < f.compact_rate:
                assert host.node is not None
                host.node.snapshot_now(trailing=r.randint(0, 3))
        if not faults_on:
            return
        self._random_faults()

    def _random_faults(self) -> None:
        r, f = self.rng, self.faults
        now = self.reactor.now
        if r.random() < f.partition_rate:
            self._random_partition()
        if self.blocked and r.random() < 0.05:
            self.blocked.clear()
        every = self.ids + self.spares
        if r.random() < f.oneway_rate:
            self.mute_until[r.choice(every)] = now + r.randint(2, 50) * TICK
        if r.random() < f.crash_rate:
            victim = self.hosts[r.choice(every)]
            was_up = victim.up
            if was_up:
                self.trace(f"crash {victim.id}")
            victim.crash()
            if was_up:
                self._report_gone(victim)
        if r.random() < f.stop_rate:
            victim = self.hosts[r.choice(every)]
            if victim.up:
                self.trace(f"stop {victim.id}")
            stopping = victim.stop()
            if stopping is not None:
                stopping.addBoth(lambda _, v=victim: self._report_gone(v))
        if r.random() < f.stall_rate:
            self.hosts[r.choice(every)].stall(r.uniform(11, 40) * TICK)
        gr = self.gone_rng
        if f.false_gone and gr.random() < f.false_gone:
            told, about = gr.sample(sorted(self.hosts), 2)
            self.trace(f"{told} told falsely that {about} is gone")
            self.hosts[told].peer_gone(NodeId(about))
        if r.random() < f.wipe_rate:
            self._maybe_wipe(self.hosts[r.choice(self.ids)])
        fr = self.folder_rng
        if f.folder_swap_rate and fr.random() < f.folder_swap_rate:
            self._maybe_swap_folder(self.hosts[fr.choice(self.ids)], fr.random() < 0.5)
        for host in self.hosts.values():
            if not host.up and host.incarnation and r.random() < 0.05:
                self._restart(host)

    def _report_gone(self, gone: NodeHost) -> None:
        """Tell each running peer of ``gone`` (each with the seed's chance, after a
        network delay) that its process is gone, as a refused dial would."""
        gr, chance = self.gone_rng, self.faults.gone_report
        if not chance:
            return
        for host in self.hosts.values():
            if host is not gone and host.up and gr.random() < chance:
                delay = gr.randint(1, self.faults.max_delay) * SUBSTEP
                self.reactor.callLater(delay, host.peer_gone, NodeId(gone.id))

    def _recovering(self, host: NodeHost) -> bool:
        """Return True while ``host`` has lost its disk and not yet caught up."""
        if host.refused is not None or host.folder_swapped:
            return True
        if host.node is not None:
            return host.node.core.abstaining
        return host.disk.hard_state().abstaining and host.id in self.formed_once

    def _disk_loss_allowed(self, host: NodeHost) -> bool:
        """One lost disk at a time, in a cluster whose voters all heard from a
        leader: a lost disk is a fault Raft alone does not survive, so the
        rule of docs/core.md assumes no second one before the first recovers."""
        if any(self._recovering(h) for h in self.hosts.values() if h is not host):
            return False
        voters = min(
            (len(h.node.core.configuration.voters) for h in self.hosts.values() if h.node),
            default=0,
        )
        return voters >= 3 and all(nid in self.formed for nid in self.ids)

    def _maybe_wipe(self, host: NodeHost) -> None:
        """Lose one voter's disk and start it again under the same id."""
        if not self._disk_loss_allowed(host):
            return
        self.trace(f"wipe {host.id}")
        if len(self._bootstrap) < 3:
            self.rejoin.add(host.id)
        self.formed.discard(host.id)
        self.next_apply.pop(host.id, None)
        host.wipe()
        host.start()

    def _maybe_swap_folder(self, host: NodeHost, deleted: bool) -> None:
        """Delete or replace a running voter's data folder (a lost disk, under the
        same rule as a wipe); it must stop itself and start again on the new folder."""
        if not host.up or not self._disk_loss_allowed(host):
            return
        self.trace(f"{'delete' if deleted else 'replace'} the data folder of {host.id}")
        self.folder_swaps += 1
        host.swap_folder(deleted)

    def _restart(self, host: NodeHost) -> None:
        host.crash()
        if host.folder_swapped:  # it starts on the new, empty folder: as after a wipe
            if len(self._bootstrap) < 3:
                self.rejoin.add(host.id)
            self.formed.discard(host.id)
        if self.rng.random() < self.faults.corrupt_snapshot and self._disk_loss_allowed(host):
            newest = host.disk.snapshots.latest()
            if newest is not None:
                host.disk.snapshots.corrupt(newest.index)
        if host.refused is not None:
            if not self._disk_loss_allowed(host):
                return  # the operator waits for the other node to catch up first
            # The operator follows the error's advice: move the data away, start again.
            self.trace(f"{host.id} refused its data; wiping it: {host.refused}")
            if len(self._bootstrap) < 3:
                self.rejoin.add(host.id)
            self.formed.discard(host.id)
            host.wipe()
        self.next_apply.pop(host.id, None)
        self.trace(f"restart {host.id}")
        host.start()

    def _random_config_change(self, leader: NodeHost) -> None:
        node = leader.node
        assert node is not None
        cfg = node.core.configuration
        r = self.rng
        nid = r.choice(self.ids + self.spares)
        if nid in cfg.learners:
            op = ConfChangeOp.ADD_VOTER
        elif nid in cfg.voters:
            if len(cfg.voters) <= 3:
                return
            op = ConfChangeOp.REMOVE
        else:
            op = ConfChangeOp.ADD_LEARNER
        d = node.propose_config_change(ConfChange(op, nid), 30 * TICK)
        d.addErrback(lambda _: None)
        host = self.hosts[nid]
        if not host.up and not host.incarnation:
            host.start()

    def _random_partition(self) -> None:
        r = self.rng
        ids = list(self.hosts)
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

    def _advance_tick(self, faults_on: bool) -> None:
        self.tick_count += 1
        self.reactor.run_until(self.tick_count * TICK)
        if self.violations:
            raise SafetyViolation(self.violations[0])
        self._check_failures()
        self._want_eager_commits()
        self.random_actions(faults_on)

    def _want_eager_commits(self) -> None:
        """On odd seeds, nodes take turns asking for each commit at once (as when
        they serve watches). Decided by the tick, not the rng: even seeds run as before."""
        if self.seed % 2 == 0:
            return
        phase = self.tick_count // 20
        for i, nid in enumerate(self.ids + self.spares):
            node = self.hosts[nid].node
            if node is not None:
                node.want_eager_commits((phase + i) % 2 == 0)

    def run(self) -> SimResult:
        """Run the faulty phase, heal, and check liveness; raise SafetyViolation on failure."""
        for nid in self.ids:  # with single_voter, all but the first wait to be added
            self.hosts[nid].start()
        try:
            for t in range(self.ticks):
                self._advance_tick(faults_on=True)
                if t % 25 == 0:
                    self.full_log_matching()
            self._heal()
            self._check_liveness()
            self.full_log_matching()
            self._check_final()
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
        f = self.faults
        self.blocked.clear()
        self.mute_until.clear()
        f.drop = f.duplicate = f.long_delay = 0.0
        self.disk_faults.fail = self.disk_faults.tear = self.disk_faults.crash_after_write = 0.0
        for host in self.hosts.values():
            if host.clock is not None:
                host.clock.stalled_until = 0.0
            if not host.up and host.incarnation:
                self._restart(host)

    def _check_liveness(self, limit_ticks: int = 300) -> None:
        """After healing, a leader must commit a fresh write within ``limit_ticks``,
        and every request a running node took must be answered by then."""
        markers: set[int] = set()
        for t in range(limit_ticks):
            self._advance_tick(faults_on=False)
            for host in self.hosts.values():
                if not host.up and host.incarnation:
                    self._restart(host)
            leaders = self.leaders_now()
            if leaders and t % 10 == 0:
                node = leaders[0].node
                assert node is not None
                self.value_seq += 1
                data = f"liveness={self.value_seq}".encode()
                markers.add(self.value_seq)
                self._propose(leaders[0], data)
            done = any(
                e.data.startswith(b"liveness=")
                and int(e.data.split(b"=")[1]) in markers
                and e.index in self.acked
                for e in self.committed.values()
            )
            unanswered = [
                op for op, (host, node) in self.pending.items() if host.up and host.node is node
            ]
            # ... and a leader now: the final check reads its log (a leader that
            # removed itself just after the write hands on only an election later)
            if done and not unanswered and t > 40 and self.leaders_now():
                return
        raise SafetyViolation(f"no progress within {limit_ticks} ticks after healing")

    def _check_final(self) -> None:
        """Every acknowledged write is in the final leader's log."""
        leaders = self.leaders_now()
        if not leaders:
            raise SafetyViolation("no leader at the end")
        core = leaders[0].node.core  # type: ignore[union-attr]
        for index, data in self.acked.items():
            if index <= core.log.start:
                continue
            e = core.log.entry_at(index)
            if e.data != data:
                raise SafetyViolation(f"acknowledged write {data!r} at {index} lost: {e}")

    def replay_command(self) -> str:
        """Return the one-line command that replays this run."""
        reads = ""
        if self._reads_forced:
            reads = " --batch-reads" if self.batch_reads else " --no-batch-reads"
        return (
            f"python -m leeky_twisted.simulation --seed {self.seed} --ticks {self.ticks}{reads} -v"
        )


def main(argv: list[str] | None = None) -> int:
    """Command line: replay one seed or soak many."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, help="replay exactly this seed")
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument(
        "--batch-reads",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read as production nodes do, then process_received (default: as the seed draws)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print the transcript")
    args = p.parse_args(argv)
    if args.seed is not None:
        sim = Simulation(
            args.seed, ticks=args.ticks, verbose=args.verbose, batch_reads=args.batch_reads
        )
        if args.verbose:
            # The cores' own lines (votes, abstention, storage identities) too.
            from twisted.logger import globalLogPublisher

            def core_line(event: dict[str, Any]) -> None:
                if "line" in event:
                    sim.trace(str(event["line"]))

            globalLogPublisher.addObserver(core_line)
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
    failed = 0
    for seed in range(args.start, args.start + args.seeds):
        try:
            Simulation(seed, ticks=args.ticks, batch_reads=args.batch_reads).run()
        except SafetyViolation as exc:
            print(f"FAIL seed {seed}: {exc}", flush=True)
            failed += 1
        done += 1
        if done % 500 == 0:
            rate = done / (time.perf_counter() - started)
            print(f"{done} seeds run ({rate:.1f} seeds/s)", file=sys.stderr)
    rate = done / (time.perf_counter() - started)
    if failed:
        print(f"{failed} of {done} seeds failed from {args.start} ({rate:.1f} seeds/s)")
        return 1
    print(f"{done} seeds ok from {args.start} ({rate:.1f} seeds/s, {args.ticks} ticks each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
