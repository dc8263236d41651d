"""Revisions, ranges and transactions over both client APIs (AMP and JSON-RPC)."""

from __future__ import annotations

import json

import pytest
from test_amp_api import FOLLOWER, Harness
from test_jsonrpc_api import Harness as RPCHarness

from leeky_twisted.api import coord
from leeky_twisted.api.amp_api import RequestLimits
from leeky_twisted.api.jsonrpc_api import INVALID_PARAMS
from leeky_twisted.protocol import commands as cc
from leeky_twisted.protocol.errors import InvalidRequest, LeekyError
from leeky_twisted.statemachine import commands as kv_commands
from leeky_twisted.statemachine.commands import Range, Txn, decode_command
from leeky_twisted.testing.apifakes import failure_of, result_of


@pytest.fixture
def h():
    return Harness()


@pytest.fixture
def rpc():
    return RPCHarness()


def _range(h, c, **arguments):
    return json.loads(result_of(h.call(c, cc.Range, **arguments))["result"])


def _txn(h, c, document, **arguments):
    answer = h.call(c, cc.Txn, txn=json.dumps(document), **arguments)
    return json.loads(result_of(answer)["result"])


LOCK = {
    "compare": [{"key": "lock", "target": "version", "op": "==", "value": 0}],
    "success": [{"type": "put", "key": "lock", "value": "me"}],
    "failure": [{"type": "range", "key": "lock"}],
}


# ------------------------------------------------------------------- AMP


def test_amp_range_prefix_limit_and_revision(h):
    """Range answers sorted keys with revisions, the read revision, count and more."""
    c = h.client()
    for key in ["b/2", "a/1", "b/1", "b/3", "c"]:
        h.call(c, cc.Put, key=key, value=key.upper())
    whole = _range(h, c, start="b/", prefix=True)
    assert [kv["key"] for kv in whole["kvs"]] == ["b/1", "b/2", "b/3"]
    assert whole["kvs"][0] == {
        "key": "b/1",
        "value": "B/1",
        "create_revision": 3,
        "mod_revision": 3,
        "version": 1,
    }
    assert (whole["revision"], whole["count"], whole["more"]) == (5, 3, False)
    some = _range(h, c, start="a", end="c", limit=2, keys_only=True)
    assert [kv["key"] for kv in some["kvs"]] == ["a/1", "b/1"] and some["more"]
    assert "value" not in some["kvs"][0]
    assert _range(h, c, start="", count_only=True)["count"] == 5
    (_, request, linearizable, _) = h.leader.calls[-1]
    assert request == Range("", None, 0, False, True) and linearizable  # ReadIndex, as get


def test_amp_status_shows_the_revision(h):
    """Status carries the store's revision."""
    c = h.client()
    h.call(c, cc.Put, key="k", value="v")
    h.call(c, cc.Put, key="k", value="w")
    assert json.loads(result_of(h.call(c, cc.Status))["status"])["revision"] == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": "b", "end": "a"}, "is after its end"),
        ({"start": "a", "end": "b", "prefix": True}, "prefix range takes no end"),
        ({"start": "k" * 1025}, "range start is 1025 bytes"),
    ],
)
def test_amp_bad_range_is_a_clear_error(h, arguments, message):
    """A range with start > end (and other malformed ranges) is refused clearly."""
    f = failure_of(h.call(h.client(), cc.Range, **arguments), InvalidRequest)
    assert message in str(f.value)


def test_amp_txn_success_then_failure_branch(h):
    """The lock-style txn takes the success branch once, then the failure branch."""
    c = h.client()
    session = result_of(h.call(c, cc.RegisterSession))["session"]  # entry 1
    first = _txn(h, c, LOCK, client_id=session, seq=1)
    assert first == {"succeeded": True, "revision": 2, "responses": [None]}
    second = _txn(h, c, LOCK)
    assert not second["succeeded"]
    assert second["responses"][0]["kvs"][0]["value"] == "me"
    assert isinstance(decode_command(h.leader.calls[1][1]), Txn)


def test_amp_txn_is_forwarded_by_a_follower(h):
    """A follower relays a txn to the leader and its result back."""
    c = h.client(FOLLOWER)
    assert _txn(h, c, LOCK)["succeeded"]
    assert _range(h, c, start="lock", prefix=True)["kvs"][0]["value"] == "me"
    assert h.follower.state_machine.revision == 0


def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_amp_txn_on_the_leader_encodes_its_entry_once_and_builds_no_forward(h, monkeypatch):
    """On the leader a txn is encoded once, and no forwarding document is built for it."""
    encoded = _counting(monkeypatch, kv_commands, "encode_command")
    documents = _counting(monkeypatch, coord, "txn_document")
    c = h.client()
    assert _txn(h, c, LOCK)["succeeded"]
    assert len([a for a in encoded if isinstance(a[0], Txn)]) == 1
    assert documents == []


