"""The ``mariadb`` binlog source against the real server: exact types, deletes, resume, ALTER TABLE, retention.

Each test has its own database (the ``mariadb_database`` fixture) and its own replica
server id. The last test runs ``tidesync run`` from MariaDB into Postgres under a write load, with two kill -9s.
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import threading
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.integration.e2e_support import (
    kill_engine,
    mariadb_checksum,
    pg_checksum,
    running,
    start_engine,
    status,
    stop_engine,
)
from tidesync.event import ChangeEvent, Position
from tidesync.protocols import Context
from tidesync.sources.mariadb import BinlogGone, MariadbSource, MariadbSourceConfig
from tidesync.state import open_state_store
from tidesync.testing import wait_until

UTC = dt.UTC


def run_sql(dsn: str, *statements: str, sql_mode: str | None = None) -> None:
    db = dsn.rsplit("/", 1)[1]
    conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=db, autocommit=True,
                           charset="utf8mb4")  # fmt: skip
    try:
        with conn.cursor() as cur:
            if sql_mode is not None:
                cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
            for s in statements:
                cur.execute(s)
    finally:
        conn.close()


def source(dsn: str, **options: Any) -> MariadbSource:
    cfg = {"dsn": dsn, "tables": ["t"], "server_id": random.randint(100_000, 2_000_000_000), **options}
    return MariadbSource(MariadbSourceConfig.model_validate(cfg))


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="binlog-test", name="source", state=store)
    await store.close()


async def drain(src: MariadbSource, want: int, max_events: int = 100, rounds: int = 300) -> list[ChangeEvent]:
    out: list[ChangeEvent] = []
    for _ in range(rounds):
        out.extend((await src.read(max_events, 0.05)).events)
        if len(out) >= want:
            break
    return out


TYPES = """CREATE TABLE t (
  id int unsigned PRIMARY KEY,
  ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned, mi mediumint, mu mediumint unsigned,
  i int, iu int unsigned, bi bigint, bu bigint unsigned,
  d decimal(65,30), d2 decimal(10,2), f float, db double,
  dt datetime(6), dt0 datetime, ts timestamp(6) NULL, dd date, tm time(6), y year,
  vc varchar(100), tx text, mt mediumtext, ch char(10), bn binary(4), vb varbinary(10), bl blob, lb longblob,
  e enum('small','large'), s set('a','b','c'), b1 bit(1), b bit(64), j json
)"""

MAX = (
    "(1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, "
    "18446744073709551615, 99999999999999999999999999999999999.999999999999999999999999999999, 99999999.99, "
    "3.4e38, 1.7976931348623157e308, '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59', "
    "'2038-01-19 03:14:07.999999', '9999-12-31', '838:59:59.000000', 2155, 'héllo 😀 𝄞', 'ünïcödé 🎉', "
    "REPEAT('x', 70000), 'abc', x'00ff00ff', x'', x'deadbeef', x'00', 'large', 'a,b,c', b'1', "
    "b'1111111111111111111111111111111111111111111111111111111111111111', '{\"k\": [1, 2.5, \"😀\", null]}')"
)
MIN = (
    "(2, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, "
    "-99999999999999999999999999999999999.999999999999999999999999999999, -99999999.99, -3.4e38, "
    "-1.7976931348623157e308, '1000-01-01 00:00:00.000001', '1000-01-01 00:00:00', "
    "'1970-01-01 00:00:01.000001', '1000-01-01', '-838:59:59.000000', 1901, '', '', '', '', x'00000000', "
    "x'00', x'', x'', 'small', '', b'0', b'0', '[]')"
)
NULLS = "(3" + ", NULL" * 33 + ")"
ZERO = "(4" + ", NULL" * 14 + ", '0000-00-00 00:00:00', '0000-00-00 00:00:00', NULL, '0000-00-00'" + ", NULL" * 15 + ")"

WANT = {
    1: {"ti": 127, "tu": 255, "si": 32767, "su": 65535, "mi": 8388607, "mu": 16777215, "i": 2147483647,
        "iu": 4294967295, "bi": 9223372036854775807, "bu": 18446744073709551615,
        "d": Decimal("99999999999999999999999999999999999.999999999999999999999999999999"),
        "d2": Decimal("99999999.99"), "db": 1.7976931348623157e308,
        "dt": dt.datetime(9999, 12, 31, 23, 59, 59, 999999), "dt0": dt.datetime(9999, 12, 31, 23, 59, 59),
        "ts": dt.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC), "dd": dt.date(9999, 12, 31),
        "tm": dt.timedelta(hours=838, minutes=59, seconds=59), "y": 2155, "vc": "héllo 😀 𝄞",
        "tx": "ünïcödé 🎉", "mt": "x" * 70000, "ch": "abc", "bn": b"\x00\xff\x00\xff", "vb": b"",
        "bl": b"\xde\xad\xbe\xef", "lb": b"\x00", "e": "large", "s": "a,b,c", "b1": True, "b": 2**64 - 1,
        "j": {"k": [1, 2.5, "😀", None]}},
    2: {"ti": -128, "tu": 0, "si": -32768, "su": 0, "mi": -8388608, "mu": 0, "i": -2147483648, "iu": 0,
        "bi": -9223372036854775808, "bu": 0,
        "d": Decimal("-99999999999999999999999999999999999.999999999999999999999999999999"),
        "d2": Decimal("-99999999.99"), "db": -1.7976931348623157e308,
        "dt": dt.datetime(1000, 1, 1, 0, 0, 0, 1), "dt0": dt.datetime(1000, 1, 1),
        "ts": dt.datetime(1970, 1, 1, 0, 0, 1, 1, tzinfo=UTC), "dd": dt.date(1000, 1, 1),
        "tm": -dt.timedelta(hours=838, minutes=59, seconds=59), "y": 1901, "vc": "", "tx": "", "mt": "",
        "ch": "", "bn": b"\x00\x00\x00\x00", "vb": b"\x00", "bl": b"", "lb": b"", "e": "small", "s": "",
        "b1": False, "b": 0, "j": []},
}  # fmt: skip


def check_row(row: dict[str, Any]) -> None:
    i = row["id"]
    if i == 3:
        assert all(v is None for k, v in row.items() if k != "id"), row
        return
    if i == 4:  # zero dates under zero_dates: null
        assert row["dt"] is None and row["dt0"] is None and row["dd"] is None, row
        return
    want = WANT[i]
    for k, v in want.items():
        assert row[k] == v and type(row[k]) is type(v), (i, k, row[k], v)
    f32 = struct.unpack("<f", struct.pack("<f", 3.4e38 if i == 1 else -3.4e38))[0]
    assert row["f"] == f32  # FLOAT: the stored 32-bit value, whichever path read it


@pytest.mark.parametrize("path", ["snapshot", "binlog", "binlog-library"])
async def test_type_matrix_is_exact_on_every_path(
    path: str, mariadb_database: str, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot query, the source's row decoder (rows.py), and mysql-replication's (its fallback)."""
    if path == "binlog-library":
        monkeypatch.setattr("tidesync.sources.mariadb.records.compile_decoder", lambda columns, types: None)
    dsn = mariadb_database
    run_sql(dsn, TYPES)
    inserts = [f"INSERT INTO t VALUES {MAX}", f"INSERT INTO t VALUES {MIN}", f"INSERT INTO t VALUES {NULLS}"]
    src = source(dsn, snapshot="initial" if path == "snapshot" else "never")
    if path == "snapshot":
        run_sql(dsn, *inserts)
        run_sql(dsn, f"INSERT INTO t VALUES {ZERO}", sql_mode="")
    await src.open(ctx, None)
    if path != "snapshot":
        run_sql(dsn, *inserts)
        run_sql(dsn, f"INSERT INTO t VALUES {ZERO}", sql_mode="")
    events = await drain(src, 4)
    if path != "snapshot":
        # every rows event went through the source's own decoder (rows.py), or none did
        assert src.fast_decoded == (4 if path == "binlog" else 0)
        # the table maps describe the table as information_schema did at open: no spurious schema change
        assert len(ctx.schemas.history(events[0].entity)) == 1
    await src.close()
    assert [e.op for e in events] == ["snapshot" if path == "snapshot" else "insert"] * 4
    assert [e.key for e in events] == [(1,), (2,), (3,), (4,)]
    for e in events:
        assert e.after is not None
        check_row(e.after)
    schema = ctx.schemas.get(events[0].entity)
    assert schema is not None and schema.primary_key == ("id",)
    types = {c.name: c.type for c in schema.columns}
    assert types["bu"] == "decimal" and types["iu"] == "int64" and types["ts"] == "timestamptz"
    assert types["dt"] == "timestamp" and types["j"] == "json" and types["b1"] == "bool" and types["bl"] == "bytes"


