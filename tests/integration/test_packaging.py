"""A plain (non-editable) install ships the twistd plugin, and twistd finds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_pip_install_ships_the_twistd_plugin(tmp_path):
    """`pip install .` puts twisted/plugins/leekyraft_plugin.py in place; twistd lists it."""
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
            str(ROOT),
        ],
        check=True,
        timeout=300,
        cwd=tmp_path,
    )
    plugin = target / "twisted" / "plugins" / "leekyraft_plugin.py"
    assert plugin.exists()
    assert not (target / "twisted" / "plugins" / "__init__.py").exists()
    # Run from an unrelated folder with only the installed copy (and Twisted) importable.
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import leeky_twisted, sys;"
        "assert leeky_twisted.__file__.startswith(sys.argv[1]), leeky_twisted.__file__;"
        "from twisted.plugin import IPlugin, getPlugins;"
        "from twisted.application.service import IServiceMaker;"
        "names = [p.tapname for p in getPlugins(IServiceMaker)];"
        "assert 'leekyraft' in names, names"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(target)], check=True, timeout=60, cwd=tmp_path, env=env
    )
