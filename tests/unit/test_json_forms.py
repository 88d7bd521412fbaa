"""JSON bytes that must not change between releases, and the intake parser's limits.

The texts pinned here are the ones tidesync has always written: reconcile's canonical JSON
(a stored digest must keep matching), the Stripe sink's key text (already in Stripe's metadata),
the webhook envelope head and the CloudEvents head (signed, de-duplicated by receivers).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from tidesync.errors import PermanentError, TransientError
from tidesync.event import ChangeEvent
from tidesync.formats import cloudevents
from tidesync.reconcile.canonical import canonical
from tidesync.sinks.nats.wire import ack_outcome
from tidesync.sinks.stripe.config import StripeObject
from tidesync.sinks.stripe.params import build, key_text
from tidesync.sinks.webhook.envelope import body_of, envelope
from tidesync.sources.webhook.provider import PARSER_DEPTH, Malformed, parse_json

WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)


def test_canonical_json_keeps_its_forms() -> None:
    value = {
        "b": [1, 2.5, Decimal("3.25"), 1e16, 1e-7, 1.5e300, float("nan")],
        "a": {"z": WHEN, "y": b"\x00\x01", "x": dt.datetime(2024, 1, 2), "w": dt.date(2024, 1, 2)},
        "u": uuid.UUID(int=5),
        "s": {1, 2},
        "t": dt.timedelta(seconds=5),
        "é": "x\u2028\x1f</",
    }
    assert canonical("json", value) == (
        '{"a":{"w":"2024-01-02","x":"2024-01-02T00:00:00","y":"0001","z":"2024-01-02T03:04:05.000006+00:00"},'
        '"b":[1,2.5,3.25,1e+16,1e-7,1.5e+300,null],"s":"{1, 2}","t":"0:00:05",'
        '"u":"00000000-0000-0000-0000-000000000005","é":"x\u2028\\u001f</"}'
    )
    # Text is parsed first, then written the same way (sorted keys, compact, "1e+22").
    assert canonical("json", '{"b": [1e22, 1.0], "a": null}') == '{"a":null,"b":[1e+22,1.0]}'
    assert canonical("array", [WHEN, Decimal("1.50")]) == '["2024-01-02T03:04:05.000006+00:00",1.5]'
    assert canonical("json", '{"a": 1e16, "b": "3e4", "c": [1e-7]}') == '{"a":1e+16,"b":"3e4","c":[1e-7]}'
    assert canonical("json", "[" * 255 + "]" * 255).startswith("\x00str:")  # past the depth, as an object is
    assert canonical("json", "not json") == "snot json"
    assert canonical("json", b"\xff") == "sff"


def test_canonical_json_integers_are_exact_at_any_size() -> None:
    big = 2**70 + 1
    assert canonical("json", {"id": big}) == canonical("json", f'{{"id": {big}}}') == f'{{"id":{big}}}'
    assert canonical("json", {"id": big}) != canonical("json", {"id": big + 1})


def test_canonical_json_without_a_form_is_tagged_as_before() -> None:
    deep: Any = 1
    for _ in range(255):  # one level past what canonical JSON has always written
        deep = [deep]
    assert canonical("json", deep).startswith("\x00list:")
    assert canonical("json", deep[0]).startswith("[[[")
    assert canonical("json", {1: 2}) == "\x00dict:{1: 2}"  # keys must be text
    assert canonical("json", [dt.time(1, tzinfo=dt.UTC)]).startswith("\x00list:")


def test_the_stripe_key_text_keeps_its_forms() -> None:
    assert key_text((7,)) == "7"
    assert key_text((Decimal("10.50"), WHEN)) == '["10.50","2024-01-02T03:04:05.000006+00:00"]'
    assert key_text((uuid.UUID(int=3), b"\x00a", 1e16, 2.5, None, True)) == (
        '["00000000-0000-0000-0000-000000000003","b\'\\\\x00a\'",1e+16,2.5,null,true]'
    )
    assert key_text((2**70, "eu")) == '[1180591620717411303424,"eu"]'  # exact (was refused)


def test_a_metadata_column_that_is_not_json_is_a_permanent_error() -> None:
    obj = StripeObject.model_validate({"object": "customers", "metadata_column": "meta"})
    assert build(obj, {"meta": '{"plan": "pro"}'}, ["meta"]) == {"metadata": {"plan": "pro"}}
    with pytest.raises(PermanentError, match="column 'meta' is not a JSON object: "):
        build(obj, {"meta": "{nope"}, ["meta"])
    with pytest.raises(PermanentError, match="column 'meta' is not a JSON object: nested too deep"):
        build(obj, {"meta": "[" * 5000 + "]" * 5000}, ["meta"])


def test_envelope_and_cloudevents_heads_are_compact_and_ordered() -> None:
    event = ChangeEvent("public.orders", (42,), "update", None, {"n": 1}, ("n",), (5,), WHEN.timestamp())
    body = envelope(event, "msg_1")
    assert body.startswith(b'{"id":"msg_1","type":"public.orders.update","timestamp":"2024-01-02T03:04:05.000006Z",')
    bid, batch = body_of([body, body], ["msg_1", "msg_2"], True, WHEN.timestamp())
    head = b'{"id":"%s","type":"batch","timestamp":"2024-01-02T03:04:05.000006Z","data":[' % bid.encode()
    assert batch == head + body + b"," + body + b"]}"
    ce = cloudevents.encoder(pipeline="p q", sink="s")(event)
    assert ce.startswith(b'{"specversion":"1.0","id":"msg_')
    assert b'"source":"tidesync/p%20q","type":"io.tidesync.update","subject":"public.orders/42",' in ce
    assert b'"time":"2024-01-02T03:04:05.000006Z","datacontenttype":"application/json","data":{' in ce


def _from_deep_stack(levels: int, fn: Any) -> Any:
    return fn() if levels == 0 else _from_deep_stack(levels - 1, fn)


@pytest.mark.parametrize("stack", [0, 800])
def test_the_intake_parses_to_the_same_depth_from_any_stack(stack: int) -> None:
    def deep(n: int) -> bytes:
        return b'{"a":' * n + b"1" + b"}" * n

    assert _from_deep_stack(stack, lambda: parse_json(deep(PARSER_DEPTH)))["a"]["a"]["a"]
    with pytest.raises(Malformed, match=r"^body nested too deep$"):
        _from_deep_stack(stack, lambda: parse_json(deep(PARSER_DEPTH + 1)))
    with pytest.raises(Malformed, match=r"^body is not valid JSON$"):
        _from_deep_stack(stack, lambda: parse_json(b"[" * (PARSER_DEPTH - 1) + b"x"))
    # brackets inside strings do not count
    assert parse_json(b'{"a":"' + b"[" * 5000 + b'"}') == {"a": "[" * 5000}


def test_the_intake_keeps_integers_past_64_bits_exact() -> None:
    doc = parse_json(b'{"id": 123456789012345678901234567890, "small": 9223372036854775807}')
    assert doc == {"id": Decimal("123456789012345678901234567890"), "small": 2**63 - 1}
    assert type(doc["small"]) is int
    for bad in (b"", b"{bad", b"NaN", b"[1] x", b"[1e400]", b'"\xff"', b"\xef\xbb\xbf{}"):
        with pytest.raises(Malformed, match=r"^body is not valid JSON$"):
            parse_json(bad)


class _Reply:
    def __init__(self, data: bytes) -> None:
        self.headers = None
        self.data = data


@pytest.mark.parametrize("data", [b"{bad", b"[" * 5000, b"[" * 5000 + b"]" * 5000, b"[1]"])
def test_an_unreadable_nats_ack_is_transient(data: bytes) -> None:
    outcome = ack_outcome(_Reply(data), "s.x", "S")  # type: ignore[arg-type]
    assert isinstance(outcome, TransientError) and "an unreadable publish ack" in str(outcome)


def test_a_nats_ack_says_whether_it_was_stored() -> None:
    assert ack_outcome(_Reply(b'{"stream":"S","seq":1}'), "s.x", "S") is True  # type: ignore[arg-type]
    assert ack_outcome(_Reply(b'{"stream":"S","seq":1,"duplicate":true}'), "s.x", "S") is False  # type: ignore[arg-type]
