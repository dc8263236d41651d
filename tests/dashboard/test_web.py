"""The dashboard's resources: event streams (bounded), admin actions (token), assets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web import resource, server
from twisted.web.test.requesthelper import DummyRequest

from leeky_twisted.dashboard import read_token_file
from leeky_twisted.dashboard.gather import Gatherer
from leeky_twisted.dashboard.recorder import Recorder
from leeky_twisted.dashboard.web import (
    ASSETS,
    MAX_DROPPED_IN_A_ROW,
    AdminResource,
    EventStreams,
    check_token,
    install,
    load_assets,
)
from tests.dashboard.fakes import FakeNode

TOKEN = b"s3cret-token-0123456789"


class StreamRequest(DummyRequest):
    """A DummyRequest that keeps its push producer and can be disconnected."""

    def __init__(self, path: bytes = b"/dashboard/events") -> None:
        super().__init__(path.strip(b"/").split(b"/"))
        self.producer: Any = None
        self.lost = False

    def registerProducer(self, prod: Any, streaming: bool) -> None:
        assert streaming
        self.producer = prod

    def unregisterProducer(self) -> None:
        assert self.producer is not None
        self.producer = None

    def loseConnection(self) -> None:
        assert self.producer is None, "a producer must be unregistered first"
        self.lost = True


def frames(request: StreamRequest) -> list[dict[str, Any]]:
    out = []
    for chunk in request.written:
        if chunk.startswith(b"event: cluster\ndata: "):
            out.append(json.loads(chunk[len(b"event: cluster\ndata: ") :]))
    return out


def test_a_stream_gets_the_current_state_then_each_broadcast():
    n = iter(range(100))
    streams = EventStreams(lambda: {"n": next(n)})
    req = StreamRequest()
    assert streams.render_GET(req) is server.NOT_DONE_YET
    assert req.responseHeaders.getRawHeaders(b"content-type") == [b"text/event-stream"]
    streams.broadcast()
    assert [f["n"] for f in frames(req)] == [0, 1]


def test_a_slow_reader_gets_no_buffering_frames_are_dropped_and_counted():
    """While its connection is paused nothing is written; after it drains, the latest state."""
    n = iter(range(1000))
    streams = EventStreams(lambda: {"n": next(n)})
    req = StreamRequest()
    streams.render_GET(req)
    req.producer.pauseProducing()
    written = len(req.written)
    for _ in range(10):
        streams.broadcast()
    assert len(req.written) == written
    assert req.producer.dropped == 10 and streams.dropped == 10
    req.producer.resumeProducing()
    streams.broadcast()
    assert frames(req)[-1]["n"] == 11


def test_a_reader_that_never_drains_is_disconnected():
    streams = EventStreams(lambda: {})
    req = StreamRequest()
    streams.render_GET(req)
    req.producer.pauseProducing()
    for _ in range(MAX_DROPPED_IN_A_ROW):
        streams.broadcast()
    assert req.lost
    assert streams.streams == []


def test_ending_a_stream_unregisters_it_and_finishes_the_answer():
    streams = EventStreams(lambda: {})
    req = StreamRequest()
    streams.render_GET(req)
    req.producer.end()
    assert req.producer is None and req.finished == 1
    assert streams.streams == []


def test_streams_are_capped_and_a_closed_one_frees_its_place():
    streams = EventStreams(lambda: {}, limit=2)
    first, second, third = StreamRequest(), StreamRequest(), StreamRequest()
    streams.render_GET(first)
    streams.render_GET(second)
    body = streams.render_GET(third)
    assert third.responseCode == 503
    assert b"too many dashboard streams" in body
    assert streams.refused == 1
    first.finish()  # the reader went away
    assert len(streams.streams) == 1
    assert streams.render_GET(StreamRequest()) is server.NOT_DONE_YET


@pytest.mark.parametrize(
    ("expected", "header", "why"),
    [
        (None, b"Bearer " + TOKEN, "disabled"),
        (b"", b"Bearer ", "disabled"),
        (TOKEN, None, "need the admin token"),
        (TOKEN, b"Basic " + TOKEN, "need the admin token"),
        (TOKEN, b"Bearer wrong", "wrong admin token"),
        (TOKEN, b"Bearer " + TOKEN[:-1], "wrong admin token"),
    ],
)
def test_check_token_refuses(expected: bytes | None, header: bytes | None, why: str):
    refusal = check_token(expected, header)
    assert refusal is not None and why in refusal


def test_check_token_accepts_the_right_one():
    assert check_token(TOKEN, b"Bearer " + TOKEN) is None


def admin_request(action: bytes, args: dict[bytes, list[bytes]], token: bytes | None) -> Any:
    req = DummyRequest([action])
    req.method = b"POST"
    req.args = args
    if token is not None:
        req.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + token])
    return req


def test_admin_actions_are_refused_without_a_configured_token():
    node = FakeNode(role="leader")
    admin = AdminResource(node, None)
    req = admin_request(b"transfer", {b"to": [b"2"]}, TOKEN)
    body = admin.render_POST(req)
    assert req.responseCode == 403
    assert b"--dashboard-admin-token-file" in body
    assert node.transfers == []
    get = DummyRequest([])
    assert json.loads(admin.render_GET(get)) == {"enabled": False}


def test_admin_actions_are_refused_with_a_wrong_token():
    node = FakeNode(role="leader")
    admin = AdminResource(node, TOKEN)
    req = admin_request(b"transfer", {b"to": [b"2"]}, b"nope")
    admin.render_POST(req)
    assert req.responseCode == 403
    assert node.transfers == []


def test_transfer_with_the_token_runs_on_the_leader_and_a_follower_says_why_not():
    node = FakeNode(role="leader")
    admin = AdminResource(node, TOKEN)
    req = admin_request(b"transfer", {b"to": [b"2"]}, TOKEN)
    assert json.loads(admin.render_POST(req)) == {"ok": "transferring leadership to 2"}
    assert node.transfers == ["2"]
    follower = AdminResource(FakeNode(role="follower"), TOKEN)
    req = admin_request(b"transfer", {b"to": [b"2"]}, TOKEN)
    body = json.loads(follower.render_POST(req))
    assert req.responseCode == 409 and body == {"error": "not the leader"}


def test_remove_answers_once_the_change_is_done_and_unknown_actions_are_400():
    node = FakeNode(role="leader")
    admin = AdminResource(node, TOKEN)
    req = admin_request(b"remove", {b"id": [b"3"]}, TOKEN)
    assert admin.render_POST(req) is server.NOT_DONE_YET
    assert req.written == []
    node.removals["3"].callback(None)
    assert json.loads(b"".join(req.written)) == {"ok": "removed 3"}
    req = admin_request(b"reboot", {}, TOKEN)
    admin.render_POST(req)
    assert req.responseCode == 400


def test_token_file_must_hold_one_long_enough_token(tmp_path):
    good = tmp_path / "token"
    good.write_bytes(TOKEN + b"\n")
    assert read_token_file(str(good)) == TOKEN
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="at least 16"):
        read_token_file(str(short))
    two = tmp_path / "two"
    two.write_bytes(TOKEN + b"\n" + TOKEN)
    with pytest.raises(ValueError, match="one token"):
        read_token_file(str(two))
    with pytest.raises(ValueError, match="cannot read"):
        read_token_file(str(tmp_path / "absent"))


def test_every_asset_is_in_the_package_and_small():
    assets = load_assets()
    assert set(assets) == set(ASSETS)
    assert sum(len(b) for b in assets.values()) < 40 * 1024
    page = assets["index.html"].decode()
    for name in ASSETS:
        if name != "index.html":
            assert f"/dashboard/static/{name}" in page
    # nothing fetched from elsewhere: every link, fetch and stream is a path on the node
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == [
        "data:,",
        "/dashboard/static/dashboard.css",
        "/dashboard/static/dashboard.js",
    ]
    script = assets["dashboard.js"].decode()
    calls = re.findall(r'(?:fetch|EventSource)\(\s*"([^"]*)"', script)
    assert calls and all(c.startswith("/dashboard/") for c in calls)
    assert b"url(" not in assets["dashboard.css"] and b"@import" not in assets["dashboard.css"]


def site_root() -> tuple[resource.Resource, FakeNode]:
    clock = Clock()
    node = FakeNode()
    rec = Recorder(clock, node)
    rec.sample()
    gatherer = Gatherer(clock, rec, None, lambda: "127.0.0.1:7201")
    root = resource.Resource()
    install(root, gatherer, AdminResource(node, None))
    return root, node


def render(root: resource.Resource, path: bytes, args: dict[bytes, list[bytes]] | None = None):
    req = DummyRequest(path.lstrip(b"/").split(b"/"))
    req.args = args or {}
    req.client = IPv4Address("TCP", "192.168.1.1", 40000)
    res = root
    while req.postpath and not getattr(res, "isLeaf", False):
        res = res.getChildWithDefault(req.postpath.pop(0), req)
        req.prepath.append(b"")
    return req, res.render(req)


def test_the_page_is_at_the_root_and_under_dashboard():
    root, _ = site_root()
    for path in (b"/", b"/dashboard/"):
        _, body = render(root, path)
        assert body.startswith(b"<!doctype html>")
    req, body = render(root, b"/dashboard/static/dashboard.js")
    assert req.responseHeaders.getRawHeaders(b"content-type") == [ASSETS["dashboard.js"]]


def test_local_learns_the_askers_address_and_answers_the_book():
    root, _ = site_root()
    _, body = render(root, b"/dashboard/local", {b"from": [b"2"], b"port": [b"7202"]})
    state = json.loads(body)
    assert state["id"] == "1"
    assert state["book"]["2"] == "192.168.1.1:7202"  # the asker's own address
    _, body = render(root, b"/dashboard/local", {b"from": [b"3"], b"port": [b"99999"]})
    assert "3" not in json.loads(body)["book"]


def test_cluster_has_the_members_timeline_and_history():
    root, _ = site_root()
    _, body = render(root, b"/dashboard/cluster")
    view = json.loads(body)
    assert view["self"] == "1" and set(view["members"]) == {"1", "2", "3"}
    assert view["admin"] is False and view["history"] == []
    assert view["timeline"][0]["kind"] == "start"


def test_through_twisted_web_a_full_connection_pauses_the_stream_and_drops_frames():
    """The real path: Site, HTTPChannel, Request; the transport says its buffer is full."""
    from twisted.internet.error import ConnectionDone
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    clock = Clock()
    node = FakeNode()
    rec = Recorder(clock, node)
    rec.sample()
    gatherer = Gatherer(clock, rec, None, lambda: "127.0.0.1:7201")
    root = resource.Resource()
    streams = install(root, gatherer, AdminResource(node, None))
    channel = server.Site(root).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /dashboard/events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"text/event-stream" in transport.value()
    assert transport.value().count(b"event: cluster") == 1
    stream = streams.streams[0]
    transport.producer.pauseProducing()  # what a TCP transport does when its buffer is full
    sent = len(transport.value())
    for _ in range(5):
        streams.broadcast()
    assert len(transport.value()) == sent
    assert stream.dropped == 5
    transport.producer.resumeProducing()
    streams.broadcast()
    assert transport.value().count(b"event: cluster") == 2
    channel.connectionLost(Failure(ConnectionDone()))
    assert streams.streams == []
