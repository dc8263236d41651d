"""Argument rules shared by every ILogStore implementation.

Keeping them in one place makes the memory and file stores agree on the
edges, which the contract tests in ``tests/storage`` check.
"""

from __future__ import annotations

from collections.abc import Sequence

from leeky_twisted.core.messages import (
    MAX_INDEX,
    MAX_STORAGE_ID,
    MAX_TERM,
    Entry,
    HardState,
    SnapshotMeta,
)


def check_append(entries: Sequence[Entry], first_index: int, last_index: int) -> Sequence[Entry]:
    """Validate a batch for ``append`` and return the part that must be stored.

    Raise ValueError when the indexes are not consecutive, start below 1,
    end above MAX_INDEX or leave a gap after ``last_index``, or when a term
    lies outside [0, MAX_TERM]: no store persists a value the node could not
    send or read back. Entries below ``first_index`` are already
    covered by a snapshot (so committed and identical) and are dropped, as
    etcd's ``MemoryStorage.Append`` does.
    """
    if not entries:
        return ()
    start = entries[0].index
    if start < 1:
        raise ValueError(f"log indexes start at 1, got {start}")
    for offset, entry in enumerate(entries):
        if entry.index != start + offset:
            raise ValueError(
                f"appended indexes must be consecutive: {entry.index} follows {start + offset - 1}"
            )
        if not 0 <= entry.term <= MAX_TERM:
            raise ValueError(f"entry {entry.index} has term {entry.term} outside [0, {MAX_TERM}]")
    if start + len(entries) - 1 > MAX_INDEX:
        raise ValueError(f"appended indexes must not pass {MAX_INDEX}")
    if start > last_index + 1:
        raise ValueError(f"append at {start} would leave a gap after last index {last_index}")
    if start < first_index:
        return entries[first_index - start :]
    return entries


def check_range(lo: int, hi: int, first_index: int, last_index: int) -> None:
    """Raise unless ``[lo, hi)`` lies within the stored entries.

    ValueError when ``lo > hi``; IndexError when part of the range is compacted
    (below ``first_index``) or missing (above ``last_index``).
    """
    if lo > hi:
        raise ValueError(f"empty range: lo {lo} > hi {hi}")
    if lo < first_index:
        raise IndexError(f"entries before {first_index} are compacted (asked from {lo})")
    if hi > last_index + 1:
        raise IndexError(f"entries after {last_index} are missing (asked up to {hi - 1})")


def check_max_bytes(max_bytes: int | None) -> None:
    """Raise ValueError unless ``max_bytes`` is None or positive."""
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")


def _is_count(value: object, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def hard_state_error(hard_state: HardState) -> str | None:
    """Return why ``hard_state`` must not be saved or loaded, or None.

    Its term must lie in [0, MAX_TERM], its commit in [0, MAX_INDEX] and
    voted_for be None or a node id: a store never keeps a state the node
    could not send or read back.
    """
    if not _is_count(hard_state.term, MAX_TERM):
        return f"term {hard_state.term!r} outside [0, {MAX_TERM}]"
    if not _is_count(hard_state.commit, MAX_INDEX):
        return f"commit {hard_state.commit!r} outside [0, {MAX_INDEX}]"
    if hard_state.voted_for is not None and not isinstance(hard_state.voted_for, str):
        return f"voted_for {hard_state.voted_for!r} is not a node id"
    if not _is_count(hard_state.storage_id, MAX_STORAGE_ID):
        return f"storage_id {hard_state.storage_id!r} outside [0, {MAX_STORAGE_ID}]"
    if not _is_count(hard_state.caught_up, MAX_INDEX):
        return f"caught_up {hard_state.caught_up!r} outside [0, {MAX_INDEX}]"
    return None


def check_next_index(next_index: int) -> None:
    """Raise ValueError unless ``next_index`` lies in [1, MAX_INDEX + 1] (reset, compaction)."""
    if not 1 <= next_index <= MAX_INDEX + 1:
        raise ValueError(f"next_index must be from 1 to {MAX_INDEX + 1}, got {next_index}")


def check_snapshot_meta(meta: SnapshotMeta) -> None:
    """Raise ValueError unless the snapshot's index and term are within the bounds."""
    if not (_is_count(meta.index, MAX_INDEX) and _is_count(meta.term, MAX_TERM)):
        raise ValueError(f"snapshot index {meta.index!r} or term {meta.term!r} out of bounds")
