"""The error codes JSON-RPC 2.0 reserves, shared by the client API and the executor's wire."""

from __future__ import annotations

PARSE_ERROR = -32700  #: malformed JSON
INVALID_REQUEST = -32600  #: not a valid request object
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
