"""twistd plugin: ``twistd -n leekyraft --id ID --peers ID=HOST:PORT,...``.

Kept tiny and lazy so plugin discovery stays cheap; the real work is in
``leeky_twisted.server.tap``.
"""

from twisted.application.service import ServiceMaker

leekyraft = ServiceMaker(
    "Leeky Raft",
    "leeky_twisted.server.tap",
    "A Raft consensus key-value node (AMP peers, AMP and JSON-RPC clients).",
    "leekyraft",
)
