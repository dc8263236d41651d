"""Linearizable reads served by followers (§6.4): a follower asks its leader for a
read index (one ReadIndexRequest per batch), the leader confirms its leadership
with a heartbeat round and answers its commit index, and the follower serves once
it has applied that far. Shipped RaftNodes on the step-by-step harness."""

from __future__ import annotations

import pytest

from leeky_twisted.core.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Role,
)
from leeky_twisted.core.raft import NotLeaderError
from leeky_twisted.testing.scenarios import Network

IDS = ("n1", "n2", "n3")
N1 = NodeId("n1")
E = 10


def settled(**config) -> Network:
    """n1 leads and has committed an entry of its term, known to everyone."""
    net = Network(IDS, **config)
    net.elect("n1")
    net.propose("n1", b"x=1")
    net.sync()
    return net


def queued(net: Network, kind: type) -> list:
    return [m for m in net.queue if isinstance(m, kind)]


def test_a_follower_read_is_released_only_after_the_leaders_heartbeat_quorum():
    net = settled()
    commit = net.core("n1").commit
    net.read("n2", "r")
    [ask] = queued(net, ReadIndexRequest)
    assert (ask.sender, ask.recipient) == ("n2", "n1")
    net.deliver(lambda m: isinstance(m, ReadIndexRequest))
    assert queued(net, ReadIndexResponse) == []  # not before a round confirms n1 still leads
    assert len(queued(net, Heartbeat)) == 2
    net.deliver(lambda m: isinstance(m, Heartbeat))
    net.deliver(lambda m: isinstance(m, HeartbeatResponse))
    [answer] = queued(net, ReadIndexResponse)
    assert answer.request == ask.request and answer.index == commit
    net.deliver(lambda m: isinstance(m, ReadIndexResponse))
    assert net.node("n2").read_states == [ReadState(commit, "r")]
    assert net.node("n1").read_states == []  # the leader serves nothing of it itself


def test_the_read_index_covers_a_write_the_follower_has_not_seen_committed():
    """The follower lags (it never heard the commit): its read index is the leader's
    commit, so the node waits until it has applied the write before serving."""
    net = settled()
    net.propose("n1", b"x=2")
    # n3 stores the entry, n1 commits it; n2 gets nothing of it
    net.deliver(lambda m: isinstance(m, AppendEntries) and m.recipient == "n3")
    net.deliver(lambda m: m.recipient == "n1")
    write = net.core("n1").commit
    assert net.core("n2").commit < write
    net.drop(lambda m: m.recipient == "n2")
    net.read("n2", "r")
    for _ in range(6):
        net.deliver(lambda m: not isinstance(m, AppendEntries))
    assert net.node("n2").read_states == [ReadState(write, "r")]


def test_one_request_carries_every_read_of_a_batch():
    net = settled()
    core = net.core("n2")
    for i in range(5):
        core.read_index(f"r{i}")
    net.node("n2").process()
    assert len(queued(net, ReadIndexRequest)) == 1
    net.stabilize()
    assert [rs.context for rs in net.node("n2").read_states] == [f"r{i}" for i in range(5)]


def test_a_follower_that_knows_no_leader_refuses():
    net = Network(IDS)
    with pytest.raises(NotLeaderError) as info:
        net.read("n2", "r")
    assert info.value.leader is None


def test_a_lost_request_is_dropped_after_an_election_timeout():
    net = settled()
    net.read("n2", "r")
    net.drop(lambda m: isinstance(m, ReadIndexRequest))
    net.tick(E - 1)
    assert net.node("n2").dropped_reads == []
    net.tick(1)
    assert net.node("n2").dropped_reads == ["r"]
    assert net.node("n2").read_states == []


def test_a_new_term_drops_the_reads_asked_of_the_old_leader():
    """The answer of the old leader may never come: the reads fail (the client retries)."""
    net = settled()
    net.read("n2", "r")
    net.crash("n1")
    net.run_until_leader()
    assert net.node("n2").dropped_reads == ["r"]
    assert net.node("n2").read_states == []


