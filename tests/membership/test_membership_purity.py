"""The gossip core, its codec and the reconciler stay pure: no I/O, clock or Twisted."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import leeky_twisted.membership

PURE = ["gossip_core.py", "codec.py", "reconciler.py"]
DIR = Path(leeky_twisted.membership.__file__).parent
ALLOWED = {
    "__future__",
    "collections.abc",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "hmac",
    "json",
    "math",
    "random",  # the injected random.Random type only; checked below
    "struct",
    "typing",
    "zope.interface",
    "leeky_twisted.core.messages",
    "leeky_twisted.interfaces",
    "leeky_twisted.membership",
    "leeky_twisted.membership.codec",
    "leeky_twisted.membership.gossip_core",
}


def impurities(source: str) -> list[str]:
    """Return each import outside the allow-list and each use of the global RNG."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name not in ALLOWED]
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in ALLOWED:
                found.append(f"from {node.module} import ...")
            if node.module == "random":
                found.append("from random import ...")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr != "Random"
        ):
            found.append(f"random.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"open", "print", "hash", "id", "input"}
        ):
            found.append(f"{node.func.id}()")
    return found


@pytest.mark.parametrize("name", PURE)
def test_module_is_pure(name: str) -> None:
    """The module imports only the allow-list and never uses the global RNG or I/O."""
    assert impurities((DIR / name).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "from twisted.internet import reactor",
        "import random\nrandom.random()",
        "open('x')",
    ],
)
def test_check_catches_impurities(source: str) -> None:
    """The check is not vacuous."""
    assert impurities(source)
