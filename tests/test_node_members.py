"""members(): which members answer, as the leader (or a follower, for its leader) knows it."""

from __future__ import annotations

from typing import Any

from test_node import lead_by_hand, make_node, run

from leeky_twisted.core.messages import AppendEntries, NodeId


def by_id(members: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(m["id"]): m for m in members}


def test_the_leader_marks_a_silent_voter_unreachable_with_how_long():
    """A voter the leader has not heard from for longer than an election timeout is
    unreachable, with the seconds since it last spoke; one it just heard is reachable."""
    heard: dict[NodeId, float] = {}
    node, clock, _, _ = make_node(["1", "2", "3"], last_heard=heard.get)
    lead_by_hand(node, clock)
    heard[NodeId("3")] = clock.seconds() - 42.0
    heard[NodeId("2")] = clock.seconds() - 0.1
    members = by_id(node.members())
    assert members["1"] | {"addresses": {}} == {
        "id": "1",
        "raft": "leader",
        "gossip": None,
        "incarnation": None,
        "addresses": {},
        "this_node": True,
        "reachable": True,
        "last_contact": None,
    }
    assert (members["2"]["reachable"], members["2"]["last_contact"]) == (True, 0.1)
    assert (members["3"]["reachable"], members["3"]["last_contact"]) == (False, 42.0)
    assert members["3"]["raft"] == "voter" and members["3"]["this_node"] is False


def test_a_voter_never_heard_is_unreachable_without_a_time():
    """A voter that never spoke to this leader: unreachable, last contact unknown (None)."""
    node, clock, _, _ = make_node(["1", "2", "3"], last_heard={}.get)
    lead_by_hand(node, clock)
    members = by_id(node.members())
    assert (members["2"]["reachable"], members["2"]["last_contact"]) == (False, None)


def test_a_follower_judges_only_its_leader():
    """A follower hears only its leader: the other voters' reachability is unknown (None)."""
    heard: dict[NodeId, float] = {}
    node, clock, _, _ = make_node(["1", "2", "3"], last_heard=heard.get)

    node.receive(AppendEntries(NodeId("2"), NodeId("1"), 2, 0, 0, (), 0))
    run(clock, 0.05)
    heard[NodeId("2")] = clock.seconds()
    members = by_id(node.members())
    assert members["2"]["raft"] == "leader" and members["2"]["reachable"] is True
    assert members["3"]["reachable"] is None
