"""An example executor: a state machine that runs as its own process.

The node hands committed entries to it over JSON-RPC (see
:mod:`leeky_twisted.statemachine.remote` for the client side and
``docs/executor.md`` for the protocol). This package holds the example
server, a small file-metadata service in the spirit of the original Leeky
Raft's ``ADD f`` / ``READ f`` / ``DELETE f`` log:

- :mod:`~leeky_twisted.executor.filemeta`: the deterministic state machine.
- :mod:`~leeky_twisted.executor.store`: its durable state and last applied index.
- :mod:`~leeky_twisted.executor.server`: the JSON-RPC resource.
- :mod:`~leeky_twisted.protocol.executor_wire`: what both ends share (methods, codes, codecs).
- :mod:`~leeky_twisted.executor.tap`: ``python -m leeky_twisted.executor`` and
  ``twistd -n leekyexecutor``.
"""
