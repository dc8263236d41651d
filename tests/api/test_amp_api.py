"""Tests for the client AMP API: responders, validation, chunking, forwarding."""

from __future__ import annotations

import json

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from zope.interface.verify import verifyObject

from leeky_twisted.api.amp_api import (
    LeaderForwarder,
    RequestLimits,
    make_amp_factory,
    make_frontend,
)
from leeky_twisted.interfaces import IRaftNode
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    InvalidRequest,
    LeekyError,
    NotLeader,
    SessionExpired,
    Unavailable,
)
from leeky_twisted.statemachine.commands import (
    Append,
    Get,
    Put,
    RegisterSession,
    Session,
    decode_command,
    encode_command,
)
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, capture, failure_of, result_of

LEADER = ("10.0.0.1", 7001)
FOLLOWER = ("10.0.0.2", 7002)


class Harness:
    """A fake leader (and optionally a follower) served over an in-memory network."""

    def __init__(self, **options):
        self.net = FakeNetwork()
        self.leader = FakeRaftNode("1", "10.0.0.1:7001")
        self.follower = FakeRaftNode("2", "10.0.0.2:7002")
        self.follower.not_leader = NotLeader("1", "10.0.0.1:7001")
        self.net.serve(LEADER, self.leader, **options)
        self.net.serve(FOLLOWER, self.follower, **options)

    def client(self, address=LEADER):
        proto = amp.AMP()
        self.net.connect(address, proto)
        return proto

    def call(self, proto, command, **arguments):
        d = capture(proto.callRemote(command, **arguments))
        self.net.run(d, limit=20)
        return d


@pytest.fixture
def h():
    return Harness()


def test_fake_node_provides_iraftnode():
    """The test fake provides IRaftNode."""
    assert verifyObject(IRaftNode, FakeRaftNode())


def test_put_get_delete_cas_append_and_status(h):
    """Each command reaches the node and answers with the state machine's result."""
    c = h.client()
    assert result_of(h.call(c, cc.Put, key="k", value="v")) == {}
    assert result_of(h.call(c, cc.Get, key="k")) == {"value": "v"}
    assert result_of(h.call(c, cc.Get, key="nope")) == {"value": None}
    assert result_of(h.call(c, cc.Cas, key="k", expected="x", new="w")) == {"swapped": False}
    assert result_of(h.call(c, cc.Cas, key="k", expected="v", new="w")) == {"swapped": True}
    assert result_of(h.call(c, cc.Cas, key="n", new="1")) == {"swapped": True}
    assert result_of(h.call(c, cc.Append, key="n", suffix="23")) == {"length": 3}
    assert result_of(h.call(c, cc.Delete, key="k")) == {"existed": True}
    assert result_of(h.call(c, cc.Delete, key="k")) == {"existed": False}
    status = json.loads(result_of(h.call(c, cc.Status))["status"])
    assert (status["id"], status["role"], status["applied_index"]) == ("1", "leader", 7)


def test_node_sees_encoded_commands_and_get_requests(h):
    """Writes are proposed as encoded commands; reads pass Get(key) with the timeout."""
    c = h.client()
    h.call(c, cc.Put, key="k", value="v", client_id="c1", seq=4, ack=3)
    h.call(c, cc.Get, key="k")
    h.call(c, cc.Get, key="k", stale=True)
    (propose, command, timeout), read, stale_read = h.leader.calls
    assert propose == "propose" and timeout == 5.0
    assert decode_command(command) == Put("k", "v", Session("c1", 4, 3))
    assert read == ("read", Get("k"), True, 5.0)
    assert stale_read == ("read", Get("k"), False, 5.0)


def test_session_without_ack_uses_seq(h):
    """A session with no ack acknowledges everything before its seq."""
    c = h.client()
    h.call(c, cc.Append, key="k", suffix="x", client_id="c1", seq=2)
    assert decode_command(h.leader.calls[0][1]) == Append("k", "x", Session("c1", 2, 2))


@pytest.mark.parametrize("size", [200_000, 1 << 20])
def test_values_larger_than_an_amp_value_travel_in_chunks(h, size):
    """A value past AMP's 65,535-byte limit (200 KB, 1 MiB) is put and read back intact."""
    value = "".join(chr(ord("a") + i % 26) for i in range(size))
    c = h.client()
    assert result_of(h.call(c, cc.Put, key="big", value=value)) == {}
    assert result_of(h.call(c, cc.Get, key="big"))["value"] == value


