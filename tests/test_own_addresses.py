"""A node's own addresses come from its options, never from old log entries or snapshots."""

from __future__ import annotations

import json
from pathlib import Path

from nodebuild import node_from

from leeky_twisted.core.messages import ConfChange, ConfChangeOp, Entry, EntryKind, NodeId
from leeky_twisted.server.node import RaftNode


def node_of(tmp_path: Path) -> RaftNode:
    """Build node 1's service on a memory reactor; return its node (stores closed)."""
    return node_from(
        [
            "--id=1",
            "--peers=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
            f"--data-dir={tmp_path}",
            "--client-port=7501",
            "--http-port=7601",
        ]
    )


def config_entry(nid: str, addresses: dict[str, str]) -> Entry:
    change = ConfChange(ConfChangeOp.ADD_VOTER, NodeId(nid), json.dumps(addresses).encode())
    return Entry(9, 2, EntryKind.CONFIG, change.encode())


def test_replayed_configuration_entries_leave_own_addresses_alone(tmp_path: Path) -> None:
    """An entry naming this node's old (pre-re-creation) addresses changes only the others'."""
    node = node_of(tmp_path)
    mine = dict(node.addresses["1"])
    assert mine == {"peer": "127.0.0.1:7001", "client": "127.0.0.1:7501", "http": "127.0.0.1:7601"}
    old = {"peer": "old-host:7100", "client": "old-host:7000", "http": "old-host:7200"}
    node._apply_config(config_entry("1", old))
    node._apply_config(config_entry("2", old))
    assert node.addresses["1"] == mine
    assert node.addresses["2"] == old
    assert node.status().client_address == "127.0.0.1:7501"


def test_a_restored_snapshot_leaves_own_addresses_alone(tmp_path: Path) -> None:
    """A snapshot's address book (``addresses.restore``) replaces every entry but our own."""
    node = node_of(tmp_path)
    mine = dict(node.addresses["1"])
    node.addresses.restore({"1": {"peer": "old:1"}, "3": {"peer": "n3:7100"}})
    node.addresses.learn("1", {"peer": "old:2"})
    assert node.addresses["1"] == mine and node.addresses["3"] == {"peer": "n3:7100"}
    node.addresses.set_own("client", "127.0.0.1:9999")  # the service records a bound port
    assert node.addresses["1"]["client"] == "127.0.0.1:9999"


def test_an_announcement_of_this_node_is_not_taken_from_the_log(tmp_path: Path) -> None:
    """A leader's announcement naming this node (an old one of its own) changes nothing."""
    node = node_of(tmp_path)
    mine = dict(node.addresses["1"])
    node.addresses.apply_announcement(b'{"announce": "1", "addresses": {"client": "old:1"}}')
    node.addresses.apply_announcement(b'{"announce": "2", "addresses": {"client": "n2:7500"}}')
    node.addresses.apply_announcement(b"not json")
    assert node.addresses["1"] == mine
    assert node.addresses["2"]["client"] == "n2:7500"
