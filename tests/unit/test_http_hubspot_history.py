"""Splitting a HubSpot update by the time each property last changed (``propertiesWithHistory``), no I/O."""

from __future__ import annotations

from tidesync.sources.http.hubspot_history import Step, changed_at, parse, rows, steps

CURSOR = "lastmodifieddate"


def answer(*records: tuple[str, dict[str, list[tuple[str, str]]]]) -> dict[str, object]:
    """A batch read's answer, history entries given as (value, ISO time), newest first."""
    return {
        "status": "COMPLETE",
        "results": [
            {"id": rid, "properties": {}, "propertiesWithHistory": {
                n: [{"value": v, "timestamp": t, "sourceType": "CRM_UI"} for v, t in es] for n, es in hist.items()}}
            for rid, hist in records
        ],
    }  # fmt: skip


def test_properties_changed_at_different_times_make_steps_oldest_first() -> None:
    hist = parse(answer(("7", {
        "firstname": [("Ann", "1970-01-01T00:00:01.000Z"), ("an", "1970-01-01T00:00:00.100Z")],
        "lastname": [("Lee", "1970-01-01T00:00:03.000Z"), ("Li", "1970-01-01T00:00:00.100Z")],
        "phone": [("555", "1970-01-01T00:00:01.000Z")],
    })))["7"]  # fmt: skip
    row = {"firstname": "Ann", "lastname": "Lee", "phone": "555", CURSOR: "3000", "hs_object_id": "7"}
    changed = ("firstname", "lastname", "phone", CURSOR)
    plan = steps(changed, row, hist, record_ms=3000, cursor=CURSOR)
    assert plan == [Step(1000, ("firstname", "phone")), Step(3000, ("lastname", CURSOR))]

    shadow = {"firstname": "an", "lastname": "Li", "phone": None, CURSOR: "100", "hs_object_id": "7"}
    (b1, a1), (b2, a2) = rows(shadow, row, plan)
    assert b1 == shadow and a1 == {**shadow, "firstname": "Ann", "phone": "555"}
    assert b2 == a1 and a2 == row  # the last step ends at the record as read


def test_a_value_changed_again_after_the_search_keeps_the_time_of_the_value_read() -> None:
    entries = [("new", 9000), ("read", 4000), ("read", 1000)]  # "read" was set twice; "new" came after the search
    assert changed_at(entries, "read") == 4000
    assert changed_at(entries, "gone") is None
    assert changed_at([("", 5000)], None) == 5000  # an emptied property reads as null, its history as ""


def test_no_history_or_only_the_cursor_changed_falls_back_to_the_records_time() -> None:
    row = {"firstname": "A", "lastname": "B", CURSOR: "5000"}
    assert steps(("firstname", "lastname", CURSOR), row, None, record_ms=5000, cursor=CURSOR) == [
        Step(5000, ("firstname", "lastname", CURSOR))
    ]
    assert steps((CURSOR,), row, {}, record_ms=5000, cursor=CURSOR) == [Step(5000, (CURSOR,))]
    # a time after the record's own modification time (clocks, or a later write of the same value) is capped
    assert steps(("firstname",), row, {"firstname": [("A", 8000)]}, record_ms=5000, cursor=CURSOR) == [
        Step(5000, ("firstname",))
    ]


def test_entries_are_taken_newest_first_whatever_order_they_come_in_and_bad_ones_are_skipped() -> None:
    got = parse({"results": [{"id": 5, "propertiesWithHistory": {"x": [
        {"value": "a", "timestamp": "1970-01-01T00:00:01Z"}, {"value": "b", "timestamp": "1970-01-01T00:00:02Z"},
        {"value": "c"}]}}, {"no": "id"}]})  # fmt: skip
    assert got == {"5": {"x": [("b", 2000), ("a", 1000)]}}
    assert parse({"status": "error"}) == {}
