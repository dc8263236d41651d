"""The recording clients: how call outcomes are classified, and a run on loopback."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from leeky_twisted.chaos.workload import Endpoint, Workload, call_jsonrpc, classify_error
from leeky_twisted.checker.history import OpKind, Outcome
from leeky_twisted.checker.linearizability import Verdict, check_history
from leeky_twisted.ops.localcluster import LOOPBACK, LocalCluster


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        ({"code": -32000, "message": "not the leader"}, Outcome.FAIL),
        ({"code": -32001, "message": "no leader known"}, Outcome.FAIL),
        ({"code": -32602, "message": "key must be a string"}, Outcome.FAIL),
        ({"code": -32006, "message": "node 3 was removed from the cluster"}, Outcome.FAIL),
        ({"code": -32002, "message": "timed out, outcome unknown"}, Outcome.UNKNOWN),
        ({"code": -32001, "message": "node is shutting down"}, Outcome.UNKNOWN),
        ({"code": -32603, "message": "internal error"}, Outcome.UNKNOWN),
        ("not an object", Outcome.UNKNOWN),
    ],
)
def test_only_errors_that_guarantee_no_effect_count_as_failed(error: object, outcome: Outcome):
    """-32000, -32001, -32006 and -32602 are refusals (failed); anything else may have
    taken effect."""
    assert classify_error(error) is outcome


class _Canned(http.server.BaseHTTPRequestHandler):
    answer: bytes = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[type[_Canned], Endpoint]]:
    """An HTTP server on loopback that answers every POST with ``_Canned.answer``."""
    handler = type("Handler", (_Canned,), {})
    server = http.server.HTTPServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, Endpoint("1", LOOPBACK, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _call(endpoint: Endpoint, timeout: float = 2.0):
    return call_jsonrpc(endpoint, "get", ["k"], connect_timeout=1.0, timeout=timeout)


def test_result_and_error_answers_are_classified(canned):
    """A result is ok; a not-leader error is failed; a commit timeout is unknown."""
    handler, endpoint = canned
    handler.answer = json.dumps({"jsonrpc": "2.0", "result": "v", "id": 1}).encode()
    assert (_call(endpoint).outcome, _call(endpoint).result) == (Outcome.OK, "v")
    handler.answer = json.dumps({"jsonrpc": "2.0", "error": {"code": -32000}, "id": 1}).encode()
    assert _call(endpoint).outcome is Outcome.FAIL
    handler.answer = json.dumps({"jsonrpc": "2.0", "error": {"code": -32002}, "id": 1}).encode()
    assert _call(endpoint).outcome is Outcome.UNKNOWN
    handler.answer = b"<html>oops</html>"
    assert _call(endpoint).outcome is Outcome.UNKNOWN


def test_refused_connection_fails_and_silence_after_sending_is_unknown():
    """Nothing sent (connection refused) is failed; no answer after sending is unknown."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    port = listener.getsockname()[1]
    listener.close()
    refused = _call(Endpoint("1", LOOPBACK, port))
    assert refused.outcome is Outcome.FAIL
    assert "connect" in (refused.error or "")

    silent = socket.socket()
    silent.bind((LOOPBACK, 0))
    silent.listen(8)
    try:
        result = _call(Endpoint("1", LOOPBACK, silent.getsockname()[1]), timeout=0.3)
    finally:
        silent.close()
    assert result.outcome is Outcome.UNKNOWN


def test_unexpected_result_type_is_unknown(canned):
    """A put answered with something other than true is recorded as unknown, not ok."""
    handler, endpoint = canned
    handler.answer = json.dumps({"jsonrpc": "2.0", "result": 7, "id": 1}).encode()
    workload = Workload([endpoint], clients=1)
    op = workload.invoke(0, endpoint, OpKind.PUT, "k", value="v")
    assert op.outcome is Outcome.UNKNOWN
    assert op.complete is None
    assert workload.errors["unexpected result"] == 1


