"""Durable stores: a segmented log, an atomically replaced HardState, snapshot files.

Every write is durable (fsynced) when the call returns. Reads may run on the
reactor thread while one writer thread writes. docs/storage.md describes the
formats, the crash-safety rules and the measurements behind them.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
import weakref
import zlib
from array import array
from collections.abc import Sequence
from typing import BinaryIO

from zope.interface import implementer

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_STORAGE_ID,
    MAX_TERM,
    Configuration,
    Entry,
    HardState,
    NodeId,
    SnapshotMeta,
)
from leeky_twisted.interfaces import ILogStore, ISnapshotSink, ISnapshotStore, IStableStore
from leeky_twisted.storage.errors import (
    CorruptHardStateError,
    CorruptLogError,
    CorruptSnapshotError,
    StorageError,
    StoreClosedError,
    StoreFailedError,
)
from leeky_twisted.storage.fsutil import (
    TEMP_SUFFIX,
    DirectoryLock,
    atomic_write,
    atomic_write_at,
    fdatasync,
    fsync_dir,
    open_dir,
    preallocate,
    pwrite_all,
    remove_temp_files,
)
from leeky_twisted.storage.logrules import (
    check_append,
    check_max_bytes,
    check_next_index,
    check_range,
    check_snapshot_meta,
    hard_state_error,
)
from leeky_twisted.storage.segments import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    decode_entries,
    decode_meta,
    encode_meta,
    encode_record,
    encode_segment_header,
    scan_segment,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
_SEGMENT_NAME = re.compile(r"^segment-(\d{16})\.log$")
_META_NAME = "meta"
_LOCK_NAME = "LOCK"
_ENTRY_OVERHEAD = Entry(0, 0).size()  # Entry.size() of an entry with empty data


class _Segment:
    """One open segment file; ``size`` covers only durable, published records."""

    __slots__ = ("fd", "first_index", "path", "seq", "size")

    def __init__(self, seq: int, path: str, fd: int, first_index: int, size: int) -> None:
        self.seq = seq
        self.path = path
        self.fd = fd
        self.first_index = first_index
        self.size = size


@implementer(ILogStore)
class FileLogStore:
    """A segmented, checksummed, append-only log in ``directory``.

    ``append`` writes a whole batch and then calls fdatasync once (group
    commit). An in-memory index maps each index to its segment and offset, so
    ``entries`` costs one ``pread`` per segment touched. Opening the store
    checks every record: a torn tail of the last segment is cut and logged;
    any other damage raises CorruptLogError. See docs/storage.md.

    Threads: writes (append, compact, reset) are serialized and meant for one
    writer thread; reads may come from any thread at any time, and never wait
    for an fsync.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        preallocate: bool = True,
    ) -> None:
        """Open (or create) the log in ``directory``, recovering from a crash.

        Segments roll over once a record would take them past
        ``segment_size`` bytes. With ``preallocate``, each segment's disk
        space is reserved when it is created, so appends do not change the
        file size (cheaper fsyncs); without, segments grow with each append.
        Either layout opens either way. Raise CorruptLogError when the files
        are damaged beyond a torn tail, StoreLockedError when another store
        holds the directory.
        """
        if segment_size < SEGMENT_HEADER.size + RECORD_HEADER.size:
            raise ValueError(f"segment_size {segment_size} is too small")
        self._dir = os.fspath(directory)
        self._segment_size = segment_size
        self._preallocate = preallocate
        self._lock = threading.Lock()  # guards the index below; held briefly, never over fsync
        self._write_lock = threading.Lock()  # serializes writers (normally a single thread)
        self._closed = False
        self._failed: BaseException | None = None
        self._first_index = 1
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []  # first index of each segment, for bisect
        self._offsets: array[int] = array("Q")  # offset of the record of first_index + k
        self._terms: array[int] = array("Q")  # term of first_index + k
        os.makedirs(self._dir, exist_ok=True)
        self._dir_lock = DirectoryLock(os.path.join(self._dir, _LOCK_NAME))
        try:
            self._recover()
        except BaseException:
            for segment in self._segments:
                os.close(segment.fd)
            self._dir_lock.release()
            raise

    @property
    def lock(self) -> DirectoryLock:
        """The lock this store holds on its directory (``LOCK``) while open."""
        return self._dir_lock

    # ------------------------------------------------------------------ recovery

    def _segment_path(self, seq: int) -> str:
        return os.path.join(self._dir, f"segment-{seq:016d}.log")

    def _recover(self) -> None:
        removed = remove_temp_files(self._dir)
        if removed:
            log.warning("log %s: removed half-written files %s", self._dir, removed)
        meta_path = os.path.join(self._dir, _META_NAME)
        seqs = sorted(
            int(match.group(1))
            for match in map(_SEGMENT_NAME.match, os.listdir(self._dir))
            if match is not None
        )
        try:
            with open(meta_path, "rb") as meta_file:
                first_index, first_seq = decode_meta(meta_file.read(), meta_path)
        except FileNotFoundError:
            if seqs:
                raise CorruptLogError(meta_path, None, "missing, but segment files exist") from None
            first_index, first_seq = 1, 1
            atomic_write(meta_path, encode_meta(first_index, first_seq))
        garbage = [seq for seq in seqs if seq < first_seq]
        for seq in garbage:
            os.unlink(self._segment_path(seq))
        if garbage:
            fsync_dir(self._dir)
            log.info("log %s: removed %d compacted segments", self._dir, len(garbage))
        live = [seq for seq in seqs if seq >= first_seq]
        self._first_index = first_index
        if not live:
            # A fresh log, or a reset() interrupted before it created its segment.
            self._add_segment(self._create_segment(first_seq, first_index))
            return
        expected_seqs = list(range(first_seq, live[-1] + 1))
        if live != expected_seqs:
            missing = sorted(set(expected_seqs) - set(live))
            names = ", ".join(os.path.basename(self._segment_path(seq)) for seq in missing)
            raise CorruptLogError(self._dir, None, f"segment files missing: {names}")
        next_index: int | None = None
        for position, seq in enumerate(live):
            next_index = self._load_segment(seq, next_index, is_last=position == len(live) - 1)
        assert next_index is not None
        if next_index < first_index:
            reason = f"log ends at {next_index - 1}, but the meta starts it at {first_index}"
            raise CorruptLogError(self._dir, None, reason)

    def _load_segment(self, seq: int, expected_first: int | None, *, is_last: bool) -> int:
        """Scan one segment, add it to the index and return the index after its last record.

        ``expected_first`` is the index after the previous segment's last
        record, or None for the first live segment.
        """
        path = self._segment_path(seq)
        with open(path, "rb") as segment_file:
            buf = segment_file.read()
        scan = scan_segment(buf, path, is_last=is_last)
        if expected_first is None and scan.first_index > self._first_index:
            reason = f"starts at {scan.first_index}, after the first index {self._first_index}"
            raise CorruptLogError(path, 0, reason)
        if expected_first is not None and scan.first_index != expected_first:
            reason = f"starts at index {scan.first_index}, expected {expected_first}"
            raise CorruptLogError(path, 0, reason)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._add_segment(_Segment(seq, path, fd, scan.first_index, scan.end))
        if scan.cut_reason is not None:
            cut, reason = len(buf) - scan.end, scan.cut_reason
            log.warning("log %s: cut %d bytes at offset %d: %s", path, cut, scan.end, reason)
            os.ftruncate(fd, scan.end)
            self._reserve(fd)  # zeros again after the cut
            os.fsync(fd)
        skip = max(0, self._first_index - scan.first_index)
        self._offsets.extend(scan.offsets[skip:])
        self._terms.extend(scan.terms[skip:])
        return scan.first_index + len(scan.offsets)

    def _create_segment(self, seq: int, first_index: int) -> _Segment:
        """Create segment ``seq`` durably (temp file, fsync, rename, fsync directory)."""
        path = self._segment_path(seq)
        tmp = path + TEMP_SUFFIX
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            pwrite_all(fd, encode_segment_header(first_index), 0)
            self._reserve(fd)
            fdatasync(fd)
            os.replace(tmp, path)
            fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            raise
        return _Segment(seq, path, fd, first_index, SEGMENT_HEADER.size)

    def _reserve(self, fd: int) -> None:
        if self._preallocate:
            preallocate(fd, self._segment_size)

    def _add_segment(self, segment: _Segment) -> None:
        with self._lock:
            self._segments.append(segment)
            self._firsts.append(segment.first_index)

    # ------------------------------------------------------------------ reads

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"FileLogStore {self._dir} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise StoreFailedError(
                f"an earlier write to {self._dir} failed ({self._failed!r}); reopen the store"
            ) from self._failed

    def _last_locked(self) -> int:
        return self._first_index + len(self._offsets) - 1

    def first_index(self) -> int:
        """Return the index of the first stored entry, or last_index()+1 when empty."""
        with self._lock:
            self._check_open()
            return self._first_index

    def last_index(self) -> int:
        """Return the index of the last stored entry, or first_index()-1 when empty."""
        with self._lock:
            self._check_open()
            return self._last_locked()

    def term_at(self, index: int) -> int:
        """Return the term of the stored entry at ``index`` (from memory, no disk read).

        Raise IndexError when ``index`` is compacted or missing.
        """
        with self._lock:
            self._check_open()
            check_range(index, index + 1, self._first_index, self._last_locked())
            return self._terms[index - self._first_index]

    def _segment_span(self, index: int) -> tuple[int, int]:
        """Return (position in _segments, index after its last published record) for ``index``.

        A segment rolled over by a write in progress may already be listed;
        its first index can lie past last_index()+1, hence the ``min``.
        """
        position = bisect.bisect_right(self._firsts, index) - 1
        stop = self._last_locked() + 1
        if position + 1 < len(self._segments):
            stop = min(stop, self._firsts[position + 1])
        return position, stop

    def _record_end(self, index: int, position: int, stop: int) -> int:
        """Return the offset just past the record of ``index`` in segment ``position``."""
        if index + 1 < stop:
            return self._offsets[index + 1 - self._first_index]
        return self._segments[position].size

    def _limit_locked(self, lo: int, hi: int, max_bytes: int) -> int:
        """Return the exclusive end of the longest prefix of [lo, hi) within ``max_bytes``."""
        total = 0
        position, stop = self._segment_span(lo)
        for index in range(lo, hi):
            if index >= stop:
                position, stop = self._segment_span(index)
            start = self._offsets[index - self._first_index]
            data_size = self._record_end(index, position, stop) - start - RECORD_HEADER.size
            total += data_size + _ENTRY_OVERHEAD
            if total > max_bytes and index > lo:
                return index
        return hi

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Return entries with lo <= index < hi, in order, read and checksummed from disk.

        With ``max_bytes``, stop before the entry that would take the summed
        ``Entry.size()`` past it, but return at least one entry. Raise
        IndexError when part of the range is compacted or missing, and
        CorruptLogError when the bytes on disk no longer verify.
        """
        check_max_bytes(max_bytes)
        result: list[Entry] = []
        with self._lock:
            self._check_open()
            check_range(lo, hi, self._first_index, self._last_locked())
            if max_bytes is not None:
                hi = self._limit_locked(lo, hi, max_bytes)
            index = lo
            while index < hi:
                position, segment_stop = self._segment_span(index)
                segment = self._segments[position]
                stop = min(segment_stop, hi)
                start = self._offsets[index - self._first_index]
                end = self._record_end(stop - 1, position, segment_stop)
                buf = os.pread(segment.fd, end - start, start)
                if len(buf) != end - start:
                    raise CorruptLogError(segment.path, start, "file is shorter than its index")
                result.extend(decode_entries(buf, index, stop - index, segment.path, start))
                index = stop
        return result

    # ------------------------------------------------------------------ writes

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries`` with one fdatasync; an entry at index i replaces all stored >= i.

        Replacing a suffix first cuts it durably (later segments deleted
        newest first, then the segment truncated and fsynced), so a crash
        leaves a consecutive prefix. Raise ValueError for non-consecutive
        indexes or a gap after last_index(); entries below first_index() are
        dropped as compacted. After an I/O error the store raises
        StoreFailedError until reopened.
        """
        with self._write_lock:
            self._append(entries)

    def _append(self, entries: Sequence[Entry]) -> None:
        with self._lock:
            self._check_writable()
            last = self._last_locked()
            batch = check_append(entries, self._first_index, last)
        if not batch:
            return
        batch_first = batch[0].index
        records = [(entry, encode_record(entry, batch_first)) for entry in batch]
        try:
            if batch_first <= last:
                self._truncate_suffix(batch_first)
            self._write(records)
        except BaseException as error:
            self._failed = error
            raise

    def _truncate_suffix(self, index: int) -> None:
        """Durably drop every stored entry >= ``index``."""
        with self._lock:
            position = bisect.bisect_right(self._firsts, index) - 1
            segment = self._segments[position]
            offset = self._offsets[index - self._first_index]
            dropped = self._segments[position + 1 :]
            del self._segments[position + 1 :]
            del self._firsts[position + 1 :]
            del self._offsets[index - self._first_index :]
            del self._terms[index - self._first_index :]
            segment.size = offset
            for later in dropped:
                os.close(later.fd)
        for later in reversed(dropped):  # newest first, so a crash leaves a prefix
            os.unlink(later.path)
            fsync_dir(self._dir)
        os.ftruncate(segment.fd, offset)
        self._reserve(segment.fd)
        os.fsync(segment.fd)

    def _write(self, records: list[tuple[Entry, bytes]]) -> None:
        """Write encoded records after the published end, fdatasync, then publish them."""
        segment = self._segments[-1]
        position = segment.size
        chunk: list[bytes] = []
        chunk_start = position
        sizes: list[tuple[_Segment, int]] = []
        offsets: array[int] = array("Q")
        terms: array[int] = array("Q")
        for entry, record in records:
            if position > SEGMENT_HEADER.size and position + len(record) > self._segment_size:
                # Roll over. Sync the full segment first, so only the last
                # segment can ever hold a torn write.
                self._flush(segment, chunk, chunk_start)
                sizes.append((segment, position))
                segment = self._create_segment(segment.seq + 1, entry.index)
                self._add_segment(segment)
                position = chunk_start = segment.size
                chunk = []
            chunk.append(record)
            offsets.append(position)
            terms.append(entry.term)
            position += len(record)
        self._flush(segment, chunk, chunk_start)
        sizes.append((segment, position))
        with self._lock:
            for written, size in sizes:
                written.size = size
            self._offsets.extend(offsets)
            self._terms.extend(terms)

    @staticmethod
    def _flush(segment: _Segment, chunk: list[bytes], start: int) -> None:
        if chunk:
            pwrite_all(segment.fd, b"".join(chunk), start)
            fdatasync(segment.fd)

    def compact(self, upto: int) -> None:
        """Drop entries with index <= ``upto``; an emptied log starts at ``upto + 1``.

        Records the new first index in the meta file (atomic replace), then
        deletes the segments wholly below it. Compacting at or past
        last_index() is a reset(upto + 1).
        """
        with self._write_lock:
            self._compact(upto)

    def _compact(self, upto: int) -> None:
        check_next_index(max(upto, 0) + 1)
        with self._lock:
            self._check_writable()
            first, last = self._first_index, self._last_locked()
        if upto < first:
            return
        if upto >= last:
            self._reset(upto + 1)
            return
        new_first = upto + 1
        try:
            with self._lock:
                position = bisect.bisect_right(self._firsts, new_first) - 1
                first_seq = self._segments[position].seq
            atomic_write(os.path.join(self._dir, _META_NAME), encode_meta(new_first, first_seq))
            with self._lock:
                dropped = self._segments[:position]
                del self._segments[:position]
                del self._firsts[:position]
                del self._offsets[: new_first - first]
                del self._terms[: new_first - first]
                self._first_index = new_first
                for segment in dropped:
                    os.close(segment.fd)
            for segment in dropped:
                os.unlink(segment.path)
            if dropped:
                fsync_dir(self._dir)
        except BaseException as error:
            self._failed = error
            raise

    def reset(self, next_index: int) -> None:
        """Drop every entry durably; the next appended entry will be ``next_index``.

        Records (next_index, new segment) in the meta file before creating
        the new segment and deleting the old ones, so a crash leaves either
        the old log or an empty one.
        """
        with self._write_lock:
            self._reset(next_index)

    def _reset(self, next_index: int) -> None:
        check_next_index(next_index)
        with self._lock:
            self._check_writable()
            seq = self._segments[-1].seq + 1
        try:
            atomic_write(os.path.join(self._dir, _META_NAME), encode_meta(next_index, seq))
            segment = self._create_segment(seq, next_index)
            with self._lock:
                dropped = self._segments
                self._segments = [segment]
                self._firsts = [next_index]
                self._offsets = array("Q")
                self._terms = array("Q")
                self._first_index = next_index
                for old in dropped:
                    os.close(old.fd)
            for old in dropped:
                os.unlink(old.path)
            fsync_dir(self._dir)
        except BaseException as error:
            self._failed = error
            raise

    def close(self) -> None:
        """Wait for a write in progress, close every file and release the directory.

        Further calls raise StoreClosedError; a second close() does nothing.
        """
        with self._write_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            for segment in self._segments:
                os.close(segment.fd)
            self._segments = []
            self._firsts = []
            self._dir_lock.release()


