"""Fault injection: a Raft cluster in network namespaces, a nemesis, recorded clients.

* :mod:`leeky_twisted.chaos.netns`: namespaces, bridge, node processes, network faults;
* :mod:`leeky_twisted.chaos.nemesis`: partitions, loss and delay, kills, pauses, on a schedule;
* :mod:`leeky_twisted.chaos.hostile` and :mod:`~leeky_twisted.chaos.attacks`: an attacker's
  namespace sending forged gossip, huge-term peer messages, connection floods, slow clients;
* :mod:`leeky_twisted.chaos.workload`: concurrent clients that record a history;
* :mod:`leeky_twisted.chaos.runner`: :func:`run_chaos` and :func:`run_verify`.

``python -m leeky_twisted.chaos --help`` runs it from the command line (as root).
See docs/testing-under-faults.md.
"""

from leeky_twisted.chaos.runner import ChaosReport, run_chaos, run_verify

__all__ = ["ChaosReport", "run_chaos", "run_verify"]
