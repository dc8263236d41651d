"""The twistd option rules, and make_node_service's wiring of what they parse."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from leeky_twisted import defaults
from leeky_twisted.server.service import make_node_service
from leeky_twisted.server.tap import Options

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
        assert not node.stopped
    finally:
        for store in node.log_store, node.stable_store:
            getattr(store, "close", lambda: None)()
