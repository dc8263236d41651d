"""Stop the node when the process that started it ends (``--supervisor-fd FD``).

``leekyraft local`` hands each node the read end of a pipe whose only write
end it keeps, and never writes to it. However the supervisor ends (Ctrl-C,
a crash, SIGKILL), the kernel closes that write end, and the node's read end
reports end-of-file: the node then stops as it does on SIGTERM (its services
stop in order; its storage is flushed). No polling, no timer, and no
reliance on the parent pid, which a new process may take over.

A node the supervisor paused (SIGSTOP) runs no code and would never see the
end-of-file: on Linux the node also asks the kernel for SIGCONT when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), which resumes it so that it reads
the end-of-file and stops. SIGCONT does nothing to a running process, so a
death signal sent early (the kernel watches the parent *thread*) is harmless.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import fdesc
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["SupervisorLifeline", "check_lifeline_fd", "resume_when_parent_dies"]

log = Logger()

#: prctl option: the signal this process gets when its parent dies (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def check_lifeline_fd(fd: int) -> None:
    """Raise ValueError unless ``fd`` is an open pipe (what ``leekyraft local`` passes)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise ValueError(f"file descriptor {fd} is not open: {e.strerror}") from None
    if not stat.S_ISFIFO(mode):
        raise ValueError(f"file descriptor {fd} is not a pipe")


def resume_when_parent_dies() -> bool:
    """Ask Linux for SIGCONT when this process's parent dies; return whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGCONT), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@implementer(IReadDescriptor)
class SupervisorLifeline(Service):
    """Watch the read end of the supervisor's pipe; call ``stop`` once it is closed.

    :param fd: the inherited read end (nothing is ever written to it).
    :param reactor: an IReactorFDSet (and IReactorCore when ``stop`` is not given).
    :param stop: what ends the node (default: ``reactor.stop``, as SIGTERM does).
    """

    def __init__(self, fd: int, reactor: Any, stop: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self.reactor = reactor
        self._stop = stop if stop is not None else self._stop_reactor
        self.ended = False

    def startService(self) -> None:
        """Start watching the pipe (and ask for SIGCONT should the parent die paused)."""
        super().startService()  # type: ignore[no-untyped-call]
        resume_when_parent_dies()
        fdesc.setNonBlocking(self.fd)  # type: ignore[no-untyped-call]
        self.reactor.addReader(self)

    def stopService(self) -> Any:
        """Stop watching the pipe."""
        self.reactor.removeReader(self)
        return super().stopService()  # type: ignore[no-untyped-call]

    def fileno(self) -> int:
        """Return the watched file descriptor."""
        return self.fd

    def logPrefix(self) -> str:
        """Name this reader in the reactor's log lines."""
        return "SupervisorLifeline"

    def doRead(self) -> None:
        """Read what is there: end-of-file (or an error) means the supervisor ended."""
        try:
            data = os.read(self.fd, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._supervisor_ended()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw the pipe hang up (its write end closed): the supervisor ended."""
        self._supervisor_ended()

    def _supervisor_ended(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.reactor.removeReader(self)
        log.warn(
            "the process that started this node (leekyraft local) has ended: stopping the node"
        )
        self._stop()

    def _stop_reactor(self) -> None:
        from twisted.internet.error import ReactorNotRunning

        with contextlib.suppress(ReactorNotRunning):
            self.reactor.stop()
