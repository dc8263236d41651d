"""Moved to :mod:`leeky_twisted.protocol.ampframes`; this name keeps old imports working."""

from leeky_twisted.protocol.ampframes import (  # noqa: F401
    QuietAMP,
    between_boxes,
    split_box,
)
