"""One pipeline: source → transforms → sink, with a bounded queue between reading and writing.

Two asyncio tasks. The reader reads a batch (by size and time), transforms it
and puts it on a queue of at most ``queue_batches`` batches: when the sink is
slower than the source the queue fills and the reader waits, so memory stays
bounded. The writer takes batches (coalescing queued ones up to the batch
size), delivers them through the retry and dead-letter policy, then commits
the checkpoint together with the new dead letters and the status in one state
store transaction, and only then tells the source the position is handled.

Shutdown (``stop`` set): the reader stops; the writer finishes the batch in
flight, checkpoints it and exits; anything still queued was never
checkpointed and is read again on the next start. A batch held while the
pipeline is retrying or blocked is dropped unwritten, so it is read again too.

Failures are loud and contained. A failure every event would hit (a
:class:`~tidesync.errors.SystemicError`, or the circuit breaker) moves the
pipeline to ``blocked``: one ERROR line, the batch held, nothing
dead-lettered, the checkpoint kept, probes with backoff until the write goes
through, then one INFO line and on. Every dead letter is logged (rate-limited,
see :mod:`tidesync.engine.parklog`), and a pipeline whose dead-letter queue
grew in the last ``DEGRADED_FOR`` seconds shows ``degraded`` while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.engine.breaker import CircuitBreaker
from tidesync.engine.delivery import (
    BlockNotice,
    DeadLetterWriter,
    HoldAborted,
    RetryingWriter,
    RetryNotice,
    SerialSink,
)
from tidesync.engine.lifecycle import DEGRADED, Lifecycle, State
from tidesync.engine.parklog import ParkLog
from tidesync.engine.replay import GENERATION_NS
from tidesync.errors import SourceTransientError, StateStoreError, SystemicError, TidesyncError, TransientError
from tidesync.event import ChangeEvent, Position
from tidesync.observe.stats import PipelineStats
from tidesync.protocols import Context, Sink, Source
from tidesync.retry import RetryPolicy
from tidesync.schema import SchemaRegistry
from tidesync.secrets import REDACTOR
from tidesync.state.store import DeadLetterFilter, NewDeadLetter, PipelineStatus, StateChanges, StateStore

log = logging.getLogger("tidesync.engine")
DEGRADED_FOR = 300.0  # seconds after the last new dead letter a running pipeline shows degraded


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_events: int = 1000
    max_wait: float = 0.05  # seconds


@dataclass(slots=True)
class _Item:
    events: list[ChangeEvent]
    failures: list[tuple[ChangeEvent, str]]
    position: Position | None
    read_at: float
    oldest_commit: float
    state: StateChanges | None = None  # a source's own state changes (batch.state), committed with it


class PipelineRunner:
    def __init__(
        self,
        name: str,
        source: Source,
        sink: Sink,
        state: StateStore,
        *,
        transform: Any = None,
        batch: BatchPolicy | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        queue_batches: int = 4,
        sink_name: str = "sink",
        source_retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        probe: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.sink = sink
        self.state = state
        self.transform = transform
        self.batch = batch or BatchPolicy()
        self.clock = clock
        self.queue_batches = queue_batches
        self.sink_name = sink_name
        self.source_retry = source_retry or RetryPolicy(initial_delay=0.2, max_delay=10.0)
        self.stats = PipelineStats(name, sink_name)
        self.lifecycle = Lifecycle(self._on_state)
        self.source_schemas = SchemaRegistry()
        self.sink_schemas = SchemaRegistry()
        if transform is not None:
            self.source_schemas.subscribe(lambda s: self.sink_schemas.put(transform.map_schema(s)))
        else:
            self.source_schemas.subscribe(self.sink_schemas.put)
        self.serial_sink = SerialSink(sink)  # shared with in-process dead-letter replays
        self.writer = RetryingWriter(
            self.serial_sink, retry or RetryPolicy(), clock, on_retry=self._on_retry, on_recover=self._on_recover
        )
        self.delivery = DeadLetterWriter(
            self.writer,
            name,
            sink_name,
            clock,
            breaker=breaker,
            probe=probe,
            on_block=self._on_block,
            on_probe=self._on_probe,
            on_unblock=self._on_unblock,
            stopping=lambda: self._stop is not None and self._stop.is_set(),
            persist=self._persist_letters,
        )
        self.parklog = ParkLog(name)
        self.blocked: BlockNotice | None = None
        self.dlq_grew_at: float | None = None  # when this pipeline last dead-lettered an event
        self._stop: asyncio.Event | None = None
        self._shown_state = ""  # the display state last written to the state store
        self._status_dirty = False
        self.position: Position | None = None
        self.last_error: str | None = None
        self.next_attempt_at: float | None = None
        self._pending_commits: deque[float] = deque()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._status_task: asyncio.Task[None] | None = None

    # --- control ---------------------------------------------------------------

    @property
    def state_name(self) -> str:
        return str(self.lifecycle.state)

    @property
    def display_state(self) -> str:
        """The lifecycle state, or ``degraded`` while running with a dead-letter queue that grew lately."""
        state = self.lifecycle.state
        grew = self.dlq_grew_at
        if state == State.RUNNING and grew is not None and self.clock.time() - grew < DEGRADED_FOR:
            return DEGRADED
        return str(state)

    def pause(self) -> None:
        if self.lifecycle.state in (State.RUNNING, State.RETRYING):
            self._resumed.clear()
            self.lifecycle.to(State.PAUSED)

    def resume(self) -> None:
        if self.lifecycle.state == State.PAUSED:
            self.lifecycle.to(State.RUNNING)
            self._resumed.set()

    def lag_seconds(self) -> float:
        if not self._pending_commits:
            return 0.0
        oldest = self._pending_commits[0]
        return max(0.0, self.clock.time() - oldest) if oldest > 0 else 0.0

    def status(self) -> PipelineStatus:
        extra: dict[str, Any] = {}
        held = self.blocked
        if held is not None and self.lifecycle.state == State.BLOCKED:
            extra.update(
                blocked_entity=held.entity,
                blocked_since=held.since,
                blocked_error_class=held.error_class,
                blocked_events=held.events,
                probes=held.probes,
            )
            if held.breaker:
                extra["breaker"] = held.breaker
        if self.dlq_grew_at is not None:
            extra["dlq_grew_at"] = self.dlq_grew_at
        return PipelineStatus(
            pipeline=self.name,
            state=self.display_state,
            position=self.position,
            lag_seconds=self.lag_seconds(),
            last_committed_at=self._last_committed_at,
            last_error=self.last_error,
            next_attempt_at=self.next_attempt_at,
            updated_at=self.clock.time(),
            extra=extra,
        )

    _last_committed_at: float = 0.0
    _generation: Any = None
    _generation_checked: float = float("-inf")

    # --- run -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (exit normally) or an unrecoverable error (state failed, re-raised)."""
        self.lifecycle.to(State.STARTING)
        self._stop = stop
        try:
            self.position = await self.state.load_checkpoint(self.name)
            await self._load_dlq_growth()
            self.delivery.parked = await self.state.dlq_parked_keys(self.name, self.sink_name)
            self._generation = await self.state.kv_get(GENERATION_NS, self.name)
            self._generation_checked = self.clock.monotonic()
            if not await self._open_sink(stop):
                self._force(State.STOPPED)
                return
            await self._open_source(self.position)
            self.lifecycle.to(State.RUNNING)
            await self._persist_status()
            queue: asyncio.Queue[_Item | None] = asyncio.Queue(maxsize=self.queue_batches)
            reader = asyncio.create_task(self._read_loop(queue, stop), name=f"{self.name}:read")
            writer = asyncio.create_task(self._write_loop(queue, stop), name=f"{self.name}:write")
            stopped = asyncio.create_task(stop.wait(), name=f"{self.name}:stop")
            try:
                await asyncio.wait({reader, writer, stopped}, return_when=asyncio.FIRST_COMPLETED)
                for task in (reader, writer):
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if self.lifecycle.state != State.DRAINING:
                    held = self.lifecycle.state in (State.RETRYING, State.BLOCKED) or self.delivery.held is not None
                    self.lifecycle.to(State.DRAINING)
                    self._resumed.set()
                    if held:
                        # The batch in flight cannot be written now; it was never
                        # checkpointed, so the next start reads it again.
                        writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            finally:
                for task in (reader, writer, stopped):
                    task.cancel()
                for task in (reader, writer, stopped):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            self.lifecycle.to(State.STOPPED)
        except asyncio.CancelledError:
            self._force(State.STOPPED)
            raise
        except BaseException as exc:
            self.last_error = REDACTOR.redact(
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, TidesyncError) else str(exc)
            )
            self._force(State.FAILED)
            log.error("pipeline %s failed: %s", self.name, self.last_error)
            raise
        finally:
            with contextlib.suppress(Exception):
                await self.source.close()
            with contextlib.suppress(Exception):
                await self.sink.close()
            with contextlib.suppress(Exception):
                await self._persist_status()

    def _force(self, state: State) -> None:
        try:
            if self.lifecycle.state == State.STARTING and state == State.STOPPED:
                self.lifecycle.to(State.STOPPED)
            elif state == State.STOPPED and self.lifecycle.state != State.STOPPED:
                if self.lifecycle.state != State.DRAINING:
                    self.lifecycle.to(State.DRAINING)
                self.lifecycle.to(State.STOPPED)
            else:
                self.lifecycle.to(state)
        except Exception:
            self.lifecycle.state = state

    async def _open_sink(self, stop: asyncio.Event) -> bool:
        """Open the sink, waiting out a destination that is down or refuses the pipeline; False if stopped meanwhile.

        A destination that is down (TransientError) shows as ``retrying``; one that
        refuses (SystemicError: authentication failed, database missing) shows as
        ``blocked`` with one ERROR line, and is probed with backoff, so a rotated
        password or a created database is picked up without a restart. Neither
        fails the start: the pipeline has read nothing yet, so nothing waits.
        """
        ctx = self._ctx(self.sink_name, self.sink_schemas)
        attempt, since = 0, self.clock.time()
        notice: BlockNotice | None = None
        while True:
            try:
                await self.sink.open(ctx)
            except (TransientError, SystemicError) as exc:
                attempt += 1
                systemic = isinstance(exc, SystemicError)
                policy = self.delivery.probe if systemic else self.writer.policy
                delay = policy.delay(attempt)
                error = REDACTOR.redact(str(exc))
                if systemic:
                    entity = getattr(exc, "entity", None) or self.sink_name
                    notice = BlockNotice(
                        error, exc.error_class, entity, 0, since, attempt - 1, self.clock.time() + delay
                    )
                    self.blocked = notice
                    self.last_error = f"blocked opening the sink: {error}"
                    if self.lifecycle.to(State.BLOCKED):
                        log.error(
                            "pipeline %s blocked: the sink refuses to open: %s; probing with backoff and starting "
                            "by itself once this is fixed",
                            self.name,
                            error,
                        )
                else:
                    self.last_error = f"sink unavailable: {error}"
                    if self.lifecycle.to(State.RETRYING):
                        log.warning("pipeline %s: sink unavailable (%s); retrying with backoff", self.name, error)
                self.next_attempt_at = self.clock.time() + delay
                await self._persist_status()
                if await self._wait_unless_stopped(delay, stop):
                    return False
                continue
            if attempt:
                log.info("pipeline %s: the sink opened after %d attempt(s)", self.name, attempt + 1)
                self.blocked, self.last_error, self.next_attempt_at = None, None, None
            return True

    async def _wait_unless_stopped(self, delay: float, stop: asyncio.Event) -> bool:
        """Sleep ``delay`` on the pipeline's clock; True as soon as ``stop`` is set."""
        sleeper = asyncio.ensure_future(self.clock.sleep(delay))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopped):
                task.cancel()
        return stop.is_set()

    def _ctx(self, name: str, schemas: SchemaRegistry) -> Context:
        return Context(pipeline=self.name, name=name, state=self.state, clock=self.clock, schemas=schemas)

    async def _open_source(self, after: Position | None) -> None:
        await self.source.open(self._ctx("source", self.source_schemas), after)

    async def _read_loop(self, queue: asyncio.Queue[_Item | None], stop: asyncio.Event) -> None:
        last_read = self.position
        failures = 0
        first_failure = 0.0
        try:
            while not stop.is_set():
                if not self._resumed.is_set():
                    await self._resumed.wait()
                    continue
                try:
                    batch = await self.source.read(self.batch.max_events, self.batch.max_wait)
                except SourceTransientError as exc:
                    failures += 1
                    first_failure = first_failure or self.clock.time()
                    if self.source_retry.gives_up(failures, first_failure, self.clock.time()):
                        raise
                    delay = self.source_retry.delay(failures)
                    self.last_error = REDACTOR.redact(f"source: {exc}")
                    log.warning("pipeline %s: source error: %s; reopening in %.1fs", self.name, self.last_error, delay)
                    await self._persist_status()
                    await self.clock.sleep(delay)
                    with contextlib.suppress(Exception):
                        await self.source.close()
                    try:
                        await self._open_source(last_read)
                    except SourceTransientError as reopen_exc:
                        self.last_error = REDACTOR.redact(f"source: {reopen_exc}")
                    continue
                if failures:
                    log.info("pipeline %s: source recovered", self.name)
                    failures, first_failure = 0, 0.0
                    self.last_error = None
                self._heartbeat()
                if not batch.events and batch.position is None:
                    continue
                now = self.clock.time()
                events = batch.events
                transform_failures: list[tuple[ChangeEvent, str]] = []
                if self.transform is not None and events:
                    events, transform_failures = self._transform(events)
                    self.stats.stage["transform"].add_many([self.clock.time() - now])
                if batch.rejected:
                    # A source that read a record it cannot turn into an event (a webhook
                    # payload its mapping rejects) reports it here, as a transform would.
                    transform_failures = [*transform_failures, *batch.rejected]
                oldest = batch.events[0].committed_at if batch.events else 0.0
                if batch.events:
                    self.stats.events_read += len(batch.events)
                    self.stats.stage["capture"].add_many(
                        [now - e.committed_at for e in (batch.events[0], batch.events[-1]) if e.committed_at > 0]
                    )
                self._pending_commits.append(oldest)
                await queue.put(_Item(events, transform_failures, batch.position, now, oldest, batch.state))
                if batch.position is not None:
                    last_read = batch.position
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    def _transform(self, events: list[ChangeEvent]) -> tuple[list[ChangeEvent], list[tuple[ChangeEvent, str]]]:
        """Transform a batch; should the transform itself raise, one event at a time, so only its event fails."""
        assert self.transform is not None
        try:
            out, failures = self.transform.apply(events)
            return list(out), list(failures)
        except Exception as exc:
            log.debug("pipeline %s: transform of a batch raised %r; one event at a time", self.name, exc)
        out, failures = [], []
        for ev in events:
            try:
                one, failed = self.transform.apply([ev])
            except Exception as exc:  # RecursionError, a bug: this event's problem, not the pipeline's
                failures.append((ev, f"unexpected {type(exc).__name__}: {exc}"))
                continue
            out.extend(one)
            failures.extend(failed)
        return out, failures

    def _heartbeat(self) -> None:
        """Between reads: log due dead-letter summaries; rewrite the status when the display state changed."""
        for line in self.parklog.flush(self.clock.time()):
            log.warning("%s", line)
        if self.display_state != self._shown_state and self.lifecycle.state == State.RUNNING:
            self._schedule_status()

    async def _load_dlq_growth(self) -> None:
        """A restart keeps showing degraded when the queue grew within the window before it."""
        since = self.clock.time() - DEGRADED_FOR
        try:
            recent = await self.state.dlq_list(DeadLetterFilter(pipeline=self.name, newer_than=since, limit=1))
        except StateStoreError:
            return
        if recent:
            self.dlq_grew_at = max(e.first_failed_at for e in recent)

    async def _write_loop(self, queue: asyncio.Queue[_Item | None], stop: asyncio.Event) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            merged = 1
            # Coalesce what is already queued into one write, up to the batch size.
            while item.events is not None and len(item.events) < self.batch.max_events and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    queue.put_nowait(None)
                    break
                item = _Item(
                    item.events + nxt.events,
                    item.failures + nxt.failures,
                    nxt.position if nxt.position is not None else item.position,
                    item.read_at,
                    item.oldest_commit,
                    nxt.state if item.state is None else item.state.merge(nxt.state) if nxt.state else item.state,
                )
                merged += 1
            try:
                await self._write_item(item, merged)
            except HoldAborted:
                return  # stopping while the batch is held: it was not checkpointed
            if stop.is_set():
                return

    async def _refresh_parked(self) -> None:
        """Reload parked keys when a replay or discard (maybe in another process) changed the queue."""
        now = self.clock.monotonic()
        if now - self._generation_checked < 1.0:
            return
        self._generation_checked = now
        generation = await self.state.kv_get(GENERATION_NS, self.name)
        if generation != self._generation:
            self._generation = generation
            self.delivery.parked = await self.state.dlq_parked_keys(self.name, self.sink_name)

    async def _write_item(self, item: _Item, merged: int) -> None:
        await self._refresh_parked()
        letters: list[NewDeadLetter] = []
        events = item.events
        if item.failures:
            events = self._park_transform_failures(item, letters)
        t0 = self.clock.time()
        if events:
            letters.extend(await self.delivery.deliver(events))
        now = self.clock.time()
        if letters:
            self.dlq_grew_at = now
            parked_ids = {id(letter.event) for letter in letters}
            written = [e for e in events if id(e) not in parked_ids]
        else:
            written = events
        if events:
            self.stats.stage["write"].add_many([now - t0])
        saved = self.delivery.saved  # made durable during the delivery, before the sink moved past them
        changes = StateChanges(
            checkpoint=item.position,
            dead_letters=[letter for letter in letters if id(letter) not in saved] if saved else letters,
            events_applied=len(written),
        )
        if item.state is not None:
            changes.shadow_put, changes.shadow_delete = item.state.shadow_put, item.state.shadow_delete
            changes.kv_put, changes.kv_delete = item.state.kv_put, item.state.kv_delete
        if item.position is not None:
            self.position = item.position
        if written:
            self._last_committed_at = written[-1].committed_at
        for _ in range(merged):
            if self._pending_commits:
                self._pending_commits.popleft()
        changes.status = self.status()
        await self._commit_state(changes)
        self._shown_state = changes.status.state if changes.status is not None else self._shown_state
        if letters:
            for line in self.parklog.add(letters, now):
                log.warning("%s", line)
        if item.position is not None:
            await self.source.commit(item.position)
        stats = self.stats
        stats.batches += 1
        stats.written(now, len(written))
        stats.dead_lettered += len(letters)
        stats.retries = self.writer.retries
        if written:
            stats.latency.record(now, [e.committed_at for e in written])
            if len(written) < 64:
                stats.by_op.update(e.op for e in written)
            else:
                stats.by_op.update([e.op for e in written])
        stats.lag_seconds = self.lag_seconds()
        if self.transform is not None:
            stats.filtered = getattr(self.transform, "filtered", 0)

    def _park_transform_failures(self, item: _Item, letters: list[NewDeadLetter]) -> list[ChangeEvent]:
        """Park records that failed a transform, and later events of their keys behind them, in source order."""
        self.stats.transform_failed += len(item.failures)
        tagged: list[tuple[Position, int, ChangeEvent, str | None]] = []
        for i, ev in enumerate(item.events):
            tagged.append((ev.position, i, ev, None))
        for j, (ev, reason) in enumerate(item.failures):
            tagged.append((ev.position, -1 - j, ev, reason))
        tagged.sort(key=lambda t: (t[0], (t[1] < 0 and -1) or 0))
        out: list[ChangeEvent] = []
        behind = self.delivery.behind
        for _, _, ev, reason in tagged:
            if reason is not None:
                letters.append(self.delivery.park(ev, "transform", reason))
                continue
            wait = behind(ev)
            if wait == "blocked":
                letters.append(
                    self.delivery.park(ev, "blocked", "waits behind an earlier dead-lettered event of this key")
                )
            elif wait is None:
                out.append(ev)  # "handled": written or parked before a restart read it again
        return out

    async def _persist_letters(self, letters: Sequence[NewDeadLetter]) -> None:
        """Dead letters found part-way through a delivery, committed before the sink writes past them."""
        await self._commit_state(StateChanges(dead_letters=list(letters)))

    async def _commit_state(self, changes: StateChanges) -> None:
        attempt = 0
        while True:
            try:
                await self.state.commit(self.name, changes)
                return
            except StateStoreError as exc:
                attempt += 1
                if attempt >= 5:
                    raise
                log.warning("pipeline %s: state store error: %s; retrying", self.name, exc)
                await self.clock.sleep(self.source_retry.delay(attempt))

    # --- status ----------------------------------------------------------------

    def _on_state(self, old: State, new: State) -> None:
        if old == State.STOPPED and new == State.STARTING:
            return
        log.info("pipeline %s: %s -> %s", self.name, old, new)

    def _on_retry(self, notice: RetryNotice) -> None:
        self.last_error = REDACTOR.redact(notice.error)
        self.next_attempt_at = notice.next_attempt_at
        if self.lifecycle.state == State.RUNNING:
            self.lifecycle.to(State.RETRYING)
            log.warning("pipeline %s: sink failing (%s); retrying with backoff", self.name, self.last_error)
        self._schedule_status()

    def _on_recover(self) -> None:
        self.next_attempt_at = None
        self.last_error = None
        if self.lifecycle.state == State.RETRYING:
            self.lifecycle.to(State.RUNNING)
            log.info("pipeline %s: sink recovered", self.name)

    def _on_block(self, notice: BlockNotice) -> None:
        self.blocked = notice
        self.next_attempt_at = notice.next_probe_at
        cause = f"circuit breaker ({notice.breaker}): " if notice.breaker else ""
        self.last_error = REDACTOR.redact(f"blocked on {notice.entity}: {cause}{notice.error}")
        if self.lifecycle.state in (State.RUNNING, State.RETRYING):
            self.lifecycle.to(State.BLOCKED)
        log.error(
            "pipeline %s blocked on %s: %s%s; holding %d event(s), nothing is dead-lettered and the checkpoint "
            "stays; probing with backoff and resuming by itself once this is fixed",
            self.name,
            notice.entity,
            cause,
            REDACTOR.redact(notice.error),
            notice.events,
        )
        self._schedule_status()

    def _on_probe(self, notice: BlockNotice) -> None:
        self.blocked = notice
        self.next_attempt_at = notice.next_probe_at
        cause = f"circuit breaker ({notice.breaker}): " if notice.breaker else ""
        self.last_error = REDACTOR.redact(f"blocked on {notice.entity}: {cause}{notice.error}")
        self._schedule_status()

    def _on_unblock(self, notice: BlockNotice) -> None:
        self.blocked = None
        self.next_attempt_at = None
        self.last_error = None
        if self.lifecycle.state == State.BLOCKED:
            self.lifecycle.to(State.RUNNING)
        log.info(
            "pipeline %s unblocked: %s accepts writes again after %d probe(s) in %.0fs; resuming",
            self.name,
            notice.entity,
            notice.probes,
            max(0.0, self.clock.time() - notice.since),
        )
        self._schedule_status()

    def _schedule_status(self) -> None:
        self._status_dirty = True
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.ensure_future(self._flush_status())

    async def _flush_status(self) -> None:
        while self._status_dirty:
            self._status_dirty = False
            await self._persist_status()

    async def _persist_status(self) -> None:
        try:
            status = self.status()
            await self.state.commit(self.name, StateChanges(status=status))
            self._shown_state = status.state
        except StateStoreError as exc:
            log.warning("pipeline %s: cannot write status: %s", self.name, exc)
