"""Helpers shared by the webhook tests: an app serving webhook sources, and a real loopback HTTP server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tidesync.api.app import create_app
from tidesync.api.runtime import ApiRuntime
from tidesync.api.server import ApiServer
from tidesync.sources.webhook import WebhookSource, WebhookSourceConfig
from tidesync.state.store import StateStore

JSON = {"content-type": "application/json"}


def webhook_source(pipeline: str = "p", **config: Any) -> WebhookSource:
    return WebhookSource(WebhookSourceConfig.model_validate({"type": "webhook", **config}))


def runtime_for(state: StateStore, *sources: tuple[WebhookSource, str], **kw: Any) -> ApiRuntime:
    runtime = ApiRuntime(**kw)
    for source, pipeline in sources:
        runtime.add_intake(source.intake_for(pipeline))
    runtime.bind(state)
    return runtime


@contextlib.asynccontextmanager
async def asgi_client(runtime: ApiRuntime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks.test") as client:
        yield client


@contextlib.asynccontextmanager
async def serve(app: Any = None, runtime: ApiRuntime | None = None) -> AsyncIterator[ApiServer]:
    """A real uvicorn server on 127.0.0.1 (a free port) for ``app`` or for ``runtime``'s app."""
    server = ApiServer(runtime or ApiRuntime(), "127.0.0.1:0", app=app, grace=2.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
