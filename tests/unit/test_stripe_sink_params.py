"""The Stripe sink's pure parts: form encoding with nested keys, a row's parameters, price immutability."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidesync.errors import PermanentError
from tidesync.sinks.stripe import prices
from tidesync.sinks.stripe.config import StripeObject
from tidesync.sinks.stripe.forms import encode, flatten, scalar
from tidesync.sinks.stripe.params import build, key_text
from tidesync.testing.stripe_writes import parse_form

# Names start with a letter: an all-digit name is a list index in a form (Stripe's reading too).
names = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_ .é-]{0,7}", fullmatch=True)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
nested = st.recursive(texts, lambda inner: st.dictionaries(names, inner, min_size=1, max_size=4), max_leaves=12)


@given(st.dictionaries(names, nested, max_size=5))
def test_nested_parameters_survive_the_form_and_the_fakes_parser(params: dict[str, Any]) -> None:
    assert parse_form(encode(params)) == params


def test_encoding_keeps_order_and_writes_values_as_stripe_reads_them() -> None:
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    params = {"b": True, "a": {"z": None, "y": Decimal("12.50")}, "l": ["x", 2], "t": when, "d": dt.date(2024, 1, 2)}
    assert flatten(params) == [("b", "true"), ("a[z]", ""), ("a[y]", "12.50"), ("l[0]", "x"), ("l[1]", "2"),
                               ("t", str(int(when.timestamp()))), ("d", "2024-01-02")]  # fmt: skip
    assert encode({"metadata": {"note": "a&b=c"}}) == b"metadata[note]=a%26b%3Dc"
    assert scalar(Decimal("1E+3")) == "1000" and scalar(0.1) == "0.1"


def test_a_row_becomes_parameters_metadata_and_nested_keys() -> None:
    obj = StripeObject(object="customers")
    row = {"id": 7, "email": "a@b.co", "address.city": "Lyon", "metadata": {"tier": "gold"}, "plan": "pro",
           "shipping": {"name": "A", "address": {"line1": "1 rue"}}}  # fmt: skip
    assert build(obj, row, tuple(row)) == {
        "email": "a@b.co", "address": {"city": "Lyon"}, "shipping": {"name": "A", "address": {"line1": "1 rue"}},
        "metadata": {"tier": "gold", "plan": "pro"},
    }  # fmt: skip
    before = {"metadata": '{"tier": "gold", "old": "x"}'}
    assert build(obj, {"metadata": '{"tier": "platinum"}'}, ("metadata",), before=before) == {
        "metadata": {"old": "", "tier": "platinum"}
    }
    with pytest.raises(PermanentError, match="plan"):
        build(StripeObject(object="customers", extra_columns="error"), row, ("plan",))
    assert build(StripeObject(object="customers", extra_columns="ignore"), row, ("plan", "id")) == {}
    assert key_text((7,)) == "7" and key_text((1, "a")) == '[1,"a"]'


def test_only_immutable_price_parameters_make_a_new_price() -> None:
    a = {"product": "prod_1", "currency": "eur", "unit_amount": 100, "nickname": "x", "metadata": {"k": "v"}}
    assert prices.fingerprint(a) == prices.fingerprint({**a, "nickname": "y", "active": False})
    assert prices.fingerprint(a) != prices.fingerprint({**a, "unit_amount": 200})
    assert prices.mutable_part(a) == {"nickname": "x", "metadata": {"k": "v"}}
    assert prices.replacement({**a, "lookup_key": "gold"})["transfer_lookup_key"] is True
