"""The executor's JSON-RPC 2.0 resource (``POST /jsonrpc``), on txJSON-RPC's method lookup.

As in :mod:`leeky_twisted.api.jsonrpc_api`, the resource is ``Resource`` plus
txJSON-RPC's ``BaseSubhandler`` (``jsonrpc_*`` lookup) with its own ``render``:
txJSON-RPC's ``JSONRPC.render`` answers malformed bodies with an HTML 500,
logs every body and imports the global reactor. The protocol is described in
:mod:`leeky_twisted.protocol.executor_wire`.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from twisted.logger import Logger
from twisted.web import resource, server
from txjsonrpc import jsonrpclib
from txjsonrpc.jsonrpc import BaseSubhandler

from leeky_twisted.executor.filemeta import SNAPSHOT_FORMAT, CommandRejected
from leeky_twisted.executor.store import DurableExecutorState, OwnerMismatch
from leeky_twisted.protocol import executor_wire as wire

__all__ = ["MAX_BODY_BYTES", "ExecutorJSONRPC", "RPCError", "make_executor_site"]

log = Logger()

#: Refuse request bodies larger than this (a batch or a snapshot to restore).
MAX_BODY_BYTES = 64 * 1024 * 1024


class RPCError(Exception):
    """A call failed with a JSON-RPC error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _owner(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise RPCError(wire.INVALID_PARAMS, "owner must be a non-empty string")
    return value


class ExecutorJSONRPC(resource.Resource, BaseSubhandler):  # type: ignore[misc]
    """Serve one :class:`DurableExecutorState` over JSON-RPC 2.0 (a leaf resource)."""

    isLeaf = True

    def __init__(self, state: DurableExecutorState, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        resource.Resource.__init__(self)
        BaseSubhandler.__init__(self)
        self.state = state
        self.max_body_bytes = max_body_bytes

    # ------------------------------------------------------------- methods

    def jsonrpc_status(self) -> dict[str, Any]:
        """Return the last applied index and the owner."""
        return {
            "last_applied": self.state.last_applied,
            "owner": self.state.owner,
            "format": SNAPSHOT_FORMAT,
            "files": len(self.state.machine),
        }

    def jsonrpc_execute_batch(self, owner: object, entries: object) -> dict[str, Any]:
        """Apply entries above the last applied index, durably; one result per entry."""
        who = _owner(owner)
        if not isinstance(entries, list):
            raise RPCError(wire.INVALID_PARAMS, "entries must be a list")
        try:
            decoded = [wire.decode_entry(e) for e in entries]
        except ValueError as e:
            raise RPCError(wire.INVALID_PARAMS, str(e)) from None
        try:
            results = self.state.execute_batch(who, decoded)
        except ValueError as e:
            raise RPCError(wire.INVALID_PARAMS, str(e)) from None
        return {"last_applied": self.state.last_applied, "results": results}

    def jsonrpc_execute(self, owner: object, index: object, command: object) -> dict[str, Any]:
        """Apply one text command at ``index`` (a batch of one); return its result object."""
        answer = self.jsonrpc_execute_batch(owner, [{"index": index, "command": command}])
        result: dict[str, Any] = answer["results"][0]
        return result

    def jsonrpc_query(self, request: object) -> Any:
        """Answer a read-only query (``READ <name>`` or ``LIST``)."""
        if not isinstance(request, str):
            raise RPCError(wire.INVALID_PARAMS, "request must be a string")
        try:
            return self.state.machine.query(request)
        except CommandRejected as e:
            raise RPCError(wire.COMMAND_REJECTED, str(e)) from None

    def jsonrpc_snapshot(self) -> dict[str, Any]:
        """Return the whole state and the index it reflects."""
        index, data = self.state.snapshot()
        return {"index": index, "data": wire.encode_snapshot_data(data)}

    def jsonrpc_restore(self, owner: object, index: object, data: object) -> dict[str, Any]:
        """Replace the whole state by a snapshot taken at ``index``."""
        who = _owner(owner)
        try:
            self.state.restore(
                who, wire.decode_index(index, "index"), wire.decode_snapshot_data(data)
            )
        except ValueError as e:
            raise RPCError(wire.INVALID_PARAMS, str(e)) from None
        return {"last_applied": self.state.last_applied}

    # -------------------------------------------------------------- render

    def render(self, request: server.Request) -> bytes:
        """Answer one JSON-RPC call; never raise."""
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"POST")
            return self._encode(request, self._error(None, wire.INVALID_REQUEST, "use POST"))
        content = request.content
        assert content is not None
        body = content.read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            request.setResponseCode(413)
            message = f"request body too large (limit {self.max_body_bytes} bytes)"
            return self._encode(request, self._error(None, wire.INVALID_REQUEST, message))
        return self._encode(request, self.answer(body))

    def answer(self, body: bytes) -> dict[str, Any]:
        """Return the JSON-RPC response object for one request body."""
        try:
            call = json.loads(body)
        except (ValueError, RecursionError) as e:
            return self._error(None, wire.PARSE_ERROR, f"parse error: {e}")
        if not isinstance(call, dict):
            return self._error(None, wire.INVALID_REQUEST, "send one request object")
        request_id = call.get("id")
        method, params = call.get("method"), call.get("params", {})
        if call.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return self._error(request_id, wire.INVALID_REQUEST, "not a JSON-RPC 2.0 call")
        if not isinstance(params, list | dict):
            return self._error(request_id, wire.INVALID_REQUEST, "params must be an array/object")
        try:
            function = self._getFunction(method)
        except jsonrpclib.Fault:
            return self._error(request_id, wire.METHOD_NOT_FOUND, f"no method {method[:80]!r}")
        args, kwargs = (params, {}) if isinstance(params, list) else ([], params)
        try:
            inspect.signature(function).bind(*args, **kwargs)
        except TypeError as e:
            return self._error(request_id, wire.INVALID_PARAMS, f"invalid params: {e}")
        try:
            result = function(*args, **kwargs)
        except RPCError as e:
            return self._error(request_id, e.code, e.message)
        except OwnerMismatch as e:
            log.error("refused a call: {why}", why=str(e))
            return self._error(request_id, wire.OWNER_MISMATCH, str(e))
        except Exception as e:
            log.failure("executor call {method} failed", method=method)
            return self._error(request_id, wire.INTERNAL_ERROR, f"internal error: {e}")
        return {"jsonrpc": "2.0", "result": result, "id": request_id}

    @staticmethod
    def _error(request_id: object, code: int, message: str) -> dict[str, Any]:
        error = {"code": code, "message": message}
        return {"jsonrpc": "2.0", "error": error, "id": request_id}

    @staticmethod
    def _encode(request: server.Request, answer: dict[str, Any]) -> bytes:
        body = json.dumps(answer, ensure_ascii=False).encode("utf-8")
        request.setHeader(b"Content-Type", b"application/json")
        return body


class _ExecutorSite(server.Site):
    """A site without per-request access logs or HTML tracebacks."""

    def __init__(self, root: resource.Resource) -> None:
        super().__init__(root, parsePOSTFormSubmission=False)
        self.displayTracebacks = False

    def log(self, request: server.Request) -> None:
        """Write no access log line per request."""


def make_executor_site(
    state: DurableExecutorState, max_body_bytes: int = MAX_BODY_BYTES
) -> server.Site:
    """Return a Site serving ``state`` at ``/jsonrpc``."""
    root = resource.Resource()
    root.putChild(b"jsonrpc", ExecutorJSONRPC(state, max_body_bytes))
    return _ExecutorSite(root)
