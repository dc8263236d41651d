"""Watches over HTTP as server-sent events: ``GET /v1/watch``.

Query parameters: ``key=K`` (one key), ``prefix=P``, or ``start=S`` with an
optional ``end=E``; ``from=REV`` (default: the next revision). A browser's
``EventSource`` resumes by itself: its ``Last-Event-ID`` header (the last
revision it saw) makes the stream start at the revision after it. Events::

    id: 42                      (on the last event of each revision)
    event: put                  (or delete)
    data: {"revision": 42, "type": "put", "key": ..., "value": ..., ...}

plus ``event: progress`` (``{"next_revision": N}``, when quiet) and
``event: cancelled`` (``{"reason": ...}``, then the stream ends: the
watcher fell behind, the node is stopping, or it learned it was removed from
the cluster: then the reason is ``removed: `` and the error new requests get,
and a client goes to another node). A bad request is answered 400,
a compacted revision 410 (``{"error": "compacted: ... oldest is R"}``), both
as JSON. The stream is flow-controlled: while the client's socket is full
the events wait, and a watcher that falls too far behind is cancelled
(``WatchHub.max_backlog`` events, or :data:`MAX_QUEUED_BYTES` waiting)
without slowing anyone else.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web import resource, server
from zope.interface import implementer

from leeky_twisted.api.watch import Watcher, WatchHub
from leeky_twisted.protocol.errors import Compacted, InvalidRequest, LeekyError, Unavailable
from leeky_twisted.statemachine.kv import Event

__all__ = ["MAX_QUEUED_BYTES", "WatchResource", "add_watch_resource", "format_events"]

#: Bytes of events a stream may hold while its socket is full before its watch
#: is cancelled as slow (as the AMP API's ``MAX_WATCH_BUFFER_BYTES``).
MAX_QUEUED_BYTES = 4 << 20


def format_events(events: list[Event]) -> bytes:
    """Return ``events`` as server-sent events; an ``id`` closes each revision."""
    lines = []
    for i, e in enumerate(events):
        last_of_revision = i + 1 == len(events) or events[i + 1].revision != e.revision
        data = json.dumps(e.to_json(), ensure_ascii=False)
        head = f"id: {e.revision}\n" if last_of_revision else ""
        lines.append(f"{head}event: {e.kind}\ndata: {data}\n\n")
    return "".join(lines).encode("utf-8")


@implementer(IPushProducer)
class _SSESink:
    """A watcher's stream; holds events while the socket is full (the hub counts them).

    Once more than ``max_queued_bytes`` wait, the watch is cancelled as slow.
    """

    max_queued_bytes = MAX_QUEUED_BYTES

    def __init__(self, request: server.Request, hub: WatchHub) -> None:
        self.request = request
        self.hub = hub
        self.paused = False
        self.finished = False
        self.watcher: Watcher | None = None
        self._queue: list[tuple[bytes, int]] = []
        self._queued = 0  # bytes in _queue

    def events(self, watcher: Watcher, events: list[Event]) -> None:
        data = format_events(events)
        if self.paused or self.watcher is None:
            if self.watcher is not None and self._queued + len(data) > self.max_queued_bytes:
                self.hub.cancelled_slow += 1
                self.hub.cancel(
                    watcher,
                    f"watcher fell behind: {self._queued} bytes of events wait for the"
                    f" client (limit {self.max_queued_bytes}); resume from revision"
                    f" {events[0].revision}",
                )
                return
            self._queue.append((data, len(events)))
            self._queued += len(data)
            return
        self._write(data)
        self.hub.acked(watcher, len(events))

    def progress(self, watcher: Watcher, revision: int) -> None:
        if not self.paused and not self._queue:
            self._write(b'event: progress\ndata: {"next_revision": %d}\n\n' % revision)

    def cancelled(self, watcher: Watcher, reason: str) -> None:
        self.flush()
        data = json.dumps({"reason": reason}, ensure_ascii=False)
        self._write(f"event: cancelled\ndata: {data}\n\n".encode())
        self._finish()

    def start(self, watcher: Watcher) -> None:
        """The watch is set up: send what it caught up with."""
        self.watcher = watcher
        self.flush()

    def flush(self) -> None:
        queue, self._queue = self._queue, []
        self._queued = 0
        for data, count in queue:
            self._write(data)
            if self.watcher is not None:
                self.hub.acked(self.watcher, count)

    def _write(self, data: bytes) -> None:
        if not self.finished:
            self.request.write(data)

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.request.unregisterProducer()
            self.request.finish()

    # IPushProducer: the transport says when its buffer is full and drained.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.flush()

    def stopProducing(self) -> None:
        self.finished = True
        if self.watcher is not None:
            self.hub.cancel(self.watcher)


def _text(request: server.Request, name: bytes) -> str | None:
    values = request.args.get(name) if request.args else None
    if not values:
        return None
    try:
        return values[0].decode("utf-8")  # type: ignore[no-any-return]
    except UnicodeDecodeError:
        raise InvalidRequest(f"{name.decode()} is not UTF-8") from None


def _revision(text: str | None, what: str) -> int | None:
    if text is None or text == "":
        return None
    if not (text.isdigit() and len(text) <= 19):
        raise InvalidRequest(f"{what} must be a revision (a non-negative integer)")
    return int(text)


class WatchResource(resource.Resource):
    """``GET /v1/watch``: a watch as a stream of server-sent events."""

    isLeaf = True

    def __init__(self, frontend: Any) -> None:
        super().__init__()
        self.frontend = frontend

    def render_GET(self, request: server.Request) -> bytes | int:
        """Start the stream, or answer 400/410/503 with a JSON error."""
        hub = self.frontend.watches
        try:
            key, prefix = _text(request, b"key"), _text(request, b"prefix")
            start, end = _text(request, b"start"), _text(request, b"end")
            if sum(x is not None for x in (key, prefix, start)) != 1:
                raise InvalidRequest("name one of key, prefix or start")
            from_revision = _revision(_text(request, b"from"), "from")
            last_id = request.getHeader(b"last-event-id")
            if last_id:
                seen = _revision(last_id.decode("ascii", "replace").strip(), "Last-Event-ID")
                from_revision = None if seen is None else seen + 1
            if key is not None:
                start, end = self.frontend._key(key), key + "\0"
            sink = _SSESink(request, hub)
            watcher = self.frontend.start_watch(
                prefix if prefix is not None else start,
                end,
                prefix is not None,
                from_revision,
                sink,
            )
        except Compacted as e:
            return _error(request, 410, str(e))
        except InvalidRequest as e:
            return _error(request, 400, str(e))
        except (Unavailable, LeekyError) as e:
            return _error(request, 503, str(e))
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.registerProducer(sink, True)
        request.write(b": watching from revision %d\n\n" % watcher.origin)
        sink.start(watcher)
        request.notifyFinish().addBoth(lambda _: hub.cancel(watcher) if hub else None)
        return server.NOT_DONE_YET


def _error(request: server.Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def add_watch_resource(root: resource.Resource, frontend: Any) -> None:
    """Serve ``/v1/watch`` under ``root`` (the node's web site)."""
    v1 = root.getStaticEntity(b"v1") if hasattr(root, "getStaticEntity") else None
    if not isinstance(v1, resource.Resource):
        v1 = resource.Resource()
        root.putChild(b"v1", v1)
    v1.putChild(b"watch", WatchResource(frontend))
