"""Tests for the JSON-RPC 2.0 resource, over treq's StubTreq and a raw HTTP channel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from treq.testing import StubTreq
from twisted.internet.testing import StringTransport

from leeky_twisted.api.amp_api import make_frontend
from leeky_twisted.api.jsonrpc_api import (
    COMMIT_TIMEOUT,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_LEADER,
    PARSE_ERROR,
    SESSION_EXPIRED,
    UNAVAILABLE,
    make_http_site,
)
from leeky_twisted.protocol.errors import NotLeader
from leeky_twisted.protocol.jsonrpc import positional_arity as _positional_arity
from leeky_twisted.statemachine.commands import Get
from leeky_twisted.testing.apifakes import FakeNetwork, FakeRaftNode, result_of

LEADER = ("10.0.0.1", 7001)
URL = "http://node/jsonrpc"


class Harness:
    """A node's JSON-RPC site under StubTreq; a leader behind it over a fake AMP network."""

    def __init__(self, *, follower: bool = False, max_body_bytes: int | None = None) -> None:
        self.net = FakeNetwork()
        self.leader = FakeRaftNode("1", "10.0.0.1:7001")
        self.net.serve(LEADER, self.leader)
        self.node = FakeRaftNode("2") if follower else self.leader
        if follower:
            self.node.not_leader = NotLeader("1", "10.0.0.1:7001")
        frontend = make_frontend(self.node, self.net.clock, connect=self.net.connect)
        self.site = make_http_site(frontend, max_body_bytes=max_body_bytes)
        self.stub = StubTreq(self.site.resource)

    def settle(self, d):
        outcome = []
        d.addBoth(lambda r: outcome.append(r) or r)
        for _ in range(400):
            if outcome:
                break
            self.stub.flush()
            self.net.flush()
            if not outcome:
                self.net.clock.advance(0.05)  # let retries and timeouts run
        return result_of(d)

    def post(self, body: bytes, method: str = "POST"):
        response = self.settle(self.stub.request(method, URL, data=body))
        content = self.settle(self.stub.content(response))
        return response.code, json.loads(content) if content else None

    def rpc(self, method, *params, request_id=1):
        body = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id}
        code, answer = self.post(json.dumps(body).encode())
        assert code == 200
        assert answer["jsonrpc"] == "2.0" and answer["id"] == request_id
        return answer

    def result(self, method, *params):
        answer = self.rpc(method, *params)
        assert "error" not in answer, answer
        return answer["result"]

    def error(self, method, *params):
        answer = self.rpc(method, *params)
        assert "result" not in answer, answer
        return answer["error"]


@pytest.fixture
def h():
    return Harness()


def test_methods_have_the_documented_names_and_shapes(h):
    """put/get/delete/cas/append/status answer as users' scripts expect."""
    assert h.result("put", "k", "v") is True
    assert h.result("get", "k") == "v"
    assert h.result("get", "missing") is None
    assert h.result("cas", "k", "x", "w") is False
    assert h.result("cas", "k", "v", "w") is True
    assert h.result("cas", "n", None, "1") is True
    assert h.result("append", "n", "23") == 3
    assert h.result("delete", "k") is True
    assert h.result("delete", "k") is False
    status = h.result("status")
    assert {"id", "role", "term", "leader", "commit_index", "applied_index"} <= set(status)


def test_get_with_stale_option_reads_locally(h):
    """get(key, {"stale": true}) asks the node for a non-linearizable read."""
    h.result("put", "k", "v")
    assert h.result("get", "k", {"stale": True}) == "v"
    assert h.leader.calls[-1] == ("read", Get("k"), False, 5.0)


def test_writes_in_a_registered_session_are_applied_once(h):
    """register_session opens a session; a retried (session, seq) answers its first result."""
    session = h.result("register_session")
    assert session.startswith("1.")
    write = {"session": session, "seq": 1, "ack": 1}
    assert h.result("append", "k", "x", write) == 1
    assert h.result("append", "k", "x", write) == 1
    assert h.result("put", "p", "v", {"session": session, "seq": 2}) is True
    assert h.result("cas", "p", "v", "w", {"session": session, "seq": 3}) is True
    assert h.result("delete", "p", {"session": session, "seq": 4}) is True
    assert h.result("get", "k") == "x"


def test_a_write_in_an_unknown_session_is_session_expired_and_changes_nothing(h):
    """A session the cluster does not hold gets -32004, distinct from other errors."""
    for method, params in [("put", ["k", "v"]), ("append", ["k", "v"]), ("delete", ["k"])]:
        error = h.error(method, *params, {"session": "9.gone", "seq": 1})
        assert error["code"] == SESSION_EXPIRED
        assert "unknown or expired" in error["message"]
    assert h.result("get", "k") is None
    assert h.leader.state_machine.session_ids() == []


