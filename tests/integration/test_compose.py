"""docker-compose.yml, run without Docker: each service's command in its own netns.

Our machines have no Docker engine, so this test does what the containers would
do: it reads docker-compose.yml, creates one network namespace per container
(named like the service: introducer, worker-1..worker-N) on a bridge of its
own, and runs the same entrypoint script with the service's command and
environment, each service's volume being a folder. The cluster must form five
voters and serve writes; then every worker is re-created (stopped, and started
again as a new container: a new host name and address, the same volume) and
the cluster must still lead with the same voters and lose no acknowledged
write; then it is scaled down to 3 workers and up to 4 again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.netns]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BRIDGE = "lkcompose0"
SUBNET = "10.98.0"
WORKERS = 4
CONTAINERS = 8  # worker-1..4, their re-created successors worker-5..8

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
        self.created: list[str] = []

    def create(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        hosts = "127.0.0.1 localhost\n" + "".join(f"{ip} {name}\n" for name, ip in self.ips.items())
        for i, name in enumerate(self.names):
            self.created.append(name)
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
        for name in self.created:
            sh("ip", "netns", "del", name, check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        sh("ip", "link", "del", BRIDGE, check=False)


def in_ns(name: str, *argv: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=timeout
    )


class Compose:
    """Start and stop "containers": the entrypoint in a namespace, a folder per volume."""

    def __init__(self, tmp_path: Path, services: dict[str, Any]) -> None:
        self.tmp = tmp_path
        self.services = services
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, service: str) -> None:
        """Start container ``name`` of ``service`` with its volume ``SERVICE-data`` at /data."""
        svc = self.services[service]
        env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "LEEKY_PYTHON_BIN": str(BIN),
            # what Docker gives the container: its volumes (and its host name, below)
            "LEEKY_DATA_ROOT": str(self.tmp / f"{service}-data"),
            "LEEKY_KEY_FILE": str(self.tmp / "secret" / "cluster.key"),
            "LEEKY_EXTRA": "--stabilization 1 --dead-grace 3",
        }
        if os.environ.get("PYTHONPATH"):  # test this checkout, not the installed one
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
        # a UTS namespace per container, so `hostname` names the container
        argv = [
            *("unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name),
            *("sh", str(ROOT / "docker" / "entrypoint.sh"), *svc["command"]),
        ]
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", name, *argv], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, name: str) -> None:
        """Stop container ``name`` as ``docker stop`` does (SIGTERM, then SIGKILL)."""
        p = self.procs.pop(name)
        if p.poll() is None:
            p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def check_running(self) -> None:
        """Fail when a container exited."""
        for name, p in self.procs.items():
            assert p.poll() is None, f"{name} exited; see its log in {self.tmp}"

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


CLI = str(BIN / "leekyraft")


def status(ns: str) -> dict[str, Any]:
    """Return the status of the node in namespace ``ns`` ({} when it does not answer)."""
    r = in_ns(ns, CLI, "--cluster", "127.0.0.1:7000", "status", "--json")
    if r.returncode != 0:
        return {}
    try:
        return json.loads(r.stdout)[0].get("status") or {}
    except (ValueError, IndexError, AttributeError):
        return {}


def wait_for(what: str, condition: Any, compose: Compose, seconds: float = 120) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what}: still not so after {seconds}s"
        compose.check_running()
        time.sleep(0.5)  # noqa: TID251 - polling a condition under a deadline


def put(ns: str, key: str, value: str) -> bool:
    """Write through the node in ``ns``; True when the write was acknowledged."""
    return in_ns(ns, CLI, "--cluster", "127.0.0.1:7000", "put", key, value).returncode == 0


def get(ns: str, key: str) -> str:
    r = in_ns(ns, CLI, "--cluster", "127.0.0.1:7000", "get", key)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def led_by(ns: str, voters: set[str]) -> Any:
    """Return a condition: the node in ``ns`` sees a leader and exactly ``voters``."""

    def check() -> bool:
        st = status(ns)
        return bool(st.get("leader")) and set(st.get("voters") or ()) == voters

    return check


@needs_root
def test_compose_cluster_survives_recreating_and_scaling_its_workers(tmp_path):
    """5 voters form; re-created workers come back as the same members; scale 4 -> 3 -> 4."""
    yaml = pytest.importorskip("yaml")
    compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose_file["services"]
    assert set(services) == {"introducer", "worker"}
    assert "LEEKY_NODE_ID" not in (services["worker"].get("environment") or {})
    workers = [f"worker-{i}" for i in range(1, CONTAINERS + 1)]
    ns = Namespaces(["introducer", *workers])
    compose = Compose(tmp_path, services)
    try:
        ns.create()
        compose.start("introducer", "introducer")
        for name in workers[:WORKERS]:
            compose.start(name, "worker")

        def five_voters() -> bool:
            st = status("introducer")
            return bool(st.get("leader")) and len(st.get("voters") or ()) == 5

        wait_for("the cluster forms 5 voters", five_voters, compose)
        voters = set(status("introducer")["voters"])
        ids = {name: status(name).get("id") for name in workers[:WORKERS]}
        assert set(ids.values()) | {"introducer"} == voters, ids
        assert (tmp_path / "secret" / "cluster.key").stat().st_mode & 0o077 == 0
        acked = {f"before-{i}": str(i) for i in range(5) if put("worker-2", f"before-{i}", str(i))}
        assert len(acked) == 5

        # docker compose up --force-recreate: every worker is a new container
        for name in workers[:WORKERS]:
            compose.stop(name)
        for name in workers[WORKERS:]:
            compose.start(name, "worker")

        # The introducer's view alone holds at once (the stopped voters are not removed yet),
        # so wait for every new container to answer as a member that sees the leader.
        def recreated_are_the_same_voters() -> bool:
            answers = [status(name) for name in workers[WORKERS:]]
            return led_by("introducer", voters)() and all(
                st.get("leader") and st.get("id") in voters for st in answers
            )

        wait_for(
            "the re-created workers are the same voters", recreated_are_the_same_voters, compose
        )
        assert {status(name).get("id") for name in workers[WORKERS:]} == set(ids.values())
        for key, value in acked.items():
            assert get("worker-8", key) == value
        assert put("worker-5", "after", "recreate")
        acked["after"] = "recreate"

        # docker compose up --scale worker=3: the autopilot removes the dead voter
        gone = status("worker-8")["id"]
        compose.stop("worker-8")
        wait_for("the stopped worker is removed", led_by("introducer", voters - {gone}), compose)
        assert put("worker-6", "scaled", "down")
        acked["scaled"] = "down"

        # --scale worker=4 again: the new container takes the free folder, and is added back
        compose.start("worker-1", "worker")

        def rejoined() -> bool:
            return led_by("introducer", voters)() and status("worker-1").get("id") == gone

        wait_for("the new worker takes the free folder and is a voter again", rejoined, compose)
        for key, value in acked.items():
            assert get("worker-1", key) == value
    finally:
        compose.stop_all()
        ns.destroy()
