"""The import arrows follow the layers of docs/architecture.md: none points up.

core < storage, transport, membership, statemachine < server (node runtime) <
api < client, cli; the shared protocol sits low, under both api and client,
and the client reaches a node only through it. Testing and ops sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "leeky_twisted"

#: layer of each module, by longest matching dotted prefix (without "leeky_twisted.")
LAYERS: dict[str, int] = {
    "core": 0,
    "defaults": 0,
    "interfaces": 1,
    # what both ends of a connection share; security is used by both ends too
    "protocol": 2,
    "security": 2,
    "logs": 4,  # the old path of server/logs.py (the --logger option names it)
    # the adapters
    "storage": 3,
    "transport": 3,
    "membership": 3,
    "statemachine": 3,
    # the node runtime
    "server": 4,
    # the Ready loop's collaborators, one job each (server/node.py uses them)
    "server.writes": 4,
    "server.pending": 4,
    "server.applier": 4,
    "server.executor_applier": 4,
    "server.snapshots": 4,
    "server.addresses": 4,
    # the front ends of a node
    "api": 5,
    "dashboard": 5,
    # the composition root: builds a node with its front ends
    "server.service": 6,
    "server.tap": 6,
    # the far end of a connection
    "client": 7,
    # the leekyraft command: a client, and the front of the ops tools
    "cli": 9,
    # on top: harnesses, tools, the example executor app
    "testing": 9,
    "simulation": 9,  # the old path of testing/simulation.py (python -m names it)
    "ops": 9,
    "plots": 9,
    "chaos": 9,
    "checker": 9,
    "executor": 9,
}

#: the client talks to a node only through the protocol: it imports nothing of
#: the server side (adapters, runtime, api), even though those sit lower
CLIENT_SIDE = ("client", "cli")
CLIENT_MAY_IMPORT_UP_TO = 2


def layer_of(module: str) -> tuple[str, int]:
    """Return the LAYERS key and layer of a dotted module name (without the package)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key, LAYERS[key]
    raise KeyError(f"leeky_twisted.{module} has no layer: add it to LAYERS in {__file__}")


def imports() -> list[tuple[str, str]]:
    """Return (importer, imported) for every leeky_twisted import in the package."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        mod = mod.removesuffix(".__init__").removesuffix("__init__") or "__init__"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "leeky_twisted":
                    edges += [(mod, a.name) for a in node.names]
                elif node.module.startswith("leeky_twisted."):
                    edges.append((mod, node.module.removeprefix("leeky_twisted.")))
            elif isinstance(node, ast.Import):
                edges += [
                    (mod, a.name.removeprefix("leeky_twisted."))
                    for a in node.names
                    if a.name.startswith("leeky_twisted.")
                ]
    return [(a, b) for a, b in edges if a != "__init__"]


def test_every_module_has_a_layer():
    """A new module is placed in a layer on purpose."""
    for mod, _ in imports():
        layer_of(mod)


def test_no_import_points_to_a_higher_layer():
    """Lower layers never import higher ones."""
    bad = []
    for importer, imported in imports():
        (ka, la), (kb, lb) = layer_of(importer), layer_of(imported)
        if lb > la and ka != kb:
            bad.append(f"{importer} ({la}) imports {imported} ({lb})")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(set(bad)))


def test_the_client_side_reaches_a_node_only_through_the_protocol():
    """client/ and cli.py import no server-side module (api, runtime, adapters)."""
    bad = []
    for importer, imported in imports():
        (ka, _), (kb, lb) = layer_of(importer), layer_of(imported)
        server_side = CLIENT_MAY_IMPORT_UP_TO < lb < LAYERS["testing"]
        if ka in CLIENT_SIDE and kb not in CLIENT_SIDE and server_side:
            bad.append(f"{importer} imports {imported}")
    assert not bad, "client-side imports of the server side:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("module", ["core.raft", "api.amp_api", "client"])
def test_layer_of_finds_the_longest_prefix(module):
    """layer_of knows the package's modules (a guard for the table itself)."""
    assert layer_of(module)[1] >= 0


#: the Ready loop's collaborators: each has one job and does not run the loop
NODE_COLLABORATORS = ("writes", "pending", "applier", "executor_applier", "snapshots", "addresses")


@pytest.mark.parametrize("name", NODE_COLLABORATORS)
def test_a_node_collaborator_imports_the_ready_loop_only_for_types(name):
    """server/<collaborator>.py names RaftNode in annotations only: no import cycle."""
    path = PACKAGE / "server" / f"{name}.py"
    tree = ast.parse(path.read_text(), str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    bad = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "leeky_twisted.server.node"
        and id(node) not in typing_only
    ]
    assert not bad, f"{path.name} imports server.node at run time (lines {bad})"
