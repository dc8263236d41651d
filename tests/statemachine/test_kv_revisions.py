"""Revisions, ranges and transactions of the key-value state machine."""

from __future__ import annotations

import json

import pytest

from leeky_twisted.statemachine.commands import (
    Append,
    Cas,
    CommandDecodeError,
    Compare,
    Delete,
    Get,
    Put,
    Range,
    RegisterSession,
    Session,
    Txn,
    decode_command,
    encode_command,
    prefix_end,
)
from leeky_twisted.statemachine.kv import (
    Event,
    KeyValue,
    KeyValueStateMachine,
    RangeResult,
    TxnResult,
)


class Applier:
    """Apply commands at consecutive indexes, as committed entries."""

    def __init__(self, sm: KeyValueStateMachine) -> None:
        self.sm = sm
        self.index = 0

    def __call__(self, command):
        self.index += 1
        return self.sm.apply(self.index, encode_command(command))


@pytest.fixture
def sm():
    return KeyValueStateMachine()


@pytest.fixture
def apply(sm):
    return Applier(sm)


def meta(sm, key):
    kvs = sm.query(Range.key(key)).kvs
    return None if not kvs else (kvs[0].create_revision, kvs[0].mod_revision, kvs[0].version)


# ------------------------------------------------------------- revisions


def test_each_modification_takes_its_entry_index_as_revision(sm, apply):
    """create/mod revision and version follow puts, cas, append; reads and misses don't count."""
    assert sm.revision == 0
    apply(Put("a", "1"))  # 1
    apply(Get("a"))  # 2: no modification
    apply(Put("a", "2"))  # 3
    apply(Delete("nope"))  # 4: nothing deleted
    apply(Cas("a", "wrong", "x"))  # 5: not swapped
    apply(Cas("a", "2", "3"))  # 6
    apply(Append("a", "!"))  # 7
    assert sm.revision == 7
    assert meta(sm, "a") == (1, 7, 4)
    assert sm.query(Range.key("a")).revision == 7


def test_delete_then_recreate_restarts_version_and_create_revision(sm, apply):
    """A key deleted and put again is a new key: create revision moves, version restarts."""
    apply(Put("k", "v"))
    apply(Put("k", "w"))
    assert apply(Delete("k")) is True
    assert sm.revision == 3
    assert meta(sm, "k") is None
    apply(Put("k", "again"))
    assert meta(sm, "k") == (4, 4, 1)


def test_retried_session_write_does_not_move_the_revision(sm, apply):
    """A retry answered from the session cache is not a new modification."""
    sid = apply(RegisterSession("n"))
    apply(Put("k", "v", Session(sid, 1, 1)))
    apply(Put("k", "v", Session(sid, 1, 1)))  # the same request again
    assert sm.revision == 2
    assert meta(sm, "k") == (2, 2, 1)


def test_snapshot_round_trip_keeps_revisions(sm, apply):
    """A node restored from a snapshot has the same revisions, and continues from them."""
    apply(Put("a", "1"))
    apply(Put("b", "1"))
    apply(Put("a", "2"))
    apply(Delete("b"))
    other = KeyValueStateMachine()
    other.restore(sm.snapshot())
    assert other.revision == 4
    assert meta(other, "a") == (1, 3, 2)
    assert other.snapshot() == sm.snapshot()
    other.apply(5, encode_command(Put("a", "3")))
    assert meta(other, "a") == (1, 5, 3)


