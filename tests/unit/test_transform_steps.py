"""The built-in steps on events: row images, ``changed``, unknown fields, scoping, counters."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tidesync.event import ChangeEvent
from tidesync.transform import compile_transforms


def insert(after: dict[str, Any], entity: str = "public.customers", key: tuple[Any, ...] = (1,)) -> ChangeEvent:
    return ChangeEvent(entity, key, "insert", after=after, position=(7,), committed_at=12.5, origin="crm", txid=9)


def update(before: dict[str, Any] | None, after: dict[str, Any], changed: tuple[str, ...]) -> ChangeEvent:
    return ChangeEvent("public.customers", (1,), "update", before=before, after=after, changed=changed)


def run(steps: list[dict[str, Any]], *events: ChangeEvent) -> list[ChangeEvent]:
    out, failures = compile_transforms(steps).apply(list(events))
    assert failures == []
    return out


def one(steps: list[dict[str, Any]], event: ChangeEvent) -> ChangeEvent:
    (result,) = run(steps, event)
    return result


# --- rename -----------------------------------------------------------------------------


def test_rename_renames_and_keeps_the_rest_and_event_fields() -> None:
    e = one([{"rename": {"email": "email_address"}}], insert({"id": 1, "email": "a@x", "name": "A"}))
    assert e.after == {"id": 1, "email_address": "a@x", "name": "A"}
    assert (e.entity, e.key, e.op, e.position, e.committed_at, e.origin, e.txid) == (
        "public.customers",
        (1,),
        "insert",
        (7,),
        12.5,
        "crm",
        9,
    )
    assert e.changed is None


def test_rename_is_simultaneous_so_a_mapping_can_swap() -> None:
    e = one([{"rename": {"a": "b", "b": "a"}}], insert({"a": 1, "b": 2}))
    assert e.after == {"a": 2, "b": 1}


def test_rename_replaces_a_field_already_named_like_the_target() -> None:
    e = one([{"rename": {"a": "b"}}], insert({"a": 1, "b": 2, "c": 3}))
    assert e.after == {"b": 1, "c": 3}
    # ... also when the source field is unknown in this update: b is a's name now.
    e = one([{"rename": {"a": "b"}}], update(None, {"b": 2, "c": 3}, ("b", "c")))
    assert e.after == {"c": 3}
    assert e.changed == ("c",)


def test_rename_maps_before_and_changed_and_never_key() -> None:
    e = one(
        [{"rename": {"email": "email_address"}}],
        update({"id": 1, "email": "old@x"}, {"id": 1, "email": "new@x"}, ("email",)),
    )
    assert e.before == {"id": 1, "email_address": "old@x"}
    assert e.after == {"id": 1, "email_address": "new@x"}
    assert e.changed == ("email_address",)
    assert e.key == (1,)


def test_consecutive_renames_compose() -> None:
    steps = [{"rename": {"a": "b"}}, {"rename": {"b": "c"}}, {"rename": {"x": "a"}}]
    e = one(steps, update(None, {"a": 1, "x": 2, "y": 3}, ("a", "x", "y")))
    assert e.after == {"c": 1, "a": 2, "y": 3}
    assert set(e.changed or ()) == {"c", "a", "y"}


# --- select / drop ----------------------------------------------------------------------


def test_select_keeps_only_selected_in_select_order() -> None:
    e = one([{"select": ["name", "id", "missing"]}], insert({"id": 1, "email": "a@x", "name": "A"}))
    assert list(e.after or {}) == ["name", "id"]


def test_select_after_rename_uses_new_names_and_maps_changed() -> None:
    steps = [{"rename": {"email": "email_address"}}, {"select": ["id", "email_address"]}]
    e = one(steps, update({"id": 1, "email": "o", "x": 1}, {"id": 1, "email": "n", "x": 2}, ("email", "x")))
    assert e.after == {"id": 1, "email_address": "n"}
    assert e.before == {"id": 1, "email_address": "o"}
    assert e.changed == ("email_address",)


def test_drop_removes_fields_from_images_and_changed() -> None:
    e = one(
        [{"drop": ["internal_notes"]}],
        update({"id": 1, "internal_notes": "a"}, {"id": 1, "internal_notes": "b"}, ("internal_notes",)),
    )
    assert e.after == {"id": 1}
    assert e.before == {"id": 1}
    assert e.changed == ()


def test_drop_of_a_key_column_keeps_the_key_values() -> None:
    e = one([{"drop": ["id"]}], insert({"id": 1, "name": "A"}))
    assert e.after == {"name": "A"}
    assert e.key == (1,)


# --- set --------------------------------------------------------------------------------


def test_set_adds_constants_to_both_images_not_to_changed() -> None:
    e = one([{"set": {"source_system": "crm", "n": 1}}], update({"id": 1}, {"id": 1, "v": 2}, ("v",)))
    assert e.after == {"id": 1, "v": 2, "source_system": "crm", "n": 1}
    assert e.before == {"id": 1, "source_system": "crm", "n": 1}
    assert e.changed == ("v",)


def test_set_overwrites_and_an_overwritten_field_is_no_longer_changed() -> None:
    e = one([{"set": {"status": "active"}}], update(None, {"status": "x"}, ("status",)))
    assert e.after == {"status": "active"}
    assert e.changed == ()


def test_set_json_constant_is_not_shared_between_rows() -> None:
    a, b = run([{"set": {"tags": ["x"]}}], insert({"id": 1}), insert({"id": 2}))
    assert a.after is not None and b.after is not None
    assert a.after["tags"] == ["x"]
    assert a.after["tags"] is not b.after["tags"]


# --- compute ----------------------------------------------------------------------------


def test_compute_adds_fields_from_expressions() -> None:
    steps = [
        {"cast": {"score": "decimal"}},
        {"compute": {"full_name": "first_name + ' ' + last_name", "score2": "round(score * 1.1, 2)"}},
    ]
    e = one(steps, insert({"first_name": "Ada", "last_name": "Lovelace", "score": "10.05"}))
    assert e.after is not None
    assert e.after["full_name"] == "Ada Lovelace"
    assert e.after["score2"] == Decimal("11.06")


def test_compute_does_not_invent_values_from_unknown_inputs() -> None:
    # last_name is absent from the update (e.g. an unchanged TOASTed column): full_name is unknown too.
    steps = [{"compute": {"full_name": "first_name + ' ' + last_name"}}]
    e = one(steps, update(None, {"id": 1, "first_name": "Ada", "full_name": "stale"}, ("first_name",)))
    assert e.after == {"id": 1, "first_name": "Ada"}
    assert e.changed == ("first_name",)


def test_compute_is_changed_when_any_input_is() -> None:
    steps = [{"compute": {"full_name": "first_name + ' ' + last_name"}}]
    after = {"first_name": "Ada", "last_name": "King"}
    changed_input = one(steps, update(None, dict(after), ("last_name",)))
    assert changed_input.changed == ("last_name", "full_name")
    unchanged_inputs = one(steps, update(None, dict(after, email="e"), ("email",)))
    assert unchanged_inputs.after is not None and unchanged_inputs.after["full_name"] == "Ada King"
    assert unchanged_inputs.changed == ("email",)
    # The source changed full_name itself, but the value written is computed from unchanged inputs.
    overwritten = one(steps, update(None, dict(after, full_name="X"), ("full_name",)))
    assert overwritten.changed == ()


def test_compute_can_overwrite_its_input() -> None:
    e = one([{"compute": {"email": "lower(trim(email))"}}], update(None, {"email": " A@X "}, ("email",)))
    assert e.after == {"email": "a@x"}
    assert e.changed == ("email",)


def test_compute_null_input_is_null_not_a_failure() -> None:
    e = one([{"compute": {"e": "lower(email)", "s": "score * 2"}}], insert({"email": None, "score": None}))
    assert e.after == {"email": None, "score": None, "e": None, "s": None}


def test_compute_runtime_error_is_a_failure_naming_inputs() -> None:
    transform = compile_transforms([{"compute": {"ratio": "a / b"}}])
    bad = insert({"a": 1, "b": 0})
    out, failures = transform.apply([bad, insert({"a": 1, "b": 4})])
    assert failures == [(bad, "compute ratio: division by zero (a=1, b=0)")]
    assert out[0].after == {"a": 1, "b": 4, "ratio": 0.25}


def test_compute_type_error_reason() -> None:
    transform = compile_transforms([{"compute": {"label": "name + 1"}}])
    _, failures = transform.apply([insert({"name": "x"})])
    assert failures[0][1] == "compute label: can only concatenate str (not \"int\") to str (name='x')"


# --- filter -----------------------------------------------------------------------------


def test_filter_keeps_matching_and_counts_the_rest() -> None:
    transform = compile_transforms([{"filter": "status != 'deleted' and country in ('DE', 'FR')"}])
    events = [
        insert({"status": "ok", "country": "DE"}),
        insert({"status": "deleted", "country": "DE"}),
        insert({"status": "ok", "country": "US"}),
        insert({"status": None, "country": "FR"}),
    ]
    out, failures = transform.apply(events)
    assert out == [events[0], events[3]]
    assert failures == []
    assert transform.filtered == 2
    transform.apply(events)
    assert transform.filtered == 4


def test_filter_on_delete_uses_before() -> None:
    transform = compile_transforms([{"filter": "country == 'DE'"}])
    keep = ChangeEvent("t", (1,), "delete", before={"country": "DE"})
    skip = ChangeEvent("t", (2,), "delete", before={"country": "US"})
    out, _ = transform.apply([keep, skip])
    assert out == [keep]


def test_filter_sees_the_row_as_earlier_steps_left_it() -> None:
    transform = compile_transforms([{"rename": {"c": "country"}}, {"filter": "country == 'DE'"}])
    out, _ = transform.apply([insert({"c": "DE"}), insert({"c": "US"})])
    assert [e.after for e in out] == [{"country": "DE"}]


def test_filter_on_unknown_update_field_reads_before_else_fails() -> None:
    transform = compile_transforms([{"filter": "status == 'ok'"}])
    with_before = update({"status": "ok", "v": 1}, {"v": 2}, ("v",))
    without = update(None, {"v": 2}, ("v",))
    out, failures = transform.apply([with_before, without])
    assert out == [with_before]
    assert failures == [(without, "filter \"status == 'ok'\": field 'status' is unknown (absent from the row)")]


def test_filter_runtime_error_is_a_failure() -> None:
    transform = compile_transforms([{"filter": "score > 'x'"}])
    _, failures = transform.apply([insert({"score": 3})])
    assert failures[0][1] == "filter \"score > 'x'\": '>' not supported between instances of 'int' and 'str'"


# --- truncate, scoping, caching ---------------------------------------------------------


def test_truncate_passes_every_step_untouched() -> None:
    steps = [{"filter": "False"}, {"rename": {"a": "b"}}, {"cast": {"x": "int"}}]
    event = ChangeEvent("public.customers", (), "truncate")
    out, failures = compile_transforms(steps).apply([event])
    assert out == [event]
    assert out[0] is event
    assert failures == []


def test_entity_scope_name_list_and_glob() -> None:
    steps = [
        {"rename": {"a": "b"}, "entity": "public.customers"},
        {"set": {"s": 1}, "entity": ["public.orders", "crm.*"]},
        {"set": {"all": True}},
    ]
    transform = compile_transforms(steps)
    events = [
        insert({"a": 1}, entity="public.customers"),
        insert({"a": 1}, entity="public.orders"),
        insert({"a": 1}, entity="crm.deals"),
        insert({"a": 1}, entity="billing.invoices"),
    ]
    out, _ = transform.apply(events)
    assert [e.after for e in out] == [
        {"b": 1, "all": True},
        {"a": 1, "s": 1, "all": True},
        {"a": 1, "s": 1, "all": True},
        {"a": 1, "all": True},
    ]


def test_entities_no_step_applies_to_pass_as_is() -> None:
    transform = compile_transforms([{"rename": {"a": "b"}, "entity": "x.*"}])
    event = insert({"a": 1}, entity="public.t")
    out, _ = transform.apply([event])
    assert out[0] is event
    assert transform.chain_for("public.t") is None
    assert transform.chain_for("x.y") is not None


def test_chain_is_compiled_once_per_entity() -> None:
    transform = compile_transforms([{"rename": {"a": "b"}}])
    first = transform.chain_for("t")
    transform.apply([insert({"a": 1}, entity="t")])
    assert transform.chain_for("t") is first


def test_steps_after_a_filter_and_interleaved_row_steps() -> None:
    steps = [
        {"cast": {"n": "int"}},
        {"compute": {"double": "n * 2"}},
        {"rename": {"double": "twice"}},  # a structural step after compute: a second pass
        {"filter": "twice > 2"},
        {"cast": {"twice": "string"}},
        {"drop": ["n"]},
    ]
    transform = compile_transforms(steps)
    out, failures = transform.apply([insert({"n": "1"}), insert({"n": "5"})])
    assert failures == []
    assert [e.after for e in out] == [{"twice": "10"}]
    assert transform.filtered == 1


def test_call_one_event() -> None:
    transform = compile_transforms([{"rename": {"a": "b"}}, {"filter": "b > 1"}])
    assert transform(insert({"a": 2})).after == {"b": 2}  # type: ignore[union-attr]
    assert transform(insert({"a": 1})) is None
