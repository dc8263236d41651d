"""ExecutorFeed: in order, at least once, held back while the executor is away, on a Clock."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from leeky_twisted.executor.filemeta import CommandRejected, FileMetadataMachine
from leeky_twisted.executor.store import DurableExecutorState
from leeky_twisted.statemachine.remote import (
    CommandFailed,
    ExecutorFeed,
    ExecutorUnavailable,
    IAsyncStateMachine,
    ResultUnknown,
    _outcome,
)

OWNER = "leeky/1"


@implementer(IAsyncStateMachine)
class ControlledExecutor:
    """A real durable executor state behind switches: down, lost answers, held calls."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.state = DurableExecutorState(directory)
        self.down = False
        self.lose_answers = 0  #: apply, then fail as if the answer was lost
        self.hold = False  #: leave calls pending in ``held``
        self.held: list[tuple[defer.Deferred[Any], Any]] = []
        self.calls: list[tuple[str, Any]] = []

    def _answer(self, name: str, arg: Any, work: Any) -> defer.Deferred[Any]:
        self.calls.append((name, arg))
        if self.down:
            return defer.fail(ExecutorUnavailable("connection refused"))
        if self.hold:
            d: defer.Deferred[Any] = defer.Deferred()
            self.held.append((d, work))
            return d
        value = work()
        if self.lose_answers and name == "apply_batch":
            self.lose_answers -= 1
            return defer.fail(ExecutorUnavailable("no answer within 10s"))
        return defer.succeed(value)

    def release(self) -> None:
        """Run and answer every held call."""
        held, self.held = self.held, []
        for d, work in held:
            d.callback(work())

    def last_applied(self) -> defer.Deferred[int]:
        return self._answer("last_applied", None, lambda: self.state.last_applied)

    def apply_batch(self, entries: Any) -> defer.Deferred[list[object]]:
        def work() -> list[object]:
            return [_outcome(r) for r in self.state.execute_batch(OWNER, entries)]

        return self._answer("apply_batch", [i for i, _ in entries], work)

    def query(self, request: object) -> defer.Deferred[object]:
        return self._answer("query", request, lambda: self.state.machine.query(str(request)))

    def snapshot(self) -> defer.Deferred[tuple[int, bytes]]:
        return self._answer("snapshot", None, self.state.snapshot)

    def restore(self, index: int, data: bytes) -> defer.Deferred[None]:
        return self._answer("restore", index, lambda: self.state.restore(OWNER, index, data))

    def crash_and_restart(self, lose_data: bool = False) -> None:
        """Reopen the state from disk (optionally from an empty directory)."""
        self.state.close()
        if lose_data:
            import shutil

            shutil.rmtree(self.directory)
        self.state = DurableExecutorState(self.directory)


def make_log(n: int) -> list[tuple[int, bytes | None]]:
    """A committed log of ADD/READ/DELETE commands, with a no-op entry every 10th index."""
    log: list[tuple[int, bytes | None]] = []
    for i in range(1, n + 1):
        k = i % 7
        if i % 10 == 0:
            log.append((i, None))
        elif i % 3 == 1:
            log.append((i, f"ADD f{k} {i}".encode()))
        elif i % 3 == 2:
            log.append((i, f"READ f{k}".encode()))
        else:
            log.append((i, f"DELETE f{k}".encode()))
    return log


def reference(log: list[tuple[int, bytes | None]]) -> tuple[dict[str, Any], dict[int, object]]:
    """Apply ``log`` exactly once to a fresh machine; return its state and results."""
    m = FileMetadataMachine()
    results: dict[int, object] = {}
    for index, data in log:
        if data is None:
            continue
        try:
            results[index] = m.apply(index, data)
        except CommandRejected as e:
            results[index] = str(e)
    return m.to_json(), results


class Harness:
    """A feed on a Clock over a ControlledExecutor, recording every on_applied call."""

    def __init__(self, directory: str, **options: Any) -> None:
        self.clock = Clock()
        self.executor = ControlledExecutor(directory)
        self.reported: list[tuple[int, object]] = []
        self.log: list[tuple[int, bytes | None]] = []
        options.setdefault("fetch", self.fetch)
        self.feed = ExecutorFeed(
            self.clock,
            self.executor,
            lambda i, r: self.reported.append((i, r)),
            min_retry=0.1,
            max_retry=1.0,
            **options,
        )

    def fetch(self, lo: int, hi: int) -> list[tuple[int, bytes | None]]:
        if self.log and lo < self.log[0][0]:
            raise IndexError(lo)
        return [(i, d) for i, d in self.log if lo <= i < hi]

    def run(self, seconds: float = 0.0, step: float = 0.05) -> None:
        """Advance the clock by ``seconds`` in small steps (0: just run what is due)."""
        self.clock.advance(0)
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(step)
            elapsed += step

    def reported_results(self) -> dict[int, object]:
        out: dict[int, object] = {}
        for i, r in self.reported:
            out[i] = str(r) if isinstance(r, CommandFailed) else r
        return out


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(str(tmp_path / "ex"), max_batch=8)
    yield h
    h.feed.stop()
    h.executor.state.close()