def test_a_key_written_once_keeps_one_revision_and_reads_as_all_three(sm, apply):
    """Memory: a key written once (create == mod, version 1) stores only that
    revision, not a tuple; every reader (range, txn compares, events, delete,
    snapshot, restore) still sees (create, mod, version)."""
    from leeky_twisted.statemachine.commands import Compare, Txn

    events = []
    sm.observe(events.extend)
    apply(Put("once", "v"))
    apply(Put("twice", "v"))
    apply(Put("twice", "w"))
    assert sm._meta["once"] == 1 and sm._meta["twice"] == (2, 3, 2)
    assert meta(sm, "once") == (1, 1, 1) and meta(sm, "twice") == (2, 3, 2)
    assert [(e.create_revision, e.version) for e in events] == [(1, 1), (2, 1), (2, 2)]
    checks = [Compare("once", t, "==", 1) for t in ("version", "create", "mod")]
    assert apply(Txn(tuple(checks), (), ())).succeeded
    document = json.loads(sm.snapshot())
    assert document["meta"] == {"once": [1, 1, 1], "twice": [2, 3, 2]}
    other = KeyValueStateMachine()
    other.restore(sm.snapshot())
    assert other._meta == sm._meta
    apply(Put("once", "again"))
    assert meta(sm, "once") == (1, 5, 2)
    apply(Delete("once"))
    assert events[-1].create_revision == 1


def test_snapshot_in_pieces_equals_whole_snapshot(sm, apply):
    """snapshot_chunks in small batches gives the bytes of snapshot(), meta included."""
    for i in range(30):
        apply(Put(f"k{i % 11}", str(i)))
    assert b"".join(sm.snapshot_chunks(batch=4)) == sm.snapshot()
    assert json.loads(sm.snapshot())["meta"]["k3"] == [4, 26, 3]


def test_old_snapshot_without_revisions_restores_at_its_last_applied_index():
    """A leeky-kv/1 snapshot: revision = last_applied, every key (R, R, 1)."""
    old = b'{"format":"leeky-kv/1","last_applied":42,"data":{"a":"1","b":"2"},"sessions":[]}'
    sm = KeyValueStateMachine()
    sm.restore(old)
    assert sm.revision == 42
    assert meta(sm, "a") == (42, 42, 1)
    sm.apply(43, encode_command(Put("a", "x")))
    assert meta(sm, "a") == (42, 43, 2)
    assert json.loads(sm.snapshot())["format"] == "leeky-kv/2"


# ----------------------------------------------------------------- ranges


def test_prefix_end():
    """The end of a prefix range is the prefix with its last character bumped."""
    assert prefix_end("a/") == "a0"
    assert prefix_end("") is None
    assert prefix_end("a" + chr(0x10FFFF)) == "b"
    assert prefix_end(chr(0x10FFFF)) is None


def test_range_is_sorted_half_open_and_read_at_a_revision(sm, apply):
    """range(start, end) returns [start, end) in key order, with the revision."""
    for k in ["b", "a/2", "a/1", "c", "a/10", "a"]:
        apply(Put(k, k.upper()))
    result = sm.query(Range("a/", "b"))
    assert [kv.key for kv in result.kvs] == ["a/1", "a/10", "a/2"]
    assert result.kvs[0] == KeyValue("a/1", "A/1", 3, 3, 1)
    assert (result.revision, result.count, result.more) == (6, 3, False)
    assert [kv.key for kv in sm.query(Range("b")).kvs] == ["b", "c"]  # no end: to the last key
    assert [kv.key for kv in sm.query(Range.prefix("a")).kvs] == ["a", "a/1", "a/10", "a/2"]


def test_range_limit_keys_only_count_only(sm, apply):
    """limit cuts (more=True, count is the whole range), keys_only drops values."""
    for i in range(10):
        apply(Put(f"p/{i}", "v"))
    limited = sm.query(Range.prefix("p/", limit=3, keys_only=True))
    assert [kv.key for kv in limited.kvs] == ["p/0", "p/1", "p/2"]
    assert all(kv.value is None for kv in limited.kvs)
    assert (limited.count, limited.more) == (10, True)
    counted = sm.query(Range.prefix("p/", count_only=True))
    assert (counted.kvs, counted.count, counted.more) == ((), 10, False)


def test_range_start_after_end_is_refused():
    """A range whose start is after its end is a clear ValueError."""
    with pytest.raises(ValueError, match="after its end"):
        Range("b", "a")
    with pytest.raises(ValueError, match="negative"):
        Range("a", "b", limit=-1)


