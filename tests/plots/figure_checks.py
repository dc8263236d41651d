"""Helpers that look inside matplotlib figures and written plot files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def by_gid(fig: Any, gid: str) -> list[Any]:
    """Return every artist of ``fig`` whose gid is ``gid``."""
    return list(fig.findobj(lambda a: a.get_gid() == gid))


def one(fig: Any, gid: str) -> Any:
    """Return the one artist of ``fig`` with gid ``gid``."""
    found = by_gid(fig, gid)
    assert len(found) == 1, (gid, found)
    return found[0]


def assert_png(path: Path, min_bytes: int = 10_000) -> None:
    """Assert ``path`` is a PNG (magic number, IHDR, IEND) of at least ``min_bytes``."""
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82")
    assert len(data) >= min_bytes, len(data)


def assert_svg(path: Path, min_bytes: int = 10_000) -> ET.Element:
    """Assert ``path`` is well-formed SVG of at least ``min_bytes``; return its root."""
    assert path.stat().st_size >= min_bytes
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root