# ---------------------------------------------------------------------- hard state

_HARD_STATE_MAGIC = b"LKHS\x00\x00\x00\x01"
_HARD_STATE_HEADER = struct.Struct("<8sII")  # magic, crc32 of the payload, payload length


def _encode_hard_state(hard_state: HardState) -> bytes:
    fields: dict[str, object] = {
        "term": hard_state.term,
        "voted_for": hard_state.voted_for,
        "commit": hard_state.commit,
    }
    if hard_state.abstaining:  # absent when false: files of earlier versions read the same
        fields["abstaining"] = True
    if hard_state.storage_id:  # absent when 0, likewise
        fields["storage_id"] = hard_state.storage_id
    if hard_state.caught_up:
        fields["caught_up"] = hard_state.caught_up
    payload = json.dumps(fields, sort_keys=True).encode("utf-8")
    return _HARD_STATE_HEADER.pack(_HARD_STATE_MAGIC, zlib.crc32(payload), len(payload)) + payload


def _is_count(value: object, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _decode_hard_state(buf: bytes, path: str) -> HardState:
    if len(buf) < _HARD_STATE_HEADER.size:
        raise CorruptHardStateError(path, None, f"truncated ({len(buf)} bytes)")
    magic, crc, length = _HARD_STATE_HEADER.unpack_from(buf)
    if magic != _HARD_STATE_MAGIC:
        raise CorruptHardStateError(path, 0, f"not a hard state file (magic {magic!r})")
    payload = buf[_HARD_STATE_HEADER.size :]
    if len(payload) != length:
        reason = f"payload has {len(payload)} bytes, expected {length}"
        raise CorruptHardStateError(path, None, reason)
    if zlib.crc32(payload) != crc:
        raise CorruptHardStateError(path, None, "checksum mismatch")
    try:
        fields = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise CorruptHardStateError(path, None, f"unparseable payload: {error}") from None
    if not isinstance(fields, dict) or set(fields) - {"abstaining", "storage_id", "caught_up"} != {
        "term",
        "voted_for",
        "commit",
    }:
        raise CorruptHardStateError(path, None, f"unexpected fields {fields!r}")
    abstaining = fields.get("abstaining", False)
    storage_id = fields.get("storage_id", 0)
    caught_up = fields.get("caught_up", 0)
    if (
        not isinstance(abstaining, bool)
        or type(storage_id) is not int
        or type(caught_up) is not int
    ):
        raise CorruptHardStateError(path, None, f"invalid values {fields!r}")
    hard_state = HardState(
        fields["term"], fields["voted_for"], fields["commit"], abstaining, storage_id, caught_up
    )
    problem = hard_state_error(hard_state)
    if problem is not None:
        raise CorruptHardStateError(path, None, f"impossible value: {problem}")
    return hard_state


@implementer(IStableStore)
class FileStableStore:
    """Keep the HardState in one small checksummed file, replaced atomically.

    ``save`` writes a temp file, fsyncs it, renames it over ``path`` and
    fsyncs the directory, so a crash leaves the old or the new state.

    The folder is held open from the start and every file is reached through
    it: a save lands in the folder the store opened even if that folder was
    moved, and fails if it was deleted, but never writes into another folder
    made at the old path (that would pair this node's vote with an empty log).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Use the file at ``path`` (created on the first save), removing a stale temp file."""
        self._path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self._path))
        os.makedirs(folder, exist_ok=True)
        self._name = os.path.basename(self._path)
        self._dir_fd = open_dir(folder)
        self._close_dir = weakref.finalize(self, os.close, self._dir_fd)
        self._lock = threading.Lock()
        self._closed = False
        self._saved: HardState | None = None
        tmp = self._name + TEMP_SUFFIX
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self._dir_fd)
            log.warning("hard state %s: removed half-written %s", self._path, tmp)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"FileStableStore {self._path} is closed")

    def load(self) -> HardState:
        """Return the saved HardState, HardState() when none was saved.

        Raise CorruptHardStateError when the file fails its checks.
        """
        with self._lock:
            self._check_open()
            try:
                fd = os.open(self._name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
                with os.fdopen(fd, "rb") as state_file:
                    buf = state_file.read()
            except FileNotFoundError:
                return HardState()
            self._saved = _decode_hard_state(buf, self._path)
            return self._saved

    def save(self, hard_state: object) -> None:
        """Save ``hard_state``; durable when this returns (skipped if unchanged)."""
        if not isinstance(hard_state, HardState):
            raise TypeError(f"expected a HardState, got {type(hard_state).__name__}")
        problem = hard_state_error(hard_state)
        if problem is not None:  # never persist what could not be loaded again
            raise ValueError(f"refusing to save hard state to {self._path}: {problem}")
        data = _encode_hard_state(hard_state)
        with self._lock:
            self._check_open()
            if hard_state == self._saved:
                return
            self._saved = None
            atomic_write_at(self._dir_fd, self._name, data)
            self._saved = hard_state

    def close(self) -> None:
        """Mark the store closed; further calls raise StoreClosedError."""
        with self._lock:
            self._closed = True
            self._close_dir()


# ---------------------------------------------------------------------- snapshots

_SNAPSHOT_NAME = re.compile(r"^snapshot-(\d{20})\.snap$")
_SNAPSHOT_MAGIC = b"LKSNAP\x00\x01"
_SNAPSHOT_END = b"LKSNEND\x01"
#: a snapshot sink syncs its file each time this many bytes have been written since
SNAPSHOT_SYNC_BYTES = 4 << 20
_SNAPSHOT_HEADER = struct.Struct("<8sI")  # magic, length of the meta JSON that follows
_SNAPSHOT_FOOTER = struct.Struct("<Q32s8s")  # data length, sha256(header+meta+data), end magic
_READ_CHUNK = 1 << 20


def _snapshot_name(index: int) -> str:
    return f"snapshot-{index:020d}.snap"


def _encode_snapshot_header(meta: SnapshotMeta) -> bytes:
    fields = {
        "index": meta.index,
        "term": meta.term,
        "voters": sorted(meta.config.voters),
        "learners": sorted(meta.config.learners),
        "storage": [[nid, storage] for nid, storage in meta.config.storage],
    }
    body = json.dumps(fields, sort_keys=True).encode("utf-8")
    return _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, len(body)) + body


