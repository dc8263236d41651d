"""Watches end to end over in-memory AMP: push, resume on another node, compaction (task.Clock)."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred

from leeky_twisted.client.library import LeekyClient, format_address
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.errors import Compacted, Removed
from leeky_twisted.statemachine.commands import Put, encode_command
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, failure_of, result_of

A = ("10.0.0.1", 7001)
B = ("10.0.0.2", 7002)


class Replicated:
    """Two fake nodes whose state machines apply the same entries (A leads at first)."""

    def __init__(self, watch_window=10_000):
        self.net = FakeNetwork()
        self.a = FakeRaftNode("1", format_address(A))
        self.b = FakeRaftNode("2", format_address(B))
        self.frontends = {
            A: self.net.serve(A, self.a, forward=False, watch_window=watch_window),
            B: self.net.serve(B, self.b, forward=False, watch_window=watch_window),
        }
        self.index = 0

    def commit(self, key, value, nodes=None):
        """Apply a put at the next index on every (given) node, as a committed entry."""
        self.index += 1
        for node in nodes or (self.a, self.b):
            node.state_machine.apply(self.index, encode_command(Put(key, value)))
        self.net.flush()

    def client(self, addresses=(A, B)):
        return LeekyClient(self.net.clock, list(addresses), connect=self.net.connect)

    def talking_client(self, addresses=(A, B)):
        """A client that has had an answer from the first of ``addresses`` (its node now)."""
        client = self.client(addresses)
        self.net.run(client.get("x"), limit=1)
        return client

    def raw_connection(self, address=A, locator=None):
        """A bare AMP connection to the node at ``address``."""
        from twisted.protocols import amp

        proto = amp.AMP() if locator is None else amp.AMP(locator=locator)
        self.net.connect(address, proto)
        return proto

    def watched_by_clients(self, key, count, got):
        """``count`` clients on their own connections, each watching ``key`` into ``got``."""
        for _ in range(count):
            client = self.talking_client()
            watch = client.watch(key, got.append)
        self.net.run(watch.done, limit=0.5)  # every watch taken on


class BoxSender:
    """What a box dispatcher sends through: it keeps each box as a dict."""

    def __init__(self):
        self.boxes = []

    def sendBox(self, box):
        self.boxes.append(dict(box))

    def unhandledError(self, failure):
        raise AssertionError(failure)


def dispatcher_to(sender):
    """An AMP box dispatcher sending through ``sender``."""
    from twisted.protocols import amp

    dispatcher = amp.BoxDispatcher(amp.CommandLocator())
    dispatcher.startReceivingBoxes(sender)
    return dispatcher


def revisions(batches):
    return [e.revision for batch in batches for e in batch]


def test_watch_prefix_gets_pushed_events_in_order():
    """Events of the prefix arrive pushed, in revision order; other keys are not sent."""
    r = Replicated()
    got = []
    watch = r.client().watch("a/", got.append, prefix=True)
    r.net.run(watch.done, limit=0.5)
    r.commit("a/1", "x")
    r.commit("b", "y")
    r.commit("a/2", "z")
    assert [(e.revision, e.key, e.value) for b in got for e in b] == [
        (1, "a/1", "x"),
        (3, "a/2", "z"),
    ]
    assert watch.next_revision == 4
    watch.cancel()
    assert result_of(watch.done) is None


def test_watch_starts_on_the_node_the_client_talks_to():
    """A watch starts on the node that last answered (B here), not the next in turn (A)."""
    r = Replicated()
    client = r.talking_client((B, A))
    assert client.leader == B
    got = []
    watch = client.watch("k", got.append)
    r.net.run(watch.done, limit=0.5)
    r.commit("k", "on B only", nodes=[r.b])
    assert [e.value for b in got for e in b] == ["on B only"]
    watch.cancel()


def test_watch_resumes_on_another_node_without_gap_or_duplicate():
    """The watched node goes away: the client resumes on B from the next revision."""
    r = Replicated()
    got = []
    watch = r.client().watch("k", got.append, prefix=True)
    r.net.run(watch.done, limit=0.5)
    r.commit("k1", "a")
    r.commit("k2", "b")
    r.net.drop(A)  # the node the watch was on dies
    r.commit("k3", "c", nodes=[r.b])  # committed while the client reconnects
    r.net.run(watch.done, limit=2)
    r.commit("k4", "d", nodes=[r.b])
    assert revisions(got) == [1, 2, 3, 4]
    assert watch.resumes == 1
    watch.cancel()


def test_watch_from_a_start_revision_catches_up():
    """start_revision=2 delivers the held events from 2 on, then the live ones."""
    r = Replicated()
    for i in range(3):
        r.commit(f"k{i}", "v")
    got = []
    watch = r.client().watch("k", got.append, prefix=True, start_revision=2)
    r.net.run(watch.done, limit=0.5)
    r.commit("k9", "v")
    assert revisions(got) == [2, 3, 4]
    watch.cancel()


def test_watch_of_a_compacted_revision_fails_with_the_oldest_revision():
    """Asking for a revision older than the window ends the watch with Compacted."""
    r = Replicated(watch_window=2)
    for i in range(5):
        r.commit(f"k{i}", "v")
    watch = r.client().watch("k", lambda events: None, prefix=True, start_revision=1)
    r.net.run(watch.done, limit=2)
    f = failure_of(watch.done, Compacted)
    assert "oldest is 4" in str(f.value)


def test_a_silent_node_is_left_after_the_silence_timeout():
    """A node that stops sending (no events; its progress notes come only every 10 s)
    is left after the 3 s silence timeout, and the watch resumes on the next node."""
    r = Replicated()
    got = []
    watch = r.client().watch("k", got.append, prefix=True, silence_timeout=3.0)
    r.net.run(watch.done, limit=0.5)
    r.a.state_machine.observe(None)  # A stops applying (paused, partitioned)
    r.net.servers.pop(A)  # and takes no new connections
    r.commit("k1", "v", nodes=[r.b])
    r.net.run(watch.done, limit=5)
    assert revisions(got) == [1] and watch.resumes == 1
    watch.cancel()


def test_watch_over_raw_amp_answers_before_its_first_events():
    """The Watch answer (id, start revision) comes before any WatchEvents of that watch."""
    from twisted.protocols import amp

    r = Replicated()
    r.commit("k", "v")
    seen = []

    class Locator(amp.CommandLocator):
        @cc.WatchEvents.responder
        def events(self, watch_id, events, next_revision):
            seen.append(("events", json.loads(events)[0]["revision"], next_revision))
            return {}

    proto = r.raw_connection(locator=Locator())
    d = proto.callRemote(cc.Watch, start="k", prefix=True, start_revision=1)
    d.addCallback(lambda answer: seen.append(("answer", answer["start_revision"])))
    r.net.run(d, limit=1)
    r.net.clock.advance(0)
    r.net.flush()
    assert seen == [("answer", 1), ("events", 1, 2)]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"start": "b", "end": "a"}, "is after its end"), ({"start": "k" * 2000}, "bytes")],
)
def test_bad_watch_is_refused_clearly(arguments, message):
    """A malformed watch gets INVALID_REQUEST with the reason."""

    from leeky_twisted.protocol.errors import InvalidRequest

    r = Replicated()
    proto = r.raw_connection()
    results = []
    proto.callRemote(cc.Watch, **arguments).addBoth(results.append)
    r.net.flush()
    assert results[0].check(InvalidRequest) and message in str(results[0].value)


def test_cli_watch_prints_a_line_per_event_until_cancelled():
    """`leekyraft watch --prefix k` prints REVISION PUT/DELETE lines; --json prints JSON."""
    import io

    from twisted.internet.defer import Deferred

    from leeky_twisted import cli
    from leeky_twisted.statemachine.commands import Delete

    r = Replicated()
    client = r.client()
    started = []
    original = client.watch

    def watch(*args, **kwargs):
        started.append(original(*args, **kwargs))
        return started[-1]

    client.watch = watch
    for argv, expected in [
        (["watch", "--prefix", "k"], "1 PUT k1 a b\n2 DELETE k1\n"),
        (["watch", "k1", "--from", "1", "--json"], None),
    ]:
        args = cli.build_parser().parse_args(argv)
        out, err = io.StringIO(), io.StringIO()
        d = Deferred.fromCoroutine(cli.run_command(args, client, out, err))
        r.net.run(d, limit=0.5)
        if expected is not None:
            r.commit("k1", "a b")
            r.index += 1
            for node in (r.a, r.b):
                node.state_machine.apply(r.index, encode_command(Delete("k1")))
            r.net.flush()
        started[-1].cancel()
        r.net.run(d, limit=0.5)
        assert result_of(d) == 0 and err.getvalue() == ""
        if expected is not None:
            assert out.getvalue() == expected
        else:
            lines = [json.loads(line) for line in out.getvalue().splitlines()]
            assert [(e["revision"], e["type"]) for e in lines] == [(1, "put"), (2, "delete")]


def test_cli_watch_of_a_compacted_revision_exits_5_with_the_oldest_revision():
    """`watch --from 1` past the window: one line naming the oldest revision, exit 5."""
    import io

    from twisted.internet.defer import Deferred

    from leeky_twisted import cli

    r = Replicated(watch_window=2)
    for i in range(5):
        r.commit(f"k{i}", "v")
    args = cli.build_parser().parse_args(["watch", "--prefix", "k", "--from", "1"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, r.client(), out, err))
    r.net.run(d, limit=2)
    assert result_of(d) == cli.EXIT_REFUSED == 5
    assert (
        err.getvalue() == ("leekyraft: compacted: revision 1 is no longer held, oldest is 4\n")
        and out.getvalue() == ""
    )


def test_one_connection_holds_at_most_100_watches(monkeypatch):
    """The 101st watch on one connection is refused; cancelling one makes room."""

    from leeky_twisted.api import amp_api
    from leeky_twisted.protocol.errors import InvalidRequest

    monkeypatch.setattr(amp_api, "MAX_WATCHES_PER_CONNECTION", 2)
    r = Replicated()
    proto = r.raw_connection()
    answers = []
    for _ in range(3):
        proto.callRemote(cc.Watch, start="k", prefix=True).addBoth(answers.append)
    r.net.flush()
    assert answers[2].check(InvalidRequest) and "at most 2 watches" in str(answers[2].value)
    proto.callRemote(cc.CancelWatch, watch_id=answers[0]["watch_id"])
    proto.callRemote(cc.Watch, start="k", prefix=True).addBoth(answers.append)
    r.net.flush()
    assert "watch_id" in answers[3]


def _hub(r, address):
    return r.net.servers[address].locator.frontend.watches


def test_watches_ride_the_clients_own_connection():
    """Three watches and the requests share the client's one connection to the node;
    a cancelled watch ends on the node while the others go on."""
    r = Replicated()
    client = r.talking_client()
    got = [[], [], []]
    watches = [client.watch("k", got[i].append, prefix=True) for i in range(3)]
    r.net.run(watches[0].done, limit=0.5)
    r.commit("k1", "a")
    assert [revisions(g) for g in got] == [[1], [1], [1]]
    assert r.net.connects == [A]  # no connection per watch
    watches[1].cancel()
    r.net.flush()
    assert len(_hub(r, A).watchers()) == 2
    r.commit("k2", "b")
    assert [revisions(g) for g in got] == [[1, 2], [1], [1, 2]]
    r.net.run(client.get("x"), limit=1)  # requests still answered on the same connection
    assert r.net.connects == [A]


def test_a_client_holds_at_most_one_connections_worth_of_watches(monkeypatch):
    """One watch past the cap is refused with a clear error; cancelling one makes room."""
    from leeky_twisted.client import watch as client_watch
    from leeky_twisted.protocol.errors import InvalidRequest

    monkeypatch.setattr(client_watch, "MAX_WATCHES_PER_CONNECTION", 2)
    r = Replicated()
    client = r.talking_client()  # every watch goes to A, the node it talks to
    first = client.watch("k", lambda events: None)
    client.watch("j", lambda events: None)
    with pytest.raises(InvalidRequest, match="holds 2 watches, the most one connection"):
        client.watch("m", lambda events: None)
    first.cancel()
    third = client.watch("m", lambda events: None)
    r.net.run(third.done, limit=0.5)
    assert len(_hub(r, A).watchers()) == 2


def test_events_of_a_watch_the_client_does_not_hold_end_it_on_the_node():
    """A watch the node serves but the client forgot (a late answer) is cancelled there."""
    r = Replicated()
    client = r.client()
    watch = client.watch("k", lambda events: None, prefix=True)
    r.net.run(watch.done, limit=0.5)
    proto = watch._proto
    proto.watches.clear()  # as if its answer had come after the client gave up on it
    r.commit("k1", "a")
    r.net.flush()
    assert _hub(r, A).watchers() == []
    assert not proto.is_lost


def test_closing_the_client_ends_its_watches():
    """close() cancels every watch (done fires with None) and closes the connection."""
    r = Replicated()
    client = r.client()
    watch = client.watch("k", lambda events: None)
    r.net.run(watch.done, limit=0.5)
    client.close()
    assert not watch.done.called  # on the next turn: the closer may be awaiting it
    r.net.run(watch.done, limit=0.1)
    assert result_of(watch.done) is None
    assert _hub(r, A).watchers() == []
    assert r.net.connects == [A]  # and it does not reconnect


def test_closing_the_client_from_the_coroutine_awaiting_a_watch_is_safe():
    """A program awaiting ``watch.done`` closes its client in ``finally`` when it is closed
    (the process ends): no "coroutine already executing" error."""
    r = Replicated()
    client = r.client()

    started = []

    async def program():
        watch = client.watch("k", lambda events: None)
        started.append(watch)
        try:
            await watch.done
        finally:
            client.close()

    coroutine = program()
    d = Deferred.fromCoroutine(coroutine)
    r.net.run(Deferred(), limit=0.2)
    coroutine.close()  # as at interpreter exit: its finally closes the client
    assert not d.called  # the closed coroutine was not resumed
    assert started[0]._stopped and not started[0].done.called  # its done fires next turn


def test_a_node_encodes_an_event_once_for_all_its_watchers_and_counts_their_acks(monkeypatch):
    """Three watchers of one key: the event is JSON-encoded once; each watch acknowledges
    its copy (a WatchAck within WATCH_ACK_DELAY: the node's backlogs are back to 0)."""
    from leeky_twisted.api import watch as hub_module

    encoded = []
    real = hub_module.json.dumps
    monkeypatch.setattr(
        hub_module.json, "dumps", lambda *a, **k: encoded.append(1) or real(*a, **k)
    )
    r = Replicated()
    client = r.talking_client()
    got = []
    watches = [client.watch("k", got.append) for _ in range(3)]
    r.net.run(watches[0].done, limit=0.5)
    r.commit("k", "v")
    assert len(got) == 3 and len(encoded) == 1
    assert [w.backlog for w in _hub(r, A).watchers()] == [1, 1, 1]
    _ack_delay_passes(r)
    assert [w.backlog for w in _hub(r, A).watchers()] == [0, 0, 0]


def _ack_delay_passes(r):
    """Let the watches' acknowledgement timers fire and their WatchAcks arrive."""
    from leeky_twisted.client.watch import WATCH_ACK_DELAY

    r.net.clock.advance(WATCH_ACK_DELAY)
    r.net.flush()


def test_send_watch_events_sends_the_box_call_remote_would():
    """The node's direct WatchEvents box equals AMP's own, long events split alike."""
    events = json.dumps([{"value": "é" * 70_000}], ensure_ascii=False)
    by_amp, direct = BoxSender(), BoxSender()
    for sender in (by_amp, direct):
        dispatcher = dispatcher_to(sender)
        if sender is by_amp:
            dispatcher.callRemote(cc.WatchEvents, watch_id=7, events=events, next_revision=9)
        else:
            cc.send_watch_events(dispatcher, 7, events.encode("utf-8"), 9)
    assert direct.boxes == by_amp.boxes and b"events.2" in direct.boxes[0]


def test_client_and_node_connections_turn_nagle_off():
    """Both ends of a client connection set TCP_NODELAY: a watch's pushed events and the
    requests share it, and Nagle would hold a second small box for a delayed ack (40 ms)."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from leeky_twisted.api.amp_api import ClientAPIProtocol
    from leeky_twisted.protocol.connection import _PooledAMP

    class Transport(StringTransport):
        no_delay = None

        def setTcpNoDelay(self, enabled):
            self.no_delay = enabled

    for proto in (
        ClientAPIProtocol(max_request_bytes=1 << 20),
        _PooledAMP(lambda p: None, Clock()),
    ):
        transport = Transport()
        proto.makeConnection(transport)
        assert transport.no_delay is True, type(proto).__name__


def test_the_client_takes_watch_events_without_amps_responder_lookup():
    """A WatchEvents box (long events in pieces) reaches its watch whole and is answered
    without AMP's per-command machinery; a malformed one still gets AMP's error answer."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.protocols import amp

    from leeky_twisted.protocol.connection import _PooledAMP

    got = []

    class Receiver:
        def watch_events(self, events, next_revision):
            got.append((len(events), next_revision))

    proto = _PooledAMP(lambda p: None, Clock())
    proto.makeConnection(StringTransport())
    proto.watches[7] = Receiver()
    looked_up = []
    real = proto.locateResponder
    proto.locateResponder = lambda name: looked_up.append(name) or real(name)
    events = json.dumps(["é" * 70_000], ensure_ascii=False).encode("utf-8")
    sender = []

    class Sender:
        def sendBox(self, box):
            sender.append(box.serialize())

        def unhandledError(self, failure):
            raise AssertionError(failure)

    dispatcher = amp.BoxDispatcher(amp.CommandLocator())
    dispatcher.startReceivingBoxes(Sender())
    cc.send_watch_events(dispatcher, 7, events, 9)
    proto.dataReceived(sender[0])
    assert got == [(len(events.decode("utf-8")), 9)] and looked_up == []
    assert b"_answer" in proto.transport.value()
    proto.transport.clear()
    bad = amp.AmpBox({b"_command": b"WatchEvents", b"_ask": b"2", b"events": b"[]"})
    proto.dataReceived(bad.serialize())
    assert len(got) == 1 and b"_error" in proto.transport.value()


def _boxes(data):
    """Split wire bytes into AMP boxes (dicts)."""
    from leeky_twisted.protocol.ampframes import split_box

    out, pos = [], 0
    while pos < len(data):
        box, pos = split_box(data, pos)
        out.append(box)
    return out


@pytest.mark.parametrize("size", [0, 10, 140_000])
def test_watch_events_box_is_the_box_send_watch_events_sends(size):
    """The node's per-watcher box (its ask tag and watch id, then the tail shared by every
    watcher of the batch) holds the same keys and values as send_watch_events' box."""
    events = ("é" * size).encode("utf-8")
    sender = BoxSender()
    dispatcher = dispatcher_to(sender)
    cc.send_watch_events(dispatcher, 7, events, 9)
    tag = sender.boxes[0][b"_ask"]
    (direct,) = _boxes(cc.watch_events_box(tag, 7, cc.watch_events_tail(events, 9)))
    assert direct == sender.boxes[0]


def test_a_node_builds_the_events_box_once_for_all_its_watchers(monkeypatch):
    """Three watchers of one key on three connections: the box's shared part is built
    once; each connection's box carries its own watch id and is acknowledged."""
    from leeky_twisted.api import amp_api

    built = []
    real = amp_api.cc.watch_events_tail
    monkeypatch.setattr(amp_api.cc, "watch_events_tail", lambda *a: built.append(a[1]) or real(*a))
    r = Replicated()
    got = []
    r.watched_by_clients("k", 3, got)
    r.commit("k", "v")
    r.commit("k", "w")
    assert [e.value for batch in got for e in batch] == ["v"] * 3 + ["w"] * 3
    assert built == [2, 3]  # once per event (its next revision), not per watcher
    _ack_delay_passes(r)
    assert [w.backlog for w in _hub(r, A).watchers()] == [0, 0, 0]


def test_the_client_decodes_an_events_payload_once_for_all_its_watches(monkeypatch):
    """Watches of one key in one process (on separate connections) get the same payload:
    it is parsed once, and each watch gets its events."""
    from leeky_twisted.client import watch as client_watch

    parsed = []
    real = client_watch.event_from_json
    monkeypatch.setattr(client_watch, "event_from_json", lambda e: parsed.append(e) or real(e))
    r = Replicated()
    got = []
    r.watched_by_clients("k", 3, got)
    r.commit("k", "once")
    assert [e.value for batch in got for e in batch] == ["once"] * 3
    assert [e["value"] for e in parsed] == ["once"]


def test_decoded_events_refuses_malformed_payloads():
    """A payload that is not a list of events raises, as the watch expects, and is not kept."""
    from leeky_twisted.client.watch import decoded_events

    good = json.dumps(
        [
            {
                "revision": 3,
                "type": "put",
                "key": "k",
                "value": "v",
                "create_revision": 3,
                "mod_revision": 3,
                "version": 1,
            }
        ]
    )
    assert decoded_events(good)[0].value == "v"
    for bad in ("{", '"text"', '[{"revision": 1}]', '[{"revision": 1, "type": "nope"}]'):
        with pytest.raises((KeyError, TypeError, ValueError)):
            decoded_events(bad)
    assert decoded_events(good) is decoded_events(good)


def test_the_client_splits_whole_boxes_by_hand_and_leaves_a_partial_one_to_amp(monkeypatch):
    """Answers that arrive whole are dispatched without AMP's key-at-a-time parser; a box
    cut across two reads is finished by that parser; every call gets its answer."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.protocols import amp

    from leeky_twisted.protocol.connection import _PooledAMP

    parsed_by_amp = []
    real = amp.BinaryBoxProtocol.dataReceived
    monkeypatch.setattr(
        amp.BinaryBoxProtocol,
        "dataReceived",
        lambda self, data: parsed_by_amp.append(data) or real(self, data),
    )
    proto = _PooledAMP(lambda p: None, Clock())
    proto.makeConnection(StringTransport())
    answers = []
    for _ in range(3):
        proto.callRemote(cc.Status).addCallback(lambda r: answers.append(r["status"]))
    wire = b"".join(
        amp.AmpBox({b"_answer": b"%d" % n, b"status": b"s%d" % n}).serialize() for n in (1, 2, 3)
    )
    one = len(wire) // 3  # the three boxes are the same size
    cut = len(wire) - 5
    proto.dataReceived(wire[:cut])
    assert answers == ["s1", "s2"] and parsed_by_amp == [wire[2 * one : cut]]
    proto.dataReceived(wire[cut:])
    assert answers == ["s1", "s2", "s3"] and proto.boxes == 3


def test_a_watch_acknowledges_its_events_in_batches_not_each_box():
    """The client asks for batched acks: the node's event boxes ask no answer, and one
    WatchAck comes once ``ack_every`` events are taken (no clock needed)."""
    from leeky_twisted.api import amp_api

    r = Replicated()
    client = r.client()
    r.net.run(client.get("x"), limit=1)
    got = []
    watch = client.watch("k", got.append)
    r.net.run(watch.done, limit=0.5)
    server = r.net.pumps[0].server  # the node's end of the client's connection
    every = amp_api.watch_ack_every(_hub(r, A).max_backlog)
    assert every > 1
    for i in range(every - 1):
        r.commit("k", f"v{i}")
    (watcher,) = _hub(r, A).watchers()
    assert watcher.backlog == every - 1 and not server._outstandingRequests
    r.commit("k", "last")
    assert watcher.backlog == 0 and len(got) == every


def test_a_watch_on_a_node_without_batched_acks_answers_each_box(monkeypatch):
    """A node that does not take WatchAck (an older one: no ``ack_every`` in its answer)
    asks an answer for each events box, and the client gives it at once."""
    from leeky_twisted.api import amp_api

    monkeypatch.setattr(amp_api, "watch_ack_every", lambda max_backlog: 0)
    r = Replicated()
    got = []
    watch = r.client().watch("k", got.append)
    r.net.run(watch.done, limit=0.5)
    r.commit("k", "v")
    (watcher,) = _hub(r, A).watchers()
    assert len(got) == 1 and watcher.backlog == 0 and watch._ack_every == 0


def test_a_watch_that_never_acknowledges_is_cancelled_as_slow_and_resumes(monkeypatch):
    """Batched acks keep the backlog bound: a client whose WatchAcks never come is
    cancelled as slow at the node's limit, and resumes elsewhere without gap or repeat."""
    from leeky_twisted.client import watch as client_watch

    monkeypatch.setattr(client_watch.Watch, "_send_ack", lambda self: None)
    r = Replicated()
    for address in (A, B):
        _hub(r, address).max_backlog = 8
    got = []
    watch = r.client().watch("k", got.append)
    r.net.run(watch.done, limit=0.5)
    for i in range(12):
        r.commit("k", f"v{i}")
    r.net.run(watch.done, limit=2)
    assert _hub(r, A).cancelled_slow == 1 and watch.resumes == 1
    assert revisions(got) == list(range(1, 13))
    watch.cancel()


def test_an_events_box_asking_no_answer_is_the_box_send_watch_events_sends():
    """For a watch acknowledged by WatchAck: the direct box (no tag) and AMP's box that
    asks no answer hold the same keys and values, and nothing waits for an answer."""
    from twisted.protocols import amp

    class Sender:
        def __init__(self):
            self.boxes = []

        def sendBox(self, box):
            self.boxes.append(dict(box))

        def unhandledError(self, failure):
            raise AssertionError(failure)

    events = ("é" * 10).encode("utf-8")
    sender = Sender()
    dispatcher = amp.BoxDispatcher(amp.CommandLocator())
    dispatcher.startReceivingBoxes(sender)
    assert cc.send_watch_events(dispatcher, 7, events, 9, ask=False) is None
    (direct,) = _boxes(cc.watch_events_box(None, 7, cc.watch_events_tail(events, 9)))
    assert direct == sender.boxes[0] and b"_ask" not in direct
    assert not dispatcher._outstandingRequests


def test_a_watch_ack_for_events_never_sent_ends_the_watch():
    """A client may not acknowledge more than it was sent: a WatchAck of a huge count
    would hold the node's backlog at 0 while the client reads nothing, and the node
    would buffer its events without bound. The node ends such a watch instead."""
    from twisted.protocols import amp

    class Locator(amp.CommandLocator):
        ended: list[str] = []

        @cc.WatchEvents.responder
        def events(self, watch_id, events, next_revision):
            return {}

        @cc.WatchEnded.responder
        def watch_ended(self, watch_id, reason):
            self.ended.append(reason)
            return {}

    r = Replicated()
    hub = _hub(r, A)
    hub.max_backlog = 8
    locator = Locator()
    proto = r.raw_connection(locator=locator)
    d = proto.callRemote(cc.Watch, start="k", prefix=True, batched_acks=True)
    r.net.run(d, limit=1)
    answer = result_of(d)
    assert answer["ack_every"] >= 1
    r.net.clock.advance(0)
    for i in range(3 * hub.max_backlog):
        r.commit("k", f"v{i}")
        if hub.watchers():  # acknowledge far more than was sent, each time
            proto.callRemote(cc.WatchAck, watch_id=answer["watch_id"], count=cc.MAX_SEQ)
            r.net.flush()
    assert hub.watchers() == [] and locator.ended


def test_a_watch_passes_over_a_removed_node_and_ends_when_only_removed_nodes_are_left():
    """A refuses with Removed: the watch starts on B; given only A, it fails with Removed."""
    r = Replicated()
    r.a.removed = lambda: Removed("node 1 was removed from the cluster: use another node")
    got = []
    watch = r.client().watch("k", got.append)
    r.net.run(watch.done, limit=0.5)
    r.commit("k", "v", nodes=[r.b])
    assert [e.value for b in got for e in b] == ["v"]
    watch.cancel()
    only_a = r.client(addresses=(A,)).watch("k", got.append)
    r.net.run(only_a.done, limit=0.5)
    assert "node 1 was removed" in str(failure_of(only_a.done, Removed).value)


REMOVED_A = Removed(
    "node 1 was removed from the cluster (configuration change at 9) and serves no requests:"
    " use another node"
)


def test_a_watch_on_a_node_that_learns_it_was_removed_moves_on_to_another_node():
    """A learns it was removed while the watch is on it: the watch ends there and resumes on
    B from the next revision (nothing missed, nothing twice), and A is not tried again."""
    r = Replicated()
    got = []
    watch = r.talking_client().watch("k", got.append)
    r.net.run(watch.done, limit=0.5)
    r.commit("k", "v1")
    hub_a = r.frontends[A].watches
    assert len(hub_a.watchers()) == 1
    r.a.learn_removed(REMOVED_A)
    r.net.run(watch.done, limit=0.5)
    assert hub_a.watchers() == [] and watch.resumes == 1
    r.commit("k", "v2", nodes=[r.b])
    assert [e.value for b in got for e in b] == ["v1", "v2"]
    watch.cancel()


def test_a_watch_whose_only_node_learns_it_was_removed_ends_with_removed():
    """No other node: the watch fails with the node's Removed error, and `leekyraft watch`
    exits 5 with the removed-node message instead of waiting in silence."""
    import io

    from leeky_twisted import cli

    r = Replicated()
    watch = r.client(addresses=(A,)).watch("k", lambda events: None)
    r.net.run(watch.done, limit=0.5)
    r.a.learn_removed(REMOVED_A)
    r.net.run(watch.done, limit=0.5)
    error = failure_of(watch.done, Removed).value
    assert str(error) == f"10.0.0.1:7001: {REMOVED_A}"

    r = Replicated()
    args = cli.build_parser().parse_args(["watch", "k"])
    out, err = io.StringIO(), io.StringIO()
    d = Deferred.fromCoroutine(cli.run_command(args, r.client(addresses=(A,)), out, err))
    r.net.run(d, limit=0.5)
    assert not d.called
    r.a.learn_removed(REMOVED_A)
    r.net.run(d, limit=0.5)
    assert result_of(d) == cli.EXIT_REFUSED == 5
    assert err.getvalue() == f"leekyraft: 10.0.0.1:7001: {REMOVED_A}\n" and out.getvalue() == ""
