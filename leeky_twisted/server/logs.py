"""Log observers for twistd: one line per event, the node id in each, info level by default.

    twistd -n --logger=leeky_twisted.server.logs.json_observer leekyraft --id 1 ...
    twistd -n --logger=leeky_twisted.server.logs.text_observer leekyraft --id 1 ...
    twistd -n leekyraft --log-level debug ...        (twistd's own format)

The node id and the level come from the node's options, ``--id`` and
``--log-level``, on the command line or in its ``--config`` file (the command
line wins); else ``LEEKY_LOG_LEVEL`` chooses the level; else it is info.
Debug lines (every role change of the Raft core, gossip chatter, each TLS
handshake) are shown only when asked for.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatTime,
)
from zope.interface import provider

#: The levels ``--log-level`` accepts, least severe first.
LEVELS = ("debug", "info", "warn", "error", "critical")
DEFAULT_LEVEL = "info"
LEVEL_ENV = "LEEKY_LOG_LEVEL"


def parse_level(name: str) -> LogLevel:
    """Return the LogLevel called ``name`` (any case); ValueError naming the choices."""
    if name.lower() not in LEVELS:
        raise ValueError(f"unknown log level {name!r}: use one of {', '.join(LEVELS)}")
    level: LogLevel = LogLevel.levelWithName(name.lower())
    return level


def _from_argv(argv: Sequence[str], name: str) -> str | None:
    flag = f"--{name}"
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def option_from(argv: Sequence[str], name: str) -> str | None:
    """Return the node option ``name`` from ``argv``, else from its ``--config`` file, else None.

    A config file that cannot be read gives None here: the node itself
    refuses it with a clear error.
    """
    value = _from_argv(argv, name)
    if value is not None:
        return value
    path = _from_argv(argv, "config")
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    for key in (name, name.replace("-", "_")):
        if data.get(key) is not None:
            return str(data[key])
    return None


def node_id_from(argv: Sequence[str]) -> str:
    """Return the node's ``--id`` (``--id X``, ``--id=X`` or its --config file), or "-"."""
    return option_from(argv, "id") or "-"


def level_from(argv: Sequence[str], environ: dict[str, str] | None = None) -> LogLevel:
    """Return the least severe level to log: ``--log-level``, else LEEKY_LOG_LEVEL, else info.

    An unknown name falls back to info (the node refuses a bad ``--log-level``).
    """
    env = os.environ if environ is None else environ
    name = option_from(argv, "log-level") or env.get(LEVEL_ENV) or DEFAULT_LEVEL
    try:
        return parse_level(name)
    except ValueError:
        info: LogLevel = LogLevel.info
        return info


def filtered(observer: Callable[[dict[str, Any]], None], level: LogLevel) -> ILogObserver:
    """Return ``observer`` seeing only events at ``level`` or more severe."""
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    return FilteringLogObserver(provider(ILogObserver)(observer), [predicate])


def twistd_default_observer(twistd_options: Any, level: LogLevel) -> ILogObserver:
    """Return twistd's own observer for these options, showing events at ``level`` or above.

    That is stdout with ``-n``, else ``--logfile`` (twistd.log), or ``--syslog``.
    """
    from twisted.scripts import twistd

    factory = twistd._SomeApplicationRunner.loggerFactory  # type: ignore[attr-defined]
    app_logger = factory(twistd_options)  # type: ignore[no-untyped-call]
    observer = app_logger._getLogObserver()  # type: ignore[no-untyped-call]
    if not ILogObserver.providedBy(observer):  # --syslog gives a legacy observer
        observer = LegacyLogObserverWrapper(observer)
    return filtered(observer, level)


def json_record(event: dict[str, Any], node_id: str) -> str:
    """Return one JSON line for a log event."""
    level = event.get("log_level")
    record = {
        "time": event.get("log_time"),
        "level": level.name if level is not None else None,
        "node": node_id,
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str)


def json_observer(out: TextIO | None = None, argv: Sequence[str] | None = None) -> ILogObserver:
    """Return an observer writing one JSON object per line to ``out`` (stdout)."""
    stream = out or sys.stdout
    args = sys.argv if argv is None else argv
    nid = node_id_from(args)

    def observe(event: dict[str, Any]) -> None:
        stream.write(json_record(event, nid) + "\n")
        stream.flush()

    return filtered(observe, level_from(args))


def text_observer(out: TextIO | None = None, argv: Sequence[str] | None = None) -> ILogObserver:
    """Return an observer writing ``time [node N] [namespace#level] message`` lines."""
    stream = out or sys.stdout
    args = sys.argv if argv is None else argv
    nid = node_id_from(args)

    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        text = formatEvent(event).replace("\n", "\n\t")
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n\t" + failure.getTraceback().replace("\n", "\n\t")
        stream.write(
            f"{formatTime(event.get('log_time'))} [node {nid}] "
            f"[{event.get('log_namespace')}#{level.name if level else '-'}] {text}\n"
        )
        stream.flush()

    return filtered(observe, level_from(args))
