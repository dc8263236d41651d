"""DiskThread: jobs run in order on one other thread; results fire on the reactor's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from leeky_twisted.diskthread import DiskThread


class _CollectingReactor:
    """Stands in for the reactor: keeps what callFromThread was given, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def callFromThread(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self.calls.append((fn, args))

    def deliver(self) -> None:
        calls, self.calls = self.calls, []
        for fn, args in calls:
            fn(*args)


def test_jobs_run_in_order_on_one_thread_and_results_come_back_in_order() -> None:
    reactor = _CollectingReactor()
    disk = DiskThread(reactor)
    ran: list[tuple[int, str]] = []
    results: list[int] = []

    # Submitted before start: they wait for it.
    def job(i: int) -> Callable[[], int]:
        def work() -> int:
            ran.append((i, threading.current_thread().name))
            return i

        return work

    ds = [disk.run(job(i)) for i in range(50)]
    for d in ds:
        d.addCallback(results.append)
    disk.startService()
    disk.stopService()  # runs everything queued, then joins
    assert [i for i, _ in ran] == list(range(50))
    assert {name for _, name in ran} == {"leeky-disk"}
    assert results == []  # nothing fires off the reactor thread
    reactor.deliver()
    assert results == list(range(50))


def test_a_failing_job_errbacks_and_later_jobs_still_run() -> None:
    reactor = _CollectingReactor()
    disk = DiskThread(reactor)
    disk.startService()

    def broken() -> None:
        raise OSError("disk full")

    failed = disk.run(broken)
    after = disk.run(lambda: "ok")
    disk.stopService()
    reactor.deliver()
    errors: list[BaseException | None] = []

    def note(f: Failure) -> None:
        errors.append(f.value)

    failed.addErrback(note)
    got: list[str] = []
    after.addCallback(got.append)
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    assert got == ["ok"]


def test_stop_joins_the_thread_and_a_second_stop_is_harmless() -> None:
    disk = DiskThread(_CollectingReactor(), name="leeky-disk-test")
    disk.startService()
    assert any(t.name == "leeky-disk-test" for t in threading.enumerate())
    disk.stopService()
    assert not any(t.name == "leeky-disk-test" for t in threading.enumerate())
    disk.stopService()  # again: nothing left to join
