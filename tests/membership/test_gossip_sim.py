"""The gossip protocol on a simulated, lossy network: speed, accuracy and recovery.

Figures are in protocol periods (10 ticks each by default). Run
``python tests/membership/gossip_sim.py`` for the full table over more seeds.
"""

from __future__ import annotations

import math
import statistics

import pytest
from gossip_sim import (
    CLUSTER,
    SimNetwork,
    address_of,
    build_cluster,
    failure_detection,
    false_positives,
    join_dissemination,
)

from leeky_twisted.core.messages import NodeId
from leeky_twisted.membership import codec
from leeky_twisted.membership.codec import Packet, PacketKind, Record
from leeky_twisted.membership.gossip_core import Member, MemberState

SEEDS = range(5)


def test_join_dissemination_grows_like_log_n() -> None:
    """Periods until all members know of a join stay within log2(N) + 1 on average."""
    means = {}
    for n in (4, 8, 16, 32):
        runs = [join_dissemination(n, seed) for seed in SEEDS]
        means[n] = statistics.mean(runs)
        assert means[n] <= math.log2(n) + 1, (n, runs)
        assert max(runs) <= 2 * math.log2(n) + 3, (n, runs)
    # an 8-fold bigger cluster costs a few periods more, not 8 times as many
    assert means[32] - means[4] <= 1.5 * (math.log2(32) - math.log2(4)), means


def test_join_dissemination_under_10_percent_loss() -> None:
    """With 10% of datagrams lost, a join still reaches 16 members in about log2(N) periods."""
    runs = [join_dissemination(16, seed, loss=0.1) for seed in SEEDS]
    assert statistics.mean(runs) <= math.log2(16) + 2, runs


def test_crashed_member_is_suspected_then_declared_dead_by_all() -> None:
    """A crashed member is suspected within a few periods and DEAD everywhere after the timeout."""
    runs = [failure_detection(16, seed) for seed in SEEDS]
    first = [r[0] for r in runs]
    dead = [r[1] for r in runs]
    min_timeout = 4 * math.log10(16)  # suspicion_mult x log10(N) periods
    assert statistics.mean(first) <= 4, first
    assert all(d >= min_timeout for d in dead), dead
    assert statistics.mean(dead) <= 12 and max(dead) <= 20, dead


def test_crash_is_detected_under_loss() -> None:
    """Under 10% loss a crashed member is still declared dead by all, in bounded time."""
    _, dead = failure_detection(16, seed=7, loss=0.1)
    assert dead <= 25


@pytest.mark.parametrize(("loss", "bound"), [(0.1, 0.001), (0.3, 0.005)])
def test_false_positives_stay_rare_under_loss(loss: float, bound: float) -> None:
    """In a healthy cluster, suspicions under loss are refuted; DEAD verdicts stay under the bound.

    Measured (seed 1, N=16, 300 periods): no DEAD verdict at 10% or at 30% loss,
    against ~0.8% (10%) and ~22% (30%) of probes timing out.
    """
    fp = false_positives(16, loss, 300, seed=1)
    assert fp["probe_timeouts"] > 0 and fp["refutations"] > 0  # the mechanism was exercised
    assert fp["dead_per_probe"] <= bound, fp


def test_brief_isolation_ends_in_refutation_not_death() -> None:
    """A member cut off for two periods is suspected, refutes, and is never declared dead."""
    net = build_cluster(8, seed=3)
    verdicts: list[Member] = []
    for core in net.live():
        core.subscribe(lambda m: verdicts.append(m) if m.state is MemberState.DEAD else None)
    for other in range(7):
        net.cut(7, other)
    net.run(20)
    net.heal()
    assert net.run_until(net.converged, 1000) is not None
    assert verdicts == []
    assert net.core(7).incarnation >= 1  # it had to refute
    assert net.core(7).counters["refutations"] >= 1


def test_partition_heals_through_reconnect_attempts() -> None:
    """After both halves declared each other dead, push-pull to dead members reunites them."""
    net = build_cluster(8, seed=4, push_pull_ticks=100)
    for a in range(4):
        for b in range(4, 8):
            net.cut(a, b)
    net.run(400)
    assert net.all_see("n6", MemberState.DEAD, [net.core(i) for i in range(4)])
    net.heal()
    assert net.run_until(net.converged, 3000) is not None


def test_restarted_member_rejoins_with_a_higher_incarnation() -> None:
    """A member restarted with no memory learns it was dead, refutes, and is alive again."""
    net = build_cluster(6, seed=5)
    net.crash(5)
    assert net.run_until(lambda: net.all_see("n5", MemberState.DEAD), 2000) is not None
    dead_at = net.core(0).members()[NodeId("n5")].incarnation
    fresh = net.restart(5)
    fresh.join([address_of(2)])
    net.flush()
    assert net.run_until(lambda: net.all_see("n5", MemberState.ALIVE), 500) is not None
    assert all(c.members()[NodeId("n5")].incarnation > dead_at for c in net.live())


def test_lossy_delayed_network_converges() -> None:
    """With 20% loss and up to 2 ticks of delay, 10 joiners all learn of each other."""
    net = SimNetwork(seed=6, loss=0.2, max_delay=2)
    net.add(0)
    for i in range(1, 10):
        net.add(i).join([address_of(0)])
    net.flush()

    def everyone_known() -> bool:
        return all(len(c.members()) == 10 for c in net.live())

    assert net.run_until(everyone_known, 1000) is not None
    net.loss = 0.0  # suspicions raised under loss are all refuted once it stops
    assert net.run_until(net.converged, 1000) is not None


@pytest.mark.parametrize("forged", [2**31 - 1, 2**31 + 5, 2**32 - 1])
def test_a_member_refutes_a_forged_left_even_after_a_restart(forged: int) -> None:
    """Issue 19 finding 2: "n5 LEFT" at any incarnation, signed as n5 itself, is undone."""
    net = build_cluster(6, seed=5)
    rec = Record(NodeId("n5"), forged, MemberState.LEFT, address_of(5))
    data = codec.encode(Packet(PacketKind.SYNC, NodeId("n5"), records=(rec,)), CLUSTER)
    for i in range(5):
        net.core(i).receive(("6.6.6.6", 6), data)
    net.crash(5)  # and n5 restarts with no memory of anything
    fresh = net.restart(5)
    fresh.join([address_of(2)])
    net.flush()
    assert net.run_until(lambda: net.all_see("n5", MemberState.ALIVE), 500) is not None
