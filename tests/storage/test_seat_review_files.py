"""Review findings on seats in snapshot files (xfail(strict=True) until fixed)."""

from __future__ import annotations

import json

import pytest

from leeky_twisted.storage.errors import CorruptSnapshotError
from leeky_twisted.storage.files import _decode_snapshot_meta

BASE = {"index": 9, "term": 2, "voters": ["n1", "n2"], "learners": []}


@pytest.mark.xfail(
    strict=True,
    reason="finding 4a: a snapshot header naming a seat twice is accepted (the wire "
    "codec refuses it, so such a snapshot could never be sent to a follower)",
)
def test_a_seat_named_twice_in_a_snapshot_header_is_refused():
    body = json.dumps({**BASE, "storage": [["n2", 5], ["n2", 6]]}).encode()
    with pytest.raises(CorruptSnapshotError):
        _decode_snapshot_meta(body, "snap")


@pytest.mark.xfail(
    strict=True,
    raises=TypeError,
    reason="finding 4b: a seat whose node is not a string raises TypeError (unhashable) "
    "instead of CorruptSnapshotError: a traceback instead of the recovery message",
)
@pytest.mark.parametrize("node", [["n2"], {"n": 2}])
def test_a_seat_naming_no_node_id_is_refused_cleanly(node):
    body = json.dumps({**BASE, "storage": [[node, 5]]}).encode()
    with pytest.raises(CorruptSnapshotError):
        _decode_snapshot_meta(body, "snap")
