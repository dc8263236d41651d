"""Regression tests of the review's safety findings, on the shipped RaftNode.

Each test runs real :class:`~leeky_twisted.server.node.RaftNode` objects on the
deterministic hosts of :mod:`leeky_twisted.testing.hosts` (the simulation's
machinery) over a network the test controls message by message.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    InstallSnapshot,
    Message,
    NodeId,
    Role,
)
from leeky_twisted.protocol.errors import NotLeader
from leeky_twisted.server.node import NodeSettings, RaftNode, UnrecoverableStateError
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from leeky_twisted.testing.hosts import NodeHost, SimReactor, SimStateMachine, SimTransport

TICK = 1.0
DELAY = 0.1


class Cluster:
    """Shipped nodes on hosts; messages take DELAY seconds unless ``drop`` says no."""

    def __init__(self, ids: list[str], lease_read: bool = False, seed: int = 1) -> None:
        self.reactor = SimReactor()
        self.ids = [NodeId(i) for i in ids]
        self.lease_read = lease_read
        self.drop: Callable[[Message], bool] = lambda m: False
        rng = random.Random(seed)
        self.hosts = {
            nid: NodeHost(
                self.reactor,
                nid,
                self.core_config,
                self.settings,
                random.Random(rng.random()),
                self.send,
            )
            for nid in self.ids
        }
        for host in self.hosts.values():
            host.start()

    def core_config(self, nid: NodeId) -> CoreConfig:
        return CoreConfig(nid, election_ticks=10, heartbeat_ticks=2, lease_read=self.lease_read)

    def settings(self, nid: NodeId) -> NodeSettings:
        return NodeSettings(
            tick_interval=TICK,
            request_timeout=30.0,
            bootstrap=[(str(i), b"") for i in self.ids],
        )

    def send(self, src: NodeHost, m: Message) -> None:
        payload = None
        if isinstance(m, InstallSnapshot):  # the transport carries the snapshot's data
            payload = src.disk.snapshots.open(m.meta.index)
        if not self.drop(m):
            self.reactor.callLater(DELAY, self._deliver, m, payload)

    def _deliver(self, m: Message, payload: bytes | None) -> None:
        host = self.hosts.get(m.recipient)
        if host is not None and host.up and not self.drop(m):
            if payload is not None and isinstance(m, InstallSnapshot):
                sink = host.disk.snapshots.create(m.meta)
                sink.write(payload)
                sink.close()
            host.deliver(m)

    def run(self, seconds: float) -> None:
        self.reactor.run_until(self.reactor.now + seconds)

    def node(self, nid: str) -> RaftNode:
        node = self.hosts[NodeId(nid)].node
        assert node is not None
        return node

    def leader(self) -> str | None:
        leaders = [
            str(h.id)
            for h in self.hosts.values()
            if h.up and h.node is not None and h.node.core.role is Role.LEADER
        ]
        return leaders[0] if len(leaders) == 1 else None

    def run_until_leader(self, limit: float = 100.0) -> str:
        end = self.reactor.now + limit
        while self.reactor.now < end:
            self.run(TICK)
            leader = self.leader()
            if leader is not None:
                return leader
        raise AssertionError("no leader")

    def followers(self, leader: str) -> list[str]:
        """Return the ids of every node but ``leader``, in order."""
        return [str(i) for i in self.ids if i != leader]

    def put(self, nid: str, data: bytes) -> list[Any]:
        """Propose ``data`` on ``nid``; return a list that gets the outcome."""
        out: list[Any] = []
        self.node(nid).propose(data, 30.0).addBoth(out.append)
        return out


def from_leader(cluster: Cluster, kind: type) -> Callable[[Message], bool]:
    return lambda m: isinstance(m, kind)


def standalone(
    log_store: MemoryLogStore,
    stable: MemoryStableStore,
    snapshots: MemorySnapshotStore | None = None,
    *,
    nid: str = "a",
    settings: NodeSettings | None = None,
) -> RaftNode:
    """Start node ``nid`` on these stores, alone: no peers hear it, its clock never runs."""
    return RaftNode(
        SimReactor(),
        CoreConfig(NodeId(nid)),
        log_store,
        stable,
        snapshots if snapshots is not None else MemorySnapshotStore(),
        SimTransport(lambda m: None),
        SimStateMachine(),
        settings=settings,
    )


def test_a_leader_sends_nothing_of_its_term_before_the_term_is_durable():
    """Finding a: a single voter wins in one tick; its messages to a learner must
    wait for the write of its new term (no (index, term) reused after a crash)."""
    from leeky_twisted.core.messages import ConfChange, ConfChangeOp, HardState
    from leeky_twisted.core.raft import RaftCore, bootstrap_entries

    boot = bootstrap_entries([(NodeId("a"), b"")])
    learner = Entry(2, 1, EntryKind.CONFIG, ConfChange(ConfChangeOp.ADD_LEARNER, "b").encode())
    core = RaftCore(
        CoreConfig(NodeId("a")), random.Random(1), HardState(1, None, 2), None, [*boot, learner]
    )
    for _ in range(40):
        core.tick()
        if core.role is Role.LEADER:
            break
    rd = core.ready()
    assert core.role is Role.LEADER
    assert rd.hard_state is not None and rd.hard_state.term == core.term
    assert not any(m.term == core.term for m in rd.messages)  # nothing before the write
    assert any(isinstance(m, AppendEntries) for m in rd.messages_after_persist)
    assert core.take_messages() == ()  # nor while the write is in flight


def test_b_stop_saves_only_a_commit_index_the_durable_log_backs():
    """Finding b: entries the node has not written yet must not be behind the saved commit."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    follower = c.followers(leader)[0]
    host = c.hosts[NodeId(follower)]
    held: list[tuple[Callable[[], Any], Any]] = []
    node = c.node(follower)
    node.writer.run_blocking = lambda job: _hold(held, job)
    node.settings.inline_persist_seconds = 0.0
    for i in range(5):
        c.put(leader, f"k=v{i}".encode())
        c.run(0.5)
    assert node.core.commit > node.core.log.stable  # committed, not yet on disk
    node.stop()
    for job, d in held:  # the disk thread runs every job in order
        d.callback(job())
    saved = host.disk.stable.load()
    assert saved.commit <= host.disk.log.last_index()
    host.crash()
    assert host.start()  # and it starts again


