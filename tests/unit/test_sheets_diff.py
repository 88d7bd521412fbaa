"""Snapshot-by-key diff of the sheet sources: inserts, updates with exact ``changed``, deletes."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tidesync.sheets.diff import apply, diff


def test_inserts_updates_and_deletes_with_exact_changed_fields() -> None:
    old = {(1,): {"id": 1, "a": "x", "b": 1}, (2,): {"id": 2, "a": "y", "b": 2}, (3,): {"id": 3, "a": "z", "b": 3}}
    new = {(1,): {"id": 1, "a": "x", "b": 10}, (3,): {"id": 3, "a": "Z", "b": 30}, (4,): {"id": 4, "a": "w", "b": 4}}
    changes = diff(old, new)
    assert [(c.op, c.key, c.changed) for c in changes] == [
        ("update", (1,), ("b",)),
        ("update", (3,), ("a", "b")),
        ("insert", (4,), None),
        ("delete", (2,), None),
    ]
    assert changes[0].before == old[(1,)] and changes[0].after == new[(1,)]
    assert changes[3].before == old[(2,)] and changes[3].after is None


def test_a_change_of_type_is_a_change_and_equal_rows_are_not() -> None:
    old = {(1,): {"v": 1}, (2,): {"v": Decimal("1.0")}, (3,): {"v": "x"}}
    new = {(1,): {"v": True}, (2,): {"v": Decimal("1.0")}, (3,): {"v": "x"}}
    assert [(c.key, c.changed) for c in diff(old, new)] == [((1,), ("v",))]


def test_kept_keys_are_not_deleted_and_a_new_column_is_a_change() -> None:
    old = {(1,): {"v": 1}, (2,): {"v": 2}}
    changes = diff(old, {(1,): {"v": 1, "w": None}}, keep={(2,)})
    assert [(c.op, c.key, c.changed) for c in changes] == [("update", (1,), ("w",))]


rows = st.dictionaries(
    st.tuples(st.integers(0, 20)),
    st.fixed_dictionaries({"a": st.integers(0, 3), "b": st.sampled_from(["x", "y", None])}),
    max_size=15,
)


@given(rows, rows)
def test_applying_the_diff_gives_the_new_snapshot(old: dict, new: dict) -> None:  # type: ignore[type-arg]
    changes = diff(old, new)
    assert apply(old, changes) == new
    assert len({c.key for c in changes}) == len(changes)  # one change per key
    for c in changes:
        if c.op == "update":
            assert c.changed and all(old[c.key][f] != new[c.key][f] for f in c.changed)
