"""FileLogStore recovery: torn tails are cut, every other kind of damage stops the node.

Most tests here cut files short, the layout of segments that grow with each
append (``preallocate=False``); the preallocated layout, where a torn write
leaves zeros after it, has its own tests at the end.
"""

from __future__ import annotations

import os
import random
import shutil
import zlib
from pathlib import Path

import pytest

from leeky_twisted.core.messages import Entry
from leeky_twisted.storage import files
from leeky_twisted.storage.errors import CorruptLogError
from leeky_twisted.storage.files import FileLogStore
from leeky_twisted.storage.segments import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    encode_record,
    encode_segment_header,
)


def open_log(directory: Path, **options: int) -> FileLogStore:
    """Open the store with growing (not preallocated) segments."""
    return FileLogStore(directory, preallocate=False, **options)


def entry(index: int, term: int = 1) -> Entry:
    return Entry(index, term, data=f"entry {index:03d} of term {term}".encode())


def run(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [entry(index, term) for index in range(lo, hi)]


def write_log(directory: Path, batches: list[list[Entry]], segment_size: int = 1 << 20) -> None:
    store = open_log(directory, segment_size=segment_size)
    try:
        for batch in batches:
            store.append(batch)
    finally:
        store.close()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("segment-*.log"))


def record_offsets(entries: list[Entry]) -> list[int]:
    """Return the offset of each record, and the end of the last, in a single segment."""
    offsets = [SEGMENT_HEADER.size]
    for written in entries:
        offsets.append(offsets[-1] + RECORD_HEADER.size + len(written.data))
    return offsets


def read_all(directory: Path) -> list[Entry]:
    store = open_log(directory)
    try:
        return store.entries(store.first_index(), store.last_index() + 1)
    finally:
        store.close()


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_truncating_the_last_record_at_every_offset_keeps_the_intact_prefix(tmp_path: Path) -> None:
    """A write torn at any byte of the last record loses exactly that record."""
    written = run(1, 6)
    write_log(tmp_path, [[e] for e in written])
    (segment,) = segments(tmp_path)
    original = segment.read_bytes()
    offsets = record_offsets(written)
    assert offsets[-1] == len(original)
    for cut in range(offsets[-2], offsets[-1]):
        segment.write_bytes(original[:cut])
        assert read_all(tmp_path) == written[:-1], cut
        assert segment.stat().st_size == offsets[-2]


def test_truncating_anywhere_keeps_exactly_the_whole_records_before_the_cut(
    tmp_path: Path,
) -> None:
    """For a cut at any offset past the header, the records wholly before it survive."""
    written = run(1, 5)
    write_log(tmp_path, [written[:2], written[2:3], written[3:]])
    (segment,) = segments(tmp_path)
    original = segment.read_bytes()
    offsets = record_offsets(written)
    for cut in range(SEGMENT_HEADER.size, len(original) + 1):
        segment.write_bytes(original[:cut])
        whole = sum(1 for end in offsets[1:] if end <= cut)
        assert read_all(tmp_path) == written[:whole], cut


def test_log_cut_at_a_torn_tail_accepts_new_appends(tmp_path: Path) -> None:
    """After a torn tail is cut, appends continue at the cut and survive a restart."""
    written = run(1, 4)
    write_log(tmp_path, [[e] for e in written])
    (segment,) = segments(tmp_path)
    segment.write_bytes(segment.read_bytes()[:-3])
    store = open_log(tmp_path)
    try:
        assert store.last_index() == 2
        store.append(run(3, 6, term=2))
    finally:
        store.close()
    assert read_all(tmp_path) == run(1, 3) + run(3, 6, term=2)


def test_flipping_any_byte_of_the_tail_record_cuts_it(tmp_path: Path) -> None:
    """A damaged last record, wherever the damage is, is cut like a torn write."""
    written = run(1, 5)
    write_log(tmp_path, [[e] for e in written])
    (segment,) = segments(tmp_path)
    original = segment.read_bytes()
    offsets = record_offsets(written)
    for offset in range(offsets[-2], offsets[-1]):
        segment.write_bytes(original)
        flip(segment, offset)
        assert read_all(tmp_path) == written[:-1], offset