def test_a_leader_gone_report_drops_the_reads_asked_of_it_once_the_leader_stays_silent():
    net = settled()
    net.read("n2", "r")
    net.crash("n1")
    net.report_gone("n1", to=["n2"])
    assert net.node("n2").dropped_reads == []  # the report may be false: wait for silence
    net.tick(3, nodes=["n2"], settle=False)
    assert net.node("n2").dropped_reads == ["r"]


def test_an_answer_to_another_request_serves_nothing():
    """A request number the follower did not send (an earlier run's) matches nothing."""
    net = settled()
    net.read("n2", "r")
    [ask] = queued(net, ReadIndexRequest)
    core = net.core("n2")
    core.step(ReadIndexResponse(N1, NodeId("n2"), core.term, ask.request + 1, 0))
    net.node("n2").process()
    assert net.node("n2").read_states == []
    net.stabilize()
    assert [rs.context for rs in net.node("n2").read_states] == ["r"]


def test_an_answer_from_a_node_that_is_not_the_followers_leader_serves_nothing():
    net = settled()
    net.read("n2", "r")
    [ask] = queued(net, ReadIndexRequest)
    core = net.core("n2")
    core.step(ReadIndexResponse(NodeId("n3"), NodeId("n2"), core.term, ask.request, 0))
    net.node("n2").process()
    assert net.node("n2").read_states == []


def test_a_leader_that_steps_down_drops_only_its_own_reads():
    """A follower's batch is not the leader's to fail: the follower drops it itself."""
    net = settled()
    net.read("n1", "mine")
    net.read("n2", "theirs")
    net.deliver(lambda m: isinstance(m, ReadIndexRequest))
    net.drop(lambda m: isinstance(m, Heartbeat))
    net.isolate("n1")
    net.tick(2 * E, nodes=["n1"])
    assert net.core("n1").role is not Role.LEADER
    assert net.node("n1").dropped_reads == ["mine"]


def test_a_new_leader_answers_a_follower_only_after_its_first_commit():
    """Its commit index may lag the old leader's until its no-op commits (§6.4)."""
    net = settled()
    net.crash("n1")
    net.report_gone("n1")
    net.tick(3, settle=False)  # n2 (ranked first) asks for pre-votes
    for _ in range(4):  # pre-vote, vote: n2 leads, its no-op not yet replicated
        net.deliver(lambda m: not isinstance(m, AppendEntries))
    assert net.core("n2").role is Role.LEADER
    noop = net.core("n2").log.last_index()
    assert net.core("n2").commit < noop
    net.deliver(lambda m: isinstance(m, AppendEntries) and m.recipient == "n3")
    held = net.drop(lambda m: isinstance(m, AppendEntriesResponse))  # n3 knows n2 leads
    assert held and net.core("n2").commit < noop
    net.read("n3", "r")
    net.deliver(lambda m: isinstance(m, ReadIndexRequest))
    for _ in range(4):
        net.deliver(lambda m: isinstance(m, (Heartbeat, HeartbeatResponse)))
    assert queued(net, ReadIndexResponse) == []  # held until the no-op commits
    net.tick(4)
    [rs] = net.node("n3").read_states
    assert rs.context == "r" and rs.index >= noop


def test_without_follower_reads_a_follower_refuses():
    net = settled(follower_reads=False)
    with pytest.raises(NotLeaderError) as info:
        net.read("n2", "r")
    assert info.value.leader == N1


def test_the_simulation_catches_a_leader_that_answers_followers_without_a_round(monkeypatch):
    """The simulated world's read check can fail for this: a leader that answers a
    follower's request at once with its commit index (no round, no first commit of
    its term) lets a follower of a deposed leader serve a stale read (seed 640030,
    one of the seeds run without CheckQuorum)."""
    from leeky_twisted.core.raft import RaftCore
    from leeky_twisted.testing.simulation import SafetyViolation, Simulation

    honest = RaftCore._step_leader

    def hasty(self, m):
        if isinstance(m, ReadIndexRequest) and m.sender in self.progress:
            self._send(ReadIndexResponse(self.id, m.sender, self.term, m.request, self.commit))
            return
        honest(self, m)

    assert Simulation(640030, ticks=300).run().committed > 0
    monkeypatch.setattr(RaftCore, "_step_leader", hasty)
    with pytest.raises(SafetyViolation, match="served a read from the state at"):
        Simulation(640030, ticks=300).run()