def test_chunked_text_splits_into_numbered_keys():
    """ChunkedText writes pieces of at most 65,535 bytes under name, name.1, ..."""
    strings: dict[bytes, bytes] = {}
    cc.ChunkedText().toBox(b"value", strings, {"value": "é" * 70_000}, None)
    assert sorted(strings) == [b"value", b"value.1", b"value.2"]
    assert all(len(piece) <= 65_535 for piece in strings.values())
    objects: dict[str, object] = {}
    cc.ChunkedText().fromBox(b"value", dict(strings), objects, None)
    assert objects == {"value": "é" * 70_000}


def test_chunked_text_keeps_empty_strings_and_omits_none():
    """An empty string is sent; an optional None is left out."""
    strings: dict[bytes, bytes] = {}
    cc.ChunkedText().toBox(b"a", strings, {"a": ""}, None)
    cc.ChunkedText(optional=True).toBox(b"b", strings, {"b": None}, None)
    assert strings == {b"a": b""}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"key": "", "value": "v"}, "key must not be empty"),
        ({"key": "k" * 1025, "value": "v"}, "key is 1025 bytes; the limit is 1024"),
        ({"key": "k", "value": "v" * ((1 << 20) + 1)}, "the limit is 1048576"),
        ({"key": "k", "value": "v", "seq": 1}, "needs both client_id and seq"),
        ({"key": "k", "value": "v", "client_id": "c", "seq": 1, "ack": 2}, "ack <= seq"),
    ],
)
def test_invalid_input_is_refused_and_the_connection_survives(h, arguments, message):
    """Bad keys, values or sessions get INVALID_REQUEST; the next request still works."""
    c = h.client()
    f = failure_of(h.call(c, cc.Put, **arguments), InvalidRequest)
    assert message in str(f.value)
    assert h.leader.calls == []
    assert result_of(h.call(c, cc.Get, key="k")) == {"value": None}


def test_bytes_that_are_not_utf8_are_refused(h):
    """A key that is not UTF-8 on the wire gets a clear INVALID_REQUEST."""
    c = h.client()
    d = capture(c.callRemoteString(b"Put", key=b"\xff\xfe", value=b"v"))
    h.net.run(d)
    f = failure_of(d, amp.RemoteAmpError)
    assert f.value.errorCode == b"INVALID_REQUEST"
    assert "not valid UTF-8" in f.value.description


def test_limits_are_configurable():
    """RequestLimits sets the key and value size limits."""
    net = FakeNetwork()
    net.serve(LEADER, FakeRaftNode(), limits=RequestLimits(max_key_bytes=3, max_value_bytes=4))
    c = amp.AMP()
    net.connect(LEADER, c)
    d = capture(c.callRemote(cc.Put, key="abcd", value="v"))
    net.run(d)
    failure_of(d, InvalidRequest)
    d = capture(c.callRemote(cc.Put, key="abc", value="vvvvv"))
    net.run(d)
    failure_of(d, InvalidRequest)


def test_not_leader_carries_the_leader_address_when_not_forwarding():
    """Without forwarding, a follower answers NotLeader with the leader's id and address."""
    h = Harness(forward=False)
    c = h.client(FOLLOWER)
    f = failure_of(h.call(c, cc.Put, key="k", value="v"), NotLeader)
    assert (f.value.leader_id, f.value.leader_address) == ("1", "10.0.0.1:7001")


def test_follower_forwards_writes_and_reads_to_the_leader(h):
    """A follower passes requests to the leader's client address and relays the answers."""
    c = h.client(FOLLOWER)
    s = result_of(h.call(c, cc.RegisterSession))["session"]
    assert result_of(h.call(c, cc.Put, key="k", value="v", client_id=s, seq=1)) == {}
    assert result_of(h.call(c, cc.Get, key="k")) == {"value": "v"}
    assert result_of(h.call(c, cc.Delete, key="k")) == {"existed": True}
    assert result_of(h.call(c, cc.Cas, key="k", new="1")) == {"swapped": True}
    assert result_of(h.call(c, cc.Append, key="k", suffix="2")) == {"length": 2}
    assert h.leader.state_machine.query(Get("k")) == "12"
    assert h.follower.state_machine.last_applied == 0
    assert decode_command(h.leader.calls[1][1]) == Put("k", "v", Session(s, 1, 1))
    assert h.net.connects == [FOLLOWER, LEADER]  # the test client, then one forwarding link


