"""The executor's JSON-RPC server and the node's client, over treq's in-memory StubTreq."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from leeky_twisted.executor.server import ExecutorJSONRPC
from leeky_twisted.executor.store import DurableExecutorState
from leeky_twisted.protocol import executor_wire as wire
from leeky_twisted.statemachine.remote import (
    CommandFailed,
    ExecutorRemoteError,
    ExecutorUnavailable,
    IAsyncStateMachine,
    RemoteStateMachineExecutor,
    ResultUnknown,
)

URL = "http://executor.test/jsonrpc"


def result_of(d: defer.Deferred[Any]) -> Any:
    """Return the result of a Deferred that has fired; raise its failure."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[DurableExecutorState]:
    s = DurableExecutorState(str(tmp_path / "executor"))
    yield s
    s.close()


@pytest.fixture
def stub(state: DurableExecutorState) -> StubTreq:
    from twisted.web.resource import Resource

    root = Resource()
    root.putChild(b"jsonrpc", ExecutorJSONRPC(state, max_body_bytes=100_000))
    return StubTreq(root)


def client(stub: StubTreq, owner: str = "leeky/1") -> RemoteStateMachineExecutor:
    return RemoteStateMachineExecutor(Clock(), URL, owner, http=stub)


def raw(stub: StubTreq, body: bytes, method: str = "POST") -> tuple[int, Any]:
    """Send ``body`` as is; return (HTTP code, decoded JSON answer)."""
    response = result_of(stub.request(method, URL, data=body))
    return response.code, json.loads(result_of(response.content()))


def test_client_provides_the_interface(stub: StubTreq) -> None:
    """RemoteStateMachineExecutor provides IAsyncStateMachine."""
    assert verifyObject(IAsyncStateMachine, client(stub))


def test_apply_batch_returns_one_outcome_per_entry(stub: StubTreq) -> None:
    """Results come back in order; a refused command is a CommandFailed value."""
    c = client(stub)
    outcomes = result_of(c.apply_batch([(1, b"ADD a 7"), (2, b"READ a"), (3, b"DELETE b")]))
    assert outcomes[0] == {"name": "a", "size": 7, "added_index": 1, "reads": 0}
    assert outcomes[1]["reads"] == 1
    assert isinstance(outcomes[2], CommandFailed) and "no such file" in str(outcomes[2])
    assert result_of(c.last_applied()) == 3


def test_a_resent_batch_is_answered_without_applying_it_again(stub: StubTreq) -> None:
    """At-least-once delivery: the same batch twice changes the state once, same results."""
    c = client(stub)
    batch = [(1, b"ADD a"), (2, b"READ a")]
    first = result_of(c.apply_batch(batch))
    second = result_of(c.apply_batch(batch))
    assert first == second
    assert result_of(c.query("READ a"))["reads"] == 1


def test_unknown_results_and_binary_commands(stub: StubTreq, monkeypatch) -> None:
    """Non-UTF-8 commands travel as base64; a replay beyond the cache is ResultUnknown."""
    from leeky_twisted.executor import store

    monkeypatch.setattr(store, "RESULT_CACHE_SIZE", 1)
    c = client(stub)
    (refused,) = result_of(c.apply_batch([(1, b"\xff")]))
    assert isinstance(refused, CommandFailed) and "UTF-8" in str(refused)
    result_of(c.apply_batch([(2, b"ADD a")]))
    (unknown,) = result_of(c.apply_batch([(1, b"\xff")]))
    assert isinstance(unknown, ResultUnknown)


def test_execute_raises_command_failed(stub: StubTreq) -> None:
    """execute() is a batch of one that raises the refusal instead of returning it."""
    c = client(stub)
    assert result_of(c.execute(1, b"ADD a"))["name"] == "a"
    with pytest.raises(CommandFailed):
        result_of(c.execute(2, b"ADD a"))


def test_snapshot_and_restore_through_the_client(
    stub: StubTreq, tmp_path: Path, state: DurableExecutorState
) -> None:
    """snapshot() returns (index, data); restore() installs it in another executor."""
    c = client(stub)
    result_of(c.apply_batch([(1, b"ADD a"), (5, b"READ a")]))
    index, data = result_of(c.snapshot())
    assert index == 5
    other_state = DurableExecutorState(str(tmp_path / "other"))
    from twisted.web.resource import Resource

    root = Resource()
    root.putChild(b"jsonrpc", ExecutorJSONRPC(other_state))
    other = client(StubTreq(root))
    result_of(other.restore(index, data))
    assert result_of(other.last_applied()) == 5
    assert other_state.machine.to_json() == state.machine.to_json()
    other_state.close()


