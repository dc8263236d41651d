"""A node's executor owner carries a token made with its data; foreign state is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from leeky_twisted.executor.server import ExecutorJSONRPC
from leeky_twisted.executor.store import DurableExecutorState
from leeky_twisted.statemachine.owner import OWNER_FILE, OwnerFileError, node_executor_owner
from leeky_twisted.statemachine.remote import ExecutorFeed, RemoteStateMachineExecutor


def test_the_owner_is_cluster_node_and_a_token_kept_with_the_data(tmp_path: Path) -> None:
    """The token is made once per data folder: the same after a restart, another elsewhere."""
    first = node_executor_owner(str(tmp_path / "a"), "leeky", "1")
    assert first.startswith("leeky/1/") and first != "leeky/1"
    assert node_executor_owner(str(tmp_path / "a"), "leeky", "1") == first
    assert node_executor_owner(str(tmp_path / "b"), "leeky", "1") != first


def test_a_damaged_token_file_is_an_error_not_a_new_token(tmp_path: Path) -> None:
    """A token file that holds something else stops the node with a message naming it."""
    (tmp_path / OWNER_FILE).write_text("not a token\n")
    with pytest.raises(OwnerFileError, match=OWNER_FILE):
        node_executor_owner(str(tmp_path), "leeky", "1")


def test_the_service_gives_its_executor_the_tokened_owner(tmp_path: Path) -> None:
    """``--executor-url``: the node's owner is not the guessable ``cluster/node``."""
    from leeky_twisted.server.service import make_node_service
    from leeky_twisted.server.tap import Options

    opts = Options()
    opts.parseOptions(
        [
            "--id=1",
            "--peers=1=127.0.0.1:7001",
            f"--data-dir={tmp_path}",
            "--executor-url=http://127.0.0.1:7301/jsonrpc",
        ]
    )
    switch = sys.getswitchinterval()
    try:
        top = make_node_service(opts.node_options, MemoryReactorClock())
    finally:
        sys.setswitchinterval(switch)
    owner = top.node.executor.owner  # type: ignore[attr-defined]
    assert owner == node_executor_owner(str(tmp_path), "leeky", "1") != "leeky/1"


def test_an_executor_driven_by_hand_refuses_the_node_and_keeps_its_state(tmp_path: Path) -> None:
    """docs/executor.md's old example: a user binds a node's executor by hand as ``leeky/1``.
    The node is refused, its feed applies nothing and says why, and the hand-made state
    never mixes with the node's log."""
    state = DurableExecutorState(str(tmp_path / "executor"))
    try:
        resource = ExecutorJSONRPC(state)
        by_hand = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "execute",
            "params": {"owner": "leeky/1", "index": 1, "command": "ADD notes.txt 120"},
        }
        assert "result" in resource.answer(json.dumps(by_hand).encode())
        root = Resource()
        root.putChild(b"jsonrpc", resource)
        clock = Clock()
        owner = node_executor_owner(str(tmp_path / "node1"), "leeky", "1")
        executor = RemoteStateMachineExecutor(
            clock, "http://executor.test/jsonrpc", owner, http=StubTreq(root)
        )
        applied: list[tuple[int, object]] = []
        feed = ExecutorFeed(clock, executor, lambda i, r: applied.append((i, r)))
        feed.start()
        feed.enqueue([(1, None), (2, None), (3, b"ADD a.txt 1"), (4, b"READ notes.txt")])
        for _ in range(50):
            clock.advance(0.1)
        assert applied == [] and feed.applied_index == 0
        status = feed.status()
        assert status["executor_reachable"] is False
        assert "the executor refuses this node" in status["executor_error"]
        assert "'leeky/1'" in status["executor_error"]
        assert state.last_applied == 1 and state.machine.query("LIST") == ["notes.txt"]
        feed.stop()
    finally:
        state.close()
