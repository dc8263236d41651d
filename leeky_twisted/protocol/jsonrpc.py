"""JSON-RPC 2.0 over HTTP ``POST``: the one dispatcher of the client API and the executor wire.

A :class:`JSONRPCResource` subclass declares ``jsonrpc_<name>`` methods (txJSON-RPC's
``BaseSubhandler`` finds them) and :class:`Rules` (whether batches and notifications
are accepted, whether ``"jsonrpc": "2.0"`` is required). This module parses and checks
each call, runs it, and answers a JSON-RPC response object. The client API
(:mod:`leeky_twisted.api.jsonrpc_api`) and the executor
(:mod:`leeky_twisted.executor.server`) are both such subclasses.

Why not txJSON-RPC's ``web.jsonrpc.JSONRPC`` as is: its ``render`` lets a malformed
body, a batch (JSON array), a request without ``method`` or a non-numeric ``jsonrpc``
version raise out of ``render`` (Twisted then answers an HTML 500), reports wrong
parameters as code 8002 instead of -32602, logs every request body in full, and has
no body size limit; and its module imports the global reactor at import time.
``JSONRPC`` is ``Resource`` plus ``BaseSubhandler`` (the ``jsonrpc_*`` method lookup)
plus that ``render``. So :class:`JSONRPCResource` is ``Resource`` plus
``BaseSubhandler`` with its own ``render``: txJSON-RPC's method lookup, none of the
above problems, and importing this module leaves the reactor alone.

Every input is bounded: the body (:attr:`JSONRPCResource.max_body_bytes`, refused with
-32600 and HTTP 413, and not stored past the limit under :class:`JSONRPCSite`), a batch
(at most :data:`MAX_BATCH` calls) and an id (null, a string of at most
:data:`MAX_ID_CHARS` characters, a 64-bit integer or a finite number). ``NaN`` and
``Infinity`` are not JSON and get -32700.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from txjsonrpc import jsonrpclib
from txjsonrpc.jsonrpc import BaseSubhandler

from leeky_twisted.protocol.jsonrpc_codes import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

__all__ = [
    "MAX_BATCH",
    "MAX_ID_CHARS",
    "InvalidParams",
    "JSONRPCResource",
    "JSONRPCSite",
    "RPCError",
    "Rules",
    "decode_body",
    "error_object",
    "positional_arity",
    "response",
]

_log = Logger()

#: At most this many calls in one batch request.
MAX_BATCH = 100
#: The longest string id a request may carry (ids are echoed in the answer).
MAX_ID_CHARS = 256
#: Integer ids are signed 64-bit.
_ID_INTS = range(-(2**63), 2**63)


@dataclass(frozen=True)
class Rules:
    """What an endpoint accepts besides one call object with ``"jsonrpc": "2.0"``.

    :param batches: a JSON array of 1 to :data:`MAX_BATCH` calls is answered with
        an array; otherwise an array is refused with -32600.
    :param notifications: a call without ``"id"`` is run and gets no answer (HTTP
        204 when nothing is left to send); otherwise it is answered with id null.
    :param version_required: a call must carry ``"jsonrpc": "2.0"``; otherwise a
        missing member counts as ``"2.0"``.
    """

    batches: bool = True
    notifications: bool = True
    version_required: bool = False


class RPCError(Exception):
    """A call failed with a JSON-RPC error ``code`` (and optional ``data``)."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class InvalidParams(RPCError):
    """The params do not fit the method (-32602)."""

    def __init__(self, message: str) -> None:
        super().__init__(INVALID_PARAMS, message)


def _refuse_constant(name: str) -> None:
    """Refuse NaN and Infinity, which Python's parser accepts but JSON does not have."""
    raise ValueError(f"{name} is not valid JSON")


#: One decoder for every request: ``json.loads`` with a keyword builds a new one per call.
_decode_text = json.JSONDecoder(parse_constant=_refuse_constant).decode


def decode_body(body: bytes) -> Any:
    """Parse a request body as ``json.loads(body)`` would, refusing NaN and Infinity.

    Raises ValueError (or RecursionError, for absurd nesting) when it is not JSON.
    """
    return _decode_text(body.decode(json.detect_encoding(body), "surrogatepass"))


def _id_problem(request_id: object) -> str | None:
    """Return why ``request_id`` is not an acceptable JSON-RPC id, or None."""
    if request_id is None:
        return None
    if isinstance(request_id, str):
        return None if len(request_id) <= MAX_ID_CHARS else f"id longer than {MAX_ID_CHARS}"
    if isinstance(request_id, bool):
        return "id must be a string, a number or null"
    if isinstance(request_id, int):
        return None if request_id in _ID_INTS else "id must be a 64-bit integer"
    if isinstance(request_id, float):
        return None if math.isfinite(request_id) else "id must be a finite number"
    return "id must be a string, a number or null"


