"""Postgres <-> HubSpot contacts with the HubSpot side's per-property change times (``property_history``).

Set up as in tests/integration/test_sync_hubspot.py (its helpers): the CRM API
is the local fake; a person's edits in HubSpot are dated by the test.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.integration.test_sync_hubspot import (
    PEOPLE,
    config,
    contacts,
    hubspot,
    marks,
    people,
    polls,
    settled,
    writes,
)
from tests.integration.test_sync_support import SyncHarness
from tidesync.testing import eventually
from tidesync.testing.hubspot import FakeHubSpot

__all__ = ["hubspot"]  # the fixture


@pytest.mark.parametrize("property_history", [True, False], ids=["per-property", "per-record"])
async def test_lww_compares_each_propertys_own_change_time(
    pg_database: str, tmp_path: Path, hubspot: tuple[FakeHubSpot, str], property_history: bool
) -> None:
    """Within one poll interval HubSpot edits ``firstname`` at t1, Postgres edits ``first`` at t2 > t1, and
    HubSpot edits ``lastname`` at t3 > t2. Per property, Postgres' first is the newer edit and wins; HubSpot's
    last goes to Postgres. With one time per record (t3), HubSpot's firstname would win too."""
    fake, url = hubspot
    one = [("e1@example.com", "f", "l", 1)]
    a, ids = people(pg_database, fake, one, one)
    e1 = ids["e1@example.com"]
    h = SyncHarness(tmp_path, f"p{uuid.uuid4().hex[:8]}", "")
    options = f", property_history: {str(property_history).lower()}"
    h.config_text = config(h, a, tmp_path, url, "{default: lww, skew: 0.5s}", source_options=options)
    try:
        await h.start()
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        await h.stop()  # the three edits land between two polls: the sync sees them together
        before = int(time.time() * 1000)
        fake.upsert("contacts", int(e1), before - 1500, firstname="hs-first")  # t1: 1.5 s before Postgres'
        a.sql("UPDATE people SET first = 'pg-first' WHERE email = 'e1@example.com'")  # t2
        after = int(time.time() * 1000)
        fake.upsert("contacts", int(e1), after + 1500, lastname="hs-last")  # t3: 1.5 s after Postgres'
        await h.start()
        first = "pg-first" if property_history else "hs-first"
        want = [("e1@example.com", first, "hs-last", 1)]
        await eventually(lambda: a.rows(PEOPLE, "people") == want and contacts(fake) == want, timeout=30,
                         message="both sides settled")  # fmt: skip
        history = await h.cli_json("sync", "history", str(h.path), h.name)
        decided = [(e["field"], e["rule"], e["winner"]) for e in history]
        assert decided == [("first", "lww", "a" if property_history else "b")], history
        b_at = history[0]["b"]["at"] * 1000  # the time lww saw for HubSpot's firstname
        assert abs(b_at - (before - 1500)) < 1 if property_history else abs(b_at - (after + 1500)) < 1, history
        await settled(marks(h, a, "people", lambda: writes(fake)), lambda: polls(fake))
        assert a.rows(PEOPLE, "people") == want and contacts(fake) == want  # nothing echoed back
    finally:
        await h.close()
