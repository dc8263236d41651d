"""docker/entrypoint.sh claims a data folder no running node holds (no root needed).

A fake ``twistd`` records its command line and holds on until its standard input
closes, so a "container" runs exactly as long as the test wants.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock (util-linux)"),
]

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "entrypoint.sh"
FAKE_TWISTD = """#!/bin/sh
printf '%s\\n' "$*" > "$ARGS_FILE.tmp" && mv "$ARGS_FILE.tmp" "$ARGS_FILE"
cat > /dev/null
"""


class Containers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        (self.bin / "twistd").write_text(FAKE_TWISTD)
        (self.bin / "twistd").chmod(0o755)
        (tmp / "secret").mkdir()
        (tmp / "secret" / "cluster.key").write_text("k\n")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, role: str = "worker", **env: str) -> subprocess.Popen[bytes]:
        full = {
            "PATH": os.environ["PATH"],
            "LEEKY_PYTHON_BIN": str(self.bin),
            "LEEKY_DATA_ROOT": str(self.tmp / "data"),
            "LEEKY_KEY_FILE": str(self.tmp / "secret" / "cluster.key"),
            "LEEKY_HOST": name,
            "ARGS_FILE": str(self.tmp / f"{name}.args"),
            **env,
        }
        p = subprocess.Popen(
            ["sh", str(ENTRYPOINT), role],
            env=full,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs[name] = p
        return p

    def data_dir(self, name: str) -> str:
        """Wait until ``name``'s twistd runs; return its --data-dir."""
        path = self.tmp / f"{name}.args"
        deadline = time.monotonic() + 20
        while not path.exists():
            assert self.procs[name].poll() is None, self.procs[name].stderr.read()
            assert time.monotonic() < deadline, f"{name} never started twistd"
            time.sleep(0.05)  # noqa: TID251 - polling a condition under a deadline
        argv = path.read_text().split()
        return argv[argv.index("--data-dir") + 1]

    def stop(self, name: str) -> None:
        p = self.procs.pop(name)
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@pytest.fixture
def containers(tmp_path: Path):
    c = Containers(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


def test_workers_claim_distinct_folders_and_a_new_container_takes_a_free_one(containers):
    """Two running workers hold two folders; a re-created one takes the folder freed."""
    containers.start("w1")
    containers.start("w2")
    one, two = containers.data_dir("w1"), containers.data_dir("w2")
    assert one != two and {Path(one).parent.name, Path(two).parent.name} == {"data"}
    assert Path(one).name.startswith("node.") and Path(two).name.startswith("node.")
    containers.stop("w1")
    containers.start("w3")  # the re-created w1: another host name, the same volume
    assert containers.data_dir("w3") == one
    args = (containers.tmp / "w3.args").read_text()
    assert "--id" not in args.split()  # the node reads its id from the folder
    containers.start("w4")  # a scaled-up worker: every folder is held, so a new one
    assert containers.data_dir("w4") not in (one, two)


def test_a_named_node_uses_its_folder_and_a_second_one_is_refused(containers):
    """LEEKY_NODE_ID keeps /data/ID (the introducer); two nodes on one folder cannot run."""
    containers.start("introducer", "introducer", LEEKY_NODE_ID="introducer")
    data = containers.data_dir("introducer")
    assert data == str(containers.tmp / "data" / "introducer")
    args = (containers.tmp / "introducer.args").read_text().split()
    assert args[args.index("--id") + 1] == "introducer"
    twin = containers.start("twin", "introducer", LEEKY_NODE_ID="introducer")
    assert twin.wait(10) == 75
    assert b"another node is running on" in twin.stderr.read()
    containers.procs.pop("twin")
