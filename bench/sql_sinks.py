"""Apply throughput of the SQL sinks, beside the same rows written by hand (the limit).

For each database (Postgres and MariaDB on 127.0.0.1, SQLite in a temp dir) it
writes ``--rows`` rows of a pgbench_accounts-like table (aid bigint key, bid
int, abalance int, filler 84 chars) through the sink in batches of
``--batch``: inserts, then single-field updates (abalance, keys in random
order), then deletes (random order); one transaction per batch, with the
applied position stored in it. Beside each it times the same rows done by
hand in the same run, one transaction per batch too:

- the limit (``--limit``, what the target is measured against): a plain COPY
  (Postgres), a multi-row INSERT (MariaDB), an executemany INSERT (SQLite) of
  the same rows into an empty copy of the table;
- by hand: the best single statement per batch for that operation
  (Postgres: COPY / UPDATE FROM unnest / DELETE = ANY; MariaDB: multi-row
  INSERT / UPDATE JOIN / DELETE IN; SQLite: executemany), i.e. what the sink
  costs over a hand-written loop.

``--strategies`` instead compares the candidate statements for Postgres and
MariaDB, interleaved batch by batch (the measurements quoted in
tidesync/sinks/sql/postgres_steps.py and mariadb.py).

Run: .venv/bin/python bench/sql_sinks.py [--rows 100000] [--batch 1000] [--db postgres,mariadb,sqlite]
Target (issue 4): Postgres sink >= 0.5 of the limit.

A run with the defaults on this 2-core machine while it was fairly quiet (load ~1.3), rows/s:

    postgres  limit (plain COPY) 339,764
              insert 173,546 (0.51 of the limit; 0.60 of by hand)
              update  94,504 (0.28; 0.87 of by hand, itself 0.32 of the limit)
              delete 140,721 (0.41; 0.63 of by hand)
    mariadb   limit (multi-row INSERT) 145,427: insert 0.76, update 0.60, delete 0.84
    sqlite    limit (executemany INSERT) 549,832: insert 0.44, update 0.06, delete 0.07
              (random-order updates and deletes of SQLite's B-tree run at 50k-100k by hand)

Issue 15, after (same command, --db postgres,sqlite, two runs, load ~1): rows/s, / limit, / by hand

    postgres  limit 327k-335k: insert 0.53-0.54; update 91k-96k (0.28-0.29; 0.86-0.88 of by hand);
              delete 138k-140k (0.42; 0.65-0.68): the statements are the fastest of --strategies
              (unnest for updates, = ANY for deletes); what is left is the database's cost of a
              non-HOT update, and per batch the planning and the position's round trips
    sqlite    limit 609k-646k (both connections now checkpoint every 10,000 WAL pages, as the sink
              does): insert 0.35-0.36; update 69k-76k (0.11-0.12; 1.02-1.07 of by hand), delete
              65k-67k (0.10-0.11; 0.88-0.89), from 32k and 37k before: a random-order update or
              delete dirties about one page per row, an insert of new keys one per ~40 rows
    sqlite, as fractions of the sink's own inserts (column "/ sink insert", --db sqlite, four runs,
              load ~3): update 0.31-0.44, delete 0.30-0.37. By hand, with no planning at all, the
              updates take more than twice the sink's inserts (by hand update / sink insert
              0.34-0.47, before and after): per 1,000-row batch SQLite writes a WAL frame for each of
              ~830 table pages (deletes also ~400 index pages) against ~27 for appended inserts, and a
              checkpoint every ~12 batches (16-34% of the update or delete time); with checkpoints off
              altogether (four runs) the sink's updates still reach only 0.27-0.41 of its inserts, deletes 0.38-0.47

Issue 15, SQLite updates and deletes again (--db sqlite --rows 100000, load 4-9 on the 2 cores, so the
wall figures swing up to 2x from run to run; hence the second table, by CPU time of the process). The
three tables now live in three files (see SqliteTarget), and the sink deletes on a one-column key with
DELETE ... IN (...) per chunk instead of one executemany row per key. Five runs each, sink before ->
after in the same bench, by CPU: update / sink insert 0.31-0.38 -> 0.34-0.40 (the update path did not
change: noise), delete / sink insert 0.31-0.40 -> 0.41-0.47, delete / by hand 0.77-0.81 -> 0.83-0.85;
/ limit: update 0.13-0.16, delete 0.15-0.18. By wall: update 0.23-0.44 -> 0.25-0.53, delete
0.21-0.53 -> 0.23-0.80 of the sink's inserts (the high ends are runs whose inserts met more load).
The SQL alone sets the bound: plain executemany updates by hand, with no planning and no position,
run at 0.44-0.59 of the sink's inserts by CPU. Per 1,000-row batch SQLite
writes 830 WAL frames for the updates and 1,125 for the deletes against 35 for the inserts (two
pwrite calls a frame, ~3 us each here: about 5 ms of commit for an update batch, the whole of an
insert batch's cost), while the sink's per-row planning (~3.5 CPU-us a row) is the same for every
kind. Also measured and left as they are: mmap_size (no change), wal_autocheckpoint 20,000 or 40,000
(updates within noise, deletes up to ~10% less CPU, for a WAL twice or four times as large; 0, never,
is slower: long WALs make every page lookup search more of the WAL index), one UPDATE ... FROM
(VALUES ...) per batch instead of executemany (~13% less statement CPU, ~3% of the update).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.sinks.sql import sqlite as sqlite_sink
from tidesync.sinks.sql.common import SqlSink
from tidesync.sinks.sql.config import MariadbSinkConfig, PostgresSinkConfig, SqliteSinkConfig
from tidesync.sinks.sql.mariadb import MariadbSink
from tidesync.sinks.sql.postgres import PostgresSink
from tidesync.sinks.sql.sqlite import SqliteSink

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
FILLER = "x" * 84
DDL = "CREATE TABLE {t} (aid BIGINT PRIMARY KEY, bid INTEGER, abalance INTEGER, filler VARCHAR(84))"

Rows = list[tuple[int, int, int, str]]
OPS = ("insert", "update", "delete")


def make_events(n: int, seed: int = 1) -> tuple[Rows, list[ChangeEvent], list[ChangeEvent], list[ChangeEvent], Rows]:
    rng = random.Random(seed)
    rows = [(i, i // 100_000, 0, FILLER) for i in range(1, n + 1)]
    inserts = [
        ChangeEvent(
            "public.accounts",
            (r[0],),
            "insert",
            after=dict(zip(("aid", "bid", "abalance", "filler"), r, strict=True)),
            position=(p,),
        )
        for p, r in enumerate(rows, 1)
    ]
    order = list(range(n))
    rng.shuffle(order)
    new_rows = [(rows[i][0], rows[i][1], rng.randrange(-5000, 5000), FILLER) for i in order]
    updates = [
        ChangeEvent(
            "public.accounts",
            (r[0],),
            "update",
            after=dict(zip(("aid", "bid", "abalance", "filler"), r, strict=True)),
            changed=("abalance",),
            position=(n + p,),
        )
        for p, r in enumerate(new_rows, 1)
    ]
    rng.shuffle(order)
    deletes = [
        ChangeEvent("public.accounts", (rows[i][0],), "delete", before={"aid": rows[i][0]}, position=(2 * n + p,))
        for p, i in enumerate(order, 1)
    ]
    return rows, inserts, updates, deletes, new_rows


async def clock(work: Awaitable[None], cpu: dict[str, float], key: str) -> float:
    """The wall time ``work`` takes; adds the process's CPU time (all its threads) to ``cpu[key]``."""
    t0, c0 = time.perf_counter(), time.process_time()
    await work
    cpu[key] += time.process_time() - c0
    return time.perf_counter() - t0


