"""The HTTP app: ``create_app(runtime)`` builds the FastAPI application the process serves.

It carries ``/healthz`` and the webhook intake routes, which are not
authenticated by the bearer token (webhook senders prove themselves by
signature), and the admin API, metrics and dashboard that
:func:`tidesync.api.admin.install` adds (token-protected, see ``api/auth.py``).
In front of them all, :class:`~tidesync.api.guard.Guard` refuses a request
without the token, or with a body over the limit, before its body is read.

Any error that escapes a route is answered 500 with a fixed text (never a
traceback or an exception message); the intake itself answers bad input with
4xx and a failing journal with 503. A request body the admin routes cannot
validate gets 422 naming where and what (``loc``, ``msg``, ``type``) but never
echoing the input: an echo of ``NaN``, ``1e999`` or bytes that are not UTF-8
cannot be encoded as JSON, and would turn a client's mistake into a 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tidesync import __version__
from tidesync.api import admin, webhooks
from tidesync.api.guard import Guard
from tidesync.api.runtime import ApiRuntime

log = logging.getLogger("tidesync.api")


def create_app(runtime: ApiRuntime) -> FastAPI:
    # The schema is served by the admin API behind the token (tidesync.api.monitoring); no CDN-backed docs pages.
    app = FastAPI(title="tidesync", version=__version__, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.runtime = runtime

    @app.get("/healthz", tags=["health"], summary="The process is up and serving")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "webhook_sources": sorted(runtime.intakes)}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]  # fmt: skip
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error serving %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    app.include_router(webhooks.router)
    admin.install(app)
    # Outside the routes: the token and the body limit are checked before FastAPI reads a body.
    app.add_middleware(Guard, runtime=runtime)
    return app
