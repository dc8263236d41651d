"""The ``leekyraft`` command: a client of a Leeky Raft cluster.

Parsing (:func:`build_parser`), running a command against a client
(:func:`run_command`) and formatting (``format_*``) are plain functions, so
they are tested without a reactor; only :func:`main` runs one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ProcessExitedAlready

from leeky_twisted.client.library import (
    DEFAULT_ATTEMPT_TIMEOUT,
    Address,
    NodeReport,
    NoLeader,
    NoLeaderOutcomeUnknown,
    parse_address,
)
from leeky_twisted.ops.localcontrol import ACTIONS
from leeky_twisted.protocol.commands import MAX_LEASE_TTL, MAX_RANGE_LIMIT
from leeky_twisted.protocol.commands import MAX_SEQ as MAX_ID
from leeky_twisted.protocol.errors import (
    CommitTimeout,
    Compacted,
    InvalidRequest,
    LeekyError,
    Removed,
    Unavailable,
)
from leeky_twisted.protocol.txndoc import check_txn_document

__all__ = [
    "CLUSTER_ENV",
    "DEFAULT_CLUSTER",
    "EXIT_CODES_HELP",
    "TLS_DIR_ENV",
    "TLS_NAME_ENV",
    "build_parser",
    "check_args",
    "exit_code_for",
    "format_put",
    "format_status_json",
    "format_status_table",
    "main",
    "parse_cluster",
    "run_certs",
    "run_command",
    "tls_from",
]

#: The client (AMP) addresses of the cluster ``leekyraft local`` starts by default.
DEFAULT_CLUSTER = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005"
CLUSTER_ENV = "LEEKYRAFT_CLUSTER"
#: printed under an error that says no node listens where the client looked
UNREACHABLE_HINT = (
    "leekyraft: is the cluster running, and are these its AMP client ports? Start one "
    f"with `leekyraft local`, or name its nodes with --cluster HOST:PORT,... or ${CLUSTER_ENV}."
)
#: printed under an error that says no node knows a leader
NO_LEADER_HINT = (
    "leekyraft: `leekyraft status` shows which nodes are up; a leader is elected, and "
    "writes work again, once a majority of the voters are up and reach each other."
)
TLS_DIR_ENV = "LEEKYRAFT_TLS_DIR"
TLS_NAME_ENV = "LEEKYRAFT_TLS_NAME"
DEFAULT_TIMEOUT = 10.0
#: ``leekyraft local``'s data folder, and the cluster the other commands use by
#: default when it holds one (see :func:`cluster_from`).
LOCAL_DIR = "leekyraft-local"
DEFAULT_LOCAL_NODES = 5

EXIT_OK = 0
EXIT_ERROR = 1  #: any other error
EXIT_NOT_FOUND = 2  #: get/delete: no such key
EXIT_UNREACHABLE = 3  #: no node of the cluster could be reached
EXIT_TIMEOUT = 4  #: timed out, outcome unknown
EXIT_REFUSED = 5  #: the cluster refused the input (key/value too large, ...), or removed the node
EXIT_CAS_FAILED = 6  #: cas: the current value differed; txn: a compare failed
EXIT_NO_LEADER = 7  #: nodes answered, but none knew a leader; nothing was applied
EXIT_USAGE = 64  #: bad command line or bad input (sysexits EX_USAGE)
EXIT_NO_INPUT = 66  #: an input file cannot be read (sysexits EX_NOINPUT)

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}   success
  {EXIT_ERROR}   other error
  {EXIT_NOT_FOUND}   key not found (get, delete, lease revoke)
  {EXIT_UNREACHABLE}   cluster unreachable: no node answered; nothing was applied
      (status: some node of the cluster did not answer; the table shows every node)
  {EXIT_TIMEOUT}   timed out, outcome unknown: a write may or may not have been applied
      (lock --timeout: the lock was still held; COMMAND did not run)
  {EXIT_REFUSED}   input refused by the cluster (e.g. key or value too large), or every
      node given was removed from the cluster (use another node)
  {EXIT_CAS_FAILED}   cas: the current value differed; txn: the failure branch ran
  {EXIT_NO_LEADER}   no leader: nodes answered but none knew a leader (the cluster has
      lost its majority, or is electing one); nothing was applied
  {EXIT_USAGE}  bad command line or bad input (checked before anything is sent)
  {EXIT_NO_INPUT}  an input file (put --file, txn FILE, TLS files) cannot be read

The cluster is --cluster HOST:PORT,... or ${CLUSTER_ENV} (the nodes' AMP client
addresses); by default the local cluster recorded in ./{LOCAL_DIR} (its real
size and ports), else {DEFAULT_CLUSTER}

With mutual TLS: --tls-dir DIR --tls-name NAME (or ${TLS_DIR_ENV}, ${TLS_NAME_ENV})
use DIR/ca.pem and DIR/client-NAME.pem/.key, as `leekyraft certs` writes them.
"""


class InputFileError(Exception):
    """An input file named on the command line cannot be read (exit EXIT_NO_INPUT)."""


def cannot_read(path: str, error: OSError) -> InputFileError:
    """Return the InputFileError of ``path``: its name and the system's reason, no errno."""
    reason = error.strerror or str(error)
    return InputFileError(f"cannot read {path}: {reason}")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit with EXIT_USAGE (2 means "not found")."""

    def error(self, message: str) -> NoReturn:
        """Print usage and ``message`` to stderr; exit with EXIT_USAGE."""
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class _Given(argparse._StoreAction):
    """Store the option's value, and note that it was given (``<dest>_given``): a default
    that means "not given" is then told apart from the same value given."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


class KeyValueClient(Protocol):
    """What the commands need of a client (``library.LeekyClient`` provides it)."""

    def put(self, key: str, value: str) -> Any: ...
    def get(self, key: str, stale: bool = False) -> Any: ...
    def delete(self, key: str) -> Any: ...
    def cas(self, key: str, expected: str | None, new: str) -> Any: ...
    def status_all(self) -> Any: ...


