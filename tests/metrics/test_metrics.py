"""Prometheus metrics: a per-node registry, parsed back with prometheus-client's own parser."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer
from zope.interface.verify import verifyObject

from leeky_twisted.api.http_server import JSONRPCHTTPFactory
from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import HardState, NodeId
from leeky_twisted.core.raft import bootstrap_entries
from leeky_twisted.interfaces import IPeerTransport, NodeStatus
from leeky_twisted.server.metrics import CONTENT_TYPE, NodeMetrics, metrics_route
from leeky_twisted.server.node import RaftNode
from leeky_twisted.statemachine.commands import Put, encode_command
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from leeky_twisted.testing.fakes import FakeNodeBase


class FakeNode(FakeNodeBase):
    """A node whose status is a plain dictionary the test edits."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {
            "id": "n1",
            "role": "follower",
            "term": 3,
            "leader": "n2",
            "commit_index": 10,
            "applied_index": 10,
            "first_index": 1,
            "last_index": 12,
            "log_entries": 12,
            "snapshot_index": 0,
            "voters": ["n1", "n2", "n3"],
            "learners": [],
            "leader_changes": 1,
            "elections": 0,
            "pending_requests": 0,
            "pending_reads": 0,
            "stats": {
                "readies": 5,
                "persists": 4,
                "entries_persisted": 12,
                "applied": 10,
                "persist_seconds": 0.02,
                "messages_sent": 9,
            },
        }

    def status(self) -> NodeStatus:
        """Return the current status."""
        return NodeStatus.from_json(self.state)


def scrape(route: Any) -> dict[str, float]:
    """Call a route and return {sample name + labels: value} from the parsed text."""
    content_type, body = route()
    assert content_type == CONTENT_TYPE
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def test_status_values_are_exposed_and_parse() -> None:
    """Every status-derived metric appears with the node's value and parses as Prometheus text."""
    node = FakeNode()
    v = scrape(metrics_route(node))
    assert v["leeky_raft_node_info{node_id=n1}"] == 1
    assert v["leeky_raft_role{role=follower}"] == 1
    assert v["leeky_raft_role{role=leader}"] == 0
    assert v["leeky_raft_term"] == 3
    assert v["leeky_raft_commit_index"] == 10
    assert v["leeky_raft_applied_index"] == 10
    assert v["leeky_raft_log_entries"] == 12
    assert v["leeky_raft_snapshot_index"] == 0
    assert v["leeky_raft_leader_changes_total"] == 1
    assert v["leeky_raft_elections_started_total"] == 0
    assert v["leeky_raft_pending_requests"] == 0
    assert v["leeky_raft_executor_lag_entries"] == 0
    assert v["leeky_raft_voters"] == 3
    assert v["leeky_raft_has_leader"] == 1
    assert v["leeky_raft_persist_seconds_count"] == 4
    assert v["leeky_raft_persist_seconds_sum"] == 0.02
    assert v["leeky_raft_entries_persisted_total"] == 12


def test_values_change_when_the_node_changes() -> None:
    """A later scrape shows the node's new role, term, indexes, counters and executor lag."""
    node = FakeNode()
    route = metrics_route(node)
    before = scrape(route)
    node.state.update(
        role="leader",
        term=4,
        commit_index=25,
        applied_index=20,
        executor_applied_index=18,
        leader_changes=2,
        elections=1,
        pending_requests=7,
        snapshot_index=15,
    )
    after = scrape(route)
    assert before["leeky_raft_role{role=leader}"] == 0
    assert after["leeky_raft_role{role=leader}"] == 1
    assert after["leeky_raft_role{role=follower}"] == 0
    assert after["leeky_raft_term"] == 4
    assert after["leeky_raft_commit_index"] == 25
    assert after["leeky_raft_executor_lag_entries"] == 7  # measured against the executor
    assert after["leeky_raft_leader_changes_total"] == 2
    assert after["leeky_raft_elections_started_total"] == 1
    assert after["leeky_raft_pending_requests"] == 7
    assert after["leeky_raft_snapshot_index"] == 15


def test_lag_falls_back_to_applied_index_without_an_executor_index() -> None:
    """Without executor_applied_index the lag is commit_index - applied_index."""
    node = FakeNode()
    node.state.update(commit_index=30, applied_index=26)
    assert scrape(metrics_route(node))["leeky_raft_executor_lag_entries"] == 4


