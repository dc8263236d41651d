"""The gossip wire format: round trips, bounds, and rejection of bad datagrams."""

from __future__ import annotations

import contextlib
import random

import pytest

from leeky_twisted.core.messages import NodeId
from leeky_twisted.membership import codec
from leeky_twisted.membership.codec import (
    BadAuthentication,
    ForeignCluster,
    MalformedPacket,
    MemberState,
    Packet,
    PacketKind,
    Record,
)

KEY = b"shared secret"


def rec(i: int, state: MemberState = MemberState.ALIVE, meta: int = 3) -> Record:
    """Return a sample record."""
    metadata = codec.metadata_from({f"k{j}": f"value-{i}-{j}" for j in range(meta)})
    suspecter = NodeId("n0") if state is MemberState.SUSPECT else codec.NO_NODE
    return Record(NodeId(f"n{i}"), i * 7, state, (f"10.0.0.{i}", 7000 + i), metadata, suspecter)


SAMPLES = [
    Packet(PacketKind.PING, NodeId("a"), 5, NodeId("b"), records=(rec(1),)),
    Packet(PacketKind.ACK, NodeId("b"), 2**32 - 1),
    Packet(
        PacketKind.PING_REQ,
        NodeId("a"),
        9,
        NodeId("c"),
        target_address=("::1", 65535),
        records=(rec(2, MemberState.SUSPECT), rec(3, MemberState.DEAD)),
    ),
    Packet(PacketKind.JOIN, NodeId("joiner"), records=(rec(4),)),
    Packet(PacketKind.SYNC, NodeId("a"), reply_wanted=True, records=(rec(5, MemberState.LEFT),)),
    Packet(PacketKind.SYNC, NodeId("ä-ü"), records=()),
]


@pytest.mark.parametrize("packet", SAMPLES, ids=[p.kind.name for p in SAMPLES])
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "hmac"])
def test_packets_round_trip(packet: Packet, key: bytes | None) -> None:
    """Every kind of packet decodes to what was encoded, with or without a key."""
    data = codec.encode(packet, "prod", key)
    assert codec.decode(data, "prod", key) == packet
    assert codec.encoded_size(packet, "prod", key) == len(data)


def test_largest_record_fits_any_packet_under_1400_bytes() -> None:
    """The bounds guarantee that one maximal record fits the largest header."""
    assert codec.packet_overhead("x" * codec.MAX_ID_BYTES, KEY) + codec.max_record_size() <= 1400


def test_maximal_record_has_the_announced_size() -> None:
    """max_record_size() is the size of a record at every bound."""
    big = codec.metadata_from({"k": "v" * 255, "w": "x" * 250})
    r = Record(
        NodeId("n" * 64),
        codec.MAX_INCARNATION,
        MemberState.SUSPECT,
        ("h" * 253, 1),
        big,
        NodeId("s" * 64),
    )
    codec.validate_record(r)
    assert codec.record_size(r) == len(codec.encode_record(r)) == codec.max_record_size()


def test_metadata_over_the_bound_is_refused() -> None:
    """Metadata larger than MAX_METADATA_BYTES, or an overlong item, raises ValueError."""
    with pytest.raises(ValueError):
        codec.metadata_from({"k": "v" * 256})
    with pytest.raises(ValueError):
        codec.metadata_from({f"k{i}": "v" * 100 for i in range(5)})


@pytest.mark.parametrize(
    "bad",
    [
        Record(NodeId(""), 0, MemberState.ALIVE, ("h", 1)),
        Record(NodeId("x" * 65), 0, MemberState.ALIVE, ("h", 1)),
        Record(NodeId("a"), 0, MemberState.ALIVE, ("", 1)),
        Record(NodeId("a"), 0, MemberState.ALIVE, ("h", 70000)),
        Record(NodeId("a"), -1, MemberState.ALIVE, ("h", 1)),
        Record(NodeId("a"), 0, MemberState.SUSPECT, ("h", 1)),
    ],
)
def test_records_outside_the_bounds_are_refused(bad: Record) -> None:
    """validate_record rejects empty or long ids, bad ports and incarnations."""
    with pytest.raises(ValueError):
        codec.validate_record(bad)


