"""Hypothesis properties of transforms: inverses, round trips, conservation, and fusion = sequence."""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidesync.event import ChangeEvent
from tidesync.transform import compile_transforms

NAMES = ["a", "b", "c", "d", "e"]
names = st.sampled_from(NAMES)
values = st.one_of(st.none(), st.integers(-1000, 1000), st.text(alphabet="ax0 +", max_size=4))
rows = st.dictionaries(names, values, max_size=5)
full_rows = st.dictionaries(names, st.integers(0, 9) | values, min_size=3, max_size=5)


@st.composite
def events(draw: st.DrawFn, key: int = 0) -> ChangeEvent:
    op = draw(st.sampled_from(["insert", "update", "delete", "snapshot"]))
    after = draw(full_rows)
    if op == "delete":
        return ChangeEvent("t", (key,), op, before=after)
    if op == "update":
        before = draw(st.none() | rows)
        changed = tuple(draw(st.lists(st.sampled_from(sorted(after)), unique=True))) if after else ()
        return ChangeEvent("t", (key,), op, before=before, after=after, changed=changed)
    return ChangeEvent("t", (key,), op, after=after)


@st.composite
def event_lists(draw: st.DrawFn) -> list[ChangeEvent]:
    n = draw(st.integers(1, 8))
    return [draw(events(key=i)) for i in range(n)]


@st.composite
def renames(draw: st.DrawFn) -> dict[str, str]:
    sources = draw(st.lists(names, min_size=1, unique=True))
    targets = draw(st.lists(names, min_size=len(sources), max_size=len(sources), unique=True))
    return dict(zip(sources, targets, strict=True))


def _two_names(draw: st.DrawFn) -> tuple[str, str]:
    return draw(names), draw(names)


@st.composite
def steps(draw: st.DrawFn) -> dict[str, Any]:
    # Filters fail records that lack their field: rarer, so that later steps see rows.
    kind = draw(st.sampled_from(["rename", "rename", "select", "drop", "cast", "cast", "set", "compute", "filter"]))
    if kind == "rename":
        return {"rename": draw(renames())}
    if kind in ("select", "drop"):
        return {kind: draw(st.lists(names, min_size=1, max_size=3))}
    if kind == "cast":
        return {"cast": {draw(names): "string"}}
    if kind == "set":
        return {"set": {draw(names): draw(st.integers(0, 9))}}
    x, y = _two_names(draw)
    if kind == "compute":
        return {"compute": {draw(names): f"concat({x}, '-', {y})"}}
    return {"filter": f"{x} is not None"}


# --- algebra of single steps ------------------------------------------------------------


@given(st.data())
def test_rename_then_inverse_rename_is_identity(data: st.DataObject) -> None:
    row = data.draw(rows)
    # A permutation of some of the row's fields plus moves to names the row does not use.
    present = sorted(row)
    perm_src = data.draw(st.lists(st.sampled_from(present), unique=True)) if present else []
    perm_dst = data.draw(st.permutations(perm_src))
    mapping = dict(zip(perm_src, perm_dst, strict=True))
    free = [n for n in ["v", "w", "x", "y", "z"]]
    movers = [n for n in present if n not in mapping][: len(free)]
    mapping.update(zip(movers, free, strict=False))
    if not mapping:
        return
    inverse = {v: k for k, v in mapping.items()}
    changed = tuple(data.draw(st.lists(st.sampled_from(present), unique=True))) if present else ()
    event = ChangeEvent("t", (1,), "update", before=dict(row), after=dict(row), changed=changed)
    there = compile_transforms([{"rename": mapping}])(event)
    assert there is not None
    back = compile_transforms([{"rename": inverse}])(there)
    assert back is not None
    assert back.after == row
    assert back.before == row
    assert back.changed == changed


@given(st.integers())
def test_int_to_string_and_back_round_trips(n: int) -> None:
    event = ChangeEvent("t", (1,), "insert", after={"n": n})
    as_text = compile_transforms([{"cast": {"n": "string"}}])(event)
    assert as_text is not None and as_text.after == {"n": str(n)}
    back = compile_transforms([{"cast": {"n": "int"}}])(as_text)
    assert back is not None and back.after == {"n": n}


