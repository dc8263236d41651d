"""The gossip core, rule by rule, with datagrams passed by hand or on a perfect network."""

from __future__ import annotations

import random

import pytest
from gossip_sim import SimNetwork, address_of, build_cluster
from zope.interface.verify import verifyObject

from leeky_twisted.core.messages import NodeId
from leeky_twisted.interfaces import IMembership
from leeky_twisted.membership import codec
from leeky_twisted.membership.codec import Address, Packet, PacketKind, Record
from leeky_twisted.membership.gossip_core import GossipConfig, GossipCore, Member, MemberState

CLUSTER = "unit"


def make(i: int, **knobs: object) -> GossipCore:
    """Return a core for node ``n<i>`` with a fixed seed."""
    cfg = GossipConfig(
        NodeId(f"n{i}"), address_of(i), CLUSTER, {"peer": f"10.1.0.{i}:7000"}, **knobs
    )
    return GossipCore(cfg, random.Random(i))


def sent(core: GossipCore, key: bytes | None = None) -> list[tuple[Address, Packet]]:
    """Return and decode the core's outbox."""
    return [(a, codec.decode(d, CLUSTER, key)) for a, d in core.take_outbox()]


def sent_but_greetings(core: GossipCore) -> list[tuple[Address, Packet]]:
    """Return the outbox without the SYNCs sent to unknown probers."""
    return [(a, p) for a, p in sent(core) if p.kind is not PacketKind.SYNC]


def packet(kind: PacketKind, sender: str, **fields: object) -> bytes:
    """Encode a packet of this cluster."""
    return codec.encode(Packet(kind, NodeId(sender), **fields), CLUSTER)  # type: ignore[arg-type]


def record(i: int, inc: int, state: MemberState, suspecter: str = "n9") -> Record:
    """Return a record about node ``n<i>``."""
    who = NodeId(suspecter) if state is MemberState.SUSPECT else codec.NO_NODE
    meta = codec.metadata_from({"peer": f"10.1.0.{i}:7000"})
    return Record(NodeId(f"n{i}"), inc, state, address_of(i), meta, who)


def tick_until_probe(core: GossipCore) -> list[tuple[Address, Packet]]:
    """Tick until the core sends something; return it."""
    for _ in range(100):
        core.tick()
        out = sent(core)
        if out:
            return out
    raise AssertionError("nothing sent")


# ---------------------------------------------------------------- the basics


def test_core_provides_imembership() -> None:
    """GossipCore implements IMembership."""
    assert verifyObject(IMembership, make(1))


def test_a_new_core_knows_only_itself_alive() -> None:
    """members() starts with this node alive at incarnation 0, with its metadata."""
    core = make(1)
    members = core.members()
    assert list(members) == ["n1"]
    me = members[NodeId("n1")]
    assert (me.state, me.incarnation, me.address) == (MemberState.ALIVE, 0, address_of(1))
    assert me.peer_address == "10.1.0.1:7000"


@pytest.mark.parametrize(
    "knobs",
    [
        {"probe_period_ticks": 1},
        {"ack_timeout_ticks": 0},
        {"ack_timeout_ticks": 10},
        {"suspicion_mult": 0},
        {"retransmit_mult": 0},
        {"suspicion_max_mult": 0.5},
        {"max_packet_bytes": 600},
        {"key": b""},
        {"metadata": {"big": "x" * 300}},
        {"cluster_id": "c" * 65},
    ],
)
def test_bad_config_is_refused(knobs: dict[str, object]) -> None:
    """GossipConfig validates itself when built."""
    base: dict[str, object] = {
        "node_id": NodeId("a"),
        "address": ("h", 1),
        "cluster_id": "c",
    }
    with pytest.raises(ValueError):
        GossipConfig(**{**base, **knobs})  # type: ignore[arg-type]