def _decode_snapshot_meta(body: bytes, path: str) -> SnapshotMeta:
    try:
        fields = json.loads(body)
        voters, learners = fields["voters"], fields["learners"]
        index, term = fields["index"], fields["term"]
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise CorruptSnapshotError(path, None, f"unparseable meta: {error!r}") from None
    ids_ok = all(
        isinstance(nodes, list) and all(isinstance(node, str) for node in nodes)
        for nodes in (voters, learners)
    )
    if not (_is_count(index, MAX_INDEX) and _is_count(term, MAX_TERM) and ids_ok):
        raise CorruptSnapshotError(path, None, f"impossible meta {fields!r:.200}")
    voters = frozenset(NodeId(node) for node in voters)
    learners = frozenset(NodeId(node) for node in learners)
    seats = fields.get("storage", [])  # absent in snapshots from before seats
    seats_ok = isinstance(seats, list) and all(
        isinstance(seat, list)
        and len(seat) == 2
        and isinstance(seat[0], str)
        and seat[0] in voters
        and _is_count(seat[1], MAX_STORAGE_ID)
        for seat in seats
    )
    if seats_ok and len({seat[0] for seat in seats}) != len(seats):
        seats_ok = False  # a seat named twice
    if not seats_ok:
        raise CorruptSnapshotError(path, None, f"impossible seats {seats!r:.200}")
    storage = tuple(sorted((NodeId(nid), int(sid)) for nid, sid in seats))
    return SnapshotMeta(index, term, Configuration(voters, learners, storage))


