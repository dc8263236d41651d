"""Test helper: one AMP Append call with an explicit session; prints JSON and exits.

Usage: amp_append.py HOST:PORT KEY SUFFIX SESSION_ID|- SEQ TIMEOUT
Prints {"length": N} on success, {"error": "..."} otherwise, {"timeout": true} on timeout.

Or: amp_append.py HOST:PORT register   (prints {"session": ID}, a new session)
"""

import json
import sys

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols import amp

from leeky_twisted.protocol import commands as cc


async def main(reactor, address, key, suffix=None, client_id=None, seq=None, timeout=None):
    host, _, port = address.rpartition(":")
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), amp.AMP())
    if key == "register":
        answer = await proto.callRemote(cc.RegisterSession)
        print(json.dumps({"session": answer["session"]}), flush=True)
        proto.transport.abortConnection()
        return
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
