"""The classic Raft lab scenarios (elections, agreement, persistence, Figure 8,
unreliable networks, churn, snapshots, membership) on the deterministic
harness of leeky_twisted.testing.scenarios. The harness checks Election Safety and
State Machine Safety on every step; these tests add agreement and liveness."""

from __future__ import annotations

import contextlib
import random

import pytest

from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    InstallSnapshot,
    NodeId,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from leeky_twisted.core.raft import RaftError
from leeky_twisted.testing.scenarios import Network

E = 10  # election ticks
H = 2  # heartbeat ticks
THREE = ("n1", "n2", "n3")
FIVE = ("n1", "n2", "n3", "n4", "n5")
SEVEN = ("n1", "n2", "n3", "n4", "n5", "n6", "n7")


def one(net: Network, data: bytes, expected: int | None = None, limit: int = 20 * E) -> int:
    """Like the labs' cfg.one(): propose ``data`` at whoever leads until it is
    applied on ``expected`` nodes (by default every running member of the
    leader's configuration); return its index."""
    mine: list[tuple[int, int]] = []
    members: list[NodeId] = []
    for t in range(limit):
        leader = net.leader()
        if leader is not None:
            cfg = net.core(leader).configuration.members()
            members = [n for n in cfg if net.nodes[n].core is not None]
            if t % 5 == 0:
                with contextlib.suppress(RaftError):
                    mine.append(net.propose(leader, data))
        want = len(members) if expected is None else expected
        for index, term in mine:
            e = net.committed.get(index)
            if e is not None and e.term == term and e.data == data:
                done = sum(net.nodes[n].applied_index >= index for n in net.nodes)
                if done >= want:
                    return index
        net.tick()
    raise AssertionError(f"{data!r} not applied on {expected or members} within {limit} ticks")


def assert_agreement(net: Network) -> None:
    """Every running node applied a prefix of the same sequence of commands."""
    net.check_logs()
    states = sorted(net.states().values(), key=len)
    for s in states:
        assert s == states[-1][: len(s)]


def leader_count(net: Network) -> int:
    top = max(n.core.term for n in net.nodes.values() if n.core is not None)
    return sum(
        1
        for n in net.nodes.values()
        if n.core is not None and n.core.role is Role.LEADER and n.core.term == top
    )


# ================================================================== elections


def test_initial_election():
    """A fresh cluster elects one leader, everyone agrees on its term, and it stays."""
    net = Network(THREE)
    leader = net.run_until_leader()
    term = net.core(leader).term
    assert {net.core(n).term for n in THREE} == {term}
    assert {net.core(n).leader_id for n in THREE} == {leader}
    net.tick(10 * E)
    assert net.leader() == leader and net.core(leader).term == term


def test_reelection_after_leader_is_cut_off_and_rejoins():
    """A cut-off leader is replaced; when it rejoins it follows; without a majority no one leads."""
    net = Network(THREE)
    first = net.run_until_leader()
    net.isolate(first)
    net.tick(4 * E)
    second = net.leader()
    assert second is not None and second != first
    assert net.core(first).role is not Role.LEADER  # CheckQuorum deposed it
    net.heal()
    net.tick(2 * E)
    assert net.leader() == second and leader_count(net) == 1
    others = [n for n in THREE if n != second]
    net.partition([second], [others[0]], [others[1]])  # nobody has a majority
    net.tick(6 * E)
    assert all(net.core(n).role is not Role.LEADER for n in THREE)
    net.partition([second, others[0]], [others[1]])
    net.tick(4 * E)
    assert net.leader() in (second, others[0])
    net.heal()
    net.tick(2 * E)
    assert leader_count(net) == 1


@pytest.mark.parametrize("seed", range(4))
def test_many_elections_under_random_disconnects(seed):
    """Seven nodes, three cut off at random again and again: the rest always elect a leader."""
    rng = random.Random(seed)
    net = Network(SEVEN, seed=seed)
    net.run_until_leader()
    # A brand-new cluster's members abstain until the leader has committed and named
    # their storage (docs/core.md); then any four of seven elect.
    for _ in range(3):
        net.sync()
    assert not any(net.core(n).abstaining for n in SEVEN)
    for _ in range(8):
        cut = rng.sample(SEVEN, 3)
        net.partition([n for n in SEVEN if n not in cut], *[[c] for c in cut])
        net.tick(5 * E)
        leader = net.leader()
        assert leader is not None and leader not in cut
        net.heal()
        net.tick(2 * E)
        assert leader_count(net) == 1
    assert len(net.leaders) >= 2