def _read_snapshot(path: str, *, keep_data: bool) -> tuple[SnapshotMeta, bytes]:
    """Verify the snapshot file at ``path``; return its meta and (if asked) its data.

    Raise FileNotFoundError when absent, CorruptSnapshotError when any check fails.
    """
    with open(path, "rb") as snapshot_file:
        size = os.fstat(snapshot_file.fileno()).st_size
        head = snapshot_file.read(_SNAPSHOT_HEADER.size)
        if len(head) < _SNAPSHOT_HEADER.size:
            raise CorruptSnapshotError(path, None, f"truncated ({size} bytes)")
        magic, meta_length = _SNAPSHOT_HEADER.unpack(head)
        if magic != _SNAPSHOT_MAGIC:
            raise CorruptSnapshotError(path, 0, f"not a snapshot file (magic {magic!r})")
        data_start = _SNAPSHOT_HEADER.size + meta_length
        if data_start + _SNAPSHOT_FOOTER.size > size:
            raise CorruptSnapshotError(path, None, f"truncated ({size} bytes)")
        body = snapshot_file.read(meta_length)
        snapshot_file.seek(size - _SNAPSHOT_FOOTER.size)
        footer = snapshot_file.read(_SNAPSHOT_FOOTER.size)
        data_length, digest, end = _SNAPSHOT_FOOTER.unpack(footer)
        if end != _SNAPSHOT_END:
            raise CorruptSnapshotError(path, size - _SNAPSHOT_FOOTER.size, "footer missing")
        if data_start + data_length + _SNAPSHOT_FOOTER.size != size:
            raise CorruptSnapshotError(path, None, f"size {size} disagrees with the footer")
        checksum = hashlib.sha256(head)
        checksum.update(body)
        chunks: list[bytes] = []
        snapshot_file.seek(data_start)
        remaining = data_length
        while remaining > 0:
            chunk = snapshot_file.read(min(remaining, _READ_CHUNK))
            if not chunk:
                raise CorruptSnapshotError(path, None, "file shrank while being read")
            checksum.update(chunk)
            if keep_data:
                chunks.append(chunk)
            remaining -= len(chunk)
    if checksum.digest() != digest:
        raise CorruptSnapshotError(path, None, "sha256 checksum mismatch")
    return _decode_snapshot_meta(body, path), b"".join(chunks)


