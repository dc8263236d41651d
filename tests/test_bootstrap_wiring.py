"""The service states the bootstrap configuration it writes, in every Hello (issue 19)."""

from __future__ import annotations

from pathlib import Path

from nodebuild import node_from

PEERS = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"


def stated(tmp_path: Path, name: str, *argv: str):
    """Return the bootstrap configuration the node built from ``argv`` states."""
    node = node_from([*argv, "--data-dir", str(tmp_path / name)])
    peer_transport = node.transport
    while not hasattr(peer_transport, "bootstrap"):  # under the counting wrappers
        peer_transport = peer_transport.inner
    return peer_transport.bootstrap


def test_static_members_with_the_same_peers_state_the_same_configuration(tmp_path: Path):
    """Same --peers: same digest, described as the --peers list; another list: another digest."""
    one = stated(tmp_path, "1", "--id", "1", "--peers", PEERS)
    two = stated(tmp_path, "2", "--id", "2", "--peers", PEERS)
    assert one == two and one.description == PEERS
    more = stated(tmp_path, "4", "--id", "4", "--peers", PEERS + ",4=127.0.0.1:7104")
    moved = stated(tmp_path, "3", "--id", "3", "--peers", PEERS.replace("7103", "7203"))
    assert len({one.digest, more.digest, moved.digest}) == 3


def test_a_joiner_states_none_and_a_bootstrap_node_its_own(tmp_path: Path):
    """--join has no bootstrap entries (it accepts the cluster's); --bootstrap has one voter."""
    grown = ["--address", "127.0.0.1:7101", "--gossip-port", "7301"]
    boot = stated(tmp_path, "b", "--id", "n1", *grown, "--bootstrap")
    assert boot is not None and boot.description == "n1=127.0.0.1:7101"
    join = ["--id", "n2", *grown, "--join", "127.0.0.1:7301", "--insecure"]
    assert stated(tmp_path, "j", *join) is None
