"""The Stripe fake's fidelity: the official ``stripe`` SDK, pointed at it, writes and parses every answer.

The SDK encodes its own forms (nested keys), sends its own idempotency keys, and
turns each answer into its typed objects, or each error into its exception
classes; a fake answering in another shape fails here. The sink's encoder is
checked against the SDK's too: the same parameters reach the fake the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import stripe

from tests.integration.webhook_support import serve
from tidesync.sinks.stripe.forms import encode
from tidesync.testing.stripe import FakeStripe
from tidesync.testing.stripe_writes import parse_form

KEY = "sk_test_fake"


def opts(key: str) -> dict[str, Any]:
    return {"idempotency_key": key}


async def test_the_sdk_creates_updates_deletes_customers_products_and_prices_on_the_fake() -> None:
    fake = FakeStripe()
    async with serve(app=fake.app) as api:
        sdk = stripe.StripeClient(KEY, base_addresses={"api": api.url}, max_network_retries=0)

        def scenario() -> None:
            cus = sdk.v1.customers.create(
                params={"email": "ada@example.com", "name": "Ada", "metadata": {"plan": "pro"},
                        "address": {"city": "Lyon", "country": "FR"}, "preferred_locales": ["fr", "en"]},
                options=opts("k-cus-1"),
            )  # fmt: skip
            assert isinstance(cus, stripe.Customer) and cus.id.startswith("cus_")
            assert cus.metadata["plan"] == "pro" and cus.address is not None and cus.address.city == "Lyon"
            assert cus.preferred_locales == ["fr", "en"] and cus.balance == 0
            again = sdk.v1.customers.create(
                params={"email": "ada@example.com", "name": "Ada", "metadata": {"plan": "pro"},
                        "address": {"city": "Lyon", "country": "FR"}, "preferred_locales": ["fr", "en"]},
                options=opts("k-cus-1"),
            )  # fmt: skip
            assert again.id == cus.id  # replayed, not created twice
            with pytest.raises(stripe.IdempotencyError):
                sdk.v1.customers.create(params={"email": "other@example.com"}, options=opts("k-cus-1"))
            upd = sdk.v1.customers.update(
                cus.id, params={"name": "Ada L.", "metadata": {"plan": "", "seats": "3"}}, options=opts("k-cus-2")
            )
            assert upd.name == "Ada L." and upd.metadata.to_dict() == {"seats": "3"}
            assert sdk.v1.customers.retrieve(cus.id).email == "ada@example.com"
            with pytest.raises(stripe.InvalidRequestError) as bad:
                sdk.v1.customers.create(params={"email": "not-an-email"}, options=opts("k-cus-3"))
            assert bad.value.code == "email_invalid" and bad.value.http_status == 400

            prod = sdk.v1.products.create(params={"name": "Gold", "metadata": {"tier": "1"}}, options=opts("k-p-1"))
            assert isinstance(prod, stripe.Product) and prod.active is True
            price = sdk.v1.prices.create(
                params={"product": prod.id, "unit_amount": 1500, "currency": "eur",
                        "recurring": {"interval": "month"}, "lookup_key": "gold_monthly"},
                options=opts("k-pr-1"),
            )  # fmt: skip
            assert isinstance(price, stripe.Price) and price.unit_amount == 1500 and price.type == "recurring"
            assert price.recurring is not None and price.recurring.interval == "month"
            with pytest.raises(stripe.InvalidRequestError) as immutable:
                sdk.v1.prices.update(price.id, params={"unit_amount": 2000}, options=opts("k-pr-2"))
            assert immutable.value.code == "parameter_unknown"
            archived = sdk.v1.prices.update(price.id, params={"active": False}, options=opts("k-pr-3"))
            assert archived.active is False
            with pytest.raises(stripe.InvalidRequestError):  # a product with prices cannot be deleted
                sdk.v1.products.delete(prod.id)
            assert sdk.v1.products.update(prod.id, params={"active": False}).active is False
            gone = sdk.v1.customers.delete(cus.id)
            assert gone.deleted is True and gone.id == cus.id
            with pytest.raises(stripe.InvalidRequestError) as missing:
                sdk.v1.customers.retrieve(cus.id)
            assert missing.value.code == "resource_missing" and missing.value.http_status == 404
            bare = sdk.v1.products.create(params={"name": "Tmp"})
            assert sdk.v1.products.delete(bare.id).deleted is True
            events = sdk.v1.events.list(params={"limit": 100})
            types = [e.type for e in reversed(events.data)]
            assert types == ["customer.created", "customer.updated", "product.created", "price.created",
                             "price.updated", "product.updated", "customer.deleted", "product.created",
                             "product.deleted"]  # fmt: skip
            assert events.data[-1].request is not None and events.data[-1].request.idempotency_key == "k-cus-1"

        await asyncio.to_thread(scenario)
    assert len(fake.created("customer")) == 1
    assert [w.replayed for w in fake.writes if w.idempotency_key == "k-cus-1"] == [False, True, False]


async def test_the_sinks_form_encoding_reaches_the_fake_as_the_sdks_does() -> None:
    fake = FakeStripe()
    params: dict[str, Any] = {
        "email": "a@example.com", "metadata": {"plan": "pro", "note": "a&b=c [x]"},
        "address": {"line1": "1 rue de l'Été", "city": "Lyon"}, "preferred_locales": ["fr"],
    }  # fmt: skip
    async with serve(app=fake.app) as api:
        sdk = stripe.StripeClient(KEY, base_addresses={"api": api.url}, max_network_retries=0)
        await asyncio.to_thread(lambda: sdk.v1.customers.create(params=params))
    theirs = parse_form(fake.seen[-1].body)
    assert theirs == parse_form(encode(params)) == params