def test_amp_txn_through_a_follower_forwards_the_checked_document(h, monkeypatch):
    """A follower still builds the forwarding document, and only when it forwards."""
    documents = _counting(monkeypatch, coord, "txn_document")
    c = h.client(FOLLOWER)
    assert _txn(h, c, LOCK)["succeeded"]
    assert len(documents) == 1
    proposed = [call[1] for call in h.leader.calls if call[0] == "propose"]
    assert len(proposed) == 1 and isinstance(decode_command(proposed[0]), Txn)


def test_amp_txn_whose_node_raises_is_a_generic_error_and_keeps_the_connection(h, monkeypatch):
    """A node that raises (a bug) answers a txn with a generic error; the connection stays."""

    def broken(command, timeout):
        raise RuntimeError("boom")

    c = h.client()
    monkeypatch.setattr(h.leader, "propose", broken)
    f = failure_of(h.call(c, cc.Txn, txn=json.dumps(LOCK)), LeekyError)
    assert "internal error: boom" in str(f.value)
    monkeypatch.undo()
    assert _txn(h, c, LOCK)["succeeded"]


def test_rpc_txn_on_the_leader_encodes_its_entry_once_and_builds_no_forward(rpc, monkeypatch):
    """Over JSON-RPC too, a txn on the leader is encoded once, with no forwarding document."""
    encoded = _counting(monkeypatch, kv_commands, "encode_command")
    documents = _counting(monkeypatch, coord, "txn_document")
    assert rpc.result("txn", LOCK)["succeeded"] is True
    assert len([a for a in encoded if isinstance(a[0], Txn)]) == 1
    assert documents == []


def test_rpc_txn_through_a_follower_is_forwarded():
    """A follower's JSON-RPC txn reaches the leader, with its result back."""
    follower = RPCHarness(follower=True)
    assert follower.result("txn", LOCK)["succeeded"] is True
    assert follower.result("txn", LOCK)["succeeded"] is False
    assert follower.leader.state_machine.revision == 1 and follower.node.state_machine.revision == 0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "a transaction is a JSON object"),
        ({"compare": [], "bogus": 1}, "unknown transaction field 'bogus'"),
        ({"compare": [{"key": "k", "target": "size", "op": "==", "value": 1}]}, "target"),
        ({"compare": [{"key": "k", "target": "version", "op": "==", "value": "1"}]}, "integer"),
        ({"compare": [{"key": "k", "target": "mod", "op": "==", "value": 2**64}]}, "from 0 to"),
        ({"compare": [{"key": "k", "target": "version", "op": ">", "value": 1.5}]}, "integer"),
        ({"compare": [{"key": "k", "target": "create", "op": "==", "value": 2.0}]}, "integer"),
        ({"success": [{"type": "cas", "key": "k"}]}, "operation type"),
        ({"success": [{"type": "put", "key": "", "value": "v"}]}, "key must not be empty"),
        ({"success": [{"type": "range", "start": "b", "end": "a"}]}, "is after its end"),
        ({"success": [{"type": "delete", "key": "k"}] * 129}, "at most 128"),
    ],
)
def test_amp_malformed_txn_is_refused_and_nothing_proposed(h, document, message):
    """Each malformed transaction gets a clear error naming the problem; nothing is proposed."""
    f = failure_of(h.call(h.client(), cc.Txn, txn=json.dumps(document)), InvalidRequest)
    assert message in str(f.value)
    assert not [call for call in h.leader.calls if call[0] == "propose"]


def test_amp_txn_too_large_for_one_entry_is_refused():
    """A txn whose entry would pass max_txn_bytes is refused with its size and the limit."""
    h = Harness(limits=RequestLimits(max_value_bytes=1000))
    puts = [{"type": "put", "key": f"k{i}", "value": "x" * 900} for i in range(3)]
    f = failure_of(h.call(h.client(), cc.Txn, txn=json.dumps({"success": puts})), InvalidRequest)
    assert "too large for one log entry" in str(f.value) and "limit is 2000" in str(f.value)
    assert h.leader.state_machine.revision == 0


def test_amp_txn_that_is_not_json_is_refused(h):
    """Bytes that are not JSON get a clear error."""
    f = failure_of(h.call(h.client(), cc.Txn, txn="{nope"), InvalidRequest)
    assert "not a JSON document" in str(f.value)


