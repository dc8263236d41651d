"""Tests for the key-value state machine: semantics, sessions, snapshots."""

from __future__ import annotations

import json

import pytest
from zope.interface.verify import verifyObject

from leeky_twisted.interfaces import IStateMachine
from leeky_twisted.statemachine.commands import (
    Append,
    Cas,
    Delete,
    Get,
    Put,
    RegisterSession,
    Session,
    encode_command,
)
from leeky_twisted.statemachine.kv import CommandError, KeyValueStateMachine, UnknownSession


class Applier:
    """Apply commands at consecutive indexes."""

    def __init__(self, sm: KeyValueStateMachine, start: int = 1) -> None:
        self.sm = sm
        self.index = start - 1

    def __call__(self, command):
        self.index += 1
        data = command if isinstance(command, bytes) else encode_command(command)
        return self.sm.apply(self.index, data)

    def register(self) -> str:
        """Open a session at the next index; return its id."""
        session_id = self(RegisterSession(f"n{self.index + 1}"))
        assert isinstance(session_id, str)
        return session_id


@pytest.fixture
def sm():
    return KeyValueStateMachine()


@pytest.fixture
def apply(sm):
    return Applier(sm)


def test_provides_istatemachine(sm):
    """KeyValueStateMachine provides IStateMachine."""
    assert verifyObject(IStateMachine, sm)


def test_put_then_query_returns_value(sm, apply):
    """A put returns None and the value is then readable."""
    assert apply(Put("k", "v")) is None
    assert sm.query(Get("k")) == "v"
    assert sm.query(Get("missing")) is None


def test_delete_reports_whether_the_key_existed(sm, apply):
    """Delete returns True for a present key and False for an absent one."""
    apply(Put("k", "v"))
    assert apply(Delete("k")) is True
    assert apply(Delete("k")) is False
    assert sm.query(Get("k")) is None


def test_cas_swaps_only_on_a_match(sm, apply):
    """Cas swaps when the current value equals expected; None expects absence."""
    assert apply(Cas("k", "x", "1")) is False
    assert apply(Cas("k", None, "1")) is True
    assert apply(Cas("k", None, "2")) is False
    assert apply(Cas("k", "1", "2")) is True
    assert sm.query(Get("k")) == "2"


def test_append_returns_the_new_length(sm, apply):
    """Append treats an absent key as empty and returns the new length."""
    assert apply(Append("k", "ab")) == 2
    assert apply(Append("k", "c")) == 3
    assert sm.query(Get("k")) == "abc"


def test_get_through_the_log_returns_the_value(apply):
    """A GET command in the log returns the value at that point."""
    apply(b"PUT pizzatoppings peporoni peppr cheddar")
    assert apply(b"GET pizzatoppings") == "peporoni peppr cheddar"
    assert apply(b"DELETE pizzatoppings") is True
    assert apply(b"GET pizzatoppings") is None


def test_query_rejects_unknown_requests(sm):
    """Anything but a Get query is a TypeError."""
    with pytest.raises(TypeError):
        sm.query(("get", "k"))


def test_index_at_or_below_last_applied_is_ignored(sm):
    """Re-applying an old index changes nothing; gaps are allowed."""
    sm.apply(5, encode_command(Put("k", "v1")))
    assert sm.last_applied == 5
    assert sm.apply(5, encode_command(Put("k", "v2"))) is None
    assert sm.apply(3, encode_command(Put("k", "v3"))) is None
    assert sm.query(Get("k")) == "v1"
    sm.apply(9, encode_command(Put("k", "v4")))
    assert (sm.last_applied, sm.query(Get("k"))) == (9, "v4")


@pytest.mark.parametrize("data", [b"", b"\xff", b"FROB x", b'["put"]', b"[[[["])
def test_bad_commands_yield_an_error_result_and_advance(sm, data):
    """A committed command that cannot be decoded yields a CommandError, deterministically."""
    result = sm.apply(1, data)
    assert isinstance(result, CommandError)
    assert "rejected command" in result.message
    other = KeyValueStateMachine()
    assert other.apply(1, data) == result
    assert sm.last_applied == 1