def test_the_fake_provides_the_interface(harness: Harness) -> None:
    """The controlled executor used here provides IAsyncStateMachine."""
    assert verifyObject(IAsyncStateMachine, harness.executor)


def test_entries_are_applied_in_order_once_with_results(harness: Harness) -> None:
    """Every entry with data reaches the executor once, in order, and its result is reported."""
    log = make_log(50)
    harness.log = log
    harness.feed.start()
    harness.feed.enqueue(log)
    harness.run()
    state, results = reference(log)
    assert harness.feed.applied_index == 50 and harness.feed.lag == 0
    assert harness.executor.state.machine.to_json() == state
    assert [i for i, _ in harness.reported] == [i for i, d in log if d is not None]
    assert harness.reported_results() == results
    sent = [i for name, idx in harness.executor.calls if name == "apply_batch" for i in idx]
    assert sent == [i for i, d in log if d is not None]
    assert all(len(idx) <= 8 for name, idx in harness.executor.calls if name == "apply_batch")


def test_no_op_entries_move_applied_without_calls(harness: Harness) -> None:
    """Entries without data advance applied_index and cost no call."""
    harness.feed.start()
    harness.run()
    calls = len(harness.executor.calls)
    harness.feed.enqueue([(1, None), (2, None)])
    harness.run()
    assert harness.feed.applied_index == 2
    assert len(harness.executor.calls) == calls
    assert harness.reported == []


def test_unreachable_executor_holds_back_then_catches_up(harness: Harness) -> None:
    """While down, nothing is applied and the lag grows; once back, all is applied exactly once."""
    log = make_log(40)
    harness.log = log
    harness.feed.start()
    harness.feed.enqueue(log[:10])
    harness.run()
    assert harness.feed.applied_index == 10
    harness.executor.down = True
    harness.feed.enqueue(log[10:])
    harness.run(3.0)
    assert harness.feed.applied_index == 10
    assert harness.feed.lag == 30
    assert not harness.feed.reachable
    assert harness.feed.status()["executor_lag"] == 30
    attempts = len(harness.executor.calls)
    harness.run(3.0)
    assert len(harness.executor.calls) - attempts <= 4  # backoff, capped at 1 s
    harness.executor.down = False
    harness.run(1.0)
    assert harness.feed.reachable and harness.feed.lag == 0
    state, results = reference(log)
    assert harness.executor.state.machine.to_json() == state
    assert harness.reported_results() == results
    assert len(harness.reported) == len(results)


def test_a_lost_answer_is_resent_and_not_applied_twice(harness: Harness) -> None:
    """The executor applied a batch but the answer was lost: the resend is skipped, results kept."""
    log = make_log(30)
    harness.feed.start()
    harness.run()
    harness.executor.lose_answers = 2
    harness.feed.enqueue(log)
    harness.run(2.0)
    state, results = reference(log)
    assert harness.executor.state.machine.to_json() == state
    assert harness.reported_results() == results  # from the executor's result cache
    assert not any(isinstance(r, ResultUnknown) for _, r in harness.reported)


def test_executor_restart_mid_stream_resumes_from_its_last_applied(harness: Harness) -> None:
    """The executor crashes between batches and comes back from disk: no entry applies twice."""
    log = make_log(60)
    harness.feed.start()
    harness.executor.hold = True
    harness.feed.enqueue(log)
    harness.run()
    harness.executor.release()  # first batch applied
    harness.run()
    harness.executor.hold = False
    harness.executor.down = True  # ... the second batch never arrives
    harness.executor.release()
    harness.executor.crash_and_restart()
    harness.run(0.5)
    harness.executor.down = False
    harness.run(1.0)
    state, results = reference(log)
    assert harness.executor.state.machine.to_json() == state
    assert harness.reported_results() == results


def test_node_restart_replays_from_the_start_and_nothing_applies_twice(
    harness: Harness, tmp_path: Path
) -> None:
    """A new feed (the node restarted) resends the log from 1: entries up to E are skipped."""
    log = make_log(40)
    harness.feed.start()
    harness.feed.enqueue(log[:25])
    harness.run()
    harness.feed.stop()
    mark = len(harness.executor.calls)
    reported: list[tuple[int, object]] = []
    feed = ExecutorFeed(harness.clock, harness.executor, lambda i, r: reported.append((i, r)))
    feed.start()
    feed.enqueue(log)
    harness.run()
    state, _ = reference(log)
    assert harness.executor.state.machine.to_json() == state
    assert feed.applied_index == 40
    calls = harness.executor.calls[mark:]
    sent_again = [i for name, idx in calls if name == "apply_batch" for i in idx]
    assert min(sent_again) > 25  # nothing at or below the executor's index was resent
    assert all(isinstance(r, ResultUnknown) for i, r in reported if i <= 25)
    feed.stop()


