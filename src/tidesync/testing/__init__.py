"""Test doubles that ship with tidesync, for its own tests and for connector authors.

- :class:`FakeClock`: time that moves only when told (or when something sleeps on it).
- :class:`ListSource`: a source over a list or iterator of events, with positions ``(n,)``.
- :class:`ScriptedSource`: a list source whose script can say "fail here" or "pause here".
- :class:`FlakySink`: an in-memory sink with configurable transient/permanent failures.
- :class:`MemorySink`: an in-memory destination table per entity (upsert/update/delete).
- :func:`eventually`: wait for a predicate, the one way tests wait.
- :func:`read_batches`: read a source until it has given a number of events.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.errors import PermanentError, SourceTransientError, TransientError
from tidesync.event import DELETE, TRUNCATE, Batch, ChangeEvent, Key, Position, Row
from tidesync.protocols import Context


class FakeClock:
    """A clock for tests: ``sleep`` advances time instantly and records the delay."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.mono = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


async def eventually(
    predicate: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; return that value.

    Raises AssertionError naming ``message`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if asyncio.iscoroutine(last) or isinstance(last, Awaitable):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last value: {last!r})")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> Any:
    """Blocking twin of :func:`eventually`, for tests that drive subprocesses without an event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or 'condition'}")
        time.sleep(interval)


async def read_batches(source: Any, count: int, timeout: float = 10.0, max_wait: float = 0.2) -> list[Batch[Any]]:
    """Read ``source`` until its batches hold ``count`` events and rejections; return those batches.

    A source may hand over what has arrived so far (a broker delivers a publish
    burst over several reads), so a test that expects ``count`` events reads
    until they are all there instead of trusting one ``read``. Raises
    AssertionError after ``timeout`` seconds with what did arrive.
    """
    deadline = time.monotonic() + timeout
    batches: list[Batch[Any]] = []
    got = 0
    while got < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: read {got} of {count} events ({batches!r})")
        batch = await source.read(count - got, max_wait)
        if batch.events or batch.rejected:
            batches.append(batch)
            got += len(batch.events) + len(batch.rejected)
    return batches


class ListSource:
    """A source over events in memory. Event ``n`` (0-based) gets position ``(n,)``.

    ``events`` may be an iterator, so a benchmark can stream millions of events
    without holding them. Events are re-stamped with their position.
    """

    def __init__(self, events: Iterable[ChangeEvent], *, stamp: bool = True) -> None:
        self._iter: Iterator[ChangeEvent] = iter(events)
        self._stamp = stamp
        self._n = 0
        self._skip_to = -1
        self.committed: list[Position] = []
        self.opened = 0
        self.closed = 0
        self.exhausted = False

    async def open(self, ctx: Context, after: Position | None) -> None:
        self.opened += 1
        self._skip_to = after[0] if after else -1

    async def read(self, max_events: int, max_wait: float) -> Batch[Any]:
        out: list[ChangeEvent] = []
        append = out.append
        it = self._iter
        n = self._n
        stamp = self._stamp
        skip_to = self._skip_to
        for ev in it:
            if n > skip_to:
                append(ev.replace(position=(n,)) if stamp else ev)
            n += 1
            if len(out) >= max_events:
                break
        else:
            self.exhausted = True
        self._n = n
        if not out:
            await asyncio.sleep(min(max_wait, 0.01))
            return Batch([], None)
        return Batch(out, out[-1].position)

    async def commit(self, position: Position) -> None:
        self.committed.append(position)

    async def close(self) -> None:
        self.closed += 1


@dataclass
class Step:
    """One line of a :class:`ScriptedSource` script."""

    event: ChangeEvent | None = None
    fail: str | None = None  # raise SourceTransientError(fail) once at this point
    pause: float = 0.0  # wait before going on


class ScriptedSource(ListSource):
    """A list source whose script may fail or pause at given points (each failure fires once)."""

    def __init__(self, script: Sequence[Step | ChangeEvent]) -> None:
        self._script = [s if isinstance(s, Step) else Step(event=s) for s in script]
        self._fired: set[int] = set()
        self._i = 0
        events = [s.event for s in self._script if s.event is not None]
        super().__init__(events)

    async def read(self, max_events: int, max_wait: float) -> Batch[Any]:
        # Replay the script up to the next failure/pause, then read that many events.
        count = 0
        while self._i < len(self._script):
            step = self._script[self._i]
            if step.fail and self._i not in self._fired:
                if count:
                    break
                self._fired.add(self._i)
                raise SourceTransientError(step.fail)
            if step.pause and self._i not in self._fired:
                if count:
                    break
                self._fired.add(self._i)
                await asyncio.sleep(step.pause)
            if step.event is not None:
                count += 1
            self._i += 1
            if count >= max_events:
                break
        if count == 0:
            await asyncio.sleep(min(max_wait, 0.01))
            return Batch([], None)
        return await super().read(count, max_wait)


class MemorySink:
    """An in-memory destination: per entity, rows by key, field-level updates, and an applied position."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Key, Row]] = {}
        self.applied: Position | None = None
        self.writes: list[ChangeEvent] = []
        self.opened = 0
        self.closed = 0

    async def open(self, ctx: Context) -> None:
        self.opened += 1

    def apply(self, events: Sequence[ChangeEvent], replay: bool = False) -> None:
        for ev in events:
            if not replay and self.applied is not None and ev.position and ev.position <= self.applied:
                continue
            table = self.tables.setdefault(ev.entity, {})
            if ev.op == TRUNCATE:
                table.clear()
            elif ev.op == DELETE:
                table.pop(ev.key, None)
            else:
                row = table.setdefault(ev.key, {})
                after = ev.after or {}
                for f in ev.fields_to_write():
                    if f in after:
                        row[f] = after[f]
            self.writes.append(ev)
            if ev.position and (self.applied is None or ev.position > self.applied):
                self.applied = ev.position

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        self.apply(events, replay)

    async def close(self) -> None:
        self.closed += 1


class FlakySink(MemorySink):
    """A memory sink that fails on purpose.

    - ``transient_rate`` / ``permanent_rate``: probability that a whole write raises.
    - ``poison``: a predicate; any event it accepts makes the write raise PermanentError
      (the write is all-or-nothing, like a database transaction).
    - ``fail_next``: a number of coming writes that raise TransientError.
    - ``delay``: seconds each write takes (a slow destination).
    """

    def __init__(
        self,
        *,
        transient_rate: float = 0.0,
        permanent_rate: float = 0.0,
        poison: Callable[[ChangeEvent], bool] | None = None,
        fail_next: int = 0,
        delay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.transient_rate = transient_rate
        self.permanent_rate = permanent_rate
        self.poison = poison
        self.fail_next = fail_next
        self.delay = delay
        self.attempts = 0
        self._rng = random.Random(seed)

    async def write(self, events: Sequence[ChangeEvent], *, replay: bool = False) -> None:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if not events:
            return
        if self.fail_next > 0:
            self.fail_next -= 1
            raise TransientError("destination unavailable (scripted)")
        if self.transient_rate and self._rng.random() < self.transient_rate:
            raise TransientError("destination unavailable (random)")
        if self.permanent_rate and self._rng.random() < self.permanent_rate:
            raise PermanentError("destination rejected the batch (random)")
        if self.poison is not None:
            for ev in events:
                if self.poison(ev):
                    raise PermanentError(f"destination rejected record {ev.entity} {ev.key}")
        self.apply(events, replay)


class TcpProxy:
    """A loopback TCP proxy that cuts connections on demand (a destination or source "outage").

    Runs its own event loop in a thread, so both async tests and tests driving
    subprocesses can use it. ``block()`` closes every open connection and
    makes new ones close right after they are accepted; ``unblock()`` lets
    traffic through again.
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        import threading

        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self.blocked = False
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> int:
        self._thread.start()
        self._ready.wait(10)
        return self.port

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()
        pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.blocked:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self.connections += 1
        self._writers.update((client_w, server_w))
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except asyncio.CancelledError:
            pass  # the proxy is stopping
        finally:
            self._writers.discard(client_w)
            self._writers.discard(server_w)

    def _call(self, fn: Callable[[], None]) -> None:
        import threading

        assert self._loop is not None
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def block(self) -> None:
        def cut() -> None:
            self.blocked = True
            for w in list(self._writers):
                transport = w.transport
                if transport is not None:
                    transport.abort()
            self._writers.clear()

        self._call(cut)

    def unblock(self) -> None:
        def open_() -> None:
            self.blocked = False

        self._call(open_)

    def stop(self) -> None:
        if self._loop is None:
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                if w.transport is not None:
                    w.transport.abort()
            assert self._loop is not None
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(10)
        self._loop = None
