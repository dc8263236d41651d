"""The reconciler: one safe configuration change at a time, from gossip and replication."""

from __future__ import annotations

import json

import pytest

from leeky_twisted.core.messages import ConfChange, ConfChangeOp, Configuration, NodeId
from leeky_twisted.membership.gossip_core import Member, MemberState
from leeky_twisted.membership.reconciler import (
    Decision,
    MemberHealth,
    ReconcilerSettings,
    health_from_gossip,
    next_change,
)

ALIVE, SUSPECT, DEAD, LEFT = (
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)
NOW = 1000.0
SETTINGS = ReconcilerSettings(
    max_lag=10, stabilization_time=10.0, dead_grace=30.0, min_voters=3, max_voters=5
)


def ids(*names: str) -> frozenset[NodeId]:
    """Return node ids."""
    return frozenset(NodeId(n) for n in names)


def health(
    state: MemberState = ALIVE, age: float = 100.0, peer: str | None = "h:1"
) -> MemberHealth:
    """Return a member that has been in ``state`` for ``age`` seconds."""
    meta = {"peer": peer, "client": "h:2"} if peer else {}
    return MemberHealth(state, NOW - age, meta)


def decide(
    voters: str,
    learners: str = "",
    members: dict[str, MemberHealth] | None = None,
    match: dict[str, int] | None = None,
    last_index: int = 100,
    settings: ReconcilerSettings = SETTINGS,
    pending: bool = False,
    leader: str = "a",
    silence: dict[str, float] | None = None,
) -> Decision | None:
    """Run the reconciler; every voter and learner is alive unless ``members`` says otherwise.

    Unless ``silence`` says otherwise, the leader has just heard from every
    member gossip has alive or suspect, and not since gossip's verdict from
    the dead and left.
    """
    config = Configuration(ids(*voters), ids(*learners))
    view = {NodeId(n): health() for n in voters + learners}
    view.update({NodeId(k): v for k, v in (members or {}).items()})
    matches = {NodeId(n): last_index for n in voters + learners}
    matches.update({NodeId(k): v for k, v in (match or {}).items()})
    quiet = {
        nid: (NOW - h.since if h.state in (DEAD, LEFT) else 0.0)
        for nid, h in view.items()
        if nid in config.members()
    }
    quiet.update({NodeId(k): v for k, v in (silence or {}).items()})
    return next_change(
        NodeId(leader),
        config,
        view,
        matches,
        last_index,
        NOW,
        settings,
        change_pending=pending,
        silence=quiet,
    )


