"""A file-metadata state machine: ``ADD f``, ``READ f``, ``DELETE f``.

In the original Leeky Raft every log entry was a line such as ``ADD f`` that
a separate filesystem process executed. This is that process's state, made
deterministic: the same commands at the same indexes give the same state and
results everywhere. Nothing reads a clock.

Commands (one line of UTF-8 text; the verb is case-insensitive)::

    ADD <name> [<size>]   record a file: {"name", "size", "added_index", "reads": 0}
    READ <name>           count one read of it; answer its record after the count
    DELETE <name>         forget it; answer the record it had

``READ`` changes state (its read counter) on purpose: it is what makes
applying an entry twice visible, so the example proves exactly-once
application. A command that cannot take effect (malformed, an ``ADD`` of a
known name, a ``READ``/``DELETE`` of an unknown one) raises
:class:`CommandRejected` and changes nothing.

Queries (read-only, never in the log): ``READ <name>`` (the record or None)
and ``LIST`` (the sorted names).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["MAX_NAME_BYTES", "SNAPSHOT_FORMAT", "CommandRejected", "FileMetadataMachine"]

SNAPSHOT_FORMAT = "leeky-filemeta/1"
MAX_NAME_BYTES = 255
#: what a refused query is told
KNOWN_QUERIES = "queries are READ <name> or LIST"


class CommandRejected(Exception):
    """A committed command that cannot take effect; the state is unchanged."""


@dataclass(slots=True)
class FileRecord:
    """What the machine knows of one file."""

    name: str
    size: int
    added_index: int
    reads: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-able dictionary."""
        return asdict(self)


def _parse(command: bytes) -> tuple[str, str, list[str]]:
    try:
        text = command.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandRejected("command is not UTF-8 text") from None
    words = text.split()
    if not words:
        raise CommandRejected("empty command")
    verb = words[0].upper()
    if verb not in ("ADD", "READ", "DELETE"):
        raise CommandRejected(f"unknown command {verb[:40]!r} (ADD, READ, DELETE)")
    if len(words) < 2:
        raise CommandRejected(f"{verb} needs a file name")
    name = words[1]
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise CommandRejected(f"file name longer than {MAX_NAME_BYTES} bytes")
    return verb, name, words[2:]


class FileMetadataMachine:
    """The files known to the system, changed only by applying commands in log order."""

    def __init__(self) -> None:
        self._files: dict[str, FileRecord] = {}

    def __len__(self) -> int:
        return len(self._files)

    def apply(self, index: int, command: bytes) -> dict[str, Any]:
        """Apply ``command`` (committed at log ``index``); return its result.

        Raises CommandRejected, changing nothing, when it cannot take effect.
        The caller is responsible for applying each index once and in order.
        """
        verb, name, rest = _parse(command)
        if verb == "ADD":
            if len(rest) > 1:
                raise CommandRejected("usage: ADD <name> [<size>]")
            size = 0
            if rest:
                if not rest[0].isdigit() or len(rest[0]) > 18:
                    raise CommandRejected(f"bad size {rest[0][:40]!r}")
                size = int(rest[0])
            if name in self._files:
                raise CommandRejected(f"file exists: {name}")
            record = self._files[name] = FileRecord(name, size, index)
            return record.to_json()
        if rest:
            raise CommandRejected(f"usage: {verb} <name>")
        if verb == "READ":
            found = self._files.get(name)
            if found is None:
                raise CommandRejected(f"no such file: {name}")
            found.reads += 1
            return found.to_json()
        gone = self._files.pop(name, None)
        if gone is None:
            raise CommandRejected(f"no such file: {name}")
        return gone.to_json()

    def query(self, request: str) -> Any:
        """Answer ``READ <name>`` (record or None) or ``LIST`` (sorted names).

        Raises CommandRejected for anything else. Changes nothing.
        """
        words = request.split()
        if len(words) == 1 and words[0].upper() == "LIST":
            return sorted(self._files)
        if len(words) == 2 and words[0].upper() == "READ":
            found = self._files.get(words[1])
            return None if found is None else found.to_json()
        if words and words[0].upper() not in ("READ", "LIST"):
            raise CommandRejected(f"unknown query {words[0][:40]!r}: {KNOWN_QUERIES}")
        raise CommandRejected(KNOWN_QUERIES)

    def to_json(self) -> dict[str, Any]:
        """Return the whole state as a JSON-able document."""
        return {
            "format": SNAPSHOT_FORMAT,
            "files": [r.to_json() for _, r in sorted(self._files.items())],
        }

    @classmethod
    def from_json(cls, document: object) -> FileMetadataMachine:
        """Build a machine from :meth:`to_json`'s document; ValueError when malformed."""
        if not isinstance(document, dict) or document.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not a {SNAPSHOT_FORMAT} document")
        files = document.get("files")
        if not isinstance(files, list):
            raise ValueError("files must be a list")
        machine = cls()
        for item in files:
            try:
                record = FileRecord(**item)
            except TypeError:
                raise ValueError(f"malformed file record: {item!r:.80}") from None
            ints = (record.size, record.added_index, record.reads)
            if not isinstance(record.name, str) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints
            ):
                raise ValueError(f"malformed file record: {item!r:.80}")
            machine._files[record.name] = record
        return machine
