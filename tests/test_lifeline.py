"""--supervisor-fd: a node stops when the process that started it ends (server/lifeline.py)."""

from __future__ import annotations

import os

import pytest
from twisted.python import usage
from twisted.python.failure import Failure

from leeky_twisted.server.lifeline import SupervisorLifeline, check_lifeline_fd


class FDReactor:
    """Records the readers added and removed (an IReactorFDSet stand-in)."""

    def __init__(self) -> None:
        self.readers: list[object] = []

    def addReader(self, reader: object) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: object) -> None:
        if reader in self.readers:
            self.readers.remove(reader)


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    ends = {"read": read_end, "write": write_end}
    yield ends
    for fd in ends.values():
        if fd is not None:
            os.close(fd)


def watching(pipe) -> tuple[SupervisorLifeline, FDReactor, list[str]]:
    reactor = FDReactor()
    stops: list[str] = []
    lifeline = SupervisorLifeline(pipe["read"], reactor, lambda: stops.append("stop"))
    lifeline.startService()
    assert reactor.readers == [lifeline]
    return lifeline, reactor, stops


def test_the_node_stops_once_when_the_supervisors_end_of_the_pipe_closes(pipe):
    """End-of-file on the pipe (the supervisor ended, even by SIGKILL): one stop, no reader."""
    lifeline, reactor, stops = watching(pipe)
    lifeline.doRead()
    assert stops == []  # nothing to read yet: the supervisor lives
    os.close(pipe["write"])
    pipe["write"] = None
    lifeline.doRead()
    lifeline.connectionLost(Failure(EOFError()))
    assert (stops, reactor.readers, lifeline.ended) == (["stop"], [], True)


def test_a_hang_up_seen_by_the_reactor_stops_the_node_too(pipe):
    """epoll reports a closed pipe as a hang-up: the reactor calls connectionLost."""
    lifeline, reactor, stops = watching(pipe)
    lifeline.connectionLost(Failure(EOFError()))
    assert (stops, reactor.readers) == (["stop"], [])


def test_bytes_on_the_pipe_do_not_stop_the_node(pipe):
    """Only the end of the pipe counts; stopping the service removes the reader."""
    lifeline, reactor, stops = watching(pipe)
    os.write(pipe["write"], b"x")
    lifeline.doRead()
    assert stops == []
    lifeline.stopService()
    assert reactor.readers == []


def test_the_option_takes_only_an_open_pipe(pipe, tmp_path):
    """--supervisor-fd naming a closed descriptor or a plain file is refused clearly."""
    check_lifeline_fd(pipe["read"])
    with open(tmp_path / "f", "w") as f, pytest.raises(ValueError, match="not a pipe"):
        check_lifeline_fd(f.fileno())
    from leeky_twisted.server.tap import Options

    argv = ["--id", "1", "--peers", "1=127.0.0.1:7101", "--data-dir", str(tmp_path / "d")]
    with pytest.raises(usage.UsageError, match="--supervisor-fd: file descriptor 999 is not open"):
        Options().parseOptions([*argv, "--supervisor-fd", "999"])
