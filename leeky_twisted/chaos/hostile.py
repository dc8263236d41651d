"""Hostile nemeses: an attacker on the nodes' network, in a namespace of its own.

Each fault starts one attack process (:mod:`leeky_twisted.chaos.attacks`) in
the attacker namespace (:meth:`~leeky_twisted.chaos.netns.NetnsNetwork.attacker`)
and watches the cluster once a second while it runs; healing checks the
cluster while the attack still runs, then stops the process and judges what
it reports. What each finds wrong goes into :meth:`Nemesis.problems`, which
the runner adds to the report (a run with a problem fails).

=================  ===========================================================
``forged-gossip``  forged JOIN of a fake node; real members LEFT (as
                   themselves), SUSPECT and DEAD at high incarnations; each
                   unsigned and signed with a wrong key, to every gossip port.
                   Checks: no outsider in any node's Raft configuration or
                   gossip view, no voter removed, nobody seen LEFT
``huge-term``      a Hello on every peer port (no proof, a forged proof, and
                   a key holder's real proof) followed by RequestVote,
                   Heartbeat and AppendEntries at terms 2**64-1 and 2**63.
                   Checks: every term stays below TERM_BOUND, no outsider's
                   Hello is accepted, a leader during the attack
``conn-flood``     a follower's AMP and HTTP ports get the per-address cap
                   plus FLOOD_EXTRA connections each, one byte sent on each
                   (past the first-bytes timeout), held. Checks: the follower
                   keeps running and answering others, the cap holds, a leader
``slow-client``    one node gets oversized AMP puts dripped 64 KiB at a time,
                   a JSON-RPC POST announcing 100 MiB, 16 headers dripped a
                   byte at a time, and 64 pipelined reads of a 256 KiB value
                   taken 1 KiB per 50 ms. Checks: each oversized request is
                   cut off (the AMP one before it is all sent, the HTTP one
                   answered 413), the node keeps answering, its memory stays
                   within SLOW_RSS_GROWTH
``forged-gossip-keyed``  the same, plus the claims about real members signed
                   with the cluster key (a key holder); nodes run with
                   ``--dead-grace 2 --min-voters 1``. Checks the same, except
                   that gossip may now believe a member LEFT: no voter removed
``hostile``        one of the four above (not the keyed one), chosen at random
=================  ===========================================================
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from leeky_twisted.api.amp_api import RequestLimits
from leeky_twisted.chaos.nemesis import Mixed, Nemesis
from leeky_twisted.chaos.netns import (
    CLIENT_PORT,
    GOSSIP_PORT,
    HTTP_PORT,
    PEER_PORT,
    ClusterNode,
    NetnsCluster,
)

__all__ = [
    "HOSTILE",
    "ConnectionFlood",
    "ForgedGossip",
    "ForgedGossipKeyed",
    "Hostile",
    "HugeTermPeer",
    "SlowClient",
]

#: No node's term may reach this under a hostile peer (elections alone never get near).
TERM_BOUND = 10**6
#: Connections past the per-address cap that the flood opens on each port.
FLOOD_EXTRA = 64
#: The flood's size when the node's metrics cannot be read.
FLOOD_DEFAULT = 2200
#: Most a slow-client fault may add to the node's resident memory.
SLOW_RSS_GROWTH = 256 << 20
#: Seconds to wait for a leader while an attack runs.
LEADER_WITHIN = 10.0


def _ids(cluster: NetnsCluster) -> set[str]:
    return {n.node_id for n in cluster.nodes}


def _rss(node: ClusterNode) -> int | None:
    """Return a node's resident memory in bytes (from /proc), or None."""
    if node.proc is None:
        return None
    try:
        text = Path(f"/proc/{node.proc.pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def _connect_probe(host: str, port: int, tries: int = 5) -> str:
    """Return how many of ``tries`` TCP connects from here completed within 1 s ("k/n")."""
    done = 0
    for _ in range(tries):
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            done += 1
        except OSError:
            pass
    return f"{done}/{tries}"


class _Attack(Nemesis):
    """A fault that runs one attack process in the attacker namespace.

    Subclasses say what to run (:meth:`_plan`), what to check while it runs
    (:meth:`_observe`, also once more at healing) and what to make of its
    report (:meth:`_judge`).
    """

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._watch: threading.Thread | None = None
        self._quit = threading.Event()
        self._problems: list[str] = []
        self.results: list[dict[str, Any]] = []  #: each fault's attack report

    # ---------------------------------------------------------- the two moves

    def inject(self, cluster: NetnsCluster, rng: random.Random) -> tuple[str, list[str]]:
        """Start the attack process and the watcher."""
        self.stop(cluster)
        args, detail, nodes = self._plan(cluster, rng)
        network = cluster.network
        argv = [sys.executable, "-m", "leeky_twisted.chaos.attacks", self.kind, json.dumps(args)]
        argv.append("--stop-on-eof")  # closing its stdin stops it (attacks.STOP_ON_EOF)
        cluster.root.mkdir(parents=True, exist_ok=True)
        with open(cluster.root / "attacker.log", "a") as log:
            self._proc = subprocess.Popen(
                network.exec_argv(network.attacker(), argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        self._quit = threading.Event()
        self._watch = threading.Thread(
            target=self._watch_loop, args=(cluster, self._quit), daemon=True, name="leeky-watch"
        )
        self._watch.start()
        return detail, nodes

    def heal(self, cluster: NetnsCluster) -> None:
        """Check the cluster under attack one last time, then stop the attack and judge it."""
        if self._proc is None:
            return
        self._observe(cluster, final=True)
        result = self._finish()
        if result is None:
            self._note("the attack process gave no report (see attacker.log)")
        else:
            self.results.append(result)
            self._judge(cluster, result)

    # -------------------------------------------------------------- plumbing

    def stop(self, cluster: NetnsCluster) -> None:
        """Stop the attack process and the watcher, if running (no judging)."""
        self._finish()

    def problems(self) -> list[str]:
        """Return what went wrong under this nemesis, each once."""
        return list(self._problems)

    def reports(self) -> list[dict[str, object]]:
        """Return each fault's attack report, named."""
        return [{"nemesis": self.name, **r} for r in self.results]

    def _note(self, text: str) -> None:
        if text not in self._problems:
            self._problems.append(text)

    def _finish(self) -> dict[str, Any] | None:
        self._quit.set()
        if self._watch is not None:
            self._watch.join(timeout=10)
            self._watch = None
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:  # closing its stdin asks it to stop, whenever it gets there (STOP_ON_EOF)
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
        for line in reversed(out.splitlines()):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict) and isinstance(report.get("result"), dict):
                return dict(report["result"])
        return None

    def _watch_loop(self, cluster: NetnsCluster, quit_: threading.Event) -> None:
        while not quit_.wait(1.0):
            try:
                self._observe(cluster, final=False)
            except Exception as e:  # a watcher must never kill the run
                self._note(f"watcher failed: {e!r}")

    def _leader_during(self, cluster: NetnsCluster) -> None:
        try:
            cluster.wait_for_leader(LEADER_WITHIN)
        except TimeoutError:
            self._note(f"{self.name}: no leader within {LEADER_WITHIN:g} s during the attack")

    # ------------------------------------------------------------ subclasses

    def _plan(
        self, cluster: NetnsCluster, rng: random.Random
    ) -> tuple[dict[str, Any], str, list[str]]:
        raise NotImplementedError

    def _observe(self, cluster: NetnsCluster, final: bool) -> None:
        """Check the cluster while the attack runs; ``final`` at healing."""

    def _judge(self, cluster: NetnsCluster, result: dict[str, Any]) -> None:
        """Check what the attack process reports."""


class ForgedGossip(_Attack):
    """Forged gossip from an outsider: a fake node joining, real members leaving."""

    name = "forged-gossip"
    kind = "gossip"

    def __init__(self) -> None:
        super().__init__()
        self._voters: set[str] = set()
        #: the most members any node's gossip held in each state, during the faults
        self._states_seen: dict[str, int] = {}

    def _plan(
        self, cluster: NetnsCluster, rng: random.Random
    ) -> tuple[dict[str, Any], str, list[str]]:
        fake = f"intruder{rng.randrange(1000)}"
        attacker = cluster.network.attacker_slot
        self._voters = self._current_voters(cluster)
        args = {
            "cluster_id": cluster.cluster_id,
            "members": {n.node_id: [n.address, GOSSIP_PORT] for n in cluster.nodes},
            "fake_id": fake,
            "fake_host": attacker.address,
            "fake_port": GOSSIP_PORT,
            "targets": [[n.address, GOSSIP_PORT] for n in cluster.nodes],
        }
        detail = f"forged gossip (unsigned and wrong key): {fake} joins, every member LEFT/SUSPECT"
        return args, detail, sorted(_ids(cluster), key=int)

    def _current_voters(self, cluster: NetnsCluster) -> set[str]:
        leader = cluster.leader()
        st = cluster.status(leader) if leader is not None else None
        return {str(v) for v in st.get("voters", [])} if st else _ids(cluster)

    #: whether a member seen LEFT is a problem (not when the attacker holds the key)
    left_is_wrong: ClassVar[bool] = True

    def _observe(self, cluster: NetnsCluster, final: bool) -> None:
        self._check(cluster, self._voters or _ids(cluster))

    def _check(self, cluster: NetnsCluster, voters: set[str]) -> None:
        ids = _ids(cluster)
        for node in cluster.nodes:
            st = cluster.status(node)
            if st is not None:
                config = {str(v) for v in st.get("voters", []) + st.get("learners", [])}
                outsiders = sorted(config - ids)
                if outsiders:
                    self._note(f"outsider(s) {outsiders} in node {node.node_id}'s configuration")
                gone = sorted(voters - {str(v) for v in st.get("voters", [])})
                if gone:
                    self._note(f"voter(s) {gone} removed (node {node.node_id}'s configuration)")
            samples = cluster.metrics(node)
            if samples is None:
                continue
            gossip = {k: v for k, v in samples.items() if k.startswith("leeky_gossip_members{")}
            for name, count in gossip.items():
                state = name.split('"')[1] if '"' in name else name
                self._states_seen[state] = max(self._states_seen.get(state, 0), int(count))
            if sum(gossip.values()) > len(ids):
                self._note(
                    f"node {node.node_id}'s gossip knows more members than the {len(ids)} nodes"
                )
            if self.left_is_wrong and samples.get('leeky_gossip_members{state="left"}', 0) > 0:
                self._note(f"node {node.node_id}'s gossip sees a member LEFT")
            if samples.get('leeky_raft_members{raft_role="not in configuration"}', 0) > 0:
                self._note(f"node {node.node_id} knows a node outside the configuration")

    def final_check(self, cluster: NetnsCluster) -> None:
        """After healing: still no outsider, every voter still a voter."""
        if self.results:
            self._check(cluster, self._voters or _ids(cluster))

    def _judge(self, cluster: NetnsCluster, result: dict[str, Any]) -> None:
        result["gossip_states_seen"] = dict(self._states_seen)
        if not result.get("datagrams"):
            self._note("forged-gossip: no datagram was sent")


class ForgedGossipKeyed(ForgedGossip):
    """Forged gossip, plus the claims about real members signed with the cluster key.

    A key holder can make gossip believe a member (a follower picked for each
    fault) LEFT (sent as that member), SUSPECT or DEAD; what it must never do is
    make the autopilot remove a voter the leader still hears. The nodes run
    with ``--dead-grace 2 --min-voters 1`` so that a removal on gossip's word
    alone would happen within one fault. Not part of ``hostile``: that grace
    would let the autopilot remove a voter another nemesis killed.
    """

    name = "forged-gossip-keyed"
    left_is_wrong = False

    def _plan(
        self, cluster: NetnsCluster, rng: random.Random
    ) -> tuple[dict[str, Any], str, list[str]]:
        args, detail, nodes = super()._plan(cluster, rng)
        if cluster.key is not None:
            # one victim, a follower: claims about every member would leave no healthy
            # quorum to remove it from, and the autopilot would refuse for that alone
            leader = cluster.leader()
            victim = rng.choice([n for n in cluster.nodes if n is not leader] or cluster.nodes)
            args["key"] = cluster.key.decode()
            args["victims"] = [victim.node_id]
            detail += f"; signed with the cluster key: {victim.node_id} LEFT/SUSPECT/DEAD"
        return args, detail, nodes

    def node_args(self) -> list[str]:
        """A grace short enough for a removal on gossip's word to show within a fault."""
        return ["--dead-grace", "2", "--min-voters", "1"]


class HugeTermPeer(_Attack):
    """Peer connections from an outsider and a key holder, carrying impossible terms."""

    name = "huge-term"
    kind = "peer"

    def _plan(
        self, cluster: NetnsCluster, rng: random.Random
    ) -> tuple[dict[str, Any], str, list[str]]:
        targets = []
        for node in cluster.nodes:
            others = [n for n in cluster.nodes if n is not node]
            claimed = rng.choice(others).node_id if others else "0"
            targets.append(
                {"host": node.address, "port": PEER_PORT, "id": node.node_id, "as": claimed}
            )
        args = {
            "cluster_id": cluster.cluster_id,
            "key": cluster.key.decode() if cluster.key is not None else None,
            "targets": targets,
        }
        who = "outsider" + (" and key holder" if cluster.key is not None else "")
        detail = f"{who} Hellos, then terms 2**64-1 and 2**63 on every peer port"
        return args, detail, sorted(_ids(cluster), key=int)

    def _observe(self, cluster: NetnsCluster, final: bool) -> None:
        self._check_terms(cluster)
        if final:
            self._leader_during(cluster)

    def _check_terms(self, cluster: NetnsCluster) -> None:
        for node in cluster.nodes:
            st = cluster.status(node)
            if st is not None and int(st.get("term", 0)) >= TERM_BOUND:
                self._note(f"node {node.node_id} reached term {st['term']} (bound {TERM_BOUND})")

    def final_check(self, cluster: NetnsCluster) -> None:
        """After healing: every term still below the bound."""
        if self.results:
            self._check_terms(cluster)

    def _judge(self, cluster: NetnsCluster, result: dict[str, Any]) -> None:
        hello = result.get("hello", {})
        for kind in ("no proof", "forged proof"):
            if hello.get(kind, {}).get("accepted"):
                self._note(f"huge-term: an outsider's Hello ({kind}) was accepted")
        if cluster.key is not None and not hello.get("key holder", {}).get("accepted"):
            # not a failure of the node, but then the decode bounds were not exercised
            self._note("huge-term: no key holder's Hello was accepted (attack did not reach)")


class ConnectionFlood(_Attack):
    """Idle connections past the per-address cap on a follower's client ports.

    The per-address cap is taken as half the port's cap (``leeky_connections_cap``),
    the node's default; a cluster run with ``--max-connections-per-host`` would
    need it told.
    """

    name = "conn-flood"
    kind = "flood"

    def __init__(self) -> None:
        super().__init__()
        self._target: ClusterNode | None = None
        self._per_host: dict[int, int] = {}
        self._probe = ""

    def _plan(
        self, cluster: NetnsCluster, rng: random.Random
    ) -> tuple[dict[str, Any], str, list[str]]:
        leader = cluster.leader()
        followers = [n for n in cluster.nodes if n is not leader and n.alive()]
        target = rng.choice(followers or cluster.nodes)
        self._target = target
        samples = cluster.metrics(target) or {}
        self._per_host = {}
        for port, label in ((CLIENT_PORT, "client"), (HTTP_PORT, "http")):
            cap = samples.get(f'leeky_connections_cap{{port="{label}"}}')
            if cap is not None:
                self._per_host[port] = max(1, int(cap) // 2)
        count = max(self._per_host.values(), default=FLOOD_DEFAULT - FLOOD_EXTRA) + FLOOD_EXTRA
        args = {
            "targets": [[target.address, CLIENT_PORT], [target.address, HTTP_PORT]],
            "count": count,
        }
        detail = f"{count} connections to each client port of follower {target.node_id}"
        return args, detail, [target.node_id]

    def _observe(self, cluster: NetnsCluster, final: bool) -> None:
        target = self._target
        if target is None:
            return
        if not target.alive() and not target.killed:
            self._note(f"conn-flood: follower {target.node_id} stopped")
        if final:
            if target.alive() and not target.paused and cluster.status(target, 3.0) is None:
                self._note(f"conn-flood: follower {target.node_id} did not answer a status call")
            self._probe = _connect_probe(target.address, HTTP_PORT)
            self._leader_during(cluster)

    def _judge(self, cluster: NetnsCluster, result: dict[str, Any]) -> None:
        target = self._target
        if target is None:
            return
        # information, not a check: others' connects that found the accept queue full
        result["others_connects_within_1s"] = self._probe
        for port, cap in self._per_host.items():
            still = result.get("still_open", {}).get(f"{target.address}:{port}")
            if still is not None and still > cap:
                self._note(f"conn-flood: {still} connections held to port {port} (cap {cap})")


class SlowClient(_Attack):
    """Oversized requests dripped, half-sent headers, and a reader that never keeps up."""

    name = "slow-client"
    kind = "slow"

    def __init__(self) -> None:
        super().__init__()
        self._target: ClusterNode | None = None
        self._rss: int | None = None

    def _plan(
        self, cluster: NetnsCluster, rng: random.Random
    ) -> tuple[dict[str, Any], str, list[str]]:
        target = rng.choice([n for n in cluster.nodes if n.alive()] or cluster.nodes)
        self._target = target
        self._rss = _rss(target)
        args = {
            "host": target.address,
            "client_port": CLIENT_PORT,
            "http_port": HTTP_PORT,
            "amp_bound": RequestLimits().request_bytes,
        }
        return args, f"slow and oversized clients against node {target.node_id}", [target.node_id]

    def _observe(self, cluster: NetnsCluster, final: bool) -> None:
        target = self._target
        if target is None:
            return
        if not target.alive() and not target.killed:
            self._note(f"slow-client: node {target.node_id} stopped")
        rss, before = _rss(target), self._rss
        if rss is not None and before is not None and rss - before > SLOW_RSS_GROWTH:
            grew = (rss - before) >> 20
            self._note(f"slow-client: node {target.node_id} grew by {grew} MiB")
        if final:
            if target.alive() and not target.paused and cluster.status(target, 3.0) is None:
                self._note(f"slow-client: node {target.node_id} did not answer a status call")
            self._leader_during(cluster)

    def _judge(self, cluster: NetnsCluster, result: dict[str, Any]) -> None:
        if self._target is not None and self._rss is not None:
            after = _rss(self._target)
            result["node_rss_mib"] = [self._rss >> 20, None if after is None else after >> 20]
        if not result.get("amp_closed_after"):
            self._note("slow-client: no oversized AMP request was cut off")
        if result.get("amp_never_closed"):
            self._note("slow-client: an oversized AMP request was read to its end")
        answers = result.get("http_oversized_answers", {})
        wrong = {code: n for code, n in answers.items() if code != "413"}
        if wrong:
            self._note(f"slow-client: a 100 MiB POST was answered {wrong}, not 413")


class Hostile(Mixed):
    """Each fault is one of the hostile nemeses, chosen at random."""

    name = "hostile"

    def __init__(self) -> None:
        super().__init__([cls() for cls in HOSTILE])


HOSTILE: list[type[_Attack]] = [ForgedGossip, HugeTermPeer, ConnectionFlood, SlowClient]
