"""The HubSpot sink over the HubSpot fake (served from a thread), behind a TCP proxy for faults.

The entity ``items`` goes to a custom object type ``items`` whose properties
the fake defines: ``name`` (text), ``qty`` (number) and the unique
``tidesync_key`` the sink upserts by. The bad input is a word for the number
property: the sink fails that event alone, before sending.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tests.conformance.sink_harnesses import ProxyFault, _Proxied
from tests.integration.sql_sinks.conformance import Rows
from tidesync.protocols import Sink
from tidesync.sinks.hubspot import HubSpotSink, HubSpotSinkConfig
from tidesync.testing.hubspot import FakeHubSpot, serve_in_thread
from tidesync.testing.hubspot_crm import prop


class _Gate:
    def __init__(self, fake: FakeHubSpot) -> None:
        self.fake = fake

    def hold(self) -> None:
        self.fake.gate.clear()

    def release(self) -> None:
        self.fake.gate.set()


class HubSpotSinkHarness(_Proxied):
    entity = "items"
    bad_row = {"name": "x", "qty": "a few"}
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.fake = FakeHubSpot()
        for definition in (prop("tidesync_key", unique=True), prop("name"), prop("qty", "number")):
            self.fake.crm.define("items", definition)
        self._server = contextlib.ExitStack()
        self.url = self._server.enter_context(serve_in_thread(self.fake.app))
        self.port = int(self.url.rsplit(":", 1)[1])

    def _sink(self, port: int) -> Sink:
        config = {
            "type": "hubspot", "token": "pat-na1-fake", "base_url": f"http://127.0.0.1:{port}",
            "objects": {"items": {"type": "items", "exclude": ["id"]}},
            "rate_limit": {"per_second": 5000}, "http": {"max_attempts": 1, "timeout": 5},
        }  # fmt: skip
        return HubSpotSink(HubSpotSinkConfig.model_validate(config))

    def make_sink(self) -> Sink:
        return self._sink(self.port)

    def make_faulty_sink(self) -> tuple[Sink, ProxyFault]:
        proxy = self._proxy(self.port)
        return self._sink(proxy.port), ProxyFault(proxy)

    def make_slow(self) -> _Gate:
        return _Gate(self.fake)

    def rows(self) -> Rows:
        out: Rows = {}
        for p in self.fake.snapshot("items").values():
            key = int(p["tidesync_key"])
            qty = p.get("qty")
            out[(key,)] = {"id": key, "name": p.get("name") or None, "qty": int(qty) if qty else None}
        return out

    def set_column(self, key: int, column: str, value: Any) -> None:
        with self.fake.crm.lock:
            table = self.fake.records["items"]
            rid = next(r for r, rec in table.items() if rec["properties"].get("tidesync_key") == str(key))
            record = table[rid]
            table[rid] = {**record, "properties": {**record["properties"], column: str(value)}}

    def cleanup(self) -> None:
        self._stop_proxies()
        self.fake.gate.set()
        self._server.close()
