"""An HTTP connection pool whose connections log nothing (treq and twisted.web clients).

Twisted's ``HTTPConnectionPool`` builds one ``_HTTP11ClientFactory`` per new
connection, and a Factory logs "Starting factory ..." and "Stopping factory
..." each time: two lines in a node's log per connection the dashboard (or a
remote executor's client) opens, none of them telling an operator anything.
"""

from __future__ import annotations

from typing import Any

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

__all__ = ["quiet_http_pool"]


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """Twisted's per-connection HTTP/1.1 client factory, without its start and stop lines."""

    noisy = False


def quiet_http_pool(reactor: Any, persistent: bool = True) -> HTTPConnectionPool:
    """Return an ``HTTPConnectionPool`` on ``reactor`` whose connections log no line."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool._factory = _QuietHTTP11ClientFactory
    return pool