def test_flipping_any_byte_of_a_middle_record_raises(tmp_path: Path) -> None:
    """Damage followed by an intact later batch is corruption: CorruptLogError with the offset."""
    written = run(1, 6)
    write_log(tmp_path, [[e] for e in written])
    (segment,) = segments(tmp_path)
    original = segment.read_bytes()
    offsets = record_offsets(written)
    for offset in range(offsets[2], offsets[3]):
        segment.write_bytes(original)
        flip(segment, offset)
        with pytest.raises(CorruptLogError) as caught:
            open_log(tmp_path)
        assert caught.value.path == str(segment)
        assert caught.value.offset == offsets[2]
        assert str(segment) in str(caught.value)
    assert segment.read_bytes() != original  # nothing was cut
    segment.write_bytes(original)
    assert read_all(tmp_path) == written


def test_damage_inside_the_final_batch_is_cut_as_a_torn_write(tmp_path: Path) -> None:
    """Pages of the last, unsynced batch may land out of order: cut at the first damage."""
    write_log(tmp_path, [run(1, 3), run(3, 8)])
    (segment,) = segments(tmp_path)
    offsets = record_offsets(run(1, 8))
    data = bytearray(segment.read_bytes())
    data[offsets[4] : offsets[6]] = bytes(offsets[6] - offsets[4])  # records 5 and 6 zeroed
    segment.write_bytes(bytes(data))
    assert read_all(tmp_path) == run(1, 5)


def test_damage_before_the_final_batch_raises(tmp_path: Path) -> None:
    """Zeroed records in an earlier batch, with the final batch intact, are corruption."""
    write_log(tmp_path, [run(1, 3), run(3, 8)])
    (segment,) = segments(tmp_path)
    offsets = record_offsets(run(1, 8))
    data = bytearray(segment.read_bytes())
    data[offsets[1] : offsets[2]] = bytes(offsets[2] - offsets[1])  # record 2 zeroed
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="later batch"):
        open_log(tmp_path)


def test_zeros_after_the_last_record_are_free_space(tmp_path: Path) -> None:
    """Zeros after the records (size persisted, data not) hold no entry; appends go there."""
    write_log(tmp_path, [run(1, 4)])
    (segment,) = segments(tmp_path)
    with segment.open("ab") as grown:
        grown.write(bytes(8 << 20))
    assert read_all(tmp_path) == run(1, 4)
    store = open_log(tmp_path)
    try:
        store.append(run(4, 6))
    finally:
        store.close()
    assert read_all(tmp_path) == run(1, 6)


def test_random_garbage_after_the_last_record_is_cut(tmp_path: Path) -> None:
    """Noise after the tail (no intact record of a later batch inside) is cut."""
    write_log(tmp_path, [run(1, 4)])
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as grown:
        grown.write(random.Random(7).randbytes(64 * 1024))
    assert read_all(tmp_path) == run(1, 4)
    assert segment.stat().st_size == size


def test_damage_in_a_segment_that_is_not_the_last_raises(tmp_path: Path) -> None:
    """Only the last segment can hold a torn write: a short earlier segment is corruption."""
    write_log(tmp_path, [[e] for e in run(1, 40)], segment_size=512)
    first = segments(tmp_path)[0]
    first.write_bytes(first.read_bytes()[:-1])
    with pytest.raises(CorruptLogError, match="not the last") as caught:
        open_log(tmp_path)
    assert caught.value.path == str(first)


def test_missing_segment_raises(tmp_path: Path) -> None:
    """A hole in the segment sequence is reported, never skipped over."""
    write_log(tmp_path, [run(1, 40)], segment_size=512)
    missing = segments(tmp_path)[2]
    missing.unlink()
    with pytest.raises(CorruptLogError, match=missing.name):
        open_log(tmp_path)


def test_record_out_of_sequence_raises(tmp_path: Path) -> None:
    """A record with a valid checksum but a skipped index is corruption, even at the tail."""
    write_log(tmp_path, [run(1, 4)])
    (segment,) = segments(tmp_path)
    size = segment.stat().st_size
    with segment.open("ab") as appended:
        appended.write(encode_record(entry(5), 5))
    with pytest.raises(CorruptLogError, match="expected 4") as caught:
        open_log(tmp_path)
    assert caught.value.offset == size