@implementer(ISnapshotSink)
class FileSnapshotSink:
    """A snapshot being written to a temp file in the store's directory."""

    def __init__(self, store: FileSnapshotStore, meta: SnapshotMeta, directory: str) -> None:
        """Open a temp file for ``meta`` and write the header."""
        self.meta = meta
        self._store = store
        header = _encode_snapshot_header(meta)
        fd, self._tmp = tempfile.mkstemp(
            prefix=_snapshot_name(meta.index) + "-", suffix=TEMP_SUFFIX, dir=directory
        )
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._checksum = hashlib.sha256(header)
        self._length = 0
        self._unsynced = 0
        self._state = "open"
        self._file.write(header)

    def _check_writable(self) -> None:
        if self._state != "open":
            raise StorageError(f"snapshot sink for index {self.meta.index} is {self._state}")

    def write(self, data: bytes) -> None:
        """Append ``data`` to the snapshot; sync every SNAPSHOT_SYNC_BYTES written.

        Syncing as it goes keeps each call short and leaves ``close`` little to
        flush, so a large snapshot written a slice per disk job never holds the
        disk thread for the whole state (see ``server/snapshot_write.py``).
        """
        self._check_writable()
        try:
            self._file.write(data)
            self._unsynced += len(data)
            if self._unsynced >= SNAPSHOT_SYNC_BYTES:
                self._file.flush()
                fdatasync(self._file.fileno())
                self._unsynced = 0
        except BaseException:
            self._discard("failed")
            raise
        self._checksum.update(data)
        self._length += len(data)

    def close(self) -> None:
        """Write the footer, fsync, rename into place, fsync the directory and prune old ones."""
        self._check_writable()
        footer = _SNAPSHOT_FOOTER.pack(self._length, self._checksum.digest(), _SNAPSHOT_END)
        try:
            self._file.write(footer)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._store._publish(self._tmp, self.meta)
        except BaseException:
            self._discard("failed")
            raise
        self._state = "closed"

    def cancel(self) -> None:
        """Discard everything written; does nothing after close()."""
        if self._state == "open":
            self._discard("cancelled")

    def _discard(self, state: str) -> None:
        self._state = state
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


