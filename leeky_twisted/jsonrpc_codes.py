"""Moved to :mod:`leeky_twisted.protocol.jsonrpc_codes`; this name keeps old imports working."""

from leeky_twisted.protocol.jsonrpc_codes import (  # noqa: F401
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
