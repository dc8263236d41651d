"""A proposer's own commands: applied without decoding their bytes again, same outcome."""

from __future__ import annotations

import pytest

from leeky_twisted.statemachine import kv as kvmodule
from leeky_twisted.statemachine.commands import (
    Compare,
    Put,
    RegisterSession,
    Session,
    Txn,
    encode_command,
)
from leeky_twisted.statemachine.kv import MAX_EXPECTED, KeyValueStateMachine


def _entries() -> list[tuple[bytes, object]]:
    sid = "1.n"
    txn = Txn(
        (Compare("a", "value", "==", "1"), Compare("b", "version", "==", 0)),
        (Put("a", "2"), Put("b", "x", None, 0)),
        (),
        Session(sid, 2, 2),
    )
    commands = [RegisterSession("n"), Put("a", "1", Session(sid, 1, 1)), txn]
    return [(encode_command(c), c) for c in commands]


def test_an_expected_entry_is_applied_without_decoding_and_gives_the_same_state(monkeypatch):
    """After expect(), apply takes the command, not decode_command; same state and results."""
    decoded = []
    real = kvmodule.decode_command
    monkeypatch.setattr(kvmodule, "decode_command", lambda b: decoded.append(b) or real(b))
    plain, leader = KeyValueStateMachine(), KeyValueStateMachine()
    for index, (data, command) in enumerate(_entries(), 1):
        leader.expect(data, command)
        assert leader.apply(index, data) == plain.apply(index, data)
    assert len(decoded) == 3  # the plain machine's only
    assert leader.snapshot() == plain.snapshot()
    assert leader._expected == {}  # each taken once


def test_expected_entries_are_bounded_and_other_bytes_still_decode():
    """A proposal that never commits is forgotten past MAX_EXPECTED; unknown bytes decode."""
    sm = KeyValueStateMachine()
    for i in range(MAX_EXPECTED + 10):
        command = Put(f"k{i}", "v")
        sm.expect(encode_command(command), command)
    assert len(sm._expected) == MAX_EXPECTED
    assert sm.apply(1, bytearray(encode_command(Put("z", "1")))) is None
    assert sm.query(kvmodule.Get("z")) == "1"
    assert isinstance(sm.apply(2, b"not a command"), kvmodule.CommandError)


@pytest.mark.parametrize("restore", [True, False])
def test_a_restore_forgets_expected_entries(restore):
    """After a snapshot replaces the state, nothing expected before it is kept."""
    sm = KeyValueStateMachine()
    command = Put("k", "v")
    sm.expect(encode_command(command), command)
    if restore:
        sm.restore(KeyValueStateMachine().snapshot())
    assert bool(sm._expected) is not restore
