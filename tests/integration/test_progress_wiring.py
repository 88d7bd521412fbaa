"""Progress where a person waits, off a terminal (here): the sql_poll initial load, Stripe and HubSpot
backfills, reconcile and ``tidesync dlq replay`` report counts, totals and rates as log lines;
``progress: false`` and ``--no-progress`` silence them."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console

from tests.integration.test_reconcile_sqlite import setup as reconcile_setup
from tests.integration.test_sql_poll_support import Driver, SourceDb, poll_config
from tests.integration.webhook_support import serve
from tidesync.config import load_config
from tidesync.event import ChangeEvent
from tidesync.progress import Progress
from tidesync.protocols import Context
from tidesync.reconcile.config import ReconcileOptions
from tidesync.reconcile.run import reconcile_pipeline
from tidesync.sources.http.config import HubSpotSourceConfig, StripeSourceConfig
from tidesync.sources.http.hubspot import HubSpotSource
from tidesync.sources.http.stripe import StripeSource
from tidesync.sources.polling.dialect import TableMeta, reflect
from tidesync.sources.polling.estimate import row_estimate
from tidesync.state import open_state_store
from tidesync.state.store import NewDeadLetter, StateChanges, StateStore
from tidesync.testing.hubspot import FakeHubSpot
from tidesync.testing.stripe import FakeStripe


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceDb]:
    dsn = request.getfixturevalue("pg_database") if request.param == "postgres" else f"sqlite:///{tmp_path / 's.db'}"
    source = SourceDb(dsn)
    yield source
    source.close()


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


def messages(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


async def test_the_initial_load_logs_its_progress_off_a_terminal(
    db: SourceDb, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.sources.sql_poll")
    db.insert({"id": i, "name": f"n{i}", "updated_at": i} for i in range(250))
    drv = Driver(poll_config(db.dsn), store)
    await drv.open()
    try:
        assert len(await drv.poll()) == 250
        db.insert([{"id": 1000, "updated_at": 5000}])
        assert len(await drv.poll()) == 1  # a later pass is not an initial load: no line
    finally:
        await drv.close()
    lines = messages(caplog, "initial load items:")
    (done,) = lines
    # The total is the table's count (SQLite) or the planner's estimate, else a count (a new Postgres table
    # is counted): 250 either way here; when done, the total becomes the count.
    assert done.startswith("initial load items: 250/250 rows (100%), ") and "rows/s" in done and "done in" in done


async def test_progress_false_keeps_the_initial_load_quiet(
    db: SourceDb, store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.sources.sql_poll")
    db.insert({"id": i, "updated_at": i} for i in range(30))
    drv = Driver(poll_config(db.dsn, progress=False), store)
    await drv.open()
    try:
        assert len(await drv.poll()) == 30
    finally:
        await drv.close()
    assert messages(caplog, "initial load") == []


async def test_reconcile_counts_the_source_rows_it_compared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.progress")
    loaded = load_config(reconcile_setup(tmp_path, rows=1200))
    with Progress("reconcile", console=Console(file=io.StringIO())) as progress:
        report = await reconcile_pipeline(loaded, "p", ReconcileOptions(chunk_size=500), progress=progress)
    assert report.drift == 2  # id 10 missing, 5000 extra (the other changes are beyond 1200 rows)
    (line,) = messages(caplog, "reconcile items:")
    assert line.startswith("reconcile items: 1,200/1,200 rows (100%), ") and "done in" in line
    assert progress.tasks["items"].completed == 1200  # three chunks of 500, 500 and 200


REPLAY_CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: shop
    source: {{type: sqlite, path: {tmp}/src.db, tables: [orders]}}
    sink: {{type: sqlite, path: {tmp}/dst.db}}
"""


@pytest.fixture
def parked(tmp_path: Path) -> Path:
    """A config whose pipeline ``shop`` has three dead letters waiting."""
    config = tmp_path / "tidesync.yaml"
    config.write_text(REPLAY_CONFIG.format(tmp=tmp_path))

    async def park() -> None:
        s = open_state_store(f"sqlite:///{tmp_path}/state.db")
        await s.open()
        try:
            events = [ChangeEvent("orders", (i,), "insert", after={"id": i}, position=(i,)) for i in (1, 2, 3)]
            letters = [NewDeadLetter("shop", "sink", e, "permanent", "refused", 1, 1.0, 1.0) for e in events]
            await s.commit("shop", StateChanges(checkpoint=(3,), dead_letters=letters))
        finally:
            await s.close()

    asyncio.run(park())
    return config


