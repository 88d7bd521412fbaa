"""``--log-format json``: a real run's log lines parse as JSON, carry the context fields and no secret."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.conftest import unique

PASSWORD = "Hunter2-" + "a1b2c3d4e5"  # trust auth: the server never asks for it, tidesync must still hide it

# A transform that logs what a careless driver would: the connection string, with the event's context.
LOGGING_STEP = """\
import logging, os

def log_and_pass(event):
    logging.getLogger("tidesync.test").warning(
        "applying with %s", os.environ["LEAKY_DSN"], extra={"entity": event.entity, "position": event.position}
    )
    return event
"""


def test_json_lines_parse_and_carry_context_but_no_secret(tmp_path: Path, pg_database: str) -> None:
    dsn = pg_database.replace("postgres@", f"postgres:{PASSWORD}@")
    assert PASSWORD in dsn
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, payload text)")
        conn.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
    (tmp_path / "leaky_step.py").write_text(LOGGING_STEP)
    name = unique("jsonlog")
    config = tmp_path / "tidesync.yaml"
    config.write_text(
        f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: {name}
    source: {{type: postgres, dsn: "{dsn}", tables: [items], progress: false, work_dir: "{tmp_path}/spill"}}
    transforms:
      - function: leaky_step:log_and_pass
    sink: {{type: sqlite, path: "{tmp_path}/dst.db", create_tables: true}}
"""
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "LEAKY_DSN": dsn}
    command = ["--log-format", "json", "--log-level", "debug", "run", str(config), "--once"]
    run = subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert PASSWORD not in run.stderr + run.stdout
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert all(dt.datetime.fromisoformat(line["time"]).tzinfo is not None for line in lines)
    ours = [line for line in lines if line["logger"] == "tidesync.test"]
    assert len(ours) == 2, lines
    for line in ours:
        assert line["level"] == "WARNING"
        assert line["message"].startswith("applying with postgresql://postgres:") and "***" in line["message"]
        assert line["pipeline"] == name  # from the engine task the transform runs in
        assert line["entity"] == "public.items"
        assert line["position"]