def test_segment_starting_at_the_wrong_index_raises(tmp_path: Path) -> None:
    """Each segment must start right after the previous one ends."""
    write_log(tmp_path, [run(1, 40)], segment_size=512)
    second = segments(tmp_path)[1]
    data = second.read_bytes()
    second.write_bytes(encode_segment_header(1000) + data[SEGMENT_HEADER.size :])
    with pytest.raises(CorruptLogError, match="expected"):
        open_log(tmp_path)


def test_corrupt_or_missing_meta_raises(tmp_path: Path) -> None:
    """The meta file is checksummed; a log without one is refused."""
    write_log(tmp_path, [run(1, 4)])
    meta = tmp_path / "meta"
    original = meta.read_bytes()
    flip(meta, 10)
    with pytest.raises(CorruptLogError, match="meta"):
        open_log(tmp_path)
    meta.unlink()
    with pytest.raises(CorruptLogError, match="missing"):
        open_log(tmp_path)
    meta.write_bytes(original)
    assert read_all(tmp_path) == run(1, 4)


def test_leftover_temp_files_are_removed(tmp_path: Path) -> None:
    """Half-created segments and meta files (``*.tmp``) are deleted on open."""
    write_log(tmp_path, [run(1, 4)])
    (tmp_path / "segment-0000000000000002.log.tmp").write_bytes(b"half")
    (tmp_path / "meta.tmp").write_bytes(b"half")
    assert read_all(tmp_path) == run(1, 4)
    assert not list(tmp_path.glob("*.tmp"))


def test_crash_while_replacing_a_suffix_leaves_a_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after deleting the newest segment, before the rest, leaves a valid prefix."""
    write_log(tmp_path, [run(1, 60)], segment_size=512)
    count = len(segments(tmp_path))
    store = open_log(tmp_path, segment_size=512)

    def crash(directory: str) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(files, "fsync_dir", crash)
    with pytest.raises(OSError):
        store.append(run(3, 5, term=2))
    store.close()
    monkeypatch.undo()
    assert len(segments(tmp_path)) == count - 1
    recovered = read_all(tmp_path)
    assert recovered == run(1, len(recovered) + 1)
    assert len(recovered) < 59


def test_crash_during_reset_leaves_the_old_or_the_empty_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reset() is atomic: before its meta write the old log, after it an empty one."""
    write_log(tmp_path, [run(1, 30)], segment_size=512)
    saved = {path.name: path.read_bytes() for path in segments(tmp_path)}
    store = open_log(tmp_path, segment_size=512)
    store.reset(500)
    store.close()
    for name, data in saved.items():  # as if the deletions never reached the disk
        (tmp_path / name).write_bytes(data)
    store = open_log(tmp_path, segment_size=512)
    try:
        assert (store.first_index(), store.last_index()) == (500, 499)
        assert len(segments(tmp_path)) == 1
    finally:
        store.close()

    def crash(self: FileLogStore, seq: int, first_index: int) -> None:
        raise OSError("simulated crash")

    monkeypatch.setattr(FileLogStore, "_create_segment", crash)
    store = open_log(tmp_path, segment_size=512)
    with pytest.raises(OSError):
        store.reset(900)
    store.close()
    monkeypatch.undo()
    store = open_log(tmp_path, segment_size=512)
    try:
        assert (store.first_index(), store.last_index()) == (900, 899)
        store.append([entry(900)])
    finally:
        store.close()
    assert read_all(tmp_path) == [entry(900)]


def test_crash_during_compaction_keeps_the_new_first_index(tmp_path: Path) -> None:
    """Segments that compaction failed to delete are removed on the next open."""
    write_log(tmp_path, [run(1, 60)], segment_size=512)
    backup = tmp_path.parent / "backup"
    shutil.copytree(tmp_path, backup)
    store = open_log(tmp_path, segment_size=512)
    store.compact(40)
    store.close()
    for path in segments(backup):
        if not (tmp_path / path.name).exists():
            shutil.copy(path, tmp_path / path.name)
    store = open_log(tmp_path, segment_size=512)
    try:
        assert (store.first_index(), store.last_index()) == (41, 59)
        assert store.entries(41, 60) == run(41, 60)
    finally:
        store.close()
    assert len(segments(tmp_path)) < len(segments(backup))


def test_unknown_record_version_is_never_cut(tmp_path: Path) -> None:
    """A tail record with a valid checksum but an unknown version stops the node."""
    write_log(tmp_path, [run(1, 3)])
    (segment,) = segments(tmp_path)
    record = bytearray(encode_record(entry(3), 3))
    record[29] = 9  # version byte
    record[:4] = zlib.crc32(bytes(record[4:])).to_bytes(4, "little")
    with segment.open("ab") as appended:
        appended.write(bytes(record))
    with pytest.raises(CorruptLogError, match="version"):
        open_log(tmp_path)


