"""The coordination checkers on hand-made records: ones that pass and ones that must fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from leeky_twisted.checker.coordination import (
    FAILED,
    PASSED,
    check_coordination,
    check_lease,
    check_lock,
    check_watch,
)

# ------------------------------------------------------------------- watch

COMMITTED = [
    [10, "put", "p/a", "1"],
    [11, "put", "p/b", "2"],
    [12, "delete", "p/a", None],
    [13, "put", "p/b", "3"],
]


def watch_record() -> dict[str, Any]:
    return {
        "workload": "watch",
        "final_revision": 13,
        "committed": copy.deepcopy(COMMITTED),
        "final_kvs": [["p/b", "3"]],
        "writes": [
            {"kind": "put", "key": "p/a", "value": "1", "outcome": "ok", "revision": 10},
            {"kind": "put", "key": "p/b", "value": "2", "outcome": "unknown"},
            {"kind": "delete", "key": "p/a", "outcome": "ok", "revision": 12, "existed": True},
            {"kind": "delete", "key": "p/z", "outcome": "ok", "revision": 12, "existed": False},
            {"kind": "put", "key": "p/b", "value": "3", "outcome": "ok", "revision": 13},
        ],
        "watchers": [
            {"id": 0, "start_revision": 10, "events": copy.deepcopy(COMMITTED), "restarts": 2},
            {"id": 1, "start_revision": 12, "events": copy.deepcopy(COMMITTED[2:])},
        ],
    }


def test_complete_watchers_pass():
    result = check_watch(watch_record())
    assert result.verdict == PASSED, result.render()
    assert result.figures["events delivered"] == 6


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r["watchers"][0]["events"].pop(1), "missing"),
        (lambda r: r["watchers"][0]["events"].insert(1, list(COMMITTED[1])), "duplicated"),
        (
            lambda r: r["watchers"][0]["events"].__setitem__(
                slice(1, 3), [COMMITTED[2], COMMITTED[1]]
            ),
            "reordered",
        ),
        (lambda r: r["watchers"][1]["events"].append([13, "put", "p/c", "x"]), "never committed"),
        (lambda r: r["committed"].pop(3), "acknowledged write"),
        (lambda r: r["final_kvs"].__setitem__(0, ["p/b", "2"]), "final range"),
        (lambda r: r["watchers"][1].__setitem__("error", "compacted"), "ended"),
    ],
)
def test_watch_violations_are_caught(change: Any, words: str):
    """A missing, duplicated, reordered or invented event, a lost acknowledged write, a
    final state that contradicts the events, a watcher that died: each fails."""
    record = watch_record()
    change(record)
    result = check_coordination(record)
    assert result.verdict == FAILED
    assert words in result.render()


# -------------------------------------------------------------------- lock


def lock_record() -> dict[str, Any]:
    return {
        "workload": "lock",
        "acquisitions": [{"contender": 0, "token": 5}, {"contender": 1, "token": 9}],
        "writes": [
            {"token": 5, "key": "log/0.0", "outcome": "ok", "succeeded": True, "revision": 6},
            {"token": 5, "key": "log/0.1", "outcome": "ok", "succeeded": True, "revision": 7},
            {"token": 9, "key": "log/1.0", "outcome": "ok", "succeeded": True, "revision": 10},
            {"token": 5, "key": "log/0.2", "outcome": "ok", "succeeded": False, "revision": 11},
            {"token": 9, "key": "log/1.1", "outcome": "unknown"},
        ],
        "log": [[6, 5, "log/0.0"], [7, 5, "log/0.1"], [10, 9, "log/1.0"], [12, 9, "log/1.1"]],
        "stalls": 1,
    }


def test_fenced_lock_history_passes():
    result = check_lock(lock_record())
    assert result.verdict == PASSED, result.render()
    assert result.figures["stale writes refused by fencing"] == 1


def test_stale_token_accepted_after_successor_fails():
    """A write with the old token committed after the new holder's write: interleaved."""
    record = lock_record()
    record["log"].append([11, 5, "log/0.2"])
    result = check_lock(record)
    assert result.verdict == FAILED
    assert "stale holder" in result.render()
    assert "refused yet is in the log" in result.render()


