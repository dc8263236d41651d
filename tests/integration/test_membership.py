"""Clusters grown by gossip: introducer plus joiners, failures, rejoins."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from leeky_twisted.localcluster import free_ports, jsonrpc, twistd_path

pytestmark = pytest.mark.integration

FAST = [
    "--tick",
    "0.02",
    "--heartbeat",
    "0.06",
    "--election-timeout",
    "0.3",
    "--stabilization",
    "1",
    "--dead-grace",
    "3",
]


class Grown:
    """Nodes started with --bootstrap / --join, each with its own ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, dict[str, int]] = {}
        #: the cluster key: the bootstrap node creates it, joiners are given it
        self.key_path = root / "cluster.key"

    def start(self, nid: str, join: str | None) -> None:
        ports = self.ports.get(nid)
        if ports is None:
            peer, gossip, client, http = free_ports(4)
            ports = self.ports[nid] = {
                "peer": peer,
                "gossip": gossip,
                "client": client,
                "http": http,
            }
        folder = self.root / nid
        folder.mkdir(parents=True, exist_ok=True)
        argv = [
            twistd_path(),
            "-n",
            "--pidfile=",
            "leekyraft",
            "--id",
            nid,
            "--address",
            f"127.0.0.1:{ports['peer']}",
            "--gossip-port",
            str(ports["gossip"]),
            "--data-dir",
            str(folder / "data"),
            "--client-port",
            str(ports["client"]),
            "--http-port",
            str(ports["http"]),
            *FAST,
        ]
        if join:
            argv += ["--join", join, "--gossip-key-file", str(self.key_path)]
        else:
            argv += ["--bootstrap", "--gossip-key-file", str(self.key_path)]
        with open(folder / "node.log", "ab") as log:
            self.procs[nid] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def gossip_address(self, nid: str) -> str:
        return f"127.0.0.1:{self.ports[nid]['gossip']}"

    def kill(self, nid: str) -> None:
        p = self.procs[nid]
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def status(self, nid: str) -> dict | None:
        if self.procs[nid].poll() is not None:
            return None
        try:
            return jsonrpc(self.ports[nid]["http"], "status", timeout=1)
        except Exception:
            return None

    def wait(self, what: str, check, timeout: float = 40.0):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.1)  # noqa: TID251 - polling a condition under a deadline

    def voters_seen_by(self, nid: str) -> set[str] | None:
        st = self.status(nid)
        return set(st["voters"]) if st else None


def test_grow_fail_remove_rejoin_and_lose_the_introducer(tmp_path):
    """1 -> 5 voters by --join; a killed worker is removed, rejoins; the introducer may die."""
    g = Grown(tmp_path)
    try:
        g.start("n1", None)
        g.wait("the introducer to lead", lambda: (g.status("n1") or {}).get("role") == "leader")
        for nid in ("n2", "n3", "n4", "n5"):
            g.start(nid, g.gossip_address("n1"))
        everyone = {"n1", "n2", "n3", "n4", "n5"}
        g.wait("five voters", lambda: g.voters_seen_by("n1") == everyone)
        jsonrpc(g.ports["n3"]["http"], "put", "grown", "yes")

        g.kill("n4")
        g.wait("n4 to be removed", lambda: g.voters_seen_by("n1") == everyone - {"n4"})
        jsonrpc(g.ports["n2"]["http"], "put", "after", "removal")

        g.start("n4", g.gossip_address("n2"))
        g.wait("n4 to rejoin as voter", lambda: g.voters_seen_by("n1") == everyone)

        g.kill("n1")
        survivors = ["n2", "n3", "n4", "n5"]

        def new_leader():
            for nid in survivors:
                st = g.status(nid)
                if st and st["role"] == "leader":
                    return nid
            return None

        leader = g.wait("a new leader without the introducer", new_leader)
        jsonrpc(g.ports[leader]["http"], "put", "no", "introducer")
        g.start("n6", g.gossip_address("n3"))
        g.wait(
            "n6 to join through n3",
            lambda: (
                "n6" in (g.voters_seen_by(leader) or set())
                or "n6" in ((g.status(leader) or {}).get("learners") or [])
            ),
        )
        assert jsonrpc(g.ports["n6"]["http"], "get", "no", {"stale": True}) in ("introducer", None)
        g.wait(
            "n6 to have the data",
            lambda: jsonrpc(g.ports["n6"]["http"], "get", "grown", {"stale": True}) == "yes",
        )
    finally:
        g.stop()
