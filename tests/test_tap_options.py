"""The twistd option rules, and make_node_service's wiring of what they parse."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from leeky_twisted import defaults
from leeky_twisted.security.peerauth import UnauthenticatedPeersError
from leeky_twisted.server import tap
from leeky_twisted.server.node import UnrecoverableStateError
from leeky_twisted.server.recovery import ForceNewClusterError
from leeky_twisted.server.service import _Listener, make_node_service
from leeky_twisted.server.tap import Options
from leeky_twisted.statemachine.owner import OwnerFileError
from leeky_twisted.storage.errors import StoreLockedError

PEERS = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"


def parsed(tmp_path: Path, *extra: str) -> Options:
    opts = Options()
    opts.parseOptions(["--id", "1", "--peers", PEERS, "--data-dir", str(tmp_path), *extra])
    return opts


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--election-timeout", "0.1", "--heartbeat", "0.1"], "must exceed --heartbeat"),
        (["--heartbeat", "0.01"], "at least one --tick"),
        (["--bootstrap"], "exclude each other"),
        (["--min-voters", "5", "--max-voters", "3"], "exceeds --max-voters"),
        (["--tick", "0"], "must be positive"),
        (["--request-timeout", "-1"], "must be positive"),
    ],
)
def test_bad_combinations_are_refused_with_a_usage_error(tmp_path, extra, message):
    """Each rule refuses its bad combination with a UsageError naming the option."""
    if extra == ["--bootstrap"]:
        extra = ["--bootstrap", "--join", "127.0.0.1:7946"]
    with pytest.raises(usage.UsageError, match=message):
        parsed(tmp_path, *extra)


def test_missing_data_dir_and_unknown_peer_id_are_refused(tmp_path):
    """--data-dir is required; --peers must list this node's own id."""
    with pytest.raises(usage.UsageError, match="--data-dir is required"):
        Options().parseOptions(["--id", "1", "--peers", PEERS])
    with pytest.raises(usage.UsageError, match="own id"):
        Options().parseOptions(["--id", "9", "--peers", PEERS, "--data-dir", str(tmp_path)])


def test_seconds_become_ticks(tmp_path):
    """--heartbeat and --election-timeout are turned into whole ticks."""
    o = parsed(tmp_path, "--tick", "0.02", "--heartbeat", "0.04", "--election-timeout", "0.3")
    n = o.node_options
    assert (n.tick, n.heartbeat_ticks, n.election_ticks) == (0.02, 2, 15)


def test_make_node_service_wires_the_parsed_options_into_the_node(tmp_path):
    """The service's node runs on the parsed settings and the shared defaults."""
    opts = parsed(tmp_path, "--request-timeout", "2.5", "--snapshot-entries", "400")
    switch = sys.getswitchinterval()
    try:
        top = make_node_service(opts.node_options, MemoryReactorClock())
    finally:
        sys.setswitchinterval(switch)
    node = top.node
    try:
        assert node.node_id == "1"
        assert node.settings.request_timeout == 2.5
        assert node.settings.snapshot_entries == 400
        assert node.settings.snapshot_trailing == 100  # a quarter, below the default cap
        assert node.settings.tick_interval == defaults.TICK_SECONDS
        assert node.core.configuration.voters == {"1", "2", "3"}
        assert node.addresses["2"]["peer"] == "127.0.0.1:7002"
        assert node.core.cfg.follower_reads  # on unless --no-follower-reads
        assert not node.stopped
    finally:
        for store in node.log_store, node.stable_store:
            getattr(store, "close", lambda: None)()


GROWN = ["--address", "127.0.0.1:7101", "--gossip-port", "7301"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give --peers"),
        (["--bootstrap"], "need --address HOST:PORT"),
        (["--bootstrap", "--address", "127.0.0.1:7101"], "need --gossip-port"),
        (["--bootstrap", "--address", "127.0.0.1:7101", "--gossip-port", "70000"], "--gossip-port"),
        (["--join", "nohost", *GROWN, "--insecure"], "bad --join address 'nohost'"),
        (["--join", "10.0.0.1:x", *GROWN, "--insecure"], "expected HOST:PORT"),
        (["--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002"], "two voters"),
        (["--peers", "1=127.0.0.1"], "bad peer '1=127.0.0.1': expected ID=HOST:PORT"),
        (["--peers", "1=a:1,1=b:2"], "peer id '1' appears twice"),
        (["--peers", "1=127.0.0.1:0"], "bad port in '1=127.0.0.1:0'"),
        (["--peers", " , "], "--peers lists no peers"),
        (["--peers", PEERS, "--client-port", "70000"], "--client-port out of range"),
        (["--peers", PEERS, "--http-port", "-1"], "--http-port out of range"),
        (["--peers", PEERS, "--inline-write-budget", "-0.5"], "must not be negative"),
        (["--peers", PEERS, "--tick", "x"], "invalid literal|could not convert"),
        (
            ["--peers", PEERS, "--tick", "0.1", "--heartbeat", "0.2", "--election-timeout", "0.24"],
            "the election timeout must span more ticks than a heartbeat",
        ),
    ],
)
def test_each_option_rule_refuses_bad_input_with_a_clear_message(tmp_path, argv, message):
    """Every rule of Options.postOptions (and parse_peers) names what is wrong."""
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(["--id", "1", "--data-dir", str(tmp_path), *argv])


