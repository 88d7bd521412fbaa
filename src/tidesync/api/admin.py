"""The admin API's pipeline and sync routes (``/api/pipelines``, ``/api/syncs``, ``/api/jobs``), and :func:`install`.

Every route needs the bearer token (:mod:`tidesync.api.auth`). Pause and
resume act on the pipeline this process runs (409 when it is not running
here, or its state does not allow it). Reconcile and re-snapshot start a job
(202) whose progress ``/api/jobs/{id}`` reports.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request

from tidesync.api import conflicts, dashboard, dlq, monitoring
from tidesync.api.auth import UNAUTHORIZED, require_token
from tidesync.api.jobs import Jobs
from tidesync.api.models import (
    MAX_ID,
    ActionOutcome,
    ClusterInfo,
    JobInfo,
    PipelineInfo,
    Problem,
    ReconcileRequest,
    SnapshotRequest,
    SyncInfo,
)
from tidesync.api.runtime import ApiRuntime
from tidesync.api.views import (
    pipeline_info,
    pipeline_infos,
    pipeline_names,
    refresh,
    runner_of,
    sync_infos,
)
from tidesync.engine.lifecycle import State
from tidesync.errors import SourceError, TidesyncError
from tidesync.secrets import REDACTOR

router = APIRouter(tags=["pipelines"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED)
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "no such pipeline"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "not possible in the current state"}
}
BAD: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body is not JSON, or the request cannot be carried out"}
}
PipelineName = Annotated[str, Path(min_length=1, max_length=200)]


def _rt(request: Request) -> ApiRuntime:
    runtime: ApiRuntime = request.app.state.runtime
    return runtime


def _jobs(request: Request) -> Jobs:
    jobs: Jobs = request.app.state.jobs
    return jobs


def _known(rt: ApiRuntime, name: str) -> None:
    if name not in pipeline_names(rt):
        raise HTTPException(404, f"no pipeline named {name!r}")


def _live(rt: ApiRuntime, name: str) -> Any:
    _known(rt, name)
    runner = runner_of(rt, name)
    if runner is None:
        raise HTTPException(409, f"pipeline {name!r} is not running in this process")
    return runner


@router.get("/api/pipelines", summary="Every pipeline with its state, throughput, lag, latency and DLQ depth")
async def list_pipelines(request: Request) -> list[PipelineInfo]:
    return await pipeline_infos(_rt(request))


@router.get("/api/pipelines/{name}", summary="One pipeline", responses=NOT_FOUND)
async def get_pipeline(request: Request, name: PipelineName) -> PipelineInfo:
    rt = _rt(request)
    _known(rt, name)
    await refresh(rt)
    return await pipeline_info(rt, name, await rt.store.status_get(name), rt.now())


@router.post(
    "/api/pipelines/{name}/pause",
    summary="Stop reading; the batch in flight finishes",
    responses={**NOT_FOUND, **CONFLICT},
)
async def pause(request: Request, name: PipelineName) -> ActionOutcome:
    runner = _live(_rt(request), name)
    if runner.lifecycle.state == State.PAUSED:
        return ActionOutcome(pipeline=name, state=runner.state_name, note="already paused")
    if runner.lifecycle.state not in (State.RUNNING, State.RETRYING):
        raise HTTPException(409, f"pipeline {name!r} is {runner.state_name}; only a running pipeline can pause")
    runner.pause()
    return ActionOutcome(pipeline=name, state=runner.state_name, note="paused: nothing is read until resumed")


@router.post("/api/pipelines/{name}/resume", summary="Read again after a pause", responses={**NOT_FOUND, **CONFLICT})
async def resume(request: Request, name: PipelineName) -> ActionOutcome:
    runner = _live(_rt(request), name)
    if runner.lifecycle.state in (State.RUNNING, State.RETRYING):
        return ActionOutcome(pipeline=name, state=runner.state_name, note="not paused")
    if runner.lifecycle.state != State.PAUSED:
        raise HTTPException(409, f"pipeline {name!r} is {runner.state_name}; only a paused pipeline can resume")
    runner.resume()
    return ActionOutcome(pipeline=name, state=runner.state_name, note="resumed")


@router.post(
    "/api/pipelines/{name}/reconcile",
    status_code=202,
    summary="Compare source and destination (and repair); poll the job",
    responses={**NOT_FOUND, **CONFLICT, **BAD},
)
async def reconcile(request: Request, name: PipelineName, body: ReconcileRequest) -> JobInfo:
    rt = _rt(request)
    _known(rt, name)
    if rt.config is None or name not in [p.name for p in rt.config.pipelines]:
        raise HTTPException(409, f"pipeline {name!r} is not in the config this server loaded")
    from tidesync.reconcile.config import ReconcileOptions
    from tidesync.reconcile.run import reconcile_pipeline

    options = ReconcileOptions(repair=body.repair, chunk_size=body.chunk_size)
    store = rt.store if body.repair else None

    async def work() -> dict[str, Any]:
        report = await reconcile_pipeline(rt.config, name, options, store=store)
        return report.as_dict()

    return _jobs(request).start("reconcile", name, work).info()


@router.post(
    "/api/pipelines/{name}/snapshot",
    status_code=202,
    summary="Re-read one table while streaming goes on (sources that support it)",
    responses={**NOT_FOUND, **CONFLICT, **BAD},
)
async def snapshot(request: Request, name: PipelineName, body: SnapshotRequest) -> JobInfo:
    runner = _live(_rt(request), name)
    request_snapshot = getattr(runner.source, "request_snapshot", None)
    if not callable(request_snapshot):
        raise HTTPException(409, f"the source of {name!r} cannot re-snapshot a table on demand")
    if runner.lifecycle.state not in (State.RUNNING, State.RETRYING, State.PAUSED):
        raise HTTPException(409, f"pipeline {name!r} is {runner.state_name}")
    try:
        await request_snapshot(body.table)
    except (SourceError, TidesyncError) as exc:
        raise HTTPException(400, REDACTOR.redact(str(exc))) from None

    async def work() -> dict[str, Any]:
        return {"table": body.table, "scheduled": True}

    return _jobs(request).start("snapshot", name, work).info()


@router.get("/api/jobs", summary="Reconcile and snapshot jobs this server started, newest first")
async def list_jobs(request: Request) -> list[JobInfo]:
    return [j.info() for j in _jobs(request).all()]


@router.get("/api/jobs/{job_id}", summary="One job", responses={404: {"model": Problem, "description": "no such job"}})
async def get_job(request: Request, job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> JobInfo:
    job = _jobs(request).get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job.info()


@router.get("/api/syncs", summary="Two-way syncs with their state and pending conflicts", tags=["syncs"])
async def list_syncs(request: Request) -> list[SyncInfo]:
    return await sync_infos(_rt(request))


@router.get(
    "/api/cluster",
    summary="The cluster: processes, capture and partition leases, partition lag, stream depth",
    responses={404: {"model": Problem, "description": "the config has no `cluster:` section"}},
)
async def get_cluster(request: Request) -> ClusterInfo:
    rt = _rt(request)
    model = getattr(rt.config, "model", None)
    if model is None or model.cluster is None or model.lease is None:
        raise HTTPException(404, "this config has no `cluster:` section")
    from tidesync.engine.cluster import plan
    from tidesync.engine.cluster_view import cluster_view

    works = plan(model.cluster, rt.config.pipelines)
    return ClusterInfo.model_validate(await cluster_view(rt.store, model.cluster, works, model.lease.ttl_seconds))


def install(app: FastAPI) -> None:
    """Add the admin API, the metrics, the OpenAPI schema and the dashboard to ``app``."""
    app.state.jobs = Jobs()
    app.include_router(router)
    app.include_router(dlq.router)
    app.include_router(conflicts.router)
    app.include_router(monitoring.router)
    app.include_router(monitoring.public)
    app.include_router(dashboard.router)
