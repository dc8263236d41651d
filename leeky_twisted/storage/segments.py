"""The on-disk format of the segmented log: pure functions over bytes.

A segment file is a 20-byte header followed by records, then zeros up to the
segment size (preallocated space, where later records go)::

    segment header  magic "LKSEG\\0\\0\\1" (8) | first_index u64 | crc32 u32
    record header   crc32 u32 | length u32 | index u64 | term u64
                    | batch_offset u32 | kind u8 | version u8 | reserved u16
    record data     ``length`` bytes (the entry's data)

All integers are little-endian. A record's crc32 covers the 28 header bytes
after it plus the data. ``batch_offset`` is ``index - batch_first``, where
``batch_first`` is the first index written by the same ``append`` call (one
fsync); recovery uses it to tell a torn final batch from older corruption.
The log's meta file (``meta``) is ``magic | first_index u64 | first_seq u64 |
crc32 u32``. See docs/storage.md for the rules built on this format.
"""

from __future__ import annotations

import re
import struct
import zlib
from array import array
from dataclasses import dataclass

from leeky_twisted.core.messages import MAX_INDEX, MAX_TERM, Entry, EntryKind
from leeky_twisted.storage.errors import CorruptLogError

SEGMENT_MAGIC = b"LKSEG\x00\x00\x01"
SEGMENT_HEADER = struct.Struct("<8sQI")
RECORD_HEADER = struct.Struct("<IIQQIBBH")
_RECORD_TAIL = struct.Struct("<IQQIBBH")  # RECORD_HEADER without its crc
_CRC = struct.Struct("<I")
RECORD_VERSION = 1
MAX_RECORD_DATA = 1 << 30
META_MAGIC = b"LKMETA\x00\x01"
META = struct.Struct("<8sQQI")
#: Segment numbers are written with 16 digits in file names.
MAX_SEGMENT_SEQ = 10**16 - 1
_KINDS = frozenset(int(kind) for kind in EntryKind)
_NONZERO = re.compile(rb"[^\x00]")


class DamagedRecord(Exception):
    """The bytes at an offset are not a whole record with a valid checksum.

    This is what a torn write looks like, so it may be cut at the log's tail.
    """


class InvalidRecord(Exception):
    """A record's checksum is valid but its contents are not: never a torn write."""


@dataclass(frozen=True, slots=True)
class RecordHeader:
    """The decoded header of a record whose checksum verified."""

    index: int
    term: int
    batch_first: int
    kind: int
    data_start: int
    end: int


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What recovery learned from one segment file.

    ``offsets``/``terms`` describe every intact record, in index order from
    ``first_index``; ``end`` is the offset just past the last of them;
    ``cut_reason`` says why bytes after ``end`` are a torn tail (None if none).
    """

    first_index: int
    offsets: array[int]
    terms: array[int]
    end: int
    cut_reason: str | None


def encode_segment_header(first_index: int) -> bytes:
    """Return the header of a segment whose first record will be ``first_index``."""
    body = SEGMENT_MAGIC + first_index.to_bytes(8, "little")
    return body + _CRC.pack(zlib.crc32(body))


def decode_segment_header(buf: bytes, path: str) -> int:
    """Return the first index recorded in a segment header; CorruptLogError when bad."""
    if len(buf) < SEGMENT_HEADER.size:
        raise CorruptLogError(path, 0, f"segment header truncated ({len(buf)} bytes)")
    magic, first_index, crc = SEGMENT_HEADER.unpack_from(buf, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptLogError(path, 0, f"not a log segment (magic {magic!r})")
    if crc != zlib.crc32(buf[: SEGMENT_HEADER.size - 4]):
        raise CorruptLogError(path, 0, "segment header checksum mismatch")
    if not 1 <= first_index <= MAX_INDEX + 1:
        raise CorruptLogError(path, 0, f"impossible first index {first_index}")
    return int(first_index)


def encode_meta(first_index: int, first_seq: int) -> bytes:
    """Return the meta file bytes: the log's first index and first live segment."""
    body = META_MAGIC + first_index.to_bytes(8, "little") + first_seq.to_bytes(8, "little")
    return body + _CRC.pack(zlib.crc32(body))


def decode_meta(buf: bytes, path: str) -> tuple[int, int]:
    """Return ``(first_index, first_seq)`` from meta bytes; CorruptLogError when bad."""
    if len(buf) != META.size:
        raise CorruptLogError(path, None, f"meta file has {len(buf)} bytes, expected {META.size}")
    magic, first_index, first_seq, crc = META.unpack(buf)
    if magic != META_MAGIC or crc != zlib.crc32(buf[: META.size - 4]):
        raise CorruptLogError(path, None, "meta file checksum mismatch")
    if not (1 <= first_index <= MAX_INDEX + 1 and 1 <= first_seq <= MAX_SEGMENT_SEQ):
        reason = f"impossible first index {first_index} or segment {first_seq}"
        raise CorruptLogError(path, None, reason)
    return int(first_index), int(first_seq)


def encode_record(entry: Entry, batch_first: int) -> bytes:
    """Return the record bytes of ``entry``, written by a batch starting at ``batch_first``."""
    data = entry.data
    if len(data) > MAX_RECORD_DATA:
        raise ValueError(f"entry {entry.index} has {len(data)} bytes, limit {MAX_RECORD_DATA}")
    index = entry.index
    body = (
        _RECORD_TAIL.pack(
            len(data), index, entry.term, index - batch_first, entry.kind, RECORD_VERSION, 0
        )
        + data
    )
    return _CRC.pack(zlib.crc32(body)) + body


