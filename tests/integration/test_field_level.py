"""Field-level updates by default: Postgres CDC with the default config, a writer on each end, 1,000 rows for 20 s.

The source's writer changes ``x``; a person at the destination changes ``y``
of the same rows at the same time. The source's updates reach the
destination as updates of ``x`` alone (the source keeps each row's last
values to know which columns an update changed), so every destination edit
of ``y`` survives, and ``x`` ends equal on both ends. Against Postgres,
MariaDB and SQLite destinations; and once more against Postgres with the
pipeline killed with SIGKILL twice while it runs, where a replayed update
must neither lose its change (an update taken for a no-op leaves ``x``
stale) nor carry every column (``y`` would be overwritten).
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.integration.e2e_support import kill_engine, running, start_engine, stop_engine, wait_caught_up
from tidesync.testing import wait_until

pytestmark = pytest.mark.slow

ROWS = 1000
SECONDS = 20.0
TABLE = "CREATE TABLE items (id int PRIMARY KEY, x int NOT NULL, y int NOT NULL, note text)"
CONFIG = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{src}", tables: [items], progress: false, heartbeat_interval: 1,
              work_dir: "{tmp}/work"}}
    sink: {sink}
"""

Exec = tuple[Callable[[str, tuple[Any, ...]], Any], Callable[[], Any]]  # (execute, close)
Rows = Callable[[], dict[int, tuple[int, int]]]


def _pg(dsn: str) -> tuple[Callable[[], Exec], Rows]:
    def connect() -> Exec:
        conn = psycopg.connect(dsn, autocommit=True)
        return (lambda sql, params: conn.execute(sql.replace("?", "%s"), params)), conn.close

    def rows() -> dict[int, tuple[int, int]]:
        with psycopg.connect(dsn) as conn:
            try:
                return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, x, y FROM items")}
            except psycopg.errors.UndefinedTable:
                return {}  # not created yet

    return connect, rows


def _maria(dsn: str) -> tuple[Callable[[], Exec], Rows]:
    db = dsn.rsplit("/", 1)[1]

    def open_() -> Any:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, autocommit=True)

    def connect() -> Exec:
        conn = open_()
        return (lambda sql, params: conn.cursor().execute(sql.replace("?", "%s"), params)), conn.close

    def rows() -> dict[int, tuple[int, int]]:
        conn = open_()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id, x, y FROM items")
                return {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        except pymysql.err.ProgrammingError:
            return {}  # not created yet
        finally:
            conn.close()

    return connect, rows


def _sqlite(path: Path) -> tuple[Callable[[], Exec], Rows]:
    def connect() -> Exec:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        return (lambda sql, params: conn.execute(sql, params)), conn.close

    def rows() -> dict[int, tuple[int, int]]:
        if not path.exists():
            return {}
        conn = sqlite3.connect(path, timeout=30)
        try:
            return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, x, y FROM items")}
        except sqlite3.OperationalError:
            return {}
        finally:
            conn.close()

    return connect, rows


class Writer(threading.Thread):
    """Sets ``column`` of random rows to a growing counter until ``stop``; remembers each row's last value."""

    def __init__(self, connect: Callable[[], Exec], column: str, seed: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.connect, self.column, self.rng, self.stop = connect, column, random.Random(seed), stop
        self.last: dict[int, int] = {}
        self.count = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        execute, close = self.connect()
        try:
            while not self.stop.is_set():
                self.count += 1
                row = self.rng.randint(1, ROWS)
                execute(f"UPDATE items SET {self.column} = ? WHERE id = ?", (self.count, row))
                self.last[row] = self.count
                self.stop.wait(0.002)  # pacing of the load generator
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            close()


def _destination(kind: str, tmp_path: Path, pg_database_b: str, mariadb_database: str) -> tuple[str, Any]:
    if kind == "postgres":
        return f'{{type: postgres, dsn: "{pg_database_b}", create_tables: true}}', _pg(pg_database_b)
    if kind == "mariadb":
        return f'{{type: mariadb, dsn: "{mariadb_database}", create_tables: true}}', _maria(mariadb_database)
    path = tmp_path / "dest.db"
    return f'{{type: sqlite, path: "{path}", create_tables: true}}', _sqlite(path)


def _run(tmp_path: Path, src: str, sink: str, dest: tuple[Callable[[], Exec], Rows], kills: int) -> None:
    connect_dest, dest_rows = dest
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute(f"INSERT INTO items SELECT i, 0, 0, 'n' FROM generate_series(1, {ROWS}) i")
    name = f"fl{random.randrange(16**8):08x}"
    config = tmp_path / "tidesync.yaml"
    config.write_text(CONFIG.format(tmp=tmp_path, name=name, src=src, sink=sink))
    log = tmp_path / "engine.log"
    proc = start_engine(config, log)
    try:
        wait_until(lambda: running(proc, log) and len(dest_rows()) == ROWS, timeout=120, message="snapshot")
        stop = threading.Event()
        on_source = Writer(_pg(src)[0], "x", 1, stop)
        at_destination = Writer(connect_dest, "y", 2, stop)
        on_source.start()
        at_destination.start()
        for _ in range(kills):  # SIGKILL while updates and their shadows are being written
            time.sleep(SECONDS / (kills + 1))
            kill_engine(proc)
            proc = start_engine(config, log)
        time.sleep(SECONDS / (kills + 1))
        stop.set()
        on_source.join(30)
        at_destination.join(30)
        assert on_source.error is None and at_destination.error is None, (on_source.error, at_destination.error)
        wait_caught_up(src, [f"tidesync_{name}"], timeout=120)
        stop_engine(proc, log)
    finally:
        if proc.poll() is None:
            kill_engine(proc)
    source_x = {k: x for k, (x, _) in _pg(src)[1]().items()}
    got = dest_rows()
    lost_y = [(k, got[k][1], y) for k, y in sorted(at_destination.last.items()) if got[k][1] != y]
    stale_x = [(k, got[k][0], x) for k, x in sorted(source_x.items()) if got[k][0] != x]
    assert not lost_y, f"{len(lost_y)} destination edits of y overwritten (id, now, edited): {lost_y[:10]}"
    assert not stale_x, f"{len(stale_x)} rows with a stale x (id, destination, source): {stale_x[:10]}"
    assert on_source.count > 1000 and len(at_destination.last) > 500  # both ends really were busy


@pytest.mark.parametrize("kind", ["postgres", "mariadb", "sqlite"])
def test_destination_edits_of_other_columns_survive(
    kind: str, tmp_path: Path, pg_database: str, pg_database_b: str, mariadb_database: str
) -> None:
    sink, dest = _destination(kind, tmp_path, pg_database_b, mariadb_database)
    _run(tmp_path, pg_database, sink, dest, kills=0)


def test_sigkill_while_shadows_are_written_loses_nothing(tmp_path: Path, pg_database: str, pg_database_b: str) -> None:
    sink, dest = _destination("postgres", tmp_path, pg_database_b, "")
    _run(tmp_path, pg_database, sink, dest, kills=2)
