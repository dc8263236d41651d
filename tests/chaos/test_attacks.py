"""The hostile nemeses' attack encoders and checks (no root, no namespaces).

Each forged thing must be what an attacker would send and what the node's
own decoders see as an attack: unsigned or wrong-key gossip, a Hello with no
or a forged proof, terms past MAX_TERM in well-formed boxes, a request larger
than the node's bound.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols import amp

from leeky_twisted.api.amp_api import ClientAPIProtocol
from leeky_twisted.chaos import attacks
from leeky_twisted.chaos.hostile import (
    TERM_BOUND,
    ConnectionFlood,
    ForgedGossip,
    ForgedGossipKeyed,
    Hostile,
    HugeTermPeer,
    SlowClient,
)
from leeky_twisted.chaos.nemesis import NEMESES, Mixed, make_nemesis
from leeky_twisted.chaos.netns import GOSSIP_PORT, NetnsCluster, NetnsNetwork, parse_metrics
from leeky_twisted.core.messages import MAX_TERM
from leeky_twisted.membership import codec as gossip_codec
from leeky_twisted.membership.codec import MemberState, PacketKind
from leeky_twisted.security.clusterkey import cluster_id_from_key
from leeky_twisted.transport.codec import OutOfBounds, decode
from leeky_twisted.transport.hello_auth import HelloAuthenticator

KEY = b"k" * 64
CLUSTER = cluster_id_from_key(KEY)
MEMBERS = {"1": ("10.99.0.1", GOSSIP_PORT), "2": ("10.99.0.2", GOSSIP_PORT)}
FAKE = ("intruder7", ("10.99.0.200", GOSSIP_PORT))


def _parse_boxes(data: bytes) -> list[dict[bytes, bytes]]:
    """Parse AMP boxes by hand (keys and values of u16 length; an empty key ends a box)."""
    boxes, box, pos = [], {}, 0
    while pos < len(data):
        (n,) = struct.unpack_from("!H", data, pos)
        key = data[pos + 2 : pos + 2 + n]
        pos += 2 + n
        if not key:
            boxes.append(box)
            box = {}
            continue
        (m,) = struct.unpack_from("!H", data, pos)
        box[key] = data[pos + 2 : pos + 2 + m]
        pos += 2 + m
    assert not box, "unfinished box"
    return boxes


# -------------------------------------------------------------- forged gossip


def test_forged_gossip_is_well_formed_but_unsigned():
    """Every datagram parses as gossip of the right cluster, and is dropped by a keyed node."""
    packets = attacks.forged_gossip(CLUSTER, MEMBERS, FAKE)
    decoded = [gossip_codec.decode(p, CLUSTER) for p in packets]
    join = decoded[0]
    assert join.kind is PacketKind.JOIN and join.sender == "intruder7"
    assert join.records[0].state is MemberState.ALIVE
    for p in packets:
        with pytest.raises(gossip_codec.BadAuthentication):
            gossip_codec.decode(p, CLUSTER, KEY)


def test_forged_gossip_claims_every_member_left_as_itself_at_every_incarnation():
    """A LEFT only counts from the member itself, so the forgery says it as that member."""
    decoded = [
        gossip_codec.decode(p, CLUSTER) for p in attacks.forged_gossip(CLUSTER, MEMBERS, FAKE)
    ]
    left = {
        (p.sender, r.node_id, r.incarnation)
        for p in decoded
        for r in p.records
        if r.state is MemberState.LEFT
    }
    expected = {(m, m, i) for m in MEMBERS for i in attacks.FORGED_INCARNATIONS}
    assert left == expected
    suspected = {(r.node_id, r.state) for p in decoded for r in p.records if r.node_id in MEMBERS}
    assert {(m, s) for m in MEMBERS for s in (MemberState.SUSPECT, MemberState.DEAD)} <= suspected
    assert max(attacks.FORGED_INCARNATIONS) == gossip_codec.MAX_INCARNATION


def test_forged_gossip_with_a_wrong_key_fails_the_real_key():
    """Signed with another key: valid under that key, BadAuthentication under the cluster's."""
    wrong = b"w" * 64
    for p in attacks.forged_gossip(CLUSTER, MEMBERS, FAKE, wrong):
        assert gossip_codec.decode(p, CLUSTER, wrong).sender in ("intruder7", "1", "2")
        with pytest.raises(gossip_codec.BadAuthentication):
            gossip_codec.decode(p, CLUSTER, KEY)


