"""The linearizability checker: hand-written histories, generated ones, mutated ones."""

from __future__ import annotations

import functools
import random
import time

import pytest
from checker_gen import MUTATIONS, generate, op, squash_values

from leeky_twisted.checker.history import Operation, OpKind, Outcome
from leeky_twisted.checker.linearizability import (
    Verdict,
    check_history,
    check_key,
    register_step,
)

LIN = Verdict.LINEARIZABLE
NOT = Verdict.NOT_LINEARIZABLE


def verdict(*ops: Operation) -> Verdict:
    return check_history(list(ops)).verdict


# ---------------------------------------------------------------- by hand


def test_sequential_put_then_get_is_linearizable():
    """A read after a completed write returns that write's value."""
    assert verdict(op(0, "put", 0, 1, value="a"), op(1, "get", 2, 3, result="a")) is LIN


def test_stale_read_is_caught_and_names_the_read():
    """A read that returns a value already overwritten by a completed write is a violation."""
    result = check_history(
        [
            op(0, "put", 0, 1, value="a"),
            op(1, "put", 2, 3, value="b"),
            op(2, "get", 4, 5, result="a"),
        ]
    )
    assert result.verdict is NOT
    (violation,) = result.violations
    assert violation.op.index == 2
    assert violation.possible_values == ("b",)
    assert [o.index for o in violation.linearized] == [0, 1]
    assert "get(k) -> 'a'" in result.render()


def test_concurrent_read_may_see_the_old_or_the_new_value():
    """A read concurrent with a write may return either value."""
    write = op(0, "put", 0, 1, value="a")
    for seen in ("a", "b"):
        assert verdict(write, op(1, "put", 2, 5, value="b"), op(2, "get", 3, 4, result=seen)) is LIN


def test_new_then_old_read_inversion_is_caught():
    """Once a read saw a concurrent write's value, a later read cannot see the old one."""
    assert (
        verdict(
            op(0, "put", 0, 10, value="a"),
            op(1, "get", 1, 2, result="a"),
            op(2, "get", 3, 4, result=None),
        )
        is NOT
    )


def test_lost_acknowledged_write_is_caught():
    """A write acknowledged before a read began must be visible to it."""
    assert verdict(op(0, "put", 0, 1, value="a"), op(1, "get", 2, 3, result=None)) is NOT


def test_touching_intervals_count_as_concurrent():
    """A read invoked at the very instant a write completes may still miss it."""
    assert verdict(op(0, "put", 0, 1, value="a"), op(1, "get", 1, 2, result=None)) is LIN


def test_unknown_write_that_took_effect_is_linearizable():
    """A timed-out write may have taken effect: a later read may see it."""
    assert verdict(op(0, "put", 0, None, value="a"), op(1, "get", 5, 6, result="a")) is LIN


def test_unknown_write_that_never_took_effect_is_linearizable():
    """A timed-out write may never take effect: later reads may keep missing it."""
    assert verdict(op(0, "put", 0, None, value="a"), op(1, "get", 5, 6, result=None)) is LIN


def test_unknown_write_cannot_take_effect_twice_or_be_undone():
    """Once a timed-out write has been seen, a later read cannot miss it."""
    assert (
        verdict(
            op(0, "put", 0, None, value="a"),
            op(1, "get", 1, 2, result="a"),
            op(2, "get", 3, 4, result=None),
        )
        is NOT
    )


def test_unknown_write_cannot_take_effect_before_it_is_invoked():
    """A read that completes before a write is invoked cannot see it."""
    assert verdict(op(0, "get", 0, 1, result="a"), op(1, "put", 2, None, value="a")) is NOT


def test_failed_write_never_takes_effect():
    """A write refused before proposing (failed) must never be seen."""
    failed = op(0, "put", 0, 1, value="a", outcome="fail")
    assert verdict(failed, op(1, "get", 2, 3, result=None)) is LIN
    assert verdict(failed, op(1, "get", 2, 3, result="a")) is NOT


def test_unknown_and_failed_reads_constrain_nothing():
    """Reads whose answer was lost or refused are ignored."""
    assert (
        verdict(
            op(0, "put", 0, 1, value="a"),
            op(1, "get", 2, None),
            op(2, "get", 2, 3, outcome="fail"),
        )
        is LIN
    )