class Target:
    """One database: three tables of the same shape (the sink's, the limit's, by hand's) and the hand-made writes."""

    name = ""
    limit_name = ""
    # The database runs inside this process (SQLite), so the process's CPU time is all of the work: on a
    # shared machine it varies less between runs than the wall time, which waits for the other tenants.
    in_process = False

    async def setup(self) -> None: ...

    async def teardown(self) -> None: ...

    async def fill(self, table: str, rows: Rows | None) -> None:
        """Empty ``table``, then load ``rows`` into it (not timed)."""

    async def insert(self, table: str, rows: Rows) -> None:
        """One transaction: the limit's fast path into ``table``."""

    async def update(self, rows: Rows) -> None:
        """One transaction: set abalance of ``rows`` in by_hand, the best way by hand."""

    async def delete(self, keys: list[int]) -> None: ...

    def sink(self, pipeline: str) -> SqlSink: ...


async def measure(t: Target, n: int, batch: int, repeat: int) -> dict[str, float]:
    """Rows/s of each way, interleaved batch by batch so that all share the machine's load alike."""
    rows, inserts, updates, deletes, new_rows = make_events(n)
    keys = [e.key[0] for e in deletes]
    spent: dict[str, float] = dict.fromkeys(["limit", *(f"{w} {op}" for w in ("sink", "hand") for op in OPS)], 0.0)
    cpu = dict.fromkeys(spent, 0.0)
    for rep in range(repeat):
        await t.fill("accounts", None)
        await t.fill("by_hand", None)
        sink = t.sink(f"bench-{rep}")
        await sink.open(Context(pipeline=f"bench-{rep}", name="sink", state=None))  # type: ignore[arg-type]
        hands: dict[str, Callable[[int, int], Awaitable[None]]] = {
            "insert": lambda a, b: t.insert("by_hand", rows[a:b]),
            "update": lambda a, b: t.update(new_rows[a:b]),
            "delete": lambda a, b: t.delete(keys[a:b]),
        }
        for op, events in zip(OPS, (inserts, updates, deletes), strict=True):
            await t.fill("limit_table", None)
            for a in range(0, n, batch):
                b = min(a + batch, n)
                spent["limit"] += await clock(t.insert("limit_table", rows[a:b]), cpu, "limit")
                spent[f"hand {op}"] += await clock(hands[op](a, b), cpu, f"hand {op}")
                spent[f"sink {op}"] += await clock(sink.write(events[a:b]), cpu, f"sink {op}")
        await sink.close()
    rates = {k: n * repeat / v for k, v in spent.items()}
    rates.update({f"cpu {k}": n * repeat / v for k, v in cpu.items() if v > 0})
    rates["limit"] *= len(OPS)
    rates["cpu limit"] *= len(OPS)
    return rates


