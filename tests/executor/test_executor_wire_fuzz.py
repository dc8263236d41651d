"""Fuzz the executor wire on both sides: indexes are bounded, nothing but clear errors escape.

Issue 19: every decoder of the node's inputs is fuzzed. The executor's
JSON-RPC server checks what the node sends; the node's client checks what the
executor answers (an executor claiming applied index 2**64 must not reach the
node's bookkeeping).
"""

from __future__ import annotations

import contextlib
import json
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leeky_twisted.core.messages import MAX_INDEX
from leeky_twisted.executor.filemeta import SNAPSHOT_FORMAT
from leeky_twisted.executor.server import ExecutorJSONRPC
from leeky_twisted.executor.store import DurableExecutorState
from leeky_twisted.protocol import executor_wire as wire
from leeky_twisted.statemachine import remote
from leeky_twisted.statemachine.remote import ExecutorError
from leeky_twisted.storage.errors import CorruptStorageError

numbers = st.one_of(
    st.sampled_from([-1, 0, 1, MAX_INDEX, MAX_INDEX + 1, 2**64 - 1, 2**64]),
    st.integers(-(2**80), 2**80),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
entries = st.one_of(
    st.fixed_dictionaries(
        {"index": numbers},
        optional={
            "command": st.one_of(st.text(max_size=5), json_values),
            "command_b64": st.one_of(st.sampled_from(["", "YQ==", "!!", "YQ"]), json_values),
            "x": json_values,
        },
    ),
    json_values,
)


@settings(max_examples=300, deadline=None)
@given(value=entries)
def test_fuzz_decode_entry(value):
    """An entry decodes to an index in [1, MAX_INDEX] and bytes, or raises ValueError."""
    try:
        index, command = wire.decode_entry(value)
    except ValueError:
        return
    assert 1 <= index <= MAX_INDEX and isinstance(command, bytes)


@pytest.mark.parametrize("index", [0, -1, MAX_INDEX + 1, 2**64 - 1, True, 1.0, "1"])
def test_entry_indexes_out_of_bounds_are_refused(index):
    """Zero, negative, past MAX_INDEX, or not an integer: ValueError naming the bounds."""
    with pytest.raises(ValueError, match=f"from 1 to {MAX_INDEX}"):
        wire.decode_entry({"index": index, "command": "PUT a b"})


@settings(max_examples=300, deadline=None)
@given(item=json_values, status=json_values, snapshot=json_values)
def test_fuzz_what_the_executor_answers(item, status, snapshot):
    """The node's client turns any answer into a bounded value or an ExecutorError."""
    with contextlib.suppress(ExecutorError):
        remote._outcome(item)
    for value, what in ((status, "last_applied"), (snapshot, "index")):
        try:
            index = remote._index(value, what)
        except ExecutorError:
            continue
        assert 0 <= index <= MAX_INDEX


calls = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]),
        "method": st.sampled_from(["execute_batch", "execute", "restore", "status", "query", "x"]),
        "params": st.one_of(
            st.fixed_dictionaries(
                {"owner": st.sampled_from(["leeky/1", "", "other"])},
                optional={
                    "entries": st.lists(entries, max_size=3),
                    "index": numbers,
                    "command": json_values,
                    "data": st.sampled_from(["", "e30=", "!!", "eyJmaWxlcyI6IHt9fQ=="]),
                },
            ),
            st.lists(json_values, max_size=3),
        ),
        "id": json_values,
    }
)


def test_fuzz_executor_server_bodies():
    """Any call body gets a JSON-RPC answer; no index past MAX_INDEX is ever applied."""
    with tempfile.TemporaryDirectory() as directory:
        state = DurableExecutorState(directory)
        server = ExecutorJSONRPC(state)

        @settings(max_examples=150, deadline=None)
        @given(call=st.one_of(calls, json_values), raw=st.binary(max_size=30))
        def check(call, raw):
            for body in (json.dumps(call).encode(), raw):
                answer = server.answer(body)
                assert answer["jsonrpc"] == "2.0"
                assert ("result" in answer) != ("error" in answer)
                if "error" in answer:
                    assert answer["error"]["code"] != wire.INTERNAL_ERROR, answer
                assert 0 <= state.last_applied <= MAX_INDEX

        try:
            check()
        finally:
            state.close()


def _state_document(draw_fields: dict) -> dict:
    document = {"format": "leeky-executor-state/1", "owner": "leeky/1", "last_applied": 3}
    document["machine"] = {"format": SNAPSHOT_FORMAT, "files": []}
    document["recent"] = [[3, {"index": 3, "result": None}]]
    document.update(draw_fields)
    return document


def test_fuzz_executor_state_file():
    """Any state.json opens within bounds or raises one CorruptStorageError naming the file."""
    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/state.json"

        @settings(max_examples=150, deadline=None)
        @given(
            fields=st.dictionaries(
                st.sampled_from(["format", "owner", "last_applied", "machine", "recent"]),
                json_values,
                max_size=2,
            ),
            raw=st.one_of(st.none(), st.binary(max_size=20)),
        )
        def check(fields, raw):
            with open(path, "wb") as f:
                f.write(raw if raw is not None else json.dumps(_state_document(fields)).encode())
            try:
                state = DurableExecutorState(directory)
            except CorruptStorageError as e:
                assert e.path == path
                return
            try:
                assert 0 <= state.last_applied <= MAX_INDEX
                assert state.owner is None or isinstance(state.owner, str)
            finally:
                state.close()

        check()


def test_executor_state_with_huge_last_applied_is_a_clear_storage_error(tmp_path):
    """A state.json claiming last_applied 2**64 names the file and the field."""
    document = _state_document({"last_applied": 2**64})
    (tmp_path / "state.json").write_text(json.dumps(document))
    with pytest.raises(CorruptStorageError, match="last_applied") as caught:
        DurableExecutorState(str(tmp_path))
    assert caught.value.path == str(tmp_path / "state.json")
    (tmp_path / "state.json").unlink()
    DurableExecutorState(str(tmp_path)).close()  # the directory lock was released
