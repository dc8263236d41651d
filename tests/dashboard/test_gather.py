"""The gatherer asks the other members, marks the silent ones, and learns addresses."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock

from leeky_twisted.dashboard.gather import (
    GATHER_SECONDS,
    IDLE_GATHER_SECONDS,
    WATCH_SECONDS,
    Gatherer,
    merge_timelines,
)
from leeky_twisted.dashboard.recorder import Recorder
from tests.dashboard.fakes import FakeFetch, FakeNode


def make(
    node: FakeNode | None = None, watched: bool = True
) -> tuple[Clock, Gatherer, FakeFetch, FakeNode]:
    clock, fetch = Clock(), FakeFetch()
    node = node or FakeNode("1")
    node.addresses.update({"2": {"http": "127.0.0.1:7202"}, "3": {"peer": "127.0.0.1:7103"}})
    rec = Recorder(clock, node)
    rec.sample()
    g = Gatherer(clock, rec, fetch, lambda: "127.0.0.1:7201")
    if watched:
        g.watch()
    return clock, g, fetch, node


def remote(nid: str, role: str = "follower", **extra: Any) -> dict[str, Any]:
    return {"id": nid, "status": {"id": nid, "role": role, "term": 2}, "timeline": [], **extra}


def test_asks_each_member_with_a_known_address_and_says_who_it_is():
    _clock, g, fetch, _ = make()
    g.start()
    assert [url for url, _ in fetch.calls] == [
        "http://127.0.0.1:7202/dashboard/local?from=1&port=7201"
    ]
    view = g.view()
    assert view["members"]["3"]["reachable"] is False
    assert view["members"]["3"]["error"] == "HTTP address not known yet"
    g.stop()


def test_one_request_at_a_time_per_member():
    clock, g, fetch, _ = make()
    g.start()
    clock.advance(GATHER_SECONDS)
    clock.advance(GATHER_SECONDS)
    assert len(fetch.calls) == 1
    fetch.calls[0][1].callback(remote("2"))
    clock.advance(GATHER_SECONDS)
    assert len(fetch.calls) == 2
    g.stop()


def test_an_answer_shows_the_member_and_teaches_the_addresses_it_knows():
    _clock, g, fetch, _ = make()
    g.gather()
    fetch.pending("7202")[0].callback(remote("2", book={"3": "127.0.0.1:7203", "9": "x:1"}))
    view = g.view()
    assert view["members"]["2"]["reachable"] is True
    assert view["members"]["2"]["state"]["status"]["role"] == "follower"
    assert g.address_of("3") == "127.0.0.1:7203"
    assert g.address_of("9") is None  # not a member: not learned
    g.gather()
    assert fetch.pending("7203")


def test_a_member_that_stops_answering_is_unreachable_with_an_event_and_its_last_state():
    clock, g, fetch, _ = make()
    g.gather()
    fetch.pending("7202")[0].callback(remote("2", role="leader"))
    clock.advance(3)
    g.gather()
    fetch.pending("7202")[0].errback(ConnectionRefusedError())
    view = g.view()
    member = view["members"]["2"]
    assert member["reachable"] is False
    assert member["down_since"] == 3 and member["age"] == 3  # seconds since its last answer
    assert member["state"]["status"]["role"] == "leader"  # last known, for the page
    assert [e["kind"] for e in g.recorder.timeline.events][-1] == "unreachable"
    g.gather()
    fetch.pending("7202")[0].errback(ConnectionRefusedError())
    assert [e["kind"] for e in g.recorder.timeline.events].count("unreachable") == 1
    g.gather()
    fetch.pending("7202")[0].callback(remote("2"))
    assert [e["kind"] for e in g.recorder.timeline.events][-1] == "reachable"


def test_an_answer_that_is_not_a_dashboard_state_counts_as_a_failure():
    _clock, g, fetch, _ = make()
    g.gather()
    fetch.pending("7202")[0].callback(["not", "a", "dict"])
    assert g.view()["members"]["2"]["reachable"] is False


def test_learn_accepts_members_only_and_never_this_node():
    _clock, g, _fetch, _node = make()
    g.learn("3", "10.0.0.3:80")
    g.learn("1", "10.0.0.1:80")
    g.learn("7", "10.0.0.7:80")
    assert g.learned == {"3": "10.0.0.3:80"}
    assert g.book() == {"1": "127.0.0.1:7201", "2": "127.0.0.1:7202", "3": "10.0.0.3:80"}


def test_without_fetch_nothing_is_asked():
    clock = Clock()
    rec = Recorder(clock, FakeNode("1"))
    rec.sample()
    g = Gatherer(clock, rec, None, lambda: None)
    g.gather()
    assert set(g.view()["members"]) == {"1", "2", "3"}


def test_merged_timeline_shows_a_leader_change_once_in_the_winners_words():
    a = {
        "timeline": [
            {
                "seq": 1,
                "t": 5.0,
                "node": "2",
                "kind": "leader",
                "term": 3,
                "leader": "1",
                "text": "1 is the leader: term 3",
            }
        ]
    }
    b = {
        "timeline": [
            {
                "seq": 4,
                "t": 5.1,
                "node": "1",
                "kind": "leader",
                "term": 3,
                "leader": "1",
                "text": "1 won the election: term 3",
            },
            {
                "seq": 3,
                "t": 4.9,
                "node": "1",
                "kind": "campaign",
                "term": 3,
                "text": "1 campaigns for term 3",
            },
        ]
    }
    merged = merge_timelines([a, b, None])
    assert [e["text"] for e in merged] == ["1 campaigns for term 3", "1 won the election: term 3"]


def answer_all(fetch: FakeFetch) -> None:
    for d in fetch.pending(""):
        d.callback(remote("2"))


def test_unwatched_it_asks_rarely_and_a_watching_page_makes_it_ask_at_full_pace():
    clock, g, fetch, _ = make(watched=False)
    steps = int(IDLE_GATHER_SECONDS / GATHER_SECONDS)
    g.start()  # a first round at start
    answer_all(fetch)
    for _ in range(steps - 1):
        clock.advance(GATHER_SECONDS)
        answer_all(fetch)
    assert len(fetch.calls) == 1
    clock.advance(GATHER_SECONDS)
    answer_all(fetch)
    assert len(fetch.calls) == 2
    g.watch()
    for _ in range(int(WATCH_SECONDS / GATHER_SECONDS)):
        clock.advance(GATHER_SECONDS)
        answer_all(fetch)
    assert len(fetch.calls) == 2 + int(WATCH_SECONDS / GATHER_SECONDS)
    before = len(fetch.calls)  # no page since: back to the idle pace
    for _ in range(steps - 1):
        clock.advance(GATHER_SECONDS)
        answer_all(fetch)
    assert len(fetch.calls) - before <= 1
    g.stop()
