"""RaftNode.status(): a typed NodeStatus whose JSON is what `leekyraft status --json` shows."""

from __future__ import annotations

import json
from typing import Any

from test_node import make_node, outcome, run

from leeky_twisted.core.messages import NodeId
from leeky_twisted.interfaces import ExecutorStatus, NodeStatus
from leeky_twisted.server.metrics import NodeMetrics
from leeky_twisted.server.node import NodeHooks
from leeky_twisted.statemachine import commands as kv

#: the keys of `leekyraft status --json`, in order: scripts read them
STATUS_KEYS = [
    "id",
    "address",
    "client_address",
    "http_address",
    "role",
    "term",
    "leader",
    "leader_address",
    "commit_index",
    "applied_index",
    "first_index",
    "last_index",
    "log_entries",
    "snapshot_index",
    "voters",
    "learners",
    "storage_id",
    "abstaining",
    "seats",
    "leader_changes",
    "elections",
    "pending_requests",
    "pending_reads",
    "stats",
]
EXECUTOR_KEYS = [
    "executor_applied_index",
    "executor_lag",
    "executor_reachable",
    "executor_failures",
    "executor_error",
]


def test_status_is_a_frozen_value_with_the_json_keys_of_the_status_command():
    """status() is immutable; to_json() has exactly the documented keys, JSON-able."""
    node, clock, _, _ = make_node(["1"])
    run(clock, 2.0)
    outcome(node.propose(kv.encode_command(kv.Put("k", "v", None)), timeout=5))
    run(clock, 0.1)
    st = node.status()
    assert isinstance(st, NodeStatus)
    try:
        st.term = 99  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("NodeStatus is not frozen")
    doc = json.loads(json.dumps(st.to_json()))
    assert list(doc) == STATUS_KEYS
    assert (doc["id"], doc["role"], doc["leader"], doc["voters"]) == ("1", "leader", "1", ["1"])
    assert doc["applied_index"] == doc["commit_index"] == st.applied_index >= 2
    assert doc["log_entries"] == doc["last_index"] - doc["first_index"] + 1
    assert doc["stats"]["applied"] == st.stats["applied"] > 0


def test_executor_figures_are_flattened_into_the_json_and_read_back():
    """A node with an executor shows its figures under executor_* keys; from_json reads them."""
    st = NodeStatus(
        node_id=NodeId("2"),
        role="follower",
        voters=(NodeId("1"), NodeId("2")),
        executor=ExecutorStatus(applied_index=7, lag=3, reachable=False, failures=2, error="x"),
    )
    doc = st.to_json()
    assert list(doc) == STATUS_KEYS + EXECUTOR_KEYS
    assert [doc[k] for k in EXECUTOR_KEYS] == [7, 3, False, 2, "x"]
    assert NodeStatus.from_json(doc) == st


def test_hooks_given_at_construction_see_each_ready_and_each_write():
    """NodeHooks' on_ready and on_persist are called by the Ready loop, no setting afterwards."""
    seen: list[Any] = []
    writes: list[tuple[float, int]] = []
    metrics = NodeMetrics()
    node, clock, _, _ = make_node(
        ["1"],
        hooks=NodeHooks(
            on_ready=seen.append,
            on_persist=lambda s, n: (writes.append((s, n)), metrics.observe_persist(s, n)),
        ),
    )
    metrics.track(node)
    run(clock, 2.0)
    assert seen and writes
    assert sum(n for _, n in writes) == node.stats["entries_persisted"]
    body = metrics.render()[1].decode()
    assert 'leeky_raft_role{role="leader"} 1.0' in body
    assert "leeky_raft_persist_duration_seconds_count" in body
