"""What the admin API shows, assembled from the live engine, the monitor and the state store.

A pipeline is listed when the config names it or this process runs it; live
values (state, throughput, lag, latency, retries) come from the runner when
there is one, the rest from the status row the engine last wrote.
"""

from __future__ import annotations

import time
from typing import Any

from tidesync.api.conflicts import pending_conflicts
from tidesync.api.models import (
    AlertInfo,
    AlertsView,
    LatencyPoint,
    LatencySeries,
    NoticeInfo,
    Overview,
    PipelineInfo,
    SyncInfo,
    clean,
)
from tidesync.api.runtime import ApiRuntime
from tidesync.observe.alerts import Phase
from tidesync.secrets import REDACTOR
from tidesync.state.store import PipelineStatus

LATENCY_WINDOW = 60.0  # seconds the p50/p99 of a pipeline row are taken over


def runners(rt: ApiRuntime) -> list[Any]:
    return list(getattr(rt.engine, "runners", []) or [])


def runner_of(rt: ApiRuntime, name: str) -> Any | None:
    return next((r for r in runners(rt) if r.name == name), None)


def pipeline_names(rt: ApiRuntime) -> list[str]:
    names = [p.name for p in getattr(rt.config, "pipelines", [])]
    return names + [r.name for r in runners(rt) if r.name not in names]


def _types(rt: ApiRuntime, name: str, runner: Any) -> tuple[str, str]:
    for spec in getattr(rt.config, "pipelines", []):
        if spec.name == name:
            return str(spec.source.type), str(spec.sink.type)
    if runner is not None:
        return type(runner.source).__name__, type(runner.sink).__name__
    return "unknown", "unknown"


async def refresh(rt: ApiRuntime) -> None:
    if rt.monitor is not None:
        rt.monitor.watch.observe(runners(rt))
        await rt.monitor.readings.refresh()


async def pipeline_info(rt: ApiRuntime, name: str, status: PipelineStatus | None, now: float) -> PipelineInfo:
    runner = runner_of(rt, name)
    source, sink = _types(rt, name, runner)
    readings = rt.monitor.readings if rt.monitor is not None else None
    depth = await rt.store.dlq_count(name)  # a count is cheap: always current, unlike the cached readings
    slot = readings.slots.get(name) if readings is not None else None
    info: dict[str, Any] = {
        "name": name,
        "source": source,
        "sink": sink,
        "events_applied": status.events_applied if status else 0,
        "dlq_depth": depth,
        "retained_wal_bytes": slot.retained_wal_bytes if slot else None,
        "updated_at": status.updated_at if status else None,
    }
    if runner is not None:
        recent = runner.stats.latency.recent(now, LATENCY_WINDOW)
        held = runner.blocked if runner.state_name == "blocked" else None
        info.update(
            state=runner.display_state,
            blocked_entity=held.entity if held is not None else None,
            blocked_since=held.since if held is not None else None,
            running=True,
            position=list(runner.position) if runner.position is not None else None,
            events_written=runner.stats.events_written,
            events_per_second=runner.stats.rate(now, 5.0),
            lag_seconds=runner.lag_seconds(),
            latency_p50_seconds=recent.quantile(0.5),
            latency_p99_seconds=recent.quantile(0.99),
            retries=runner.writer.retries,
            last_error=runner.last_error,
            next_attempt_at=runner.next_attempt_at,
        )
    else:
        extra = status.extra if status is not None and status.state == "blocked" else {}
        info.update(
            state=status.state if status else "never run",
            blocked_entity=extra.get("blocked_entity"),
            blocked_since=extra.get("blocked_since"),
            running=False,
            position=list(status.position) if status and status.position is not None else None,
            events_written=0,
            events_per_second=0.0,
            lag_seconds=status.lag_seconds if status else 0.0,
            latency_p50_seconds=None,
            latency_p99_seconds=None,
            retries=0,
            last_error=status.last_error if status else None,
            next_attempt_at=status.next_attempt_at if status else None,
        )
    return PipelineInfo.model_validate(clean(info))


async def pipeline_infos(rt: ApiRuntime) -> list[PipelineInfo]:
    await refresh(rt)
    statuses = {s.pipeline: s for s in await rt.store.status_list()}
    now = rt.now()
    return [await pipeline_info(rt, name, statuses.get(name), now) for name in pipeline_names(rt)]


async def sync_infos(rt: ApiRuntime) -> list[SyncInfo]:
    store = rt.store
    pending: dict[str, int] = {}
    for entry in await pending_conflicts(store):
        pending[entry["sync"]] = pending.get(entry["sync"], 0) + 1
    live = {s.name: s for s in getattr(rt.engine, "syncs", ())}  # the syncs this process runs
    out = []
    for spec in getattr(rt.config, "syncs", []):
        runner = live.get(spec.name)
        status = None if runner is not None else await store.status_get(spec.name)
        if runner is not None:
            state, error, updated = runner.state_name, runner.last_error, time.time()
        elif status is not None:
            state, error, updated = status.state, status.last_error, status.updated_at
        else:
            state, error, updated = "not running", None, None
        out.append(
            SyncInfo(
                name=spec.name,
                state=state,
                a=str(spec.a_source.type),
                b=str(spec.b_source.type),
                conflicts_pending=pending.get(spec.name, 0),
                last_error=REDACTOR.redact(error) if error else None,
                updated_at=updated,
            )
        )
    return out


def latency_series(rt: ApiRuntime, seconds: int, now: float) -> list[LatencySeries]:
    out = []
    for r in runners(rt):
        points = [
            LatencyPoint(t=t, p50=p50, p99=p99, count=n) for t, p50, p99, n in r.stats.latency.series(now, seconds)
        ]
        out.append(LatencySeries(pipeline=r.name, points=points))
    return out


def alerts_view(rt: ApiRuntime) -> AlertsView:
    monitor = rt.monitor
    if monitor is None:
        return AlertsView(alerts=[], notices=[])
    alerts = [
        AlertInfo(
            rule=a.rule,
            pipeline=a.pipeline,
            metric=a.metric,
            phase=str(a.phase),  # type: ignore[arg-type]
            since=a.since,
            value=a.value,
            above=a.threshold.above,
            clear_below=a.threshold.clear_below,
        )
        for a in monitor.book.alerts
    ]
    notices = [
        NoticeInfo(
            rule=n.rule,
            pipeline=n.pipeline,
            metric=n.metric,
            kind=n.kind,
            value=n.value,
            threshold=n.threshold,
            at=n.at,
            message=REDACTOR.redact(n.message),
        )
        for n in reversed(monitor.notices)
    ]
    return AlertsView(alerts=alerts, notices=notices)


async def overview(rt: ApiRuntime, seconds: int) -> Overview:
    pipelines = await pipeline_infos(rt)
    now = rt.now()
    firing = sum(1 for a in rt.monitor.book.alerts if a.phase == Phase.FIRING) if rt.monitor is not None else 0
    return Overview(
        at=now,
        pipelines=pipelines,
        latency=latency_series(rt, seconds, now),
        dlq_total=sum(p.dlq_depth or 0 for p in pipelines),
        conflicts_pending=len(await pending_conflicts(rt.store)),
        alerts_firing=firing,
    )