def test_session_expired_is_relayed_by_a_follower():
    """Forwarded through a follower, the refusal keeps its code."""
    h = Harness(follower=True)
    session = h.result("register_session")
    assert h.leader.state_machine.session_ids() == [session]
    assert h.result("append", "k", "x", {"session": session, "seq": 1}) == 1
    error = h.error("append", "k", "x", {"session": "1.other", "seq": 1})
    assert error["code"] == SESSION_EXPIRED
    assert h.leader.state_machine.query(Get("k")) == "x"


def test_named_params_work_too(h):
    """Params given as an object bind by name."""
    code, answer = h.post(
        b'{"jsonrpc":"2.0","method":"put","params":{"key":"k","value":"v"},"id":"a"}'
    )
    assert (code, answer["result"], answer["id"]) == (200, True, "a")


def test_a_follower_forwards_to_the_leader_transparently():
    """A JSON-RPC put on a follower is forwarded over AMP and answered normally."""
    h = Harness(follower=True)
    assert h.result("put", "k", "v") is True
    assert h.result("get", "k") == "v"
    assert h.leader.state_machine.query(Get("k")) == "v"
    assert h.node.state_machine.last_applied == 0


def test_not_leader_without_known_leader_is_an_error_with_data():
    """With no leader to forward to, the error says so and carries the (empty) hint."""
    h = Harness(follower=True)
    h.node.not_leader = NotLeader()
    error = h.error("put", "k", "v")
    assert error["code"] == NOT_LEADER
    assert error["data"] == {"leader_id": None, "leader_address": None}


def test_follower_waits_for_the_leader_address_then_forwards():
    """During an election the follower retries until the leader's address is known."""
    h = Harness(follower=True)
    h.node.not_leader = NotLeader("1", None)
    h.net.clock.callLater(0.3, setattr, h.node, "not_leader", NotLeader("1", "10.0.0.1:7001"))
    assert h.result("put", "k", "v") is True
    assert h.net.clock.seconds() >= 0.3
    assert h.result("get", "k") == "v"


def test_unreachable_leader_is_unavailable():
    """A leader whose address refuses connections gives an 'unavailable' error."""
    h = Harness(follower=True)
    h.node.not_leader = NotLeader("9", "10.0.0.9:1")
    assert h.error("get", "k")["code"] == UNAVAILABLE


def test_commit_timeout_is_reported_as_outcome_unknown(h):
    """CommitTimeout becomes the error 'timed out, outcome unknown'."""
    h.leader.commit_timeout = True
    error = h.error("put", "k", "v")
    assert error == {"code": COMMIT_TIMEOUT, "message": "timed out, outcome unknown"}


def test_unexpected_errors_are_internal_errors(h):
    """A bug in the node yields -32603, and the next call works."""
    h.leader.crash = RuntimeError("boom")
    assert h.error("put", "k", "v")["code"] == INTERNAL_ERROR
    h.leader.crash = None
    assert h.result("put", "k", "v") is True


def test_malformed_json_is_a_parse_error(h):
    """A body that is not JSON gets -32700 with a null id."""
    code, answer = h.post(b'{"jsonrpc": "2.0", "method": ')
    assert code == 200
    assert answer["error"]["code"] == PARSE_ERROR and answer["id"] is None


def test_body_that_is_not_utf8_is_a_parse_error(h):
    """Invalid UTF-8 is a parse error too."""
    assert h.post(b'{"method": "\xff"}')[1]["error"]["code"] == PARSE_ERROR


