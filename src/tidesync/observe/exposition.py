"""Prometheus exposition of the engine's own statistics: a custom collector, read at scrape time.

Nothing here runs per event. The engine already counts every event into its
log-spaced latency buckets (:mod:`tidesync.observe.latency`: bucket ``i``
holds latencies in ``(B[i-1], B[i]]``); a scrape sums those counts into
Prometheus buckets whose upper bounds are engine bucket bounds, picked near
the usual 1-2.5-5 steps, so every ``_bucket`` count is exact (no
interpolation), ``_count`` is the number of events applied and ``_sum`` their
summed latency. That is why the ``le`` labels are numbers like
``0.0010556888372676304``.

Metrics (labels in braces)::

    tidesync_end_to_end_latency_seconds{pipeline,sink}   histogram: source commit -> destination ack
    tidesync_stage_latency_seconds{pipeline,stage}       histogram: capture, transform, write
    tidesync_events_total{pipeline,sink,op}              events applied, by op (rate() gives events/s)
    tidesync_events_read_total{pipeline}
    tidesync_events_dead_lettered_total{pipeline,sink}
    tidesync_events_filtered_total{pipeline}
    tidesync_transform_failures_total{pipeline}
    tidesync_batches_total{pipeline}
    tidesync_sink_retries_total{pipeline,sink}           retried write attempts
    tidesync_lag_seconds{pipeline}                       now - commit time of the oldest unapplied event read
    tidesync_pipeline_state{pipeline,state}              1 for the current state: a lifecycle state, or
                                                         degraded (running; the DLQ grew in the last 5 min)
                                                         or scheduled (a `schedule:` pipeline between runs)
    tidesync_pipeline_retrying_seconds{pipeline}         time spent retrying a failing sink (0 otherwise)
    tidesync_pipeline_blocked_seconds{pipeline}          time blocked: every write would fail (0 otherwise)
    tidesync_dlq_depth{pipeline}                         dead-letter queue entries
    tidesync_replication_slot_retained_wal_bytes{pipeline,slot}    Postgres sources
    tidesync_replication_slot_unconfirmed_wal_bytes{pipeline,slot}
    tidesync_sync_conflicts_pending{sync}                review queue of two-way syncs
    tidesync_alert_firing{alert,pipeline}                1 while the alert fires

The webhook counters, ``missed_by_primary`` and the rest of
:data:`tidesync.observe.metrics.REGISTRY` are exported beside these, and so are
``tidesync_build_info{version,python}`` and the ``process_*`` metrics
(:mod:`tidesync.observe.build_info`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from tidesync.engine.lifecycle import DEGRADED, SCHEDULED, State
from tidesync.observe.alerts import Phase
from tidesync.observe.build_info import PROCESS_METRICS
from tidesync.observe.latency import UPPER_BOUNDS, LatencyHistogram, bucket_of
from tidesync.observe.metrics import REGISTRY
from tidesync.observe.readings import blocked_seconds

_TARGETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)  # fmt: skip


def _nearest(target: float) -> int:
    i = bucket_of(target)
    if i > 0 and target - UPPER_BOUNDS[i - 1] < UPPER_BOUNDS[i] - target:
        return i - 1
    return i


# Indices of the engine buckets whose upper bounds are the Prometheus bucket bounds.
BUCKET_INDICES: tuple[int, ...] = tuple(sorted({_nearest(t) for t in _TARGETS}))
BUCKET_BOUNDS: tuple[float, ...] = tuple(UPPER_BOUNDS[i] for i in BUCKET_INDICES)


def prometheus_buckets(hist: LatencyHistogram) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs of ``hist``, exact, ending with +Inf = total."""
    out: list[tuple[str, float]] = []
    running = 0
    start = 0
    counts = hist.counts
    for i in BUCKET_INDICES:
        running += sum(counts[start : i + 1])
        start = i + 1
        out.append((repr(UPPER_BOUNDS[i]), running))
    out.append(("+Inf", hist.total))
    return out