# ================================================================== agreement


def test_basic_agreement():
    """Each command is committed at the next index, on every node, in order."""
    net = Network(THREE)
    net.run_until_leader()
    net.sync()  # the leader binds each voter's seat to its storage first
    first = net.core(net.leader()).log.last_index() + 1
    for i in range(3):
        assert one(net, b"cmd%d" % i) == first + i
    assert all(s == [b"cmd0", b"cmd1", b"cmd2"] for s in net.states().values())


def test_agreement_with_one_follower_disconnected():
    """The majority keeps committing without a follower, which catches up when it returns."""
    net = Network(THREE)
    leader = net.run_until_leader()
    one(net, b"a")
    follower = next(n for n in THREE if n != leader)
    net.isolate(follower)
    one(net, b"b", expected=2)
    one(net, b"c", expected=2)
    net.heal()
    one(net, b"d")
    assert net.node(follower).state == [b"a", b"b", b"c", b"d"]
    assert_agreement(net)


def test_no_agreement_without_majority_then_recovery():
    """With three of five followers gone nothing commits; when they return, progress resumes."""
    net = Network(FIVE)
    leader = net.run_until_leader()
    one(net, b"before")
    gone = [n for n in FIVE if n != leader][:3]
    for n in gone:
        net.isolate(n)
    index, _ = net.propose(leader, b"stuck")
    net.tick(3 * E)
    assert all(net.core(n).commit < index for n in FIVE)
    net.heal()
    one(net, b"after")
    assert_agreement(net)
    assert net.node(leader).state[-1] == b"after"


def test_concurrent_proposals():
    """Twenty proposals made at once all commit, at distinct indexes, in one order everywhere."""
    net = Network(THREE)
    leader = net.run_until_leader()
    got = [net.core(leader).propose(b"c%d" % i) for i in range(20)]
    net.sync()
    indexes = [i for i, _ in got]
    assert len(set(indexes)) == 20 and indexes == sorted(indexes)
    assert all(s == [b"c%d" % i for i in range(20)] for s in net.states().values())


def test_old_leader_rejoins_with_divergent_uncommitted_entries():
    """A deposed leader's uncommitted entries are replaced by the new leader's log."""
    net = Network(THREE)
    old = net.run_until_leader()
    one(net, b"base")
    net.isolate(old)
    for i in range(3):
        net.propose(old, b"lost%d" % i)
    net.tick(3 * E)
    new = net.leader()
    assert new is not None and new != old
    one(net, b"kept", expected=2)
    net.heal()  # the old leader comes back; the new one goes away
    net.isolate(new)
    net.tick(4 * E)
    one(net, b"rejoined", expected=2)
    net.heal()
    one(net, b"all")
    assert_agreement(net)
    assert all(b"lost0" not in s for s in net.states().values())
    assert net.node(old).state == [b"base", b"kept", b"rejoined", b"all"]


def _rejections(net: Network) -> int:
    return sum(
        1
        for node in net.nodes.values()
        for rd in node.readies
        for m in rd.messages_after_persist
        if isinstance(m, AppendEntriesResponse) and not m.success and m.reject_index
    )


def test_fast_backup_of_a_long_divergent_log():
    """The lab's backup test: followers 50 entries off are repaired in a few round trips."""
    net = Network(FIVE)
    l1 = net.run_until_leader()
    one(net, b"start")
    p0, *rest = [n for n in FIVE if n != l1]
    # The leader and one follower are cut off and take 50 entries that never commit.
    net.partition([l1, p0], rest)
    for i in range(50):
        net.propose(l1, b"lost%d" % i)
    net.tick(3 * E)
    l2 = net.leader()
    assert l2 in rest
    for i in range(50):
        one(net, b"won%d" % i, expected=3)
    # Now that leader and one of its followers are cut off and take 50 more that never commit.
    q, r = (n for n in rest if n != l2)
    before = _rejections(net)
    net.partition([l2, q], [l1, p0, r])
    for i in range(50):
        net.propose(l2, b"lost2-%d" % i)
    # The first pair comes back with the third: r has the longest log and must lead them.
    net.tick(4 * E)
    assert net.leader() == r
    for i in range(50):
        one(net, b"again%d" % i, expected=3)
    first_repair = _rejections(net) - before
    # Everyone comes back.
    net.heal()
    one(net, b"end")
    assert_agreement(net)
    assert first_repair <= 2 * 3  # two followers, a few round trips each
    assert _rejections(net) - before <= 5 * 3
    assert all(len(s) == 102 for s in net.states().values())
    assert not any(c.startswith(b"lost") for s in net.states().values() for c in s)


