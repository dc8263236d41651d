"""The dashboard service: pages get an election at once, not at the next push tick."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.web import resource

from leeky_twisted.dashboard import PUSH_SECONDS, MessageCounter, RequestMeter, make_dashboard
from leeky_twisted.dashboard.recorder import SAMPLE_SECONDS
from tests.dashboard.fakes import FakeFetch, FakeNode
from tests.dashboard.test_web import StreamRequest, frames


def test_an_event_is_pushed_at_once_and_a_stopped_service_ends_its_streams():
    clock, node, fetch = Clock(), FakeNode("1"), FakeFetch()
    svc = make_dashboard(
        clock,
        resource.Resource(),
        node,
        MessageCounter(),
        RequestMeter(clock),
        None,
        None,
        fetch=fetch,
    )
    svc.startService()
    req = StreamRequest()
    svc.streams.render_GET(req)
    assert len(frames(req)) == 1
    node.st.update(role="leader", term=2, leader="1", elections=1)
    clock.advance(SAMPLE_SECONDS)  # the recorder sees the election...
    clock.advance(0)  # ...and the page gets it on the next reactor turn
    assert SAMPLE_SECONDS < PUSH_SECONDS
    assert len(frames(req)) == 2
    assert frames(req)[-1]["timeline"][-1]["text"] == "1 won the election: term 2"
    svc.stopService()
    assert req.finished == 1 and svc.streams.streams == []
