"""The simulation reads as production nodes do, in some seeds: a sender's messages
that arrived together form one read, after which the node's ``process_received``
runs (the peer inbox's ``after_read``), so that path is under the safety checks."""

from __future__ import annotations

import random
from typing import Any

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import NodeId, RequestVote
from leeky_twisted.server.node import NodeSettings
from leeky_twisted.testing.hosts import NodeHost, SimReactor
from leeky_twisted.testing.simulation import Simulation


def started_host(**options: Any) -> tuple[SimReactor, NodeHost]:
    """A started host of node n1, the one voter of its cluster, on a SimReactor."""
    reactor = SimReactor()
    host = NodeHost(
        reactor,
        NodeId("n1"),
        lambda n: CoreConfig(n, election_ticks=10, heartbeat_ticks=2),
        lambda n: NodeSettings(tick_interval=1.0, bootstrap=[("n1", b"")]),
        random.Random(1),
        lambda host, message: None,
        **options,
    )
    assert host.start() and host.node is not None
    return reactor, host


def recording_host(batch_reads: bool) -> tuple[SimReactor, NodeHost, list[object]]:
    """A started node whose received messages and ends of reads are recorded in order."""
    reactor, host = started_host(batch_reads=batch_reads)
    node = host.node
    assert node is not None
    seen: list[object] = []
    node.receive = seen.append  # type: ignore[method-assign]
    node.transport.after_read = lambda: seen.append("end of read")  # type: ignore[attr-defined]
    return reactor, host, seen


def vote(sender: str, term: int) -> RequestVote:
    return RequestVote(NodeId(sender), NodeId("n1"), term, 0, 0)


def test_a_senders_messages_that_arrive_together_are_one_read_then_process_received():
    reactor, host, seen = recording_host(batch_reads=True)
    a1, b1, a2 = vote("n2", 1), vote("n3", 1), vote("n2", 2)
    for m in (a1, b1, a2):
        host.deliver(m)
    reactor.run_until(reactor.now)
    assert seen == [a1, a2, "end of read", b1, "end of read"]
    assert host.reads == 2


def test_messages_that_arrive_while_the_reactor_is_stalled_are_read_together():
    reactor, host, seen = recording_host(batch_reads=True)
    host.stall(5.0)
    later = []
    for term in range(1, 4):
        m = vote("n2", term)
        later.append(m)
        host.deliver(m)
        reactor.run_until(reactor.now + 1.0)
    assert seen == []
    reactor.run_until(reactor.now + 5.0)
    assert seen == [*later, "end of read"]


def test_without_batched_reads_each_message_is_read_alone_and_nothing_runs_after():
    reactor, host, seen = recording_host(batch_reads=False)
    a1, a2 = vote("n2", 1), vote("n2", 2)
    host.deliver(a1)
    host.deliver(a2)
    reactor.run_until(reactor.now)
    assert seen == [a1, a2] and host.reads == 0


def test_the_shipped_node_asks_for_the_end_of_each_read():
    """RaftNode registers ``process_received`` with the transport, as with the peer inbox."""
    _, host = started_host()
    assert host.node is not None
    assert host.node.transport.after_read == host.node.process_received  # type: ignore[attr-defined]


def test_about_half_the_seeds_batch_reads():
    """Drawn from a generator of its own (``{seed}/reads``): the seed's own draws, and
    so the runs of the seeds without batched reads, are what they were before."""
    sims = [Simulation(seed, ticks=1) for seed in range(100)]
    assert 30 <= sum(s.batch_reads for s in sims) <= 70
    for s in sims:
        assert all(h.batch_reads == s.batch_reads for h in s.hosts.values())


def test_a_batched_seed_processes_reads_in_the_same_turn_and_stays_safe():
    """A seed with batched reads runs ``process_received`` after its reads (each
    handling the Ready the read made due) and passes every check."""
    seed = next(s for s in range(100) if Simulation(s, ticks=1).batch_reads)
    sim = Simulation(seed, ticks=120)
    sim.run()
    assert sum(h.reads for h in sim.hosts.values()) > 100


def test_a_seed_runs_as_drawn_unless_told_and_its_replay_says_so():
    drawn = Simulation(8, ticks=1)
    assert drawn.batch_reads and "batch-reads" not in drawn.replay_command()
    forced = Simulation(8, ticks=1, batch_reads=False)
    assert not forced.batch_reads
    assert not any(h.batch_reads for h in forced.hosts.values())
    assert "--no-batch-reads" in forced.replay_command()
    assert Simulation(43, ticks=1, batch_reads=True).replay_command().endswith("--batch-reads -v")