def test_stale_reads_are_answered_by_the_follower(h):
    """A stale get is served from the follower's own state, not forwarded."""
    h.follower.state_machine.apply(1, b"PUT k local")
    c = h.client(FOLLOWER)
    assert result_of(h.call(c, cc.Get, key="k", stale=True)) == {"value": "local"}
    assert h.leader.calls == []


def test_forwarding_is_a_single_hop(h):
    """A forwarded request that meets another non-leader comes back as NotLeader."""
    h.leader.not_leader = NotLeader("3", "10.0.0.3:7003")
    c = h.client(FOLLOWER)
    f = failure_of(h.call(c, cc.Put, key="k", value="v"), NotLeader)
    assert f.value.leader_address == "10.0.0.3:7003"
    assert ("10.0.0.3", 7003) not in h.net.connects


def test_unreachable_leader_is_unavailable(h):
    """When the leader's address refuses connections, the follower answers UNAVAILABLE."""
    h.follower.not_leader = NotLeader("9", "10.0.0.9:7009")
    c = h.client(FOLLOWER)
    f = failure_of(h.call(c, cc.Put, key="k", value="v"), Unavailable)
    assert "unreachable" in str(f.value)


def test_unknown_leader_is_not_leader_without_address(h):
    """With no leader known, the follower answers NotLeader(None, None)."""
    h.follower.not_leader = NotLeader()
    c = h.client(FOLLOWER)
    f = failure_of(h.call(c, cc.Get, key="k"), NotLeader)
    assert (f.value.leader_id, f.value.leader_address) == (None, None)


def test_commit_timeout_says_outcome_unknown(h):
    """A node's CommitTimeout reaches the client as 'timed out, outcome unknown'."""
    h.leader.commit_timeout = True
    c = h.client()
    f = failure_of(h.call(c, cc.Put, key="k", value="v"), CommitTimeout)
    assert str(f.value) == "timed out, outcome unknown"


def test_a_node_that_never_answers_still_gets_a_timeout(h):
    """If the node never fires, the frontend gives up after its timeout plus grace."""
    h.leader.hang = True
    c = h.client()
    d = capture(c.callRemote(cc.Put, key="k", value="v"))
    h.net.flush()
    h.net.clock.advance(5.9)
    h.net.flush()
    assert not d.called
    h.net.clock.advance(0.2)
    h.net.flush()
    assert str(failure_of(d, CommitTimeout).value) == "timed out, outcome unknown"


def test_register_session_is_a_log_entry_with_a_nonce_and_returns_its_id(h):
    """RegisterSession proposes a register entry; ids differ even at the same index."""
    c = h.client()
    first = result_of(h.call(c, cc.RegisterSession))["session"]
    ((propose, command, _),) = h.leader.calls
    assert propose == "propose"
    assert first == f"1.{decode_command(command).nonce}"
    assert h.leader.state_machine.session_ids() == [first]
    other = Harness()
    again = result_of(other.call(other.client(), cc.RegisterSession))["session"]
    assert again.startswith("1.") and again != first


@pytest.mark.parametrize("command", [cc.Put, cc.Append, cc.Delete, cc.Cas])
def test_a_write_in_an_unknown_session_is_session_expired_and_changes_nothing(h, command):
    """Every write command answers SESSION_EXPIRED for a session the cluster does not hold."""
    c = h.client()
    arguments = {"key": "k", "value": "v", "suffix": "v", "new": "v"}
    wanted = {name.decode() for name, _ in command.arguments}
    arguments = {k: v for k, v in arguments.items() if k in wanted}
    d = h.call(c, command, client_id="3.expired", seq=1, **arguments)
    f = failure_of(d, SessionExpired)
    assert "unknown or expired" in str(f.value)
    assert h.leader.state_machine.query(Get("k")) is None
    raw = capture(c.callRemoteString(b"Append", key=b"k", suffix=b"v", client_id=b"x", seq=b"1"))
    h.net.run(raw)
    assert failure_of(raw, amp.RemoteAmpError).value.errorCode == b"SESSION_EXPIRED"


