"""A small HTTP/1.1 server for the JSON-RPC API, built for the request hot path.

twisted.web's general machinery (request objects, header registries, form
parsing, access logs) costs about 100 µs per request, which is most of what a
put costs the leader. This protocol does only what the API needs: ``POST
/jsonrpc`` with a Content-Length body, ``GET /status``, keep-alive, pipelining
(answers go out in request order), ``Expect: 100-continue``, and a body limit.
The JSON-RPC semantics themselves live in
:class:`~leeky_twisted.api.jsonrpc_api.KeyValueJSONRPC`.

Any other path is handed to a ``twisted.web`` :class:`~twisted.web.server.Site`
when one is given (the dashboard, streamed responses): the connection is passed
over whole, with the bytes already read, once every earlier answer is out, and
twisted.web serves it from then on. Without a site, other paths get a 404.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolNegotiationFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.protocol.netutil import write_now
from leeky_twisted.protocol.sendlimit import SendLimit, clock_or_reactor

log = Logger()

MAX_HEADER_BYTES = 16 * 1024
MAX_PIPELINED = 256
#: A body over the limit is answered 413 before it is read; this much of it is
#: then read and dropped, so a client that sends it anyway can read the answer.
MAX_DRAIN_BYTES = 16 * 1024 * 1024

_REASONS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    411: b"Length Required",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    505: b"HTTP Version Not Supported",
}


def _encode(answer: object) -> bytes:
    if type(answer) is dict and len(answer) == 3:
        # The usual answer, {"jsonrpc": "2.0", "result": R, "id": N}, without the
        # general encoder; same bytes as json.dumps gives.
        request_id = answer.get("id")
        result = answer.get("result", answer)
        if type(request_id) is int and answer.get("jsonrpc") == "2.0":
            if result is True:
                return b'{"jsonrpc": "2.0", "result": true, "id": %d}' % request_id
            if result is None:
                return b'{"jsonrpc": "2.0", "result": null, "id": %d}' % request_id
            if type(result) is str:
                try:
                    text = json.dumps(result, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    pass
                else:
                    return b'{"jsonrpc": "2.0", "result": %s, "id": %d}' % (text, request_id)
    try:
        return json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(answer, default=str).encode("ascii")


#: Headers that frame the body: a request may carry each at most once.
_SINGLE_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


class _Slot:
    """One request's place in the ordered answer queue."""

    __slots__ = ("close", "data")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.close = False