@pytest.mark.parametrize("rounds", [1, 3])
def test_sorted_index_follows_creates_and_deletes_between_ranges(sm, apply, rounds):
    """The lazily maintained key order matches a fresh sort after any mix of changes."""
    import random

    rng = random.Random(rounds)
    for _ in range(rounds):
        for _ in range(rng.choice([5, 40, 300])):  # small batches merge, large ones re-sort
            key = f"k{rng.randrange(200)}"
            apply(Delete(key) if rng.random() < 0.4 else Put(key, "v"))
        keys = [kv.key for kv in sm.query(Range("")).kvs]
        assert keys == sorted(json.loads(sm.snapshot())["data"])


def test_range_answer_is_capped_in_bytes(sm, apply, monkeypatch):
    """A range larger than the byte cap stops early with more=True (one key at least)."""
    from leeky_twisted.statemachine import kv as kvmod

    monkeypatch.setattr(kvmod, "MAX_RANGE_BYTES", 25)
    for i in range(5):
        apply(Put(f"k{i}", "x" * 10))
    result = sm.query(Range(""))
    assert [kv.key for kv in result.kvs] == ["k0", "k1"]
    assert result.more and result.count == 5


# ----------------------------------------------------------- transactions


def test_txn_success_branch_applies_every_op_at_one_revision(sm, apply):
    """All compares hold: the success ops apply atomically, at the entry's revision."""
    apply(Put("a", "1"))
    txn = Txn(
        (Compare("a", "value", "==", "1"), Compare("b", "version", "==", 0)),
        (Put("a", "2"), Put("b", "x"), Range.prefix("")),
        (Put("failed", "yes"),),
    )
    result = apply(txn)
    assert isinstance(result, TxnResult)
    assert result.succeeded and result.revision == 2
    assert result.responses[0] is None and result.responses[1] is None
    assert [kv.key for kv in result.responses[2].kvs] == ["a", "b"]
    assert meta(sm, "a") == (1, 2, 2) and meta(sm, "b") == (2, 2, 1)
    assert sm.query(Get("failed")) is None


def test_txn_failure_branch_runs_and_success_ops_leave_no_trace(sm, apply):
    """One compare fails: none of the success ops apply; the failure ops do."""
    apply(Put("a", "1"))
    txn = Txn(
        (Compare("a", "value", "==", "1"), Compare("a", "mod", ">", 5)),
        (Put("a", "2"), Delete("a")),
        (Delete("a"), Range("a", "b")),
    )
    result = apply(txn)
    assert not result.succeeded
    assert result.responses == (True, RangeResult(2, (), 0, False))
    assert sm.query(Get("a")) is None and sm.revision == 2


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare("k", "value", "==", "v"), True),
        (Compare("k", "value", "!=", "v"), False),
        (Compare("k", "value", "<", "w"), True),
        (Compare("k", "version", "==", 2), True),
        (Compare("k", "create", "==", 1), True),
        (Compare("k", "mod", ">", 1), True),
        (Compare("k", "mod", "<", 2), False),
        (Compare("absent", "version", "==", 0), True),
        (Compare("absent", "create", "==", 0), True),
        (Compare("absent", "value", "!=", "x"), False),  # an absent key has no value
    ],
)
def test_txn_compares(sm, apply, compare, holds):
    """Each compare target and operator, including absence."""
    apply(Put("k", "u"))
    apply(Put("k", "v"))
    assert apply(Txn((compare,), (Put("ok", "1"),))).succeeded is holds


def test_txn_without_modification_keeps_the_revision(sm, apply):
    """A txn that only reads does not take a revision."""
    apply(Put("a", "1"))
    result = apply(Txn((), (Range("a", "b"),)))
    assert result.revision == 1 and sm.revision == 1


