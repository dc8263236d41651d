"""The runner without namespaces: ``verify`` against a loopback cluster, and the command line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from leeky_twisted.chaos.runner import main, run_verify
from leeky_twisted.chaos.workload import Endpoint
from leeky_twisted.checker.history import loads_history
from leeky_twisted.ops.localcluster import LOOPBACK, LocalCluster

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]


def test_bad_arguments_exit_with_2(capsys: pytest.CaptureFixture[str]):
    """Unknown nemeses and malformed endpoints are refused with exit code 2."""
    assert main(["--nemesis", "meteor", "--time", "1", "--out", "/nonexistent/x"]) == 2
    assert main(["verify", "--endpoints", "nonsense", "--time", "1"]) == 2
    assert main(["--fault", "5,1"]) == 2
    capsys.readouterr()


@pytest.mark.integration
def test_verify_checks_a_running_cluster_and_writes_history_and_report(tmp_path: Path):
    """verify runs the workload on a live cluster, checks it and writes the three files,
    and (with matplotlib) the report folder under its output folder."""
    with LocalCluster(tmp_path / "c", nodes=3, extra_args=FAST) as cluster:
        cluster.start()
        cluster.wait_for_leader()
        endpoints = ",".join(f"{n.node_id}={LOOPBACK}:{n.http_port}" for n in cluster.nodes)
        out = tmp_path / "verify"
        code = main(["verify", "--endpoints", endpoints, "--time", "2", "--out", str(out)])
        report = run_verify(
            [Endpoint(n.node_id, LOOPBACK, n.http_port) for n in cluster.nodes],
            1.0,
            tmp_path / "again",
            clients=4,
            key_prefix="mine",
        )
    assert code == 0
    if importlib.util.find_spec("matplotlib") is not None:
        page = (out / "report" / "index.html").read_text()
        assert "verdict: <b>linearizable</b>" in page
        for name in ("latency.png", "throughput.png"):
            assert f'src="{name}"' in page and (out / "report" / name).stat().st_size > 10_000
    data = json.loads((out / "report.json").read_text())
    assert data["ok"] and data["verdict"] == "linearizable"
    history = loads_history((out / "history.jsonl").read_text())
    assert len(history) == data["operations"]["operations"] > 0
    assert 0 <= history[0].invoke < 5  # seconds since the clients started
    assert "result: PASS" in (out / "report.txt").read_text()
    assert report.ok
    assert all(k.startswith("mine-") for k in report.operations["keys"])