def test_reads_verify_checksums(tmp_path: Path) -> None:
    """Bytes damaged after open are reported by entries(), not returned."""
    write_log(tmp_path, [run(1, 4)])
    store = open_log(tmp_path)
    try:
        (segment,) = segments(tmp_path)
        with segment.open("r+b") as damaged:
            damaged.seek(record_offsets(run(1, 4))[1] + RECORD_HEADER.size)
            damaged.write(b"X")
        assert store.entries(1, 2) == run(1, 2)
        with pytest.raises(CorruptLogError):
            store.entries(1, 4)
    finally:
        store.close()
    assert os.path.exists(tmp_path / "meta")


# ------------------------------------------------------- preallocated segments

SEGMENT = 4096


def open_preallocated(directory: Path) -> FileLogStore:
    return FileLogStore(directory, segment_size=SEGMENT, preallocate=True)


def write_preallocated(directory: Path, batches: list[list[Entry]]) -> None:
    store = open_preallocated(directory)
    try:
        for batch in batches:
            store.append(batch)
    finally:
        store.close()


def read_preallocated(directory: Path) -> list[Entry]:
    store = open_preallocated(directory)
    try:
        return store.entries(store.first_index(), store.last_index() + 1)
    finally:
        store.close()


def test_preallocated_segment_keeps_its_size_and_reopens_without_a_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The segment is created at full size; appends and a clean reopen leave it so."""
    store = open_preallocated(tmp_path)
    (segment,) = segments(tmp_path)
    assert segment.stat().st_size == SEGMENT
    try:
        store.append(run(1, 4))
        store.append(run(4, 6))
    finally:
        store.close()
    assert segment.stat().st_size == SEGMENT
    with caplog.at_level("WARNING"):
        assert read_preallocated(tmp_path) == run(1, 6)
    assert "cut" not in caplog.text
    assert segment.stat().st_size == SEGMENT


def test_torn_write_into_preallocated_space_loses_exactly_the_torn_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record torn at any byte, zeros after it, is cut and logged; the space stays reserved."""
    written = run(1, 6)
    write_preallocated(tmp_path, [[e] for e in written])
    (segment,) = segments(tmp_path)
    original = segment.read_bytes()
    offsets = record_offsets(written)
    assert len(original) == SEGMENT and not any(original[offsets[-1] :])
    caplog.set_level("WARNING")
    for cut in range(offsets[-2], offsets[-1]):
        torn = original[:cut] + bytes(SEGMENT - cut)
        segment.write_bytes(torn)
        assert read_preallocated(tmp_path) == written[:-1], cut
        assert segment.stat().st_size == SEGMENT
        assert not any(segment.read_bytes()[offsets[-2] :]), cut  # the torn bytes are gone
    assert "torn write" in caplog.text


def test_appends_after_a_torn_preallocated_tail_survive_a_restart(tmp_path: Path) -> None:
    """After the cut, new records go where the torn one was and read back after a restart."""
    written = run(1, 4)
    write_preallocated(tmp_path, [[e] for e in written])
    (segment,) = segments(tmp_path)
    offsets = record_offsets(written)
    data = bytearray(segment.read_bytes())
    data[offsets[-1] - 3 : offsets[-1]] = bytes(3)  # the last record's end never landed
    segment.write_bytes(bytes(data))
    store = open_preallocated(tmp_path)
    try:
        assert store.last_index() == 2
        store.append(run(3, 6, term=2))
    finally:
        store.close()
    assert read_preallocated(tmp_path) == run(1, 3) + run(3, 6, term=2)


def test_rollover_preallocates_each_new_segment(tmp_path: Path) -> None:
    """Every segment is created at the segment size; all entries read back across them."""
    written = [Entry(i, 1, data=b"x" * 700) for i in range(1, 30)]
    write_preallocated(tmp_path, [written[i : i + 3] for i in range(0, len(written), 3)])
    files_ = segments(tmp_path)
    assert len(files_) > 3
    assert all(path.stat().st_size == SEGMENT for path in files_)
    assert read_preallocated(tmp_path) == written
