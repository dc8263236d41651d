"""One test per rule of the Raft paper (and Ongaro's dissertation), after etcd's
raft_paper_test.go. Unit tests drive a single RaftCore by hand; the rest use
the step-by-step harness in leeky_twisted.testing.scenarios."""

from __future__ import annotations

import random

import pytest

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    TimeoutNow,
    bounds_error,
)
from leeky_twisted.core.raft import (
    ConfigChangeInProgressError,
    NotLeaderError,
    RaftCore,
    TransferInProgressError,
    bootstrap_entries,
)
from leeky_twisted.testing.scenarios import Network

N1, N2, N3, N4 = NodeId("n1"), NodeId("n2"), NodeId("n3"), NodeId("n4")
IDS = ("n1", "n2", "n3")
E = 10  # election ticks
H = 2  # heartbeat ticks


# ---------------------------------------------------------------- unit helpers


def make_core(
    nid: str = "n1",
    voters: tuple[str, ...] = IDS,
    *,
    log: tuple[int, ...] = (),
    term: int = 1,
    vote: str | None = None,
    seed: int = 0,
    **cfg: object,
) -> RaftCore:
    """A core of a bootstrapped cluster whose log continues with entries of the
    given terms after the configuration entries."""
    boot = bootstrap_entries([(NodeId(v), b"") for v in voters])
    extra = [Entry(len(boot) + 1 + i, t, EntryKind.NORMAL, b"x") for i, t in enumerate(log)]
    settings: dict = {"election_ticks": E, "heartbeat_ticks": H, "pre_vote": False}
    settings.update(cfg)
    return RaftCore(
        CoreConfig(NodeId(nid), **settings),
        random.Random(seed),
        HardState(term, NodeId(vote) if vote else None, len(boot)),
        None,
        boot + extra,
    )


def drain(core: RaftCore) -> list[Ready]:
    """Handle every pending Ready as if persisted, sent and applied."""
    out = []
    while core.has_ready():
        rd = core.ready()
        core.advance(rd)
        out.append(rd)
    return out


def sent(core: RaftCore) -> list[Message]:
    """Drain the core and return every message it sent, in order."""
    return [m for rd in drain(core) for m in (*rd.messages, *rd.messages_after_persist)]


def tick_until_campaign(core: RaftCore, limit: int = 100) -> int:
    """Tick a follower until it campaigns; return the ticks it took."""
    for n in range(1, limit + 1):
        core.tick()
        if core.role is not Role.FOLLOWER:
            return n
    raise AssertionError("never campaigned")


