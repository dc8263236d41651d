"""twistd plugin: ``twistd -n leekyexecutor --data-dir DIR --port PORT``.

Kept tiny and lazy so plugin discovery stays cheap; the real work is in
``leeky_twisted.executor.tap``.
"""

from twisted.application.service import ServiceMaker

leekyexecutor = ServiceMaker(
    "Leeky Raft example executor",
    "leeky_twisted.executor.tap",
    "The example file-metadata state machine (ADD/READ/DELETE) served over JSON-RPC.",
    "leekyexecutor",
)