FRACTIONS = """CREATE TABLE t (id int PRIMARY KEY, t1 time(1), t2 time(2), t3 time(3), t4 time(4), t5 time(5),
  t6 time(6), t0 time, d1 datetime(1), d3 datetime(3), d5 datetime(5), s2 timestamp(2) NULL, s4 timestamp(4) NULL,
  n9 decimal(18,9), n0 decimal(20,0), n4 decimal(9,4), e enum('a','b','c'), st set('x','y'))"""
FRACTION_ROWS = [
    "(1, '-00:00:01.5', '-00:00:00.01', '-12:34:56.789', '-00:00:00.0001', '-838:59:58.99999', '-00:00:00.000001',"
    " '-00:00:01', '2024-02-29 23:59:59.9', '1999-12-31 23:59:59.999', '2000-01-01 00:00:00.00001',"
    " '2001-09-09 01:46:40.99', '2038-01-19 03:14:07.9999', -0.000000001, -12345678901234567890, -99999.9999,"
    " 'c', 'x,y')",
    "(2, '00:00:01.5', '838:59:59.99', '12:34:56.789', '00:00:00.0001', '00:00:00.00001', '00:00:00.000001',"
    " '00:00:00', '1000-01-01 00:00:00.1', '2024-01-01 12:00:00.5', '2024-01-01 12:00:00.12345',"
    " '1970-01-01 00:00:01.01', '1970-01-01 00:00:01.0001', 123456789.123456789, 0, 0.0001, 'a', '')",
]


