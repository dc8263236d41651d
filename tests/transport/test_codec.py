"""Tests for the binary message codec and the LargeBytes AMP argument."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peer_strategies import MESSAGES, any_message
from twisted.protocols import amp

from leeky_twisted.core.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    Configuration,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from leeky_twisted.transport.codec import TAGS, CodecError, LargeBytes, decode, encode, put_large
from leeky_twisted.transport.notices import RemovedNotice


def test_every_core_message_type_has_a_tag_and_a_strategy():
    """The codec and these tests cover every type in MESSAGE_TYPES (and the one notice)."""
    assert set(TAGS) == set(MESSAGE_TYPES) | {RemovedNotice}
    assert set(MESSAGE_TYPES) == set(MESSAGES)
    assert len(set(TAGS.values())) == len(TAGS)


@settings(max_examples=400)
@given(message=any_message)
def test_round_trip_preserves_every_message_type(message):
    """decode(encode(m)) == m for every message type and field value."""
    encoded = encode(message)
    assert encoded[0] == TAGS[type(message)]
    decoded = decode(encoded)
    assert decoded == message
    assert type(decoded) is type(message)


_A, _B = NodeId("node-a"), NodeId("nœud-b")
EXAMPLES = [
    RequestVote(_A, _B, 7, 100, 6, pre_vote=True, transfer=True),
    RequestVoteResponse(_A, _B, 7, granted=True, pre_vote=True),
    AppendEntries(_A, _B, 7, 99, 6, (Entry(100, 7, EntryKind.NOOP), Entry(101, 7, data=b"x")), 98),
    AppendEntriesResponse(_A, _B, 7, False, 0, 99, 5, 80),
    Heartbeat(_A, _B, 7, 98, 4),
    HeartbeatResponse(_A, _B, 7, 4, 101),
    InstallSnapshot(
        _A, _B, 7, SnapshotMeta(90, 6, Configuration(frozenset({_A, _B}), frozenset({NodeId("c")})))
    ),
    TimeoutNow(_A, _B, 7),
    ReadIndexRequest(_A, _B, 7, 2**62 + 5),
    ReadIndexResponse(_A, _B, 7, 2**62 + 5, 98),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_of_one_example_per_type(message):
    """Each message type has a hand-written example that round-trips."""
    assert decode(encode(message)) == message


def test_examples_cover_every_message_type():
    """EXAMPLES holds one message of each core type."""
    assert [type(m) for m in EXAMPLES] == list(MESSAGE_TYPES)


@given(message=any_message)
def test_decode_accepts_bytearray_and_memoryview(message):
    """Decoding works on any bytes-like input."""
    encoded = encode(message)
    assert decode(bytearray(encoded)) == message
    assert decode(memoryview(encoded)) == message


def test_entry_kinds_decode_to_the_enum():
    """Entry kinds come back as EntryKind members, data as bytes."""
    m = AppendEntries(
        NodeId("a"), NodeId("b"), 1, 0, 0, (Entry(1, 1, EntryKind.CONFIG, bytearray(b"x")),), 0
    )
    (entry,) = decode(encode(m)).entries
    assert entry.kind is EntryKind.CONFIG
    assert type(entry.data) is bytes


def test_large_append_entries_round_trips():
    """A batch of 200 entries of 1 KiB (over 64 KiB encoded) round-trips in order."""
    batch = tuple(Entry(10 + i, 3, EntryKind.NORMAL, bytes([i % 256]) * 1024) for i in range(200))
    m = AppendEntries(NodeId("n1"), NodeId("n2"), 3, 9, 2, batch, 150)
    encoded = encode(m)
    assert len(encoded) > 200 * 1024
    assert decode(encoded) == m


def test_configuration_encoding_is_canonical():
    """Equal configurations encode identically whatever their set order."""
    ids = [NodeId(f"n{i}") for i in range(20)]
    a = Configuration(frozenset(ids), frozenset())
    b = Configuration(frozenset(reversed(ids)), frozenset())
    meta_a, meta_b = SnapshotMeta(5, 2, a), SnapshotMeta(5, 2, b)
    sender, recipient = NodeId("x"), NodeId("y")
    assert encode(InstallSnapshot(sender, recipient, 1, meta_a)) == encode(
        InstallSnapshot(sender, recipient, 1, meta_b)
    )


# ------------------------------------------------------------------ malformed


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_decoding_random_bytes_only_raises_codec_error(data):
    """Random input either decodes to a message or raises CodecError, never anything else."""
    try:
        message = decode(data)
    except CodecError:
        return
    assert type(message) in TAGS


@settings(max_examples=300)
@given(message=any_message, data=st.data())
def test_decoding_corrupted_encodings_only_raises_codec_error(message, data):
    """Flipped bytes in a valid encoding give a message or CodecError, never another error."""
    encoded = bytearray(encode(message))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(CodecError):
        decode(bytes(encoded))


@settings(max_examples=100)
@given(message=any_message)
def test_every_truncation_raises_codec_error(message):
    """Every proper prefix of an encoding is rejected with CodecError."""
    encoded = encode(message)
    for cut in range(len(encoded)):
        with pytest.raises(CodecError):
            decode(encoded[:cut])


@given(message=any_message, garbage=st.binary(min_size=1, max_size=8))
def test_trailing_garbage_raises_codec_error(message, garbage):
    """Bytes after a complete message are rejected."""
    with pytest.raises(CodecError, match="trailing"):
        decode(encode(message) + garbage)


def _heartbeat() -> bytes:
    return encode(Heartbeat(NodeId("a"), NodeId("b"), 1, 2, 3))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (b"\x00\x00\x00\x00\x00", "unknown message tag 0"),
        (b"\x63" + _heartbeat()[1:], "unknown message tag 99"),
        (b"\x05\x00\x02\x00\x01\xff\xfeb" + b"\x00" * 24, "not UTF-8"),
        (b"\x05\xff\xff\x00\x00abc", "truncated node ids"),
        (
            encode(RequestVote(NodeId("a"), NodeId("b"), 1, 1, 1))[:-1] + b"\x04",
            "unknown flag bits",
        ),
        (encode(AppendEntriesResponse(NodeId("a"), NodeId("b"), 1, True))[:15] + b"\x02", None),
        ("not bytes", "expected bytes"),
        (12, "expected bytes"),
    ],
)
def test_specific_malformed_inputs_raise_codec_error(data, match):
    """Known malformations each raise CodecError with a clear message."""
    with pytest.raises(CodecError, match=match):
        decode(data)


def test_unknown_entry_kind_raises_codec_error():
    """An entry kind outside EntryKind is rejected."""
    good = encode(AppendEntries(NodeId("a"), NodeId("b"), 1, 0, 0, (Entry(1, 1),), 0))
    kind_offset = 5 + 2 + struct.calcsize("!QQQQQI") + 16
    bad = good[:kind_offset] + b"\x07" + good[kind_offset + 1 :]
    with pytest.raises(CodecError, match="unknown kind 7"):
        decode(bad)


def test_absurd_entry_count_is_rejected_before_looping():
    """A header claiming billions of entries fails fast."""
    header = struct.pack("!BHH", TAGS[AppendEntries], 1, 1) + b"ab"
    body = struct.pack("!QQQQQI", 1, 0, 0, 0, 0, 2**32 - 1)
    with pytest.raises(CodecError, match="claims 4294967295 entries"):
        decode(header + body)


def test_duplicate_voters_are_rejected():
    """Voter ids must be sorted and unique (the canonical form)."""
    header = struct.pack("!BHH", TAGS[InstallSnapshot], 1, 1) + b"ab"
    body = struct.pack("!QQQHH", 1, 5, 1, 2, 0) + b"\x00\x01x" * 2
    with pytest.raises(CodecError, match="sorted and unique"):
        decode(header + body)


@pytest.mark.parametrize(
    "message",
    [
        Heartbeat(NodeId("a"), NodeId("b"), -1, 0),
        Heartbeat(NodeId("a"), NodeId("b"), 2**64, 0),
        AppendEntries(NodeId("a"), NodeId("b"), 1, 0, 0, (Entry(1, 1, 9),), 0),  # type: ignore[arg-type]
        AppendEntries(NodeId("a"), NodeId("b"), 1, 0, 0, (Entry(1, 1, data="str"),), 0),  # type: ignore[arg-type]
        TimeoutNow(NodeId("\ud800"), NodeId("b"), 1),
        TimeoutNow(NodeId("x" * 70000), NodeId("b"), 1),
        "not a message",
    ],
)
def test_unencodable_values_raise_codec_error(message):
    """Out-of-range integers, bad kinds or ids, and non-messages raise CodecError."""
    with pytest.raises(CodecError):
        encode(message)


# ------------------------------------------------------------------ LargeBytes


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_000, 3 * 65535])
def test_large_bytes_splits_over_amp_values_and_joins_back(size):
    """Values of any size survive a trip through an AmpBox, each part within AMP's limit."""
    value = bytes(i % 251 for i in range(size))
    box = amp.AmpBox()
    LargeBytes().toBox(b"m", box, {"m": value}, None)
    assert all(len(v) <= amp.MAX_VALUE_LENGTH for v in box.values())
    wire = box.serialize()
    (parsed,) = amp._ParserHelper.parseString(wire)
    objects: dict = {}
    LargeBytes().fromBox(b"m", parsed, objects, None)
    assert objects["m"] == value


def test_put_large_uses_consecutive_keys():
    """A 150,000-byte value uses keys m, m.1 and m.2."""
    box: dict[bytes, bytes] = {}
    put_large(box, b"m", b"x" * 150_000)
    assert sorted(box) == [b"m", b"m.1", b"m.2"]
