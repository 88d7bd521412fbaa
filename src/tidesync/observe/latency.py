"""End-to-end latency: source commit time → destination write acknowledged.

Recorded per event into fixed log-spaced buckets (each bucket 10% wider than
the one before, 50 µs to ~17 min), both cumulatively (for Prometheus) and per
second over a sliding window (for live p50/p99). Recording costs one log and
one increment per event; percentiles are exact to within one bucket (±5%).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

_MIN = 50e-6
_RATIO = 1.1
_LOG_RATIO = math.log(_RATIO)
NBUCKETS = 180  # 50 µs * 1.1**179 ≈ 1,260 s
UPPER_BOUNDS: tuple[float, ...] = tuple(_MIN * _RATIO**i for i in range(NBUCKETS))


def bucket_of(seconds: float) -> int:
    if seconds <= _MIN:
        return 0
    i = math.ceil(math.log(seconds / _MIN) / _LOG_RATIO)
    return i if i < NBUCKETS else NBUCKETS - 1


@dataclass
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * NBUCKETS)
    total: int = 0
    sum: float = 0.0

    def add_many(self, latencies: Iterable[float]) -> None:
        counts = self.counts
        lo, log_ratio, top = _MIN, _LOG_RATIO, NBUCKETS - 1
        n = 0
        s = 0.0
        for lat in latencies:
            if lat <= lo:
                counts[0] += 1
            else:
                i = math.ceil(math.log(lat / lo) / log_ratio)
                counts[i if i < top else top] += 1
            n += 1
            s += lat
        self.total += n
        self.sum += s

    def add_counted(self, latencies: Iterable[tuple[float, int]]) -> None:
        """Add each latency as many times as counted (the events of one source transaction share a commit
        time, so a batch of 1,000 holds a handful of distinct values: one log each, not one per event)."""
        counts = self.counts
        lo, log_ratio, top = _MIN, _LOG_RATIO, NBUCKETS - 1
        n = 0
        s = 0.0
        for lat, times in latencies:
            if lat <= lo:
                counts[0] += times
            else:
                i = math.ceil(math.log(lat / lo) / log_ratio)
                counts[i if i < top else top] += times
            n += times
            s += lat * times
        self.total += n
        self.sum += s

    def merge(self, other: LatencyHistogram) -> None:
        for i, c in enumerate(other.counts):
            if c:
                self.counts[i] += c
        self.total += other.total
        self.sum += other.sum

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q``; None when empty."""
        if self.total == 0:
            return None
        rank = q * self.total
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank and c:
                return UPPER_BOUNDS[i]
        return UPPER_BOUNDS[-1]


class LatencyWindow:
    """Cumulative histogram plus one histogram per second for the last ``seconds`` seconds."""

    def __init__(self, seconds: int = 300) -> None:
        self.cumulative = LatencyHistogram()
        self._seconds = seconds
        self._slots: deque[tuple[int, LatencyHistogram]] = deque()

    def record(self, now: float, committed_ats: Iterable[float]) -> None:
        times = Counter(committed_ats)  # counted in C; a transaction's events share one commit time
        times.pop(0.0, None)  # no commit time known
        if not times:
            return
        batch = LatencyHistogram()
        batch.add_counted([(now - c, n) for c, n in times.items() if c > 0.0])
        sec = int(now)
        if not self._slots or self._slots[-1][0] != sec:
            self._slots.append((sec, LatencyHistogram()))
            while self._slots and self._slots[0][0] <= sec - self._seconds:
                self._slots.popleft()
        self._slots[-1][1].merge(batch)
        self.cumulative.merge(batch)

    def recent(self, now: float, seconds: float) -> LatencyHistogram:
        merged = LatencyHistogram()
        start = int(now - seconds)
        for sec, hist in self._slots:
            if sec > start:
                merged.merge(hist)
        return merged

    def series(self, now: float, seconds: int) -> list[tuple[int, float | None, float | None, int]]:
        """Per second: (epoch second, p50, p99, count) for the last ``seconds`` seconds."""
        start = int(now) - seconds
        return [(sec, h.quantile(0.5), h.quantile(0.99), h.total) for sec, h in self._slots if sec > start]