def _hold(held: list[Any], job: Callable[[], Any]) -> Any:
    from twisted.internet.defer import Deferred

    d: Deferred[Any] = Deferred()
    held.append((job, d))
    return d


def test_b_a_saved_commit_past_the_durable_log_is_refused_with_the_recovery():
    """Finding b and item 4: an impossible start stops with one clear error."""
    log_store, stable = MemoryLogStore(), MemoryStableStore(HardState(3, None, 9))
    log_store.append([Entry(1, 1, EntryKind.NOOP, b""), Entry(2, 1, EntryKind.NOOP, b"")])
    with pytest.raises(UnrecoverableStateError) as info:
        standalone(log_store, stable)
    message = str(info.value)
    assert "commit index 9" in message and "move the data folder away" in message


def test_c_lost_answers_are_repaired_while_the_cluster_is_idle():
    """Finding c: acks of an entry are lost; heartbeat answers must make the leader
    probe, so the entry commits with no further traffic."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    c.drop = lambda m: isinstance(m, AppendEntriesResponse)
    out = c.put(leader, b"k=1")
    c.run(1.0)
    c.drop = lambda m: False
    c.run(10 * TICK)  # idle: only heartbeats
    assert out and out[0] == c.node(leader).core.log.last_index()


def test_c_a_full_window_of_lost_acks_does_not_stop_replication():
    """Finding c: a one-way cut fills a follower's in-flight window; after it heals,
    that follower alone must be enough, with the other follower down."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    one, other = (i for i in ("a", "b", "c") if i != leader)
    c.drop = lambda m: isinstance(m, AppendEntriesResponse) and m.sender == one
    for i in range(80):  # more than max_inflight appends
        c.put(leader, f"k={i}".encode())
        c.run(0.05)
    c.run(1.0)
    c.drop = lambda m: False
    c.hosts[NodeId(other)].crash()
    out = c.put(leader, b"after=1")
    c.run(20 * TICK)
    assert out and isinstance(out[0], int)


