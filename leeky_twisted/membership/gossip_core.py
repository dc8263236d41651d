"""SWIM-style gossip membership as a pure, deterministic object.

The core discovers members and suspects failures; it never decides quorum or
who votes (only the Raft log does). Like the Raft core it does no I/O and reads
no clock: it is driven by :meth:`GossipCore.tick` (time passes by one tick),
:meth:`GossipCore.receive` (a datagram arrived) and :meth:`GossipCore.join`,
and it answers with datagrams to send (:meth:`GossipCore.take_outbox`) and
member changes (listeners given to :meth:`GossipCore.subscribe`). Randomness
comes from an injected ``random.Random``.

The protocol (Das, Gupta, Motivala: "SWIM", 2002; with details from hashicorp's
memberlist):

- Every protocol period (``probe_period_ticks``) a member pings the next member
  of a shuffled round-robin list. Without an ACK within ``ack_timeout_ticks`` it
  asks ``indirect_probes`` others to ping it (PING_REQ). Without any ACK by the
  end of the period, the target becomes SUSPECT.
- Every member that learns of a suspicion starts a timer of
  ``suspicion_mult * max(1, log10(N)) * probe_period_ticks`` ticks and then
  declares the member DEAD, unless the member refuted first: a member that hears
  it is suspected (or dead) bumps its incarnation and gossips ALIVE again.
- Updates are ordered by (incarnation, state) with ALIVE < SUSPECT < DEAD <
  LEFT. Each update is piggybacked on pings, acks and ping-reqs, newest and
  least-sent first, at most ``retransmit_mult * ceil(log10(N + 1))`` times, in
  packets of at most ``max_packet_bytes``.
- A joiner sends its record (JOIN) to seed addresses until one answers with its
  full state (SYNC, push-pull); every ``push_pull_ticks`` a member swaps full
  state with a random live member, and tries one random DEAD member too, so
  that partitions heal and false "dead" verdicts are undone.
- DEAD and LEFT records are kept ``dead_retain_ticks`` ticks, then forgotten;
  a tombstone (the last incarnation) stops old gossip from bringing them back.

Hostile input (issue 19): gossip is advice, and a forger should not be able to
make that advice permanent.

- LEFT about member X is accepted only from a datagram whose sender is X: a
  member says it left itself; no one else can say so (with a shared key, a
  key holder can still forge the sender, which is why nothing removes a voter
  on gossip alone: see :mod:`leeky_twisted.membership.reconciler`).
- Incarnations are 32-bit serial numbers (RFC 1982): they wrap, and "newer"
  means at most 2^31 - 1 ahead modulo 2^32. There is no maximum to forge, so a
  member can always refute (it answers with the claimed incarnation + 1).
- A record about X relayed by someone other than X is refused when its
  incarnation is more than ``MAX_INCARNATION_JUMP`` ahead of what we know of X
  (only X itself raises its incarnation, one step at a time).

Malformed, foreign-cluster and badly-authenticated datagrams are dropped and
counted in :attr:`GossipCore.counters`; :meth:`receive` never raises.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from zope.interface import implementer

from leeky_twisted.core.messages import NodeId
from leeky_twisted.interfaces import IMembership
from leeky_twisted.membership import codec
from leeky_twisted.membership.codec import (
    NO_NODE,
    Address,
    MemberState,
    Metadata,
    Packet,
    PacketKind,
    Record,
)

__all__ = [
    "Address",
    "GossipConfig",
    "GossipCore",
    "Member",
    "MemberListener",
    "MemberState",
]

DEFAULT_MAX_PACKET_BYTES = 1400
#: how far ahead of the known incarnation a record relayed by a third party may be
MAX_INCARNATION_JUMP = 1 << 16
_SERIAL = codec.MAX_INCARNATION + 1  # incarnations are serial numbers modulo 2^32
_HALF = _SERIAL // 2


@dataclass(frozen=True)
class GossipConfig:
    """Everything a gossip core needs; validated when built (ValueError).

    Durations are in ticks; the adapter decides how long a tick is (the
    :class:`~leeky_twisted.membership.udp.GossipService` default is 0.1 s, so
    the defaults give a 1 s protocol period and a 0.5 s ack timeout).
    """

    node_id: NodeId
    address: Address  #: the gossip address others reach this node at
    cluster_id: str
    #: advertised with the record: by convention "peer" (Raft address), "client", "http"
    metadata: Mapping[str, str] = field(default_factory=dict)
    key: bytes | None = None  #: shared HMAC-SHA256 key; None sends and accepts plain packets
    probe_period_ticks: int = 10
    ack_timeout_ticks: int = 5
    indirect_probes: int = 3
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    suspicion_confirmations: int = 3
    retransmit_mult: int = 6
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    push_pull_ticks: int = 300
    dead_retain_ticks: int = 36000

    def __post_init__(self) -> None:
        codec.validate_record(
            Record(self.node_id, 0, MemberState.ALIVE, self.address, self.wire_metadata())
        )
        codec._check_text(self.cluster_id, codec.MAX_ID_BYTES, "cluster id")
        if self.key is not None and not self.key:
            raise ValueError("an empty key would authenticate nothing; use None")
        if self.probe_period_ticks < 2:
            raise ValueError("probe_period_ticks must be at least 2")
        if not 1 <= self.ack_timeout_ticks < self.probe_period_ticks:
            raise ValueError("need 1 <= ack_timeout_ticks < probe_period_ticks")
        if self.indirect_probes < 0:
            raise ValueError("indirect_probes must be >= 0")
        if self.suspicion_mult <= 0 or self.retransmit_mult < 1:
            raise ValueError("suspicion_mult must be > 0 and retransmit_mult >= 1")
        if self.suspicion_max_mult < 1 or self.suspicion_confirmations < 0:
            raise ValueError("need suspicion_max_mult >= 1 and suspicion_confirmations >= 0")
        if self.push_pull_ticks < 1 or self.dead_retain_ticks < 1:
            raise ValueError("push_pull_ticks and dead_retain_ticks must be >= 1")
        need = codec.packet_overhead(self.cluster_id, self.key) + codec.max_record_size()
        if self.max_packet_bytes < need:
            raise ValueError(f"max_packet_bytes must be at least {need}")

    def wire_metadata(self) -> Metadata:
        """Return the metadata in wire form (ValueError when over the bounds)."""
        return codec.metadata_from(self.metadata)


@dataclass(frozen=True, slots=True)
class Member:
    """What this node knows of one member (itself included).

    ``since`` is this node's tick count when ``state`` last changed (or when
    the member was first heard of).
    """

    node_id: NodeId
    address: Address
    state: MemberState
    incarnation: int
    metadata: Mapping[str, str] = field(hash=False)
    since: int

    @property
    def peer_address(self) -> str | None:
        """Return the advertised Raft peer address ("host:port"), if any."""
        return self.metadata.get("peer")


MemberListener = Callable[[Member], object]


class _Node:
    """The mutable record kept for each member."""

    __slots__ = (
        "address",
        "deadline",
        "incarnation",
        "metadata",
        "node_id",
        "since",
        "state",
        "suspect_start",
        "suspecters",
    )

    def __init__(self, rec: Record, now: int) -> None:
        self.node_id = rec.node_id
        self.address = rec.address
        self.state = rec.state
        self.incarnation = rec.incarnation
        self.metadata = rec.metadata
        self.since = now
        self.deadline = 0  # suspicion timeout tick, when SUSPECT
        self.suspect_start = 0
        self.suspecters: list[NodeId] = []  # independent suspicions, the first one first

    def record(self) -> Record:
        first = self.suspecters[0] if self.state is MemberState.SUSPECT else NO_NODE
        return Record(
            self.node_id, self.incarnation, self.state, self.address, self.metadata, first
        )

    def view(self) -> Member:
        return Member(
            self.node_id,
            self.address,
            self.state,
            self.incarnation,
            dict(self.metadata),
            self.since,
        )


class _Broadcast:
    __slots__ = ("order", "record", "transmits")

    def __init__(self, record: Record, order: int) -> None:
        self.record = record
        self.transmits = 0
        self.order = order


class _Probe:
    __slots__ = ("acked", "indirect", "seq", "target")

    def __init__(self, target: NodeId, seq: int) -> None:
        self.target = target
        self.seq = seq
        self.acked = False
        self.indirect = False


COUNTERS = (
    "packets_received",
    "packets_sent",
    "bytes_sent",
    "dropped_malformed",
    "dropped_foreign_cluster",
    "dropped_bad_auth",
    "dropped_misdirected",
    "dropped_own_id",
    "probes",
    "probe_timeouts",
    "indirect_probes_sent",
    "relayed_pings",
    "suspicions",
    "refutations",
    "deaths",
    "conflicts",
    "refused_left_claims",
    "refused_incarnation_jumps",
    "joins_sent",
    "syncs_sent",
    "listener_errors",
)


def ahead(a: int, b: int) -> int:
    """Return how far incarnation ``a`` is ahead of ``b`` (serial arithmetic, RFC 1982).

    Positive (1 .. 2^31 - 1) when ``a`` is newer, 0 when equal, negative when
    ``a`` is older (a distance of exactly 2^31 counts as older both ways).
    """
    d = (a - b) % _SERIAL
    return d if d < _HALF else d - _SERIAL


def next_incarnation(incarnation: int) -> int:
    """Return the incarnation after ``incarnation`` (it wraps: there is no last one)."""
    return (incarnation + 1) % _SERIAL


def _newer(rec: Record, node: _Node) -> bool:
    """Return True if ``rec`` overrides ``node``: a newer incarnation, or a later state in it."""
    d = ahead(rec.incarnation, node.incarnation)
    return d > 0 or (d == 0 and rec.state > node.state)


@implementer(IMembership)
class GossipCore:
    """One member's view of the cluster, and the SWIM protocol that keeps it fresh."""

    def __init__(
        self,
        config: GossipConfig,
        rng: random.Random,
        logger: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.node_id = config.node_id
        self._rng = rng
        self._log = logger or (lambda line: None)
        self._now = 0
        self._members: dict[NodeId, _Node] = {}
        self._me = _Node(
            Record(config.node_id, 0, MemberState.ALIVE, config.address, config.wire_metadata()),
            0,
        )
        self._members[self.node_id] = self._me
        self._tombstones: dict[NodeId, int] = {}
        self._broadcasts: dict[NodeId, _Broadcast] = {}
        self._broadcast_order = 0
        self._outbox: list[tuple[Address, bytes]] = []
        self._events: list[Member] = []
        self._listeners: list[MemberListener] = []
        self._dispatching = False
        self._seq = rng.randrange(codec.MAX_SEQ)
        self._probe_list: list[NodeId] = []
        self._probe_pos = 0
        self._probe: _Probe | None = None
        # desynchronize members that start together
        self._period_elapsed = rng.randrange(config.probe_period_ticks)
        self._push_pull_elapsed = rng.randrange(config.push_pull_ticks)
        self._relays: dict[int, tuple[Address, int, int]] = {}  # my seq -> (requester, seq, expiry)
        self._seeds: list[Address] = []
        self._joined = False
        self._left = False
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # ---------------------------------------------------------- public view

    @property
    def now(self) -> int:
        """Return the number of ticks so far."""
        return self._now

    @property
    def incarnation(self) -> int:
        """Return this node's own incarnation number."""
        return self._me.incarnation

    @property
    def joined(self) -> bool:
        """Return True once some member answered a JOIN (or sent a full state)."""
        return self._joined

    def members(self) -> dict[NodeId, Member]:
        """Return a snapshot of every known member, this node included."""
        return {nid: node.view() for nid, node in self._members.items()}

    def subscribe(self, listener: MemberListener) -> None:
        """Call ``listener(member)`` after each change of a member's state, address or metadata.

        Listeners run at the end of the input (tick, receive, join...) that
        caused the change, once the core is consistent; a listener that raises
        is counted in ``listener_errors`` and logged, and changes nothing.
        """
        self._listeners.append(listener)

    def unsubscribe(self, listener: MemberListener) -> None:
        """Stop calling ``listener``; do nothing if it was not subscribed."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def take_outbox(self) -> list[tuple[Address, bytes]]:
        """Return and forget the datagrams to send, in order: (address, bytes)."""
        out, self._outbox = self._outbox, []
        return out

    def pending_broadcasts(self) -> int:
        """Return how many updates still wait to be piggybacked."""
        return len(self._broadcasts)

    # ---------------------------------------------------------- inputs

    def tick(self) -> None:
        """Advance time by one tick: probe, time out suspicions, push-pull, reap."""
        self._now += 1
        cfg = self.config
        self._expire_suspicions()
        for seq in [s for s, (_, _, expiry) in self._relays.items() if expiry <= self._now]:
            del self._relays[seq]
        if not self._left:
            self._period_elapsed += 1
            if self._period_elapsed == cfg.ack_timeout_ticks:
                self._probe_indirectly()
            if self._period_elapsed >= cfg.probe_period_ticks:
                self._period_elapsed = 0
                self._end_probe()
                if self._seeds and not self._joined:
                    self._send_joins()
                self._start_probe()
            self._push_pull_elapsed += 1
            if self._push_pull_elapsed >= cfg.push_pull_ticks:
                self._push_pull_elapsed = 0
                self._push_pull()
        self._reap()
        self._dispatch()

    def receive(self, src: Address, data: bytes) -> None:
        """Handle a datagram from ``src``; drop and count anything bad. Never raises."""
        self.counters["packets_received"] += 1
        try:
            packet = codec.decode(data, self.config.cluster_id, self.config.key)
        except codec.ForeignCluster:
            self.counters["dropped_foreign_cluster"] += 1
            return
        except codec.BadAuthentication:
            self.counters["dropped_bad_auth"] += 1
            return
        except codec.PacketError:
            self.counters["dropped_malformed"] += 1
            return
        if packet.sender == self.node_id:
            self.counters["dropped_own_id"] += 1  # we joined ourselves, or a twin has our id
            return
        try:
            self._handle(src, packet)
        finally:
            self._dispatch()

    def join(self, seeds: Iterable[Address]) -> None:
        """Join through ``seeds`` (gossip addresses of any live members).

        JOIN is resent every protocol period until one answers with its state.
        """
        for seed in seeds:
            address = (str(seed[0]), int(seed[1]))
            if address not in self._seeds:
                self._seeds.append(address)
        self._joined = False
        self._queue_broadcast(self._me.record())  # our pings spread our arrival too
        self._send_joins()
        self._dispatch()

    def leave(self) -> None:
        """Announce a graceful departure (state LEFT) to a few live members; stop probing."""
        if self._left:
            return
        self._left = True
        me = self._me
        me.incarnation = next_incarnation(me.incarnation)
        self._set_state(me, MemberState.LEFT)
        rec = me.record()
        self._queue_broadcast(rec)
        # only a member's own word counts for LEFT, so others cannot relay it: tell everyone
        for nid in sorted(self._live_others()):
            self._send_sync(self._members[nid].address, [rec], reply_wanted=False)
        self._dispatch()

    def set_address(self, address: Address) -> None:
        """Advertise a new gossip address (e.g. the port bound for port 0); gossip it."""
        address = (str(address[0]), int(address[1]))
        codec.validate_record(Record(self.node_id, 0, MemberState.ALIVE, address))
        me = self._me
        if address == me.address:
            return
        me.address = address
        me.incarnation = next_incarnation(me.incarnation)
        self._queue_broadcast(me.record())
        self._events.append(me.view())
        self._dispatch()

    def set_metadata(self, metadata: Mapping[str, str]) -> None:
        """Advertise new metadata (e.g. a port bound late): bump the incarnation and gossip it."""
        wire = codec.metadata_from(metadata)
        me = self._me
        if wire == me.metadata:
            return
        me.metadata = wire
        me.incarnation = next_incarnation(me.incarnation)
        self._queue_broadcast(me.record())
        self._events.append(me.view())
        self._dispatch()

    # ---------------------------------------------------------- probing

    def _live_others(self) -> list[NodeId]:
        return [
            nid
            for nid, n in self._members.items()
            if nid != self.node_id and n.state is MemberState.ALIVE
        ]

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % (codec.MAX_SEQ + 1)
        return self._seq

    def _start_probe(self) -> None:
        target = self._next_probe_target()
        if target is None:
            self._probe = None
            return
        node = self._members[target]
        probe = _Probe(target, self._next_seq())
        self._probe = probe
        self.counters["probes"] += 1
        # the buddy system (Lifeguard): a suspect hears of it from whoever probes it
        first = node.record() if node.state is MemberState.SUSPECT else None
        self._send_gossip(
            node.address, Packet(PacketKind.PING, self.node_id, probe.seq, target), first
        )

    def _next_probe_target(self) -> NodeId | None:
        """Return the next member in the shuffled round-robin list (SWIM §4.3)."""
        for _ in range(2):
            while self._probe_pos < len(self._probe_list):
                nid = self._probe_list[self._probe_pos]
                self._probe_pos += 1
                node = self._members.get(nid)
                if node is not None and node.state in (MemberState.ALIVE, MemberState.SUSPECT):
                    return nid
            self._probe_list = [
                nid
                for nid, n in self._members.items()
                if nid != self.node_id and n.state in (MemberState.ALIVE, MemberState.SUSPECT)
            ]
            self._probe_list.sort()
            self._rng.shuffle(self._probe_list)
            self._probe_pos = 0
        return None

    def _probe_indirectly(self) -> None:
        probe = self._probe
        if probe is None or probe.acked or probe.indirect:
            return
        target = self._members.get(probe.target)
        if target is None:
            return
        probe.indirect = True
        helpers = [nid for nid in self._live_others() if nid != probe.target]
        helpers.sort()
        count = min(self.config.indirect_probes, len(helpers))
        for nid in self._rng.sample(helpers, count):
            self.counters["indirect_probes_sent"] += 1
            req = Packet(
                PacketKind.PING_REQ,
                self.node_id,
                probe.seq,
                probe.target,
                target_address=target.address,
            )
            self._send_gossip(self._members[nid].address, req)

    def _end_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None or probe.acked:
            return
        self.counters["probe_timeouts"] += 1
        node = self._members.get(probe.target)
        if node is None or node.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            return
        self._log(f"no ack from {probe.target}: suspect")
        # a new suspicion, or our independent confirmation of someone else's
        self._apply(
            Record(
                node.node_id,
                node.incarnation,
                MemberState.SUSPECT,
                node.address,
                node.metadata,
                self.node_id,
            )
        )

    def _suspicion_timeout(self, confirmations: int) -> int:
        """Return the suspicion timeout in ticks after ``confirmations`` extra suspicions.

        From ``suspicion_max_mult`` times the minimum down to the minimum,
        ``suspicion_mult * max(1, log10(N)) * probe_period_ticks``, once
        ``suspicion_confirmations`` independent members also suspect (Lifeguard).
        """
        cfg = self.config
        n = sum(1 for m in self._members.values() if m.state < MemberState.DEAD)
        scale = max(1.0, math.log10(max(1, n)))
        low = math.ceil(cfg.suspicion_mult * scale * cfg.probe_period_ticks)
        high = math.ceil(low * cfg.suspicion_max_mult)
        k = min(cfg.suspicion_confirmations, n - 2)
        if k < 1 or confirmations >= k:
            return low
        frac = math.log(confirmations + 1) / math.log(k + 1)
        return max(low, math.floor(high - (high - low) * frac))

    def _start_suspicion(self, node: _Node, suspecter: NodeId) -> None:
        node.suspect_start = self._now
        node.suspecters = [suspecter]
        node.deadline = self._now + self._suspicion_timeout(0)

    def _confirm_suspicion(self, node: _Node, rec: Record) -> None:
        """Count an independent suspicion of a SUSPECT member; shorten its timeout."""
        if rec.suspecter in node.suspecters:
            return
        node.suspecters.append(rec.suspecter)
        timeout = self._suspicion_timeout(len(node.suspecters) - 1)
        node.deadline = min(node.deadline, node.suspect_start + timeout)
        self._queue_broadcast(rec)

    def _expire_suspicions(self) -> None:
        for node in list(self._members.values()):
            if node.state is MemberState.SUSPECT and node.deadline <= self._now:
                self._log(f"suspicion of {node.node_id} timed out: dead")
                self.counters["deaths"] += 1
                self._set_state(node, MemberState.DEAD)
                self._queue_broadcast(node.record())

    def _reap(self) -> None:
        limit = self.config.dead_retain_ticks
        for nid in [
            nid
            for nid, n in self._members.items()
            if nid != self.node_id and n.state >= MemberState.DEAD and self._now - n.since >= limit
        ]:
            self._tombstones[nid] = self._members.pop(nid).incarnation
            self._broadcasts.pop(nid, None)

    # ---------------------------------------------------------- push-pull

    def _send_joins(self) -> None:
        rec = self._me.record()
        for seed in self._seeds:
            self.counters["joins_sent"] += 1
            self._send(seed, Packet(PacketKind.JOIN, self.node_id, records=(rec,)))

    def _push_pull(self) -> None:
        alive = sorted(self._live_others())
        if alive:
            self._send_state(self._members[self._rng.choice(alive)].address, reply_wanted=True)
        dead = sorted(
            nid
            for nid, n in self._members.items()
            if nid != self.node_id and n.state is MemberState.DEAD
        )
        if dead:  # reconnect: a dead verdict may be wrong, or a partition may have healed
            self._send_state(self._members[self._rng.choice(dead)].address, reply_wanted=True)

    def _send_state(self, address: Address, reply_wanted: bool) -> None:
        records = [self._me.record()]
        records += [n.record() for nid, n in sorted(self._members.items()) if nid != self.node_id]
        self._send_sync(address, records, reply_wanted)

    def _send_sync(self, address: Address, records: list[Record], reply_wanted: bool) -> None:
        cfg = self.config
        empty = Packet(PacketKind.SYNC, self.node_id, reply_wanted=reply_wanted)
        budget = cfg.max_packet_bytes - codec.encoded_size(empty, cfg.cluster_id, cfg.key)
        for i, group in enumerate(codec.chunk_records(records, budget)):
            # only the first chunk asks for an answer: one full state in reply
            packet = Packet(
                PacketKind.SYNC,
                self.node_id,
                reply_wanted=reply_wanted and i == 0,
                records=tuple(group),
            )
            self.counters["syncs_sent"] += 1
            self._send(address, packet)

    # ---------------------------------------------------------- receiving

    def _handle(self, src: Address, packet: Packet) -> None:
        kind = packet.kind
        sender = packet.sender
        if kind is PacketKind.JOIN:
            for rec in packet.records:
                self._apply(rec, sender)
            self._send_state(src, reply_wanted=False)
            self._tell_buried(src, sender)
            return
        if kind is PacketKind.SYNC:
            for rec in packet.records:
                self._apply(rec, sender)
            self._joined = True
            if packet.reply_wanted:
                self._send_state(src, reply_wanted=False)
            return
        for rec in packet.records:
            self._apply(rec, sender)
        if kind is PacketKind.PING and packet.target != self.node_id:
            self.counters["dropped_misdirected"] += 1
            return
        if kind in (PacketKind.PING, PacketKind.PING_REQ):
            self._greet(src, packet.sender)
        if kind is PacketKind.PING:
            self._send_gossip(src, Packet(PacketKind.ACK, self.node_id, packet.seq))
        elif kind is PacketKind.ACK:
            self._handle_ack(packet.seq)
        elif kind is PacketKind.PING_REQ:
            if packet.target == self.node_id:
                self._send_gossip(src, Packet(PacketKind.ACK, self.node_id, packet.seq))
                return
            seq = self._next_seq()
            self._relays[seq] = (src, packet.seq, self._now + self.config.probe_period_ticks)
            self.counters["relayed_pings"] += 1
            self._send_gossip(
                packet.target_address, Packet(PacketKind.PING, self.node_id, seq, packet.target)
            )

    def _greet(self, src: Address, sender: NodeId) -> None:
        """Swap records with a prober we do not know, or believe dead.

        Its own record may have stopped being gossiped before it reached us;
        and if it is alive after all, our DEAD record makes it refute. One
        small datagram, sent to the true source only: no amplification.
        """
        node = self._members.get(sender)
        if node is not None and node.state is not MemberState.DEAD:
            return
        records = [self._me.record()]
        if node is not None:
            records.append(node.record())
        elif sender in self._tombstones:
            records.append(self._buried_record(sender, src))
        self._send_sync(src, records, reply_wanted=True)

    def _buried_record(self, nid: NodeId, src: Address) -> Record:
        """Return "``nid`` is DEAD" at its tombstone's incarnation (to make it refute)."""
        return Record(nid, self._tombstones[nid], MemberState.DEAD, src)

    def _tell_buried(self, src: Address, sender: NodeId) -> None:
        """Tell a joiner we forgot, and whose record our tombstone refused, to refute it.

        A member restarted with no memory starts at incarnation 0; once we have
        reaped it, no full state carries its old incarnation back to it, so
        without this it could never be heard again.
        """
        if sender not in self._members and sender in self._tombstones:
            self._send_sync(src, [self._buried_record(sender, src)], reply_wanted=False)

    def _handle_ack(self, seq: int) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            probe.acked = True
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            requester, their_seq, _ = relay
            self._send_gossip(requester, Packet(PacketKind.ACK, self.node_id, their_seq))

    def _refused(self, rec: Record, sender: NodeId | None, known: int | None) -> bool:
        """Return True (and count it) if ``rec`` from ``sender`` must not be believed.

        ``sender`` is None for this node's own verdicts; ``known`` is the
        incarnation we hold for the record's member (None: never heard of).
        """
        if sender is None or sender == rec.node_id:
            return False  # our own verdict, or a member speaking for itself
        if rec.state is MemberState.LEFT:
            self.counters["refused_left_claims"] += 1
            self._log(f"{sender} claims {rec.node_id} left: only {rec.node_id} can say so")
            return True
        if known is not None and ahead(rec.incarnation, known) > MAX_INCARNATION_JUMP:
            self.counters["refused_incarnation_jumps"] += 1
            self._log(f"{sender} relays {rec.node_id} at incarnation {rec.incarnation}: too far")
            return True
        return False

    def _apply(self, rec: Record, sender: NodeId | None = None) -> None:
        """Merge one gossiped record; re-gossip it when it was news (SWIM §4.2).

        ``sender`` is the member whose datagram carried it (None: this node's
        own verdict); see :meth:`_refused`.
        """
        if rec.node_id == self.node_id:
            self._apply_about_me(rec)
            return
        node = self._members.get(rec.node_id)
        buried = self._tombstones.get(rec.node_id) if node is None else None
        if self._refused(rec, sender, node.incarnation if node is not None else buried):
            return
        if node is None:
            if buried is not None:
                d = ahead(rec.incarnation, buried)
                if d < 0 or (d == 0 and rec.state >= MemberState.DEAD):
                    return
            self._tombstones.pop(rec.node_id, None)
            node = _Node(rec, self._now)
            self._members[rec.node_id] = node
            if rec.state is MemberState.SUSPECT:
                self._start_suspicion(node, rec.suspecter)
            self._events.append(node.view())
            self._queue_broadcast(rec)
            if rec.state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._insert_probe_target(rec.node_id)
            return
        if (
            rec.state is MemberState.SUSPECT
            and node.state is MemberState.SUSPECT
            and rec.incarnation == node.incarnation
        ):
            self._confirm_suspicion(node, rec)
            return
        if not _newer(rec, node):
            if (
                rec.incarnation == node.incarnation
                and rec.state is node.state
                and (rec.address != node.address or rec.metadata != node.metadata)
            ):
                self.counters["conflicts"] += 1
            return
        moved = rec.address != node.address or rec.metadata != node.metadata
        was_probed = node.state in (MemberState.ALIVE, MemberState.SUSPECT)
        node.incarnation = rec.incarnation
        node.address = rec.address
        node.metadata = rec.metadata
        if rec.state is MemberState.SUSPECT:
            self._start_suspicion(node, rec.suspecter)
        if rec.state is not node.state:
            self._set_state(node, rec.state)
            if not was_probed and rec.state in (MemberState.ALIVE, MemberState.SUSPECT):
                self._insert_probe_target(rec.node_id)
        elif moved:
            self._events.append(node.view())
        self._queue_broadcast(node.record())

    def _apply_about_me(self, rec: Record) -> None:
        me = self._me
        if self._left:
            return
        d = ahead(rec.incarnation, me.incarnation)
        if rec.state is MemberState.ALIVE:
            if d < 0:
                return
            if d == 0 and (rec.address == me.address and rec.metadata == me.metadata):
                return
            # a record of an older life of mine, or a twin with my id
            self.counters["conflicts"] += 1
        elif d < 0:
            return
        self.counters["refutations"] += 1
        self._log(f"refuting {rec.state.name} at incarnation {rec.incarnation}")
        # serial numbers wrap: even a forged 2^32 - 1 is answered (with 0)
        me.incarnation = next_incarnation(rec.incarnation)
        self._queue_broadcast(me.record())

    def _insert_probe_target(self, nid: NodeId) -> None:
        """Put a new member at a random place among those not yet probed this round."""
        pos = self._rng.randint(self._probe_pos, len(self._probe_list))
        self._probe_list.insert(pos, nid)

    def _set_state(self, node: _Node, state: MemberState) -> None:
        if state is MemberState.SUSPECT:
            self.counters["suspicions"] += 1
        node.state = state
        node.since = self._now
        self._events.append(node.view())

    # ---------------------------------------------------------- sending

    def _retransmit_limit(self) -> int:
        n = sum(1 for m in self._members.values() if m.state < MemberState.DEAD)
        return self.config.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def _queue_broadcast(self, rec: Record) -> None:
        self._broadcast_order += 1
        self._broadcasts[rec.node_id] = _Broadcast(rec, self._broadcast_order)

    def _send_gossip(self, address: Address, packet: Packet, first: Record | None = None) -> None:
        """Send ``packet`` with as many pending updates as fit (fewest sent, newest first)."""
        cfg = self.config
        budget = cfg.max_packet_bytes - codec.encoded_size(packet, cfg.cluster_id, cfg.key)
        records: list[Record] = []
        if first is not None:
            records.append(first)
            budget -= codec.record_size(first)
        limit = self._retransmit_limit()
        queue = sorted(self._broadcasts.values(), key=lambda b: (b.transmits, -b.order))
        for b in queue:
            if len(records) >= codec.MAX_RECORDS:
                break
            if first is not None and b.record.node_id == first.node_id:
                continue
            size = codec.record_size(b.record)
            if size > budget:
                continue
            budget -= size
            records.append(b.record)
            b.transmits += 1
            if b.transmits >= limit:
                del self._broadcasts[b.record.node_id]
        self._send(
            address,
            Packet(
                packet.kind,
                packet.sender,
                packet.seq,
                packet.target,
                packet.target_address,
                packet.reply_wanted,
                tuple(records),
            ),
        )

    def _send(self, address: Address, packet: Packet) -> None:
        data = codec.encode(packet, self.config.cluster_id, self.config.key)
        self.counters["packets_sent"] += 1
        self.counters["bytes_sent"] += len(data)
        self._outbox.append((address, data))

    # ---------------------------------------------------------- events

    def _dispatch(self) -> None:
        if self._dispatching:
            return  # a listener fed us input; the outer loop delivers the rest
        self._dispatching = True
        try:
            while self._events:
                event = self._events.pop(0)
                for listener in list(self._listeners):
                    try:
                        listener(event)
                    except Exception as exc:
                        self.counters["listener_errors"] += 1
                        self._log(f"membership listener failed: {exc!r}")
        finally:
            self._dispatching = False