# --- Postgres ----------------------------------------------------------------------------------


class PostgresTarget(Target):
    name, limit_name = "postgres", "plain COPY"

    async def setup(self) -> None:
        self.db = f"bench_{uuid.uuid4().hex[:8]}"
        self.admin = await psycopg.AsyncConnection.connect(PG_ADMIN, autocommit=True)
        await self.admin.execute(f'CREATE DATABASE "{self.db}"')
        self.dsn = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db
        self.conn = await psycopg.AsyncConnection.connect(self.dsn)
        for t in ("accounts", "limit_table", "by_hand"):
            await self.conn.execute(DDL.format(t=t))
        await self.conn.commit()

    async def teardown(self) -> None:
        await self.conn.close()
        await self.admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        await self.admin.close()

    async def fill(self, table: str, rows: Rows | None) -> None:
        await self.conn.execute(f"TRUNCATE {table}")
        if rows:
            await self.insert(table, rows)
        await self.conn.commit()

    async def insert(self, table: str, rows: Rows) -> None:
        async with self.conn.cursor().copy(f"COPY {table} (aid, bid, abalance, filler) FROM STDIN") as cp:
            for r in rows:
                await cp.write_row(r)
        await self.conn.commit()

    async def update(self, rows: Rows) -> None:
        await self.conn.execute(
            "UPDATE by_hand SET abalance = s.abalance FROM unnest(%s::bigint[], %s::int[]) s(aid, abalance) "
            "WHERE by_hand.aid = s.aid",
            [[r[0] for r in rows], [r[2] for r in rows]],
        )
        await self.conn.commit()

    async def delete(self, keys: list[int]) -> None:
        await self.conn.execute("DELETE FROM by_hand WHERE aid = ANY(%s::bigint[])", [keys])
        await self.conn.commit()

    def sink(self, pipeline: str) -> SqlSink:
        return PostgresSink(PostgresSinkConfig(dsn=self.dsn))


# --- MariaDB -----------------------------------------------------------------------------------


