"""One thread for every blocking disk operation, run in the order submitted.

A leader under load hands its disk thread one write per Ready, thousands a
second. Twisted's general ``ThreadPool`` (with ``deferToThreadPool``) costs a
team coordinator, a lock worker and a logging context per job on both
threads; this thread takes jobs from one queue and hands each result back
with one ``callFromThread``. The order of jobs and of their results is the
order of :meth:`DiskThread.run` calls.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_Job = tuple[Callable[[], Any], Deferred[Any]]


class DiskThread(service.Service):
    """Run blocking jobs on one thread; fire their Deferreds on the reactor thread.

    Jobs submitted before :meth:`startService` wait for it. :meth:`stopService`
    runs every job already submitted, then joins the thread.
    """

    def __init__(self, reactor: Any, name: str = "leeky-disk") -> None:
        self.reactor = reactor
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], Any]) -> Deferred[Any]:
        """Queue ``fn``; the Deferred fires with its result (or its failure)."""
        d: Deferred[Any] = Deferred()
        self._jobs.put((fn, d))
        return d

    def _work(self) -> None:
        call = self.reactor.callFromThread
        get = self._jobs.get
        while True:  # bounded by the stop sentinel stopService queues
            job = get()
            if job is None:
                return
            fn, d = job
            try:
                result = fn()
            except BaseException:
                call(d.errback, Failure())
            else:
                call(d.callback, result)

    def startService(self) -> None:
        super().startService()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()

    def stopService(self) -> None:
        super().stopService()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
