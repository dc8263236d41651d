"""Moved to :mod:`leeky_twisted.server.tap`: the old name still imports."""

from leeky_twisted.server.tap import (  # noqa: F401
    GC_YOUNG_THRESHOLD,
    Options,
    makeService,
    parse_peers,
    tune_collector,
)