def test_same_seed_same_datagrams() -> None:
    """Two runs from the same seed produce byte-identical traffic (replayable)."""

    def run() -> list[tuple[Address, bytes]]:
        net = SimNetwork(seed=3, loss=0.2)
        log: list[tuple[Address, bytes]] = []
        for i in range(5):
            net.add(i)
        for i in range(1, 5):
            net.core(i).join([address_of(0)])
        for _ in range(200):
            for core in net.nodes.values():
                original = core.take_outbox
                out = original()
                log.extend(out)
                core._outbox = out  # put back for the network
            net.step()
        return log

    assert run() == run()


# ---------------------------------------------------------------- joining


def test_join_sends_own_record_and_retries_each_period_until_answered() -> None:
    """JOIN carries the joiner's alive record and is resent until a SYNC arrives."""
    core = make(1)
    core.join([("seed", 7946)])
    (addr, p), *_ = sent(core)
    assert addr == ("seed", 7946) and p.kind is PacketKind.JOIN
    assert p.records[0].node_id == "n1" and p.records[0].state is MemberState.ALIVE
    joins = 0
    for _ in range(30):
        core.tick()
        joins += sum(1 for a, p in sent(core) if p.kind is PacketKind.JOIN)
    assert joins == 3
    state = (record(2, 0, MemberState.ALIVE),)
    core.receive(("seed", 7946), packet(PacketKind.SYNC, "n2", records=state))
    assert core.joined
    assert core.members()[NodeId("n2")].state is MemberState.ALIVE
    for _ in range(30):
        core.tick()
        assert all(p.kind is not PacketKind.JOIN for _, p in sent(core))


def test_join_is_answered_with_the_full_state() -> None:
    """A member receiving JOIN adds the joiner and replies with every record it has."""
    core = make(1)
    core.receive(
        address_of(3), packet(PacketKind.SYNC, "n3", records=(record(3, 4, MemberState.DEAD),))
    )
    sent(core)
    core.receive(
        ("1.2.3.4", 555), packet(PacketKind.JOIN, "n2", records=(record(2, 0, MemberState.ALIVE),))
    )
    replies = sent(core)
    assert {a for a, _ in replies} == {("1.2.3.4", 555)}
    got = {r.node_id: (r.state, r.incarnation) for _, p in replies for r in p.records}
    assert got == {
        "n1": (MemberState.ALIVE, 0),
        "n2": (MemberState.ALIVE, 0),
        "n3": (MemberState.DEAD, 4),
    }
    assert all(p.kind is PacketKind.SYNC and not p.reply_wanted for _, p in replies)


def test_cluster_forms_through_one_seed() -> None:
    """Nodes that only know node 0 all end up seeing each other alive."""
    net = build_cluster(6, seed=1)
    for core in net.live():
        assert {m.node_id for m in core.members().values() if m.state is MemberState.ALIVE} == {
            NodeId(f"n{i}") for i in range(6)
        }


# ---------------------------------------------------------------- probing


def test_ping_is_acked_with_the_same_sequence() -> None:
    """A PING addressed to this node gets an ACK with its seq, to the source address."""
    core = make(1)
    core.receive(("9.9.9.9", 1), packet(PacketKind.PING, "n2", seq=77, target=NodeId("n1")))
    [(addr, p)] = sent_but_greetings(core)
    assert addr == ("9.9.9.9", 1) and p.kind is PacketKind.ACK and p.seq == 77


def test_an_unknown_prober_is_greeted_with_a_sync() -> None:
    """A PING from an unknown member gets our record in a SYNC asking for its state."""
    core = make(1)
    core.receive(("9.9.9.9", 1), packet(PacketKind.PING, "n2", seq=77, target=NodeId("n1")))
    [(addr, sync)] = [(a, p) for a, p in sent(core) if p.kind is PacketKind.SYNC]
    assert addr == ("9.9.9.9", 1) and sync.reply_wanted
    assert [r.node_id for r in sync.records] == ["n1"]
    core.receive(
        ("9.9.9.9", 1), packet(PacketKind.SYNC, "n2", records=(record(2, 0, MemberState.ALIVE),))
    )
    core.receive(("9.9.9.9", 1), packet(PacketKind.PING, "n2", seq=78, target=NodeId("n1")))
    assert [p.kind for _, p in sent(core)] == [PacketKind.ACK]


