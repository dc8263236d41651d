"""ReadIndex rounds: one in flight at a time, shared by every read that waited for it."""

from __future__ import annotations

from leeky_twisted.core.messages import Heartbeat, HeartbeatResponse, NodeId, ReadState
from leeky_twisted.testing.scenarios import Network

IDS = ("n1", "n2", "n3")
H = 2  # the scenario harness's heartbeat ticks


def _leader_with_commit() -> Network:
    net = Network(IDS)
    net.elect("n1")
    net.propose("n1", b"x")
    net.stabilize()
    return net


def _beats(net: Network) -> list[Heartbeat]:
    return [m for m in net.queue if isinstance(m, Heartbeat)]


def _served(net: Network) -> list[object]:
    return [rs.context for rs in net.node("n1").read_states]


def test_reads_arriving_while_a_round_is_out_wait_and_share_the_next_round():
    """A read never rides a round sent before it; the reads that wait share one round."""
    net = _leader_with_commit()
    commit = net.core("n1").commit
    net.read("n1", "first")
    assert len(_beats(net)) == 2
    for ctx in ("second", "third"):
        net.read("n1", ctx)
    assert len(_beats(net)) == 2  # no second round while the first is out
    net.deliver(lambda m: isinstance(m, Heartbeat))
    net.deliver(lambda m: isinstance(m, HeartbeatResponse))
    assert _served(net) == ["first"]  # the first round was sent before the others came
    beats = _beats(net)
    assert len(beats) == 2 and {b.recipient for b in beats} == {NodeId("n2"), NodeId("n3")}
    net.deliver(lambda m: isinstance(m, Heartbeat))
    net.deliver(lambda m: isinstance(m, HeartbeatResponse))
    assert net.node("n1").read_states == [
        ReadState(commit, "first"),
        ReadState(commit, "second"),
        ReadState(commit, "third"),
    ]
    assert _beats(net) == []  # nothing waits: no further round


def test_one_answer_of_a_quorum_releases_the_next_round():
    """The round counts as answered once a quorum answered, not every follower."""
    net = _leader_with_commit()
    net.read("n1", "first")
    net.read("n1", "second")
    net.deliver(lambda m: isinstance(m, Heartbeat) and m.recipient == NodeId("n2"))
    net.drop(lambda m: isinstance(m, Heartbeat) and m.recipient == NodeId("n3"))
    net.deliver(lambda m: isinstance(m, HeartbeatResponse))
    assert _served(net) == ["first"]
    assert len(_beats(net)) == 2  # the next round went out for "second"


def test_a_lost_round_does_not_hold_reads_back_past_the_next_heartbeat():
    """When a round's answers are lost, the periodic heartbeat's round serves the waiting reads."""
    net = _leader_with_commit()
    net.read("n1", "first")
    net.read("n1", "second")
    net.drop(lambda m: isinstance(m, Heartbeat))  # the round in flight is lost
    assert _served(net) == []
    net.tick(H, nodes=["n1"])  # the heartbeat's round, sent after both reads
    assert _served(net) == ["first", "second"]


def test_a_new_leader_sends_its_first_read_round_at_once():
    """Rounds of an earlier leadership never answered do not block the next term's reads."""
    net = _leader_with_commit()
    net.read("n1", "lost")
    net.drop(lambda m: isinstance(m, Heartbeat))  # round out, never answered
    net.isolate("n1")
    net.tick(30, nodes=["n1"])  # check-quorum: n1 steps down, its read is dropped
    assert net.node("n1").dropped_reads == ["lost"]
    net.heal()
    leader = net.run_until_leader()
    if leader != NodeId("n1"):
        net.transfer(leader, "n1")
        net.stabilize()
    assert net.leader() == NodeId("n1")
    net.propose("n1", b"y")
    net.stabilize()
    net.read("n1", "again")
    assert len(_beats(net)) == 2
    net.stabilize()
    assert "again" in _served(net)
