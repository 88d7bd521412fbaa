"""Helpers for end-to-end tests that run `tidesync run` in a subprocess against real databases."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from tidesync.testing import wait_until


def start_engine(config: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "run", str(config), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def stop_engine(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout)
    assert code == 0, f"engine exited {code}:\n{log.read_text()[-4000:]}"


def running(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """True while the engine runs; fails the test with the log when it has exited."""
    code = proc.poll()
    assert code is None, f"engine exited {code}:\n{log.read_text()[-4000:]}"
    return True


def kill_engine(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def status(config: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "status", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def applied(config: Path) -> dict[str, int]:
    return {row["pipeline"]: row["events_applied"] for row in status(config)}


def _norm(v: Any) -> Any:
    """One canonical form per value, so Postgres, MariaDB and SQLite rows compare equal."""
    if isinstance(v, str):
        return v.rstrip(" ")  # CHAR(n): Postgres pads, MariaDB strips
    if isinstance(v, decimal.Decimal):
        return format(v.normalize(), "f")
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        return v.isoformat()
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return v


def checksum(rows: Iterable[tuple[Any, ...]]) -> tuple[int, int]:
    """Order-independent checksum of a multiset of rows: (count, sum of row hashes mod 2**64)."""
    count, total = 0, 0
    for row in rows:
        digest = hashlib.blake2b(repr(tuple(_norm(v) for v in row)).encode(), digest_size=8).digest()
        total = (total + int.from_bytes(digest, "big")) % 2**64
        count += 1
    return count, total


def pg_checksum(dsn: str, table: str, columns: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn, conn.cursor(name="ck") as cur:
        cur.itersize = 20000
        cur.execute(f"SELECT {columns} FROM {table}")
        return checksum(cur)


def mariadb_checksum(dsn: str, table: str, columns: str) -> tuple[int, int]:
    db = dsn.rsplit("/", 1)[1]
    conn = pymysql.connect(
        host="127.0.0.1", port=3306, user="root", password="", database=db, cursorclass=pymysql.cursors.SSCursor
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {columns} FROM {table}")
            return checksum(cur)
    finally:
        conn.close()


def slot_flushed(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def current_lsn(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def wait_caught_up(dsn: str, slots: list[str], timeout: float = 180) -> None:
    """Every slot's confirmed flush (moved only after tidesync's checkpoint) passed the current WAL end."""
    target = current_lsn(dsn)
    wait_until(
        lambda: all(slot_flushed(dsn, s) >= target for s in slots),
        timeout=timeout,
        interval=0.5,
        message=f"slots {slots} to confirm LSN {target}",
    )
