"""The Redis Streams sink and source under the conformance suite, on the Redis at 127.0.0.1:6379.

Each harness uses its own streams, group and applied-position key (a random
suffix) and deletes them at cleanup, so tests run in parallel.

Sink: the destination is a stream; ``rows()`` reads the entries added since
its last look and applies them to a table in memory, as a consumer would
(only the fields an event writes), so an edit made "in the destination"
(``set_column``) survives unless an entry overwrites it, and a duplicate
entry would show. The transient fault is a proxy that cuts connections; the
slow destination is ``CLIENT PAUSE ... WRITE`` (the whole server holds
writes for the half second the case lasts).

Source: the harness is the producer, XADDing tidesync JSON events to the
stream; its bad input is an entry whose payload is not JSON.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis

from tests.conformance.sink_harnesses import ProxyFault, _Proxied
from tidesync.event import ChangeEvent, from_json, to_json
from tidesync.protocols import Sink, Source
from tidesync.sinks.redis.config import RedisSinkConfig
from tidesync.sinks.redis.sink import RedisSink
from tidesync.sources.redis.config import RedisSourceConfig
from tidesync.sources.redis.source import RedisSource

Rows = dict[tuple[Any, ...], dict[str, Any]]
PORT = 6379


def _client() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=PORT)


class ServerPause:
    """Redis holding every write (``CLIENT PAUSE WRITE``) until released: a slow destination."""

    def hold(self) -> None:
        with _client() as r:
            r.execute_command("CLIENT", "PAUSE", 30000, "WRITE")

    def release(self) -> None:
        with _client() as r:
            r.execute_command("CLIENT", "UNPAUSE")


class RedisSinkHarness(_Proxied):
    entity = "items"
    bad_row = {"name": object(), "qty": 2}  # JSON cannot carry it: that event fails alone, before the XADD
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.prefix = f"tsconf{self.suffix}"
        self.stream = f"conf.{self.suffix}.items"
        self.tables: Rows = {}
        self.last = "0"
        self.entries = 0

    def _sink(self, port: int) -> Sink:
        return RedisSink(
            RedisSinkConfig(
                url=f"redis://127.0.0.1:{port}",
                stream=f"conf.{self.suffix}.{{entity}}",
                key_prefix=self.prefix,
                timeout=5,
            )
        )

    def make_sink(self) -> Sink:
        return self._sink(PORT)

    def make_faulty_sink(self) -> tuple[Sink, ProxyFault]:
        proxy = self._proxy(PORT)
        return self._sink(proxy.port), ProxyFault(proxy)

    def make_slow(self) -> ServerPause:
        return ServerPause()

    def rows(self) -> Rows:
        with _client() as r:
            for raw_id, fields in r.xrange(self.stream, min=f"({self.last}" if self.last != "0" else "-"):
                self.last = raw_id.decode()
                self.entries += 1
                event = from_json(fields[b"event"])
                if event.op == "delete":
                    self.tables.pop(event.key, None)
                    continue
                row = self.tables.setdefault(event.key, {})
                after = event.after or {}
                for f in event.fields_to_write():
                    if f in after:
                        row[f] = after[f]
        return {k: dict(v) for k, v in self.tables.items()}

    def set_column(self, key: int, column: str, value: Any) -> None:
        self.rows()
        self.tables[(key,)][column] = value

    def cleanup(self) -> None:
        self._stop_proxies()
        with _client() as r:
            r.execute_command("CLIENT", "UNPAUSE")
            keys = [*r.scan_iter(f"{self.prefix}:*"), self.stream.encode()]
            r.delete(*keys)


class RedisSourceHarness:
    entity = "items"
    every_change = True
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.stream = f"conf.{self.suffix}.src"
        self.group = f"g{self.suffix}"
        self.seq = 0

    def make_source(self) -> Source:
        return RedisSource(RedisSourceConfig(url=f"redis://127.0.0.1:{PORT}", streams=[self.stream], group=self.group))

    def _add(self, payloads: list[bytes]) -> None:
        with _client() as r, r.pipeline(transaction=False) as p:
            for payload in payloads:
                p.xadd(self.stream, {"event": payload})
            p.execute()

    def _event(self, op: str, i: int, **row: Any) -> bytes:
        self.seq += 1
        after = {"id": i, **row} if op != "delete" else None
        before = {"id": i} if op == "delete" else None
        changed = tuple(row) if op == "update" else None
        return to_json(ChangeEvent("items", (i,), op, before, after, changed, (self.seq,), 1.0))

    def insert(self, ids: range) -> None:
        self._add([self._event("insert", i, name=f"item {i}", qty=0) for i in ids])

    def update(self, ids: range, qty: int) -> None:
        self._add([self._event("update", i, qty=qty) for i in ids])

    def delete(self, ids: range) -> None:
        self._add([self._event("delete", i) for i in ids])

    def feed_bad_input(self, key: int) -> None:
        self._add([b'{"entity": "items", "key": [' + str(key).encode() + b"], broken"])

    def cleanup(self) -> None:
        with _client() as r:
            r.delete(self.stream)