def test_txn_encoding_round_trips_and_result_survives_snapshot(sm, apply):
    """A txn decodes to itself; its cached session result is kept by a snapshot."""
    sid = apply(RegisterSession("n"))
    txn = Txn(
        (Compare("a", "version", "==", 0),),
        (Put("a", "1"), Range("a", None, 5, True, False)),
        (Delete("a"),),
        Session(sid, 1, 1),
    )
    assert decode_command(encode_command(txn)) == txn
    first = apply(txn)
    other = KeyValueStateMachine()
    other.restore(sm.snapshot())
    assert other.apply(3, encode_command(txn)) == first  # a retry: the cached answer


@pytest.mark.parametrize(
    "raw",
    [
        b'["txn",{},[],[],null]',
        b'["txn",[["k","size","==",1]],[],[],null]',
        b'["txn",[["k","version","==","1"]],[],[],null]',
        b'["txn",[["k","value","~","1"]],[],[],null]',
        b'["txn",[],[["put","k"]],[],null]',
        b'["txn",[],[["range","b","a",0,false,false]],[],null]',
        b'["txn",[],[["range","a","b",0,1,false]],[],null]',
        b'["txn",[],[["cas","a","b","c"]],[],null]',
        b'["txn",[],[' + b",".join([b'["del","k"]'] * 129) + b"],[],null]",
    ],
)
def test_malformed_txn_is_a_decode_error(raw):
    """Every malformed transaction raises CommandDecodeError, never anything else."""
    with pytest.raises(CommandDecodeError):
        decode_command(raw)


# ----------------------------------------------------------------- events


def test_observer_sees_each_entrys_events_once_in_order(sm, apply):
    """observe() gets one list per modifying entry; a txn's ops share its revision."""
    seen = []
    sm.observe(seen.append)
    apply(Put("a", "1"))
    apply(Get("a"))
    apply(Txn((), (Put("b", "2"), Delete("a"))))
    apply(Delete("a"))  # nothing to delete: no event
    assert seen == [
        [Event(1, "put", "a", "1", 1, 1)],
        [Event(3, "put", "b", "2", 3, 1), Event(3, "delete", "a", None, 1, 0)],
    ]


# ----------------------------------------------------------------- leases


def test_lease_grant_attach_and_revoke_deletes_its_keys_through_events(sm, apply):
    """A lease's keys go when it is revoked (or expires): delete events at that revision."""
    from leeky_twisted.statemachine.commands import LeaseGrant, LeaseRevoke

    seen = []
    sm.observe(seen.extend)
    lease = apply(LeaseGrant(10))
    assert lease == 1 and sm.leases() == [(1, 10)]
    apply(Put("svc/a", "1", lease=lease))
    apply(Put("svc/b", "2", lease=lease))
    apply(Put("plain", "3"))
    assert sm.lease(lease) == (10, ["svc/a", "svc/b"])
    assert apply(LeaseRevoke(lease, expired=True)) is True
    assert sm.query(Range("")).kvs[0].key == "plain" and sm.query(Range("")).count == 1
    assert [(e.revision, e.kind, e.key) for e in seen[-2:]] == [
        (5, "delete", "svc/a"),
        (5, "delete", "svc/b"),
    ]
    assert apply(LeaseRevoke(lease)) is False and sm.leases() == []


def test_put_to_an_unknown_lease_is_refused_and_changes_nothing(sm, apply):
    """An expired or revoked lease cannot take keys."""
    from leeky_twisted.statemachine.commands import LeaseGrant, LeaseRevoke
    from leeky_twisted.statemachine.kv import CommandError

    lease = apply(LeaseGrant(5))
    apply(LeaseRevoke(lease))
    result = apply(Put("k", "v", lease=lease))
    assert isinstance(result, CommandError) and "lease 1 not found" in result.message
    assert sm.query(Get("k")) is None and sm.revision == 0


def test_a_plain_put_or_delete_takes_a_key_off_its_lease(sm, apply):
    """Overwriting without a lease detaches the key: the lease's end leaves it."""
    from leeky_twisted.statemachine.commands import LeaseGrant, LeaseRevoke

    lease = apply(LeaseGrant(5))
    apply(Put("a", "1", lease=lease))
    apply(Put("b", "1", lease=lease))
    apply(Put("a", "2"))
    apply(Delete("b"))
    assert sm.lease(lease) == (5, [])
    apply(LeaseRevoke(lease))
    assert sm.query(Get("a")) == "2"


