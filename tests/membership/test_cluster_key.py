"""Secure by default: the cluster key is made with the cluster, and gossip needs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.python import usage

from leeky_twisted.ops.localcluster import LocalCluster
from leeky_twisted.security.clusterkey import (
    DEFAULT_CLUSTER_ID,
    cluster_id_from_key,
    create_key_file,
    read_key_file,
    resolve_key,
)
from leeky_twisted.server.tap import Options


def parse(*argv: str) -> Options:
    """Parse a node's command line."""
    opts = Options()
    opts.parseOptions(list(argv))
    return opts


def grown(tmp_path: Path, nid: str, *more: str) -> list[str]:
    """Return the options of a node grown by gossip, with its own data folder."""
    return [
        "--id",
        nid,
        "--address",
        "127.0.0.1:7100",
        "--gossip-port",
        "7300",
        "--data-dir",
        str(tmp_path / nid),
        *more,
    ]


def test_bootstrap_creates_a_private_key_beside_the_data(tmp_path: Path) -> None:
    """--bootstrap writes DATA-DIR/cluster.key (0600); a restart reuses it; the id follows it."""
    opts = parse(*grown(tmp_path, "n1", "--bootstrap")).node_options
    path = tmp_path / "n1" / "cluster.key"
    assert path.stat().st_mode & 0o777 == 0o600
    key = read_key_file(str(path))
    assert len(key) == 64 and opts.gossip_key == key and opts.gossip_key_created
    assert opts.cluster_id == cluster_id_from_key(key) != DEFAULT_CLUSTER_ID
    again = parse(*grown(tmp_path, "n1", "--bootstrap")).node_options
    assert (again.gossip_key, again.gossip_key_created) == (key, False)
    assert again.cluster_id == opts.cluster_id


def test_two_new_clusters_get_different_keys_and_ids(tmp_path: Path) -> None:
    """Each --bootstrap makes its own secret, so two clusters never share an id by default."""
    a = parse(*grown(tmp_path, "a", "--bootstrap")).node_options
    b = parse(*grown(tmp_path, "b", "--bootstrap")).node_options
    assert a.gossip_key != b.gossip_key and a.cluster_id != b.cluster_id


def test_bootstrap_creates_the_key_file_it_is_given(tmp_path: Path) -> None:
    """--bootstrap --gossip-key-file F creates F when missing (the compose introducer does)."""
    shared = tmp_path / "secret" / "cluster.key"
    opts = parse(*grown(tmp_path, "n1", "--bootstrap", "--gossip-key-file", str(shared)))
    assert opts.node_options.gossip_key == read_key_file(str(shared))
    assert not (tmp_path / "n1" / "cluster.key").exists()


def test_join_without_the_key_is_refused(tmp_path: Path) -> None:
    """Issue 19 finding 1: --join needs --gossip-key-file, or an explicit --insecure."""
    with pytest.raises(usage.UsageError, match=r"--gossip-key-file FILE.*--insecure"):
        parse(*grown(tmp_path, "n2", "--join", "127.0.0.1:7301"))
    with pytest.raises(usage.UsageError, match="cannot use the cluster key"):
        parse(*grown(tmp_path, "n2", "--join", "h:1", "--gossip-key-file", str(tmp_path / "no")))
    insecure = parse(*grown(tmp_path, "n2", "--join", "h:1", "--insecure")).node_options
    assert insecure.gossip_key is None and insecure.insecure
    assert insecure.cluster_id == DEFAULT_CLUSTER_ID


def test_a_joiner_with_the_key_agrees_on_the_cluster_id(tmp_path: Path) -> None:
    """A joiner given the introducer's key derives the same cluster id; gossip is signed."""
    first = parse(*grown(tmp_path, "n1", "--bootstrap")).node_options
    key_file = str(tmp_path / "n1" / "cluster.key")
    joiner = parse(*grown(tmp_path, "n2", "--join", "h:1", "--gossip-key-file", key_file))
    assert joiner.node_options.gossip_key == first.gossip_key
    assert joiner.node_options.cluster_id == first.cluster_id


def test_insecure_bootstrap_makes_no_key(tmp_path: Path) -> None:
    """--bootstrap --insecure runs without a key (and says so at start)."""
    opts = parse(*grown(tmp_path, "n1", "--bootstrap", "--insecure")).node_options
    assert opts.gossip_key is None and not (tmp_path / "n1" / "cluster.key").exists()


def test_a_static_cluster_by_hand_needs_no_key(tmp_path: Path) -> None:
    """README's `--peers` cluster still starts without extra flags, as cluster 'leeky'."""
    peers = "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"
    opts = parse("--id", "1", "--peers", peers, "--data-dir", str(tmp_path / "1")).node_options
    assert (opts.gossip_key, opts.cluster_id) == (None, DEFAULT_CLUSTER_ID)
    with pytest.raises(usage.UsageError, match="gossip needs the cluster key"):
        parse("--id", "1", "--peers", peers, "--data-dir", str(tmp_path), "--gossip-port", "7300")


def test_a_static_cluster_of_two_voters_is_refused(tmp_path: Path) -> None:
    """Both would start abstaining: a new two-voter cluster could never elect a leader."""
    peers = "1=127.0.0.1:7101,2=127.0.0.1:7102"
    with pytest.raises(usage.UsageError, match="two voters"):
        parse("--id", "1", "--peers", peers, "--data-dir", str(tmp_path / "1"))


def test_an_explicit_cluster_id_wins(tmp_path: Path) -> None:
    """--cluster-id overrides the id derived from the key."""
    opts = parse(*grown(tmp_path, "n1", "--bootstrap", "--cluster-id", "prod")).node_options
    assert opts.cluster_id == "prod"


def test_an_empty_key_file_is_refused(tmp_path: Path) -> None:
    """A key file with nothing in it would authenticate nothing."""
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    with pytest.raises(usage.UsageError, match="empty"):
        parse(*grown(tmp_path, "n2", "--join", "h:1", "--gossip-key-file", str(empty)))


def test_create_key_file_keeps_a_key_that_appeared_meanwhile(tmp_path: Path) -> None:
    """Two creators racing: the file is written whole once, and both see the same key."""
    path = str(tmp_path / "k")
    first = create_key_file(path)
    assert create_key_file(path) == first
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_resolve_key_without_anything_is_no_key(tmp_path: Path) -> None:
    """No file, no bootstrap: no key."""
    assert resolve_key(None, str(tmp_path), bootstrap=False, insecure=False).key is None


def test_a_local_cluster_shares_one_key(tmp_path: Path) -> None:
    """`leekyraft local` gives every node the same key file, made once under its folder."""
    cluster = LocalCluster(tmp_path, nodes=3)
    key = (tmp_path / "cluster.key").read_bytes()
    argvs = [cluster.argv(n) for n in cluster.nodes]
    for argv in argvs:
        assert argv[argv.index("--gossip-key-file") + 1] == str(tmp_path / "cluster.key")
    assert LocalCluster(tmp_path, nodes=3).key_path.read_bytes() == key
    assert (tmp_path / "cluster.key").stat().st_mode & 0o777 == 0o600