def parse_cluster(text: str) -> list[Address]:
    """Parse ``HOST:PORT,HOST:PORT,...``; raise ValueError when malformed or empty.

    A URL (``http://host:port``, as etcdctl's --endpoints takes) is refused with
    what to give instead: the node's AMP client address, not a URL.
    """
    for part in text.split(","):
        scheme, sep, rest = part.strip().partition("://")
        if sep:
            raise ValueError(
                f"{part.strip()!r} is a URL: give HOST:PORT without {scheme}://, "
                f"the node's AMP client port (its HTTP port serves only JSON-RPC and "
                f"the dashboard), e.g. {rest.rstrip('/') or 'HOST:PORT'}"
            )
    addresses = [parse_address(part) for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError("the cluster list is empty")
    return addresses


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``leekyraft`` command line."""
    parser = _Parser(
        prog="leekyraft",
        description="Talk to a Leeky Raft cluster: a replicated key-value store.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cluster",
        metavar="HOST:PORT,...",
        help=f"the nodes' AMP client addresses (default: ${CLUSTER_ENV} or the local cluster)",
    )
    parser.add_argument(
        "--timeout",
        action=_Given,  # `lock` bounds its wait only when --timeout is given
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long, retries included (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--attempt-timeout",
        type=float,
        default=DEFAULT_ATTEMPT_TIMEOUT,
        metavar="SECONDS",
        help="what one node may cost: the time to connect, then the longest silence of a "
        "connected node before the next node is tried (a paused or unreachable node); "
        f"default {DEFAULT_ATTEMPT_TIMEOUT:g}",
    )
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help=f"connect with mutual TLS: DIR holds ca.pem and client-NAME.pem/.key "
        f"(default: ${TLS_DIR_ENV}; none: plaintext)",
    )
    parser.add_argument(
        "--tls-name",
        metavar="NAME",
        help=f"the client certificate to present, client-NAME.pem (default: ${TLS_NAME_ENV}, "
        "or the only client certificate in the TLS folder)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "put",
        help="set KEY to the VALUE words joined by spaces (- or --file F: read it)",
        description="Set KEY to the VALUE words joined by spaces. With a single - the "
        "value is read from standard input, with --file F from the file F, byte for "
        "byte (a trailing newline included; values are UTF-8 text).",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE", nargs="*")
    p.add_argument("--file", metavar="F", help="read the value from the file F")
    p.add_argument("--lease", type=int, default=None, metavar="ID", help="attach KEY to lease ID")

    p = sub.add_parser(
        "lease",
        help="leases: grant TTL, keepalive ID, revoke ID, ttl ID",
        description="grant TTL prints a new lease's id; keepalive ID renews it every "
        "TTL/3 seconds until Ctrl-C (--once: one renewal); revoke ID ends it and deletes "
        "its keys; ttl ID prints its ttl, remaining seconds and keys as JSON.",
    )
    p.add_argument("action", choices=("grant", "keepalive", "revoke", "ttl"))
    p.add_argument("number", metavar="TTL|ID", type=int)
    p.add_argument("--once", action="store_true", help="keepalive: renew once and exit")

    p = sub.add_parser(
        "get",
        help="print the value of KEY (--prefix: every key starting with KEY, and its value)",
        description="Print the value of KEY. With --prefix, print every key that starts "
        "with KEY and its value, a line each, sorted. With --json, print the key (or the "
        "range) with its revisions as JSON.",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument(
        "--stale", action="store_true", help="read from any node, possibly outdated (faster)"
    )
    p.add_argument("--prefix", action="store_true", help="KEY is a prefix: print every match")
    p.add_argument("--limit", type=int, default=0, help="with --prefix: at most N keys")
    p.add_argument("--json", action="store_true", help="print JSON with the revisions")

    p = sub.add_parser(
        "ls",
        help="list the keys that start with PREFIX (sorted; default: every key)",
    )
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    p.add_argument("--limit", type=int, default=0, help="at most N keys")
    p.add_argument("--count", action="store_true", help="print only how many keys match")
    p.add_argument("--stale", action="store_true", help="read from any node, possibly outdated")

    p = sub.add_parser(
        "lock",
        help="run COMMAND while holding the lock NAME (without COMMAND: hold it until Ctrl-C)",
        description="Wait for the lock NAME (no polling: each waiter watches the one before "
        "it), then run COMMAND with LEEKYRAFT_LOCK_TOKEN (the fencing token: the lock key's "
        "create revision, growing with every holder) and LEEKYRAFT_LOCK_KEY in its "
        "environment, release the lock, and exit with COMMAND's exit code. The lock lives on "
        "a lease kept alive every TTL/3 s; if the lease is lost, COMMAND is terminated. "
        "With --timeout SECONDS (before --), give up waiting after that long: exit 4, "
        "COMMAND not run, this waiter's place in the queue withdrawn; without it, wait "
        "as long as the lock is held.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--ttl", type=int, default=10, help="lease ttl in seconds (default 10)")
    p.add_argument("program", metavar="-- COMMAND", nargs=argparse.REMAINDER)

    p = sub.add_parser(
        "elect",
        help="campaign in election NAME with PROPOSAL (without: print each new leader)",
        description="With PROPOSAL: wait to become the leader of NAME, print "
        "'elected: PROPOSAL' and lead until Ctrl-C (resigning then). Without: print the "
        "leader's proposal each time it changes, until Ctrl-C.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("proposal", metavar="PROPOSAL", nargs="?")
    p.add_argument("--ttl", type=int, default=10, help="lease ttl in seconds (default 10)")

    p = sub.add_parser(
        "watch",
        help="print each change of KEY (or of every key under --prefix) as it happens",
        description="Print one line per change, REVISION PUT KEY VALUE or REVISION DELETE "
        "KEY, in revision order, until Ctrl-C. The watch moves to another node when its "
        "node fails and resumes after the last revision printed: nothing is missed or "
        "printed twice. --from REV starts at an older revision (while nodes hold it).",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("--prefix", action="store_true", help="KEY is a prefix: every key under it")
    p.add_argument("--from", dest="from_revision", type=int, default=None, metavar="REV")
    p.add_argument("--json", action="store_true", help="print each event as a JSON line")

    p = sub.add_parser(
        "txn",
        help="run a transaction read as JSON from FILE or standard input (one log entry)",
        description="Run the transaction in FILE (default -: standard input), a JSON "
        'object {"compare": [...], "success": [...], "failure": [...]}: if every compare '
        "holds, the success operations apply, else the failure ones, atomically. Prints "
        "the result as JSON; exits 6 when the failure branch ran. A put operation may carry "
        '"lease": ID to attach its key to a lease. See docs/coordination.md.',
    )
    p.add_argument("file", metavar="FILE", nargs="?", default="-")

    p = sub.add_parser("delete", help="remove KEY")
    p.add_argument("key", metavar="KEY")

    p = sub.add_parser(
        "cas",
        help="compare-and-set: cas KEY EXPECTED NEW, or cas --absent KEY NEW",
        description="Set KEY to NEW only if it holds EXPECTED (with --absent: only if unset).",
    )
    p.add_argument("key", metavar="KEY")
    p.add_argument("values", metavar="EXPECTED NEW", nargs="+")
    p.add_argument("--absent", action="store_true", help="expect KEY to be unset")

    p = sub.add_parser("status", help="show every node: role, term, commit and applied index")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="SECONDS",
        help="refresh the table every SECONDS (default 1) until Ctrl-C",
    )
    p.add_argument("--count", type=int, default=None, help="with --watch: stop after N tables")

    p = sub.add_parser(
        "submit",
        help="replicate a raw entry, as the original's client did (PUT k v, or ADD f for "
        "the example executor); prints the result as JSON",
    )
    p.add_argument("entry", metavar="WORD", nargs="+")

    p = sub.add_parser(
        "query",
        help="a linearizable read-only request (GET k, or READ f); prints the answer as JSON",
        description="Send the WORDs joined by spaces as a raw read-only request and print "
        "the answer as JSON (null: nothing there). The queries are the state machine's: "
        "the key-value store answers GET KEY; the example executor (--executor-url) answers "
        "READ NAME and LIST. A query the cluster does not know exits 64.",
    )
    p.add_argument("request", metavar="WORD", nargs="+")

    p = sub.add_parser(
        "members",
        help="every node: Raft role, whether it answers the leader, gossip state, addresses",
        description="List every member as the leader sees it: its Raft role, CONTACT "
        "(ok, or UNREACHABLE for N s: how long the leader has not heard from it), its "
        "gossip state and incarnation, and its addresses. Without a leader, the answering "
        "node's view is shown, and says so.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("add-server", help="add a node (as voter unless --learner)")
    p.add_argument("node_id", metavar="ID")
    p.add_argument("address", metavar="HOST:PORT", nargs="?", help="its peer (Raft) address")
    p.add_argument("--learner", action="store_true", help="add as a non-voting learner")

    p = sub.add_parser("remove-server", help="remove a node from the configuration")
    p.add_argument("node_id", metavar="ID")

    p = sub.add_parser("transfer-leader", help="hand leadership to the voter ID")
    p.add_argument("node_id", metavar="ID")

    sub.add_parser(
        "chaos",
        add_help=False,
        help="run a local cluster in network namespaces under faults and check linearizability "
        "(as root; see `leekyraft chaos --help`)",
    )
    sub.add_parser(
        "verify",
        add_help=False,
        help="run a recorded workload against a running cluster and check linearizability "
        "(see `leekyraft verify --help`)",
    )

    p = sub.add_parser(
        "bench",
        help="measure the cluster: throughput and latency percentiles",
        description="Run a bounded benchmark (ops and time) with concurrent clients.",
    )
    p.add_argument("--workload", choices=("put", "get"), default="put")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--ops", type=int, default=5000, help="operations in all (default 5000)")
    p.add_argument("--seconds", type=float, default=30.0, help="time limit (default 30)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys written (default 1000)")
    p.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw latency over time and a latency histogram into FILE (.png or .svg; "
        "needs matplotlib: pip install 'leeky-twisted[plots]')",
    )

    p = sub.add_parser(
        "certs",
        help="create a development CA and node/client certificates for mutual TLS",
        description=(
            "Create DIR/ca.pem and ca.key (unless DIR already holds a CA), then "
            "node-ID.pem/.key for each --nodes id and client-NAME.pem/.key for each "
            "--clients name. Existing certificates are kept unless --force. Start nodes "
            "with `twistd leekyraft --tls-dir DIR`, and clients with --tls-dir DIR "
            "--tls-name NAME. Keep ca.key offline: it can issue any certificate."
        ),
    )
    p.add_argument("--dir", required=True, help="folder for the CA and the certificates")
    p.add_argument("--nodes", default="", metavar="ID,...", help="node ids, e.g. 1,2,3")
    p.add_argument("--clients", default="", metavar="NAME,...", help="client names, e.g. alice")
    p.add_argument(
        "--hosts",
        default="localhost,127.0.0.1,::1",
        metavar="HOST,...",
        help="names and IP addresses added to every node certificate, for tools that "
        "check them (curl, browsers); default localhost,127.0.0.1,::1",
    )
    p.add_argument("--force", action="store_true", help="reissue certificates that exist")

    p = sub.add_parser(
        "keygen",
        help="create a cluster key file (mode 0600) for a static --peers cluster",
        description=(
            "Write a new random cluster key (32 bytes as hex, mode 0600) to FILE, which must "
            "not exist. Give the same file to every node with `twistd leekyraft "
            "--gossip-key-file FILE`: only its holders then get past the peer Hello. "
            "(--bootstrap and `leekyraft local` make their key by themselves.)"
        ),
    )
    p.add_argument("file", metavar="FILE", help="where to write the key")

    add_local_parser(sub)
    _accept_connection_options_after_the_command(parser, sub)
    return parser


#: commands that talk to no running cluster: the connection options mean nothing to them
_NO_CLUSTER_COMMANDS = frozenset({"local", "certs", "keygen", "chaos"})


def _accept_connection_options_after_the_command(parser: argparse.ArgumentParser, sub: Any) -> None:
    """Let ``--cluster``, ``--timeout`` and the TLS options follow the command too.

    ``leekyraft get k --cluster H:P`` means what ``leekyraft --cluster H:P get k``
    does (etcdctl takes its flags anywhere). Given after the command, an option
    wins; not given there, the value before the command (or its default) stands.
    """
    common = [
        a
        for a in parser._actions
        if a.option_strings
        and a.dest in ("cluster", "timeout", "attempt_timeout", "tls_dir", "tls_name")
    ]
    for name, command in sub.choices.items():
        if name in _NO_CLUSTER_COMMANDS:
            continue
        taken = set(command._option_string_actions)
        for action in common:
            if taken.intersection(action.option_strings):
                continue
            command.add_argument(
                *action.option_strings,
                action=type(action),
                dest=action.dest,
                type=action.type,
                metavar=action.metavar,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )


def run_keygen(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``leekyraft keygen FILE``: write a new cluster key; never overwrite one."""
    from leeky_twisted.security.clusterkey import create_key_file

    path: str = args.file
    if os.path.lexists(path):
        print(f"leekyraft: keygen: {path} exists; not overwritten", file=err)
        return EXIT_ERROR
    try:
        create_key_file(path)
    except OSError as e:
        print(f"leekyraft: keygen: {e}", file=err)
        return EXIT_ERROR
    print(
        f"created the cluster key {path} (mode 0600): give it to every node with "
        f"--gossip-key-file {path}",
        file=out,
    )
    return EXIT_OK


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def run_certs(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``leekyraft certs``: make the CA if absent, then the requested certificates."""
    from leeky_twisted.security.certs import make_client_cert, make_dev_ca, make_node_cert

    directory: str = args.dir
    hosts = _names(args.hosts)
    try:
        if os.path.exists(os.path.join(directory, "ca.pem")):
            print(f"using the CA in {directory}", file=out)
        else:
            made = make_dev_ca(directory)
            print(f"created CA {made.cert} (keep {made.key} offline)", file=out)
        issued = [("node", n, f"node-{n}") for n in _names(args.nodes)]
        issued += [("client", c, f"client-{c}") for c in _names(args.clients)]
        for kind, name, stem in issued:
            cert = os.path.join(directory, f"{stem}.pem")
            if os.path.exists(cert) and not args.force:
                print(f"kept {cert}", file=out)
                continue
            if kind == "node":
                files = make_node_cert(directory, name, hosts)
            else:
                files = make_client_cert(directory, name)
            print(f"created {kind} certificate {files.cert} and key {files.key}", file=out)
    except (OSError, ValueError) as e:
        print(f"leekyraft: certs: {e}", file=err)
        return EXIT_ERROR
    return EXIT_OK


def tls_from(args: argparse.Namespace, environ: dict[str, str]) -> tuple[str, str] | None:
    """Return (folder, client name) for TLS from the options or environment, or None.

    Without a name, the folder's only ``client-*.pem`` is used. Raises
    ValueError when a name is given without a folder, or none can be chosen.
    """
    directory = args.tls_dir or environ.get(TLS_DIR_ENV) or None
    name = args.tls_name or environ.get(TLS_NAME_ENV) or None
    if directory is None:
        if name is not None:
            raise ValueError("--tls-name needs --tls-dir")
        return None
    if name is None:
        try:
            found = sorted(
                f[len("client-") : -len(".pem")]
                for f in os.listdir(directory)
                if f.startswith("client-") and f.endswith(".pem")
            )
        except OSError as e:
            raise cannot_read(f"--tls-dir {directory}", e) from None
        if len(found) != 1:
            which = ", ".join(found) if found else "none"
            raise ValueError(
                f"give --tls-name: {directory} holds {len(found)} client certificates ({which})"
            )
        name = found[0]
    return directory, name


# ------------------------------------------------------------------------------------------
# `leekyraft local --nodes N`: owned by the lead (issue #4). Register its parser in
# add_local_parser and run it in run_local; main() calls run_local without a reactor.


def add_local_parser(subparsers: Any) -> None:
    """Register the ``local`` subcommand."""
    p = subparsers.add_parser(
        "local",
        help="run a whole cluster on this machine until Ctrl-C; kill, pause, resume or "
        "restart its nodes from another terminal",
        description=(
            "Start N `twistd -n leekyraft` nodes on 127.0.0.1 (client ports 7001.., peer "
            "ports 7101.., HTTP ports 7201..), wait for a leader, and keep them running: a "
            "node that dies is reported, the others go on, leader changes are shown. "
            "Ctrl-C or SIGTERM stops every node. Running it again on the same folder "
            "resumes the same cluster with its data. From another terminal, `leekyraft "
            "local kill N` (SIGKILL), `pause N` (SIGSTOP), `resume N` (SIGCONT) and "
            "`restart N` act on node N (or on `leader`) through the running command."
        ),
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=ACTIONS,
        metavar="ACTION",
        help="with a running `leekyraft local`: " + ", ".join(ACTIONS) + " node N",
    )
    p.add_argument("node", nargs="?", metavar="N", help="a node id, or `leader`")
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        help=f"number of nodes (default: the folder's cluster, else {DEFAULT_LOCAL_NODES})",
    )
    p.add_argument("--dir", default=LOCAL_DIR, help=f"data folder (default ./{LOCAL_DIR})")
    p.add_argument("--base-port", type=int, default=7000, help="ports start after this")
    p.add_argument(
        "--node-arg",
        action="append",
        default=[],
        help="extra option passed to every node (repeatable), e.g. --node-arg=--tick=0.02",
    )


def run_local_action(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run ``leekyraft local ACTION N``: ask the running supervisor; return the exit code."""
    from leeky_twisted.ops.localcontrol import NoSupervisor, send_request

    if args.node is None:
        print(f"leekyraft: local {args.action} needs a node id (or `leader`)", file=err)
        return EXIT_USAGE
    try:
        reply = send_request(args.dir, args.action, args.node)
    except NoSupervisor as e:
        print(f"leekyraft: {e}", file=err)
        return EXIT_UNREACHABLE
    except (OSError, ValueError) as e:
        print(f"leekyraft: local {args.action}: {e}", file=err)
        return EXIT_ERROR
    if reply.get("ok"):
        print(reply.get("message", "done"), file=out)
        return EXIT_OK
    print(f"leekyraft: local {args.action}: {reply.get('error')}", file=err)
    return {"unknown-node": EXIT_USAGE, "no-leader": EXIT_NO_LEADER}.get(
        str(reply.get("kind")), EXIT_ERROR
    )


def run_local(args: argparse.Namespace) -> int:
    """Run ``leekyraft local`` (the supervisor) or ``local ACTION N``; return the exit code."""
    import signal
    import time
    from pathlib import Path

    from leeky_twisted.ops.localcluster import (
        ClusterSizeMismatch,
        LocalCluster,
        Supervisor,
        saved_layout,
    )
    from leeky_twisted.ops.localcontrol import AlreadyRunning, ControlServer, SocketPathTooLong

    if args.action is not None:
        return run_local_action(args, sys.stdout, sys.stderr)
    if args.node is not None:
        print(
            f"leekyraft: local takes an action before {args.node!r}: {', '.join(ACTIONS)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        saved = saved_layout(args.dir)
        nodes = args.nodes or (len(saved) if saved else DEFAULT_LOCAL_NODES)
        if not 1 <= nodes <= 9 or nodes == 2:
            print(
                "leekyraft: --nodes must be 1 or 3 to 9 (a new two-node cluster can never "
                "elect a leader: docs/running.md)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        cluster = LocalCluster(Path(args.dir), nodes, args.node_arg, base_port=args.base_port)
        control: ControlServer | None = ControlServer(cluster.root)
    except AlreadyRunning as e:
        print(f"leekyraft: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ClusterSizeMismatch as e:
        print(f"leekyraft: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SocketPathTooLong as e:
        print(
            f"leekyraft: warning: {e}; `leekyraft local kill|pause|resume|restart` "
            "will not reach this cluster",
            file=sys.stderr,
        )
        control = None
    except (OSError, ValueError) as e:
        print(f"leekyraft: {e}", file=sys.stderr)
        return EXIT_ERROR

    def say(text: str) -> None:
        print(text, flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Started in the background by a script, SIGINT arrives ignored: take it anyway.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    supervisor = Supervisor(cluster, say)
    try:
        cluster.start()
        count = len(cluster.nodes)
        say(f"started {count} node{'' if count == 1 else 's'}; data in {cluster.root}")
        for n in cluster.nodes:
            say(
                f"  node {n.node_id}: client 127.0.0.1:{n.client_port}  "
                f"http 127.0.0.1:{n.http_port}  peer 127.0.0.1:{n.peer_port}  log {n.log_path}"
            )
        leader = cluster.wait_for_leader(timeout=30)
        supervisor.leader_id = leader.node_id
        clients = ",".join(f"127.0.0.1:{n.client_port}" for n in cluster.nodes)
        say(f"leader: node {leader.node_id}")
        say(f"dashboard: http://127.0.0.1:{cluster.nodes[0].http_port}/  (every node's HTTP port)")
        if clients != DEFAULT_CLUSTER:
            say(f"export {CLUSTER_ENV}={clients}")
        dir_arg = "" if args.dir == LOCAL_DIR else f" --dir {args.dir}"
        say("try:  leekyraft put pizzatoppings peporoni peppr cheddar anchoves onn it")
        say("      leekyraft get pizzatoppings; leekyraft status")
        say(f"      leekyraft local kill leader{dir_arg}   (then: restart N, pause N, resume N)")
        say("Ctrl-C stops the cluster.")
        while True:
            if control is not None:
                control.serve(0.5, supervisor.handle)
            else:
                time.sleep(0.5)  # noqa: TID251 - a foreground CLI polling its cluster
            supervisor.watch()
    except KeyboardInterrupt:
        say("stopping...")
        return EXIT_OK
    except (TimeoutError, RuntimeError) as e:
        print(f"leekyraft: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        # A second Ctrl-C must not interrupt the shutdown and leave nodes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if control is not None:
            control.close()
        cluster.stop()


# ------------------------------------------------------------------------------------------


def local_cluster_in(folder: str) -> str | None:
    """Return the client addresses of the local cluster recorded in ``folder``, or None."""
    from leeky_twisted.ops.localcluster import saved_layout

    try:
        nodes = saved_layout(folder)
    except (OSError, ValueError):
        return None
    if not nodes:
        return None
    return ",".join(f"127.0.0.1:{int(n['client'])}" for n in nodes)


def cluster_from(
    args: argparse.Namespace, environ: dict[str, str], local_dir: str = LOCAL_DIR
) -> list[Address]:
    """Return the cluster from --cluster, else the environment, else the local cluster.

    The local cluster is the one ``leekyraft local`` recorded in ``./leekyraft-local``
    (its real size and ports), else DEFAULT_CLUSTER.
    """
    text = (
        args.cluster or environ.get(CLUSTER_ENV) or local_cluster_in(local_dir) or DEFAULT_CLUSTER
    )
    return parse_cluster(text)


#: The most characters of a value the success line of put echoes.
MAX_ECHO = 80


def format_put(key: str, value: str) -> str:
    """Return the original's success line for a put.

    A value longer than MAX_ECHO characters is cut there, with an ellipsis
    and its size in bytes: a 1 MiB value is not echoed back in full.
    """
    if len(value) > MAX_ECHO:
        size = len(value.encode("utf-8", "surrogateescape"))
        return f'Success! Set "{key}" to: "{value[:MAX_ECHO]}…" ({size} bytes)'
    return f'Success! Set "{key}" to: "{value}"'


def put_value(args: argparse.Namespace, stdin: IO[bytes], err: IO[str] | None = None) -> str:
    """Return the value of a put: the VALUE words, standard input (``-``) or ``--file``.

    Reading a terminal, it first tells ``err`` how to end the value.
    Raises ValueError on a bad combination or a value that is not UTF-8,
    OSError when the file cannot be read.
    """
    words: list[str] = args.value
    if args.file is not None:
        if words:
            raise ValueError("put takes VALUE words or --file F, not both")
        with open(args.file, "rb") as f:
            data = f.read()
        where = args.file
    elif words == ["-"]:
        if err is not None and stdin.isatty():
            print("leekyraft: reading the value from the terminal; end it with Ctrl-D", file=err)
        data = stdin.read()
        where = "standard input"
    elif words:
        return " ".join(words)
    else:
        raise ValueError("put needs a VALUE (or - for standard input, or --file F)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the value read from {where} is not UTF-8 text") from None


#: What status adds, without a leader, about nodes that started on empty storage.
ABSTAINING_NOTE = (
    "leekyraft: node {nodes} started with empty storage (a new or wiped data folder): until "
    "a leader has caught it up it does not count toward the majority an election needs. "
    "If the other voters up are not a majority without it, the cluster has lost its quorum: "
    "put that node's old data folder back if you still have it, or see docs/running.md, "
    "'Recovering from a lost quorum'"
)

_COLUMNS = ("ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER", "REVISION")


def _row(report: NodeReport) -> tuple[str, ...]:
    st = report.status
    if st is None:
        return ("?", report.address, "unreachable", "-", "-", "-", "-", "-")

    def field(name: str) -> str:
        value = st.get(name)
        return "-" if value is None else str(value)

    return (
        field("id"),
        report.address,
        field("role"),
        field("term"),
        field("commit_index"),
        field("applied_index"),
        field("leader"),
        field("revision"),
    )


def format_status_table(reports: Sequence[NodeReport]) -> str:
    """Return one aligned row per node, with a header; unreachable nodes say so."""
    rows = [_COLUMNS, *(_row(r) for r in reports)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    errors = [f"{r.address}: {r.error}" for r in reports if r.status is None and r.error]
    errors += [_executor_down(r.address, r.status) for r in reports if _executor_is_down(r)]
    return "\n".join(line.rstrip() for line in lines + errors)


def _executor_is_down(report: NodeReport) -> bool:
    return report.status is not None and report.status.get("executor_reachable") is False


def _executor_down(address: str, st: dict[str, Any]) -> str:
    """Return the line that says a node's executor does not answer (its row looks healthy)."""
    lag = st.get("executor_lag") or 0
    why = f" ({st['executor_error']})" if st.get("executor_error") else ""
    return (
        f"{address}: node {st.get('id')}'s executor does not answer{why}; "
        f"{lag} committed entries wait for it"
    )


def format_status_json(reports: Sequence[NodeReport]) -> str:
    """Return a JSON array: per node its contacted address and status, or its error."""
    items = [
        {"address": r.address, "status": r.status}
        if r.status is not None
        else {"address": r.address, "error": r.error}
        for r in reports
    ]
    return json.dumps(items, indent=2, sort_keys=True, default=str)


def exit_code_for(error: BaseException) -> int:
    """Return the exit code for a failed command."""
    if isinstance(error, CommitTimeout):
        return EXIT_TIMEOUT
    if isinstance(error, NoLeader):
        return EXIT_NO_LEADER
    if isinstance(error, Unavailable):
        return EXIT_UNREACHABLE
    if isinstance(error, InvalidRequest | Compacted | Removed):
        return EXIT_REFUSED
    return EXIT_ERROR


async def run_command(
    args: argparse.Namespace, client: KeyValueClient, out: IO[str], err: IO[str]
) -> int:
    """Run the parsed command with ``client``; print results; return the exit code."""
    try:
        return await _run(args, client, out, err)
    except LeekyError as e:
        if args.command == "query" and isinstance(e, InvalidRequest):
            # Only the cluster knows its state machine's queries: a refusal is bad input.
            print(f"leekyraft: query: {e}", file=err)
            return EXIT_USAGE
        print(f"leekyraft: {e}", file=err)
        if isinstance(e, Unavailable) and "nothing listens" in str(e):
            print(UNREACHABLE_HINT, file=err)
        if isinstance(e, NoLeader | NoLeaderOutcomeUnknown):
            print(NO_LEADER_HINT, file=err)
        return exit_code_for(e)
    except InputFileError as e:
        print(f"leekyraft: {args.command}: {e}", file=err)
        return EXIT_NO_INPUT
    except ValueError as e:
        print(f"leekyraft: {e}", file=err)
        return EXIT_USAGE


async def _run(args: argparse.Namespace, client: KeyValueClient, out: IO[str], err: IO[str]) -> int:
    command = args.command
    if command == "put":
        if not args.value:
            raise ValueError("put needs a VALUE (or - for standard input, or --file F)")
        value = " ".join(args.value)
        if args.lease is not None:
            await client.put(args.key, value, lease=args.lease)  # type: ignore[call-arg]
        else:
            await client.put(args.key, value)
        print(format_put(args.key, value), file=out)
        return EXIT_OK
    if command == "get" and (args.prefix or args.json):
        return await _get_with_revisions(args, client, out, err)
    if command == "ls":
        result = await client.range(  # type: ignore[attr-defined]
            args.prefix,
            prefix=True,
            limit=args.limit,
            keys_only=True,
            count_only=args.count,
            stale=args.stale,
        )
        if args.count:
            print(result.count, file=out)
        for kv in result.kvs:
            print(kv.key, file=out)
        if result.more and not args.count:
            print(f"leekyraft: {result.count - len(result.kvs)} more keys not shown", file=err)
        return EXIT_OK
    if command == "lease":
        return await _lease(args, client, out, err)
    if command == "lock":
        return await run_locked(args, client, out, err)
    if command == "elect":
        return await run_election(args, client, out, err)
    if command == "watch":

        def show(events: list[Any]) -> None:
            for e in events:
                if args.json:
                    line = json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True)
                elif e.kind == "put":
                    line = f"{e.revision} PUT {e.key} {e.value}"
                else:
                    line = f"{e.revision} DELETE {e.key}"
                print(line, file=out, flush=True)

        watch = client.watch(  # type: ignore[attr-defined]
            args.key, show, prefix=args.prefix, start_revision=args.from_revision
        )
        await watch.done
        return EXIT_OK
    if command == "txn":
        document = read_txn(args.file, sys.stdin)
        done = await client.txn(  # type: ignore[attr-defined]
            document.get("compare", ()), document.get("success", ()), document.get("failure", ())
        )
        print(json.dumps(done.to_json(), ensure_ascii=False, sort_keys=True), file=out)
        return EXIT_OK if done.succeeded else EXIT_CAS_FAILED
    if command == "get":
        found = await client.get(args.key, stale=args.stale)
        if found is None:
            print(f'leekyraft: key "{args.key}" not found', file=err)
            return EXIT_NOT_FOUND
        print(found, file=out)
        return EXIT_OK
    if command == "delete":
        if await client.delete(args.key):
            print(f'Deleted "{args.key}"', file=out)
            return EXIT_OK
        print(f'leekyraft: key "{args.key}" not found', file=err)
        return EXIT_NOT_FOUND
    if command == "cas":
        expected, new = _cas_values(args)
        if await client.cas(args.key, expected, new):
            print(format_put(args.key, new), file=out)
            return EXIT_OK
        wanted = "unset" if expected is None else f'"{expected}"'
        print(f'leekyraft: not set: "{args.key}" was not {wanted}', file=err)
        return EXIT_CAS_FAILED
    if command == "status" and getattr(args, "watch", None):
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        shown = 0
        while args.count is None or shown < args.count:
            if shown:
                await deferLater(reactor, max(args.watch, 0.1), lambda: None)
            reports = await client.status_all()
            table = format_status_json(reports) if args.json else format_status_table(reports)
            clear = "\x1b[H\x1b[2J" if out.isatty() else ""
            print(f"{clear}{table}", file=out, flush=True)
            shown += 1
        return EXIT_OK
    if command == "status":
        reports = await client.status_all()
        print(format_status_json(reports) if args.json else format_status_table(reports), file=out)
        if all(r.status is None for r in reports):
            print("leekyraft: no node of the cluster answered", file=err)
            if any("nothing listens" in (r.error or "") for r in reports):
                print(UNREACHABLE_HINT, file=err)
            return EXIT_UNREACHABLE
        answered = [r.status for r in reports if r.status is not None]
        removed = [str(st.get("id")) for st in answered if st.get("role") == "removed"]
        if removed:
            print(
                f"leekyraft: removed from the cluster: node {', '.join(removed)} (stop it, or "
                "add it back with `leekyraft add-server ID PEER-ADDRESS`)",
                file=err,
            )
        if not any(st.get("leader") not in (None, "", "-") for st in answered):
            print(
                f"leekyraft: no leader: {len(answered)} of {len(reports)} nodes answered, and "
                "none knows a leader (an election needs a majority of the voters up)",
                file=err,
            )
            empty = [str(st.get("id")) for st in answered if st.get("abstaining")]
            if empty:
                print(ABSTAINING_NOTE.format(nodes=", ".join(empty)), file=err)
            return EXIT_NO_LEADER
        silent = [r.address for r in reports if r.status is None]
        if silent:  # the table shows them; the exit code must too (scripts, health checks)
            print(
                f"leekyraft: {len(silent)} of {len(reports)} nodes did not answer: "
                f"{', '.join(silent)}",
                file=err,
            )
            return EXIT_UNREACHABLE
        return EXIT_OK
    if command == "submit":
        result = await client.submit(" ".join(args.entry))  # type: ignore[attr-defined]
        print(json.dumps(result, sort_keys=True), file=out)
        return EXIT_OK
    if command == "query":
        result = await client.query(" ".join(args.request))  # type: ignore[attr-defined]
        print(json.dumps(result, sort_keys=True), file=out)
        return EXIT_OK
    if command == "members":
        members = await client.members_seen_by_leader()  # type: ignore[attr-defined]
        print(format_members(members, args.json), file=out)
        return EXIT_OK
    if command == "add-server":
        await client.add_server(args.node_id, args.address, not args.learner)  # type: ignore[attr-defined]
        kind = "learner" if args.learner else "voter"
        print(f'Added "{args.node_id}" as {kind}', file=out)
        return EXIT_OK
    if command == "remove-server":
        await client.remove_server(args.node_id)  # type: ignore[attr-defined]
        print(f'Removed "{args.node_id}"', file=out)
        return EXIT_OK
    if command == "transfer-leader":
        await client.transfer_leader(args.node_id)  # type: ignore[attr-defined]
        print(f'Leadership transfer to "{args.node_id}" started', file=out)
        return EXIT_OK
    print(f"leekyraft: unknown command {command!r}", file=err)
    return EXIT_USAGE


async def _get_with_revisions(
    args: argparse.Namespace, client: KeyValueClient, out: IO[str], err: IO[str]
) -> int:
    """``get --prefix`` (key and value lines) and ``get --json`` (with revisions)."""
    if args.prefix:
        result = await client.range(  # type: ignore[attr-defined]
            args.key, prefix=True, limit=args.limit, stale=args.stale
        )
        if args.json:
            print(json.dumps(result.to_json(), ensure_ascii=False, sort_keys=True), file=out)
            return EXIT_OK
        for kv in result.kvs:
            print(kv.key, file=out)
            print(kv.value, file=out)
        if result.more:
            print(f"leekyraft: {result.count - len(result.kvs)} more keys not shown", file=err)
        return EXIT_OK
    found = await client.get_kv(args.key, stale=args.stale)  # type: ignore[attr-defined]
    if found is None:
        print(f'leekyraft: key "{args.key}" not found', file=err)
        return EXIT_NOT_FOUND
    print(json.dumps(found.to_json(), ensure_ascii=False, sort_keys=True), file=out)
    return EXIT_OK


async def run_until_signalled(reactor: Any, command: Any) -> int:
    """Run the coroutine ``command``; Ctrl-C or SIGTERM cancels it instead of
    stopping the reactor under it.

    The command sees CancelledError where it waits, so its ``finally`` blocks
    (releasing a lock, revoking the session lease) run with the reactor still
    running, and the exit status is 128 + the signal's number, as a shell
    expects. Returns the command's exit code.
    """
    import signal

    running: Deferred[int] = Deferred.fromCoroutine(command)
    received: list[int] = []

    def on_signal(number: int, frame: Any) -> None:
        received.append(number)
        reactor.callFromThread(running.cancel)

    previous: dict[int, Any] = {}

    def install() -> None:
        # On the reactor's first turn: the reactor installs its own handlers
        # (stop on SIGTERM) as it starts, after the command has begun.
        if not running.called:
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is signal.SIG_IGN:
                    continue  # a background job of a script keeps ignoring Ctrl-C
                previous[number] = signal.signal(number, on_signal)

    reactor.callLater(0, install)
    try:
        return await running
    except CancelledError:
        if not received:
            raise
        return 128 + received[0]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (``| head``): end quietly, as ``cat`` does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 128 + 13  # as if killed by SIGPIPE


def _view(d: Deferred[Any]) -> Deferred[Any]:
    """Return a Deferred that fires as ``d`` does; cancelling it leaves ``d`` running."""
    view: Deferred[Any] = Deferred()

    def relay(result: Any) -> Any:
        if not view.called:
            view.callback(result)
        return result

    d.addBoth(relay)
    return view


#: Starts the lock's command as the leader of a session (and process group) of its
#: own, so that stopping it reaches every process it started, not only the first.
_OWN_SESSION = "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])"


class _CommandGroup:
    """Signals the whole process group of a command started by :func:`spawn_inheriting`."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.group: int | None = transport.pid  #: it leads its group (``_OWN_SESSION``)

    def signalProcess(self, name: str) -> None:
        """Send signal ``name`` ("TERM", "KILL", ...) to every process of the group."""
        import signal

        if self.group is None:
            raise ProcessExitedAlready()
        with contextlib.suppress(ProcessLookupError):  # the whole group has ended
            os.killpg(self.group, getattr(signal, f"SIG{name}"))


def spawn_inheriting(argv: list[str], env: dict[str, str]) -> Deferred[int]:
    """Run ``argv`` with this process's standard streams, in a process group of its own;
    fire with its exit code. The Deferred's ``transport`` signals the whole group."""
    from twisted.internet import protocol, reactor

    done: Deferred[int] = Deferred()

    class _Child(protocol.ProcessProtocol):
        def processEnded(self, reason: Any) -> None:
            code = getattr(reason.value, "exitCode", None)
            signal_number = getattr(reason.value, "signal", None)
            done.callback(code if code is not None else 128 + (signal_number or 0))

    child = _Child()
    trampoline = [sys.executable, "-S", "-c", _OWN_SESSION, *argv]
    try:
        reactor.spawnProcess(  # type: ignore[attr-defined]
            child, sys.executable, trampoline, env=env, childFDs={0: 0, 1: 1, 2: 2}
        )
    except OSError as e:
        raise ValueError(f"cannot run {argv[0]}: {e}") from None
    done.transport = _CommandGroup(child.transport)  # type: ignore[attr-defined]
    return done


async def run_locked(
    args: argparse.Namespace,
    client: Any,
    out: IO[str],
    err: IO[str],
    spawn: Any = spawn_inheriting,
) -> int:
    """``leekyraft lock NAME [-- COMMAND...]``: hold the lock while COMMAND runs."""
    import shutil

    from leeky_twisted.client.recipes import acquire, end_sessions

    program = list(args.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if args.ttl < 1:
        raise ValueError("--ttl must be a positive number of seconds")
    if program and shutil.which(program[0]) is None:
        raise ValueError(f"command not found: {program[0]}")
    acquiring: Deferred[Any] = Deferred.fromCoroutine(acquire(client, args.name, args.ttl))
    expired: list[float] = []
    timer = None
    if getattr(args, "timeout_given", False):  # else: wait as long as the lock is held

        def expire() -> None:
            expired.append(args.timeout)
            acquiring.cancel()  # the acquisition withdraws its queue key as it ends

        timer = client._clock.callLater(args.timeout, expire)
    try:
        lock = await acquiring
    except CancelledError:
        await end_sessions(client)  # our place in the queue goes with the session lease
        if expired:
            print(
                f"leekyraft: lock {args.name} still held after {args.timeout:g} s "
                "(--timeout): not acquired, so the command did not run; this waiter left "
                "the queue",
                file=err,
            )
            return EXIT_TIMEOUT
        raise
    finally:
        if timer is not None and timer.active():
            timer.cancel()
    _release_on_ctrl_c(client, lock)
    try:
        print(f"leekyraft: holding {lock.key} (token {lock.token})", file=err, flush=True)
        if not program:
            print(lock.key, file=out, flush=True)
            reason = await lock.lost  # until Ctrl-C, or the lease is lost
            print(f"leekyraft: lock lost: {reason}", file=err)
            return EXIT_ERROR
        env = {
            **os.environ,
            "LEEKYRAFT_LOCK_TOKEN": str(lock.token),
            "LEEKYRAFT_LOCK_KEY": lock.key,
        }
        ended = spawn([shutil.which(program[0]), *program[1:]], env)

        def lost(reason: str) -> None:
            print(f"leekyraft: lock lost: {reason}; stopping the command", file=err)
            transport = getattr(ended, "transport", None)
            if transport is not None:
                transport.signalProcess("TERM")

        lock.lost.addCallback(lost)
        try:
            code: int = await _view(ended)
        except CancelledError:
            # Signalled: the command must end before the lock is released, or
            # the next holder would run beside it.
            transport = getattr(ended, "transport", None)
            if transport is not None and not ended.called:
                print("leekyraft: stopping the command, then releasing the lock", file=err)
                with contextlib.suppress(ProcessExitedAlready):
                    transport.signalProcess("TERM")
            await _view(ended)
            raise
        return code
    finally:
        try:
            await lock.release()
        finally:
            await end_sessions(client)  # this process is done with its session lease


def _release_on_ctrl_c(client: Any, lock: Any) -> None:
    """Under a real reactor, Ctrl-C releases the lock before the process ends."""
    from twisted.internet.interfaces import IReactorCore

    clock = getattr(client, "_clock", None)
    if IReactorCore.providedBy(clock):
        lock.release_on_shutdown(clock)


async def run_election(args: argparse.Namespace, client: Any, out: IO[str], err: IO[str]) -> int:
    """``leekyraft elect NAME [PROPOSAL]``: campaign and lead, or observe the leaders."""
    from leeky_twisted.client.recipes import campaign, end_sessions, observe

    if args.ttl < 1:
        raise ValueError("--ttl must be a positive number of seconds")
    if args.proposal is None:

        def show(proposal: str | None) -> None:
            print("(no leader)" if proposal is None else proposal, file=out, flush=True)

        watch = await observe(client, args.name, show)
        await watch.done
        return EXIT_OK
    try:
        leadership = await campaign(client, args.name, args.proposal, args.ttl)
    except CancelledError:
        await end_sessions(client)  # our candidacy goes with the session lease
        raise
    _release_on_ctrl_c(client, leadership)
    try:
        print(f"elected: {args.proposal}", file=out, flush=True)
        reason = await leadership.lost  # until Ctrl-C, or the lease is lost
        print(f"leekyraft: leadership lost: {reason}", file=err)
        return EXIT_ERROR
    finally:
        try:
            await leadership.release()
        finally:
            await end_sessions(client)  # this process is done with its session lease


async def _lease(args: argparse.Namespace, client: Any, out: IO[str], err: IO[str]) -> int:
    """``leekyraft lease grant|keepalive|revoke|ttl``."""
    number = args.number
    if args.action == "grant" and not 1 <= number <= MAX_LEASE_TTL:
        raise ValueError(f"lease grant: the ttl is a number of seconds from 1 to {MAX_LEASE_TTL}")
    if not 1 <= number <= MAX_ID:
        raise ValueError(f"lease {args.action}: a lease id is a number from 1 to {MAX_ID}")
    if args.action == "grant":
        print(await client.lease_grant(number), file=out)
        return EXIT_OK
    if args.action == "revoke":
        if await client.lease_revoke(number):
            print(f"Revoked lease {number}", file=out)
            return EXIT_OK
        print(f"leekyraft: lease {number} not found (expired or revoked)", file=err)
        return EXIT_NOT_FOUND
    if args.action == "ttl":
        print(json.dumps(await client.lease_ttl(number), sort_keys=True), file=out)
        return EXIT_OK
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    clock = getattr(client, "_clock", reactor)
    while True:
        ttl = await client.lease_keepalive(number)
        print(f"lease {number} kept alive (ttl {ttl})", file=out, flush=True)
        if args.once:
            return EXIT_OK
        await deferLater(clock, max(ttl / 3, 0.2), lambda: None)


def read_txn(path: str, stdin: IO[str]) -> dict[str, Any]:
    """Return the transaction document in ``path`` (``-``: ``stdin``).

    Raises InputFileError when the file cannot be read, ValueError (bad input)
    when it is not UTF-8 or not a JSON object of the right shape.
    """
    try:
        if path == "-":
            text = stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        raise cannot_read(path, e) from None
    except UnicodeDecodeError:
        where = "standard input" if path == "-" else path
        raise ValueError(f"the transaction in {where} is not UTF-8 text") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"the transaction is not valid JSON: {e}") from None
    if not isinstance(document, dict) or not set(document) <= {"compare", "success", "failure"}:
        raise ValueError('a transaction is a JSON object {"compare", "success", "failure"}')
    for name, items in document.items():
        if not isinstance(items, list):
            raise ValueError(f"the transaction's {name} must be a list")
    try:  # what every node would refuse is bad input here, before anything is sent
        check_txn_document(document)
    except ValueError as e:
        raise ValueError(f"the transaction is malformed: {e}") from None
    return document


def format_contact(member: dict[str, Any]) -> str:
    """Return how a member answers, as the node that reported it knows it."""
    if member.get("this_node"):
        return "this node"
    reachable, since = member.get("reachable"), member.get("last_contact")
    if reachable is None:
        return "-"  # the reporting node cannot tell (only a leader hears every member)
    if reachable:
        return f"ok ({since:.1f} s ago)" if isinstance(since, int | float) else "ok"
    if isinstance(since, int | float):
        return f"UNREACHABLE for {since:.0f} s"
    return "UNREACHABLE (never heard)"


def _seen_by(members: list[dict[str, Any]]) -> str | None:
    """Return the line naming the node whose view the table shows, or None if unknown."""
    me = next((m for m in members if m.get("this_node")), None)
    if me is None:
        return None
    if me.get("raft") == "leader":
        return f"(as seen by node {me.get('id')}, the leader)"
    if any(m.get("raft") == "leader" for m in members):
        return (
            f"(as seen by node {me.get('id')}, not the leader, which could not be asked: "
            "only the leader knows whether the other members answer)"
        )
    return (
        f"(as seen by node {me.get('id')}: it knows no leader, so the cluster has lost its "
        "majority or is electing one; `leekyraft status` shows who answers)"
    )


def format_members(members: list[dict[str, Any]], as_json: bool) -> str:
    """Return the members table (or JSON): id, Raft role, contact, gossip, addresses.

    The JSON is the nodes' own list, unchanged (fields are only ever added).
    """
    if as_json:
        return json.dumps(members, indent=2, sort_keys=True)
    rows = [("ID", "RAFT", "CONTACT", "GOSSIP", "INCARNATION", "PEER", "CLIENT")]
    for m in members:
        addrs = m.get("addresses") or {}
        rows.append(
            (
                str(m.get("id")),
                str(m.get("raft")),
                format_contact(m),
                str(m.get("gossip") or "-"),
                "-" if m.get("incarnation") is None else str(m["incarnation"]),
                str(addrs.get("peer", "-")),
                str(addrs.get("client", "-")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    seen = _seen_by(members)
    return "\n".join([*lines, seen] if seen else lines)


def _cas_values(args: argparse.Namespace) -> tuple[str | None, str]:
    """Return (expected, new) of a cas command; raise ValueError on a wrong count."""
    values: list[str] = args.values
    if args.absent:
        if len(values) != 1:
            raise ValueError("cas --absent takes KEY NEW")
        return None, values[0]
    if len(values) != 2:
        raise ValueError("cas takes KEY EXPECTED NEW (or --absent KEY NEW)")
    return values[0], values[1]


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``parser.error`` (EXIT_USAGE) on arguments argparse cannot check."""
    if getattr(args, "timeout", 1.0) <= 0:
        parser.error("--timeout must be positive")
    if getattr(args, "attempt_timeout", 1.0) <= 0:
        parser.error("--attempt-timeout must be positive")
    if args.command == "cas":
        try:
            _cas_values(args)
        except ValueError as e:
            parser.error(str(e))
    if not 0 <= getattr(args, "limit", 0) <= MAX_RANGE_LIMIT:
        parser.error(f"--limit must be from 0 to {MAX_RANGE_LIMIT}")
    if not 0 <= (getattr(args, "from_revision", None) or 0) <= MAX_ID:
        parser.error(f"--from must be a revision from 0 to {MAX_ID}")
    if args.command == "lock":
        _lock_options_before_dashes(parser, args)
    if args.command in ("lock", "elect") and not 1 <= args.ttl <= MAX_LEASE_TTL:
        parser.error(f"--ttl must be a number of seconds from 1 to {MAX_LEASE_TTL}")
    if getattr(args, "lease", None) is not None and not 1 <= args.lease <= MAX_ID:
        parser.error(f"--lease must be a lease id from 1 to {MAX_ID}")
    if args.command == "bench" and min(args.clients, args.ops, args.value_size, args.keys) < 1:
        parser.error("--clients, --ops, --value-size and --keys must be at least 1")
    if args.command == "bench" and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.command == "bench" and args.plot is not None:
        from leeky_twisted.plots.figures import plot_format

        try:
            plot_format(args.plot)
        except ValueError as e:
            parser.error(str(e))


def _lock_options_before_dashes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``lock NAME --timeout 5 -- CMD``: the words between NAME and ``--`` are lock's options.

    argparse hands everything after NAME to COMMAND; when those words start with an
    option and a ``--`` follows, they are parsed as the lock's options (a usage error
    if they are not) and COMMAND is what follows ``--``.
    """
    program: list[str] = list(args.program)
    if not program or not program[0].startswith("-") or program[0] == "--" or "--" not in program:
        return
    cut = program.index("--")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "lock"
    ]
    sub.parse_args([*program[:cut], args.name, *program[cut:]], namespace=args)


def plots_or_exit(err: IO[str]) -> None:
    """Exit with EXIT_ERROR and one line on ``err`` when matplotlib is missing."""
    from leeky_twisted.plots import PlotsUnavailable, require_matplotlib

    try:
        require_matplotlib()
    except PlotsUnavailable as e:
        print(f"leekyraft: {e}", file=err)
        sys.exit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the ``leekyraft`` command line; exit with the command's exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] in ("chaos", "verify"):
        # The fault-injection rig and the history checker have their own options:
        #   leekyraft chaos --nodes 5 --time 120 [--nemesis partition,kill,...]  (as root)
        #   leekyraft verify --endpoints HOST:HTTPPORT,... --time 60
        from leeky_twisted.chaos.runner import main as chaos_main

        sys.exit(chaos_main(raw[1:] if raw[0] == "chaos" else raw, prog=f"leekyraft {raw[0]}"))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "local":
        sys.exit(run_local(args))
    if args.command == "certs":
        sys.exit(run_certs(args, sys.stdout, sys.stderr))
    if args.command == "keygen":
        sys.exit(run_keygen(args, sys.stdout, sys.stderr))
    check_args(parser, args)
    if args.command == "bench" and args.plot is not None:
        plots_or_exit(sys.stderr)  # before the run, not after it
    if args.command == "put":
        try:
            args.value = [put_value(args, sys.stdin.buffer, sys.stderr)]
        except ValueError as e:
            parser.error(str(e))
        except OSError as e:
            print(f"leekyraft: put: {cannot_read(args.file, e)}", file=sys.stderr)
            sys.exit(EXIT_NO_INPUT)
    try:
        cluster = cluster_from(args, dict(os.environ))
    except ValueError as e:
        parser.error(f"bad cluster address list: {e}")
    try:
        tls = tls_from(args, dict(os.environ))
    except InputFileError as e:
        print(f"leekyraft: {e}", file=sys.stderr)
        sys.exit(EXIT_NO_INPUT)
    except ValueError as e:
        parser.error(str(e))
    credentials = None
    if tls is not None:
        from leeky_twisted.security.tls import TLSCredentials, TLSFiles

        if args.command == "bench":
            parser.error("bench does not support TLS yet; run it against a plaintext cluster")
        try:
            credentials = TLSCredentials.load(TLSFiles.for_client(*tls))
        except OSError as e:
            print(f"leekyraft: cannot load the TLS client certificate: {e}", file=sys.stderr)
            sys.exit(EXIT_NO_INPUT)
        except ValueError as e:
            print(f"leekyraft: cannot load the TLS client certificate: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)

    from twisted.internet.task import react

    from leeky_twisted.client.library import LeekyClient

    async def session(reactor: Any) -> None:
        if args.command == "bench":
            from leeky_twisted.ops.bench import run_bench

            result = await run_bench(
                reactor,
                cluster,
                args.workload,
                args.clients,
                args.ops,
                args.seconds,
                args.value_size,
                args.keys,
                attempt_timeout=args.attempt_timeout,
            )
            print(result.summary())
            if args.plot is not None:
                from leeky_twisted.plots.bench import write_bench_plot

                try:
                    print(f"plot: {write_bench_plot(result, args.plot)}")
                except OSError as e:
                    print(f"leekyraft: cannot write the plot: {e}", file=sys.stderr)
                    raise SystemExit(EXIT_ERROR) from None
            if result.errors:
                raise SystemExit(EXIT_ERROR)
            return
        connect = None
        if credentials is not None:
            from leeky_twisted.client.library import tls_connector

            connect = tls_connector(
                reactor, credentials, timeout=min(args.timeout, args.attempt_timeout)
            )
        client = LeekyClient(
            reactor,
            cluster,
            timeout=args.timeout,
            connect=connect,
            attempt_timeout=args.attempt_timeout,
        )
        try:
            code = await run_until_signalled(
                reactor, run_command(args, client, sys.stdout, sys.stderr)
            )
        except BrokenPipeError:
            code = _quiet_broken_pipe()
        finally:
            client.close()  # the reactor stops right after; don't wait for the close
        if code:
            raise SystemExit(code)

    react(session)
