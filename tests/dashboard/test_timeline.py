"""The timeline derives events from successive status snapshots."""

from __future__ import annotations

from typing import Any

from leeky_twisted.dashboard.timeline import Timeline


def status(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "role": "follower",
        "term": 1,
        "leader": None,
        "elections": 0,
        "voters": ["1", "2", "3"],
        "learners": [],
        "snapshot_index": 0,
        "applied_index": 0,
        "last_index": 0,
    }
    base.update(kw)
    return base


def kinds(tl: Timeline) -> list[str]:
    return [e["kind"] for e in tl.events]


def test_first_status_is_a_start_event():
    tl = Timeline("1")
    tl.observe(status(), 10.0)
    assert kinds(tl) == ["start"]
    assert tl.events[0]["t"] == 10.0 and tl.events[0]["node"] == "1"


def test_a_campaign_seen_only_through_the_election_counter_is_recorded():
    """A campaign that started and was won between two samples still shows."""
    tl = Timeline("1")
    tl.observe(status(), 0)
    tl.observe(status(role="leader", term=2, leader="1", elections=1), 0.2)
    assert kinds(tl) == ["start", "campaign", "leader"]
    assert tl.events[1]["term"] == 2
    assert tl.events[2]["text"] == "1 won the election: term 2"


def test_a_pre_vote_alone_is_not_a_campaign():
    tl = Timeline("1")
    tl.observe(status(), 0)
    tl.observe(status(role="candidate"), 0.2)
    assert kinds(tl) == ["start"]


def test_leader_lost_and_new_leader_in_a_new_term():
    tl = Timeline("2")
    tl.observe(status(term=2, leader="1"), 0)
    tl.observe(status(term=2, leader=None), 1)
    tl.observe(status(term=3, leader="3"), 2)
    assert kinds(tl) == ["start", "leader_lost", "leader"]
    assert tl.events[2]["leader"] == "3" and tl.events[2]["term"] == 3


def test_same_leader_in_a_later_term_is_a_leader_event():
    tl = Timeline("2")
    tl.observe(status(term=2, leader="1"), 0)
    tl.observe(status(term=4, leader="1"), 1)
    assert kinds(tl) == ["start", "leader"]


def test_members_joining_leaving_and_promoted():
    tl = Timeline("1")
    tl.observe(status(), 0)
    tl.observe(status(voters=["1", "2", "3"], learners=["4"]), 1)
    tl.observe(status(voters=["1", "2", "3", "4"]), 2)
    tl.observe(status(voters=["1", "3", "4"]), 3)
    texts = [e["text"] for e in tl.events][1:]
    assert texts == ["4 joined as a learner", "4 is now a voter", "2 left the configuration"]


def test_snapshot_taken_versus_installed():
    tl = Timeline("1")
    tl.observe(status(applied_index=100, last_index=100), 0)
    tl.observe(status(applied_index=120, last_index=120, snapshot_index=100), 1)
    tl.observe(status(applied_index=5000, last_index=5000, snapshot_index=5000), 2)
    assert kinds(tl)[1:] == ["snapshot", "snapshot_installed"]
    assert tl.events[2]["index"] == 5000


def test_the_timeline_is_bounded_and_since_returns_the_newer_events():
    tl = Timeline("1", max_events=5)
    for i in range(20):
        tl.add(float(i), "note", f"event {i}")
    assert len(tl.events) == 5
    assert [e["text"] for e in tl.since(18)] == ["event 18", "event 19"]