def test_register_applies_to_a_new_session_id_named_by_index_and_nonce(sm, apply):
    """A register entry opens a session whose id is "<index>.<nonce>", the same on every replica."""
    apply(Put("k", "v"))
    assert apply(RegisterSession("n0nce")) == "2.n0nce"
    assert sm.session_ids() == ["2.n0nce"]
    other = KeyValueStateMachine()
    assert other.apply(2, encode_command(RegisterSession("n0nce"))) == "2.n0nce"


def test_retried_session_command_returns_cached_result_without_reapplying(sm, apply):
    """A retry of (session, seq) returns the first result and is not applied again."""
    c = apply.register()
    s = Session(c, 1, 1)
    assert apply(Append("k", "x", s)) == 1
    assert apply(Append("k", "x", s)) == 1
    assert sm.query(Get("k")) == "x"
    assert apply(Append("k", "x", Session(c, 2, 2))) == 2
    assert sm.query(Get("k")) == "xx"


def test_concurrent_requests_are_cached_until_acknowledged(sm, apply):
    """Results stay cached for every seq at or above the client's ack."""
    c = apply.register()
    assert apply(Append("k", "a", Session(c, 1, 1))) == 1
    assert apply(Append("k", "b", Session(c, 2, 1))) == 2
    assert apply(Append("k", "a", Session(c, 1, 1))) == 1  # retry of seq 1 still cached
    assert apply(Append("k", "c", Session(c, 3, 3))) == 3  # acknowledges 1 and 2
    stale = apply(Append("k", "a", Session(c, 1, 1)))
    assert isinstance(stale, CommandError)
    assert "stale" in stale.message
    assert sm.query(Get("k")) == "abc"


def test_sessions_of_different_clients_are_independent(sm, apply):
    """The same seq from two clients applies twice."""
    c1, c2 = apply.register(), apply.register()
    apply(Append("k", "a", Session(c1, 1, 1)))
    apply(Append("k", "b", Session(c2, 1, 1)))
    assert sm.query(Get("k")) == "ab"


def test_write_in_a_session_never_registered_is_refused_and_changes_nothing(sm, apply):
    """An unknown session id is refused with UnknownSession; no data, no session appears."""
    apply(Put("k", "v"))
    before = json.loads(sm.snapshot())
    refused = apply(Append("k", "x", Session("made-up", 1, 1)))
    assert isinstance(refused, UnknownSession)
    assert "unknown or expired" in refused.message
    after = json.loads(sm.snapshot())
    assert after["data"] == before["data"] and after["sessions"] == before["sessions"] == []
    assert sm.last_applied == 2


def test_retry_after_ttl_expiry_is_refused_not_applied_twice():
    """A session unused for session_ttl indexes is dropped: a late retry is refused."""
    sm = KeyValueStateMachine(session_ttl=3)
    apply = Applier(sm)
    c = apply.register()  # index 1
    s = Session(c, 1, 1)
    assert apply(Append("k", "x", s)) == 1  # index 2
    assert apply(Append("k", "x", s)) == 1  # index 3: cached; used again at 3
    apply(Put("other", "v"))  # 4
    apply(Put("other", "v"))  # 5
    assert sm.session_ids() == [c]
    apply(Put("other", "v"))  # 6 = 3 + ttl
    assert sm.session_ids() == []
    assert isinstance(apply(Append("k", "x", s)), UnknownSession)
    assert sm.query(Get("k")) == "x"


def test_retry_after_lru_eviction_is_refused_not_applied_twice():
    """Past max_sessions the oldest session is evicted; its retry is refused, not re-applied."""
    sm = KeyValueStateMachine(max_sessions=2)
    apply = Applier(sm)
    a = apply.register()
    assert apply(Append("k", "x", Session(a, 1, 1))) == 1  # the answer is lost: a will retry
    apply.register()
    apply.register()  # a third session evicts a, the least recently used
    assert a not in sm.session_ids()
    assert isinstance(apply(Append("k", "x", Session(a, 1, 1))), UnknownSession)
    assert sm.query(Get("k")) == "x"


def test_session_expiry_is_the_same_on_every_replica():
    """Two machines fed the same entries end with the same sessions and snapshot."""
    entries = [(i, encode_command(RegisterSession(f"n{i}"))) for i in range(1, 5)]
    entries += [
        (i, encode_command(Put(f"k{i}", "v", Session(f"{1 + i % 4}.n{1 + i % 4}", i, i))))
        for i in range(5, 40)
    ]
    a = KeyValueStateMachine(session_ttl=5, max_sessions=3)
    b = KeyValueStateMachine(session_ttl=5, max_sessions=3)
    for index, data in entries:
        assert a.apply(index, data) == b.apply(index, data)
    assert a.session_ids() == b.session_ids()
    assert a.snapshot() == b.snapshot()


