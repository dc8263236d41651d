"""Log observers: one line per event, with the node id, JSON or text."""

import io
import json

import pytest
from twisted.logger import Logger, LogLevel

from leeky_twisted.server.logs import (
    json_observer,
    level_from,
    node_id_from,
    text_observer,
    twistd_default_observer,
)


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


def test_the_node_id_and_level_come_from_the_config_file_when_not_on_the_command_line(tmp_path):
    """Options from --config set the JSON log's node field and its level; argv wins."""
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"id": "n7", "log_level": "debug"}))
    out = io.StringIO()
    argv = ["twistd", "-n", "leekyraft", "--config", str(config)]
    log = Logger(namespace="leeky.test", observer=json_observer(out, argv))
    log.debug("shown: the config asks for debug")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["node"] == "n7" and json.loads(line)["level"] == "debug"
    assert node_id_from([*argv, "--id=n8"]) == "n8"
    assert level_from([*argv, "--log-level", "warn"], {}) is LogLevel.warn
    assert level_from([f"--config={config}"], {}) is LogLevel.debug


def test_the_level_is_info_by_default_and_debug_on_request():
    """Without --log-level: LEEKY_LOG_LEVEL, else info; --log-level wins over the variable."""
    assert level_from(["leekyraft", "--id", "1"], {}) is LogLevel.info
    assert level_from(["leekyraft"], {"LEEKY_LOG_LEVEL": "debug"}) is LogLevel.debug
    assert level_from(["--log-level=error"], {"LEEKY_LOG_LEVEL": "debug"}) is LogLevel.error
    assert level_from(["--log-level", "nonsense"], {}) is LogLevel.info


def test_twistds_own_format_is_filtered_at_the_chosen_level(capsys):
    """Without --logger, twistd's text observer gets only events at the level or above."""
    options = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}
    observer = twistd_default_observer(options, LogLevel.info)
    log = Logger(namespace="leeky.test", observer=observer)
    log.debug("became candidate")
    log.info("leader is now 2")
    printed = capsys.readouterr().out
    assert "leader is now 2" in printed and "became candidate" not in printed


def test_the_node_service_gives_the_application_its_log_observer():
    """twistd logs through the application's ILogObserver; a --logger or a set one wins."""
    from twisted.application.service import Application
    from twisted.logger import ILogObserver

    from leeky_twisted.server.service import LeekyRaftService

    svc = LeekyRaftService(node=None)  # type: ignore[arg-type]
    svc.log_observer = mine = json_observer(io.StringIO(), ["--id", "1"])
    app = Application("leekyraft")
    svc.setServiceParent(app)
    assert ILogObserver(app) is mine
    other = LeekyRaftService(node=None)  # type: ignore[arg-type]
    other.log_observer = json_observer(io.StringIO(), ["--id", "2"])
    other.setServiceParent(app)
    assert ILogObserver(app) is mine


def test_log_level_option_is_checked(tmp_path):
    """`--log-level loud` is refused naming the levels; --config's log_level is used."""
    from twisted.python import usage

    from leeky_twisted.server.tap import Options

    base = ["--id", "1", "--peers", "1=127.0.0.1:7101", "--data-dir", str(tmp_path / "d")]
    opts = Options()
    with pytest.raises(usage.UsageError, match="debug, info, warn, error, critical"):
        opts.parseOptions([*base, "--log-level", "loud"])
    opts = Options()
    opts.parseOptions(base)
    assert opts.log_level is LogLevel.info
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"log_level": "debug"}))
    opts = Options()
    opts.parseOptions([*base, "--config", str(config)])
    assert opts.log_level is LogLevel.debug
