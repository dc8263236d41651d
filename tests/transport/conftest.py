"""Shared fixtures for the peer transport tests."""

from __future__ import annotations

import pytest
from twisted.logger import Logger, LogLevel, formatEvent


class LogCapture:
    """A Logger whose events are kept for assertions."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.log = Logger(namespace="test.transport", observer=self.events.append)

    def lines(self, level: LogLevel | None = None) -> list[str]:
        """Return the formatted lines logged at ``level`` (all levels when None)."""
        return [formatEvent(e) for e in self.events if level is None or e["log_level"] is level]

    def errors(self) -> list[str]:
        """Return the formatted error and critical lines."""
        return self.lines(LogLevel.error) + self.lines(LogLevel.critical)


@pytest.fixture
def capture() -> LogCapture:
    """Return a fresh log capture."""
    return LogCapture()