def _gossip_args(port: int, **more: Any) -> dict[str, Any]:
    return {
        "cluster_id": CLUSTER,
        "members": {k: list(v) for k, v in MEMBERS.items()},
        "fake_id": "intruder7",
        "fake_host": "127.0.0.1",
        "fake_port": 0,
        "bind": "127.0.0.1",
        "targets": [["127.0.0.1", port]],
        "interval": 0.01,
        **more,
    }


def _collect(args: dict[str, Any], sink: socket.socket, n: int) -> tuple[list[bytes], dict]:
    stop = threading.Event()
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(attacks.attack_gossip(args, stop)))
    worker.start()
    try:
        got = [sink.recv(2048) for _ in range(n)]
    finally:
        stop.set()
        worker.join(10)
    return got, result


def test_key_holder_signs_only_the_claims_about_its_victims():
    """Given the key, the attack adds validly signed LEFT/SUSPECT/DEAD about the victims only."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    args = _gossip_args(sink.getsockname()[1], key=KEY.decode(), victims=["2"])
    try:
        got, result = _collect(args, sink, 200)
    finally:
        sink.close()
    signed = []
    for data in got:
        try:
            signed.append(gossip_codec.decode(data, CLUSTER, KEY))
        except gossip_codec.BadAuthentication:
            continue
    assert signed
    about = {r.node_id for p in signed for r in p.records}
    assert about == {"2"}  # never the fake node, never another member
    assert {r.state for p in signed for r in p.records} == {
        MemberState.LEFT,
        MemberState.SUSPECT,
        MemberState.DEAD,
    }
    per_member = len(attacks.FORGED_INCARNATIONS) * 2
    assert result["kinds"] == 2 * (2 + 2 * per_member) + per_member


def test_gossip_attack_sends_until_stopped():
    """The gossip attack sends both forgeries (unsigned, wrong key) to every target."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(5)
    stop = threading.Event()
    args = {
        "cluster_id": CLUSTER,
        "members": {k: list(v) for k, v in MEMBERS.items()},
        "fake_id": "intruder7",
        "fake_host": "127.0.0.1",
        "fake_port": 0,
        "bind": "127.0.0.1",
        "targets": [["127.0.0.1", sink.getsockname()[1]]],
        "interval": 0.01,
    }
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(attacks.attack_gossip(args, stop)))
    worker.start()
    try:
        kinds = attacks.forged_gossip(CLUSTER, MEMBERS, ("intruder7", ("127.0.0.1", 0)))
        got = [sink.recv(2048) for _ in range(2 * len(kinds))]
    finally:
        stop.set()
        worker.join(10)
        sink.close()
    unsigned = [g for g in got if g[3] & 1 == 0]
    signed = [g for g in got if g[3] & 1]
    assert unsigned and signed
    assert result["datagrams"] >= len(got) and result["kinds"] == 2 * len(kinds)


def test_an_attack_process_asked_to_stop_at_once_still_reports():
    """Its stdin closed before it could even import (what a loaded machine does to a
    short fault window), the attack process still acts for its minimum time, then stops
    and prints its JSON report."""
    args = {
        "cluster_id": CLUSTER,
        "members": {k: list(v) for k, v in MEMBERS.items()},
        "fake_id": "intruder7",
        "fake_host": "127.0.0.1",
        "fake_port": 0,
        "bind": "127.0.0.1",
        "targets": [["127.0.0.1", 9]],
        "interval": 0.01,
    }
    command = [sys.executable, "-m", "leeky_twisted.chaos.attacks", "gossip", json.dumps(args)]
    proc = subprocess.Popen(
        [*command, attacks.STOP_ON_EOF],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)  # closes stdin first
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["result"]["kinds"] > 0
    assert report["result"]["datagrams"] > 0  # it acted before it stopped


# ------------------------------------------------------------------ peer Hello


def test_hello_box_carries_the_claimed_identity_and_proof():
    """A Hello box as the node's peer protocol expects it, with or without a proof."""
    (box,) = _parse_boxes(attacks.hello_box(CLUSTER, "2", None))
    assert box == {
        b"_command": b"Hello",
        b"_ask": b"1",
        b"cluster_id": CLUSTER.encode(),
        b"node_id": b"2",
    }
    (with_proof,) = _parse_boxes(attacks.hello_box(CLUSTER, "2", b"p" * 56))
    assert with_proof[b"proof"] == b"p" * 56


