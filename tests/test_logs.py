"""Log observers: one line per event, with the node id, JSON or text."""

import io
import json

from twisted.logger import Logger, LogLevel

from leeky_twisted.logs import json_observer, node_id_from, text_observer


def test_node_id_is_read_from_the_command_line():
    """Both --id X and --id=X are understood; absent gives '-'."""
    assert node_id_from(["twistd", "leekyraft", "--id", "n3"]) == "n3"
    assert node_id_from(["--id=7"]) == "7"
    assert node_id_from(["twistd"]) == "-"


def test_json_observer_writes_one_object_per_line_with_the_node_id():
    """Each event is one parseable JSON line with level, node, namespace and message."""
    out = io.StringIO()
    log = Logger(namespace="leeky.test", observer=json_observer(out, ["--id", "n1"]))
    log.info("leader is now {leader}", leader="n2")
    log.debug("hidden at the default level")
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.failure("oops")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["node"] == "n1" and first["level"] == "info"
    assert first["message"] == "leader is now n2" and first["namespace"] == "leeky.test"
    assert second["level"] == LogLevel.critical.name and "ZeroDivisionError" in second["traceback"]


def test_text_observer_prefixes_the_node_id():
    """Text lines carry the node id and the namespace#level."""
    out = io.StringIO()
    log = Logger(namespace="leeky.test", observer=text_observer(out, ["--id=5"]))
    log.warn("disk slow")
    line = out.getvalue().strip()
    assert "[node 5] [leeky.test#warn] disk slow" in line
