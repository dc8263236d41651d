"""Log observers for twistd's ``--logger`` option: one line per event, node id in each.

    twistd -n --logger=leeky_twisted.logs.json_observer leekyraft --id 1 ...
    twistd -n --logger=leeky_twisted.logs.text_observer leekyraft --id 1 ...

The node id is taken from the command line's ``--id`` (twistd builds the
observer before the plugin parses its options). Set ``LEEKY_LOG_LEVEL``
(debug, info, warn, error; default info) to choose the least severe level.
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
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatTime,
)
from zope.interface import provider


def node_id_from(argv: Sequence[str]) -> str:
    """Return the value of ``--id`` in ``argv`` (``--id X`` or ``--id=X``), or "-"."""
    for i, arg in enumerate(argv):
        if arg == "--id" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--id="):
            return arg.split("=", 1)[1]
    return "-"


def _level() -> LogLevel:
    name = os.environ.get("LEEKY_LOG_LEVEL", "info").lower()
    try:
        return LogLevel.levelWithName(name)
    except Exception:
        return LogLevel.info


def _filtered(observer: Callable[[dict[str, Any]], None]) -> ILogObserver:
    predicate = LogLevelFilterPredicate(defaultLogLevel=_level())
    return FilteringLogObserver(provider(ILogObserver)(observer), [predicate])


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
    nid = node_id_from(sys.argv if argv is None else argv)

    def observe(event: dict[str, Any]) -> None:
        stream.write(json_record(event, nid) + "\n")
        stream.flush()

    return _filtered(observe)


def text_observer(out: TextIO | None = None, argv: Sequence[str] | None = None) -> ILogObserver:
    """Return an observer writing ``time [node N] [namespace#level] message`` lines."""
    stream = out or sys.stdout
    nid = node_id_from(sys.argv if argv is None else argv)

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

    return _filtered(observe)
