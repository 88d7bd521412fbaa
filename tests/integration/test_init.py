"""``tidesync init``: a starter config that, with its placeholders filled, validates and runs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import psycopg
import pymysql
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import MARIADB, unique
from tests.integration.e2e_support import running, start_engine, stop_engine
from tests.integration.test_webhook_crash import free_port
from tidesync.cli import app
from tidesync.config_schema import build_schema
from tidesync.sources.webhook.signatures import sign_stripe
from tidesync.testing import wait_until

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def init(tmp_path: Path, *args: str) -> Path:
    config = tmp_path / "tidesync.yaml"
    result = CliRunner().invoke(app, ["init", str(config), *args])
    assert result.exit_code == 0, result.output
    return config


def fill(config: Path, *replacements: tuple[str, str]) -> None:
    text = config.read_text()
    for old, new in replacements:
        assert old in text, f"the starter has no {old!r}:\n{text}"
        text = text.replace(old, new)
    config.write_text(text)


def test_postgres_to_mariadb_validates_checks_and_runs_once(
    tmp_path: Path, pg_database: str, mariadb_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 50) g")
    name = unique("init")  # the slot is named after the pipeline, and slots are per server
    config = init(tmp_path, "--source", "postgres", "--sink", "mariadb", "--name", name)
    assert "dsn: ${env:SOURCE_DSN}" in config.read_text()
    assert "# create_tables: false" in config.read_text()  # a common option, commented with its default
    fill(config, ("tables: [CHANGE-ME]", "tables: [items]"), ("# create_tables: false", "create_tables: true"))
    monkeypatch.chdir(tmp_path)  # the starter's state store and work files are relative to it
    monkeypatch.setenv("SOURCE_DSN", pg_database)
    monkeypatch.setenv("SINK_DSN", mariadb_database)

    checked = CliRunner().invoke(app, ["validate", str(config), "--check"])
    assert checked.exit_code == 0, checked.output

    run = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", "run", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "SOURCE_DSN": pg_database, "SINK_DSN": mariadb_database},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"pipeline {name}: 50 event(s) applied" in run.stdout
    db = mariadb_database.rsplit("/", 1)[1]
    conn = pymysql.connect(**MARIADB, database=db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, payload FROM items ORDER BY id")
            assert cur.fetchall() == tuple((i, f"row {i}") for i in range(1, 51))
    finally:
        conn.close()


def test_webhook_to_sqlite_validates_checks_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = init(tmp_path, "--source", "webhook", "--sink", "sqlite")
    db = tmp_path / "hooks.db"
    fill(config, ("path: CHANGE-ME", f"path: {db}"), ("# create_tables: false", "create_tables: true"))
    monkeypatch.setenv("SOURCE_SECRETS", WEBHOOK_SECRET)
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 0, result.output
    assert "1 pipeline(s): webhook-to-sqlite" in result.output
    # What init writes, the editor schema accepts too (the reference stays a string until load).
    jsonschema.validate(yaml.safe_load(config.read_text()), build_schema())
    monkeypatch.chdir(tmp_path)  # the starter's state store is relative to it
    checked = CliRunner().invoke(app, ["validate", str(config), "--check"])
    assert checked.exit_code == 0, checked.output
    assert "POST /webhooks/webhook-to-sqlite" in checked.output

    # run: the intake listens where api.listen says (a free port here, not the default 8080)
    port = free_port()
    config.write_text(config.read_text() + f'api: {{listen: "127.0.0.1:{port}"}}\n')
    log = tmp_path / "run.log"
    proc = start_engine(config, log, env={"SOURCE_SECRETS": WEBHOOK_SECRET})
    try:
        body = json.dumps(
            {
                "id": "evt_1",
                "object": "event",
                "type": "customer.created",
                "created": int(time.time()),
                "data": {"object": {"id": "cus_1", "object": "customer", "email": "ada@x.test"}},
            }
        ).encode()
        headers = {"content-type": "application/json",
                   "stripe-signature": sign_stripe(body, WEBHOOK_SECRET, int(time.time()))}  # fmt: skip
        url = f"http://127.0.0.1:{port}/webhooks/webhook-to-sqlite"

        def delivered() -> bool:
            running(proc, log)
            try:
                return httpx.post(url, content=body, headers=headers, timeout=5).status_code == 200
            except httpx.TransportError:
                return False  # not listening yet

        wait_until(delivered, timeout=60, message="the intake to accept the signed event")

        def stored() -> list[tuple[str, str]]:
            if not db.exists():
                return []
            with sqlite3.connect(db) as conn:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                if "customer" not in tables:  # stripe.customer events, a table inferred from them
                    return []
                return list(conn.execute("SELECT id, email FROM customer"))

        wait_until(lambda: running(proc, log) and stored() == [("cus_1", "ada@x.test")], timeout=60,
                   message="the customer in the SQLite file")  # fmt: skip
    finally:
        stop_engine(proc, log)


def test_an_existing_file_is_kept_and_flags_are_needed_without_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / "tidesync.yaml"
    config.write_text("state: mine\n")
    kept = CliRunner().invoke(app, ["init", str(config), "--source", "sqlite", "--sink", "sqlite"])
    assert kept.exit_code == 1 and "not overwriting" in kept.output
    assert config.read_text() == "state: mine\n"
    asked = CliRunner().invoke(app, ["init", str(tmp_path / "new.yaml"), "--sink", "sqlite"])  # stdin: no terminal
    assert asked.exit_code == 2 and "--source" in asked.output
    assert not (tmp_path / "new.yaml").exists()


def test_on_a_terminal_the_missing_types_are_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tidesync.cli.init.on_terminal", lambda: True)
    config = tmp_path / "asked.yaml"
    result = CliRunner().invoke(app, ["init", str(config)], input="redis\nno-such-sink\npostgres\n")
    assert result.exit_code == 0, result.output
    assert "type: redis" in config.read_text() and "type: postgres" in config.read_text()
