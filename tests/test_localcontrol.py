"""The control socket between `leekyraft local` and `leekyraft local ACTION N`."""

from __future__ import annotations

import io
import socket
import stat
import threading

import pytest

from leeky_twisted import cli
from leeky_twisted.ops.localcontrol import (
    AlreadyRunning,
    ControlServer,
    NoSupervisor,
    SocketPathTooLong,
    send_request,
    socket_path,
)


def test_a_request_reaches_the_supervisor_and_its_answer_comes_back(tmp_path):
    """send_request delivers {action, node}; the handler's answer is returned as is."""
    server = ControlServer(tmp_path)
    seen = []
    answers = []

    def handle(request):
        seen.append(request)
        return {"ok": True, "message": "killed node 2 (SIGKILL)"}

    client = threading.Thread(target=lambda: answers.append(send_request(tmp_path, "kill", "2")))
    client.start()
    try:
        served = 0
        for _ in range(50):  # bounded: each round waits at most 0.1 s
            served += server.serve(0.1, handle)
            if served:
                break
    finally:
        client.join(timeout=30)
        server.close()
    assert seen == [{"action": "kill", "node": "2"}]
    assert answers == [{"ok": True, "message": "killed node 2 (SIGKILL)"}]
    assert not socket_path(tmp_path).exists()


def test_the_socket_is_private_and_a_second_supervisor_is_refused(tmp_path):
    """Only the owner may connect; a second `leekyraft local` on the folder is refused."""
    server = ControlServer(tmp_path)
    try:
        mode = stat.S_IMODE(socket_path(tmp_path).stat().st_mode)
        assert mode & 0o077 == 0
        with pytest.raises(AlreadyRunning, match="already runs the cluster"):
            ControlServer(tmp_path)
    finally:
        server.close()


def test_without_a_supervisor_the_request_says_so(tmp_path):
    """No socket, or a stale one left by a killed supervisor: NoSupervisor, and it is replaced."""
    with pytest.raises(NoSupervisor, match="no `leekyraft local` is running"):
        send_request(tmp_path, "kill", "1")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path(tmp_path)))
    stale.close()  # the file stays, no one listens
    with pytest.raises(NoSupervisor):
        send_request(tmp_path, "kill", "1")
    ControlServer(tmp_path).close()  # a new supervisor takes the stale path over


def test_local_action_without_a_running_cluster_exits_3_with_one_line(tmp_path):
    """`leekyraft local kill 2` with nothing running: exit 3, one clear line, no traceback."""
    args = cli.build_parser().parse_args(["local", "kill", "2", "--dir", str(tmp_path)])
    out, err = io.StringIO(), io.StringIO()
    assert cli.run_local_action(args, out, err) == cli.EXIT_UNREACHABLE
    assert out.getvalue() == ""
    assert err.getvalue().startswith("leekyraft: no `leekyraft local` is running on ")
    assert err.getvalue().count("\n") == 1


def test_local_action_needs_a_node(tmp_path):
    """`leekyraft local kill` without N is a usage error."""
    args = cli.build_parser().parse_args(["local", "kill", "--dir", str(tmp_path)])
    err = io.StringIO()
    assert cli.run_local_action(args, io.StringIO(), err) == cli.EXIT_USAGE
    assert "needs a node id" in err.getvalue()


def test_a_folder_too_deep_for_a_unix_socket_is_named_in_the_error(tmp_path):
    """A path over the AF_UNIX limit gives one clear error (the supervisor then runs without)."""
    deep = tmp_path / ("d" * 120)
    with pytest.raises(SocketPathTooLong, match="use a shorter --dir"):
        socket_path(deep)
    args = cli.build_parser().parse_args(["local", "pause", "1", "--dir", str(deep)])
    err = io.StringIO()
    assert cli.run_local_action(args, io.StringIO(), err) == cli.EXIT_ERROR
    assert "use a shorter --dir" in err.getvalue()
