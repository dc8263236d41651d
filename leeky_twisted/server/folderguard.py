"""Stop the node when its data folder is no longer the one it opened.

A node whose folder was deleted or replaced while it runs would go on
acknowledging writes and granting votes that no restart will remember (its
open files still take writes). Checking before each acknowledgement would
cost a ``stat`` per write, so :class:`DataFolderGuard` checks on a timer
(``defaults.DATA_DIR_CHECK_SECONDS``) and at once whenever a storage
operation fails; on the first change it calls ``on_lost`` once with one line
that names the folder and what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.application import service
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from leeky_twisted import defaults


class FolderCheck(Protocol):
    """What the guard watches: :class:`~leeky_twisted.storage.folderwatch.FolderIdentity`,
    or the simulation's stand-in for it."""

    folder: str  #: the path a message names

    def change(self) -> str | None:
        """Return what changed since the folder was opened (one phrase), or None."""


class DataFolderGuard(service.Service):
    """Check a :class:`FolderCheck` every ``interval`` seconds of ``clock``.

    :param on_lost: called once, with the reason, when the folder changed.
    :param who: what opened the folder, as the reason names it.
    """

    def __init__(
        self,
        clock: Any,
        identity: FolderCheck,
        on_lost: Callable[[str], None],
        interval: float = defaults.DATA_DIR_CHECK_SECONDS,
        who: str = "this node",
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the data folder check interval must be positive, got {interval}")
        self.clock = clock
        self.identity = identity
        self.on_lost = on_lost
        self.interval = interval
        self.who = who  #: what opened the folder, as a message names it
        self.lost: str | None = None  #: the reason, once the folder changed
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        """Check every ``interval`` seconds from now on."""
        super().startService()
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        """Stop checking."""
        super().stopService()
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def check(self) -> str | None:
        """Compare the folder with the one opened; on the first change, call ``on_lost``.

        Return the reason the folder is lost, or None while it is the same.
        """
        if self.lost is not None:
            return self.lost
        change = self.identity.change()
        if change is None:
            return None
        self.lost = (
            f"the data folder {self.identity.folder} is no longer the one "
            f"{self.who} opened: {change}. Every write since then would be lost at the next start"
        )
        self._stop_loop()
        self.on_lost(self.lost)
        return self.lost

    def checked(
        self, run: Callable[[Callable[[], Any]], Deferred[Any]]
    ) -> Callable[[Callable[[], Any]], Deferred[Any]]:
        """Wrap ``run`` (the disk thread's job runner) to check the folder when a job fails.

        The failure is passed on unchanged.
        """

        def run_checked(job: Callable[[], Any]) -> Deferred[Any]:
            def on_failure(failure: Failure) -> Failure:
                self.check()
                return failure

            return run(job).addErrback(on_failure)

        return run_checked