def make_leader(core: RaftCore) -> list[Message]:
    """Elect ``core`` (without PreVote) with one granted vote per needed peer."""
    tick_until_campaign(core)
    drain(core)
    voters = sorted(core.configuration.voters - {core.id})
    for v in voters[: len(voters) // 2]:
        core.step(RequestVoteResponse(v, core.id, core.term, True))
    assert core.role is Role.LEADER
    return sent(core)


# ================================================================== elections


def test_follower_starts_election_after_randomized_timeout():
    """A follower campaigns after a timeout drawn from [E, 2E) by its seeded RNG."""
    waits = [tick_until_campaign(make_core(seed=s)) for s in range(30)]
    assert all(E <= w < 2 * E for w in waits)
    assert len(set(waits)) > 3  # randomized, so split votes resolve
    assert waits == [tick_until_campaign(make_core(seed=s)) for s in range(30)]  # seeded


def test_follower_hearing_from_leader_does_not_campaign():
    """Heartbeats from the leader reset the follower's election timer."""
    core = make_core("n2")
    for _ in range(5 * E):
        core.tick()
        core.step(Heartbeat(N1, N2, 1, 0))
    assert core.role is Role.FOLLOWER and core.term == 1


def test_candidate_increments_term_votes_for_itself_and_requests_votes():
    """A candidate bumps its term, votes for itself and asks every other voter."""
    core = make_core()
    tick_until_campaign(core)
    assert core.role is Role.CANDIDATE and core.term == 2
    msgs = sent(core)
    assert msgs == [RequestVote(N1, N2, 2, 3, 1), RequestVote(N1, N3, 2, 3, 1)]
    assert core.voted_for == N1


def test_prevote_campaign_does_not_increase_term():
    """With PreVote a node first asks for votes for term+1 without changing its term."""
    core = make_core(pre_vote=True)
    tick_until_campaign(core)
    assert core.role is Role.PRE_CANDIDATE and core.term == 1
    assert {m.term for m in sent(core) if isinstance(m, RequestVote) and m.pre_vote} == {2}
    core.step(RequestVoteResponse(N2, N1, 2, True, pre_vote=True))
    assert core.role is Role.CANDIDATE and core.term == 2


def test_candidate_wins_with_majority_of_votes():
    """A candidate that collects votes from a majority becomes leader."""
    core = make_core(voters=("n1", "n2", "n3", "n4", "n5"))
    tick_until_campaign(core)
    core.step(RequestVoteResponse(N2, N1, 2, True))
    assert core.role is Role.CANDIDATE
    core.step(RequestVoteResponse(N3, N1, 2, True))
    assert core.role is Role.LEADER


def test_candidate_steps_down_when_majority_rejects():
    """A candidate rejected by a majority returns to follower in the same term."""
    core = make_core()
    tick_until_campaign(core)
    core.step(RequestVoteResponse(N2, N1, 2, False))
    core.step(RequestVoteResponse(N3, N1, 2, False))
    assert core.role is Role.FOLLOWER and core.term == 2


def test_candidate_steps_down_on_higher_term():
    """Any message with a higher term turns a candidate into a follower of that term."""
    core = make_core()
    tick_until_campaign(core)
    core.step(RequestVoteResponse(N2, N1, 7, False))
    assert core.role is Role.FOLLOWER and core.term == 7 and core.voted_for is None


def test_candidate_becomes_follower_on_append_from_leader_of_same_term():
    """A candidate that hears from a leader of its own term recognises it."""
    core = make_core()
    tick_until_campaign(core)
    core.step(AppendEntries(N2, N1, 2, 3, 1, (), 3))
    assert core.role is Role.FOLLOWER and core.leader_id == N2 and core.term == 2


def test_vote_is_persisted_before_vote_response_is_sent():
    """The granted vote leaves in messages_after_persist, with the hard state to persist."""
    core = make_core("n2")
    core.step(RequestVote(N1, N2, 2, 3, 1))
    rd = core.ready()
    assert rd.hard_state == HardState(2, N1, 3)
    assert rd.messages == ()
    assert rd.messages_after_persist == (RequestVoteResponse(N2, N1, 2, True),)


def test_voter_grants_at_most_one_vote_per_term():
    """A voter grants one candidate per term; a repeated request from it is granted again."""
    core = make_core("n2")
    core.step(RequestVote(N1, N2, 2, 3, 1))
    core.step(RequestVote(N3, N2, 2, 3, 1))
    core.step(RequestVote(N1, N2, 2, 3, 1))
    votes = [m for m in sent(core) if isinstance(m, RequestVoteResponse)]
    assert [(m.recipient, m.granted) for m in votes] == [(N1, True), (N3, False), (N1, True)]


def test_voter_rejects_candidate_with_stale_log():
    """A vote goes only to a candidate whose log is at least as up to date (§5.4.1)."""
    core = make_core("n2", log=(2, 2), term=2)  # last entry: index 5, term 2
    cases = [
        ((5, 1), False),  # older last term
        ((4, 2), False),  # same term, shorter
        ((5, 2), True),  # equal
        ((9, 2), True),  # same term, longer
        ((4, 3), True),  # newer last term, even shorter
    ]
    for term, ((last_index, last_term), granted) in enumerate(cases, start=3):
        core.step(RequestVote(N1, N2, term, last_index, last_term))
        (resp,) = [m for m in sent(core) if isinstance(m, RequestVoteResponse)]
        assert resp.granted is granted, (last_index, last_term)


def test_stale_term_messages_are_ignored():
    """A message from an older term changes nothing; a stale leader is told the newer term."""
    core = make_core("n2", term=5)
    core.step(AppendEntries(N1, N2, 3, 3, 1, (Entry(4, 3),), 4))
    assert core.log.last_index() == 3 and core.term == 5
    assert sent(core) == [AppendEntriesResponse(N2, N1, 5, False)]


def test_leader_steps_down_when_told_of_higher_term():
    """A leader that receives a response carrying a higher term becomes a follower."""
    core = make_core()
    make_leader(core)
    core.step(AppendEntriesResponse(N2, N1, 9, False))
    assert core.role is Role.FOLLOWER and core.term == 9


# ================================================================ replication


def test_leader_appends_noop_on_election():
    """A new leader appends an empty entry of its term at once (§8)."""
    core = make_core()
    msgs = make_leader(core)
    noop = core.log.entry_at(4)
    assert noop == Entry(4, 2, EntryKind.NOOP, b"")
    appends = [m for m in msgs if isinstance(m, AppendEntries)]
    assert {m.recipient for m in appends} == {N2, N3}
    assert all(m.entries == (noop,) for m in appends)


def test_leader_sends_heartbeats_every_heartbeat_interval():
    """An idle leader sends a heartbeat to each follower every heartbeat_ticks."""
    core = make_core(check_quorum=False)  # nobody answers in this test
    make_leader(core)
    beats = []
    for _ in range(10 * H):
        core.tick()
        beats.append(sum(isinstance(m, Heartbeat) for m in sent(core)))
    assert sum(beats) == 10 * 2 and beats[H - 1] == 2


def test_heartbeat_carries_commit():
    """Heartbeats carry the commit index (capped at the follower's match) and followers adopt it."""
    net = Network(IDS)
    net.elect("n1")
    index, _ = net.propose("n1", b"x")
    net.deliver(lambda m: isinstance(m, AppendEntries))  # followers append
    net.deliver(lambda m: isinstance(m, AppendEntriesResponse))  # leader commits
    net.drop()  # the AppendEntries carrying the new commit are lost
    assert net.core("n1").commit == index and net.core("n2").commit < index
    net.tick(H, nodes=["n1"], settle=False)
    beats = [m for m in net.queue if isinstance(m, Heartbeat)]
    assert {m.commit for m in beats} == {index}
    net.stabilize()
    # (>=: the leader's own seat changes may have committed since)
    assert net.core("n2").commit >= index and net.node("n2").state[0] == b"x"


def test_follower_appends_entries_and_commits_from_leader():
    """A follower appends what matches and takes min(leader_commit, last new index)."""
    core = make_core("n2")
    core.step(AppendEntries(N1, N2, 2, 3, 1, (Entry(4, 2), Entry(5, 2)), 9))
    assert core.log.last_index() == 5 and core.commit == 5
    assert sent(core) == [AppendEntriesResponse(N2, N1, 2, True, 5)]


def test_follower_commits_only_entries_the_append_verified():
    """leader_commit covers only entries this AppendEntries proved to match, not a stale tail."""
    core = make_core("n2", log=(2, 2), term=2)  # indexes 4, 5 from a deposed term-2 leader
    core.step(AppendEntries(N1, N2, 3, 3, 1, (), 5))  # the term-3 leader's 4 and 5 differ
    assert core.commit == 3
    assert sent(core) == [AppendEntriesResponse(N2, N1, 3, True, 3)]


def test_follower_rejects_append_with_mismatched_prev_and_gives_conflict_hints():
    """The consistency check fails and the reply names the conflicting term and its first index."""
    core = make_core("n2", log=(2, 2, 2), term=3)  # indexes 4..6 of term 2
    core.step(AppendEntries(N1, N2, 3, 6, 3, (Entry(7, 3),), 3))
    core.step(AppendEntries(N1, N2, 3, 10, 3, (Entry(11, 3),), 3))
    assert core.log.last_index() == 6
    assert sent(core) == [
        AppendEntriesResponse(N2, N1, 3, False, 0, 6, conflict_term=2, conflict_index=4),
        AppendEntriesResponse(N2, N1, 3, False, 0, 10, conflict_term=0, conflict_index=7),
    ]


def test_follower_truncates_conflicting_suffix():
    """An entry that conflicts with the leader's deletes it and all that follow (§5.3)."""
    core = make_core("n2", log=(2, 2, 2), term=3)
    core.step(AppendEntries(N1, N2, 3, 4, 2, (Entry(5, 3),), 3))
    assert core.log.last_index() == 5 and core.log.term_at(5) == 3
    rd = core.ready()
    assert rd.entries == (Entry(5, 3),)  # storage replaces index 5 and after


def test_follower_ignores_stale_append_that_matches():
    """A delayed, shorter AppendEntries does not truncate entries that match it."""
    core = make_core("n2", term=2)
    core.step(AppendEntries(N1, N2, 2, 3, 1, (Entry(4, 2), Entry(5, 2)), 3))
    core.step(AppendEntries(N1, N2, 2, 3, 1, (Entry(4, 2),), 3))
    assert core.log.last_index() == 5


def test_leader_backtracks_with_conflict_hints_in_few_round_trips():
    """A follower with 50 divergent entries is repaired in a few rejections, not 50."""
    net = Network(IDS)
    net.elect("n1")
    net.isolate("n1")
    for i in range(50):
        net.propose("n1", f"lost{i}".encode())  # never committed
    net.drop()
    net.partition(["n2", "n3"], ["n1"])
    net.tick(4 * E)  # n1 steps down (CheckQuorum); n2 or n3 wins
    new = net.leader()
    assert new in (N2, N3)
    for i in range(50):
        net.propose(new, f"kept{i}".encode())
    net.sync()
    assert net.node(new).state[-1] == b"kept49"
    # A fresh leader starts each follower at the end of its (long) log: hand over to the other.
    new = N3 if new == N2 else N2
    net.transfer(net.leader(), new)
    net.stabilize()
    assert net.leader() == new and net.core(new).progress[N1].next > 50
    net.heal()
    before = net.sent["AppendEntriesResponse"]
    net.tick(3 * E)
    assert net.core("n1").log.last_index() == net.core(new).log.last_index()
    assert net.node("n1").state == net.node(new).state
    assert all(not d.startswith(b"lost") for d in net.node("n1").state)
    # count every rejection n1 sent while being repaired
    rejected = sum(
        1
        for rd in net.node("n1").readies
        for m in rd.messages_after_persist
        if isinstance(m, AppendEntriesResponse) and not m.success and m.reject_index > 0
    )
    assert rejected <= 3, rejected
    assert net.sent["AppendEntriesResponse"] - before < 30


def test_pipelining_respects_inflight_window():
    """A replicating leader keeps at most max_inflight AppendEntries unacknowledged."""
    net = Network(IDS, max_inflight=3, max_msg_bytes=1)  # one entry per message
    net.elect("n1")
    net.sync()
    base = net.core("n1").log.last_index()
    for i in range(10):
        net.core("n1").propose(f"v{i}".encode())
    net.node("n1").process()
    to_n2 = [m for m in net.queue if isinstance(m, AppendEntries) and m.recipient == N2]
    assert len(to_n2) == 3 and all(len(m.entries) == 1 for m in to_n2)
    assert [m.entries[0].index for m in to_n2] == [base + 1, base + 2, base + 3]
    net.deliver(lambda m: m == to_n2[0])  # n2 acks the first one
    net.deliver(lambda m: isinstance(m, AppendEntriesResponse) and m.sender == N2)
    more = [m for m in net.queue if isinstance(m, AppendEntries) and m.recipient == N2]
    assert [m.entries[0].index for m in more] == [base + 2, base + 3, base + 4]
    net.sync()  # followers learn the commit index from the next heartbeat
    assert net.committed_on_all(14)


def test_entries_are_batched_under_byte_limit():
    """Many entries travel in one AppendEntries, each message within max_msg_bytes."""
    net = Network(IDS, max_msg_bytes=200)
    net.elect("n1")
    for i in range(20):
        net.core("n1").propose(b"%02d" % i)  # 26 bytes each with overhead
    big = b"B" * 500
    net.core("n1").propose(big)
    net.node("n1").process()
    to_n2 = [m for m in net.queue if isinstance(m, AppendEntries) and m.recipient == N2]
    sizes = [sum(e.size() for e in m.entries) for m in to_n2]
    assert [len(m.entries) for m in to_n2] == [7, 7, 6, 1]
    assert all(s <= 200 for s in sizes[:-1]) and to_n2[-1].entries[0].data == big
    net.sync()
    assert net.node("n3").state[-1] == big


# ===================================================================== commit


def test_leader_commits_when_a_majority_stores_an_entry():
    """An entry of the leader's term is committed once stored on a majority."""
    core = make_core(voters=("n1", "n2", "n3", "n4", "n5"))
    make_leader(core)
    core.step(RequestVoteResponse(N3, N1, 2, True))
    core.step(AppendEntriesResponse(N2, N1, 2, True, 6))
    assert core.commit == 5  # bootstrap only: leader + n2 is 2 of 5
    core.step(AppendEntriesResponse(N3, N1, 2, True, 6))
    assert core.commit == 6


def test_leader_commits_only_current_term_entries_by_counting():
    """Figure 8: an old-term entry on a majority commits only with one of the current term."""
    core = make_core(log=(2,), term=3)  # index 4 is from term 2
    make_leader(core)  # term 4, no-op at index 5
    assert core.term == 4 and core.log.entry_at(5).kind is EntryKind.NOOP
    core.step(AppendEntriesResponse(N2, N1, 4, True, 4))
    assert core.commit == 3  # index 4 is on a majority but is of term 2
    core.step(AppendEntriesResponse(N2, N1, 4, True, 5))
    assert core.commit == 5  # committing the no-op commits index 4 with it


def test_follower_applies_only_committed_entries():
    """Entries reach committed_entries only once the leader says they are committed."""
    core = make_core("n2")
    core.step(AppendEntries(N1, N2, 2, 3, 1, (Entry(4, 2, EntryKind.NORMAL, b"a"),), 3))
    rds = drain(core)
    assert all(e.index <= 3 for rd in rds for e in rd.committed_entries)
    core.step(Heartbeat(N1, N2, 2, 4))
    assert [e.data for rd in drain(core) for e in rd.committed_entries] == [b"a"]


# ======================================================== PreVote, CheckQuorum


def _run_partitioned_follower(**cfg: object) -> tuple[int, int, Network]:
    net = Network(IDS, **cfg)
    net.elect("n1")
    term = net.core("n1").term
    net.isolate("n3")
    net.tick(10 * E)
    net.heal()
    net.tick(3 * E)
    return term, net.core("n3").term, net


def test_prevote_does_not_disrupt_healthy_leader():
    """A node partitioned away and rejoining cannot depose a leader that has a quorum."""
    term, n3_term, net = _run_partitioned_follower()
    assert n3_term == term  # its pre-votes never won, so its term never grew
    assert net.core("n1").role is Role.LEADER and net.core("n1").term == term
    assert list(net.leaders) == [term]
    # Without PreVote and CheckQuorum, the same rejoin does depose the leader.
    term, n3_term, net = _run_partitioned_follower(pre_vote=False, check_quorum=False)
    assert n3_term > term + 1 and net.core("n1").term > term


def test_vote_request_ignored_while_follower_hears_from_leader():
    """With CheckQuorum, a follower that heard from its leader lately ignores higher-term votes."""
    core = make_core("n2", pre_vote=True, check_quorum=True)
    core.step(Heartbeat(N1, N2, 1, 3))
    drain(core)
    core.step(RequestVote(N3, N2, 5, 9, 9))
    assert core.term == 1 and sent(core) == []
    core.step(RequestVote(N3, N2, 5, 9, 9, transfer=True))  # unless leadership is handed over
    assert core.term == 5


def test_check_quorum_leader_steps_down():
    """A leader that has not heard from a majority for an election timeout steps down."""
    net = Network(IDS)
    net.elect("n1")
    net.tick(5 * E)
    assert net.core("n1").role is Role.LEADER  # followers answer: it stays
    net.isolate("n1")
    net.tick(2 * E, nodes=["n1"])
    assert net.core("n1").role is Role.FOLLOWER
    # Without CheckQuorum it would lead alone forever.
    net = Network(IDS, check_quorum=False)
    net.elect("n1")
    net.isolate("n1")
    net.tick(10 * E, nodes=["n1"])
    assert net.core("n1").role is Role.LEADER


# ====================================================================== reads


def _leader_with_commit() -> Network:
    net = Network(IDS)
    net.elect("n1")
    net.propose("n1", b"x")
    net.stabilize()
    return net


def test_read_index_waits_for_heartbeat_quorum():
    """A ReadIndex read is released only after a majority answered a heartbeat sent after it."""
    net = _leader_with_commit()
    commit = net.core("n1").commit
    net.read("n1", "r1")
    beats = [m for m in net.queue if isinstance(m, Heartbeat)]
    assert len(beats) == 2 and net.node("n1").read_states == []
    net.deliver(lambda m: isinstance(m, Heartbeat) and m.recipient == N2)
    assert net.node("n1").read_states == []  # n2 has not answered yet
    net.deliver(lambda m: isinstance(m, HeartbeatResponse))
    assert net.node("n1").read_states == [ReadState(commit, "r1")]


def test_read_index_on_follower_raises_not_leader():
    """Without follower reads only the leader serves ReadIndex; others name the leader."""
    net = Network(IDS, follower_reads=False)
    net.elect("n1")
    net.propose("n1", b"x")
    net.stabilize()
    with pytest.raises(NotLeaderError) as info:
        net.read("n2", "r")
    assert info.value.leader == N1


def test_read_index_before_first_commit_in_term_waits():
    """A new leader does not serve reads until it has committed an entry of its term."""
    net = Network(IDS)
    votes = (RequestVote, RequestVoteResponse)
    while net.core("n1").role is not Role.LEADER:
        net.tick(nodes=["n1"], settle=False)
        net.deliver(lambda m: isinstance(m, votes))
        net.deliver(lambda m: isinstance(m, votes))
    net.read("n1", "early")
    beats = (Heartbeat, HeartbeatResponse)
    for _ in range(2 * H):  # heartbeat rounds complete, but the no-op is not replicated
        net.drop(lambda m: isinstance(m, AppendEntries))
        net.tick(nodes=["n1"], settle=False)
        net.deliver(lambda m: isinstance(m, beats))
        net.deliver(lambda m: isinstance(m, beats))
    assert net.core("n1").commit == 3 and net.node("n1").read_states == []
    net.stabilize()  # the no-op commits
    net.tick(H, nodes=["n1"])
    assert net.node("n1").read_states == [ReadState(4, "early")]


def test_read_index_is_dropped_when_leadership_is_lost():
    """Reads waiting on a leader that steps down are reported in dropped_reads."""
    net = _leader_with_commit()
    net.isolate("n1")
    net.read("n1", "r")
    net.tick(2 * E, nodes=["n1"])
    assert net.core("n1").role is Role.FOLLOWER
    assert net.node("n1").dropped_reads == ["r"] and net.node("n1").read_states == []


def _lease_cluster() -> tuple[Network, str, str, str]:
    """A lease-read cluster with a committed entry; return it, the leader and the others."""
    net = Network(IDS, lease_read=True)
    leader = net.run_until_leader()
    net.propose(leader, b"x")
    net.sync()
    a, b = (n for n in IDS if n != leader)
    return net, leader, a, b


def test_lease_read():
    """With lease_read, a leader confirmed within the lease serves reads at once, and not after."""
    net, leader, _, _ = _lease_cluster()
    net.tick(H)  # a heartbeat round confirms leadership and starts the lease
    net.read(leader, "fast")
    commit = net.core(leader).commit
    assert net.queue == [] and net.node(leader).read_states == [ReadState(commit, "fast")]
    net.isolate(leader)
    net.tick(E - 1, nodes=[leader])  # the lease has run out; still leader
    assert net.core(leader).role is Role.LEADER
    net.read(leader, "slow")
    assert [rs.context for rs in net.node(leader).read_states] == ["fast"]
    # Without the flag every read waits for a heartbeat round.
    net = _leader_with_commit()
    net.tick(H)
    net.read("n1", "r")
    assert net.node("n1").read_states == [] and any(isinstance(m, Heartbeat) for m in net.queue)


def test_lease_is_not_renewed_once_a_transfer_starts():
    """Regression: no lease once a transfer starts (a late TimeoutNow may elect the target)."""
    # Before the fix, a heartbeat round acknowledged during the transfer gave a lease that
    # outlived the abandoned transfer, while the target had already won with a late TimeoutNow.
    net, leader, _, target = _lease_cluster()
    old = net.core(leader)
    late: list[TimeoutNow] = []
    net.filters.append(lambda m: isinstance(m, TimeoutNow) and not late.append(m))
    net.transfer(leader, target)
    net.tick(H)  # a heartbeat round during the transfer; the TimeoutNow is delayed
    net.filters.clear()
    net.isolate(leader)
    net.blocked.discard((NodeId(leader), NodeId(target)))
    net.queue.extend(late)  # the TimeoutNow finally arrives
    net.stabilize()
    assert net.core(target).role is Role.LEADER
    newer, _ = net.propose(target, b"newer")
    net.stabilize()
    assert net.core(target).commit >= newer
    net.blocked.add((NodeId(leader), NodeId(target)))
    while old.transferee is not None:  # the old leader abandons the transfer...
        net.tick(nodes=[leader])
    assert old.role is Role.LEADER  # ...still leading, as far as it knows
    net.read(leader, "stale?")
    assert net.node(leader).read_states == []  # no lease: it must confirm, and cannot


def test_restarted_voter_does_not_vote_within_an_election_timeout_under_lease_read():
    """Regression: a voter that restarted within an election timeout does not help break a lease."""
    # Before the fix, a restarted voter forgot it had acknowledged the leader's lease, granted
    # its vote at once, and the old leader served a stale read on its lease.
    net, leader, acker, rival = _lease_cluster()
    old, rival_core = net.core(leader), net.core(rival)
    net.blocked |= {(NodeId(leader), NodeId(rival)), (NodeId(rival), NodeId(leader))}
    for _ in range(10 * E):  # until the rival is about to campaign right after a round
        net.tick()
        left = rival_core.randomized_timeout - rival_core.election_elapsed
        if left == 1 and old.heartbeat_elapsed == 0:
            break
    else:
        raise AssertionError("timing not reached")
    net.isolate(leader)
    net.crash(acker)
    net.restart(acker)
    net.tick(2, nodes=[acker, rival])
    net.tick(2, nodes=[leader])
    assert rival_core.role is not Role.LEADER
    assert old.role is Role.LEADER
    net.read(leader, "lease")  # served on the lease: safe because no one else leads
    assert [rs.context for rs in net.node(leader).read_states] == ["lease"]
    net.tick(3 * E, nodes=[acker, rival])  # once the lease is over, they elect a leader
    assert net.leader() in (acker, rival)


# ========================================================== leadership transfer


def test_leadership_transfer_sends_timeout_now_after_catch_up():
    """The leader first brings the target up to date, then sends TimeoutNow; the target wins."""
    net = Network(IDS)
    net.elect("n1")
    net.isolate("n3")
    for i in range(5):
        net.propose("n1", f"v{i}".encode())
    net.stabilize()
    net.heal()
    net.transfer("n1", "n3")
    sent_at = None
    for _ in range(5 * E):
        if any(isinstance(m, TimeoutNow) for m in net.queue):
            sent_at = net.core("n3").log.last_index()
            break
        if not net.deliver():
            net.tick(settle=False)  # the next heartbeat reveals what n3 lacks
    assert sent_at == net.core("n1").log.last_index() >= 9
    net.stabilize()
    assert net.core("n3").role is Role.LEADER and net.core("n1").role is Role.FOLLOWER


def test_proposals_refused_during_transfer():
    """While leadership is moving, proposals and configuration changes are refused."""
    net = _leader_with_commit()
    net.isolate("n3")
    net.transfer("n1", "n3")
    with pytest.raises(TransferInProgressError):
        net.propose("n1", b"y")
    with pytest.raises(TransferInProgressError):
        net.change("n1", ConfChange(ConfChangeOp.ADD_LEARNER, N4))


def test_transfer_abandoned_after_election_timeout():
    """A transfer that does not complete within an election timeout is abandoned."""
    net = _leader_with_commit()
    net.isolate("n3")
    net.transfer("n1", "n3")
    net.tick(E - 1)
    with pytest.raises(TransferInProgressError):
        net.propose("n1", b"y")
    net.tick(1)
    assert net.core("n1").role is Role.LEADER
    index, _ = net.propose("n1", b"y")
    net.sync()
    assert net.committed_on_all(index, ["n1", "n2"])


def test_transfer_to_non_voter_is_refused():
    """Leadership can only go to a voter."""
    net = _leader_with_commit()
    with pytest.raises(ValueError):
        net.transfer("n1", "n9")


# ================================================================= membership


def _cluster_with_spare() -> Network:
    net = Network(IDS, spares=["n4"])
    net.elect("n1")
    net.stabilize()
    return net


def test_learner_does_not_vote_or_count_for_quorum():
    """A learner gets the log but never campaigns, is never asked to vote, and does not count."""
    net = _cluster_with_spare()
    index, _ = net.change("n1", ConfChange(ConfChangeOp.ADD_LEARNER, N4))
    net.sync()
    assert net.core("n4").configuration.learners == {N4} and net.committed_on_all(index)
    net.tick(5 * E, nodes=["n4"])
    assert net.core("n4").role is Role.FOLLOWER
    net.crash("n2")
    net.crash("n3")
    index, _ = net.propose("n1", b"z")
    net.stabilize()
    assert net.core("n4").log.last_index() == index  # replicated to the learner...
    assert net.core("n1").commit < index  # ...but 1 voter + 1 learner is no quorum
    net.restart("n2")
    net.tick(4 * E, nodes=["n2", "n4"])  # n2 campaigns; the learner is not asked
    assert not any(
        isinstance(m, RequestVote) and m.recipient == N4
        for rd in net.node("n2").readies
        for m in rd.messages
    )


def test_config_change_takes_effect_on_append():
    """A server uses a new configuration as soon as it is in its log, committed or not."""
    net = _cluster_with_spare()
    net.change("n1", ConfChange(ConfChangeOp.ADD_LEARNER, N4))  # a voter joins as a learner
    net.sync()
    net.crash("n4")
    index, _ = net.change("n1", ConfChange(ConfChangeOp.ADD_VOTER, N4))
    assert net.core("n1").configuration.voters == {N1, N2, N3, N4}
    assert net.core("n1").commit < index and N4 in net.core("n1").progress
    net.deliver(lambda m: isinstance(m, AppendEntries) and m.recipient == N2)
    assert net.core("n2").configuration.voters == {N1, N2, N3, N4}
    net.crash("n3")
    net.stabilize()
    assert net.core("n1").commit < index  # 2 of 4 is not a majority any more
    net.restart("n4")
    net.tick(2 * H)
    assert net.core("n1").commit >= index


def test_config_change_rolled_back_when_its_entry_is_truncated():
    """An uncommitted configuration entry overwritten by a new leader stops applying."""
    core = make_core("n2", term=2)
    change = ConfChange(ConfChangeOp.ADD_VOTER, N4).encode()
    core.step(AppendEntries(N1, N2, 2, 3, 1, (Entry(4, 2, EntryKind.CONFIG, change),), 3))
    assert N4 in core.configuration.voters
    core.step(AppendEntries(N3, N2, 3, 3, 1, (Entry(4, 3, EntryKind.NOOP),), 3))
    assert core.configuration.voters == {N1, N2, N3}


def test_only_one_config_change_at_a_time():
    """A second change is refused until the first is committed."""
    net = _cluster_with_spare()
    net.change("n1", ConfChange(ConfChangeOp.ADD_LEARNER, N4))
    with pytest.raises(ConfigChangeInProgressError):
        net.change("n1", ConfChange(ConfChangeOp.ADD_VOTER, N4))
    net.sync()  # a heartbeat answer tells the leader n4 no longer abstains
    net.change("n1", ConfChange(ConfChangeOp.ADD_VOTER, N4))
    net.stabilize()
    assert net.core("n3").configuration.voters == {N1, N2, N3, N4}


def test_config_change_waits_for_leader_to_commit_in_its_term():
    """A new leader may not change the configuration before committing an entry of its term."""
    core = make_core()
    make_leader(core)
    with pytest.raises(ConfigChangeInProgressError):
        core.propose_config_change(ConfChange(ConfChangeOp.ADD_LEARNER, N4))
    core.step(AppendEntriesResponse(N2, N1, 2, True, 4))
    core.propose_config_change(ConfChange(ConfChangeOp.ADD_LEARNER, N4))
    assert core.configuration.learners == {N4}


def test_invalid_config_change_is_refused():
    """A change that does nothing (re-adding a voter, removing a stranger) raises ValueError."""
    net = _cluster_with_spare()
    with pytest.raises(ValueError):
        net.change("n1", ConfChange(ConfChangeOp.ADD_VOTER, N2))
    with pytest.raises(ValueError):
        net.change("n1", ConfChange(ConfChangeOp.REMOVE, NodeId("n9")))
    with pytest.raises(ValueError):
        net.core("n1").propose(b"c", EntryKind.CONFIG)


def test_leader_removed_steps_down_after_commit():
    """A leader that removes itself keeps leading until the change commits, then steps down."""
    net = _leader_with_commit()
    index, _ = net.change("n1", ConfChange(ConfChangeOp.REMOVE, N1))
    assert net.core("n1").role is Role.LEADER and N1 not in net.core("n1").configuration.voters
    net.stabilize()
    assert net.core("n1").role is Role.FOLLOWER and net.committed_on_all(index, ["n1"])
    net.tick(10 * E)
    new = net.leader()
    assert new in (N2, N3)
    assert net.core("n1").role is Role.FOLLOWER  # a non-voter never campaigns
    after, _ = net.propose(new, b"after")
    net.sync()
    assert net.committed_on_all(after, ["n2", "n3"])


# ================================================================== snapshots


def test_compaction_and_install_snapshot_to_lagging_follower():
    """A follower that needs compacted entries receives InstallSnapshot and catches up."""
    net = _leader_with_commit()
    net.crash("n3")
    for i in range(20):
        net.propose("n1", f"v{i}".encode())
    net.stabilize()
    meta = net.node("n1").take_snapshot()
    assert net.core("n1").status().first_index == meta.index + 1
    net.restart("n3")
    net.tick(2 * H)
    assert net.sent["InstallSnapshot"] == 1
    assert net.node("n3").state == net.node("n1").state
    assert net.core("n3").log.start == meta.index and net.core("n3").commit >= meta.index


def test_snapshot_meta_and_compact_respect_applied_index():
    """Snapshots describe applied state only; compaction keeps the requested tail."""
    net = _leader_with_commit()
    core = net.core("n2")
    with pytest.raises(ValueError):
        core.snapshot_meta_at(core.applied + 1)
    meta = core.snapshot_meta_at(core.applied)
    assert meta.config.voters == {N1, N2, N3} and meta.term == core.log.term_at(meta.index)
    core.compact(meta, meta.index - 2)
    assert core.log.start == meta.index - 2 and core.snapshot_meta == meta


def test_follower_with_entry_at_snapshot_index_keeps_its_log():
    """An InstallSnapshot the follower's log already covers just advances commit."""
    core = make_core("n2", log=(2, 2), term=2)
    meta = make_core(log=(2, 2), term=2)
    drain(meta)
    snap = meta.snapshot_meta_at(3)
    core.step(InstallSnapshot(N1, N2, 2, snap))
    assert core.log.last_index() == 5 and core.commit == 3


# =================================================================== restarts


def test_restart_recovers_persisted_state():
    """A restarted node recovers term, vote, log and commit, and re-applies committed entries."""
    net = _leader_with_commit()
    for i in range(3):
        net.propose("n1", f"v{i}".encode())
    net.stabilize()
    before = {nid: (c.term, c.voted_for, c.log.entries[:]) for nid, c in _cores(net)}
    commits = {nid: c.commit for nid, c in _cores(net)}
    states = net.states()
    for nid in IDS:
        net.crash(nid)
    for nid in IDS:
        net.restart(nid)
    after = {nid: (c.term, c.voted_for, c.log.entries[:]) for nid, c in _cores(net)}
    assert after == before
    # A commit index moved without a new term or entries is saved lazily (it is
    # learnt again from the leader); what was saved is never past the log.
    assert all(c.commit <= commits[nid] for nid, c in _cores(net))
    net.run_until_leader()
    net.sync()
    assert states[N1] == [b"x", b"v0", b"v1", b"v2"]
    assert all(s == states[N1] for s in net.states().values())


def _cores(net: Network) -> list[tuple[NodeId, RaftCore]]:
    return [(nid, n.core) for nid, n in net.nodes.items() if n.core is not None]


def test_crash_loses_only_what_was_not_handed_to_storage():
    """Entries the core had not handed out are lost in a crash; handed-out ones survive."""
    net = _leader_with_commit()
    handed_out = net.core("n1").log.last_index()
    net.core("n1").propose(b"unsent")  # no Ready taken yet
    net.crash("n1")
    net.restart("n1")
    assert net.core("n1").log.last_index() == handed_out


# ===================================================================== API


def test_propose_on_follower_raises_not_leader():
    """Proposals go to the leader; a follower names the leader it knows."""
    net = _leader_with_commit()
    with pytest.raises(NotLeaderError) as info:
        net.propose("n2", b"x")
    assert info.value.leader == N1


def test_ready_must_be_advanced_before_the_next():
    """ready() twice without advance() is a usage error."""
    core = make_core()
    core.tick()
    tick_until_campaign(core)
    core.ready()
    with pytest.raises(RuntimeError):
        core.ready()


def test_single_voter_cluster_elects_itself_and_commits():
    """A one-node cluster elects itself and commits as soon as its own disk has the entry."""
    net = Network(["solo"])
    net.elect("solo")
    index, _ = net.propose("solo", b"alone")
    net.stabilize()
    assert net.node("solo").state == [b"alone"] and net.core("solo").commit == index
    net.read("solo", "r")
    assert net.node("solo").read_states == [ReadState(index, "r")]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"node_id": ""},
        {"heartbeat_ticks": 0},
        {"election_ticks": 2, "heartbeat_ticks": 2},
        {"max_inflight": 0},
        {"max_msg_bytes": 0},
        {"max_apply_bytes": 0},
        {"lease_read": True, "check_quorum": False},
    ],
)
def test_core_config_rejects_invalid_settings(kwargs):
    """CoreConfig refuses settings the algorithm cannot work with."""
    settings = {"node_id": "n1", **kwargs}
    with pytest.raises(ValueError):
        CoreConfig(**settings)


