"""--dashboard-admin-token-file: checked at start, and the token reaches the node's options."""

from __future__ import annotations

import pytest
from twisted.python import usage

from leeky_twisted.server.tap import Options


def base(tmp_path) -> list[str]:
    return ["--id", "1", "--peers", "1=127.0.0.1:7101", "--data-dir", str(tmp_path / "d")]


def test_without_the_option_the_dashboard_is_read_only(tmp_path):
    opts = Options()
    opts.parseOptions(base(tmp_path))
    assert opts.node_options.dashboard_admin_token is None


def test_the_token_file_is_read(tmp_path):
    token = tmp_path / "admin.token"
    token.write_text("0123456789abcdef-token\n")
    opts = Options()
    opts.parseOptions([*base(tmp_path), "--dashboard-admin-token-file", str(token)])
    assert opts.node_options.dashboard_admin_token == b"0123456789abcdef-token"


def test_a_bad_token_file_is_a_usage_error_naming_the_option(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(usage.UsageError, match=r"--dashboard-admin-token-file: .*at least 16"):
        Options().parseOptions([*base(tmp_path), "--dashboard-admin-token-file", str(short)])
    with pytest.raises(usage.UsageError, match="--dashboard-admin-token-file: cannot read"):
        Options().parseOptions(
            [*base(tmp_path), "--dashboard-admin-token-file", str(tmp_path / "absent")]
        )