def test_forged_proof_is_refused_and_a_key_holders_proof_accepted():
    """The outsider's proof fails the node's check; the key holder's passes it."""
    clock = Clock()
    import time as _time

    clock.advance(_time.time())
    auth = HelloAuthenticator(KEY, clock)
    assert auth.refusal(attacks.forged_proof(), CLUSTER, "2", "1") is not None
    assert auth.refusal(attacks.real_proof(KEY, CLUSTER, "2", "1"), CLUSTER, "2", "1") is None
    assert auth.refusal(None, CLUSTER, "2", "1") is not None


@pytest.mark.parametrize("box_index", range(6))
def test_huge_term_boxes_are_well_formed_and_refused_at_decode(box_index: int):
    """Each box carries one message n2 -> n1 whose only fault is its term: OutOfBounds."""
    boxes = attacks.huge_term_boxes("2", "1")
    assert len(boxes) == 6
    (box,) = _parse_boxes(boxes[box_index])
    assert box[b"_command"] in (b"RequestVoteCmd", b"HeartbeatCmd", b"AppendEntriesCmd")
    payload = box[b"m"]
    (term,) = struct.unpack_from("!Q", payload, 5 + 2)
    assert term in attacks.HUGE_TERMS and term > MAX_TERM
    with pytest.raises(OutOfBounds, match="term"):
        decode(payload)


def test_answered_reads_a_hello_outcome():
    """The attack classifies what came back: a refusal, an answer, or nothing."""
    refused = amp.AmpBox(
        {b"_error": b"1", b"_error_code": b"HELLO_REFUSED", b"_error_description": b"no"}
    )
    accepted = amp.AmpBox({b"_answer": b"1", b"cluster_id": b"c", b"node_id": b"1"})
    assert attacks.answered(refused.serialize()) == "refused"
    assert attacks.answered(accepted.serialize()) == "accepted"
    assert attacks.answered(b"") == "nothing"


# ---------------------------------------------------------------- slow client


def test_oversized_put_is_cut_off_by_the_client_port_as_it_arrives():
    """Dripped to the AMP client port in 64 KiB pieces, the Put is refused past the bound."""
    bound = 300_000
    data = attacks.oversized_amp_put(4 * bound)
    assert len(data) >= 4 * bound
    protocol = ClientAPIProtocol(max_request_bytes=bound)
    transport = StringTransport()
    protocol.makeConnection(transport)
    fed = 0
    while fed < len(data) and not transport.disconnecting:
        protocol.dataReceived(data[fed : fed + 65536])
        fed += 65536
    assert transport.disconnecting
    assert fed <= bound + 2 * 65536
    assert b"INVALID_REQUEST" in transport.value() or b"larger than" in transport.value()


def test_oversized_post_announces_its_length():
    """The HTTP attack's head is a POST whose Content-Length is the size given."""
    head = attacks.oversized_http_post(100 << 20, "10.99.0.1").decode()
    assert head.startswith("POST /jsonrpc HTTP/1.1\r\n")
    assert f"Content-Length: {100 << 20}\r\n\r\n" in head
    post = attacks.jsonrpc_post("h", "get", "k", request_id=3)
    head_text, _, body = post.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head_text


def test_attacks_command_line_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]):
    """An unknown attack or bad JSON is a usage error (2), not a traceback."""
    assert attacks.main(["meteor", "{}"]) == 2
    assert attacks.main(["gossip", "{not json"]) == 2
    assert "usage" in capsys.readouterr().err


# --------------------------------------------------------------- the nemeses


def test_hostile_nemeses_are_named_and_mix():
    """Each hostile nemesis is a --nemesis name, alone or mixed with the others."""
    for name, cls in [
        ("forged-gossip", ForgedGossip),
        ("huge-term", HugeTermPeer),
        ("conn-flood", ConnectionFlood),
        ("slow-client", SlowClient),
    ]:
        assert NEMESES[name] is cls
        assert isinstance(make_nemesis(name), cls)
    mixed = make_nemesis("partition,forged-gossip,huge-term")
    assert isinstance(mixed, Mixed)
    assert [c.name for c in mixed.choices] == ["partition", "forged-gossip", "huge-term"]
    assert {c.name for c in Hostile().choices} == {
        "forged-gossip",
        "huge-term",
        "conn-flood",
        "slow-client",
    }


class _Node:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.address = f"10.99.0.{node_id}"
        self.killed = False
        self.paused = False

    def alive(self) -> bool:
        return True


class _Cluster:
    """What the checks read: statuses and metrics, as set by the test."""

    def __init__(self, statuses: dict[str, dict[str, Any]], metrics: dict[str, str]) -> None:
        self.nodes = [_Node(i) for i in sorted(statuses)]
        self._statuses = statuses
        self._metrics = metrics

    def status(self, node: _Node, timeout: float = 1.0) -> dict[str, Any] | None:
        return self._statuses.get(node.node_id)

    def metrics(self, node: _Node) -> dict[str, float] | None:
        text = self._metrics.get(node.node_id)
        return None if text is None else parse_metrics(text)


