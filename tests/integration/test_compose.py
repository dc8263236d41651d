"""docker-compose.yml, run without Docker: each service's command in its own netns.

Our machines have no Docker engine, so this test does what the containers would
do: it reads docker-compose.yml, creates one network namespace per container
(named like the service: introducer, worker-1..worker-4) on a bridge of its
own, and runs the same entrypoint script with the service's command and
environment. The cluster must form five voters and serve writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BRIDGE = "lkcompose0"
SUBNET = "10.98.0"
WORKERS = 4

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and iproute2 (CI runs as root)",
)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


class Namespaces:
    """Namespaces on a private bridge, with /etc/hosts naming every container."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.ips = {name: f"{SUBNET}.{10 + i}" for i, name in enumerate(names)}

    def create(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in self.ips.items())
        for i, name in enumerate(self.names):
            sh("ip", "netns", "add", name)
            veth = f"lkc{i}"
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            sh("ip", "link", "set", veth, "master", BRIDGE)
            sh("ip", "link", "set", veth, "up")
            sh(
                "ip",
                "netns",
                "exec",
                name,
                "ip",
                "addr",
                "add",
                f"{self.ips[name]}/24",
                "dev",
                "eth0",
            )
            sh("ip", "netns", "exec", name, "ip", "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
            etc = Path("/etc/netns") / name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)

    def destroy(self) -> None:
        for name in self.names:
            sh("ip", "netns", "del", name, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        sh("ip", "link", "del", BRIDGE, check=False)


def in_ns(name: str, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=timeout
    )


@needs_root
def test_compose_services_form_a_five_voter_cluster(tmp_path):
    """introducer + 4 workers, started as compose would start them, become 5 voters."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"introducer", "worker"}
    instances = [("introducer", services["introducer"])] + [
        (f"worker-{i}", services["worker"]) for i in range(1, WORKERS + 1)
    ]
    ns = Namespaces([name for name, _ in instances])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ns.create()
        for name, svc in instances:
            env = {
                "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                "LEEKY_PYTHON_BIN": str(BIN),
                # what Docker would give the container: its host name and a volume
                "LEEKY_NODE_ID": name,
                "LEEKY_HOST": name,
                "LEEKY_DATA": str(tmp_path / name),
                # the shared volume cluster-secret, where the introducer puts the key
                "LEEKY_KEY_FILE": str(tmp_path / "secret" / "cluster.key"),
                "LEEKY_EXTRA": "--stabilization 1",
            }
            if os.environ.get("PYTHONPATH"):  # test this checkout, not the installed one
                env["PYTHONPATH"] = os.environ["PYTHONPATH"]
            env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
            env["LEEKY_NODE_ID"] = env.get("LEEKY_NODE_ID", name) if name == "introducer" else name
            argv = ["sh", str(ROOT / "docker" / "entrypoint.sh"), *svc["command"]]
            with open(tmp_path / f"{name}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", name, *argv],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        cli = str(BIN / "leekyraft")

        def voters() -> set[str]:
            r = in_ns("introducer", cli, "--cluster", "127.0.0.1:7000", "status", "--json")
            if r.returncode != 0:
                return set()
            try:
                reports = json.loads(r.stdout)
            except ValueError:
                return set()
            st = reports[0].get("status") or {}
            return set(st.get("voters") or [])

        expected = {name for name, _ in instances}
        deadline = time.monotonic() + 90
        while voters() != expected:
            assert time.monotonic() < deadline, f"cluster did not form: {voters()}"
            for p in procs:
                assert p.poll() is None, "a node exited; see its log in " + str(tmp_path)
            time.sleep(0.5)  # noqa: TID251 - polling a condition under a deadline
        assert (tmp_path / "secret" / "cluster.key").stat().st_mode & 0o077 == 0
        put = in_ns("worker-2", cli, "--cluster", "127.0.0.1:7000", "put", "compose", "works")
        assert put.returncode == 0, put.stderr
        get = in_ns("worker-4", cli, "--cluster", "127.0.0.1:7000", "get", "compose")
        assert get.stdout.strip() == "works"
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        ns.destroy()