def test_start_restores_a_newer_node_snapshot(tmp_path: Path) -> None:
    """At start the feed restores the node's snapshot when the executor is behind it."""
    donor = FileMetadataMachine()
    donor.apply(1, b"ADD snap")
    data = json.dumps(donor.to_json()).encode()
    h = Harness(str(tmp_path / "ex"))
    h.feed.start(base_snapshot=(100, data))
    h.feed.enqueue([(101, b"READ snap")])
    h.run()
    assert [name for name, _ in h.executor.calls] == ["last_applied", "restore", "apply_batch"]
    assert h.executor.state.machine.query("READ snap")["reads"] == 1
    assert h.feed.applied_index == 101
    h.feed.stop()
    h.executor.state.close()


def test_start_does_not_restore_an_older_snapshot(harness: Harness) -> None:
    """An executor already past the node's snapshot keeps its state."""
    harness.executor.state.execute_batch(OWNER, [(1, b"ADD a"), (150, b"READ a")])
    harness.feed.start(base_snapshot=(100, b"unused"))
    harness.run()
    assert "restore" not in [name for name, _ in harness.executor.calls]
    assert harness.feed.applied_index == 150


def test_install_snapshot_from_the_leader_drops_older_entries(harness: Harness) -> None:
    """install_snapshot waits for the batch in flight, restores, and drops covered entries."""
    donor = FileMetadataMachine()
    donor.apply(3, b"ADD from-leader")
    data = json.dumps(donor.to_json()).encode()
    harness.feed.start()
    harness.run()
    harness.executor.hold = True
    harness.feed.enqueue([(1, b"ADD a"), (2, b"READ a")])
    harness.run()
    installed = harness.feed.install_snapshot(10, data)
    harness.feed.enqueue([(11, b"READ from-leader")])
    harness.run()
    assert not installed.called  # the batch in flight goes first
    harness.executor.hold = False
    harness.executor.release()
    harness.run()
    assert installed.called
    assert harness.executor.state.last_applied == 11
    assert harness.executor.state.machine.query("LIST") == ["from-leader"]
    assert harness.feed.applied_index == 11


def test_snapshot_is_taken_between_batches_and_fails_fast_when_down(harness: Harness) -> None:
    """snapshot() fires with the executor's index; when the executor is down it errbacks."""
    harness.feed.start()
    harness.feed.enqueue(make_log(12))
    d = harness.feed.snapshot()
    harness.run()
    index, data = d.result
    assert index == harness.executor.state.last_applied
    assert FileMetadataMachine.from_json(json.loads(data))
    harness.executor.down = True
    harness.run(0.5)
    failed = harness.feed.snapshot()
    harness.run(2.0)
    failures: list[Any] = []
    failed.addErrback(failures.append)
    assert failures and failures[0].check(ExecutorUnavailable)


def test_wait_applied_fires_when_the_index_is_reached(harness: Harness) -> None:
    """A read waiting for index i is released once applied_index >= i."""
    harness.feed.start()
    harness.executor.down = True
    waited = harness.feed.wait_applied(5)
    early = harness.feed.wait_applied(0)
    harness.feed.enqueue(make_log(6))
    harness.run(0.5)
    assert early.called and not waited.called
    harness.executor.down = False
    harness.run(1.0)
    assert waited.called


def test_entries_past_the_buffer_are_fetched_from_the_log(tmp_path: Path) -> None:
    """With a small buffer, entries beyond it are read back from the log later, in order."""
    h = Harness(str(tmp_path / "ex"), max_buffered=5, max_batch=3)
    log = make_log(40)
    h.log = log
    h.executor.down = True
    h.feed.start()
    h.feed.enqueue(log)
    assert len(h.feed._buffer) == 5
    h.run(0.5)
    h.executor.down = False
    h.run(1.0)
    state, results = reference(log)
    assert h.executor.state.machine.to_json() == state
    assert h.reported_results() == results
    h.feed.stop()
    h.executor.state.close()