def test_d_a_follower_commit_index_never_goes_backwards():
    """Finding d: an old append reordered after a newer one must not lower commit."""
    from leeky_twisted.core.raft import RaftCore

    core = RaftCore(CoreConfig(NodeId("f")), random.Random(1), HardState(1, None, 0))
    entries = tuple(Entry(i, 1, EntryKind.NOOP, b"") for i in range(1, 6))
    core.step(AppendEntries(NodeId("l"), NodeId("f"), 1, 0, 0, entries, 4))
    assert core.commit == 4
    # a resend of the first entries, sent once the leader had committed 5, arrives late
    core.step(AppendEntries(NodeId("l"), NodeId("f"), 1, 0, 0, entries[:2], 5))
    assert core.commit == 4  # not 2


def test_e_a_wiped_voter_does_not_vote_a_committed_write_away():
    """Finding e: a voter's disk is lost while another voter lags; it must not
    elect the laggard (which lacks an acknowledged write)."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    laggard, wiped = (i for i in ("a", "b", "c") if i != leader)
    c.drop = lambda m: laggard in (m.sender, m.recipient)
    out = c.put(leader, b"acked=1")
    c.run(3)
    assert out and isinstance(out[0], int)  # acknowledged, on leader and `wiped` only
    index = out[0]
    c.hosts[NodeId(wiped)].wipe()
    c.hosts[NodeId(leader)].crash()
    c.hosts[NodeId(wiped)].start()
    c.drop = lambda m: leader in (m.sender, m.recipient)
    c.run(60)
    assert c.leader() is None  # the wiped voter abstains; no leader without the write
    c.hosts[NodeId(leader)].start()
    c.drop = lambda m: False
    new = c.run_until_leader()
    c.run(20)
    for nid in ("a", "b", "c"):
        assert c.node(nid).core.log.entry_at(index).data == b"acked=1", (nid, new)
    assert not c.node(wiped).core.abstaining  # caught up, voting again


def test_e_a_wiped_follower_is_caught_up_within_seconds():
    """Finding e: the leader notices the shorter log and probes lower at once."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    for i in range(30):
        c.put(leader, f"k={i}".encode())
        c.run(0.2)
    victim = c.followers(leader)[0]
    c.hosts[NodeId(victim)].wipe()
    c.hosts[NodeId(victim)].start()
    c.run(5 * TICK)
    target = c.node(leader).core.commit
    c.run(2 * TICK)  # a heartbeat tells it the commit index of its seat's last change
    assert c.node(victim).core.log.last_index() == c.node(leader).core.log.last_index()
    assert c.node(victim).core.commit >= target


def test_f_a_stalled_leader_serves_no_stale_lease_read():
    """Finding f: a leader's reactor stalls for several election timeouts while a
    new leader commits; its first read after the stall must not use the old lease."""
    c = Cluster(["a", "b", "c"], lease_read=True)
    old = c.run_until_leader()
    c.run(5)
    assert c.put(old, b"k0=before") or True
    c.run(3)
    c.drop = lambda m: m.recipient == old  # it hears nothing of the new leader
    c.hosts[NodeId(old)].stall(50 * TICK)
    c.run(30 * TICK)
    new = c.leader() if c.leader() != old else None
    new = new or next(h for h in ("a", "b", "c") if h != old and c.node(h).core.role is Role.LEADER)
    written = c.put(new, b"k0=after")
    c.run(3)
    assert written and isinstance(written[0], int)
    c.run(21 * TICK)  # the old leader wakes up
    answers: list[Any] = []
    c.node(old).read("k0", True, 30.0).addBoth(answers.append)
    c.run(3)
    for answer in answers:  # no answer (no quorum heard) or NotLeader are fine
        if not (hasattr(answer, "check") and answer.check(NotLeader)):
            assert answer[1] == "after", "a stale read was served on an expired lease"


