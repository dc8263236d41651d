"""The control socket of a running ``leekyraft local``: act on its nodes from another terminal.

The supervisor (``leekyraft local``) owns the node processes. It listens on a
UNIX socket, ``DIR/control.sock``; ``leekyraft local kill|pause|resume|restart
N`` sends it one JSON line, ``{"action": "kill", "node": "2"}``, and prints the
one JSON line it answers, ``{"ok": true, "message": "..."}`` or ``{"ok":
false, "error": "..."}``. Only the supervisor signals or starts nodes, so it
knows about every process it has to stop on Ctrl-C.

The socket is created with mode 0600 in the cluster's folder: only its owner
can act on the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The socket's name in the local cluster's folder.
CONTROL_SOCKET = "control.sock"
#: What another terminal may ask of the supervisor.
ACTIONS = ("kill", "pause", "resume", "restart")
#: The longest request (one JSON line) the supervisor reads.
MAX_REQUEST_BYTES = 4096
#: How long the supervisor waits for a connected client's request line.
REQUEST_TIMEOUT = 2.0
#: AF_UNIX paths are limited to 108 bytes on Linux, the final NUL included.
MAX_SOCKET_PATH = 107


class NoSupervisor(Exception):
    """No ``leekyraft local`` is running on the folder."""


class SocketPathTooLong(ValueError):
    """The folder's path is too long for a UNIX socket in it."""


class AlreadyRunning(Exception):
    """Another ``leekyraft local`` already supervises the folder."""


def socket_path(root: Path | str) -> Path:
    """Return the control socket of the local cluster in ``root``."""
    path = Path(root).absolute() / CONTROL_SOCKET
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SocketPathTooLong(
            f"the control socket path {path} is longer than {MAX_SOCKET_PATH} bytes "
            "(a UNIX socket limit): use a shorter --dir"
        )
    return path


def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


class ControlServer:
    """The supervisor's end: accept requests and answer each with ``handle``'s reply."""

    def __init__(self, root: Path | str) -> None:
        """Listen on ``root``/control.sock; a stale socket (no one listening) is replaced.

        Raises AlreadyRunning when another supervisor answers on it.
        """
        self.path = socket_path(root)
        if self.path.exists():
            try:
                _connect(self.path, 1.0).close()
            except OSError:
                self.path.unlink()  # left by a supervisor that was killed
            else:
                raise AlreadyRunning(
                    f"another `leekyraft local` already runs the cluster in {self.path.parent}"
                )
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._inode = self.path.stat().st_ino

    def serve(self, timeout: float, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
        """Wait up to ``timeout`` seconds for requests, answer those that came; return how many."""
        served = 0
        ready, _, _ = select.select([self._sock], [], [], timeout)
        while ready:
            conn, _ = self._sock.accept()
            with conn:
                conn.settimeout(REQUEST_TIMEOUT)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(self._answer(conn, handle)).encode() + b"\n")
            served += 1
            ready, _, _ = select.select([self._sock], [], [], 0)
        return served

    @staticmethod
    def _answer(
        conn: socket.socket, handle: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        data = b""
        try:
            while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
                chunk = conn.recv(MAX_REQUEST_BYTES)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            return {"ok": False, "error": f"could not read the request: {e}"}
        try:
            request = json.loads(data.split(b"\n", 1)[0])
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            return {"ok": False, "error": f"malformed request: {e}"}
        return handle(request)

    def close(self) -> None:
        """Stop listening and remove the socket (unless another supervisor replaced it)."""
        self._sock.close()
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()


def send_request(root: Path | str, action: str, node: str, timeout: float = 30.0) -> dict[str, Any]:
    """Ask the supervisor of ``root`` to apply ``action`` to ``node``; return its answer.

    Raises NoSupervisor when no ``leekyraft local`` listens on the folder,
    OSError when it does not answer within ``timeout``.
    """
    path = socket_path(root)
    try:
        sock = _connect(path, timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NoSupervisor(
            f"no `leekyraft local` is running on {path.parent} (no one listens on {path}); "
            "start the cluster with `leekyraft local` first"
        ) from None
    with sock:
        sock.sendall(json.dumps({"action": action, "node": node}).encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data)
    except ValueError:
        raise OSError(f"the supervisor gave no answer on {path}") from None
    if not isinstance(reply, dict):
        raise OSError(f"the supervisor's answer on {path} is not a JSON object")
    return reply
