"""A follower told that its leader's process is gone (a refused dial, see
``AMPPeerTransport.set_peer_gone``) campaigns once the leader has been silent for
a heartbeat interval and a tick, instead of a whole election timeout, on shipped
RaftNodes (leeky_twisted.testing.scenarios); a false report costs no term."""

from __future__ import annotations

import pytest

from leeky_twisted.core.messages import NodeId, Role
from leeky_twisted.testing.scenarios import Network

E = 10  # election ticks
H = 2  # heartbeat ticks
THREE = ("n1", "n2", "n3")
FIVE = ("n1", "n2", "n3", "n4", "n5")


def settled(voters=THREE, seed=0, **config) -> tuple[Network, str, int]:
    """Return a network whose leader has committed a command, that leader and its term."""
    net = Network(voters, seed=seed, **config)
    leader = net.run_until_leader()
    net.propose(leader, b"x=1")
    net.sync()
    return net, leader, net.core(leader).term


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("voters", [THREE, FIVE])
def test_survivors_told_the_leader_is_gone_elect_one_leader_within_a_few_ticks(seed, voters):
    """Every survivor hears of the crash at once: one election (term + 1, no split
    vote) and a new leader after a heartbeat interval and a tick (H + 1 ticks),
    against at least E without."""
    net, old, term = settled(voters, seed)
    net.crash(old)
    net.report_gone(old)
    net.tick(H)
    assert net.leader() is None  # the leader might still speak: wait a heartbeat interval
    net.tick(1)
    new = net.leader()
    assert new is not None and new != old
    assert net.core(new).term == term + 1
    assert net.leaders == {**{t: n for t, n in net.leaders.items() if t <= term}, term + 1: new}


@pytest.mark.parametrize("seed", range(4))
def test_without_the_report_the_survivors_wait_a_whole_election_timeout(seed):
    """The control: the same crash, unreported, leaves no leader for E - 1 ticks."""
    net, old, _ = settled(seed=seed)
    net.crash(old)
    net.tick(E - 1)
    assert net.leader() is None


def test_one_survivor_told_first_still_gets_elected_by_the_other_one_later():
    """Reports reach the survivors apart: the first one's pre-vote is ignored by the
    other (it still counts the leader alive) until that one is told too."""
    net, old, term = settled()
    a, b = sorted(n for n in THREE if n != old)
    net.crash(old)
    net.report_gone(old, to=[a])
    net.tick(1)
    assert net.leader() is None and net.core(b).term == term
    net.report_gone(old, to=[b])
    net.tick(2 * E)
    new = net.leader()
    assert new in (a, b) and net.core(new).term == term + 1


def test_a_false_report_about_a_live_leader_costs_no_term():
    """The leader is alive: the told follower's pre-vote fails and the term stays."""
    net, leader, term = settled()
    follower = sorted(n for n in THREE if n != leader)[0]
    net.report_gone(leader, to=[follower])
    net.tick(4 * E)
    assert net.leader() == leader
    assert {net.core(n).term for n in THREE} == {term}
    assert net.core(follower).leader_id == leader


def test_hearing_from_the_leader_after_a_false_report_restores_the_full_timeout():
    """A heartbeat within the heartbeat interval cancels the shortcut: the follower
    never forgets its leader, and waits a whole timeout when it stops hearing it."""
    net, leader, _term = settled()
    follower = sorted(n for n in THREE if n != leader)[0]
    net.report_gone(leader, to=[follower])
    net.tick(H)  # the follower ticks too; the leader's heartbeat reaches it
    assert net.core(follower).leader_id == leader
    net.tick(E - 1, nodes=[follower])  # the follower alone: it hears nothing more
    assert net.core(follower).role is Role.FOLLOWER
    assert net.core(follower).leader_id == leader


def test_a_told_follower_forgets_its_leader_only_after_a_heartbeat_interval():
    """Until then it still ignores other nodes' pre-votes (leader stickiness)."""
    net, old, _term = settled()
    a, _b = sorted(n for n in THREE if n != old)
    net.crash(old)
    net.report_gone(old, to=[a])
    net.tick(H, nodes=[a])
    assert net.core(a).leader_id == old
    net.tick(1, nodes=[a], settle=False)
    assert net.core(a).leader_id is None


def test_a_report_about_a_peer_that_is_not_the_leader_is_ignored():
    net, leader, _term = settled()
    a, b = sorted(n for n in THREE if n != leader)
    net.report_gone(b, to=[a])
    assert net.core(a).leader_id == leader
    net.crash(leader)
    net.tick(E - 1)
    assert net.leader() is None  # a still waits a whole timeout


@pytest.mark.parametrize("config", [{"pre_vote": False}, {"lease_read": True}])
def test_without_pre_vote_or_with_lease_reads_the_report_is_ignored(config):
    """Without PreVote a false report would cost a term; with lease reads a
    follower's silence is a promise to the leader: neither takes the shortcut."""
    net, old, _ = settled(**config)
    net.crash(old)
    net.report_gone(old)
    net.tick(E - 1)
    assert net.leader() is None


def test_without_check_quorum_a_false_report_costs_no_term():
    """PreVote alone does not make a follower that hears its leader refuse a
    pre-vote: only CheckQuorum's leader stickiness (§4.2.3) does. Without it a
    false report would let the told follower win a pre-vote from a peer that
    still hears the leader, take the next term and depose the live leader."""
    net, leader, term = settled(check_quorum=False)
    follower = sorted(n for n in THREE if n != leader)[0]
    net.report_gone(leader, to=[follower])
    net.tick(4 * E)
    assert net.leader() == leader
    assert {net.core(n).term for n in THREE} == {term}


def test_a_false_report_in_a_partial_partition_costs_no_term():
    """The leader reaches ``f`` but not ``g``; ``g`` has long stopped hearing it.
    ``f`` is told (falsely) that the leader is gone, but keeps hearing it within a
    heartbeat interval: it never forgets it, so neither campaigns with the other."""
    net, leader, term = settled()
    f, g = sorted(n for n in THREE if n != leader)
    net.blocked |= {(NodeId(leader), NodeId(g)), (NodeId(g), NodeId(leader))}
    net.tick(3 * E)
    assert net.leader() == leader and {net.core(n).term for n in THREE} == {term}
    for _ in range(5):  # reported again and again (a refusal at each redial)
        net.report_gone(leader, to=[f])
        net.tick(E)
    assert net.leader() == leader
    assert {net.core(n).term for n in THREE} == {term}