def test_a_data_dir_that_cannot_hold_the_node_id_is_refused(tmp_path):
    """A --data-dir under a file cannot hold DATA-DIR/node-id: a UsageError, no traceback."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(usage.UsageError, match="node id:"):
        Options().parseOptions(
            ["--id", "1", "--peers", PEERS, "--data-dir", str(tmp_path / "file")]
        )


def test_missing_tls_certificates_are_refused_before_the_node_starts(tmp_path):
    with pytest.raises(usage.UsageError, match="--tls-dir: cannot use the certificates"):
        parsed(tmp_path / "data", "--tls-dir", str(tmp_path / "no-certs"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read --config"),
        ("{not json", "cannot read --config"),
        ('["--tick", "0.1"]', "must hold a JSON object"),
        ('{"colour": "blue"}', "unknown option 'colour'"),
        ('{"config": "other.json"}', "unknown option 'config'"),
        ('{"tick": "fast"}', "bad value for 'tick'"),
        ('{"tick": -1}', "bad value for 'tick'.*must be positive"),
    ],
)
def test_a_bad_config_file_is_refused_naming_the_file(tmp_path, content, message):
    config = tmp_path / "node.json"
    if content is not None:
        config.write_text(content)
    with pytest.raises(usage.UsageError, match=message):
        parsed(tmp_path / "data", "--config", str(config))


def test_a_config_file_fills_options_and_the_command_line_wins(tmp_path):
    """--config keys are long option names (``_`` or ``-``); peers may be an object."""
    config = tmp_path / "node.json"
    peers = {"1": "127.0.0.1:7001", "2": "127.0.0.1:7002", "3": "127.0.0.1:7003"}
    config.write_text(
        json.dumps({"peers": peers, "request_timeout": 4, "snapshot-entries": 300, "tick": 0.5})
    )
    opts = Options()
    opts.parseOptions(
        ["--id", "2", "--data-dir", str(tmp_path / "d"), "--config", str(config), "--tick", "0.02"]
    )
    n = opts.node_options
    assert [p.address for p in n.peers] == list(peers.values())
    assert (n.request_timeout, n.snapshot_entries, n.tick) == (4.0, 300, 0.02)


@pytest.mark.parametrize(
    "error",
    [
        UnrecoverableStateError("1", "the log ends before the snapshot"),
        OwnerFileError("the executor owner file is damaged"),
        ForceNewClusterError("nothing to recover"),
        UnauthenticatedPeersError("peers would be unauthenticated"),
    ],
)
def test_make_service_turns_impossible_data_into_one_line(tmp_path, monkeypatch, error):
    """makeService exits with ``leekyraft: <cause>``, never a traceback."""

    def refuse(options: object) -> None:
        raise error

    monkeypatch.setattr(tap, "make_node_service", refuse)
    with pytest.raises(SystemExit) as info:
        tap.makeService(parsed(tmp_path))
    assert str(info.value) == f"leekyraft: {error}"


def test_make_service_names_a_data_dir_in_use(tmp_path, monkeypatch):
    def refuse(options: object) -> None:
        raise StoreLockedError(f"{tmp_path}/log is locked")

    monkeypatch.setattr(tap, "make_node_service", refuse)
    with pytest.raises(SystemExit, match="is another node running on this --data-dir"):
        tap.makeService(parsed(tmp_path))


def _built(opts: Options) -> Any:
    switch = sys.getswitchinterval()
    try:
        return make_node_service(opts.node_options, MemoryReactorClock())
    finally:
        sys.setswitchinterval(switch)


def _close(top: Any) -> None:
    for store in top.node.log_store, top.node.stable_store:
        getattr(store, "close", lambda: None)()


def test_make_node_service_listens_on_the_ports_and_hosts_given(tmp_path):
    """Peer port on the own peer host; the client and HTTP ports on --client-host, even a
    wildcard (the HTTP port once listened on the peer host then)."""
    top = _built(
        parsed(tmp_path, "--client-port", "7501", "--http-port", "7601", "--client-host", "0.0.0.0")
    )
    try:
        listeners = {s.what: (s.host, s.port) for s in top if isinstance(s, _Listener)}
        assert listeners == {
            "the peer (Raft) port": ("127.0.0.1", 7001),
            "the AMP client port": ("0.0.0.0", 7501),
            "the HTTP port": ("0.0.0.0", 7601),
        }
        # a wildcard listen address is not an address: others are told the peer host
        assert top.node.addresses["1"]["client"] == "127.0.0.1:7501"
        assert top.node.addresses["1"]["http"] == "127.0.0.1:7601"
    finally:
        _close(top)


def test_make_node_service_applies_the_request_limits_and_forwarding(tmp_path):
    """--max-value-bytes bounds the API and the HTTP body; --no-forward turns forwarding
    off; --no-follower-reads leaves linearizable reads to the leader."""
    top = _built(
        parsed(tmp_path, "--max-value-bytes", "5000", "--no-forward", "--no-follower-reads")
    )
    try:
        assert not top.node.core.cfg.follower_reads
        rpc = top.web.root.children[b"jsonrpc"]
        assert rpc.frontend.limits.max_value_bytes == 5000
        assert rpc.max_body_bytes == top.web.max_body_bytes == defaults.http_body_bytes(5000)
        assert rpc.frontend._forwarder is None
        assert rpc.frontend.leases is not None  # a key-value node keeps lease deadlines
    finally:
        _close(top)


def test_make_node_service_with_an_executor_keeps_no_local_store(tmp_path):
    """--executor-url: the node applies through the executor; the API has no KV store."""
    top = _built(parsed(tmp_path, "--executor-url", "http://127.0.0.1:7801/jsonrpc"))
    try:
        assert top.node.local_state_machine() is None
        frontend = top.web.root.children[b"jsonrpc"].frontend
        assert frontend.executor and frontend.watches is None and frontend.leases is None
    finally:
        _close(top)
