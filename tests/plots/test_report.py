"""The report folder of chaos and verify: plots, and an index.html naming them and the verdict."""

from __future__ import annotations

import html.parser
from pathlib import Path

import pytest
from figure_checks import assert_png
from synthetic_history import FAULTS, bad_history, history

from leeky_twisted.checker import check_history
from leeky_twisted.plots.history import FaultWindow
from leeky_twisted.plots.page import Plot, render_index
from leeky_twisted.plots.report import write_report

pytest.importorskip("matplotlib")  # the plots extra (CI installs it with test)


class _Page(html.parser.HTMLParser):
    """Collects the images, links and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        if tag == "a":
            self.links.append(found["href"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _read(page: Path) -> _Page:
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    return parsed


def test_a_linearizable_run_gets_latency_and_throughput_and_a_passing_verdict(tmp_path: Path):
    """index.html shows both plots (valid PNGs), the verdict, and every fault."""
    ops = history()
    result = check_history(ops)
    page = write_report(
        tmp_path / "r", ops, result, FAULTS, title="verify run", passed=True, text="all good"
    )
    assert page == tmp_path / "r" / "index.html"
    parsed = _read(page)
    assert parsed.images == ["latency.png", "throughput.png"]
    for name in parsed.images:
        assert_png(tmp_path / "r" / name)
    text = "".join(parsed.text)
    assert "verdict: linearizable (PASS)" in text
    for fault in FAULTS:
        assert fault["detail"] in text
    assert "all good" in text
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "index.html",
        "latency.png",
        "throughput.png",
    ]


def test_a_violation_gets_a_timeline_of_its_own(tmp_path: Path):
    """A non-linearizable history adds violation-1.png and a failing verdict."""
    ops = bad_history()
    result = check_history(ops)
    page = write_report(tmp_path, ops, result, FAULTS, title="chaos", passed=False, text="")
    parsed = _read(page)
    assert parsed.images == ["latency.png", "throughput.png", "violation-1.png"]
    assert parsed.links == parsed.images
    assert_png(tmp_path / "violation-1.png")
    text = "".join(parsed.text)
    assert "verdict: not linearizable (FAIL)" in text
    assert "key 'k'" in text


def test_the_page_escapes_what_it_shows():
    """Fault details, titles and the report text are escaped, never markup."""
    faults = FaultWindow.from_dicts(
        [{"nemesis": "x", "detail": "<b>boom</b>", "start": 1, "end": 2}]
    )
    page = render_index("<t>", "linearizable", True, [Plot("a.png", "a & b")], faults, "<pre>")
    assert "<b>boom" not in page and "&lt;b&gt;boom&lt;/b&gt;" in page
    assert "<title>&lt;t&gt;</title>" in page
    assert "a &amp; b" in page and "&lt;pre&gt;" in page


def test_a_run_without_operations_still_gets_its_page(tmp_path: Path):
    """No operation recorded (clients never got through): empty plots, the page, no error."""
    page = write_report(tmp_path, [], check_history([]), [], title="t", passed=False, text="")
    parsed = _read(page)
    assert parsed.images == ["latency.png", "throughput.png"]
    for name in parsed.images:
        assert_png(tmp_path / name, min_bytes=5_000)