def test_a_prober_believed_dead_is_told_so() -> None:
    """A PING from a member we hold DEAD gets its DEAD record, so that it refutes."""
    core = make(1)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n3", records=(record(2, 4, MemberState.DEAD),))
    )
    sent(core)
    core.receive(address_of(2), packet(PacketKind.PING, "n2", seq=1, target=NodeId("n1")))
    [sync] = [p for _, p in sent(core) if p.kind is PacketKind.SYNC]
    assert [(r.node_id, r.state, r.incarnation) for r in sync.records] == [
        ("n1", MemberState.ALIVE, 0),
        ("n2", MemberState.DEAD, 4),
    ]


def test_ping_for_another_node_is_not_acked() -> None:
    """A PING naming another node (e.g. the address moved) is dropped and counted."""
    core = make(1)
    core.receive(("9.9.9.9", 1), packet(PacketKind.PING, "n2", seq=1, target=NodeId("n7")))
    assert sent(core) == []
    assert core.counters["dropped_misdirected"] == 1


def test_unacked_probe_goes_indirect_then_suspects() -> None:
    """No ACK by the ack timeout: PING_REQ to k others; none by the period's end: SUSPECT."""
    core = make(1, indirect_probes=2)
    for i in (2, 3, 4, 5):
        core.receive(
            address_of(i),
            packet(PacketKind.SYNC, f"n{i}", records=(record(i, 0, MemberState.ALIVE),)),
        )
    sent(core)
    [(addr, ping)] = tick_until_probe(core)
    assert ping.kind is PacketKind.PING
    target = ping.target
    for _ in range(4):
        core.tick()
        assert sent(core) == []
    core.tick()  # ack timeout (5 ticks)
    reqs = sent(core)
    assert len(reqs) == 2
    assert all(p.kind is PacketKind.PING_REQ and p.target == target for _, p in reqs)
    assert all(a != addr for a, _ in reqs)
    assert all(p.seq == ping.seq and p.target_address == addr for _, p in reqs)
    for _ in range(5):
        core.tick()
    assert core.members()[target].state is MemberState.SUSPECT
    assert core.counters["probe_timeouts"] == 1


def test_an_indirect_ack_keeps_the_target_alive() -> None:
    """An ACK relayed by a helper, carrying the probe's seq, counts as an answer."""
    core = make(1)
    for i in (2, 3):
        core.receive(
            address_of(i),
            packet(PacketKind.SYNC, f"n{i}", records=(record(i, 0, MemberState.ALIVE),)),
        )
    sent(core)
    [(_, ping)] = tick_until_probe(core)
    for _ in range(5):
        core.tick()
    helper = next(p for _, p in sent(core) if p.kind is PacketKind.PING_REQ)
    core.receive(address_of(9), packet(PacketKind.ACK, "n9", seq=helper.seq))
    for _ in range(5):
        core.tick()
    assert core.members()[ping.target].state is MemberState.ALIVE
    assert core.counters["probe_timeouts"] == 0


def test_ping_req_is_relayed_and_the_ack_forwarded() -> None:
    """A helper pings the target with its own seq and forwards the ACK with the requester's."""
    helper = make(1)
    helper.receive(
        ("1.1.1.1", 10),
        packet(
            PacketKind.PING_REQ, "n2", seq=40, target=NodeId("n3"), target_address=("3.3.3.3", 30)
        ),
    )
    [(addr, ping)] = sent_but_greetings(helper)
    assert addr == ("3.3.3.3", 30) and ping.kind is PacketKind.PING and ping.target == "n3"
    helper.receive(("3.3.3.3", 30), packet(PacketKind.ACK, "n3", seq=ping.seq))
    [(addr, ack)] = sent_but_greetings(helper)
    assert addr == ("1.1.1.1", 10) and ack.kind is PacketKind.ACK and ack.seq == 40


