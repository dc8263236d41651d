"""The Raft core stays pure: no I/O, clocks, threads, Twisted or global randomness.

Every leeky_twisted/core/*.py is parsed with ``ast``; imports must come from a
small stdlib allow-list or the core itself, ``random`` may only name the
``random.Random`` type (the RNG is injected), and calls that read the outside
world or differ between processes (``open``, ``print``, ``hash``, ``id``...)
are refused.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import leeky_twisted.core

CORE_DIR = Path(leeky_twisted.core.__file__).parent
CORE_FILES = sorted(CORE_DIR.glob("*.py"))

ALLOWED_MODULES = {
    "__future__",
    "abc",
    "bisect",
    "collections",
    "collections.abc",
    "dataclasses",
    "enum",
    "functools",
    "heapq",
    "itertools",
    "math",
    "operator",
    "random",  # for the random.Random type only; checked below
    "typing",
}
CORE_PACKAGE = "leeky_twisted.core"
#: builtins that do I/O, or whose results differ between processes (string
#: hashing is salted per process; id() is an address)
FORBIDDEN_CALLS = {"open", "print", "input", "hash", "id", "eval", "exec", "__import__"}


def violations(source: str) -> list[str]:
    """Return a description of every impurity in a module's source."""
    tree = ast.parse(source)
    found: list[str] = []
    random_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _allowed(alias.name):
                    found.append(f"line {node.lineno}: import {alias.name}")
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or not _allowed(module):
                found.append(f"line {node.lineno}: from {'.' * node.level}{module} import")
            if module == "random":
                for alias in node.names:
                    if alias.name != "Random":
                        found.append(f"line {node.lineno}: from random import {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"line {node.lineno}: call to {func.id}()")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
        ) and node.attr != "Random":
            found.append(f"line {node.lineno}: random.{node.attr} (global RNG)")
        if isinstance(node, ast.Call) and _is_random_type(node.func, random_aliases):
            found.append(f"line {node.lineno}: random.Random() built inside the core")
    return found


def _allowed(module: str) -> bool:
    return (
        module in ALLOWED_MODULES
        or module == CORE_PACKAGE
        or module.startswith("leeky_twisted.core.")
    )


def _is_random_type(func: ast.expr, aliases: set[str]) -> bool:
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "Random"
        and isinstance(func.value, ast.Name)
        and func.value.id in aliases
    )


def test_core_files_are_found():
    """The check really looks at the core's modules."""
    names = {p.name for p in CORE_FILES}
    assert {"raft.py", "log.py", "messages.py", "progress.py", "quorum.py", "config.py"} <= names


@pytest.mark.parametrize("path", CORE_FILES, ids=[p.name for p in CORE_FILES])
def test_core_module_is_pure(path):
    """The core module imports only allowed stdlib modules and uses no global RNG or I/O."""
    found = violations(path.read_text(encoding="utf-8"))
    assert not found, f"{path.name}:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "import twisted.internet",
        "from twisted.internet import reactor",
        "import socket",
        "import time",
        "from time import monotonic",
        "import threading",
        "import os",
        "import asyncio",
        "import random\nx = random.random()",
        "import random\nrandom.seed(1)",
        "import random as r\nr.choice([1])",
        "from random import randrange",
        "import random\nrng = random.Random()",
        "from ..service import x",
        "import leeky_twisted.server.node",
        "x = hash('a')",
        "print('hi')",
        "open('f')",
    ],
)
def test_purity_check_catches_impurities(source):
    """The checker flags each kind of impurity (so a clean result means something)."""
    assert violations(source)


def test_purity_check_accepts_the_injected_rng_type():
    """Naming random.Random as a type and importing the core's own modules is fine."""
    source = (
        "from __future__ import annotations\n"
        "import random\n"
        "from collections.abc import Sequence\n"
        "from leeky_twisted.core.log import RaftLog\n"
        "def f(rng: random.Random) -> int:\n"
        "    return rng.randrange(3)\n"
    )
    assert violations(source) == []
