"""Say in words why the far end of an AMP call failed.

AMP's own error codes reach a user as ``UNKNOWN 'Unknown Error'`` or
``UNHANDLED "Unhandled Command: b'Put'"``: codes and command names, not what
happened. Both ends (the client library, and a node passing a request on to
its leader) say it with :func:`describe_remote_error` instead.
"""

from __future__ import annotations

from twisted.protocols import amp

__all__ = ["describe_remote_error"]


def describe_remote_error(e: amp.RemoteAmpError, who: str | None = None) -> str:
    """Return why ``who`` (e.g. "the leader at HOST:PORT"; default: the node) failed a call.

    AMP's own codes become a sentence naming ``who``; any other error is its
    description (at most 200 characters), as "``who`` refused it: ..." when
    ``who`` is given.
    """
    name = who or "the node"
    if e.errorCode == amp.UNKNOWN_ERROR_CODE:
        return f"{name} failed while answering (an internal error: its log has the details)"
    if e.errorCode == amp.UNHANDLED_ERROR_CODE:
        return f"{name} does not know this request (another program, or a much older node)"
    description = e.description
    if isinstance(description, bytes):
        description = description.decode("utf-8", "replace")
    text = str(description)[:200]
    return f"{name} refused it: {text}" if who is not None else text
