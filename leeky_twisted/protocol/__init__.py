"""What both ends of a connection share, and nothing else.

- :mod:`~leeky_twisted.protocol.errors`: the errors a client sees, and their wire codes.
- :mod:`~leeky_twisted.protocol.commands`: the AMP client commands.
- :mod:`~leeky_twisted.protocol.ampframes`: AMP framing helpers (split boxes, quiet AMP).
- :mod:`~leeky_twisted.protocol.jsonrpc`: the one JSON-RPC 2.0 dispatcher (client API, executor).
- :mod:`~leeky_twisted.protocol.jsonrpc_codes`: JSON-RPC 2.0 error codes.
- :mod:`~leeky_twisted.protocol.executor_wire`: the node <-> executor JSON-RPC wire.
- :mod:`~leeky_twisted.protocol.connection`: addresses, connecting, pooled AMP calls.
- :mod:`~leeky_twisted.protocol.kvresults`: the key-value results as both ends read them.
"""
