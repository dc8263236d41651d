"""Test helper: one AMP Append call with an explicit session; prints JSON and exits.

Usage: amp_append.py HOST:PORT KEY SUFFIX CLIENT_ID|- SEQ TIMEOUT
Prints {"length": N} on success, {"error": "..."} otherwise, {"timeout": true} on timeout.
"""

import json
import sys

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import amp

from leeky_twisted.api import client_commands as cc


async def main(reactor, address, key, suffix, client_id, seq, timeout):
    host, _, port = address.rpartition(":")
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), amp.AMP())
    args = {"key": key, "suffix": suffix}
    if client_id != "-":
        args.update(client_id=client_id, seq=int(seq), ack=int(seq))
    d = proto.callRemote(cc.Append, **args)
    out = {}
    d.addCallbacks(
        lambda r: out.update(length=r["length"]), lambda f: out.update(error=str(f.value))
    )
    waited = 0.0
    while not out and waited < float(timeout):
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
    print(json.dumps(out or {"timeout": True}), flush=True)
    proto.transport.abortConnection()


if __name__ == "__main__":
    task.react(lambda r: Deferred.fromCoroutine(main(r, *sys.argv[1:])))
