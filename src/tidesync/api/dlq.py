"""Admin routes of the dead-letter queue: list, show, replay, discard (``/api/dlq``).

Replay follows :mod:`tidesync.engine.replay` (id order, blocked entries with
their blocker, stale entries skipped, transform failures transformed again).
When this process runs the pipeline, entries are written through that
pipeline's own open sink, through the runner's
:class:`~tidesync.engine.delivery.SerialSink` (one write at a time, because a
sink's methods are never called concurrently and the pipeline's writer keeps
writing meanwhile). Otherwise a
sink is built from the config, opened for the replay and closed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from tidesync.api.auth import UNAUTHORIZED, require_token
from tidesync.api.models import (
    MAX_ID,
    DeadLetterDetail,
    DeadLetterSummary,
    DiscardOutcome,
    DlqSelection,
    IdReason,
    Problem,
    ReplayOutcome,
    clean,
)
from tidesync.api.runtime import ApiRuntime
from tidesync.api.views import runner_of
from tidesync.engine.lifecycle import State
from tidesync.engine.replay import ReplayReport, discard, replay, select_entries
from tidesync.event import to_jsonable
from tidesync.secrets import REDACTOR
from tidesync.state.store import DeadLetter, DeadLetterFilter

router = APIRouter(
    prefix="/api/dlq", tags=["dead letters"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such dead letter"}}
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"model": Problem, "description": "the body is not JSON"}}
EntryId = Annotated[int, Path(ge=1, le=MAX_ID)]
_LIVE = (State.RUNNING, State.RETRYING, State.PAUSED)


@router.get("", summary="Dead letters, oldest first")
async def list_entries(
    request: Request,
    pipeline: Annotated[str | None, Query(max_length=200)] = None,
    entity: Annotated[str | None, Query(max_length=500)] = None,
    error_class: Annotated[
        str | None, Query(max_length=50, description="permanent, transient, transform, blocked")
    ] = None,
    contains: Annotated[str | None, Query(max_length=500, description="the error message contains this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterSummary]:
    flt = DeadLetterFilter(
        pipeline=pipeline, entity=entity, error_class=error_class, error_contains=contains, limit=limit
    )
    entries = await request.app.state.runtime.store.dlq_list(flt)
    return [DeadLetterSummary.model_validate(clean(e.summary())) for e in entries]


@router.get("/{entry_id}", summary="One dead letter with its whole event", responses=NOT_FOUND)
async def show(request: Request, entry_id: EntryId) -> DeadLetterDetail:
    entry = await request.app.state.runtime.store.dlq_get(entry_id)
    if entry is None:
        raise HTTPException(404, f"no dead letter with id {entry_id}")
    return DeadLetterDetail.model_validate(clean({**entry.summary(), "event": to_jsonable(entry.event)}))


async def _select(rt: ApiRuntime, body: DlqSelection, with_blocked: bool) -> list[DeadLetter]:
    entries = await select_entries(rt.store, DeadLetterFilter(ids=tuple(body.ids)), with_blocked=with_blocked)
    if not entries:
        raise HTTPException(404, "none of these dead letters exists")
    return entries


async def _replay_group(rt: ApiRuntime, pipeline: str, sink_name: str, group: list[DeadLetter]) -> ReplayReport:
    store = rt.store
    runner = runner_of(rt, pipeline)
    if runner is not None and runner.sink_name == sink_name and runner.lifecycle.state in _LIVE:
        return await replay(
            store, runner.serial_sink, group, transform=runner.transform, clock=runner.clock, open_sink=False
        )
    spec = next((p for p in getattr(rt.config, "pipelines", []) if p.name == pipeline), None)
    if spec is None:
        report = ReplayReport()
        report.failed = [(e.id, f"pipeline {pipeline!r} is not in the config") for e in group]
        return report
    from tidesync.engine.build import build_sink, build_transform

    return await replay(store, build_sink(spec), group, transform=build_transform(spec.transforms))


@router.post(
    "/replay",
    summary="Write parked events again; they leave the queue only when written",
    responses={**NOT_FOUND, **BAD_BODY},
)
async def replay_entries(request: Request, body: DlqSelection) -> ReplayOutcome:
    rt = request.app.state.runtime
    entries = await _select(rt, body, body.with_blocked if body.with_blocked is not None else True)
    groups: dict[tuple[str, str], list[DeadLetter]] = {}
    for e in entries:
        groups.setdefault((e.pipeline, e.sink), []).append(e)
    total = ReplayReport()
    for (pipeline, sink_name), group in groups.items():
        report = await _replay_group(rt, pipeline, sink_name, group)
        total.written += report.written
        total.skipped += report.skipped
        total.failed += report.failed
        total.waiting += report.waiting
    await _recount(rt)
    return ReplayOutcome(
        written=total.written,
        skipped=[IdReason(id=i, reason=REDACTOR.redact(why)) for i, why in total.skipped],
        failed=[IdReason(id=i, reason=REDACTOR.redact(err)) for i, err in total.failed],
        waiting=total.waiting,
    )


@router.post("/discard", summary="Remove parked events without writing them", responses={**NOT_FOUND, **BAD_BODY})
async def discard_entries(request: Request, body: DlqSelection) -> DiscardOutcome:
    rt = request.app.state.runtime
    entries = await _select(rt, body, bool(body.with_blocked))
    discarded = await discard(rt.store, entries)
    await _recount(rt)
    return DiscardOutcome(discarded=discarded)


async def _recount(rt: ApiRuntime) -> None:
    """The DLQ depth just changed: read it now rather than show a cached count."""
    if rt.monitor is not None:
        await rt.monitor.readings.refresh(force=True)