def test_foreign_cluster_is_recognised() -> None:
    """A packet of another cluster raises ForeignCluster."""
    data = codec.encode(SAMPLES[0], "other")
    with pytest.raises(ForeignCluster):
        codec.decode(data, "prod")


def test_wrong_key_is_rejected() -> None:
    """A packet signed with another key raises BadAuthentication."""
    data = codec.encode(SAMPLES[0], "prod", b"wrong")
    with pytest.raises(BadAuthentication):
        codec.decode(data, "prod", KEY)


def test_unsigned_packet_is_rejected_when_a_key_is_set() -> None:
    """Without an HMAC, a keyed receiver refuses the packet."""
    with pytest.raises(BadAuthentication):
        codec.decode(codec.encode(SAMPLES[0], "prod"), "prod", KEY)


def test_signed_packet_is_rejected_without_a_key() -> None:
    """A receiver without a key refuses signed packets rather than trust them blindly."""
    with pytest.raises(BadAuthentication):
        codec.decode(codec.encode(SAMPLES[0], "prod", KEY), "prod")


def test_any_flipped_bit_of_a_signed_packet_is_refused() -> None:
    """Tampering anywhere in an authenticated packet makes it undecodable."""
    data = codec.encode(SAMPLES[2], "prod", KEY)
    for i in range(len(data)):
        for bit in (0, 7):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(codec.PacketError):
                codec.decode(bytes(damaged), "prod", KEY)


def test_every_truncation_is_malformed() -> None:
    """Every proper prefix of a packet is rejected as malformed."""
    data = codec.encode(SAMPLES[2], "prod")
    for n in range(len(data)):
        with pytest.raises(MalformedPacket):
            codec.decode(data[:n], "prod")


def test_trailing_bytes_are_malformed() -> None:
    """Extra bytes after the last record are refused."""
    with pytest.raises(MalformedPacket):
        codec.decode(codec.encode(SAMPLES[1], "prod") + b"\0", "prod")


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, ord("X")), (2, 9), (3, 0x80), (4, 0), (4, 99)],
    ids=["magic", "version", "flags", "kind-zero", "kind-unknown"],
)
def test_bad_header_fields_are_malformed(offset: int, value: int) -> None:
    """Wrong magic, version, flags or kind are refused."""
    data = bytearray(codec.encode(SAMPLES[1], "prod"))
    data[offset] = value
    with pytest.raises(MalformedPacket):
        codec.decode(bytes(data), "prod")


def test_unknown_member_state_is_malformed() -> None:
    """A record with a state byte outside the enum is refused."""
    packet = Packet(PacketKind.ACK, NodeId("a"), 1, records=(rec(1, meta=0),))
    data = bytearray(codec.encode(packet, "p"))
    state_at = len(data) - len(b"\x0810.0.0.1") - 2 - 1 - 1  # then host str8, port, count
    assert data[state_at] == 0
    data[state_at] = 7
    with pytest.raises(MalformedPacket):
        codec.decode(bytes(data), "p")


def test_invalid_utf8_is_malformed() -> None:
    """A sender id that is not UTF-8 is refused."""
    data = bytearray(codec.encode(Packet(PacketKind.ACK, NodeId("ab"), 1), "p"))
    data[data.index(b"ab")] = 0xFF
    with pytest.raises(MalformedPacket):
        codec.decode(bytes(data), "p")


def test_random_bytes_never_raise_anything_but_packet_errors() -> None:
    """Seeded random datagrams, raw or behind a valid header, only raise PacketError."""
    rng = random.Random(5)
    header = codec.encode(SAMPLES[0], "prod")[:12]
    for i in range(3000):
        junk = rng.randbytes(rng.randrange(0, 300))
        data = header + junk if i % 2 else junk
        with contextlib.suppress(codec.PacketError):
            codec.decode(data, "prod")


def test_chunks_stay_within_the_budget() -> None:
    """chunk_records splits records into groups that each fit the byte budget."""
    records = [rec(i, meta=6) for i in range(40)]
    groups = codec.chunk_records(records, 1000)
    assert [r for g in groups for r in g] == records
    assert all(sum(codec.record_size(r) for r in g) <= 1000 for g in groups)
    assert len(groups) > 1