def test_h_no_snapshot_of_a_state_not_yet_restored():
    """Finding h: a snapshot received while a write is in flight moves the core's
    applied index at once; the node must not read or snapshot the old state as new."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    lagger = c.followers(leader)[0]
    c.drop = lambda m: lagger in (m.sender, m.recipient)
    for i in range(20):
        c.put(leader, f"k={i}".encode())
        c.run(0.2)
    c.run(2)
    assert c.node(leader).snapshot_now(trailing=0)
    c.run(1)
    host = c.hosts[NodeId(lagger)]
    held: list[tuple[Callable[[], Any], Any]] = []
    node = c.node(lagger)
    node.writer.run_blocking = lambda job: _hold(held, job)
    node.settings.inline_persist_seconds = 0.0
    before = node.applied_index
    c.drop = lambda m: False
    c.run(5)
    snap = c.node(leader).core.snapshot_meta
    assert snap is not None and node.core.applied >= snap.index > before
    assert node.applied_index < snap.index  # the state machine is not restored yet
    assert not node.snapshot_now()
    # A read confirmed at the snapshot's index must wait for the restore.
    answers: list[Any] = []
    d: Deferred[Any] = Deferred()
    d.addBoth(answers.append)
    node.pending.reads[-1] = ("k", d)
    node.pending.read_ready(snap.index, -1)
    node.serve_reads()
    assert answers == []
    while held:  # let the disk finish, in order
        job, d = held.pop(0)
        d.callback(job())
        c.run(0.5)
    assert node.applied_index >= snap.index
    assert answers and answers[0][0] >= snap.index - 2  # served from the restored state
    assert host.sm is not None and host.sm.last_write >= snap.index - 2


def test_fail_stop_once_on_a_conflict_with_a_committed_entry():
    """Item 4: an impossible message stops the node with one clear error."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    follower = c.followers(leader)[0]
    node = c.node(follower)
    core = node.core
    bad = AppendEntries(
        NodeId(leader),
        NodeId(follower),
        core.term + 1,
        0,
        0,
        tuple(Entry(i, core.term + 1, EntryKind.NOOP, b"x") for i in range(1, 3)),
        0,
    )
    node.receive(bad)
    assert node.stopped and node.failure is not None
    assert "conflicts with committed entry" in node.failure
    first = node.failure
    node.receive(bad)
    assert node.failure == first


def test_a_compacted_log_behind_a_corrupt_snapshot_is_refused_even_when_empty():
    """Found by the soak (seed 12314): the newest snapshot (15) is corrupt, the log
    was compacted through it and is empty; the node silently started from the older
    snapshot (11), forgetting entries it had acknowledged, and then voted a committed
    write away. It must refuse to start."""
    from leeky_twisted.core.messages import Configuration, SnapshotMeta
    from leeky_twisted.server.node import encode_snapshot

    log_store, snapshots = MemoryLogStore(), MemorySnapshotStore()
    config = Configuration(frozenset({NodeId("a"), NodeId("b"), NodeId("c")}), frozenset())
    for index in (11, 15):
        sink = snapshots.create(SnapshotMeta(index, 2, config))
        sink.write(encode_snapshot({}, SimStateMachine().snapshot()))
        sink.close()
    snapshots.corrupt(15)
    log_store.compact(15)  # empty, starts at 16
    with pytest.raises(UnrecoverableStateError) as info:
        standalone(log_store, MemoryStableStore(HardState(2, None, 3)), snapshots)
    assert "the log starts at 16" in str(info.value)


def test_the_hard_state_written_before_entries_commits_none_they_replace():
    """Review: a follower holds an old leader's uncommitted 4..6 and is sent 4..6 of a
    new term with commit 6. The hard state goes to disk first; if the process dies
    before the new entries land, the saved commit must not cover the old ones."""
    from leeky_twisted.core.messages import Ready

    class DiesOnAppend(MemoryLogStore):
        dying = False

        def append(self, entries: Any) -> None:
            if self.dying:
                raise OSError("the process died here")
            super().append(entries)

    log_store, stable = DiesOnAppend(), MemoryStableStore(HardState(2, None, 3))
    log_store.append([Entry(i, 1 if i <= 3 else 2, EntryKind.NOOP, b"old") for i in range(1, 7)])
    node = standalone(log_store, stable)
    log_store.dying = True
    new = tuple(Entry(i, 3, EntryKind.NOOP, b"new") for i in range(4, 7))
    with pytest.raises(OSError):
        node.writer.write(Ready(hard_state=HardState(3, None, 6), entries=new))
    saved = stable.load()
    assert saved.term == 3  # the term went first
    assert saved.commit <= 3  # but no commit over entries being replaced