def test_session_expired_is_relayed_by_a_follower(h):
    """A forwarded write in an unknown session comes back as SessionExpired, not a generic error."""
    c = h.client(FOLLOWER)
    f = failure_of(h.call(c, cc.Put, key="k", value="v", client_id="1.x", seq=1), SessionExpired)
    assert "unknown or expired" in str(f.value)


def test_state_machine_errors_become_invalid_request(h):
    """A command the state machine refuses (a stale session seq) is an InvalidRequest."""
    c = h.client()
    s = result_of(h.call(c, cc.RegisterSession))["session"]
    h.call(c, cc.Put, key="k", value="1", client_id=s, seq=5)
    f = failure_of(h.call(c, cc.Put, key="k", value="2", client_id=s, seq=3), InvalidRequest)
    assert "stale request" in str(f.value)


def test_unexpected_node_errors_are_generic_errors_and_keep_the_connection(h):
    """A bug in the node answers a generic error instead of dropping the connection."""
    h.leader.crash = RuntimeError("boom")
    c = h.client()
    f = failure_of(h.call(c, cc.Put, key="k", value="v"), LeekyError)
    assert "internal error: boom" in str(f.value)
    h.leader.crash = None
    assert result_of(h.call(c, cc.Put, key="k", value="v")) == {}


def test_frontend_rejects_objects_that_are_not_nodes():
    """Wiring something that is not an IRaftNode fails at construction."""
    with pytest.raises(TypeError):
        make_frontend(object(), None, forward=False)  # type: ignore[arg-type]


def test_frontend_close_closes_forwarding_connections(h):
    """Closing the frontend closes its connections to the leader."""
    frontend = make_frontend(h.follower, h.net.clock, connect=h.net.connect)
    d = Deferred.fromCoroutine(frontend.get("k"))
    h.net.run(d)
    assert result_of(d) is None
    closed = frontend.close()
    h.net.flush()
    assert result_of(closed) is None


# ---------------------------------------------------- the hand-split box path


def _request_stream() -> bytes:
    """Return the bytes of several client requests, one with a value over 64 KiB."""
    recorder = amp.AMP()
    sent = StringTransport()
    recorder.makeConnection(sent)
    recorder.callRemote(cc.Put, key="a", value="1", client_id="1.c", seq=1, ack=1)
    recorder.callRemote(cc.Get, key="a")
    recorder.callRemote(cc.Put, key="big", value="v" * 100_000)  # value split over keys
    recorder.callRemote(cc.Delete, key="a")
    recorder.callRemote(cc.Get, key="big", stale=True)
    recorder.callRemote(cc.Get, key="")  # refused: an error answer
    return sent.value()


def _serve(reads: list[bytes]) -> bytes:
    """Feed ``reads`` to a fresh client-API connection; return all it answered."""
    node = FakeRaftNode("1", "10.0.0.1:7001")
    node.index = 1
    node.state_machine.apply(1, encode_command(RegisterSession("c")))  # session "1.c"
    protocol = make_amp_factory(make_frontend(node, Clock(), forward=False)).buildProtocol(None)
    answers = StringTransport()
    protocol.makeConnection(answers)
    for data in reads:
        protocol.dataReceived(data)
    assert not answers.disconnecting
    return answers.value()


def test_requests_split_anywhere_get_the_same_answers():
    """Split in two reads at any offset, or read a byte at a time, the answers are the same."""
    stream = _request_stream()
    expected = _serve([stream])
    assert expected.count(b"_answer") == 5 and expected.count(b"\x00\x06_error") == 1
    big = stream.index(b"big")
    tail = len(stream) - 400
    # every offset around the small requests, a sample inside the big value
    splits = [*range(big + 400), *range(big, tail, 997), *range(tail, len(stream) + 1)]
    for split in splits:
        assert _serve([stream[:split], stream[split:]]) == expected, split
    assert _serve([stream[i : i + 1] for i in range(2000)] + [stream[2000:]]) == expected