def test_unknown_method_is_method_not_found(h):
    """An unknown method gets -32601."""
    assert h.error("frobnicate", "k")["code"] == METHOD_NOT_FOUND


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("put", ["k"], "invalid params"),
        ("put", ["k", "v", None, {}, "x"], "invalid params"),
        ("put", ["k", "v", None, "x"], "put options must be an object"),
        ("put", ["k", "v", "w"], "session must be an object"),
        ("put", ["k", "v", {"session": "1.a", "sequence": 1}], "session must be an object"),
        ("put", ["k", "v", {"session": "1.a"}], "needs both session and seq"),
        ("append", ["k", "v", {"session": 7, "seq": 1}], "client_id must be a string"),
        ("delete", ["k", {"session": "1.a", "seq": 1, "ack": 2}], "ack <= seq"),
        ("put", [1, "v"], "key must be a string, not a number"),
        ("put", ["k", None], "value must be a string, not null"),
        ("put", ["", "v"], "key must not be empty"),
        ("put", ["k" * 2000, "v"], "key is 2000 bytes"),
        ("put", ["\ud800", "v"], "key is not valid UTF-8"),
        ("get", ["k", {"fresh": True}], "options must be an object"),
        ("get", ["k", {"stale": "yes"}], "stale must be true or false"),
        ("cas", ["k", 3, "v"], "expected must be a string"),
        ("status", ["extra"], "invalid params"),
    ],
)
def test_wrong_params_are_invalid_params(h, method, params, message):
    """Wrong parameter counts or types get -32602 with a clear message."""
    error = h.error(method, *params)
    assert error["code"] == INVALID_PARAMS
    assert message in error["message"]
    assert h.leader.index == 0


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"[1, 2]",
        b"42",
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"1.0","method":"get","params":["k"],"id":1}',
        b'{"jsonrpc":"x","method":"get","params":["k"],"id":1}',
        b'{"jsonrpc":"2.0","method":"get","params":"k","id":1}',
        b'{"jsonrpc":"2.0","method":"get","params":["k"],"id":{}}',
    ],
)
def test_malformed_requests_are_invalid_request(h, body):
    """Requests of the wrong shape get -32600 (one per batch element)."""
    code, answer = h.post(body)
    assert code == 200
    answers = answer if isinstance(answer, list) else [answer]
    assert all(a["error"]["code"] == INVALID_REQUEST for a in answers)


def test_batch_answers_each_call(h):
    """A batch gets an array of answers; notifications in it get none."""
    calls = [
        {"jsonrpc": "2.0", "method": "put", "params": ["k", "v"], "id": 1},
        {"jsonrpc": "2.0", "method": "put", "params": ["n", "1"]},
        {"jsonrpc": "2.0", "method": "get", "params": ["k"], "id": 2},
        {"jsonrpc": "2.0", "method": "nope", "id": 3},
    ]
    _, answer = h.post(json.dumps(calls).encode())
    assert [a.get("result", a.get("error", {}).get("code")) for a in answer] == [
        True,
        "v",
        METHOD_NOT_FOUND,
    ]
    assert h.leader.state_machine.query(Get("n")) == "1"


def test_a_notification_gets_no_body(h):
    """A request without an id is run and answered with 204 and no body."""
    code, answer = h.post(b'{"jsonrpc":"2.0","method":"put","params":["k","v"]}')
    assert (code, answer) == (204, None)
    assert h.leader.state_machine.query(Get("k")) == "v"


def test_a_body_of_several_megabytes_is_refused():
    """A 5 MB body gets a JSON-RPC error (HTTP 413) and the node keeps serving."""
    h = Harness()
    body = json.dumps({"jsonrpc": "2.0", "method": "put", "params": ["k", "x" * 5_000_000]})
    code, answer = h.post(body.encode())
    assert code == 413
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "too large" in answer["error"]["message"]
    assert h.result("put", "k", "v") is True
    assert h.leader.index == 1


def test_a_one_mebibyte_value_is_accepted(h):
    """The default body limit leaves room for a maximal value."""
    value = "x" * (1 << 20)
    assert h.result("put", "k", value) is True
    assert h.result("get", "k") == value


def test_only_post_is_allowed(h):
    """GET gets 405 with a JSON-RPC error."""
    code, answer = h.post(b"", method="GET")
    assert code == 405
    assert answer["error"]["code"] == INVALID_REQUEST


def _raw_http(site, request_bytes: bytes, chunks=()):
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(request_bytes)
    for chunk in chunks:
        channel.dataReceived(chunk)
    return transport.value()


def test_site_discards_a_declared_oversized_body_without_storing_it():
    """The site's requests stop storing a body whose Content-Length passes the limit."""
    h = Harness(max_body_bytes=1000)
    head = b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"
    response = _raw_http(h.site, head, [b"x" * 1_000_000] * 5)
    assert response.startswith(b"HTTP/1.1 413 ")
    assert b'"code": -32600' in response and b"too large" in response


def test_site_caps_a_chunked_body_too():
    """A chunked body past the limit is refused as well."""
    h = Harness(max_body_bytes=1000)
    head = b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (2000, b"y" * 2000)
    response = _raw_http(h.site, head, [chunk, b"0\r\n\r\n"])
    assert response.startswith(b"HTTP/1.1 413 ")


def test_site_serves_a_small_request_over_raw_http():
    """A normal request through the real Site and channel succeeds."""
    h = Harness()
    body = b'{"jsonrpc":"2.0","method":"put","params":["k","v"],"id":7}'
    head = b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    response = _raw_http(h.site, head + body)
    assert response.startswith(b"HTTP/1.1 200 ")
    assert response.endswith(b'{"jsonrpc": "2.0", "result": true, "id": 7}')


