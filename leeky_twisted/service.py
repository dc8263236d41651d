"""Moved to :mod:`leeky_twisted.server.service`: the old name still imports."""

from leeky_twisted.server.service import (  # noqa: F401
    GOSSIP_TICK,
    LISTEN_BACKLOG,
    LOG_SEGMENT_BYTES,
    LeekyRaftService,
    NodeOptions,
    PeerSpec,
    connection_guards,
    load_node_credentials,
    make_node_service,
)
