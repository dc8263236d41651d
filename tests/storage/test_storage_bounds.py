"""Impossible values on disk are clear storage errors naming the file; stores never write them.

Issue 19, finding 3: a term of 2**64-1, once persisted, bricked a node for good.
The decoders here see checksummed bytes holding such values (written as a
damaged disk or an old bug would, bypassing the stores' own checks) and must
refuse them with one clear CorruptStorageError, never load them.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_TERM,
    Configuration,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    SnapshotMeta,
)
from leeky_twisted.storage import files
from leeky_twisted.storage.errors import (
    CorruptHardStateError,
    CorruptLogError,
    CorruptSnapshotError,
)
from leeky_twisted.storage.files import FileLogStore, FileSnapshotStore, FileStableStore
from leeky_twisted.storage.memory import MemoryLogStore, MemorySnapshotStore, MemoryStableStore
from leeky_twisted.storage.segments import (
    META,
    META_MAGIC,
    SEGMENT_HEADER,
    decode_meta,
    encode_meta,
    encode_record,
    encode_segment_header,
    scan_segment,
)

HUGE = 2**64 - 1
PATH = "/data/x"
#: Integers around every bound, and anywhere in 64 bits.
numbers = st.one_of(
    st.sampled_from([-1, 0, 1, MAX_INDEX, MAX_INDEX + 1, MAX_TERM, MAX_TERM + 1, HUGE, 2**64]),
    st.integers(-(2**70), 2**70),
)


def hard_state_file(fields: object) -> bytes:
    """Return a hard state file with a valid header and checksum around ``fields`` as JSON."""
    payload = json.dumps(fields).encode("utf-8")
    return (
        files._HARD_STATE_HEADER.pack(files._HARD_STATE_MAGIC, zlib.crc32(payload), len(payload))
        + payload
    )


# ------------------------------------------------------------------ hard state


def test_hard_state_with_huge_term_is_a_clear_storage_error(tmp_path: Path) -> None:
    """A checksummed hard state file with term 2**64-1 fails to load, naming the file."""
    path = tmp_path / "hard_state"
    path.write_bytes(hard_state_file({"term": HUGE, "voted_for": "n1", "commit": 0}))
    with pytest.raises(CorruptHardStateError, match="term 18446744073709551615") as caught:
        FileStableStore(path).load()
    assert caught.value.path == str(path)


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize(
    "hard_state",
    [HardState(MAX_TERM + 1), HardState(HUGE, NodeId("n1")), HardState(1, None, MAX_INDEX + 1)],
)
def test_stable_stores_refuse_to_save_impossible_values(
    tmp_path: Path, kind: str, hard_state: HardState
) -> None:
    """Neither stable store saves a term or commit it could not load again; the old one stays."""
    store = MemoryStableStore() if kind == "memory" else FileStableStore(tmp_path / "hs")
    store.save(HardState(3, NodeId("n1"), 2))
    with pytest.raises(ValueError, match="outside"):
        store.save(hard_state)
    assert store.load() == HardState(3, NodeId("n1"), 2)


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_stable_stores_keep_the_largest_valid_values(tmp_path: Path, kind: str) -> None:
    """MAX_TERM and MAX_INDEX themselves are saved and loaded back."""
    store = MemoryStableStore() if kind == "memory" else FileStableStore(tmp_path / "hs")
    store.save(HardState(MAX_TERM, NodeId("n1"), MAX_INDEX))
    if kind == "file":
        store = FileStableStore(tmp_path / "hs")
    assert store.load() == HardState(MAX_TERM, NodeId("n1"), MAX_INDEX)


@settings(max_examples=300, deadline=None)
@given(term=numbers, commit=numbers, voted_for=st.one_of(st.none(), st.text(max_size=5), numbers))
def test_fuzz_hard_state_fields(term: int, commit: int, voted_for: object) -> None:
    """Any checksummed field values load within bounds or raise CorruptHardStateError."""
    buf = hard_state_file({"term": term, "voted_for": voted_for, "commit": commit})
    try:
        loaded = files._decode_hard_state(buf, PATH)
    except CorruptHardStateError as e:
        assert e.path == PATH
        return
    assert 0 <= loaded.term <= MAX_TERM and 0 <= loaded.commit <= MAX_INDEX
    assert loaded.voted_for is None or isinstance(loaded.voted_for, str)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=80), fix_checksum=st.booleans())
def test_fuzz_hard_state_bytes(payload: bytes, fix_checksum: bool) -> None:
    """Random payloads (with or without a matching checksum) only raise CorruptHardStateError."""
    crc = zlib.crc32(payload) if fix_checksum else 0
    buf = files._HARD_STATE_HEADER.pack(files._HARD_STATE_MAGIC, crc, len(payload)) + payload
    try:
        loaded = files._decode_hard_state(buf, PATH)
    except CorruptHardStateError:
        return
    assert 0 <= loaded.term <= MAX_TERM and 0 <= loaded.commit <= MAX_INDEX


# ------------------------------------------------------------------ log segments


def test_log_record_with_huge_term_is_a_clear_storage_error(tmp_path: Path) -> None:
    """A checksummed record with term 2**64-1 stops the log from opening, naming the segment."""
    store = FileLogStore(tmp_path, preallocate=False)
    store.append([Entry(1, 1)])
    store.close()
    (segment,) = tmp_path.glob("segment-*.log")
    with segment.open("ab") as f:
        f.write(encode_record(Entry(2, HUGE), 2))
    with pytest.raises(CorruptLogError, match="impossible term") as caught:
        FileLogStore(tmp_path, preallocate=False)
    assert caught.value.path == str(segment)


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize(
    "batch",
    [[Entry(1, MAX_TERM + 1)], [Entry(1, 1), Entry(2, HUGE)]],
    ids=["term-past-max", "huge-term-second"],
)
def test_log_stores_refuse_to_append_impossible_terms(
    tmp_path: Path, kind: str, batch: list[Entry]
) -> None:
    """Neither log store appends an entry whose term it could not send or read back."""
    store = MemoryLogStore() if kind == "memory" else FileLogStore(tmp_path, preallocate=False)
    with pytest.raises(ValueError, match="outside"):
        store.append(batch)
    assert store.last_index() == 0
    store.close()


def _segment(records: list[bytes], first_index: int = 1) -> bytes:
    return encode_segment_header(first_index) + b"".join(records)


any_u64 = st.integers(0, 2**64 - 1)


@st.composite
def segments(draw: st.DrawFn) -> bytes:
    """A segment of checksummed records, mostly in index order, with any 64-bit terms.

    The checksums always match, so the checks behind them are what is fuzzed.
    """
    first = draw(
        st.one_of(st.sampled_from([1, 2, MAX_INDEX - 1, MAX_INDEX, MAX_INDEX + 1]), any_u64)
    )
    parts = []
    for i in range(draw(st.integers(0, 4))):
        index = draw(st.one_of(st.just(first + i), any_u64))
        term = draw(st.one_of(st.sampled_from([0, 1, MAX_TERM, MAX_TERM + 1, HUGE]), any_u64))
        data = draw(st.binary(max_size=16))
        if index > HUGE:
            continue
        batch_first = draw(st.sampled_from([first, index, max(0, index - 2**32 + 1)]))
        if not index - 2**32 < batch_first <= index:
            batch_first = index
        parts.append(
            encode_record(Entry(index, term, draw(st.sampled_from(EntryKind)), data), batch_first)
        )
    return _segment(parts, min(first, HUGE))


def _check_scan(buf: bytes, is_last: bool) -> None:
    try:
        scan = scan_segment(buf, PATH, is_last=is_last)
    except CorruptLogError as e:
        assert e.path == PATH
        return
    assert all(term <= MAX_TERM for term in scan.terms)
    assert scan.first_index >= 1 and scan.first_index + len(scan.offsets) - 1 <= MAX_INDEX


@settings(max_examples=300, deadline=None)
@given(buf=segments(), last=st.booleans())
def test_fuzz_segments_of_checksummed_records(buf: bytes, last: bool) -> None:
    """Checksummed records holding any values scan within bounds or raise CorruptLogError."""
    _check_scan(buf, last)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=120), last=st.booleans())
def test_fuzz_segment_random_bytes(data: bytes, last: bool) -> None:
    """A valid header followed by random bytes only raises CorruptLogError."""
    _check_scan(encode_segment_header(1) + data, last)
    _check_scan(data, last)


@settings(max_examples=200, deadline=None)
@given(first_index=st.integers(0, 2**64 - 1), first_seq=st.integers(0, 2**64 - 1))
def test_fuzz_log_meta(first_index: int, first_seq: int) -> None:
    """A checksummed meta file with any values decodes within bounds or raises CorruptLogError."""
    try:
        index, seq = decode_meta(encode_meta(first_index, first_seq), PATH)
    except CorruptLogError:
        assert not (1 <= first_index <= MAX_INDEX + 1 and 1 <= first_seq < 10**16)
        return
    assert (index, seq) == (first_index, first_seq)
    assert 1 <= index <= MAX_INDEX + 1


def test_meta_and_segment_header_bounds() -> None:
    """A first index past MAX_INDEX + 1 is refused in the meta file and in a segment header."""
    with pytest.raises(CorruptLogError, match="impossible first index"):
        decode_meta(encode_meta(HUGE, 1), PATH)
    with pytest.raises(CorruptLogError, match="impossible first index"):
        scan_segment(_segment([], HUGE), PATH, is_last=True)
    assert META.size == len(encode_meta(1, 1)) and encode_meta(1, 1).startswith(META_MAGIC)
    assert SEGMENT_HEADER.size == len(encode_segment_header(1))


# ------------------------------------------------------------------ snapshots


def _meta_body(fields: object) -> bytes:
    return json.dumps(fields).encode("utf-8")


def test_snapshot_meta_with_huge_term_is_a_clear_storage_error() -> None:
    """A snapshot whose meta holds term 2**64-1 is refused, naming the file."""
    body = _meta_body({"index": 5, "term": HUGE, "voters": ["n1"], "learners": []})
    with pytest.raises(CorruptSnapshotError, match="impossible meta") as caught:
        files._decode_snapshot_meta(body, PATH)
    assert caught.value.path == PATH


def test_snapshot_meta_voters_must_be_a_list_of_ids() -> None:
    """A voters string is not read as one voter per character."""
    body = _meta_body({"index": 5, "term": 1, "voters": "n1n2", "learners": []})
    with pytest.raises(CorruptSnapshotError):
        files._decode_snapshot_meta(body, PATH)


def test_snapshot_meta_round_trips_at_the_bounds() -> None:
    """The largest valid index and term survive the snapshot header."""
    meta = SnapshotMeta(MAX_INDEX, MAX_TERM, Configuration(frozenset({NodeId("n1")})))
    header = files._encode_snapshot_header(meta)
    assert files._decode_snapshot_meta(header[files._SNAPSHOT_HEADER.size :], PATH) == meta


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=4)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    index=numbers,
    term=numbers,
    voters=json_values,
    learners=json_values,
    extra=st.one_of(st.none(), json_values),
)
def test_fuzz_snapshot_meta(index, term, voters, learners, extra) -> None:
    """Any JSON meta decodes within bounds or raises CorruptSnapshotError, nothing else."""
    fields = {"index": index, "term": term, "voters": voters, "learners": learners}
    body = _meta_body(fields if extra is None else extra)
    try:
        meta = files._decode_snapshot_meta(body, PATH)
    except CorruptSnapshotError:
        return
    assert 0 <= meta.index <= MAX_INDEX and 0 <= meta.term <= MAX_TERM
    assert all(isinstance(n, str) for n in meta.config.voters | meta.config.learners)


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_log_stores_refuse_to_start_past_max_index(tmp_path: Path, kind: str) -> None:
    """reset or compact past MAX_INDEX + 1 would write a first index no store reads back."""
    store = MemoryLogStore() if kind == "memory" else FileLogStore(tmp_path, preallocate=False)
    with pytest.raises(ValueError, match="next_index"):
        store.reset(MAX_INDEX + 2)
    with pytest.raises(ValueError, match="next_index"):
        store.compact(HUGE)
    store.reset(MAX_INDEX + 1)
    assert store.first_index() == MAX_INDEX + 1
    store.close()
    if kind == "file":
        reopened = FileLogStore(tmp_path, preallocate=False)
        assert reopened.first_index() == MAX_INDEX + 1
        reopened.close()


@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize(("index", "term"), [(MAX_INDEX + 1, 1), (5, MAX_TERM + 1), (5, HUGE)])
def test_snapshot_stores_refuse_impossible_metas(
    tmp_path: Path, kind: str, index: int, term: int
) -> None:
    """No snapshot is started whose index or term could not be read back."""
    store = MemorySnapshotStore() if kind == "memory" else FileSnapshotStore(tmp_path)
    meta = SnapshotMeta(index, term, Configuration(frozenset({NodeId("n1")})))
    with pytest.raises(ValueError, match="out of bounds"):
        store.create(meta)
    assert store.latest() is None