def test_relays_expire_after_a_period() -> None:
    """An ACK arriving after the relay expired is not forwarded."""
    helper = make(1)
    helper.receive(
        ("1.1.1.1", 10),
        packet(
            PacketKind.PING_REQ, "n2", seq=40, target=NodeId("n3"), target_address=("3.3.3.3", 30)
        ),
    )
    [(_, ping)] = sent_but_greetings(helper)
    for _ in range(10):
        helper.tick()
    sent_but_greetings(helper)
    helper.receive(("3.3.3.3", 30), packet(PacketKind.ACK, "n3", seq=ping.seq))
    assert sent_but_greetings(helper) == []


def test_probes_visit_every_member_once_per_round() -> None:
    """Round-robin probing: in N-1 periods each other member is probed exactly once."""
    core = make(1)
    others = [2, 3, 4, 5, 6]
    for i in others:
        core.receive(
            address_of(i),
            packet(PacketKind.SYNC, f"n{i}", records=(record(i, 0, MemberState.ALIVE),)),
        )
    sent(core)
    targets = []
    while len(targets) < 2 * len(others):
        core.tick()
        for _, p in sent(core):
            if p.kind is PacketKind.PING:
                targets.append(p.target)
                core.receive(address_of(0), packet(PacketKind.ACK, "n0", seq=p.seq))
    first, second = targets[: len(others)], targets[len(others) :]
    assert sorted(first) == sorted(second) == [f"n{i}" for i in others]


# ---------------------------------------------------------------- suspicion


def suspected_core(confirmations: int = 3, members: int = 8) -> GossipCore:
    """Return a core that knows ``members`` others and has just heard n2 is suspect."""
    core = make(1, suspicion_confirmations=confirmations)
    recs = tuple(record(i, 0, MemberState.ALIVE) for i in range(2, 2 + members))
    core.receive(address_of(2), packet(PacketKind.SYNC, "n2", records=recs))
    core.receive(
        address_of(3),
        packet(PacketKind.ACK, "n3", seq=1, records=(record(2, 0, MemberState.SUSPECT, "n3"),)),
    )
    sent(core)
    return core


def ticks_until_dead(core: GossipCore, node: str, feed: object = None) -> int:
    """Tick until ``node`` is DEAD; return the ticks taken."""
    for n in range(1, 1000):
        core.tick()
        for _, p in sent(core):  # everyone answers: only ``feed`` confirms suspicions
            if p.kind is PacketKind.PING:
                core.receive(address_of(0), packet(PacketKind.ACK, "n0", seq=p.seq))
        if callable(feed):
            feed(n)
        if core.members()[NodeId(node)].state is MemberState.DEAD:
            return n
    raise AssertionError("never dead")


def test_suspicion_times_out_to_dead() -> None:
    """With no refutation a suspect is declared dead, by each member on its own timer."""
    core = suspected_core(confirmations=0)
    events: list[Member] = []
    core.subscribe(events.append)
    took = ticks_until_dead(core, "n2")
    # 9 members alive: scale 1 (log10 9 < 1), so 4 periods of 10 ticks
    assert took == 40
    assert [(e.node_id, e.state) for e in events if e.node_id == "n2"] == [("n2", MemberState.DEAD)]
    assert core.counters["deaths"] == 1


def test_unconfirmed_suspicion_lasts_longer_than_a_confirmed_one() -> None:
    """Lifeguard: the timeout starts at max_mult x the minimum and drops with confirmations."""
    lonely = ticks_until_dead(suspected_core(), "n2")
    core = suspected_core()

    def confirm(n: int) -> None:
        if n in (3, 4, 5):
            rec = record(2, 0, MemberState.SUSPECT, f"n{n + 1}")
            core.receive(
                address_of(n + 1), packet(PacketKind.ACK, f"n{n + 1}", seq=1, records=(rec,))
            )

    confirmed = ticks_until_dead(core, "n2", confirm)
    assert lonely == 240  # 6 x 40
    assert confirmed == 40