def test_core_config_defaults_are_valid():
    """The default settings build, with PreVote and CheckQuorum on and lease reads off."""
    cfg = CoreConfig(N1)
    assert cfg.pre_vote and cfg.check_quorum and not cfg.lease_read
    assert cfg.election_ticks > cfg.heartbeat_ticks >= 1


def test_a_learner_is_not_promoted_while_it_abstains():
    """A learner caught up in entries but whose storage started empty is promoted only once
    its heartbeat answer says it stopped abstaining (simulation seed 2652: a voter that
    started abstaining in a two-voter configuration left no electable majority)."""
    net = _cluster_with_spare()
    net.change("n1", ConfChange(ConfChangeOp.ADD_LEARNER, N4))
    net.stabilize()
    net.core("n1").progress[N4].abstaining = True  # as if no heartbeat answer came yet
    with pytest.raises(ValueError, match="still abstains"):
        net.change("n1", ConfChange(ConfChangeOp.ADD_VOTER, N4))
    net.sync()
    assert not net.core("n1").progress[N4].abstaining
    net.change("n1", ConfChange(ConfChangeOp.ADD_VOTER, N4))


def test_a_late_term_only_rejection_does_not_make_match_negative():
    """Regression (found by a chaos run): a follower answers a message of an older term
    with a bare rejection (no index); delivered once the leader is in that follower's
    term, it was read as "the log ends at -1": match became -1 and every heartbeat to the
    follower carried commit -1, which cannot be encoded, so the follower was lost."""
    leader = make_core("n1", check_quorum=True)
    make_leader(leader)
    leader.step(AppendEntriesResponse(N2, N1, leader.term, True, leader.log.last_index()))
    drain(leader)
    match = leader.progress[N2].match
    leader.step(AppendEntriesResponse(N2, N1, leader.term, False))
    assert leader.progress[N2].match == match
    for _ in range(H + 1):
        leader.tick()
    beats = [m for m in sent(leader) if isinstance(m, Heartbeat) and m.recipient == N2]
    assert beats and all(m.commit >= 0 for m in beats)
    assert all(bounds_error(m) is None for m in beats)


