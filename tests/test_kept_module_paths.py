"""The old module paths users type in command lines keep working; the other shims are gone."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_logger_path_of_the_docs_names_the_server_observers() -> None:
    """``twistd --logger=leeky_twisted.logs.json_observer`` (docs/running.md) resolves."""
    from twisted.python.reflect import namedAny

    from leeky_twisted.server import logs

    assert namedAny("leeky_twisted.logs.json_observer") is logs.json_observer
    assert namedAny("leeky_twisted.logs.text_observer") is logs.text_observer


def test_python_m_simulation_replays_a_seed() -> None:
    """``python -m leeky_twisted.simulation --seed S`` (docs/core.md) runs one seed."""
    run = subprocess.run(
        [sys.executable, "-m", "leeky_twisted.simulation", "--seed", "3", "--ticks", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok ")


@pytest.mark.parametrize(
    "old",
    [
        "node",
        "service",
        "tap",
        "metrics",
        "tls",
        "certs",
        "localcluster",
        "localcontrol",
        "bench",
        "testing_core",
        "ampframes",
        "jsonrpc_codes",
        "api.errors",
        "api.client_commands",
        "executor.wire",
    ],
)
def test_internal_shims_are_gone(old: str) -> None:
    """Code imports the new paths; only command-line paths keep a re-export."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"leeky_twisted.{old}")
