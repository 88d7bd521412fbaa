"""`tidesync run --once` on the polling sources (SQL poll, Stripe, HubSpot): each ends at its end as of the start.

Every test keeps writing to the source while the run goes on, so a read never
comes back empty: a run that ignored the end (and waited for two empty reads)
would not end at all, and its subprocess would time out.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tidesync.protocols import Context
from tidesync.sources.polling.config import SqlPollConfig
from tidesync.sources.polling.source import SqlPollSource
from tidesync.state import open_state_store
from tidesync.testing.hubspot import FakeHubSpot, serve_in_thread
from tidesync.testing.stripe import FakeStripe

STRIPE_KEY = "sk_test_fake"
HUBSPOT_TOKEN = "pat-na1-fake"
RUN_TIMEOUT = 90.0  # seconds: a run that waited for two empty reads would never end while the writer writes


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONCE_STRIPE_KEY": STRIPE_KEY, "ONCE_HUBSPOT_TOKEN": HUBSPOT_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "run", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env,
    )


class Writer:
    """Calls ``write(n)`` (n = 0, 1, ...) from a thread every ``every`` seconds until stopped."""

    def __init__(self, write: Callable[[int], None], every: float = 0.005) -> None:
        self.write, self.every = write, every
        self.count = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="once-writer", daemon=True)

    def _run(self) -> None:
        try:
            # stop.wait paces the writer (and ends it at once when stopped); nothing waits on it
            while not self._stop.wait(self.every):
                self.write(self.count)
                self.count += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    @contextlib.contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)
        assert self.error is None, self.error


def sqlite_rows(path: Path, table: str, columns: str) -> dict[Any, tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return {r[0]: tuple(r) for r in conn.execute(f"SELECT {columns} FROM {table}")}


def written_during(writer: Writer, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert writer.count > 10, "the source kept changing while the run read"


# --- SQL poll ------------------------------------------------------------------------------------


def pg(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def pg_rows(dsn: str) -> dict[Any, tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: tuple(r) for r in conn.execute("SELECT id, version, payload FROM items")}


def test_sql_poll_once_reads_a_backlog_to_its_end_past_an_open_transaction_while_rows_keep_coming(
    tmp_path: Path, pg_database: str
) -> None:
    src, dst = pg_database, tmp_path / "dst.db"
    pg(
        src,
        "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text,"
        " updated_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        "INSERT INTO items (id, version, payload) SELECT g, 1, 'first' FROM generate_series(1, 2000) g",
    )
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: polled
    source: {{type: sql_poll, dsn: "{src}", cursor: updated_at, tables: [items], poll_interval: 0.01,
              lookback: 1, page_size: 300, progress: false}}
    sink: {{type: sqlite, path: "{dst}", create_tables: true}}
    batch: {{max_events: 300, max_wait_ms: 200}}
"""
    )
    first = run_once(config)  # the initial load
    assert first.returncode == 0, first.stderr[-4000:]
    assert "pipeline polled: 2000 event(s) applied" in first.stdout
    assert sqlite_rows(dst, "items", "id, version, payload") == pg_rows(src)

    with psycopg.connect(src) as open_tx:
        # A transaction left open for the whole run: the poller holds its high-water mark below its start
        # (watch_transactions), so a run that waited for the mark to reach the newest row would never end.
        open_tx.execute("SELECT 1")
        pg(
            src,
            "INSERT INTO items (id, version, payload) SELECT g, 1, 'new' FROM generate_series(2001, 4000) g",
            "UPDATE items SET version = 2, payload = 'changed', updated_at = clock_timestamp() WHERE id % 9 = 0",
            "DELETE FROM items WHERE id % 13 = 0",  # hard deletes: the key scan before the first pass finds them
        )
        expected = pg_rows(src)  # the source as of the start

        def insert(n: int) -> None:
            pg(src, f"INSERT INTO items (id, version, payload) VALUES ({1_000_000 + n}, 1, 'during')")

        with Writer(insert).running() as writer:
            started = time.monotonic()
            second = run_once(config)
            took = time.monotonic() - started
        written_during(writer, second)
        got = sqlite_rows(dst, "items", "id, version, payload")
        assert {k: v for k, v in got.items() if k < 1_000_000} == expected, f"run took {took:.1f}s"
        open_tx.rollback()

    third = run_once(config)  # what was written during the run is read by the next one
    assert third.returncode == 0, third.stderr[-4000:]
    assert sqlite_rows(dst, "items", "id, version, payload") == pg_rows(src)


