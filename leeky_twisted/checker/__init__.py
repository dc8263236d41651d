"""Judge recorded client histories: a linearizability checker for a key-value register.

:mod:`leeky_twisted.checker.history` defines the operations of a history and
their JSON-lines form; :mod:`leeky_twisted.checker.linearizability` decides
whether a history is linearizable. Both are pure: no clock, no I/O.
"""

from leeky_twisted.checker.history import Operation, OpKind, Outcome
from leeky_twisted.checker.linearizability import CheckResult, Verdict, check_history

__all__ = ["CheckResult", "OpKind", "Operation", "Outcome", "Verdict", "check_history"]
