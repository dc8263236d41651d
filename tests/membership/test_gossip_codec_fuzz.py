"""Fuzz the gossip datagram decoder (issue 19): only PacketError escapes, every value is bounded.

Random datagrams and valid ones with bytes overwritten decode to packets within
the documented bounds (ids, hosts, metadata, incarnations, sequence numbers,
record counts) or raise PacketError; with a key, no altered packet is accepted.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from leeky_twisted.core.messages import NodeId
from leeky_twisted.membership import codec
from leeky_twisted.membership.codec import MemberState, Packet, PacketError, PacketKind, Record

CLUSTER = "prod"
KEY = b"shared secret"

ids = st.text(min_size=1, max_size=10).map(NodeId)
hosts = st.sampled_from(["10.0.0.1", "::1", "node-3.example"])
u32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 2**32 - 1]))


@st.composite
def records(draw: st.DrawFn) -> Record:
    """A record within every bound."""
    state = draw(st.sampled_from(MemberState))
    suspecter = draw(ids) if state is MemberState.SUSPECT else codec.NO_NODE
    metadata = codec.metadata_from(
        draw(st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3))
    )
    address = (draw(hosts), draw(st.integers(0, 0xFFFF)))
    return Record(draw(ids), draw(u32), state, address, metadata, suspecter)


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    """A packet of any kind whose fields that kind uses are drawn."""
    kind = draw(st.sampled_from(PacketKind))
    probe = kind in (PacketKind.PING, PacketKind.PING_REQ)
    return Packet(
        kind,
        draw(ids),
        draw(u32) if kind in (PacketKind.PING, PacketKind.ACK, PacketKind.PING_REQ) else 0,
        draw(ids) if probe else codec.NO_NODE,
        (draw(hosts), draw(st.integers(0, 0xFFFF))) if kind is PacketKind.PING_REQ else ("", 0),
        draw(st.booleans()) if kind is PacketKind.SYNC else False,
        tuple(draw(st.lists(records(), max_size=3))),
    )


def _check(data: bytes, key: bytes | None) -> Packet | None:
    """Decode ``data``: PacketError, or a packet every value of which is within bounds."""
    try:
        packet = codec.decode(data, CLUSTER, key)
    except PacketError:
        return None
    assert 0 < len(packet.sender.encode("utf-8")) <= codec.MAX_ID_BYTES
    assert 0 <= packet.seq <= codec.MAX_SEQ
    assert len(packet.records) <= codec.MAX_RECORDS
    assert 0 <= packet.target_address[1] <= 0xFFFF
    for record in packet.records:
        codec.validate_record(record)  # raises ValueError if out of bounds
    return packet


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200), key=st.sampled_from([None, KEY]))
def test_fuzz_random_datagrams(data: bytes, key: bytes | None) -> None:
    """Random datagrams never raise anything but PacketError."""
    _check(data, key)
    _check(b"LG\x01\x00" + data, None)  # past the magic, version and flags


@settings(max_examples=400, deadline=None)
@given(packet=packets(), data=st.data())
def test_fuzz_mutated_plain_datagrams(packet: Packet, data: st.DataObject) -> None:
    """Valid datagrams with bytes overwritten decode within bounds or raise PacketError."""
    encoded = bytearray(codec.encode(packet, CLUSTER))
    assert _check(bytes(encoded), None) == packet
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]))
    _check(bytes(encoded), None)


@settings(max_examples=300, deadline=None)
@given(packet=packets(), data=st.data())
def test_fuzz_no_altered_signed_datagram_is_accepted(packet: Packet, data: st.DataObject) -> None:
    """With a key, any changed byte, cut or extension of a signed datagram is refused."""
    signed = codec.encode(packet, CLUSTER, KEY)
    encoded = bytearray(signed)
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    tampered = [bytes(encoded), signed[: data.draw(st.integers(0, len(signed) - 1))]]
    tampered.append(signed + data.draw(st.binary(min_size=1, max_size=4)))
    for datagram in tampered:
        assert _check(datagram, KEY) is None
