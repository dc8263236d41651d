"""The simulation's data-folder fault: a node's folder deleted or replaced under it.

A node whose folder is swapped keeps its open stores (as a process keeps its
open files), so without a guard it would go on acknowledging writes that no
restart will find. The simulated node carries the shipped DataFolderGuard and
must stop itself; the simulation checks that it does, and that the cluster stays
safe when it starts again on the new, empty folder.
"""

from __future__ import annotations

import random

import pytest

from leeky_twisted.core.config import CoreConfig
from leeky_twisted.core.messages import NodeId
from leeky_twisted.server.node import NodeSettings
from leeky_twisted.testing.hosts import NodeHost, SimReactor
from leeky_twisted.testing.simulation import FaultSettings, SafetyViolation, Simulation

#: seeds (of 700000-700299, the range the task soaked) with folder swaps
SWAP_SEEDS = (700000, 700039, 700111)


def single_node_host(reactor: SimReactor) -> NodeHost:
    """A one-voter node on a perfect disk and a network that loses everything."""
    nid = NodeId("n1")
    return NodeHost(
        reactor,
        nid,
        lambda n: CoreConfig(n, election_ticks=10, heartbeat_ticks=2),
        lambda n: NodeSettings(tick_interval=1.0, bootstrap=[("n1", b"")]),
        random.Random(1),
        lambda host, message: None,
    )


def leading_host() -> tuple[SimReactor, NodeHost]:
    """A single-node cluster that elected itself."""
    reactor = SimReactor()
    host = single_node_host(reactor)
    assert host.start()
    reactor.run_until(40.0)
    assert host.node is not None and host.node.core.leader_id == NodeId("n1")
    return reactor, host


def test_replaced_folder_stops_the_node_at_the_next_check():
    """A folder replaced under a running node (its stores still take writes) stops
    it within one check interval, with a reason that names the folder."""
    reactor, host = leading_host()
    node = host.node
    assert node is not None
    old = host.disk
    host.swap_folder(deleted=False)
    assert host.disk is not old and host.disk.log.last_index() == 0
    reactor.run_until(reactor.now + 1.5)
    assert node.stopped and not host.up
    assert node.failure is not None
    assert "data folder" in node.failure and "was replaced" in node.failure


def test_deleted_folder_stops_the_node_at_its_next_write():
    """A deleted folder fails the node's next write, and the node names the folder,
    not the write error, as the reason it stopped."""
    reactor, host = leading_host()
    node = host.node
    assert node is not None
    host.swap_folder(deleted=True)
    d = node.propose(b"k=1", 30.0)
    d.addErrback(lambda _: None)
    reactor.run_until(reactor.now + 0.5)  # before the timed check
    assert node.failure is not None and "was deleted" in node.failure


def test_node_starts_again_on_the_new_folder():
    """After it stopped itself, the node starts on the folder now at its path."""
    reactor, host = leading_host()
    host.swap_folder(deleted=False)
    reactor.run_until(reactor.now + 1.5)
    host.crash()
    assert host.start()
    assert host.node is not None and host.node.failure is None
    assert not host.folder_swapped
    reactor.run_until(reactor.now + 3.0)
    assert host.up  # the new folder is the one it opened: no false alarm


def test_some_seeds_swap_folders():
    """A share of the seeds have the fault on, drawn from its own generator so the
    seeds without it replay the schedules they always had."""
    faults = [Simulation(seed, ticks=1).faults for seed in range(100)]
    share = sum(f.folder_swap_rate > 0 for f in faults)
    assert 3 <= share <= 60, share


@pytest.mark.parametrize("seed", SWAP_SEEDS)
def test_swapped_folders_stop_their_nodes_and_the_cluster_stays_safe(seed):
    """Seeds with folder swaps: every swapped node stopped itself, and the
    cluster kept every safety property and recovered."""
    sim = Simulation(seed)
    sim.run()
    assert sim.folder_swaps > 0
    assert sim.folder_stops > 0


def test_a_node_that_ignores_its_swapped_folder_is_caught():
    """The checker has teeth: a node without the guard runs on, and the run fails."""
    faults = FaultSettings(folder_swap_rate=0.05)
    sim = Simulation(5, nodes=3, ticks=200, faults=faults)
    for host in sim.hosts.values():
        host.guard_folder = False
    with pytest.raises(SafetyViolation, match="went on running"):
        sim.run()
