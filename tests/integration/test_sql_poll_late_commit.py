"""Late commits and re-reads after a reopen, against real Postgres and MariaDB.

A transaction whose commit becomes visible later than the look-back window
behind the high-water mark must still be read: its cursor value is set when
the row is written, not when it commits. Each test holds a transaction open
between its UPDATE and its COMMIT while other rows move the high-water mark
well past the look-back, so the race is made, not waited for.

And a source reopened at its committed position (what the sync runner does
after a failed batch) must read again the changes of the batches it handed
out but that were never committed; and a batch committed while the next page
is being read must not make its rows look new.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.test_sql_poll_support import Driver
from tidesync.protocols import Context
from tidesync.sources.polling.config import SqlPollConfig
from tidesync.sources.polling.dialect import create_engine
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges, StateStore
from tidesync.testing import eventually

LOOKBACK = 0.5

# The cursor is stamped by the database, as applications usually do it.
DDL = {
    "postgresql": [
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$",
        "CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch()",
    ],
    "mysql": [
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, updated_at timestamp(6) NOT NULL"
        " DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6), KEY items_cursor (updated_at, id))"
    ],
}


@pytest.fixture(params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    dsn = request.getfixturevalue("pg_database" if request.param == "postgres" else "mariadb_database")
    eng = create_engine(dsn, pool_size=3)
    with eng.begin() as conn:
        for statement in DDL[eng.dialect.name]:
            conn.execute(sa.text(statement))
        conn.execute(sa.text("INSERT INTO items (id, qty) VALUES (1, 0), (2, 0), (3, 0)"))
    yield eng
    eng.dispose()


@pytest.fixture
async def store(state_url: str) -> AsyncIterator[StateStore]:
    s = open_state_store(state_url)
    await s.open()
    yield s
    await s.close()


def config(eng: sa.Engine) -> SqlPollConfig:
    return SqlPollConfig.model_validate(
        {
            "type": "sql_poll",
            "dsn": eng.url.render_as_string(hide_password=False),
            "tables": ["items"],
            "cursor": "updated_at",
            "lookback": LOOKBACK,
            "poll_interval": 3600,
            "key_scan": None,
        }
    )


def touch(eng: sa.Engine, key: int) -> Any:
    """Update row ``key`` in a transaction of its own; its new cursor value."""
    with eng.begin() as conn:
        conn.execute(sa.text("UPDATE items SET qty = qty + 1 WHERE id = :id"), {"id": key})
        return conn.execute(sa.text("SELECT updated_at FROM items WHERE id = :id"), {"id": key}).scalar()


class Stalled:
    """A transaction that updated row ``key`` (its cursor is set) and has not committed."""

    def __init__(self, eng: sa.Engine, key: int, qty: int) -> None:
        self.conn = eng.connect()
        self.tx = self.conn.begin()
        self.conn.execute(sa.text("UPDATE items SET qty = :q WHERE id = :id"), {"q": qty, "id": key})
        self.cursor = self.conn.execute(sa.text("SELECT updated_at FROM items WHERE id = :id"), {"id": key}).scalar()

    async def outlast_lookback(self, eng: sa.Engine, other: int) -> None:
        """Move the high-water mark (by committing edits of row ``other``) well past this cursor plus the look-back."""
        past = self.cursor + dt.timedelta(seconds=2 * LOOKBACK)
        await eventually(lambda: touch(eng, other) > past, timeout=30, interval=0.1, message="the clock to move on")

    def commit(self) -> None:
        self.tx.commit()
        self.conn.close()


def updates_of(events: list[Any], key: int) -> list[int]:
    return [e.after["qty"] for e in events if e.key == (key,) and e.op == "update"]


async def test_commit_later_than_the_lookback_is_read(engine: sa.Engine, store: StateStore) -> None:
    drv = Driver(config(engine), store)
    await drv.open()
    try:
        assert len(await drv.poll()) == 3
        stalled = Stalled(engine, 1, 42)
        try:
            await stalled.outlast_lookback(engine, 2)
            # Two passes while it is open: the second starts from the high-water mark that passed it.
            assert updates_of(await drv.poll(), 2)
            await drv.poll()
        finally:
            stalled.commit()
        assert updates_of(await drv.poll(), 1) == [42]
        assert updates_of(await drv.poll(), 1) == []  # read once
    finally:
        await drv.close()


async def test_late_commit_is_read_after_a_restart(engine: sa.Engine, store: StateStore) -> None:
    """The checkpoint, not only the running source, keeps the window open for a transaction still open."""
    drv = Driver(config(engine), store)
    await drv.open()
    stalled = Stalled(engine, 1, 43)
    try:
        await drv.poll()
        await stalled.outlast_lookback(engine, 2)
        await drv.poll()
        await drv.poll()
        await drv.close()
        stalled.commit()
        drv = Driver(config(engine), store)
        await drv.open()
        assert updates_of(await drv.poll(), 1) == [43]
    finally:
        if stalled.conn.in_transaction():
            stalled.commit()
        await drv.close()


async def test_reopened_source_reads_again_what_was_never_committed(engine: sa.Engine, store: StateStore) -> None:
    """Reopened at its committed position, the source emits again the changes of batches handed out since.

    The sync runner does this when a batch fails (its state-store commit, or an endpoint that keeps
    failing): the batches read ahead are dropped and both sources are reopened where the store says.
    """
    drv = Driver(config(engine), store)
    await drv.open()
    try:
        await drv.poll()
        committed = await store.load_checkpoint("p")
        touch(engine, 3)
        drv.source.request_poll()
        batch = await drv.source.read(100, 0.0)
        assert updates_of(batch.events, 3) == [1]  # handed out, never committed
        await drv.source.close()
        await drv.source.open(Context(pipeline="p", name="source", state=store), committed)
        assert updates_of(await drv.poll(), 3) == [1]
    finally:
        await drv.close()


class CommitsWhileAsked:
    """A state store that, asked for shadows once armed, first commits a batch read earlier (as the sync does
    concurrently with the next read) and tells the source."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.armed: tuple[Any, Any] | None = None  # (source, batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def shadow_get(self, scope: str, entity: str, keys: Any) -> Any:
        if self.armed is not None:
            source, batch = self.armed
            self.armed = None
            state = batch.state or StateChanges()
            state.checkpoint = batch.position
            await self.store.commit("p", state)
            await source.commit(batch.position)
        return await self.store.shadow_get(scope, entity, keys)


async def test_a_batch_committed_while_the_next_page_is_read_is_not_emitted_again(
    engine: sa.Engine, store: StateStore
) -> None:
    """The engine or sync commits batch N while the source reads page N+1: a row of batch N is not new."""
    racing = CommitsWhileAsked(store)
    drv = Driver(config(engine), racing)  # type: ignore[arg-type]
    await drv.open()
    try:
        await drv.poll()
        touch(engine, 1)
        drv.source.request_poll()
        first = await drv.source.read(100, 0.0)
        assert updates_of(first.events, 1) == [1]
        touch(engine, 2)  # a row the next page must look up in the store
        racing.armed = (drv.source, first)
        drv.source.request_poll()
        second = await drv.source.read(100, 0.0)
        assert racing.armed is None  # the commit happened during the read
        assert [(e.op, e.key) for e in second.events] == [("update", (2,))]
    finally:
        await drv.close()
