"""A running tidesync in the test's event loop: engine, monitor and API server, as ``tidesync serve`` wires them.

Used by the admin API, metrics, alert and dashboard tests. The default config
is a SQLite -> SQLite ``shop`` pipeline whose destination refuses negative
amounts (a trigger, so a test can "fix the destination" by dropping it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tidesync.api.server import ApiServer, build_api
from tidesync.config import LoadedConfig, load_config_text
from tidesync.engine.build import build_engine
from tidesync.engine.engine import Engine
from tidesync.observe.monitor import Monitor
from tidesync.observe.recent import install as keep_recent_errors
from tidesync.testing import eventually

SHOP = """\
state: sqlite:///{tmp}/state.db
api:
  listen: 127.0.0.1:0
  token: ${{file:{tmp}/token.txt}}
pipelines:
  - name: shop
    source: {{type: sqlite, path: {tmp}/src.db, tables: [orders], poll_interval_ms: 5}}
    sink: {{type: sqlite, path: {tmp}/dst.db, lock_timeout: 0.2}}
    batch: {{max_events: 100, max_wait_ms: 5}}
    retry: {{initial_delay: 0.05, max_delay: 0.2}}
"""


def make_shop(tmp: Path) -> str:
    """Create the databases and the token file; return the token."""
    with sqlite3.connect(tmp / "src.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
    with sqlite3.connect(tmp / "dst.db") as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, amount INTEGER, note TEXT)")
        conn.execute(
            "CREATE TRIGGER no_negative BEFORE INSERT ON orders WHEN NEW.amount < 0"
            " BEGIN SELECT RAISE(ABORT, 'negative amounts are refused'); END"
        )
    token = "tok-" + secrets.token_hex(16)
    (tmp / "token.txt").write_text(token + "\n")
    return token


def src_insert(tmp: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(tmp / "src.db") as conn:
        conn.executemany("INSERT INTO orders (id, amount, note) VALUES (?, ?, ?)", rows)


def dst_rows(tmp: Path) -> dict[int, tuple[Any, ...]]:
    with sqlite3.connect(tmp / "dst.db") as conn:
        return {r[0]: r for r in conn.execute("SELECT id, amount, note FROM orders")}


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@dataclass
class Running:
    loaded: LoadedConfig
    engine: Engine
    monitor: Monitor
    server: ApiServer
    client: httpx.AsyncClient  # authenticated
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    async def get(self, path: str, **kw: Any) -> Any:
        resp = await self.client.get(path, **kw)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()

    async def post(self, path: str, body: Any = None, expect: int = 200) -> Any:
        resp = await self.client.post(path, json=body if body is not None else {})
        assert resp.status_code == expect, (path, resp.status_code, resp.text)
        return resp.json()

    async def scrape(self) -> dict[Any, float]:
        resp = await self.client.get("/metrics")
        assert resp.status_code == 200, resp.text
        return metrics(resp.text)


@contextlib.asynccontextmanager
async def running(tmp: Path, text: str, token: str, *, wait_running: bool = True) -> AsyncIterator[Running]:
    """Load ``text`` as ``tmp/tidesync.yaml`` and run it with the monitor and the API, until the block ends."""
    keep_recent_errors()
    path = tmp / "tidesync.yaml"
    path.write_text(text)
    loaded = load_config_text(text, path)
    engine = build_engine(loaded)
    monitor = Monitor.for_config(loaded, engine)
    server = build_api(loaded, engine, monitor=monitor, force=True)
    assert server is not None
    await monitor.start()
    await server.start()
    task = asyncio.create_task(engine.run(install_signals=False))
    client = httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=30)
    try:
        if wait_running:
            await eventually(
                lambda: task.done() or all(r.state_name == "running" for r in engine.runners),
                timeout=30,
                message="every pipeline running",
            )
        yield Running(loaded, engine, monitor, server, client, token)
    finally:
        await client.aclose()
        engine.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await server.stop()
        await monitor.stop()
