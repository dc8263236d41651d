"""Review findings on seats in snapshot files, fixed and kept so."""

from __future__ import annotations

import json

import pytest

from leeky_twisted.storage.errors import CorruptSnapshotError
from leeky_twisted.storage.files import _decode_snapshot_meta

BASE = {"index": 9, "term": 2, "voters": ["n1", "n2"], "learners": []}


def test_a_seat_named_twice_in_a_snapshot_header_is_refused():
    body = json.dumps({**BASE, "storage": [["n2", 5], ["n2", 6]]}).encode()
    with pytest.raises(CorruptSnapshotError):
        _decode_snapshot_meta(body, "snap")


@pytest.mark.parametrize("node", [["n2"], {"n": 2}])
def test_a_seat_naming_no_node_id_is_refused_cleanly(node):
    body = json.dumps({**BASE, "storage": [[node, 5]]}).encode()
    with pytest.raises(CorruptSnapshotError):
        _decode_snapshot_meta(body, "snap")
