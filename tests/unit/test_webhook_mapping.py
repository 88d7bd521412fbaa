"""Provider payloads to ChangeEvents, the generic JSON paths, and the per-record ordering guard."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from tidesync.event import ChangeEvent
from tidesync.sources.webhook.config import WebhookSourceConfig
from tidesync.sources.webhook.generic import GenericProvider
from tidesync.sources.webhook.github import GitHubProvider, map_github_event
from tidesync.sources.webhook.hubspot import HubSpotProvider, map_hubspot_event
from tidesync.sources.webhook.ordering import OrderingGuard
from tidesync.sources.webhook.paths import MISSING, compile_path, lookup
from tidesync.sources.webhook.provider import Malformed, MappingError, RawRequest
from tidesync.sources.webhook.stripe import StripeProvider, map_stripe_event
from tidesync.state.store import JournalEntry, ShadowRow


def stripe_event(type_: str, obj: dict[str, Any], prev: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if prev is not None:
        data["previous_attributes"] = prev
    return {
        "id": kw.get("id", "evt_1"),
        "object": "event",
        "type": type_,
        "created": kw.get("created", 100),
        "data": data,
    }


CUSTOMER = {"id": "cus_1", "object": "customer", "email": "new@x", "name": "Ann", "metadata": {"tier": "gold"}}


def test_stripe_update_uses_previous_attributes_for_changed_fields_and_before() -> None:
    m = map_stripe_event(stripe_event("customer.updated", CUSTOMER, {"email": "old@x"}, created=1700000000))
    ev = m.event
    assert (ev.entity, ev.key, ev.op, ev.changed, ev.committed_at) == (
        "stripe.customer",
        ("cus_1",),
        "update",
        ("email",),
        1700000000.0,
    )
    assert ev.after == CUSTOMER and ev.before == {**CUSTOMER, "email": "old@x"}
    assert m.version == (1700000000.0, "evt_1") and m.record == CUSTOMER


def test_stripe_created_deleted_and_other_events() -> None:
    assert map_stripe_event(stripe_event("customer.created", CUSTOMER)).event.op == "insert"
    deleted = map_stripe_event(stripe_event("customer.deleted", {**CUSTOMER, "deleted": True})).event
    assert deleted.op == "delete" and deleted.after is None and deleted.before is not None
    paid = map_stripe_event(stripe_event("invoice.paid", {"id": "in_1", "object": "invoice", "paid": True})).event
    assert (paid.entity, paid.op, paid.changed) == ("stripe.invoice", "update", None)
    for bad, why in [
        ({"object": "v2.core.event", "id": "evt_x"}, "thin"),
        ({"id": "e", "type": "x.updated", "created": 1, "data": {}}, "data.object"),
        ({"id": "e", "type": "x.updated", "data": {"object": CUSTOMER}}, "created"),
        ({"id": "e", "type": "x.updated", "created": 1, "data": {"object": {"id": "x"}}}, "object and id"),
    ]:
        with pytest.raises(MappingError, match=why):
            map_stripe_event(bad)


def test_stripe_split_needs_an_object_with_id_and_type() -> None:
    p = StripeProvider(300)
    body = msgspec.json.encode(stripe_event("customer.updated", CUSTOMER))
    deliveries, ignored = p.split(RawRequest("POST", "http://x/webhooks/s", {}, body))
    assert [(d.event_id, d.body) for d in deliveries] == [("evt_1", body)] and ignored == 0
    for bad in (
        b"[]",
        b'{"type": "x"}',
        b'{"id": "", "type": "x"}',
        b'{"id": "e"}',
        b"{",
        b'{"id": true, "type": "x"}',
    ):
        with pytest.raises(Malformed):
            p.split(RawRequest("POST", "u", {}, bad))


HUBSPOT_BATCH = [
    {"eventId": 11, "subscriptionId": 5, "objectId": 42, "occurredAt": 1700000000123,
     "subscriptionType": "contact.propertyChange", "propertyName": "email", "propertyValue": "a@x"},
    {"eventId": 12, "subscriptionId": 5, "objectId": 43, "occurredAt": 1700000000200,
     "subscriptionType": "contact.creation"},
    {"eventId": 13, "objectId": 7, "occurredAt": 1700000000300, "subscriptionType": "deal.deletion"},
]  # fmt: skip


def test_hubspot_batch_is_split_per_element_and_mapped_one_field_per_property_change() -> None:
    p = HubSpotProvider(300)
    deliveries, _ = p.split(RawRequest("POST", "u", {}, msgspec.json.encode(HUBSPOT_BATCH)))
    assert [d.event_id for d in deliveries] == ["5:11", "5:12", "13"]
    events = [map_hubspot_event(msgspec.json.decode(d.body)) for d in deliveries]
    assert events[0] == ChangeEvent(
        "hubspot.contact", (42,), "update", after={"email": "a@x"}, changed=("email",), committed_at=1700000000.123
    )
    assert (events[1].op, events[1].after) == ("insert", {"hs_object_id": 43})
    assert (events[2].entity, events[2].op, events[2].key) == ("hubspot.deal", "delete", (7,))
    with pytest.raises(MappingError, match=r"contact\.merge"):
        map_hubspot_event({**HUBSPOT_BATCH[0], "subscriptionType": "contact.merge"})
    for bad in (b"{}", b"[1]", b'[{"eventId": null}]', msgspec.json.encode([{"eventId": 1}] * 1001)):
        with pytest.raises(Malformed):
            p.split(RawRequest("POST", "u", {}, bad))


def test_github_issues_and_pull_requests() -> None:
    issue = {"number": 7, "title": "new", "state": "open", "updated_at": "2024-05-01T12:00:00Z", "body": "b"}
    repo = {"full_name": "acme/app"}
    opened = map_github_event("issues", {"action": "opened", "issue": issue, "repository": repo})
    assert (opened.entity, opened.key, opened.op, opened.committed_at) == (
        "github.issue",
        ("acme/app", 7),
        "insert",
        1714564800.0,
    )
    edited = map_github_event(
        "issues", {"action": "edited", "issue": issue, "repository": repo, "changes": {"title": {"from": "old"}}}
    )
    assert (edited.op, edited.changed, edited.before["title"]) == ("update", ("title",), "old")  # type: ignore[index]
    closed = map_github_event("pull_request", {"action": "closed", "pull_request": issue, "repository": repo})
    assert (closed.entity, closed.changed) == ("github.pull_request", ("state", "updated_at"))
    assert map_github_event("issues", {"action": "deleted", "issue": issue, "repository": repo}).op == "delete"
    with pytest.raises(MappingError):
        map_github_event("push", {})
    p = GitHubProvider(["issues", "pull_request"])
    headers = {"x-github-delivery": "d-1", "x-github-event": "issues"}
    deliveries, ignored = p.split(RawRequest("POST", "u", headers, b"{}"))
    # the id is the signed body's hash: X-GitHub-Delivery is unsigned, so a replay could change it
    assert deliveries[0].event_id == "sha256:" + hashlib.sha256(b"{}").hexdigest() and ignored == 0
    assert deliveries[0].meta == {"event": "issues", "delivery": "d-1"}
    again, _ = p.split(RawRequest("POST", "u", {**headers, "x-github-delivery": "d-2"}, b"{}"))
    assert again[0].event_id == deliveries[0].event_id
    assert p.split(RawRequest("POST", "u", {**headers, "x-github-event": "ping"}, b"{}")) == ([], 1)
    with pytest.raises(Malformed):
        p.split(RawRequest("POST", "u", {"x-github-event": "issues"}, b"{}"))


def test_paths() -> None:
    doc = {"data": {"items": [{"x": 1}, {"x": 2}], "a.b": 3}}
    assert compile_path("data.items[1].x") == ("data", "items", 1, "x")
    assert lookup(doc, compile_path("data.items[-1].x")) == 2
    assert lookup(doc, compile_path("$")) is doc
    assert lookup(doc, compile_path("data.items[5].x")) is MISSING
    assert lookup(doc, compile_path("data.nope")) is MISSING
    for bad in ("a..b", "a[x]", "[", "a.[0"):
        with pytest.raises(ValueError):
            compile_path(bad)


def generic(mapping: dict[str, Any], scheme: str = "hmac-sha256") -> GenericProvider:
    cfg = WebhookSourceConfig.model_validate(
        {"provider": "generic", "secrets": "s", "signature": {"header": "X-Sig", "scheme": scheme}, "mapping": mapping}
    )
    assert cfg.signature is not None and cfg.mapping is not None
    return GenericProvider(cfg.signature, cfg.mapping, 300)


def test_generic_mapping_by_paths() -> None:
    p = generic(
        {"events": "items", "event_id": "id", "entity_path": "kind", "entity_prefix": "shop.", "key": ["data.id"],
         "op": "action", "ops": {"created": "insert", "removed": "delete"}, "after": "data",
         "changed": "changes", "timestamp": "at", "timestamp_unit": "ms"}
    )  # fmt: skip
    body = {
        "items": [
            {"id": "e1", "kind": "order", "action": "created", "data": {"id": 5, "total": 9}, "at": 1700000000500},
            {"id": "e2", "kind": "order", "action": "update", "data": {"id": 5, "total": 10},
             "changes": {"total": 9}, "at": 1700000001000},
            {"id": "e3", "kind": "order", "action": "removed", "data": {"id": 5}, "at": 1700000002000},
        ]
    }  # fmt: skip
    deliveries, _ = p.split(RawRequest("POST", "u", {}, msgspec.json.encode(body)))
    assert [d.event_id for d in deliveries] == ["e1", "e2", "e3"]
    events = [p.map_event(msgspec.json.decode(d.body)) for d in deliveries]
    assert [(e.entity, e.key, e.op, e.changed) for e in events] == [
        ("shop.order", (5,), "insert", None),
        ("shop.order", (5,), "update", ("total",)),
        ("shop.order", (5,), "delete", None),
    ]
    assert events[0].committed_at == 1700000000.5 and events[2].before == {"id": 5} and events[2].after is None
    with pytest.raises(MappingError, match="op value"):
        p.map_event({"id": "e", "kind": "order", "action": "exploded", "data": {"id": 1}, "at": 1})
    with pytest.raises(MappingError, match="key"):
        p.map_event({"id": "e", "kind": "order", "data": {}, "at": 1})
    with pytest.raises(Malformed, match="list"):
        p.split(RawRequest("POST", "u", {}, b'{"items": 3}'))


def test_generic_config_is_checked_at_load() -> None:
    with pytest.raises(ValueError, match="exactly one of entity"):
        generic({"event_id": "id", "key": ["id"]})
    with pytest.raises(ValueError, match="event_id"):
        generic({"entity": "x", "key": ["id"]})
    with pytest.raises(ValueError, match="bad path"):
        generic({"entity": "x", "event_id": "id", "key": ["a..b"]})
    with pytest.raises(ValueError, match=r"not covered by the hmac-sha256 signature.*event_id: <path"):
        generic({"entity": "x", "event_id_header": "webhook-id", "key": ["id"]})
    with pytest.raises(ValueError, match="give one of event_id or event_id_hash"):
        generic({"entity": "x", "event_id": "id", "event_id_hash": True, "key": ["id"]})
    p = generic({"entity": "x", "event_id_header": "webhook-id", "key": ["id"]}, scheme="standard-webhooks")
    with pytest.raises(Malformed, match="webhook-id"):
        p.split(RawRequest("POST", "u", {}, b'{"id": 1}'))
    assert p.split(RawRequest("POST", "u", {"webhook-id": "m1"}, b'{"id": 1}'))[0][0].event_id == "m1"
    with pytest.raises(ValueError, match="event_id_header X-Request-Id is not covered by the standard-webhooks"):
        generic({"entity": "x", "event_id_header": "X-Request-Id", "key": ["id"]}, scheme="standard-webhooks")


def test_generic_event_id_hash_is_the_hash_of_the_signed_body_or_of_each_event() -> None:
    p = generic({"entity": "x", "event_id_hash": True, "key": ["id"]})
    body = b'{"id": 1, "v": 2}'
    (d,), _ = p.split(RawRequest("POST", "u", {"x-request-id": "anything"}, body))
    assert d.event_id == "sha256:" + hashlib.sha256(body).hexdigest() and d.body == body
    many = generic({"events": "items", "entity": "x", "event_id_hash": True, "key": ["id"]})
    out, _ = many.split(RawRequest("POST", "u", {}, b'{"items": [{"id": 1}, {"id": 2}, {"id": 1}]}'))
    assert out[0].event_id == out[2].event_id != out[1].event_id


def test_integers_beyond_64_bits_stay_exact_and_a_float_key_is_a_mapping_error() -> None:
    p = generic({"entity": "x", "event_id": "id", "key": ["id"]})
    big, near = 123456789012345678901234567890, 123456789012345678901234567891
    for n in (big, near):
        body = b'{"id": %d, "n": [%d]}' % (n, -n)
        (d,), _ = p.split(RawRequest("POST", "u", {}, body))
        assert d.event_id == str(n)
        event = p.map(JournalEntry(1, "s", d.event_id, d.body, {}, 0.0))[0].event
        assert event.key == (Decimal(n),) and event.after == {"id": Decimal(n), "n": [Decimal(-n)]}
    assert p.map_event({"id": 2**63 - 1}).key == (2**63 - 1,)  # the edge of 64 bits stays an int
    many = generic({"events": "items", "entity": "x", "event_id": "id", "key": ["id"]})
    out, _ = many.split(RawRequest("POST", "u", {}, b'{"items": [{"id": %d}]}' % big))
    assert out[0].body == b'{"id":%d}' % big and out[0].event_id == str(big)
    for bad in (1.5, 1e30, 12.0):
        with pytest.raises(MappingError, match="fraction or exponent"):
            p.map_event({"id": bad})


# --- ordering guard ----------------------------------------------------------------------------------


class Shadows:
    """Just enough of a state store for the guard: shadow_get over a dict."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, Any], ShadowRow] = {}

    async def shadow_get(self, scope: str, entity: str, keys: list[Any]) -> dict[Any, ShadowRow]:
        return {k: self.rows[(entity, k)] for k in keys if (entity, k) in self.rows}