def test_importing_the_api_modules_leaves_the_global_reactor_alone():
    """No API module installs the global reactor on import (twistd --reactor must work)."""
    code = (
        "import sys, leeky_twisted.api.jsonrpc_api, leeky_twisted.api.amp_api, leeky_twisted.cli;"
        "print('twisted.internet.reactor' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert output.stdout.strip() == "False"


def test_positional_arity_counts_what_a_call_may_pass():
    """The count check behind positional calls agrees with the signatures it reads."""

    def two(a, b): ...
    def optional(a, b=None): ...
    def spread(a, *rest): ...
    def keyword_needed(a, *, b): ...
    def keyword_optional(a, *, b=1): ...

    assert _positional_arity(two) == (2, 2)
    assert _positional_arity(optional) == (1, 2)
    assert _positional_arity(spread) == (1, 1 << 30)
    assert _positional_arity(keyword_needed)[0] > 1000  # never taken without keywords
    assert _positional_arity(keyword_optional) == (1, 1)


def test_named_params_are_checked_against_the_signature(h):
    """Named params still go through the full signature check."""
    _, answer = h.post(
        json.dumps({"jsonrpc": "2.0", "method": "put", "params": {"key": "k"}, "id": 3}).encode()
    )
    assert answer["error"]["code"] == INVALID_PARAMS
    assert "invalid params" in answer["error"]["message"]
    _, answer = h.post(
        json.dumps(
            {"jsonrpc": "2.0", "method": "put", "params": {"key": "k", "value": "v"}, "id": 4}
        ).encode()
    )
    assert answer["result"] is True


@pytest.mark.parametrize(
    "method, params",
    [
        ("put", ["k", "v"]),
        ("get", ["k"]),
        ("get", ["k", {"stale": True}]),
        ("delete", ["k"]),
        ("cas", ["k", None, "v"]),
        ("append", ["k", "v"]),
        ("register_session", []),
    ],
)
def test_key_value_methods_on_an_executor_cluster_are_refused_clearly(method, params):
    """On a node with an executor, KV methods answer invalid params naming submit/query."""
    h = Harness()
    h.leader.executor = object()  # set after the harness's frontend was built
    frontend = make_frontend(h.leader, h.net.clock, connect=h.net.connect)
    h.stub = StubTreq(make_http_site(frontend).resource)
    error = h.error(method, *params)
    assert error["code"] == INVALID_PARAMS
    assert "this cluster runs an executor" in error["message"]
    assert "use submit/query" in error["message"]
    assert h.leader.calls == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": [1, 2.5, "\\u00e9", null, true]}',
        '{"a": "é"}'.encode("utf-8-sig"),  # a UTF-8 byte-order mark is allowed
        '{"a": "é"}'.encode("utf-16"),
        '{"a": "é"}'.encode("utf-32-le"),
        b'"\\ud800"',  # a lone surrogate escape parses, as json.loads lets it
    ],
)
def test_request_bodies_parse_as_json_loads_parses_them(body):
    """The shared decoder reads a body exactly as json.loads(body) does."""
    from leeky_twisted.protocol.jsonrpc import decode_body as _decode_body

    assert _decode_body(body) == json.loads(body)


@pytest.mark.parametrize("body", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"\xff", b"{"])
def test_the_shared_decoder_refuses_what_json_rpc_refuses(body):
    from leeky_twisted.protocol.jsonrpc import decode_body as _decode_body

    with pytest.raises(ValueError):
        _decode_body(body)


def test_methods_are_looked_up_once_and_unknown_names_are_not_remembered(h):
    """A found method is remembered by name; unknown and dotted names never are."""
    rpc = h.site.resource.children[b"jsonrpc"]
    assert h.result("put", "k", "v") is True
    assert h.result("put", "k", "w") is True
    assert set(rpc._functions) == {"put"}
    for name in ("frobnicate", "system.listMethods", "nope.put"):
        assert h.error(name, "k")["code"] == METHOD_NOT_FOUND
    assert h.error("frobnicate", "k")["code"] == METHOD_NOT_FOUND
    assert set(rpc._functions) == {"put"}
    assert h.result("get", "k") == "w"
    assert set(rpc._functions) == {"put", "get"}


@pytest.mark.parametrize(
    "command",
    [
        json.dumps(["register", "nonce-1"]),
        json.dumps(["lease_grant", 30, None]),
        json.dumps(["txn", [], [["del", "k"]], [], None]),
    ],
)
def test_submit_refuses_raw_commands_that_have_their_own_methods(h, command):
    """A raw register/lease/txn command is invalid params naming the methods to use,
    never an internal error (it once reached ``command.key`` and raised AttributeError)."""
    error = h.error("submit", command)
    assert error["code"] == INVALID_PARAMS, error
    assert "register_session, txn and the lease methods" in error["message"]
