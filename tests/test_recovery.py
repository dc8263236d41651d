"""--force-new-cluster: one survivor becomes the only member, keeps its data, elects itself."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import (
    ConfChange,
    ConfChangeOp,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    SnapshotMeta,
)
from leeky_twisted.core.raft import bootstrap_entries
from leeky_twisted.server.node import NodeSettings, RaftNode
from leeky_twisted.server.recovery import (
    ForceNewClusterError,
    force_new_cluster,
    recover_as_new_cluster,
)
from leeky_twisted.statemachine import commands as kv
from leeky_twisted.statemachine.kv import KeyValueStateMachine
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from tests.test_node import RecordingTransport, outcome, run


def put(index: int, term: int, key: str) -> Entry:
    """Return a log entry that puts ``key`` = ``key``-value."""
    return Entry(
        index, term, EntryKind.NORMAL, kv.encode_command(kv.Put(key, key + "-value", None))
    )


def three_voter_stores(
    term: int = 3, commit: int = 4
) -> tuple[MemoryLogStore, MemoryStableStore, MemorySnapshotStore]:
    """Stores of node 1 of a 3-voter cluster: one committed put, one past its commit index."""
    log_store = MemoryLogStore()
    log_store.append(bootstrap_entries([(NodeId(v), b"") for v in ("1", "2", "3")]))
    log_store.append([put(4, 2, "committed"), put(5, 3, "uncommitted")])
    stable = MemoryStableStore()
    stable.save(HardState(term, NodeId("2"), commit))
    return log_store, stable, MemorySnapshotStore()


def build(log_store: Any, stable: Any, snaps: Any) -> tuple[RaftNode, task.Clock]:
    """Build and start node 1 over the stores, on a Clock, with nobody to talk to."""
    clock = task.Clock()
    node = RaftNode(
        clock,
        CoreConfig(NodeId("1"), election_ticks=10, heartbeat_ticks=2),
        log_store,
        stable,
        snaps,
        RecordingTransport([]),
        KeyValueStateMachine(),
        NodeSettings(tick_interval=0.05),
        rng=random.Random(1),
    )
    node.start()
    return node, clock


def test_without_recovery_a_survivor_of_a_lost_majority_never_leads() -> None:
    """The problem: node 1 alone of 3 voters stays without a leader however long it waits."""
    node, clock = build(*three_voter_stores())
    run(clock, 5.0)
    assert node.status().role != "leader"


def test_forced_node_is_the_only_voter_keeps_its_data_and_elects_itself() -> None:
    """After the rewrite node 1 alone votes, elects itself within 2 timeouts, serves old keys."""
    log_store, stable, snaps = three_voter_stores()
    result = force_new_cluster(NodeId("1"), log_store, stable, snaps)
    assert result.term == 4 and result.removed == ("2", "3")
    assert (result.first_index, result.commit, result.previous_commit) == (6, 7, 4)
    assert log_store.entries(6, 8) == [
        Entry(6, 4, EntryKind.CONFIG, ConfChange(ConfChangeOp.REMOVE, NodeId("2")).encode()),
        Entry(7, 4, EntryKind.CONFIG, ConfChange(ConfChangeOp.REMOVE, NodeId("3")).encode()),
    ]
    assert stable.load() == HardState(4, NodeId("1"), 7, abstaining=False)
    node, clock = build(log_store, stable, snaps)
    assert node.core.configuration == Configuration(frozenset({NodeId("1")}))
    run(clock, 1.0)  # two election timeouts at most
    assert node.status().role == "leader"
    for key in ("committed", "uncommitted"):
        got = outcome(node.read(kv.Get(key), linearizable=True, timeout=5))
        run(clock, 0.1)
        assert got == [key + "-value"]
    wrote = outcome(node.propose(kv.encode_command(kv.Put("new", "v", None)), timeout=5))
    run(clock, 0.1)
    assert wrote == [None]


def test_a_learner_survivor_is_promoted_before_the_others_are_removed() -> None:
    """A learner that survives becomes a voter first, then every other member goes."""
    log_store = MemoryLogStore()
    log_store.append(bootstrap_entries([(NodeId(v), b"") for v in ("2", "3")]))
    log_store.append(
        [Entry(3, 2, EntryKind.CONFIG, ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("1")).encode())]
    )
    stable = MemoryStableStore()
    stable.save(HardState(2, None, 3))
    result = force_new_cluster(NodeId("1"), log_store, stable, MemorySnapshotStore())
    assert result.removed == ("2", "3")
    ops = [ConfChange.decode(e.data) for e in log_store.entries(4, 7)]
    assert [(c.op, c.node_id) for c in ops] == [
        (ConfChangeOp.ADD_VOTER, "1"),
        (ConfChangeOp.REMOVE, "2"),
        (ConfChangeOp.REMOVE, "3"),
    ]
    node, clock = build(log_store, stable, MemorySnapshotStore())
    run(clock, 1.0)
    assert node.status().role == "leader"


def test_the_configuration_of_a_snapshot_counts_when_the_log_is_compacted() -> None:
    """With every entry compacted away, the snapshot's configuration is the one rewritten."""
    log_store = MemoryLogStore()
    log_store.reset(11)
    snaps = MemorySnapshotStore()
    sink = snaps.create(SnapshotMeta(10, 5, Configuration(frozenset({NodeId("1"), NodeId("2")}))))
    sink.write(b"opaque")
    sink.close()
    stable = MemoryStableStore()
    stable.save(HardState(6, None, 10))
    result = force_new_cluster(NodeId("1"), log_store, stable, snaps)
    assert (result.term, result.removed, result.first_index) == (7, ("2",), 11)
    assert log_store.last_index() == 11 and stable.load() == HardState(7, NodeId("1"), 11)


