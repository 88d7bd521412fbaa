"""What a pipeline shows: its lifecycle, its status row, and the log lines that tell a person.

:class:`PipelineView` is the one place a pipeline's visible state changes. The
delivery wrappers, the sink opening and the read loop call its ``on_*``
methods; it moves the :class:`~tidesync.engine.lifecycle.Lifecycle`, logs
(one ERROR when blocked, one INFO when it clears, every dead letter through
:class:`~tidesync.engine.parklog.ParkLog`), and writes the status to the
state store in the background (coalesced: a burst of changes is one write).
A status also rides along with every batch's state commit
(:meth:`status`), so a running pipeline's row is never older than its last
batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tidesync.engine.delivery import BlockNotice
from tidesync.engine.lifecycle import DEGRADED, SCHEDULED, Lifecycle, State
from tidesync.engine.parklog import ParkLog
from tidesync.errors import StateStoreError, SystemicError
from tidesync.secrets import REDACTOR
from tidesync.state.store import DeadLetterFilter, NewDeadLetter, PipelineStatus, StateChanges

if TYPE_CHECKING:
    from tidesync.clock import Clock
    from tidesync.engine.retrying import RetryNotice
    from tidesync.event import Position
    from tidesync.retry import Failure
    from tidesync.state.store import StateStore

log = logging.getLogger("tidesync.engine")
DEGRADED_FOR = 300.0  # seconds after the last new dead letter a running pipeline shows degraded


class PipelineView:
    def __init__(self, name: str, sink_name: str, state: StateStore, clock: Clock) -> None:
        self.name = name
        self.sink_name = sink_name
        self.state = state
        self.clock = clock
        self.lifecycle = Lifecycle(self._on_state)
        self.parklog = ParkLog(name)
        self.blocked: BlockNotice | None = None
        self.dlq_grew_at: float | None = None  # when this pipeline last dead-lettered an event
        self.position: Position | None = None  # the last checkpoint
        self.last_committed_at = 0.0  # source commit time of the last event written
        self.last_error: str | None = None
        self.next_attempt_at: float | None = None
        self.next_run_at: float | None = None  # a scheduled pipeline between runs: when the next one starts
        self.pending: deque[float] = deque()  # oldest commit time of each batch read, not yet checkpointed
        self._shown_state = ""  # the display state last written to the state store
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    # --- what shows ------------------------------------------------------------

    @property
    def display_state(self) -> str:
        """The lifecycle state, ``degraded`` while running with a dead-letter queue that grew lately,
        or ``scheduled`` between the runs of a scheduled pipeline."""
        state = self.lifecycle.state
        if self.next_run_at is not None and state in (State.STOPPED, State.FAILED):
            return SCHEDULED
        grew = self.dlq_grew_at
        if state == State.RUNNING and grew is not None and self.clock.time() - grew < DEGRADED_FOR:
            return DEGRADED
        return str(state)

    def lag_seconds(self) -> float:
        if not self.pending:
            return 0.0
        oldest = self.pending[0]
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
        if self.next_run_at is not None:
            extra["next_run_at"] = self.next_run_at
        return PipelineStatus(
            pipeline=self.name,
            state=self.display_state,
            position=self.position,
            lag_seconds=self.lag_seconds(),
            last_committed_at=self.last_committed_at,
            last_error=self.last_error,
            next_attempt_at=self.next_attempt_at if self.next_run_at is None else self.next_run_at,
            updated_at=self.clock.time(),
            extra=extra,
        )

    def committed(self, status: PipelineStatus) -> None:
        """``status`` went to the state store with a batch."""
        self._shown_state = status.state

    async def load_dlq_growth(self) -> None:
        """A restart keeps showing degraded when the queue grew within the window before it."""
        since = self.clock.time() - DEGRADED_FOR
        try:
            recent = await self.state.dlq_list(DeadLetterFilter(pipeline=self.name, newer_than=since, limit=1))
        except StateStoreError:
            return
        if recent:
            self.dlq_grew_at = max(e.first_failed_at for e in recent)

    def heartbeat(self) -> None:
        """Between reads: log due dead-letter summaries; rewrite the status when the display state changed."""
        for line in self.parklog.flush(self.clock.time()):
            log.warning("%s", line)
        if self.display_state != self._shown_state and self.lifecycle.state == State.RUNNING:
            self.schedule_status()

    def parked(self, letters: Sequence[NewDeadLetter], now: float) -> None:
        """New dead letters were committed: every one is logged (rate-limited), the pipeline shows degraded."""
        self.dlq_grew_at = now
        for line in self.parklog.add(letters, now):
            log.warning("%s", line)

    # --- the sink's delivery ---------------------------------------------------

    def on_retry(self, notice: RetryNotice) -> None:
        self.last_error = REDACTOR.redact(notice.error)
        self.next_attempt_at = notice.next_attempt_at
        if self.lifecycle.state == State.RUNNING:
            self.lifecycle.to(State.RETRYING)
            log.warning("pipeline %s: sink failing (%s); retrying with backoff", self.name, self.last_error)
        self.schedule_status()

    def on_recover(self) -> None:
        self.next_attempt_at = None
        self.last_error = None
        if self.lifecycle.state == State.RETRYING:
            self.lifecycle.to(State.RUNNING)
            log.info("pipeline %s: sink recovered", self.name)

    def on_block(self, notice: BlockNotice) -> None:
        self.on_probe(notice)
        if self.lifecycle.state in (State.RUNNING, State.RETRYING):
            self.lifecycle.to(State.BLOCKED)
        log.error(
            "pipeline %s blocked on %s: %s%s; holding %d event(s), nothing is dead-lettered and the checkpoint "
            "stays; probing with backoff and resuming by itself once this is fixed",
            self.name,
            notice.entity,
            _cause(notice),
            REDACTOR.redact(notice.error),
            notice.events,
        )
        self.schedule_status()

    def on_probe(self, notice: BlockNotice) -> None:
        self.blocked = notice
        self.next_attempt_at = notice.next_probe_at
        self.last_error = REDACTOR.redact(f"blocked on {notice.entity}: {_cause(notice)}{notice.error}")
        self.schedule_status()

    def on_unblock(self, notice: BlockNotice) -> None:
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
        self.schedule_status()

    # --- opening the sink, reading, the state store ------------------------------

    async def sink_refused(self, failure: Failure, since: float) -> None:
        """Opening the sink failed: ``retrying`` (down) or ``blocked`` (refused), with the next attempt's time."""
        exc = failure.error
        error = REDACTOR.redact(str(exc))
        if isinstance(exc, SystemicError):
            entity = exc.entity or self.sink_name
            self.blocked = _block_notice(error, exc.error_class, entity, since, failure)
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
        self.next_attempt_at = failure.next_attempt_at
        await self.persist_status()

    def sink_opened(self, attempts: int) -> None:
        if attempts > 1:
            log.info("pipeline %s: the sink opened after %d attempt(s)", self.name, attempts)
            self.blocked, self.last_error, self.next_attempt_at = None, None, None

    async def source_failing(self, failure: Failure) -> None:
        self.last_error = REDACTOR.redact(f"source: {failure.error}")
        log.warning("pipeline %s: source error: %s; reopening in %.1fs", self.name, self.last_error, failure.delay)
        await self.persist_status()

    def source_recovered(self) -> None:
        log.info("pipeline %s: source recovered", self.name)
        self.last_error = None

    def state_store_failing(self, failure: Failure) -> None:
        log.warning("pipeline %s: state store error: %s; retrying in %.1fs", self.name, failure.error, failure.delay)

    def state_store_recovered(self, failures: int) -> None:
        log.info("pipeline %s: the state store took the commit after %d failure(s)", self.name, failures)

    # --- the status row ----------------------------------------------------------

    def schedule_status(self) -> None:
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._flush_status())

    async def _flush_status(self) -> None:
        while self._dirty:
            self._dirty = False
            await self.persist_status()

    async def persist_status(self) -> None:
        try:
            status = self.status()
            await self.state.commit(self.name, StateChanges(status=status))
            self._shown_state = status.state
        except StateStoreError as exc:
            log.warning("pipeline %s: cannot write status: %s", self.name, exc)

    def _on_state(self, old: State, new: State) -> None:
        if old == State.STOPPED and new == State.STARTING:
            return
        log.info("pipeline %s: %s -> %s", self.name, old, new)


def _cause(notice: BlockNotice) -> str:
    return f"circuit breaker ({notice.breaker}): " if notice.breaker else ""


def _block_notice(error: str, error_class: str, entity: str, since: float, failure: Failure) -> BlockNotice:
    return BlockNotice(error, error_class, entity, 0, since, failure.attempt - 1, failure.next_attempt_at)
