"""/metrics scraped during a run: exact latency histogram counts, events by op, lag back to ~0 after catch-up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.integration.api_harness import SHOP, dst_rows, make_shop, running, sample, src_insert
from tidesync.observe.exposition import BUCKET_BOUNDS
from tidesync.testing import eventually

N = 300


async def test_latency_histogram_counts_match_events_applied_and_lag_returns_to_zero(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    async with running(tmp_path, SHOP.format(tmp=tmp_path), token) as run:
        # A destination outage: another connection holds the SQLite write lock, so writes time out and retry.
        lock = sqlite3.connect(tmp_path / "dst.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, N, 50):
                src_insert(tmp_path, [(i, i, f"n{i}") for i in range(start + 1, start + 51)])

            async def lagging() -> bool:
                s = await run.scrape()
                return (sample(s, "tidesync_lag_seconds", pipeline="shop") or 0.0) > 0.5

            await eventually(lagging, timeout=30, message="lag above 0.5s during the outage")
            during = await run.scrape()
            assert sample(during, "tidesync_pipeline_state", pipeline="shop", state="retrying") == 1.0
            assert (sample(during, "tidesync_sink_retries_total", pipeline="shop", sink="sink") or 0) > 0
        finally:
            lock.execute("ROLLBACK")
            lock.close()

        await eventually(lambda: len(dst_rows(tmp_path)) == N, timeout=30, message="every row applied")

        async def caught_up() -> dict | None:  # type: ignore[type-arg]
            s = await run.scrape()
            lag = sample(s, "tidesync_lag_seconds", pipeline="shop")
            count = sample(s, "tidesync_end_to_end_latency_seconds_count", pipeline="shop", sink="sink")
            return s if lag is not None and lag < 0.05 and count == N else None

        s = await eventually(caught_up, timeout=30, message="lag back to ~0 and every event counted")

    e2e = {"pipeline": "shop", "sink": "sink"}
    # The histogram counts exactly the events applied: per op, in total, and in the state store's counter.
    assert sample(s, "tidesync_events_total", op="snapshot", **e2e) is None  # the source table started empty
    assert sample(s, "tidesync_events_total", op="insert", **e2e) == N
    assert sample(s, "tidesync_end_to_end_latency_seconds_bucket", le="+Inf", **e2e) == N
    assert sample(s, "tidesync_events_read_total", pipeline="shop") == N
    # Cumulative buckets never decrease, and the buckets are the engine's own bounds.
    buckets = [sample(s, "tidesync_end_to_end_latency_seconds_bucket", le=repr(b), **e2e) for b in BUCKET_BOUNDS]
    assert None not in buckets
    assert buckets == sorted(buckets)  # type: ignore[type-var]
    # Every event waited through the outage (at least half a second), so none is in the sub-100 ms buckets...
    le_100ms = max(i for i, b in enumerate(BUCKET_BOUNDS) if b <= 0.1)
    assert buckets[le_100ms] == 0
    assert buckets[-1] == N  # ... and all are under ten minutes
    total = sample(s, "tidesync_end_to_end_latency_seconds_sum", **e2e)
    assert total is not None and total >= 0.5 * N
    for stage in ("capture", "write"):
        assert (sample(s, "tidesync_stage_latency_seconds_count", pipeline="shop", stage=stage) or 0) > 0
    assert sample(s, "tidesync_dlq_depth", pipeline="shop") == 0
    assert sample(s, "tidesync_pipeline_state", pipeline="shop", state="running") == 1.0


async def test_metrics_need_the_token_unless_public(tmp_path: Path) -> None:
    token = make_shop(tmp_path)
    async with running(tmp_path, SHOP.format(tmp=tmp_path), token) as run:
        anonymous = await run.client.get("/metrics", headers={"authorization": ""})
        assert anonymous.status_code == 401
        assert (await run.client.get("/metrics", headers={"authorization": "Bearer nope"})).status_code == 401
        assert (await run.client.get("/metrics")).status_code == 200
    public = SHOP.format(tmp=tmp_path).replace(
        "  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:0\n  metrics_public: true\n"
    )
    async with running(tmp_path, public, token) as run:
        resp = await run.client.get("/metrics", headers={"authorization": ""})
        assert resp.status_code == 200 and "tidesync_end_to_end_latency_seconds" in resp.text
        # only /metrics is public: the admin API still needs the token
        assert (await run.client.get("/api/pipelines", headers={"authorization": ""})).status_code == 401
