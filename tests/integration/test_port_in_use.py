"""A node whose port is taken says so in one line and exits, instead of running on without it."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import free_ports, twistd_path

pytestmark = pytest.mark.integration


def test_a_node_whose_peer_port_is_taken_says_so_and_exits_1(tmp_path: Path) -> None:
    """Another process holds the peer port: one critical line naming the port and what to
    do, no traceback, exit status 1 (a supervisor sees it failed)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        client, http = free_ports(2)
        argv = [
            twistd_path(), "-n", "--pidfile=", "leekyraft", "--id", "1",
            "--peers", f"1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
            "--client-port", str(client), "--http-port", str(http),
        ]  # fmt: skip
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert f"cannot listen on the peer (Raft) port (127.0.0.1:{port})" in out
    assert "Address already in use" in out and "another node or cluster" in out
    assert "Traceback" not in out
