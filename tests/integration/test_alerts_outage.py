"""A lag alert during a real destination outage: exactly one fire and one clear, in the log and as signed webhooks."""

from __future__ import annotations

import base64
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.integration.api_harness import SHOP, dst_rows, make_shop, running, sample, src_insert
from tests.integration.webhook_support import serve
from tidesync.testing import eventually

SECRET = "whsec_" + base64.b64encode(b"alert-receiver-key-0123456789ab").decode()
N = 200
ALERTS = """\
alerts:
  interval: 100ms
  webhook: {{url: "{url}/hook", secrets: "${{file:{tmp}/alert-secret.txt}}"}}
  rules:
    - {{name: shop-lag, metric: lag_seconds, above: 1.0, clear_below: 0.2}}
"""


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []

    async def hook(self, request: Request) -> Response:
        self.posts.append({"headers": dict(request.headers), "body": await request.body()})
        return Response(status_code=204)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])


async def test_lag_alert_fires_once_in_an_outage_and_clears_once_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tidesync.alerts")
    token = make_shop(tmp_path)
    (tmp_path / "alert-secret.txt").write_text(SECRET)
    receiver = Receiver()
    async with serve(receiver.app()) as hooks:
        text = SHOP.format(tmp=tmp_path) + ALERTS.format(url=hooks.url, tmp=tmp_path)
        async with running(tmp_path, text, token) as run:
            monitor = run.monitor
            src_insert(tmp_path, [(i, i, "before") for i in range(1, 11)])
            await eventually(lambda: len(dst_rows(tmp_path)) == 10, message="the first rows applied")

            # The outage: another connection holds the destination's write lock.
            lock = sqlite3.connect(tmp_path / "dst.db", isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            try:
                src_insert(tmp_path, [(i, i, "during") for i in range(11, N + 1)])
                await eventually(lambda: len(receiver.posts) >= 1, timeout=30, message="the fire delivered")
                fired_at_tick = monitor.ticks
                # The lag keeps growing past the threshold for many more evaluations: no second fire.
                await eventually(lambda: run.engine.runners[0].lag_seconds() > 2.5, timeout=30, message="lag 2.5s")
                assert monitor.ticks >= fired_at_tick + 10
                assert len(receiver.posts) == 1
                assert run.engine.runners[0].state_name == "retrying"
            finally:
                lock.execute("ROLLBACK")
                lock.close()

            await eventually(lambda: len(dst_rows(tmp_path)) == N, timeout=30, message="caught up")
            await eventually(lambda: len(receiver.posts) >= 2, timeout=30, message="the clear delivered")
            cleared_at_tick = monitor.ticks
            await eventually(lambda: monitor.ticks >= cleared_at_tick + 10, message="ten more evaluations")
            view = await run.get("/api/alerts")
            s = await run.scrape()

    assert len(receiver.posts) == 2
    verifier = standardwebhooks.Webhook(SECRET)
    bodies = [verifier.verify(p["body"], p["headers"]) for p in receiver.posts]  # raises on a bad signature
    assert [b["type"] for b in bodies] == ["tidesync.alert.fired", "tidesync.alert.cleared"]
    fired, cleared = (b["data"]["after"] for b in bodies)
    assert (fired["rule"], fired["pipeline"], fired["metric"]) == ("shop-lag", "shop", "lag_seconds")
    assert fired["value"] > 1.0 and fired["threshold"] == 1.0
    assert cleared["value"] < 0.2 and cleared["threshold"] == 0.2 and cleared["firing_since"] == fired["at"]
    assert len({p["headers"]["webhook-id"] for p in receiver.posts}) == 2

    logged = [r.getMessage() for r in caplog.records if r.name == "tidesync.alerts"]
    assert [m.split(" for ")[0] for m in logged] == ["alert shop-lag fired", "alert shop-lag cleared"], logged
    assert [a["phase"] for a in view["alerts"] if a["rule"] == "shop-lag"] == ["ok"]
    assert [n["kind"] for n in view["notices"]] == ["cleared", "fired"]
    assert sample(s, "tidesync_alert_firing", alert="shop-lag", pipeline="shop") == 0.0
