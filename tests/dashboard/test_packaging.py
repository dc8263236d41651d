"""`pip install .` ships the dashboard's page, script and style inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leeky_twisted.dashboard.web import ASSETS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_a_plain_install_ships_every_asset_and_serves_them_from_there(tmp_path):
    # a copy of the sources: a build/ or *.egg-info left in the tree would list the files
    # of an earlier build and hide a missing package_data entry
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            "build", "*.egg-info", ".venv", ".git", "__pycache__", ".*_cache", "leekyraft-local"
        ),
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    for name in ASSETS:
        installed = target / "leeky_twisted" / "dashboard" / "static" / name
        assert (
            installed.read_bytes() == (ROOT / "leeky_twisted/dashboard/static" / name).read_bytes()
        )
    code = (
        "import sys, leeky_twisted.dashboard.web as w;"
        "assert w.__file__.startswith(sys.argv[1]), w.__file__;"
        "print(sum(len(b) for b in w.load_assets().values()))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        check=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    print(f"\ndashboard assets: {int(out.stdout) / 1024:.1f} KiB")