def change(d: Decision | None) -> tuple[ConfChangeOp, str] | None:
    """Return (op, node) of a decision."""
    return None if d is None else (d.change.op, d.change.node_id)


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_voters": 0},
        {"min_voters": 4, "max_voters": 3},
        {"max_lag": -1},
        {"stabilization_time": -1.0},
        {"dead_grace": -1.0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    """ReconcilerSettings validates itself."""
    with pytest.raises(ValueError):
        ReconcilerSettings(**kwargs)  # type: ignore[arg-type]


def test_defaults() -> None:
    """The documented defaults."""
    s = ReconcilerSettings()
    assert (s.max_lag, s.stabilization_time, s.dead_grace, s.min_voters, s.max_voters) == (
        250,
        10.0,
        30.0,
        3,
        5,
    )


# ------------------------------------------------------------------ nothing to do


def test_a_healthy_full_cluster_needs_nothing() -> None:
    """All voters alive and no newcomers: no change."""
    assert decide("abc") is None


def test_nothing_while_a_change_is_pending() -> None:
    """One change at a time: nothing while a configuration entry is uncommitted."""
    assert decide("abc", members={"d": health()}, pending=True) is None


# ------------------------------------------------------------------ adding learners


def test_discovered_alive_node_is_added_as_learner_with_its_addresses() -> None:
    """A gossip member missing from the configuration joins as a learner; context is JSON."""
    d = decide("abc", members={"d": health(peer="10.0.0.4:7000")})
    assert d is not None
    assert change(d) == (ConfChangeOp.ADD_LEARNER, "d")
    assert json.loads(d.change.context) == {"client": "h:2", "peer": "10.0.0.4:7000"}
    Configuration(ids("a", "b", "c")).apply(d.change)  # a valid change


def test_node_without_a_peer_address_is_not_added() -> None:
    """A member that advertises no Raft address cannot replicate: it is left out."""
    assert decide("abc", members={"d": health(peer=None)}) is None


@pytest.mark.parametrize("state", [SUSPECT, DEAD, LEFT])
def test_only_alive_nodes_are_added(state: MemberState) -> None:
    """Suspect, dead and departed members are never added."""
    assert decide("abc", members={"d": health(state)}) is None


def test_the_longest_known_newcomer_is_added_first() -> None:
    """Among several newcomers, the one alive longest goes first (ties by id)."""
    d = decide("abc", members={"e": health(age=50), "d": health(age=20), "f": health(age=50)})
    assert change(d) == (ConfChangeOp.ADD_LEARNER, "e")


# ------------------------------------------------------------------ promotion


def test_caught_up_stable_learner_is_promoted() -> None:
    """A learner alive for the stabilization time and within max_lag becomes a voter."""
    d = decide("abc", "d", match={"d": 90})
    assert change(d) == (ConfChangeOp.ADD_VOTER, "d")


def test_lagging_learner_is_not_promoted() -> None:
    """A learner more than max_lag entries behind stays a learner."""
    assert decide("abc", "d", match={"d": 89}) is None


def test_learner_not_yet_stable_is_not_promoted() -> None:
    """A learner alive for less than the stabilization time stays a learner."""
    assert decide("abc", "d", members={"d": health(age=9.9)}) is None
    assert change(decide("abc", "d", members={"d": health(age=10.0)})) == (
        ConfChangeOp.ADD_VOTER,
        "d",
    )


@pytest.mark.parametrize("state", [SUSPECT, DEAD, LEFT])
def test_unhealthy_learner_is_not_promoted(state: MemberState) -> None:
    """Only an ALIVE learner is promoted."""
    d = decide("abc", "d", members={"d": health(state, age=5)})
    assert d is None


def test_learner_unknown_to_gossip_is_not_promoted() -> None:
    """A learner gossip has never seen is not promoted (and not removed)."""
    config = Configuration(ids("a", "b", "c"), ids("d"))
    view = {NodeId(n): health() for n in "abc"}
    assert next_change(NodeId("a"), config, view, {NodeId("d"): 100}, 100, NOW, SETTINGS) is None


def test_max_voters_is_respected() -> None:
    """With max_voters voters, ready learners stay learners."""
    assert decide("abcde", "f") is None
    assert change(decide("abcd", "f")) == (ConfChangeOp.ADD_VOTER, "f")


def test_most_caught_up_learner_is_promoted_first() -> None:
    """Among ready learners the one with the highest match index goes first."""
    d = decide("abc", "de", match={"d": 95, "e": 99})
    assert change(d) == (ConfChangeOp.ADD_VOTER, "e")


def test_promotion_comes_before_adding_newcomers() -> None:
    """A ready learner is promoted before a newcomer is added."""
    d = decide("abc", "d", members={"e": health()})
    assert change(d) == (ConfChangeOp.ADD_VOTER, "d")


# ------------------------------------------------------------------ removing dead voters


def test_dead_voter_is_removed_after_the_grace_period() -> None:
    """A voter dead for dead_grace or more is removed while the rest stays healthy."""
    members = {"e": health(DEAD, age=30.0)}
    assert change(decide("abcde", members=members)) == (ConfChangeOp.REMOVE, "e")


def test_dead_voter_is_kept_during_the_grace_period() -> None:
    """A voter dead for less than dead_grace is not removed yet."""
    assert decide("abcde", members={"e": health(DEAD, age=29.9)}) is None


def test_left_voter_is_removed_after_the_grace_period() -> None:
    """A voter that left gracefully is removed like a dead one."""
    assert change(decide("abcd", members={"d": health(LEFT, age=31)})) == (
        ConfChangeOp.REMOVE,
        "d",
    )


def test_suspect_voter_is_never_removed() -> None:
    """Suspicion alone never removes a voter, however long it lasts."""
    assert decide("abcde", members={"e": health(SUSPECT, age=10_000)}) is None


def test_voter_unknown_to_gossip_is_never_removed() -> None:
    """A voter missing from the gossip view is not taken for dead."""
    config = Configuration(ids("a", "b", "c", "d"))
    view = {NodeId(n): health() for n in "abc"}
    matches = {NodeId(n): 100 for n in "abcd"}
    assert next_change(NodeId("a"), config, view, matches, 100, NOW, SETTINGS) is None


def test_never_below_min_voters() -> None:
    """With min_voters voters, a dead voter stays in the configuration."""
    assert decide("abc", members={"c": health(DEAD, age=1000)}) is None
    relaxed = ReconcilerSettings(min_voters=2, max_voters=5, dead_grace=30.0)
    d = decide("abc", members={"c": health(DEAD, age=1000)}, settings=relaxed)
    assert change(d) == (ConfChangeOp.REMOVE, "c")


def test_no_removal_when_the_remaining_quorum_would_be_unhealthy() -> None:
    """Two of five dead: removing one leaves 4 voters with only 3 alive (healthy); 3 of 5: not."""
    two_dead = {"d": health(DEAD, age=100), "e": health(DEAD, age=50)}
    assert change(decide("abcde", members=two_dead)) == (ConfChangeOp.REMOVE, "d")
    three_dead = {**two_dead, "c": health(DEAD, age=70)}
    assert decide("abcde", members=three_dead) is None


def test_suspect_and_unknown_voters_do_not_count_as_healthy() -> None:
    """The health check counts only ALIVE voters (and the leader)."""
    members = {"e": health(DEAD, age=100), "c": health(SUSPECT), "d": health(SUSPECT)}
    # rest = a b c d: alive a, b only -> 2 of 4 is not a majority
    assert decide("abcde", members=members) is None


def test_the_leader_is_never_removed() -> None:
    """Even reported dead by gossip, the leader itself is never removed."""
    assert decide("abcde", members={"a": health(DEAD, age=1000)}, leader="a") is None


def test_the_leader_counts_as_alive_in_the_health_check() -> None:
    """The leader is alive by definition even if gossip is stale about it."""
    members = {"a": health(SUSPECT), "d": health(DEAD, age=100)}
    # rest = a b c: a (leader), b, c alive
    assert change(decide("abcd", members=members)) == (ConfChangeOp.REMOVE, "d")


def test_longest_dead_voter_goes_first() -> None:
    """Among removable voters, the one dead the longest is removed first."""
    members = {"d": health(DEAD, age=40), "e": health(DEAD, age=400)}
    assert change(decide("abcdef", members=members)) == (ConfChangeOp.REMOVE, "e")


def test_dead_voter_removal_comes_before_promotion() -> None:
    """At max_voters with a dead voter: remove it first, then there is room to promote."""
    members = {"e": health(DEAD, age=100)}
    d = decide("abcde", "f", members=members)
    assert change(d) == (ConfChangeOp.REMOVE, "e")
    d = decide("abcd", "f", members=members)
    assert change(d) == (ConfChangeOp.ADD_VOTER, "f")


def test_at_min_voters_a_learner_is_promoted_before_the_dead_voter_goes() -> None:
    """Three voters, one dead, one ready learner: promote first, then remove."""
    members = {"c": health(DEAD, age=100)}
    assert change(decide("abc", "d", members=members)) == (ConfChangeOp.ADD_VOTER, "d")
    assert change(decide("abcd", members=members)) == (ConfChangeOp.REMOVE, "c")


# ------------------------------------------------------------------ removing dead learners


def test_dead_learner_is_removed_after_the_grace_period() -> None:
    """A learner dead for dead_grace is removed, regardless of voter counts."""
    assert change(decide("abc", "d", members={"d": health(DEAD, age=30)})) == (
        ConfChangeOp.REMOVE,
        "d",
    )
    assert decide("abc", "d", members={"d": health(DEAD, age=29)}) is None


def test_dead_learner_removal_comes_before_adding_newcomers() -> None:
    """Cleaning up comes before growing."""
    members = {"d": health(DEAD, age=100), "e": health()}
    assert change(decide("abc", "d", members=members)) == (ConfChangeOp.REMOVE, "d")


# ------------------------------------------------------------------ a whole growth


def test_growing_from_one_to_five_voters_one_change_at_a_time() -> None:
    """Applying each decision in turn grows a bootstrap node to five voters, then stops."""
    config = Configuration(ids("a"))
    view = {NodeId(n): health() for n in "abcdefg"}
    matches = {NodeId(n): 100 for n in "abcdefg"}
    steps = []
    settings = ReconcilerSettings(max_lag=10, min_voters=3, max_voters=5)
    heard = dict.fromkeys(view, 0.0)
    for _ in range(30):
        d = next_change(NodeId("a"), config, view, matches, 100, NOW, settings, silence=heard)
        if d is None:
            break
        steps.append(change(d))
        config = config.apply(d.change)
    assert config.voters == ids(*"abcde")
    assert config.learners == ids("f", "g")
    # each newcomer is promoted as soon as it is a learner, until max_voters
    assert steps[:2] == [(ConfChangeOp.ADD_LEARNER, "b"), (ConfChangeOp.ADD_VOTER, "b")]


def test_health_from_gossip_converts_ticks_to_seconds() -> None:
    """Gossip members become MemberHealth with since in seconds."""
    m = Member(NodeId("d"), ("h", 1), DEAD, 3, {"peer": "h:7"}, 40)
    h = health_from_gossip({NodeId("d"): m}, 0.1)[NodeId("d")]
    assert h == MemberHealth(DEAD, 4.0, {"peer": "h:7"})
    assert h.peer_address == "h:7"


def test_decision_explains_itself() -> None:
    """Each decision carries a reason for the log."""
    d = decide("abcde", members={"e": health(DEAD, age=42)})
    assert d is not None and "e" in d.reason and "42" in d.reason
    assert isinstance(d.change, ConfChange)


# ------------------------------------------------------------------ the leader's own evidence


@pytest.mark.parametrize("state", [DEAD, LEFT])
def test_gossip_alone_never_removes_a_voter_the_leader_hears(state: MemberState) -> None:
    """Issue 19 finding 2: "e left/dead" for ages, but e answers the leader: e stays."""
    members = {"e": health(state, age=10_000)}
    assert decide("abcde", members=members, silence={"e": 0.0}) is None
    assert decide("abcde", members=members, silence={"e": 29.9}) is None
    assert change(decide("abcde", members=members, silence={"e": 30.0})) == (
        ConfChangeOp.REMOVE,
        "e",
    )


def test_gossip_alone_never_removes_a_learner_the_leader_hears() -> None:
    """A learner reported dead but heard by the leader stays."""
    members = {"d": health(DEAD, age=10_000)}
    assert decide("abc", "d", members=members, silence={"d": 1.0}) is None


def test_silence_without_a_gossip_verdict_removes_nobody() -> None:
    """The leader's evidence is needed, not sufficient: gossip must report the member gone."""
    assert decide("abcde", silence={"e": 10_000.0}) is None


def test_no_evidence_means_no_removal_and_no_promotion() -> None:
    """Without silence figures the reconciler removes and promotes nobody."""
    config = Configuration(ids(*"abcde"), ids("f"))
    view = {NodeId(n): health() for n in "abcdf"}
    view[NodeId("e")] = health(DEAD, age=1000)
    matches = {NodeId(n): 100 for n in "abcdef"}
    assert next_change(NodeId("a"), config, view, matches, 100, NOW, SETTINGS) is None
    config = Configuration(ids(*"abcd"), ids("f"))
    assert next_change(NodeId("a"), config, view, matches, 100, NOW, SETTINGS) is None


def test_a_learner_the_leader_does_not_hear_is_not_promoted() -> None:
    """Issue 19 finding 1: gossip "alive" is not enough; the learner must answer the leader."""
    assert decide("abc", "d", silence={"d": 5.0}) is None
    assert change(decide("abc", "d", silence={"d": 4.9})) == (ConfChangeOp.ADD_VOTER, "d")


def test_voters_the_leader_does_not_hear_do_not_count_as_healthy() -> None:
    """The quorum health check counts only voters alive in gossip AND heard by the leader."""
    members = {"e": health(DEAD, age=100)}
    # rest = a b c d: a (leader) and b heard; c, d silent -> 2 of 4 is not a majority
    assert decide("abcde", members=members, silence={"c": 10.0, "d": 10.0}) is None
    assert change(decide("abcde", members=members, silence={"c": 10.0})) == (
        ConfChangeOp.REMOVE,
        "e",
    )
