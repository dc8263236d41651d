"""The dashboard's twisted.web resources: the page, its assets, JSON, events, actions.

- ``GET /`` and ``GET /dashboard/``: the page; ``/dashboard/static/NAME``: its assets
  (read from the package once, at start);
- ``GET /dashboard/local``: this node's state (what other members gather);
- ``GET /dashboard/cluster``: the whole cluster, with each member's history;
- ``GET /dashboard/events``: the cluster pushed as server-sent events;
- ``POST /dashboard/admin/transfer?to=ID`` and ``/dashboard/admin/remove?id=ID``:
  operator actions, refused (403) unless the node was given a token and the
  request carries it (``Authorization: Bearer TOKEN``).

A reader that does not keep up is never buffered for: each stream is a push
producer of its connection; while the connection is paused (its send buffer
full), frames are dropped and counted, and the next frame after it drains is
the whole current state again.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer

from leeky_twisted.dashboard.gather import Gatherer
from leeky_twisted.protocol.errors import LeekyError

__all__ = [
    "ASSETS",
    "MAX_STREAMS",
    "AdminResource",
    "EventStream",
    "EventStreams",
    "install",
    "load_assets",
]

#: the files the page is made of, and their content types
ASSETS = {
    "index.html": b"text/html; charset=utf-8",
    "dashboard.js": b"text/javascript; charset=utf-8",
    "dashboard.css": b"text/css; charset=utf-8",
}
#: open event streams per node; more are answered 503
MAX_STREAMS = 16
#: a stream whose connection stays paused this many frames in a row is closed
MAX_DROPPED_IN_A_ROW = 120


def load_assets() -> dict[str, bytes]:
    """Return every asset's bytes, read from the installed package."""
    folder = resources.files("leeky_twisted.dashboard") / "static"
    return {name: (folder / name).read_bytes() for name in ASSETS}


def _json(request: server.Request, data: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, default=str).encode()