@given(
    st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: ("decimal", d)),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: ("float", f)),
        st.booleans().map(lambda b: ("bool", b)),
        st.datetimes(timezones=st.just(dt.UTC)).map(lambda t: ("timestamp", t)),
        st.dates().map(lambda d: ("date", d)),
    )
)
def test_string_round_trip_for_other_types(typed: tuple[str, Any]) -> None:
    type_, value = typed
    text = compile_transforms([{"cast": {"v": "string"}}])(ChangeEvent("t", (1,), "insert", after={"v": value}))
    assert text is not None and isinstance((text.after or {})["v"], str)
    back = compile_transforms([{"cast": {"v": type_}}])(text)
    assert back is not None
    result = (back.after or {})["v"]
    assert result == value
    if isinstance(value, Decimal):
        assert result.as_tuple() == value.as_tuple() or value.is_zero()


@given(rows, st.lists(names, min_size=1, max_size=5))
def test_select_keeps_only_selected_names(row: dict[str, Any], selected: list[str]) -> None:
    out = compile_transforms([{"select": selected}])(ChangeEvent("t", (1,), "insert", after=row))
    assert out is not None and out.after is not None
    assert set(out.after) == set(selected) & set(row)
    assert all(out.after[k] == row[k] for k in out.after)


@given(rows, st.lists(names, min_size=1, max_size=5))
def test_drop_never_touches_the_key(row: dict[str, Any], dropped: list[str]) -> None:
    out = compile_transforms([{"drop": dropped}])(ChangeEvent("t", ("k", 1), "insert", after=row))
    assert out is not None
    assert out.key == ("k", 1)
    assert set(out.after or {}) == set(row) - set(dropped)


# --- chains -----------------------------------------------------------------------------


@given(event_lists(), st.lists(steps(), max_size=6), st.sampled_from(["int", "bool", "decimal"]))
def test_failures_never_lose_an_event(evs: list[ChangeEvent], chain: list[dict[str, Any]], cast: str) -> None:
    originals = copy.deepcopy(evs)
    transform = compile_transforms([*chain, {"cast": {"a": cast}}, {"filter": "b != 'x'"}])
    out, failures = transform.apply(evs)
    assert len(out) + len(failures) + transform.filtered == len(evs)
    for event, reason in failures:
        assert reason
        index = evs.index(event)
        assert event is evs[index]  # the original object ...
        assert event == originals[index]  # ... unchanged
    assert evs == originals  # nothing mutated in place
    for event in out:
        if event.changed is not None:
            assert set(event.changed) <= set(event.after or {})


def _outcome(events_out: list[ChangeEvent]) -> dict[Any, tuple[Any, Any, Any]]:
    # `changed` names a set of fields: its order carries no meaning
    return {e.key: (e.before, e.after, None if e.changed is None else frozenset(e.changed)) for e in events_out}


@settings(max_examples=400)
@given(event_lists(), st.lists(steps(), min_size=1, max_size=6))
@example(  # a later compute removing what an earlier one made: the fused chain once dropped `a` from changed
    [ChangeEvent("t", (0,), "update", after={"a": "x", "c": None}, changed=("a",))],
    [
        {"compute": {"b": "concat(a, '-', a)"}},
        {"compute": {"a": "concat(b, '-', b)"}},
        {"compute": {"b": "concat(a, '-', d)"}},
    ],
)
def test_fused_chain_equals_steps_applied_one_by_one(evs: list[ChangeEvent], chain: list[dict[str, Any]]) -> None:
    fused = compile_transforms(chain)
    fused_out, fused_failures = fused.apply(evs)

    current = list(evs)
    failed_keys: set[Any] = set()
    for step in chain:
        current, failures = compile_transforms([step]).apply(current)
        failed_keys |= {e.key for e, _ in failures}

    assert {e.key for e, _ in fused_failures} == failed_keys
    assert _outcome(fused_out) == _outcome(current)
    assert [e.key for e in fused_out] == [e.key for e in current]
