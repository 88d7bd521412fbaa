"""In-process pipeline statistics: counters, throughput and latency windows.

The engine updates these once per batch; the demo, ``tidesync top``, the
metrics endpoint and the dashboard read them.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidesync.observe.latency import LatencyHistogram, LatencyWindow

if TYPE_CHECKING:
    from tidesync.event import ChangeEvent


@dataclass
class PipelineStats:
    pipeline: str
    sink: str = "sink"
    events_read: int = 0
    events_written: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    transform_failed: int = 0
    batches: int = 0
    retries: int = 0
    by_op: Counter[str] = field(default_factory=Counter)
    latency: LatencyWindow = field(default_factory=LatencyWindow)
    stage: dict[str, LatencyHistogram] = field(
        default_factory=lambda: {
            "capture": LatencyHistogram(),
            "transform": LatencyHistogram(),
            "write": LatencyHistogram(),
        }
    )
    lag_seconds: float = 0.0
    _per_second: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=600))

    def written(self, now: float, count: int) -> None:
        self.events_written += count
        sec = int(now)
        if self._per_second and self._per_second[-1][0] == sec:
            self._per_second[-1] = (sec, self._per_second[-1][1] + count)
        else:
            self._per_second.append((sec, count))

    def batch_done(
        self,
        now: float,
        took: float | None,
        written: Sequence[ChangeEvent],
        dead_lettered: int,
        *,
        retries: int,
        lag: float,
        filtered: int | None = None,
    ) -> None:
        """One batch delivered and checkpointed: ``took`` seconds to write (None: it had no events to write).

        ``retries``, ``lag`` and ``filtered`` are the engine's running totals at this point.
        """
        if took is not None:
            self.stage["write"].add_many([took])
        self.batches += 1
        self.written(now, len(written))
        self.dead_lettered += dead_lettered
        self.retries = retries
        if written:
            self.latency.record(now, (e.committed_at for e in written))
            ops = (e.op for e in written) if len(written) < 64 else [e.op for e in written]  # a list: faster when long
            self.by_op.update(ops)
        self.lag_seconds = lag
        if filtered is not None:
            self.filtered = filtered

    def rate(self, now: float, seconds: float = 5.0) -> float:
        """Events written per second over the last ``seconds`` full seconds."""
        end = int(now)
        start = end - int(seconds)
        total = sum(c for s, c in self._per_second if start <= s < end)
        return total / max(seconds, 1e-9)
