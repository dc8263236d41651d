"""A node whose data folder is deleted or replaced while it runs stops (task.Clock, no sleeps)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodebuild import service_from
from test_node import (
    RecordingTransport,
    answers,
    append_from_leader,
    make_follower_on_a_disk_thread,
    make_node,
    outcome,
    run,
)
from twisted.internet import defer, task

from leeky_twisted import defaults
from leeky_twisted.core.messages import NodeId, RequestVote, RequestVoteResponse
from leeky_twisted.protocol.errors import Unavailable
from leeky_twisted.server.folderguard import DataFolderGuard
from leeky_twisted.server.node import NodeHooks
from leeky_twisted.storage.files import FileLogStore, FileSnapshotStore
from leeky_twisted.storage.folderwatch import FolderIdentity


class Opened:
    """A data folder with its stores open and a guard on a task.Clock."""

    def __init__(self, root: Path, interval: float = 1.0) -> None:
        self.data = root / "data"
        self.log_store = FileLogStore(self.data / "log", preallocate=False)
        FileSnapshotStore(self.data / "snapshots")
        identity = FolderIdentity(
            str(self.data),
            [str(self.data / "log"), str(self.data / "snapshots")],
            self.log_store.lock.path,
            self.log_store.lock.identity,
        )
        self.clock = task.Clock()
        self.reasons: list[str] = []
        self.guard = DataFolderGuard(self.clock, identity, self.reasons.append, interval)

    def swap(self) -> None:
        """Move the folder away and make a new empty one at its path."""
        self.data.rename(self.data.parent / "moved")
        self.data.mkdir()


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opened]:
    folder = Opened(tmp_path)
    folder.guard.startService()
    yield folder
    folder.guard.stopService()
    folder.log_store.close()


def test_the_check_fires_on_the_next_tick_after_the_folder_is_swapped(opened: Opened) -> None:
    """Unchanged for several intervals; swapped; the next check reports it, once."""
    opened.clock.advance(3.0)
    assert opened.reasons == []
    opened.swap()
    opened.clock.advance(0.5)
    assert opened.reasons == []  # not before the timer
    opened.clock.advance(0.5)
    assert len(opened.reasons) == 1
    reason = opened.reasons[0]
    assert reason.startswith(f"the data folder {opened.data} is no longer the one this node opened")
    assert "was replaced" in reason and "would be lost at the next start" in reason
    opened.clock.advance(10.0)
    assert len(opened.reasons) == 1 and opened.clock.getDelayedCalls() == []
    assert opened.guard.check() == reason  # asked again: the same answer, no second call


def test_a_deleted_folder_fires_the_check(opened: Opened) -> None:
    """rm -rf DATA-DIR: reported as deleted."""
    shutil.rmtree(opened.data)
    opened.clock.advance(1.0)
    assert opened.reasons and f"the data folder {opened.data} was deleted" in opened.reasons[0]


def test_the_interval_is_the_default_unless_given(tmp_path: Path) -> None:
    """DATA_DIR_CHECK_SECONDS paces the check; a non-positive interval is refused."""
    folder = Opened(tmp_path)
    assert DataFolderGuard(folder.clock, folder.guard.identity, print).interval == (
        defaults.DATA_DIR_CHECK_SECONDS
    )
    with pytest.raises(ValueError, match="must be positive"):
        DataFolderGuard(folder.clock, folder.guard.identity, print, 0)
    folder.log_store.close()


def test_a_failed_disk_job_checks_the_folder_at_once(opened: Opened) -> None:
    """A storage operation that fails has the folder checked without waiting for the timer."""
    opened.swap()

    def failing(job: Any) -> defer.Deferred[Any]:
        return defer.fail(FileNotFoundError(2, "No such file or directory"))

    got = outcome(opened.guard.checked(failing)(lambda: None))
    assert got[0].check(FileNotFoundError)  # the failure goes on to the caller
    assert len(opened.reasons) == 1 and "was replaced" in opened.reasons[0]


def test_a_disk_job_that_succeeds_checks_nothing(opened: Opened) -> None:
    """Only failures are checked at once; success costs nothing."""
    opened.swap()
    got = outcome(opened.guard.checked(lambda job: defer.succeed(job()))(lambda: 7))
    assert got == [7] and opened.reasons == []


def test_a_failed_write_reports_why_the_storage_is_gone() -> None:
    """The node asks its storage check first, so its one critical line names the lost folder."""
    told: list[str] = []
    node, clock, transport, _disk, _ = make_follower_on_a_disk_thread()
    node.hooks = NodeHooks(storage_check=lambda: "the data folder /d was deleted",
                           on_fail_stop=told.append)  # fmt: skip

    def broken(entries: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    node.log_store.append = broken  # type: ignore[method-assign]
    append_from_leader(node, node.core.log.last_index() + 1)
    run(clock, 0.02)
    assert node.failure == "the data folder /d was deleted" and told == [node.failure]
    assert answers(transport) == []


def test_a_failed_write_without_a_storage_check_says_what_failed() -> None:
    """No storage check (or nothing found): the reason is the write's error, as before."""
    told: list[str] = []
    node, clock, _transport, _disk, _ = make_follower_on_a_disk_thread()
    node.hooks = NodeHooks(storage_check=lambda: None, on_fail_stop=told.append)

    def broken(entries: Any) -> None:
        raise OSError("disk on fire")

    node.log_store.append = broken  # type: ignore[method-assign]
    append_from_leader(node, node.core.log.last_index() + 1)
    run(clock, 0.02)
    assert node.failure == "persisting failed: disk on fire" and told == [node.failure]