def test_persist_observations_fill_the_histogram() -> None:
    """observe_persist puts each persist in the latency and batch-size histograms."""
    metrics = NodeMetrics(FakeNode())
    metrics.observe_persist(0.0004, 3)
    metrics.observe_persist(0.02, 100)
    v = scrape(metrics.render)
    assert v["leeky_raft_persist_duration_seconds_count"] == 2
    assert v["leeky_raft_persist_duration_seconds_bucket{le=0.0005}"] == 1
    assert v["leeky_raft_persist_duration_seconds_bucket{le=0.025}"] == 2
    assert v["leeky_raft_persist_batch_entries_sum"] == 103


def test_each_node_has_its_own_registry() -> None:
    """Two nodes in one process keep separate figures and never touch the global registry."""
    a, b = FakeNode(), FakeNode()
    b.state["term"] = 9
    ma, mb = NodeMetrics(a), NodeMetrics(b)
    ma.observe_persist(0.001)
    assert scrape(ma.render)["leeky_raft_term"] == 3
    assert scrape(mb.render)["leeky_raft_term"] == 9
    assert scrape(mb.render)["leeky_raft_persist_duration_seconds_count"] == 0
    assert REGISTRY.get_sample_value("leeky_raft_term") is None


def test_odd_status_values_do_not_break_a_scrape() -> None:
    """Missing or non-numeric status fields give 0 rather than an error."""
    node = FakeNode()
    node.state = {"id": "x", "term": "three", "stats": None}
    v = scrape(metrics_route(node))
    assert v["leeky_raft_term"] == 0
    assert v["leeky_raft_persist_seconds_count"] == 0


def test_gossip_members_are_counted_by_state_and_role() -> None:
    """A node with members() gets member counts by gossip state and by Raft role."""
    node = FakeNode()
    node.members = lambda: [  # type: ignore[attr-defined]
        {"id": "1", "raft": "leader", "gossip": "alive"},
        {"id": "2", "raft": "voter", "gossip": "alive"},
        {"id": "3", "raft": "voter", "gossip": "suspect"},
        {"id": "4", "raft": "not in configuration", "gossip": None},
    ]
    v = scrape(metrics_route(node))
    assert v["leeky_gossip_members{state=alive}"] == 2
    assert v["leeky_gossip_members{state=suspect}"] == 1
    assert v["leeky_raft_members{raft_role=voter}"] == 2
    assert v["leeky_raft_members{raft_role=not in configuration}"] == 1


def test_lean_http_server_serves_metrics_on_get() -> None:
    """GET /metrics through the lean HTTP server answers 200 with the Prometheus text."""
    node = FakeNode()
    rpc = SimpleNamespace(max_body_bytes=4096)  # GET routes never reach the JSON-RPC layer
    routes = {b"/metrics": metrics_route(node)}
    factory = JSONRPCHTTPFactory(rpc, node.status, routes)  # type: ignore[arg-type]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = transport.value()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: " + CONTENT_TYPE in head
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "leeky_raft_commit_index" in names


# ------------------------------------------------------- with a real node


@implementer(IPeerTransport)
class NullTransport:
    """A peer transport for a one-node cluster: nothing to send to."""

    def send(self, message: object) -> None:
        """Drop ``message``."""

    def set_receiver(self, receiver: object) -> None:
        """Ignore the receiver."""

    def close(self) -> defer.Deferred[None]:
        """Nothing to close."""
        return defer.succeed(None)


def test_a_put_raises_the_commit_index_metric_of_a_real_node() -> None:
    """A one-node RaftNode on a Clock: election and a put show up in role, term and indexes."""
    assert verifyObject(IPeerTransport, NullTransport())
    clock = Clock()
    log_store, stable = MemoryLogStore(), MemoryStableStore()
    log_store.append(bootstrap_entries([(NodeId("1"), b"{}")]))
    stable.save(HardState(1, None, 1))
    node = RaftNode(
        clock,
        CoreConfig(NodeId("1")),
        log_store,
        stable,
        MemorySnapshotStore(),
        NullTransport(),
        KeyValueStateMachine(),
        rng=random.Random(1),
    )
    route = metrics_route(node)
    before = scrape(route)
    node.start()
    for _ in range(100):
        clock.advance(0.05)
        if node.role_name() == "leader":
            break
    clock.advance(0)
    elected = scrape(route)
    d = node.propose(encode_command(Put("k", "v")), timeout=5)
    for _ in range(5):
        clock.advance(0)
    assert d.called
    after = scrape(route)
    node.stop()
    assert before["leeky_raft_role{role=leader}"] == 0
    assert elected["leeky_raft_role{role=leader}"] == 1
    assert elected["leeky_raft_term"] > before["leeky_raft_term"]
    assert after["leeky_raft_commit_index"] > elected["leeky_raft_commit_index"]
    assert after["leeky_raft_applied_index"] == after["leeky_raft_commit_index"]
    assert after["leeky_raft_executor_lag_entries"] == 0
