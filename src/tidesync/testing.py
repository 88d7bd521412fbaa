"""Test doubles that ship with tidesync, for its own tests and for connector authors.

- :class:`FakeClock`: time that moves only when told (or when something sleeps on it).
- :class:`ListSource`: a source over a list or iterator of events, with positions ``(n,)``.
- :class:`ScriptedSource`: a list source whose script can say "fail here" or "pause here".
- :class:`FlakySink`: an in-memory sink with configurable transient/permanent failures.
- :class:`MemorySink`: an in-memory destination table per entity (upsert/update/delete).
- :func:`eventually`: wait for a predicate, the one way tests wait.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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

    async def read(self, max_events: int, max_wait: float) -> Batch:
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

    async def read(self, max_events: int, max_wait: float) -> Batch:
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


@dataclass
class MemoryTable:
    rows: dict[Key, Row] = field(default_factory=dict)


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