def test_an_idle_follower_learns_the_new_commit_index_without_waiting_for_a_heartbeat():
    """notify_commit tells a follower that holds every entry the new commit index (an
    empty AppendEntries), so its reads and watches see the write a round trip later,
    not a heartbeat later; a follower already told gets nothing."""
    net = Network(IDS)
    net.elect("n1")
    net.sync()
    index, _ = net.propose("n1", b"x")
    net.stabilize()  # no tick: no heartbeat carries it
    assert net.core("n1").commit >= index
    assert all(net.core(n).commit < index for n in ("n2", "n3"))
    before = net.sent["AppendEntries"]
    net.core("n1").notify_commit()
    net.stabilize()
    assert all(net.core(n).commit >= index for n in ("n2", "n3"))
    assert net.sent["AppendEntries"] - before == 2
    net.core("n1").notify_commit()
    net.stabilize()
    assert net.sent["AppendEntries"] - before == 2  # nothing left to tell


def test_an_append_carries_the_commit_index_so_no_notice_is_needed():
    """Under steady load the next append tells followers the commit index: a notice
    after it sends nothing."""
    net = Network(IDS)
    net.elect("n1")
    net.sync()
    net.propose("n1", b"x")
    net.stabilize()
    index, _ = net.propose("n1", b"y")
    net.stabilize()
    first = net.core("n1").commit
    assert first >= index
    net.propose("n1", b"z")
    net.stabilize()
    # the append of z carried y's commit index, with no notice
    assert all(net.core(n).commit >= first for n in ("n2", "n3"))
    before = net.sent["AppendEntries"]
    net.core("n1").notify_commit()
    net.stabilize()
    assert net.sent["AppendEntries"] - before == 2  # only z's own commit is left to tell
    assert all(net.core(n).commit == net.core("n1").commit for n in ("n2", "n3"))


