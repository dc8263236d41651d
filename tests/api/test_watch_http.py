"""Watches over HTTP: the server-sent-events stream and the JSON-RPC long poll."""

from __future__ import annotations

import json

import pytest
from test_jsonrpc_api import Harness as RPCHarness
from twisted.internet.task import Clock
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from leeky_twisted.api.amp_api import make_frontend
from leeky_twisted.api.jsonrpc_api import COMPACTED, INVALID_PARAMS
from leeky_twisted.api.sse import WatchResource, add_watch_resource
from leeky_twisted.statemachine.commands import Put, encode_command
from leeky_twisted.testing.apifakes import FakeRaftNode


class StreamRequest(DummyRequest):
    """A DummyRequest that keeps a streaming producer (DummyRequest's own loops on it)."""

    producer = None

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None


class Node:
    def __init__(self, window=100):
        self.clock = Clock()
        self.node = FakeRaftNode("1")
        self.frontend = make_frontend(self.node, self.clock, forward=False, watch_window=window)
        self.resource = WatchResource(self.frontend)

    def put(self, key, value="v"):
        self.node.index += 1
        self.node.state_machine.apply(self.node.index, encode_command(Put(key, value)))

    def get(self, headers=None, **args):
        request = StreamRequest([b"v1", b"watch"])
        request.args = {k.encode(): [v.encode()] for k, v in args.items()}
        for name, value in (headers or {}).items():
            request.requestHeaders.setRawHeaders(name, [value])
        body = self.resource.render_GET(request)
        return request, body


def stream(request):
    return b"".join(request.written).decode()


def events(request):
    out = []
    for block in stream(request).split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "data" in fields:
            out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return out


def test_sse_streams_a_prefix_from_a_revision_with_ids_closing_each_revision():
    """from=2 catches up, then live events follow; the id is the revision."""
    n = Node()
    for key in ["a/1", "b", "a/2"]:
        n.put(key)
    request, body = n.get(prefix="a/", **{"from": "1"})
    assert body == NOT_DONE_YET
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/event-stream; charset=utf-8"
    ]
    n.put("a/3")
    got = events(request)
    assert [(i, kind, e["key"], e["revision"]) for i, kind, e in got] == [
        ("1", "put", "a/1", 1),
        ("3", "put", "a/2", 3),
        ("4", "put", "a/3", 4),
    ]
    assert stream(request).startswith(": watching from revision 1\n\n")


def test_sse_last_event_id_resumes_after_it():
    """An EventSource reconnecting with Last-Event-ID: 1 gets revision 2 on."""
    n = Node()
    n.put("k")
    n.put("k")
    request, _ = n.get(headers={"Last-Event-ID": "1"}, key="k")
    assert [e["revision"] for _, _, e in events(request)] == [2]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ({"from": "1"}, 400, "name one of key, prefix or start"),
        ({"key": "k", "from": "x"}, 400, "from must be a revision"),
        ({"start": "b", "end": "a"}, 400, "is after its end"),
        ({"key": "k", "from": "1"}, 410, "compacted: revision 1 is no longer held, oldest is 3"),
    ],
)
def test_sse_bad_requests_and_compacted_revisions_get_json_errors(args, code, message):
    """400 for bad input, 410 for a compacted revision, each with a JSON error."""
    n = Node(window=2)
    for _ in range(4):
        n.put("k")
    request, body = n.get(**args)
    assert request.responseCode == code
    assert message in json.loads(body)["error"]


def test_sse_a_stream_whose_socket_stays_full_is_cancelled_and_others_go_on():
    """While paused the stream holds events; past the backlog it is cancelled, alone.

    What it held still goes out before the cancellation (the reason names the
    revision after it), so a client resuming from its last id misses nothing.
    """
    n = Node()
    n.frontend.watches.max_backlog = 3
    slow, _ = n.get(prefix="")
    fast, _ = n.get(prefix="")
    slow_stream = slow.producer
    slow_stream.pauseProducing()
    for i in range(5):
        n.put(f"k{i}")
    assert len(events(fast)) == 5
    kinds = [kind for _, kind, _ in events(slow)]
    assert kinds == ["put", "put", "put", "cancelled"]
    reason = events(slow)[-1][2]["reason"]
    assert "fell behind" in reason and "resume from revision 4" in reason and slow.finished
    assert slow.producer is None and slow_stream.finished
    assert len(n.frontend.watches.watchers()) == 1


def test_sse_a_paused_stream_is_bounded_by_bytes_not_only_by_event_count():
    """Few large events (far under max_backlog) that pass max_queued_bytes cancel the watch.

    What waited goes out first; the reason names the revision not sent.
    """
    n = Node()
    assert n.frontend.watches.max_backlog >= 10
    slow, _ = n.get(prefix="")
    fast, _ = n.get(prefix="")
    slow_stream = slow.producer
    slow_stream.max_queued_bytes = 5000
    slow_stream.pauseProducing()
    slow_before = n.frontend.watches.cancelled_slow
    for i in range(4):
        n.put(f"k{i}", "v" * 2000)
    assert len(events(fast)) == 4
    got = events(slow)
    assert [kind for _, kind, _ in got] == ["put", "put", "cancelled"]
    assert "resume from revision 3" in got[-1][2]["reason"] and slow_stream.finished
    assert n.frontend.watches.cancelled_slow == slow_before + 1
    assert len(n.frontend.watches.watchers()) == 1


