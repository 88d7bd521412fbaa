"""HubSpot contacts as a two-way sync side detected by webhooks, with the HubSpot poller as the safety net.

The side's source is ``type: hybrid``: a HubSpot webhook primary (the real
intake, on the HTTP server ``tidesync run`` starts) and the ``hubspot``
polling source as its fallback. HubSpot's deliveries (one property per
event, the record id a number) are signed here as HubSpot signs them (v3).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.integration.test_sync_hubspot import (
    PEOPLE,
    PEOPLE_B_TO_A,
    PEOPLE_FIELDS,
    TOKEN,
    by_email,
    contacts,
    hubspot,  # noqa: F401  (the fixture)
    people,
    person_edits,
    pn,
)
from tests.integration.test_sync_stripe_hybrid import running_with_api
from tests.integration.test_sync_support import Side, SyncHarness, pg_source
from tests.integration.webhook_support import JSON
from tidesync.config import load_config
from tidesync.errors import ConfigError
from tidesync.sinks.hubspot.endpoint import HubSpotEndpoint
from tidesync.sources.webhook.signatures import sign_hubspot_v3
from tidesync.sync.build import build_parts
from tidesync.testing import eventually
from tidesync.testing.hubspot import FakeHubSpot

SECRET = "hubspot-client-secret"


def config(name: str, a: Side, tmp: Path, url: str) -> str:
    primary = f"{{type: webhook, provider: hubspot, secrets: [{SECRET}]}}"
    fallback = (
        f'{{type: hubspot, token: {TOKEN}, base_url: "{url}", objects: [contacts], poll_interval: 60s, '
        "lookback: 2s, rate_limit: {per_second: 500}, progress: false}"
    )
    return f"""
state: sqlite:///{tmp / "state.db"}
syncs:
  - name: {name}
    a: {{source: {pg_source(a.dsn, "people", tmp / "wa")}, table: people, key: id}}
    b:
      source: {{type: hybrid, primary: {primary}, fallback: {fallback}}}
      table: contacts
      key: hs_object_id
    fields: {PEOPLE_FIELDS}
    match: {{by: email}}
    rules: {{default: lww, skew: 0s}}
    transforms:
      b_to_a: [{{compute: {PEOPLE_B_TO_A}}}]
    batch: {{max_events: 200, max_wait_ms: 20}}
    retry: {{initial_delay: 0.05, max_delay: 0.5}}
"""


async def deliver(client: httpx.AsyncClient, url: str, events: list[dict[str, Any]]) -> None:
    """POST ``events`` as one HubSpot delivery, signed (v3) over the URL called."""
    body = msgspec.json.encode(events)
    ts = int(time.time() * 1000)
    headers = {
        **JSON,
        "x-hubspot-signature-v3": sign_hubspot_v3("POST", url, body, SECRET, ts),
        "x-hubspot-request-timestamp": str(ts),
    }
    answer = await client.post(url, content=body, headers=headers)
    assert answer.status_code == 200, answer.text


async def test_a_hubspot_edit_delivered_by_webhook_reaches_postgres_before_any_poll(
    pg_database: str,
    tmp_path: Path,
    hubspot: tuple[FakeHubSpot, str],  # noqa: F811
) -> None:
    fake, url = hubspot
    a, _ = people(pg_database, fake, [pn(1), pn(2)], [pn(1)])
    h = SyncHarness(tmp_path, f"hh{uuid.uuid4().hex[:8]}", "")
    h.config_text = config(h.name, a, tmp_path, url)
    try:
        async with running_with_api(h) as api, httpx.AsyncClient(timeout=10) as client:
            await eventually(lambda: len(contacts(fake)) == 2 and a.rows(PEOPLE, "people") == contacts(fake),
                             timeout=30, message="pairing: both sides hold the 2 people")  # fmt: skip
            await h.quiet()
            searches = fake.requests.copy()
            rid = by_email(fake)["p1@example.com"]
            person_edits(fake, rid, lastname="by webhook")
            started = time.monotonic()
            at = int(time.time() * 1000)
            await deliver(client, f"{api.url}/webhooks/{h.name}.b", [
                {"eventId": 101, "subscriptionId": 7, "portalId": 1, "occurredAt": at, "objectId": int(rid),
                 "subscriptionType": "contact.propertyChange", "propertyName": "lastname",
                 "propertyValue": "by webhook", "changeSource": "CRM"},
            ])  # fmt: skip
            await eventually(
                lambda: a.sql("SELECT last FROM people WHERE email = 'p1@example.com'") == [("by webhook",)],
                timeout=5, message="the webhook's edit in Postgres",
            )  # fmt: skip
            assert time.monotonic() - started < 5
            await h.quiet(8)
            assert a.rows(PEOPLE, "people") == contacts(fake)
            assert len(contacts(fake)) == 2  # the webhook's record is the paired one: no second contact
            proc = h.runner.processor
            assert proc is not None and proc.stats.writes.get("a", 0) >= 1
            searched = {k: v for k, v in fake.requests.items() if "search" in str(k)}
            assert searched == {k: v for k, v in searches.items() if "search" in str(k)}, "polled, not delivered"
    finally:
        await h.close()


def load(tmp_path: Path, b_source: str) -> Any:
    path = tmp_path / "sync.yaml"
    path.write_text(f"""
syncs:
  - name: crm
    a: {{source: {{type: sqlite, path: "{tmp_path / "a.db"}", tables: [people]}}, table: people, key: id}}
    b: {{source: {b_source}, table: contacts, key: hs_object_id}}
    fields: {{email: email, first: firstname}}
    match: {{by: email}}
""")
    return load_config(path)


def test_a_hybrid_hubspot_side_reads_the_mapped_properties_and_refuses_another_fallback(tmp_path: Path) -> None:
    hooks = f"{{type: webhook, provider: hubspot, secrets: [{SECRET}]}}"
    spec = load(tmp_path, f"{{type: hybrid, primary: {hooks}, fallback: {{type: hubspot, token: t, "
                          "objects: [contacts]}}").syncs[0]  # fmt: skip
    fallback = spec.b_source.fallback_model
    assert fallback.objects[0].properties == ["email", "firstname", "hs_object_id"] and fallback.property_history
    assert spec.b_source.resolved_match() == "values"
    parts = build_parts(spec)
    assert isinstance(parts.endpoints["b"], HubSpotEndpoint) and parts.fmap.sides["b"].entity == "hubspot.contact"
    with pytest.raises(ConfigError, match="fallback must be the hubspot polling source"):
        load(tmp_path, f"{{type: hybrid, primary: {hooks}, fallback: {{type: stripe, api_key: sk}}}}")
    with pytest.raises(ConfigError, match="leave entity: out"):
        load(tmp_path, f"{{type: hybrid, primary: {hooks}, fallback: {{type: hubspot, token: t, "
                       "objects: [{type: contacts, entity: people}]}}")  # fmt: skip
