"""Txn framed by hand: AMP's own bytes, the same arguments and answers, AMP's path otherwise."""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol import connection
from leeky_twisted.protocol.errors import InvalidRequest, NotLeader
from leeky_twisted.protocol.txnframes import txn_answer, txn_arguments, txn_request, txn_response

DOCUMENT = json.dumps({"success": [{"type": "put", "key": "k", "value": "v é"}]})


def _amp_request(tag: bytes, **arguments) -> bytes:
    """What AMP itself writes for a Txn call asking ``tag``."""
    box = cc.Txn.makeArguments(arguments, None)
    box[amp.COMMAND] = b"Txn"
    box[amp.ASK] = tag
    return box.serialize()


def _box(data: bytes) -> amp.AmpBox:
    return amp.parse(io.BytesIO(data))[0]


def test_a_txn_request_is_the_bytes_amp_writes():
    """The request framed by hand is AMP's, key for key."""
    got = txn_request(b"1f", DOCUMENT, "7.abc", 12, 10)
    assert got == _amp_request(b"1f", txn=DOCUMENT, client_id="7.abc", seq=12, ack=10)


@pytest.mark.parametrize(
    ("txn", "client_id", "seq", "ack"),
    [
        ("x" * 70000, "7.a", 1, 1),  # needs two AMP values
        (DOCUMENT, None, 1, 1),
        (DOCUMENT, "7.a", True, 1),
        (DOCUMENT, "7.a", -1, 1),
        (DOCUMENT, "7.a", 1, 2**63),
        (b"bytes", "7.a", 1, 1),
    ],
)
def test_an_unusual_request_is_left_to_amp(txn, client_id, seq, ack):
    """None (AMP's usual path) for anything but text and integers in bounds in one value each."""
    assert txn_request(b"1", txn, client_id, seq, ack) is None


def test_the_node_reads_the_arguments_amp_would_give_its_responder():
    """txn_arguments of AMP's request box equals AMP's own parsing, with or without a session."""
    for arguments in (
        {"txn": DOCUMENT, "client_id": "7.abc", "seq": 12, "ack": 10},
        {"txn": DOCUMENT},
    ):
        box = _box(_amp_request(b"3", **arguments))
        expected = cc.Txn.parseArguments(box, None)
        expected["forwarded"] = False
        assert txn_arguments(_box(_amp_request(b"3", **arguments))) == expected


@pytest.mark.parametrize(
    "extra",
    [
        {b"forwarded": b"True"},
        {b"txn.1": b"more"},
        {b"seq": b"-1"},
        {b"seq": b"12x"},
        {b"bogus": b"1"},
    ],
)
def test_the_node_leaves_unusual_requests_to_amp(extra):
    """A forwarded, split, malformed or unknown-keyed request: None (AMP parses and answers)."""
    box = _box(_amp_request(b"3", txn=DOCUMENT, client_id="7.a", seq=12, ack=10))
    box.update(extra)
    assert txn_arguments(box) is None
    half = _box(_amp_request(b"3", txn=DOCUMENT, client_id="7.a"))
    assert txn_arguments(half) is None


def test_a_txn_answer_is_the_bytes_amp_writes_and_reads_back():
    """The answer framed by hand is AmpBox's serialization; the client reads it as AMP would."""
    result = json.dumps({"succeeded": True, "revision": 9, "responses": [None]})
    answer = amp.AmpBox({b"result": result.encode()})
    answer[amp.ANSWER] = b"2a"
    assert txn_answer(b"2a", result) == answer.serialize()
    assert txn_response(answer) == cc.Txn.parseResponse(answer, None)
    assert txn_answer(b"2a", "x" * 70000) is None
    assert txn_response({b"result": b"a", b"result.1": b"b"}) is None


def _client():
    proto = connection._PooledAMP(lambda p: None, Clock())
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_the_client_sends_a_txn_framed_by_hand_and_reads_its_answer():
    """callRemote(Txn) in a session writes AMP's bytes at once and fires with the result."""
    proto, transport = _client()
    got = []
    proto.callRemote(cc.Txn, txn=DOCUMENT, client_id="7.a", seq=2, ack=1).addCallback(got.append)
    assert transport.value() == _amp_request(b"1", txn=DOCUMENT, client_id="7.a", seq=2, ack=1)
    proto.dataReceived(txn_answer(b"1", '{"succeeded": true}'))
    assert got == [{"result": '{"succeeded": true}'}]


@pytest.mark.parametrize(
    ("code", "kind"),
    [(cc.CLIENT_ERRORS[InvalidRequest], InvalidRequest), (cc.CLIENT_ERRORS[NotLeader], NotLeader)],
)
def test_the_client_turns_an_error_answer_into_the_commands_exception(code, kind):
    """An error box fails the call with the command's exception and its description."""
    proto, _ = _client()
    failed = []
    d = proto.callRemote(cc.Txn, txn=DOCUMENT, client_id="7.a", seq=2, ack=1)
    d.addErrback(failed.append)
    error = amp.AmpBox(_error=b"1", _error_code=code, _error_description=b"no such thing")
    proto.dataReceived(error.serialize())
    assert failed[0].check(kind) and "no such thing" in str(failed[0].value)


def test_a_client_call_without_a_session_goes_through_amp():
    """A Txn with other arguments (no session, forwarded) takes AMP's own path, same bytes."""
    proto, transport = _client()
    proto.callRemote(cc.Txn, txn=DOCUMENT)
    box = _box(transport.value())
    assert box[b"_command"] == b"Txn" and b"client_id" not in box
