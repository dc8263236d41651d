"""The node's twisted.web site: every HTTP path the lean server does not serve itself.

The lean server (:mod:`leeky_twisted.api.http_server`) answers ``/jsonrpc``,
``/status`` and its extra routes on its hot path and hands a connection that
asks for anything else to this site, which serves the same API paths too (a
browser keeps one connection for the page and its calls). Features that need
more than one answer per request (the dashboard, streamed responses) add their
resources under :attr:`NodeWebSite.root`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.web import resource, server

from leeky_twisted.api.jsonrpc_api import KeyValueJSONRPC
from leeky_twisted.protocol.jsonrpc import JSONRPCSite

__all__ = ["NodeWebSite", "RouteResource", "make_node_site"]


class RouteResource(resource.Resource):
    """A GET-only leaf answering what ``route()`` returns: (content type, body)."""

    isLeaf = True

    def __init__(self, route: Callable[[], tuple[bytes, bytes]]) -> None:
        super().__init__()
        self._route = route

    def render_GET(self, request: server.Request) -> bytes:
        """Answer the route's body with its content type."""
        content_type, body = self._route()
        request.setHeader(b"content-type", content_type)
        return body


class NodeWebSite(JSONRPCSite):
    """The site a node's HTTP port hands connections to; add resources to ``root``."""

    def __init__(self, root: resource.Resource, max_body_bytes: int) -> None:
        super().__init__(root, max_body_bytes)
        self.root = root


def make_node_site(
    rpc: KeyValueJSONRPC,
    status: Callable[[], object],
    routes: dict[bytes, Callable[[], tuple[bytes, bytes]]] | None = None,
) -> NodeWebSite:
    """Return the site serving ``/jsonrpc``, ``/status`` and ``routes`` (like ``/metrics``)."""
    root = resource.Resource()
    root.putChild(b"jsonrpc", rpc)

    def status_route() -> tuple[bytes, bytes]:
        return b"application/json", json.dumps(status(), default=str).encode()

    root.putChild(b"status", RouteResource(status_route))
    for path, route in (routes or {}).items():
        if path.count(b"/") != 1 or not path.startswith(b"/"):
            raise ValueError(f"a route is one path segment, like /metrics: {path!r}")
        root.putChild(path[1:], RouteResource(route))
    return NodeWebSite(root, rpc.max_body_bytes)
