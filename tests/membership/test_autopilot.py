"""The autopilot over a Clock: gossip advises, the leader's own evidence decides removals."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, task

from leeky_twisted.core.messages import ConfChange, ConfChangeOp, Configuration, NodeId, Role
from leeky_twisted.interfaces import FollowerProgress, NodeView
from leeky_twisted.membership import codec
from leeky_twisted.membership.autopilot import Autopilot
from leeky_twisted.membership.codec import MemberState, Packet, PacketKind, Record
from leeky_twisted.membership.contact import ContactTracker
from leeky_twisted.membership.gossip_core import GossipConfig, GossipCore
from leeky_twisted.membership.reconciler import ReconcilerSettings
from leeky_twisted.server.service import make_node_service
from leeky_twisted.testing.fakes import FakeNodeBase

CLUSTER = "unit"
KEY = b"the cluster key"
VOTERS = ("a", "b", "c", "d", "e")
GRACE = 30.0


@dataclass
class Message:
    """The one field the tracker reads."""

    sender: str


class FakeCore:
    """What the autopilot reads of the Raft core."""

    def __init__(self) -> None:
        self.role = Role.LEADER
        self.term = 2
        self.configuration = Configuration(frozenset(NodeId(n) for n in VOTERS))
        self.commit = 0


class FakeNode(FakeNodeBase):
    """Records proposed configuration changes and applies them at once."""

    def __init__(self) -> None:
        self.node_id = NodeId("a")
        self.core = FakeCore()
        self.stopped = False
        self.proposed: list[tuple[ConfChangeOp, str]] = []

    def propose_config_change(self, change: ConfChange, timeout: float) -> defer.Deferred[None]:
        self.proposed.append((change.op, change.node_id))
        self.core.configuration = self.core.configuration.apply(change)
        return defer.succeed(None)

    def view(self) -> NodeView:
        """Return the core's state, every voter caught up to index 100."""
        c = self.core
        return NodeView(
            node_id=self.node_id,
            role=c.role,
            term=c.term,
            leader=self.node_id,
            commit=c.commit,
            applied=c.commit,
            first_index=1,
            last_index=100,
            configuration=c.configuration,
            config_change_pending=False,
            progress={NodeId(n): FollowerProgress(100, 101, "replicate", 0, 64) for n in VOTERS},
        )


def gossip_view() -> GossipCore:
    """Return the leader's gossip core, knowing every voter alive (each said so itself)."""
    core = GossipCore(
        GossipConfig(NodeId("a"), ("10.0.0.1", 7946), CLUSTER, key=KEY), random.Random(1)
    )
    for i, n in enumerate(VOTERS[1:], start=2):
        rec = Record(NodeId(n), 0, MemberState.ALIVE, (f"10.0.0.{i}", 7946))
        core.receive((f"10.0.0.{i}", 7946), signed(n, rec))
    return core


def signed(sender: str, *records: Record) -> bytes:
    """Return a SYNC datagram signed with the real cluster key."""
    return codec.encode(Packet(PacketKind.SYNC, NodeId(sender), records=records), CLUSTER, KEY)


def forge_left(core: GossipCore, victim: str) -> None:
    """Finding 2, as a key holder would: "victim LEFT", with victim as the sender.

    At 2^31 - 1, the farthest ahead serial incarnations allow (2^32 - 1 now
    reads as older than 0, and is ignored).
    """
    rec = Record(NodeId(victim), 2**31 - 1, MemberState.LEFT, ("10.0.0.5", 7946))
    core.receive(("6.6.6.6", 6), signed(victim, rec))
    assert core.members()[NodeId(victim)].state is MemberState.LEFT


def setup() -> tuple[task.Clock, FakeNode, GossipCore, ContactTracker, Autopilot]:
    clock = task.Clock()
    node = FakeNode()
    gossip = gossip_view()
    contact = ContactTracker(clock)
    pilot = Autopilot(
        clock, node, gossip, 0.1, contact.last_heard, ReconcilerSettings(dead_grace=GRACE)
    )
    pilot.start()
    return clock, node, gossip, contact, pilot


def run(clock: task.Clock, seconds: int, contact: ContactTracker, talking: tuple[str, ...]) -> None:
    """Advance one second at a time; each of ``talking`` sends the leader a message each second."""
    deliver = contact.wrap(lambda message: None)
    for _ in range(seconds):
        for n in talking:
            deliver(Message(n))
        clock.advance(1)