def test_a_bootstrap_cut_short_by_a_crash_starts_over_abstaining():
    """Review: the bootstrap entries were on disk but the hard state (which says
    "abstaining") was not; the node started as if its storage were old and voted."""
    from leeky_twisted.core.raft import bootstrap_entries

    log_store, stable = MemoryLogStore(), MemoryStableStore()
    voters = [(NodeId(n), b"") for n in ("a", "b", "c")]
    log_store.append(bootstrap_entries(voters))  # ... and the process died here
    node = standalone(
        log_store, stable, settings=NodeSettings(bootstrap=[(str(n), c) for n, c in voters])
    )
    assert node.core.abstaining
    assert stable.load().abstaining and stable.load().term == 1


def test_e_a_follower_caught_up_by_snapshot_in_an_idle_cluster_votes_again():
    """Review: a wiped follower brought back by a snapshot that covers the whole
    log got no further append while the cluster was idle, so it abstained until
    the next write (and a leader loss then left no majority)."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    for i in range(10):
        c.put(leader, f"k={i}".encode())
        c.run(0.2)
    c.run(2)
    assert c.node(leader).snapshot_now(trailing=0)
    c.run(1)
    victim = c.followers(leader)[0]
    c.hosts[NodeId(victim)].wipe()
    c.hosts[NodeId(victim)].start()
    c.run(10 * TICK)  # idle: no client writes
    node = c.node(victim)
    assert node.core.snapshot_meta is not None  # it was caught up by the snapshot
    assert not node.core.abstaining


# ------------------------------------------------------------ storage identity


def test_storage_gets_an_identity_at_creation_keeps_it_and_a_wiped_one_gets_a_larger():
    """The identity is saved with the first hard state, survives restarts, and the empty
    storage that replaces a lost one (later in time) has a larger one."""
    c = Cluster(["a", "b", "c"])
    c.run_until_leader()
    host = c.hosts[NodeId("b")]
    first = host.disk.stable.load().storage_id
    assert first and c.node("b").core.storage_id == first
    host.crash()
    host.start()
    assert c.node("b").core.storage_id == first
    c.run(5)
    host.wipe()
    host.start()
    replaced = c.node("b").core.storage_id
    assert replaced > first and host.disk.stable.load().storage_id == replaced
    assert c.node("b").core.abstaining


def test_old_storage_without_an_identity_is_given_one_at_start():
    """A data folder from before identities: it keeps its state and gains an identity."""
    log, stable, snaps = MemoryLogStore(), MemoryStableStore(), MemorySnapshotStore()
    from leeky_twisted.core.raft import bootstrap_entries

    log.append(bootstrap_entries([(NodeId("a"), b"")]))
    stable.save(HardState(3, NodeId("a"), 1))
    node = standalone(log, stable, snaps)
    saved = stable.load()
    assert (saved.term, saved.voted_for, saved.commit, saved.abstaining) == (3, "a", 1, False)
    assert saved.storage_id and node.core.storage_id == saved.storage_id


def test_a_late_acknowledgement_from_before_a_wipe_never_commits_after_it():
    """The gap the last review left: b acknowledges a write, its answer is held back, b
    loses its disk and starts again; c is cut off. The held answer, delivered after b's
    new storage spoke, must not commit the write, which only the leader then holds."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    b, other = (i for i in ("a", "b", "c") if i != leader)
    held: list[Message] = []

    def drop(m: Message) -> bool:
        if other in (m.sender, m.recipient):
            return True
        if m.sender == b and isinstance(m, AppendEntriesResponse) and not held_done:
            held.append(m)
            return True
        return False

    held_done = False
    c.drop = drop
    index = c.node(leader).core.log.last_index() + 1
    c.put(leader, b"late=1")
    c.run(3)
    assert held and c.node(leader).core.commit < index
    held_done = True
    # b's entries never reach its new storage: only heartbeats pass to it
    c.drop = lambda m: (
        other in (m.sender, m.recipient)
        or (isinstance(m, AppendEntries) and m.recipient == b and bool(m.entries))
    )
    c.hosts[NodeId(b)].wipe()
    c.hosts[NodeId(b)].start()
    c.run(5)
    assert c.node(leader).core.progress[NodeId(b)].storage_id == c.node(b).core.storage_id
    for m in held:
        c.hosts[NodeId(leader)].deliver(m)
    c.run(3)
    assert c.node(leader).core.commit < index


