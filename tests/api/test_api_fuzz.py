"""Fuzz the client-facing decoders: AMP request boxes and JSON-RPC bodies (issue 19).

Whatever a client sends, it gets an answer or a clear error, the node logs no
traceback, the connection survives anything that is still AMP, and no number
outside the documented bounds reaches the node.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.protocols import amp

from leeky_twisted.api.amp_api import make_amp_factory, make_frontend
from leeky_twisted.api.jsonrpc_api import INVALID_REQUEST, PARSE_ERROR, KeyValueJSONRPC
from leeky_twisted.protocol import commands as cc
from leeky_twisted.statemachine.commands import CommandDecodeError, decode_command
from leeky_twisted.testing.apifakes import FakeRaftNode, result_of


class Failures:
    """Collect every logged failure (traceback) while in use."""

    def __enter__(self) -> list[dict]:
        self.events: list[dict] = []
        self._observer = lambda e: self.events.append(e) if "log_failure" in e else None
        globalLogPublisher.addObserver(self._observer)
        return self.events

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self._observer)


def _node_and_protocol():
    node = FakeRaftNode("1", "10.0.0.1:7001")
    protocol = make_amp_factory(make_frontend(node, Clock(), forward=False)).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return node, protocol, transport


def _proposed_sessions(node) -> list:
    sessions = []
    for call in node.calls:
        if call[0] == "propose":
            try:
                command = decode_command(call[1])
            except CommandDecodeError:  # a raw Submit: the state machine refuses it
                continue
            session = getattr(command, "session", None)
            if session is not None:
                sessions.append(session)
    return sessions


# ------------------------------------------------------------------ client AMP

COMMANDS = [
    b"Put",
    b"Get",
    b"Delete",
    b"Cas",
    b"Append",
    b"Status",
    b"Members",
    b"AddServer",
    b"RemoveServer",
    b"TransferLeader",
    b"Submit",
    b"Query",
    b"Bogus",
]
ARGUMENT_NAMES = [
    b"key",
    b"key.1",
    b"value",
    b"value.1",
    b"expected",
    b"new",
    b"suffix",
    b"client_id",
    b"seq",
    b"ack",
    b"forwarded",
    b"stale",
    b"node_id",
    b"address",
    b"voter",
    b"command",
    b"request",
]
numbers_as_text = st.one_of(
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.sampled_from([b"9" * 25, b"9" * 5000, b"-0", b"+1", b" 1", b"1_000", b"\xd9\xa1", b""]),
)
argument_values = st.one_of(
    st.binary(max_size=12),
    numbers_as_text,
    st.sampled_from([b"True", b"False", b"true", b"k", b"c"]),
)


@st.composite
def request_boxes(draw: st.DrawFn) -> amp.AmpBox:
    """A client request box with known and unknown argument names and any values."""
    box = {amp.COMMAND: draw(st.sampled_from(COMMANDS))}
    if draw(st.booleans()):
        box[amp.ASK] = b"%d" % draw(st.integers(1, 10**6))
    names = draw(st.lists(st.sampled_from(ARGUMENT_NAMES), max_size=6, unique=True))
    names += draw(st.lists(st.binary(min_size=1, max_size=8), max_size=2))
    for name in names:
        if name not in (amp.COMMAND, amp.ASK, amp.ANSWER, amp.ERROR):
            box[name] = draw(argument_values)
    return amp.AmpBox(box)


@settings(max_examples=300, deadline=None)
@given(boxes=st.lists(request_boxes(), min_size=1, max_size=4))
def test_fuzz_client_amp_boxes(boxes):
    """Any request boxes: no traceback, the connection stays, only bounded sessions go on."""
    node, protocol, transport = _node_and_protocol()
    with Failures() as failures:
        protocol.dataReceived(b"".join(box.serialize() for box in boxes))
    assert failures == []
    assert not transport.disconnecting
    for session in _proposed_sessions(node):
        assert 0 <= session.ack <= session.seq <= cc.MAX_SEQ


@pytest.mark.parametrize(
    "seq", [b"9223372036854775808", b"9" * 30, b"9" * 5000, b"-1", b"x", b"1e3", b""]
)
def test_session_numbers_out_of_bounds_are_invalid_requests(seq):
    """A seq beyond 2**63-1 or not a number is INVALID_REQUEST; nothing is proposed."""
    node, protocol, transport = _node_and_protocol()
    box = amp.AmpBox(_command=b"Put", _ask=b"1", key=b"k", value=b"v", client_id=b"c", seq=seq)
    with Failures() as failures:
        protocol.dataReceived(box.serialize())
    answer = transport.value()
    assert b"INVALID_REQUEST" in answer and b"from 0 to 9223372036854775807" in answer
    assert node.calls == [] and failures == [] and not transport.disconnecting


def test_largest_session_number_is_accepted():
    """seq = ack = 2**63-1 is a valid session."""
    node, protocol, transport = _node_and_protocol()
    top = b"%d" % cc.MAX_SEQ
    box = amp.AmpBox(
        _command=b"Put", _ask=b"1", key=b"k", value=b"v", client_id=b"c", seq=top, ack=top
    )
    protocol.dataReceived(box.serialize())
    # decoded and proposed (the state machine then refuses the unregistered session)
    assert b"INVALID_REQUEST" not in transport.value()
    assert [(s.seq, s.ack) for s in _proposed_sessions(node)] == [(cc.MAX_SEQ, cc.MAX_SEQ)]


def test_a_malformed_boolean_is_an_invalid_request_not_a_dropped_connection():
    """A flag that is neither True nor False is answered INVALID_REQUEST, without a traceback."""
    _, protocol, transport = _node_and_protocol()
    with Failures() as failures:
        protocol.dataReceived(
            amp.AmpBox(_command=b"Get", _ask=b"1", key=b"k", stale=b"x").serialize()
        )
    assert b"INVALID_REQUEST" in transport.value()
    assert failures == [] and not transport.disconnecting


# ------------------------------------------------------------------ JSON-RPC


def _resource() -> KeyValueJSONRPC:
    return KeyValueJSONRPC(make_frontend(FakeRaftNode("1"), Clock(), forward=False), 1 << 20)


def _answer(body: bytes):
    resource = _resource()
    with Failures() as failures:
        answer = result_of(resource.answer(body))
    assert failures == []
    if answer is not None:
        json.dumps(answer, allow_nan=False)  # strict JSON: no NaN or Infinity goes back
        for one in answer if isinstance(answer, list) else [answer]:
            assert one["jsonrpc"] == "2.0"
            assert ("result" in one) != ("error" in one)
    return answer


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def calls(draw: st.DrawFn) -> object:
    """A call object close to a valid one, with any id and params."""
    call = {
        "jsonrpc": draw(st.sampled_from(["2.0", "2.0", "1.0", 2])),
        "method": draw(st.sampled_from(["put", "get", "delete", "cas", "append", "status", "x"])),
        "params": draw(st.one_of(st.lists(json_values, max_size=4), json_values)),
    }
    if draw(st.booleans()):
        call["id"] = draw(st.one_of(json_scalars, st.text(min_size=250, max_size=300)))
    return call


@settings(max_examples=300, deadline=None)
@given(call=st.one_of(calls(), st.lists(calls(), max_size=3), json_values))
def test_fuzz_jsonrpc_bodies(call):
    """Any JSON body (NaN, huge numbers and all) gets a strict-JSON answer and logs no traceback."""
    _answer(json.dumps(call).encode())


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=60))
def test_fuzz_jsonrpc_random_bytes(body):
    """Random bytes get an answer, never an exception."""
    _answer(body)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"jsonrpc":"2.0","method":"status","id":NaN}', PARSE_ERROR),
        (b'{"jsonrpc":"2.0","method":"status","id":1e999}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"status","id":9223372036854775808}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"status","id":"' + b"i" * 257 + b'"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","method":"put","params":["k",Infinity],"id":1}', PARSE_ERROR),
    ],
)
def test_out_of_bounds_ids_and_constants_are_refused(body, code):
    """NaN/Infinity are not JSON; ids are bounded (they are echoed back)."""
    answer = _answer(body)
    assert answer["error"]["code"] == code


def test_bounded_ids_are_echoed():
    """The largest integer id, a 256-character id and a finite float id are answered."""
    for request_id in (2**63 - 1, -(2**63), "i" * 256, 1.5):
        body = json.dumps({"jsonrpc": "2.0", "method": "status", "id": request_id}).encode()
        assert _answer(body)["id"] == request_id
