"""Filters as the edge of what the destination holds (``on_exit``), and before images that never fail an event."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tidesync.event import ChangeEvent
from tidesync.transform import FilterStep, compile_transforms, parse_steps

FILTER = "status != 'deleted'"


def update(before: dict[str, object] | None, after: dict[str, object], changed: tuple[str, ...]) -> ChangeEvent:
    return ChangeEvent("public.customers", (1,), "update", before, after, changed, (7, 0), 1.5, "crm", 42)


def one(steps: list[dict[str, object]], event: ChangeEvent) -> ChangeEvent | None:
    out, failures = compile_transforms(steps).apply([event])
    assert failures == []
    return out[0] if out else None


# --- config ------------------------------------------------------------------------------


def test_plain_string_means_on_exit_delete() -> None:
    (step,) = parse_steps([{"filter": FILTER}])
    assert isinstance(step, FilterStep)
    assert (step.filter.when, step.filter.on_exit) == (FILTER, "delete")


def test_mapping_form_and_its_errors_are_located() -> None:
    (step,) = parse_steps([{"filter": {"when": FILTER, "on_exit": "keep"}}])
    assert isinstance(step, FilterStep) and step.filter.on_exit == "keep"
    with pytest.raises(ValidationError) as info:
        parse_steps([{"filter": {"when": FILTER, "on_exit": "drop"}}])
    assert info.value.errors()[0]["loc"] == (0, "filter", "on_exit")
    with pytest.raises(ValidationError) as info:
        parse_steps([{"filter": {"when": "a +"}}])
    assert info.value.errors()[0]["loc"] == (0, "filter", "when")
    with pytest.raises(ValidationError) as info:
        parse_steps([{"filter": {"when": FILTER, "extra": 1}}])
    assert info.value.errors()[0]["loc"] == (0, "filter", "extra")


# --- leaving the filter -----------------------------------------------------------------


@pytest.mark.parametrize("before", [None, {"status": "ok", "name": "a"}])
def test_update_leaving_the_filter_becomes_a_delete_of_its_key(before: dict[str, object] | None) -> None:
    event = update(before, {"status": "deleted", "name": "a"}, ("status",))
    out = one([{"filter": FILTER}], event)
    assert out is not None
    assert (out.op, out.key, out.before, out.after, out.changed) == ("delete", (1,), before, None, None)
    assert (out.position, out.committed_at, out.origin, out.txid) == ((7, 0), 1.5, "crm", 42)


def test_update_leaving_with_on_exit_keep_is_filtered_out() -> None:
    transform = compile_transforms([{"filter": {"when": FILTER, "on_exit": "keep"}}])
    out, failures = transform.apply([update({"status": "ok"}, {"status": "deleted"}, ("status",))])
    assert (out, failures, transform.filtered) == ([], [], 1)


def test_update_outside_before_and_after_is_filtered_out() -> None:
    transform = compile_transforms([{"filter": FILTER}])
    out, _ = transform.apply([update({"status": "deleted", "n": 1}, {"status": "deleted", "n": 2}, ("n",))])
    assert out == [] and transform.filtered == 1


def test_update_leaving_reads_unchanged_fields_from_before() -> None:
    # status is unchanged (absent from after) and matched: the update stays an update.
    event = update({"status": "ok", "n": 1}, {"n": 2}, ("n",))
    assert one([{"filter": FILTER}], event) is event


# --- entering the filter ----------------------------------------------------------------


def test_update_entering_the_filter_becomes_an_insert_of_the_whole_row() -> None:
    event = update({"status": "deleted", "name": "a", "n": 1}, {"status": "ok"}, ("status",))
    out = one([{"filter": FILTER}], event)
    assert out is not None
    assert (out.op, out.before, out.after, out.changed) == ("insert", None, {"status": "ok", "name": "a", "n": 1}, None)
    assert out.position == (7, 0)


def test_update_entering_with_unknown_before_passes_unchanged() -> None:
    event = update(None, {"status": "ok", "name": "a"}, ("status",))
    assert one([{"filter": FILTER}], event) is event


def test_entering_sees_the_row_as_earlier_steps_left_it() -> None:
    steps = [{"rename": {"st": "status"}}, {"filter": FILTER}, {"drop": ["secret"]}]
    event = update({"st": "deleted", "secret": "s", "a": 1}, {"st": "new"}, ("st",))
    out = one(steps, event)
    assert out is not None and out.op == "insert" and out.after == {"status": "new", "a": 1}


# --- deletes, inserts -------------------------------------------------------------------


def test_delete_passes_unless_its_before_did_not_match() -> None:
    key_only = ChangeEvent("t", (1,), "delete")
    partial = ChangeEvent("t", (2,), "delete", before={"id": 2})
    outside = ChangeEvent("t", (3,), "delete", before={"status": "deleted"})
    inside = ChangeEvent("t", (4,), "delete", before={"status": "ok"})
    out, failures = compile_transforms([{"filter": FILTER}]).apply([key_only, partial, outside, inside])
    assert out == [key_only, partial, inside] and failures == []


def test_insert_and_snapshot_are_kept_only_when_matching() -> None:
    events = [
        ChangeEvent("t", (1,), "insert", after={"status": "ok"}),
        ChangeEvent("t", (2,), "snapshot", after={"status": "deleted"}),
        ChangeEvent("t", (3,), "snapshot", after={"status": "new"}),
    ]
    out, _ = compile_transforms([{"filter": {"when": FILTER, "on_exit": "keep"}}]).apply(events)
    assert out == [events[0], events[2]]


# --- before images never fail an event --------------------------------------------------


def test_healing_update_is_applied_and_its_before_kept_as_it_was() -> None:
    steps = [{"cast": {"age": "int"}}, {"compute": {"next": "age + 1"}}]
    event = update({"age": "ten"}, {"age": "11"}, ("age",))
    out, failures = compile_transforms(steps).apply([event])
    assert failures == []
    assert out[0].after == {"age": 11, "next": 12}
    assert out[0].before == {"age": "ten"}  # the failed cast kept the value, the computation is unknown
    assert out[0].changed == ("age", "next")


def test_bad_after_still_fails() -> None:
    event = update({"age": "10"}, {"age": "ten"}, ("age",))
    out, failures = compile_transforms([{"cast": {"age": "int"}}]).apply([event])
    assert out == [] and failures == [(event, "cast age: cannot convert 'ten' to int")]


def test_later_cast_in_before_image_is_best_effort_too() -> None:
    steps = [{"set": {"k": 1}}, {"cast": {"age": "int"}}]  # a cast after set runs as an in-place step
    out, failures = compile_transforms(steps).apply([update({"age": "x"}, {"age": "2"}, ("age",))])
    assert failures == [] and out[0].before == {"age": "x", "k": 1} and out[0].after == {"age": 2, "k": 1}


def test_a_before_image_the_filter_cannot_evaluate_counts_as_unknown() -> None:
    steps = [{"filter": "score > 10"}]
    leaving = update({"score": "n/a"}, {"score": 3}, ("score",))
    out = one(steps, leaving)
    assert out is not None and out.op == "delete"
    staying = update({"score": "n/a"}, {"score": 30}, ("score",))
    assert one(steps, staying) is staying