async def test_an_older_stripe_event_never_overwrites_newer_state_and_repairs_its_fields() -> None:
    store = Shadows()
    guard = OrderingGuard(store, "webhook:s")  # type: ignore[arg-type]
    newer = map_stripe_event(
        stripe_event("customer.updated", {**CUSTOMER, "name": "Bo"}, {"name": "Ann"}, id="evt_b", created=200)
    )
    older = map_stripe_event(stripe_event("customer.updated", CUSTOMER, {"email": "old@x"}, id="evt_a", created=100))
    await guard.load([newer.event, older.event])
    assert guard.admit(2, newer.event, newer.version, newer.record) is newer.event  # type: ignore[arg-type]
    repaired = guard.admit(3, older.event, older.version, older.record)  # type: ignore[arg-type]
    # the older event's field is written with the NEWEST known value (never moved backwards)
    assert repaired is not None and repaired.op == "update"
    assert (repaired.changed, repaired.after, repaired.committed_at) == (("email",), {"email": "new@x"}, 200.0)
    assert guard.stale == 1
    # ties on created are ordered by event id
    same_second = map_stripe_event(stripe_event("customer.updated", CUSTOMER, {"name": "X"}, id="evt_a", created=200))
    assert guard.admit(4, same_second.event, same_second.version, same_second.record) is not same_second.event  # type: ignore[arg-type]
    shadows = guard.take(3)
    assert [(s.key, s.position) for s in shadows] == [(("cus_1",), (200.0, "evt_b"))]

    # a fresh guard (a restart) finds the stored version and decides the same way
    store.rows[("stripe.customer", ("cus_1",))] = shadows[0]
    again = OrderingGuard(store, "webhook:s")  # type: ignore[arg-type]
    await again.load([older.event])
    assert again.admit(3, older.event, older.version, older.record) == repaired  # type: ignore[arg-type]
    deleted = map_stripe_event(stripe_event("customer.deleted", CUSTOMER, id="evt_c", created=300))
    assert again.admit(5, deleted.event, deleted.version, deleted.record) is deleted.event  # type: ignore[arg-type]
    # after the delete an older update has nothing to repair: dropped
    assert again.admit(6, older.event, older.version, older.record) is None  # type: ignore[arg-type]


def entry(body: bytes, seq: int = 1, meta: dict[str, Any] | None = None) -> JournalEntry:
    return JournalEntry(seq, "s", "e", body, meta or {}, 0.0)


def test_providers_map_journal_entries() -> None:
    mapped = StripeProvider(300).map(entry(msgspec.json.encode(stripe_event("customer.updated", CUSTOMER))))
    assert mapped[0].event.key == ("cus_1",)
    with pytest.raises(MappingError, match="not valid JSON"):
        StripeProvider(300).map(entry(b"{"))
    gh = GitHubProvider(["issues"]).map(
        entry(msgspec.json.encode({"action": "reopened", "issue": {"number": 1}, "repository": {"full_name": "a/b"}}),
              meta={"event": "issues"})
    )  # fmt: skip
    assert gh[0].event.key == ("a/b", 1)
