"""Tests for `leekyraft bench`'s progress output (no reactor)."""

from __future__ import annotations

import io

from leeky_twisted.bench import Progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_into_a_file_is_plain_lines():
    """Written to a file or pipe, progress is one plain line per update, no carriage returns."""
    out = io.StringIO()
    shown = Progress(out, ops=100)
    shown.update(10, 1.0)
    shown.update(100, 2.0)
    shown.finish()
    assert "\r" not in out.getvalue()
    assert out.getvalue().splitlines() == ["1.0 s: 10/100 ops, 10/s", "2.0 s: 100/100 ops, 50/s"]


def test_progress_on_a_terminal_redraws_one_bar():
    """On a terminal the bar is redrawn in place and ends with one newline."""
    out = Terminal()
    shown = Progress(out, ops=100)
    shown.update(50, 1.0)
    shown.finish()
    text = out.getvalue()
    assert text.startswith("\r[###############...............] 50/100 50/s")
    assert text.endswith("\n") and text.count("\n") == 1


def test_no_progress_without_an_output():
    """With out=None nothing is written and nothing fails."""
    shown = Progress(None, ops=10)
    shown.update(5, 1.0)
    shown.finish()