def test_an_executor_that_lost_its_state_is_repaired_from_the_log(harness: Harness) -> None:
    """The executor comes back empty: the feed notices, logs an error and redelivers from 1."""
    errors: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.error, LogLevel.critical):
            errors.append(event)

    log = make_log(30)
    harness.log = log
    harness.feed.start()
    harness.feed.enqueue(log[:20])
    harness.run()
    harness.executor.crash_and_restart(lose_data=True)
    harness.executor.down = True
    globalLogPublisher.addObserver(observer)
    try:
        harness.run(0.2)
        harness.feed.enqueue(log[20:])
        harness.executor.down = False
        harness.run(1.0)
    finally:
        globalLogPublisher.removeObserver(observer)
    state, results = reference(log)
    assert harness.executor.state.machine.to_json() == state
    assert harness.reported_results() == results  # each reported once, first time
    assert any("lost durable state" in e.get("log_format", "") for e in errors)


@pytest.mark.parametrize("read_later", [False, True], ids=["at-once", "deferred"])
def test_an_executor_that_lost_state_the_log_no_longer_has_gets_the_snapshot(
    tmp_path: Path, read_later: bool
) -> None:
    """When the log is compacted past the executor, the node's snapshot is restored first.

    The snapshot may come back at once or later (the node reads it on its disk thread).
    """
    log = make_log(30)
    snap_machine = FileMetadataMachine()
    for i, d in log[:20]:
        if d is not None:
            with contextlib.suppress(CommandRejected):
                snap_machine.apply(i, d)
    snap = (20, json.dumps(snap_machine.to_json()).encode())
    holder: list[Harness] = []

    def source() -> Any:
        if not read_later:
            return snap
        return task.deferLater(holder[0].clock, 0.3, lambda: snap)

    h = Harness(str(tmp_path / "ex"), snapshot_source=source)
    holder.append(h)
    h.log = log
    h.feed.start()
    h.feed.enqueue(log[:25])
    h.run()
    h.log = log[20:]  # compacted through 20
    h.executor.crash_and_restart(lose_data=True)
    h.executor.down = True
    h.run(0.2)
    h.feed.enqueue(log[25:])
    h.executor.down = False
    h.run(1.0)
    state, _ = reference(log)
    assert h.executor.state.machine.to_json() == state
    assert ("restore", 20) in h.executor.calls
    h.feed.stop()
    h.executor.state.close()


def test_stop_cancels_the_call_and_fails_waiters(harness: Harness) -> None:
    """stop() cancels the call in flight and errbacks waiting reads and snapshots."""
    harness.feed.start()
    harness.executor.hold = True
    harness.feed.enqueue(make_log(5))
    harness.run()
    waited = harness.feed.wait_applied(5)
    snap = harness.feed.snapshot()
    done = harness.feed.stop()
    harness.run()
    assert done.called
    errors: list[Any] = []
    waited.addErrback(errors.append)
    snap.addErrback(errors.append)
    assert len(errors) == 2
    harness.executor.held.clear()


def test_bad_settings_are_refused(harness: Harness) -> None:
    """Non-positive batch, buffer or retry settings raise ValueError; start() runs once."""
    with pytest.raises(ValueError):
        ExecutorFeed(Clock(), harness.executor, print, max_batch=0)
    with pytest.raises(ValueError):
        ExecutorFeed(Clock(), harness.executor, print, min_retry=2, max_retry=1)
    harness.feed.start()
    with pytest.raises(RuntimeError):
        harness.feed.start()


def test_a_no_op_tail_does_not_look_like_lost_state(harness: Harness) -> None:
    """applied_index past the executor's index (no-op entries) is no regression after a restart."""
    errors: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.error, LogLevel.critical):
            errors.append(event)

    harness.feed.start()
    harness.feed.enqueue([(1, b"ADD a"), (2, None)])
    harness.run()
    assert harness.feed.applied_index == 2
    harness.executor.crash_and_restart()
    harness.executor.down = True
    globalLogPublisher.addObserver(observer)
    try:
        harness.feed.enqueue([(3, b"READ a")])
        harness.run(0.3)
        harness.executor.down = False
        harness.run(1.0)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert errors == []
    assert harness.executor.state.machine.query("READ a")["reads"] == 1


def test_a_call_refused_every_time_backs_off_although_the_handshake_answers(
    harness: Harness,
) -> None:
    """The executor answers ``status`` but refuses every batch (here: bound to another
    owner): the retries back off as for an executor that is down, and the status says why."""
    harness.executor.state.execute_batch("someone-else", [(1, b"ADD x")])
    harness.feed.start()
    harness.run()
    harness.feed.enqueue([(2, b"ADD a")])
    harness.run(10.0)
    batches = [c for c in harness.executor.calls if c[0] == "apply_batch"]
    assert len(batches) <= 15  # 0.1, 0.2, 0.4, 0.8, then 1 s apart: not every 0.1 s
    assert harness.feed.failures >= len(batches)
    assert harness.feed.status()["executor_error"] is not None
    assert harness.reported == []
