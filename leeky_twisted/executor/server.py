"""The executor's JSON-RPC 2.0 resource (``POST /jsonrpc``), on the shared dispatcher.

The JSON-RPC handling is :mod:`leeky_twisted.protocol.jsonrpc` (as for the client
API), under the executor's rules: one call object per request (no batches), every
call answered (no notifications), ``"jsonrpc": "2.0"`` required. The protocol is
described in :mod:`leeky_twisted.protocol.executor_wire`.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from leeky_twisted.executor.filemeta import SNAPSHOT_FORMAT, CommandRejected
from leeky_twisted.executor.store import DurableExecutorState, OwnerMismatch
from leeky_twisted.protocol import executor_wire as wire
from leeky_twisted.protocol.jsonrpc import (
    JSONRPCResource,
    JSONRPCSite,
    RPCError,
    Rules,
    error_object,
)

__all__ = ["MAX_BODY_BYTES", "ExecutorJSONRPC", "RPCError", "make_executor_site"]

log = Logger()

#: Refuse request bodies larger than this (a batch or a snapshot to restore).
MAX_BODY_BYTES = 64 * 1024 * 1024


def _owner(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise RPCError(wire.INVALID_PARAMS, "owner must be a non-empty string")
    return value


class ExecutorJSONRPC(JSONRPCResource):
    """Serve one :class:`DurableExecutorState` over JSON-RPC 2.0 (a leaf resource)."""

    rules = Rules(batches=False, notifications=False, version_required=True)

    def __init__(self, state: DurableExecutorState, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        super().__init__(max_body_bytes)
        self.state = state

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

    # -------------------------------------------------------------- answers

    def answer(self, body: bytes) -> dict[str, Any]:
        """Return the JSON-RPC response object for one request body.

        Every method here answers synchronously, so the dispatcher has fired.
        """
        answers: list[dict[str, Any]] = []
        self.dispatch(body).addCallback(answers.append)
        return answers[0]

    def error_for(self, failure: Failure, method: str) -> dict[str, Any]:
        """Refuse another node's call (-32010); any other failure is internal."""
        if isinstance(failure.value, OwnerMismatch):
            log.error("refused a call: {why}", why=str(failure.value))
            return error_object(wire.OWNER_MISMATCH, str(failure.value))
        return super().error_for(failure, method)


def make_executor_site(
    state: DurableExecutorState, max_body_bytes: int = MAX_BODY_BYTES
) -> server.Site:
    """Return a Site serving ``state`` at ``/jsonrpc``."""
    root = resource.Resource()
    root.putChild(b"jsonrpc", ExecutorJSONRPC(state, max_body_bytes))
    return JSONRPCSite(root, max_body_bytes)
