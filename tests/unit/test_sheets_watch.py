"""File-system notifications wake a sheet source long before its next stat poll.

The source is driven in-process over a real file (watchfiles: inotify on
Linux) with ``poll_interval: 30s``: an edit that arrives within seconds can
only have come through a notification, so these tests fail if notifications
broke and polling alone still worked.
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidesync.protocols import Context
from tidesync.sheets.config import SheetSourceConfig
from tidesync.sheets.source import SheetSource
from tidesync.state import open_state_store
from tidesync.testing import eventually, read_batches

POLL = 30.0  # far longer than any notification takes
ROWS = [["1", "Ada", "5"], ["2", "Bob", "7"]]


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[Context]:
    store = open_state_store(f"sqlite:///{tmp_path / 'state.db'}")
    await store.open()
    yield Context(pipeline="sheets", name="source", state=store)
    await store.close()


def write(path: Path, rows: list[list[str]], *, replace: bool = False) -> None:
    target = path.with_name(".~" + path.name) if replace else path
    with open(target, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "name", "qty"])
        w.writerows(rows)
    if replace:
        os.replace(target, path)  # an editor's save: a new inode under the old name


@pytest.mark.parametrize("replace", [False, True], ids=["in_place", "rename_and_replace"])
async def test_an_edit_arrives_by_notification_long_before_the_poll_interval(
    tmp_path: Path, ctx: Context, replace: bool
) -> None:
    path = tmp_path / "customers.csv"
    rows = [list(r) for r in ROWS]
    write(path, rows)
    src = SheetSource(
        SheetSourceConfig.model_validate(
            {"type": "csv", "path": str(path), "key": ["id"], "poll_interval": POLL, "settle": 0.05}
        )
    )
    await src.open(ctx, None)
    try:
        assert len([e for b in await read_batches(src, 2, timeout=10) for e in b.events]) == 2

        # The watch is set up in the background: touch the file (same content) until a notification shows it
        # is listening, so the edit below cannot fall before it.
        def touched_and_heard() -> bool:
            os.utime(path)
            return src.notifying

        await eventually(touched_and_heard, timeout=10, interval=0.1, message="a first file-system notification")
        quiet = await src.read(100, 0.3)  # reads the touched file: the same rows, nothing to emit
        assert quiet.events == [], quiet

        reads = src.reads
        started = time.monotonic()
        reading = asyncio.create_task(src.read(100, 2 * POLL))
        await asyncio.sleep(0)  # the read has stat-checked the file and waits: only a wake-up can end it early
        assert not reading.done() and src.reads == reads
        rows[1][1] = "Bobby"
        write(path, rows, replace=replace)
        batch = await asyncio.wait_for(reading, 3 * POLL)
        elapsed = time.monotonic() - started
    finally:
        await src.close()
    assert [(e.op, e.key, e.changed) for e in batch.events] == [("update", (2,), ("name",))]
    assert elapsed < POLL / 3, f"the edit took {elapsed:.1f}s: it came by polling, not by a notification"
