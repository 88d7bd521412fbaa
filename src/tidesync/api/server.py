"""Serving the HTTP app inside the engine's event loop: uvicorn as a task, with a graceful stop.

:class:`ApiServer` binds its socket in :meth:`~ApiServer.start` (so a port of
0 is resolved before anyone needs it), serves until :meth:`~ApiServer.stop`,
which stops accepting connections, lets requests in flight finish (their
journal commits included) for up to ``grace`` seconds, then closes the
journal's own state store connection. Signals stay with the engine: uvicorn's
signal capture is turned off, and ``tidesync run`` stops the server after the
pipelines have stopped.

Connection limits (:class:`~tidesync.api.protocol.ConnectionLimits`): at most
``limit_concurrency`` connections and requests at once (503 beyond), a request
head must arrive within ``header_timeout`` seconds (else the connection is
closed: slowloris) and its body within ``body_timeout`` seconds after it (else
408 and the connection is closed), an idle keep-alive connection is closed
after ``keep_alive_timeout`` seconds, a head over ``max_header_bytes`` is refused.

The intake journals through a state store connection of its own (same URL as
the engine's), so the engine and the intake never wait on each other's calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from types import TracebackType
from typing import Any

import uvicorn

from tidesync.api.app import create_app
from tidesync.api.protocol import ConnectionLimits, protocol_for
from tidesync.api.runtime import ApiRuntime
from tidesync.api.wanted import webhook_sources
from tidesync.errors import ConfigError
from tidesync.state import open_state_store
from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.api")
DEFAULT_LISTEN = "127.0.0.1:8080"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The engine owns SIGINT/SIGTERM in this process.
        yield


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"api.listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class ApiServer:
    def __init__(
        self,
        runtime: ApiRuntime,
        listen: str = DEFAULT_LISTEN,
        *,
        state_url: str | None = None,
        grace: float = 10.0,
        app: Any = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.runtime = runtime
        self.host, self.port = parse_listen(listen)
        self.state_url = state_url
        self.grace = grace
        self.limits = limits or ConnectionLimits()
        self.app = app if app is not None else create_app(runtime)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._own_state: StateStore | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        if self.state_url is not None and self.runtime.state is None:
            self._own_state = open_state_store(self.state_url)
            await self._own_state.open()
            self.runtime.bind(self._own_state)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
        # without it every keep-alive response waits ~40 ms (Nagle against delayed ACKs).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            await self._close_state()
            raise ConfigError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(self.grace)),
            backlog=2048,
            http=protocol_for(self.limits),
            limit_concurrency=self.limits.limit_concurrency,
            timeout_keep_alive=self.limits.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="tidesync-api")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what failed
                raise ConfigError(f"the API server on {self.host}:{self.port} stopped at start")
            await asyncio.sleep(0.01)
        log.info(
            "API listening on %s (webhook sources: %s)", self.url, ", ".join(sorted(self.runtime.intakes)) or "none"
        )

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
        jobs = getattr(getattr(self.app, "state", None), "jobs", None)
        if jobs is not None:
            await jobs.cancel_all()
        if self.runtime.journal is not None:
            await self.runtime.journal.close()
        await self._close_state()

    async def _close_state(self) -> None:
        state, self._own_state = self._own_state, None
        if state is not None:
            await state.close()
            self.runtime.state = None
            self.runtime.journal = None

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def build_api(config: Any, engine: Any, *, monitor: Any = None, force: bool = False) -> ApiServer | None:
    """The server ``tidesync run`` starts: when the config has an ``api:`` section or a webhook source, or ``force``.

    ``force`` (``tidesync serve``, ``tidesync run --api``) also requires ``api.token``: the admin API is the point.
    """
    intakes = [s.intake_for(name) for name, s in webhook_sources(engine)]
    api = getattr(config.model, "api", None)
    if force and getattr(api, "token", None) is None:
        raise ConfigError(
            "the admin API needs a bearer token: set api.token in the config (e.g. token: ${env:TIDESYNC_TOKEN})",
            path=str(config.path) if getattr(config, "path", None) else None,
        )
    if api is None and not intakes and not force:
        return None
    runtime = ApiRuntime(
        public_url=getattr(api, "public_url", None),
        max_body_bytes=getattr(api, "max_body_bytes", 1024 * 1024),
        engine=engine,
        token=getattr(api, "token", None),
        config=config,
        monitor=monitor,
        metrics_public=bool(getattr(api, "metrics_public", False)),
    )
    if api is not None:
        runtime.admin_max_body_bytes = api.admin_max_body_bytes
    for intake in intakes:
        try:
            runtime.add_intake(intake)
        except ValueError as exc:
            raise ConfigError(f"{exc}; give each webhook source its own name:") from None
    listen = getattr(api, "listen", None) or DEFAULT_LISTEN
    limits = ConnectionLimits()
    if api is not None:
        limits = ConnectionLimits(
            limit_concurrency=api.limit_concurrency,
            header_timeout=api.header_timeout_seconds,
            body_timeout=api.body_timeout_seconds,
            keep_alive_timeout=api.keep_alive_timeout_seconds,
            max_header_bytes=api.max_header_bytes,
        )
    return ApiServer(runtime, listen, state_url=config.state_url, limits=limits)
