"""The gossip wire format: compact, bounded binary packets, optionally authenticated.

Every packet is::

    magic "LG" | version u8 | flags u8 | kind u8 | cluster str8 | sender str8
    | body (by kind) | record count u8 | records... | [HMAC-SHA256, 32 bytes]

where ``str8`` is a length byte followed by UTF-8. Bodies: PING ``seq u32,
target str8``; ACK ``seq u32``; PING_REQ ``seq u32, target str8, host str8,
port u16``; JOIN nothing; SYNC ``flags u8`` (bit 0: reply wanted). A record is
``node str8, incarnation u32, state u8, [suspecter str8 when SUSPECT], host
str8, port u16, n u8, n x (key str8, value str8)``.

Flag bit 0 of the header says the packet ends in an HMAC over every byte before
it, keyed with the cluster's shared key. The lengths below bound every record,
so that any single record fits in any packet of ``MIN_PACKET_BYTES``.

Nothing here keeps state or does I/O.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NewType

from leeky_twisted.core.messages import NodeId

#: a gossip address: (host, port). Distinct from NodeId: ids are stable, addresses move.
Address = tuple[str, int]
#: a member's metadata on the wire: sorted (key, value) pairs
Metadata = NewType("Metadata", tuple[tuple[str, str], ...])

MAGIC = b"LG"
VERSION = 1
MAC_BYTES = 32
MAX_ID_BYTES = 64  #: node ids and the cluster id
MAX_HOST_BYTES = 253  #: a DNS name or an IP literal
MAX_META_ITEM_BYTES = 255  #: one metadata key or value
MAX_METADATA_BYTES = 512  #: all of a member's metadata, encoded
MAX_RECORDS = 255
MAX_SEQ = 2**32 - 1
MAX_INCARNATION = 2**32 - 1

NO_NODE = NodeId("")
NO_METADATA = Metadata(())

_FLAG_MAC = 0x01
_SYNC_REPLY = 0x01
_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_HEAD = struct.Struct("!2sBBB")


class MemberState(enum.IntEnum):
    """A member's gossip state. Within one incarnation a later state wins."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class PacketKind(enum.IntEnum):
    """What a packet asks for."""

    PING = 1  #: probe; the target answers ACK with the same seq
    ACK = 2
    PING_REQ = 3  #: probe ``target`` for me and forward its ACK (indirect probe)
    JOIN = 4  #: here is my record; answer with your full state (SYNC)
    SYNC = 5  #: part of a full state; answer with yours if ``reply_wanted``


class PacketError(ValueError):
    """A datagram that must be dropped; the subclass says why."""


class MalformedPacket(PacketError):
    """Not a gossip packet, or a damaged or truncated one."""


class ForeignCluster(PacketError):
    """A well-formed packet of another cluster."""


class BadAuthentication(PacketError):
    """A missing, unexpected or wrong HMAC."""


@dataclass(frozen=True, slots=True)
class Record:
    """What one member says about another (or itself): the unit of gossip."""

    node_id: NodeId
    incarnation: int
    state: MemberState
    address: Address
    metadata: Metadata = NO_METADATA
    #: who suspects, for SUSPECT records (Lifeguard counts independent suspicions)
    suspecter: NodeId = NO_NODE


@dataclass(frozen=True, slots=True)
class Packet:
    """One datagram's content. Fields a kind does not use keep their defaults."""

    kind: PacketKind
    sender: NodeId
    seq: int = 0
    target: NodeId = NO_NODE
    target_address: Address = ("", 0)
    reply_wanted: bool = False
    records: tuple[Record, ...] = ()


# ------------------------------------------------------------------ metadata


def metadata_from(mapping: Mapping[str, str]) -> Metadata:
    """Return ``mapping`` as sorted wire metadata; raise ValueError when over the bounds."""
    items = tuple(sorted((str(k), str(v)) for k, v in mapping.items()))
    size = 1
    for key, value in items:
        for text in (key, value):
            n = len(text.encode("utf-8"))
            if n > MAX_META_ITEM_BYTES:
                raise ValueError(f"metadata item longer than {MAX_META_ITEM_BYTES} bytes")
            size += 1 + n
    if size > MAX_METADATA_BYTES or len(items) > 255:
        raise ValueError(f"metadata larger than {MAX_METADATA_BYTES} bytes")
    return Metadata(items)


def validate_record(record: Record) -> None:
    """Raise ValueError unless ``record`` can be encoded within the bounds."""
    _check_text(record.node_id, MAX_ID_BYTES, "node id", allow_empty=False)
    if record.state is MemberState.SUSPECT:
        _check_text(record.suspecter, MAX_ID_BYTES, "suspecter", allow_empty=False)
    _check_text(record.address[0], MAX_HOST_BYTES, "host", allow_empty=False)
    if not 0 <= record.address[1] <= 0xFFFF:
        raise ValueError("port out of range")
    if not 0 <= record.incarnation <= MAX_INCARNATION:
        raise ValueError("incarnation out of range")
    metadata_from(dict(record.metadata))