def test_a_node_outside_its_configuration_or_without_a_cluster_is_refused() -> None:
    """A removed node's data or an empty folder cannot become the cluster; nothing changes."""
    log_store = MemoryLogStore()
    log_store.append(bootstrap_entries([(NodeId(v), b"") for v in ("2", "3")]))
    stable = MemoryStableStore()
    stable.save(HardState(2, None, 2))
    with pytest.raises(ForceNewClusterError, match="not a member of its latest configuration"):
        force_new_cluster(NodeId("1"), log_store, stable, MemorySnapshotStore())
    assert log_store.last_index() == 2 and stable.load() == HardState(2, None, 2)
    with pytest.raises(ForceNewClusterError, match="holds no cluster"):
        force_new_cluster(NodeId("1"), MemoryLogStore(), MemoryStableStore(), MemorySnapshotStore())


def test_the_rewrite_is_one_shot(tmp_path: Path) -> None:
    """A second start with the option refuses instead of removing members added since."""
    log_store, stable, snaps = three_voter_stores()
    warnings: list[str] = []
    recover_as_new_cluster(str(tmp_path), NodeId("1"), log_store, stable, snaps, warnings.append)
    assert len(warnings) == 1 and "ONLY member" in warnings[0] and "removed: 2, 3" in warnings[0]
    last, hs = log_store.last_index(), stable.load()
    with pytest.raises(ForceNewClusterError, match="already ran on this data folder"):
        recover_as_new_cluster(
            str(tmp_path), NodeId("1"), log_store, stable, snaps, warnings.append
        )
    assert (log_store.last_index(), stable.load(), len(warnings)) == (last, hs, 1)


@pytest.mark.parametrize("seat", [0, 77])
def test_a_survivor_whose_seat_is_vacant_or_names_a_lost_storage_takes_it(seat: int) -> None:
    """Node 1's seat was vacated after a wipe (0), or still names the storage it lost (77),
    when the others were lost too: forced, it takes its seat and elects itself."""
    log_store, stable, snaps = three_voter_stores()
    seats = [ConfChange.bind(NodeId("1"), 77)] + ([ConfChange.bind(NodeId("1"), 0)] * (not seat))
    log_store.append([Entry(6 + i, 3, EntryKind.CONFIG, c.encode()) for i, c in enumerate(seats)])
    stable.save(HardState(3, NodeId("2"), 4, False, storage_id=99))
    force_new_cluster(NodeId("1"), log_store, stable, snaps)
    node, clock = build(log_store, stable, snaps)
    assert node.core.configuration.storage == ((NodeId("1"), 99),)
    run(clock, 1.0)
    assert node.status().role == "leader"
