"""Exactly-once writes through a leader crash, with and without client sessions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, jsonrpc

pytestmark = pytest.mark.integration

# A long election timeout: the leader must not give up (check-quorum) while its
# followers are frozen for the length of one client call.
FAST = ["--tick", "0.02", "--heartbeat", "0.1", "--election-timeout", "2.0"]
HELPER = str(Path(__file__).with_name("amp_append.py"))


def amp_append(node, key: str, suffix: str, client_id: str | None, seq: int, timeout: float):
    out = subprocess.run(
        [
            sys.executable,
            HELPER,
            f"127.0.0.1:{node.client_port}",
            key,
            suffix,
            client_id or "-",
            str(seq),
            str(timeout),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def register(node) -> str:
    out = subprocess.run(
        [sys.executable, HELPER, f"127.0.0.1:{node.client_port}", "register"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["session"]


def retry_through_leader_crash(tmp_path: Path, with_session: bool) -> str:
    """Append once with an unknown outcome, crash the leader, retry; return the value."""
    c = LocalCluster(tmp_path / "once", nodes=3, extra_args=FAST)
    try:
        c.start()
        leader = c.wait_for_leader()
        client_id = register(leader) if with_session else None
        others = [n for n in c.nodes if n is not leader]
        assert amp_append(leader, "ctr", "a", client_id, 1, 5.0).get("length") == 1
        # Freeze the followers so the next append cannot commit in time: the
        # client times out and its outcome is unknown. Thaw them before the
        # leader's check-quorum gives up, so the entry does commit.
        for n in others:
            c.kill(n, signal.SIGSTOP)
        first = amp_append(leader, "ctr", "x", client_id, 2, 0.15)
        for n in others:
            c.kill(n, signal.SIGCONT)
        assert first == {"timeout": True}
        c.wait_for(
            "the frozen append to commit",
            lambda: jsonrpc(others[0].http_port, "get", "ctr", {"stale": True}) == "ax",
            timeout=20,
        )
        c.kill(leader, signal.SIGKILL)
        new = c.wait_for(
            "a new leader",
            lambda: next((n for n in others if (c.status(n) or {}).get("role") == "leader"), None),
        )
        retried = amp_append(new, "ctr", "x", client_id, 2, 10.0)
        assert "length" in retried, retried
        return jsonrpc(new.http_port, "get", "ctr")
    finally:
        c.stop()


def test_retried_append_is_applied_exactly_once_with_a_session(tmp_path):
    """With a client session, the retry after a leader crash is not applied again."""
    assert retry_through_leader_crash(tmp_path, True) == "ax"


def test_without_a_session_the_same_retry_duplicates(tmp_path):
    """Without a session the same retry is applied twice: the test can see duplicates."""
    assert retry_through_leader_crash(tmp_path, False) == "axx"


def test_a_write_in_a_session_never_registered_is_refused(tmp_path):
    """A made-up session id is refused with SESSION_EXPIRED and nothing is written."""
    c = LocalCluster(tmp_path / "unknown", nodes=1, extra_args=FAST)
    try:
        c.start()
        leader = c.wait_for_leader()
        answer = amp_append(leader, "ctr", "x", "123.made-up", 1, 10.0)
        assert "unknown or expired" in answer.get("error", ""), answer
        assert jsonrpc(leader.http_port, "get", "ctr") is None
    finally:
        c.stop()