def _check_text(text: str, limit: int, what: str, allow_empty: bool = True) -> None:
    n = len(text.encode("utf-8"))
    if n > limit:
        raise ValueError(f"{what} longer than {limit} bytes")
    if n == 0 and not allow_empty:
        raise ValueError(f"empty {what}")


# ------------------------------------------------------------------ encoding


def _str8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ValueError("string longer than 255 bytes")
    return _U8.pack(len(raw)) + raw


@functools.lru_cache(maxsize=1024)
def encode_record(record: Record) -> bytes:
    """Return the wire form of one record (cached: a record is resent many times)."""
    parts = [
        _str8(record.node_id),
        _U32.pack(record.incarnation),
        _U8.pack(int(record.state)),
    ]
    if record.state is MemberState.SUSPECT:
        parts.append(_str8(record.suspecter))
    parts += [
        _str8(record.address[0]),
        _U16.pack(record.address[1]),
        _U8.pack(len(record.metadata)),
    ]
    for key, value in record.metadata:
        parts.append(_str8(key))
        parts.append(_str8(value))
    return b"".join(parts)


def record_size(record: Record) -> int:
    """Return how many bytes ``record`` adds to a packet."""
    size = 1 + len(record.node_id.encode("utf-8")) + 4 + 1
    if record.state is MemberState.SUSPECT:
        size += 1 + len(record.suspecter.encode("utf-8"))
    size += 1 + len(record.address[0].encode("utf-8")) + 2 + 1
    for key, value in record.metadata:
        size += 2 + len(key.encode("utf-8")) + len(value.encode("utf-8"))
    return size


def encode(packet: Packet, cluster_id: str, key: bytes | None = None) -> bytes:
    """Return the datagram for ``packet``; authenticated when ``key`` is given.

    Raises ValueError for a packet outside the bounds (too many records, overlong
    strings, numbers out of range).
    """
    if len(packet.records) > MAX_RECORDS:
        raise ValueError(f"more than {MAX_RECORDS} records")
    flags = _FLAG_MAC if key is not None else 0
    parts = [
        _HEAD.pack(MAGIC, VERSION, flags, int(packet.kind)),
        _str8(cluster_id),
        _str8(packet.sender),
    ]
    kind = packet.kind
    if kind in (PacketKind.PING, PacketKind.ACK, PacketKind.PING_REQ):
        parts.append(_U32.pack(packet.seq))
    if kind in (PacketKind.PING, PacketKind.PING_REQ):
        parts.append(_str8(packet.target))
    if kind is PacketKind.PING_REQ:
        parts.append(_str8(packet.target_address[0]))
        parts.append(_U16.pack(packet.target_address[1]))
    if kind is PacketKind.SYNC:
        parts.append(_U8.pack(_SYNC_REPLY if packet.reply_wanted else 0))
    parts.append(_U8.pack(len(packet.records)))
    parts.extend(encode_record(r) for r in packet.records)
    data = b"".join(parts)
    if key is not None:
        data += hmac.new(key, data, hashlib.sha256).digest()
    return data


def encoded_size(packet: Packet, cluster_id: str, key: bytes | None = None) -> int:
    """Return ``len(encode(packet, cluster_id, key))`` without encoding."""
    size = _HEAD.size + 1 + len(cluster_id.encode("utf-8")) + 1 + len(packet.sender.encode("utf-8"))
    kind = packet.kind
    if kind in (PacketKind.PING, PacketKind.ACK, PacketKind.PING_REQ):
        size += 4
    if kind in (PacketKind.PING, PacketKind.PING_REQ):
        size += 1 + len(packet.target.encode("utf-8"))
    if kind is PacketKind.PING_REQ:
        size += 1 + len(packet.target_address[0].encode("utf-8")) + 2
    if kind is PacketKind.SYNC:
        size += 1
    size += 1 + sum(record_size(r) for r in packet.records)
    return size + (MAC_BYTES if key is not None else 0)


def packet_overhead(cluster_id: str, key: bytes | None = None) -> int:
    """Return the size of a PING_REQ with the longest target fields and no records.

    It is the largest record-less packet, so any packet with records of total
    size at most ``max_bytes - packet_overhead(...)`` fits in ``max_bytes``.
    """
    probe = Packet(
        PacketKind.PING_REQ,
        NodeId("x" * MAX_ID_BYTES),
        target=NodeId("x" * MAX_ID_BYTES),
        target_address=("x" * MAX_HOST_BYTES, 0),
    )
    return len(encode(probe, cluster_id, key))


def max_record_size() -> int:
    """Return the size of the largest record the bounds allow."""
    return 1 + MAX_ID_BYTES + 4 + 1 + 1 + MAX_ID_BYTES + 1 + MAX_HOST_BYTES + 2 + MAX_METADATA_BYTES