def test_bounded_messages_for_agreement():
    """Ten commits in a three-node cluster take a handful of messages each, not a flood."""
    net = Network(THREE)
    leader = net.run_until_leader()
    net.sync()
    before = sum(net.sent.values())
    for i in range(10):
        net.propose(leader, b"m%d" % i)
        net.stabilize()
    assert net.core(leader).commit == net.core(leader).log.last_index()
    # per command: an AppendEntries and its answer to each of two followers (the
    # commit index rides on the next append; no notice is sent without a call)
    assert sum(net.sent.values()) - before <= 10 * 4


# ================================================================ persistence


def test_persistence_restart_one_node():
    """A follower that crashes and restarts keeps its log and catches up on what it missed."""
    net = Network(THREE)
    leader = net.run_until_leader()
    one(net, b"a")
    victim = next(n for n in THREE if n != leader)
    net.crash(victim)
    one(net, b"b", expected=2)
    net.restart(victim)
    assert net.core(victim).log.last_index() >= net.committed_index(b"a")  # its own disk
    one(net, b"c")
    assert net.node(victim).state == [b"a", b"b", b"c"]


def test_persistence_restart_several_nodes_and_the_leader():
    """Crashing the leader and a follower loses nothing that was committed."""
    net = Network(FIVE)
    leader = net.run_until_leader()
    one(net, b"a")
    follower = next(n for n in FIVE if n != leader)
    net.crash(leader)
    net.crash(follower)
    one(net, b"b", expected=3)
    net.restart(leader)
    net.restart(follower)
    one(net, b"c")
    assert all(s == [b"a", b"b", b"c"] for s in net.states().values())


def test_persistence_restart_all_nodes():
    """After every node crashes at once, the cluster recovers every committed command."""
    net = Network(FIVE)
    net.run_until_leader()
    for i in range(5):
        one(net, b"v%d" % i)
    for n in FIVE:
        net.crash(n)
    for n in FIVE:
        net.restart(n)
    one(net, b"after")
    assert all(s == [*(b"v%d" % i for i in range(5)), b"after"] for s in net.states().values())


def test_unpersisted_entries_are_lost_in_crash_but_not_counted():
    """A follower whose disk stalled never acknowledged, so its crash loses nothing committed."""
    net = Network(THREE)
    leader = net.run_until_leader()
    one(net, b"a")
    f1, f2 = (n for n in THREE if n != leader)
    net.pause(f1)
    net.isolate(f2)
    index, _ = net.propose(leader, b"b")
    net.tick(2 * H)
    assert net.core(f1).log.last_index() == index  # in f1's memory only
    assert net.core(leader).commit < index  # so it does not count towards a majority
    net.crash(f1)
    net.restart(f1)
    assert net.core(f1).log.last_index() == index - 1
    net.heal()
    one(net, b"c")
    assert_agreement(net)
    assert net.node(f1).state == [b"a", b"b", b"c"]


# =================================================================== Figure 8


