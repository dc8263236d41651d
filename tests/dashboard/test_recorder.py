"""The recorder samples a node: history points, the leader's view, message counts."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from leeky_twisted.core.messages import (
    AppendEntries,
    Heartbeat,
    RequestVote,
    RequestVoteResponse,
)
from leeky_twisted.dashboard.meter import MeteredNode, RequestMeter, percentile
from leeky_twisted.dashboard.recorder import HISTORY_POINTS, Recorder, folder_bytes
from leeky_twisted.dashboard.traffic import CountingTransport, MessageCounter, kind_of
from leeky_twisted.protocol.errors import NotLeader
from tests.dashboard.fakes import FakeNode, FakeProgress


class _Inner:
    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, m: object) -> None:
        self.sent.append(m)

    def set_receiver(self, r: object) -> None:
        self.receiver = r

    def close(self) -> None:
        pass


def test_counting_transport_counts_each_message_by_peer_and_kind_then_sends_it():
    inner, counter = _Inner(), MessageCounter()
    t = CountingTransport(inner, counter)
    t.send(Heartbeat("1", "2", 3, 0))
    t.send(Heartbeat("1", "2", 3, 0))
    t.send(AppendEntries("1", "3", 3, 0, 0, (), 0))
    t.send(RequestVote("1", "3", 4, 0, 0, pre_vote=True))
    assert len(inner.sent) == 4
    assert counter.totals() == {"2": {"heartbeat": 2}, "3": {"append": 1, "prevote": 1}}
    assert kind_of(RequestVoteResponse("2", "1", 4, True)) == "vote_reply"


def test_history_point_each_second_with_commit_rate_requests_latency_and_messages():
    clock, node, counter = Clock(), FakeNode(), MessageCounter()
    meter = RequestMeter(clock)
    rec = Recorder(clock, node, counter, meter)
    rec.start()
    node.st["commit_index"] = 50
    slow: Deferred[object] = Deferred()
    metered = MeteredNode(node, meter)
    node.propose = lambda command, timeout: slow  # type: ignore[attr-defined]
    d = metered.propose(b"x", 1.0)
    clock.advance(0.2)
    slow.callback("ok")  # a write that took 0.2 s
    assert d.called
    node.read = lambda r, lin, t: fail(NotLeader())  # type: ignore[attr-defined]
    metered.read(object(), True, 1.0).addErrback(lambda f: None)
    counter.count(Heartbeat("1", "2", 1, 0))
    for _ in range(5):
        clock.advance(0.2)
    assert len(rec.history) == 1
    point = rec.history[-1]
    assert point["commits"] == 50.0
    assert point["requests"] == {"write:ok": 1.0, "read:refused": 1.0}
    assert point["p50_ms"] == point["p99_ms"] == 200.0
    assert point["sent"] == {"2": {"heartbeat": 1}}
    for _ in range(5 * (HISTORY_POINTS + 10)):
        clock.advance(0.2)
    assert len(rec.history) == HISTORY_POINTS
    rec.stop()


def test_metered_node_counts_errors_and_passes_everything_else_through():
    clock = Clock()
    meter = RequestMeter(clock)
    node = FakeNode()
    node.read = lambda r, lin, t: fail(ValueError("boom"))  # type: ignore[attr-defined]
    metered = MeteredNode(node, meter)
    metered.read(object(), False, 1.0).addErrback(lambda f: None)
    assert meter.counts == {"stale_read:error": 1}
    assert metered.node_id == "1"
    assert metered.status().role == "follower"


def test_latency_samples_are_bounded_between_two_points():
    clock = Clock()
    meter = RequestMeter(clock)
    for _ in range(10_000):
        meter.watch("write", succeed(None))
    assert len(meter.take_latencies()) == 4096
    assert meter.counts == {"write:ok": 10_000}
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_the_leaders_view_of_each_follower():
    clock = Clock()
    clock.advance(100)
    node = FakeNode("1", role="leader", last_index=120)
    node.core.progress = {
        "1": FakeProgress(120, 121),
        "2": FakeProgress(100, 101),
        "3": FakeProgress(20, 21, "probe"),
    }
    node.core.progress["2"].inflight.extend([101, 102])
    heard = {"2": 99.5}
    rec = Recorder(clock, node, last_heard=heard.get)
    rec.sample()
    view = rec.followers()
    assert set(view) == {"2", "3"}
    assert view["2"] == {
        "match": 100,
        "next": 101,
        "state": "replicate",
        "inflight": 2,
        "max_inflight": 64,
        "lag": 20,
        "last_contact": 0.5,
    }
    assert view["3"]["lag"] == 100 and view["3"]["last_contact"] is None
    node.st["role"] = "follower"
    rec.sample()
    assert rec.followers() == {}


def test_local_state_has_status_timeline_and_data_size(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 24)
    assert folder_bytes(str(tmp_path)) == 1024
    clock = Clock()
    rec = Recorder(clock, FakeNode(), data_dir=str(tmp_path))
    rec.sample()
    state = rec.local_state(history=True)
    assert state["id"] == "1" and state["status"]["role"] == "follower"
    assert state["data_bytes"] == 1024
    assert [e["kind"] for e in state["timeline"]] == ["start"]
    assert state["history"] == [] and state["last_point"] is None


def test_the_wrappers_provide_the_interfaces_they_stand_for():
    from zope.interface.verify import verifyObject

    from leeky_twisted.interfaces import IPeerTransport, IRaftNode

    assert verifyObject(IPeerTransport, CountingTransport(_Inner(), MessageCounter()))
    assert verifyObject(IRaftNode, MeteredNode(FakeNode(), RequestMeter(Clock())))
