"""Start the example executor: ``python -m leeky_twisted.executor`` or ``twistd leekyexecutor``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from leeky_twisted import defaults
from leeky_twisted.executor.server import make_executor_site
from leeky_twisted.executor.store import DurableExecutorState
from leeky_twisted.server.folderguard import DataFolderGuard
from leeky_twisted.storage.folderwatch import FolderIdentity

__all__ = ["ExecutorService", "Options", "main", "makeService"]

log = Logger()


class Options(usage.Options):
    """Command-line options of the example executor."""

    synopsis = "--data-dir DIR [--port PORT] [--host HOST]"
    longdesc = (
        "Run the example file-metadata executor: a Raft node applies its committed "
        "entries (ADD f, READ f, DELETE f) here over JSON-RPC at /jsonrpc. One executor "
        "serves one node. It listens on loopback unless told otherwise: it trusts its caller."
    )
    optParameters = [
        ["data-dir", "d", None, "Directory for the durable state (created if missing)."],
        ["port", "p", 7070, "TCP port for JSON-RPC (0: any free port).", int],
        ["host", None, "127.0.0.1", "Interface to listen on."],
        [
            "data-dir-check",
            None,
            defaults.DATA_DIR_CHECK_SECONDS,
            "Check every this many seconds (and whenever a save fails) that DATA-DIR is "
            "still the folder the executor opened; if it was deleted or replaced, the "
            "executor stops serving and exits with status 1.",
            float,
        ],
    ]

    def postOptions(self) -> None:
        """Check that a data directory was given and the port is valid."""
        if not self["data-dir"]:
            raise usage.UsageError("--data-dir is required")
        if not 0 <= self["port"] < 65536:
            raise usage.UsageError("--port must be 0..65535")
        if not self["data-dir-check"] > 0:
            raise usage.UsageError("--data-dir-check must be positive")


class ExecutorService(service.Service):
    """Open the durable state and listen for the node on start; close both on stop.

    While it runs, a :class:`DataFolderGuard` checks that the data folder is
    still the one opened (every ``data_dir_check`` seconds, and at once when a
    save fails). When it was deleted or replaced, the executor stops applying
    and listening and the process exits 1, as a node does: its saves would land
    nowhere, or in a folder a second executor could open.
    """

    def __init__(
        self,
        reactor: Any,
        data_dir: str,
        port: int,
        host: str,
        data_dir_check: float = defaults.DATA_DIR_CHECK_SECONDS,
    ) -> None:
        self.reactor = reactor
        self.data_dir = data_dir
        self.port = port
        self.host = host
        self.data_dir_check = data_dir_check
        self.state: DurableExecutorState | None = None
        self.listening: Any = None
        self.guard: DataFolderGuard | None = None
        self.lost: str | None = None  #: why it stopped itself, once it did

    def startService(self) -> None:
        """Load the state (skipping nothing: replays are refused by index) and listen."""
        super().startService()
        self.state = state = DurableExecutorState(self.data_dir)
        identity = FolderIdentity(self.data_dir, [], state.lock.path, state.lock.identity)
        self.guard = DataFolderGuard(
            self.reactor, identity, self._folder_lost, self.data_dir_check, "this executor"
        )
        state.folder_check = self.guard.check
        self.guard.startService()
        site = make_executor_site(state)
        self.listening = self.reactor.listenTCP(self.port, site, interface=self.host)
        log.info(
            "executor listening on {host}:{port}, last applied {index}, owner {owner}",
            host=self.host,
            port=self.listening.getHost().port,
            index=self.state.last_applied,
            owner=self.state.owner,
        )

    def stopService(self) -> Deferred[None] | None:
        """Stop listening, then release the data directory."""
        super().stopService()
        if self.guard is not None and self.guard.running:
            self.guard.stopService()
        d: Deferred[None] | None = None
        if self.listening is not None:
            d = self.listening.stopListening()
        if self.state is not None:
            self.state.close()
        return d

    def _folder_lost(self, why: str) -> None:
        """Apply nothing more, stop listening, and make the process exit 1."""
        from leeky_twisted.server.service import exit_1_after_shutdown

        self.lost = why
        if self.state is not None:
            self.state.lost = why
        log.critical("the executor stopped itself: {why}", why=why)
        listening, self.listening = self.listening, None
        if listening is not None:
            listening.stopListening()
        exit_1_after_shutdown(self.reactor)
        if getattr(self.reactor, "running", False):
            self.reactor.stop()


def makeService(options: Options, reactor: Any = None) -> ExecutorService:
    """Return the executor service for ``twistd -n leekyexecutor``."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    return ExecutorService(
        reactor,
        options["data-dir"],
        options["port"],
        options["host"],
        options["data-dir-check"],
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the executor in the foreground, logging to stdout, until SIGINT/SIGTERM."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        print(f"{options}\nerror: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    svc = makeService(options, reactor)
    reactor.callWhenRunning(svc.startService)  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