class _Bytes(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body, self.content_type = body, content_type

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


class _Static(resource.Resource):
    def __init__(self, assets: dict[str, bytes]) -> None:
        super().__init__()
        for name, body in assets.items():
            self.putChild(name.encode(), _Bytes(body, ASSETS[name]))


class _Folder(resource.Resource):
    """``/dashboard`` itself redirects to ``/dashboard/`` (the page's relative links)."""

    def render_GET(self, request: server.Request) -> bytes:
        request.redirect(b"/dashboard/")
        return b""


class _JSONRoute(resource.Resource):
    isLeaf = True

    def __init__(self, answer: Callable[[server.Request], Any]) -> None:
        super().__init__()
        self.answer = answer

    def render_GET(self, request: server.Request) -> bytes:
        return _json(request, self.answer(request))


@implementer(IPushProducer)
class EventStream:
    """One reader of ``/dashboard/events``; drops frames while its connection is full."""

    def __init__(self, request: server.Request, streams: EventStreams) -> None:
        self.request = request
        self.streams = streams
        self.paused = False
        self.dropped = 0
        self.dropped_in_a_row = 0
        self.sent = 0
        self.closed = False

    def pauseProducing(self) -> None:
        """The connection's buffer is full: drop frames until it drains."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The connection drained: send frames again."""
        self.paused = False

    def stopProducing(self) -> None:
        """The connection is going away."""
        self.close()

    def send(self, frame: bytes) -> None:
        """Write ``frame`` unless the reader lags (then count it as dropped)."""
        if self.closed:
            return
        if self.paused:
            self.dropped += 1
            self.dropped_in_a_row += 1
            if self.dropped_in_a_row >= MAX_DROPPED_IN_A_ROW:
                self.close()
                self.request.unregisterProducer()
                self.request.loseConnection()  # type: ignore[attr-defined]
            return
        self.dropped_in_a_row = 0
        self.sent += 1
        self.request.write(frame)

    def end(self) -> None:
        """Finish the answer (the node is stopping)."""
        self.close()
        request = self.request
        if not request.finished and not getattr(request, "_disconnected", False):
            request.unregisterProducer()
            request.finish()

    def close(self) -> None:
        """Forget this stream."""
        if not self.closed:
            self.closed = True
            self.streams.remove(self)


class EventStreams(resource.Resource):
    """``/dashboard/events``: at most ``limit`` streams, each fed by :meth:`broadcast`."""

    isLeaf = True

    def __init__(self, frame: Callable[[], Any], limit: int = MAX_STREAMS) -> None:
        super().__init__()
        self.frame = frame
        self.limit = limit
        self.streams: list[EventStream] = []
        self.dropped = 0
        self.refused = 0

    def render_GET(self, request: server.Request) -> Any:
        """Start a stream (or answer 503 when there are ``limit`` already)."""
        if len(self.streams) >= self.limit:
            self.refused += 1
            return _json(
                request, {"error": f"too many dashboard streams (limit {self.limit})"}, 503
            )
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        stream = EventStream(request, self)
        self.streams.append(stream)
        request.registerProducer(stream, True)
        request.notifyFinish().addBoth(lambda _: stream.close())
        request.write(b"retry: 1000\n\n")
        stream.send(self.encode(self.frame()))
        return server.NOT_DONE_YET

    @staticmethod
    def encode(data: Any) -> bytes:
        """Return ``data`` as one server-sent event of type ``cluster``."""
        return b"event: cluster\ndata: " + json.dumps(data, default=str).encode() + b"\n\n"

    def broadcast(self) -> None:
        """Send the current frame to every stream."""
        if not self.streams:
            return
        frame = self.encode(self.frame())
        for stream in list(self.streams):
            before = stream.dropped
            stream.send(frame)
            self.dropped += stream.dropped - before

    def remove(self, stream: EventStream) -> None:
        """Forget a closed stream."""
        if stream in self.streams:
            self.streams.remove(stream)


def check_token(expected: bytes | None, header: bytes | None) -> str | None:
    """Return why an admin request is refused, or None when its token is right."""
    if not expected:
        return (
            "operator actions are disabled on this node: start it with "
            "--dashboard-admin-token-file FILE to enable them"
        )
    if not header or not header.startswith(b"Bearer "):
        return "operator actions need the admin token (Authorization: Bearer TOKEN)"
    if not hmac.compare_digest(header[len(b"Bearer ") :].strip(), expected):
        return "wrong admin token"
    return None


class AdminResource(resource.Resource):
    """``POST /dashboard/admin/ACTION``: transfer leadership or remove a member."""

    isLeaf = True

    def __init__(self, node: Any, token: bytes | None) -> None:
        super().__init__()
        self.node = node
        self.token = token

    def render_GET(self, request: server.Request) -> bytes:
        """Say whether actions are enabled (never the token)."""
        return _json(request, {"enabled": bool(self.token)})

    def render_POST(self, request: server.Request) -> Any:
        """Check the token, then run the action on this node (it must lead)."""
        why = check_token(self.token, request.getHeader(b"authorization"))
        if why is not None:
            return _json(request, {"error": why}, 403)
        action = b"/".join(request.postpath).decode("utf-8", "replace")
        args = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        try:
            if action == "transfer" and args.get("to"):
                self.node.transfer_leader(args["to"])
                return _json(request, {"ok": f"transferring leadership to {args['to']}"})
            if action == "remove" and args.get("id"):
                d: Deferred[Any] = self.node.remove_server(args["id"])
            else:
                return _json(
                    request, {"error": "unknown action: transfer?to=ID or remove?id=ID"}, 400
                )
        except (LeekyError, ValueError) as e:  # NotLeader, InvalidRequest: the message says why
            return _json(request, {"error": str(e) or type(e).__name__}, 409)

        def done(result: Any) -> None:
            if isinstance(result, Failure):
                body = _json(request, {"error": result.getErrorMessage()}, 409)
            else:
                body = _json(request, {"ok": f"removed {args['id']}"})
            if not request.finished and not getattr(request, "_disconnected", False):
                request.write(body)
                request.finish()

        d.addBoth(done)
        return server.NOT_DONE_YET


def install(
    root: resource.Resource,
    gatherer: Gatherer,
    admin: AdminResource,
    assets: dict[str, bytes] | None = None,
    stream_limit: int = MAX_STREAMS,
) -> EventStreams:
    """Add the dashboard under ``root`` (``/`` and ``/dashboard/...``); return its streams."""
    assets = load_assets() if assets is None else assets
    page = _Bytes(assets["index.html"], ASSETS["index.html"])
    recorder = gatherer.recorder

    def local(request: server.Request) -> dict[str, Any]:
        asker = request.args.get(b"from", [b""])[0].decode("utf-8", "replace")
        port = request.args.get(b"port", [b""])[0].decode("ascii", "replace")
        host = getattr(request.getClientAddress(), "host", None)
        if asker and host and port.isdigit() and 0 < int(port) < 65536:
            gatherer.learn(asker, f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        want_history = request.args.get(b"history", [b"0"])[0] == b"1"
        state = recorder.local_state(history=want_history)
        state["book"] = gatherer.book()
        return state

    def cluster(request: server.Request) -> dict[str, Any]:
        gatherer.watch()
        view = gatherer.view()
        view["history"] = list(recorder.history)
        view["admin"] = bool(admin.token)
        return view

    def frame() -> dict[str, Any]:
        gatherer.watch()  # called for open streams only
        view = gatherer.view()
        view["admin"] = bool(admin.token)
        return view

    streams = EventStreams(frame, stream_limit)
    dash = _Folder()
    dash.putChild(b"", page)
    dash.putChild(b"static", _Static(assets))
    dash.putChild(b"local", _JSONRoute(local))
    dash.putChild(b"cluster", _JSONRoute(cluster))
    dash.putChild(b"events", streams)
    dash.putChild(b"admin", admin)
    root.putChild(b"", page)
    root.putChild(b"dashboard", dash)
    return streams