def _figure8(seed: int, unreliable: bool, iters: int = 400) -> Network:
    """The lab's Figure 8 test: propose, wait a little, crash the leader, restart
    nodes so a majority stays up; at the end everything up must agree."""
    rng = random.Random(seed)
    net = Network(FIVE, seed=seed)
    one(net, b"first")
    up = len(FIVE)
    for it in range(iters):
        leader = None
        for nid, node in net.nodes.items():
            if node.core is not None and node.core.role is Role.LEADER:
                try:
                    net.propose(nid, b"f%d" % it)
                    leader = nid
                except RaftError:
                    pass
        wait = rng.randrange(E // 2) if rng.random() < 0.1 else rng.randrange(2)
        for _ in range(wait):
            _tick(net, rng, unreliable)
        if leader is not None:
            net.crash(leader)
            up -= 1
        if up < 3:
            s = rng.choice(FIVE)
            if net.node(s).core is None:
                net.restart(s)
                up += 1
        if unreliable:
            net.deliver_random(rng, drop=0.1, hold=0.3)
    for nid in FIVE:
        if net.node(nid).core is None:
            net.restart(nid)
    net.heal()
    one(net, b"last", limit=60 * E)
    assert_agreement(net)
    return net


def _tick(net: Network, rng: random.Random, unreliable: bool) -> None:
    if not unreliable:
        net.tick()
        return
    net.tick(settle=False)
    for _ in range(3):
        net.deliver_random(rng, drop=0.1, duplicate=0.05, hold=0.3)


@pytest.mark.parametrize("seed", range(6))
def test_figure8_reliable_network(seed):
    """Leaders crash right after proposing; no committed entry is ever lost or overwritten."""
    net = _figure8(seed, unreliable=False)
    assert len(net.leaders) >= 12


@pytest.mark.parametrize("seed", range(6))
def test_figure8_unreliable_network(seed):
    """Figure 8 with drops, duplicates, reordering and delays as well."""
    net = _figure8(seed, unreliable=True)
    assert len(net.leaders) >= 6


def _win(net: Network, nid: str) -> None:
    """Make ``nid`` campaign until it leads, delivering vote traffic only: what the
    new leader sends after winning stays in the queue."""
    votes = (RequestVote, RequestVoteResponse)
    core = net.core(nid)
    for _ in range(20 * E):
        if core.role is Role.LEADER:
            return
        net.tick(nodes=[nid], settle=False)
        while net.deliver(lambda m: isinstance(m, votes)):
            pass
    raise AssertionError(f"{nid} never won")


def test_figure8_history_old_term_entry_on_a_majority_is_not_committed():
    """Figure 8 step by step: a term-2 entry on a majority is not committed by the term-4 leader."""
    # ...and, never committed, it is safely overwritten by a later leader (step d).
    net = Network(FIVE, pre_vote=False, check_quorum=False, max_msg_bytes=1)
    s1, s2, s3, s4, s5 = FIVE
    net.elect(s1)
    net.sync()
    base = net.core(s1).log.last_index()
    # (a) S1 (term 2) appends index base+1 but crashes before replicating it.
    net.partition([s1], [s2], [s3], [s4], [s5])
    idx, term2 = net.propose(s1, b"term2")
    assert idx == base + 1
    net.stabilize()
    net.crash(s1)
    # (b) S5 wins term 3 with S3 and S4, appends at idx on its own log only, crashes.
    net.partition([s5, s3, s4], [s1], [s2])
    _win(net, s5)
    net.propose(s5, b"term3")
    net.drop()
    assert net.core(s5).log.term_at(idx) == 3
    net.crash(s5)
    # (c) S1 restarts, wins a later term, and copies its old entry to S2 and S3 - but
    # not its own no-op (each AppendEntries carries one entry here).
    net.restart(s1)
    net.partition([s1, s2, s3], [s4], [s5])
    _win(net, s1)
    term4 = net.core(s1).term

    def would_store_noop(m: object) -> bool:
        return (
            isinstance(m, AppendEntries)
            and any(e.term == term4 for e in m.entries)
            and net.core(m.recipient).log.term_at(m.prev_log_index) == m.prev_log_term
        )

    net.filters.append(would_store_noop)
    for _ in range(5):
        net.tick(nodes=[s1])
    net.filters.remove(would_store_noop)
    holders = [n for n in FIVE if net.nodes[NodeId(n)].core is not None]
    stored = [n for n in holders if net.core(n).log.term_at(idx) == term2]
    assert sorted(stored) == [s1, s2, s3]  # a majority of five stores the term-2 entry
    assert net.core(s1).commit < idx  # ...but it is not from term 4, so it is not committed
    # (d) S1 crashes; S5 can still win (its last term 3 beats 2) and overwrites index idx.
    net.crash(s1)
    net.drop()
    net.restart(s5)
    net.partition([s5, s2, s3, s4], [s1])
    _win(net, s5)
    net.sync()
    assert net.committed[idx].term == 3
    net.restart(s1)
    net.heal()
    one(net, b"end")
    assert_agreement(net)
    assert all(b"term2" not in s and b"term3" in s for s in net.states().values())


# ========================================================= unreliable network


@pytest.mark.parametrize("seed", range(5))
def test_agreement_with_drops_reordering_and_long_delays(seed):
    """With 10% drops, duplicates, reordering and long holds, every command still commits once."""
    rng = random.Random(seed)
    net = Network(FIVE, seed=seed)
    net.run_until_leader()
    wanted = [b"u%d" % i for i in range(30)]
    pending = list(wanted)
    for _ in range(100 * E):
        if not pending:
            break
        leader = net.leader()
        if leader is not None and rng.random() < 0.3:
            cmd = pending[0]
            applied = {c for s in net.states().values() for c in s}
            if cmd in applied:
                pending.pop(0)
            else:
                with contextlib.suppress(RaftError):
                    net.propose(leader, cmd)
        net.tick(settle=False)
        for _ in range(3):
            net.deliver_random(rng, drop=0.1, duplicate=0.05, hold=0.4)
    assert not pending
    net.sync()
    net.sync()
    assert_agreement(net)
    longest = max(net.states().values(), key=len)
    assert set(wanted) <= set(longest)


@pytest.mark.parametrize("seed", range(5))
def test_churn_nodes_crash_and_restart_while_clients_propose(seed):
    """Nodes crash and restart (some with stalled disks) while commands flow; all agree."""
    rng = random.Random(seed)
    net = Network(FIVE, seed=seed)
    net.run_until_leader()
    proposed = 0
    for t in range(300):
        for nid, node in net.nodes.items():
            if node.core is not None and node.core.role is Role.LEADER and rng.random() < 0.5:
                try:
                    net.propose(nid, b"c%d" % proposed)
                    proposed += 1
                except RaftError:
                    pass
        r = rng.random()
        victim = rng.choice(FIVE)
        node = net.node(victim)
        if r < 0.05 and node.core is not None:
            net.crash(victim)
        elif r < 0.1 and node.core is None:
            net.restart(victim)
        elif r < 0.13 and node.core is not None:
            net.pause(victim)
        elif r < 0.2 and node.paused:
            net.resume(victim)
        _tick(net, rng, unreliable=t % 2 == 0)
    for nid in FIVE:
        if net.node(nid).core is None:
            net.restart(nid)
        net.resume(nid)
    net.heal()
    one(net, b"end", limit=60 * E)
    assert_agreement(net)
    assert len(net.committed) > 20


# ================================================================== snapshots


def test_snapshot_install_to_lagging_follower():
    """A follower that misses compacted entries is brought up with InstallSnapshot."""
    net = Network(THREE)
    leader = net.run_until_leader()
    one(net, b"a")
    lagger = next(n for n in THREE if n != leader)
    net.isolate(lagger)
    for i in range(30):
        one(net, b"s%d" % i, expected=2)
    for n in THREE:
        if n != lagger:
            net.node(n).take_snapshot(keep=2)
    net.heal()
    one(net, b"z")
    assert net.sent["InstallSnapshot"] >= 1
    assert net.node(lagger).state == net.node(leader).state
    assert net.core(lagger).log.start > 2
    net.crash(lagger)  # the installed snapshot is durable
    net.restart(lagger)
    net.sync()  # and the rest once the leader tells it the commit index
    assert net.node(lagger).state == net.node(leader).state


def test_lost_install_snapshot_is_sent_again():
    """If an InstallSnapshot is lost, the leader sends it again and the follower catches up."""
    net = Network(THREE)
    leader = net.run_until_leader()
    lagger = next(n for n in THREE if n != leader)
    net.crash(lagger)
    for i in range(10):
        one(net, b"s%d" % i, expected=2)
    net.node(leader).take_snapshot()
    net.restart(lagger)
    lost: list[InstallSnapshot] = []

    def lose_first_snapshot(m: object) -> bool:
        if isinstance(m, InstallSnapshot) and not lost:
            lost.append(m)
            return True
        return False

    net.filters.append(lose_first_snapshot)
    net.tick(15 * E)
    assert len(lost) == 1 and net.sent["InstallSnapshot"] == 2
    assert net.node(lagger).state == net.node(leader).state


def test_snapshot_install_while_follower_also_compacts():
    """Snapshots, compaction and restarts interleave without losing committed commands."""
    rng = random.Random(7)
    net = Network(FIVE)
    net.run_until_leader()
    for i in range(60):
        one(net, b"k%d" % i, expected=3)
        victim = rng.choice(FIVE)
        if i % 7 == 0 and net.node(victim).core is not None and net.leader() != victim:
            net.crash(victim)
        if i % 5 == 0:
            for nid in FIVE:
                node = net.node(nid)
                if node.core is not None and node.core.applied > node.core.log.start + 3:
                    node.take_snapshot(keep=rng.randrange(3))
        if i % 9 == 0:
            for nid in FIVE:
                if net.node(nid).core is None:
                    net.restart(nid)
    for nid in FIVE:
        if net.node(nid).core is None:
            net.restart(nid)
    one(net, b"end")
    assert_agreement(net)
    assert all(len(s) == 61 for s in net.states().values())


# ================================================================= membership


def test_add_and_remove_servers_one_at_a_time():
    """A learner is added, promoted, and an old voter removed, with commands flowing."""
    net = Network(THREE, spares=["n4"])
    leader = net.run_until_leader()
    one(net, b"a")
    net.change(leader, ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("n4")))
    one(net, b"b")
    net.change(leader, ConfChange(ConfChangeOp.ADD_VOTER, NodeId("n4")))
    one(net, b"c")
    victim = next(n for n in THREE if n != leader)
    net.change(leader, ConfChange(ConfChangeOp.REMOVE, NodeId(victim)))
    one(net, b"d")
    voters = net.core(leader).configuration.voters
    assert NodeId("n4") in voters and NodeId(victim) not in voters and len(voters) == 3
    net.crash(victim)
    net.crash(leader)
    one(net, b"e", expected=2)  # n4's vote now counts
    assert net.node("n4").state == [b"a", b"b", b"c", b"d", b"e"]