def test_ending_abstention_first_saves_which_entry_ends_it():
    """The batch that ends a wiped follower's abstention saves, before its entries, a
    hard state still abstaining that names the entry; then one that no longer abstains."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    victim = c.followers(leader)[0]
    host = c.hosts[NodeId(victim)]
    host.wipe()
    saves: list[HardState] = []
    save = host.disk.stable.save

    def recording(hs: HardState) -> None:
        saves.append(hs)
        save(hs)

    host.disk.stable.save = recording  # type: ignore[method-assign]
    host.start()
    c.run(10)
    assert not c.node(victim).core.abstaining
    ends = [i for i, hs in enumerate(saves) if hs.abstaining and hs.caught_up]
    assert ends, saves
    marker = saves[ends[-1]]
    assert not saves[ends[-1] + 1].abstaining
    assert c.node(victim).core.log.term_at(marker.caught_up) == marker.term


def _recovered(hs: HardState, entries: int, term: int) -> RaftNode:
    from leeky_twisted.core.raft import bootstrap_entries

    log, stable = MemoryLogStore(), MemoryStableStore()
    boot = bootstrap_entries([(NodeId(n), b"") for n in ("a", "b", "c")])
    log.append(boot + [Entry(len(boot) + 1 + i, term, EntryKind.NOOP, b"") for i in range(entries)])
    stable.save(hs)
    return standalone(log, stable, nid="b")


def test_a_crash_between_the_marker_and_the_end_of_abstention_does_not_leave_it():
    """The entry the marker names is on disk: the node no longer abstains. Not there (the
    crash came before the entries), or of another term: it still does."""
    hs = HardState(2, NodeId("a"), 3, abstaining=True, storage_id=7, caught_up=5)
    assert not _recovered(hs, entries=2, term=2).core.abstaining
    assert _recovered(hs, entries=1, term=2).core.abstaining
    assert _recovered(hs, entries=2, term=1).core.abstaining


def test_e_a_wiped_voters_seat_is_vacated_then_bound_to_its_new_storage():
    """The leader binds every seat to the storage it answers from; after a wipe it
    vacates the seat, then names the new storage once it caught up. Writes commit
    throughout, and the wiped node counts again at the end."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(10)
    seats = dict(c.node(leader).core.configuration.storage)
    assert seats == {NodeId(n): c.node(n).core.storage_id for n in ("a", "b", "c")}
    victim = c.followers(leader)[0]
    old = seats[NodeId(victim)]
    c.hosts[NodeId(victim)].wipe()
    c.hosts[NodeId(victim)].start()
    new = c.node(victim).core.storage_id
    assert new != old and c.node(victim).core.abstaining
    out = c.put(leader, b"k=during")
    c.run(10)
    assert out and isinstance(out[0], int)
    core = c.node(leader).core
    bound = [cfg.storage_of(NodeId(victim)) for _, cfg in core.log.configs]
    assert bound[-2:] == [0, new]  # vacated, then bound to the new storage
    assert core.commit >= core.log.config_index()
    assert not c.node(victim).core.abstaining
    assert c.node(leader).status().seats[victim] == new  # shown by `leekyraft status`
    c.hosts[NodeId(leader)].crash()  # the rebound node now makes a majority with the third
    assert c.run_until_leader() != leader


