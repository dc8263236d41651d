"""The fault-injection rig: 5 real nodes in network namespaces under each nemesis.

Needs root and iproute2 (``ip``); skipped otherwise. Each nemesis runs for
``LEEKY_CHAOS_SECONDS`` (default 30) and must leave a linearizable history
(final reads on every node included, so nothing acknowledged is lost) and a
cluster where every key reads back on every node within ``HEAL_WITHIN`` seconds
of healing. The rig's own test breaks the read path on purpose and must be
caught. Set ``LEEKY_CHAOS_OUT`` to keep each run's folder (history, report, node
logs); by default they go to pytest's tmp_path.

The hostile nemeses run shorter (``LEEKY_HOSTILE_SECONDS``, default 8) on 3
nodes, so the five of them and the rig's own check take about 90 s.

Run: ``sudo .venv/bin/pytest -m netns tests/chaos -s`` (``-s`` shows each report).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from leeky_twisted.chaos.nemesis import Schedule
from leeky_twisted.chaos.netns import NetnsError, NetnsNetwork, netns_available
from leeky_twisted.chaos.runner import (
    NODE_TIMING,
    ChaosReport,
    run_chaos,
    supports_unsafe_stale_reads,
)
from leeky_twisted.checker.linearizability import Verdict

_REASON = netns_available()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(_REASON is not None, reason=f"network namespaces: {_REASON}"),
]

SECONDS = float(os.environ.get("LEEKY_CHAOS_SECONDS", "30"))
HEAL_WITHIN = 30.0
SCHEDULE = (3.0, 7.0), (1.5, 3.0)  # fault, quiet (seconds)


def _out(tmp_path: Path, name: str) -> Path:
    root = os.environ.get("LEEKY_CHAOS_OUT")
    return Path(root) / name if root else tmp_path / name


def _run(nemesis: str, out: Path, seconds: float = SECONDS, **kwargs: object) -> ChaosReport:
    fault, quiet = SCHEDULE
    report = run_chaos(
        5,
        seconds,
        nemesis,
        out,
        schedule=Schedule(fault=fault, quiet=quiet),
        heal_within=HEAL_WITHIN,
        progress=print,
        **kwargs,  # type: ignore[arg-type]
    )
    print(report.render())
    return report


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_network_connects_blocks_heals_and_is_deleted():
    """Nodes reach each other; a block drops one direction; heal undoes it; delete removes all."""
    net = NetnsNetwork(2)
    net.create()
    try:
        a, b = net.slots
        assert {net.hub, a.namespace, b.namespace} <= _namespaces()
        server = subprocess.Popen(
            net.exec_argv(b, ["python3", "-m", "http.server", "--bind", b.address, "8000"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            probe = [
                "python3", "-c",
                "import socket,sys,time\n"
                "for _ in range(50):\n"
                "    try:\n"
                f"        socket.create_connection(('{b.address}', 8000), timeout=0.5).close()\n"
                "        sys.exit(0)\n"
                "    except OSError:\n"
                "        time.sleep(0.1)\n"
                "sys.exit(1)",
            ]  # fmt: skip
            assert subprocess.run(net.exec_argv(a, probe), check=False).returncode == 0
            net.block(a, b)
            quick = [*probe[:2], probe[2].replace("range(50)", "range(2)")]
            assert subprocess.run(net.exec_argv(a, quick), check=False).returncode == 1
            net.heal_all()
            assert subprocess.run(net.exec_argv(a, probe), check=False).returncode == 0
        finally:
            server.terminate()
            server.wait(timeout=10)
    finally:
        assert net.delete() == []
    assert not _namespaces() & {net.hub, *(s.namespace for s in net.slots)}
    links = subprocess.run(["ip", "link"], capture_output=True, text=True, check=True).stdout
    assert net.host_link not in links


def test_attacker_namespace_reaches_the_nodes_and_is_deleted():
    """The attacker's namespace is made on first use, on the bridge, and deleted with the rest."""
    net = NetnsNetwork(1)
    net.create()
    try:
        assert net.attacker_slot.namespace not in _namespaces()
        attacker = net.attacker()
        assert net.attacker() is attacker  # made once
        assert attacker.namespace in _namespaces()
        node = net.slots[0]
        server = subprocess.Popen(
            net.exec_argv(node, ["python3", "-m", "http.server", "--bind", node.address, "8000"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            probe = [
                "python3", "-c",
                "import socket,sys,time\n"
                "for _ in range(50):\n"
                "    try:\n"
                f"        s = socket.create_connection(('{node.address}', 8000), timeout=0.5)\n"
                "        print(s.getsockname()[0]); sys.exit(0)\n"
                "    except OSError:\n"
                "        time.sleep(0.1)\n"
                "sys.exit(1)",
            ]  # fmt: skip
            done = subprocess.run(net.exec_argv(attacker, probe), capture_output=True, text=True)
            assert done.returncode == 0
            assert done.stdout.strip() == attacker.address  # its own address, not the host's
        finally:
            server.terminate()
            server.wait(timeout=10)
    finally:
        assert net.delete() == []
    assert attacker.namespace not in _namespaces()


def test_network_that_fails_half_way_deletes_what_it_made():
    """A create() that fails part way leaves nothing of its own behind."""
    probe = NetnsNetwork(3)
    squatter = f"{probe.prefix}-n2"
    subprocess.run(["ip", "netns", "add", squatter], check=True)
    try:
        with pytest.raises(NetnsError):
            NetnsNetwork(3, prefix=probe.prefix, subnet=str(probe.subnet)).create()
        mine = {probe.hub, probe.slots[0].namespace, probe.slots[2].namespace}
        assert not _namespaces() & mine
        assert squatter in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", squatter], check=True)


@pytest.mark.parametrize(
    "nemesis", ["partition", "isolate-leader", "one-way", "netem", "kill", "pause"]
)
def test_cluster_stays_linearizable_and_recovers_under(nemesis: str, tmp_path: Path):
    """Under the nemesis: linearizable, nothing acknowledged lost, readable after healing."""
    report = _run(nemesis, _out(tmp_path, nemesis))
    summary = report.render()
    assert report.faults, summary
    assert report.operations["ok"] >= 100, summary
    assert report.verdict == Verdict.LINEARIZABLE.value, summary
    assert report.final_reads["readable"], summary
    assert not report.problems, summary
    if nemesis == "kill":
        assert sum(report.restarts.values()) >= 1, summary
    assert report.ok


def test_rig_catches_a_broken_read_path_under_partitions(tmp_path: Path):
    """Reads served from a node's local state without ReadIndex are caught as not linearizable.

    With the node's test-only --unsafe-stale-reads when it has it; otherwise the
    clients ask for stale reads, which breaks the read path the same way.
    """
    unsafe = supports_unsafe_stale_reads()
    report = _run(
        "partition",
        _out(tmp_path, "broken-reads"),
        seconds=min(SECONDS, 15.0),
        unsafe_stale_reads=unsafe,
        stale_reads=not unsafe,
    )
    assert report.verdict == Verdict.NOT_LINEARIZABLE.value, report.render()
    assert report.violations
    assert "no linearization gets past" in report.violations[0]
    assert not report.ok


HOSTILE_SECONDS = float(os.environ.get("LEEKY_HOSTILE_SECONDS", "8"))
HOSTILE_SCHEDULE = (3.0, 4.0), (1.0, 1.5)  # fault, quiet (seconds)
#: The flood must get past the per-address cap within one fault: a cap of 100
#: per port (50 per address) instead of the default sized from the open-files limit.
HOSTILE_ARGS = {"conn-flood": [*NODE_TIMING, "--max-client-connections", "100"]}


def _hostile(nemesis: str, out: Path, seconds: float = HOSTILE_SECONDS, **kwargs: object):
    report = run_chaos(
        3,
        seconds,
        nemesis,
        out,
        clients=4,
        schedule=Schedule(*HOSTILE_SCHEDULE),
        heal_within=HEAL_WITHIN,
        node_args=HOSTILE_ARGS.get(nemesis),
        progress=print,
        **kwargs,  # type: ignore[arg-type]
    )
    print(report.render())
    return report


@pytest.mark.parametrize("nemesis", ["forged-gossip", "huge-term", "conn-flood", "slow-client"])
def test_cluster_keeps_every_write_and_stays_available_under_hostile(nemesis: str, tmp_path: Path):
    """An attacker on the network: linearizable, nothing acknowledged lost, available
    throughout, and none of the nemesis's own checks failed (see chaos/hostile.py)."""
    report = _hostile(nemesis, _out(tmp_path, nemesis))
    summary = report.render()
    ops = report.operations
    assert report.faults and len(report.attacks) == len(report.faults), summary
    assert ops["ok"] >= 100 and ops["ok"] >= 0.9 * ops["operations"], summary
    assert report.verdict == Verdict.LINEARIZABLE.value, summary
    assert report.final_reads["readable"], summary
    assert not report.problems, summary
    attack = report.attacks[0]
    if nemesis == "forged-gossip":
        assert attack["datagrams"] > 0, summary
    elif nemesis == "huge-term":
        assert attack["hello"]["no proof"].get("refused"), summary
        assert attack["hello"]["forged proof"].get("refused"), summary
        assert attack["hello"]["key holder"].get("accepted"), summary  # reached the decoder
    elif nemesis == "conn-flood":
        assert any(
            attack["opened"][port] > attack["still_open"][port] for port in attack["opened"]
        ), summary  # the flood went past the cap, and the node closed what was over it
    else:
        assert attack["amp_closed_after"] and not attack.get("amp_never_closed"), summary
        assert set(attack["http_oversized_answers"]) == {"413"}, summary
    assert report.ok


def test_a_key_holders_forged_gossip_never_removes_a_voter(tmp_path: Path):
    """Signed with the cluster key, "follower X LEFT" (as X), SUSPECT and DEAD reach gossip;
    with a 2 s grace and no floor on voters, the autopilot still removes no voter the
    leader hears (and every write is kept)."""
    report = _hostile("forged-gossip-keyed", _out(tmp_path, "forged-gossip-keyed"))
    summary = report.render()
    assert report.faults and report.attacks, summary
    assert "--dead-grace" in report.options["node_args"], summary
    assert report.attacks[0]["kinds"] > 52, summary  # the signed claims went out too
    assert report.verdict == Verdict.LINEARIZABLE.value, summary
    assert not report.problems, summary
    assert report.ok


def test_rig_catches_forged_gossip_on_a_cluster_without_key(tmp_path: Path):
    """Without the cluster key (gossip --insecure) the forged JOIN and LEFTs are believed,
    and the forged-gossip nemesis fails the run."""
    report = _hostile("forged-gossip", _out(tmp_path, "forged-gossip-no-key"), key=False)
    summary = report.render()
    assert report.faults, summary
    assert any("gossip" in p for p in report.problems), summary
    assert not report.ok