def error_object(code: int, message: str, data: object = None) -> dict[str, Any]:
    """Return a JSON-RPC error object (``data`` only when not None)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


def response(request_id: object, *, result: object = None, error: object = None) -> dict[str, Any]:
    """Return a JSON-RPC 2.0 response object: ``error`` when given, else ``result``."""
    if error is not None:
        return {"jsonrpc": "2.0", "error": error, "id": request_id}
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def encode_answer(answer: object) -> bytes:
    """Return ``answer`` as UTF-8 JSON (ASCII escapes when it holds a lone surrogate)."""
    try:
        return json.dumps(answer, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(answer, default=str).encode("ascii")


class JSONRPCResource(resource.Resource, BaseSubhandler):  # type: ignore[misc]
    """A leaf resource answering JSON-RPC 2.0 calls to its ``jsonrpc_*`` methods.

    A method returns its result or a Deferred of it; it raises (or fails with)
    :class:`RPCError` for a given code. Other failures go to :meth:`error_for`.

    :param max_body_bytes: refuse larger request bodies (-32600, HTTP 413).
    """

    isLeaf = True
    #: What this endpoint accepts; subclasses override.
    rules = Rules()

    def __init__(self, max_body_bytes: int) -> None:
        resource.Resource.__init__(self)
        BaseSubhandler.__init__(self)
        self.max_body_bytes = max_body_bytes
        #: Methods already looked up by name (only ``jsonrpc_*`` methods of this
        #: class, so it stays as small as the API).
        self._functions: dict[str, Callable[..., Any]] = {}

    def error_for(self, failure: Failure, method: str) -> dict[str, Any]:
        """Return the JSON-RPC error object for a call of ``method`` that failed.

        :class:`RPCError` never gets here. This default logs the failure and
        answers -32603; subclasses map their own errors first.
        """
        _log.failure("JSON-RPC call {method} failed", failure, method=method)
        return error_object(INTERNAL_ERROR, f"internal error: {failure.getErrorMessage()}")

    def too_large(self) -> dict[str, Any]:
        """Return the error response for a body over the limit."""
        message = f"request body too large (limit {self.max_body_bytes} bytes)"
        return response(None, error=error_object(INVALID_REQUEST, message))

    # -------------------------------------------------------------- render

    def render(self, request: server.Request) -> int:
        """Answer one JSON-RPC request or batch; never raise."""
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            refusal = response(None, error=error_object(INVALID_REQUEST, "use POST"))
            return self._finish(request, 405, refusal)
        content = request.content
        if content is None:  # Twisted gives every request a body, maybe empty
            content = io.BytesIO()
        content.seek(0, io.SEEK_END)
        too_large = getattr(request, "body_too_large", False) or (
            content.tell() > self.max_body_bytes
        )
        if too_large:
            return self._finish(request, 413, self.too_large())
        content.seek(0)
        d = self.dispatch(content.read())

        finished = {"gone": False}
        request.notifyFinish().addErrback(lambda _: finished.update(gone=True))

        def send(answer: object) -> None:
            if not finished["gone"]:
                self._finish(request, 200, answer)

        d.addCallback(send)
        d.addErrback(lambda f: _log.failure("JSON-RPC response failed", f))
        return server.NOT_DONE_YET

    def _finish(self, request: server.Request, code: int, answer: object) -> int:
        """Write ``answer`` (None: nothing, 204) and finish the request."""
        if answer is None:
            request.setResponseCode(204)
            request.finish()
            return server.NOT_DONE_YET
        body = encode_answer(answer)
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()
        return server.NOT_DONE_YET

    # ------------------------------------------------------------ dispatch

    def dispatch(self, body: bytes) -> Deferred[Any]:
        """Answer a JSON-RPC request body (one call or a batch); never fails.

        Fires with the response object (or list, for a batch), or None when
        nothing is to be sent back (notifications only). It has fired on
        return when every method called answers synchronously.
        """
        try:
            parsed = decode_body(body)
        except (ValueError, RecursionError) as e:
            return succeed(response(None, error=error_object(PARSE_ERROR, f"parse error: {e}")))
        if isinstance(parsed, list):
            if not self.rules.batches:
                refusal = error_object(INVALID_REQUEST, "send one request object")
                return succeed(response(None, error=refusal))
            if not parsed or len(parsed) > MAX_BATCH:
                message = f"a batch must hold 1 to {MAX_BATCH} requests"
                return succeed(response(None, error=error_object(INVALID_REQUEST, message)))
            d: Deferred[Any] = gatherResults([self._call(item) for item in parsed])
            return d.addCallback(lambda answers: [a for a in answers if a is not None] or None)
        return self._call(parsed)

    def _lookup(self, method: str) -> Callable[..., Any]:
        """Find ``method`` (txJSON-RPC's lookup); remember plain ``jsonrpc_*`` methods."""
        function: Callable[..., Any] = self._getFunction(method)
        if "." not in method and method != "__dir__":
            self._functions[method] = function
        return function

    def _call(self, call: object) -> Deferred[dict[str, Any] | None]:
        """Run one call; fire with its response object, or None for a notification."""
        if not isinstance(call, dict):
            refusal = error_object(INVALID_REQUEST, "not a request object")
            return succeed(response(None, error=refusal))
        request_id = call.get("id")
        notification = "id" not in call and self.rules.notifications
        problem = _id_problem(request_id)
        if problem is not None:
            return succeed(response(None, error=error_object(INVALID_REQUEST, problem)))
        method, params = call.get("method"), call.get("params", [])
        version = call.get("jsonrpc", None if self.rules.version_required else "2.0")
        if version != "2.0" or not isinstance(method, str) or not isinstance(params, list | dict):
            if version != "2.0":
                problem = 'only "jsonrpc": "2.0" is supported'
            elif not isinstance(method, str):
                problem = "method must be a string"
            else:
                problem = "params must be an array or an object"
            return succeed(response(request_id, error=error_object(INVALID_REQUEST, problem)))
        try:
            function = self._functions.get(method) or self._lookup(method)
        except jsonrpclib.Fault:
            error = error_object(METHOD_NOT_FOUND, f"method not found: {method[:100]!r}")
            return succeed(None if notification else response(request_id, error=error))
        args, kwargs = (params, {}) if isinstance(params, list) else ([], params)
        d = maybeDeferred(_checked_call, function, args, kwargs)

        def answer(result: object) -> dict[str, Any] | None:
            return None if notification else response(request_id, result=result)

        def fail(failure: Failure) -> dict[str, Any] | None:
            e = failure.value
            if isinstance(e, RPCError):
                error = error_object(e.code, e.message, e.data)
            else:
                error = self.error_for(failure, method)
            return None if notification else response(request_id, error=error)

        return d.addCallbacks(answer, fail)


@functools.lru_cache(maxsize=64)
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


@functools.lru_cache(maxsize=64)
def positional_arity(function: Callable[..., Any]) -> tuple[int, int]:
    """Return (fewest, most) positional arguments ``function`` accepts with no keywords."""
    fewest = most = 0
    for parameter in _signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            most = 1 << 30
        elif parameter.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            most += 1
            if parameter.default is inspect.Parameter.empty:
                fewest += 1
        elif (
            parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is inspect.Parameter.empty
        ):
            fewest = 1 << 30  # a required keyword: positional params never do
    return fewest, most


def _checked_call(function: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if not kwargs:  # the usual call: positional params, checked by count alone
        fewest, most = positional_arity(function)
        if fewest <= len(args) <= most:
            return function(*args)
    try:
        _signature(function).bind(*args, **kwargs)
    except TypeError as e:
        raise InvalidParams(f"invalid params: {e}") from None
    return function(*args, **kwargs)


class _CappedRequest(server.Request):
    """A request that stops storing its body past the site's ``max_body_bytes``.

    The body is still read (and discarded) so the client gets a proper answer;
    the resource sees ``body_too_large`` and refuses the call.
    """

    body_too_large = False
    _received = 0

    def _limit(self) -> int | None:
        limit: int | None = getattr(getattr(self.channel, "site", None), "max_body_bytes", None)
        return limit

    def gotLength(self, length: int | None) -> None:
        """Refuse at once a declared length above the limit."""
        limit = self._limit()
        if limit is not None and length is not None and length > limit:
            self.body_too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """Store ``data`` while the body stays within the limit."""
        if self.body_too_large:
            return
        self._received += len(data)
        limit = self._limit()
        if limit is not None and self._received > limit:
            self.body_too_large = True
            if self.content is not None:
                self.content.close()
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)


class JSONRPCSite(server.Site):
    """A site for JSON-RPC: bodies capped at ``max_body_bytes``, no access log, no
    HTML tracebacks, no form parsing."""

    requestFactory = _CappedRequest

    def __init__(self, root: resource.Resource, max_body_bytes: int) -> None:
        # JSON-RPC bodies are never HTML forms: skip Twisted's form parsing, which
        # costs a Content-Type parse through the email package on every request.
        super().__init__(root, parsePOSTFormSubmission=False)
        self.max_body_bytes = max_body_bytes
        self.displayTracebacks = False

    def log(self, request: http.Request) -> None:
        """Write no access log line per request (the hot path); errors are logged."""