def test_cas_swaps_only_when_the_value_matches():
    """cas succeeds on the expected value (None: absent) and fails on any other."""
    put_a = op(0, "put", 0, 1, value="a")
    assert verdict(op(0, "cas", 0, 1, expected=None, new="a", result=True)) is LIN
    assert verdict(op(0, "cas", 0, 1, expected="x", new="a", result=True)) is NOT
    assert verdict(put_a, op(1, "cas", 2, 3, expected="a", new="b", result=True)) is LIN
    assert verdict(put_a, op(1, "cas", 2, 3, expected="a", new="b", result=False)) is NOT
    assert verdict(put_a, op(1, "cas", 2, 3, expected="z", new="b", result=False)) is LIN
    assert verdict(put_a, op(1, "cas", 2, 3, expected="z", new="b", result=True)) is NOT
    swapped = op(1, "cas", 2, 3, expected="a", new="b", result=True)
    assert verdict(put_a, swapped, op(2, "get", 4, 5, result="b")) is LIN
    assert verdict(put_a, swapped, op(2, "get", 4, 5, result="a")) is NOT


def test_two_successful_cas_from_the_same_value_is_caught():
    """Two concurrent cas(a -> x) cannot both succeed: the first one changed the value."""
    assert (
        verdict(
            op(0, "put", 0, 1, value="a"),
            op(1, "cas", 2, 5, expected="a", new="b", result=True, client=1),
            op(2, "cas", 2, 5, expected="a", new="c", result=True, client=2),
        )
        is NOT
    )


def test_unknown_cas_applies_only_when_the_value_matches():
    """A timed-out cas may swap, but only if the register held its expected value then."""
    put_a = op(0, "put", 0, 1, value="a")
    cas = op(1, "cas", 2, None, expected="a", new="b")
    assert verdict(put_a, cas, op(2, "get", 3, 4, result="b")) is LIN
    assert (
        verdict(put_a, cas, op(2, "get", 3, 4, result="a"), op(3, "get", 5, 6, result="b")) is LIN
    )
    assert (
        verdict(put_a, cas, op(2, "get", 3, 4, result="b"), op(3, "get", 5, 6, result="a")) is NOT
    )
    wrong = op(1, "cas", 2, None, expected="z", new="b")
    assert verdict(put_a, wrong, op(2, "get", 3, 4, result="b")) is NOT


def test_keys_are_judged_separately():
    """A violation on one key leaves the other keys' verdicts alone."""
    result = check_history(
        [
            op(0, "put", 0, 1, key="x", value="a"),
            op(1, "get", 2, 3, key="x", result="a"),
            op(2, "put", 0, 1, key="y", value="b"),
            op(3, "get", 2, 3, key="y", result=None),
        ]
    )
    assert result.verdict is NOT
    assert {k.key: k.verdict for k in result.keys} == {"x": LIN, "y": NOT}


def test_initial_values_are_honoured():
    """A key may start with a value other than absent."""
    read = op(0, "get", 0, 1, result="seed")
    assert check_history([read], initial={"k": "seed"}).verdict is LIN
    assert check_history([read]).verdict is NOT


def test_budget_exhaustion_answers_unknown_not_a_guess():
    """A search that runs out of steps says so instead of guessing."""
    history = generate(3, clients=6, ops=200, keys=1)
    assert check_key("k0", history, max_steps=5).verdict is Verdict.UNKNOWN


def test_register_step_accepts_any_result_of_an_unknown_op():
    """The model accepts an unknown cas either way and applies it only on a match."""
    cas = op(0, "cas", 0, None, expected="a", new="b")
    assert register_step("a", cas) == (True, "b")
    assert register_step("z", cas) == (True, "z")


# -------------------------------------------------------- brute force