class JSONRPCHTTPProtocol(Protocol):
    """One HTTP connection: parse requests, answer them in order.

    Requests are not read while MAX_PIPELINED answers are pending, nor while
    many answer bytes are unsent; past ``sendlimit.MAX_UNSENT_BYTES`` unsent
    the connection is aborted (:class:`SendLimit`).
    """

    #: Set by ``makeConnection`` before any byte arrives: a TCP or TLS connection.
    transport: ITCPTransport

    def __init__(
        self,
        rpc: KeyValueJSONRPC,
        status: Callable[[], object],
        extra_routes: dict[bytes, Callable[[], tuple[bytes, bytes]]] | None = None,
        web: Site | None = None,
    ) -> None:
        self.rpc = rpc
        self.status = status
        self.extra_routes = extra_routes or {}
        self.web = web
        #: The twisted.web channel this connection was handed to, if it was.
        self.web_channel: Protocol | None = None
        self._hand_over_bytes: bytes | None = None
        self._buf = b""
        self._need = -1  # body bytes still expected, -1 while reading headers
        self._discard = 0  # body bytes to drop (over the limit), then close
        self._pending: tuple[bytes, bytes, bool] | None = None  # method, path, keep-alive
        self._slots: deque[_Slot] = deque()
        self._closing = False
        self._gone = False
        self._paused = False
        self._requests = 0  # requests received whole on this connection
        #: set on connection: this connection's bound on unsent answers
        self.send_limit: SendLimit | None = None

    def connectionMade(self) -> None:
        """Bound the answers this connection may leave unsent."""
        clock = getattr(getattr(self.rpc, "frontend", None), "_clock", None)
        self.send_limit = SendLimit(self.transport, clock_or_reactor(clock), "http")

    # ------------------------------------------------------------ parsing

    def dataReceived(self, data: bytes) -> None:
        """Parse as many whole requests as the buffer holds."""
        if self.web_channel is not None:
            self.web_channel.dataReceived(data)
            return
        if self._hand_over_bytes is not None:
            self._hand_over_bytes += data
            return
        if self._discard:
            self._drain(len(data))
            return
        if self._closing:
            return
        try:
            self._buf += data
            self._parse()
        except Exception:
            log.failure("HTTP protocol error")
            self._error(500, b"internal error", close=True)

    def unfinished_request(self) -> int | None:
        """Return the number of the request partly received, or None (for the connection guard).

        A refused body still being drained is part of its request.
        """
        if self._discard or (not self._closing and (self._buf or self._need >= 0)):
            return self._requests
        return None

    def held_bytes(self) -> int:
        """Return the bytes held for the request partly received (for the connection guard)."""
        return len(self._buf)

    def _drain(self, received: int) -> None:
        """Drop ``received`` bytes of a refused body; close once all of it came."""
        self._discard = max(0, self._discard - received)
        if not self._discard and not self._slots and not self._gone:
            self.transport.loseConnection()

    def _parse(self) -> None:
        while not self._closing:
            if self._need >= 0:
                if len(self._buf) < self._need:
                    return
                body, self._buf = self._buf[: self._need], self._buf[self._need :]
                self._need = -1
                assert self._pending is not None
                method, path, keep = self._pending
                self._pending = None
                self._requests += 1
                self._dispatch(method, path, body, keep)
                continue
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    self._error(431, b"headers too large", close=True)
                return
            head, self._buf = self._buf[:end], self._buf[end + 4 :]
            self._start_request(head)

    def _start_request(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            if len(parts) == 3 and parts[2].startswith(b"HTTP/"):
                self._error(505, b"HTTP/1.x only", close=True)
            else:
                self._error(400, b"malformed request line", close=True)
            return
        method, target, version = parts
        path = target.split(b"?", 1)[0]
        if self.web is not None and not self._served_here(path):
            self._closing = True  # this parser reads no further requests
            self._hand_over_bytes = head + b"\r\n\r\n" + self._buf
            self._buf = b""
            if not self._slots:
                self._hand_over()
            return
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                self._error(400, b"malformed header", close=True)
                return
            name = name.lower()
            if name in headers and name in _SINGLE_HEADERS:
                # Two framings for one body: the way requests are smuggled.
                self._error(400, b"duplicate " + name + b" header", close=True)
                return
            headers[name] = value.strip()
        connection = headers.get(b"connection", b"").lower()
        if version == b"HTTP/1.1":
            keep = b"close" not in connection
        else:
            keep = b"keep-alive" in connection
        if b"transfer-encoding" in headers:
            if b"content-length" in headers:
                self._error(400, b"both Transfer-Encoding and Content-Length", close=True)
            else:
                self._error(501, b"chunked bodies are not supported; send Content-Length", True)
            return
        length_text = headers.get(b"content-length")
        if length_text is None and method == b"POST":
            self._error(411, b"a POST needs Content-Length", close=True)
            return
        if length_text is None:
            length_text = b"0"
        if not length_text.isdigit() or len(length_text) > 12:
            self._error(400, b"bad Content-Length", close=True)
            return
        length = int(length_text)
        if length > self.rpc.max_body_bytes:
            self._refuse_body(length)
            return
        self._pending = (method, path, keep)
        if headers.get(b"expect", b"").lower() == b"100-continue" and len(self._buf) < length:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._need = length

    def _served_here(self, path: bytes) -> bool:
        return path == b"/jsonrpc" or path == b"/status" or path in self.extra_routes

    def _hand_over(self) -> None:
        """Give the connection, and the bytes read so far, to the twisted.web site."""
        assert self.web is not None and self._hand_over_bytes is not None
        data, self._hand_over_bytes = self._hand_over_bytes, None
        if self.send_limit is not None:
            self.send_limit.stop(resume=True)  # twisted.web's channel has its own flow control
        channel = self.web.buildProtocol(self.transport.getPeer())
        assert channel is not None
        self.web_channel = channel
        channel.makeConnection(self.transport)
        channel.dataReceived(data)

    def _refuse_body(self, length: int) -> None:
        """Answer 413 before reading a body over the limit; drop it, then close.

        Nothing of the body is kept. Up to MAX_DRAIN_BYTES of it are read and
        dropped as they arrive (a client that sends the body before reading
        the answer still gets it); a longer one is not read at all.
        """
        arrived = len(self._buf)
        self._buf = b""
        self._discard = max(0, length - arrived) if length <= MAX_DRAIN_BYTES else 0
        self._answer_now(413, _encode(self.rpc.too_large()), close=True)

    # ----------------------------------------------------------- answering

    def _dispatch(self, method: bytes, path: bytes, body: bytes, keep: bool) -> None:
        if path == b"/jsonrpc":
            if method != b"POST":
                self._answer_now(405, b'{"error": "use POST"}', close=not keep, allow=b"POST")
                return
            slot = self._new_slot(not keep)
            d: Deferred[Any] = self.rpc.answer(body)
            d.addCallback(self._rpc_done, slot)
            d.addErrback(self._rpc_failed, slot)
            return
        if method != b"GET":
            self._answer_now(404 if path != b"/status" else 405, b"{}", close=not keep)
            return
        if path == b"/status":
            self._answer_now(200, _encode(self.status()), close=not keep)
        elif path in self.extra_routes:
            content_type, data = self.extra_routes[path]()
            self._answer_now(200, data, close=not keep, content_type=content_type)
        else:
            self._answer_now(404, b'{"error": "not found"}', close=not keep)

    def _rpc_done(self, answer: object, slot: _Slot) -> None:
        if answer is None:
            slot.data = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        else:
            slot.data = self._frame(200, _encode(answer), slot.close)
        self._flush()

    def _rpc_failed(self, failure: Failure, slot: _Slot) -> None:
        log.failure("JSON-RPC call failed", failure)
        body = b'{"jsonrpc": "2.0", "error": {"code": -32603, "message": "internal error"}, '
        slot.data = self._frame(200, body + b'"id": null}', slot.close)
        self._flush()

    def _new_slot(self, close: bool) -> _Slot:
        slot = _Slot()
        slot.close = close
        self._slots.append(slot)
        if close:
            self._closing = True  # read no further requests
            self._buf = b""
        if len(self._slots) >= MAX_PIPELINED and not self._paused:
            self._paused = True
            self._hold_reading()
        return slot

    def _answer_now(
        self,
        code: int,
        body: bytes,
        close: bool,
        allow: bytes | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        slot = self._new_slot(close)
        slot.data = self._frame(code, body, close, allow, content_type)
        self._flush()

    def _error(self, code: int, message: bytes, close: bool) -> None:
        body = b'{"error": "' + message.replace(b'"', b"'") + b'"}'
        self._answer_now(code, body, close)

    @staticmethod
    def _frame(
        code: int,
        body: bytes,
        close: bool,
        allow: bytes | None = None,
        content_type: bytes = b"application/json",
    ) -> bytes:
        head = [
            b"HTTP/1.1 %d %s" % (code, _REASONS.get(code, b"Error")),
            b"Content-Type: " + content_type,
            b"Content-Length: %d" % len(body),
        ]
        if allow:
            head.append(b"Allow: " + allow)
        if close:
            head.append(b"Connection: close")
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    def _flush(self) -> None:
        if self._gone or (self.send_limit is not None and self.send_limit.aborted):
            self._slots.clear()
            return
        out: list[bytes] = []
        close = False
        while self._slots and (data := self._slots[0].data) is not None:
            slot = self._slots.popleft()
            out.append(data)
            if slot.close:
                close = True
                self._slots.clear()
                break
        if out:
            data = b"".join(out)
            if write_now(self.transport, data) and self.send_limit is not None:
                self.send_limit.queued(len(data))
        if close and not self._discard:
            self.transport.loseConnection()
        elif self._hand_over_bytes is not None and not self._slots:
            self._hand_over()
        elif self._paused and len(self._slots) < MAX_PIPELINED // 2:
            self._paused = False
            self._release_reading()

    def _hold_reading(self) -> None:
        if self.send_limit is not None:
            self.send_limit.hold_reading()
        else:
            cast(IPushProducer, self.transport).pauseProducing()

    def _release_reading(self) -> None:
        if self.send_limit is not None:
            self.send_limit.release_reading()
        else:
            cast(IPushProducer, self.transport).resumeProducing()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Forget pending answers; they have nowhere to go."""
        self._gone = True
        self._slots.clear()
        if self.send_limit is not None:
            self.send_limit.stop()
        if self.web_channel is not None:
            self.web_channel.connectionLost(reason)


@implementer(IProtocolNegotiationFactory)
class JSONRPCHTTPFactory(Factory):
    """Builds :class:`JSONRPCHTTPProtocol` for each connection; speaks ``http/1.1`` (ALPN)."""

    def __init__(
        self,
        rpc: KeyValueJSONRPC,
        status: Callable[[], object],
        extra_routes: dict[bytes, Callable[[], tuple[bytes, bytes]]] | None = None,
        web: Site | None = None,
    ) -> None:
        self.rpc = rpc
        self.status = status
        self.extra_routes = extra_routes or {}
        self.web = web

    def acceptableProtocols(self) -> list[bytes]:
        """Return the one protocol this server speaks, for ALPN under TLS."""
        return [b"http/1.1"]

    def buildProtocol(self, addr: object) -> JSONRPCHTTPProtocol:
        """Return a protocol for a new connection."""
        p = JSONRPCHTTPProtocol(self.rpc, self.status, self.extra_routes, self.web)
        p.factory = self
        return p
