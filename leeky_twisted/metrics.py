"""Moved to :mod:`leeky_twisted.server.metrics`: the old name still imports."""

from leeky_twisted.server.metrics import (  # noqa: F401
    CONTENT_TYPE,
    PERSIST_BUCKETS,
    ROLES,
    NodeMetrics,
    metrics_route,
)