class MariadbTarget(Target):
    name, limit_name = "mariadb", "multi-row INSERT"

    async def setup(self) -> None:
        self.db = f"bench_{uuid.uuid4().hex[:8]}"
        self.admin = pymysql.connect(**MARIADB, autocommit=True)
        self.admin.cursor().execute(f"CREATE DATABASE `{self.db}`")
        self.conn = pymysql.connect(**MARIADB, database=self.db, autocommit=False)
        self.cur = self.conn.cursor()
        for t in ("accounts", "limit_table", "by_hand"):
            self.cur.execute(DDL.format(t=t))

    async def teardown(self) -> None:
        self.conn.close()
        self.admin.cursor().execute(f"DROP DATABASE IF EXISTS `{self.db}`")
        self.admin.close()

    async def fill(self, table: str, rows: Rows | None) -> None:
        self.cur.execute(f"DELETE FROM {table}")
        self.conn.commit()
        if rows:
            await self.insert(table, rows)

    async def insert(self, table: str, rows: Rows) -> None:
        self.cur.executemany(f"INSERT INTO {table} (aid, bid, abalance, filler) VALUES (%s, %s, %s, %s)", rows)
        self.conn.commit()

    async def update(self, rows: Rows) -> None:
        derived = "SELECT %s AS aid, %s AS abalance" + " UNION ALL SELECT %s, %s" * (len(rows) - 1)
        self.cur.execute(
            f"UPDATE by_hand JOIN ({derived}) s ON by_hand.aid = s.aid SET by_hand.abalance = s.abalance",
            [v for r in rows for v in (r[0], r[2])],
        )
        self.conn.commit()

    async def delete(self, keys: list[int]) -> None:
        self.cur.execute("DELETE FROM by_hand WHERE aid IN %s", (keys,))
        self.conn.commit()

    def sink(self, pipeline: str) -> SqlSink:
        return MariadbSink(MariadbSinkConfig(dsn=f"mysql://root@127.0.0.1:3306/{self.db}"))


# --- SQLite ------------------------------------------------------------------------------------


