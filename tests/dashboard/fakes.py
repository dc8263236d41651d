"""A node and its parts, faked for the dashboard's unit tests."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred

from leeky_twisted.interfaces import FollowerProgress, NodeStatus
from leeky_twisted.testing.fakes import FakeNodeBase


@dataclass
class FakeProgress:
    match: int
    next: int
    state: str = "replicate"
    inflight: deque[int] = field(default_factory=deque)
    max_inflight: int = 64


class FakeCore:
    def __init__(self) -> None:
        self.progress: dict[str, FakeProgress] = {}


class FakeNode(FakeNodeBase):
    """Has what the dashboard reads: node_id, status(), members(), addresses, core."""

    def __init__(self, node_id: str = "1", **status: Any) -> None:
        self.node_id = node_id
        self.core = FakeCore()
        self.addresses: dict[str, dict[str, str]] = {node_id: {"http": "127.0.0.1:7201"}}
        self.st: dict[str, Any] = {
            "id": node_id,
            "role": "follower",
            "term": 1,
            "leader": None,
            "elections": 0,
            "voters": ["1", "2", "3"],
            "learners": [],
            "commit_index": 0,
            "applied_index": 0,
            "last_index": 0,
            "snapshot_index": 0,
        }
        self.st.update(status)
        self.transfers: list[str] = []
        self.removals: dict[str, Deferred[Any]] = {}

    def status(self) -> NodeStatus:
        return NodeStatus.from_json(self.st)

    def progress(self) -> dict[Any, FollowerProgress]:
        return {
            nid: FollowerProgress(pr.match, pr.next, pr.state, len(pr.inflight), pr.max_inflight)
            for nid, pr in self.core.progress.items()
        }

    def members(self) -> list[dict[str, Any]]:
        return [{"id": n, "raft": "voter", "gossip": None} for n in self.st["voters"]]

    def transfer_leader(self, node_id: str) -> None:
        if self.st["role"] != "leader":
            raise ValueError("not the leader")
        self.transfers.append(node_id)

    def remove_server(self, node_id: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.removals[node_id] = d
        return d


class FakeFetch:
    """A fetch whose answers the test gives: ``calls`` holds (url, Deferred)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Deferred[Any]]] = []

    def __call__(self, url: str, timeout: float) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((url, d))
        return d

    def pending(self, fragment: str) -> list[Deferred[Any]]:
        return [d for url, d in self.calls if fragment in url and not d.called]