def test_an_operators_change_waits_for_the_leaders_own_change_instead_of_failing():
    """Just elected, the leader has not committed in its term and then binds seats by
    itself: a membership change asked meanwhile is retried until it can be proposed."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    core = c.node(leader).core
    for _ in range(200):  # until one of its own seat changes is in flight
        if core.log.config_index() > core.commit:
            break
        c.run(0.01)
    assert core.log.config_index() > core.commit
    results: list[Any] = []
    d = c.node(leader).propose_config_change(
        ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("d"), b""), timeout=30.0
    )
    d.addBoth(results.append)
    c.run(20)
    assert results and not isinstance(results[0], Failure), results
    assert NodeId("d") in c.node(leader).core.configuration.learners


def test_a_snapshot_stored_before_the_log_was_cut_after_it_does_not_leave_a_gap():
    """Found by the seats soak (seed 316428): a follower stored a received snapshot (5)
    and stopped before its log (ending at 4) was cut to begin after it; at every restart
    its next append (6) would leave a gap, so it stopped itself again and again. At start
    the log is now cut to begin after the snapshot."""
    from leeky_twisted.core.messages import Configuration, SnapshotMeta
    from leeky_twisted.core.raft import bootstrap_entries
    from leeky_twisted.server.node import encode_snapshot

    log_store, snapshots = MemoryLogStore(), MemorySnapshotStore()
    log_store.append(bootstrap_entries([(NodeId(n), b"") for n in ("a", "b", "c")]))
    log_store.append([Entry(4, 1, EntryKind.NOOP, b"")])
    config = Configuration(frozenset({NodeId("a"), NodeId("b"), NodeId("c")}), frozenset())
    sink = snapshots.create(SnapshotMeta(5, 2, config))
    sink.write(encode_snapshot({}, SimStateMachine().snapshot()))
    sink.close()
    node = standalone(log_store, MemoryStableStore(HardState(2, None, 4, storage_id=7)), snapshots)
    assert node.core.log.last_index() == 5
    assert log_store.first_index() == 6 and log_store.last_index() == 5
    log_store.append([Entry(6, 2, EntryKind.NOOP, b"")])  # no gap


def test_an_idle_follower_is_told_the_commit_index_shortly_after_it_commits():
    """The leader tells followers a new commit index commit_notice_seconds after it
    commits, not a heartbeat later: a follower's reads and watches see the write soon."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    notices = c.node(leader).stats["commit_notices"]
    out = c.put(leader, b"k=1")
    c.run(3 * DELAY)  # append, answer: committed on the leader; notice still pending
    index = c.node(leader).core.commit
    assert out == [index]
    followers = c.followers(leader)
    assert all(c.node(n).core.commit < index for n in followers)
    c.run(DELAY + 0.01)  # notice after 5 ms, then the message delay; well before a heartbeat
    assert all(c.node(n).core.commit == index for n in followers)
    assert 1 <= c.node(leader).stats["commit_notices"] - notices <= 2


def test_sequential_writes_send_no_commit_notices():
    """When the next write follows within commit_notice_seconds (a sequential client),
    its append carries the commit index: no write costs an extra message."""
    c = Cluster(["a", "b", "c"])
    leader = c.run_until_leader()
    c.run(5)
    stats = c.node(leader).stats
    notices = stats["commit_notices"]
    _sequential_puts(c, leader, 20)
    assert stats["commit_notices"] == notices
    c.run(0.3)
    assert stats["commit_notices"] - notices == 2  # the last write's commit, once to each follower


def _watched(c: Cluster) -> tuple[str, str, str]:
    """Return (leader, a follower that wants commits eagerly, another follower)."""
    leader = c.run_until_leader()
    eager, idle = c.followers(leader)
    c.node(eager).want_eager_commits(True)
    c.run(5.5)  # its heartbeat answers say so; the next heartbeat is half a second away
    assert c.node(leader).core.progress[NodeId(eager)].eager
    return leader, eager, idle


def _sequential_puts(c: Cluster, leader: str, count: int) -> None:
    for i in range(count):
        out = c.put(leader, f"k={i}".encode())
        for _ in range(1000):
            if out:
                break
            c.run(0.001)
        assert out and isinstance(out[0], int)
        c.run(0.001)  # the client's next request arrives a millisecond later


def test_a_follower_with_a_watch_is_told_each_commit_at_once():
    """A follower that wants commits eagerly (it serves a watch) learns a commit one
    message delay after the leader commits, not commit_notice_seconds later; the other
    follower still waits for the delayed notice."""
    c = Cluster(["a", "b", "c"])
    leader, eager, idle = _watched(c)
    out = c.put(leader, b"k=1")
    c.run(2 * DELAY + 0.001)  # append, answer: committed on the leader
    index = c.node(leader).core.commit
    assert out == [index]
    assert c.node(eager).core.commit < index
    c.run(DELAY)  # the notice's message delay; the delayed one left 5 ms later
    assert c.node(eager).core.commit == index
    assert c.node(idle).core.commit < index
    c.run(0.01)
    assert c.node(idle).core.commit == index


