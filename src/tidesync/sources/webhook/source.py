"""The webhook source: reads what the intake journaled, maps it to changes, trims what was checkpointed.

Positions are ``(journal sequence,)``. ``read`` waits on the intake's wake-up
event (set by every append in this process) and polls the journal as a
fallback (another process appending to a shared Postgres store).

Mapping failures are never lost: an entry the provider cannot map (a
:class:`~.provider.MappingError`, a value nested deeper than the event codecs
accept, or any other exception a provider raises) becomes a placeholder
event (entity ``webhook.<source>``, key ``(event id,)``, ``after`` holding
the raw body, headers and the time received), returned in
``batch.rejected`` as ``(event, reason)``. The engine parks those in
the dead-letter queue with the reason (error class ``transform``), in the same
transaction as the checkpoint, exactly like records a transform rejects.
Replaying such an entry writes the placeholder, so inspect and discard them:
fix the mapping and have the sender deliver again.

Each batch carries in ``batch.versions`` the record version of each
event (a list in event order, see :class:`~.provider.Mapped`; a hybrid source
matches them with its fallback's), and in ``batch.state`` the
ordering versions it admitted (shadow rows, scope ``webhook:<source>``) and
the newest Stripe ``created`` seen; the engine commits them in the
checkpoint's transaction, so after a crash the replayed events meet exactly
the versions that were applied.
``commit(position)`` drops the journal payloads through ``position``; the ids
stay for ``dedup_retention``. A crash before that trim is finished by ``open``.

Stripe backfill: when an API key is configured, ``open`` starts a task that
asks the Events API for events created since the newest one seen (less
``overlap``) and journals them; the journal drops the ones that arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from tidesync.errors import SourceError, SourceTransientError, StateStoreError
from tidesync.event import Batch, ChangeEvent, Position, RecordVersion, ValueTooDeep, check_depth
from tidesync.observe.metrics import WEBHOOK_STALE
from tidesync.protocols import Context
from tidesync.sources.http.config import HttpOptions
from tidesync.sources.http.stripe_api import MAX_WINDOW, StripeApi, stripe_client
from tidesync.sources.webhook.config import WebhookSourceConfig
from tidesync.sources.webhook.intake import WebhookIntake
from tidesync.sources.webhook.ordering import OrderingGuard
from tidesync.sources.webhook.provider import Mapped, MappingError
from tidesync.state.store import JournalAppend, JournalEntry, StateChanges, StateStore

log = logging.getLogger("tidesync.webhook")
BACKFILL_NS = "webhook_backfill"


def _check_encodable(m: Mapped) -> None:
    """Raise ValueTooDeep unless the event and its shadow record can be encoded (stored, dead-lettered).

    The intake refuses deep bodies, but entries journaled otherwise (a Stripe backfill, an older
    version of tidesync, another process sharing the store) reach this point unchecked; here they
    become one dead letter each instead of a state store write that fails the pipeline.
    """
    ev = m.event
    for value in (ev.key, ev.before, ev.after, m.record):
        if value is not None:
            check_depth(value)


class WebhookSource:
    def __init__(self, config: WebhookSourceConfig) -> None:
        self.config = config
        self._intake: WebhookIntake | None = None
        self._ctx: Context | None = None
        self._after = 0
        self._guard: OrderingGuard | None = None
        self._newest_created = 0.0
        self._backfill: asyncio.Task[None] | None = None
        self.backfilled = 0  # events the last backfill journaled

    def intake_for(self, pipeline: str) -> WebhookIntake:
        """The intake of this source's route (made once; ``build`` registers it with the HTTP server)."""
        if self._intake is None:
            self._intake = WebhookIntake(self.config, self.config.name or pipeline)
        return self._intake

    @property
    def name(self) -> str:
        assert self._intake is not None, "the source is not bound to a pipeline yet"
        return self._intake.name

    @property
    def state(self) -> StateStore:
        assert self._ctx is not None
        return self._ctx.state

    async def open(self, ctx: Context, after: Position | None) -> None:
        self._ctx = ctx
        intake = self.intake_for(ctx.pipeline)
        intake.clock = ctx.clock
        if self.config.guarded and self._guard is None:
            self._guard = OrderingGuard(ctx.state, f"webhook:{intake.name}")
        if self._newest_created == 0.0:
            self._newest_created = float(await self._kv_get(BACKFILL_NS, intake.name) or 0.0)
        self._after = int(after[0]) if after else 0
        if self._after:
            await self._finish_commit(self._after)
        key = self.config.stripe.api_key
        if (
            self.config.provider == "stripe"
            and key is not None
            and self.config.stripe.backfill
            and self._backfill is None
        ):
            self._backfill = asyncio.create_task(self._backfill_loop(), name=f"{intake.name}:stripe-backfill")

    async def _kv_get(self, ns: str, key: str) -> Any:
        try:
            return await self.state.kv_get(ns, key)
        except StateStoreError as exc:
            raise SourceTransientError(f"webhook source {self.name}: {exc}") from exc

    async def _finish_commit(self, through: int) -> None:
        """Entries at or before the checkpoint may still be in the journal (a crash before commit): trim them."""
        await self.commit((through,))

    # --- reading -------------------------------------------------------------------------

    async def read(self, max_events: int, max_wait: float) -> Batch[StateChanges]:
        intake = self._intake
        assert intake is not None and self._ctx is not None, "open() first"
        deadline = time.monotonic() + max_wait
        poll = self.config.poll_interval_ms / 1000
        while True:
            intake.wake.clear()  # before reading: an append after the read sets it again
            try:
                entries = await self.state.journal_read(intake.name, self._after, max_events)
            except StateStoreError as exc:
                raise SourceTransientError(f"webhook source {intake.name}: {exc}") from exc
            if entries:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Batch([])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(intake.wake.wait(), min(remaining, poll))
        events, versions, failures = await self._convert(entries)
        self._after = entries[-1].seq
        state = StateChanges()
        if self._guard is not None:
            state.shadow_put = self._guard.take(self._after)
        if self._newest_created:
            state.kv_put[(BACKFILL_NS, intake.name)] = self._newest_created
        return Batch(
            events,
            (self._after,),
            # committed by the engine in the checkpoint's transaction
            state=None if state.is_empty() else state,
            rejected=failures,
            versions=versions,
        )

    async def _convert(
        self, entries: list[JournalEntry]
    ) -> tuple[list[ChangeEvent], list[RecordVersion | None], list[tuple[ChangeEvent, str]]]:
        """Map entries, then (when ordering is on) admit each change against the newest version known.

        Also returns each event's record version (Stripe: ``(created, event id)``; None where
        the sender gives none), in event order.
        """
        provider = self._intake.provider  # type: ignore[union-attr]
        decoded: list[tuple[JournalEntry, list[Mapped]]] = []
        failures: list[tuple[ChangeEvent, str]] = []
        for entry in entries:
            try:
                mapped = provider.map(entry)
                for m in mapped:
                    _check_encodable(m)
            except (MappingError, ValueTooDeep) as exc:
                failures.append((self._placeholder(entry), f"webhook mapping: {exc}"))
            except Exception as exc:  # a provider bug (RecursionError too): park the entry, never stop the pipeline
                log.exception("webhook source %s: mapping entry %s failed", self.name, entry.seq)
                failures.append((self._placeholder(entry), f"webhook mapping failed: {type(exc).__name__}"))
            else:
                decoded.append((entry, mapped))
        guard = self._guard
        if guard is not None:
            try:
                await guard.load([m.event for _, ms in decoded for m in ms if m.version is not None])
            except StateStoreError as exc:
                raise SourceTransientError(f"webhook source {self.name}: {exc}") from exc
        stale_before = guard.stale if guard is not None else 0
        events: list[ChangeEvent] = []
        versions: list[RecordVersion | None] = []
        for entry, mapped in decoded:
            for m in mapped:
                event = m.event.replace(position=(entry.seq,))
                if m.version is not None:
                    self._newest_created = max(self._newest_created, m.version[0])
                    if guard is not None:
                        admitted = guard.admit(entry.seq, event, m.version, m.record)
                        if admitted is None:
                            continue
                        event = admitted
                events.append(event)
                versions.append(m.version)
        if guard is not None and guard.stale > stale_before:
            WEBHOOK_STALE.labels(self.name).inc(guard.stale - stale_before)
        return events, versions, failures

    def _placeholder(self, entry: JournalEntry) -> ChangeEvent:
        """The dead letter of an entry that cannot be mapped: the raw body as text, which always encodes."""
        after = {
            "event_id": entry.event_id,
            "body": entry.body.decode("utf-8", "replace"),
            "meta": entry.meta,
            "received_at": entry.received_at,
        }
        return ChangeEvent(
            f"webhook.{self.name}", (entry.event_id,), "insert", after=after,
            position=(entry.seq,), committed_at=entry.received_at,
        )  # fmt: skip

    # --- commit -----------------------------------------------------------------------------

    async def commit(self, position: Position) -> None:
        assert self._ctx is not None
        try:
            forget = self._ctx.clock.time() - self.config.dedup_retention
            await self.state.journal_trim(self.name, int(position[0]), forget)
        except StateStoreError as exc:
            # Housekeeping: what is not trimmed now is trimmed by the next commit or open.
            log.warning("webhook source %s: cannot trim the journal: %s", self.name, exc)

    async def close(self) -> None:
        task, self._backfill = self._backfill, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- Stripe backfill ------------------------------------------------------------------------

    async def backfill_once(self) -> int:
        """Journal the Stripe events created since the newest seen (less the overlap); return how many were new."""
        opts = self.config.stripe
        assert opts.api_key is not None and self._ctx is not None
        stored = await self.state.kv_get(BACKFILL_NS, self.name)
        if not stored:
            log.info("webhook source %s: no Stripe event applied yet, nothing to backfill", self.name)
            return 0
        now = self._ctx.clock.time()
        since = max(float(stored) - opts.overlap, now - MAX_WINDOW)
        api = StripeApi(
            stripe_client(
                f"webhook source {self.name} backfill", opts.base_url, opts.api_key,
                http=HttpOptions.model_validate({"timeout": opts.timeout}), clock=self._ctx.clock,
            )
        )  # fmt: skip
        try:
            events = await api.events_since(int(since))
        finally:
            await api.close()
        entries = [
            JournalAppend(self.name, e["id"], msgspec.json.encode(e), {"via": "events-api"}, now) for e in events
        ]
        added = 0
        for i in range(0, len(entries), 500):
            seqs = await self.state.journal_append(entries[i : i + 500])
            added += sum(1 for s in seqs if s is not None)
        if added:
            self._intake.wake.set()  # type: ignore[union-attr]
        log.info(
            "webhook source %s: backfill found %d event(s), %d not delivered before", self.name, len(events), added
        )
        self.backfilled = added
        return added

    async def _backfill_loop(self) -> None:
        every = self.config.stripe.backfill_every
        while True:
            try:
                await self.backfill_once()
            except (SourceError, StateStoreError) as exc:  # a rejected key too: say so, try again later
                log.warning("webhook source %s: Stripe backfill failed: %s", self.name, exc)
            if every is None:
                return
            await asyncio.sleep(every)
