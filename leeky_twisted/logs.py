"""Kept: users type ``twistd --logger=leeky_twisted.logs.json_observer``; see server/logs.py."""

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
