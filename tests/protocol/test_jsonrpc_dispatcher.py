"""The shared JSON-RPC 2.0 dispatcher (protocol/jsonrpc.py), on a small resource of its own.

The client API and the executor wire are both this dispatcher with their own methods
and rules; their own tests (tests/api, tests/executor) check each end to end.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource

from leeky_twisted.executor.server import ExecutorJSONRPC
from leeky_twisted.protocol.jsonrpc import (
    MAX_BATCH,
    MAX_ID_CHARS,
    InvalidParams,
    JSONRPCResource,
    JSONRPCSite,
    RPCError,
    Rules,
)
from leeky_twisted.protocol.jsonrpc_codes import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

URL = "http://rpc.test/jsonrpc"


class Calculator(JSONRPCResource):
    """A resource with one method of each kind: sync, Deferred, refusing, broken."""

    def jsonrpc_add(self, a: int, b: int = 0) -> int:
        return a + b

    def jsonrpc_later(self, value: object) -> Deferred[object]:
        return succeed(value)

    def jsonrpc_positive(self, n: object) -> object:
        if not isinstance(n, int) or n <= 0:
            raise InvalidParams("n must be a positive integer")
        return n

    def jsonrpc_refuse(self) -> None:
        raise RPCError(-32050, "refused", {"why": "test"})

    def jsonrpc_boom(self) -> None:
        raise ZeroDivisionError("boom")


class StrictCalculator(Calculator):
    """The same methods under the executor's rules."""

    rules = Rules(batches=False, notifications=False, version_required=True)


def answer(body: bytes | str | object, rpc: JSONRPCResource | None = None) -> Any:
    """Return what the dispatcher answers ``body`` (JSON-encoded unless bytes)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    box: list[Any] = []
    (rpc or Calculator(10_000)).dispatch(body).addCallback(box.append)
    assert box, "the dispatcher answers synchronous methods at once"
    return box[0]


def call(method: str, params: object = (), request_id: object = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id}


def code_of(reply: dict[str, Any]) -> int:
    code: int = reply["error"]["code"]
    return code


def test_a_call_is_answered_with_its_result_and_id() -> None:
    assert answer(call("add", [2, 3], "x")) == {"jsonrpc": "2.0", "result": 5, "id": "x"}
    assert answer({"jsonrpc": "2.0", "method": "add", "params": {"a": 4}, "id": 2})["result"] == 4
    assert answer(call("later", ["v"]))["result"] == "v"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "method": "add", "params": [NaN], "id": 1}', PARSE_ERROR),
        (b'{"id": Infinity}', PARSE_ERROR),
        (b"\xff\xfe\xfd", PARSE_ERROR),
        (b"[" * 100_000, PARSE_ERROR),
        (b'"add"', INVALID_REQUEST),
        (b'{"jsonrpc": "1.0", "method": "add", "params": [1], "id": 1}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": 7, "id": 1}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": "add", "params": 3, "id": 1}', INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": "nope", "id": 1}', METHOD_NOT_FOUND),
        (b'{"jsonrpc": "2.0", "method": "no.such", "id": 1}', METHOD_NOT_FOUND),
        (b'{"jsonrpc": "2.0", "method": "add", "params": [], "id": 1}', INVALID_PARAMS),
        (b'{"jsonrpc": "2.0", "method": "add", "params": [1, 2, 3], "id": 1}', INVALID_PARAMS),
        (b'{"jsonrpc": "2.0", "method": "add", "params": {"c": 1}, "id": 1}', INVALID_PARAMS),
        (b'{"jsonrpc": "2.0", "method": "positive", "params": [-1], "id": 1}', INVALID_PARAMS),
        (b'{"jsonrpc": "2.0", "method": "boom", "id": 1}', INTERNAL_ERROR),
    ],
)
def test_each_kind_of_bad_call_gets_its_error_code(body: bytes, code: int) -> None:
    """Malformed JSON, requests, names, params and failures map to the JSON-RPC 2.0 codes."""
    reply = answer(body)
    assert reply["jsonrpc"] == "2.0" and code_of(reply) == code
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]


def test_an_rpc_error_keeps_its_code_message_and_data() -> None:
    reply = answer(call("refuse"))
    assert reply["error"] == {"code": -32050, "message": "refused", "data": {"why": "test"}}


def test_an_internal_error_names_the_failure() -> None:
    """An unexpected exception is -32603 with its message (the traceback goes to the log)."""
    reply = answer(call("boom"))
    assert reply["error"] == {"code": INTERNAL_ERROR, "message": "internal error: boom"}


@pytest.mark.parametrize(
    "request_id",
    [True, [1], {"a": 1}, "x" * (MAX_ID_CHARS + 1), 2**63, -(2**63) - 1],
)
def test_ids_are_bounded(request_id: object) -> None:
    """Only null, short strings, 64-bit integers and finite numbers are echoed back."""
    reply = answer(call("add", [1], request_id))
    assert code_of(reply) == INVALID_REQUEST and reply["id"] is None


@pytest.mark.parametrize("request_id", [None, "x" * MAX_ID_CHARS, 2**63 - 1, -(2**63), 1.5])
def test_acceptable_ids_are_echoed(request_id: object) -> None:
    assert answer(call("add", [1], request_id)) == {
        "jsonrpc": "2.0",
        "result": 1,
        "id": request_id,
    }


def test_a_batch_answers_each_call_in_order_and_leaves_out_notifications() -> None:
    batch = [
        call("add", [1, 1], 1),
        {"jsonrpc": "2.0", "method": "add", "params": [5]},  # a notification
        call("nope", [], 2),
        7,
    ]
    replies = answer(batch)
    assert [r["id"] for r in replies] == [1, 2, None]
    assert replies[0]["result"] == 2
    assert code_of(replies[1]) == METHOD_NOT_FOUND and code_of(replies[2]) == INVALID_REQUEST


def test_a_batch_of_notifications_answers_nothing() -> None:
    note = {"jsonrpc": "2.0", "method": "add", "params": [1]}
    assert answer([note, {**note, "method": "nope"}, {**note, "method": "boom"}]) is None


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_batches_are_bounded(size: int) -> None:
    reply = answer([call("add", [1], i) for i in range(size)])
    assert code_of(reply) == INVALID_REQUEST and "batch" in reply["error"]["message"]


def test_a_full_batch_is_answered() -> None:
    replies = answer([call("add", [i], i) for i in range(MAX_BATCH)])
    assert [r["result"] for r in replies] == list(range(MAX_BATCH))


def test_a_notification_is_run_and_not_answered() -> None:
    assert answer({"jsonrpc": "2.0", "method": "add", "params": [1]}) is None
    assert answer({"jsonrpc": "2.0", "method": "nope"}) is None
    assert answer({"method": "add", "params": [1], "id": 3})["result"] == 1  # version optional


def test_strict_rules_refuse_batches_answer_notifications_and_need_the_version() -> None:
    """The executor's rules: one call object, always answered, ``"jsonrpc"`` required."""
    rpc = StrictCalculator(10_000)
    assert answer([call("add", [1])], rpc)["error"] == {
        "code": INVALID_REQUEST,
        "message": "send one request object",
    }
    assert answer({"jsonrpc": "2.0", "method": "add", "params": [1]}, rpc) == {
        "jsonrpc": "2.0",
        "result": 1,
        "id": None,
    }
    assert code_of(answer({"jsonrpc": "2.0", "method": "nope"}, rpc)) == METHOD_NOT_FOUND
    assert code_of(answer({"method": "add", "params": [1], "id": 3}, rpc)) == INVALID_REQUEST


