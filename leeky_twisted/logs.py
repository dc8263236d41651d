"""Moved to :mod:`leeky_twisted.server.logs`: the old name still imports."""

from leeky_twisted.server.logs import (  # noqa: F401
    DEFAULT_LEVEL,
    LEVEL_ENV,
    LEVELS,
    filtered,
    json_observer,
    json_record,
    level_from,
    node_id_from,
    option_from,
    parse_level,
    text_observer,
    twistd_default_observer,
)
