"""The example executor as a real process on loopback, killed and restarted mid-stream."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_feed import make_log, reference
from twisted.internet import defer, protocol, task
from twisted.python.failure import Failure

from leeky_twisted.statemachine.remote import (
    ExecutorFeed,
    RemoteStateMachineExecutor,
    ResultUnknown,
)

pytestmark = pytest.mark.integration

DEADLINE = 30.0


def free_port() -> int:
    """Return a loopback TCP port that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ExecutorProcess(protocol.ProcessProtocol):
    """``python -m leeky_twisted.executor``: fires ``ready`` once it listens, ``ended`` at exit."""

    def __init__(self) -> None:
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.output = b""
        self.exit_code: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"executor listening on" in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"executor exited: {self.output.decode()[-2000:]}"))
        self.ended.callback(None)

    def kill(self) -> defer.Deferred[None]:
        self.transport.signalProcess("KILL")
        return self.ended


@defer.inlineCallbacks
def start_executor(reactor: Any, data_dir: Path, port: int, *options: str) -> Any:
    """Start an executor process (with ``options``) and wait until it listens."""
    proc = ExecutorProcess()
    args = [sys.executable, "-m", "leeky_twisted.executor"]
    args += ["--port", str(port), "--data-dir", str(data_dir), *options]
    reactor.spawnProcess(proc, sys.executable, args, env=dict(os.environ))
    yield proc.ready.addTimeout(DEADLINE, reactor)
    return proc


@defer.inlineCallbacks
def wait_until(reactor: Any, what: str, check: Any) -> Any:
    """Poll ``check()`` every 20 ms until it is true; fail after DEADLINE seconds."""
    deadline = reactor.seconds() + DEADLINE
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield task.deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.inlineCallbacks
def test_kill_and_restart_the_executor_mid_stream(tmp_path: Path) -> Any:
    """SIGKILL the executor mid-stream, restart it: its state is the log applied exactly once."""
    from twisted.internet import reactor

    port = free_port()
    proc = yield start_executor(reactor, tmp_path / "ex", port)
    client = RemoteStateMachineExecutor(
        reactor, f"http://127.0.0.1:{port}/jsonrpc", "leeky/1", timeout=2.0
    )
    reported: list[tuple[int, object]] = []
    feed = ExecutorFeed(
        reactor, client, lambda i, r: reported.append((i, r)), max_batch=4, max_retry=0.2
    )
    log = make_log(600)
    try:
        feed.start()
        feed.enqueue(log[:300])
        yield feed.wait_applied(100).addTimeout(DEADLINE, reactor)
        yield proc.kill()  # most likely in the middle of a batch
        feed.enqueue(log[300:])
        yield wait_until(
            reactor,
            "the feed to notice the executor is gone",
            lambda: not feed.reachable and feed.lag > 0,
        )
        assert not feed.reachable
        assert feed.lag > 0
        held_at = feed.applied_index
        proc = yield start_executor(reactor, tmp_path / "ex", port)
        yield feed.wait_applied(600).addTimeout(DEADLINE, reactor)
        assert feed.applied_index == 600 and held_at < 600
        index, data = yield client.snapshot()
        assert index == 599  # 600 is a no-op entry: it never reaches the executor
    finally:
        yield feed.stop()
        yield client.close()
        yield proc.kill()
    import json

    state, results = reference(log)
    assert json.loads(data) == state
    got = {i: (str(r) if isinstance(r, Exception) else r) for i, r in reported}
    assert [i for i, _ in reported] == sorted(results)  # each once, in order
    assert not any(isinstance(r, ResultUnknown) for _, r in reported)
    assert got == results


@pytest_twisted.inlineCallbacks
def test_restart_the_node_side_and_the_executor_mid_stream(tmp_path: Path) -> Any:
    """The node restarts (a new feed replays from 1) while the executor also restarts."""
    from twisted.internet import reactor

    port = free_port()
    url = f"http://127.0.0.1:{port}/jsonrpc"
    proc = yield start_executor(reactor, tmp_path / "ex", port)
    log = make_log(400)
    client = RemoteStateMachineExecutor(reactor, url, "leeky/1", timeout=2.0)
    feed = ExecutorFeed(reactor, client, lambda i, r: None, max_batch=8, max_retry=0.2)
    feed.start()
    feed.enqueue(log[:250])
    try:
        yield feed.wait_applied(120).addTimeout(DEADLINE, reactor)
    finally:
        yield feed.stop()  # the node crashes
        yield client.close()
    yield proc.kill()  # and so does the executor
    proc = yield start_executor(reactor, tmp_path / "ex", port)
    client = RemoteStateMachineExecutor(reactor, url, "leeky/1", timeout=2.0)
    feed = ExecutorFeed(reactor, client, lambda i, r: None, max_batch=8, max_retry=0.2)
    try:
        feed.start()
        feed.enqueue(log)  # the restarted node replays its whole log
        yield feed.wait_applied(400).addTimeout(DEADLINE, reactor)
        _, data = yield client.snapshot()
        other = RemoteStateMachineExecutor(reactor, url, "leeky/2", timeout=2.0)
        refused = yield other.apply_batch([(401, b"ADD x")]).addErrback(lambda f: f.value)
        yield other.close()
    finally:
        yield feed.stop()
        yield client.close()
        yield proc.kill()
    import json

    assert json.loads(data) == reference(log)[0]
    assert "serves 'leeky/1'" in str(refused)


@pytest_twisted.inlineCallbacks
def test_an_executor_whose_data_folder_is_deleted_exits_with_status_1(tmp_path: Path) -> Any:
    """The real process: its folder deleted, it says why and exits 1 (a supervisor sees it)."""
    from twisted.internet import reactor

    folder = tmp_path / "ex"
    proc = yield start_executor(reactor, folder, free_port(), "--data-dir-check", "0.1")
    shutil.rmtree(folder)
    yield proc.ended.addTimeout(DEADLINE, reactor)
    assert proc.exit_code == 1, proc.output.decode()[-2000:]
    assert b"the executor stopped itself" in proc.output and b"was deleted" in proc.output