async def test_the_binlog_decoder_agrees_with_the_server_on_fractions_signs_and_decimals(
    mariadb_database: str, ctx: Context
) -> None:
    """The same rows read by a query (the server's own text, parsed by PyMySQL) and decoded from the binlog."""
    run_sql(mariadb_database, FRACTIONS)
    src = source(mariadb_database, snapshot="never")
    await src.open(ctx, None)
    run_sql(mariadb_database, *(f"INSERT INTO t VALUES {r}" for r in FRACTION_ROWS))
    streamed = await drain(src, 2)
    assert src.fast_decoded == 2
    await src.close()
    snap = source(mariadb_database, snapshot="initial")
    await snap.open(ctx, None)
    snapshot = await drain(snap, 2)
    await snap.close()
    assert [e.after for e in streamed] == [e.after for e in snapshot]
    first = streamed[0].after
    assert first is not None
    assert first["t1"] == -dt.timedelta(seconds=1, microseconds=500000) and first["n0"] == Decimal(
        -12345678901234567890
    )
    assert first["s2"] == dt.datetime(2001, 9, 9, 1, 46, 40, 990000, tzinfo=UTC) and first["st"] == "x,y"


async def test_zero_dates_can_be_dead_lettered(mariadb_database: str, ctx: Context) -> None:
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY, dd date, ts timestamp NULL)")
    src = source(mariadb_database, snapshot="never", zero_dates="dead_letter")
    await src.open(ctx, None)
    run_sql(mariadb_database, "INSERT INTO t VALUES (1, '2024-02-29', NULL), (2, '0000-00-00', NULL)", sql_mode="")
    run_sql(mariadb_database, "INSERT INTO t VALUES (3, NULL, '0000-00-00 00:00:00'), (4, NULL, NULL)", sql_mode="")
    events, rejected = [], []
    for _ in range(100):
        batch = await src.read(100, 0.05)
        events += batch.events
        rejected += batch.rejected
        if len(events) + len(rejected) >= 4:
            break
    await src.close()
    assert [e.key for e in events] == [(1,), (4,)]
    assert [(e.key, "zero date" in why) for e, why in rejected] == [((2,), True), ((3,), True)]