def test_leases_survive_a_snapshot(sm, apply):
    """Leases and their keys are in the snapshot; a restored node revokes them the same."""
    from leeky_twisted.statemachine.commands import LeaseGrant, LeaseRevoke

    lease = apply(LeaseGrant(7))
    apply(Put("k", "v", lease=lease))
    other = KeyValueStateMachine()
    other.restore(sm.snapshot())
    assert other.lease(lease) == (7, ["k"])
    other.apply(3, encode_command(LeaseRevoke(lease)))
    assert other.query(Get("k")) is None
    assert decode_command(encode_command(Put("k", "v", None, 4))) == Put("k", "v", None, 4)


# --------------------------------------------------------- txn with leases


def test_a_txn_put_attaches_its_key_to_a_lease_and_the_revoke_deletes_it(sm, apply):
    """A txn's put with a lease behaves as a plain leased put: the lease's end deletes it."""
    from leeky_twisted.statemachine.commands import LeaseGrant, LeaseRevoke

    seen = []
    sm.observe(seen.extend)
    lease = apply(LeaseGrant(10))
    absent = Compare("lock", "version", "==", 0)
    result = apply(Txn((absent,), (Put("lock", "me", None, lease), Put("plain", "p"))))
    assert result.succeeded and sm.lease(lease) == (10, ["lock"])
    assert apply(LeaseRevoke(lease, expired=True)) is True
    assert sm.query(Get("lock")) is None and sm.query(Get("plain")) == "p"
    assert (seen[-1].kind, seen[-1].key, seen[-1].revision) == ("delete", "lock", 3)


def test_a_txn_naming_an_unknown_lease_is_refused_and_changes_nothing(sm, apply):
    """One put to an expired/revoked lease refuses the whole branch: nothing is applied."""
    from leeky_twisted.statemachine.commands import LeaseGrant, LeaseRevoke
    from leeky_twisted.statemachine.kv import CommandError

    live = apply(LeaseGrant(10))
    gone = apply(LeaseGrant(10))
    apply(LeaseRevoke(gone))
    revision = sm.revision
    result = apply(Txn((), (Put("a", "1", None, live), Delete("x"), Put("b", "2", None, gone))))
    assert isinstance(result, CommandError)
    assert result.message == f"lease {gone} not found (expired or revoked)"
    assert sm.query(Get("a")) is None and sm.revision == revision
    assert sm.lease(live) == (10, [])


def test_only_the_branch_that_runs_has_its_leases_checked(sm, apply):
    """As in etcd: an unknown lease in the branch that does not run refuses nothing."""
    result = apply(
        Txn((Compare("k", "version", "==", 0),), (Put("k", "v"),), (Put("k", "w", None, 99),))
    )
    assert result.succeeded and sm.query(Get("k")) == "v"


def test_a_txn_put_with_a_lease_round_trips_through_the_log_encoding():
    """The lease rides in the encoded txn operation; a bad lease there is refused clearly."""
    txn = Txn((), (Put("k", "v", None, 7), Put("p", "q")), (Put("f", "g", None, 8),))
    assert decode_command(encode_command(txn)) == txn
    for bad in (0, -1, "7", True):
        data = json.dumps(["txn", [], [["put", "k", "v", bad]], [], None]).encode()
        with pytest.raises(CommandDecodeError, match="lease"):
            decode_command(data)


@pytest.mark.parametrize("operand", [1.5, 2.0, True, "1", None])
def test_a_revision_compare_takes_only_an_integer_operand(operand):
    """A version, create or mod compare with a float (or bool, text) operand is never built."""
    for target in ("version", "create", "mod"):
        with pytest.raises(ValueError, match="integer operand"):
            Compare("k", target, ">", operand)
    with pytest.raises(ValueError, match="string operand"):
        Compare("k", "value", "==", 1)
