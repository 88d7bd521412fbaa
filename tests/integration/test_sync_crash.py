"""``tidesync run`` killed with SIGKILL while both sides are being edited, twice, then restarted: nothing is lost.

Postgres <-> Postgres. A writer on each side edits its own field of random
rows and increments a shared counter (``sum``); the sync process is killed
at random moments and started again. Afterwards both sides hold every last
edit and the counter holds every increment of both sides exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_sync_support import (
    Side,
    SyncHarness,
    pg_source,
)
from tidesync.testing import eventually

ROWS = 50
TABLE = "CREATE TABLE items (id int PRIMARY KEY, fa int NOT NULL, fb int NOT NULL, n int NOT NULL)"


async def writer(dsn: str, column: str, seed: int, until: float) -> tuple[dict[int, int], int]:
    rng = random.Random(seed)
    last: dict[int, int] = {}
    n = 0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < until:
            n += 1
            row = rng.randint(1, ROWS)
            await conn.execute(f"UPDATE items SET {column} = %s, n = n + 1 WHERE id = %s", (n, row))
            last[row] = n
            await asyncio.sleep(0.005)  # pacing of the load generator
    return last, n


async def start(path: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tidesync.cli", "run", str(path), stdout=asyncio.subprocess.DEVNULL, stderr=err
        )


@pytest.mark.slow
async def test_sigkill_while_editing_loses_nothing(
    pg_database: str,
    pg_database_b: str,
    tmp_path: Path,
) -> None:
    a, b = Side("pg", pg_database), Side("pg", pg_database_b)
    a.sql(TABLE)
    b.sql(TABLE)
    a.sql(f"INSERT INTO items SELECT i, 0, 0, 0 FROM generate_series(1, {ROWS}) i")
    h = SyncHarness(tmp_path, f"k{uuid.uuid4().hex[:8]}", "")
    h.config_text = f"""
state: sqlite:///{tmp_path / "state.db"}
syncs:
  - name: {h.name}
    a: {{source: {pg_source(a.dsn, "items", tmp_path / "wa")}, table: items, key: id}}
    b: {{source: {pg_source(b.dsn, "items", tmp_path / "wb")}, table: items, key: id}}
    fields: {{id: id, fa: fa, fb: fb, n: n}}
    rules: {{default: manual, fields: {{n: sum}}}}
"""
    h.write()
    log = tmp_path / "run.log"
    proc = await start(h.path, log)
    try:
        await eventually(lambda: len(b.rows("id")) == ROWS, timeout=60, message="pairing")
        until = time.monotonic() + 12.0
        writers = asyncio.gather(writer(a.dsn, "fa", 1, until), writer(b.dsn, "fb", 2, until))
        for copied in (10, 30):  # kill it while it copies A's edits to B
            await eventually(
                lambda c=copied: b.sql("SELECT count(*) FROM items WHERE fa > 0")[0][0] >= c,
                timeout=60,
                message=f"{copied} rows copied",
            )
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = await start(h.path, log)
        (last_a, edits_a), (last_b, edits_b) = await writers
        expected = sorted(((i, last_a.get(i, 0), last_b.get(i, 0)) for i in range(1, ROWS + 1)), key=repr)
        try:
            await eventually(
                lambda: (
                    a.rows("id, fa, fb") == expected == b.rows("id, fa, fb")
                    and a.rows("n") == b.rows("n")
                    and sum(r[0] for r in a.rows("n")) == edits_a + edits_b
                ),
                timeout=120,
                interval=0.5,
                message="every edit and every increment on both sides",
            )
        except AssertionError as exc:  # say what differs, and what the sync said, before giving up
            rows_a = {r[0]: r for r in a.rows("id, fa, fb, n")}
            rows_b = {r[0]: r for r in b.rows("id, fa, fb, n")}
            off = [(rows_a.get(w[0]), rows_b.get(w[0]), w) for w in expected
                   if (rows_a.get(w[0]) or ())[:3] != w or (rows_b.get(w[0]) or ())[:3] != w
                   or (rows_a.get(w[0]) or ())[3:] != (rows_b.get(w[0]) or ())[3:]][:10]  # fmt: skip
            total = (sum(r[3] for r in rows_a.values()), sum(r[3] for r in rows_b.values()), edits_a + edits_b)
            conflicts = await h.cli_json("conflicts", "list", str(h.path))
            raise AssertionError(f"{exc}\nrows (a, b, expected) that differ: {off}\nn totals a, b, expected: "
                                 f"{total}\nopen conflicts: {conflicts}\n"
                                 f"sync log:\n{log.read_text()[-4000:]}") from None  # fmt: skip
        assert await h.cli_json("conflicts", "list", str(h.path)) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await h.close()