async def test_sql_poll_reopened_during_a_batch_run_stays_below_its_end_until_every_row_is_read(
    tmp_path: Path, pg_database: str
) -> None:
    # What the engine does after a transient source error: reopen at the last position read and go on.
    pg(
        pg_database,
        "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text,"
        " updated_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        "INSERT INTO items (id, version, payload) SELECT g, 1, 'row' FROM generate_series(1, 1000) g",
    )
    store = open_state_store(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    cfg = {"dsn": pg_database, "cursor": "updated_at", "tables": ["items"], "page_size": 100, "progress": False}
    src = SqlPollSource(SqlPollConfig.model_validate(cfg))
    ctx = Context(pipeline="reopened", name="source", state=store)
    try:
        await src.open(ctx, None)
        end = await src.end_position()
        seen: set[int] = set()
        last = None
        for _ in range(3):
            batch = await src.read(100, 0.5)
            seen.update(e.key[0] for e in batch.events)
            last = batch.position or last
        assert last is not None and last < end and 0 < len(seen) < 1000
        await src.open(ctx, last)  # the batches read so far are queued: the reader reopens after them
        for _ in range(100):
            batch = await src.read(100, 0.5)
            seen.update(e.key[0] for e in batch.events)
            if batch.position is not None and batch.position >= end:
                break
            assert batch.position is None or batch.position[0] == end[0]  # the same epoch: below the end
        else:
            raise AssertionError("the end was never handed out")
        assert seen == set(range(1, 1001))  # the end came only once every row of the start was read
    finally:
        await src.close()
        await store.close()


# --- Stripe --------------------------------------------------------------------------------------


def test_stripe_once_stops_at_the_newest_event_of_its_start_while_events_keep_coming(tmp_path: Path) -> None:
    fake = FakeStripe({STRIPE_KEY})
    for i in range(20):
        fake.create("customer", f"cus_{i:03d}", email=f"{i}@x", name=f"n{i}")
    dst = tmp_path / "dst.db"
    with serve_in_thread(fake.app) as url:
        config = tmp_path / "tidesync.yaml"
        config.write_text(
            f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: billing
    source: {{type: stripe, api_key: "${{env:ONCE_STRIPE_KEY}}", base_url: "{url}", poll_interval: 0.01,
              lookback: 0, page_size: 50, snapshot: [customer], rate_limit: {{per_second: 1000}}, progress: false}}
    sink: {{type: sqlite, path: "{dst}", tables: {{stripe.customer: customer}}, create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 200}}
"""
        )
        first = run_once(config)  # the snapshot; the feed starts at the newest event
        assert first.returncode == 0, first.stderr[-4000:]
        assert "pipeline billing: 20 event(s) applied" in first.stdout
        assert sqlite_rows(dst, "customer", "id, email, name") == {
            k: (k, v["email"], v["name"]) for k, v in fake.state("customer").items()
        }

        # A backlog of events while nothing runs: creates, updates, deletes.
        for i in range(20, 120):
            fake.create("customer", f"cus_{i:03d}", email=f"{i}@x", name=f"n{i}")
        for i in range(0, 120, 3):
            fake.update("customer", f"cus_{i:03d}", email=f"changed{i}@x")
        for i in range(0, 120, 10):
            fake.delete("customer", f"cus_{i:03d}")
        expected = {k: (k, v["email"], v["name"]) for k, v in fake.state("customer").items()}
        backlog = len(fake.events)

        def create(n: int) -> None:
            fake.create("customer", f"cus_live_{n:05d}", email=f"live{n}@x", name="live")

        with Writer(create).running() as writer:
            second = run_once(config)
        written_during(writer, second)
        got = sqlite_rows(dst, "customer", "id, email, name")
        assert {k: v for k, v in got.items() if not k.startswith("cus_live_")} == expected
        walked = [dict(s.query) for s in fake.seen if s.path == "/v1/events"]
        # the newest event, asked for the end at each run's start (and by the first start, to fix its cursor)
        assert walked.count({"limit": "1"}) == 3
        assert len(fake.events) > backlog + 10  # events kept coming; the run ended anyway


# --- HubSpot -------------------------------------------------------------------------------------


def test_hubspot_once_stops_at_the_newest_modification_of_its_start_while_records_keep_coming(
    tmp_path: Path,
) -> None:
    fake = FakeHubSpot({HUBSPOT_TOKEN})
    hour_ago = int(time.time() * 1000) - 3_600_000
    for i in range(1, 151):
        fake.upsert("contacts", i, hour_ago + i, email=f"{i}@x", firstname=f"f{i}")
    dst = tmp_path / "dst.db"
    columns = "hs_object_id, email, firstname"

    def expected() -> dict[Any, tuple[Any, ...]]:
        return {rid: (rid, r["properties"].get("email"), r["properties"].get("firstname"))
                for rid, r in fake.records["contacts"].items()}  # fmt: skip

    with serve_in_thread(fake.app) as url:
        config = tmp_path / "tidesync.yaml"
        config.write_text(
            f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: crm
    source: {{type: hubspot, token: "${{env:ONCE_HUBSPOT_TOKEN}}", base_url: "{url}", poll_interval: 0.01,
              lookback: 1, objects: [{{type: contacts, properties: [email, firstname]}}],
              rate_limit: {{per_second: 2000}}, progress: false}}
    sink: {{type: sqlite, path: "{dst}", tables: {{hubspot.contact: contact}}, keys: {{contact: [hs_object_id]}},
            create_tables: true}}
    batch: {{max_events: 100, max_wait_ms: 200}}
"""
        )
        first = run_once(config)
        assert first.returncode == 0, first.stderr[-4000:]
        assert "pipeline crm: 150 event(s) applied" in first.stdout
        assert sqlite_rows(dst, "contact", columns) == expected()

        # A backlog while nothing runs: updates and new records, all modified after the last run, before the start.
        now_ms = int(time.time() * 1000)
        for i in range(1, 151, 4):
            fake.upsert("contacts", i, now_ms - 300 + i, email=f"changed{i}@x")
        for i in range(151, 251):
            fake.upsert("contacts", i, now_ms - 300 + i, email=f"{i}@x", firstname=f"f{i}")
        before = expected()

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {HUBSPOT_TOKEN}"}) as http:

            def create(n: int) -> None:  # through the API: the fake stamps it now, on its own thread
                answer = http.post(
                    "/crm/v3/objects/contacts/batch/create",
                    json={"inputs": [{"properties": {"email": f"live{n}@x", "firstname": "live"}}]},
                )
                answer.raise_for_status()

            with Writer(create).running() as writer:
                second = run_once(config)
        written_during(writer, second)
        got = sqlite_rows(dst, "contact", columns)
        assert {k: v for k, v in got.items() if k in before} == before
        ends = [s for s in fake.seen if s.path.endswith("/search") and b"DESCENDING" in s.body]
        assert len(ends) == 2  # the end, asked once per run

        third = run_once(config)  # what was written during the run is read by the next one
        assert third.returncode == 0, third.stderr[-4000:]
        assert sqlite_rows(dst, "contact", columns) == expected()

        asked = len(fake.seen)
        fourth = run_once(config)  # nothing new: read up to the end already, the run ends without a pass
        assert fourth.returncode == 0, fourth.stderr[-4000:]
        assert "pipeline crm: 0 event(s) applied" in fourth.stdout
        assert [b"DESCENDING" in s.body for s in fake.seen[asked:]] == [True]