def test_own_probe_failure_confirms_an_existing_suspicion() -> None:
    """A member that also fails to reach a suspect gossips its own suspicion as a confirmation."""
    core = suspected_core()
    for _ in range(200):
        core.tick()
        for _, p in sent(core):
            if p.kind is PacketKind.PING and p.target != "n2":
                core.receive(address_of(0), packet(PacketKind.ACK, "n0", seq=p.seq))
            if p.kind is PacketKind.PING and p.target == "n2":
                assert p.records[0].node_id == "n2"  # the buddy system tells it first
                assert p.records[0].state is MemberState.SUSPECT
        if core.counters["probe_timeouts"]:
            break
    pending = [b.record for b in core._broadcasts.values() if b.record.node_id == "n2"]
    assert pending and pending[0].suspecter == "n1"


# ---------------------------------------------------------------- refutation


@pytest.mark.parametrize("state", [MemberState.SUSPECT, MemberState.DEAD])
def test_suspected_node_refutes_with_a_higher_incarnation(state: MemberState) -> None:
    """Hearing itself suspected or dead, a node bumps its incarnation and gossips ALIVE."""
    core = make(1)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 0, MemberState.ALIVE),))
    )
    core.receive(address_of(2), packet(PacketKind.ACK, "n2", seq=1, records=(record(1, 5, state),)))
    assert core.incarnation == 6
    assert core.counters["refutations"] == 1
    core.receive(address_of(2), packet(PacketKind.PING, "n2", seq=2, target=NodeId("n1")))
    [(_, ack)] = sent(core)[-1:]
    mine = [r for r in ack.records if r.node_id == "n1"]
    assert mine and mine[0].state is MemberState.ALIVE and mine[0].incarnation == 6


def test_stale_suspicion_is_ignored() -> None:
    """A suspicion about an older incarnation of this node changes nothing."""
    core = make(1)
    core.receive(
        address_of(2),
        packet(PacketKind.ACK, "n2", seq=1, records=(record(1, 3, MemberState.SUSPECT),)),
    )
    core.receive(
        address_of(2),
        packet(PacketKind.ACK, "n2", seq=1, records=(record(1, 2, MemberState.DEAD),)),
    )
    assert core.incarnation == 4
    assert core.counters["refutations"] == 1


def test_refutation_clears_the_suspicion_elsewhere() -> None:
    """ALIVE at a higher incarnation overrides SUSPECT and DEAD at a lower one."""
    core = suspected_core()
    core.receive(
        address_of(2),
        packet(PacketKind.ACK, "n2", seq=1, records=(record(2, 1, MemberState.ALIVE),)),
    )
    m = core.members()[NodeId("n2")]
    assert (m.state, m.incarnation) == (MemberState.ALIVE, 1)


@pytest.mark.parametrize(
    ("have", "update", "wins"),
    [
        ((MemberState.ALIVE, 1), (MemberState.ALIVE, 2), True),
        ((MemberState.ALIVE, 1), (MemberState.ALIVE, 1), False),
        ((MemberState.ALIVE, 1), (MemberState.SUSPECT, 1), True),
        ((MemberState.ALIVE, 2), (MemberState.SUSPECT, 1), False),
        ((MemberState.SUSPECT, 1), (MemberState.ALIVE, 1), False),
        ((MemberState.SUSPECT, 1), (MemberState.ALIVE, 2), True),
        ((MemberState.SUSPECT, 1), (MemberState.DEAD, 1), True),
        ((MemberState.DEAD, 1), (MemberState.SUSPECT, 1), False),
        ((MemberState.DEAD, 1), (MemberState.ALIVE, 1), False),
        ((MemberState.DEAD, 1), (MemberState.ALIVE, 2), True),
        ((MemberState.DEAD, 1), (MemberState.LEFT, 1), True),
        ((MemberState.LEFT, 1), (MemberState.DEAD, 1), False),
    ],
)
def test_updates_are_ordered_by_incarnation_then_state(
    have: tuple[MemberState, int], update: tuple[MemberState, int], wins: bool
) -> None:
    """SWIM's precedence: a higher incarnation wins; within one, ALIVE < SUSPECT < DEAD < LEFT."""
    core = make(1)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, have[1], have[0]),))
    )
    # only n2 itself may say that it left
    by = "n2" if update[0] is MemberState.LEFT else "n3"
    core.receive(
        address_of(3), packet(PacketKind.SYNC, by, records=(record(2, update[1], update[0]),))
    )
    m = core.members()[NodeId("n2")]
    assert (m.state, m.incarnation) == (update if wins else have)