def tidesync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def test_dlq_replay_logs_letters_replayed_of_all(parked: Path) -> None:
    done = tidesync("dlq", "replay", str(parked), "--all")
    lines = [line for line in done.stderr.splitlines() if "replay shop:" in line]
    assert len(lines) == 1, done.stdout + done.stderr
    assert "replay shop: 3/3 letters (100%), " in lines[0] and "done in" in lines[0], lines
    assert "shop: written" in done.stdout  # the summary as before


def test_dlq_replay_no_progress_is_quiet(parked: Path) -> None:
    done = tidesync("dlq", "replay", str(parked), "--all", "--no-progress")
    assert "shop: written" in done.stdout, done.stdout + done.stderr
    assert "replay shop:" not in done.stderr


async def test_a_stripe_snapshot_logs_objects_listed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.sources.stripe")
    fake = FakeStripe()
    for i in range(230):
        fake.create("customer", f"cus_{i:03d}", email=f"{i}@x")
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    cfg = {"type": "stripe", "api_key": "sk_test_fake", "snapshot": ["customer"], "lookback": 0}
    try:
        async with serve(app=fake.app) as api:
            src = StripeSource(StripeSourceConfig.model_validate({**cfg, "base_url": api.url}))
            await src.open(Context("snap", "source", s), None)
            listed = 0
            while src.state.created is None or src.state.snapshot:
                listed += sum(1 for e in (await src.read(100, 1.0)).events if e.op == "snapshot")
            await src.close()
    finally:
        await s.close()
    assert listed == 230
    (line,) = messages(caplog, "snapshot stripe.customer:")
    # The list API gives no total (a count and a rate while it runs); once done, the count is the total.
    assert line.startswith("snapshot stripe.customer: 230/230 objects (100%), ") and "objects/s" in line
    assert "done in" in line


async def test_a_hubspot_first_pass_takes_its_total_from_the_search(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.sources.hubspot")
    now_ms = int(time.time() * 1000) - 3_600_000
    fake = FakeHubSpot()
    for i in range(1, 51):
        fake.upsert("contacts", i, now_ms + i * 10, email=f"{i}@x")
    s = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await s.open()
    cfg = {"type": "hubspot", "token": "pat-na1-fake", "objects": ["contacts"], "page_size": 20,
           "rate_limit": {"per_second": 2000}}  # fmt: skip
    try:
        async with serve(app=fake.app) as api:
            src = HubSpotSource(HubSpotSourceConfig.model_validate({**cfg, "base_url": api.url}))
            await src.open(Context("hs", "source", s), None)
            first = await src.read(20, 1.0)
            assert len(first.events) == 20 and src.progress is not None
            task = src.progress.tasks["hubspot.contact"]
            assert (task.completed, task.total) == (20, 50)  # the search's total, from its first page
            while not src.idle:
                await src.read(20, 1.0)
            await src.close()
    finally:
        await s.close()
    (line,) = messages(caplog, "first pass hubspot.contact:")
    assert line.startswith("first pass hubspot.contact: 50/50 records (100%), ") and "done in" in line


def test_the_row_estimate_is_a_count_or_the_planners_figure(db: SourceDb) -> None:
    db.insert({"id": i, "updated_at": i} for i in range(120))
    meta = reflect(db.engine, "items")
    with db.engine.connect() as conn:
        assert row_estimate(conn, meta) == 120  # SQLite, or a Postgres table never analyzed: counted
        assert row_estimate(conn, TableMeta(None, "no_such_table", ("id",), ("id",), ())) is None
    if db.dialect == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM items WHERE id >= 100"))
            conn.execute(sa.text("ANALYZE items"))
            conn.execute(sa.text("INSERT INTO items (id, updated_at) SELECT g, now() FROM generate_series(500, 599) g"))
        with db.engine.connect() as conn:
            assert row_estimate(conn, meta) == 100  # the planner's figure from the ANALYZE, not a count (200)