HEALTHY = 'leeky_gossip_members{state="alive"} 3.0\nleeky_raft_members{raft_role="voter"} 3.0\n'


def _status(voters: list[str], learners: list[str] = (), term: int = 3) -> dict[str, Any]:
    return {"voters": voters, "learners": list(learners), "term": term, "role": "follower"}


def test_forged_gossip_check_passes_a_healthy_cluster():
    """Every node a voter, three alive in gossip: no problem."""
    nemesis = ForgedGossip()
    cluster = _Cluster({i: _status(["1", "2", "3"]) for i in "123"}, dict.fromkeys("123", HEALTHY))
    nemesis._check(cluster, {"1", "2", "3"})  # type: ignore[arg-type]
    assert nemesis.problems() == []


@pytest.mark.parametrize(
    ("status", "metrics", "problem"),
    [
        (_status(["1", "2", "3"], ["intruder7"]), HEALTHY, "outsider"),
        (_status(["1", "2"]), HEALTHY, "removed"),
        (
            _status(["1", "2", "3"]),
            'leeky_gossip_members{state="alive"} 3.0\nleeky_gossip_members{state="left"} 1.0\n',
            "LEFT",
        ),
        (
            _status(["1", "2", "3"]),
            'leeky_gossip_members{state="alive"} 4.0\n'
            'leeky_raft_members{raft_role="not in configuration"} 1.0\n',
            "more members",
        ),
    ],
)
def test_forged_gossip_check_catches(status: dict[str, Any], metrics: str, problem: str):
    """An outsider in the configuration or gossip, a voter removed, a member LEFT."""
    nemesis = ForgedGossip()
    cluster = _Cluster({"1": status}, {"1": metrics})
    cluster.nodes += [_Node("2"), _Node("3")]
    nemesis._check(cluster, {"1", "2", "3"})  # type: ignore[arg-type]
    assert any(problem in p for p in nemesis.problems()), nemesis.problems()


def test_huge_term_check_catches_a_term_past_the_bound():
    """A node at a term past TERM_BOUND is a problem; below it is not."""
    nemesis = HugeTermPeer()
    cluster = _Cluster({"1": _status(["1"], term=TERM_BOUND - 1)}, {})
    nemesis._check_terms(cluster)  # type: ignore[arg-type]
    assert nemesis.problems() == []
    cluster = _Cluster({"1": _status(["1"], term=2**63 - 1)}, {})
    nemesis._check_terms(cluster)  # type: ignore[arg-type]
    assert "reached term" in nemesis.problems()[0]


def test_huge_term_judge_catches_an_outsider_let_in():
    """An outsider's Hello that was accepted is a problem."""
    nemesis = HugeTermPeer()
    cluster = _Cluster({}, {})
    cluster.key = KEY  # type: ignore[attr-defined]
    nemesis._judge(cluster, {"hello": {"no proof": {"accepted": 1}, "key holder": {"accepted": 1}}})  # type: ignore[arg-type]
    assert nemesis.problems() == ["huge-term: an outsider's Hello (no proof) was accepted"]


def test_flood_judge_catches_a_cap_not_held():
    """More connections held from one address than the per-address cap is a problem."""
    nemesis = ConnectionFlood()
    nemesis._target = _Node("1")  # type: ignore[assignment]
    nemesis._per_host = {7001: 100}
    nemesis._judge(_Cluster({}, {}), {"still_open": {"10.99.0.1:7001": 100}})  # type: ignore[arg-type]
    assert nemesis.problems() == []
    nemesis._judge(_Cluster({}, {}), {"still_open": {"10.99.0.1:7001": 164}})  # type: ignore[arg-type]
    assert "cap 100" in nemesis.problems()[0]


def test_slow_client_judge_catches_an_oversized_request_read_whole():
    """An oversized AMP request read to its end, or a 100 MiB POST not answered 413."""
    nemesis = SlowClient()
    good = {"amp_closed_after": [2_300_000], "http_oversized_answers": {"413": 3}}
    nemesis._judge(_Cluster({}, {}), good)  # type: ignore[arg-type]
    assert nemesis.problems() == []
    bad = {"amp_never_closed": 1, "http_oversized_answers": {"200": 1}}
    nemesis._judge(_Cluster({}, {}), bad)  # type: ignore[arg-type]
    assert len(nemesis.problems()) == 3