@pytest.mark.parametrize("replicated_to", [0, 1, 2])
def test_membership_change_while_the_leader_crashes(replicated_to):
    """The leader crashes right after appending a change; the cluster ends in one configuration."""
    net = Network(THREE, spares=["n4"])
    leader = net.run_until_leader()
    one(net, b"a")
    followers = [n for n in THREE if n != leader]
    net.change(leader, ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("n4")))
    one(net, b"learner")  # a voter joins as a learner and catches up first
    _index, _ = net.change(leader, ConfChange(ConfChangeOp.ADD_VOTER, NodeId("n4")))
    for f in followers[:replicated_to]:
        net.deliver(lambda m, f=f: isinstance(m, AppendEntries) and m.recipient == f)
    net.crash(leader)
    net.drop()
    net.tick(5 * E)
    new = net.leader()
    assert new in followers
    cfg = net.core(new).configuration
    assert (NodeId("n4") in cfg.voters) == (replicated_to > 0 and new in followers[:replicated_to])
    net.restart(leader)
    net.tick(E)
    one(net, b"b")
    configs = {n.core.configuration for n in net.nodes.values() if n.core is not None}
    member_cfgs = {c for c in configs if c.voters}
    assert len(member_cfgs) == 1
    # another change is possible once the first settled either way
    final = net.leader()
    assert final is not None
    op = (
        ConfChangeOp.REMOVE
        if NodeId("n4") in net.core(final).configuration.voters
        else (ConfChangeOp.ADD_VOTER)  # n4 is a caught-up learner: promote it
    )
    net.change(final, ConfChange(op, NodeId("n4")))
    one(net, b"c")
    assert_agreement(net)


