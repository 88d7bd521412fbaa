"""Commands that only read the state store run without the secrets they do not use; the others name what is missing.

Through the real CLI in subprocesses, with the referenced variables unset.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tidesync.event import ChangeEvent
from tidesync.state import NewDeadLetter, StateChanges, open_state_store

SUFFIX = uuid.uuid4().hex[:8].upper()
PW, HOOK_URL, HOOK_SECRET, SRC_PW, STATE_DIR = (
    f"TS_{name}_{SUFFIX}" for name in ("SINK_PW", "HOOK_URL", "HOOK_SECRET", "SRC_PW", "STATE_DIR")
)

CONFIG = """\
state: "sqlite:///${env:STATE_DIR}/state.db"
pipelines:
  - name: shop
    source: {type: sqlite, path: TMP/src.db, tables: [orders]}
    sink: {type: postgres, dsn: "postgresql://postgres:${env:PW}@127.0.0.1/nowhere"}
  - name: hooks
    source: {type: sqlite, path: TMP/src.db, tables: [orders]}
    sink: {type: webhook, url: "${env:HOOK_URL}", secrets: "${env:HOOK_SECRET}"}
  - name: crm
    source: {type: postgres, dsn: "postgresql://postgres:${env:SRC_PW}@127.0.0.1/nowhere", tables: [t]}
    sink: {type: discard}
"""


def tidesync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith(SUFFIX)}
    return subprocess.run(
        [sys.executable, "-m", "tidesync.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "COLUMNS": "250", **env},
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tidesync.yaml"
    text = CONFIG.replace("TMP", str(tmp_path))
    names = {"PW": PW, "HOOK_URL": HOOK_URL, "HOOK_SECRET": HOOK_SECRET, "SRC_PW": SRC_PW, "STATE_DIR": STATE_DIR}
    for token, var in names.items():  # unique variable names, so nothing in the environment sets them
        text = text.replace("${env:" + token + "}", "${env:" + var + "}")
    path.write_text(text)

    async def park() -> None:
        store = open_state_store(f"sqlite:///{tmp_path}/state.db")
        await store.open()
        try:
            ev = ChangeEvent("main.orders", (7,), "insert", after={"id": 7}, position=(1,))
            dead = NewDeadLetter("shop", "sink", ev, "permanent", "refused by the destination", 1, 1.0, 1.0)
            await store.commit("shop", StateChanges(checkpoint=(1,), dead_letters=[dead], events_applied=3))
        finally:
            await store.close()

    asyncio.run(park())
    return path


def test_read_only_commands_run_without_the_secrets_they_do_not_use(config: Path, tmp_path: Path) -> None:
    env = {STATE_DIR: str(tmp_path)}  # the state URL's own reference must be readable; nothing else is set

    status = tidesync("status", str(config), "--json", env=env)
    assert status.returncode == 0, status.stderr
    rows = {r["pipeline"]: r for r in json.loads(status.stdout)}
    assert rows["shop"]["events_applied"] == 3 and rows["shop"]["dlq_depth"] == 1
    assert set(rows) == {"shop", "hooks", "crm"}
    # The source's password is missing: its slot cannot be read, and status says why instead of failing.
    assert SRC_PW in rows["crm"]["retained_wal"]["error"] and rows["crm"]["retained_wal"]["bytes"] is None
    table = tidesync("status", str(config), env=env)
    assert table.returncode == 0 and f"unknown (environment variable {SRC_PW} is not set" in table.stdout

    listed = tidesync("dlq", "list", str(config), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["pipeline"] == "shop" and entry["error"] == "refused by the destination"
    shown = tidesync("dlq", "show", str(config), str(entry["id"]), env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["key"] == [7]

    conflicts = tidesync("conflicts", "list", str(config), "--json", env=env)
    assert conflicts.returncode == 0, conflicts.stderr
    assert json.loads(conflicts.stdout) == []
    one = tidesync("conflicts", "show", str(config), "customers:1", env=env)
    assert one.returncode == 1 and "no pending conflict" in one.stderr  # not a config error


def test_the_state_url_secret_is_still_needed(config: Path) -> None:
    for args in (["status", str(config)], ["dlq", "list", str(config)], ["conflicts", "list", str(config)]):
        done = tidesync(*args, env={})
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"environment variable {STATE_DIR} is not set" in done.stderr
        assert "state" in done.stderr and PW not in done.stderr  # only the reference it needs


def test_commands_that_use_the_secrets_name_the_missing_variable(config: Path, tmp_path: Path) -> None:
    env = {STATE_DIR: str(tmp_path)}
    for args in (["validate", str(config)], ["run", str(config)], ["dlq", "replay", str(config), "--all"]):
        done = tidesync(*args, env=env)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        text = " ".join(done.stderr.split())
        for var in (PW, HOOK_URL, HOOK_SECRET, SRC_PW):
            assert f"environment variable {var} is not set" in text, (args, text)
        assert "pipelines[0].sink.dsn" in text and "tidesync.yaml:5" in text
        assert "Traceback" not in done.stderr

    # With every variable set, validate passes (the lazy path changed nothing for a full load).
    full = {
        **env,
        PW: "pw-for-test",
        HOOK_URL: "https://hooks.example.com/in",
        HOOK_SECRET: "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        SRC_PW: "pw-for-test",
    }
    ok = tidesync("validate", str(config), env=full)
    assert ok.returncode == 0, ok.stderr
    assert "3 pipeline(s)" in ok.stdout
