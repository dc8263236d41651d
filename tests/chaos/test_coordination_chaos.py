"""The coordination checks under faults: 5 real nodes in network namespaces.

Each workload (watch completeness, lock safety, lease expiry) runs for
``LEEKY_COORD_SECONDS`` (default 12) under partitions, kills and pauses (the
mixed nemesis), and must pass its check; each run injects at least one fault.
Needs root and iproute2; skipped otherwise. ``LEEKY_CHAOS_OUT`` keeps each
run's folder (record, report, node logs).

Run: ``sudo .venv/bin/pytest -m netns tests/chaos/test_coordination_chaos.py -s``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from leeky_twisted.chaos.coordrun import run_coordination_chaos
from leeky_twisted.chaos.nemesis import Schedule
from leeky_twisted.chaos.netns import netns_available
from leeky_twisted.chaos.runner import run_chaos

_REASON = netns_available()
pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(_REASON is not None, reason=f"network namespaces: {_REASON}"),
]

SECONDS = float(os.environ.get("LEEKY_COORD_SECONDS", "12"))
NEMESIS = ["partition", "kill", "pause"]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("workload", ["watch", "lock", "lease"])
def test_coordination_check_passes_under_faults(tmp_path: Path, workload: str):
    """The workload runs under partitions, kills and pauses; its check passes."""
    root = os.environ.get("LEEKY_CHAOS_OUT")
    out = Path(root) / f"coord-{workload}" if root else tmp_path / workload
    before = _namespaces()
    report = run_coordination_chaos(
        workload,
        5,
        SECONDS,
        NEMESIS,
        out,
        schedule=Schedule(fault=(2.0, 4.0), quiet=(1.0, 2.0)),
        heal_within=30.0,
        progress=print,
    )
    print(report.render())
    assert report.faults, "no fault was injected"
    assert report.ok, report.render()
    assert report.verdict == "passed"
    assert report.operations["operations"] > 0
    assert (out / "record.json").exists() and (out / "report" / "index.html").exists()
    assert _namespaces() <= before


def test_transactions_stay_atomic_under_faults(tmp_path: Path):
    """The register workload with a third of its operations two-key transactions, under
    partitions, kills and pauses: linearizable, each transaction one atomic step."""
    root = os.environ.get("LEEKY_CHAOS_OUT")
    out = Path(root) / "coord-txn" if root else tmp_path / "txn"
    report = run_chaos(
        5,
        SECONDS,
        NEMESIS,
        out,
        clients=6,
        ops_per_key=100,
        txn_share=0.3,
        schedule=Schedule(fault=(2.0, 4.0), quiet=(1.0, 2.0)),
        heal_within=30.0,
        progress=print,
    )
    print(report.render())
    assert report.faults, "no fault was injected"
    assert report.ok, report.render()
    assert report.operations["by_kind"].get("txn:ok", 0) > 0
