"""A node snapshots by log bytes as well as by entry count (``--snapshot-bytes``)."""

from __future__ import annotations

import random
from pathlib import Path

from twisted.internet import task

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import HardState, NodeId
from leeky_twisted.core.raft import bootstrap_entries
from leeky_twisted.server.node import NodeSettings, RaftNode
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from tests.test_node import RecordingTransport, outcome, run


def single_node(**settings: int) -> tuple[RaftNode, task.Clock]:
    clock = task.Clock()
    log_store, stable = MemoryLogStore(), MemoryStableStore()
    log_store.append(bootstrap_entries([(NodeId("1"), b"")]))
    stable.save(HardState(1, None, 1))
    node = RaftNode(
        clock,
        CoreConfig(NodeId("1"), election_ticks=10, heartbeat_ticks=2),
        log_store,
        stable,
        MemorySnapshotStore(),
        RecordingTransport([]),
        KeyValueStateMachine(),
        NodeSettings(tick_interval=0.05, **settings),
        rng=random.Random(1),
    )
    node.start()
    run(clock, 2.0)
    assert node.status().role == "leader"
    return node, clock


def put(node: RaftNode, clock: task.Clock, key: str, size: int) -> None:
    got = outcome(node.propose(kv.encode_command(kv.Put(key, "v" * size, None)), timeout=5))
    run(clock, 0.1)
    assert got == [None]


def test_large_values_trigger_a_snapshot_long_before_the_entry_count():
    """20 writes of 10 KB with --snapshot-bytes 100000: a snapshot, and a log compacted
    so that what stays behind it holds at most a quarter of the byte budget."""
    node, clock = single_node(snapshot_entries=100_000, snapshot_bytes=100_000)
    for i in range(20):
        put(node, clock, f"k{i}", 10_000)
    status = node.status()
    assert status.snapshot_index > 0
    kept = node.core.log.slice(node.core.log.start + 1, status.last_index + 1)
    behind = [e for e in kept if e.index <= status.snapshot_index]
    assert sum(len(e.data) for e in behind) <= 100_000 // 4
    assert status.log_entries < 20


def test_small_values_do_not_trigger_a_byte_snapshot():
    """Below both limits, nothing is snapshotted; the byte count restarts at each snapshot."""
    node, clock = single_node(snapshot_entries=100_000, snapshot_bytes=100_000)
    for i in range(20):
        put(node, clock, f"k{i}", 100)
    assert node.status().snapshot_index == 0
    put(node, clock, "big", 100_000)
    first = node.status().snapshot_index
    assert first > 0
    for i in range(20):
        put(node, clock, f"j{i}", 100)
    assert node.status().snapshot_index == first


def test_the_option_reaches_the_node(tmp_path: Path):
    """``--snapshot-bytes`` (default 64 MiB) reaches the node's settings."""
    from nodebuild import node_from

    def settings(*extra: str) -> NodeSettings:
        argv = ["--id=1", "--peers=1=127.0.0.1:7001", f"--data-dir={tmp_path}", *extra]
        return node_from(argv).settings

    assert settings().snapshot_bytes == 64 * 1024 * 1024
    assert settings("--snapshot-bytes=1000000").snapshot_bytes == 1_000_000