def test_a_node_stopped_for_its_folder_serves_nothing_and_writes_nothing() -> None:
    """After fail_stop: no vote, no write accepted, no read (stale or not), nothing saved."""
    node, clock, transport, events = make_node(["1", "2", "3"])
    assert isinstance(transport, RecordingTransport)
    events.clear()
    node.fail_stop("the data folder /d was deleted")
    node.fail_stop("a second reason")  # ignored
    assert node.failure == "the data folder /d was deleted"
    node.receive(RequestVote(NodeId("2"), NodeId("1"), 9, 99, 9))
    run(clock, 1.0)
    assert not [m for m in transport.sent if isinstance(m, RequestVoteResponse)]
    for d in (
        node.propose(b"x", timeout=1),
        node.read(b"k", linearizable=True, timeout=1),
        node.read(b"k", linearizable=False, timeout=1),
    ):
        got = outcome(d)
        assert got[0].check(Unavailable), got
        assert "stopped itself: the data folder /d was deleted" in str(got[0].value)
    stopped = outcome(node.stop())
    run(clock, 0.1)
    assert stopped == [None]
    assert [e for e in events if e[0] == "save"] == []


def test_the_node_service_guards_its_data_folder_and_exits_1(tmp_path: Path) -> None:
    """twistd's service tree holds a guard: rm -rf DATA-DIR stops the node within one
    interval and arranges exit status 1 once the reactor has shut down."""
    data = tmp_path / "data"
    svc = service_from(["--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir", str(data),
                        "--client-port", "0", "--http-port", "0",
                        "--data-dir-check", "0.5"])  # fmt: skip
    node = svc.node
    reactor = node.reactor
    guard = next(s for s in svc if isinstance(s, DataFolderGuard))
    assert guard.interval == 0.5 and node.hooks.storage_check == guard.check
    guard.startService()
    try:
        reactor.advance(0.5)
        assert node.failure is None
        shutil.rmtree(data)
        reactor.advance(0.5)
        assert node.failure is not None and node.stopped
        assert f"the data folder {data} is no longer the one this node opened" in node.failure
        assert (os._exit, (1,), {}) in reactor.triggers["after"]["shutdown"]
    finally:
        guard.stopService()
        for store in node.log_store, node.stable_store:
            store.close()
