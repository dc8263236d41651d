"""Operator actions on a real cluster: refused without the token, done with it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from leeky_twisted.ops.localcluster import LocalCluster

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
TOKEN = "operator-token-0123456789"


def call(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"", headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_transfer_leadership_from_the_dashboard_needs_the_token(tmp_path: Path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    c = LocalCluster(
        tmp_path / "c3",
        nodes=3,
        extra_args=[*FAST, "--dashboard-admin-token-file", str(token_file)],
    )
    try:
        c.start()
        leader = c.wait_for_leader()
        target = next(n for n in c.nodes if n is not leader)
        path = f"/dashboard/admin/transfer?to={target.node_id}"
        assert call(leader.http_port, path)[0] == 403
        assert call(leader.http_port, path, "wrong-token-0123456789")[0] == 403
        code, body = call(target.http_port, path, TOKEN)
        assert code == 409 and "leader" in body["error"]  # a follower cannot transfer
        code, body = call(leader.http_port, path, TOKEN)
        assert code == 200, body
        c.wait_for("the new leader", lambda: c.leader() is target, timeout=15)
    finally:
        c.stop()