def test_amp_executor_cluster_refuses_ranges_and_txns():
    """A node that runs a remote executor has no key-value store: clear refusal."""
    h2 = Harness()
    h2.leader.executor = object()
    h2.net.servers.clear()
    h2.net.serve(("10.0.0.1", 7001), h2.leader)
    c = h2.client()
    assert "executor" in str(failure_of(h2.call(c, cc.Range, start="a"), InvalidRequest).value)
    f = failure_of(h2.call(c, cc.Txn, txn=json.dumps(LOCK)), InvalidRequest)
    assert "executor" in str(f.value)


# -------------------------------------------------------------- JSON-RPC


def test_rpc_get_with_revisions_range_and_prefix(rpc):
    """get {"revisions": true}, range and range_prefix over JSON-RPC."""
    rpc.result("put", "p/1", "a")
    rpc.result("put", "p/2", "b")
    rpc.result("put", "p/1", "c")
    got = rpc.result("get", "p/1", {"revisions": True})
    assert got == {
        "revision": 3,
        "kv": {"key": "p/1", "value": "c", "create_revision": 1, "mod_revision": 3, "version": 2},
    }
    assert rpc.result("get", "nope", {"revisions": True}) == {"revision": 3, "kv": None}
    assert [kv["key"] for kv in rpc.result("range_prefix", "p/")["kvs"]] == ["p/1", "p/2"]
    limited = rpc.result("range", "p/", "p0", {"limit": 1, "keys_only": True})
    assert limited["kvs"] == [{"key": "p/1", "create_revision": 1, "mod_revision": 3, "version": 2}]
    assert limited["more"] and limited["count"] == 2
    assert rpc.result("status")["revision"] == 3


def test_rpc_txn_and_its_errors(rpc):
    """txn over JSON-RPC; bad ranges, options and documents are invalid params."""
    assert rpc.result("txn", LOCK)["succeeded"] is True
    assert rpc.result("txn", LOCK)["succeeded"] is False
    session = {"session": rpc.result("register_session"), "seq": 1}
    assert rpc.result("txn", {"success": [{"type": "delete", "key": "lock"}]}, session)[
        "responses"
    ] == [True]
    error = rpc.error("range", "b", "a")
    assert error["code"] == INVALID_PARAMS and "is after its end" in error["message"]
    assert rpc.error("range", "a", None, {"bogus": 1})["code"] == INVALID_PARAMS
    assert rpc.error("range", "a", None, {"limit": -1})["code"] == INVALID_PARAMS
    assert "operation type" in rpc.error("txn", {"success": [{"type": "x"}]})["message"]
    floating = {"compare": [{"key": "lock", "target": "version", "op": ">", "value": 1.5}]}
    proposed = len([c for c in rpc.leader.calls if c[0] == "propose"])
    error = rpc.error("txn", floating)
    assert error["code"] == INVALID_PARAMS and "integer" in error["message"]
    assert len([c for c in rpc.leader.calls if c[0] == "propose"]) == proposed
    assert rpc.error("get", "k", {"revisions": "yes"})["code"] == INVALID_PARAMS


def test_amp_txn_in_a_session_skips_amps_command_machinery(h, monkeypatch):
    """A client's Txn is read and answered directly: no AMP argument parsing or response objects."""
    parsed = _counting(monkeypatch, cc.Txn, "parseArguments")
    made = _counting(monkeypatch, cc.Txn, "makeResponse")
    c = h.client()
    session = result_of(h.call(c, cc.RegisterSession))["session"]
    answer = _txn(h, c, LOCK, client_id=session, seq=1, ack=1)
    assert answer == {"succeeded": True, "revision": 2, "responses": [None]}
    assert (parsed, made) == ([], [])
    assert _txn(h, c, LOCK, client_id=session, seq=1, ack=1) == answer  # a retry: cached


def test_amp_txn_errors_on_the_direct_path_are_the_errors_of_amps_path(h):
    """The same refusal, with the same words, whichever path a request takes."""
    c = h.client()
    session = result_of(h.call(c, cc.RegisterSession))["session"]
    bad = json.dumps({"success": [{"type": "explode"}]})
    direct = failure_of(h.call(c, cc.Txn, txn=bad, client_id=session, seq=1, ack=1), InvalidRequest)
    usual = failure_of(h.call(c, cc.Txn, txn=bad, client_id=session, seq=2), InvalidRequest)
    assert str(direct.value) == str(usual.value) and "operation type" in str(direct.value)
    f = failure_of(h.call(c, cc.Txn, txn="{nope", client_id=session, seq=3, ack=3), InvalidRequest)
    assert "not a JSON document" in str(f.value)
    assert _txn(h, c, LOCK, client_id=session, seq=4, ack=4)["succeeded"]  # the connection stays
