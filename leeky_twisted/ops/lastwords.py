"""Why a node of a local cluster exited: the line its own log ended on.

A node that stops itself (its data folder deleted or replaced) logs one
critical line; one refused at start (a folder holding another node's id)
prints one line on standard error, which ``leekyraft local`` sends to the
same log. :func:`last_words` finds that line in what the node's latest run
wrote, so ``leekyraft local`` can say why, not only "exit code 1".
"""

from __future__ import annotations

import re
from pathlib import Path

#: How much of the end of a run's log is searched, at most.
TAIL_BYTES = 64 * 1024

#: The prefix of a twistd log line: its time stamp and ``[namespace#level]``.
_PREFIX = re.compile(r"^\S+ \[(?P<where>[^\]]*)\] ")


def last_words(log_path: Path, offset: int = 0) -> str | None:
    """Return the line that says why the run logged from ``offset`` on ended, or None.

    That is its last critical line, else its last non-blank line, without
    the time stamp and namespace; None when that run wrote nothing.
    """
    try:
        with open(log_path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(offset, size - TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    critical = [
        line for line in lines if (m := _PREFIX.match(line)) and m["where"].endswith("#critical")
    ]
    chosen = critical[-1] if critical else (lines[-1] if lines else None)
    if chosen is None:
        return None
    return _PREFIX.sub("", chosen, count=1)