def test_keyed_forged_gossip_runs_the_nodes_with_a_short_grace():
    """The keyed variant needs a removal on gossip's word to show within one fault."""
    nemesis = make_nemesis("forged-gossip-keyed")
    assert isinstance(nemesis, ForgedGossipKeyed)
    assert nemesis.node_args() == ["--dead-grace", "2", "--min-voters", "1"]
    assert make_nemesis("partition,forged-gossip-keyed").node_args() == nemesis.node_args()
    assert make_nemesis("hostile").node_args() == []
    assert "forged-gossip-keyed" not in {c.name for c in Hostile().choices}


def test_keyed_forged_gossip_allows_a_member_seen_left_but_not_a_removal():
    """A key holder can make gossip believe LEFT; a voter removed is still a problem."""
    nemesis = ForgedGossipKeyed()
    left = 'leeky_gossip_members{state="alive"} 2.0\nleeky_gossip_members{state="left"} 1.0\n'
    cluster = _Cluster({"1": _status(["1", "2", "3"])}, {"1": left})
    cluster.nodes += [_Node("2"), _Node("3")]
    nemesis._check(cluster, {"1", "2", "3"})  # type: ignore[arg-type]
    assert nemesis.problems() == []
    cluster = _Cluster({"1": _status(["1", "3"])}, {"1": left})
    cluster.nodes += [_Node("2"), _Node("3")]
    nemesis._check(cluster, {"1", "2", "3"})  # type: ignore[arg-type]
    assert nemesis.problems() == ["voter(s) ['2'] removed (node 1's configuration)"]


def test_mixed_gathers_the_problems_of_its_choices():
    """A run under Mixed fails when any of its hostile choices saw a problem."""
    gossip, peer = ForgedGossip(), HugeTermPeer()
    gossip._note("a")
    peer._note("b")
    assert Mixed([gossip, peer]).problems() == ["a", "b"]


# ------------------------------------------------------------ the cluster key


def test_netns_cluster_runs_keyed_with_gossip(tmp_path: Path):
    """Every node gets the same key file, gossip, and the other nodes to join; no --insecure."""
    network = NetnsNetwork(3, subnet="10.99.7.0/24", prefix="t", rng=random.Random(1))
    cluster = NetnsCluster(network, tmp_path)
    assert cluster.key_path == tmp_path / "cluster.key" and cluster.key
    assert cluster.cluster_id == cluster_id_from_key(cluster.key)
    for node in cluster.nodes:
        argv = cluster.argv(node)
        assert argv[argv.index("--gossip-key-file") + 1] == str(cluster.key_path.resolve())
        assert argv[argv.index("--gossip-port") + 1] == str(GOSSIP_PORT)
        joined = argv[argv.index("--join") + 1].split(",")
        assert sorted(joined) == sorted(
            f"{n.address}:{GOSSIP_PORT}" for n in cluster.nodes if n is not node
        )
        assert "--insecure" not in argv
    again = NetnsCluster(network, tmp_path)
    assert again.key == cluster.key  # a second cluster object on the same folder: same key


def test_netns_cluster_without_key_runs_gossip_insecure(tmp_path: Path):
    """key=False: no key file, gossip with an explicit --insecure, the fixed cluster id."""
    network = NetnsNetwork(2, subnet="10.99.8.0/24", prefix="t", rng=random.Random(1))
    cluster = NetnsCluster(network, tmp_path, key=False)
    argv = cluster.argv(cluster.nodes[0])
    assert "--gossip-key-file" not in argv and "--insecure" in argv
    assert cluster.cluster_id == "leeky"
    assert not (tmp_path / "cluster.key").exists()


def test_netns_cluster_without_key_or_gossip_is_insecure_too(tmp_path: Path):
    """A keyless static cluster on bridge (not loopback) addresses must say --insecure to start."""
    network = NetnsNetwork(2, subnet="10.99.8.0/24", prefix="t", rng=random.Random(1))
    cluster = NetnsCluster(network, tmp_path, key=False, gossip=False)
    argv = cluster.argv(cluster.nodes[0])
    assert "--gossip-port" not in argv and "--insecure" in argv


def test_parse_metrics_reads_labelled_samples():
    """Prometheus text: comments skipped, labelled names kept whole."""
    text = '# HELP x\nleeky_connections_cap{port="client"} 200.0\nleeky_x 3\nbad line\n'
    assert parse_metrics(text) == {'leeky_connections_cap{port="client"}': 200.0, "leeky_x": 3.0}
