"""`leekyraft lock NAME -- COMMAND`: stopping the command reaches every process it started.

Real processes under the real reactor (pytest-twisted); waits are conditions with
deadlines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from leeky_twisted import cli

DEADLINE = 20.0


async def _until(what: str, check) -> None:
    """Poll ``check`` on the reactor until it is true; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await deferLater(reactor, 0.05, lambda: None)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for init counts as gone
        return f.read().split(") ", 1)[1].startswith("Z")


@pytest_twisted.ensureDeferred
async def test_stopping_the_command_stops_what_it_started_too(tmp_path: Path):
    """A shell that started a long `sleep` and waits for it: TERM for the command (the
    lock was lost, or Ctrl-C) ends the sleep too, which would otherwise run on beside
    the next holder of the lock."""
    pidfile = tmp_path / "grandchild"
    script = f"sleep 60 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait"
    ended = cli.spawn_inheriting(["/bin/sh", "-c", script], dict(os.environ))
    await _until("the command to start its child", pidfile.exists)
    grandchild = int(pidfile.read_text())
    ended.transport.signalProcess("TERM")
    code = await ended
    assert code == 128 + 15
    await _until(f"the command's child {grandchild} to end", lambda: _gone(grandchild))


@pytest_twisted.ensureDeferred
async def test_the_command_gets_its_arguments_environment_and_exit_code(tmp_path: Path):
    """The command runs as given (through its own session's start), with its exit code."""
    out = tmp_path / "out"
    env = {**os.environ, "LEEKYRAFT_LOCK_TOKEN": "42"}
    script = f'echo "$0 $1 $LEEKYRAFT_LOCK_TOKEN" > {out}; exit 3'
    code = await cli.spawn_inheriting(["/bin/sh", "-c", script, "zero", "one"], env)
    assert code == 3
    assert out.read_text().split() == ["zero", "one", "42"]