# ---------------------------------------------------------------- events, leave, metadata


def test_listeners_see_every_state_change() -> None:
    """subscribe(listener) gets the new Member after each discovery and state change."""
    core = make(1)
    events: list[Member] = []
    core.subscribe(events.append)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 0, MemberState.ALIVE),))
    )
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n3", records=(record(2, 0, MemberState.SUSPECT),))
    )
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 1, MemberState.ALIVE),))
    )
    assert [(e.node_id, e.state, e.incarnation) for e in events] == [
        ("n2", MemberState.ALIVE, 0),
        ("n2", MemberState.SUSPECT, 0),
        ("n2", MemberState.ALIVE, 1),
    ]


def test_a_failing_listener_is_counted_and_others_still_run() -> None:
    """A listener that raises does not stop the core or the other listeners."""
    core = make(1)
    seen: list[Member] = []

    def bad(member: Member) -> None:
        raise RuntimeError("boom")

    core.subscribe(bad)
    core.subscribe(seen.append)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 0, MemberState.ALIVE),))
    )
    assert len(seen) == 1 and core.counters["listener_errors"] == 1
    core.unsubscribe(bad)
    core.receive(
        address_of(3), packet(PacketKind.SYNC, "n3", records=(record(3, 0, MemberState.ALIVE),))
    )
    assert len(seen) == 2 and core.counters["listener_errors"] == 1


def test_leave_is_announced_and_recorded_as_left() -> None:
    """A leaving node tells others directly; they record LEFT, and it stops probing."""
    net = build_cluster(4, seed=2)
    net.core(3).leave()
    net.flush()
    net.run(50)
    assert net.all_see("n3", MemberState.LEFT, [net.core(i) for i in range(3)])
    before = net.core(3).counters["probes"]
    net.run(50)
    assert net.core(3).counters["probes"] == before


def test_metadata_change_reaches_everyone() -> None:
    """set_metadata bumps the incarnation, and every member learns the new metadata."""
    net = build_cluster(5, seed=4)
    net.core(2).set_metadata({"peer": "10.9.9.9:7000", "client": "10.9.9.9:7001"})
    net.run_until(
        lambda: all(
            c.members()[NodeId("n2")].metadata.get("client") == "10.9.9.9:7001" for c in net.live()
        ),
        500,
    )
    for core in net.live():
        assert core.members()[NodeId("n2")].incarnation == 1


def test_address_change_reaches_everyone() -> None:
    """set_address bumps the incarnation and every member learns the new address."""
    net = build_cluster(4, seed=4)
    net.core(1).set_address(("10.7.7.7", 9000))
    assert net.core(1).incarnation == 1
    net.run(100)
    for core in net.live():
        assert core.members()[NodeId("n1")].address == ("10.7.7.7", 9000)


def test_reaped_members_are_not_brought_back_by_old_gossip() -> None:
    """After dead_retain_ticks a dead member is forgotten; its old records stay buried."""
    core = make(1, dead_retain_ticks=50)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 3, MemberState.DEAD),))
    )
    for _ in range(50):
        core.tick()
    assert NodeId("n2") not in core.members()
    for old in (record(2, 3, MemberState.DEAD), record(2, 2, MemberState.ALIVE)):
        core.receive(address_of(3), packet(PacketKind.SYNC, "n3", records=(old,)))
        assert NodeId("n2") not in core.members()
    core.receive(
        address_of(3), packet(PacketKind.SYNC, "n3", records=(record(2, 4, MemberState.ALIVE),))
    )
    assert core.members()[NodeId("n2")].state is MemberState.ALIVE


