"""Nemeses and their schedule, against a recording fake cluster (no root, no processes)."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import pytest

from leeky_twisted.chaos.nemesis import (
    NEMESES,
    IsolateLeader,
    KillRestart,
    Mixed,
    OneWayPartition,
    Partition,
    Pause,
    Schedule,
    make_nemesis,
    run_schedule,
)
from leeky_twisted.chaos.netns import NodeSlot


@dataclass
class FakeNetwork:
    """Records network faults as data."""

    blocked: set[tuple[int, int]] = field(default_factory=set)
    delayed: list[int] = field(default_factory=list)
    heals: int = 0

    def block(self, src: NodeSlot, dst: NodeSlot) -> None:
        self.blocked.add((src.index, dst.index))

    def set_delay(self, slot: NodeSlot, delay_ms: int, jitter_ms: int, loss: float) -> str:
        self.delayed.append(slot.index)
        return "netem"

    def heal_all(self) -> None:
        self.blocked.clear()
        self.delayed.clear()
        self.heals += 1


@dataclass
class FakeNode:
    node_id: str
    slot: NodeSlot
    running: bool = True
    paused: bool = False

    def alive(self) -> bool:
        return self.running


class FakeCluster:
    """Just enough of NetnsCluster for the nemeses; records every move."""

    def __init__(self, n: int = 5, leader: str | None = "1") -> None:
        self.network = FakeNetwork()
        self.nodes = [
            FakeNode(str(i), NodeSlot(i, f"ns{i}", f"10.99.0.{i}")) for i in range(1, n + 1)
        ]
        self.leader_id = leader
        self.moves: list[str] = []

    def leader(self) -> FakeNode | None:
        return next((n for n in self.nodes if n.node_id == self.leader_id), None)

    def kill(self, node: FakeNode) -> None:
        node.running = False
        self.moves.append(f"kill {node.node_id}")

    def start_node(self, node: FakeNode) -> None:
        node.running = True
        self.moves.append(f"start {node.node_id}")

    def pause(self, node: FakeNode) -> None:
        node.paused = True
        self.moves.append(f"pause {node.node_id}")

    def resume(self, node: FakeNode) -> None:
        node.paused = False
        self.moves.append(f"resume {node.node_id}")


@pytest.mark.parametrize("seed", range(20))
def test_partition_cuts_a_minority_off_both_ways(seed: int):
    """A partition blocks every packet between a minority and the majority, both ways."""
    cluster = FakeCluster()
    detail, nodes = Partition().inject(cluster, random.Random(seed))  # type: ignore[arg-type]
    minority = {int(n) for n in nodes}
    majority = {1, 2, 3, 4, 5} - minority
    assert 1 <= len(minority) <= 2
    assert cluster.network.blocked == {
        pair for a in minority for b in majority for pair in ((a, b), (b, a))
    }
    assert detail.startswith("partition")


def test_isolate_leader_cuts_the_leader_off():
    """The leader can neither send to nor hear from any other node."""
    cluster = FakeCluster(leader="3")
    detail, nodes = IsolateLeader().inject(cluster, random.Random(1))  # type: ignore[arg-type]
    assert nodes == ["3"]
    assert cluster.network.blocked == {p for o in (1, 2, 4, 5) for p in ((3, o), (o, 3))}
    assert detail == "isolate leader 3"


def test_one_way_partition_blocks_only_one_direction():
    """The chosen side cannot send, but still receives."""
    for seed in range(10):
        cluster = FakeCluster()
        _, nodes = OneWayPartition().inject(cluster, random.Random(seed))  # type: ignore[arg-type]
        side = {int(n) for n in nodes}
        others = {1, 2, 3, 4, 5} - side
        assert cluster.network.blocked == {(a, b) for a in side for b in others}


def test_kill_restarts_the_same_nodes_on_heal():
    """The nodes killed are the nodes restarted."""
    cluster = FakeCluster()
    nemesis = KillRestart()
    for seed in range(10):
        cluster.moves.clear()
        _, nodes = nemesis.inject(cluster, random.Random(seed))  # type: ignore[arg-type]
        nemesis.heal(cluster)  # type: ignore[arg-type]
        assert cluster.moves == [f"kill {n}" for n in _order(nodes, cluster.moves)] + [
            f"start {n}" for n in _order(nodes, cluster.moves)
        ]
        assert all(n.running for n in cluster.nodes)


def _order(nodes: list[str], moves: list[str]) -> list[str]:
    killed = [m.split()[1] for m in moves if m.startswith("kill")]
    assert sorted(killed, key=int) == nodes
    return killed


def test_pause_resumes_what_it_paused():
    """SIGSTOPped nodes get SIGCONT on heal."""
    cluster = FakeCluster()
    nemesis = Pause()
    _, nodes = nemesis.inject(cluster, random.Random(4))  # type: ignore[arg-type]
    assert {n.node_id for n in cluster.nodes if n.paused} == set(nodes)
    nemesis.heal(cluster)  # type: ignore[arg-type]
    assert not any(n.paused for n in cluster.nodes)


def test_make_nemesis_knows_every_name_and_mixes_several():
    """Names map to nemeses; several names make a Mixed; unknown names are refused."""
    for name in NEMESES:
        assert make_nemesis(name).name == name
    mixed = make_nemesis("partition,kill")
    assert isinstance(mixed, Mixed)
    assert [c.name for c in mixed.choices] == ["partition", "kill"]
    with pytest.raises(ValueError, match="unknown nemesis"):
        make_nemesis("meteor")


def test_schedule_alternates_faults_and_heals_everything_at_the_end():
    """Faults come and go within the time given; at the end nothing is left broken."""
    cluster = FakeCluster()
    events: list[str] = []
    faults = run_schedule(
        make_nemesis("mixed"),
        cluster,  # type: ignore[arg-type]
        seconds=1.5,
        rng=random.Random(3),
        stop=threading.Event(),
        schedule=Schedule(fault=(0.1, 0.2), quiet=(0.05, 0.1)),
        on_event=events.append,
    )
    assert len(faults) >= 3
    assert all(f.end is not None and f.end >= f.start for f in faults)
    assert events[-1] == "healed everything"
    assert not cluster.network.blocked and not cluster.network.delayed
    assert all(n.running and not n.paused for n in cluster.nodes)


def test_schedule_heals_everything_even_when_a_fault_fails():
    """A move that raises still leaves the cluster healed."""

    class Broken(Pause):
        def inject(self, cluster, rng):
            super().inject(cluster, rng)
            raise RuntimeError("boom")

    cluster = FakeCluster()
    with pytest.raises(RuntimeError, match="boom"):
        run_schedule(
            Broken(),
            cluster,  # type: ignore[arg-type]
            seconds=5,
            rng=random.Random(1),
            stop=threading.Event(),
            schedule=Schedule(fault=(0.1, 0.1), quiet=(0.01, 0.01)),
        )
    assert not any(n.paused for n in cluster.nodes)
    assert cluster.network.heals == 1
