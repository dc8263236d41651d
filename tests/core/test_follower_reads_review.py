"""Review of follower reads (b213bd1): cases the first tests did not cover."""

from __future__ import annotations

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_READ_REQUEST,
    ConfChange,
    ConfChangeOp,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    bounds_error,
)
from leeky_twisted.testing.scenarios import Network

N2, N3 = NodeId("n2"), NodeId("n3")


def queued(net: Network, kind: type) -> list:
    return [m for m in net.queue if isinstance(m, kind)]


def test_a_follower_batch_released_inside_the_flush_is_answered_not_handed_to_the_node():
    """The leader's read round may confirm inside _flush (its heartbeat broadcast
    confirms at once once it is the only voter), after the step that turns released
    follower batches into answers: the batch must still be answered, never reach the
    node as a ReadState of its own (the follower would then wait an election timeout,
    and the leader's count of follower batches would stay above zero for ever)."""
    net = Network(("n1", "n2", "n3"))
    net.elect("n1")
    net.propose("n1", b"x=1")
    net.sync()
    net.change("n1", ConfChange(ConfChangeOp.REMOVE, N3))
    net.stabilize()
    leader = net.core("n1")
    assert leader.configuration.voters == {"n1", "n2"}
    net.read("n2", "r")
    [ask] = queued(net, ReadIndexRequest)
    net.drop(lambda m: isinstance(m, ReadIndexRequest))
    # In one turn of n1: the request arrives, then n2's removal is proposed
    leader.step(ask)
    leader.propose_config_change(ConfChange(ConfChangeOp.REMOVE, N2))
    # the core's owner may take the Ready without asking has_ready() first
    rd = leader.ready()
    assert rd.read_states == ()  # nothing of n2's batch is n1's to serve
    sent = rd.messages + rd.messages_after_persist
    [answer] = [m for m in sent if isinstance(m, ReadIndexResponse)]
    assert answer.request == ask.request


def test_a_deposed_leader_never_answers_its_follower_with_a_stale_index():
    """§6.4 step 3: n1 and n2 are cut off from the majority, which elects n3 and
    commits a write. n2 still follows n1 (without CheckQuorum n1 never steps down):
    n1 must not answer n2's read before a majority confirms it still leads, or n2
    would serve a state without the write acknowledged before the read began."""
    net = Network(("n1", "n2", "n3", "n4", "n5"), check_quorum=False)
    net.elect("n1")
    net.propose("n1", b"x=1")
    net.sync()
    net.partition(["n1", "n2"], ["n3", "n4", "n5"])
    net.elect("n3")
    index, _ = net.propose("n3", b"x=2")
    net.stabilize()
    assert net.core("n3").commit >= index  # acknowledged to its client
    assert net.core("n2").leader_id == "n1"
    net.read("n2", "r")
    for _ in range(12):
        net.tick(1, nodes=["n1", "n2"])
    assert net.node("n2").read_states == []
    assert net.node("n2").dropped_reads == ["r"]  # after an election timeout: forwarded


def test_a_leader_with_a_lease_answers_a_follower_without_a_new_round():
    """§6.4.1: within its lease the leader answers at once, with its commit index."""
    net = Network(("n1", "n2", "n3"), lease_read=True)
    lead = net.run_until_leader()
    other = next(n for n in ("n1", "n2", "n3") if n != lead)
    net.propose(lead, b"x=1")
    net.sync()
    net.tick(2)  # a heartbeat round, acknowledged: the leader holds a lease
    net.read(lead, "probe")
    assert [rs.context for rs in net.node(lead).read_states] == ["probe"]
    net.read(other, "r")
    net.deliver(lambda m: isinstance(m, ReadIndexRequest))
    assert not [m for m in net.queue if type(m).__name__ == "Heartbeat"]
    [answer] = queued(net, ReadIndexResponse)
    assert answer.index == net.core(lead).commit
    net.stabilize()
    assert [rs.context for rs in net.node(other).read_states] == ["r"]


def test_read_index_messages_out_of_bounds_are_refused():
    """A batch number is in [1, 2^63 - 1] and an index at most MAX_INDEX: the
    transport drops anything else before the core sees it."""
    a, b = NodeId("a"), NodeId("b")
    assert bounds_error(ReadIndexRequest(a, b, 1, 1)) is None
    assert bounds_error(ReadIndexRequest(a, b, 1, MAX_READ_REQUEST)) is None
    assert bounds_error(ReadIndexRequest(a, b, 1, 0)) is not None
    assert bounds_error(ReadIndexRequest(a, b, 1, MAX_READ_REQUEST + 1)) is not None
    assert bounds_error(ReadIndexResponse(a, b, 1, 0, 5)) is not None
    assert bounds_error(ReadIndexResponse(a, b, 1, 5, MAX_INDEX)) is None
    assert bounds_error(ReadIndexResponse(a, b, 1, 5, MAX_INDEX + 1)) is not None