def test_a_reaped_member_that_restarts_is_told_to_refute_and_comes_back() -> None:
    """A member forgotten (tombstone at 3) rejoins at incarnation 0: told DEAD@3, it refutes."""
    core = make(1, dead_retain_ticks=50)
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 3, MemberState.DEAD),))
    )
    for _ in range(50):
        core.tick()
    core.take_outbox()
    assert NodeId("n2") not in core.members()
    fresh = make(2)
    fresh.join([core.config.address])
    for _ in range(30):  # JOIN, its answers, then the refutation piggybacked on a ping
        for _, data in fresh.take_outbox():
            core.receive(fresh.config.address, data)
        for _, data in core.take_outbox():
            fresh.receive(core.config.address, data)
        if NodeId("n2") in core.members():
            break
        fresh.tick()
        core.tick()
    assert fresh.incarnation == 4
    assert core.members()[NodeId("n2")].state is MemberState.ALIVE


# ---------------------------------------------------------------- hostile input


MAX_INC = codec.MAX_INCARNATION


def knows_n2(core: GossipCore, inc: int = 0) -> None:
    """Teach ``core`` that n2 is alive at ``inc`` (n2 says so itself)."""
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, inc, MemberState.ALIVE),))
    )


def test_a_left_claim_by_someone_else_is_refused() -> None:
    """Issue 19 finding 2: "n2 LEFT" from n3 (or an outsider) changes nothing; n2's own counts."""
    core = make(1)
    knows_n2(core)
    forged = record(2, MAX_INC, MemberState.LEFT)
    for sender in ("n3", "attacker"):
        core.receive(("6.6.6.6", 6), packet(PacketKind.SYNC, sender, records=(forged,)))
        core.receive(("6.6.6.6", 6), packet(PacketKind.JOIN, sender, records=(forged,)))
    m = core.members()[NodeId("n2")]
    assert (m.state, m.incarnation) == (MemberState.ALIVE, 0)
    assert core.counters["refused_left_claims"] == 4
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, 1, MemberState.LEFT),))
    )
    assert core.members()[NodeId("n2")].state is MemberState.LEFT


def test_a_forged_maximum_incarnation_is_refuted() -> None:
    """Issue 19 finding 2: "you left/died at 2^32-1" is answered with a newer incarnation (0)."""
    core = make(1)
    knows_n2(core)
    for state in (MemberState.DEAD, MemberState.SUSPECT):
        core.receive(
            address_of(2), packet(PacketKind.SYNC, "n2", records=(record(1, MAX_INC, state),))
        )
    assert core.incarnation == 0  # wrapped past the "maximum"
    # and the refutation wins wherever the forged record was believed
    other = make(3)
    other.receive(
        address_of(1),
        packet(PacketKind.SYNC, "n1", records=(record(1, MAX_INC, MemberState.LEFT),)),
    )
    assert other.members()[NodeId("n1")].state is MemberState.LEFT
    core.receive(address_of(3), packet(PacketKind.PING, "n3", seq=7, target=NodeId("n1")))
    for _, data in core.take_outbox():
        other.receive(address_of(1), data)
    m = other.members()[NodeId("n1")]
    assert (m.state, m.incarnation) == (MemberState.ALIVE, 0)


