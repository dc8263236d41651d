"""The code base stays ruff clean (lint and format), as the house style asks."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is installed with the test extras")
def test_ruff_check_and_format_are_clean():
    """`ruff check` and `ruff format --check` report nothing."""
    paths = ["leeky_twisted", "tests", "tools", "twisted"]
    check = subprocess.run([RUFF, "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run(
        [RUFF, "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


MYPY = shutil.which("mypy", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(MYPY is None, reason="mypy is installed with the test extras")
def test_core_storage_and_interfaces_are_strictly_typed():
    """mypy --strict (with mypy_zope) passes on the core, storage, the shared protocol,
    the transport, the node runtime, the API and the interfaces."""
    paths = [
        "leeky_twisted/core",
        "leeky_twisted/storage",
        "leeky_twisted/interfaces.py",
        "leeky_twisted/defaults.py",
        "leeky_twisted/protocol",
        "leeky_twisted/transport",
        "leeky_twisted/server",
        "leeky_twisted/api",
        "leeky_twisted/testing/fakes.py",
    ]
    run = subprocess.run(
        [MYPY, "--no-incremental", *paths], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