def test_a_forged_left_never_removes_a_voter_that_answers_the_leader() -> None:
    """Issue 19 finding 2: a signed, forged "e LEFT" changes nothing while e answers."""
    clock, node, gossip, contact, pilot = setup()
    forge_left(gossip, "e")
    run(clock, 10 * int(GRACE), contact, VOTERS[1:])
    assert node.proposed == []
    # once e really falls silent, the leader's own evidence removes it after the grace period
    run(clock, int(GRACE) - 2, contact, VOTERS[1:4])
    assert node.proposed == []
    run(clock, 3, contact, VOTERS[1:4])
    assert node.proposed == [(ConfChangeOp.REMOVE, "e")]
    pilot.stop()


def test_silence_counts_only_from_when_this_node_leads() -> None:
    """A new leader that never heard a voter waits the whole grace period before removing it."""
    clock, node, gossip, contact, pilot = setup()
    node.core.role = Role.FOLLOWER
    forge_left(gossip, "e")
    run(clock, 100, contact, VOTERS[1:4])  # e silent, but we did not lead
    node.core.role = Role.LEADER
    run(clock, int(GRACE), contact, VOTERS[1:4])
    assert node.proposed == []
    run(clock, 2, contact, VOTERS[1:4])
    assert node.proposed == [(ConfChangeOp.REMOVE, "e")]
    pilot.stop()


def test_a_leadership_won_again_between_two_checks_counts_afresh() -> None:
    """Losing and winning leadership within one interval restarts the count (a new term)."""
    clock, node, gossip, contact, pilot = setup()
    forge_left(gossip, "e")
    run(clock, int(GRACE) - 5, contact, VOTERS[1:4])
    node.core.term = 3  # lost and won again, unseen by the 1 s checks
    run(clock, int(GRACE) - 5, contact, VOTERS[1:4])
    assert node.proposed == []
    run(clock, 7, contact, VOTERS[1:4])
    assert node.proposed == [(ConfChangeOp.REMOVE, "e")]
    pilot.stop()


def test_the_tracker_records_the_reactor_time_per_sender() -> None:
    """ContactTracker notes clock.seconds() for each sender, then passes the message on."""
    clock = task.Clock()
    got: list[Any] = []
    contact = ContactTracker(clock)
    deliver = contact.wrap(got.append)
    clock.advance(5)
    deliver(Message("b"))
    clock.advance(2)
    deliver(Message("c"))
    assert [m.sender for m in got] == ["b", "c"]
    assert (contact.last_heard(NodeId("b")), contact.last_heard(NodeId("c"))) == (5.0, 7.0)
    assert contact.last_heard(NodeId("d")) is None


class RecordingTransport:
    """A peer transport that keeps its receiver and its sent messages."""

    def __init__(self) -> None:
        self.receiver: Any = None
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)

    def set_receiver(self, receiver: Any) -> None:
        self.receiver = receiver

    def close(self) -> None:
        pass


def test_the_tracking_transport_wraps_every_receiver_ever_set() -> None:
    """Whatever receiver the node installs, and however often, the tracker sees each message."""
    from zope.interface.verify import verifyObject

    from leeky_twisted.interfaces import IPeerTransport
    from leeky_twisted.membership.contact import ContactTrackingTransport

    clock = task.Clock()
    inner = RecordingTransport()
    contact = ContactTracker(clock)
    tracked = ContactTrackingTransport(inner, contact)
    assert verifyObject(IPeerTransport, tracked)
    assert tracked.send == inner.send and not hasattr(tracked, "flush")
    got: list[Any] = []
    tracked.set_receiver(lambda m: got.append(("first", m.sender)))
    tracked.set_receiver(lambda m: got.append(("second", m.sender)))
    clock.advance(3)
    inner.receiver(Message("b"))
    assert got == [("second", "b")] and contact.last_heard(NodeId("b")) == 3.0


def test_the_node_service_feeds_the_autopilot_from_the_transport(tmp_path: Any) -> None:
    """Wiring: the node's transport is tracked, and the autopilot reads that tracker."""
    from twisted.internet.testing import MemoryReactorClock

    from leeky_twisted.membership.contact import ContactTrackingTransport
    from leeky_twisted.server.tap import Options

    opts = Options()
    argv = ["--id", "n1", "--address", "127.0.0.1:7100", "--gossip-port", "7300"]
    opts.parseOptions([*argv, "--data-dir", str(tmp_path), "--bootstrap"])
    switch = sys.getswitchinterval()
    try:
        top = make_node_service(opts.node_options, MemoryReactorClock())
    finally:
        sys.setswitchinterval(switch)  # the service tunes it for the whole process
    transport = top.node.transport
    assert isinstance(transport, ContactTrackingTransport)
    assert top.autopilot is not None
    assert top.autopilot.last_heard == transport.tracker.last_heard
    # through both wrappers, the peer transport tells the node when each read ends
    inbox = transport.inner.inner._inbox
    assert inbox.after_read == top.node.process_received