def test_a_relayed_incarnation_jump_is_refused() -> None:
    """A third party cannot move a member's incarnation far ahead; the member itself can."""
    from leeky_twisted.membership.gossip_core import MAX_INCARNATION_JUMP

    core = make(1)
    knows_n2(core, 5)
    far = record(2, 5 + MAX_INCARNATION_JUMP + 1, MemberState.DEAD)
    core.receive(address_of(3), packet(PacketKind.SYNC, "n3", records=(far,)))
    assert core.members()[NodeId("n2")].incarnation == 5
    assert core.counters["refused_incarnation_jumps"] == 1
    near = record(2, 5 + MAX_INCARNATION_JUMP, MemberState.SUSPECT)
    core.receive(address_of(3), packet(PacketKind.SYNC, "n3", records=(near,)))
    assert core.members()[NodeId("n2")].state is MemberState.SUSPECT
    own = near.incarnation + 2**30
    core.receive(
        address_of(2), packet(PacketKind.SYNC, "n2", records=(record(2, own, MemberState.ALIVE),))
    )
    assert core.members()[NodeId("n2")].incarnation == own


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(1, 0, 1), (0, 1, -1), (0, MAX_INC, 1), (MAX_INC, 0, -1), (5, 5, 0), (2**31, 0, -(2**31))],
)
def test_incarnations_compare_as_serial_numbers(a: int, b: int, expected: int) -> None:
    """ahead() is RFC 1982 serial arithmetic modulo 2^32; half way round counts as older."""
    from leeky_twisted.membership.gossip_core import ahead

    assert ahead(a, b) == expected


def test_bad_datagrams_are_dropped_and_counted() -> None:
    """Random bytes, foreign clusters, bad keys and our own id are dropped, never raised."""
    core = make(1)
    rng = random.Random(1)
    for _ in range(200):
        core.receive(("6.6.6.6", 6), rng.randbytes(rng.randrange(80)))
    ping = Packet(PacketKind.PING, NodeId("n2"), 1, NodeId("n1"))
    core.receive(("6.6.6.6", 6), codec.encode(ping, "other-cluster"))
    core.receive(("6.6.6.6", 6), codec.encode(ping, CLUSTER, b"some key"))
    core.receive(("6.6.6.6", 6), packet(PacketKind.PING, "n1", seq=1, target=NodeId("n1")))
    c = core.counters
    assert c["dropped_malformed"] == 200
    assert c["dropped_foreign_cluster"] == 1
    assert c["dropped_bad_auth"] == 1
    assert c["dropped_own_id"] == 1
    assert sent(core) == []
    assert list(core.members()) == ["n1"]


def test_keyed_cores_talk_and_refuse_the_wrong_key() -> None:
    """With a shared key the cluster forms; a node with another key is never admitted."""
    net = SimNetwork(seed=1, key=b"k1")
    net.add(0)
    net.add(1).join([address_of(0)])
    net.add(2, key=b"k2").join([address_of(0)])
    net.flush()
    net.run(100)
    assert set(net.core(0).members()) == {"n0", "n1"}
    assert set(net.core(2).members()) == {"n2"}
    assert net.core(0).counters["dropped_bad_auth"] > 0


def test_foreign_cluster_node_is_never_admitted() -> None:
    """A node configured with another cluster id cannot join."""
    net = SimNetwork(seed=1)
    net.add(0)
    net.add(1, cluster_id="elsewhere").join([address_of(0)])
    net.flush()
    net.run(50)
    assert set(net.core(0).members()) == {"n0"}
    assert net.core(0).counters["dropped_foreign_cluster"] > 0


# ---------------------------------------------------------------- bounded packets


def test_piggybacked_updates_and_syncs_stay_within_the_packet_size() -> None:
    """With 40 members of large metadata, every datagram fits max_packet_bytes."""
    big = {"peer": "p" * 200, "client": "c" * 150, "http": "h" * 100}
    net = SimNetwork(seed=2, max_packet_bytes=1400)
    net.add(0, metadata=big)
    sizes: list[int] = []
    original = net._collect

    def spy(src: Address, core: GossipCore) -> None:
        out = core.take_outbox()
        sizes.extend(len(d) for _, d in out)
        core._outbox = out
        original(src, core)

    net._collect = spy  # type: ignore[method-assign]
    for i in range(1, 40):
        net.add(i, metadata=big).join([address_of(0)])
    net.flush()
    # about two such records fit a packet: the queues drain slowly, but they drain
    assert net.run_until(net.converged, 1500) is not None
    assert max(sizes) <= 1400
    assert len(net.core(0).members()) == 40
