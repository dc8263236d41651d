"""A leader whose executor is down answers clearly and hands leadership on (Clock)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import HardState, NodeId, TimeoutNow
from leeky_twisted.core.raft import bootstrap_entries
from leeky_twisted.executor.filemeta import CommandRejected
from leeky_twisted.protocol import executor_wire as wire
from leeky_twisted.protocol.errors import CommitTimeout, InvalidRequest, NotLeader, Unavailable
from leeky_twisted.server.node import NodeSettings, RaftNode
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.statemachine.remote import ExecutorRemoteError
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from tests.executor.test_feed import ControlledExecutor
from tests.test_node import RecordingTransport, lead_by_hand, outcome, run
from tests.test_node_add_server import acknowledge


class Executor(ControlledExecutor):
    """The feed's controlled executor, closable as the node's executor is."""

    def close(self) -> Deferred[None]:
        return succeed(None)

    def query(self, request: object) -> Deferred[object]:
        """Refuse a bad query as the real client does: a JSON-RPC error."""
        try:
            return succeed(self.state.machine.query(str(request)))
        except CommandRejected as e:
            return fail(ExecutorRemoteError(wire.COMMAND_REJECTED, str(e)))


class Cluster:
    """Node 1 with a controlled executor, leader of ``voters`` by hand; peers ack by hand."""

    def __init__(self, directory: Path, voters: list[str], **settings: Any) -> None:
        self.clock = task.Clock()
        self.executor = Executor(str(directory))
        log_store, stable = MemoryLogStore(), MemoryStableStore()
        boot = bootstrap_entries([(NodeId(v), b"") for v in voters])
        log_store.append(boot)
        stable.save(HardState(1, None, len(boot)))
        self.transport = RecordingTransport([])
        self.peers = tuple(v for v in voters if v != "1")
        self.node = RaftNode(
            self.clock,
            CoreConfig(NodeId("1"), election_ticks=10, heartbeat_ticks=2),
            log_store,
            stable,
            MemorySnapshotStore(),
            self.transport,
            KeyValueStateMachine(),
            NodeSettings(tick_interval=0.05, executor_down_after=2.0, **settings),
            rng=random.Random(1),
            executor=self.executor,
        )
        self.node.start()
        if self.peers:
            lead_by_hand(self.node, self.clock)
        else:
            run(self.clock, 2.0)
        assert self.node.core.role.value == "leader"

    def run(self, seconds: float) -> None:
        """Let time pass; the peers store and acknowledge everything they are sent."""
        for _ in range(round(seconds / 0.05)):
            run(self.clock, 0.05)
            if self.peers:
                acknowledge(self.node, self.transport, self.peers)

    def submit(self, command: bytes) -> list[Any]:
        got = outcome(self.node.propose(command, timeout=5))
        self.run(0.2)
        return got


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "ex", ["1", "2", "3"])
    yield c
    c.node.stop()
    c.executor.state.close()


def unavailable(result: list[Any]) -> str:
    assert len(result) == 1 and isinstance(result[0], Failure), result
    assert result[0].check(Unavailable), result[0]
    return str(result[0].value)


def test_a_healthy_idle_executor_is_never_judged_down(cluster: Cluster) -> None:
    """Long quiet periods are not an outage: requests are served after them."""
    assert cluster.submit(b"ADD a 1")[0]["name"] == "a"
    cluster.run(10.0)
    assert cluster.node.applier.feed.stalled_for() == 0.0
    assert cluster.submit(b"READ a")[0]["reads"] == 1


def test_leader_with_a_dead_executor_refuses_at_once_and_hands_leadership_on(
    cluster: Cluster,
) -> None:
    """The executor dies: after executor_down_after, writes and reads get a clear
    Unavailable at once (not a timeout), and leadership goes to a voter (TimeoutNow)."""
    assert cluster.submit(b"ADD a 1")[0]["name"] == "a"
    cluster.executor.down = True
    pending = cluster.submit(b"ADD b 1")  # committed, not applied: waits
    cluster.run(1.0)
    assert pending == []
    recorded: list[Any] = []
    original = cluster.transport.send

    def send(message: Any) -> None:
        recorded.append(message)
        original(message)

    cluster.transport.send = send  # type: ignore[method-assign]
    cluster.run(0.5)
    assert recorded and not any(isinstance(m, TimeoutNow) for m in recorded)
    cluster.run(1.0)
    handoffs = [m.recipient for m in recorded if isinstance(m, TimeoutNow)]
    assert handoffs and set(handoffs) <= {NodeId("2"), NodeId("3")}
    assert len(pending) == 1 and pending[0].check(CommitTimeout)
    refused = outcome(cluster.node.propose(b"ADD c 1", timeout=5))
    assert len(refused) == 1 and refused[0].check(Unavailable)
    read = outcome(cluster.node.read("READ a", linearizable=True, timeout=5))
    assert len(read) == 1 and read[0].check(Unavailable, NotLeader)


def test_a_single_voter_with_a_dead_executor_answers_unavailable(tmp_path: Path) -> None:
    """With nobody to hand over to, requests are refused with a clear message, at once."""
    c = Cluster(tmp_path / "ex", ["1"])
    try:
        assert c.submit(b"ADD a 1")[0]["name"] == "a"
        c.executor.down = True
        pending = c.submit(b"ADD b 1")  # committed; the executor cannot apply it
        c.run(2.5)
        assert len(pending) == 1 and pending[0].check(CommitTimeout)
        assert "committed, but this leader's executor is down" in str(pending[0].value)
        message = unavailable(outcome(c.node.propose(b"ADD b 1", timeout=5)))
        assert "executor down" in message and "connection refused" in message
        assert "executor down" in unavailable(outcome(c.node.read("READ a", True, 5)))
        c.executor.down = False  # back: served again
        c.run(2.0)
        assert c.submit(b"READ a")[0]["reads"] == 1
    finally:
        c.node.stop()
        c.executor.state.close()


def test_a_hung_executor_counts_as_down_before_its_call_times_out(tmp_path: Path) -> None:
    """A paused executor fails nothing (its call hangs): the wait itself is the signal."""
    c = Cluster(tmp_path / "ex", ["1"])
    try:
        assert c.submit(b"ADD a 1")[0]["name"] == "a"
        c.executor.hold = True
        c.submit(b"ADD b 1")
        c.run(2.5)
        assert c.node.applier.feed.stalled_for() >= 2.0
        assert "executor down" in unavailable(outcome(c.node.propose(b"ADD c 1", 5)))
    finally:
        c.node.stop()
        c.executor.state.close()


def test_a_query_the_executor_refuses_is_invalid_request_not_an_internal_error(
    cluster: Cluster,
) -> None:
    """``query FROB``: the executor's refusal reaches the client as InvalidRequest."""
    got = outcome(cluster.node.read("FROB", linearizable=True, timeout=5))
    cluster.run(0.2)
    assert len(got) == 1 and got[0].check(InvalidRequest), got
    assert "queries are READ <name> or LIST" in str(got[0].value)


def test_an_executor_cluster_snapshots_by_bytes_too(tmp_path: Path) -> None:
    """Large commands reach --snapshot-bytes long before the entry count: the executor's
    state is snapshotted and the log compacted."""
    c = Cluster(tmp_path / "ex", ["1"], snapshot_bytes=4000, snapshot_trailing=1000)
    try:
        for i in range(30):
            assert c.submit(f"ADD {'f' * 200}{i} 1".encode())[0]["size"] == 1
        c.run(0.5)
        status = c.node.status()
        assert status.snapshot_index > 0
        assert c.node.snapshot_store.latest() is not None
        assert status.log_entries < 30
    finally:
        c.node.stop()
        c.executor.state.close()
