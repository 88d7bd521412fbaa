"""The latency histograms: a batch's commit times counted once per distinct value land as one per event would."""

from __future__ import annotations

import random

from tidesync.observe.latency import LatencyHistogram, LatencyWindow, bucket_of


def test_a_batch_of_shared_commit_times_counts_every_event_in_its_bucket() -> None:
    rng = random.Random(7)
    now = 1_700_000_000.0
    # 1,000 events of 12 transactions (shared commit times), some with no commit time (0.0: not counted)
    commits = [now - rng.choice([0.00004, 0.002, 0.0021, 0.5, 3.0, 90.0]) - t / 1000 for t in range(12)]
    ats = [rng.choice(commits) for _ in range(990)] + [0.0] * 10
    window = LatencyWindow()
    window.record(now, ats)
    each = LatencyHistogram()
    each.add_many([now - c for c in ats if c > 0.0])
    assert window.cumulative.counts == each.counts
    assert window.cumulative.total == 990
    assert abs(window.cumulative.sum - each.sum) < 1e-6
    assert window.recent(now, 5).counts == each.counts
    half = bucket_of(0.5)
    assert window.cumulative.counts[half] == sum(1 for c in ats if c > 0.0 and bucket_of(now - c) == half)


def test_a_batch_without_commit_times_records_nothing() -> None:
    window = LatencyWindow()
    window.record(100.0, [0.0, 0.0])
    assert window.cumulative.total == 0
    assert window.series(100.0, 10) == []
