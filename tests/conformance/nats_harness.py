"""The NATS JetStream sink and source under the conformance suite, on the real nats-server at 127.0.0.1:4222.

Every harness makes its own stream (and consumer) with a random suffix and deletes it at cleanup,
so the cases run in parallel under xdist.

Sink: the destination is the stream. ``rows()`` reads every message stored since the last look and
applies it to a table (as a consumer would: the fields an event names), and fails when a message id
is stored twice (exactly once on the stream is the sink's promise, through ``Nats-Msg-Id``). The
sink reaches the server through a proxy that can cut connections (a transient fault) or hold the
bytes it carries (a slow destination).

Source: changes are ChangeEvents published to the stream in the tidesync format, as the nats sink
writes them; bad input is a message that is not an event.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import nats

from tidesync.event import ChangeEvent, from_json, to_json
from tidesync.protocols import Sink, Source
from tidesync.sinks.nats.config import NatsSinkConfig
from tidesync.sinks.nats.sink import NatsSink
from tidesync.sources.nats.config import NatsSourceConfig
from tidesync.sources.nats.source import NatsSource
from tidesync.testing import TcpProxy

URL = "nats://127.0.0.1:4222"
T = TypeVar("T")
Rows = dict[tuple[Any, ...], dict[str, Any]]


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a loop of its own, in a thread (callable from inside a running loop)."""
    out: list[Any] = []

    def main() -> None:
        try:
            out.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller
            out.append(exc)

    t = threading.Thread(target=main, name="nats-harness")
    t.start()
    t.join(60)
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]  # type: ignore[no-any-return]


async def delete_stream(name: str) -> None:
    nc = await nats.connect(URL)
    try:
        await nc.jetstream().delete_stream(name)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


class HoldingProxy(TcpProxy):
    """A :class:`TcpProxy` that can also hold the bytes it carries (``hold``) until ``release``."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port)
        self.flowing = threading.Event()
        self.flowing.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                while not self.flowing.is_set():
                    await asyncio.sleep(0.005)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def block(self) -> None:
        """Cut every connection and refuse new ones (closed port: the client's reconnects fail to connect,
        rather than connect and be cut, which leaves a stream writer of the client's unclosed)."""
        super().block()

        async def stop_listening() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(stop_listening(), self._loop).result(10)

    def unblock(self) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        super().unblock()

    def hold(self) -> None:
        self.flowing.clear()

    def release(self) -> None:
        self.flowing.set()


class ProxyCut:
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    def break_(self) -> None:
        self.proxy.block()

    def heal(self) -> None:
        self.proxy.unblock()


class NatsSinkHarness:
    """The nats sink publishing into a fresh stream; the stream read back and applied is the destination."""

    entity = "items"
    # A value JSON cannot carry: the sink fails that event alone, before publishing it.
    bad_row: dict[str, Any] | None = {"name": object(), "qty": 2}
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.stream = f"CONF_{self.suffix}"
        self.proxies: list[TcpProxy] = []
        self.slow = self._proxy(HoldingProxy(4222))
        self.tables: Rows = {}
        self.seen = 0  # the last stream sequence applied to ``tables``
        self.stored: Counter[str] = Counter()

    def _proxy(self, proxy: HoldingProxy) -> HoldingProxy:
        proxy.start()
        self.proxies.append(proxy)
        return proxy

    def _sink(self, port: int, timeout: float) -> NatsSink:
        return NatsSink(
            NatsSinkConfig(
                url=f"nats://127.0.0.1:{port}",
                stream=self.stream,
                subject=f"conf{self.suffix}.{{partition}}.{{entity}}",
                partitions=3,
                max_in_flight=64,
                timeout=timeout,
                connect_timeout=1,
            )
        )

    def make_sink(self) -> Sink:
        return self._sink(self.slow.port, 10)

    def make_slow(self) -> HoldingProxy:
        return self.slow

    def make_faulty_sink(self) -> tuple[Sink, ProxyCut]:
        proxy = self._proxy(HoldingProxy(4222))
        return self._sink(proxy.port, 1), ProxyCut(proxy)

    async def _fetch(self) -> list[tuple[str, ChangeEvent]]:
        nc = await nats.connect(URL)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(self.stream)).state.last_seq
            out = []
            for seq in range(self.seen + 1, last + 1):
                msg = await js.get_msg(self.stream, seq)
                out.append(((msg.headers or {}).get("Nats-Msg-Id", ""), from_json(msg.data)))
            self.seen = last
            return out
        finally:
            await nc.close()

    def rows(self) -> Rows:
        for msg_id, event in run_sync(self._fetch):
            self.stored[msg_id] += 1
            assert self.stored[msg_id] == 1, f"message {msg_id} stored twice"
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
        for proxy in self.proxies:
            proxy.stop()
        run_sync(lambda: delete_stream(self.stream))


class NatsSourceHarness:
    """A durable pull consumer over a fresh stream that the harness publishes tidesync events into."""

    entity = "items"
    every_change = True
    exclusions: dict[str, str] = {}

    def __init__(self, tmp: Path) -> None:
        self.suffix = uuid.uuid4().hex[:10]
        self.stream = f"CONFSRC_{self.suffix}"
        self.subject = f"confsrc{self.suffix}.items"

        async def create() -> None:
            nc = await nats.connect(URL)
            await nc.jetstream().add_stream(name=self.stream, subjects=[f"confsrc{self.suffix}.>"])
            await nc.close()

        run_sync(create)

    def make_source(self) -> Source:
        return NatsSource(
            NatsSourceConfig(
                url=URL, stream=self.stream, consumer=f"c{self.suffix}", subjects=[f"confsrc{self.suffix}.>"]
            )
        )

    async def _publish(self, payloads: list[bytes]) -> None:
        nc = await nats.connect(URL)
        try:
            js = nc.jetstream()
            for p in payloads:
                await js.publish(self.subject, p, stream=self.stream)
        finally:
            await nc.close()

    async def insert(self, ids: range) -> None:
        await self._publish(
            [to_json(ChangeEvent("items", (i,), "insert", after={"id": i, "name": f"item {i}", "qty": 0})) for i in ids]
        )

    async def update(self, ids: range, qty: int) -> None:
        await self._publish(
            [to_json(ChangeEvent("items", (i,), "update", after={"id": i, "qty": qty}, changed=("qty",))) for i in ids]
        )

    async def delete(self, ids: range) -> None:
        await self._publish([to_json(ChangeEvent("items", (i,), "delete", before={"id": i})) for i in ids])

    async def feed_bad_input(self, key: int) -> None:
        await self._publish([b'{"this is": "not a change event"'])

    def cleanup(self) -> None:
        run_sync(lambda: delete_stream(self.stream))