def test_a_key_over_255_bytes_drops_the_connection_as_amp_does():
    """Not AMP: the connection is dropped, after answering the whole box before it."""
    node = FakeRaftNode("1", "10.0.0.1:7001")
    protocol = make_amp_factory(make_frontend(node, Clock(), forward=False)).buildProtocol(None)
    answers = StringTransport()
    protocol.makeConnection(answers)
    good = amp.AmpBox(_command=b"Get", _ask=b"1", key=b"a").serialize()
    protocol.dataReceived(good + b"\x01\x00" + b"k" * 256)
    assert answers.value().count(b"_answer") == 1
    assert answers.disconnecting


# ------------------------------------------------------- bounds on one request


def _amp_server(limits: RequestLimits | None = None):
    node = FakeRaftNode("1", "10.0.0.1:7001")
    frontend = make_frontend(node, Clock(), forward=False, limits=limits)
    protocol = make_amp_factory(frontend).buildProtocol(None)
    answers = StringTransport()
    protocol.makeConnection(answers)
    return node, protocol, answers


def _put_bytes(value_size: int) -> bytes:
    recorder = amp.AMP()
    sent = StringTransport()
    recorder.makeConnection(sent)
    recorder.callRemote(cc.Put, key="k", value="v" * value_size)
    return sent.value()


def test_a_request_over_the_byte_bound_is_refused_as_its_bytes_arrive():
    """A put far over the bound is answered INVALID_REQUEST and closed after the first
    64 KiB reads past the bound, and nothing of it stays buffered."""
    limits = RequestLimits(max_value_bytes=100_000)
    node, protocol, answers = _amp_server(limits)
    stream = _put_bytes(10 * 1024 * 1024)
    bound = limits.request_bytes
    read = 0
    while not answers.disconnecting:
        assert read <= bound + 65536, "still reading past the bound"
        protocol.dataReceived(stream[read : read + 65536])
        read += 65536
    assert b"INVALID_REQUEST" in answers.value()
    assert f"larger than {bound} bytes".encode() in answers.value()
    assert b"a value may have at most 100000 bytes" in answers.value()  # what users set
    assert protocol._unprocessed == b"" and protocol._currentBox is None
    assert node.calls == []
    protocol.dataReceived(stream[read : read + 65536])  # what was in flight is ignored
    assert protocol._unprocessed == b""


def test_a_request_just_under_the_bound_is_served():
    """A maximal value (over many reads) is still accepted: the bound leaves room for it."""
    limits = RequestLimits(max_value_bytes=300_000)
    _node, protocol, answers = _amp_server(limits)
    stream = _put_bytes(300_000)
    for start in range(0, len(stream), 65536):
        protocol.dataReceived(stream[start : start + 65536])
    assert not answers.disconnecting
    assert answers.value().count(b"_answer") == 1


def test_many_requests_in_a_row_never_add_up_to_the_bound():
    """The bound is per request: the count starts again after every box."""
    limits = RequestLimits(max_value_bytes=70_000)
    _node, protocol, answers = _amp_server(limits)
    stream = _put_bytes(70_000) * 10
    for start in range(0, len(stream), 1000):
        protocol.dataReceived(stream[start : start + 1000])
    assert not answers.disconnecting
    assert answers.value().count(b"_answer") == 10


@pytest.mark.parametrize(
    "command, message",
    [
        ("PUT " + "k" * 3000 + " v", "key is 3000 bytes; the limit is 1024"),
        ('["put", "' + "k" * 3000 + '", "v", null]', "key is 3000 bytes"),
        ('["cas", "' + "k" * 3000 + '", null, "v", null]', "key is 3000 bytes"),
        ('["append", "k", "s", ["' + "c" * 200 + '", 1, 1]]', "client_id is 200 bytes"),
        ("DELETE " + "k" * 3000, "key is 3000 bytes"),
        ("GET " + "k" * 3000, "key is 3000 bytes"),
        ("FROB k", "unknown command"),
    ],
)
def test_raw_submitted_commands_pass_the_same_limits_as_put(command, message):
    """``submit "PUT <3000-byte key> v"`` is refused as a put of that key is; nothing proposed.

    (A value over the limit already makes the command itself over it.)
    """
    net = FakeNetwork()
    node = FakeRaftNode("1", "10.0.0.1:7001")
    net.serve(LEADER, node, limits=RequestLimits(max_key_bytes=1024))
    c = amp.AMP()
    net.connect(LEADER, c)
    d = capture(c.callRemote(cc.Submit, command=command))
    net.run(d, limit=20)
    assert message in str(failure_of(d, InvalidRequest).value)
    assert node.calls == []