async def test_updates_carry_the_exact_diff_and_deletes_are_seen(mariadb_database: str, ctx: Context) -> None:
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY, a text, b decimal(10,3), c json)")
    src = source(mariadb_database, snapshot="never")
    await src.open(ctx, None)
    run_sql(
        mariadb_database,
        "INSERT INTO t VALUES (1, 'x', 1.500, '{\"k\": 1}'), (2, 'y', 2.000, NULL)",
        "UPDATE t SET b = 1.5 WHERE id = 1",  # the same value: the server writes no row at all
        "UPDATE t SET a = 'z', c = '{\"k\": 2}' WHERE id = 1",
        "UPDATE t SET id = 3 WHERE id = 2",  # a key change: delete of the old key, insert of the new
        "DELETE FROM t WHERE id = 1",
    )
    events = await drain(src, 6)
    await src.close()
    assert [(e.op, e.key) for e in events] == [
        ("insert", (1,)), ("insert", (2,)), ("update", (1,)), ("delete", (2,)), ("insert", (3,)), ("delete", (1,)),
    ]  # fmt: skip
    update = events[2]
    assert update.changed == ("a", "c")
    assert update.before == {"id": 1, "a": "x", "b": Decimal("1.500"), "c": {"k": 1}}
    assert update.after == {"id": 1, "a": "z", "b": Decimal("1.500"), "c": {"k": 2}}
    assert events[5].before is not None and events[5].before["a"] == "z"
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


async def test_resume_after_a_checkpoint_inside_a_transaction_loses_and_repeats_nothing(
    mariadb_database: str, ctx: Context
) -> None:
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    src = source(mariadb_database, snapshot="never")
    await src.open(ctx, None)
    values = ", ".join(f"({i}, 0)" for i in range(1, 31))
    run_sql(mariadb_database, f"INSERT INTO t VALUES {values}", "UPDATE t SET v = 1 WHERE id <= 5")
    first: list[ChangeEvent] = []
    checkpoint: Position | None = None
    while len(first) < 12:
        batch = await src.read(4, 0.05)
        first += batch.events
        checkpoint = batch.position or checkpoint
    assert checkpoint is not None and checkpoint[2] >= 0  # inside the 30-row transaction
    await src.commit(checkpoint)
    await src.close()
    run_sql(mariadb_database, "DELETE FROM t WHERE id > 25")
    again = source(mariadb_database, snapshot="never", server_id=src.config.server_id)
    await again.open(ctx, checkpoint)
    rest = await drain(again, 30 + 5 + 5 - len(first))
    await again.close()
    assert all(e.position > checkpoint for e in rest)
    seen = [(e.op, e.key) for e in first + rest]
    assert len(seen) == len(set(seen)) == 40  # nothing doubled, nothing lost
    assert [k for op, k in seen if op == "delete"] == [(i,) for i in range(26, 31)]


