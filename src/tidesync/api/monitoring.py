"""What the process sees about itself: ``/metrics``, overview and live stream, alerts, recent errors, the schema.

``/api/stream`` is a server-sent event stream: one ``overview`` event (the
same JSON as ``/api/overview``: pipelines and their per-second latency
p50/p99) every ``interval`` seconds, until the client goes away, the engine
stops, or ``limit`` events were sent (the dashboard then reconnects).

``/metrics`` is the Prometheus text exposition (see
:mod:`tidesync.observe.exposition`); it needs the token like every admin route
(Prometheus sends it with ``authorization: {credentials: ...}``) unless the
config says ``api.metrics_public: true``. ``/openapi.json`` needs the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tidesync.api.auth import UNAUTHORIZED, bearer, require_token
from tidesync.api.models import AlertsView, ErrorInfo, LatencySeries, Overview
from tidesync.api.runtime import ApiRuntime
from tidesync.api.views import alerts_view, latency_series, overview, runners
from tidesync.observe.exposition import EngineCollector, render
from tidesync.observe.recent import RECENT_ERRORS

router = APIRouter(tags=["health"], dependencies=[Depends(require_token)], responses=UNAUTHORIZED)
public = APIRouter(tags=["health"])  # routes that check the token themselves
Seconds = Annotated[int, Query(ge=10, le=300, description="how many seconds of latency history")]


def _rt(request: Request) -> ApiRuntime:
    runtime: ApiRuntime = request.app.state.runtime
    return runtime


@router.get("/api/overview", summary="Pipelines, latency history, totals: what the dashboard shows")
async def get_overview(request: Request, seconds: Seconds = 300) -> Overview:
    return await overview(_rt(request), seconds)


@router.get("/api/latency", summary="Per-second end-to-end latency p50/p99 of every running pipeline")
async def get_latency(request: Request, seconds: Seconds = 300) -> list[LatencySeries]:
    rt = _rt(request)
    return latency_series(rt, seconds, rt.now())


@router.get(
    "/api/stream",
    summary="Server-sent events: an `overview` event every `interval` seconds",
    response_class=StreamingResponse,
    responses={200: {"description": "text/event-stream of `overview` events", "content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    seconds: Seconds = 300,
    interval: Annotated[float, Query(ge=0.2, le=60.0, description="seconds between events")] = 1.0,
    limit: Annotated[int, Query(ge=1, le=86_400, description="close the stream after this many events")] = 3600,
) -> StreamingResponse:
    rt = _rt(request)

    async def events() -> AsyncIterator[str]:
        for n in range(limit):
            if n:
                await asyncio.sleep(interval)  # paces a network stream: real time, not the engine's clock
            stop = getattr(rt.engine, "stop", None)
            if await request.is_disconnected() or (stop is not None and stop.is_set()):
                return
            body = (await overview(rt, seconds)).model_dump_json()
            yield f"event: overview\nid: {n}\ndata: {body}\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


@router.get("/api/alerts", summary="Every alert's state and the latest fires and clears")
async def get_alerts(request: Request) -> AlertsView:
    return alerts_view(_rt(request))


@router.get("/api/errors", summary="Recent warnings and errors of this process, newest first (secrets masked)")
async def get_errors(
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[int, Query(ge=0, le=2**62, description="only records with a larger seq")] = 0,
) -> list[ErrorInfo]:
    return [
        ErrorInfo(seq=r.seq, at=r.at, level=r.level, logger=r.logger, message=r.message)
        for r in RECENT_ERRORS.recent(limit, after)
    ]


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@public.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    openapi_extra={"security": [{"token": []}]},
    responses={
        200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **UNAUTHORIZED,
    },
)
async def metrics(request: Request) -> Response:
    rt = _rt(request)
    if not rt.metrics_public:
        await require_token(request, await bearer(request))
    collector: Any = None
    if rt.monitor is not None:
        await rt.monitor.readings.refresh()
        collector = rt.monitor.collector
    elif rt.engine is not None:
        collector = EngineCollector(lambda: runners(rt))
    return Response(render(collector), media_type=CONTENT_TYPE_LATEST)