def test_the_executor_and_the_client_api_share_the_dispatcher() -> None:
    """Both ends are JSONRPCResources: one parser, one set of checks, one error mapping."""
    from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC

    assert issubclass(KeyValueJSONRPC, JSONRPCResource)
    assert issubclass(ExecutorJSONRPC, JSONRPCResource)
    assert ExecutorJSONRPC.rules == Rules(batches=False, notifications=False, version_required=True)
    assert KeyValueJSONRPC.rules == Rules()


def _stub(rpc: JSONRPCResource) -> StubTreq:
    root = Resource()
    root.putChild(b"jsonrpc", rpc)
    return StubTreq(root)


def _post(stub: StubTreq, body: bytes, method: str = "POST") -> tuple[int, bytes, Any]:
    d = stub.request(method, URL, data=body)
    stub.flush()
    box: list[Any] = []
    d.addCallback(box.append)
    response = box[0]
    content: list[bytes] = []
    response.content().addCallback(content.append)
    stub.flush()
    return response.code, content[0], response.headers


def test_over_http_answers_are_json_and_notifications_are_204() -> None:
    stub = _stub(Calculator(1000))
    code, body, headers = _post(stub, json.dumps(call("add", [1, 2])).encode())
    assert code == 200 and json.loads(body)["result"] == 3
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    code, body, _ = _post(stub, b'{"jsonrpc": "2.0", "method": "add", "params": [1]}')
    assert code == 204 and body == b""


def test_over_http_get_is_405_and_a_large_body_413() -> None:
    stub = _stub(Calculator(1000))
    code, body, headers = _post(stub, b"", method="GET")
    assert code == 405 and code_of(json.loads(body)) == INVALID_REQUEST
    assert headers.getRawHeaders(b"allow") == [b"POST"]
    code, body, _ = _post(stub, b" " * 1001)
    assert code == 413 and "too large" in json.loads(body)["error"]["message"]


def test_the_site_stops_storing_a_body_past_the_limit() -> None:
    """JSONRPCSite's requests drop a declared oversized body; the answer is still 413."""
    root = Resource()
    root.putChild(b"jsonrpc", Calculator(1000))
    channel = JSONRPCSite(root, 1000).buildProtocol(None)
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n")
    for _ in range(4):
        channel.dataReceived(b"x" * 1_000_000)
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert b'"code": -32600' in transport.value()
