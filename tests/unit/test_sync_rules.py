"""Conflict rules (pure): each rule's winner and value, escalation to the fallback, and the rule algebra."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.sync.record import Agreed, Seen
from tidesync.sync.rules import Rule, Rules, settle


def s(value: object, at: float = 100.0) -> Seen:
    return Seen(value, at)


def run(rule: str, a: Seen, b: Seen, shadow: object = "base", **kw: object) -> tuple[str, str, object, bool]:
    rules = Rules(default=Rule.parse(rule), **kw)  # type: ignore[arg-type]
    sh = None if shadow is None else Agreed(shadow, 50.0, "a")
    out = settle(rules.default, rules, sh, a, b)
    return out.rule, out.winner, out.value, out.parked


def test_lww_later_commit_wins_and_ties_go_to_the_tie_side() -> None:
    assert run("lww", s("x", 100.0), s("y", 105.0), skew=1.0)[:3] == ("lww", "b", "y")
    assert run("lww", s("x", 110.0), s("y", 105.0), skew=1.0)[:3] == ("lww", "a", "x")
    assert run("lww", s("x", 100.0), s("y", 100.0), skew=0.0, tie="b")[:3] == ("lww", "b", "y")


def test_lww_within_the_skew_bound_escalates_instead_of_guessing() -> None:
    assert run("lww", s("x", 100.0), s("y", 100.4), skew=1.0) == ("lww -> manual", "", None, True)
    assert run("lww", s("x", 100.0), s("y", 100.4), skew=1.0, fallback=Rule("prefer", "a"))[:3] == (
        "lww -> prefer:a",
        "a",
        "x",
    )
    assert run("lww", s("x", 0.0), s("y", 100.0), skew=0.0)[3]  # an unknown commit time cannot be ordered


def test_prefer_non_null_max_min() -> None:
    assert run("prefer:b", s("x"), s("y"))[:3] == ("prefer:b", "b", "y")
    assert run("non_null", s(None), s("y"))[:3] == ("non_null", "b", "y")
    assert run("non_null", s("x"), s(""))[:3] == ("non_null", "a", "x")
    assert run("non_null", s("x"), s("y"))[3]  # both have a value: fallback (manual)
    assert run("max", s(3), s(9))[1:3] == ("b", 9)
    assert run("min", s(3), s(9))[1:3] == ("a", 3)
    assert run("max", s(None), s(2))[1:3] == ("b", 2)
    assert run("max", s("a"), s(2))[3]  # incomparable: fallback


def test_sum_adds_both_deltas_and_needs_a_base() -> None:
    assert run("sum", s(13), s(15), shadow=10)[1:3] == ("merge", 18)
    assert run("sum", s(13), s(15), shadow=None)[0] == "sum -> manual"


def test_union_is_a_three_way_merge() -> None:
    # A added "a"; B removed "x": the removal sticks, the addition is kept
    assert run("union", s(["x", "y", "a"]), s(["y"]), shadow=["x", "y"])[1:3] == ("merge", ["y", "a"])
    assert run("union", s(["x"]), s(["y"]), shadow=None)[2] == ["x", "y"]  # no base: nothing was removed
    assert run("union", s("x"), s(["y"]), shadow=None)[3]  # not lists: fallback


def test_rule_parsing_names_the_known_rules() -> None:
    assert str(Rule.parse("prefer: a")) == "prefer:a"
    with pytest.raises(ValueError, match="unknown rule 'newest'"):
        Rule.parse("newest")
    with pytest.raises(ValueError, match="prefer needs a side"):
        Rule.parse("prefer:c")


values = st.one_of(st.none(), st.integers(-5, 5))
lists = st.lists(st.integers(0, 6), max_size=5, unique=True)


@given(values, values, st.floats(1, 1e6), st.floats(1, 1e6), st.sampled_from(["lww", "max", "min", "non_null"]))
def test_value_rules_pick_one_of_the_candidates_deterministically(
    x: object, y: object, ta: float, tb: float, rule: str
) -> None:
    rules = Rules(default=Rule.parse(rule), skew=0.0, fallback=Rule("prefer", "a"))
    first = settle(rules.default, rules, None, Seen(x, ta), Seen(y, tb))
    again = settle(rules.default, rules, None, Seen(x, ta), Seen(y, tb))
    assert first == again
    assert first.value == (x if first.winner == "a" else y)


@given(lists, lists, lists)
def test_union_keeps_every_addition_and_every_removal(base: list[int], a: list[int], b: list[int]) -> None:
    rules = Rules(default=Rule("union"))
    out = settle(rules.default, rules, Agreed(base, 0.0, "a"), Seen(a, 1.0), Seen(b, 2.0))
    merged = set(out.value)
    for item in set(a) | set(b):
        if item not in base:
            assert item in merged  # added on a side: kept
    for item in base:
        if item not in a or item not in b:
            assert item not in merged  # removed on a side: stays removed
    assert len(out.value) == len(merged)


@given(st.integers(-100, 100), st.integers(-100, 100), st.integers(-100, 100))
def test_sum_counts_each_delta_once(base: int, da: int, db: int) -> None:
    rules = Rules(default=Rule("sum"))
    out = settle(rules.default, rules, Agreed(base, 0.0, "a"), Seen(base + da, 1.0), Seen(base + db, 2.0))
    assert out.value == base + da + db