def test_an_unknown_operation_records_when_its_client_gave_up(canned):
    """The plots draw an unknown operation up to when its client stopped waiting."""
    handler, endpoint = canned
    handler.answer = json.dumps({"jsonrpc": "2.0", "error": {"code": -32002}, "id": 1}).encode()
    times = iter([10.0, 14.5, 20.0, 20.25])
    workload = Workload([endpoint], clients=1, clock=lambda: next(times))
    op = workload.invoke(0, endpoint, OpKind.PUT, "k", value="v")
    assert (op.outcome, op.invoke, op.complete, op.gave_up) == (Outcome.UNKNOWN, 10.0, None, 14.5)
    handler.answer = json.dumps({"jsonrpc": "2.0", "result": True, "id": 2}).encode()
    done = workload.invoke(0, endpoint, OpKind.PUT, "k", value="w")
    assert (done.outcome, done.complete, done.gave_up) == (Outcome.OK, 20.25, None)


def test_keys_rotate_after_ops_per_key(canned):
    """Each key slot moves to a fresh key after ops_per_key operations."""
    handler, endpoint = canned
    handler.answer = json.dumps({"jsonrpc": "2.0", "result": None, "id": 1}).encode()
    workload = Workload([endpoint], clients=2, keys=1, ops_per_key=3, key_prefix="t")
    workload.run_for(0.5)
    history = workload.history()
    assert len(history) > 6
    assert {op.key for op in history} <= set(workload.keys())
    assert workload.keys()[:3] == ["t-0.0", "t-0.1", "t-0.2"]
    per_key = {k: sum(1 for op in history if op.key == k) for k in workload.keys()[:-1]}
    assert set(per_key.values()) == {3}


FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]


@pytest.mark.integration
def test_workload_on_a_healthy_loopback_cluster_is_linearizable(tmp_path: Path):
    """Ten clients on a 3-node loopback cluster: everything ok, checked linearizable."""
    with LocalCluster(tmp_path / "c", nodes=3, extra_args=FAST) as cluster:
        cluster.start()
        cluster.wait_for_leader()
        endpoints = [Endpoint(n.node_id, LOOPBACK, n.http_port) for n in cluster.nodes]
        workload = Workload(endpoints, clients=10, keys=3, ops_per_key=200, seed=7)
        workload.run_for(3.0)
        final = workload.final_reads(within=10.0)
    history = workload.history()
    assert final.readable
    assert sum(1 for op in history if op.outcome is Outcome.OK) > 100
    result = check_history(history)
    assert result.verdict is Verdict.LINEARIZABLE, result.render()


def test_calls_still_in_flight_count_as_unknown():
    """A call that has not returned when the history is taken is in it, as unknown."""
    silent = socket.socket()
    silent.bind((LOOPBACK, 0))
    silent.listen(8)
    endpoint = Endpoint("1", LOOPBACK, silent.getsockname()[1])
    workload = Workload([endpoint], clients=1, timeout=2.0)
    thread = threading.Thread(
        target=workload.invoke, args=(0, endpoint, OpKind.PUT, "k"), kwargs={"value": "v"}
    )
    silent.settimeout(5)
    try:
        thread.start()
        accepted, _ = silent.accept()  # the request is on its way: no answer will come
        (op,) = workload.history()
        assert (op.outcome, op.complete, op.value) == (Outcome.UNKNOWN, None, "v")
        accepted.close()
    finally:
        silent.close()
        thread.join(timeout=5)
    (op,) = workload.history()
    assert op.outcome is Outcome.UNKNOWN
    assert op.error != "still in flight"


def test_the_workloads_error_codes_are_the_nodes():
    """The workload names the node's JSON-RPC codes without importing the node's API."""
    from leeky_twisted.api import jsonrpc_api
    from leeky_twisted.chaos import workload

    assert workload.REMOVED == jsonrpc_api.REMOVED
    assert workload.COMMIT_TIMEOUT == jsonrpc_api.COMMIT_TIMEOUT
