"""The coordination workloads against a loopback cluster (``leekyraft verify --workload``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leeky_twisted.chaos.runner import main
from leeky_twisted.checker.history import OpKind, Outcome, loads_history
from leeky_twisted.checker.linearizability import Verdict, check_history
from leeky_twisted.ops.localcluster import LOOPBACK, LocalCluster

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]


@pytest.mark.integration
@pytest.mark.parametrize("workload", ["watch", "lock", "lease"])
def test_verify_runs_a_coordination_workload(tmp_path: Path, workload: str):
    """verify --workload runs the workload on a live cluster, checks it, reports PASS."""
    with LocalCluster(tmp_path / "c", nodes=3, extra_args=FAST) as cluster:
        cluster.start()
        cluster.wait_for_leader()
        http = ",".join(f"{LOOPBACK}:{n.http_port}" for n in cluster.nodes)
        amp = ",".join(f"{LOOPBACK}:{n.client_port}" for n in cluster.nodes)
        out = tmp_path / "out"
        code = main(
            [
                "verify", "--workload", workload, "--endpoints", http, "--amp", amp,
                "--election-timeout", "0.3", "--time", "4", "--out", str(out),
            ]
        )  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert code == 0, (out / "report.txt").read_text() + (out / "workload.log").read_text()
    assert data["ok"] and data["verdict"] == "passed" and data["workload"] == workload
    assert data["operations"]["operations"] > 0
    assert "PASS" in (out / "report" / "index.html").read_text()


def test_coordination_verify_needs_amp_addresses(capsys: pytest.CaptureFixture[str]):
    """Without --amp a coordination workload is refused with exit code 2 and one line."""
    assert main(["verify", "--workload", "lock", "--endpoints", "h:1", "--time", "1"]) == 2
    assert "--amp" in capsys.readouterr().err


@pytest.mark.integration
def test_verify_with_transactions_checks_them_atomically(tmp_path: Path):
    """--txn-share mixes two-key transactions into the register workload; the checker
    searches each key with its companion as one group, and the run passes."""
    with LocalCluster(tmp_path / "c", nodes=3, extra_args=FAST) as cluster:
        cluster.start()
        cluster.wait_for_leader()
        http = ",".join(f"{LOOPBACK}:{n.http_port}" for n in cluster.nodes)
        out = tmp_path / "out"
        code = main(
            ["verify", "--endpoints", http, "--time", "3", "--txn-share", "0.4",
             "--clients", "4", "--out", str(out)]
        )  # fmt: skip
    assert code == 0, (out / "report.txt").read_text()
    history = loads_history((out / "history.jsonl").read_text())
    txns = [op for op in history if op.kind is OpKind.TXN and op.outcome is Outcome.OK]
    assert txns and any('"succeeded":true' in str(op.result) for op in txns)
    result = check_history(history)
    assert result.verdict is Verdict.LINEARIZABLE
    assert any(k.key.endswith("/t") and "+" in k.key for k in result.keys)