def decode_record_header(buf: bytes | memoryview, pos: int) -> RecordHeader:
    """Decode and verify the record at ``pos`` in ``buf``.

    Raise DamagedRecord when it is cut short or its checksum fails,
    InvalidRecord when the checksum holds but a field is impossible.
    """
    size = RECORD_HEADER.size
    if pos + size > len(buf):
        raise DamagedRecord(f"record header cut short ({len(buf) - pos} of {size} bytes)")
    crc, length, index, term, batch_offset, kind, version, reserved = RECORD_HEADER.unpack_from(
        buf, pos
    )
    end = pos + size + length
    if end > len(buf):
        raise DamagedRecord(f"record of {length} bytes runs past the end of the file")
    if crc != zlib.crc32(buf[pos + size : end], zlib.crc32(buf[pos + 4 : pos + size])):
        raise DamagedRecord("record checksum mismatch")
    if version != RECORD_VERSION or reserved != 0:
        raise InvalidRecord(f"unknown record version {version} (reserved {reserved})")
    if kind not in _KINDS:
        raise InvalidRecord(f"unknown entry kind {kind}")
    if not 1 <= index <= MAX_INDEX or batch_offset >= index:
        raise InvalidRecord(f"impossible index {index} (batch offset {batch_offset})")
    if term > MAX_TERM:
        raise InvalidRecord(f"impossible term {term} (above {MAX_TERM})")
    return RecordHeader(index, term, index - batch_offset, kind, pos + size, end)


def decode_entries(buf: bytes, first_index: int, count: int, path: str, offset: int) -> list[Entry]:
    """Decode ``count`` consecutive records starting with ``first_index`` from ``buf``.

    ``buf`` was read at ``offset`` of ``path``; raise CorruptLogError when a
    record fails its checksum or holds an unexpected index.
    """
    result: list[Entry] = []
    pos = 0
    for expected in range(first_index, first_index + count):
        try:
            header = decode_record_header(buf, pos)
        except (DamagedRecord, InvalidRecord) as error:
            raise CorruptLogError(path, offset + pos, str(error)) from None
        if header.index != expected:
            raise CorruptLogError(path, offset + pos, f"index {header.index}, expected {expected}")
        data = bytes(buf[header.data_start : header.end])
        result.append(Entry(header.index, header.term, EntryKind(header.kind), data))
        pos = header.end
    return result


def find_later_batch(buf: bytes | memoryview, start: int, expected_index: int) -> int | None:
    """Return the offset of an intact record written after the batch holding ``expected_index``.

    Search every byte offset from ``start``, because the damaged record's
    length field cannot be trusted. A record with ``batch_first`` above
    ``expected_index`` proves that the damage lies in a batch that was
    followed by another (so already fsynced): corruption, not a torn write.
    Return None when no such record exists.
    """
    pos = start
    limit = len(buf) - RECORD_HEADER.size
    while pos <= limit:
        if buf[pos] == 0:
            # A header holds a nonzero index, so it starts at most 31 bytes
            # before the next nonzero byte: skip long runs of zeros quickly.
            match = _NONZERO.search(buf, pos)
            if match is None:
                return None
            pos = max(pos, match.start() - RECORD_HEADER.size + 1)
        try:
            header = decode_record_header(buf, pos)
        except DamagedRecord:
            pos += 1
            continue
        except InvalidRecord:
            return pos
        if header.batch_first > expected_index:
            return pos
        pos = header.end
    return None


def scan_segment(buf: bytes, path: str, *, is_last: bool) -> SegmentScan:
    """Check every record of one segment file and index the intact ones.

    Records end where only zeros follow (space preallocated when the segment
    was created, not yet written). In the last segment, a damaged record is a
    torn write, and it and everything after it is reported for cutting, unless
    an intact record of a *later* batch follows it. Any other damage, an
    impossible record, or an index out of sequence raises CorruptLogError
    naming the file and offset.
    """
    first_index = decode_segment_header(buf, path)
    view = memoryview(buf)
    offsets: array[int] = array("Q")
    terms: array[int] = array("Q")
    expected = first_index
    pos = SEGMENT_HEADER.size
    while pos < len(buf):
        if buf[pos] == 0 and _NONZERO.search(buf, pos) is None:
            break  # preallocated space: a record always holds a nonzero index
        try:
            header = decode_record_header(view, pos)
        except InvalidRecord as error:
            raise CorruptLogError(path, pos, str(error)) from None
        except DamagedRecord as error:
            if not is_last:
                reason = f"{error} in a segment that is not the last"
                raise CorruptLogError(path, pos, reason) from None
            later = find_later_batch(view, pos, expected)
            if later is not None:
                raise CorruptLogError(
                    path, pos, f"{error}, followed by an intact later batch at offset {later}"
                ) from None
            return SegmentScan(first_index, offsets, terms, pos, f"{error} (torn write)")
        if header.index != expected:
            raise CorruptLogError(path, pos, f"index {header.index}, expected {expected}")
        offsets.append(pos)
        terms.append(header.term)
        expected += 1
        pos = header.end
    return SegmentScan(first_index, offsets, terms, pos, None)
