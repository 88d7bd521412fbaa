"""The Postgres source's progress off a terminal: the initial snapshot and an on-demand re-snapshot log
rows read per table (see :mod:`tidesync.progress`); ``progress: false`` keeps both quiet."""

from __future__ import annotations

import logging

import pytest
from pgs_helpers import Harness, sql


def lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


async def test_the_initial_snapshot_and_a_re_snapshot_log_their_progress(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.sources.postgres")
    sql(
        harness.dsn,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 450) g",
    )
    src = await harness.open(["t"], snapshot="initial", snapshot_chunk_size=100, progress=True)
    await harness.read_until(lambda ev: sum(e.op == "snapshot" for e in ev) >= 450)
    (snapshot,) = lines(caplog, "snapshot public.t:")
    assert snapshot.startswith("snapshot public.t: 450/450 rows (100%), ") and "done in" in snapshot

    await src.request_snapshot("public.t")
    await harness.read_until(lambda ev: sum(e.op == "snapshot" for e in ev) >= 450 and not src.backfilling)
    (again,) = lines(caplog, "re-snapshot public.t:")
    assert again.startswith("re-snapshot public.t: 450/450 rows (100%), ") and "done in" in again


async def test_progress_false_keeps_the_snapshots_quiet(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidesync.sources.postgres")
    sql(harness.dsn, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 50)")
    src = await harness.open(["t"], snapshot="initial", snapshot_chunk_size=20)  # the harness: progress false
    await harness.read_until(lambda ev: sum(e.op == "snapshot" for e in ev) >= 50)
    await src.request_snapshot("public.t")
    await harness.read_until(lambda ev: sum(e.op == "snapshot" for e in ev) >= 50 and not src.backfilling)
    assert lines(caplog, "snapshot") == [] and lines(caplog, "re-snapshot") == []