def test_client_connections_come_and_go_without_a_log_line_each():
    """AMP logs every connection made and lost; a client churning connections must not
    fill the node's log, so the client API does not."""
    from twisted.internet.error import ConnectionDone
    from twisted.logger import globalLogPublisher
    from twisted.python.failure import Failure

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for _ in range(3):
            _node, protocol, _answers = _amp_server()
            protocol.connectionLost(Failure(ConnectionDone()))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if "connection" in str(e.get("log_format", ""))]


def test_forwarding_to_a_silent_leader_gives_up_after_the_attempt_timeout(h):
    """A paused leader costs the forwarding follower one attempt timeout, not the whole timeout."""
    from twisted.internet.protocol import Factory, Protocol

    h.net.listen(LEADER, Factory.forProtocol(Protocol))  # accepts, never answers
    c = h.client(FOLLOWER)
    d = capture(c.callRemote(cc.Get, key="k"))
    h.net.run(d, step=0.01, limit=20)
    f = failure_of(d, CommitTimeout)
    assert "10.0.0.1:7001 is not answering" in str(f.value)
    assert h.net.clock.seconds() < 1.2


@pytest.mark.parametrize(
    "command, arguments",
    [
        (cc.Put, {"key": "k", "value": "v"}),
        (cc.Get, {"key": "k"}),
        (cc.Get, {"key": "k", "stale": True}),
        (cc.Delete, {"key": "k"}),
        (cc.Cas, {"key": "k", "new": "v"}),
        (cc.Append, {"key": "k", "suffix": "v"}),
        (cc.RegisterSession, {}),
    ],
)
def test_key_value_requests_on_an_executor_cluster_are_refused_clearly(command, arguments):
    """On a node with an executor, KV requests get one clear InvalidRequest; nothing is proposed."""
    h = Harness()
    h.leader.executor = object()  # the node applies entries in an executor process
    h.follower.executor = object()
    h.net.serve(LEADER, h.leader)
    h.net.serve(FOLLOWER, h.follower)
    for address, node in ((LEADER, h.leader), (FOLLOWER, h.follower)):
        f = failure_of(h.call(h.client(address), command, **arguments), InvalidRequest)
        assert "this cluster runs an executor" in str(f.value)
        assert "use submit/query" in str(f.value)
        assert node.calls == []
    assert h.leader.calls == []


def test_the_shared_fake_node_base_provides_iraftnode():
    """Every fake built on FakeNodeBase provides all of IRaftNode."""
    from leeky_twisted.testing.fakes import FakeNodeBase

    assert verifyObject(IRaftNode, FakeNodeBase())


@pytest.mark.parametrize(
    ("code", "description", "said"),
    [
        (amp.UNKNOWN_ERROR_CODE, "Unknown Error", "failed while answering (an internal error"),
        (amp.UNHANDLED_ERROR_CODE, "Unhandled Command: b'Put'", "does not know this request"),
        (b"SOMETHING_NEW", "the disk is full", "refused it: the disk is full"),
    ],
)
def test_a_leader_error_on_a_forwarded_request_is_said_in_words(code, description, said):
    """When the leader fails a request a follower passed on, the client learns which
    node failed and how, in words (no AMP error codes or command names)."""
    clock = Clock()

    class Pool:
        def connection(self, address):
            return succeed(proto)

    class Failing:
        def callRemote(self, command, **arguments):
            return fail(amp.RemoteAmpError(code, description))

    proto = Failing()
    forwarder = LeaderForwarder(Pool(), clock, timeout=5.0)  # type: ignore[arg-type]
    d = capture(Deferred.fromCoroutine(forwarder.call("10.0.0.1:7001", cc.Put, {"key": "k"})))
    f = failure_of(d, LeekyError)
    message = str(f.value)
    assert message.startswith("the leader at 10.0.0.1:7001 ")
    assert said in message
    assert "leader failed" not in message and "Unhandled" not in message
    assert "UNKNOWN" not in message