class SqliteTarget(Target):
    """Each of the three tables in a database file of its own, written by a connection of its own.

    One file would measure the connections' cross-talk: SQLite drops a connection's whole page cache
    when another connection has written the file since its last transaction, so every sink write would
    re-read the pages it touches (a random-order update or delete batch about one page per row, an
    insert batch only the last few), and the connections would run each other's WAL checkpoints.
    """

    name, limit_name = "sqlite", "executemany INSERT"
    in_process = True

    async def setup(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "accounts.db"  # the sink's
        self.conns: dict[str, sqlite3.Connection] = {}
        for t in ("accounts", "limit_table", "by_hand"):
            conn = sqlite3.connect(Path(self.tmp.name) / f"{t}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            # As the sink sets them.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{sqlite_sink.CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {sqlite_sink.CHECKPOINT_PAGES}")
            conn.execute(DDL.format(t=t))
            self.conns[t] = conn

    async def teardown(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.tmp.cleanup()

    def _tx(self, table: str, sql: str, args: list[Any]) -> None:
        conn = self.conns[table]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, args)
        conn.execute("COMMIT")

    async def fill(self, table: str, rows: Rows | None) -> None:
        self.conns[table].execute(f"DELETE FROM {table}")
        if rows:
            await self.insert(table, rows)

    async def insert(self, table: str, rows: Rows) -> None:
        self._tx(table, f"INSERT INTO {table} (aid, bid, abalance, filler) VALUES (?, ?, ?, ?)", rows)

    async def update(self, rows: Rows) -> None:
        self._tx("by_hand", "UPDATE by_hand SET abalance = ? WHERE aid = ?", [(r[2], r[0]) for r in rows])

    async def delete(self, keys: list[int]) -> None:
        self._tx("by_hand", "DELETE FROM by_hand WHERE aid = ?", [(k,) for k in keys])

    def sink(self, pipeline: str) -> SqlSink:
        return SqliteSink(SqliteSinkConfig(path=str(self.path)))


# --- --strategies: the candidate statements, by hand -----------------------------------------

SET_ALL = "ON CONFLICT (aid) DO UPDATE SET bid = excluded.bid, abalance = excluded.abalance, filler = excluded.filler"
VALUES_ROW = "(%s::bigint, %s::int, %s::int, %s::text)"
ARRAYS = "unnest(%s::bigint[], %s::int[], %s::int[], %s::text[]) AS v(aid, bid, abalance, filler)"
Candidate = Callable[[Any, str, Rows], Awaitable[None]]


async def _stage(c: Any, chunk: Rows, columns: str = "aid, bid, abalance, filler") -> None:
    async with c.cursor().copy(f"COPY stage ({columns}) FROM STDIN") as cp:
        for r in chunk:
            await cp.write_row(r)


def _flat(chunk: Rows) -> list[Any]:
    return [v for r in chunk for v in r]


def _columns(chunk: Rows) -> list[list[Any]]:
    return [list(col) for col in zip(*chunk, strict=True)]


async def _ins_stage(c: Any, t: str, chunk: Rows) -> None:
    await _stage(c, chunk)
    await c.execute(f"INSERT INTO {t} SELECT * FROM stage {SET_ALL}")


async def _ins_direct(c: Any, t: str, chunk: Rows) -> None:
    # What the sink does first for inserts: new rows need no upsert (it stages them when one exists).
    await c.execute("SAVEPOINT direct")
    async with c.cursor().copy(f"COPY {t} FROM STDIN") as cp:
        for r in chunk:
            await cp.write_row(r)
    await c.execute("RELEASE SAVEPOINT direct")


async def _ins_many(c: Any, t: str, chunk: Rows) -> None:
    await c.cursor().executemany(f"INSERT INTO {t} VALUES (%s, %s, %s, %s) {SET_ALL}", chunk)


async def _ins_values(c: Any, t: str, chunk: Rows) -> None:
    await c.execute(f"INSERT INTO {t} VALUES {', '.join([VALUES_ROW] * len(chunk))} {SET_ALL}", _flat(chunk))


async def _ins_arrays(c: Any, t: str, chunk: Rows) -> None:
    await c.execute(f"INSERT INTO {t} SELECT * FROM {ARRAYS} {SET_ALL}", _columns(chunk))


# Updates send the key and the one changed field, as the sink does.


async def _upd_stage(c: Any, t: str, chunk: Rows) -> None:
    await _stage(c, [(r[0], r[2]) for r in chunk], "aid, abalance")
    await c.execute(f"UPDATE {t} d SET abalance = s.abalance FROM stage s WHERE d.aid = s.aid")


async def _upd_many(c: Any, t: str, chunk: Rows) -> None:
    await c.cursor().executemany(f"UPDATE {t} SET abalance = %s WHERE aid = %s", [(r[2], r[0]) for r in chunk])


async def _upd_values(c: Any, t: str, chunk: Rows) -> None:
    values = ", ".join(["(%s::bigint, %s::int)"] * len(chunk))
    await c.execute(
        f"UPDATE {t} d SET abalance = v.abalance FROM (VALUES {values}) v(aid, abalance) WHERE d.aid = v.aid",
        [v for r in chunk for v in (r[0], r[2])],
    )


async def _upd_arrays(c: Any, t: str, chunk: Rows) -> None:
    await c.execute(
        f"UPDATE {t} d SET abalance = v.abalance FROM unnest(%s::bigint[], %s::int[]) AS v(aid, abalance) "
        "WHERE d.aid = v.aid",
        [[r[0] for r in chunk], [r[2] for r in chunk]],
    )


async def _del_stage(c: Any, t: str, chunk: Rows) -> None:
    await _stage(c, [(r[0],) for r in chunk], "aid")
    await c.execute(f"DELETE FROM {t} d USING stage s WHERE d.aid = s.aid")


async def _del_many(c: Any, t: str, chunk: Rows) -> None:
    await c.cursor().executemany(f"DELETE FROM {t} WHERE aid = %s", [(r[0],) for r in chunk])


async def _del_values(c: Any, t: str, chunk: Rows) -> None:
    values = ", ".join(["(%s::bigint)"] * len(chunk))
    await c.execute(f"DELETE FROM {t} d USING (VALUES {values}) v(aid) WHERE d.aid = v.aid", [r[0] for r in chunk])


async def _del_any(c: Any, t: str, chunk: Rows) -> None:
    await c.execute(f"DELETE FROM {t} WHERE aid = ANY(%s::bigint[])", [[r[0] for r in chunk]])


PG_CANDIDATES: dict[str, list[tuple[str, Candidate]]] = {
    "insert": [
        ("COPY into temp + INSERT .. ON CONFLICT", _ins_stage),
        ("COPY straight in, in a savepoint", _ins_direct),
        ("executemany INSERT .. ON CONFLICT", _ins_many),
        ("multi-row VALUES INSERT .. ON CONFLICT", _ins_values),
        ("unnest(arrays) INSERT .. ON CONFLICT", _ins_arrays),
    ],
    "update": [
        ("COPY into temp + UPDATE .. FROM", _upd_stage),
        ("executemany UPDATE", _upd_many),
        ("VALUES + UPDATE .. FROM", _upd_values),
        ("unnest(arrays) + UPDATE .. FROM", _upd_arrays),
    ],
    "delete": [
        ("COPY into temp + DELETE .. USING", _del_stage),
        ("executemany DELETE", _del_many),
        ("VALUES + DELETE .. USING", _del_values),
        ("= ANY(array) DELETE", _del_any),
    ],
}


async def pg_strategies(n: int, batch: int) -> None:
    """Each candidate per operation, one transaction per batch, interleaved batch by batch; own table each."""
    t = PostgresTarget()
    await t.setup()
    c = t.conn
    try:
        tables = [f"cand_{i}" for i in range(5)]
        for name in tables:
            await c.execute(DDL.format(t=name))
        await c.execute("SET enable_hashjoin = off; SET enable_mergejoin = off")  # as the sink sets them
        await c.execute("CREATE TEMP TABLE stage ON COMMIT DELETE ROWS AS SELECT * FROM accounts WITH NO DATA")
        await c.commit()
        rows, *_, new_rows = make_events(n)
        print(f"postgres, {n:,} rows in batches of {batch:,}, one transaction per batch (rows/s):")
        for op, candidates in PG_CANDIDATES.items():
            for name in tables:
                await t.fill(name, None if op == "insert" else rows)
                await c.execute(f"ANALYZE {name}")
            await c.commit()
            data = new_rows if op == "update" else rows
            spent = [0.0] * len(candidates)
            for a in range(0, n, batch):
                for i, (_, run) in enumerate(candidates):
                    t0 = time.perf_counter()
                    await run(c, tables[i], data[a : a + batch])
                    await c.commit()
                    spent[i] += time.perf_counter() - t0
            for (label, _), secs in zip(candidates, spent, strict=True):
                print(f"  {op:<7} {label:<42} {n / secs:>10,.0f}")
    finally:
        await t.teardown()


MARIADB_CANDIDATES: dict[str, list[tuple[str, str]]] = {
    "insert": [
        (
            "multi-row INSERT .. ON DUPLICATE KEY UPDATE",
            "many:INSERT INTO {t} VALUES (%s, %s, %s, %s) ON DUPLICATE KEY "
            "UPDATE bid = VALUES(bid), abalance = VALUES(abalance), filler = VALUES(filler)",
        ),
        ("multi-row INSERT (no upsert)", "many:INSERT INTO {t} VALUES (%s, %s, %s, %s)"),
    ],
    "update": [
        (
            "UPDATE .. JOIN (SELECT .. UNION ALL ..)",
            "join:UPDATE {t} d JOIN ({derived}) s ON d.aid = s.aid SET d.abalance = s.abalance",
        ),
        ("executemany UPDATE", "each:UPDATE {t} SET abalance = %s WHERE aid = %s"),
        (
            "INSERT .. ON DUPLICATE KEY (key + field)",
            "pairs:INSERT INTO {t} (aid, abalance) VALUES (%s, %s) ON DUPLICATE KEY UPDATE abalance = VALUES(abalance)",
        ),
    ],
    "delete": [
        ("DELETE .. WHERE key IN (...)", "in:DELETE FROM {t} WHERE aid IN %s"),
        ("executemany DELETE", "keys:DELETE FROM {t} WHERE aid = %s"),
    ],
}


async def mariadb_strategies(n: int, batch: int) -> None:
    """As pg_strategies, for MariaDB. The key+field upsert needs every NOT NULL column: not usable in general."""
    t = MariadbTarget()
    await t.setup()
    c, cur = t.conn, t.cur
    try:
        tables = [f"cand_{i}" for i in range(3)]
        for name in tables:
            cur.execute(DDL.format(t=name))
        rows, *_, new_rows = make_events(n)
        print(f"mariadb, {n:,} rows in batches of {batch:,}, one transaction per batch (rows/s):")
        for op, candidates in MARIADB_CANDIDATES.items():
            for name in tables:
                await t.fill(name, None if op == "insert" else rows)
            data = new_rows if op == "update" else rows
            spent = [0.0] * len(candidates)
            for a in range(0, n, batch):
                chunk = data[a : a + batch]
                for i, (_, spec) in enumerate(candidates):
                    how, query = spec.split(":", 1)
                    t0 = time.perf_counter()
                    if how == "many":
                        cur.executemany(query.format(t=tables[i]), chunk)
                    elif how == "join":
                        derived = "SELECT %s AS aid, %s AS abalance" + " UNION ALL SELECT %s, %s" * (len(chunk) - 1)
                        cur.execute(
                            query.format(t=tables[i], derived=derived), [v for r in chunk for v in (r[0], r[2])]
                        )
                    elif how == "each":
                        cur.executemany(query.format(t=tables[i]), [(r[2], r[0]) for r in chunk])
                    elif how == "pairs":
                        cur.executemany(query.format(t=tables[i]), [(r[0], r[2]) for r in chunk])
                    elif how == "in":
                        cur.execute(query.format(t=tables[i]), ([r[0] for r in chunk],))
                    else:
                        cur.executemany(query.format(t=tables[i]), [(r[0],) for r in chunk])
                    c.commit()
                    spent[i] += time.perf_counter() - t0
            for (label, _), secs in zip(candidates, spent, strict=True):
                print(f"  {op:<7} {label:<42} {n / secs:>10,.0f}")
    finally:
        await t.teardown()


TARGETS: dict[str, type[Target]] = {"postgres": PostgresTarget, "mariadb": MariadbTarget, "sqlite": SqliteTarget}


def report(t: Target, r: dict[str, float]) -> None:
    """Each operation's sink rate against the limit, the sink's own insert path and the same done by hand."""
    limit, inserts = r["limit"], r["sink insert"]
    print(f"\n{t.name}: limit = {t.limit_name} of the same rows, {limit:,.0f} rows/s")
    print(
        f"  {'operation':<8} {'sink rows/s':>12} {'/ limit':>8} {'/ sink insert':>14} "
        f"{'by hand rows/s':>15} {'sink / by hand':>15}"
    )
    for op in ("insert", "update", "delete"):
        s, h = r[f"sink {op}"], r[f"hand {op}"]
        print(f"  {op:<8} {s:>12,.0f} {s / limit:>8.2f} {s / inserts:>14.2f} {h:>15,.0f} {s / h:>15.2f}")
    if t.in_process:
        limit, inserts = r["cpu limit"], r["cpu sink insert"]
        print(f"  the same by CPU time of this process (all threads): rows per CPU-second; limit {limit:,.0f}")
        for op in ("insert", "update", "delete"):
            s, h = r[f"cpu sink {op}"], r[f"cpu hand {op}"]
            print(f"  {op:<8} {s:>12,.0f} {s / limit:>8.2f} {s / inserts:>14.2f} {h:>15,.0f} {s / h:>15.2f}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--db", default="postgres,mariadb,sqlite")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the same rows")
    ap.add_argument("--strategies", action="store_true", help="compare candidate statements instead")
    args = ap.parse_args()
    if args.strategies:
        dbs = args.db.split(",")
        if "postgres" in dbs:
            await pg_strategies(args.rows, args.batch)
        if "mariadb" in dbs:
            await mariadb_strategies(args.rows, args.batch)
        return
    print(f"{args.rows:,} rows in batches of {args.batch:,}; one transaction per batch; {args.repeat} round(s)")
    for db in args.db.split(","):
        target = TARGETS[db]()
        await target.setup()
        try:
            report(target, await measure(target, args.rows, args.batch, args.repeat))
        finally:
            await target.teardown()


if __name__ == "__main__":
    asyncio.run(main())
