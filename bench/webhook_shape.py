"""Cost of the intake's shape check (depth, width, values) on a Stripe-sized event.

Times, per delivery of a signed ``invoice.paid`` event (about 6 KB, some 400 values):
the shape check alone, JSON parsing alone (the intake's ``parse_json``), and the whole intake decision
(``WebhookIntake.receive``: signature, parse, shape check, split, journal append
into memory) with the check on and with it replaced by a no-op. The HTTP server
and the state store commit, which cost far more, are left out, so the share
printed is an upper bound on the check's share of a real delivery.

    .venv/bin/python bench/webhook_shape.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import stripe

from tidesync.sources.webhook import WebhookIntake, WebhookSourceConfig
from tidesync.sources.webhook.provider import RawRequest, parse_json
from tidesync.state.store import JournalAppend

SECRET = "whsec_bench_shape"


def invoice_event(n: int) -> dict[str, Any]:
    line = {
        "id": "il_1", "object": "line_item", "amount": 2000, "currency": "usd", "description": "Pro plan",
        "discountable": True, "livemode": False, "metadata": {}, "period": {"end": 1700003600, "start": 1700000000},
        "price": {"id": "price_1", "object": "price", "active": True, "billing_scheme": "per_unit",
                  "currency": "usd", "product": "prod_1", "recurring": {"interval": "month", "interval_count": 1},
                  "type": "recurring", "unit_amount": 2000, "metadata": {"tier": "pro"}},
        "proration": False, "quantity": 1, "type": "subscription", "tax_amounts": [],
    }  # fmt: skip
    invoice = {
        "id": "in_1", "object": "invoice", "account_country": "US", "amount_due": 6000, "amount_paid": 6000,
        "attempt_count": 1, "attempted": True, "billing_reason": "subscription_cycle", "collection_method":
        "charge_automatically", "created": 1700000000, "currency": "usd", "customer": "cus_1",
        "customer_address": {"city": "Berlin", "country": "DE", "line1": "Street 1", "postal_code": "10115"},
        "customer_email": "ann@example.com", "customer_name": "Ann", "discounts": [],
        "lines": {"object": "list", "data": [dict(line, id=f"il_{i}") for i in range(8)], "has_more": False},
        "metadata": {"order": "42", "channel": "web"}, "paid": True, "status": "paid",
        "status_transitions": {"finalized_at": 1700000001, "paid_at": 1700000002},
        "subtotal": 6000, "tax": None, "total": 6000, "total_tax_amounts": [],
    }  # fmt: skip
    return {
        "id": f"evt_{n}", "object": "event", "api_version": "2024-06-20", "created": 1700000000 + n,
        "data": {"object": invoice, "previous_attributes": {"status": "open", "paid": False}},
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "type": "invoice.paid",
    }  # fmt: skip


def count_values(doc: Any) -> int:
    stack, n = [doc], 0
    while stack:
        node = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        n += len(children)
        stack.extend(children)
    return n


class MemoryJournal:
    def __init__(self) -> None:
        self.seq = 0

    async def append(self, entries: Sequence[JournalAppend]) -> list[int | None]:
        self.seq += len(entries)
        return list(range(self.seq - len(entries) + 1, self.seq + 1))


def per_call(fn: Any, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e6


async def receive_cost(intake: WebhookIntake, requests: list[RawRequest]) -> float:
    start = time.perf_counter()
    for r in requests:
        reply = await intake.receive(r)
        assert reply.status == 200, reply
    return (time.perf_counter() - start) / len(requests) * 1e6


async def main(rounds: int) -> None:
    body = msgspec.json.encode(invoice_event(0))
    doc = msgspec.json.decode(body)
    config = WebhookSourceConfig.model_validate({"provider": "stripe", "name": "shape", "secrets": [SECRET]})
    intake = WebhookIntake(config, "shape", journal=MemoryJournal())  # type: ignore[arg-type]
    check = intake.limits.check
    print(f"event: {len(body):,} bytes, {count_values(doc)} values, limits {intake.limits}")
    t_check = per_call(lambda: check(doc), rounds)
    t_parse = per_call(lambda: parse_json(body), rounds)
    print(f"shape check alone:      {t_check:6.2f} µs")
    print(f"JSON parse alone:       {t_parse:6.2f} µs")
    requests = []
    for i in range(rounds):
        raw = msgspec.json.encode(invoice_event(i))
        sig = stripe.WebhookSignature.generate_signature_header(raw.decode(), SECRET)
        requests.append(RawRequest("POST", "http://x/webhooks/shape", {"content-type": "application/json",
                                                                       "stripe-signature": sig}, raw))  # fmt: skip
    with_check, without = [], []
    for _ in range(3):  # interleaved, best of three: the machine is shared
        intake.limits = type(intake.limits)()  # the defaults
        with_check.append(await receive_cost(intake, requests))
        intake.limits = _NoCheck()  # type: ignore[assignment]
        without.append(await receive_cost(intake, requests))
    a, b = min(with_check), min(without)
    print(f"intake decision, check on:  {a:6.2f} µs/delivery")
    print(f"intake decision, check off: {b:6.2f} µs/delivery")
    print(f"overhead: {a - b:+.2f} µs/delivery ({(a - b) / b:+.1%} of the decision, before HTTP and the commit)")


class _NoCheck:
    def check(self, doc: Any) -> None:
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().rounds))
