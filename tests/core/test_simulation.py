"""Randomized whole-cluster simulation (leeky_twisted.testing.simulation): every seed is a
cluster of 3, 5 or 7 nodes under its own mix of faults, checked for Raft's
safety properties after every step and for liveness once the faults stop.

The default run covers seeds 0-499 in blocks of 50, so progress shows. Soak with

    LEEKY_SIM_SEEDS=20000 LEEKY_SIM_START=500 pytest tests/core/test_simulation.py

or ``python -m leeky_twisted.simulation --seeds 20000 --start 500``. A failure
names each failing seed and the command that replays it.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import pytest

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import NodeId
from leeky_twisted.testing.simulation import SafetyViolation, Simulation, main

SEEDS = int(os.environ.get("LEEKY_SIM_SEEDS", "500"))
START = int(os.environ.get("LEEKY_SIM_START", "0"))
TICKS = int(os.environ.get("LEEKY_SIM_TICKS", "300"))
BLOCK = 50

BLOCKS = [
    (first, min(BLOCK, START + SEEDS - first)) for first in range(START, START + SEEDS, BLOCK)
]


def run_block(first: int, count: int, ticks: int = TICKS) -> list[str]:
    """Run seeds first..first+count-1; return one line per failing seed."""
    failures = []
    for seed in range(first, first + count):
        try:
            Simulation(seed, ticks=ticks).run()
        except SafetyViolation as exc:
            failures.append(f"seed {seed}: {exc}")
    return failures


@pytest.mark.parametrize(
    ("first", "count"), BLOCKS, ids=[f"seeds-{f}-{f + c - 1}" for f, c in BLOCKS]
)
def test_random_clusters_are_safe_and_live(first, count):
    """Every seed in the block keeps all safety properties and recovers once faults stop."""
    failures = run_block(first, count)
    assert not failures, "\n".join(failures)


class LeaseReadSimulation(Simulation):
    """The same randomized clusters with lease reads on: every read served on a lease
    is checked against what was committed before it was issued."""

    def core_config(self, nid: NodeId) -> CoreConfig:
        # (lease reads need CheckQuorum, which a quarter of the seeds turn off)
        return dataclasses.replace(super().core_config(nid), lease_read=True, check_quorum=True)


LEASE_SEEDS = range(100_000, 100_040)


def test_random_clusters_with_lease_reads_serve_no_stale_read():
    """Lease reads stay linearizable under partitions, crashes and transfers (bounded drift)."""
    failures = []
    reads = 0
    for seed in LEASE_SEEDS:
        try:
            reads += LeaseReadSimulation(seed, ticks=TICKS).run().reads
        except SafetyViolation as exc:
            failures.append(f"LeaseReadSimulation({seed}, ticks={TICKS}).run(): {exc}")
    assert not failures, "\n".join(failures)
    assert reads > 100


def test_same_seed_replays_identically():
    """A seed decides everything: two runs of it produce the same history."""
    a = Simulation(17, ticks=120)
    b = Simulation(17, ticks=120)
    ra, rb = a.run(), b.run()
    assert ra == rb
    assert a.committed == b.committed and a.messages_sent == b.messages_sent
    assert a.acked == b.acked


def test_default_seeds_cover_cluster_sizes_and_fault_settings():
    """The default seeds mix 3, 5 and 7 nodes and every kind of fault."""
    sims = [Simulation(seed, ticks=1) for seed in range(100)]
    sizes = Counter(s.n for s in sims)
    assert set(sizes) == {3, 5, 7}
    faults = [s.faults for s in sims]
    assert any(f.drop > 0 for f in faults)
    assert any(f.duplicate > 0 for f in faults)
    assert any(f.long_delay > 0 for f in faults)
    assert any(f.partition_rate > 0 for f in faults)
    assert any(f.crash_rate > 0 for f in faults)
    assert any(f.config_rate > 0 for f in faults)
    assert any(f.transfer_rate > 0 for f in faults)
    assert any(f.compact_rate > 0 for f in faults)
    assert any(f.drop == f.partition_rate == f.crash_rate == 0 for f in faults)
    # the fault classes of the shipped node, each in a share of the seeds
    for name in (
        "stop_rate",
        "crash_after_write",
        "disk_tear",
        "disk_fail",
        "oneway_rate",
        "stall_rate",
        "wipe_rate",
        "corrupt_snapshot",
    ):
        share = sum(getattr(f, name) > 0 for f in faults)
        assert 3 <= share <= 60, (name, share)
    assert 5 <= sum(f.max_disk_delay > 1.0 for f in faults) <= 60  # slow disks
    assert 5 <= sum(f.lease_read and f.stall_rate > 0 for f in faults) <= 60
    assert 3 <= sum(f.single_voter for f in faults) <= 60
    assert 3 <= sum(f.snapshot_entries < 100 for f in faults) <= 60


def test_simulation_runs_the_shipped_node():
    """Each simulated server is a RaftNode over the real in-memory stores: no copy
    of the Ready loop exists in the simulation."""
    import inspect

    import leeky_twisted.testing.simulation as simulation
    from leeky_twisted.server.node import RaftNode
    from leeky_twisted.storage.memory import MemoryLogStore

    sim = Simulation(5, ticks=30)
    sim.run()
    nodes = [h.node for h in sim.hosts.values() if h.node is not None]
    assert nodes and all(type(n) is RaftNode for n in nodes)
    assert all(isinstance(h.disk.log, MemoryLogStore) for h in sim.hosts.values())
    source = inspect.getsource(simulation)
    assert ".ready()" not in source and ".advance(" not in source


def test_simulation_makes_progress_under_faults():
    """Across a few seeds the runs commit, serve reads and change leaders: the checks have work."""
    results = [Simulation(seed, ticks=200).run() for seed in range(10)]
    assert all(r.committed > 10 for r in results)
    assert sum(r.reads for r in results) > 20
    assert any(r.elections > 2 for r in results)


def test_failure_names_seed_and_replay_command(monkeypatch):
    """A violation reports the seed and the one-line command that replays it."""
    sim = Simulation(3, ticks=20)

    def broken(host: object, rd: object) -> None:
        raise SafetyViolation("planted")

    monkeypatch.setattr(sim, "observe", broken)
    for host in sim.hosts.values():
        host._observe = broken
    with pytest.raises(SafetyViolation) as info:
        sim.run()
    assert "planted" in str(info.value)
    assert "python -m leeky_twisted.simulation --seed 3" in str(info.value)


def test_command_line_runs_seeds(capsys):
    """The soak command runs a range of seeds and reports the rate."""
    assert main(["--seeds", "3", "--start", "10", "--ticks", "50"]) == 0
    out = capsys.readouterr().out
    assert "3 seeds ok from 10" in out and "seeds/s" in out
    assert main(["--seed", "11", "--ticks", "50"]) == 0


def test_spare_nodes_start_outside_the_configuration():
    """Spare servers begin empty, so membership changes have somewhere to add to."""
    sim = Simulation(0, ticks=1)
    assert [nid for nid in sim.hosts if nid.startswith("s")] == [NodeId("s1"), NodeId("s2")]
    assert all(sim.hosts[s].disk.log.last_index() == 0 for s in sim.spares)
    assert all(sim.node_settings(s).bootstrap == [] for s in sim.spares)