async def test_alter_table_mid_stream_is_followed(mariadb_database: str, ctx: Context) -> None:
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY, a text, gone int)")
    src = source(mariadb_database, snapshot="never")
    await src.open(ctx, None)
    run_sql(
        mariadb_database,
        "INSERT INTO t VALUES (1, 'one', 7)",
        "ALTER TABLE t ADD COLUMN added decimal(5,2) DEFAULT 1.25, DROP COLUMN gone",
        "INSERT INTO t (id, a) VALUES (2, 'two')",
        "UPDATE t SET added = 2.5 WHERE id = 1",
        "ALTER TABLE t RENAME COLUMN a TO title",
        "INSERT INTO t VALUES (3, 'three', 3.75)",
        "ALTER TABLE t MODIFY COLUMN added decimal(9,4)",
        "INSERT INTO t VALUES (4, 'four', 4.1234)",
    )
    events = await drain(src, 5)
    await src.close()
    assert [e.after for e in events] == [
        {"id": 1, "a": "one", "gone": 7},
        {"id": 2, "a": "two", "added": Decimal("1.25")},
        {"id": 1, "a": "one", "added": Decimal("2.50")},
        {"id": 3, "title": "three", "added": Decimal("3.75")},
        {"id": 4, "title": "four", "added": Decimal("4.1234")},
    ]
    assert events[2].changed == ("added",)
    history = ctx.schemas.history(events[0].entity)
    shapes = [(s.names, s.since) for s in history]
    assert shapes[-3:] == [
        (("id", "a", "added"), events[1].position),
        (("id", "title", "added"), events[3].position),
        (("id", "title", "added"), events[4].position),
    ]
    assert (history[-1].columns[2].precision, history[-1].columns[2].scale) == (9, 4)  # MODIFY: a new type
    assert ctx.schemas.shape_at(events[0].entity, events[0].position).names == ("id", "a", "gone")  # type: ignore[union-attr]


async def test_a_snapshot_resumes_from_its_last_committed_chunk(mariadb_database: str, ctx: Context) -> None:
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    run_sql(mariadb_database, "INSERT INTO t VALUES " + ", ".join(f"({i}, {i})" for i in range(1, 51)))
    src = source(mariadb_database, snapshot_chunk_size=10)
    await src.open(ctx, None)
    run_sql(mariadb_database, "UPDATE t SET v = -1 WHERE id = 50")  # after the snapshot point: streamed
    first = (await src.read(100, 0.1)), (await src.read(100, 0.1))
    checkpoint = first[1].position
    assert checkpoint is not None and checkpoint[0] == 0
    await src.commit(checkpoint)
    await src.close()
    again = source(mariadb_database, snapshot_chunk_size=10, server_id=src.config.server_id)
    await again.open(ctx, checkpoint)
    rest = await drain(again, 31)
    await again.close()
    snap = [e for b in first for e in b.events] + [e for e in rest if e.op == "snapshot"]
    assert [e.key for e in snap] == [(i,) for i in range(1, 51)]
    assert all(e.position > checkpoint for e in rest)
    assert [(e.op, e.key, e.after) for e in rest if e.op != "snapshot"] == [("update", (50,), {"id": 50, "v": -1})]


async def test_a_checkpoint_in_a_binlog_file_the_server_no_longer_has_is_a_loud_error(
    mariadb_database: str, ctx: Context
) -> None:
    """Purging binlogs here would break other tests reading them, so the checkpoint names a file that is not
    on the server: the same state as one purged by binlog_expire_logs_seconds."""
    run_sql(mariadb_database, "CREATE TABLE t (id int PRIMARY KEY)")
    src = source(mariadb_database, snapshot="never")
    with pytest.raises(BinlogGone, match=r"no longer has .*Re-snapshot"):
        await src.open(ctx, (999_999, 4, 0, "0-1-1"))
    await src.close()


def test_the_server_settings_are_checked_with_the_fix() -> None:
    from tidesync.sources.mariadb.server import ServerFacts

    facts = ServerFacts(True, "10.11", {"log_bin": "OFF", "binlog_format": "MIXED", "binlog_row_image": "FULL",
                                        "binlog_row_metadata": "NO_LOG"})  # fmt: skip
    found = facts.problems()
    assert len(found) == 3 and any("SET GLOBAL binlog_format = 'ROW'" in p for p in found)


# --- end to end: `tidesync run` MariaDB -> Postgres under a write load, with two kill -9s ---------------------