def test_least_recently_used_session_is_evicted_past_max_sessions():
    """Beyond max_sessions, the least recently used session goes first."""
    sm = KeyValueStateMachine(max_sessions=2)
    apply = Applier(sm)
    a, b = apply.register(), apply.register()
    apply(Put("k", "1", Session(a, 1, 1)))
    c = apply.register()
    assert sm.session_ids() == [a, c]
    assert b not in sm.session_ids()


def test_legacy_session_entries_of_old_logs_keep_their_old_meaning(sm, apply):
    """An old-form entry ([client_id, seq, ack]) opens its session on first use, as before."""
    legacy = b'["append","k","x",["old-client",1,1]]'
    assert apply(legacy) == 1
    assert apply(legacy) == 1  # de-duplicated as before
    assert sm.session_ids() == ["old-client"]
    assert apply(Append("k", "y", Session("old-client", 2, 2))) == 2  # and it goes on
    assert sm.query(Get("k")) == "xy"


def test_cached_results_per_client_are_bounded():
    """Past max_results_per_session, the oldest results are forgotten."""
    sm = KeyValueStateMachine(max_results_per_session=2)
    apply = Applier(sm)
    c = apply.register()
    for seq in (1, 2, 3):
        apply(Append("k", "x", Session(c, seq, 1)))
    assert isinstance(apply(Append("k", "x", Session(c, 1, 1))), CommandError)
    assert apply(Append("k", "x", Session(c, 2, 1))) == 2
    assert sm.query(Get("k")) == "xxx"


def test_snapshot_restore_round_trip_keeps_data_sessions_and_index():
    """A restored machine answers, de-duplicates and snapshots like the original."""
    sm = KeyValueStateMachine()
    apply = Applier(sm)
    apply(Put("k", "v"))
    apply(Put("ключ", "☃"))
    c = apply.register()
    apply(Append("log", "a", Session(c, 1, 1)))
    apply(b"garbage")
    data = sm.snapshot()
    restored = KeyValueStateMachine()
    restored.restore(data)
    assert restored.last_applied == sm.last_applied == 5
    assert restored.query(Get("ключ")) == "☃"
    assert restored.snapshot() == data
    assert restored.session_ids() == [c]
    assert restored.apply(6, encode_command(Append("log", "a", Session(c, 1, 1)))) == 1
    assert restored.query(Get("log")) == "a"


def test_snapshot_keeps_the_lru_order_and_the_ttl_clock_of_sessions():
    """After a restore, eviction and expiry go on exactly as on a replica that never restored."""
    a = KeyValueStateMachine(max_sessions=3, session_ttl=10)
    apply = Applier(a)
    s1, s2, s3 = apply.register(), apply.register(), apply.register()
    apply(Put("k", "1", Session(s1, 1, 1)))  # s1 becomes the most recently used
    b = KeyValueStateMachine(max_sessions=3, session_ttl=10)
    b.restore(a.snapshot())
    assert b.session_ids() == a.session_ids() == [s2, s3, s1]
    for index in range(5, 16):
        data = encode_command(RegisterSession(f"n{index}") if index == 5 else Put("x", "y"))
        assert a.apply(index, data) == b.apply(index, data)
        assert a.session_ids() == b.session_ids()
    assert a.snapshot() == b.snapshot()
    assert isinstance(b.apply(16, encode_command(Put("k", "2", Session(s2, 1, 1)))), UnknownSession)


def test_snapshot_keeps_cached_error_results():
    """A cached CommandError result survives a snapshot."""
    sm = KeyValueStateMachine(max_results_per_session=1)
    apply = Applier(sm)
    c = apply.register()
    apply(Put("k", "1", Session(c, 2, 2)))
    error = apply(Put("k", "2", Session(c, 1, 1)))
    assert isinstance(error, CommandError)
    restored = KeyValueStateMachine()
    restored.restore(sm.snapshot())
    assert restored.snapshot() == sm.snapshot()


