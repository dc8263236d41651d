"""Moved to :mod:`leeky_twisted.testing.scenarios`: the old name still imports."""

from leeky_twisted.testing.scenarios import (  # noqa: F401
    Network,
    Node,
)