@implementer(ISnapshotStore)
class FileSnapshotStore:
    """Keep snapshots as checksummed files in ``directory``, the newest ``retain`` of them.

    A file is ``header (magic, meta JSON) | data | footer (data length,
    sha256, end magic)``; it appears under its final name only once complete
    and fsynced. ``latest`` skips files that fail verification.
    """

    def __init__(self, directory: str | os.PathLike[str], *, retain: int = 2) -> None:
        """Use ``directory`` (created if absent), deleting half-written temp files."""
        if retain < 1:
            raise ValueError(f"retain must be at least 1, got {retain}")
        self._dir = os.fspath(directory)
        self._retain = retain
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[tuple[int, int, int], SnapshotMeta]] = {}
        os.makedirs(self._dir, exist_ok=True)
        removed = remove_temp_files(self._dir)
        if removed:
            log.warning("snapshots %s: removed half-written files %s", self._dir, removed)

    def create(self, meta: object) -> FileSnapshotSink:
        """Start writing a snapshot described by ``meta``; nothing is visible until close."""
        if not isinstance(meta, SnapshotMeta):
            raise TypeError(f"expected a SnapshotMeta, got {type(meta).__name__}")
        check_snapshot_meta(meta)
        return FileSnapshotSink(self, meta, self._dir)

    def _names(self) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(self._dir):
            match = _SNAPSHOT_NAME.match(name)
            if match is not None:
                found.append((int(match.group(1)), name))
        return sorted(found)

    @staticmethod
    def _stat_key(path: str) -> tuple[int, int, int]:
        stat = os.stat(path)
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _publish(self, tmp: str, meta: SnapshotMeta) -> None:
        """Rename a complete temp file into place, then delete all but the newest ``retain``."""
        name = _snapshot_name(meta.index)
        path = os.path.join(self._dir, name)
        with self._lock:
            os.replace(tmp, path)
            fsync_dir(self._dir)
            self._verified[name] = (self._stat_key(path), meta)
            old = self._names()[: -self._retain]
            for _, old_name in old:
                os.unlink(os.path.join(self._dir, old_name))
                self._verified.pop(old_name, None)
            if old:
                fsync_dir(self._dir)

    def latest(self) -> SnapshotMeta | None:
        """Return the meta of the newest snapshot that verifies, or None.

        Corrupt or truncated files are skipped (and logged) in favour of older ones.
        """
        with self._lock:
            for index, name in reversed(self._names()):
                path = os.path.join(self._dir, name)
                try:
                    key = self._stat_key(path)
                    cached = self._verified.get(name)
                    if cached is not None and cached[0] == key:
                        return cached[1]
                    meta, _ = _read_snapshot(path, keep_data=False)
                    if meta.index != index:
                        raise CorruptSnapshotError(path, None, f"holds index {meta.index}")
                except FileNotFoundError:
                    continue
                except CorruptSnapshotError as error:
                    log.warning("snapshots: skipping %s", error)
                    continue
                self._verified[name] = (key, meta)
                return meta
        return None

    def open(self, index: int) -> bytes:
        """Return the verified data of the snapshot at ``index``.

        Raise KeyError when there is none, CorruptSnapshotError (a ValueError)
        when it fails verification.
        """
        path = os.path.join(self._dir, _snapshot_name(index))
        try:
            meta, data = _read_snapshot(path, keep_data=True)
        except FileNotFoundError:
            raise KeyError(index) from None
        if meta.index != index:
            raise CorruptSnapshotError(path, None, f"holds index {meta.index}")
        return data
