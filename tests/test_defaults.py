"""Each default is written once (leeky_twisted/defaults.py); every layer agrees with it."""

from __future__ import annotations

import pytest

from leeky_twisted import defaults
from leeky_twisted.api.amp_api import RequestLimits
from leeky_twisted.server.node import NodeSettings
from leeky_twisted.server.service import NodeOptions
from leeky_twisted.server.tap import Options


def test_twistd_options_default_to_the_shared_values():
    """``twistd leekyraft`` with no flags runs on the values in defaults.py."""
    opts = Options()
    assert opts["tick"] == defaults.TICK_SECONDS
    assert opts["heartbeat"] == pytest.approx(defaults.TICK_SECONDS * defaults.HEARTBEAT_TICKS)
    assert opts["election-timeout"] == pytest.approx(
        defaults.TICK_SECONDS * defaults.ELECTION_TICKS
    )
    assert opts["request-timeout"] == defaults.REQUEST_TIMEOUT
    assert opts["snapshot-entries"] == defaults.SNAPSHOT_ENTRIES
    assert opts["snapshot-bytes"] == defaults.SNAPSHOT_BYTES
    assert opts["inline-write-budget"] == defaults.INLINE_WRITE_BUDGET
    assert opts["max-key-bytes"] == defaults.MAX_KEY_BYTES
    assert opts["max-value-bytes"] == defaults.MAX_VALUE_BYTES
    assert opts["watch-window"] == defaults.WATCH_WINDOW
    assert opts["data-dir-check"] == defaults.DATA_DIR_CHECK_SECONDS


def test_node_options_settings_and_limits_default_to_the_shared_values():
    """NodeOptions, NodeSettings and RequestLimits agree with defaults.py."""
    opts = NodeOptions(node_id="1", peers=[], data_dir="d")
    assert (opts.tick, opts.heartbeat_ticks, opts.election_ticks) == (
        defaults.TICK_SECONDS,
        defaults.HEARTBEAT_TICKS,
        defaults.ELECTION_TICKS,
    )
    assert opts.request_timeout == defaults.REQUEST_TIMEOUT
    assert opts.data_dir_check == defaults.DATA_DIR_CHECK_SECONDS
    assert (opts.snapshot_entries, opts.snapshot_bytes) == (
        defaults.SNAPSHOT_ENTRIES,
        defaults.SNAPSHOT_BYTES,
    )
    settings = NodeSettings()
    assert settings.tick_interval == defaults.TICK_SECONDS
    assert settings.request_timeout == defaults.REQUEST_TIMEOUT
    assert settings.snapshot_entries == defaults.SNAPSHOT_ENTRIES
    assert settings.snapshot_trailing == defaults.SNAPSHOT_TRAILING
    assert settings.inline_persist_seconds == defaults.INLINE_WRITE_BUDGET
    limits = RequestLimits()
    assert (limits.max_key_bytes, limits.max_value_bytes) == (
        defaults.MAX_KEY_BYTES,
        defaults.MAX_VALUE_BYTES,
    )


def test_http_body_holds_two_values_and_headroom():
    """A JSON-RPC body may carry a compare-and-swap: two values and the envelope."""
    assert defaults.http_body_bytes(10) == 20 + defaults.HTTP_BODY_HEADROOM
