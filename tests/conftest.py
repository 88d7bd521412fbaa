"""Shared fixtures: a fresh database per test on the real servers, cleaned up afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

PG_ADMIN = os.environ.get("TIDESYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def pg_dsn(dbname: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname


def drop_pg_database(name: str) -> None:
    """Drop a test database and its replication slots.

    pg_terminate_backend only signals the walsender; its slot stays active until
    the process has exited, and an active slot blocks both pg_drop_replication_slot
    and DROP DATABASE (even WITH FORCE). So each slot is waited for, up to 30 s.
    """
    import time

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while True:
            slots = conn.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (name,)
            ).fetchall()
            if not slots:
                break
            for slot, active_pid in slots:
                if active_pid:
                    conn.execute("SELECT pg_terminate_backend(%s)", (active_pid,))
                    continue
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                except psycopg.errors.ObjectInUse:
                    pass  # re-acquired by a process still shutting down: next round
            if time.monotonic() > deadline:
                raise AssertionError(f"replication slots of {name} still active after 30 s: {slots}")
            time.sleep(0.05)
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _new_pg_database() -> Iterator[str]:
    name = unique("ts")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_dsn(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A new empty Postgres database; yields its DSN."""
    yield from _new_pg_database()


@pytest.fixture
def pg_database_b() -> Iterator[str]:
    """A second new Postgres database (the other side of a Postgres <-> Postgres sync)."""
    yield from _new_pg_database()


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    """A new empty MariaDB database; yields a mysql:// DSN."""
    name = unique("ts")
    _mariadb_admin(f"CREATE DATABASE `{name}`")
    try:
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        _mariadb_admin(f"DROP DATABASE IF EXISTS `{name}`")  # a new connection: the test may restart the server


def _mariadb_admin(statement: str) -> None:
    conn = pymysql.connect(**MARIADB, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def state_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failed test that ran engines as subprocesses shows the end of each one's log (``*.log`` in its tmp_path):
    a failure seen once in CI can then be read, not guessed."""
    report = yield
    if report.when == "call" and report.failed:
        tmp = getattr(item, "funcargs", {}).get("tmp_path")
        if tmp is not None:
            for path in sorted(Path(tmp).rglob("*.log"))[:8]:
                lines = path.read_text(errors="replace").splitlines()[-300:]
                report.sections.append((f"log {path.name} (last {len(lines)} lines)", "\n".join(lines)))
    return report
