"""Clusters grown by gossip: introducer plus joiners, failures, rejoins."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from leeky_twisted.ops.localcluster import free_ports, jsonrpc, twistd_path

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


def send_gossip(g: Grown, sender: str, records: tuple, key: bytes | None, to: list[str]) -> None:
    """Send one forged SYNC datagram to the gossip ports of ``to``, signed with ``key``."""
    from leeky_twisted.membership import codec
    from leeky_twisted.security.clusterkey import cluster_id_from_key, read_key_file

    cluster = cluster_id_from_key(read_key_file(str(g.key_path)))
    packet = codec.Packet(codec.PacketKind.SYNC, sender, records=records)
    data = codec.encode(packet, cluster, key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for nid in to:
            s.sendto(data, ("127.0.0.1", g.ports[nid]["gossip"]))


def members_seen_by(g: Grown, nid: str) -> set[str]:
    """Return the voters and learners in ``nid``'s configuration."""
    st = g.status(nid) or {}
    return set(st.get("voters") or []) | set(st.get("learners") or [])


def test_forged_joins_never_add_an_outsider(tmp_path):
    """Issue 19 finding 1: unsigned and wrong-key JOINs are dropped; only key holders join."""
    from leeky_twisted.membership import codec

    g = Grown(tmp_path)
    try:
        g.start("n1", None)
        g.wait("the introducer to lead", lambda: (g.status("n1") or {}).get("role") == "leader")
        (evil_peer,) = free_ports(1)
        evil = codec.Record(
            "evil",
            0,
            codec.MemberState.ALIVE,
            ("127.0.0.1", 9),
            codec.metadata_from({"peer": f"127.0.0.1:{evil_peer}"}),
        )
        for key in (None, b"a guessed key"):
            send_gossip(g, "evil", (evil,), key, ["n1"])
        g.start("n2", g.gossip_address("n1"))
        # the barrier: a real joiner goes all the way to voter
        g.wait("n2 to become a voter", lambda: g.voters_seen_by("n1") == {"n1", "n2"})
        assert "evil" not in members_seen_by(g, "n1")
    finally:
        g.stop()


def test_a_forged_left_never_removes_a_healthy_voter(tmp_path):
    """Issue 19 finding 2: "n4 LEFT" signed with the real key, even as n4, leaves n4 a voter."""
    from leeky_twisted.membership import codec
    from leeky_twisted.security.clusterkey import read_key_file

    g = Grown(tmp_path)
    try:
        g.start("n1", None)
        g.wait("the introducer to lead", lambda: (g.status("n1") or {}).get("role") == "leader")
        for nid in ("n2", "n3", "n4"):
            g.start(nid, g.gossip_address("n1"))
        everyone = {"n1", "n2", "n3", "n4"}
        g.wait("four voters", lambda: g.voters_seen_by("n1") == everyone)
        key = read_key_file(str(g.key_path))

        def left(inc: int) -> codec.Record:
            return codec.Record(
                "n4", inc, codec.MemberState.LEFT, ("127.0.0.1", g.ports["n4"]["gossip"])
            )

        # a key holder's forgeries: as a third party at the maximum, and as n4 itself
        send_gossip(g, "evil", (left(codec.MAX_INCARNATION),), key, sorted(everyone))
        send_gossip(g, "n4", (left(2**31 - 1),), key, sorted(everyone))
        # the barrier: a voter that really died is removed (after its 3 s grace) ...
        g.kill("n3")
        g.wait("n3 to be removed", lambda: g.voters_seen_by("n1") == everyone - {"n3"}, 60)
        # ... while n4, which kept answering the leader, is still a voter
        assert g.voters_seen_by("n1") == {"n1", "n2", "n4"}
        jsonrpc(g.ports["n4"]["http"], "put", "still", "here")
    finally:
        g.stop()
