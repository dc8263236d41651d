"""Moved to :mod:`leeky_twisted.ops.localcluster`: the old name still imports."""

from leeky_twisted.ops.localcluster import (  # noqa: F401
    LAYOUT_FILE,
    LOOPBACK,
    ClusterSizeMismatch,
    LocalCluster,
    NodeProcess,
    RpcError,
    Supervisor,
    describe_exit,
    free_ports,
    https_context,
    jsonrpc,
    saved_layout,
    twistd_path,
)