def test_another_owner_is_refused(stub: StubTreq) -> None:
    """Once bound to one node, the executor refuses another node's changes."""
    result_of(client(stub, "leeky/1").apply_batch([(1, b"ADD a")]))
    with pytest.raises(ExecutorRemoteError) as info:
        result_of(client(stub, "leeky/2").apply_batch([(2, b"ADD b")]))
    assert info.value.code == wire.OWNER_MISMATCH


def test_query_errors_are_remote_errors(stub: StubTreq) -> None:
    """A refused query is a JSON-RPC error with the COMMAND_REJECTED code."""
    with pytest.raises(ExecutorRemoteError) as info:
        result_of(client(stub).query("FROB"))
    assert info.value.code == wire.COMMAND_REJECTED


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", wire.PARSE_ERROR),
        (b"[]", wire.INVALID_REQUEST),
        (b'{"jsonrpc": "1.0", "method": "status", "id": 1}', wire.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": "nope", "id": 1}', wire.METHOD_NOT_FOUND),
        (b'{"jsonrpc": "2.0", "method": "status", "params": 3, "id": 1}', wire.INVALID_REQUEST),
        (b'{"jsonrpc": "2.0", "method": "status", "params": [1], "id": 1}', wire.INVALID_PARAMS),
        (
            b'{"jsonrpc": "2.0", "method": "execute_batch", "id": 1,'
            b' "params": {"owner": "o", "entries": [{"index": 0, "command": "ADD a"}]}}',
            wire.INVALID_PARAMS,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "execute_batch", "id": 1,'
            b' "params": {"owner": "", "entries": []}}',
            wire.INVALID_PARAMS,
        ),
        (
            b'{"jsonrpc": "2.0", "method": "restore", "id": 1,'
            b' "params": {"owner": "o", "index": 1, "data": "!!"}}',
            wire.INVALID_PARAMS,
        ),
    ],
)
def test_bad_requests_get_json_rpc_errors(stub: StubTreq, body: bytes, code: int) -> None:
    """Malformed or wrong calls get a JSON-RPC error object, never an HTML page."""
    status, answer = raw(stub, body)
    assert status == 200
    assert answer["error"]["code"] == code


def test_curl_style_execute_with_text_commands(stub: StubTreq) -> None:
    """A human can call execute with a text command, as with curl."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "execute",
            "params": {"owner": "leeky/1", "index": 1, "command": "ADD hello.txt 5"},
        }
    ).encode()
    _, answer = raw(stub, body)
    assert answer == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {
            "index": 1,
            "result": {"name": "hello.txt", "size": 5, "added_index": 1, "reads": 0},
        },
    }


def test_get_and_oversized_bodies_are_refused(stub: StubTreq) -> None:
    """GET answers 405, a body over the limit 413, both with JSON-RPC errors."""
    status, answer = raw(stub, b"", method="GET")
    assert status == 405 and answer["error"]["code"] == wire.INVALID_REQUEST
    status, answer = raw(stub, b" " * 100_001)
    assert status == 413 and answer["error"]["code"] == wire.INVALID_REQUEST


def test_http_errors_and_timeouts_count_as_unavailable() -> None:
    """A 5xx answer, a refused connection or no answer in time: ExecutorUnavailable."""
    from twisted.web.pages import errorPage

    broken = RemoteStateMachineExecutor(
        Clock(), URL, "o", http=StubTreq(errorPage(503, "down", "down"))
    )
    with pytest.raises(ExecutorUnavailable, match="503"):
        result_of(broken.last_applied())

    class Refusing:
        def post(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            from twisted.internet.error import ConnectionRefusedError

            return defer.fail(ConnectionRefusedError())

    with pytest.raises(ExecutorUnavailable, match="refused"):
        result_of(RemoteStateMachineExecutor(Clock(), URL, "o", http=Refusing()).last_applied())

    class Silent:
        def post(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            return defer.Deferred()

    clock = Clock()
    d = RemoteStateMachineExecutor(clock, URL, "o", http=Silent(), timeout=2).last_applied()
    assert not d.called
    clock.advance(2)
    with pytest.raises(ExecutorUnavailable, match="no answer within"):
        result_of(d)


def test_wire_entries_round_trip() -> None:
    """encode_entry/decode_entry round-trip text and binary; malformed entries raise."""
    for command in (b"ADD a", b"\x00\xff"):
        assert wire.decode_entry(wire.encode_entry(3, command)) == (3, command)
    for bad in ({"index": True, "command": "x"}, {"index": 1}, {"index": 1, "command_b64": "!"}, 1):
        with pytest.raises(ValueError):
            wire.decode_entry(bad)
