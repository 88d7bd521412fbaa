"""The HubSpot sink's pure parts: values cast by property type, waves that keep per-key order, and holds
taken from HubSpot's rate-limit headers (on a fake clock)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tidesync.event import ChangeEvent
from tidesync.sinks.hubspot.api import Rejected, _answer
from tidesync.sinks.hubspot.pacing import RateLimitHeaders
from tidesync.sinks.hubspot.plan import key_text, waves
from tidesync.sinks.hubspot.properties import CastError, Property, PropertyModel
from tidesync.sources.http.ratelimit import TokenBucket
from tidesync.testing import FakeClock
from tidesync.testing.hubspot_crm import LIFECYCLE, prop

MODEL = PropertyModel.from_api("contacts", [
    prop("email"), prop("score", "number"), prop("vip", "bool"), prop("birthdate", "date"),
    prop("last_seen", "datetime"), prop("lifecyclestage", "enumeration", options=LIFECYCLE),
    prop("tags", "enumeration", options=["a", "b", "c"], field_type="checkbox"),
])  # fmt: skip


@pytest.mark.parametrize(("name", "value", "sent"), [
    ("email", "a@x", "a@x"), ("email", None, ""), ("email", 5, "5"), ("email", {"a": [1]}, '{"a":[1]}'),
    ("score", 3, "3"), ("score", Decimal("2.50"), "2.5"), ("score", "1e3", "1000"), ("score", 0.5, "0.5"),
    ("vip", True, "true"), ("vip", "no", "false"), ("vip", 1, "true"),
    ("birthdate", dt.date(1990, 5, 17), "642902400000"),
    ("birthdate", dt.datetime(1990, 5, 17, 23, 59, tzinfo=dt.UTC), "642902400000"),
    ("birthdate", "1990-05-17", "642902400000"),
    ("last_seen", dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC), "1704164645678"),
    ("last_seen", dt.datetime(2024, 1, 2, 3, 4, 5), "1704164645000"),  # naive: UTC
    ("last_seen", "2024-01-02T03:04:05Z", "1704164645000"),
    ("lifecyclestage", "customer", "customer"), ("tags", "a;c", "a;c"),
])  # fmt: skip
def test_values_are_cast_to_the_property_type(name: str, value: Any, sent: str) -> None:
    assert MODEL.cast(name, value) == sent


@pytest.mark.parametrize(("name", "value", "says"), [
    ("score", "many", "not a number"), ("score", True, "boolean"), ("score", "NaN", "finite"),
    ("vip", "perhaps", "true or false"), ("birthdate", "someday", "date or time"),
    ("lifecyclestage", "platinum", "'platinum' is not one of its options"), ("tags", "a;z", "'z'"),
])  # fmt: skip
def test_a_value_the_type_cannot_hold_is_a_permanent_cast_error(name: str, value: Any, says: str) -> None:
    with pytest.raises(CastError, match=says) as caught:
        MODEL.cast(name, value)
    assert caught.value.error_class == "permanent" and name in str(caught.value)


def test_waves_put_the_nth_event_of_each_key_in_wave_n() -> None:
    def e(entity: str, k: int) -> ChangeEvent:
        return ChangeEvent(entity, (k,), "update")

    events = [e("a", 1), e("a", 2), e("a", 1), e("b", 1), e("a", 1), e("a", 2)]
    assert waves(events) == [[0, 1, 3], [2, 5], [4]]
    assert waves(events, {0}) == [[1, 2, 3], [4, 5]]
    assert key_text((7,)) == "7" and key_text(("x", 2)) == '["x",2]'


def test_headers_that_say_the_budget_is_spent_hold_until_the_oldest_answer_leaves_the_interval() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 100, clock=clock)
    pacing = RateLimitHeaders(bucket, clock, httpx.AsyncHTTPTransport())
    spent = httpx.Headers({"X-HubSpot-RateLimit-Max": "3", "X-HubSpot-RateLimit-Remaining": "0",
                           "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})  # fmt: skip
    start = clock.monotonic()
    pacing.observe(spent, start)  # nothing seen before: one request's share of the interval
    assert bucket.wait_time(start) == pytest.approx(10 / 3)
    for t in (start, start + 1, start + 2):
        pacing._answered.append(t)
    clock.advance(2)
    pacing.observe(spent, start + 2)
    assert bucket.wait_time(start + 2) == pytest.approx(8)  # the answer at `start` leaves at start + 10
    pacing.observe(httpx.Headers({"X-HubSpot-RateLimit-Secondly-Remaining": "0"}), start + 2)
    assert pacing.holds == 3


def test_answers_and_refusals_are_read_in_hubspots_shapes() -> None:
    answer = _answer({"status": "COMPLETE", "results": [{"id": "1"}], "numErrors": 2, "errors": [
        {"status": "error", "category": "VALIDATION_ERROR", "message": "bad", "context": {"objectWriteTraceId": ["3"]}},
        {"status": "error", "category": "RATE_LIMITS", "message": "slow", "context": {"ids": ["77"]}},
    ]})  # fmt: skip
    assert [r["id"] for r in answer.results] == ["1"]
    assert not answer.errors["3"].transient and answer.errors["77"].transient
    body = {"status": "error", "category": "VALIDATION_ERROR",
            "message": 'Property values were not valid: [{"isValid":false,"message":"Property \\"shoe\\" does not '
                       'exist","error":"PROPERTY_DOESNT_EXIST","name":"shoe"}]'}  # fmt: skip
    assert Rejected("400", 400, body).property_names() == {"shoe"}
    assert Property.from_api(prop("x", "enumeration", options=["p"])).options == frozenset({"p"})
