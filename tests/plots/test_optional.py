"""matplotlib is optional: the node never imports it, and asking for plots without it
ends with one clear line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from leeky_twisted.chaos.runner import main as chaos_main
from leeky_twisted.cli import EXIT_ERROR
from leeky_twisted.cli import main as cli_main
from leeky_twisted.plots import MISSING, PlotsUnavailable, require_matplotlib

ROOT = Path(__file__).resolve().parents[2]


def test_the_node_and_the_commands_do_not_import_matplotlib():
    """Importing the node's modules and the commands' modules leaves matplotlib unloaded."""
    modules = [
        "leeky_twisted.server.service",
        "leeky_twisted.server.node",
        "leeky_twisted.server.tap",
        "leeky_twisted.api.http_server",
        "leeky_twisted.api.jsonrpc_api",
        "leeky_twisted.api.amp_api",
        "leeky_twisted.cli",
        "leeky_twisted.ops.bench",
        "leeky_twisted.chaos.runner",
        "leeky_twisted.plots",
        "leeky_twisted.plots.report",
    ]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\n"
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import matplotlib`` fail, as when the plots extra is not installed."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_missing_matplotlib_is_one_clear_error(no_matplotlib: None):
    """require_matplotlib names the extra to install."""
    with pytest.raises(PlotsUnavailable) as error:
        require_matplotlib()
    assert str(error.value) == "plots need matplotlib: pip install 'leeky-twisted[plots]'"


def test_bench_plot_without_matplotlib_stops_before_running(
    no_matplotlib: None, capsys: pytest.CaptureFixture[str]
):
    """`leekyraft bench --plot` exits non-zero with one line, no traceback, no run."""
    with pytest.raises(SystemExit) as exit:
        cli_main(["--cluster", "127.0.0.1:1", "bench", "--plot", "b.png"])
    assert exit.value.code == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.err == f"leekyraft: {MISSING}\n" and captured.out == ""


def test_verify_report_without_matplotlib_stops_before_running(
    no_matplotlib: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """`leekyraft verify --report DIR` exits 2 with one line before any client starts."""
    argv = ["verify", "--endpoints", "127.0.0.1:1", "--time", "1", "--out", str(tmp_path / "o")]
    assert chaos_main([*argv, "--report", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"{MISSING}\n" and captured.out == ""
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_the_extra_named_in_the_message_exists():
    """setup.py's distribution name and `plots` extra are what the message tells to install."""
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    name = re.search(r'name="([^"]+)"', setup)
    assert name is not None and f"'{name.group(1)}[plots]'" in MISSING
    assert '"plots": ["matplotlib>=3.7"]' in setup
    test_extra = setup[setup.index('"test": [') : setup.index("],", setup.index('"test": ['))]
    assert '"matplotlib>=3.7"' in test_extra