# ------------------------------------------------------------------ decoding


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedPacket("truncated packet")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def text(self, limit: int, allow_empty: bool = True) -> str:
        n = self.u8()
        if n > limit or (n == 0 and not allow_empty):
            raise MalformedPacket("string length out of bounds")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket("invalid UTF-8") from exc


def _read_record(r: _Reader) -> Record:
    node = r.text(MAX_ID_BYTES, allow_empty=False)
    incarnation = r.u32()
    try:
        state = MemberState(r.u8())
    except ValueError as exc:
        raise MalformedPacket("unknown member state") from exc
    suspecter = NO_NODE
    if state is MemberState.SUSPECT:
        suspecter = NodeId(r.text(MAX_ID_BYTES, allow_empty=False))
    host = r.text(MAX_HOST_BYTES, allow_empty=False)
    port = r.u16()
    count = r.u8()
    size = 1
    items = []
    for _ in range(count):
        key = r.text(MAX_META_ITEM_BYTES)
        value = r.text(MAX_META_ITEM_BYTES)
        size += 2 + len(key.encode("utf-8")) + len(value.encode("utf-8"))
        items.append((key, value))
    if size > MAX_METADATA_BYTES:
        raise MalformedPacket("metadata too large")
    return Record(NodeId(node), incarnation, state, (host, port), Metadata(tuple(items)), suspecter)


def decode(data: bytes, cluster_id: str, key: bytes | None = None) -> Packet:
    """Parse and check a datagram; return its Packet.

    Raises MalformedPacket, ForeignCluster or BadAuthentication (all
    PacketError, a ValueError), checked in that order: framing, cluster, HMAC,
    then the rest of the content. Never raises anything else.
    """
    try:
        return _decode(bytes(data), cluster_id, key)
    except PacketError:
        raise
    except Exception as exc:  # struct.error, IndexError...: all mean "damaged"
        raise MalformedPacket(f"undecodable packet: {exc!r}") from exc


def _decode(data: bytes, cluster_id: str, key: bytes | None) -> Packet:
    if len(data) < _HEAD.size:
        raise MalformedPacket("shorter than a header")
    magic, version, flags, kind_byte = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise MalformedPacket("bad magic")
    if version != VERSION:
        raise MalformedPacket(f"unsupported version {version}")
    if flags & ~_FLAG_MAC:
        raise MalformedPacket("unknown flags")
    r = _Reader(data, _HEAD.size)
    cluster = r.text(MAX_ID_BYTES)
    if cluster != cluster_id:
        raise ForeignCluster(f"packet of cluster {cluster!r}")
    signed = bool(flags & _FLAG_MAC)
    if key is None and signed:
        raise BadAuthentication("authenticated packet, but no key is configured")
    if key is not None:
        if not signed or len(data) < r.pos + MAC_BYTES:
            raise BadAuthentication("packet is not authenticated")
        body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            raise BadAuthentication("wrong HMAC")
        r = _Reader(body, r.pos)
    try:
        kind = PacketKind(kind_byte)
    except ValueError as exc:
        raise MalformedPacket("unknown packet kind") from exc
    sender = NodeId(r.text(MAX_ID_BYTES, allow_empty=False))
    seq = 0
    target = NO_NODE
    target_address: Address = ("", 0)
    reply_wanted = False
    if kind in (PacketKind.PING, PacketKind.ACK, PacketKind.PING_REQ):
        seq = r.u32()
    if kind in (PacketKind.PING, PacketKind.PING_REQ):
        target = NodeId(r.text(MAX_ID_BYTES, allow_empty=False))
    if kind is PacketKind.PING_REQ:
        target_address = (r.text(MAX_HOST_BYTES, allow_empty=False), r.u16())
    if kind is PacketKind.SYNC:
        sync_flags = r.u8()
        if sync_flags & ~_SYNC_REPLY:
            raise MalformedPacket("unknown sync flags")
        reply_wanted = bool(sync_flags & _SYNC_REPLY)
    count = r.u8()
    records = tuple(_read_record(r) for _ in range(count))
    if r.pos != len(r.data):
        raise MalformedPacket("trailing bytes")
    return Packet(kind, sender, seq, target, target_address, reply_wanted, records)


def chunk_records(
    records: Iterable[Record], budget: int, max_count: int = MAX_RECORDS
) -> list[list[Record]]:
    """Split ``records`` into groups whose encoded size stays within ``budget`` bytes."""
    groups: list[list[Record]] = []
    current: list[Record] = []
    used = 0
    for rec in records:
        size = record_size(rec)
        if current and (used + size > budget or len(current) >= max_count):
            groups.append(current)
            current, used = [], 0
        current.append(rec)
        used += size
    if current:
        groups.append(current)
    return groups
