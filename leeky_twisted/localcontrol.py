"""Moved to :mod:`leeky_twisted.ops.localcontrol`: the old name still imports."""

from leeky_twisted.ops.localcontrol import (  # noqa: F401
    ACTIONS,
    CONTROL_SOCKET,
    MAX_REQUEST_BYTES,
    MAX_SOCKET_PATH,
    REQUEST_TIMEOUT,
    AlreadyRunning,
    ControlServer,
    NoSupervisor,
    SocketPathTooLong,
    send_request,
    socket_path,
)