def test_sse_paused_then_resumed_stream_delivers_what_waited():
    """Events that wait while the socket is full go out, in order, when it drains."""
    n = Node()
    request, _ = n.get(prefix="")
    request.producer.pauseProducing()
    n.put("a")
    n.put("b")
    assert events(request) == []
    request.producer.resumeProducing()
    assert [e["key"] for _, _, e in events(request)] == ["a", "b"]


def test_sse_client_that_goes_away_ends_its_watch():
    """A closed stream removes its watcher from the hub."""
    n = Node()
    request, _ = n.get(key="k")
    assert len(n.frontend.watches.watchers()) == 1
    request.processingFailed(Exception("gone"))  # the connection dropped
    assert n.frontend.watches.watchers() == []


def test_watch_resource_sits_under_v1_without_touching_other_paths():
    """add_watch_resource adds /v1/watch and leaves the root's other children."""
    from twisted.web import resource

    root = resource.Resource()
    root.putChild(b"dashboard", resource.Resource())
    add_watch_resource(root, Node().frontend)
    assert set(root.children) == {b"dashboard", b"v1"}
    assert isinstance(root.children[b"v1"].children[b"watch"], WatchResource)


# ---------------------------------------------------------- long poll


def test_long_poll_answers_held_events_at_once_then_waits_for_new_ones():
    """watch(key, {from_revision}) returns what is held; the next poll waits for a put."""
    h = RPCHarness()
    h.result("put", "p/1", "a")
    h.result("put", "q", "b")
    first = h.result("watch", "p/", {"prefix": True, "from_revision": 1})
    assert [e["key"] for e in first["events"]] == ["p/1"] and first["next_revision"] == 2
    rpc = h.site.resource.children[b"jsonrpc"]
    call = {
        "jsonrpc": "2.0",
        "method": "watch",
        "params": ["p/", {"prefix": True, "from_revision": 2, "wait": 30}],
        "id": 7,
    }
    answers = []
    rpc.answer(json.dumps(call).encode()).addCallback(answers.append)
    h.net.clock.advance(10)
    assert answers == []  # nothing of p/ yet: the poll waits
    h.leader.index += 1
    h.leader.state_machine.apply(h.leader.index, encode_command(Put("p/2", "c")))
    answer = answers[0]["result"]
    assert [e["revision"] for e in answer["events"]] == [3] and answer["next_revision"] == 4


def test_long_poll_times_out_empty_with_the_revision_to_go_on_from():
    """No matching event within wait: an empty answer and the next revision."""
    h = RPCHarness()
    h.result("put", "other", "x")
    answer = h.result("watch", "k", {"wait": 1})
    assert answer == {"events": [], "next_revision": 2}


def test_long_poll_errors():
    """Compacted is -32005 naming the oldest revision; bad options are invalid params."""
    h = RPCHarness()
    for _ in range(3):
        h.result("put", "k", "v")
    watches = h.site.resource.children[b"jsonrpc"].frontend.watches
    watches.window = 1
    h.result("put", "k", "v")
    error = h.error("watch", "k", {"from_revision": 1})
    assert error["code"] == COMPACTED and "oldest is 4" in error["message"]
    assert h.error("watch", "k", {"wait": 61})["code"] == INVALID_PARAMS
    assert h.error("watch", "k", {"bogus": 1})["code"] == INVALID_PARAMS


def test_a_node_serving_a_watch_asks_for_commits_at_once_until_its_last_watch_ends():
    """The frontend's hub tells the node: eager while a stream is open, not after it."""
    n = Node()
    assert n.node.eager_commits is False
    first, _ = n.get(key="k")
    second, _ = n.get(prefix="p/")
    assert n.node.eager_commits is True
    first.processingFailed(Exception("gone"))
    assert n.node.eager_commits is True  # one watch left
    second.processingFailed(Exception("gone"))
    assert n.node.eager_commits is False


def test_sse_streams_end_with_removed_when_their_node_learns_it_was_removed():
    """An open stream on a node that learns it was removed gets `event: cancelled` whose
    reason is the error new requests get (after ``removed: ``), then ends; a long poll
    waiting there fails with JSON-RPC's removed code (-32006)."""
    from leeky_twisted.api.jsonrpc_api import REMOVED
    from leeky_twisted.protocol.errors import Removed

    n = Node()
    request, _ = n.get(key="k")
    error = Removed("node 1 was removed from the cluster (configuration change at 9)")
    n.node.learn_removed(error)
    assert events(request)[-1] == (None, "cancelled", {"reason": f"removed: {error}"})
    assert request.finished and n.frontend.watches.watchers() == []
    again, body = n.get(key="k")  # a new stream: refused with the same error
    assert again.responseCode == 503 and json.loads(body) == {"error": str(error)}

    h = RPCHarness()
    rpc = h.site.resource.children[b"jsonrpc"]
    call = {"jsonrpc": "2.0", "method": "watch", "params": ["k", {"wait": 30}], "id": 7}
    answers = []
    rpc.answer(json.dumps(call).encode()).addCallback(answers.append)
    h.net.clock.advance(1)
    assert answers == []
    h.leader.learn_removed(error)
    assert answers[0]["error"]["code"] == REMOVED
    assert "node 1 was removed" in answers[0]["error"]["message"]