def brute_force(history: list[Operation], initial: str | None = None) -> bool:
    """Decide linearizability of one key straight from the definition (tiny histories)."""
    ops = [
        o
        for o in history
        if o.outcome is not Outcome.FAIL
        and not (o.outcome is Outcome.UNKNOWN and o.kind is OpKind.GET)
    ]
    known = frozenset(i for i, o in enumerate(ops) if o.outcome is Outcome.OK)

    def precedes(a: Operation, b: Operation) -> bool:
        return a.complete is not None and a.complete < b.invoke

    @functools.cache
    def search(done: frozenset[int], state: str | None) -> bool:
        if known <= done:
            return True
        for i, o in enumerate(ops):
            if i in done or any(precedes(ops[j], o) for j in known - done if j != i):
                continue
            allowed, after = register_step(state, o)
            if allowed and search(done | {i}, after):
                return True
        return False

    return search(frozenset(), initial)


def perturb(history: list[Operation], rng: random.Random) -> list[Operation]:
    """Change one result at random (the outcome may or may not stay linearizable)."""
    h = list(history)
    i = rng.randrange(len(h))
    o = h[i]
    if o.outcome is not Outcome.OK or o.kind is OpKind.PUT:
        h[i] = o.with_outcome(Outcome.UNKNOWN, None)
    elif o.kind is OpKind.CAS:
        h[i] = o.with_outcome(Outcome.OK, o.complete, not o.result)
    else:
        values = [x.value or x.new for x in h if x.kind is not OpKind.GET] + [None]
        h[i] = o.with_outcome(Outcome.OK, o.complete, rng.choice(values))
    return h


@pytest.mark.parametrize("seed", range(400))
def test_checker_agrees_with_brute_force_on_small_histories(seed: int):
    """On tiny histories with many ties and unknowns, the search and the definition agree."""
    rng = random.Random(seed)
    history = generate(
        seed,
        clients=rng.randint(2, 4),
        ops=rng.randint(4, 12),
        keys=1,
        unknown=0.3,
        integer_times=seed % 2 == 0,
    )
    assert brute_force(history)
    assert check_history(history).verdict is LIN
    for variant in (
        perturb(history, rng),
        squash_values(history),
        squash_values(perturb(history, rng)),
    ):
        expected = LIN if brute_force(variant) else NOT
        assert check_history(variant).verdict is expected


# ------------------------------------------------- generated and mutated


@pytest.mark.parametrize("seed", range(100))
def test_histories_from_a_sequential_model_are_linearizable(seed: int):
    """Every history generated from a true register passes."""
    history = generate(seed, clients=5, ops=120, keys=2, unknown=0.05, fail=0.05)
    result = check_history(history)
    assert result.verdict is LIN, result.render()


@pytest.mark.parametrize("seed", range(100))
def test_mutated_histories_are_caught(seed: int):
    """A future read, a stale read or a read of a never-written value is always caught."""
    rng = random.Random(seed)
    history = generate(seed, clients=5, ops=120, keys=2, unknown=0.05, fail=0.05)
    caught = 0
    for mutate in MUTATIONS:
        mutated = mutate(history, rng)
        if mutated is None:
            continue
        result = check_history(mutated)
        assert result.verdict is NOT, mutate.__name__
        assert result.violations[0].render()
        caught += 1
    assert caught >= 2


def test_ten_clients_two_thousand_ops_on_three_keys_check_in_seconds():
    """Performance sanity: a 10-client, 2000-op, 3-key history checks in a few seconds."""
    history = generate(2024, clients=10, ops=2000, keys=3, unknown=0.03, fail=0.05)
    start = time.perf_counter()
    result = check_history(history)
    elapsed = time.perf_counter() - start
    assert result.verdict is LIN, result.render()
    assert elapsed < 5.0, f"took {elapsed:.2f} s"
    mutated = MUTATIONS[1](history, random.Random(1))
    assert mutated is not None
    start = time.perf_counter()
    assert check_history(mutated).verdict is NOT
    assert time.perf_counter() - start < 10.0


@pytest.mark.parametrize("seed", range(3))
def test_many_unknown_outcomes_do_not_blow_up_the_search(seed: int):
    """A 2000-op history where a fifth of the operations timed out still checks in seconds."""
    history = generate(seed, clients=10, ops=2000, keys=3, unknown=0.2, fail=0.05)
    start = time.perf_counter()
    assert check_history(history).verdict is LIN
    mutated = MUTATIONS[1](history, random.Random(seed)) or MUTATIONS[2](history, random.Random(1))
    assert mutated is not None
    assert check_history(mutated).verdict is NOT
    assert time.perf_counter() - start < 10.0