class Writer(threading.Thread):
    """Transactions of 6 inserts, 3 updates and 1 delete of existing rows on MariaDB, about 300 changes a second."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.next_id = 100_000
        self.ops = 0
        self.deleted = 0
        self.rng = random.Random(7)
        self.update = "UPDATE items SET version = version + 1, payload = %s WHERE id = %s"
        self.ids = list(range(1, 3001))  # the seeded rows, then every row inserted and not yet deleted

    def run(self) -> None:
        db = self.dsn.rsplit("/", 1)[1]
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", database=db, charset="utf8mb4")
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    for _ in range(6):
                        cur.execute(
                            "INSERT INTO items (id, version, payload, amount, at) VALUES (%s, 1, %s, %s, NOW(6))",
                            (self.next_id, f"p{self.next_id} 😀", Decimal(self.next_id) / 100),
                        )
                        self.ids.append(self.next_id)
                        self.next_id += 1
                    for _ in range(3):
                        i = self.rng.choice(self.ids)
                        cur.execute(self.update, (str(i), i))
                    gone = self.ids.pop(self.rng.randrange(len(self.ids)))
                    self.deleted += cur.execute("DELETE FROM items WHERE id = %s", (gone,))
                    conn.commit()
                    self.ops += 10
                    self.stop.wait(0.03)
        finally:
            conn.close()


COLUMNS = "id, version, payload, amount, at, note"


@pytest.mark.slow
def test_end_to_end_to_postgres_under_load_with_two_kills_and_an_alter_table(
    tmp_path: Path, mariadb_database: str, pg_database: str
) -> None:
    src, dst = mariadb_database, pg_database
    db = src.rsplit("/", 1)[1]
    run_sql(src, "CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload varchar(200), "
                 "amount decimal(12,2), at datetime(6))")  # fmt: skip
    run_sql(src, "INSERT INTO items SELECT seq, 1, CONCAT('seed ', seq), seq / 100, NOW(6) FROM seq_1_to_3000")
    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, version int NOT NULL, payload text, "
                     "amount numeric(12,2), at timestamp)")  # fmt: skip
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: binlog_{db}
    source: {{type: mariadb, dsn: "{src}", tables: [items], server_id: {random.randint(100_000, 2_000_000_000)},
              snapshot_chunk_size: 500}}
    sink: {{type: postgres, dsn: "{dst}", tables: {{{db}.items: items}}}}
    batch: {{max_events: 1000, max_wait_ms: 20}}
"""
    )
    log = tmp_path / "engine.log"
    writer = Writer(src)
    proc = start_engine(config, log)
    try:
        wait_until(lambda: running(proc, log) and status(config)[0]["state"] == "running", timeout=60)
        writer.start()
        for _ in range(2):
            applied = status(config)[0]["events_applied"]
            engine = proc
            wait_until(
                lambda a=applied, p=engine: running(p, log) and status(config)[0]["events_applied"] > a + 300,
                timeout=60,
                message="streaming",
            )
            kill_engine(proc)  # kill -9, mid-stream
            proc = start_engine(config, log)
            restarted = proc
            wait_until(lambda p=restarted: running(p, log) and status(config)[0]["state"] == "running", timeout=60)
            if _ == 0:  # a schema change under load: the destination gets the column before its first value
                run_sql(src, "ALTER TABLE items ADD COLUMN note varchar(40) NULL")
                writer.update = "UPDATE items SET version = version + 1, note = %s WHERE id = %s"
        wait_until(lambda: writer.ops > 1500, timeout=60, message="load")
        writer.stop.set()
        writer.join()
        engine = proc

        def converged() -> bool:
            return running(engine, log) and pg_checksum(dst, "items", COLUMNS) == mariadb_checksum(
                src, "items", COLUMNS
            )

        wait_until(converged, timeout=90, interval=0.5, message="the destination to converge")
        stop_engine(proc, log)
    finally:
        writer.stop.set()
        if proc.poll() is None:
            kill_engine(proc)
    assert writer.deleted > 100  # deletes were seen through the binlog (no key scan exists here)
    count, _ = mariadb_checksum(src, "items", COLUMNS)
    assert count > 3000
    with psycopg.connect(dst) as conn:  # the new column reached the destination, with values
        row = conn.execute("SELECT count(note) FROM items").fetchone()
    assert row is not None and row[0] > 0