def test_learner_promoted_while_a_partition_heals():
    """A learner cut off with one voter is promoted as the partition heals; all agree."""
    net = Network(THREE, spares=["n4"])
    leader = net.run_until_leader()
    net.change(leader, ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("n4")))
    one(net, b"a")
    others = [n for n in THREE if n != leader]
    # The learner and one voter fall behind the rest.
    net.partition([leader, others[0]], [others[1], "n4"])
    one(net, b"b", expected=2)
    net.change(leader, ConfChange(ConfChangeOp.ADD_VOTER, NodeId("n4")))
    net.tick(2)
    net.heal()
    net.tick(4 * E)
    now = net.leader()
    assert now is not None
    assert NodeId("n4") in net.core(now).configuration.voters
    one(net, b"c")
    assert_agreement(net)
    assert net.node("n4").state == [b"a", b"b", b"c"]


def test_follower_crash_during_a_change_then_restart():
    """A follower that crashes mid-change restarts into the same final configuration."""
    net = Network(THREE, spares=["n4"])
    leader = net.run_until_leader()
    one(net, b"a")
    victim = next(n for n in THREE if n != leader)
    net.change(leader, ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("n4")))
    net.crash(victim)
    one(net, b"b", expected=2)
    net.change(leader, ConfChange(ConfChangeOp.ADD_VOTER, NodeId("n4")))
    one(net, b"c", expected=3)
    net.restart(victim)
    net.tick(4 * E)
    one(net, b"d")
    configs = {net.core(n).configuration for n in [*THREE, "n4"]}
    assert len(configs) == 1
    assert_agreement(net)
