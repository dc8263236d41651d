"""With mutual TLS, each node gathers the other members over HTTPS with its certificate."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import LocalCluster
from leeky_twisted.security.certs import make_client_cert, make_dev_ca, make_node_cert

pytestmark = pytest.mark.integration

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]


def test_a_tls_nodes_dashboard_shows_every_member(tmp_path: Path):
    certs = tmp_path / "certs"
    make_dev_ca(str(certs))
    for node_id in ("1", "2", "3"):
        make_node_cert(str(certs), node_id)
    make_client_cert(str(certs), "alice")
    c = LocalCluster(tmp_path / "c3", nodes=3, extra_args=FAST, tls_dir=certs, tls_client="alice")
    try:
        c.start()
        c.wait_for_leader(timeout=20)
        node = c.nodes[0]
        url = f"https://127.0.0.1:{node.http_port}/dashboard/cluster"

        def all_reachable() -> dict | None:
            with urllib.request.urlopen(url, timeout=5, context=c.https) as resp:
                view = json.loads(resp.read())
            members = view["members"]
            return (
                view
                if len(members) == 3 and all(m["reachable"] for m in members.values())
                else None
            )

        view = c.wait_for("every member gathered over HTTPS", all_reachable, timeout=20)
        roles = sorted(m["state"]["status"]["role"] for m in view["members"].values())
        assert roles == ["follower", "follower", "leader"]
    finally:
        c.stop()
