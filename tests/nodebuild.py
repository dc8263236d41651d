"""Build a node's whole service tree from twistd options, on a memory reactor."""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from leeky_twisted.server.node import RaftNode
from leeky_twisted.server.service import make_node_service
from leeky_twisted.server.tap import Options


def service_from(argv: list[str]) -> Any:
    """Return the service tree ``twistd leekyraft ARGV`` would run (nothing listens)."""
    opts = Options()
    opts.parseOptions(argv)
    switch = sys.getswitchinterval()  # make_node_service tunes it for the process
    try:
        return make_node_service(opts.node_options, MemoryReactorClock())
    finally:
        sys.setswitchinterval(switch)


def node_from(argv: list[str]) -> RaftNode:
    """Return the RaftNode of ``service_from(argv)``, its stores closed."""
    node: RaftNode = service_from(argv).node
    for store in node.log_store, node.stable_store:
        getattr(store, "close", lambda: None)()
    return node
