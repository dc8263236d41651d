"""A new user's first contact: clone main, run README's commands exactly as written."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str) -> str:
    """Return the first ```sh block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under {heading!r}"
    return match.group(1).strip()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_readme_setup_and_local_cluster_work_on_a_fresh_clone(tmp_path):
    """README's set-up command installs, and its local-cluster command serves a put and get."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    setup = readme_block("Set up")
    subprocess.run(["bash", "-ec", setup], cwd=clone, check=True, timeout=600)
    start = readme_block("Start a local cluster")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {start}"],
        cwd=clone,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        assert any(line.startswith("leader:") for line in lines), "".join(lines)
        cli = str(clone / ".venv" / "bin" / "leekyraft")
        env = {k: v for k, v in os.environ.items() if k != "LEEKYRAFT_CLUSTER"}
        put = subprocess.run(
            [cli, "put", "pizzatoppings", "peporoni", "peppr", "cheddar"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert put.returncode == 0, put.stderr
        assert put.stdout.strip() == 'Success! Set "pizzatoppings" to: "peporoni peppr cheddar"'
        get = subprocess.run(
            [cli, "get", "pizzatoppings"], capture_output=True, text=True, timeout=60, env=env
        )
        assert get.stdout.strip() == "peporoni peppr cheddar"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    left = subprocess.run(
        ["pgrep", "-f", str(clone / "leekyraft-local")], capture_output=True, text=True
    ).stdout.split()
    assert left == []