class EngineCollector:
    """Collects from live runners; ``readings``, ``watch`` and ``alerts`` (a monitor's) may be None."""

    def __init__(
        self,
        runners: Callable[[], Sequence[Any]],
        *,
        readings: Any = None,
        watch: Any = None,
        alerts: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        self.runners = runners
        self.readings = readings
        self.watch = watch
        self.alerts = alerts

    def describe(self) -> list[Metric]:
        return []  # families depend on the runners; collected fresh on every scrape

    def collect(self) -> Iterator[Metric]:
        runners = list(self.runners())
        if self.watch is not None:
            self.watch.observe(runners)
        e2e = HistogramMetricFamily(
            "tidesync_end_to_end_latency_seconds",
            "Seconds from the source's commit to the destination's acknowledgement, per event applied.",
            labels=["pipeline", "sink"],
        )
        stage = HistogramMetricFamily(
            "tidesync_stage_latency_seconds",
            "Seconds per stage: capture (commit to read), transform (per batch), write (per batch).",
            labels=["pipeline", "stage"],
        )
        events = CounterMetricFamily(
            "tidesync_events", "Events applied to the destination, by op.", labels=["pipeline", "sink", "op"]
        )
        read = CounterMetricFamily("tidesync_events_read", "Events read from the source.", labels=["pipeline"])
        dead = CounterMetricFamily(
            "tidesync_events_dead_lettered", "Events parked in the dead-letter queue.", labels=["pipeline", "sink"]
        )
        filtered = CounterMetricFamily(
            "tidesync_events_filtered", "Events dropped by a filter transform.", labels=["pipeline"]
        )
        tfail = CounterMetricFamily(
            "tidesync_transform_failures", "Records a transform could not convert.", labels=["pipeline"]
        )
        batches = CounterMetricFamily("tidesync_batches", "Batches written and checkpointed.", labels=["pipeline"])
        retries = CounterMetricFamily(
            "tidesync_sink_retries", "Write attempts retried after a transient error.", labels=["pipeline", "sink"]
        )
        lag = GaugeMetricFamily(
            "tidesync_lag_seconds",
            "Now minus the commit time of the oldest event read but not yet applied.",
            labels=["pipeline"],
        )
        state = GaugeMetricFamily(
            "tidesync_pipeline_state",
            "1 for the pipeline's current state (a lifecycle state, or degraded: running, DLQ grew lately).",
            labels=["pipeline", "state"],
        )
        blocked = GaugeMetricFamily(
            "tidesync_pipeline_blocked_seconds",
            "Seconds the pipeline has been blocked: every write would fail, events are held.",
            labels=["pipeline"],
        )
        retrying = GaugeMetricFamily(
            "tidesync_pipeline_retrying_seconds",
            "Seconds the pipeline has been retrying a failing sink.",
            labels=["pipeline"],
        )
        for r in runners:
            s = r.stats
            e2e.add_metric([r.name, r.sink_name], prometheus_buckets(s.latency.cumulative), s.latency.cumulative.sum)
            for name, hist in s.stage.items():
                stage.add_metric([r.name, name], prometheus_buckets(hist), hist.sum)
            for op, n in sorted(s.by_op.items()):
                events.add_metric([r.name, r.sink_name, op], n)
            read.add_metric([r.name], s.events_read)
            dead.add_metric([r.name, r.sink_name], s.dead_lettered)
            filtered.add_metric([r.name], s.filtered)
            tfail.add_metric([r.name], s.transform_failed)
            batches.add_metric([r.name], s.batches)
            retries.add_metric([r.name, r.sink_name], r.writer.retries)
            lag.add_metric([r.name], r.lag_seconds())
            shown = getattr(r, "display_state", r.state_name)
            for st in (*State, DEGRADED, SCHEDULED):
                state.add_metric([r.name, str(st)], 1.0 if shown == st else 0.0)
            secs = self.watch.seconds_in(r.name, State.RETRYING) if self.watch is not None else 0.0
            retrying.add_metric([r.name], secs)
            blocked.add_metric([r.name], blocked_seconds(r, self.watch))
        yield from (e2e, stage, events, read, dead, filtered, tfail, batches, retries, lag, state, retrying, blocked)
        yield from self._readings(runners)
        if self.alerts is not None:
            firing = GaugeMetricFamily(
                "tidesync_alert_firing", "1 while the alert fires.", labels=["alert", "pipeline"]
            )
            for a in self.alerts():
                firing.add_metric([a.rule, a.pipeline], 1.0 if a.phase == Phase.FIRING else 0.0)
            yield firing

    def _readings(self, runners: Sequence[Any]) -> Iterator[Metric]:
        rd = self.readings
        if rd is None:
            return
        dlq = GaugeMetricFamily("tidesync_dlq_depth", "Entries in the dead-letter queue.", labels=["pipeline"])
        for r in runners:
            if r.name in rd.dlq_depth:
                dlq.add_metric([r.name], rd.dlq_depth[r.name])
        retained = GaugeMetricFamily(
            "tidesync_replication_slot_retained_wal_bytes",
            "WAL the Postgres server keeps for the pipeline's replication slot.",
            labels=["pipeline", "slot"],
        )
        unconfirmed = GaugeMetricFamily(
            "tidesync_replication_slot_unconfirmed_wal_bytes",
            "WAL after the slot's confirmed flush position.",
            labels=["pipeline", "slot"],
        )
        for name, slot in sorted(rd.slots.items()):
            if slot.retained_wal_bytes is not None:
                retained.add_metric([name, slot.slot], slot.retained_wal_bytes)
            if slot.unconfirmed_wal_bytes is not None:
                unconfirmed.add_metric([name, slot.slot], slot.unconfirmed_wal_bytes)
        conflicts = GaugeMetricFamily(
            "tidesync_sync_conflicts_pending",
            "Conflicts waiting for a person in a sync's review queue.",
            labels=["sync"],
        )
        for sync, n in sorted(rd.conflicts.items()):
            conflicts.add_metric([sync], n)
        yield from (dlq, retained, unconfirmed, conflicts)


class _Union:
    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for c in self.collectors:
            yield from c.collect()


def render(collector: EngineCollector | None) -> bytes:
    """The text exposition of the process-wide registry plus ``collector``."""
    if collector is None:
        return generate_latest(_Union(REGISTRY, PROCESS_METRICS))
    return generate_latest(_Union(REGISTRY, PROCESS_METRICS, collector))