def test_sequential_writes_send_one_notice_each_to_a_follower_with_a_watch_only():
    """With a watch on one follower, each sequential write sends that follower one notice
    (as etcd's leader does for every follower); the other gets none."""
    c = Cluster(["a", "b", "c"])
    leader, eager, _ = _watched(c)
    core, stats = c.node(leader).core, c.node(leader).stats
    notices, eager_notices = stats["commit_notices"], core.eager_notices
    _sequential_puts(c, leader, 20)
    assert stats["commit_notices"] == notices
    assert core.eager_notices - eager_notices == 20
    c.run(DELAY)  # the last notice's message delay
    assert c.node(eager).core.commit == core.commit


def test_a_follower_whose_last_watch_ends_stops_asking():
    """Once the node no longer wants commits eagerly, its next answers say so and the
    leader goes back to the delayed notice: sequential writes send it nothing."""
    c = Cluster(["a", "b", "c"])
    leader, eager, _ = _watched(c)
    c.node(eager).want_eager_commits(False)
    c.run(5)
    core, stats = c.node(leader).core, c.node(leader).stats
    assert not core.progress[NodeId(eager)].eager
    notices, eager_notices = stats["commit_notices"], core.eager_notices
    _sequential_puts(c, leader, 20)
    assert core.eager_notices == eager_notices
    assert stats["commit_notices"] == notices


def test_a_removed_leader_says_so_until_it_is_added_back():
    """A leader that removes itself steps down once the change commits and then shows
    the role "removed" (it would otherwise look like a follower that never hears of a
    leader); added back, it is a member again."""
    c = Cluster(["a", "b", "c"])
    gone = c.run_until_leader()
    results: list[Any] = []
    c.node(gone).propose_config_change(
        ConfChange(ConfChangeOp.REMOVE, NodeId(gone), b""), timeout=30.0
    ).addBoth(results.append)
    c.run(20)
    assert results and not isinstance(results[0], Failure), results
    node = c.node(gone)
    assert node.role_name() == "removed" and node.status().role == "removed"
    leader = c.run_until_leader()
    assert leader != gone
    c.node(leader).propose_config_change(
        ConfChange(ConfChangeOp.ADD_LEARNER, NodeId(gone), b""), timeout=30.0
    ).addBoth(results.append)
    c.run(20)
    assert len(results) == 2 and not isinstance(results[1], Failure), results
    assert node.role_name() == "learner"


def test_a_leader_stalled_past_its_quorum_check_reads_the_answers_before_checking():
    """The leader's reactor stalls from just after a quorum check until the next one
    is due; its followers answered meanwhile, and never timed out. The ticks owed
    from the stall run before the reactor reads those answers (as Twisted's reactor
    runs due timers before it polls), so they must not run the quorum check: the
    leader keeps its leadership and its term."""
    c = Cluster(["a", "b", "c"], seed=3)
    leader = c.run_until_leader()
    c.run(30)
    core = c.node(leader).core
    followers = [c.node(n).core for n in c.followers(leader)]
    assert all(f.randomized_timeout > core.cfg.election_ticks + 1 for f in followers)
    term = core.term
    previous = core.election_elapsed
    for _ in range(2000):  # until a quorum check has just run
        c.run(0.05)
        if core.election_elapsed < previous:
            break
        previous = core.election_elapsed
    assert core.election_elapsed == 0
    c.hosts[NodeId(leader)].stall(core.cfg.election_ticks * TICK + 0.5)
    c.run(core.cfg.election_ticks * TICK + 3)
    assert c.leader() == leader and core.term == term


def test_a_reactor_late_at_every_tick_still_runs_elections_and_quorum_checks():
    """Deferring elections and quorum checks after a stall must not starve them when
    the reactor is late at every tick (overloaded): only one catch-up in a row defers."""
    c = Cluster(["a", "b", "c"])
    c.run_until_leader()
    node = c.node("a")
    seen: list[bool] = []
    node.core.tick = lambda missed=False: seen.append(missed)  # type: ignore[method-assign]
    now = [node.monotonic()]
    node.monotonic = lambda: now[0]  # type: ignore[method-assign]
    for _ in range(4):
        now[0] += 2.5 * TICK  # every tick call owes two or more ticks
        node._catch_up(at_least=1)
    calls = [seen[i] for i in range(len(seen)) if i == 0 or seen[i] != seen[i - 1]]
    assert calls == [True, False, True, False], seen
