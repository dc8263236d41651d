"""The repository's own tools say what they need when a clone lacks it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_benchmarks_without_the_shared_yardstick_says_what_is_missing(tmp_path):
    """A clone has no ../shared/bench: the script stops with one clear message, exit 2."""
    project = tmp_path / "project"
    (project / "tools").mkdir(parents=True)
    shutil.copy(ROOT / "tools" / "run_benchmarks.sh", project / "tools")
    done = subprocess.run(
        ["bash", str(project / "tools" / "run_benchmarks.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "shared yardstick" in done.stderr and "leekyraft bench" in done.stderr