def test_lock_acknowledged_write_missing_and_duplicate_token_fail():
    record = lock_record()
    record["log"].pop(0)
    record["acquisitions"].append({"contender": 2, "token": 9})
    text = check_lock(record).render()
    assert "not in the log" in text and "same fencing token" in text


# ------------------------------------------------------------------- lease


def lease(**overrides: Any) -> dict[str, Any]:
    base = {
        "id": 1,
        "granted": 0.0,
        "put_acked": 0.1,
        "keepalives": [[0.5, 0.6], [1.0, 1.1], [1.5, None]],
        "cut_at": 1.6,
        "reads": [[0.2, 0.25, True], [2.9, 2.95, True], [3.5, 3.55, False], [4.0, 4.05, False]],
    }
    base.update(overrides)
    return base


def lease_record(*leases: dict[str, Any]) -> dict[str, Any]:
    return {"workload": "lease", "ttl": 2, "bound": 2.0, "leases": list(leases)}


def test_lease_that_ends_in_bound_passes():
    result = check_lease(lease_record(lease()))
    assert result.verdict == PASSED, result.render()
    assert result.figures["seen gone after it, at most (s)"] == pytest.approx(2.45)


def test_lease_deleted_while_kept_alive_fails():
    """Gone at 2.5 though a keepalive sent at 1.0 was acknowledged: ttl 2 runs to 3.0."""
    bad = lease(reads=[[2.4, 2.5, False]])
    assert "before" in check_lease(lease_record(bad)).render()
    assert check_lease(lease_record(bad)).verdict == FAILED


def test_lease_outliving_its_bound_fails():
    """Still there 5.5 s after the last acknowledgement (bound ttl + 2 = 4 s)."""
    bad = lease(reads=[[6.6, 6.7, True], [7.0, 7.1, False]])
    result = check_lease(lease_record(bad))
    assert result.verdict == FAILED
    assert "still there" in result.render()


def test_lease_never_seen_gone_fails():
    bad = lease(reads=[[2.0, 2.1, True]])
    assert "never seen gone" in check_lease(lease_record(bad)).render()


def test_unknown_workload_is_refused():
    with pytest.raises(ValueError, match="unknown coordination workload"):
        check_coordination({"workload": "dance"})


def test_new_leader_restarts_the_lease_count():
    """A leader that takes office before the lease ran out counts ttl + extension afresh:
    the key still there at 6.6 is within bound then, and not without the change."""
    late = lease(reads=[[6.6, 6.7, True], [7.0, 7.1, False]])
    record = lease_record(late)
    record["extension"] = 0.8
    assert check_lease(record).verdict == FAILED
    record["leaders"] = [[2.9, 7, "3"]]  # new leader at 2.9: counts to 2.9 + 2.8 = 5.7
    result = check_lease(record)
    assert result.verdict == PASSED, result.render()
    assert result.figures["leader terms seen"] == 1


def test_a_whole_cluster_outage_before_the_lease_ends_counts_the_next_leader():
    """Found by CI (seed 597460973): every node was killed just after the lease's deadline
    and before its bound; nobody could expire it, and the first leader after the restart
    counts ttl + extension afresh, though it is seen after ``deadline + bound``."""
    late = lease(reads=[[6.6, 6.7, True], [7.0, 7.1, False]])
    record = lease_record(late)  # last ack 1.1: deadline 3.1, surely gone by 5.1
    record["extension"] = 0.8
    record["leaders"] = [[5.4, 8, "3"]]  # the first leader after the outage
    assert check_lease(record).verdict == FAILED  # without the outage: 5.4 comes too late
    record["outages"] = [[3.4, 5.4]]  # no leader from 3.4 (all killed) until 5.4
    result = check_lease(record)
    assert result.verdict == PASSED, result.render()
    record["outages"] = [[5.3, 5.4]]  # an outage after the lease was surely gone: no help
    assert check_lease(record).verdict == FAILED
