"""``tidesync top``: a live terminal view of every pipeline's throughput, latency, lag and DLQ.

Where the numbers come from, in order:

1. the running server (``api.listen`` with ``api.token``): ``GET /api/pipelines``,
   the engine's own live values;
2. else the state store: the status rows the engine writes and the DLQ counts.
   Throughput is then the change of ``events applied`` between two refreshes,
   and latency is not known (shown as ``-``).

The view says which source it shows. Ctrl-C leaves.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tidesync.secrets import REDACTOR

STATE_STYLE = {
    "running": "green",
    "degraded": "yellow",
    "retrying": "yellow",
    "paused": "yellow",
    "blocked": "bold red",
    "failed": "red",
}


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s" if s < 120 else f"{s / 60:.1f} min"


class TopSource:
    def __init__(self, loaded: Any, timeout: float = 2.0) -> None:
        self.loaded = loaded
        self.timeout = timeout
        self.url: str | None = None
        self.token: str | None = None
        api = getattr(loaded.model, "api", None)
        if api is not None and api.token is not None:
            from tidesync.api.server import parse_listen

            host, port = parse_listen(api.listen)
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # a wildcard listens on loopback too
            self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            self.token = api.token
        self.client: httpx.AsyncClient | None = None
        self._previous: dict[str, tuple[float, int]] = {}  # state-store mode: pipeline -> (time, applied)

    async def rows(self) -> tuple[str, list[dict[str, Any]]]:
        if self.url is not None and self.token is not None:
            try:
                return await self._from_api()
            except (httpx.HTTPError, ValueError):
                pass
        return await self._from_store()

    async def _from_api(self) -> tuple[str, list[dict[str, Any]]]:
        assert self.url is not None and self.token is not None
        if self.client is None:
            self.client = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
        resp = await self.client.get("/api/pipelines", headers={"authorization": f"Bearer {self.token.get()}"})  # type: ignore[attr-defined]
        resp.raise_for_status()
        return f"live from {self.url}", list(resp.json())

    async def _from_store(self) -> tuple[str, list[dict[str, Any]]]:
        from tidesync.state import open_state_store

        store = open_state_store(self.loaded.state_url)
        await store.open()
        try:
            statuses = {s.pipeline: s for s in await store.status_list()}
            now = time.time()
            rows = []
            for spec in self.loaded.pipelines:
                st = statuses.get(spec.name)
                applied = st.events_applied if st else 0
                prev = self._previous.get(spec.name)
                rate = (applied - prev[1]) / (now - prev[0]) if prev and now > prev[0] else None
                self._previous[spec.name] = (now, applied)
                rows.append(
                    {
                        "name": spec.name,
                        "state": st.state if st else "never run",
                        "events_applied": applied,
                        "events_per_second": rate,
                        "lag_seconds": st.lag_seconds if st else None,
                        "latency_p50_seconds": None,
                        "latency_p99_seconds": None,
                        "dlq_depth": await store.dlq_count(spec.name),
                        "last_error": st.last_error if st else None,
                    }
                )
        finally:
            await store.close()
        return "from the state store (server not reachable)", rows

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def render(source: str, rows: list[dict[str, Any]]) -> Group:
    table = Table(title="tidesync top", caption=source, expand=True)
    for col, justify in (("pipeline", "left"), ("state", "left"), ("events/s", "right"), ("applied", "right"),
                         ("lag", "right"), ("p50", "right"), ("p99", "right"), ("DLQ", "right"),
                         ("last error", "left")):  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        state = str(r.get("state", "?"))
        style = STATE_STYLE.get(state, "")
        rate = r.get("events_per_second")
        table.add_row(
            str(r.get("name")),
            Text(state, style=style),
            "-" if rate is None else f"{rate:,.1f}",
            f"{r.get('events_applied', 0):,}",
            _fmt_seconds(r.get("lag_seconds")),
            _fmt_seconds(r.get("latency_p50_seconds")),
            _fmt_seconds(r.get("latency_p99_seconds")),
            str(r.get("dlq_depth", "-")),
            Text(REDACTOR.redact(str(r.get("last_error") or ""))[:120], style="red"),
        )
    return Group(table)


async def run_top(loaded: Any, console: Console, *, interval: float = 1.0, once: bool = False) -> None:
    source = TopSource(loaded)
    try:
        if once:
            console.print(render(*await source.rows()))
            return
        with Live(render(*await source.rows()), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(*await source.rows()))
    finally:
        await source.close()