def test_an_eager_follower_is_told_the_commit_index_in_the_same_batch():
    """A follower whose answers say eager (it has watchers) gets the new commit index
    as soon as the entry commits, with no notify_commit; the others still wait for it."""
    net = Network(IDS)
    net.elect("n1")
    net.sync()
    net.core("n2").eager_commits = True
    before = net.sent["AppendEntries"]
    index, _ = net.propose("n1", b"x")
    net.stabilize()  # no tick, no notify_commit
    leader = net.core("n1")
    assert leader.commit >= index and leader.progress[N2].eager
    assert net.core("n2").commit >= index
    assert net.core("n3").commit < index
    assert net.sent["AppendEntries"] - before == 3  # x to each follower, one notice
    assert leader.eager_notices == 1
    assert leader.notify_commit() == 1  # the delayed notice: n3 only


def test_a_follower_that_stops_asking_gets_the_delayed_notice_again():
    """Once its answers no longer say eager, the leader stops telling it at once."""
    net = Network(IDS)
    net.elect("n1")
    net.sync()
    net.core("n2").eager_commits = True
    net.propose("n1", b"x")
    net.stabilize()
    net.core("n2").eager_commits = False
    index, _ = net.propose("n1", b"y")  # its answer to y says it no longer asks
    net.stabilize()
    leader = net.core("n1")
    assert leader.commit >= index and not leader.progress[N2].eager
    assert all(net.core(n).commit < index for n in ("n2", "n3"))
    assert leader.eager_notices == 1  # x's only


def test_a_follower_that_starts_asking_is_told_a_commit_it_lacks():
    """A follower that starts asking after an entry committed (its first watch began
    meanwhile) is told the commit index on its first answer that says eager."""
    net = Network(IDS)
    net.elect("n1")
    net.sync()
    index, _ = net.propose("n1", b"x")
    net.stabilize()
    leader = net.core("n1")
    assert net.core("n2").commit < index and leader.progress[N2].commit_sent < index
    net.core("n2").eager_commits = True
    leader.step(
        HeartbeatResponse(N2, N1, leader.term, 0, index, leader.progress[N2].storage_id, eager=True)
    )
    net.node("n1").process()
    net.stabilize()
    assert net.core("n2").commit >= index and leader.eager_notices == 1
    assert net.core("n3").commit < index
