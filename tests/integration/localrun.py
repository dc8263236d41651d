"""A `leekyraft local` cluster for the integration tests: started, driven, always stopped.

Shared by test_local_demo.py and test_removed_member.py (not a test module itself).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
CLI = str(Path(sys.executable).parent / "leekyraft")


def free_base_port(nodes: int) -> int:
    """Return a base port B whose client, peer and HTTP ports (B+i, B+100+i, B+200+i) are free."""
    for _ in range(100):
        base = random.randrange(20000, 60000, 1000)
        ports = [base + offset + i for offset in (0, 100, 200) for i in range(1, nodes + 1)]
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range found")


class Output:
    """Collect a process's output lines on a thread; wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate, what: str, start: int = 0, timeout: float = 60.0) -> str:
        """Return the first line from index ``start`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line {what} in:\n" + "\n".join(self.lines))
                self._cond.wait(left)


def node_pids(folder: Path) -> list[int]:
    """Return the pids of the node processes running on ``folder`` (by their --data-dir)."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--data-dir {folder}/"], capture_output=True, text=True
    ).stdout.split()
    return sorted(int(pid) for pid in found)


class LocalRun:
    """A running ``leekyraft local --nodes N`` on ``folder`` (fast timers, free ports),
    its output collected, and the commands a test runs against it."""

    def __init__(self, folder: Path, nodes: int = 3) -> None:
        self.folder = folder
        self.base = free_base_port(nodes)
        self.env = {k: v for k, v in os.environ.items() if k != "LEEKYRAFT_CLUSTER"}
        self.proc = subprocess.Popen(
            [CLI, "local", "--nodes", str(nodes), "--dir", str(folder)]
            + ["--base-port", str(self.base)]
            + [f"--node-arg={a}" for a in FAST],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        self.out = Output(self.proc)
        #: the node pids still running once :meth:`stop` stopped the supervisor (then killed)
        self.left: list[int] = []

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (without LEEKYRAFT_CLUSTER in its environment) and capture it."""
        return subprocess.run(args, capture_output=True, text=True, timeout=60, env=self.env)

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``leekyraft local ARGS --dir FOLDER`` (kill, restart, pause, resume)."""
        return self.run(CLI, "local", *args, "--dir", str(self.folder))

    def cli(
        self, *args: str, nodes: tuple[int, ...] = (1, 2, 3)
    ) -> subprocess.CompletedProcess[str]:
        """Run ``leekyraft --cluster CLIENT-PORTS-OF-NODES ARGS``."""
        clients = ",".join(f"127.0.0.1:{self.base + i}" for i in nodes)
        return self.run(CLI, "--cluster", clients, *args)

    def http_port(self, node: int | str) -> int:
        """Return node ``node``'s HTTP (JSON-RPC, dashboard) port."""
        return self.base + 200 + int(node)

    def wait_ready(self) -> str:
        """Wait for the supervisor's "Ctrl-C ..." line: every node started."""
        return self.out.wait_for(lambda line: line.startswith("Ctrl-C"), "Ctrl-C ...")

    def stop(self) -> None:
        """Stop the supervisor (SIGINT, SIGKILL after 60 s); any node left running (only
        if the supervisor itself failed) is ours: note it in :attr:`left`, resume, kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.left = node_pids(self.folder)
        for pid in self.left:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)


@contextlib.contextmanager
def start_local(folder: Path, nodes: int = 3) -> Iterator[LocalRun]:
    """Start ``leekyraft local`` on ``folder``; stop it and its nodes however the block ends."""
    local = LocalRun(folder, nodes)
    try:
        yield local
    finally:
        local.stop()