def test_snapshot_is_json_not_pickle():
    """The snapshot is a UTF-8 JSON document with a format tag."""
    sm = KeyValueStateMachine()
    sm.apply(1, encode_command(Put("k", "v")))
    document = json.loads(sm.snapshot())
    assert document["format"] == "leeky-kv/2"
    assert document["data"] == {"k": "v"}
    assert document["meta"] == {"k": [1, 1, 1]}
    assert document["revision"] == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format":"other"}',
        b'{"format":"leeky-kv/1","last_applied":-1,"data":{},"sessions":[]}',
        b'{"format":"leeky-kv/1","last_applied":1,"data":{"k":1},"sessions":[]}',
        b'{"format":"leeky-kv/1","last_applied":1,"data":{},"sessions":{}}',
        b'{"format":"leeky-kv/1","last_applied":1,"data":{},"sessions":[["c",1,0]]}',
        b'{"format":"leeky-kv/1","last_applied":1,"data":{},"sessions":[["c",1,0,[[1,[]]]]]}',
        b'{"format":"leeky-kv/2","last_applied":1,"data":{"k":"v"},"sessions":[]}',
        b'{"format":"leeky-kv/2","last_applied":1,"revision":2,"data":{},"sessions":[],"meta":{}}',
        b'{"format":"leeky-kv/2","last_applied":3,"revision":3,"data":{"k":"v"},'
        b'"sessions":[],"meta":{}}',
        b'{"format":"leeky-kv/2","last_applied":3,"revision":3,"data":{"k":"v"},'
        b'"sessions":[],"meta":{"k":[2,1,1]}}',
        b'{"format":"leeky-kv/2","last_applied":3,"revision":3,"data":{"k":"v"},'
        b'"sessions":[],"meta":{"k":[1,1,0]}}',
    ],
)
def test_restore_rejects_bad_snapshots_and_keeps_state(data):
    """A malformed snapshot raises ValueError and leaves the state alone."""
    sm = KeyValueStateMachine()
    sm.apply(1, encode_command(Put("k", "v")))
    before = sm.snapshot()
    with pytest.raises(ValueError):
        sm.restore(data)
    assert sm.snapshot() == before


def test_snapshot_in_pieces_restores_the_same_state_and_ignores_later_writes():
    """snapshot_chunks captures the state when called and serializes it lazily."""
    import json as _json

    from leeky_twisted.statemachine.commands import Put, Session, encode_command
    from leeky_twisted.statemachine.kv import KeyValueStateMachine as KV

    sm = KV()
    sm.apply(1, encode_command(RegisterSession("n")))
    for i in range(2, 60):
        sm.apply(i, encode_command(Put(f"k{i}", "v" * (i % 7), Session("1.n", i, i))))
    pieces = sm.snapshot_chunks(batch=7)
    expected = _json.loads(sm.snapshot())
    sm.apply(60, encode_command(Put("late", "write", None)))  # after the capture
    data = b"".join(pieces)
    assert _json.loads(data) == expected
    other = KV()
    other.restore(data)
    assert other.query(Get("k5")) == "vvvvv"
    assert other.query(Get("late")) is None
    assert other.last_applied == 59


def test_a_snapshot_of_large_values_comes_in_pieces_bounded_by_bytes():
    """Pieces are cut by bytes as well as by keys: with 10 KiB values, one piece of
    20,000 keys would be the whole state, serialized in one reactor turn (issue 18:
    a 65 MB piece stalled every node for 0.4-0.8 s of CPU at the same moment)."""
    from leeky_twisted.statemachine.kv import SNAPSHOT_PIECE_BYTES

    sm = KeyValueStateMachine()
    value = "v" * 10240
    count = 3 * SNAPSHOT_PIECE_BYTES // len(value)
    for i in range(1, count + 1):
        sm.apply(i, encode_command(Put(f"bench/large/{i}", value, None)))
    pieces = list(sm.snapshot_chunks())
    assert b"".join(pieces) == sm.snapshot()
    assert len(pieces) > 3
    assert max(len(p) for p in pieces) <= SNAPSHOT_PIECE_BYTES + 2 * len(value)
    other = KeyValueStateMachine()
    other.restore(b"".join(pieces))
    assert other.query(Get("bench/large/7")) == value


def test_snapshot_pieces_refuse_a_bound_below_one():
    sm = KeyValueStateMachine()
    with pytest.raises(ValueError, match="positive"):
        sm.snapshot_chunks(piece_bytes=0)
