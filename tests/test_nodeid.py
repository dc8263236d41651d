"""The node id lives with the data: DATA-DIR/node-id, created once, checked at every start."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from leeky_twisted.server.nodeid import ID_FILE, NodeIdError, resolve_node_id
from leeky_twisted.server.tap import Options


def parse(*argv: str) -> Options:
    """Parse a node's command line."""
    opts = Options()
    opts.parseOptions(list(argv))
    return opts


def joiner(data: Path, *more: str) -> list[str]:
    """Return the options of a node joining by gossip, without --id unless given in ``more``."""
    return [
        "--address",
        "127.0.0.1:7100",
        "--gossip-port",
        "7300",
        "--join",
        "127.0.0.1:7301",
        "--insecure",
        "--data-dir",
        str(data),
        *more,
    ]


def test_a_new_id_is_created_once_and_read_back(tmp_path: Path) -> None:
    """Without --id a fresh folder gets a random id, stored; the next start reads the same."""
    first = resolve_node_id(str(tmp_path), None)
    assert first.startswith("n-")
    assert (tmp_path / ID_FILE).read_text().strip() == first
    assert resolve_node_id(str(tmp_path), None) == first
    assert resolve_node_id(str(tmp_path / "other"), None) != first


def test_a_given_id_is_stored_and_must_match_later(tmp_path: Path) -> None:
    """--id is stored at the first start; a different --id later is refused, naming both."""
    assert resolve_node_id(str(tmp_path), "n7") == "n7"
    assert resolve_node_id(str(tmp_path), "n7") == "n7"
    assert resolve_node_id(str(tmp_path), None) == "n7"
    with pytest.raises(NodeIdError, match=r"--id n8 differs from the id n7 stored in"):
        resolve_node_id(str(tmp_path), "n8")


def test_old_data_without_an_id_file_needs_the_id_once(tmp_path: Path) -> None:
    """A folder holding a node's data but no id file is not given a new identity."""
    (tmp_path / "hardstate").write_bytes(b"x")
    with pytest.raises(NodeIdError, match="give the node's id once with --id"):
        resolve_node_id(str(tmp_path), None)
    assert not (tmp_path / ID_FILE).exists()
    assert resolve_node_id(str(tmp_path), "old-host") == "old-host"
    assert resolve_node_id(str(tmp_path), None) == "old-host"


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"two words\n", b"a" * 65])
def test_a_damaged_id_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    """An unreadable id file stops the node with a message, never a new identity."""
    (tmp_path / ID_FILE).write_bytes(content)
    with pytest.raises(NodeIdError, match="does not hold a valid node id"):
        resolve_node_id(str(tmp_path), None)


def test_joiner_without_id_uses_the_stored_one(tmp_path: Path) -> None:
    """twistd leekyraft --join without --id creates the id, then keeps it across starts."""
    first = parse(*joiner(tmp_path)).node_options.node_id
    assert (tmp_path / ID_FILE).read_text().strip() == first
    assert parse(*joiner(tmp_path)).node_options.node_id == first
    assert parse(*joiner(tmp_path, "--id", first)).node_options.node_id == first


def test_joiner_with_another_id_is_refused(tmp_path: Path) -> None:
    """A re-created container given a new --id on the old volume gets a clear usage error."""
    parse(*joiner(tmp_path, "--id", "w1"))
    with pytest.raises(usage.UsageError, match="--id w2 differs from the id w1"):
        parse(*joiner(tmp_path, "--id", "w2"))


def test_static_cluster_still_needs_id_and_checks_it(tmp_path: Path) -> None:
    """--peers without --id is refused; with --id the id is stored and checked too."""
    peers = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"
    with pytest.raises(usage.UsageError, match="--id is required"):
        parse("--peers", peers, "--data-dir", str(tmp_path))
    parse("--id", "1", "--peers", peers, "--data-dir", str(tmp_path))
    with pytest.raises(usage.UsageError, match="differs from the id 1"):
        parse("--id", "2", "--peers", peers, "--data-dir", str(tmp_path))


def test_a_refused_command_line_stores_no_id(tmp_path: Path) -> None:
    """Bad options leave no id file behind (a typo does not become the node's identity)."""
    with pytest.raises(usage.UsageError):
        parse(*joiner(tmp_path, "--id", "typo", "--election-timeout", "0.01"))
    assert not (tmp_path / ID_FILE).exists()
